"""The circuit builder at its edges: what mutation testing found untested (docs/testing.md).

Bits' equality, hash and repr, greater_equal's refusal of unequal widths, the AND-gate count
before pruning, and each refusal's whole text; then, from the full run: words of width 0, the
wire ids and the wire limit at their edges, NOT of a constant and XOR sharing, the carries the
adders make, the gadgets' default signedness, XOR batches of one AND depth, and a circuit's
read-only arrays.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from blindscore.crypto import circuit as circuit_module
from blindscore.crypto.circuit import ONE, ZERO, Bits, CircuitBuilder, from_bits, to_bits
from blindscore.errors import InvalidInputError


def exactly(text: str) -> str:
    """A ``pytest.raises(match=...)`` pattern for this whole message and nothing else."""
    return f"^{re.escape(text)}$"


def test_bits_equality_hash_and_repr() -> None:
    assert Bits([2, 3]) == Bits([2, 3])
    assert Bits([2, 3]) != Bits([2, 4])
    assert Bits([2, 3]) != (2, 3)
    assert hash(Bits([2, 3])) == hash((2, 3))
    assert hash(Bits([2, 3])) != hash(Bits([3, 2]))
    assert repr(Bits([2, 3])) == "Bits([2, 3])"
    with pytest.raises(AttributeError, match=exactly("Bits is immutable")):
        Bits([2]).x = 1


def test_greater_equal_refuses_unequal_or_empty_words() -> None:
    builder = CircuitBuilder()
    x, y = builder.evaluator_input(3), builder.garbler_input(4)
    message = exactly("greater_equal takes two words of one non-zero width")
    for a, b in ((x, y), (y, x), (Bits(), Bits())):
        with pytest.raises(InvalidInputError, match=message):
            builder.greater_equal(a, b)


def test_count_and_gates_counts_each_and_gate_once() -> None:
    builder = CircuitBuilder()
    (a, b, c), (g,) = builder.evaluator_input(3), builder.garbler_input(1)
    assert builder.count_and_gates() == 0
    builder.xor(a, b)
    builder.not_(c)
    assert builder.count_and_gates() == 0
    builder.and_(a, b)
    builder.and_(b, a)  # the same gate (structural hashing)
    builder.and_(c, g)
    assert builder.count_and_gates() == 2


def test_refusals_have_their_whole_text() -> None:
    builder = CircuitBuilder()
    with pytest.raises(InvalidInputError, match=exactly("width must be >= 0, got -1")):
        to_bits(1, -1)
    with pytest.raises(InvalidInputError, match=exactly("width must be at least 1, got 0")):
        builder.garbler_input(0)
    with pytest.raises(InvalidInputError, match=exactly("a circuit needs at least one output")):
        builder.build()
    x = builder.evaluator_input(4)
    with pytest.raises(InvalidInputError, match=exactly("unknown wire 10000")):
        builder.xor(x[0], 10_000)
    with pytest.raises(InvalidInputError, match=exactly("cannot sign-extend an empty word")):
        builder.sign_extend(Bits(), 3)
    with pytest.raises(InvalidInputError, match=exactly("cannot extend a 4-bit word to 2 bits")):
        builder.zero_extend(x, 2)
    with pytest.raises(InvalidInputError, match=exactly("operands must have at least one bit")):
        builder.add(x, Bits())
    with pytest.raises(InvalidInputError, match=exactly("operands must have at least one bit")):
        builder.mul(Bits(), x)
    with pytest.raises(InvalidInputError, match=exactly("mux operands differ in width: 4 and 2")):
        builder.mux(x[0], x, x[:2])
    with pytest.raises(InvalidInputError, match=exactly("sum of no values")):
        builder.sum([], signed=False)
    builder.output(x)
    circuit = builder.build()
    with pytest.raises(InvalidInputError, match=exactly("evaluator input: expected 4 bits, got 3")):
        circuit.evaluate([], [0, 1, 0])
    with pytest.raises(InvalidInputError, match=exactly("garbler input: expected 0 bits, got 1")):
        circuit.evaluate([1], [0, 1, 0, 1])
    with pytest.raises(InvalidInputError, match=exactly("evaluator input: every bit must be 0 or 1")):
        circuit.evaluate([], [0, 1, 2, 0])


def test_a_word_of_width_zero_is_empty() -> None:
    """Width 0 is the one width ``to_bits`` takes that ``CircuitBuilder`` refuses: no bits."""
    assert to_bits(5, 0) == []
    assert to_bits(-1, 0) == []
    assert from_bits([], signed=True) == 0


@pytest.mark.parametrize("width", [1, 2, 5])
def test_adders_create_no_carry_they_do_not_use(width: int) -> None:
    """Before pruning: add and sub create w - 1 AND gates (no top carry), add_wide w."""
    for gadget, ands in (
        (CircuitBuilder.add, width - 1),
        (CircuitBuilder.sub, width - 1),
        (CircuitBuilder.add_wide, width),
    ):
        builder = CircuitBuilder()
        x, y = builder.evaluator_input(width), builder.garbler_input(width)
        gadget(builder, x, y)
        assert builder.count_and_gates() == ands, gadget.__name__


def test_default_signedness() -> None:
    """add, add_wide and sub are unsigned by default, mul is signed: a 2-bit x = 0b11 is 3 to the
    first three (zero-extended to y's 4 bits) and -1 to mul."""
    builder = CircuitBuilder()
    x, y = builder.evaluator_input(2), builder.garbler_input(4)
    for word in (builder.add(x, y), builder.add_wide(x, y), builder.sub(x, y), builder.mul(x, y)):
        builder.output(word)
    out = builder.build().evaluate(to_bits(5, 4), to_bits(3, 2))
    assert from_bits(out[0:4], signed=False) == 8  # 3 + 5
    assert from_bits(out[4:9], signed=False) == 8
    assert from_bits(out[9:13], signed=True) == -2  # 3 - 5
    assert from_bits(out[13:19], signed=True) == -5  # -1 * 5


def test_not_of_a_constant_is_the_other_constant() -> None:
    """No gate for NOT 0 or NOT 1, and the right constant: a comparison with a public constant
    negates constant wires."""
    builder = CircuitBuilder()
    assert (builder.not_(ONE), builder.not_(ZERO)) == (ZERO, ONE)
    y = builder.evaluator_input(4)
    assert builder.not_(ONE) == ZERO  # also once an input wire 2 exists
    builder.output(builder.less_than(y, builder.constant(6, 4), signed=False))
    builder.output(builder.less_than(builder.constant(6, 4), y, signed=False))
    circuit = builder.build()
    for v in range(16):
        assert circuit.evaluate([], to_bits(v, 4)) == [int(v < 6), int(v > 6)]


def test_xor_gates_are_shared_like_and_gates() -> None:
    builder = CircuitBuilder()
    a, b = builder.evaluator_input(1)[0], builder.garbler_input(1)[0]
    assert builder.xor(a, b) == builder.xor(b, a) == builder.xor(a, b)
    assert builder.and_(a, b) == builder.and_(b, a)


def test_independent_xor_gates_of_one_and_depth_share_a_batch() -> None:
    """A XOR's sub-level counts only XOR operands of its own AND depth: z1 and z2 (each an AND of
    depth 1 XORed with a XOR of depth 0, one as operand a, one as b) run in one batch."""
    builder = CircuitBuilder()
    p, q, r, t, u, v = builder.evaluator_input(6)
    x1 = builder.xor(p, q)
    y1, y2 = builder.and_(r, t), builder.and_(u, v)
    x2 = builder.xor(r, u)  # a wire id above y2's
    builder.output(builder.xor(x1, y1))
    builder.output(builder.xor(y2, x2))
    circuit = builder.build()
    assert circuit.batches.tolist() == [[0, 0, 2], [1, 2, 4], [0, 4, 6]]
    assert (circuit.levels, circuit.and_gates, circuit.xor_gates) == (1, 2, 4)
    for bits in ([1, 0, 1, 1, 0, 1], [0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 1, 0]):
        pv, qv, rv, tv, uv, vv = bits
        assert circuit.evaluate([], bits) == [pv ^ qv ^ (rv & tv), (uv & vv) ^ rv ^ uv]


def test_the_wire_limit_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """MAX_WIRES wires (constants included) are allowed, one more is refused (the real limit,
    2^28, lowered to 8 here)."""
    monkeypatch.setattr(circuit_module, "MAX_WIRES", 8)
    builder = CircuitBuilder()
    builder.garbler_input(5)
    builder.evaluator_input(1)  # wire 7, the 8th
    with pytest.raises(InvalidInputError, match=exactly("circuit too large: more than 8 wires")):
        builder.evaluator_input(1)


def test_circuit_arrays_are_read_only_with_their_documented_dtypes() -> None:
    builder = CircuitBuilder()
    x, y = builder.evaluator_input(3), builder.garbler_input(3)
    builder.output(builder.add(x, y))
    circuit = builder.build()
    arrays = {
        "gate_a": (circuit.gate_a, np.int32),
        "gate_b": (circuit.gate_b, np.int32),
        "output_wires": (circuit.output_wires, np.int32),
        "batches": (circuit.batches, np.int64),
    }
    for name, (array, dtype) in arrays.items():
        assert array.dtype == dtype, name
        with pytest.raises(ValueError, match=exactly("assignment destination is read-only")):
            array[0] = 0


def test_the_next_wire_id_and_negative_ids_are_unknown() -> None:
    builder = CircuitBuilder()
    x = builder.evaluator_input(4)  # wires 2..5
    for wire in (6, -1):
        with pytest.raises(InvalidInputError, match=exactly(f"unknown wire {wire}")):
            builder.and_(x[0], wire)
    assert builder.and_(x[3], ZERO) == ZERO  # 0 and the last wire are known
