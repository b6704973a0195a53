"""A second garbler and evaluator for the packed path's comparisons, from garble.py's documented circuit.

Source: the docstring of ``blindscore/crypto/garble.py`` (the borrow chain of b - a with
MAJ(x, y, z) = y XOR ((x XOR y) AND (y XOR z)), a garbler half gate for bit 0, full half gates after,
the BLAKE2b hash and the layouts) and Zahur-Rosulek-Evans for the half gates. Nothing here imports
blindscore (``tests/test_vectors_garble.py`` checks that). Labels are 128-bit ints.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

DOMAIN = b"blindscore/garble/v1"


@dataclass(frozen=True)
class Garbled:
    """The fields of blindscore's ``GarbledComparisons`` that carry bytes."""

    tables: bytes
    garbler_labels: bytes
    decode: bytes


def hash_label(garbling_id: bytes, tweak: int, label: int, tweak_shift: int = 0) -> int:
    """H(X, tweak) = BLAKE2b-128(DOMAIN || garbling_id || tweak (8, big-endian) || X (16, big-endian))."""
    data = DOMAIN + garbling_id + (tweak + tweak_shift).to_bytes(8, "big") + label.to_bytes(16, "big")
    return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "big")


def _pack(bits: Sequence[int]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for k, bit in enumerate(bits):
        out[k // 8] |= bit << (7 - k % 8)
    return bytes(out)


def garble(
    garbler_values: Sequence[Sequence[int]],
    width: int,
    delta: int,
    evaluator_zero: Sequence[int],
    garbler_zero: Sequence[int],
    garbling_id: bytes,
    tweak_shift: int = 0,
) -> Garbled:
    """o_{a,k} = bit w-1 of (b_a - a_{a,k}) mod 2^w; evaluator 0-labels at a w + i, garbler
    0-labels at (a K + k) w + i. ``tweak_shift`` breaks the tweaks (negative controls)."""
    w = width
    count = len(garbler_values[0])

    def h(tweak: int, label: int) -> int:
        return hash_label(garbling_id, tweak, label, tweak_shift)

    tables: list[int] = []
    active: list[int] = []
    decode: list[int] = []
    tweak = 0
    for a, row in enumerate(garbler_values):
        e0 = evaluator_zero[a * w : (a + 1) * w]
        not_b0 = [x ^ delta for x in e0]  # NOT is free: the 0-label of NOT b is b's 1-label
        for k, value in enumerate(row):
            g0 = garbler_zero[(a * count + k) * w : (a * count + k + 1) * w]
            bits = [(value >> i) & 1 for i in range(w)]
            active += [g ^ (delta if bit else 0) for g, bit in zip(g0, bits, strict=True)]
            borrow = 0  # borrow_0 = 0, a constant whose label is 0
            if w > 1:
                # borrow_1 = (NOT b_0) AND a_0, with a_0 known to the garbler: a lone garbler half gate.
                x0 = not_b0[0]
                t = h(tweak, x0) ^ h(tweak, x0 ^ delta) ^ (delta if bits[0] else 0)
                tables.append(t)
                borrow = h(tweak, x0) ^ (t if x0 & 1 else 0)
                tweak += 1
            for i in range(1, w - 1):
                # borrow_{i+1} = a_i XOR ((NOT b_i XOR a_i) AND (a_i XOR borrow_i)).
                x0, y0 = not_b0[i] ^ g0[i], g0[i] ^ borrow
                t_g = h(tweak, x0) ^ h(tweak, x0 ^ delta) ^ (delta if y0 & 1 else 0)
                w_g = h(tweak, x0) ^ (t_g if x0 & 1 else 0)
                t_e = h(tweak + 1, y0) ^ h(tweak + 1, y0 ^ delta) ^ x0
                w_e = h(tweak + 1, y0) ^ ((t_e ^ x0) if y0 & 1 else 0)
                tables += [t_g, t_e]
                borrow = g0[i] ^ w_g ^ w_e
                tweak += 2
            decode.append((e0[w - 1] ^ g0[w - 1] ^ borrow) & 1)  # o = b_{w-1} ^ a_{w-1} ^ borrow_{w-1}
    return Garbled(
        tables=b"".join(t.to_bytes(16, "big") for t in tables),
        garbler_labels=b"".join(g.to_bytes(16, "big") for g in active),
        decode=_pack(decode),
    )


def evaluate(
    garbled: Garbled,
    garbling_id: bytes,
    instances: int,
    count: int,
    width: int,
    evaluator_labels: Sequence[int],
) -> list[list[int]]:
    """o[a][k] from the garbling and the evaluator's active labels (index a width + i)."""
    w = width
    entries = [int.from_bytes(garbled.tables[i : i + 16], "big") for i in range(0, len(garbled.tables), 16)]
    glabels = [
        int.from_bytes(garbled.garbler_labels[i : i + 16], "big")
        for i in range(0, len(garbled.garbler_labels), 16)
    ]
    decode = [(garbled.decode[q // 8] >> (7 - q % 8)) & 1 for q in range(instances * count)]
    pos = tweak = 0
    out: list[list[int]] = []
    for a in range(instances):
        e = evaluator_labels[a * w : (a + 1) * w]  # also the active labels of NOT b_i
        row = []
        for k in range(count):
            g = glabels[(a * count + k) * w : (a * count + k + 1) * w]
            borrow = 0
            if w > 1:
                borrow = hash_label(garbling_id, tweak, e[0]) ^ (entries[pos] if e[0] & 1 else 0)
                pos += 1
                tweak += 1
            for i in range(1, w - 1):
                x, y = e[i] ^ g[i], g[i] ^ borrow
                t_g, t_e = entries[pos], entries[pos + 1]
                w_g = hash_label(garbling_id, tweak, x) ^ (t_g if x & 1 else 0)
                w_e = hash_label(garbling_id, tweak + 1, y) ^ ((t_e ^ x) if y & 1 else 0)
                borrow = g[i] ^ w_g ^ w_e
                pos += 2
                tweak += 2
            row.append((e[w - 1] ^ g[w - 1] ^ borrow ^ decode[a * count + k]) & 1)
        out.append(row)
    return out
