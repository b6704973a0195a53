"""Boolean circuits for garbling: a word-level builder and a levelled, vectorisable gate list.

This module holds no cryptography. A :class:`CircuitBuilder` turns word operations (adders,
comparators, multiplexers, balanced sums) into XOR and AND gates; :meth:`CircuitBuilder.build`
prunes what no output needs and schedules the gates into a :class:`Circuit` whose gates are
grouped into batches with no dependency inside a batch, so that a garbler (see
:mod:`blindscore.crypto.halfgates`) can hash all AND gates of one batch in one AES call.

Cost model (half gates with free XOR): XOR and NOT cost nothing, an AND gate costs two
ciphertexts. The builder keeps AND gates few:

* NOT is an XOR with the constant-1 wire, so the circuit has two gate kinds only;
* public constants fold at build time: ``x AND 0 = 0``, ``x AND 1 = x``, ``x XOR 0 = x``,
  ``x XOR 1 = NOT x``, ``x AND x = x``, ``x XOR x = 0``, ``x AND NOT x = 0``, ``NOT NOT x = x``;
* identical gates are shared (structural hashing), and gates no output depends on are dropped.

Wires: 0 is the constant 0, 1 the constant 1 (public: they are visible in the topology). Then come
the garbler's input bits in the order they were declared, the evaluator's input bits likewise,
and then one wire per gate in schedule order (gate k writes wire ``first_gate_wire + k``).
Words are :class:`Bits`, least significant bit first, two's complement where signed.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import overload

import numpy as np
import numpy.typing as npt

from blindscore.errors import InvalidInputError

ZERO = 0
ONE = 1
#: A generous bound that keeps the wire ids in int32 and a garbling in memory.
MAX_WIRES = 1 << 28

_XOR = 0
_AND = 1
_GARBLER = 2
_EVALUATOR = 3
_CONST = 4

_I32 = npt.NDArray[np.int32]


class Bits(Sequence[int]):
    """An immutable word: wire ids, least significant bit first."""

    __slots__ = ("_wires",)
    _wires: tuple[int, ...]

    def __init__(self, wires: Sequence[int] = ()) -> None:
        object.__setattr__(self, "_wires", tuple(operator.index(w) for w in wires))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Bits is immutable")

    def __len__(self) -> int:
        return len(self._wires)

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> Bits: ...
    def __getitem__(self, index: int | slice) -> int | Bits:
        if isinstance(index, slice):
            return Bits(self._wires[index])
        return self._wires[index]

    def __iter__(self) -> Iterator[int]:
        return iter(self._wires)

    def __add__(self, other: Sequence[int]) -> Bits:
        """Concatenation: ``low + high`` puts ``other`` above ``self``."""
        return Bits(self._wires + tuple(other))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bits) and self._wires == other._wires

    def __hash__(self) -> int:
        return hash(self._wires)

    def __repr__(self) -> str:
        return f"Bits({list(self._wires)})"


def to_bits(value: int, width: int) -> list[int]:
    """``value`` mod 2^width as ``width`` bits, least significant first (two's complement)."""
    if width < 0:
        raise InvalidInputError(f"width must be >= 0, got {width}")
    v = operator.index(value) % (1 << width) if width else 0
    return [(v >> i) & 1 for i in range(width)]


def from_bits(bits: Sequence[int], *, signed: bool) -> int:
    """The integer a word of bits (least significant first) stands for."""
    v = sum((int(b) & 1) << i for i, b in enumerate(bits))
    if signed and bits and int(bits[-1]) & 1:
        v -= 1 << len(bits)
    return v


@dataclass(frozen=True, eq=False)
class Circuit:
    """A scheduled circuit: gate arrays in an order where no batch depends on itself.

    Gate k computes ``wire[gate_a[k]] (XOR or AND) wire[gate_b[k]]`` into wire
    ``first_gate_wire + k``. ``batches`` rows are ``(is_and, start, stop)`` over gate indices;
    batches run in order, the gates of one batch are independent of each other. AND gates are
    numbered in gate order (the garbled tables follow that numbering); the AND batches are the
    circuit's AND-depth levels.
    """

    garbler_input_bits: int
    evaluator_input_bits: int
    gate_a: _I32
    gate_b: _I32
    #: (is_and, start, stop) per batch, int64, shape (n, 3).
    batches: npt.NDArray[np.int64]
    #: Wire ids of the declared outputs, in order.
    output_wires: _I32
    and_gates: int
    xor_gates: int
    levels: int
    #: Per AND batch, the index of its first AND gate (the table offset, in gates). The AND gates
    #: of one batch are of one kind (:attr:`and_kinds`).
    and_offsets: tuple[int, ...] = field(repr=False)

    @property
    def first_gate_wire(self) -> int:
        return 2 + self.garbler_input_bits + self.evaluator_input_bits

    @property
    def wires(self) -> int:
        return self.first_gate_wire + len(self.gate_a)

    @property
    def outputs(self) -> int:
        return len(self.output_wires)

    def __repr__(self) -> str:
        return (
            f"Circuit(garbler_input_bits={self.garbler_input_bits}, "
            f"evaluator_input_bits={self.evaluator_input_bits}, and_gates={self.and_gates}, "
            f"xor_gates={self.xor_gates}, levels={self.levels}, outputs={self.outputs})"
        )

    @functools.cached_property
    def garbler_known(self) -> npt.NDArray[np.bool_]:
        """Per wire: whether the garbler knows its value, i.e. it follows from the constants and
        the garbler's inputs alone (through any gates). Public: read off the topology."""
        known = np.zeros(self.wires, dtype=bool)
        known[: 2 + self.garbler_input_bits] = True
        base = self.first_gate_wire
        for _, start, stop in self.batches.tolist():
            a, b = self.gate_a[start:stop], self.gate_b[start:stop]
            known[base + start : base + stop] = known[a] & known[b]
        known.flags.writeable = False
        return known

    @functools.cached_property
    def known_gates(self) -> tuple[npt.NDArray[np.intp], ...]:
        """Per batch, the gates (indices into the gate arrays) of which the garbler knows both
        inputs: the only ones whose plain values it must compute while garbling."""
        known = self.garbler_known
        base = self.first_gate_wire
        out = []
        for _, start, stop in self.batches.tolist():
            idx = np.flatnonzero(known[base + start : base + stop]) + start
            idx.flags.writeable = False
            out.append(idx)
        return tuple(out)

    @functools.cached_property
    def and_kinds(self) -> npt.NDArray[np.int8]:
        """Per AND gate (AND numbering): 0 if the garbler knows neither input, 1 if it knows input
        a only, 2 if b only, 3 if both. Garbling costs three 8-byte halves and 5 control bits
        (three halves), one 16-byte entry, one, and nothing respectively
        (:mod:`blindscore.crypto.halfgates`)."""
        kinds = np.empty(self.and_gates, dtype=np.int8)
        known = self.garbler_known
        offsets = iter(self.and_offsets)
        for is_and, start, stop in self.batches.tolist():
            if is_and:
                j0 = next(offsets)
                ka = known[self.gate_a[start:stop]].astype(np.int8)
                kb = known[self.gate_b[start:stop]].astype(np.int8)
                kinds[j0 : j0 + stop - start] = ka + 2 * kb
        kinds.flags.writeable = False
        return kinds

    @functools.cached_property
    def table_offsets(self) -> npt.NDArray[np.int64]:
        """Per AND gate, its first 8-byte word in the garbled tables (3 for a gate of two secret
        inputs, 2 for one the garbler knows one input of, none for both); then the total."""
        sizes = np.array([3, 2, 2, 0], dtype=np.int64)[self.and_kinds]
        offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        offsets.flags.writeable = False
        return offsets

    @functools.cached_property
    def control_offsets(self) -> npt.NDArray[np.int64]:
        """Per AND gate, how many gates of two secret inputs come before it (the index of its
        control bits, when it is one); then their total."""
        full = (self.and_kinds == 0).astype(np.int64)
        offsets = np.concatenate(([0], np.cumsum(full))).astype(np.int64)
        offsets.flags.writeable = False
        return offsets

    def evaluate(self, garbler_bits: Sequence[int], evaluator_bits: Sequence[int]) -> list[int]:
        """Plaintext reference evaluation: the output bits, in declaration order."""
        g = _check_bits(garbler_bits, self.garbler_input_bits, "garbler")
        e = _check_bits(evaluator_bits, self.evaluator_input_bits, "evaluator")
        values = np.empty(self.wires, dtype=np.uint8)
        values[0], values[1] = 0, 1
        values[2 : 2 + len(g)] = g
        values[2 + len(g) : self.first_gate_wire] = e
        base = self.first_gate_wire
        for is_and, start, stop in self.batches.tolist():
            a = values[self.gate_a[start:stop]]
            b = values[self.gate_b[start:stop]]
            values[base + start : base + stop] = (a & b) if is_and else (a ^ b)
        return [int(v) for v in values[self.output_wires]]


def _check_bits(bits: Sequence[int], expected: int, who: str) -> npt.NDArray[np.uint8]:
    if len(bits) != expected:
        raise InvalidInputError(f"{who} input: expected {expected} bits, got {len(bits)}")
    arr = np.fromiter((operator.index(b) for b in bits), dtype=np.int64, count=expected)
    if expected and (arr.min() < 0 or arr.max() > 1):
        raise InvalidInputError(f"{who} input: every bit must be 0 or 1")
    return arr.astype(np.uint8)


class CircuitBuilder:
    """Builds a :class:`Circuit` from word operations; every gadget states its AND-gate count.

    Counts are upper bounds for the general case: constants, repeated wires and unused results
    fold away at build time. ``w`` below is the width of the (extended) operands.
    """

    def __init__(self) -> None:
        # Per builder wire: kind and operands (for gates) or input position.
        self._kind: list[int] = [_CONST, _CONST]
        self._a: list[int] = [0, 0]
        self._b: list[int] = [0, 0]
        self._garbler: list[int] = []
        self._evaluator: list[int] = []
        self._outputs: list[int] = []
        self._hashed: dict[tuple[int, int, int], int] = {}
        self._negation: dict[int, int] = {}

    # ------------------------------------------------------------------ wires and inputs

    def _new(self, kind: int, a: int = 0, b: int = 0) -> int:
        wire = len(self._kind)
        if wire >= MAX_WIRES:
            raise InvalidInputError(f"circuit too large: more than {MAX_WIRES} wires")
        self._kind.append(kind)
        self._a.append(a)
        self._b.append(b)
        return wire

    def _check_wire(self, wire: int) -> int:
        w = operator.index(wire)
        if not 0 <= w < len(self._kind):
            raise InvalidInputError(f"unknown wire {w}")
        return w

    def garbler_input(self, width: int) -> Bits:
        """``width`` fresh secret input bits of the garbler (thresholds, leaf values, masks)."""
        wires = [self._new(_GARBLER) for _ in range(_check_width(width))]
        self._garbler.extend(wires)
        return Bits(wires)

    def evaluator_input(self, width: int) -> Bits:
        """``width`` fresh input bits of the evaluator, whose labels it obtains by OT."""
        wires = [self._new(_EVALUATOR) for _ in range(_check_width(width))]
        self._evaluator.extend(wires)
        return Bits(wires)

    def constant(self, value: int, width: int) -> Bits:
        """A PUBLIC constant (``value`` mod 2^width): visible in the topology, folded into gates. 0 AND."""
        return Bits([ONE if b else ZERO for b in to_bits(value, _check_width(width))])

    # ------------------------------------------------------------------ single gates

    def xor(self, a: int, b: int) -> int:
        """a XOR b: free."""
        a, b = self._check_wire(a), self._check_wire(b)
        if a > b:
            a, b = b, a
        if a == b:
            return ZERO
        if a == ZERO:
            return b
        if a == ONE:
            return self.not_(b)
        if self._negation.get(a) == b:
            return ONE
        key = (_XOR, a, b)
        out = self._hashed.get(key)
        if out is None:
            out = self._hashed[key] = self._new(_XOR, a, b)
        return out

    def not_(self, a: int) -> int:
        """NOT a = a XOR 1: free."""
        a = self._check_wire(a)
        if a <= ONE:
            return ONE - a
        out = self._negation.get(a)
        if out is None:
            out = self._new(_XOR, ONE, a)
            self._negation[a] = out
            self._negation[out] = a
        return out

    def and_(self, a: int, b: int) -> int:
        """a AND b: one AND gate, none when an operand is constant or a == b or a == NOT b."""
        a, b = self._check_wire(a), self._check_wire(b)
        if a > b:
            a, b = b, a
        if a == ZERO:
            return ZERO
        if a in (ONE, b):
            return b
        if self._negation.get(a) == b:
            return ZERO
        key = (_AND, a, b)
        out = self._hashed.get(key)
        if out is None:
            out = self._hashed[key] = self._new(_AND, a, b)
        return out

    def or_(self, a: int, b: int) -> int:
        """a OR b = a XOR b XOR (a AND b): one AND gate."""
        return self.xor(self.xor(a, b), self.and_(a, b))

    # ------------------------------------------------------------------ words

    def zero_extend(self, a: Bits, width: int) -> Bits:
        """``a`` padded with constant 0 bits to ``width`` (>= len(a)). 0 AND."""
        return self._extend(a, width, ZERO)

    def sign_extend(self, a: Bits, width: int) -> Bits:
        """``a`` padded with copies of its top bit to ``width`` (>= len(a)). 0 AND."""
        if not len(a):
            raise InvalidInputError("cannot sign-extend an empty word")
        return self._extend(a, width, a[-1])

    def _extend(self, a: Bits, width: int, pad: int) -> Bits:
        if width < len(a):
            raise InvalidInputError(f"cannot extend a {len(a)}-bit word to {width} bits")
        return a + [pad] * (width - len(a))

    def _pair(self, a: Bits, b: Bits, width: int, signed: bool) -> tuple[Bits, Bits]:
        if not len(a) or not len(b):
            raise InvalidInputError("operands must have at least one bit")
        ext = self.sign_extend if signed else self.zero_extend
        return ext(a, width), ext(b, width)

    def _ripple(self, a: Bits, b: Bits, carry: int, keep_carry: bool) -> Bits:
        """a + b + carry over len(a) == len(b) bits; the carry chain costs one AND per bit.

        carry_{i+1} = MAJ(a_i, b_i, c_i) = c_i XOR ((a_i XOR c_i) AND (b_i XOR c_i)).
        """
        out: list[int] = []
        c = carry
        n = len(a)
        for i in range(n):
            ai, bi = a[i], b[i]
            out.append(self.xor(self.xor(ai, bi), c))
            if i < n - 1 or keep_carry:
                c = self.xor(c, self.and_(self.xor(ai, c), self.xor(bi, c)))
        if keep_carry:
            out.append(c)
        return Bits(out)

    def add(self, a: Bits, b: Bits, *, signed: bool = False) -> Bits:
        """(a + b) mod 2^w, w = max(len(a), len(b)); the shorter operand is sign-extended when
        ``signed``, else zero-extended. w - 1 AND gates (the top carry is not needed)."""
        w = max(len(a), len(b))
        x, y = self._pair(a, b, w, signed)
        return self._ripple(x, y, ZERO, keep_carry=False)

    def add_wide(self, a: Bits, b: Bits, *, signed: bool = False) -> Bits:
        """a + b exactly, in w + 1 bits (w = max(len(a), len(b))). w AND gates."""
        w = max(len(a), len(b))
        if signed:
            x, y = self._pair(a, b, w + 1, True)
            return self._ripple(x, y, ZERO, keep_carry=False)
        x, y = self._pair(a, b, w, False)
        return self._ripple(x, y, ZERO, keep_carry=True)

    def sub(self, a: Bits, b: Bits, *, signed: bool = False) -> Bits:
        """(a - b) mod 2^w = a + NOT b + 1, w = max(len(a), len(b)). w - 1 AND gates."""
        w = max(len(a), len(b))
        x, y = self._pair(a, b, w, signed)
        return self._ripple(x, Bits([self.not_(v) for v in y]), ONE, keep_carry=False)

    def less_than(self, a: Bits, b: Bits, *, signed: bool) -> int:
        """[a < b] as one wire. w AND gates (the borrow chain of a - b).

        Unsigned: a < b iff a + NOT b + 1 has no carry out of bit w - 1. Signed: flipping both
        sign bits maps two's complement order onto unsigned order (free).
        """
        w = max(len(a), len(b))
        x, y = self._pair(a, b, w, signed)
        if signed:
            x = Bits([*x[:-1], self.not_(x[-1])])
            y = Bits([*y[:-1], self.not_(y[-1])])
        c = ONE
        for ai, bi in zip(x, y, strict=True):
            nb = self.not_(bi)
            c = self.xor(c, self.and_(self.xor(ai, c), self.xor(nb, c)))
        return self.not_(c)

    def less_equal(self, a: Bits, b: Bits, *, signed: bool) -> int:
        """[a <= b] = NOT [b < a] as one wire. w AND gates."""
        return self.not_(self.less_than(b, a, signed=signed))

    def greater_equal(self, a: Bits, b: Bits) -> int:
        """[a >= b] for unsigned words of one width, in AND depth 1 + ceil(log2 width) instead of
        the ripple's width: per bit (g, e) = (a AND NOT b, NOT (a XOR b)), then pairs of adjacent
        parts combined from the top, (G, E) of a high and a low part being
        (G_h XOR (E_h AND G_l), E_h AND E_l); the result is G XOR E. About 3 AND gates per bit
        (one of them a garbler half-gate when b is the garbler's). For small circuits, where
        each AND level costs the garbler and the evaluator a round of array operations."""
        if len(a) != len(b) or not len(a):
            raise InvalidInputError("greater_equal takes two words of one non-zero width")
        level = [(self.and_(x, self.not_(y)), self.not_(self.xor(x, y))) for x, y in zip(a, b, strict=True)]
        level.reverse()  # most significant first
        while len(level) > 1:
            merged = []
            for i in range(0, len(level) - 1, 2):
                (gh, eh), (gl, el) = level[i], level[i + 1]
                merged.append((self.xor(gh, self.and_(eh, gl)), self.and_(eh, el)))
            if len(level) % 2:
                merged.append(level[-1])
            level = merged
        g, e = level[0]
        return self.xor(g, e)

    def mux(self, select: int, if_one: Bits, if_zero: Bits) -> Bits:
        """``if_one`` where select = 1, else ``if_zero``; operands of equal width w.
        w AND gates: out_i = z_i XOR (s AND (o_i XOR z_i))."""
        if len(if_one) != len(if_zero):
            raise InvalidInputError(f"mux operands differ in width: {len(if_one)} and {len(if_zero)}")
        return Bits(
            [self.xor(z, self.and_(select, self.xor(o, z))) for o, z in zip(if_one, if_zero, strict=True)]
        )

    def sum(self, values: Sequence[Bits], *, signed: bool) -> Bits:
        """The exact sum of ``values`` by a balanced tree of :meth:`add_wide` (each level adds
        a bit, so nothing overflows): width max(len) + ceil(log2(len(values))). One AND gate per
        bit of the wider operand of each addition, i.e. at most
        (n - 1) (max(len) + ceil(log2 n) - 1) for n values."""
        words = list(values)
        if not words:
            raise InvalidInputError("sum of no values")
        while len(words) > 1:
            nxt = [self.add_wide(words[i], words[i + 1], signed=signed) for i in range(0, len(words) - 1, 2)]
            if len(words) % 2:
                last = words[-1]
                # Widen the odd one out like its peers, so every word of a level has the same width.
                nxt.append((self.sign_extend if signed else self.zero_extend)(last, len(last) + 1))
            words = nxt
        return words[0]

    def mul(self, a: Bits, b: Bits, *, signed: bool = True) -> Bits:
        """a * b exactly, in len(a) + len(b) bits (two's complement when ``signed``, else unsigned).

        Shift-and-add over the bits of ``a``: row i is a_i AND b (len(b) AND gates), added into
        the running sum at bit i with a (len(b) + 1)-bit adder whose low bits are already final
        (len(b) AND gates); when signed, the top row has weight -2^(n-1) and is subtracted. At most
        (2 len(a) - 1) len(b) AND gates, about 2 len(a) len(b): put the shorter word in ``a``.
        Rows of constant bits fold away (a zero-extended operand's top row costs nothing), but
        a secret operand is still an input wire: multiplying by a garbler's secret weight costs
        the full count, since the topology must not depend on the weight's value.
        """
        n, m = len(a), len(b)
        if not n or not m:
            raise InvalidInputError("operands must have at least one bit")
        ext = self.sign_extend if signed else self.zero_extend
        out = [ZERO] * (n + m)
        for i in range(n):
            row = Bits([self.and_(a[i], bj) for bj in b])
            # Before row i the partial sum fits m + i bits, so out[i : i + m] is its exact high
            # part; after it, the sum fits m + i + 1 bits (signed or not), so an (m + 1)-bit
            # result is exact and the bits above it are never read again before being written.
            high = ext(Bits(out[i : i + m]), m + 1)
            wide_row = ext(row, m + 1)
            if signed and i == n - 1:
                new = self.sub(high, wide_row, signed=True)
            else:
                new = self.add(high, wide_row, signed=signed)
            out[i : i + m + 1] = list(new)
        return Bits(out)

    def output(self, bits: Bits | int) -> None:
        """Declare output bits (a word or one wire), appended in order."""
        wires = [bits] if isinstance(bits, int) else list(bits)
        self._outputs.extend(self._check_wire(w) for w in wires)

    # ------------------------------------------------------------------ scheduling

    def build(self) -> Circuit:
        """Prune gates no output needs, then schedule by AND depth into independent batches."""
        if not self._outputs:
            raise InvalidInputError("a circuit needs at least one output")
        kind, ga, gb = self._kind, self._a, self._b
        n = len(kind)
        live = bytearray(n)
        stack = list(self._outputs)
        while stack:
            w = stack.pop()
            if live[w]:
                continue
            live[w] = 1
            if kind[w] <= _AND:
                stack.append(ga[w])
                stack.append(gb[w])
        # AND depth per wire; XOR gates also get a sub-level within their AND depth so that
        # chains of XORs split into batches without internal dependencies. Builder wire ids are
        # already a topological order (a gate's operands exist before it).
        depth = [0] * n
        sub = [0] * n
        # Whether the garbler knows a wire's value (constants, its inputs, gates of those only).
        # The AND gates of one depth are batched by which inputs it knows (Circuit.and_kinds), so
        # each batch is garbled one way over contiguous arrays.
        known = bytearray(n)
        known[0] = known[1] = 1
        for w in self._garbler:
            known[w] = 1
        keys: list[tuple[int, int, int, int]] = []
        for w in range(2, n):
            k = kind[w]
            if k > _AND:
                continue
            a, b = ga[w], gb[w]
            da, db = depth[a], depth[b]
            known[w] = known[a] & known[b]
            if k == _AND:
                depth[w] = max(da, db) + 1
                if live[w]:
                    keys.append((depth[w], 0, known[a] + 2 * known[b], w))
            else:
                d = max(da, db)
                depth[w] = d
                s = 1 + max(
                    sub[a] if kind[a] == _XOR and da == d else 0,
                    sub[b] if kind[b] == _XOR and db == d else 0,
                )
                sub[w] = s
                if live[w]:
                    keys.append((d, 1, s, w))
        keys.sort()
        renum = np.full(n, -1, dtype=np.int64)
        renum[0], renum[1] = 0, 1
        pos = 2
        for w in self._garbler:
            renum[w] = pos
            pos += 1
        for w in self._evaluator:
            renum[w] = pos
            pos += 1
        first_gate = pos
        order = np.array([key[3] for key in keys], dtype=np.int64)
        renum[order] = np.arange(first_gate, first_gate + len(order))
        gate_a = renum[np.array(ga, dtype=np.int64)[order]].astype(np.int32)
        gate_b = renum[np.array(gb, dtype=np.int64)[order]].astype(np.int32)
        batches: list[tuple[int, int, int]] = []
        and_offsets: list[int] = []
        ands = 0
        start = 0
        for i in range(1, len(keys) + 1):
            if i == len(keys) or keys[i][:3] != keys[start][:3]:
                is_and = 1 if keys[start][1] == 0 else 0
                batches.append((is_and, start, i))
                if is_and:
                    and_offsets.append(ands)
                    ands += i - start
                start = i
        for arr in (gate_a, gate_b):
            arr.flags.writeable = False
        outputs = np.array([renum[w] for w in self._outputs], dtype=np.int32)
        outputs.flags.writeable = False
        batch_arr = np.array(batches, dtype=np.int64).reshape(-1, 3)
        batch_arr.flags.writeable = False
        return Circuit(
            garbler_input_bits=len(self._garbler),
            evaluator_input_bits=len(self._evaluator),
            gate_a=gate_a,
            gate_b=gate_b,
            batches=batch_arr,
            output_wires=outputs,
            and_gates=ands,
            xor_gates=len(order) - ands,
            levels=len({key[0] for key in keys if key[1] == 0}),
            and_offsets=tuple(and_offsets),
        )

    def count_and_gates(self) -> int:
        """AND gates created so far (before pruning): handy to measure one gadget."""
        return sum(1 for k in self._kind if k == _AND)


def _check_width(width: int) -> int:
    w = operator.index(width)
    if w < 1:
        raise InvalidInputError(f"width must be at least 1, got {w}")
    return w
