"""Fixed-point codec: real feature values to bounded integers at scale 2^frac_bits, and back."""

from __future__ import annotations

import decimal
import math
import numbers
import re
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from blindscore.errors import EncodingError, ModelFormatError
from blindscore.models._json import _as_real

__all__ = ["MAX_FRAC_BITS", "FixedPointCodec", "fmt_real", "parse_number"]

#: Far above anything useful; it only keeps a typo from building astronomically large integers.
MAX_FRAC_BITS = 256

# Plain decimal literals only: float() would also take "nan", "inf", "1_000" and "0x10".
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INT_RE = re.compile(r"[+-]?\d+")
_MAX_LITERAL_CHARS = 400


def parse_number(feature: str, value: object) -> int | float:
    """Return ``value`` as an exact ``int`` or a finite ``float``, or raise :class:`EncodingError`.

    Accepted: ints (including numpy integers), finite reals (floats, numpy floats, fractions,
    decimals) and strings holding a plain decimal literal such as ``"12"``, ``"-0.5"`` or
    ``"1e3"``. Refused, naming ``feature``: None, booleans (ambiguous as numbers), NaN, infinities,
    other strings and every other type. Integers stay exact Python ints, however large.
    """
    if value is None:
        raise EncodingError(feature, "value is missing (None)")
    if isinstance(value, bool | np.bool_):
        raise EncodingError(feature, f"expected a number, got a boolean {value!r}")
    if isinstance(value, str):
        return _parse_literal(feature, value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real | decimal.Decimal):
        try:
            result = float(value)
        except (OverflowError, ValueError) as exc:
            raise EncodingError(feature, f"cannot convert {value!r} to a float") from exc
        if not math.isfinite(result):
            raise EncodingError(feature, f"expected a finite number, got {value!r}")
        return result
    raise EncodingError(feature, f"expected a number, got {type(value).__name__} {_short(value)}")


def _parse_literal(feature: str, text: str) -> int | float:
    stripped = text.strip()
    if len(stripped) > _MAX_LITERAL_CHARS or not _NUMBER_RE.fullmatch(stripped):
        raise EncodingError(feature, f"expected a number, got the string {_short(text)}")
    if _INT_RE.fullmatch(stripped):
        return int(stripped)
    result = float(stripped)
    if not math.isfinite(result):
        raise EncodingError(feature, f"expected a finite number, got the string {_short(text)}")
    return result


def fmt_real(x: float) -> str:
    """Format a bound or cutoff for messages and column names: ``25`` rather than ``25.0``."""
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class FixedPointCodec:
    """Encode values of one feature, declared to lie in ``[lo, hi]``, as ``round(x * 2^frac_bits)``.

    The declared range is public: it bounds every encoded integer (:attr:`max_abs`), which is what
    lets the bureau prove that an encrypted score never wraps. A value outside the range is
    refused, never clipped. With ``integer=True`` the feature takes integer values only
    (``frac_bits`` must then be 0) and encoding is exact; otherwise the rounding error is at most
    ``2^-(frac_bits+1)`` (round half to even).
    """

    feature: str
    lo: float
    hi: float
    frac_bits: int
    integer: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.feature, str) or not self.feature:
            raise ModelFormatError("a feature name must be a non-empty string")
        where = f"feature {self.feature!r}"
        if not isinstance(self.integer, bool):
            raise ModelFormatError(f"{where}: integer must be true or false")
        if (
            not isinstance(self.frac_bits, int)
            or isinstance(self.frac_bits, bool)
            or not 0 <= self.frac_bits <= MAX_FRAC_BITS
        ):
            raise ModelFormatError(f"{where}: frac_bits must be an integer in [0, {MAX_FRAC_BITS}]")
        bounds: list[float] = []
        for label, bound in (("lo", self.lo), ("hi", self.hi)):
            bounds.append(_as_real(bound, f"{where}: {label}"))
        lo, hi = bounds
        if lo > hi:
            raise ModelFormatError(f"{where}: lo={lo!r} is above hi={hi!r}")
        if self.integer:
            if self.frac_bits != 0:
                raise ModelFormatError(f"{where}: an integer feature has frac_bits 0")
            if not (lo.is_integer() and hi.is_integer()):
                raise ModelFormatError(f"{where}: an integer feature needs integer bounds")
        try:
            math.ldexp(max(abs(lo), abs(hi)), self.frac_bits)
        except OverflowError:
            raise ModelFormatError(f"{where}: range too wide for {self.frac_bits} fractional bits") from None
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    @property
    def enc_lo(self) -> int:
        """The smallest encoded integer (the encoding of ``lo``)."""
        return round(math.ldexp(self.lo, self.frac_bits))

    @property
    def enc_hi(self) -> int:
        """The largest encoded integer (the encoding of ``hi``)."""
        return round(math.ldexp(self.hi, self.frac_bits))

    @property
    def max_abs(self) -> int:
        """The largest ``|encode(x)|`` over the declared range."""
        return max(abs(self.enc_lo), abs(self.enc_hi))

    @property
    def max_error(self) -> float:
        """The worst ``|decode(encode(x)) - x|``: 0 for integer features, else 2^-(frac_bits+1)."""
        return 0.0 if self.integer else math.ldexp(1.0, -(self.frac_bits + 1))

    def encode(self, value: object) -> int:
        """Return ``round(value * 2^frac_bits)``; refuse anything not a number in ``[lo, hi]``."""
        x = parse_number(self.feature, value)
        # Python compares ints with floats exactly, so a huge int is judged by its true value.
        if not self.lo <= x <= self.hi:
            declared = f"[{fmt_real(self.lo)}, {fmt_real(self.hi)}]"
            raise EncodingError(self.feature, f"value {_short(value)} outside the declared range {declared}")
        if isinstance(x, int):
            return x << self.frac_bits
        if self.integer:
            if not x.is_integer():
                raise EncodingError(self.feature, f"expected an integer, got {_short(value)}")
            return int(x)
        # ldexp only shifts the exponent (no overflow: checked against the range), so the one
        # rounding is Python's exact round-half-even of a float to an int.
        return round(math.ldexp(x, self.frac_bits))

    def decode(self, encoded: int) -> float:
        """Return ``encoded / 2^frac_bits``; an integer outside the encoded range is refused."""
        return float(self.decode_exact(encoded))

    def decode_exact(self, encoded: int) -> Fraction:
        """Return ``encoded / 2^frac_bits`` exactly; an integer outside the encoded range is refused."""
        if isinstance(encoded, bool) or not isinstance(encoded, numbers.Integral):
            raise EncodingError(self.feature, f"an encoded value must be an integer, got {_short(encoded)}")
        n = int(encoded)
        if not self.enc_lo <= n <= self.enc_hi:
            # A value out of range cannot come from encode(): it has wrapped or been tampered with.
            raise EncodingError(
                self.feature, f"encoded value {n} is outside the encoded range [{self.enc_lo}, {self.enc_hi}]"
            )
        return Fraction(n, 1 << self.frac_bits)
