"""The hash's block views: bytes and byte matrices give the same blocks, and no input gives no block.

The hash itself (H(x, i) against the paper's formula and pinned AES vectors) is tested in
tests/test_halfgates.py; these pin down the input conversion the OT row hash goes through.
"""

from __future__ import annotations

import numpy as np

from blindscore.crypto import tccr


def test_as_blocks_reads_bytes_and_byte_matrices_alike() -> None:
    data = bytes(range(48))
    from_bytes = tccr.as_blocks(data)
    from_matrix = tccr.as_blocks(np.frombuffer(data, dtype=np.uint8).reshape(3, 16))
    assert from_bytes.shape == (3, 2)
    assert from_bytes.dtype == np.uint64
    assert np.array_equal(from_bytes, from_matrix)
    assert from_bytes.tobytes() == data  # a view of the same memory, byte for byte


def test_no_bytes_are_no_blocks() -> None:
    """An empty input is zero blocks, not an error: numpy would read b"" as one NUL byte."""
    assert tccr.as_blocks(b"").shape == (0, 2)
    assert tccr.as_blocks(np.zeros((0, 16), dtype=np.uint8)).shape == (0, 2)
    hashed = tccr.Tccr(bytes(16))(tccr.as_blocks(b""), tccr.tweak_blocks(np.zeros(0, dtype=np.uint64)))
    assert hashed.shape == (0, 2)


def test_tweak_blocks_are_the_big_endian_integers() -> None:
    tweaks = tccr.tweak_blocks(np.array([0, 1, 0x0102030405060708], dtype=np.uint64))
    assert [row.tobytes() for row in tweaks] == [
        bytes(16),
        bytes(15) + b"\x01",
        bytes(8) + bytes.fromhex("0102030405060708"),
    ]
