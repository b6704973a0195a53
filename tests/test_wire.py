"""Fixed-width big-endian integer arrays on the wire (blindscore.crypto._wire), on small vectors."""

from __future__ import annotations

import gmpy2
import pytest

from blindscore.crypto._wire import pack_fixed, split_fixed
from blindscore.errors import InvalidInputError

VALUES = [0, 1, 0x0102, 0xFFFFFF, 0x800000]
PACKED = bytes.fromhex("000000 000001 000102 ffffff 800000")


def test_pack_writes_each_value_in_width_bytes_most_significant_first() -> None:
    assert pack_fixed(VALUES, 3) == PACKED
    assert pack_fixed([gmpy2.mpz(0x0102), 7], 2) == b"\x01\x02\x00\x07"
    assert pack_fixed([], 5) == b""


def test_split_reads_the_fields_back_in_order() -> None:
    assert split_fixed(PACKED, 3, None, "value") == VALUES
    assert split_fixed(PACKED, 3, 5, "value") == VALUES
    assert split_fixed(b"\x01\x02\x00\x07", 2, 2, "value") == [0x0102, 7]
    assert split_fixed(b"\xab", 1, 1, "value") == [0xAB]
    assert split_fixed(b"", 3, None, "value") == []
    assert split_fixed(b"", 3, 0, "value") == []


def test_split_refuses_a_length_that_is_not_a_whole_number_of_fields() -> None:
    with pytest.raises(InvalidInputError, match=r"^widget bytes: length 14 is not a multiple of 3$"):
        split_fixed(PACKED[:-1], 3, None, "widget")
    with pytest.raises(InvalidInputError, match=r"^widget bytes: length 1 is not a multiple of 2$"):
        split_fixed(b"\x00", 2, 0, "widget")


def test_split_refuses_another_count_than_the_one_expected() -> None:
    with pytest.raises(InvalidInputError, match=r"^expected 4 widgets, got 5$"):
        split_fixed(PACKED, 3, 4, "widget")
    with pytest.raises(InvalidInputError, match=r"^expected 1 widgets, got 0$"):
        split_fixed(b"", 3, 1, "widget")
