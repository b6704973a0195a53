"""Garble and evaluate any :class:`~blindscore.crypto.circuit.Circuit` with half gates, vectorised by level.

Why hand-written: no maintained Python library garbles circuits (the C++ ones, EMP and JustGarble,
have no Python bindings we could depend on), and :mod:`blindscore.crypto.garble` is a
special-purpose comparison circuit. This module is the general engine; its building blocks are
the standard ones:

* free XOR (Kolesnikov-Schneider, ICALP 2008): one global Delta per garbling with lsb(Delta) = 1;
  the 1-label of a wire is its 0-label XOR Delta, so XOR gates cost nothing. The circuit's
  constant wires get the 0-labels 0 (constant 0) and Delta (constant 1), both with active label
  0, so NOT x = x XOR constant-1 is free too and the evaluator learns only the public constant;
* free garbler inputs: a garbler input bit g is treated exactly like a constant the evaluator
  does not know: its wire's 0-label is g Delta, so its active label is 0 whatever g is, and the
  garbler sends no label for it. The evaluator's view is the same for g = 0 and g = 1: it holds
  the public label 0, and every table it meets at such a wire is masked by H at the label it does
  not hold (Delta), which circular correlation-robustness hides, as for the constant wires (the
  permute bit lsb(g Delta) = g is never seen: the evaluator's row choice is lsb(0) = 0). This is
  the "hard-wired garbler input" of the literature; it saves 16 bytes per garbler bit (a model's
  masks, thresholds and leaves) and makes a leak through those labels impossible by construction;
* point-and-permute: lsb of a label selects the table row; output bit = lsb(active label) XOR
  its decode bit;
* three halves (Rosulek-Roy, "Three Halves Make a Whole? Beating the Half-Gates Lower Bound for
  Garbled Circuits", CRYPTO 2021) for an AND gate j of two inputs the garbler does not know:
  three 64-bit half-ciphertexts and 5 control bits instead of half gates' two 128-bit ones.
  Labels are read as halves X = (X_L, X_R) (bytes 0-7 and 8-15), A and B denote the inputs'
  labels of colour 0 (A = A0 ^ p_a Delta, p_a = lsb(A0)), the evaluator holds A ^ i Delta and
  B ^ j Delta with colours (i, j), and a hash value h = H(x, t) gives a half hv(h) (bytes 0-7)
  and a bit hb(h) (lsb of byte 15). The evaluator computes, with hA = H(its A label, 3j),
  hB = H(its B label, 3j + 1), hAB = H(their XOR, 3j + 2) and the gate's G0, G1, G2, z0..z4::

      r1 = z0 ^ i z2 ^ (i^j) z4 ^ hb(hA) ^ hb(hAB)      r2 = z1 ^ j z3 ^ (i^j) z4 ^ hb(hB) ^ hb(hAB)
      R  = RP[i][j] ^ r1 S1 ^ r2 S2        (2 x 4 matrices over GF(2), rows acting on the
                                            halves (A_L, A_R, B_L, B_R) of the labels it holds)
      W_L = hv(hA) ^ hv(hAB) ^ i G0 ^ (i^j) G2 ^ R[0] . (its label halves)
      W_R = hv(hB) ^ hv(hAB) ^ j G1 ^ (i^j) G2 ^ R[1] . (its label halves)

  The garbler draws two bits q per gate and sets the control r at colour (i, j) to q ^ f_ij with
  f_00 = 0, f_01 = (p_a ^ p_b, p_a), f_10 = (p_b, p_a ^ p_b), f_11 = (p_a, p_b); so what the
  evaluator decodes is uniform whatever p_a, p_b are, and so is R (a coset of span(S1, S2)). It then
  solves the four colours' equations W(i, j) = W0 ^ ((i ^ p_a)(j ^ p_b)) Delta for the output
  0-label W0 and G0, G1, G2, and the z for the four r (:func:`_three_halves_garble`). The constants
  S1 = (0111, 1001), S2 = (1001, 1110), RP[0][0] = 0, RP[0][1] = (0000, 0010), RP[1][0] = (0100,
  0000), RP[1][1] = (0100, 0010) (row bits A_L, A_R, B_L, B_R from the lowest) and the f are one
  solution of the scheme's linear constraints, found by search and checked for every p_a, p_b, q and
  colour by ``tests/test_threehalves.py`` (where any one constant bit changed breaks them). The two
  bits q come from AES-128-CTR under SHA-256(``b"blindscore/threehalves/q/v1"`` || Delta ||
  garbling_id)[:16]: secret (Delta), fresh per garbling, and reproducible from the garbler's own
  state. H is the fixed-key-AES hash below, as for half gates, each tweak queried at a pair x, x ^
  Delta only;
* half gates (Zahur-Rosulek-Evans, "Two halves make a whole", EUROCRYPT 2015), the garbler half
  alone, for an AND gate j one of whose inputs x the garbler knows, value v (a leaf, a weight):
  one entry T = H(X0, 3j) ^ H(X0 ^ D, 3j) ^ v D, output 0-label H(X0, 3j) ^ p_x T; the evaluator
  holding X computes H(X, 3j) ^ lsb(X) T;
* the hash is the tweakable circular correlation-robust hash from fixed-key AES of Guo, Katz,
  Wang, Yu (:mod:`blindscore.crypto.tccr`), with pi = AES-128 under the key
  SHA-256(DOMAIN || garbling_id)[:16], DOMAIN =
  ``b"blindscore/halfgates/v1"`` and garbling_id 16 fresh random bytes per garbling (public: the
  model is an ideal permutation with a known key). Labels and tweaks are 128-bit blocks, written
  big-endian (x_L = bytes 0..7); the tweak i is the integer i as a 16-byte big-endian block.
  Tweaks: 3j, 3j + 1 and 3j + 2 for AND gate j (gates numbered in the circuit's order; each is
  queried at a pair x, x ^ Delta only), 3 * and_gates + k for output k. One
  ``Cipher(AES(key), ECB()).encryptor().update`` call hashes every block of a level at once,
  which is where the speed comes from (a hash call per gate costs microseconds).

Layouts (labels 16 bytes big-endian, halves 8):

* ``tables``: per AND gate in gate order, G0, G1, G2 (24 bytes) for a gate of two secret inputs,
  T (16 bytes) for a gate with one input the garbler knows, nothing for both; then the control
  bits z0..z4 of every gate of two secret inputs in gate order, ``numpy.packbits`` order, zero
  padding;
* ``decode``: one bit per output, ``numpy.packbits`` order (first output = msb of byte 0),
  zero padding;
* ``output_tags`` (added to the interface): per output k, the first 8 bytes of H(W_k^0, t_k)
  then of H(W_k^1, t_k), t_k = 3 * and_gates + k. The evaluator checks that its output label
  hashes to the tag of the bit it decoded, so a corrupted table or label is detected
  (probability 2^-64 of missing it per output) instead of yielding a wrong band silently. An
  evaluator holding W_k^b learns H(W_k^b ^ Delta) only as a pseudorandom tag.

Both parties build the :class:`~blindscore.crypto.circuit.Circuit` themselves from public size
parameters; only :class:`GarbledCircuit` and the OT messages travel.

Security model: semi-honest garbler and evaluator, as in the rest of the protocol. The label pairs
that :func:`garble` returns reveal Delta (pair[0] XOR pair[1]): they must only ever feed the OT
sender (:meth:`blindscore.crypto.ot.OtSender.reply`) and never leave the garbler otherwise. With
correlated OT the OT picks Delta (the session's IKNP secret s) and the evaluator's input 0-labels
instead: :meth:`~blindscore.crypto.ot.OtSender.correlated`, then :func:`garble` with those pairs. No
object here keeps Delta; :class:`GarbledCircuit` is public but still refuses pickling and prints
only its sizes, so that it travels only through the explicit wire encoding.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from blindscore.crypto.circuit import Circuit
from blindscore.crypto.ot import LabelPairs
from blindscore.crypto.tccr import Tccr, tweak_blocks
from blindscore.errors import CryptoError, InvalidInputError

LABEL_BYTES = 16
GARBLING_ID_BYTES = 16
TAG_BYTES = 8
_DOMAIN = b"blindscore/halfgates/v1"
_LABEL_BITS = 8 * LABEL_BYTES
#: The one source of fresh randomness (garbling ids, the label PRG key): a hook for seeded tests.
_fresh_bytes = secrets.token_bytes

#: Labels as rows of two uint64 whose memory is the 16-byte big-endian label (XOR is bytewise, so
#: the host's endianness never matters for XOR; lsb and tweaks go through explicit byte views).
_Labels = npt.NDArray[np.uint64]


@dataclass(frozen=True, repr=False)
class GarbledCircuit:
    """What the garbler sends the evaluator; useless without the evaluator's input labels."""

    garbling_id: bytes
    #: Per AND gate in gate order its halves or entry, then the control bits (module docstring).
    tables: bytes
    #: One decode bit per output (numpy.packbits order).
    decode: bytes
    #: 2 x 8 bytes per output: tags of the 0-label and the 1-label (see the module docstring).
    output_tags: bytes

    def __repr__(self) -> str:
        return (
            f"GarbledCircuit(tables={len(self.tables)} bytes, "
            f"outputs={len(self.output_tags) // (2 * TAG_BYTES)})"
        )

    def __reduce__(self) -> NoReturn:
        raise TypeError("a GarbledCircuit cannot be pickled; send its fields through the wire encoding")


def table_bytes(circuit: Circuit) -> int:
    """Length of ``GarbledCircuit.tables`` for this circuit: 24 bytes and 5 control bits per AND
    gate of two secret inputs, 16 bytes where the garbler knows one input, none where it knows
    both."""
    return _WORD_BYTES * int(circuit.table_offsets[-1]) + _control_bytes(circuit)


def _control_bytes(circuit: Circuit) -> int:
    return (_CONTROL_BITS * int(circuit.control_offsets[-1]) + 7) // 8


# Three halves (module docstring): rows of S1, S2 and RP[i][j] as 4-bit masks over the held label
# halves (bit 0 A_L, bit 1 A_R, bit 2 B_L, bit 3 B_R); RP indexed by 2 i + j.
_S1 = np.array([0b0111, 0b1001], dtype=np.uint8)
_S2 = np.array([0b1001, 0b1110], dtype=np.uint8)
_RP = np.array([[0, 0], [0, 0b0010], [0b0100, 0], [0b0100, 0b0010]], dtype=np.uint8)
_CONTROL_BITS = 5
_WORD_BYTES = 8
_Q_DOMAIN = b"blindscore/threehalves/q/v1"

_Halves = npt.NDArray[np.uint64]


def _bitmask(bits: npt.NDArray[np.uint8]) -> _Halves:
    """All-ones 64-bit words where bit = 1 (one per half)."""
    return np.uint64(0) - bits.astype(np.uint64)


def _apply(rows: npt.NDArray[np.uint8], halves: Sequence[_Halves]) -> _Halves:
    """Per gate, the XOR of the halves (A_L, A_R, B_L, B_R) its 4-bit row selects."""
    out = np.zeros(len(rows), dtype=np.uint64)
    for c, half in enumerate(halves):
        out ^= half & _bitmask((rows >> np.uint8(c)) & np.uint8(1))
    return out


def _matrix(
    i: int | npt.NDArray[np.uint8], r1: npt.NDArray[np.uint8], r2: npt.NDArray[np.uint8], row: int
) -> npt.NDArray[np.uint8]:
    """Row ``row`` of R = RP[i] ^ r1 S1 ^ r2 S2 for each gate (i = 2 x colour_a + colour_b)."""
    return _RP[i, row] ^ (r1 * _S1[row]) ^ (r2 * _S2[row])


def _halves_hash(h: _Labels) -> tuple[_Halves, npt.NDArray[np.uint8]]:
    """A hash block's half hv (bytes 0-7) and bit hb (lsb of byte 15)."""
    return h[:, 0], _lsb(h)


def _control_randomness(delta: _Labels, gid: bytes, count: int) -> npt.NDArray[np.uint8]:
    """Two bits q per gate of two secret inputs: AES-128-CTR under a key from Delta and the garbling id."""
    key = hashlib.sha256(_Q_DOMAIN + np.ascontiguousarray(delta).tobytes() + gid).digest()[:16]
    stream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes((2 * count + 7) // 8))
    return np.unpackbits(np.frombuffer(stream, dtype=np.uint8))[: 2 * count].reshape(count, 2)


def _three_halves_garble(
    a0: _Labels,
    b0: _Labels,
    delta: _Labels,
    tw: npt.NDArray[np.uint64],
    hash_: Tccr,
    q: npt.NDArray[np.uint8],
) -> tuple[_Labels, _Halves, npt.NDArray[np.uint8]]:
    """Three-halves garbling of m AND gates with input 0-labels ``a0``, ``b0`` (m x 2), tweaks
    base 3j in ``tw`` and control randomness ``q`` (m x 2): the output 0-labels (m x 2), the
    halves G0, G1, G2 (m x 3) and the control bits z (m x 5)."""
    m = len(a0)
    pa, pb = _lsb(a0), _lsb(b0)
    a = a0 ^ (_mask(pa) & delta)  # the labels of colour 0
    b = b0 ^ (_mask(pb) & delta)
    ab = a ^ b
    h = hash_(
        np.concatenate((a, a ^ delta, b, b ^ delta, ab, ab ^ delta)),
        tweak_blocks(np.concatenate((tw, tw, tw + 1, tw + 1, tw + 2, tw + 2))),
    )
    hv, hb = _halves_hash(h)
    ha, hb_ = (hv[:m], hv[m : 2 * m]), (hb[:m], hb[m : 2 * m])
    hb0, hbb = (hv[2 * m : 3 * m], hv[3 * m : 4 * m]), (hb[2 * m : 3 * m], hb[3 * m : 4 * m])
    hab, habb = (hv[4 * m : 5 * m], hv[5 * m :]), (hb[4 * m : 5 * m], hb[5 * m :])
    d_l, d_r = delta[0], delta[1]
    pab = pa ^ pb
    q1, q2 = q[:, 0], q[:, 1]
    # r at colour (i, j) = q ^ f_ij(p_a, p_b), and the output bit t_ij = (i ^ p_a)(j ^ p_b).
    r = {
        (0, 0): (q1, q2),
        (0, 1): (q1 ^ pab, q2 ^ pa),
        (1, 0): (q1 ^ pb, q2 ^ pab),
        (1, 1): (q1 ^ pa, q2 ^ pb),
    }
    t = {(i, j): (pa ^ np.uint8(i)) & (pb ^ np.uint8(j)) for i in (0, 1) for j in (0, 1)}

    def held(i: int, j: int) -> list[_Halves]:
        zero = np.uint64(0)
        dli, dri = (d_l, d_r) if i else (zero, zero)
        dlj, drj = (d_l, d_r) if j else (zero, zero)
        return [a[:, 0] ^ dli, a[:, 1] ^ dri, b[:, 0] ^ dlj, b[:, 1] ^ drj]

    def side(i: int, j: int, row: int) -> _Halves:
        r1, r2 = r[i, j]
        return _apply(_matrix(2 * i + j, r1, r2, row), held(i, j))

    w_l = ha[0] ^ hab[0] ^ side(0, 0, 0) ^ (_bitmask(t[0, 0]) & d_l)
    w_r = hb0[0] ^ hab[0] ^ side(0, 0, 1) ^ (_bitmask(t[0, 0]) & d_r)
    g = np.empty((m, 3), dtype=np.uint64)
    g[:, 0] = w_l ^ (_bitmask(t[1, 1]) & d_l) ^ ha[1] ^ hab[0] ^ side(1, 1, 0)
    g[:, 1] = w_r ^ (_bitmask(t[1, 1]) & d_r) ^ hb0[1] ^ hab[0] ^ side(1, 1, 1)
    g[:, 2] = w_l ^ (_bitmask(t[0, 1]) & d_l) ^ ha[0] ^ hab[1] ^ side(0, 1, 0)
    z = np.empty((m, _CONTROL_BITS), dtype=np.uint8)
    z[:, 0] = r[0, 0][0] ^ hb_[0] ^ habb[0]
    z[:, 1] = r[0, 0][1] ^ hbb[0] ^ habb[0]
    z[:, 2] = r[1, 1][0] ^ z[:, 0] ^ hb_[1] ^ habb[0]
    z[:, 3] = r[1, 1][1] ^ z[:, 1] ^ hbb[1] ^ habb[0]
    z[:, 4] = r[0, 1][0] ^ z[:, 0] ^ hb_[0] ^ habb[1]
    out = np.empty((m, 2), dtype=np.uint64)
    out[:, 0], out[:, 1] = w_l, w_r
    return out, g, z


def _three_halves_evaluate(
    a: _Labels, b: _Labels, tw: npt.NDArray[np.uint64], hash_: Tccr, g: _Halves, z: npt.NDArray[np.uint8]
) -> _Labels:
    """The evaluator's side of :func:`_three_halves_garble`: the output labels from the labels
    ``a``, ``b`` it holds (m x 2), the halves ``g`` (m x 3) and the control bits ``z`` (m x 5)."""
    m = len(a)
    i, j = _lsb(a), _lsb(b)
    h = hash_(np.concatenate((a, b, a ^ b)), tweak_blocks(np.concatenate((tw, tw + 1, tw + 2))))
    hv, hb = _halves_hash(h)
    ij = i ^ j
    r1 = z[:, 0] ^ (i & z[:, 2]) ^ (ij & z[:, 4]) ^ hb[:m] ^ hb[2 * m :]
    r2 = z[:, 1] ^ (j & z[:, 3]) ^ (ij & z[:, 4]) ^ hb[m : 2 * m] ^ hb[2 * m :]
    colour = 2 * i + j
    halves = [a[:, 0], a[:, 1], b[:, 0], b[:, 1]]
    both = _bitmask(ij) & g[:, 2]
    out = np.empty((m, 2), dtype=np.uint64)
    out[:, 0] = (
        hv[:m] ^ hv[2 * m :] ^ (_bitmask(i) & g[:, 0]) ^ both ^ _apply(_matrix(colour, r1, r2, 0), halves)
    )
    out[:, 1] = (
        hv[m : 2 * m]
        ^ hv[2 * m :]
        ^ (_bitmask(j) & g[:, 1])
        ^ both
        ^ _apply(_matrix(colour, r1, r2, 1), halves)
    )
    return out


def aes_key(garbling_id: bytes) -> bytes:
    """The AES-128 key of the fixed-key permutation pi for one garbling."""
    return hashlib.sha256(_DOMAIN + garbling_id).digest()[:16]


def tccr_hash(garbling_id: bytes, label: int, tweak: int) -> int:
    """H(label, tweak) for one block, the reference form of what the garbling does in bulk."""
    x = _from_ints([label])
    out = Tccr(aes_key(garbling_id))(x, tweak_blocks(np.array([tweak], dtype=np.uint64)))
    return _to_ints(out)[0]


def aes_encrypt_blocks(key: bytes, blocks: bytes) -> bytes:
    """Raw AES-128-ECB through the same ``cryptography`` call path the hash uses (for tests)."""
    return bytes(Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(blocks))


def _lsb(x: _Labels) -> npt.NDArray[np.uint8]:
    """Least significant bit of each big-endian label: the low bit of byte 15."""
    rows = np.ascontiguousarray(x).view(np.uint8).reshape(-1, LABEL_BYTES)
    return np.bitwise_and(rows[:, 15], np.uint8(1))


def _mask(bits: npt.NDArray[np.uint8]) -> _Labels:
    """All-ones rows where bit = 1, zero rows where bit = 0 (for branch-free selects)."""
    m = (np.uint64(0) - bits.astype(np.uint64))[:, None]
    return np.broadcast_to(m, (len(bits), 2))


def _from_bytes(data: bytes) -> _Labels:
    return np.frombuffer(data, dtype=np.uint64).reshape(-1, 2)


def _from_ints(labels: Sequence[int]) -> _Labels:
    return _from_bytes(b"".join([x.to_bytes(LABEL_BYTES, "big") for x in labels]))


def _to_ints(x: _Labels) -> list[int]:
    hi = np.ascontiguousarray(x[:, 0]).astype(np.uint64).view(">u8").astype(np.uint64).tolist()
    lo = np.ascontiguousarray(x[:, 1]).astype(np.uint64).view(">u8").astype(np.uint64).tolist()
    return [(h << 64) | low for h, low in zip(hi, lo, strict=True)]


def _given_labels(pairs: LabelPairs, count: int) -> _Labels:
    """Delta then the evaluator's input 0-labels, from correlated-OT pairs (checked)."""
    if len(pairs) != count:
        raise InvalidInputError(f"the circuit has {count} evaluator input bits, got {len(pairs)} label pairs")
    zero, delta = pairs.buffers()
    if not delta[15] & 1:
        raise InvalidInputError("Delta must have its lowest bit set (point-and-permute)")
    return _from_bytes(delta + zero)


def _random_bytes(size: int) -> bytes:
    """Fresh random bytes: AES-128-CTR under a fresh 128-bit key from ``secrets`` (a PRG, as in
    EMP), because os.urandom for the megabytes of input labels costs several milliseconds."""
    key = _fresh_bytes(16)
    return bytes(Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(size)))


def _check_garbler_bits(
    circuit: Circuit, bits: Sequence[int] | npt.NDArray[np.uint8]
) -> npt.NDArray[np.uint8]:
    n = circuit.garbler_input_bits
    if len(bits) != n:
        raise InvalidInputError(f"garbler input: the circuit takes {n} bits, got {len(bits)}")
    arr = np.asarray(bits) if n else np.zeros(0, dtype=np.uint8)
    if arr.shape != (n,) or arr.dtype.kind not in "biu":
        raise InvalidInputError("garbler input: expected a flat sequence of 0/1 integers")
    if n and (arr.min() < 0 or arr.max() > 1):
        raise InvalidInputError("garbler input: every bit must be 0 or 1")
    return arr.astype(np.uint8)


def fresh_delta() -> bytes:
    """A new free-XOR offset Delta: 16 random bytes with lsb(Delta) = 1 (point-and-permute)."""
    delta = bytearray(_random_bytes(LABEL_BYTES))
    delta[15] |= 1
    return bytes(delta)


def garble(
    circuit: Circuit,
    garbler_bits: Sequence[int] | npt.NDArray[np.uint8],
    evaluator_pairs: LabelPairs | None = None,
) -> tuple[GarbledCircuit, LabelPairs]:
    """Garble ``circuit`` with the garbler's input bits fixed to ``garbler_bits``.

    Returns the garbled circuit (for the evaluator) and the (0-label, 1-label) pair of every
    evaluator input bit in input order (:class:`~blindscore.crypto.ot.LabelPairs`; indexing gives
    128-bit ints). The pairs reveal Delta: pass them only to the OT sender, never anywhere else.
    ``evaluator_pairs`` (from a correlated OT) fixes Delta and the evaluator's input labels instead
    of drawing them; they are returned unchanged.
    """
    gbits = _check_garbler_bits(circuit, garbler_bits)
    n_g, n_e = circuit.garbler_input_bits, circuit.evaluator_input_bits
    gid = _fresh_bytes(GARBLING_ID_BYTES)
    hash_ = Tccr(aes_key(gid))

    labels = np.empty((circuit.wires, 2), dtype=np.uint64)
    if evaluator_pairs is None:
        rand = _from_bytes(fresh_delta() + _random_bytes(LABEL_BYTES * n_e))
    else:
        rand = _given_labels(evaluator_pairs, n_e)
    delta = rand[0].copy()
    labels[0] = 0
    labels[1] = delta
    labels[2 : 2 + n_g] = _mask(gbits) & delta  # free garbler inputs: 0-label g Delta, active label 0
    first = circuit.first_gate_wire
    labels[2 + n_g : first] = rand[1:]

    # The garbler's values of the wires it knows (constants, its inputs, gates of those only).
    vals = np.zeros(circuit.wires, dtype=np.uint8)
    vals[1] = 1
    vals[2 : 2 + n_g] = gbits
    kinds, toff, coff = circuit.and_kinds, circuit.table_offsets, circuit.control_offsets
    words = np.empty(int(toff[-1]), dtype=np.uint64)
    controls = np.empty((int(coff[-1]), _CONTROL_BITS), dtype=np.uint8)
    q = _control_randomness(delta, gid, int(coff[-1]))
    ga, gb = circuit.gate_a, circuit.gate_b
    offsets = iter(circuit.and_offsets)
    known_gates = circuit.known_gates
    for batch, (is_and, start, stop) in enumerate(circuit.batches.tolist()):
        ia, ib = ga[start:stop], gb[start:stop]
        # np.take along axis 0 copies whole 16-byte rows, several times faster than labels[idx].
        a0 = np.take(labels, ia, axis=0)
        b0 = np.take(labels, ib, axis=0)
        out = labels[first + start : first + stop]
        kg = known_gates[batch]
        if kg.size:
            va, vb = vals[ga[kg]], vals[gb[kg]]
            vals[first + kg] = (va & vb) if is_and else (va ^ vb)
        if not is_and:
            np.bitwise_xor(a0, b0, out=out)
            continue
        m = stop - start
        j0 = next(offsets)
        kind, off = int(kinds[j0]), int(toff[j0])  # one kind per batch (CircuitBuilder.build)
        tw = 3 * np.arange(j0, j0 + m, dtype=np.uint64)
        if kind == 0:
            c0 = int(coff[j0])
            out[:], words[off : off + 3 * m].reshape(m, 3)[:], controls[c0 : c0 + m] = _three_halves_garble(
                a0, b0, delta, tw, hash_, q[c0 : c0 + m]
            )
        elif kind == 3:
            # Both inputs known: the output is hard-wired like a garbler input (nothing sent).
            out[:] = _mask(vals[ia] & vals[ib]) & delta
        else:
            # The garbler half-gate alone (Zahur-Rosulek-Evans): x AND v with v known to the
            # garbler is one entry T = H(X0) ^ H(X1) ^ v Delta, output 0-label H(X0) ^ p_x T.
            x0, v = (b0, vals[ia]) if kind == 1 else (a0, vals[ib])
            h = hash_(np.concatenate((x0, x0 ^ delta)), tweak_blocks(np.concatenate((tw, tw))))
            t = h[:m] ^ h[m:] ^ (_mask(v) & delta)
            words[off : off + 2 * m].reshape(m, 2)[:] = t
            out[:] = h[:m] ^ (_mask(_lsb(x0)) & t)

    out0 = labels[circuit.output_wires]
    n_out = len(out0)
    tw = np.arange(3 * circuit.and_gates, 3 * circuit.and_gates + n_out, dtype=np.uint64)
    tags = hash_(np.concatenate((out0, out0 ^ delta)), tweak_blocks(np.concatenate((tw, tw))))
    tag_bytes = np.ascontiguousarray(tags).view(np.uint8).reshape(2, n_out, LABEL_BYTES)[:, :, :TAG_BYTES]
    garbled = GarbledCircuit(
        garbling_id=gid,
        tables=words.tobytes() + np.packbits(controls).tobytes(),
        decode=np.packbits(_lsb(out0)).tobytes(),
        output_tags=np.ascontiguousarray(tag_bytes.transpose(1, 0, 2)).tobytes(),
    )
    return garbled, LabelPairs(labels[2 + n_g : first].tobytes(), delta.tobytes())


def evaluate(circuit: Circuit, garbled: GarbledCircuit, evaluator_labels: Sequence[int] | bytes) -> list[int]:
    """The evaluator's side: the output bits, from the garbled circuit and the labels of its
    input bits (in input order, as received by OT: 128-bit ints, or one buffer of 16-byte
    big-endian blocks). Raises :class:`CryptoError` when an output label is not one the garbler
    made (a corrupted table or label)."""
    _check_garbled(circuit, garbled)
    n_g, n_e = circuit.garbler_input_bits, circuit.evaluator_input_bits
    given = (
        len(evaluator_labels) // LABEL_BYTES if isinstance(evaluator_labels, bytes) else len(evaluator_labels)
    )
    if given != n_e or (isinstance(evaluator_labels, bytes) and len(evaluator_labels) % LABEL_BYTES):
        raise InvalidInputError(
            f"evaluator labels: the circuit has {n_e} evaluator input bits, got {given} labels"
        )
    hash_ = Tccr(aes_key(garbled.garbling_id))
    first = circuit.first_gate_wire
    labels = np.empty((circuit.wires, 2), dtype=np.uint64)
    labels[0 : 2 + n_g] = 0  # the constants' and the garbler inputs' active labels (see above)
    labels[2 + n_g : first] = (
        _from_bytes(evaluator_labels)
        if isinstance(evaluator_labels, bytes)
        else _check_labels(evaluator_labels)
    )
    kinds, toff, coff = circuit.and_kinds, circuit.table_offsets, circuit.control_offsets
    n_words = int(toff[-1])
    words = np.frombuffer(garbled.tables, dtype=np.uint64, count=n_words)
    n_full = int(coff[-1])
    control_bits = np.unpackbits(np.frombuffer(garbled.tables, dtype=np.uint8, offset=_WORD_BYTES * n_words))
    controls = control_bits[: _CONTROL_BITS * n_full].reshape(n_full, _CONTROL_BITS)
    ga, gb = circuit.gate_a, circuit.gate_b
    offsets = iter(circuit.and_offsets)
    for is_and, start, stop in circuit.batches.tolist():
        a = np.take(labels, ga[start:stop], axis=0)
        b = np.take(labels, gb[start:stop], axis=0)
        out = labels[first + start : first + stop]
        if not is_and:
            np.bitwise_xor(a, b, out=out)
            continue
        m = stop - start
        j0 = next(offsets)
        kind, off = int(kinds[j0]), int(toff[j0])
        tw = 3 * np.arange(j0, j0 + m, dtype=np.uint64)
        if kind == 0:
            c0 = int(coff[j0])
            g = words[off : off + 3 * m].reshape(m, 3)
            out[:] = _three_halves_evaluate(a, b, tw, hash_, g, controls[c0 : c0 + m])
        elif kind == 3:
            out[:] = 0  # hard-wired by the garbler: the active label is 0
        else:
            x = b if kind == 1 else a
            entries = words[off : off + 2 * m].reshape(m, 2)
            out[:] = hash_(x, tweak_blocks(tw)) ^ (_mask(_lsb(x)) & entries)

    out = labels[circuit.output_wires]
    n_out = len(out)
    bits = _lsb(out) ^ np.unpackbits(np.frombuffer(garbled.decode, dtype=np.uint8))[:n_out]
    tw = np.arange(3 * circuit.and_gates, 3 * circuit.and_gates + n_out, dtype=np.uint64)
    mine = np.ascontiguousarray(hash_(out, tweak_blocks(tw))).view(np.uint8).reshape(n_out, LABEL_BYTES)
    tags = np.frombuffer(garbled.output_tags, dtype=np.uint8).reshape(n_out, 2, TAG_BYTES)
    expected = tags[np.arange(n_out), bits]
    if not np.array_equal(mine[:, :TAG_BYTES], expected):
        raise CryptoError("garbled circuit: an output label does not match its tag (corrupted garbling)")
    return [int(v) for v in bits]


def _check_labels(labels: Sequence[int]) -> _Labels:
    try:
        # int.to_bytes refuses negative and too-large values itself; one pass, no per-label checks.
        data = b"".join([x.to_bytes(LABEL_BYTES, "big") for x in labels])
    except (AttributeError, TypeError, OverflowError):
        data = b""
    if len(data) != LABEL_BYTES * len(labels) or not all(type(x) is int for x in labels):
        bad = next((j for j, x in enumerate(labels) if not _is_label(x)), 0)
        raise InvalidInputError(f"evaluator label {bad} is not a {_LABEL_BITS}-bit non-negative int")
    return _from_bytes(data)


def _is_label(x: object) -> bool:
    return type(x) is int and 0 <= x < 1 << _LABEL_BITS


def _check_garbled(circuit: Circuit, garbled: GarbledCircuit) -> None:
    """Sizes of what arrived from the garbler against the circuit the evaluator expects."""
    n_out = circuit.outputs
    expected = {
        "garbling_id": GARBLING_ID_BYTES,
        "tables": table_bytes(circuit),
        "decode": (n_out + 7) // 8,
        "output_tags": 2 * TAG_BYTES * n_out,
    }
    for name, size in expected.items():
        got = getattr(garbled, name)
        if not isinstance(got, bytes):
            raise InvalidInputError(f"{name} must be bytes, got {type(got).__name__}")
        if len(got) != size:
            raise InvalidInputError(f"{name}: expected {size} bytes for this circuit, got {len(got)}")
    pad = -n_out % 8
    if pad and garbled.decode[-1] & ((1 << pad) - 1):
        raise InvalidInputError("decode: padding bits after the last output must be zero")
