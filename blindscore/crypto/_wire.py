"""Fixed-width big-endian packing of integer arrays: how ciphertext arrays travel on the wire."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from blindscore.errors import InvalidInputError


def pack_fixed(values: Sequence[Any], width: int) -> bytes:
    """Concatenate non-negative integers as ``width``-byte big-endian fields."""
    return b"".join(int(v).to_bytes(width, "big") for v in values)


def split_fixed(data: bytes, width: int, count: int | None, what: str) -> list[int]:
    """Split ``data`` into ``width``-byte integers; ``count``, when given, must match."""
    if len(data) % width:
        raise InvalidInputError(f"{what} bytes: length {len(data)} is not a multiple of {width}")
    got = len(data) // width
    if count is not None and got != count:
        raise InvalidInputError(f"expected {count} {what}s, got {got}")
    return [int.from_bytes(data[i : i + width], "big") for i in range(0, len(data), width)]
