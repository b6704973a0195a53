"""Half gates at their edges: what mutation testing found untested (docs/testing.md).

A circuit without garbler inputs, evaluator labels as one byte buffer, the index a refusal names
for a bad label, the randomness of every byte of Delta, and each refusal's and repr's whole text.
"""

from __future__ import annotations

import dataclasses
import pickle
import re

import pytest

from blindscore.crypto import halfgates
from blindscore.crypto.circuit import Circuit, CircuitBuilder, to_bits
from blindscore.crypto.halfgates import LABEL_BYTES, evaluate, garble
from blindscore.crypto.ot import LabelPairs
from blindscore.errors import CryptoError, InvalidInputError


def comparison_circuit(width: int = 8) -> Circuit:
    builder = CircuitBuilder()
    x, y = builder.evaluator_input(width), builder.garbler_input(width)
    builder.output(builder.less_than(x, y, signed=False))
    builder.output(builder.add(x, y))
    return builder.build()


def exactly(text: str) -> str:
    """A ``pytest.raises(match=...)`` pattern for this whole message and nothing else."""
    return f"^{re.escape(text)}$"


def test_repr_shows_the_exact_sizes() -> None:
    circuit = comparison_circuit(8)  # 9 outputs
    garbled, _ = garble(circuit, to_bits(9, 8))
    assert repr(garbled) == f"GarbledCircuit(tables={len(garbled.tables)} bytes, outputs=9)"


def test_a_circuit_without_garbler_inputs_takes_an_empty_list() -> None:
    """``garble(circuit, [])``: an empty list is a float array to numpy; the garbler must still
    accept it (and an empty tuple, and an empty uint8 array) when the circuit has no garbler bits."""
    builder = CircuitBuilder()
    x, y = builder.evaluator_input(4), builder.evaluator_input(4)
    builder.output(builder.less_than(x, y, signed=False))
    builder.output(builder.and_(x[0], y[0]))
    circuit = builder.build()
    assert circuit.garbler_input_bits == 0
    ebits = to_bits(3, 4) + to_bits(12, 4)
    empties: tuple[list[int], tuple[int, ...]] = ([], ())
    for empty in empties:
        garbled, pairs = garble(circuit, empty)
        labels = [pairs[j][bit] for j, bit in enumerate(ebits)]
        assert evaluate(circuit, garbled, labels) == circuit.evaluate([], ebits) == [1, 0]


def test_evaluator_labels_as_one_buffer() -> None:
    """The labels as one buffer of 16-byte big-endian blocks (what the OT hands over) evaluate like
    the same labels as ints; a buffer of the wrong length is refused with its count of labels."""
    circuit = comparison_circuit(8)
    garbled, pairs = garble(circuit, to_bits(200, 8))
    ints = [pairs[j][bit] for j, bit in enumerate(to_bits(5, 8))]
    buffer = b"".join(x.to_bytes(LABEL_BYTES, "big") for x in ints)
    assert evaluate(circuit, garbled, buffer) == evaluate(circuit, garbled, ints)
    assert evaluate(circuit, garbled, buffer)[0] == 1
    for wrong, count in ((buffer[:-8], 7), (buffer + bytes(8), 8), (buffer[:-16], 7)):
        with pytest.raises(InvalidInputError) as info:
            evaluate(circuit, garbled, wrong)
        expected = f"evaluator labels: the circuit has 8 evaluator input bits, got {count} labels"
        assert str(info.value) == expected


@pytest.mark.parametrize("bad", [-1, 1 << 128, 1.0, True])
def test_a_bad_label_is_named_by_its_index(bad: object) -> None:
    """The refusal names the first label that is not a 128-bit non-negative int, here index 3,
    after a label 0 and a label 2^128 - 1 (both valid)."""
    circuit = comparison_circuit(8)
    garbled, pairs = garble(circuit, to_bits(9, 8))
    labels: list[object] = [0, (1 << 128) - 1, pairs[2][0], bad, *[pairs[j][0] for j in range(4, 8)]]
    message = "evaluator label 3 is not a 128-bit non-negative int"
    with pytest.raises(InvalidInputError, match=exactly(message)):
        evaluate(circuit, garbled, labels)  # type: ignore[arg-type]


def test_fresh_delta_is_random_in_every_byte() -> None:
    """Only the lowest bit of Delta is fixed; the other 7 bits of its last byte vary too."""
    deltas = [halfgates.fresh_delta() for _ in range(64)]
    assert all(d[15] & 1 for d in deltas)
    assert len({d[15] >> 1 for d in deltas}) > 8
    assert len({d[0] for d in deltas}) > 8


def test_refusals_have_their_whole_text() -> None:
    circuit = comparison_circuit(8)
    garbled, pairs = garble(circuit, to_bits(9, 8))
    labels = [pairs[j][bit] for j, bit in enumerate(to_bits(3, 8))]
    with pytest.raises(
        TypeError,
        match=exactly("a GarbledCircuit cannot be pickled; send its fields through the wire encoding"),
    ):
        pickle.dumps(garbled)
    with pytest.raises(
        InvalidInputError, match=exactly("Delta must have its lowest bit set (point-and-permute)")
    ):
        garble(circuit, [0] * 8, LabelPairs(bytes(16 * 8), bytes(16)))
    with pytest.raises(
        InvalidInputError, match=exactly("garbler input: expected a flat sequence of 0/1 integers")
    ):
        garble(circuit, [0.0] * 8)  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match=exactly("garbler input: every bit must be 0 or 1")):
        garble(circuit, [0, 0, 0, 0, 0, 0, 0, -1])
    with pytest.raises(InvalidInputError, match=exactly("tables must be bytes, got str")):
        evaluate(circuit, dataclasses.replace(garbled, tables="00"), labels)  # type: ignore[arg-type]
    with pytest.raises(
        InvalidInputError, match=exactly("decode: padding bits after the last output must be zero")
    ):
        evaluate(circuit, dataclasses.replace(garbled, decode=garbled.decode[:-1] + b"\x01"), labels)
    flipped = dataclasses.replace(garbled, decode=bytes([garbled.decode[0] ^ 0x80, *garbled.decode[1:]]))
    with pytest.raises(
        CryptoError,
        match=exactly("garbled circuit: an output label does not match its tag (corrupted garbling)"),
    ):
        evaluate(circuit, flipped, labels)
