"""Convert a fitted optbinning scorecard to a :class:`~blindscore.models.scorecard.Scorecard`.

Numeric bins are [a, b) (``np.digitize(x, splits)``), so an edge belongs to the bin above it.
Special codes are checked first: a list of codes is one special bin, a dict one bin per key (a
code under two keys goes to the later key, as the library assigns them in order). The Missing
row scores NaN, and also any category the binning did not see (``score`` maps it to index -1,
the last row: Missing). :func:`save_optbinning_scorecard` writes the neutral scorecard JSON,
which ``blindscore model import`` reads as format ``optbinning`` (or ``blindscore``).

optbinning is optional (``pip install 'blindscore[scorecards]'``); it is imported only when a
live scorecard is converted.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from blindscore._files import write_json
from blindscore.errors import ModelFormatError
from blindscore.importers._common import CardBands, category, is_nan, later_wins, real, require, tolist
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

__all__ = ["from_optbinning", "save_optbinning_scorecard"]


def _optbinning_special_groups(special_codes: object, where: str) -> tuple[list[list[Any]], int]:
    """The special codes of each special row of the binning table, and the number of such rows."""

    def codes(value: object) -> list[Any]:
        tolist = getattr(value, "tolist", None)
        if callable(tolist):
            value = tolist()
        return list(value) if isinstance(value, list | tuple) else [value]

    if special_codes is None:
        return [[]], 1  # the table always has one Special row; nothing can reach it
    if isinstance(special_codes, Mapping):
        return [codes(v) for v in special_codes.values()], len(special_codes)
    return [codes(special_codes)], 1


def _optbinning_feature(name: str, optb: Any, points: list[float]) -> ScorecardFeature:
    where = f"optbinning variable {name!r}"
    kind = type(optb).__name__
    if kind not in ("OptimalBinning", "ContinuousOptimalBinning"):
        raise ModelFormatError(
            f"{where}: binning type {kind} is not supported (binary or continuous target only)"
        )
    specials, n_special = _optbinning_special_groups(optb.special_codes, where)
    # NaN listed as a special code is dead: optbinning assigns missing values after special ones.
    specials = later_wins([[v for v in g if not is_nan(v)] for g in specials])
    if optb.dtype == "numerical":
        edges = [real(s, f"{where}: split") for s in tolist(optb.splits)]
        n_bins = len(edges) + 1
    elif optb.dtype == "categorical":
        groups = [[category(c, where) for c in tolist(g)] for g in optb.splits]
        n_bins = len(groups)
    else:
        raise ModelFormatError(f"{where}: unknown dtype {optb.dtype!r}")
    if len(points) != n_bins + n_special + 1:
        raise ModelFormatError(
            f"{where}: the scorecard table has {len(points)} rows; {n_bins} bins, {n_special} special "
            f"and 1 missing row were expected"
        )
    regular, special_points, missing = points[:n_bins], points[n_bins:-1], points[-1]
    if optb.dtype == "numerical":
        # A code that is not a number can never equal a numeric value.
        special = [
            SpecialBin(tuple(float(v) for v in g), p)
            for g, p in zip(
                [[v for v in g if isinstance(v, numbers.Real) and not isinstance(v, bool)] for g in specials],
                special_points,
                strict=True,
            )
            if g
        ]
        return NumericBins(name, tuple(edges), tuple(regular), missing, tuple(special))
    string_specials = [[v for v in g if isinstance(v, str)] for g in specials]
    taken = {v for g in string_specials for v in g}
    # Special codes are assigned after the regular bins, so they take their categories over.
    bins = [
        CategoricalBin(tuple(c for c in g if c not in taken), p)
        for g, p in zip(later_wins(groups), regular, strict=True)
        if any(c not in taken for c in g)
    ]
    bins += [CategoricalBin(tuple(g), p) for g, p in zip(string_specials, special_points, strict=True) if g]
    # score() maps an unseen category to index -1: the last row, Missing.
    return CategoricalBins(name, tuple(bins), missing_points=missing, other_points=missing)


def from_optbinning(
    scorecard: Any,
    *,
    name: str,
    cutoffs: Sequence[float],
    labels: Sequence[str] = (),
    on: str = "points",
    precision: float = DEFAULT_PRECISION,
    metadata: Mapping[str, Any] | None = None,
) -> Scorecard:
    """Convert a fitted ``optbinning.Scorecard`` (over a ``BinningProcess``) to a Scorecard.

    Reads ``scorecard.table(style="detailed")`` for the points and each variable's binning
    object for its splits, category groups and special codes. The PDO scaling is kept when the
    scorecard used ``scaling_method="pdo_odds"`` on a binary target without ``reverse_scorecard``.
    """
    optbinning = require("optbinning", "from_optbinning")
    if not isinstance(scorecard, optbinning.Scorecard):
        raise ModelFormatError(
            f"from_optbinning expects an optbinning.Scorecard, got {type(scorecard).__name__}"
        )
    try:
        table = scorecard.table(style="detailed")
    except Exception as exc:  # optbinning raises NotFittedError, a ValueError subclass, among others
        raise ModelFormatError(
            f"the optbinning scorecard cannot produce its table (is it fitted?): {exc}"
        ) from None
    process = scorecard.binning_process_
    features: list[ScorecardFeature] = []
    binary = True
    for variable in tolist(process.get_support(names=True)):
        rows = table[table["Variable"] == variable]
        ids = [int(i) for i in rows["Bin id"]]
        if ids != list(range(len(ids))):
            raise ModelFormatError(f"optbinning variable {variable!r}: bin ids are not 0..{len(ids) - 1}")
        points = [real(p, f"optbinning variable {variable!r}: points") for p in rows["Points"]]
        optb = process.get_binned_variable(variable)
        binary = binary and type(optb).__name__ == "OptimalBinning"
        features.append(_optbinning_feature(str(variable), optb, points))
    scaling = None
    params = scorecard.scaling_method_params or {}
    if scorecard.scaling_method == "pdo_odds" and binary and not scorecard.reverse_scorecard:
        # optbinning: points = offset - factor * log-odds of the event, offset from odds of non-event.
        scaling = PdoScaling(params["pdo"], params["scorecard_points"], params["odds"], "good:bad")
    meta: dict[str, Any] = {
        "source": "optbinning",
        "optbinning_version": str(getattr(optbinning, "__version__", "unknown")),
        "scaling_method": scorecard.scaling_method,
        "rounding": bool(scorecard.rounding),
        **dict(metadata or {}),
    }
    bands = CardBands(name, cutoffs, labels, on, precision)
    intercept = real(scorecard.intercept_, "optbinning intercept_")
    return bands.card(features, intercept, scaling=scaling, metadata=meta)


def save_optbinning_scorecard(
    scorecard: Any,
    path: str | Path,
    *,
    name: str | None = None,
    cutoffs: Sequence[float],
    labels: Sequence[str] = (),
    on: str = "points",
    precision: float = DEFAULT_PRECISION,
) -> Scorecard:
    """Convert a fitted optbinning scorecard with :func:`from_optbinning` and write the neutral JSON."""
    path = Path(path)
    card = from_optbinning(
        scorecard, name=name or path.stem, cutoffs=cutoffs, labels=labels, on=on, precision=precision
    )
    write_json(path, card.to_dict())
    return card
