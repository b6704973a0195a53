"""Garbled comparisons (blindscore.crypto.garble) at their edges: label layout, limits, refusal texts."""

from __future__ import annotations

import dataclasses

import pytest

from blindscore.crypto import garble
from blindscore.crypto.garble import (
    LABEL_BYTES,
    MAX_COUNT,
    MAX_INSTANCES,
    GarbledComparisons,
    evaluate_comparisons,
    garble_comparisons,
    plain_comparisons,
)
from blindscore.errors import InvalidInputError


def labels_of(data: bytes) -> list[int]:
    return [int.from_bytes(data[j : j + LABEL_BYTES], "big") for j in range(0, len(data), LABEL_BYTES)]


def true_labels(pairs: list[tuple[int, int]], evaluator_values: list[int], width: int) -> list[int]:
    return [pairs[a * width + i][(b >> i) & 1] for a, b in enumerate(evaluator_values) for i in range(width)]


def zero_labels_of_garbler(
    garbled: GarbledComparisons, delta: int, garbler_values: list[list[int]]
) -> list[int]:
    """The garbler's 0-labels: each active label XOR Delta where its bit a_{a,k,i} is 1."""
    w = garbled.width
    bits = [(v >> i) & 1 for row in garbler_values for v in row for i in range(w)]
    return [x ^ (delta if bit else 0) for x, bit in zip(labels_of(garbled.garbler_labels), bits, strict=True)]


def test_the_label_buffer_is_cut_into_zero_labels_in_wire_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_label_bytes`` (the hook the leakage controls replace) is asked for one 16-byte label per
    input wire, and its buffer becomes the 0-labels in order: instance 0's evaluator wires, then
    the garbler wires of each of its comparisons, then instance 1. Label 0 is a label like any other."""
    sizes: list[int] = []

    def numbered(size: int) -> bytes:
        sizes.append(size)
        return b"".join(j.to_bytes(LABEL_BYTES, "big") for j in range(size // LABEL_BYTES))

    monkeypatch.setattr(garble, "_label_bytes", numbered)
    garbler_values = [[3, 12, 7], [0, 15, 9]]
    garbled, pairs = garble_comparisons(garbler_values, 4)
    assert sizes == [LABEL_BYTES * (2 * 4 + 2 * 3 * 4)]
    delta = pairs[0][0] ^ pairs[0][1]
    assert [p[0] for p in pairs] == [0, 1, 2, 3, 16, 17, 18, 19]
    assert zero_labels_of_garbler(garbled, delta, garbler_values) == [*range(4, 16), *range(20, 32)]
    evaluator_values = [0b0110, 9]  # bit 0 of instance 0 is 0: its label is the integer 0
    labels = true_labels(pairs, evaluator_values, 4)
    assert labels[0] == 0
    assert evaluate_comparisons(garbled, labels) == plain_comparisons(evaluator_values, garbler_values, 4)


def test_no_two_input_wires_share_a_zero_label() -> None:
    garbler_values = [[1, 30], [17, 2], [31, 0]]
    garbled, pairs = garble_comparisons(garbler_values, 5)
    delta = pairs[0][0] ^ pairs[0][1]
    zeros = [p[0] for p in pairs] + zero_labels_of_garbler(garbled, delta, garbler_values)
    assert len(zeros) == 3 * 5 + 6 * 5
    assert len(set(zeros)) == len(zeros)


def test_the_largest_count_is_garbled_and_evaluated() -> None:
    garbler_values = [list(range(MAX_COUNT))]
    garbled, pairs = garble_comparisons(garbler_values, 7)
    assert garbled.count == MAX_COUNT
    assert evaluate_comparisons(garbled, true_labels(pairs, [40], 7)) == plain_comparisons(
        [40], garbler_values, 7
    )


def test_the_largest_number_of_instances_is_accepted() -> None:
    assert plain_comparisons([1] * MAX_INSTANCES, [[0]] * MAX_INSTANCES, 1) == [[1]] * MAX_INSTANCES
    # The evaluator's shape check at the same limit (labels and tables need not be genuine for it).
    garbled = GarbledComparisons(
        bytes(16), MAX_INSTANCES, 1, 1, b"", bytes(LABEL_BYTES * MAX_INSTANCES), bytes(MAX_INSTANCES // 8)
    )
    assert len(evaluate_comparisons(garbled, [0] * MAX_INSTANCES)) == MAX_INSTANCES


@pytest.fixture(scope="module")
def small() -> tuple[GarbledComparisons, list[int]]:
    garbled, pairs = garble_comparisons([[1, 2, 3], [4, 5, 6], [7, 8, 9]], 5)  # 9 outputs: 7 padding bits
    return garbled, true_labels(pairs, [3, 9, 30], 5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"instances": True}, "instances must be between 1 and 100000, got True"),
        ({"instances": 3.0}, "instances must be between 1 and 100000, got 3.0"),
        ({"count": 3.0}, "count must be between 1 and 64, got 3.0"),
        ({"count": MAX_COUNT + 1}, "count must be between 1 and 64, got 65"),
        ({"tables": "not bytes"}, "tables must be bytes, got str"),
        ({"decode": b"\x00\x01"}, "decode: padding bits after the last output must be zero"),
        ({"width": 5.0}, "width must be an int, got float"),
    ],
)
def test_evaluate_refuses_with_the_whole_text(
    small: tuple[GarbledComparisons, list[int]], change: dict[str, object], message: str
) -> None:
    garbled, labels = small
    with pytest.raises(InvalidInputError) as caught:
        evaluate_comparisons(dataclasses.replace(garbled, **change), labels)  # type: ignore[arg-type]
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("garbler_values", "width", "message"),
    [
        ([[1]], 2.0, "width must be an int, got float"),
        ([1, 2], 4, "garbler values must be a sequence of sequences of ints"),
        ([[0] * (MAX_COUNT + 1)], 4, "count (comparisons per instance) must be between 1 and 64, got 65"),
    ],
)
def test_garble_refuses_with_the_whole_text(
    garbler_values: list[object], width: object, message: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        garble_comparisons(garbler_values, width)  # type: ignore[arg-type]
    assert str(caught.value) == message
