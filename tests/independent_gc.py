"""A second garbler and evaluator (three halves, half gates) from the papers and the documented layout.

Sources: Rosulek, Roy, "Three Halves Make a Whole? Beating the Half-Gates Lower Bound for Garbled
Circuits", CRYPTO 2021 (AND gates of two secret inputs, with the constants documented in
``blindscore/crypto/halfgates.py``); Zahur, Rosulek, Evans, "Two Halves Make a Whole", EUROCRYPT 2015
(the garbler half gate, figure 2); Guo, Katz, Wang, Yu, IEEE S&P 2020 (the tweakable circular
correlation-robust hash from fixed-key AES); and the conventions stated in the docstrings of
``blindscore/crypto/halfgates.py`` and ``blindscore/crypto/circuit.py`` (wire numbering, hard-wired
garbler inputs, table layout, tweaks, decode bits and output tags). Nothing here imports blindscore
(``tests/test_vectors_halfgates.py`` checks that): the circuit arrives as plain data, labels are Python
ints (16-byte big-endian blocks), one gate at a time, where the library works on numpy arrays a batch at
a time.

:class:`Variant` breaks one convention on purpose, for the negative controls.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

DOMAIN = b"blindscore/halfgates/v1"
Q_DOMAIN = b"blindscore/threehalves/q/v1"
MASK64 = (1 << 64) - 1
TAG_BYTES = 8
# Three halves: rows of S1, S2 and RP[(i, j)], bit c selecting the held half c of (A_L, A_R, B_L, B_R).
S1 = (0b0111, 0b1001)
S2 = (0b1001, 0b1110)
RP = {(0, 0): (0, 0), (0, 1): (0, 0b0010), (1, 0): (0b0100, 0), (1, 1): (0b0100, 0b0010)}


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


def _halves(x: int) -> list[int]:
    return [x >> 64, x & MASK64]


def _row(r: int, held: Sequence[int]) -> int:
    """XOR of the halves ``held`` = (A_L, A_R, B_L, B_R) that the 4-bit row r selects."""
    out = 0
    for c in range(4):
        if r >> c & 1:
            out ^= held[c]
    return out


def _rows(colour: tuple[int, int], r1: int, r2: int) -> tuple[int, int]:
    """R = RP[colour] ^ r1 S1 ^ r2 S2, as its two rows."""
    base = RP[colour]
    return tuple(base[k] ^ (S1[k] if r1 else 0) ^ (S2[k] if r2 else 0) for k in (0, 1))  # type: ignore[return-value]


def control_randomness(delta: int, garbling_id: bytes, count: int) -> list[tuple[int, int]]:
    """The garbler's two bits q per gate of two secret inputs: AES-128-CTR (counter block 0, then
    1, ...) under SHA-256(Q_DOMAIN || Delta || garbling_id)[:16] over zero bytes, bits msb first."""
    key = hashlib.sha256(Q_DOMAIN + _block(delta) + garbling_id).digest()[:16]
    stream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes((2 * count + 7) // 8))
    bits = _unpack_bits(stream, 2 * count)
    return [(bits[2 * k], bits[2 * k + 1]) for k in range(count)]


def _split_hash(h: int) -> tuple[int, int]:
    """A hash block's half (bytes 0-7) and bit (lsb of byte 15)."""
    return h >> 64, h & 1


def _three_halves(
    hash_: Tccr, a0: int, b0: int, delta: int, tw: int, q: tuple[int, int], variant: Variant
) -> tuple[int, bytes, list[int]]:
    """One AND gate of two secret inputs: its output 0-label, G0 || G1 || G2 and z0..z4. The
    garbler solves the four colours' evaluator equations instead of using closed forms."""
    pa, pb = _permute(a0, variant), _permute(b0, variant)
    a = a0 ^ (delta if pa else 0)  # the labels of colour 0
    b = b0 ^ (delta if pb else 0)
    d_l, d_r = _halves(delta)
    # hashes by colour: hA[i] = H(A ^ i Delta), hB[j], hAB[i ^ j] = H(A ^ B ^ (i ^ j) Delta)
    h_a = [_split_hash(hash_(a ^ (delta if c else 0), tw)) for c in (0, 1)]
    h_b = [_split_hash(hash_(b ^ (delta if c else 0), tw + 1)) for c in (0, 1)]
    h_ab = [_split_hash(hash_(a ^ b ^ (delta if c else 0), tw + 2)) for c in (0, 1)]
    f = {(0, 0): (0, 0), (0, 1): (pa ^ pb, pa), (1, 0): (pb, pa ^ pb), (1, 1): (pa, pb)}
    r = {c: (q[0] ^ f[c][0], q[1] ^ f[c][1]) for c in f}
    colours = ((0, 0), (0, 1), (1, 0), (1, 1))

    def evaluated(i: int, j: int, g: Sequence[int]) -> tuple[int, int]:
        """What an evaluator at colours (i, j) computes with halves g."""
        rows = _rows((i, j), *r[i, j])
        held = [*_halves(a ^ (delta if i else 0)), *_halves(b ^ (delta if j else 0))]
        both = g[2] if i ^ j else 0
        left = h_a[i][0] ^ h_ab[i ^ j][0] ^ (g[0] if i else 0) ^ both ^ _row(rows[0], held)
        right = h_b[j][0] ^ h_ab[i ^ j][0] ^ (g[1] if j else 0) ^ both ^ _row(rows[1], held)
        return left, right

    def want(i: int, j: int, w: tuple[int, int]) -> tuple[int, int]:
        out = (i ^ pa) & (j ^ pb)
        return w[0] ^ (d_l if out else 0), w[1] ^ (d_r if out else 0)

    # W(i, j) = W0 ^ ((i ^ p_a)(j ^ p_b)) Delta: colour (0, 0) fixes W0, (1, 1) G0 (left) and G1
    # (right), (0, 1) G2 (left); the other three equations must then hold.
    w0 = want(0, 0, evaluated(0, 0, (0, 0, 0)))
    e11 = want(1, 1, evaluated(1, 1, (0, 0, 0)))
    g0, g1 = e11[0] ^ w0[0], e11[1] ^ w0[1]
    g2 = want(0, 1, evaluated(0, 1, (0, 0, 0)))[0] ^ w0[0]
    for i, j in colours:
        if evaluated(i, j, (g0, g1, g2)) != want(i, j, w0):
            raise AssertionError("the three-halves equations have no solution")
    # z: the evaluator at (i, j) decodes r1 = z0 ^ i z2 ^ (i^j) z4 ^ hb(hA) ^ hb(hAB) and
    # r2 = z1 ^ j z3 ^ (i^j) z4 ^ hb(hB) ^ hb(hAB).
    z0 = r[0, 0][0] ^ h_a[0][1] ^ h_ab[0][1]
    z1 = r[0, 0][1] ^ h_b[0][1] ^ h_ab[0][1]
    z2 = r[1, 1][0] ^ z0 ^ h_a[1][1] ^ h_ab[0][1]
    z3 = r[1, 1][1] ^ z1 ^ h_b[1][1] ^ h_ab[0][1]
    z4 = r[0, 1][0] ^ z0 ^ h_a[0][1] ^ h_ab[1][1]
    return w0[0] << 64 | w0[1], b"".join(x.to_bytes(8, "big") for x in (g0, g1, g2)), [z0, z1, z2, z3, z4]


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
    full = sum(1 for k, g in enumerate(circuit.gates) if g.is_and and not (known[g.a] or known[g.b]))
    qs = iter(control_randomness(delta, garbling_id, full))
    tables: list[bytes] = []
    controls: list[int] = []
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
            tweak = 3 * j + shift
            h0, h1 = hash_(x0, tweak), hash_(x0 ^ delta, tweak)
            t = h0 ^ h1 ^ (delta if v else 0)
            tables.append(_block(t))
            zero.append(h0 ^ (t if _permute(x0, variant) else 0))
        else:
            w0, halves, z = _three_halves(hash_, a0, b0, delta, 3 * j + shift, next(qs), variant)
            tables.append(halves)
            controls += z
            zero.append(w0)
        j += 1

    outs = [zero[w] for w in circuit.outputs]
    first_tag = 3 * j
    tags = b"".join(
        _block(hash_(w, first_tag + k))[:TAG_BYTES] + _block(hash_(w ^ delta, first_tag + k))[:TAG_BYTES]
        for k, w in enumerate(outs)
    )
    return Transcript(
        garbling_id=garbling_id,
        tables=b"".join(tables) + _pack_bits(controls),
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
    gates = [(k, g) for k, g in enumerate(circuit.gates) if g.is_and]
    full = sum(1 for _, g in gates if not (known[g.a] or known[g.b]))
    half = sum(1 for k, g in gates if (known[g.a] or known[g.b]) and not known[circuit.first_gate_wire + k])
    size = 24 * full + 16 * half
    if len(transcript.tables) != size + (5 * full + 7) // 8:
        raise ValueError(f"the tables hold {len(transcript.tables)} bytes, the circuit needs more or fewer")
    controls = _unpack_bits(transcript.tables[size:], 5 * full)
    active = [0] * (2 + circuit.garbler_inputs) + list(evaluator_labels)
    pos = 0
    n = 0
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
            t = int.from_bytes(transcript.tables[pos : pos + 16], "big")
            pos += 16
            active.append(hash_(z, 3 * j + shift) ^ (t if _permute(z, variant) else 0))
        else:
            g0, g1, g2 = (
                int.from_bytes(transcript.tables[pos + 8 * c : pos + 8 * c + 8], "big") for c in range(3)
            )
            pos += 24
            z0, z1, z2, z3, z4 = controls[5 * n : 5 * n + 5]
            n += 1
            i, jj = _permute(x, variant), _permute(y, variant)
            tw = 3 * j + shift
            ha, ba = _split_hash(hash_(x, tw))
            hb, bb = _split_hash(hash_(y, tw + 1))
            hab, bab = _split_hash(hash_(x ^ y, tw + 2))
            r1 = z0 ^ (i & z2) ^ ((i ^ jj) & z4) ^ ba ^ bab
            r2 = z1 ^ (jj & z3) ^ ((i ^ jj) & z4) ^ bb ^ bab
            rows = _rows((i, jj), r1, r2)
            hs = [*_halves(x), *_halves(y)]
            both = g2 if i ^ jj else 0
            left = ha ^ hab ^ (g0 if i else 0) ^ both ^ _row(rows[0], hs)
            right = hb ^ hab ^ (g1 if jj else 0) ^ both ^ _row(rows[1], hs)
            active.append(left << 64 | right)
        j += 1

    outs = [active[w] for w in circuit.outputs]
    decode = _unpack_bits(transcript.decode, len(outs))
    bits = [_permute(w, variant) ^ d for w, d in zip(outs, decode, strict=True)]
    for k, (w, bit) in enumerate(zip(outs, bits, strict=True)):
        tag = transcript.output_tags[2 * TAG_BYTES * k + TAG_BYTES * bit :][:TAG_BYTES]
        if _block(hash_(w, 3 * j + k))[:TAG_BYTES] != tag:
            raise TagMismatch(f"output {k}: the label does not hash to the tag of bit {bit}")
    return bits
