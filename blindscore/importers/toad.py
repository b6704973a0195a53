"""Convert a fitted toad scorecard and its combiner, and read the JSON bundle they are saved as.

Numeric splits go through ``np.digitize``, so bins are [a, b). With ``empty_separate`` (a
trailing NaN split) a missing value has its own bin; without it toad fills missing values with -1
before binning, so they score as -1 does. A category in no group goes to the ``else`` group if
there is one, else it scores the ``default`` of ``ScoreCard.predict`` (``"min"``: the variable's
lowest score); so does a missing category. Points come from ``ScoreCard.rules`` at full precision
(``card.export()`` rounds them to two decimals and is not read). The bundle
(:func:`save_toad_bundle`) is what ``blindscore model import`` reads as format ``toad``::

    {"kind": "toad-scorecard-bundle", "format": 1,
     "combiner": combiner.export(),           # a trailing NaN split is written as null
     "rules": {var: {"bins": [...], "scores": [...], "woes": [...], "weight": w}},  # card.rules
     "base": {"base_points": 0, "default": "min",
              "pdo": card.pdo, "rate": card.rate, "base_odds": card.base_odds, "base_score": card.base_score}}

toad is optional (``pip install 'blindscore[scorecards]'``); it is imported only when a live card
is converted or saved.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from blindscore._files import write_atomic
from blindscore.errors import InvalidInputError, ModelFormatError
from blindscore.importers._common import CardBands, category, is_nan, later_wins, real, require, tolist
from blindscore.models.scorecard import (
    DEFAULT_PRECISION,
    CategoricalBin,
    CategoricalBins,
    NumericBins,
    PdoScaling,
    Scorecard,
    ScorecardFeature,
)

__all__ = ["TOAD_BUNDLE_KIND", "from_bundle", "from_toad", "from_toad_card", "save_toad_bundle"]

TOAD_BUNDLE_KIND = "toad-scorecard-bundle"
TOAD_BUNDLE_FORMAT = 1
#: toad's marker for the group of every category not listed elsewhere.
TOAD_ELSE = "else"
#: toad fills a missing numeric value with this before binning, unless it has a NaN split.
TOAD_FILLNA = -1


def _toad_bins(value: object, where: str) -> tuple[list[float], bool] | list[list[str] | None]:
    """Numeric splits and whether missing values have their own bin, or categorical groups (None = else)."""
    items = tolist(value)
    if all(is_nan(x) or (isinstance(x, numbers.Real) and not isinstance(x, bool)) for x in items):
        has_nan = bool(items) and is_nan(items[-1])
        splits = items[:-1] if has_nan else items
        if any(is_nan(x) for x in splits):
            raise ModelFormatError(f"{where}: only the last split may be NaN (toad's empty_separate)")
        edges = [real(x, f"{where}: split") for x in splits]
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
            groups.append([category(c, where) for c in tolist(g)])
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
        scores = [real(s, f"{where}: score") for s in tolist(rule["scores"])]
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
            fallback = real(default, "default")
        else_index = next((i for i, g in enumerate(bins) if g is None), None)
        other = fallback if else_index is None else scores[else_index]
        listed = later_wins([g if g is not None else [] for g in bins])
        cat_bins = tuple(
            CategoricalBin(tuple(g), p)
            for g, p, orig in zip(listed, scores, bins, strict=True)
            if orig is not None and g
        )
        features.append(CategoricalBins(str(variable), cat_bins, missing_points=other, other_points=other))
    bands = CardBands(name, cutoffs, labels, on, precision)
    return bands.card(
        features, base_points, scaling=scaling, metadata={"source": "toad", **dict(metadata or {})}
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
    toad_scorecard = require("toad.scorecard", "a toad scorecard")
    toad_transform = require("toad.transform", "a toad scorecard")
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


def from_bundle(
    bundle: object, bands: CardBands, *, scaling: PdoScaling | None = None, where: str = "toad bundle"
) -> Scorecard:
    """The scorecard of a toad bundle (:func:`save_toad_bundle`); ``scaling`` replaces the card's."""
    if not isinstance(bundle, Mapping):
        raise ModelFormatError(f"{where}: a toad bundle must be a JSON object")
    if set(bundle) != {"kind", "format", "combiner", "rules", "base"}:
        raise ModelFormatError(f"{where}: expected the fields kind, format, combiner, rules, base")
    if bundle["kind"] != TOAD_BUNDLE_KIND or bundle["format"] != TOAD_BUNDLE_FORMAT:
        raise ModelFormatError(f"{where}: kind {TOAD_BUNDLE_KIND!r} format {TOAD_BUNDLE_FORMAT} expected")
    base = bundle["base"]
    keys = {"base_points", "default", "pdo", "rate", "base_odds", "base_score"}
    if not isinstance(base, Mapping) or set(base) != keys:
        raise ModelFormatError(f"{where}: 'base' must hold exactly {sorted(keys)}")
    rate = real(base["rate"], f"{where}: rate")
    if not rate > 1:
        raise ModelFormatError(f"{where}: rate must be above 1, got {rate!r}")
    card_scaling = _toad_scaling(
        real(base["pdo"], f"{where}: pdo"),
        rate,
        real(base["base_odds"], f"{where}: base_odds"),
        real(base["base_score"], f"{where}: base_score"),
    )
    return from_toad(
        bundle["combiner"],
        bundle["rules"],
        name=bands.name,
        cutoffs=bands.cutoffs,
        labels=bands.labels,
        on=bands.on,
        base_points=real(base["base_points"], f"{where}: base_points"),
        default=base["default"],
        scaling=card_scaling if scaling is None else scaling,
        precision=bands.precision,
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
    return from_bundle(bundle, CardBands(name, cutoffs, labels, on, precision))


def save_toad_bundle(card: Any, combiner: Any, path: str | Path, *, default: str | float = "min") -> None:
    """Write a toad card and its combiner as the JSON bundle that ``blindscore model import`` reads."""
    # Not sorted: the variables keep the card's order, which is the order of the encoded columns.
    text = json.dumps(_toad_bundle(card, combiner, default), indent=2, allow_nan=False) + "\n"
    write_atomic(Path(path), text.encode())
