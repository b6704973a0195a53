"""Import scorecards built with optbinning, toad and scorecardpy, and read scorecard files for the CLI.

Each converter reads the library's own tables and binning objects (never a pickle) and reproduces
how that library scores a row, bin convention included, as a :class:`~blindscore.models.scorecard.Scorecard`:

* optbinning (:func:`from_optbinning`): numeric bins are [a, b) (``np.digitize(x, splits)``), so an
  edge belongs to the bin above it. Special codes are checked first: a list of codes is one
  special bin, a dict one bin per key (a code under two keys goes to the later key, as the
  library assigns them in order). The Missing row scores NaN, and also any category the binning
  did not see (``score`` maps it to index -1, the last row: Missing).
* toad (:func:`from_toad`, :func:`from_toad_card`): numeric splits go through ``np.digitize``, so
  bins are [a, b) too. With ``empty_separate`` (a trailing NaN split) a missing value has its
  own bin; without it toad fills missing values with -1 before binning, so they score as -1
  does. A category in no group goes to the ``else`` group if there is one, else it scores the
  ``default`` of ``ScoreCard.predict`` (``"min"``: the variable's lowest score); so does a
  missing category. Points come from ``ScoreCard.rules`` at full precision (``card.export()``
  rounds them to two decimals and is not read).
* scorecardpy (:func:`from_scorecardpy_points`): bins ``"[a,b)"`` are what they say (``pd.cut``
  with ``right=False``), tokens joined by ``"%,%"`` share a bin, ``"missing"`` is the missing bin,
  and in a numeric variable any other token is a special value. ``scorecard_ply`` adds nothing
  for a value its card does not list (a category never seen, a missing value without a missing
  bin); pass ``unmatched_points=0`` to reproduce that, or leave it None to refuse such values.
  Special values are applied as ``woebin`` binned them; ``scorecard_ply`` itself only matches
  them when every special value is an integer and the variable has no missing bin.

Files for ``blindscore model import`` (:func:`import_scorecard_file`): the neutral JSON format of
:mod:`blindscore.models.scorecard` (also what :func:`save_optbinning_scorecard` writes), a scorecardpy
points table as CSV (columns ``variable``, ``bin``, ``points``; a ``basepoints`` row), and a toad
bundle written by :func:`save_toad_bundle`::

    {"kind": "toad-scorecard-bundle", "format": 1,
     "combiner": combiner.export(),           # a trailing NaN split is written as null
     "rules": {var: {"bins": [...], "scores": [...], "woes": [...], "weight": w}},  # card.rules
     "base": {"base_points": 0, "default": "min",
              "pdo": card.pdo, "rate": card.rate, "base_odds": card.base_odds, "base_score": card.base_score}}

optbinning, toad and scorecardpy are optional (``pip install 'blindscore[scorecards]'``); they are
imported only by the functions that take their live objects.
"""

from __future__ import annotations

import bisect
import csv
import importlib
import itertools
import json
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from blindscore._files import read_json, write_atomic, write_json
from blindscore.errors import BlindscoreError, InvalidInputError, ModelFormatError
from blindscore.models.scorecard import (
    DEFAULT_PRECISION,
    SCORECARD_KIND,
    CategoricalBin,
    CategoricalBins,
    NumericBins,
    PdoScaling,
    Scorecard,
    ScorecardFeature,
    SpecialBin,
)

__all__ = [
    "FORMATS",
    "TOAD_BUNDLE_KIND",
    "from_optbinning",
    "from_scorecardpy_points",
    "from_toad",
    "from_toad_card",
    "import_scorecard_file",
    "save_optbinning_scorecard",
    "save_toad_bundle",
]

#: The file formats :func:`import_scorecard_file` reads.
FORMATS = ("blindscore", "optbinning", "scorecardpy", "toad")
TOAD_BUNDLE_KIND = "toad-scorecard-bundle"
TOAD_BUNDLE_FORMAT = 1
#: toad's marker for the group of every category not listed elsewhere.
TOAD_ELSE = "else"
#: toad fills a missing numeric value with this before binning, unless it has a NaN split.
TOAD_FILLNA = -1
SCORECARDPY_BASE = "basepoints"
SCORECARDPY_MISSING = "missing"
SCORECARDPY_SEP = "%,%"
_INTERVAL = re.compile(r"^\[([^,\[\]]+),([^,\[\]]+)\)$")
#: A scorecard file is small; this only stops a hostile file from exhausting memory.
MAX_FILE_BYTES = 64 << 20

BandsOn = Literal["points", "probability"]


def _require(module: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelFormatError(f"{what} needs {module}: install blindscore[scorecards]") from None


def _on(on: str) -> BandsOn:
    if on not in ("points", "probability"):
        raise InvalidInputError(f"bands must be on 'points' or 'probability', got {on!r}")
    return "points" if on == "points" else "probability"


def _real(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ModelFormatError(f"{what} must be a number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise ModelFormatError(f"{what} must be finite, got {value!r}")
    return x


def _is_nan(value: object) -> bool:
    return value is None or (
        isinstance(value, numbers.Real) and not isinstance(value, bool) and value != value
    )


def _tolist(value: object) -> list[Any]:
    """A list from a list, tuple or numpy array (``tolist`` turns numpy scalars into Python ones)."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        value = tolist()
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise ModelFormatError(f"expected a list, got {type(value).__name__}")
    return value


def _later_wins(groups: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Make groups disjoint as the libraries assign them, in order: the last group listing a value wins."""
    seen: set[Any] = set()
    out: list[list[Any]] = []
    for group in reversed(groups):
        kept = []
        for v in group:
            if v not in seen:
                seen.add(v)
                kept.append(v)
        out.append(kept)
    return out[::-1]


def _category(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ModelFormatError(
            f"{where}: category {value!r} is not a string; only string categories are supported"
        )
    return str(value)


# ---------------------------------------------------------------------------------------------
# optbinning


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
    specials = _later_wins([[v for v in g if not _is_nan(v)] for g in specials])
    if optb.dtype == "numerical":
        edges = [_real(s, f"{where}: split") for s in _tolist(optb.splits)]
        n_bins = len(edges) + 1
    elif optb.dtype == "categorical":
        groups = [[_category(c, where) for c in _tolist(g)] for g in optb.splits]
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
        for g, p in zip(_later_wins(groups), regular, strict=True)
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
    optbinning = _require("optbinning", "from_optbinning")
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
    for variable in _tolist(process.get_support(names=True)):
        rows = table[table["Variable"] == variable]
        ids = [int(i) for i in rows["Bin id"]]
        if ids != list(range(len(ids))):
            raise ModelFormatError(f"optbinning variable {variable!r}: bin ids are not 0..{len(ids) - 1}")
        points = [_real(p, f"optbinning variable {variable!r}: points") for p in rows["Points"]]
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
    return Scorecard(
        name,
        features,
        _real(scorecard.intercept_, "optbinning intercept_"),
        cutoffs,
        labels,
        on=_on(on),
        scaling=scaling,
        precision=precision,
        metadata=meta,
    )


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


# ---------------------------------------------------------------------------------------------
# toad


def _toad_bins(value: object, where: str) -> tuple[list[float], bool] | list[list[str] | None]:
    """Numeric splits and whether missing values have their own bin, or categorical groups (None = else)."""
    items = _tolist(value)
    if all(_is_nan(x) or (isinstance(x, numbers.Real) and not isinstance(x, bool)) for x in items):
        has_nan = bool(items) and _is_nan(items[-1])
        splits = items[:-1] if has_nan else items
        if any(_is_nan(x) for x in splits):
            raise ModelFormatError(f"{where}: only the last split may be NaN (toad's empty_separate)")
        edges = [_real(x, f"{where}: split") for x in splits]
        if any(a >= b for a, b in itertools.pairwise(edges)):
            raise ModelFormatError(f"{where}: splits must be strictly ascending, got {edges}")
        return edges, has_nan
    groups: list[list[str] | None] = []
    for g in items:
        if isinstance(g, str):
            if g == TOAD_ELSE:
                groups.append(None)
                continue
            if g.startswith("[") and " ~ " in g:
                raise ModelFormatError(
                    f"{where}: {g!r} is a formatted label; export the combiner without format=True"
                )
            groups.append([g])  # np.isin(X, "a") matches "a"
        else:
            groups.append([_category(c, where) for c in _tolist(g)])
    return groups


def _bins_key(bins: tuple[list[float], bool] | list[list[str] | None]) -> object:
    return bins if isinstance(bins, tuple) else [None if g is None else list(g) for g in bins]


def from_toad(
    combiner_export: Mapping[str, Any],
    card_rules: Mapping[str, Any],
    *,
    name: str,
    cutoffs: Sequence[float],
    labels: Sequence[str] = (),
    on: str = "points",
    base_points: float = 0.0,
    default: str | float = "min",
    scaling: PdoScaling | None = None,
    precision: float = DEFAULT_PRECISION,
    metadata: Mapping[str, Any] | None = None,
) -> Scorecard:
    """Build a Scorecard from ``combiner.export()`` and ``ScoreCard.rules`` of a fitted toad card.

    ``card_rules`` maps each variable to its rule (``scores`` required; ``bins``, if present,
    must agree with the combiner). toad spreads its base score over the variables' scores, so
    ``base_points`` is 0 unless the rules were shifted. ``default`` is ``ScoreCard.predict``'s
    argument of that name: the score of a category in no group when there is no ``else`` group.
    """
    if not isinstance(combiner_export, Mapping) or not isinstance(card_rules, Mapping):
        raise ModelFormatError("from_toad expects the combiner export and the card rules as mappings")
    if not card_rules:
        raise ModelFormatError("the toad card has no rules (is it fitted?)")
    features: list[ScorecardFeature] = []
    for variable, rule in card_rules.items():
        where = f"toad variable {variable!r}"
        if not isinstance(rule, Mapping) or "scores" not in rule:
            raise ModelFormatError(f"{where}: a rule needs 'scores'")
        unknown = set(rule) - {"bins", "scores", "woes", "weight"}
        if unknown:
            raise ModelFormatError(f"{where}: unknown rule field(s) {sorted(map(str, unknown))}")
        if variable not in combiner_export:
            raise ModelFormatError(f"{where}: not in the combiner export")
        scores = [_real(s, f"{where}: score") for s in _tolist(rule["scores"])]
        bins = _toad_bins(combiner_export[variable], where)
        if "bins" in rule and _bins_key(_toad_bins(rule["bins"], where)) != _bins_key(bins):
            raise ModelFormatError(
                f"{where}: the card's bins and the combiner's disagree; pass the card's combiner"
            )
        if isinstance(bins, tuple):
            edges, has_nan = bins
            expected = len(edges) + 1 + int(has_nan)
            if len(scores) != expected:
                raise ModelFormatError(f"{where}: {len(scores)} scores for {expected} bins")
            if has_nan:
                points, missing = scores[:-1], scores[-1]
            else:
                points, missing = scores, scores[bisect.bisect_right(edges, TOAD_FILLNA)]
            features.append(NumericBins(str(variable), tuple(edges), tuple(points), missing))
            continue
        if len(scores) != len(bins):
            raise ModelFormatError(f"{where}: {len(scores)} scores for {len(bins)} groups")
        if isinstance(default, str):
            if default not in ("min", "max"):
                raise InvalidInputError(f"default must be 'min', 'max' or a number, got {default!r}")
            fallback = min(scores) if default == "min" else max(scores)
        else:
            fallback = _real(default, "default")
        else_index = next((i for i, g in enumerate(bins) if g is None), None)
        other = fallback if else_index is None else scores[else_index]
        listed = _later_wins([g if g is not None else [] for g in bins])
        cat_bins = tuple(
            CategoricalBin(tuple(g), p)
            for g, p, orig in zip(listed, scores, bins, strict=True)
            if orig is not None and g
        )
        features.append(CategoricalBins(str(variable), cat_bins, missing_points=other, other_points=other))
    meta = {"source": "toad", **dict(metadata or {})}
    return Scorecard(
        name,
        features,
        base_points,
        cutoffs,
        labels,
        on=_on(on),
        scaling=scaling,
        precision=precision,
        metadata=meta,
    )


def _json_ready(value: object) -> Any:
    """Numpy arrays and scalars to plain JSON values; NaN to null."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        value = tolist()
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _toad_scaling(pdo: float, rate: float, base_odds: float, base_score: float) -> PdoScaling:
    # toad's factor is pdo / ln(rate): the same line as a pdo' / ln 2 with pdo' = pdo ln 2 / ln(rate).
    pdo2 = float(pdo) if rate == 2 else float(pdo) * math.log(2.0) / math.log(float(rate))
    return PdoScaling(pdo2, base_score, base_odds, "good:bad")


def _toad_bundle(card: Any, combiner: Any, default: str | float) -> dict[str, Any]:
    toad_scorecard = _require("toad.scorecard", "a toad scorecard")
    toad_transform = _require("toad.transform", "a toad scorecard")
    if not isinstance(card, toad_scorecard.ScoreCard):
        raise ModelFormatError(f"expected a toad ScoreCard, got {type(card).__name__}")
    if not isinstance(combiner, toad_transform.Combiner):
        raise ModelFormatError(f"expected a toad Combiner, got {type(combiner).__name__}")
    rules = {
        str(var): {key: _json_ready(rule[key]) for key in ("bins", "scores", "woes", "weight") if key in rule}
        for var, rule in card.rules.items()
    }
    return {
        "kind": TOAD_BUNDLE_KIND,
        "format": TOAD_BUNDLE_FORMAT,
        "combiner": {str(k): _json_ready(v) for k, v in combiner.export().items()},
        "rules": rules,
        "base": {
            "base_points": 0.0,
            "default": default,
            "pdo": float(card.pdo),
            "rate": float(card.rate),
            "base_odds": float(card.base_odds),
            "base_score": float(card.base_score),
        },
    }


def _from_toad_bundle(
    bundle: Mapping[str, Any],
    *,
    name: str,
    cutoffs: Sequence[float],
    labels: Sequence[str],
    on: str,
    precision: float,
) -> Scorecard:
    where = "toad bundle"
    if set(bundle) != {"kind", "format", "combiner", "rules", "base"}:
        raise ModelFormatError(f"{where}: expected the fields kind, format, combiner, rules, base")
    if bundle["kind"] != TOAD_BUNDLE_KIND or bundle["format"] != TOAD_BUNDLE_FORMAT:
        raise ModelFormatError(f"{where}: kind {TOAD_BUNDLE_KIND!r} format {TOAD_BUNDLE_FORMAT} expected")
    base = bundle["base"]
    keys = {"base_points", "default", "pdo", "rate", "base_odds", "base_score"}
    if not isinstance(base, Mapping) or set(base) != keys:
        raise ModelFormatError(f"{where}: 'base' must hold exactly {sorted(keys)}")
    rate = _real(base["rate"], f"{where}: rate")
    if not rate > 1:
        raise ModelFormatError(f"{where}: rate must be above 1, got {rate!r}")
    scaling = _toad_scaling(
        _real(base["pdo"], f"{where}: pdo"),
        rate,
        _real(base["base_odds"], f"{where}: base_odds"),
        _real(base["base_score"], f"{where}: base_score"),
    )
    return from_toad(
        bundle["combiner"],
        bundle["rules"],
        name=name,
        cutoffs=cutoffs,
        labels=labels,
        on=on,
        base_points=_real(base["base_points"], f"{where}: base_points"),
        default=base["default"],
        scaling=scaling,
        precision=precision,
    )


def from_toad_card(
    card: Any,
    combiner: Any,
    *,
    name: str,
    cutoffs: Sequence[float],
    labels: Sequence[str] = (),
    on: str = "points",
    default: str | float = "min",
    precision: float = DEFAULT_PRECISION,
) -> Scorecard:
    """Convert a fitted ``toad.ScoreCard`` and its ``Combiner``, keeping the card's PDO scaling."""
    bundle = _toad_bundle(card, combiner, default)
    return _from_toad_bundle(bundle, name=name, cutoffs=cutoffs, labels=labels, on=on, precision=precision)


def save_toad_bundle(card: Any, combiner: Any, path: str | Path, *, default: str | float = "min") -> None:
    """Write a toad card and its combiner as a JSON bundle that :func:`import_scorecard_file` reads."""
    # Not sorted: the variables keep the card's order, which is the order of the encoded columns.
    text = json.dumps(_toad_bundle(card, combiner, default), indent=2, allow_nan=False) + "\n"
    write_atomic(Path(path), text.encode())


# ---------------------------------------------------------------------------------------------
# scorecardpy


def _scorecardpy_rows(source: object) -> list[tuple[str, object, object]]:
    """(variable, bin, points) rows from a CSV path, a DataFrame or the dict ``sc.scorecard`` returns."""
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                header = list(reader.fieldnames or [])
                missing = {"variable", "bin", "points"} - set(header)
                if missing:
                    raise ModelFormatError(
                        f"{path}: a scorecardpy points table needs the columns variable, bin, points; "
                        f"missing {sorted(missing)}"
                    )
                return [(row["variable"], row["bin"], row["points"]) for row in reader]
        except FileNotFoundError:
            raise InvalidInputError(f"{path}: no such file") from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ModelFormatError(f"{path}: not a readable CSV ({exc})") from None
    frames = list(source.values()) if isinstance(source, Mapping) else [source]
    rows: list[tuple[str, object, object]] = []
    for frame in frames:
        to_dict = getattr(frame, "to_dict", None)
        if not callable(to_dict):
            raise ModelFormatError(
                "expected a CSV path, a DataFrame or the dict of DataFrames sc.scorecard returns"
            )
        for record in to_dict("records"):
            if not {"variable", "bin", "points"} <= set(record):
                raise ModelFormatError("a scorecardpy points table needs the columns variable, bin, points")
            rows.append((record["variable"], record["bin"], record["points"]))
    return rows


def _number(text: object, what: str) -> float:
    if isinstance(text, str):
        try:
            value: object = float(text.strip())
        except ValueError:
            raise ModelFormatError(f"{what}: {text!r} is not a number") from None
    else:
        value = text
    return _real(value, what)


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
                lo = _number(m.group(1), f"{where}: bin {label!r}") if m.group(1) != "-inf" else -math.inf
                hi = _number(m.group(2), f"{where}: bin {label!r}") if m.group(2) != "inf" else math.inf
                if not lo < hi:
                    raise ModelFormatError(f"{where}: empty interval {t!r}")
                intervals.append((lo, hi, points))
            elif numeric:
                values.append(_number(t, f"{where}: special value in bin {label!r}"))
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
    base: float | None = None
    per_variable: dict[str, list[tuple[str, float]]] = {}
    for i, (variable, label, points) in enumerate(_scorecardpy_rows(source)):
        where = f"scorecardpy points table, row {i + 1}"
        if not isinstance(variable, str) or not variable:
            raise ModelFormatError(f"{where}: 'variable' must be a non-empty string")
        value = _number(points, f"{where}: points")
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
    unmatched = None if unmatched_points is None else _real(unmatched_points, "unmatched_points")
    features = [_scorecardpy_feature(v, bins, unmatched) for v, bins in per_variable.items()]
    meta = {"source": "scorecardpy", **dict(metadata or {})}
    return Scorecard(
        name,
        features,
        0.0 if base is None else base,  # scorecard_ply also adds 0 without a basepoints row
        cutoffs,
        labels,
        on=_on(on),
        scaling=scaling,
        precision=precision,
        metadata=meta,
    )


# ---------------------------------------------------------------------------------------------
# Files


def _read_json_file(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ModelFormatError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB; not a scorecard")
        return read_json(path)
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: no such file") from None
    except ModelFormatError:
        raise
    except BlindscoreError as exc:
        raise ModelFormatError(str(exc)) from exc


def _detect(path: Path) -> tuple[str, Any]:
    if path.suffix.lower() == ".csv":
        return "scorecardpy", None
    doc = _read_json_file(path)
    kind = doc.get("kind") if isinstance(doc, Mapping) else None
    if kind == SCORECARD_KIND:
        return "blindscore", doc
    if kind == TOAD_BUNDLE_KIND:
        return "toad", doc
    raise ModelFormatError(
        f"{path}: cannot tell the scorecard format (kind {kind!r}); expected a {SCORECARD_KIND!r} JSON, "
        f"a {TOAD_BUNDLE_KIND!r} JSON or a scorecardpy points CSV; name the format ({', '.join(FORMATS)})"
    )


def import_scorecard_file(
    path: str | Path,
    fmt: str | None = None,
    *,
    name: str | None = None,
    cutoffs: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    on: str | None = None,
    scaling: PdoScaling | None = None,
    precision: float | None = None,
    unmatched_points: float | None = None,
) -> Scorecard:
    """Read a scorecard file in one of :data:`FORMATS` (``fmt=None``: tell by suffix and ``kind``).

    ``blindscore`` and ``optbinning`` files are neutral JSON and carry their bands; ``cutoffs``
    (with ``labels`` and ``on``), ``name``, ``scaling`` and ``precision`` replace theirs when
    given. scorecardpy and toad files carry no bands, so ``cutoffs`` is required for them.
    ``scaling`` also gives a scorecardpy table its PDO scaling (toad bundles carry the card's).
    """
    path = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise InvalidInputError(f"unknown scorecard format {fmt!r}; known: {', '.join(FORMATS)}")
    if cutoffs is None and (labels is not None or on is not None):
        raise InvalidInputError("band labels or 'on' need the cutoffs too")
    doc: Any = None
    if fmt is None:
        fmt, doc = _detect(path)
    elif fmt != "scorecardpy":
        doc = _read_json_file(path)
    if fmt in ("blindscore", "optbinning"):
        if not isinstance(doc, Mapping) or doc.get("kind") != SCORECARD_KIND:
            raise ModelFormatError(f"{path}: not a neutral scorecard JSON (kind {SCORECARD_KIND!r})")
        d = dict(doc)
        if name is not None:
            d["name"] = name
        if cutoffs is not None:
            d["bands"] = {"on": on or "points", "cutoffs": list(cutoffs), "labels": list(labels or [])}
        if scaling is not None:
            d["scaling"] = scaling.to_dict()
        if precision is not None:
            d["precision"] = precision
        return Scorecard.from_dict(d)
    if cutoffs is None:
        raise InvalidInputError(f"a {fmt} scorecard file carries no bands: give the cutoffs")
    common: dict[str, Any] = {
        "name": name or path.stem,
        "cutoffs": cutoffs,
        "labels": labels or (),
        "on": on or "points",
        "precision": DEFAULT_PRECISION if precision is None else precision,
    }
    if fmt == "scorecardpy":
        return from_scorecardpy_points(path, scaling=scaling, unmatched_points=unmatched_points, **common)
    if not isinstance(doc, Mapping):
        raise ModelFormatError(f"{path}: a toad bundle must be a JSON object")
    card = _from_toad_bundle(doc, **common)
    if scaling is not None:
        d = card.to_dict()
        d["scaling"] = scaling.to_dict()
        return Scorecard.from_dict(d)
    return card
