"""Order-preserving integer keys of floats: how tree ensembles' split tests become exact integer comparisons.

A float32 or float64 value's IEEE-754 bit pattern, read as sign and magnitude, is mapped to a signed
integer so that x < y exactly when key(x) < key(y) (-0.0 and +0.0 both map to 0; NaN has no key: it
is a missing value). A split "x < t" or "x <= t" on a double threshold t becomes "key(x) <= K" for
one integer K (:func:`threshold_key`), computed in the library's own domain: float32 for XGBoost and
scikit-learn trees, float64 for LightGBM. No fixed-point rounding is involved.
"""

from __future__ import annotations

import math
import numbers
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import numpy as np

from blindscore.errors import InvalidInputError, ModelFormatError

Domain = Literal["float32", "float64"]
DOMAINS: tuple[Domain, ...] = ("float32", "float64")
#: LightGBM's kZeroThreshold is the float literal 1e-35f, compared in double.
KZERO_THRESHOLD = float(np.float32(1e-35))

_F32_MASK = 0x7FFFFFFF
_F64_MASK = 0x7FFFFFFFFFFFFFFF


# ---------------------------------------------------------------------------------------------
# Order-preserving integer keys


def _check_domain(domain: str) -> Domain:
    if domain not in DOMAINS:
        raise InvalidInputError(f"domain must be one of {list(DOMAINS)}, got {domain!r}")
    return "float32" if domain == "float32" else "float64"


def _cast(value: float, domain: Domain) -> float:
    """``value`` rounded to the domain (round to nearest even; beyond float32's range -> +-inf)."""
    if domain == "float64":
        return value
    with np.errstate(over="ignore"):
        return float(np.float32(value))


def _bits_key(value: float, domain: Domain) -> int:
    # The value is already in the domain; its bit pattern is sign-magnitude, so negating the
    # magnitude of negative patterns gives a monotone integer, and -0.0 lands on 0 like +0.0.
    if domain == "float32":
        (bits,) = struct.unpack(">I", struct.pack(">f", value))
        mag, neg = bits & _F32_MASK, bits >> 31
    else:
        (bits,) = struct.unpack(">Q", struct.pack(">d", value))
        mag, neg = bits & _F64_MASK, bits >> 63
    return -mag if neg else mag


def float_key(value: float, domain: str) -> int:
    """The order-preserving integer key of ``value`` cast to ``domain`` ("float32" or "float64").

    ``a <= b`` (after the cast) iff ``float_key(a) <= float_key(b)``; +-0.0 map to 0, +-inf to
    the ends of :func:`key_bounds`. NaN has no key (it is a missing value) and is refused.
    """
    d = _check_domain(domain)
    x = float(value)
    if math.isnan(x):
        raise InvalidInputError("NaN has no key; encode it as a missing value")
    return _bits_key(_cast(x, d), d)


def key_bounds(domain: str) -> tuple[int, int]:
    """The smallest and largest key (those of -inf and +inf)."""
    d = _check_domain(domain)
    top = _bits_key(math.inf, d)
    return -top, top


def key_bits(domain: str) -> int:
    """Width in bits of a key as a two's-complement integer, with room for :func:`threshold_key`'s
    "nothing goes left" value (key(-inf) - 1): 32 for float32, 64 for float64."""
    return 32 if _check_domain(domain) == "float32" else 64


def _next_down(value: float, domain: Domain) -> float:
    if domain == "float64":
        return math.nextafter(value, -math.inf)
    return float(np.nextafter(np.float32(value), np.float32(-np.inf)))


def threshold_key(threshold: float, domain: str, strict: bool) -> int:
    """K such that, for every non-NaN x, ``key(x) <= K`` iff ``cast(x) < threshold`` (``strict``)
    or ``cast(x) <= threshold`` (not strict), ``threshold`` being any double or +-inf.

    K is the key of the largest domain value that passes the test, or key(-inf) - 1 if none does.
    """
    d = _check_domain(domain)
    t = float(threshold)
    if math.isnan(t):
        raise InvalidInputError("a threshold cannot be NaN")
    v = _cast(t, d)
    # Comparing a float32 value with a double is exact in Python floats; step down at most twice
    # (rounding to nearest overshoots t by at most one step, strictness costs at most one more).
    while v > t or (strict and v == t):
        if v == -math.inf:
            return key_bounds(d)[0] - 1
        v = _next_down(v, d)
    return _bits_key(v, d)


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isnan(float(value))


def _as_value(value: object, what: str) -> float:
    """A feature value as a float; None and a blank string (a CSV cell) become NaN (missing), other
    text is read as the platform's encoding reads it. Booleans and non-numbers are refused."""
    if value is None:
        return math.nan
    if isinstance(value, str):
        if not value.strip():
            return math.nan
        try:
            return float(value.strip())
        except ValueError:
            raise InvalidInputError(f"{what}: expected a number or a missing value, got {value!r}") from None
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise InvalidInputError(f"{what}: expected a number or a missing value, got {value!r}")
    return float(value)


def encode_value(value: object, domain: str, snap_zero: bool = False) -> tuple[int, int]:
    """(key, missing bit) of one raw feature value: the platform's public encoding.

    None and NaN are missing: (0, 1). Otherwise (float_key(value, domain), 0); with ``snap_zero``
    (LightGBM) a value with ``abs(x) <= 1e-35f`` is first replaced by 0.0.
    """
    d = _check_domain(domain)
    x = _as_value(value, "feature value")
    if math.isnan(x):
        return 0, 1
    if snap_zero and -KZERO_THRESHOLD <= x <= KZERO_THRESHOLD:
        return 0, 0
    return float_key(x, d), 0


# ---------------------------------------------------------------------------------------------
# Trees


# ---------------------------------------------------------------------------------------------
# Declared grids: narrower keys for features whose values are known to lie on a lattice


#: A grid this coarse or finer than the float keys buys nothing: at most 2^30 points.
MAX_GRID_BITS = 30


def _exact(text: object, what: str) -> Fraction:
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ModelFormatError(f"{what} must be a decimal number written as text, got {text!r}")
    try:
        value = Fraction(str(text).strip())
    except (ValueError, ZeroDivisionError):
        raise ModelFormatError(f"{what} must be a finite decimal number, got {text!r}") from None
    return value


@dataclass(frozen=True)
class Grid:
    """A public declaration that a feature only takes the values lo, lo + step, ..., hi.

    Tree splits then compare grid indices instead of float keys, so each comparison in the circuit
    is ``bits`` wide instead of 32 (float32) or 64 (float64) — the dominant cost of blind tree
    scoring (docs/performance.md). Exactness is kept: grid point k is the double nearest to
    ``lo + k step`` (computed exactly, rounded once), and the split threshold's grid index is the
    largest k whose point the library's own rule sends left (:meth:`threshold_index`), found by
    bisection over the float keys, which are monotone in k. A value that is not a grid point is
    refused by the platform's encoding, never rounded. The bounds and step are exact decimals,
    kept as the text the model owner declared.
    """

    lo: str
    step: str
    hi: str
    _lo: Fraction = field(init=False, repr=False, compare=False)
    _step: Fraction = field(init=False, repr=False, compare=False)
    _count: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lo, step, hi = (_exact(getattr(self, n), f"grid {n}") for n in ("lo", "step", "hi"))
        if step <= 0 or hi <= lo:
            raise ModelFormatError(f"grid {self}: needs step > 0 and hi > lo")
        count = (hi - lo) / step + 1
        if count.denominator != 1:
            raise ModelFormatError(f"grid {self}: hi - lo is not a whole number of steps")
        if int(count) > 1 << MAX_GRID_BITS:
            raise ModelFormatError(f"grid {self}: {int(count)} points; at most 2^{MAX_GRID_BITS} supported")
        points = (float(lo), float(lo + step), float(hi - step), float(hi))
        if not all(math.isfinite(v) for v in points) or points[0] == points[1] or points[2] == points[3]:
            raise ModelFormatError(f"grid {self}: its points must be distinct finite doubles")
        # Spacing of at least 4 ulps keeps rounding to the nearest index unambiguous (see index).
        if step < 4 * Fraction(math.ulp(max(abs(float(lo)), abs(float(hi))))):
            raise ModelFormatError(f"grid {self}: the step is below the doubles' resolution at these bounds")
        object.__setattr__(self, "_lo", lo)
        object.__setattr__(self, "_step", step)
        object.__setattr__(self, "_count", int(count))

    def __str__(self) -> str:
        return f"{self.lo}:{self.step}:{self.hi}"

    @classmethod
    def parse(cls, text: str) -> Grid:
        """``LO:STEP:HI`` as on the command line."""
        parts = text.split(":")
        if len(parts) != 3:
            raise ModelFormatError(f"a grid is LO:STEP:HI (e.g. 0:0.01:1000), got {text!r}")
        return cls(*(p.strip() for p in parts))

    @property
    def count(self) -> int:
        """The number of grid points."""
        return self._count

    @property
    def bits(self) -> int:
        """The key width b with 2^b >= count: every index and every threshold index fit."""
        return max(1, (self.count - 1).bit_length())

    def point(self, k: int) -> float:
        """Grid point ``k`` as a double (the exact lo + k step, rounded once)."""
        return float(self._lo + k * self._step)

    def index(self, x: float) -> int | None:
        """The index of ``x`` if it is a grid point, else None. Points are >= 4 ulps apart, so the
        nearest index is the only candidate."""
        if not math.isfinite(x):
            return None
        k = round((Fraction(x) - self._lo) / self._step)
        return k if 0 <= k < self.count and self.point(k) == x else None

    def threshold_index(self, float_threshold_key: int, domain: str, snap_zero: bool = False) -> int:
        """The largest k whose point's key is <= ``float_threshold_key`` (a :func:`threshold_key`),
        or -1: then ``index(x) <= K`` iff the library sends grid value x left."""
        d = _check_domain(domain)

        def key(k: int) -> int:
            return encode_value(self.point(k), d, snap_zero)[0]

        if key(self.count - 1) <= float_threshold_key:
            return self.count - 1
        lo, hi = -1, self.count - 1  # invariant: key(lo) <= K (lo = -1: vacuous), key(hi) > K
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if key(mid) <= float_threshold_key:
                lo = mid
            else:
                hi = mid
        return lo

    def to_dict(self) -> dict[str, Any]:
        return {"lo": self.lo, "step": self.step, "hi": self.hi}

    @classmethod
    def from_dict(cls, d: object, where: str) -> Grid:
        if not isinstance(d, dict) or set(d) != {"lo", "step", "hi"}:
            raise ModelFormatError(f"{where}: a grid is an object with exactly 'lo', 'step' and 'hi'")
        return cls(d["lo"], d["step"], d["hi"])
