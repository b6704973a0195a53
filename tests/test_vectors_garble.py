"""The packed path's comparison garbler (garble.py) cross-checked against an independent one."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

from blindscore.crypto import garble
from blindscore.crypto.garble import GarbledComparisons, evaluate_comparisons, garble_comparisons

import independent_comparisons as ref

HERE = Path(__file__).parent
FIELDS = ("tables", "garbler_labels", "decode")
#: (instances, comparisons per instance, width): width 1 (no gate), 2 (gate 0 only), and longer chains.
SHAPES = [(1, 1, 1), (2, 2, 2), (2, 3, 5), (3, 2, 17), (1, 4, 33)]


class SeededSecrets:
    """Stands in for the ``secrets`` module inside blindscore.crypto.garble."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def token_bytes(self, n: int) -> bytes:
        return self._rng.randbytes(n)

    def randbits(self, k: int) -> int:
        return self._rng.getrandbits(k)


def case(rng: random.Random, instances: int, count: int, width: int) -> tuple[list[int], list[list[int]]]:
    """Evaluator and garbler values below 2^(w-1), where the circuit computes [b < a]."""
    top = 1 << max(width - 1, 0)
    b = [rng.randrange(top) for _ in range(instances)]
    a = [[rng.randrange(top) for _ in range(count)] for _ in range(instances)]
    return b, a


def plain(b: list[int], a: list[list[int]], width: int) -> list[list[int]]:
    """Bit w-1 of (b - a) mod 2^w."""
    return [[((bv - av) % (1 << width)) >> (width - 1) for av in row] for bv, row in zip(b, a, strict=True)]


def labels_for(zero: list[int], delta: int, b: list[int], width: int) -> list[int]:
    return [zero[q] ^ (delta if (b[q // width] >> (q % width)) & 1 else 0) for q in range(len(zero))]


def library_garble(
    a: list[list[int]], width: int, seed: int
) -> tuple[GarbledComparisons, list[tuple[int, int]]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(garble, "secrets", SeededSecrets(seed))
        return garble_comparisons(a, width)


def reference_of(
    garbled: GarbledComparisons, pairs: list[tuple[int, int]], a: list[list[int]], tweak_shift: int = 0
) -> ref.Garbled:
    """The reference garbling with the library's Delta, evaluator labels (from the pairs) and
    garbler 0-labels (active label XOR a_i Delta) and garbling id."""
    w = garbled.width
    delta = pairs[0][0] ^ pairs[0][1]
    active = [
        int.from_bytes(garbled.garbler_labels[i : i + 16], "big")
        for i in range(0, len(garbled.garbler_labels), 16)
    ]
    bits = [(v >> i) & 1 for row in a for v in row for i in range(w)]
    g0 = [x ^ (delta if bit else 0) for x, bit in zip(active, bits, strict=True)]
    return ref.garble(a, w, delta, [p[0] for p in pairs], g0, garbled.garbling_id, tweak_shift)


def mismatches(library: GarbledComparisons, reference: ref.Garbled) -> list[str]:
    return [f for f in FIELDS if getattr(library, f) != getattr(reference, f)]


def test_the_reference_imports_nothing_from_blindscore() -> None:
    tree = ast.parse((HERE / "independent_comparisons.py").read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {m.split(".")[0] for m in modules} == {"__future__", "hashlib", "collections", "dataclasses"}


@pytest.mark.parametrize(("instances", "count", "width"), SHAPES)
def test_transcripts_are_identical_and_cross_evaluate(instances: int, count: int, width: int) -> None:
    rng = random.Random(f"garble/{instances}/{count}/{width}")
    for seed in range(3):
        b, a = case(rng, instances, count, width)
        expected = plain(b, a, width)
        garbled, pairs = library_garble(a, width, seed)
        mine = reference_of(garbled, pairs, a)
        assert mismatches(garbled, mine) == []
        delta = pairs[0][0] ^ pairs[0][1]
        labels = labels_for([p[0] for p in pairs], delta, b, width)
        assert ref.evaluate(mine, garbled.garbling_id, instances, count, width, labels) == expected
        # The library evaluates a reference garbling under another Delta and other labels.
        delta = rng.getrandbits(128) | 1
        e0 = [rng.getrandbits(128) for _ in range(instances * width)]
        g0 = [rng.getrandbits(128) for _ in range(instances * count * width)]
        gid = rng.randbytes(16)
        other = ref.garble(a, width, delta, e0, g0, gid)
        theirs = GarbledComparisons(
            gid, instances, count, width, other.tables, other.garbler_labels, other.decode
        )
        assert evaluate_comparisons(theirs, labels_for(e0, delta, b, width)) == expected


def _negative_case() -> tuple[list[int], list[list[int]], GarbledComparisons, list[tuple[int, int]]]:
    rng = random.Random(4)
    b, a = case(rng, 3, 4, 9)
    garbled, pairs = library_garble(a, 9, 0)
    return b, a, garbled, pairs


def test_a_broken_reference_fails_the_cross_check() -> None:
    """Shifted tweaks: consistent with itself, but other tables, and the library's evaluator
    decodes wrong bits from them."""
    b, a, garbled, pairs = _negative_case()
    mine = reference_of(garbled, pairs, a, tweak_shift=1)
    assert mismatches(garbled, mine) == ["tables", "decode"]
    theirs = GarbledComparisons(garbled.garbling_id, 3, 4, 9, mine.tables, mine.garbler_labels, mine.decode)
    labels = labels_for([p[0] for p in pairs], pairs[0][0] ^ pairs[0][1], b, 9)
    assert evaluate_comparisons(theirs, labels) != plain(b, a, 9)


def test_a_broken_library_fails_the_cross_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another hash domain: the library still agrees with itself, not with the reference."""
    monkeypatch.setattr(garble, "_DOMAIN", b"blindscore/garble/v0")
    b, a, garbled, pairs = _negative_case()
    labels = labels_for([p[0] for p in pairs], pairs[0][0] ^ pairs[0][1], b, 9)
    assert evaluate_comparisons(garbled, labels) == plain(b, a, 9)
    assert mismatches(garbled, reference_of(garbled, pairs, a)) == ["tables", "decode"]
