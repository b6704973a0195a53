"""Half-gates garbled comparisons: correctness against the clear function, layout, freshness, refusals."""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blindscore.crypto.garble import (
    LABEL_BYTES,
    MAX_COUNT,
    MAX_INSTANCES,
    MAX_WIDTH,
    GarbledComparisons,
    ciphertexts,
    evaluate_comparisons,
    garble_comparisons,
    hash_label,
    plain_comparisons,
    table_bytes,
)
from blindscore.errors import InvalidInputError


def definition(b: int, a: int, width: int) -> int:
    """The specified output, written independently of the module: bit w-1 of (b - a) mod 2^w."""
    return ((b - a) % 2**width) >> (width - 1)


def true_labels(pairs: Sequence[tuple[int, int]], evaluator_values: Sequence[int], width: int) -> list[int]:
    """What the evaluator would receive by OT: the label of its true bit for every input wire."""
    return [pairs[a * width + i][(b >> i) & 1] for a, b in enumerate(evaluator_values) for i in range(width)]


def run_gc(
    evaluator_values: Sequence[int], garbler_values: Sequence[Sequence[int]], width: int
) -> list[list[int]]:
    garbled, pairs = garble_comparisons(garbler_values, width)
    return evaluate_comparisons(garbled, true_labels(pairs, evaluator_values, width))


def split_labels(data: bytes) -> list[int]:
    return [int.from_bytes(data[j : j + LABEL_BYTES], "big") for j in range(0, len(data), LABEL_BYTES)]


# ---------------------------------------------------------------- the hash H


def test_hash_fixed_vector() -> None:
    gid = bytes(range(16))
    label = 0x00112233445566778899AABBCCDDEEFF
    assert hash_label(gid, 7, label) == 0xEB5E142EDE61611D36501720AB325701
    assert hash_label(bytes(16), 0, 0) == 0x74367CFF8457FDA99F3D9AA8D838C902


def test_hash_separates_tweak_id_and_label() -> None:
    gid = bytes(range(16))
    base = hash_label(gid, 7, 1)
    assert hash_label(gid, 8, 1) != base
    assert hash_label(bytes(16), 7, 1) != base
    assert hash_label(gid, 7, 2) != base
    assert 0 <= base < 2**128


# ---------------------------------------------------------------- correctness


@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("count", [1, 2, 3])
def test_exhaustive_evaluator_values_small_width(width: int, count: int) -> None:
    rng = random.Random(1000 * width + count)
    evaluator_values = list(range(2**width))  # one instance per possible evaluator value
    garbler_values = [[rng.randrange(2**width) for _ in range(count)] for _ in evaluator_values]
    expected = [
        [definition(b, a, width) for a in row]
        for b, row in zip(evaluator_values, garbler_values, strict=True)
    ]
    assert plain_comparisons(evaluator_values, garbler_values, width) == expected
    assert run_gc(evaluator_values, garbler_values, width) == expected


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_all_value_pairs_small_width(width: int) -> None:
    pairs = list(itertools.product(range(2**width), repeat=2))
    evaluator_values = [b for b, _ in pairs]
    garbler_values = [[a] for _, a in pairs]
    expected = [[definition(b, a, width)] for b, a in pairs]
    assert run_gc(evaluator_values, garbler_values, width) == expected


def test_width_25_count_4_with_edge_values() -> None:
    width, top = 25, 2**25 - 1
    rng = random.Random(25)
    evaluator_values = [0, top, 0, top, 12345, top, 2**24, 2**24 - 1]
    garbler_values = [
        [0, top, 1, 0],
        [top, 0, top - 1, top],
        [0, 0, 0, 0],
        [top, top, top, top],
        [12345, 12344, 12346, 0],
        [1, 2**24, 2**24 - 1, top],
        [2**24, 2**24 - 1, 2**24 + 1, 0],
        [2**24 - 1, 2**24, 0, top],
    ]
    while len(evaluator_values) < 50:
        b = rng.randrange(2**width)
        evaluator_values.append(b)
        garbler_values.append([b, rng.randrange(2**width), max(b - 1, 0), min(b + 1, top)])
    expected = [
        [definition(b, a, width) for a in row]
        for b, row in zip(evaluator_values, garbler_values, strict=True)
    ]
    assert plain_comparisons(evaluator_values, garbler_values, width) == expected
    assert run_gc(evaluator_values, garbler_values, width) == expected
    # Both outcomes occur, so a constant output cannot pass.
    assert {o for row in expected for o in row} == {0, 1}


@st.composite
def gc_inputs(draw: st.DrawFn) -> tuple[int, list[int], list[list[int]]]:
    width = draw(st.integers(1, 40))
    count = draw(st.integers(1, 5))
    instances = draw(st.integers(1, 5))
    value = st.integers(0, 2**width - 1)
    evaluator_values = draw(st.lists(value, min_size=instances, max_size=instances))
    garbler_values = draw(
        st.lists(st.lists(value, min_size=count, max_size=count), min_size=instances, max_size=instances)
    )
    return width, evaluator_values, garbler_values


@settings(max_examples=50, deadline=None)
@given(gc_inputs())
def test_property_gc_equals_clear_function(case: tuple[int, list[int], list[list[int]]]) -> None:
    width, evaluator_values, garbler_values = case
    expected = [
        [definition(b, a, width) for a in row]
        for b, row in zip(evaluator_values, garbler_values, strict=True)
    ]
    assert run_gc(evaluator_values, garbler_values, width) == expected


def test_width_8_is_the_sign_of_the_difference() -> None:
    values = [0, 1, 2, 63, 64, 100, 126, 127, 128, 129, 200, 254, 255]
    evaluator_values = [b for b in values for _ in values]
    garbler_values = [[a] for _ in values for a in values]
    got = run_gc(evaluator_values, garbler_values, 8)
    assert got == [
        [((b - row[0]) % 256) >> 7] for b, row in zip(evaluator_values, garbler_values, strict=True)
    ]
    # With both values below 2^(w-1) the output bit is exactly [b < a].
    for b, row, out in zip(evaluator_values, garbler_values, got, strict=True):
        if b < 128 and row[0] < 128:
            assert out == [int(b < row[0])]


def test_numpy_integers_accepted_as_garbler_values() -> None:
    garbler_values = [list(row) for row in np.array([[3, 9], [0, 15]], dtype=np.int64)]
    assert isinstance(garbler_values[0][0], np.int64)
    expected = [[definition(5, 3, 4), definition(5, 9, 4)], [definition(12, 0, 4), definition(12, 15, 4)]]
    assert run_gc([5, 12], garbler_values, 4) == expected


# ---------------------------------------------------------------- layout and reference garbler


@pytest.mark.parametrize(
    ("instances", "count", "width"), [(1, 1, 1), (2, 3, 2), (3, 2, 5), (2, 4, 25), (1, 1, 257)]
)
def test_sizes(instances: int, count: int, width: int) -> None:
    garbled, pairs = garble_comparisons([[0] * count for _ in range(instances)], width)
    assert (garbled.instances, garbled.count, garbled.width) == (instances, count, width)
    assert len(garbled.garbling_id) == 16
    assert ciphertexts(width) == (0 if width == 1 else 2 * width - 3)
    assert len(garbled.tables) == table_bytes(instances, count, width)
    assert len(garbled.tables) == instances * count * ciphertexts(width) * LABEL_BYTES
    assert len(garbled.garbler_labels) == instances * count * width * LABEL_BYTES
    assert len(garbled.decode) == (instances * count + 7) // 8
    assert len(pairs) == instances * width


def reference_garble(
    garbled: GarbledComparisons, pairs: Sequence[tuple[int, int]], garbler_values: Sequence[Sequence[int]]
) -> tuple[list[int], list[int]]:
    """The tables and decode bits re-derived from the module docstring's formulas, gate by gate."""
    width, gid = garbled.width, garbled.garbling_id
    delta = pairs[0][0] ^ pairs[0][1]
    active = split_labels(garbled.garbler_labels)

    def h(label: int, tweak: int) -> int:
        return hash_label(gid, tweak, label)

    tables: list[int] = []
    decode: list[int] = []
    tweak = 0
    for a, row in enumerate(garbler_values):
        e0 = [pairs[a * width + i][0] for i in range(width)]
        for k, v in enumerate(row):
            q = a * len(row) + k
            g0 = [active[q * width + i] ^ (delta if (v >> i) & 1 else 0) for i in range(width)]
            c0 = 0
            if width >= 2:
                x0 = e0[0] ^ delta  # NOT b_0
                tg = h(x0, tweak) ^ h(x0 ^ delta, tweak) ^ (delta if v & 1 else 0)
                c0 = h(x0, tweak) ^ (tg if x0 & 1 else 0)
                tables.append(tg)
                tweak += 1
                for i in range(1, width - 1):
                    x0 = e0[i] ^ delta ^ g0[i]
                    y0 = g0[i] ^ c0
                    tg = h(x0, tweak) ^ h(x0 ^ delta, tweak) ^ (delta if y0 & 1 else 0)
                    te = h(y0, tweak + 1) ^ h(y0 ^ delta, tweak + 1) ^ x0
                    wg0 = h(x0, tweak) ^ (tg if x0 & 1 else 0)
                    we0 = h(y0, tweak + 1) ^ (te ^ x0 if y0 & 1 else 0)
                    c0 = wg0 ^ we0 ^ g0[i]
                    tables += [tg, te]
                    tweak += 2
            decode.append((e0[width - 1] ^ g0[width - 1] ^ c0) & 1)
    return tables, decode


@pytest.mark.parametrize("width", [1, 2, 3, 6])
def test_tables_match_reference_garbler(width: int) -> None:
    rng = random.Random(width)
    garbler_values = [[rng.randrange(2**width) for _ in range(3)] for _ in range(2)]
    garbled, pairs = garble_comparisons(garbler_values, width)
    tables, decode = reference_garble(garbled, pairs, garbler_values)
    assert split_labels(garbled.tables) == tables
    n = len(decode)
    assert np.unpackbits(np.frombuffer(garbled.decode, dtype=np.uint8))[:n].tolist() == decode
    assert np.unpackbits(np.frombuffer(garbled.decode, dtype=np.uint8))[n:].tolist() == [0] * (-n % 8)


def test_one_delta_with_lsb_one_and_nothing_secret_in_the_message() -> None:
    rng = random.Random(7)
    width = 10
    garbler_values = [[rng.randrange(2**width) for _ in range(4)] for _ in range(3)]
    evaluator_values = [rng.randrange(2**width) for _ in range(3)]
    garbled, pairs = garble_comparisons(garbler_values, width)
    deltas = {p0 ^ p1 for p0, p1 in pairs}
    assert len(deltas) == 1
    delta = deltas.pop()
    assert delta & 1 == 1
    assert all(0 <= p0 < 2**128 and 0 <= p1 < 2**128 for p0, p1 in pairs)
    inactive = {
        pairs[a * width + i][1 - ((b >> i) & 1)] for a, b in enumerate(evaluator_values) for i in range(width)
    }
    public = set(split_labels(garbled.tables)) | set(split_labels(garbled.garbler_labels))
    assert delta not in public
    assert not inactive & public
    # The garbler's active labels do not carry its bits in their lsb (that would leak a).
    bits = [(v >> i) & 1 for row in garbler_values for v in row for i in range(width)]
    lsbs = [label & 1 for label in split_labels(garbled.garbler_labels)]
    assert lsbs != bits


# ---------------------------------------------------------------- freshness


def test_garbling_is_fresh() -> None:
    garbler_values = [[5, 100, 7], [0, 255, 128]]
    g1, p1 = garble_comparisons(garbler_values, 8)
    g2, p2 = garble_comparisons(garbler_values, 8)
    assert g1.garbling_id != g2.garbling_id
    assert g1.tables != g2.tables
    assert g1.garbler_labels != g2.garbler_labels
    assert not {x for pair in p1 for x in pair} & {x for pair in p2 for x in pair}
    assert p1[0][0] ^ p1[0][1] != p2[0][0] ^ p2[0][1]
    # Both still compute the same function.
    assert run_gc([6, 200], garbler_values, 8) == plain_comparisons([6, 200], garbler_values, 8)


# ---------------------------------------------------------------- wire semantics


@pytest.mark.parametrize(("instance", "bit"), [(0, 0), (1, 4), (2, 9), (1, 0)])
def test_other_label_of_a_pair_flips_exactly_that_bit(instance: int, bit: int) -> None:
    rng = random.Random(31 * instance + bit)
    width = 10
    garbler_values = [[rng.randrange(2**width) for _ in range(4)] for _ in range(3)]
    evaluator_values = [rng.randrange(2**width) for _ in range(3)]
    garbled, pairs = garble_comparisons(garbler_values, width)
    labels = true_labels(pairs, evaluator_values, width)
    j = instance * width + bit
    assert labels[j] in pairs[j]
    labels[j] = pairs[j][0] if labels[j] == pairs[j][1] else pairs[j][1]
    flipped = list(evaluator_values)
    flipped[instance] ^= 1 << bit
    expected = plain_comparisons(flipped, garbler_values, width)
    got = evaluate_comparisons(garbled, labels)
    assert got == expected
    for a in range(3):
        if a != instance:
            assert got[a] == plain_comparisons(evaluator_values, garbler_values, width)[a]


def test_random_label_does_not_crash() -> None:
    rng = random.Random(5)
    width = 12
    garbler_values = [[rng.randrange(2**width) for _ in range(3)] for _ in range(2)]
    garbled, pairs = garble_comparisons(garbler_values, width)
    labels = true_labels(pairs, [1000, 7], width)
    labels[3] = rng.getrandbits(128)
    got = evaluate_comparisons(garbled, labels)  # garbage or the wrong answer is allowed
    assert [len(row) for row in got] == [3, 3]
    assert all(o in (0, 1) for row in got for o in row)


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("garbler_values", "width", "match"),
    [
        ([[1]], 0, "width must be between 1 and 257"),
        ([[1]], MAX_WIDTH + 1, "width must be between 1 and 257"),
        ([[1]], 2.0, "width must be an int"),
        ([[1]], True, "width must be an int"),
        ([], 4, "instances must be between 1 and"),
        ([[]], 4, "count .* must be between 1 and 64"),
        ([[0] * (MAX_COUNT + 1)], 4, "count .* must be between 1 and 64"),
        ([[1, 2], [3]], 4, "instance 1 has 1 garbler values, instance 0 has 2"),
        ([[16]], 4, r"garbler value \[0\]\[0\] = 16 is out of range \[0, 2\^4\)"),
        ([[0, -1]], 4, r"garbler value \[0\]\[1\] = -1 is out of range"),
        ([[1.5]], 4, r"garbler value \[0\]\[0\]: expected an integer, got float"),
        ([[True]], 4, "expected an integer, got a bool"),
        ([1, 2], 4, "garbler values must be a sequence of sequences of ints"),
    ],
)
def test_garble_refuses(garbler_values: list[list[object]], width: object, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        garble_comparisons(garbler_values, width)  # type: ignore[arg-type]


def test_garble_refuses_too_many_instances() -> None:
    with pytest.raises(InvalidInputError, match=f"instances must be between 1 and {MAX_INSTANCES}"):
        garble_comparisons([[0]] * (MAX_INSTANCES + 1), 1)


def test_plain_refuses_instances_mismatch_and_range() -> None:
    with pytest.raises(InvalidInputError, match="instances mismatch: 1 evaluator values, 2 garbler rows"):
        plain_comparisons([1], [[1], [2]], 4)
    with pytest.raises(InvalidInputError, match=r"evaluator value 0 = 16 is out of range"):
        plain_comparisons([16], [[1]], 4)


@pytest.fixture(scope="module")
def small_gc() -> tuple[GarbledComparisons, list[int]]:
    garbled, pairs = garble_comparisons([[1, 2, 3], [4, 5, 6], [7, 8, 9]], 5)  # 9 outputs: 7 padding bits
    return garbled, true_labels(pairs, [3, 9, 30], 5)


def test_small_gc_fixture_evaluates(small_gc: tuple[GarbledComparisons, list[int]]) -> None:
    garbled, labels = small_gc
    assert evaluate_comparisons(garbled, labels) == plain_comparisons(
        [3, 9, 30], [[1, 2, 3], [4, 5, 6], [7, 8, 9]], 5
    )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            {"tables": b"\x00" * 16},
            r"tables: expected 1008 bytes for 3 instances x 3 comparisons x width 5, got 16",
        ),
        ({"garbler_labels": b""}, r"garbler_labels: expected 720 bytes .* got 0"),
        ({"decode": b"\x00"}, r"decode: expected 2 bytes .* got 1"),
        ({"decode": b"\x00\x01"}, "decode: padding bits after the last output must be zero"),
        ({"instances": 2}, r"evaluator labels: expected 10 \(2 instances x width 5\), got 15"),
        ({"instances": 0}, "instances must be between 1 and"),
        ({"count": 0}, "count must be between 1 and 64"),
        ({"count": 4}, r"tables: expected 1344 bytes for 3 instances x 4 comparisons"),
        ({"width": 0}, "width must be between 1 and 257"),
        ({"width": 6}, r"evaluator labels: expected 18 \(3 instances x width 6\), got 15"),
        ({"garbling_id": b"short"}, "garbling_id must be 16 bytes"),
        ({"tables": "not bytes"}, "tables must be bytes"),
    ],
)
def test_evaluate_refuses_shape_mismatch(
    small_gc: tuple[GarbledComparisons, list[int]], change: dict[str, object], match: str
) -> None:
    garbled, labels = small_gc
    with pytest.raises(InvalidInputError, match=match):
        evaluate_comparisons(dataclasses.replace(garbled, **change), labels)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("labels_change", "match"),
    [
        (lambda labels: labels[:-1], r"evaluator labels: expected 15 \(3 instances x width 5\), got 14"),
        (lambda labels: [*labels, 0], "evaluator labels: expected 15 .* got 16"),
        (lambda labels: [-1, *labels[1:]], "evaluator label 0 is not a 128-bit non-negative int"),
        (lambda labels: [*labels[:-1], 2**128], "evaluator label 14 is not a 128-bit non-negative int"),
        (lambda labels: [*labels[:-1], str(labels[-1])], "evaluator label 14 is not a 128-bit"),
    ],
)
def test_evaluate_refuses_bad_labels(
    small_gc: tuple[GarbledComparisons, list[int]], labels_change: object, match: str
) -> None:
    garbled, labels = small_gc
    with pytest.raises(InvalidInputError, match=match):
        evaluate_comparisons(garbled, labels_change(list(labels)))  # type: ignore[operator]
