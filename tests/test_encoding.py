"""Fixed-point codec: exact values, declared bounds, refusals naming the feature, round trips."""

from __future__ import annotations

import decimal
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from blindscore.errors import EncodingError, ModelFormatError
from blindscore.models.encoding import FixedPointCodec, parse_number


def test_encode_known_values() -> None:
    codec = FixedPointCodec("income", -10.0, 10.0, 4)
    assert codec.encode(1.5) == 24
    assert codec.encode(-1.5) == -24
    assert codec.encode(0) == 0
    assert codec.encode(3) == 48
    assert codec.encode(0.03125) == 0  # 0.5 at scale 16 rounds half to even
    assert codec.encode(0.09375) == 2  # 1.5 rounds to 2
    assert codec.encode(10.0) == 160
    assert codec.encode(-10.0) == -160


def test_bounds_and_max_abs() -> None:
    codec = FixedPointCodec("x", -3.0, 100.0, 8)
    assert (codec.enc_lo, codec.enc_hi) == (-768, 25600)
    assert codec.max_abs == 25600
    assert codec.max_error == 2.0**-9
    assert FixedPointCodec("n", 0, 5, 0, integer=True).max_error == 0.0


def test_accepts_numeric_strings_numpy_and_decimals() -> None:
    codec = FixedPointCodec("amount", 0.0, 1e6, 2)
    assert codec.encode("12") == 48
    assert codec.encode(" 12.25 ") == 49
    assert codec.encode("1e3") == 4000
    assert codec.encode(np.int64(7)) == 28
    assert codec.encode(np.float32(0.5)) == 2
    assert codec.encode(decimal.Decimal("2.5")) == 10
    assert codec.encode(Fraction(3, 4)) == 3


def test_huge_integers_compare_exactly() -> None:
    codec = FixedPointCodec("n", 0.0, 2.0**60, 0, integer=True)
    assert codec.encode(2**60) == 2**60
    with pytest.raises(EncodingError, match="outside the declared range"):
        codec.encode(2**60 + 1)  # equal to 2.0**60 as a float, but out of range as an int


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (-math.inf, "finite"),
        ("nan", "expected a number"),
        ("inf", "expected a number"),
        ("1e999", "finite"),
        ("1_000", "expected a number"),
        ("0x10", "expected a number"),
        ("twelve", "expected a number"),
        ("", "expected a number"),
        (None, "missing"),
        (True, "boolean"),
        (np.bool_(False), "boolean"),
        ([1], "expected a number"),
        (b"12", "expected a number"),
        (decimal.Decimal("NaN"), "finite"),
        (101, "outside the declared range"),
        (-0.001, "outside the declared range"),
        ("100.5", "outside the declared range"),
    ],
)
def test_refusals_name_the_feature(value: object, message: str) -> None:
    codec = FixedPointCodec("age_in_years", 0.0, 100.0, 3)
    with pytest.raises(EncodingError, match=message) as info:
        codec.encode(value)
    assert info.value.feature == "age_in_years"
    assert "'age_in_years'" in str(info.value)


def test_integer_feature_refuses_fractions() -> None:
    codec = FixedPointCodec("months", 1, 120, 0, integer=True)
    assert codec.encode(12.0) == 12
    assert codec.encode("12") == 12
    with pytest.raises(EncodingError, match="expected an integer") as info:
        codec.encode(12.5)
    assert info.value.feature == "months"


def test_decode_refuses_what_encode_cannot_produce() -> None:
    codec = FixedPointCodec("x", -1.0, 1.0, 10)
    assert codec.decode(512) == 0.5
    assert codec.decode_exact(-1024) == Fraction(-1)
    for bad in (1025, -1025, 2**64):
        with pytest.raises(EncodingError, match="outside the encoded range"):
            codec.decode(bad)
    with pytest.raises(EncodingError, match="must be an integer"):
        codec.decode(0.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lo": 1.0, "hi": 0.0}, "above"),
        ({"lo": float("nan"), "hi": 1.0}, "finite"),
        ({"lo": 0.0, "hi": float("inf")}, "finite"),
        ({"frac_bits": -1}, "frac_bits"),
        ({"frac_bits": 1000}, "frac_bits"),
        ({"frac_bits": True}, "frac_bits"),
        ({"lo": 0.5, "integer": True}, "integer bounds"),
        ({"frac_bits": 2, "integer": True}, "frac_bits 0"),
        ({"lo": -1e300, "hi": 1e300, "frac_bits": 100}, "too wide"),
        ({"lo": True}, "must be a number"),
    ],
)
def test_bad_codec_definitions(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"feature": "f", "lo": 0.0, "hi": 1.0, "frac_bits": 0, "integer": False}
    args.update(kwargs)
    with pytest.raises(ModelFormatError, match=message):
        FixedPointCodec(**args)  # type: ignore[arg-type]


def test_parse_number_keeps_integers_exact() -> None:
    assert parse_number("f", "123456789012345678901234567890") == 123456789012345678901234567890
    assert isinstance(parse_number("f", "-7"), int)
    assert parse_number("f", "-7.0") == -7.0


@given(
    frac_bits=st.integers(min_value=0, max_value=60),
    x=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
)
def test_round_trip_error_at_most_half_a_step(frac_bits: int, x: float) -> None:
    codec = FixedPointCodec("x", -1e6, 1e6, frac_bits)
    n = codec.encode(x)
    assert codec.enc_lo <= n <= codec.enc_hi
    assert abs(codec.decode_exact(n) - Fraction(x)) <= Fraction(1, 2 ** (frac_bits + 1))


@given(
    lo=st.integers(min_value=-(10**6), max_value=10**6),
    width=st.integers(min_value=0, max_value=10**6),
    data=st.data(),
)
def test_integer_features_encode_exactly(lo: int, width: int, data: st.DataObject) -> None:
    codec = FixedPointCodec("n", lo, lo + width, 0, integer=True)
    v = data.draw(st.integers(min_value=lo, max_value=lo + width))
    assert codec.encode(v) == v
    assert codec.encode(str(v)) == v
    assert codec.encode(float(v)) == v
    assert codec.max_abs >= abs(v)
