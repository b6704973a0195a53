"""Circuit builder: each gadget against Python integers, AND counts, folding, the schedule, refusals."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blindscore.crypto.circuit import (
    ONE,
    ZERO,
    Bits,
    Circuit,
    CircuitBuilder,
    from_bits,
    to_bits,
)
from blindscore.errors import InvalidInputError


def word(draw: st.DrawFn, width: int, signed: bool) -> int:
    """A value of ``width`` bits, edge values (0, +-1, extremes) drawn often."""
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
    edges = sorted({v for v in (lo, hi, 0, 1, -1, lo + 1, hi - 1) if lo <= v <= hi})
    return draw(st.one_of(st.sampled_from(edges), st.integers(lo, hi)))


@st.composite
def operands(draw: st.DrawFn) -> tuple[int, int, int, int, bool]:
    """(width a, width b, a, b, signed) with widths 1..64."""
    signed = draw(st.booleans())
    wa = draw(st.integers(1, 64))
    wb = draw(st.integers(1, 64))
    return wa, wb, word(draw, wa, signed), word(draw, wb, signed), signed


def run_binary(
    wa: int, wb: int, a: int, b: int, gadget: Callable[[CircuitBuilder, Bits, Bits], Bits | int]
) -> tuple[list[int], Circuit]:
    """Build x (evaluator, wa bits) op y (garbler, wb bits), evaluate, return the output bits."""
    builder = CircuitBuilder()
    x = builder.evaluator_input(wa)
    y = builder.garbler_input(wb)
    builder.output(gadget(builder, x, y))
    circuit = builder.build()
    return circuit.evaluate(to_bits(b, wb), to_bits(a, wa)), circuit


# ---------------------------------------------------------------- Bits and helpers


def test_bits_is_an_immutable_sequence() -> None:
    bits = Bits([5, 6, 7])
    assert len(bits) == 3
    assert bits[0] == 5 and bits[-1] == 7
    assert bits[1:] == Bits([6, 7])
    assert isinstance(bits[1:], Bits)
    assert bits + Bits([8]) == Bits([5, 6, 7, 8])
    assert list(bits) == [5, 6, 7]
    with pytest.raises(AttributeError, match=r"^Bits is immutable$"):
        bits._wires = ()  # type: ignore[misc]
    assert hash(bits) == hash(Bits([5, 6, 7]))


@given(
    st.integers(1, 70).flatmap(lambda w: st.tuples(st.just(w), st.integers(-(1 << (w - 1)), (1 << w) - 1)))
)
def test_to_bits_from_bits_round_trip(case: tuple[int, int]) -> None:
    width, value = case
    bits = to_bits(value, width)
    assert len(bits) == width
    assert from_bits(bits, signed=False) == value % (1 << width)
    signed = from_bits(bits, signed=True)
    assert -(1 << (width - 1)) <= signed < 1 << (width - 1)
    assert (signed - value) % (1 << width) == 0


# ---------------------------------------------------------------- gadgets against integers


@given(operands())
def test_add(case: tuple[int, int, int, int, bool]) -> None:
    wa, wb, a, b, signed = case
    w = max(wa, wb)
    out, _ = run_binary(wa, wb, a, b, lambda c, x, y: c.add(x, y, signed=signed))
    assert len(out) == w
    assert from_bits(out, signed=signed) % (1 << w) == (a + b) % (1 << w)


@given(operands())
def test_add_wide_is_exact(case: tuple[int, int, int, int, bool]) -> None:
    wa, wb, a, b, signed = case
    out, _ = run_binary(wa, wb, a, b, lambda c, x, y: c.add_wide(x, y, signed=signed))
    assert len(out) == max(wa, wb) + 1
    assert from_bits(out, signed=signed) == a + b


@given(operands())
def test_sub(case: tuple[int, int, int, int, bool]) -> None:
    wa, wb, a, b, signed = case
    w = max(wa, wb)
    out, _ = run_binary(wa, wb, a, b, lambda c, x, y: c.sub(x, y, signed=signed))
    assert len(out) == w
    assert from_bits(out, signed=False) == (a - b) % (1 << w)


@given(operands())
def test_less_than_and_less_equal(case: tuple[int, int, int, int, bool]) -> None:
    wa, wb, a, b, signed = case
    lt, _ = run_binary(wa, wb, a, b, lambda c, x, y: c.less_than(x, y, signed=signed))
    le, _ = run_binary(wa, wb, a, b, lambda c, x, y: c.less_equal(x, y, signed=signed))
    assert lt == [int(a < b)]
    assert le == [int(a <= b)]


@given(
    st.integers(1, 64).flatmap(
        lambda w: st.tuples(
            st.just(w), st.integers(0, (1 << w) - 1), st.integers(0, (1 << w) - 1), st.integers(0, 1)
        )
    )
)
def test_mux(case: tuple[int, int, int, int]) -> None:
    width, one, zero, select = case
    builder = CircuitBuilder()
    s = builder.evaluator_input(1)
    x = builder.garbler_input(width)
    y = builder.evaluator_input(width)
    builder.output(builder.mux(s[0], x, y))
    circuit = builder.build()
    out = circuit.evaluate(to_bits(one, width), [select, *to_bits(zero, width)])
    assert from_bits(out, signed=False) == (one if select else zero)
    assert circuit.and_gates == width


@st.composite
def summands(draw: st.DrawFn) -> tuple[bool, list[int], list[int]]:
    """(signed, widths, values): 1..9 words of 1..40 bits."""
    signed = draw(st.booleans())
    widths = draw(st.lists(st.integers(1, 40), min_size=1, max_size=9))
    return signed, widths, [word(draw, w, signed) for w in widths]


@given(summands())
@settings(max_examples=60)
def test_sum_never_overflows(case: tuple[bool, list[int], list[int]]) -> None:
    signed, widths, values = case
    builder = CircuitBuilder()
    words = [builder.evaluator_input(w) for w in widths]
    total = builder.sum(words, signed=signed)
    builder.output(total)
    circuit = builder.build()
    bits = [bit for v, w in zip(values, widths, strict=True) for bit in to_bits(v, w)]
    out = circuit.evaluate([], bits)
    assert len(out) == max(widths) + math.ceil(math.log2(len(widths)))
    assert from_bits(out, signed=signed) == sum(values)
    n = len(widths)
    assert circuit.and_gates <= (n - 1) * (max(widths) + math.ceil(math.log2(n)) - 1)


@given(st.integers(0, 1), st.integers(0, 1))
def test_single_gates(a: int, b: int) -> None:
    builder = CircuitBuilder()
    x, y = builder.evaluator_input(1)[0], builder.garbler_input(1)[0]
    for wire in (builder.xor(x, y), builder.and_(x, y), builder.or_(x, y), builder.not_(x)):
        builder.output(wire)
    assert builder.build().evaluate([b], [a]) == [a ^ b, a & b, a | b, 1 - a]


@given(
    st.integers(1, 64).flatmap(lambda w: st.tuples(st.just(w), st.integers(0, (1 << w) - 1))), st.booleans()
)
def test_extensions(case: tuple[int, int], signed: bool) -> None:
    width, value = case
    builder = CircuitBuilder()
    x = builder.evaluator_input(width)
    builder.output(builder.sign_extend(x, width + 7))
    builder.output(builder.zero_extend(x, width + 7))
    out = builder.build().evaluate([], to_bits(value, width))
    as_signed = from_bits(to_bits(value, width), signed=True)
    assert from_bits(out[: width + 7], signed=True) == as_signed
    assert from_bits(out[width + 7 :], signed=False) == value


@given(
    st.integers(1, 64).flatmap(lambda w: st.tuples(st.just(w), st.integers(-(1 << (w - 1)), (1 << w) - 1)))
)
def test_constant_is_public_and_free(case: tuple[int, int]) -> None:
    width, value = case
    builder = CircuitBuilder()
    k = builder.constant(value, width)
    assert set(k) <= {ZERO, ONE}
    builder.output(k)
    circuit = builder.build()
    assert circuit.and_gates == 0
    assert circuit.evaluate([], []) == to_bits(value, width)


@st.composite
def mul_operands(draw: st.DrawFn) -> tuple[int, int, int, int, bool]:
    """(width a, width b, a, b, signed) with widths 1..24 (the multiplier is quadratic)."""
    signed = draw(st.booleans())
    wa = draw(st.integers(1, 24))
    wb = draw(st.integers(1, 24))
    return wa, wb, word(draw, wa, signed), word(draw, wb, signed), signed


@given(mul_operands())
@settings(max_examples=150, deadline=None)
def test_mul_is_exact(case: tuple[int, int, int, int, bool]) -> None:
    wa, wb, a, b, signed = case
    out, _ = run_binary(wa, wb, a, b, lambda c, x, y: c.mul(x, y, signed=signed))
    assert len(out) == wa + wb
    assert from_bits(out, signed=signed) == a * b


@pytest.mark.parametrize(
    ("a", "b", "wa", "wb", "signed", "product"),
    [
        (-1, -1, 1, 1, True, 1),  # 1-bit signed: the only non-zero value is -1
        (-8, -8, 4, 4, True, 64),  # the extreme that needs every bit of the product
        (-8, 7, 4, 4, True, -56),
        (15, 15, 4, 4, False, 225),
        (3, -11, 3, 5, True, -33),
    ],
)
def test_mul_fixed_vectors(a: int, b: int, wa: int, wb: int, signed: bool, product: int) -> None:
    out, _ = run_binary(wa, wb, a, b, lambda c, x, y: c.mul(x, y, signed=signed))
    assert from_bits(out, signed=signed) == product


@pytest.mark.parametrize(("wa", "wb"), [(1, 1), (3, 5), (8, 8), (12, 10)])
def test_mul_and_count(wa: int, wb: int) -> None:
    """At most (2 len(a) - 1) len(b) AND gates; an unsigned operand zero-extended by one bit to
    enter a signed product (a relu output) costs no more than its unsigned product."""
    for signed in (False, True):
        _, circuit = run_binary(wa, wb, 0, 0, lambda c, x, y, s=signed: c.mul(x, y, signed=s))
        assert (2 * wa - 1) * wb - wb < circuit.and_gates <= (2 * wa - 1) * wb
    _, plain = run_binary(wa, wb, 0, 0, lambda c, x, y: c.mul(x, y, signed=False))
    _, mixed = run_binary(wa, wb, 0, 0, lambda c, x, y: c.mul(c.zero_extend(x, wa + 1), y, signed=True))
    assert mixed.and_gates <= plain.and_gates + wb


# ---------------------------------------------------------------- exact AND counts


@pytest.mark.parametrize("w", [1, 2, 3, 8, 34, 64])
def test_and_counts(w: int) -> None:
    """Each gadget's documented cost, on fresh inputs (nothing to fold)."""

    def ands(gadget: Callable[[CircuitBuilder, Bits, Bits], Bits | int]) -> int:
        builder = CircuitBuilder()
        x, y = builder.evaluator_input(w), builder.garbler_input(w)
        builder.output(gadget(builder, x, y))
        return builder.build().and_gates

    assert ands(lambda c, x, y: c.add(x, y)) == w - 1
    assert ands(lambda c, x, y: c.add(x, y, signed=True)) == w - 1
    assert ands(lambda c, x, y: c.add_wide(x, y)) == w
    assert ands(lambda c, x, y: c.add_wide(x, y, signed=True)) == w
    assert ands(lambda c, x, y: c.sub(x, y)) == w - 1
    for signed in (False, True):
        assert ands(lambda c, x, y, s=signed: c.less_than(x, y, signed=s)) == w
        assert ands(lambda c, x, y, s=signed: c.less_equal(x, y, signed=s)) == w
    assert ands(lambda c, x, y: c.mux(x[0], x, y)) <= w  # bit 0 folds: x0 ? x0 : y0 = x0 OR y0
    assert ands(lambda c, x, y: c.mux(c.evaluator_input(1)[0], x, y)) == w
    assert ands(lambda c, x, y: c.or_(x[0], y[0])) == 1


def test_constants_fold_away() -> None:
    builder = CircuitBuilder()
    x = builder.evaluator_input(8)
    a = x[0]
    assert builder.and_(a, ZERO) == ZERO
    assert builder.and_(a, ONE) == a
    assert builder.xor(a, ZERO) == a
    assert builder.xor(a, a) == ZERO
    assert builder.and_(a, a) == a
    assert builder.not_(builder.not_(a)) == a
    assert builder.xor(ONE, a) == builder.not_(a)
    assert builder.and_(a, builder.not_(a)) == ZERO
    assert builder.xor(a, builder.not_(a)) == ONE
    assert builder.and_(x[1], x[2]) == builder.and_(x[2], x[1])  # shared, not duplicated
    # A comparison with a public constant still costs one AND per bit at most; adding 0 is free.
    builder.output(builder.add(x, builder.constant(0, 8)))
    assert builder.build().and_gates == 0
    builder = CircuitBuilder()
    y = builder.evaluator_input(16)
    builder.output(builder.less_than(y, builder.constant(1000, 16), signed=False))
    assert builder.build().and_gates <= 16


def test_unused_gates_are_pruned() -> None:
    builder = CircuitBuilder()
    x, y = builder.evaluator_input(32), builder.garbler_input(32)
    builder.add(x, y)  # never output
    builder.mux(x[0], x, y)
    builder.output(builder.less_than(x, y, signed=True))
    assert builder.count_and_gates() > 32
    assert builder.build().and_gates == 32


# ---------------------------------------------------------------- the schedule


@st.composite
def random_circuit(draw: st.DrawFn) -> CircuitBuilder:
    """A random mix of single gates and word gadgets over garbler and evaluator inputs."""
    builder = CircuitBuilder()
    wires = [ZERO, ONE]
    words: list[Bits] = []
    for _ in range(draw(st.integers(1, 3))):
        for who in (builder.garbler_input, builder.evaluator_input):
            w = who(draw(st.integers(1, 8)))
            words.append(w)
            wires.extend(w)
    for _ in range(draw(st.integers(1, 25))):
        op = draw(st.integers(0, 7))
        if op < 4:
            a, b = draw(st.sampled_from(wires)), draw(st.sampled_from(wires))
            gate = (builder.xor, builder.and_, builder.or_, lambda p, _q: builder.not_(p))[op]
            wires.append(gate(a, b))
        else:
            x, y = draw(st.sampled_from(words)), draw(st.sampled_from(words))
            signed = draw(st.booleans())
            if op == 4:
                words.append(builder.add_wide(x, y, signed=signed))
            elif op == 5:
                words.append(builder.sub(x, y, signed=signed))
            elif op == 6:
                wires.append(builder.less_than(x, y, signed=signed))
            else:
                width = max(len(x), len(y))
                words.append(
                    builder.mux(
                        draw(st.sampled_from(wires)),
                        builder.zero_extend(x, width),
                        builder.zero_extend(y, width),
                    )
                )
            if op != 6:
                wires.extend(words[-1])
    for _ in range(draw(st.integers(1, 6))):
        builder.output(draw(st.sampled_from(wires)))
    return builder


def check_schedule(circuit: Circuit) -> None:
    """Every gate reads only wires written by an earlier batch (or inputs); batches cover all gates."""
    first = circuit.first_gate_wire
    written = np.zeros(circuit.wires, dtype=bool)
    written[:first] = True
    covered = 0
    levels = 0
    ands = 0
    for is_and, start, stop in circuit.batches.tolist():
        assert start == covered and stop > start
        assert written[circuit.gate_a[start:stop]].all()
        assert written[circuit.gate_b[start:stop]].all()
        written[first + start : first + stop] = True
        covered = stop
        if is_and:
            assert circuit.and_offsets[levels] == ands
            # One kind per AND batch (what the garbler knows of its inputs), as garbling needs.
            assert len(set(circuit.and_kinds[ands : ands + stop - start].tolist())) == 1
            levels += 1
            ands += stop - start
    assert covered == len(circuit.gate_a)
    assert (levels, ands) == (len(circuit.and_offsets), circuit.and_gates)
    assert circuit.levels <= levels
    assert circuit.xor_gates == len(circuit.gate_a) - ands
    assert written[circuit.output_wires].all()


@given(random_circuit())
@settings(max_examples=80)
def test_random_circuits_are_scheduled_soundly(builder: CircuitBuilder) -> None:
    check_schedule(builder.build())


def test_batches_have_no_internal_dependency_on_a_deep_circuit() -> None:
    builder = CircuitBuilder()
    words = [builder.evaluator_input(20) for _ in range(9)]
    total = builder.sum(words, signed=True)
    builder.output(builder.less_than(total, builder.garbler_input(len(total)), signed=True))
    circuit = builder.build()
    check_schedule(circuit)
    # Ripple adders pipeline: depth grows by bits plus tree levels, not bits times levels.
    assert circuit.levels <= 20 + 4 + len(total) + 4


def test_circuit_repr_shows_sizes_only() -> None:
    builder = CircuitBuilder()
    builder.output(builder.and_(builder.garbler_input(1)[0], builder.evaluator_input(1)[0]))
    text = repr(builder.build())
    assert "and_gates=1" in text and "garbler_input_bits=1" in text


# ---------------------------------------------------------------- refusals


def test_refusals() -> None:
    builder = CircuitBuilder()
    with pytest.raises(InvalidInputError, match="width"):
        builder.garbler_input(0)
    with pytest.raises(InvalidInputError, match="at least one output"):
        builder.build()
    x = builder.evaluator_input(4)
    with pytest.raises(InvalidInputError, match="differ in width"):
        builder.mux(x[0], x, x[:2])
    with pytest.raises(InvalidInputError, match="unknown wire"):
        builder.xor(x[0], 10_000)
    with pytest.raises(InvalidInputError, match="cannot extend"):
        builder.zero_extend(x, 2)
    with pytest.raises(InvalidInputError, match="no values"):
        builder.sum([], signed=False)
    builder.output(x)
    circuit = builder.build()
    with pytest.raises(InvalidInputError, match="expected 4 bits"):
        circuit.evaluate([], [0, 1, 0])
    with pytest.raises(InvalidInputError, match="expected 0 bits"):
        circuit.evaluate([1], [0, 1, 0, 1])
    with pytest.raises(InvalidInputError, match="0 or 1"):
        circuit.evaluate([], [0, 1, 2, 0])


# ---------------------------------------------------------------- log-depth comparison


@pytest.mark.parametrize("width", [1, 2, 3, 5])
def test_greater_equal_exhaustive(width: int) -> None:
    builder = CircuitBuilder()
    a, b = builder.evaluator_input(width), builder.garbler_input(width)
    builder.output(builder.greater_equal(a, b))
    circuit = builder.build()
    for x in range(1 << width):
        for y in range(1 << width):
            assert circuit.evaluate(to_bits(y, width), to_bits(x, width)) == [int(x >= y)], (x, y)


@given(
    st.integers(2, 70).flatmap(
        lambda w: st.tuples(st.just(w), st.integers(0, 2**w - 1), st.integers(0, 2**w - 1))
    )
)
@settings(max_examples=200)
def test_greater_equal_property_and_depth(case: tuple[int, int, int]) -> None:
    """[a >= b] on random words, ties included, in AND depth 1 + ceil(log2 width)."""
    width, x, y = case
    builder = CircuitBuilder()
    a, b = builder.evaluator_input(width), builder.garbler_input(width)
    builder.output(builder.greater_equal(a, b))
    builder.output(builder.greater_equal(a, a))  # equal words: always 1
    circuit = builder.build()
    assert circuit.evaluate(to_bits(y, width), to_bits(x, width)) == [int(x >= y), 1]
    assert circuit.levels <= 1 + (width - 1).bit_length()
