"""A second half-gates garbler and evaluator, written from the paper and blindscore's documented layout.

Sources: Zahur, Rosulek, Evans, "Two Halves Make a Whole", EUROCRYPT 2015 (half gates, figure 2);
Guo, Katz, Wang, Yu, IEEE S&P 2020 (the tweakable circular correlation-robust hash from fixed-key
AES); and the conventions stated in the docstrings of ``blindscore/crypto/halfgates.py`` and
``blindscore/crypto/circuit.py`` (wire numbering, hard-wired garbler inputs, table layout, tweaks,
decode bits and output tags). Nothing here imports blindscore (``tests/test_vectors_halfgates.py``
checks that): the circuit arrives as plain data, labels are Python ints (16-byte big-endian blocks),
one gate at a time, where the library works on numpy arrays a batch at a time.

:class:`Variant` breaks one convention on purpose, for the negative controls.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

DOMAIN = b"blindscore/halfgates/v1"
MASK64 = (1 << 64) - 1
TAG_BYTES = 8


@dataclass(frozen=True)
class Gate:
    """Gate k of a circuit: ``wire[a] AND wire[b]`` (``is_and``) or ``wire[a] XOR wire[b]``."""

    is_and: bool
    a: int
    b: int


@dataclass(frozen=True)
class PlainCircuit:
    """Wire 0 is the constant 0, wire 1 the constant 1, then the garbler's inputs, the evaluator's
    inputs, and gate k writes wire ``2 + garbler_inputs + evaluator_inputs + k``."""

    garbler_inputs: int
    evaluator_inputs: int
    gates: tuple[Gate, ...]
    outputs: tuple[int, ...]

    @property
    def first_gate_wire(self) -> int:
        return 2 + self.garbler_inputs + self.evaluator_inputs

    @property
    def and_gates(self) -> int:
        return sum(g.is_and for g in self.gates)


@dataclass(frozen=True)
class Transcript:
    """What the garbler sends: the same four fields as blindscore's ``GarbledCircuit``."""

    garbling_id: bytes
    tables: bytes
    decode: bytes
    output_tags: bytes


@dataclass(frozen=True)
class Variant:
    """Deliberate breaks for negative controls; the default breaks nothing."""

    #: Use NOT lsb as the point-and-permute bit (garbler, evaluator and decode alike).
    flip_permute: bool = False
    #: Added to every tweak of the gate hashes.
    tweak_shift: int = 0


CORRECT = Variant()


class Tccr:
    """H(x, i) = pi(sigma(x) ^ i) ^ sigma(x) ^ i, sigma(xL || xR) = (xL ^ xR) || xL, pi = AES-128
    under SHA-256(DOMAIN || garbling_id)[:16]; blocks and tweaks are 128-bit big-endian ints."""

    def __init__(self, garbling_id: bytes) -> None:
        key = hashlib.sha256(DOMAIN + garbling_id).digest()[:16]
        self._encrypt = Cipher(algorithms.AES(key), modes.ECB()).encryptor().update

    def __call__(self, x: int, tweak: int) -> int:
        left, right = x >> 64, x & MASK64
        s = (((left ^ right) << 64) | left) ^ tweak
        return int.from_bytes(self._encrypt(s.to_bytes(16, "big")), "big") ^ s


def plain_evaluate(
    circuit: PlainCircuit, garbler_bits: Sequence[int], evaluator_bits: Sequence[int]
) -> list[int]:
    """The circuit's function on bits, gate by gate."""
    values = [0, 1, *garbler_bits, *evaluator_bits]
    for gate in circuit.gates:
        x, y = values[gate.a], values[gate.b]
        values.append(x & y if gate.is_and else x ^ y)
    return [values[w] for w in circuit.outputs]


def garbler_known(circuit: PlainCircuit) -> list[bool]:
    """Per wire: whether its value follows from the constants and the garbler's inputs alone."""
    known = [True] * (2 + circuit.garbler_inputs) + [False] * circuit.evaluator_inputs
    for gate in circuit.gates:
        known.append(known[gate.a] and known[gate.b])
    return known


def _permute(label: int, variant: Variant) -> int:
    return (label & 1) ^ int(variant.flip_permute)


def _pack_bits(bits: Sequence[int]) -> bytes:
    """Most significant bit of byte 0 first, zero padding (numpy.packbits order)."""
    out = bytearray((len(bits) + 7) // 8)
    for k, bit in enumerate(bits):
        out[k // 8] |= bit << (7 - k % 8)
    return bytes(out)


def _unpack_bits(data: bytes, count: int) -> list[int]:
    return [(data[k // 8] >> (7 - k % 8)) & 1 for k in range(count)]


def _block(x: int) -> bytes:
    return x.to_bytes(16, "big")


def garble(
    circuit: PlainCircuit,
    garbler_bits: Sequence[int],
    delta: int,
    evaluator_zero_labels: Sequence[int],
    garbling_id: bytes,
    variant: Variant = CORRECT,
) -> Transcript:
    """Garble with the given Delta (lsb 1), the evaluator's input 0-labels and the garbling id."""
    if not delta & 1:
        raise ValueError("Delta needs lsb 1")
    if len(garbler_bits) != circuit.garbler_inputs or len(evaluator_zero_labels) != circuit.evaluator_inputs:
        raise ValueError("input sizes do not match the circuit")
    hash_ = Tccr(garbling_id)
    shift = variant.tweak_shift
    known = garbler_known(circuit)
    # 0-labels: constant 0 -> 0, constant 1 -> Delta, garbler bit g -> g Delta (hard-wired: the
    # evaluator's active label is 0 whatever g is), evaluator inputs as given.
    zero = [0, delta, *(delta if g else 0 for g in garbler_bits), *evaluator_zero_labels]
    value: dict[int, int] = {0: 0, 1: 1}
    value.update({2 + i: g for i, g in enumerate(garbler_bits)})
    tables: list[int] = []
    j = 0
    for k, gate in enumerate(circuit.gates):
        wire = circuit.first_gate_wire + k
        a0, b0 = zero[gate.a], zero[gate.b]
        if not gate.is_and:
            zero.append(a0 ^ b0)  # free XOR
            if known[wire]:
                value[wire] = value[gate.a] ^ value[gate.b]
            continue
        ka, kb = known[gate.a], known[gate.b]
        if ka and kb:
            v = value[gate.a] & value[gate.b]
            value[wire] = v
            zero.append(delta if v else 0)
        elif ka or kb:
            # The garbler half gate alone: x AND v with v the garbler's: T = H(X0) ^ H(X1) ^ v Delta,
            # output 0-label H(X0) ^ p_x T (the paper's W_G with p_b replaced by the known bit).
            x0, v = (b0, value[gate.a]) if ka else (a0, value[gate.b])
            tweak = 2 * j + shift
            h0, h1 = hash_(x0, tweak), hash_(x0 ^ delta, tweak)
            t = h0 ^ h1 ^ (delta if v else 0)
            tables.append(t)
            zero.append(h0 ^ (t if _permute(x0, variant) else 0))
        else:
            pa, pb = _permute(a0, variant), _permute(b0, variant)
            tg_tweak, te_tweak = 2 * j + shift, 2 * j + 1 + shift
            ha0, ha1 = hash_(a0, tg_tweak), hash_(a0 ^ delta, tg_tweak)
            hb0, hb1 = hash_(b0, te_tweak), hash_(b0 ^ delta, te_tweak)
            t_g = ha0 ^ ha1 ^ (delta if pb else 0)
            w_g = ha0 ^ (t_g if pa else 0)
            t_e = hb0 ^ hb1 ^ a0
            w_e = hb0 ^ ((t_e ^ a0) if pb else 0)
            tables += [t_g, t_e]
            zero.append(w_g ^ w_e)
        j += 1

    outs = [zero[w] for w in circuit.outputs]
    first_tag = 2 * j
    tags = b"".join(
        _block(hash_(w, first_tag + k))[:TAG_BYTES] + _block(hash_(w ^ delta, first_tag + k))[:TAG_BYTES]
        for k, w in enumerate(outs)
    )
    return Transcript(
        garbling_id=garbling_id,
        tables=b"".join(_block(t) for t in tables),
        decode=_pack_bits([_permute(w, variant) for w in outs]),
        output_tags=tags,
    )


class TagMismatch(Exception):
    """An output label that is not one the garbler made."""


def evaluate(
    circuit: PlainCircuit,
    transcript: Transcript,
    evaluator_labels: Sequence[int],
    variant: Variant = CORRECT,
) -> list[int]:
    """The evaluator: output bits from the transcript and the active labels of its input wires."""
    hash_ = Tccr(transcript.garbling_id)
    shift = variant.tweak_shift
    known = garbler_known(circuit)
    entries = [
        int.from_bytes(transcript.tables[i : i + 16], "big") for i in range(0, len(transcript.tables), 16)
    ]
    active = [0] * (2 + circuit.garbler_inputs) + list(evaluator_labels)
    pos = 0
    j = 0
    for k, gate in enumerate(circuit.gates):
        wire = circuit.first_gate_wire + k
        x, y = active[gate.a], active[gate.b]
        if not gate.is_and:
            active.append(x ^ y)
            continue
        if known[wire]:
            active.append(0)
        elif known[gate.a] or known[gate.b]:
            z = y if known[gate.a] else x
            t = entries[pos]
            pos += 1
            active.append(hash_(z, 2 * j + shift) ^ (t if _permute(z, variant) else 0))
        else:
            t_g, t_e = entries[pos], entries[pos + 1]
            pos += 2
            w_g = hash_(x, 2 * j + shift) ^ (t_g if _permute(x, variant) else 0)
            w_e = hash_(y, 2 * j + 1 + shift) ^ ((t_e ^ x) if _permute(y, variant) else 0)
            active.append(w_g ^ w_e)
        j += 1
    if pos != len(entries):
        raise ValueError(f"the tables hold {len(entries)} entries, the circuit used {pos}")

    outs = [active[w] for w in circuit.outputs]
    decode = _unpack_bits(transcript.decode, len(outs))
    bits = [_permute(w, variant) ^ d for w, d in zip(outs, decode, strict=True)]
    for k, (w, bit) in enumerate(zip(outs, bits, strict=True)):
        tag = transcript.output_tags[2 * TAG_BYTES * k + TAG_BYTES * bit :][:TAG_BYTES]
        if _block(hash_(w, 2 * j + k))[:TAG_BYTES] != tag:
            raise TagMismatch(f"output {k}: the label does not hash to the tag of bit {bit}")
    return bits
