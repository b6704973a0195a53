"""The public feature spec: feature types, validation, one-hot and fixed-point encoding of a row.

A :class:`FeatureSpec` is public and runs at the platform: it checks an application's raw values
against the declared types and ranges and encodes them into the integer columns that are encrypted.
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
from typing import Any, ClassVar, Self, TypeAlias

from blindscore.errors import EncodingError, InvalidInputError, ModelFormatError
from blindscore.models import floatkeys
from blindscore.models._json import (
    FORMAT_VERSION,
    _as_real,
    _check_format,
    _check_keys,
    _get_int,
    _get_list,
    _get_real,
    _get_str,
    _listing,
)
from blindscore.models.encoding import FixedPointCodec, fmt_real, parse_number

SPEC_KIND = "blindscore-feature-spec"


@dataclass(frozen=True)
class NumericFeature:
    """A real-valued feature declared to lie in ``[lo, hi]``, fixed-point encoded with ``frac_bits``.

    ``integer=True`` declares an integer-valued feature (counts, months, whole currency units):
    ``frac_bits`` is then 0, non-integers are refused and the encoding adds no error.

    ``impute`` is a public fill value (a scikit-learn ``SimpleImputer`` folded into the encoding):
    a missing value (None, NaN or a blank string) is read as it, at the platform. Without it a
    missing value is refused, naming the feature. It must lie in ``[lo, hi]`` (and be an integer
    for an integer feature).
    """

    name: str
    lo: float
    hi: float
    frac_bits: int = 0
    integer: bool = False
    impute: float | None = None
    kind: ClassVar[str] = "numeric"
    one_hot: ClassVar[bool] = False
    _codec: FixedPointCodec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        codec = FixedPointCodec(self.name, self.lo, self.hi, self.frac_bits, self.integer)
        object.__setattr__(self, "lo", codec.lo)
        object.__setattr__(self, "hi", codec.hi)
        object.__setattr__(self, "_codec", codec)
        if self.impute is not None:
            fill = _as_real(self.impute, f"feature {self.name!r}: impute")
            if not codec.lo <= fill <= codec.hi or (self.integer and fill != int(fill)):
                kind = "an integer " if self.integer else ""
                raise ModelFormatError(
                    f"feature {self.name!r}: the fill value {fmt_real(fill)} of a missing value must be "
                    f"{kind}within the declared range [{fmt_real(codec.lo)}, {fmt_real(codec.hi)}]"
                )
            object.__setattr__(self, "impute", fill)

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

    def _filled(self, value: object) -> object:
        """``value``, or the fill value when it is missing and the feature has one."""
        return self.impute if self.impute is not None and _is_missing(value) else value

    def transform(self, value: object) -> list[float]:
        """Validate ``value`` exactly as :meth:`encode` does and return it unquantised."""
        x = parse_number(self.name, self._filled(value))
        self._codec.encode(x)
        return [float(x)]

    def encode(self, value: object) -> list[int]:
        """The fixed-point encoding of ``value`` (of the fill value if missing), as a one-element list."""
        return [self._codec.encode(self._filled(value))]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "type": self.kind,
            "name": self.name,
            "lo": self.lo,
            "hi": self.hi,
            "frac_bits": self.frac_bits,
            "integer": self.integer,
        }
        # Written only when set, so a spec without one reads exactly as before it existed.
        if self.impute is not None:
            d["impute"] = self.impute
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "feature") -> NumericFeature:
        _check_keys(d, where, {"type", "name", "lo", "hi", "frac_bits", "integer"}, frozenset({"impute"}))
        integer = d["integer"]
        if not isinstance(integer, bool):
            raise ModelFormatError(f"{where}: 'integer' must be true or false")
        return cls(
            _get_str(d, "name", where),
            _get_real(d, "lo", where),
            _get_real(d, "hi", where),
            _get_int(d, "frac_bits", where),
            integer,
            _get_real(d, "impute", where) if "impute" in d else None,
        )


@dataclass(frozen=True)
class FloatKeyFeature:
    """A real-valued feature for tree ensembles, encoded exactly: the order-preserving integer key
    of the value in a float domain, a missing bit and a zero bit (three columns).

    Every split test of a tree becomes an integer comparison of keys, so the encoding adds no error
    and needs no declared range (any float, +-inf included). ``domain`` is the library's: float32
    for XGBoost and scikit-learn, float64 for LightGBM and HistGradientBoosting. ``snap_zero`` reads
    |x| <= 1e-35 as 0.0, as LightGBM does. A missing value (blank, None, NaN) encodes as key 0 with
    both bits set; the zero bit marks LightGBM's zero region [-key(kZero), key(kZero)]. The
    arithmetic is :mod:`blindscore.models.floatkeys`.

    With a declared ``grid`` (:class:`~blindscore.models.floatkeys.Grid`) the key is the value's
    index on the grid instead, so the tree's comparisons are as narrow as the grid; a value that is
    not a grid point is refused, naming the feature and the grid.
    """

    name: str
    domain: str = "float32"
    snap_zero: bool = False
    grid: floatkeys.Grid | None = None
    kind: ClassVar[str] = "float-key"
    one_hot: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.domain not in ("float32", "float64"):
            raise ModelFormatError(
                f"feature {self.name!r}: domain must be float32 or float64, got {self.domain!r}"
            )
        if not isinstance(self.snap_zero, bool):
            raise ModelFormatError(f"feature {self.name!r}: snap_zero must be true or false")
        if self.grid is not None and not isinstance(self.grid, floatkeys.Grid):
            raise ModelFormatError(f"feature {self.name!r}: grid must be a Grid")

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.name, f"{self.name}#missing", f"{self.name}#zero")

    @property
    def column_frac_bits(self) -> int:
        return 0

    @property
    def encoded_bounds(self) -> tuple[tuple[int, int], ...]:
        lo, hi = (0, self.grid.count - 1) if self.grid is not None else floatkeys.key_bounds(self.domain)
        return ((lo, hi), (0, 1), (0, 1))

    def encode(self, value: object) -> list[int]:
        if _is_missing(value):
            return [0, 1, 1]
        # Numbers as they are (the libraries accept +-inf, and so does the key); text parsed strictly.
        number = value if isinstance(value, numbers.Real) and not isinstance(value, bool) else None
        x = float(number) if number is not None else float(parse_number(self.name, value))
        key, _ = floatkeys.encode_value(x, self.domain, self.snap_zero)
        zero = floatkeys.threshold_key(floatkeys.KZERO_THRESHOLD, self.domain, strict=False)
        is_zero = int(-zero <= key <= zero)
        if self.grid is not None:
            index = self.grid.index(x)
            if index is None:
                raise InvalidInputError(
                    f"feature {self.name!r}: {x!r} is not on its declared grid "
                    f"{self.grid} (LO:STEP:HI; values from LO to HI in steps of STEP)"
                )
            key = index
        return [key, 0, is_zero]

    def transform(self, value: object) -> list[float]:
        if _is_missing(value):
            return [math.nan, 1.0, 1.0]
        _, missing, zero = self.encode(value)
        x = float(value) if isinstance(value, numbers.Real) else float(parse_number(self.name, value))
        return [x, float(missing), float(zero)]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.kind, "name": self.name, "domain": self.domain}
        d["snap_zero"] = self.snap_zero
        if self.grid is not None:
            d["grid"] = self.grid.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "feature") -> FloatKeyFeature:
        _check_keys(d, where, {"type", "name", "domain", "snap_zero"}, frozenset({"grid"}))
        snap = d["snap_zero"]
        if not isinstance(snap, bool):
            raise ModelFormatError(f"{where}: 'snap_zero' must be true or false")
        grid = floatkeys.Grid.from_dict(d["grid"], f"{where}: grid") if "grid" in d else None
        return cls(_get_str(d, "name", where), _get_str(d, "domain", where), snap, grid)


#: The widest one-hot a category code may take (columns, hence ciphertexts, per application).
MAX_CATEGORY_CODES = 1 << 16


@dataclass(frozen=True)
class CategoryCodeFeature:
    """A LightGBM categorical feature: an integer category code, one-hot encoded over codes
    0 .. n_categories - 1 as LightGBM reads it (``n_categories`` columns, at most one of them 1).

    LightGBM's ``CategoricalDecision`` truncates the value toward zero to a C ``int`` and sends it
    right at every node when that int is negative, when the value is NaN (the cast gives INT_MIN)
    or when the code has no bit in the node's set. So a value x with ``-1 < x < n_categories``
    sets column ``trunc(x)`` (-0.5 and 0.9 are code 0, 2.7 is code 2); NaN, a missing value, -1 and
    below, ``n_categories`` and above and +-inf set no column: no node sends them left.
    ``n_categories`` (1 + the largest code any node of the model sends left) is public; the
    platform learns it. Text is parsed strictly, booleans and other types are refused, naming
    the feature.
    """

    name: str
    n_categories: int
    kind: ClassVar[str] = "category-code"
    one_hot: ClassVar[bool] = False  # at most one 1: a value no node sends left sets none

    def __post_init__(self) -> None:
        _check_name(self.name)
        n = self.n_categories
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CATEGORY_CODES:
            raise ModelFormatError(
                f"feature {self.name!r}: n_categories must be an integer in [1, {MAX_CATEGORY_CODES}], "
                f"got {n!r}"
            )

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f"{self.name}={c}" for c in range(self.n_categories))

    @property
    def column_frac_bits(self) -> int:
        return 0

    @property
    def encoded_bounds(self) -> tuple[tuple[int, int], ...]:
        return ((0, 1),) * self.n_categories

    def code(self, value: object) -> int | None:
        """The column ``value`` sets, or None when it sets none (LightGBM sends it right everywhere)."""
        if _is_missing(value):
            return None
        if isinstance(value, numbers.Real) and not isinstance(value, bool | numbers.Integral):
            x: float | int = float(value)
        else:
            x = parse_number(self.name, value)  # strict: refuses booleans, text that is no number
        if isinstance(x, int):
            return x if 0 <= x < self.n_categories else None
        if not -1.0 < x < self.n_categories:  # NaN, +-inf, -1 and below, beyond the codes
            return None
        return math.trunc(x)

    def encode(self, value: object) -> list[int]:
        """0/1 indicators: a 1 at the code of ``value`` if it has one (see the class docstring)."""
        out = [0] * self.n_categories
        c = self.code(value)
        if c is not None:
            out[c] = 1
        return out

    def transform(self, value: object) -> list[float]:
        return [float(x) for x in self.encode(value)]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "name": self.name, "n_categories": self.n_categories}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "feature") -> Self:
        _check_keys(d, where, {"type", "name", "n_categories"})
        return cls(_get_str(d, "name", where), _get_int(d, "n_categories", where))


@dataclass(frozen=True)
class XGBoostCategoryFeature(CategoryCodeFeature):
    """An XGBoost categorical feature: an integer category code read as XGBoost reads it, one-hot
    encoded over codes 0 .. n_categories - 1, plus a missing column (``n_categories + 1`` columns,
    at most one of them 1).

    XGBoost casts the value to float32; NaN (a missing value) takes the node's default direction;
    a negative float32 or one at or beyond its largest category is invalid and goes left; otherwise
    the code is ``(int) x`` (truncation toward zero) and goes right iff the node lists it. So a
    float32 value x with ``0 <= x < n_categories`` sets column ``trunc(x)`` (-0.0 and 0.9 are code 0,
    2.7 is code 2, but -0.5 is invalid, and 2.9999999999 rounds to the float32 3.0, code 3); a
    missing value (None, NaN, blank text) sets the missing column; anything else (negative,
    ``n_categories`` and above, +-inf) sets none: no node sends it right. ``n_categories`` (1 + the
    largest code any node of the model lists) is public; the platform learns it. Text is parsed
    strictly, booleans and other types are refused, naming the feature.
    """

    kind: ClassVar[str] = "xgboost-category-code"

    @property
    def columns(self) -> tuple[str, ...]:
        return (*super().columns, f"{self.name}#missing")

    @property
    def encoded_bounds(self) -> tuple[tuple[int, int], ...]:
        return ((0, 1),) * (self.n_categories + 1)

    def code(self, value: object) -> int | None:
        """The code column ``value`` sets, or None when it sets none (missing, or a value XGBoost
        finds invalid or beyond every listed code: it goes left at every node)."""
        if _is_missing(value):
            return None
        if isinstance(value, numbers.Real) and not isinstance(value, bool | numbers.Integral):
            x: float | int = float(value)
        else:
            x = parse_number(self.name, value)  # strict: refuses booleans, text that is no number
        if isinstance(x, int):
            return x if 0 <= x < self.n_categories else None
        x = floatkeys._cast(x, "float32")  # XGBoost's DMatrix holds float32 (beyond its range: +-inf)
        if not 0.0 <= x < self.n_categories:  # negative, +-inf, beyond the codes (-0.0 is code 0)
            return None
        return math.trunc(x)

    def encode(self, value: object) -> list[int]:
        """0/1 indicators: a 1 at the code of ``value`` if it has one, or in the missing column
        (the last) if the value is missing (see the class docstring)."""
        out = [0] * (self.n_categories + 1)
        if _is_missing(value):
            out[-1] = 1
            return out
        c = self.code(value)
        if c is not None:
            out[c] = 1
        return out


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


Feature: TypeAlias = (
    NumericFeature
    | CategoricalFeature
    | BinnedFeature
    | GroupedCategoricalFeature
    | FloatKeyFeature
    | CategoryCodeFeature
    | XGBoostCategoryFeature
)
_FEATURE_TYPES: dict[
    str,
    type[NumericFeature]
    | type[CategoricalFeature]
    | type[BinnedFeature]
    | type[GroupedCategoricalFeature]
    | type[FloatKeyFeature]
    | type[CategoryCodeFeature]
    | type[XGBoostCategoryFeature],
] = {
    "numeric": NumericFeature,
    "float-key": FloatKeyFeature,
    "category-code": CategoryCodeFeature,
    "xgboost-category-code": XGBoostCategoryFeature,
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
            if isinstance(f, CategoryCodeFeature) and sum(out[cols]) > 1:
                raise InvalidInputError(f"feature {f.name!r}: category-code columns hold at most one 1")
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
