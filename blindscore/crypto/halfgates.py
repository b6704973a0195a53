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
* half gates (Zahur-Rosulek-Evans, "Two halves make a whole", EUROCRYPT 2015): AND gate j with
  input 0-labels A, B, p_a = lsb(A), p_b = lsb(B)::

      T_G = H(A, 2j) ^ H(A ^ D, 2j) ^ p_b D        W_G = H(A, 2j) ^ p_a T_G
      T_E = H(B, 2j+1) ^ H(B ^ D, 2j+1) ^ A        W_E = H(B, 2j+1) ^ p_b (T_E ^ A)
      output 0-label W = W_G ^ W_E; the evaluator with labels X, Y computes
      W' = H(X, 2j) ^ lsb(X) T_G ^ H(Y, 2j+1) ^ lsb(Y) (T_E ^ X).

* the hash is the tweakable circular correlation-robust hash from fixed-key AES of Guo, Katz,
  Wang, Yu (:mod:`blindscore.crypto.tccr`), with pi = AES-128 under the key
  SHA-256(DOMAIN || garbling_id)[:16], DOMAIN =
  ``b"blindscore/halfgates/v1"`` and garbling_id 16 fresh random bytes per garbling (public: the
  model is an ideal permutation with a known key). Labels and tweaks are 128-bit blocks, written
  big-endian (x_L = bytes 0..7); the tweak i is the integer i as a 16-byte big-endian block.
  Tweaks: 2j and 2j + 1 for AND gate j (gates numbered in the circuit's order), 2 * and_gates + k
  for output k. One ``Cipher(AES(key), ECB()).encryptor().update`` call hashes every block of a
  level at once, which is where the speed comes from (a hash call per gate costs microseconds).

Layouts (labels, table entries 16 bytes big-endian):

* ``tables``: per AND gate in gate order, T_G then T_E (32 bytes per gate);
* ``decode``: one bit per output, ``numpy.packbits`` order (first output = msb of byte 0),
  zero padding;
* ``output_tags`` (added to the interface): per output k, the first 8 bytes of H(W_k^0, t_k)
  then of H(W_k^1, t_k), t_k = 2 * and_gates + k. The evaluator checks that its output label
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
    #: 2 x 16 bytes per AND gate, in gate order (T_G, T_E).
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
    """Length of ``GarbledCircuit.tables`` for this circuit: 32 bytes per AND gate of two secret
    inputs, 16 where the garbler knows one input, none where it knows both."""
    return LABEL_BYTES * int(circuit.table_offsets[-1])


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
    kinds, toff = circuit.and_kinds, circuit.table_offsets
    tables = np.empty((int(toff[-1]), 2), dtype=np.uint64)
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
        tw = 2 * np.arange(j0, j0 + m, dtype=np.uint64)
        if kind == 0:
            h = hash_(
                np.concatenate((a0, a0 ^ delta, b0, b0 ^ delta)),
                tweak_blocks(np.concatenate((tw, tw, tw + 1, tw + 1))),
            )
            ha0, ha1, hb0, hb1 = h[:m], h[m : 2 * m], h[2 * m : 3 * m], h[3 * m :]
            pa, pb = _mask(_lsb(a0)), _mask(_lsb(b0))
            hb = hb0 ^ hb1
            tg = ha0 ^ ha1 ^ (pb & delta)
            entries = tables[off : off + 2 * m].reshape(m, 2, 2)
            entries[:, 0] = tg
            entries[:, 1] = hb ^ a0
            out[:] = ha0 ^ (pa & tg) ^ hb0 ^ (pb & hb)
        elif kind == 3:
            # Both inputs known: the output is hard-wired like a garbler input (nothing sent).
            out[:] = _mask(vals[ia] & vals[ib]) & delta
        else:
            # The garbler half-gate alone (Zahur-Rosulek-Evans): x AND v with v known to the
            # garbler is one entry T = H(X0) ^ H(X1) ^ v Delta, output 0-label H(X0) ^ p_x T.
            x0, v = (b0, vals[ia]) if kind == 1 else (a0, vals[ib])
            h = hash_(np.concatenate((x0, x0 ^ delta)), tweak_blocks(np.concatenate((tw, tw))))
            t = h[:m] ^ h[m:] ^ (_mask(v) & delta)
            tables[off : off + m] = t
            out[:] = h[:m] ^ (_mask(_lsb(x0)) & t)

    out0 = labels[circuit.output_wires]
    n_out = len(out0)
    tw = np.arange(2 * circuit.and_gates, 2 * circuit.and_gates + n_out, dtype=np.uint64)
    tags = hash_(np.concatenate((out0, out0 ^ delta)), tweak_blocks(np.concatenate((tw, tw))))
    tag_bytes = np.ascontiguousarray(tags).view(np.uint8).reshape(2, n_out, LABEL_BYTES)[:, :, :TAG_BYTES]
    garbled = GarbledCircuit(
        garbling_id=gid,
        tables=tables.tobytes(),
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
    tables = _from_bytes(garbled.tables)
    kinds, toff = circuit.and_kinds, circuit.table_offsets
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
        tw = 2 * np.arange(j0, j0 + m, dtype=np.uint64)
        if kind == 0:
            h = hash_(np.concatenate((a, b)), tweak_blocks(np.concatenate((tw, tw + 1))))
            entries = tables[off : off + 2 * m].reshape(m, 2, 2)
            sa, sb = _mask(_lsb(a)), _mask(_lsb(b))
            out[:] = h[:m] ^ (sa & entries[:, 0]) ^ h[m:] ^ (sb & (entries[:, 1] ^ a))
        elif kind == 3:
            out[:] = 0  # hard-wired by the garbler: the active label is 0
        else:
            x = b if kind == 1 else a
            out[:] = hash_(x, tweak_blocks(tw)) ^ (_mask(_lsb(x)) & tables[off : off + m])

    out = labels[circuit.output_wires]
    n_out = len(out)
    bits = _lsb(out) ^ np.unpackbits(np.frombuffer(garbled.decode, dtype=np.uint8))[:n_out]
    tw = np.arange(2 * circuit.and_gates, 2 * circuit.and_gates + n_out, dtype=np.uint64)
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
