"""The privately evaluable linear scoring model: feature spec, band policy and integer parameters.

Roles: a :class:`FeatureSpec` is public and runs at the platform (validate, one-hot, fixed-point
encode); a :class:`LinearModel` is the bureau's artifact and holds the secret weights; a
:class:`BandPolicy` says which score bands the bank may learn.

Integer arithmetic of the encrypted path. Encoded column i carries its feature at scale 2^e_i
(e_i = the feature's ``frac_bits``; one-hot columns are exact 0/1 with e_i = 0) and its weight at
scale 2^(S - e_i), so every product and the intercept land at the common score scale 2^S::

    s_enc = B + sum_i W_i X_i,   W_i = round(w_i 2^(S - e_i)),   B = round(b 2^S)

Cutoffs in score units are scaled by 2^S and rounded up, so ``s_enc >= c_enc`` holds exactly
when ``s_enc / 2^S >= c``. The band protocol (:mod:`blindscore.protocol.comparison`) compares the score
truncated by T bits, i.e. to one ulp of 2^(T-S) in score units, with a random carry: it decides
exactly whenever ``|s_enc - c_enc| >= 2^T``. The precision budget is split between the two
errors (see :meth:`LinearModel._scales`): the computational error (feature and weight rounding)
gets at most half, and the truncation ulp, a power of two, the rest. Fewer significant bits in
the comparison mean a shorter comparison: l shrinks by one for every bit of T. Every bound is
computed from the public declared ranges, which the platform enforces when it encodes.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import numbers
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeAlias

from blindscore._files import read_json, write_json
from blindscore.errors import BlindscoreError, EncodingError, InvalidInputError, ModelFormatError
from blindscore.models.contract import PrivateModel, register_model_type
from blindscore.models.encoding import FixedPointCodec, fmt_real, parse_number
from blindscore.protocol import comparison

if TYPE_CHECKING:
    from blindscore.crypto.paillier import PublicKey

__all__ = [
    "FORMAT_VERSION",
    "MODEL_FORMAT_VERSION",
    "BandPolicy",
    "BinnedFeature",
    "CategoricalFeature",
    "Feature",
    "FeatureSpec",
    "GroupedCategoricalFeature",
    "LinearModel",
    "NumericFeature",
    "logit",
    "sigmoid",
]

#: Format of a serialised feature spec.
FORMAT_VERSION = 1
#: Format of a serialised model. 2: the encoded section gained ``truncate_bits`` (truncated band
#: comparisons), and S and l follow the precision split described in the module docstring.
MODEL_FORMAT_VERSION = 2
#: A bigger scale than the precision split needs, spent to double the truncation ulp (one bit of
#: l) when that takes at most this many bits: a bit of S costs about half a multiplication modulo
#: n^2 per encoded column in the dot product, a bit of l costs K + 1 DGK ciphertexts (256 B each)
#: and K zero tests.
MAX_EXTRA_SCALE_BITS = 4
SPEC_KIND = "blindscore-feature-spec"
MODEL_KIND = "blindscore-linear-model"
LINKS = ("logit", "identity")
OUTPUTS = ("probability", "raw")
#: A score scale beyond this means the precision asked for is unreasonable for the ranges.
MAX_SCORE_FRAC_BITS = 1024
_MAX_LISTED = 12


def sigmoid(z: float) -> float:
    """The logistic function, without overflow for large ``|z|``."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


def logit(p: float) -> float:
    """The log-odds ``log(p / (1 - p))`` for ``0 < p < 1``."""
    if not 0.0 < p < 1.0:
        raise InvalidInputError(f"logit needs 0 < p < 1, got {p!r}")
    return math.log(p) - math.log1p(-p)


# ---------------------------------------------------------------------------------------------
# Strict reading of JSON-like dictionaries


def _check_keys(d: object, where: str, required: set[str], optional: frozenset[str] = frozenset()) -> None:
    if not isinstance(d, Mapping):
        raise ModelFormatError(f"{where}: expected a JSON object, got {type(d).__name__}")
    keys = set(d)
    missing = required - keys
    unknown = keys - required - optional
    if missing:
        raise ModelFormatError(f"{where}: missing field(s) {sorted(missing)}")
    if unknown:
        raise ModelFormatError(f"{where}: unknown field(s) {sorted(map(str, unknown))}")


def _get_str(d: Mapping[str, Any], key: str, where: str) -> str:
    value = d[key]
    if not isinstance(value, str):
        raise ModelFormatError(f"{where}: {key!r} must be a string")
    return value


def _get_int(d: Mapping[str, Any], key: str, where: str) -> int:
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelFormatError(f"{where}: {key!r} must be an integer")
    return value


def _as_real(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ModelFormatError(f"{what} must be a number, got {type(value).__name__}")
    try:
        result = float(value)
    except OverflowError as exc:
        raise ModelFormatError(f"{what} is too large") from exc
    if not math.isfinite(result):
        raise ModelFormatError(f"{what} must be finite, got {value!r}")
    return result


def _get_real(d: Mapping[str, Any], key: str, where: str) -> float:
    return _as_real(d[key], f"{where}: {key!r}")


def _get_list(d: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = d[key]
    if not isinstance(value, list):
        raise ModelFormatError(f"{where}: {key!r} must be a list")
    return value


def _check_format(d: Mapping[str, Any], kind: str, where: str, version: int = FORMAT_VERSION) -> None:
    if d.get("format") != version or isinstance(d.get("format"), bool):
        raise ModelFormatError(
            f"{where}: unsupported format {d.get('format')!r}; this version reads format {version}"
        )
    if d.get("kind") != kind:
        raise ModelFormatError(f"{where}: kind must be {kind!r}, got {d.get('kind')!r}")


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(repr(x) for x in items[:_MAX_LISTED])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _MAX_LISTED else "")


# ---------------------------------------------------------------------------------------------
# Features


@dataclass(frozen=True)
class NumericFeature:
    """A real-valued feature declared to lie in ``[lo, hi]``, fixed-point encoded with ``frac_bits``.

    ``integer=True`` declares an integer-valued feature (counts, months, whole currency units):
    ``frac_bits`` is then 0, non-integers are refused and the encoding adds no error.
    """

    name: str
    lo: float
    hi: float
    frac_bits: int = 0
    integer: bool = False
    kind: ClassVar[str] = "numeric"
    one_hot: ClassVar[bool] = False
    _codec: FixedPointCodec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        codec = FixedPointCodec(self.name, self.lo, self.hi, self.frac_bits, self.integer)
        object.__setattr__(self, "lo", codec.lo)
        object.__setattr__(self, "hi", codec.hi)
        object.__setattr__(self, "_codec", codec)

    @property
    def codec(self) -> FixedPointCodec:
        """The fixed-point codec of this feature."""
        return self._codec

    @property
    def columns(self) -> tuple[str, ...]:
        """Encoded column names: the feature itself."""
        return (self.name,)

    @property
    def column_frac_bits(self) -> int:
        """The scale exponent e of the encoded column."""
        return self.frac_bits

    @property
    def encoded_bounds(self) -> tuple[tuple[int, int], ...]:
        """Per encoded column, the smallest and largest encoded integer."""
        codec = self.codec
        return ((codec.enc_lo, codec.enc_hi),)

    def transform(self, value: object) -> list[float]:
        """Validate ``value`` exactly as :meth:`encode` does and return it unquantised."""
        x = parse_number(self.name, value)
        self._codec.encode(x)
        return [float(x)]

    def encode(self, value: object) -> list[int]:
        """The fixed-point encoding of ``value``, as a one-element list."""
        return [self._codec.encode(value)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "name": self.name,
            "lo": self.lo,
            "hi": self.hi,
            "frac_bits": self.frac_bits,
            "integer": self.integer,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "feature") -> NumericFeature:
        _check_keys(d, where, {"type", "name", "lo", "hi", "frac_bits", "integer"})
        integer = d["integer"]
        if not isinstance(integer, bool):
            raise ModelFormatError(f"{where}: 'integer' must be true or false")
        return cls(
            _get_str(d, "name", where),
            _get_real(d, "lo", where),
            _get_real(d, "hi", where),
            _get_int(d, "frac_bits", where),
            integer,
        )


@dataclass(frozen=True)
class CategoricalFeature:
    """A string-valued feature, one-hot encoded over a public, fixed list of categories."""

    name: str
    categories: tuple[str, ...]
    kind: ClassVar[str] = "categorical"
    one_hot: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_name(self.name)
        if isinstance(self.categories, str) or not isinstance(self.categories, Sequence):
            raise ModelFormatError(f"feature {self.name!r}: categories must be a sequence of strings")
        cats = tuple(self.categories)
        if not cats:
            raise ModelFormatError(f"feature {self.name!r}: needs at least one category")
        if not all(isinstance(c, str) for c in cats):
            raise ModelFormatError(f"feature {self.name!r}: categories must be strings")
        if len(set(cats)) != len(cats):
            raise ModelFormatError(f"feature {self.name!r}: duplicate categories")
        object.__setattr__(self, "categories", cats)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f"{self.name}={c}" for c in self.categories)

    @property
    def column_frac_bits(self) -> int:
        return 0

    @property
    def encoded_bounds(self) -> tuple[tuple[int, int], ...]:
        return ((0, 1),) * len(self.categories)

    def _index(self, value: object) -> int:
        if value is None:
            raise EncodingError(self.name, "value is missing (None)")
        if not isinstance(value, str):
            raise EncodingError(self.name, f"expected a category string, got {type(value).__name__}")
        try:
            return self.categories.index(value)
        except ValueError:
            raise EncodingError(
                self.name, f"unseen category {value!r}; expected one of {_listing(self.categories)}"
            ) from None

    def transform(self, value: object) -> list[float]:
        return [float(x) for x in self.encode(value)]

    def encode(self, value: object) -> list[int]:
        """Exact 0/1 indicators with a single 1 at the category of ``value``."""
        out = [0] * len(self.categories)
        out[self._index(value)] = 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "name": self.name, "categories": list(self.categories)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "feature") -> CategoricalFeature:
        _check_keys(d, where, {"type", "name", "categories"})
        return cls(_get_str(d, "name", where), tuple(_get_list(d, "categories", where)))


def _is_missing(value: object) -> bool:
    """A value the applicant did not give: None, a NaN (float, numpy, Decimal) or a blank string."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, numbers.Number) and not isinstance(value, numbers.Integral):
        try:
            return bool(value != value)  # NaN is the only value unequal to itself
        except ArithmeticError:  # a signalling decimal NaN refuses to compare
            return True
    return False


def _special_groups(name: str, special: object) -> tuple[tuple[float, ...], ...]:
    if isinstance(special, str) or not isinstance(special, Sequence):
        raise ModelFormatError(f"feature {name!r}: special must be a sequence of sequences of numbers")
    groups: list[tuple[float, ...]] = []
    seen: set[float] = set()
    for group in special:
        if isinstance(group, str) or not isinstance(group, Sequence) or not group:
            raise ModelFormatError(f"feature {name!r}: each special group needs a non-empty list of numbers")
        values = tuple(_as_real(v, f"feature {name!r}: special value") for v in group)
        for v in values:
            if v in seen:
                raise ModelFormatError(f"feature {name!r}: special value {fmt_real(v)} is listed twice")
            seen.add(v)
        groups.append(values)
    return tuple(groups)


class _BinIndicators:
    """One 0/1 column per bin, exactly one of them 1: the encoding shared by the bin features.

    A subclass provides ``width`` (the number of bins) and ``bin_of`` (the bin of a raw value).
    """

    @property
    def width(self) -> int:
        raise NotImplementedError

    def bin_of(self, value: object) -> int:
        raise NotImplementedError

    @property
    def column_frac_bits(self) -> int:
        return 0

    @property
    def encoded_bounds(self) -> tuple[tuple[int, int], ...]:
        return ((0, 1),) * self.width

    def transform(self, value: object) -> list[float]:
        return [float(x) for x in self.encode(value)]

    def encode(self, value: object) -> list[int]:
        """Exact 0/1 indicators with a single 1 at the bin of ``value``."""
        out = [0] * self.width
        out[self.bin_of(value)] = 1
        return out


@dataclass(frozen=True)
class BinnedFeature(_BinIndicators):
    """A numeric feature cut at public ``edges`` and one-hot encoded by bin.

    With edges e_1 < ... < e_m there are m + 1 bins; a value x falls in bin number
    ``#{k: x >= e_k}``, so each edge belongs to the bin above it. Any finite number is accepted.

    Two optional, equally public additions serve scorecards. ``special`` lists groups of special
    values (codes such as -1 for "not applicable"): a value equal to one of them falls in its
    group's own bin, checked before the edges. ``missing_bin=True`` adds a bin for a missing value
    (None, NaN or a blank string); without it a missing value is refused, naming the feature.
    Encoded columns, in order: the m + 1 edge bins, one per special group, the missing bin.
    """

    name: str
    edges: tuple[float, ...]
    missing_bin: bool = False
    special: tuple[tuple[float, ...], ...] = ()
    kind: ClassVar[str] = "binned"
    one_hot: ClassVar[bool] = True
    _special_index: dict[float, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if isinstance(self.edges, str) or not isinstance(self.edges, Sequence):
            raise ModelFormatError(f"feature {self.name!r}: edges must be a sequence of numbers")
        edges = tuple(_as_real(e, f"feature {self.name!r}: edge") for e in self.edges)
        if any(a >= b for a, b in itertools.pairwise(edges)):
            raise ModelFormatError(f"feature {self.name!r}: edges must be strictly ascending")
        if not isinstance(self.missing_bin, bool):
            raise ModelFormatError(f"feature {self.name!r}: missing_bin must be true or false")
        special = _special_groups(self.name, self.special)
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "special", special)
        # Python hashes equal ints and floats alike, so an int value finds its float key.
        index = {v: i for i, group in enumerate(special) for v in group}
        object.__setattr__(self, "_special_index", index)

    @property
    def width(self) -> int:
        """The number of bins (encoded columns)."""
        return len(self.edges) + 1 + len(self.special) + int(self.missing_bin)

    @property
    def columns(self) -> tuple[str, ...]:
        e = [fmt_real(x) for x in self.edges]
        if e:
            inner = [f"{self.name}[{a},{b})" for a, b in itertools.pairwise(e)]
            cols = [f"{self.name}<{e[0]}", *inner, f"{self.name}>={e[-1]}"]
        else:
            cols = [f"{self.name}=<number>"]
        for group in self.special:
            values = ",".join(fmt_real(v) for v in group)
            cols.append(f"{self.name}={values}" if len(group) == 1 else f"{self.name}={{{values}}}")
        if self.missing_bin:
            cols.append(f"{self.name}=<missing>")
        return tuple(cols)

    def bin_of(self, value: object) -> int:
        """The bin index of ``value``: its special group's bin, else the number of edges at or below it.

        A missing value goes to the missing bin (the last one) when there is one; otherwise it is
        refused like any value that is not a finite number.
        """
        if self.missing_bin and _is_missing(value):
            return self.width - 1
        x = parse_number(self.name, value)
        group = self._special_index.get(x)
        if group is not None:
            return len(self.edges) + 1 + group
        return bisect.bisect_right(self.edges, x)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.kind, "name": self.name, "edges": list(self.edges)}
        # Written only when used, so a spec without them reads exactly as before these existed.
        if self.special:
            d["special"] = [list(group) for group in self.special]
        if self.missing_bin:
            d["missing_bin"] = True
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "feature") -> BinnedFeature:
        _check_keys(d, where, {"type", "name", "edges"}, frozenset({"special", "missing_bin"}))
        missing_bin = d.get("missing_bin", False)
        if not isinstance(missing_bin, bool):
            raise ModelFormatError(f"{where}: 'missing_bin' must be true or false")
        special = d.get("special", [])
        if not isinstance(special, list) or not all(isinstance(g, list) for g in special):
            raise ModelFormatError(f"{where}: 'special' must be a list of lists of numbers")
        return cls(
            _get_str(d, "name", where),
            tuple(_get_list(d, "edges", where)),
            missing_bin,
            tuple(tuple(g) for g in special),
        )


@dataclass(frozen=True)
class GroupedCategoricalFeature(_BinIndicators):
    """A string-valued feature whose categories are grouped into public bins, one-hot encoded by bin.

    ``groups`` lists the bins, each a non-empty tuple of categories; a category belongs to one
    bin only. ``other_bin=True`` adds a bin for every category not listed (without it an unseen
    category is refused, naming the feature); ``missing_bin=True`` adds one for a missing value
    (None, NaN or a blank string; refused without it). Encoded columns, in order: the groups, the
    other bin, the missing bin.
    """

    name: str
    groups: tuple[tuple[str, ...], ...]
    other_bin: bool = False
    missing_bin: bool = False
    kind: ClassVar[str] = "grouped"
    one_hot: ClassVar[bool] = True
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        where = f"feature {self.name!r}"
        if isinstance(self.groups, str) or not isinstance(self.groups, Sequence):
            raise ModelFormatError(f"{where}: groups must be a sequence of sequences of category strings")
        for flag in ("other_bin", "missing_bin"):
            if not isinstance(getattr(self, flag), bool):
                raise ModelFormatError(f"{where}: {flag} must be true or false")
        groups: list[tuple[str, ...]] = []
        index: dict[str, int] = {}
        for i, group in enumerate(self.groups):
            if isinstance(group, str) or not isinstance(group, Sequence) or not group:
                raise ModelFormatError(f"{where}: each group must be a non-empty list of category strings")
            cats = tuple(group)
            for c in cats:
                if not isinstance(c, str) or not c.strip():
                    raise ModelFormatError(f"{where}: categories must be non-blank strings, got {c!r}")
                if c in index:
                    raise ModelFormatError(f"{where}: category {c!r} is in more than one group")
                index[c] = i
            groups.append(cats)
        if not groups and not self.other_bin:
            raise ModelFormatError(f"{where}: needs at least one group of categories or an other bin")
        object.__setattr__(self, "groups", tuple(groups))
        object.__setattr__(self, "_index", index)

    @property
    def width(self) -> int:
        """The number of bins (encoded columns)."""
        return len(self.groups) + int(self.other_bin) + int(self.missing_bin)

    @property
    def columns(self) -> tuple[str, ...]:
        # JSON lists keep the names unique and readable even when categories contain commas.
        cols = [f"{self.name}={json.dumps(list(g), ensure_ascii=False)}" for g in self.groups]
        if self.other_bin:
            cols.append(f"{self.name}=<other>")
        if self.missing_bin:
            cols.append(f"{self.name}=<missing>")
        return tuple(cols)

    def bin_of(self, value: object) -> int:
        """The bin index of ``value``: its group, else the other bin; a missing value the missing bin."""
        if _is_missing(value):
            if self.missing_bin:
                return self.width - 1
            raise EncodingError(self.name, f"value is missing ({value!r}) and the feature has no missing bin")
        if not isinstance(value, str):
            raise EncodingError(self.name, f"expected a category string, got {type(value).__name__}")
        group = self._index.get(value)
        if group is not None:
            return group
        if self.other_bin:
            return len(self.groups)
        raise EncodingError(
            self.name, f"unseen category {value!r}; expected one of {_listing(list(self._index))}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "name": self.name,
            "groups": [list(g) for g in self.groups],
            "other_bin": self.other_bin,
            "missing_bin": self.missing_bin,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "feature") -> GroupedCategoricalFeature:
        _check_keys(d, where, {"type", "name", "groups"}, frozenset({"other_bin", "missing_bin"}))
        flags = [d.get(k, False) for k in ("other_bin", "missing_bin")]
        if not all(isinstance(x, bool) for x in flags):
            raise ModelFormatError(f"{where}: 'other_bin' and 'missing_bin' must be true or false")
        groups = _get_list(d, "groups", where)
        if not all(isinstance(g, list) for g in groups):
            raise ModelFormatError(f"{where}: 'groups' must be a list of lists of category strings")
        return cls(_get_str(d, "name", where), tuple(tuple(g) for g in groups), flags[0], flags[1])


Feature: TypeAlias = NumericFeature | CategoricalFeature | BinnedFeature | GroupedCategoricalFeature
_FEATURE_TYPES: dict[
    str,
    type[NumericFeature] | type[CategoricalFeature] | type[BinnedFeature] | type[GroupedCategoricalFeature],
] = {
    "numeric": NumericFeature,
    "categorical": CategoricalFeature,
    "binned": BinnedFeature,
    "grouped": GroupedCategoricalFeature,
}


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise ModelFormatError("a feature name must be a non-empty string")


def _feature_from_dict(d: object, where: str) -> Feature:
    if not isinstance(d, Mapping):
        raise ModelFormatError(f"{where}: expected a JSON object")
    kind = d.get("type")
    if kind not in _FEATURE_TYPES:
        raise ModelFormatError(f"{where}: unknown feature type {kind!r}; known: {sorted(_FEATURE_TYPES)}")
    return _FEATURE_TYPES[kind].from_dict(d, where)


# ---------------------------------------------------------------------------------------------
# Feature spec


@dataclass(frozen=True)
class FeatureSpec:
    """The public input contract: which features, their declared ranges and their encoding.

    This is everything the platform needs (and all it may see) to validate and encode an
    application; it holds no weights.
    """

    features: tuple[Feature, ...]

    def __post_init__(self) -> None:
        if isinstance(self.features, str | Mapping) or not isinstance(self.features, Sequence):
            raise ModelFormatError("features must be a sequence of feature objects")
        feats = tuple(self.features)
        if not feats:
            raise ModelFormatError("a feature spec needs at least one feature")
        for f in feats:
            if not isinstance(f, tuple(_FEATURE_TYPES.values())):
                raise ModelFormatError(f"not a feature: {type(f).__name__}")
        for what, names in (("feature", [f.name for f in feats]), ("encoded column", _flat(feats))):
            dupes = sorted(n for n, count in Counter(names).items() if count > 1)
            if dupes:
                raise ModelFormatError(f"duplicate {what} name(s): {_listing(dupes)}")
        object.__setattr__(self, "features", feats)

    @property
    def input_names(self) -> list[str]:
        """The raw feature names an application must provide, in order."""
        return [f.name for f in self.features]

    @property
    def encoded_names(self) -> list[str]:
        """The encoded column names (after one-hot), in order."""
        return _flat(self.features)

    @property
    def encoded_width(self) -> int:
        """The number of encoded columns (ciphertexts per application)."""
        return sum(len(f.columns) for f in self.features)

    @property
    def column_frac_bits(self) -> list[int]:
        """Per encoded column, the scale exponent e_i (0 for one-hot columns)."""
        return [f.column_frac_bits for f in self.features for _ in f.columns]

    @property
    def encoded_bounds(self) -> list[tuple[int, int]]:
        """Per encoded column, the smallest and largest encoded integer the declared ranges allow."""
        return [b for f in self.features for b in f.encoded_bounds]

    @property
    def max_abs(self) -> list[int]:
        """Per encoded column, the largest absolute encoded integer the declared ranges allow."""
        return [max(abs(lo), abs(hi)) for lo, hi in self.encoded_bounds]

    def feature_slices(self) -> Iterator[tuple[Feature, slice]]:
        """Each feature with the slice of encoded columns it owns."""
        start = 0
        for f in self.features:
            stop = start + len(f.columns)
            yield f, slice(start, stop)
            start = stop

    def _values(self, row: Mapping[str, object]) -> Iterator[tuple[Feature, object]]:
        if not isinstance(row, Mapping):
            raise InvalidInputError(f"an application row must be a mapping, got {type(row).__name__}")
        for f in self.features:
            if f.name not in row:
                raise EncodingError(f.name, "missing from the application")
            yield f, row[f.name]

    def encode_row(self, row: Mapping[str, object]) -> list[int]:
        """Validate, one-hot and fixed-point encode an application (platform side).

        Keys that are not features are ignored; a missing feature or a bad value raises
        :class:`EncodingError` naming the feature.
        """
        return [x for f, value in self._values(row) for x in f.encode(value)]

    def transform_row(self, row: Mapping[str, object]) -> list[float]:
        """The validated, one-hot row as floats, before fixed-point rounding (plaintext path)."""
        return [x for f, value in self._values(row) for x in f.transform(value)]

    def check_encoded_row(self, encoded_row: Sequence[int]) -> list[int]:
        """Return ``encoded_row`` as ints if :meth:`encode_row` could have produced it, else raise.

        Checks the width, the per-column bounds and that each one-hot group has exactly one 1;
        together these are what the comparison-width guarantee relies on.
        """
        if isinstance(encoded_row, str | bytes) or not isinstance(encoded_row, Sequence):
            raise InvalidInputError("an encoded row must be a sequence of integers")
        if len(encoded_row) != self.encoded_width:
            raise InvalidInputError(
                f"an encoded row has {self.encoded_width} columns, got {len(encoded_row)}"
            )
        out: list[int] = []
        for name, (lo, hi), x in zip(self.encoded_names, self.encoded_bounds, encoded_row, strict=True):
            if isinstance(x, bool) or not isinstance(x, numbers.Integral):
                raise InvalidInputError(f"encoded column {name!r}: expected an integer, got {x!r}")
            if not lo <= int(x) <= hi:
                raise InvalidInputError(f"encoded column {name!r}: {int(x)} is outside [{lo}, {hi}]")
            out.append(int(x))
        for f, cols in self.feature_slices():
            if f.one_hot and sum(out[cols]) != 1:
                raise InvalidInputError(f"feature {f.name!r}: one-hot columns must hold exactly one 1")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "kind": SPEC_KIND,
            "features": [f.to_dict() for f in self.features],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSpec:
        """Rebuild a spec from :meth:`to_dict` output; anything unexpected raises ModelFormatError."""
        where = "feature spec"
        _check_keys(d, where, {"format", "kind", "features"})
        _check_format(d, SPEC_KIND, where)
        items = _get_list(d, "features", where)
        return cls(tuple(_feature_from_dict(item, f"{where}: features[{i}]") for i, item in enumerate(items)))


def _flat(features: Sequence[Feature]) -> list[str]:
    return [c for f in features for c in f.columns]


# ---------------------------------------------------------------------------------------------
# Band policy


@dataclass(frozen=True)
class BandPolicy:
    """Cut a model output into bands: band index = number of cutoffs the value is at or above.

    ``output="probability"`` puts the cutoffs on the predicted probability (each in (0, 1), link
    logit required); ``output="raw"`` puts them on the model's linear score. Band 0 holds the
    lowest outputs; with probabilities of default that is the best risk. Empty ``labels`` means
    "A", "B", "C", ...
    """

    cutoffs: tuple[float, ...]
    labels: tuple[str, ...] = ()
    output: Literal["probability", "raw"] = "probability"

    def __post_init__(self) -> None:
        if isinstance(self.cutoffs, str) or not isinstance(self.cutoffs, Sequence) or not self.cutoffs:
            raise ModelFormatError("a band policy needs a non-empty sequence of cutoffs")
        cutoffs = tuple(_as_real(c, "cutoff") for c in self.cutoffs)
        if any(a >= b for a, b in itertools.pairwise(cutoffs)):
            raise ModelFormatError(f"cutoffs must be strictly ascending, got {list(cutoffs)}")
        if self.output not in OUTPUTS:
            raise ModelFormatError(f"output must be one of {list(OUTPUTS)}, got {self.output!r}")
        if self.output == "probability" and not all(0.0 < c < 1.0 for c in cutoffs):
            raise ModelFormatError(
                f"probability cutoffs must lie strictly between 0 and 1, got {list(cutoffs)}"
            )
        if not self.labels:
            if len(cutoffs) + 1 > 26:
                raise ModelFormatError("more than 26 bands: give labels explicitly")
            labels = tuple(chr(ord("A") + i) for i in range(len(cutoffs) + 1))
        else:
            if isinstance(self.labels, str) or not isinstance(self.labels, Sequence):
                raise ModelFormatError("labels must be a sequence of strings")
            labels = tuple(self.labels)
            if len(labels) != len(cutoffs) + 1:
                raise ModelFormatError(
                    f"{len(cutoffs)} cutoffs need {len(cutoffs) + 1} labels, got {len(labels)}"
                )
            if not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels):
                raise ModelFormatError("labels must be distinct non-empty strings")
        object.__setattr__(self, "cutoffs", cutoffs)
        object.__setattr__(self, "labels", labels)

    @property
    def n_bands(self) -> int:
        return len(self.cutoffs) + 1

    def band_of(self, value: float) -> int:
        """The number of cutoffs that ``value`` is at or above."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InvalidInputError(f"cannot band a {type(value).__name__}")
        x = float(value)
        if math.isnan(x):
            raise InvalidInputError("cannot band NaN")
        return bisect.bisect_right(self.cutoffs, x)

    def label_of(self, value: float) -> str:
        """The label of the band of ``value``."""
        return self.labels[self.band_of(value)]

    def to_dict(self) -> dict[str, Any]:
        return {"cutoffs": list(self.cutoffs), "labels": list(self.labels), "output": self.output}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "band policy") -> BandPolicy:
        _check_keys(d, where, {"cutoffs", "labels", "output"})
        output = _get_str(d, "output", where)
        if output not in OUTPUTS:
            raise ModelFormatError(f"{where}: output must be one of {list(OUTPUTS)}, got {output!r}")
        labels = _get_list(d, "labels", where)
        if not labels:
            raise ModelFormatError(f"{where}: 'labels' must list one label per band")
        return cls(
            tuple(_get_list(d, "cutoffs", where)),
            tuple(labels),
            "probability" if output == "probability" else "raw",
        )


# ---------------------------------------------------------------------------------------------
# Linear model


@dataclass(frozen=True)
class _Encoded:
    """The integer parameters derived from a model; computed once, compared on load."""

    score_frac_bits: int
    weights: tuple[int, ...]
    intercept: int
    cutoffs: tuple[int, ...]
    max_abs_error: float
    score_bounds: tuple[int, int]
    truncate_bits: int
    comparison_bits: int
    score_cutoffs: tuple[float, ...] = field(repr=False)


@register_model_type
class LinearModel(PrivateModel):
    """A linear score ``s = sum_i w_i x_i + b`` over encoded columns, with a link and band policy.

    The bureau-side artifact: it holds the secret weights. ``coef`` has one weight per encoded
    column of ``spec`` (in raw feature units; one-hot columns weigh the indicator). With
    ``link="logit"`` the score is the log-odds and :meth:`predict` is a probability.

    The constructor derives the integer parameters of the encrypted path (learned-style
    attributes: :attr:`score_frac_bits`, :attr:`truncate_bits`, :attr:`encoded_weights`,
    :attr:`encoded_intercept`, :attr:`encoded_cutoffs`, :attr:`encoded_score_bounds`,
    :attr:`max_abs_error`, :attr:`comparison_bits`) and raises :class:`ModelFormatError` if
    ``precision`` cannot be met or the comparison would need more than 256 bits.
    """

    type_name: ClassVar[str] = MODEL_KIND

    def __init__(
        self,
        name: str,
        spec: FeatureSpec,
        coef: Sequence[float],
        intercept: float,
        link: Literal["logit", "identity"],
        policy: BandPolicy,
        precision: float = 1e-9,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ModelFormatError("a model name must be a non-empty string")
        if not isinstance(spec, FeatureSpec):
            raise ModelFormatError("spec must be a FeatureSpec")
        if not isinstance(policy, BandPolicy):
            raise ModelFormatError("policy must be a BandPolicy")
        if link not in LINKS:
            raise ModelFormatError(f"link must be one of {list(LINKS)}, got {link!r}")
        if policy.output == "probability" and link != "logit":
            raise ModelFormatError(
                "probability cutoffs need link 'logit'; use output 'raw' for a linear score"
            )
        if isinstance(coef, str) or not hasattr(coef, "__len__") or not hasattr(coef, "__iter__"):
            raise ModelFormatError("coef must be a sequence of numbers")
        if len(coef) != spec.encoded_width:
            raise ModelFormatError(
                f"coef has {len(coef)} entries; the spec has {spec.encoded_width} encoded columns"
            )
        self.name = name
        self.spec = spec
        self.coef: tuple[float, ...] = tuple(
            _as_real(w, f"coef[{col!r}]") for w, col in zip(coef, spec.encoded_names, strict=True)
        )
        self.intercept = _as_real(intercept, "intercept")
        self.link: Literal["logit", "identity"] = link
        self.policy = policy
        self.precision = _as_real(precision, "precision")
        if not self.precision > 0:
            raise ModelFormatError(f"precision must be positive, got {precision!r}")
        meta = dict(metadata or {})
        try:
            json.dumps(meta, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ModelFormatError(f"metadata must be plain JSON: {exc}") from exc
        if not all(isinstance(k, str) for k in meta):
            raise ModelFormatError("metadata keys must be strings")
        self.metadata: dict[str, Any] = meta
        self._enc = self._derive()

    # -- integer parameters -------------------------------------------------------------------

    def _error_terms(self) -> tuple[float, int]:
        """Split the worst-case error as ``A + T * 2^-(S+1)``; return (A, T).

        For numeric column i, ``|w x - W X 2^-S| <= |w| |x - X 2^-e| + |w - W 2^(e-S)| |X| 2^-e``
        ``<= |w| q_i + max|X_i| 2^-(S+1)``, q_i being the feature's rounding error. A one-hot
        feature has exactly one active exact indicator, so it adds ``2^-(S+1)``; the intercept
        adds another ``2^-(S+1)``.
        """
        a = 0.0
        t = 1
        for f, cols in self.spec.feature_slices():
            if isinstance(f, NumericFeature):
                codec = f.codec
                a += abs(self.coef[cols.start]) * codec.max_error
                t += codec.max_abs
            else:
                t += 1
        return a, t

    def _derive(self) -> _Encoded:
        try:
            return self._derive_unchecked()
        except OverflowError as exc:
            raise ModelFormatError(
                f"model {self.name!r}: a weight, intercept or cutoff is too large for the score scale"
            ) from exc

    def _scales(self, a: float, t: int) -> tuple[int, int]:
        """Choose (S, T) for feature-rounding error ``a`` and weight-rounding count ``t``.

        The computational error is ``a + t 2^-(S+1)`` (see :meth:`_error_terms`) and the
        truncation adds one ulp 2^(T-S) when T > 0. Of the room ``precision - a`` left by the
        features, S first gives the weight rounding at most half (for integer features that is
        "computational error at most precision / 2"), and T takes the largest power of two of
        what remains. As the ulp is a power of two, that can waste up to half of the rest; if up
        to MAX_EXTRA_SCALE_BITS more bits of S shrink the weight rounding enough to double the
        ulp (one comparison bit less), S takes them. Returns (S, T), T >= 0.
        """
        room = self.precision - a

        def weight_error(s: int) -> float:
            return math.ldexp(float(t), -(s + 1))

        def fits(s: int, e: int) -> bool:  # e: log2 of the ulp
            return a + weight_error(s) + math.ldexp(1.0, e) <= self.precision

        s_half = 0
        while weight_error(s_half) > room / 2:
            s_half += 1
            if s_half > MAX_SCORE_FRAC_BITS:
                raise ModelFormatError(
                    f"model {self.name!r}: precision {self.precision:g} needs an absurd scale"
                )
        # The largest ulp that fits at s_half (at least room / 4: the weight error is <= room / 2).
        e = math.frexp(room)[1]  # 2^(e-1) <= room < 2^e
        while not fits(s_half, e):
            e -= 1
        s = s_half
        for extra in range(1, MAX_EXTRA_SCALE_BITS + 1):
            if s_half + extra <= MAX_SCORE_FRAC_BITS and fits(s_half + extra, e + 1):
                s, e = s_half + extra, e + 1
                break
        return s, max(0, s + e)

    def _derive_unchecked(self) -> _Encoded:
        a, t = self._error_terms()
        if a >= self.precision:
            raise ModelFormatError(
                f"model {self.name!r}: fixed-point rounding of the features alone can reach {a:.3g} in score "
                f"units, above the precision {self.precision:g}; raise frac_bits of the numeric features "
                "(or declare integer-valued ones integer)"
            )
        s, trunc = self._scales(a, t)
        max_error = a + math.ldexp(float(t), -(s + 1)) + (math.ldexp(1.0, trunc - s) if trunc else 0.0)
        frac = self.spec.column_frac_bits
        weights = tuple(round(math.ldexp(w, s - e)) for w, e in zip(self.coef, frac, strict=True))
        b = round(math.ldexp(self.intercept, s))
        if self.policy.output == "probability":
            score_cutoffs = tuple(logit(p) for p in self.policy.cutoffs)
        else:
            score_cutoffs = self.policy.cutoffs
        # ldexp is exact here, so s_enc >= ceil(c 2^S) exactly when s_enc / 2^S >= c.
        cutoffs = tuple(math.ceil(math.ldexp(c, s)) for c in score_cutoffs)
        # The score is a sum of independent per-feature terms, so its extremes over the declared
        # input set are the sums of the per-feature extremes, and each is attained.
        lo_total = hi_total = b
        for f, cols in self.spec.feature_slices():
            ws = weights[cols]
            if isinstance(f, NumericFeature):
                codec = f.codec
                ends = (ws[0] * codec.enc_lo, ws[0] * codec.enc_hi)
            else:
                ends = (min(ws), max(ws))
            lo_total += min(ends)
            hi_total += max(ends)
        try:
            bits = comparison.comparison_bits(lo_total, hi_total, list(cutoffs), trunc)
        except InvalidInputError as exc:
            raise ModelFormatError(f"model {self.name!r}: {exc}") from None
        return _Encoded(
            score_frac_bits=s,
            weights=weights,
            intercept=b,
            cutoffs=cutoffs,
            max_abs_error=max_error,
            score_bounds=(lo_total, hi_total),
            truncate_bits=trunc,
            comparison_bits=bits,
            score_cutoffs=score_cutoffs,
        )

    @property
    def score_frac_bits(self) -> int:
        """S: the encrypted score carries the linear score at scale 2^S."""
        return self._enc.score_frac_bits

    @property
    def encoded_weights(self) -> list[int]:
        """W_i = round(w_i 2^(S - e_i)), one per encoded column."""
        return list(self._enc.weights)

    @property
    def encoded_intercept(self) -> int:
        """B = round(b 2^S)."""
        return self._enc.intercept

    @property
    def score_cutoffs(self) -> list[float]:
        """The cutoffs in score units (log-odds for probability policies)."""
        return list(self._enc.score_cutoffs)

    @property
    def encoded_cutoffs(self) -> list[int]:
        """ceil(c 2^S) for each score cutoff c, so that ``s_enc >= c_enc`` iff ``s_enc >= c 2^S``."""
        return list(self._enc.cutoffs)

    @property
    def truncate_bits(self) -> int:
        """T: the band protocol compares s_enc truncated by T bits, to one ulp of 2^(T-S)."""
        return self._enc.truncate_bits

    @property
    def max_abs_error(self) -> float:
        """A guaranteed bound on how far the encrypted path's decision value is from the exact score.

        The computational error ``|s_enc 2^-S - linear_score(row)|`` over the declared ranges,
        plus one truncation ulp 2^(T-S) when T > 0. The encrypted band equals :meth:`band`
        whenever the exact score is more than this from every cutoff.
        """
        return self._enc.max_abs_error

    @property
    def encoded_score_bounds(self) -> tuple[int, int]:
        """(s_min, s_max): the exact smallest and largest s_enc the declared ranges allow."""
        return self._enc.score_bounds

    @property
    def comparison_bits(self) -> int:
        """l, as the band protocol computes it (:func:`blindscore.protocol.comparison.comparison_bits`)."""
        return self._enc.comparison_bits

    # -- plaintext path -------------------------------------------------------------------------

    def linear_score(self, row: Mapping[str, object]) -> float:
        """The exact-arithmetic score of an application, in floats (log-odds for link logit)."""
        x = self.spec.transform_row(row)
        return math.fsum([w * v for w, v in zip(self.coef, x, strict=True)] + [self.intercept])

    def predict(self, row: Mapping[str, object]) -> float:
        """The model output: a probability for link logit, the linear score for identity."""
        z = self.linear_score(row)
        return sigmoid(z) if self.link == "logit" else z

    def band_of_score(self, score: float) -> int:
        """The band of a linear score (compared with the cutoffs in score units)."""
        if math.isnan(score):
            raise InvalidInputError("cannot band NaN")
        return bisect.bisect_right(self._enc.score_cutoffs, score)

    def band(self, row: Mapping[str, object]) -> int:
        """The plaintext band of an application.

        Compared in score units, like the encrypted path; it equals
        ``policy.band_of(predict(row))`` except within float rounding of a cutoff.
        """
        return self.band_of_score(self.linear_score(row))

    # -- integer path ---------------------------------------------------------------------------

    def encoded_score(self, encoded_row: Sequence[int]) -> int:
        """The integer score ``B + sum_i W_i X_i`` that the bureau computes under encryption."""
        xs = self.spec.check_encoded_row(encoded_row)
        return self._enc.intercept + sum(w * x for w, x in zip(self._enc.weights, xs, strict=True))

    def evaluate_encrypted(self, public_key: PublicKey, ciphertexts: Sequence[Any]) -> Any:
        """[B + sum_i W_i X_i]: one multi-exponentiation over the encrypted columns, plus B."""
        width = self.spec.encoded_width
        if len(ciphertexts) != width:
            raise InvalidInputError(
                f"model {self.name!r} takes {width} encrypted features, got {len(ciphertexts)}"
            )
        return public_key.add_plain(public_key.dot(ciphertexts, self._enc.weights), self._enc.intercept)

    def band_from_encoded(self, encoded_row: Sequence[int], carry: int = 0) -> int:
        """The band the band protocol yields for this row when its truncation carry is ``carry``.

        The protocol compares floor((s_enc - s_min) / 2^T) plus a random carry in {0, 1} with
        the truncated cutoffs (:func:`blindscore.protocol.comparison.truncated_band`), so it yields
        ``band_from_encoded(row, 0)`` or ``band_from_encoded(row, 1)``. The two differ only when
        s_enc is within 2^T below a truncated cutoff, and both equal #{k: s_enc >= c_enc}
        whenever every |s_enc - c_enc| >= 2^T. With T = 0 the carry is always 0.
        """
        s = self.encoded_score(encoded_row)
        lo, hi = self._enc.score_bounds
        return comparison.truncated_band(s, list(self._enc.cutoffs), lo, hi, self._enc.truncate_bits, carry)

    # -- persistence ----------------------------------------------------------------------------

    def _encoded_dict(self) -> dict[str, Any]:
        enc = self._enc
        names = self.spec.encoded_names
        return {
            "score_frac_bits": enc.score_frac_bits,
            "truncate_bits": enc.truncate_bits,
            "weights": dict(zip(names, enc.weights, strict=True)),
            "intercept": enc.intercept,
            "cutoffs": list(enc.cutoffs),
            "comparison_bits": enc.comparison_bits,
            "max_abs_error": enc.max_abs_error,
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description, including the derived integers for cross-checking on load."""
        return {
            "format": MODEL_FORMAT_VERSION,
            "kind": self.type_name,
            "name": self.name,
            "link": self.link,
            "precision": self.precision,
            "spec": self.spec.to_dict(),
            "coef": dict(zip(self.spec.encoded_names, self.coef, strict=True)),
            "intercept": self.intercept,
            "policy": self.policy.to_dict(),
            "metadata": self.metadata,
            "encoded": self._encoded_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LinearModel:
        """Rebuild a model from :meth:`to_dict` output.

        Strict: unknown or missing fields, wrong types and a stored ``encoded`` section that
        differs from the one recomputed here (an edited file, or a writer with other rounding)
        all raise :class:`ModelFormatError`.
        """
        where = "model"
        keys = {"format", "kind", "name", "link", "precision", "spec", "coef", "intercept", "policy"}
        # "encoded" is optional: a hand-written model omits it, a saved one is checked against it.
        _check_keys(d, where, keys | {"metadata"}, frozenset({"encoded"}))
        if d.get("format") == 1 and d.get("kind") == MODEL_KIND:
            raise ModelFormatError(
                f"{where}: format 1 predates truncated band comparisons (format {MODEL_FORMAT_VERSION}); "
                "rebuild the model from its source (retrain, re-import the skops file, or rerun "
                "scripts/train_german_model.py for the shipped model) and save it again"
            )
        _check_format(d, cls.type_name, where, MODEL_FORMAT_VERSION)
        spec_d = d["spec"]
        if not isinstance(spec_d, Mapping):
            raise ModelFormatError(f"{where}: 'spec' must be an object")
        spec = FeatureSpec.from_dict(spec_d)
        coef_d = d["coef"]
        if not isinstance(coef_d, Mapping) or set(coef_d) != set(spec.encoded_names):
            raise ModelFormatError(f"{where}: 'coef' must map exactly the encoded column names to numbers")
        link = _get_str(d, "link", where)
        if link not in LINKS:
            raise ModelFormatError(f"{where}: link must be one of {list(LINKS)}, got {link!r}")
        policy_d = d["policy"]
        if not isinstance(policy_d, Mapping):
            raise ModelFormatError(f"{where}: 'policy' must be an object")
        metadata = d["metadata"]
        if not isinstance(metadata, dict):
            raise ModelFormatError(f"{where}: 'metadata' must be an object")
        model = cls(
            _get_str(d, "name", where),
            spec,
            [coef_d[c] for c in spec.encoded_names],
            d["intercept"],
            "logit" if link == "logit" else "identity",
            BandPolicy.from_dict(policy_d, f"{where}: policy"),
            _get_real(d, "precision", where),
            metadata=metadata,
        )
        if "encoded" in d and d["encoded"] != model._encoded_dict():
            raise ModelFormatError(
                f"{where} {model.name!r}: the stored integer parameters differ from those recomputed "
                "from its weights; the file was edited or written by an incompatible version"
            )
        return model

    @classmethod
    def example(cls) -> LinearModel:
        """A three-feature logistic model (numeric, one-hot, binned) for the conformance tests."""
        spec = FeatureSpec(
            (
                NumericFeature("income", 0.0, 20000.0, integer=True),
                CategoricalFeature("housing", ("own", "rent", "free")),
                BinnedFeature("age", (25.0, 40.0, 60.0)),
            )
        )
        coef = [-0.00012, -0.4, 0.35, 0.1, 0.6, 0.2, -0.1, -0.3]
        return cls("example-lr", spec, coef, -0.5, "logit", BandPolicy((0.1, 0.3, 0.6)), 1e-6)

    def save(self, path: str | Path) -> None:
        """Write the model as JSON, atomically."""
        write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> LinearModel:
        """Read a model written by :meth:`save`; a malformed file raises :class:`ModelFormatError`."""
        try:
            d = read_json(Path(path))
        except ModelFormatError:
            raise
        except BlindscoreError as exc:
            raise ModelFormatError(str(exc)) from exc
        if not isinstance(d, Mapping):
            raise ModelFormatError(f"{path}: a model file must hold a JSON object")
        return cls.from_dict(d)

    # -- display --------------------------------------------------------------------------------

    def describe(self) -> str:
        """A multi-line summary for a CLI listing. It shows no weights."""
        enc = self._enc
        n_num = sum(isinstance(f, NumericFeature) for f in self.spec.features)
        lines = [
            f"model {self.name}",
            f"  link {self.link}, bands on {self.policy.output}",
            f"  features {len(self.spec.features)} ({n_num} numeric), "
            f"encoded columns {self.spec.encoded_width}",
            f"  score scale 2^{enc.score_frac_bits}, truncated by {enc.truncate_bits} bits, max error "
            f"{enc.max_abs_error:.3g} (precision {self.precision:g}), comparison bits {enc.comparison_bits}",
        ]
        labels = self.policy.labels
        cut = [fmt_real(c) for c in self.policy.cutoffs]
        banded = "probability" if self.policy.output == "probability" else "score"
        for i, label in enumerate(labels):
            lower = f"{cut[i - 1]} <= " if i > 0 else ""
            upper = f" < {cut[i]}" if i < len(cut) else ""
            lines.append(f"  band {label}: {lower}{banded}{upper}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"LinearModel(name={self.name!r}, link={self.link!r}, features={len(self.spec.features)}, "
            f"bands={self.policy.n_bands})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LinearModel):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]
