"""Half-gates garbled circuit that lets the bank learn many threshold-comparison bits in one batch.

No maintained Python library offers garbled circuits, so this module is hand-written on
``hashlib`` and ``secrets``. Techniques:

* free XOR (Kolesnikov-Schneider, ICALP 2008): one global offset Delta per garbling, the 1-label
  of every wire is its 0-label XOR Delta, so XOR and NOT gates cost nothing (NOT flips the
  garbler's 0-label by Delta);
* point-and-permute: lsb(Delta) = 1, so the lsb of a label tells the evaluator which row to use,
  and an output is decoded as lsb(label) XOR a decode bit;
* half gates (Zahur-Rosulek-Evans, "Two halves make a whole", EUROCRYPT 2015): an AND gate is
  two ciphertexts, a garbler half and an evaluator half.

Model: semi-honest garbler (the bureau) and evaluator (the bank); H is modelled as a random
oracle. Only the evaluator learns the outputs; the garbler learns nothing (it never sees output
labels). A malicious garbler could garble another function: this protects privacy against
honest-but-curious parties only, like the rest of the comparison protocol.

The hash, with ``tweak`` the 8-byte big-endian index of the ciphertext it masks::

    H(X, tweak) = BLAKE2b(digest_size=16)(DOMAIN || garbling_id || tweak || X)

X a 16-byte big-endian label, DOMAIN = ``b"blindscore/garble/v1"`` and garbling_id 16 fresh random
bytes. (``digest_size=16`` is BLAKE2b's own 128-bit output, a different function from the first
16 bytes of BLAKE2b-512; the fixed vector in tests/test_garble.py pins it.) Each garbling draws a
fresh garbling id and a fresh Delta (128 bits, lsb 1); within one garbling every tweak is used for
one ciphertext only, so no two gates ever share a hash input.

The function. Instance a (one application) has the evaluator's w-bit value b_a and the
garbler's w-bit values a_{a,k}, k < K; output o_{a,k} = bit w-1 of (b_a - a_{a,k}) mod 2^w. When
both values are below 2^(w-1), o_{a,k} = [b_a < a_{a,k}]; keeping them in range is the caller's
job. The circuit is the borrow chain of b - a::

    borrow_0 = 0,  borrow_{i+1} = MAJ(NOT b_i, a_i, borrow_i),  o = b_{w-1} XOR a_{w-1} XOR borrow_{w-1}

with MAJ(x, y, z) = y XOR ((x XOR y) AND (y XOR z)): one AND gate per bit 0..w-2. Gate 0 has
borrow_0 = 0, so it is (NOT b_0) AND a_0 with a_0 known to the garbler: a lone garbler half
gate, one ciphertext. Gates 1..w-2 are full half gates with x = NOT b_i XOR a_i (garbler half)
and y = a_i XOR borrow_i (evaluator half), two ciphertexts. Hence 2 w - 3 ciphertexts per
comparison (none when w = 1), K (2 w - 3) per instance. The evaluator's b-wires are shared by
the K comparisons of an instance.

Layouts (every label and ciphertext 16 bytes big-endian; comparison q = a K + k):

* ``tables``: comparisons in order q, within one its gates by bit i = 0..w-2, within a gate the
  garbler half T_G then the evaluator half T_E (gate 0: T_G only). The tweak of a ciphertext is
  its index in ``tables``.
* ``garbler_labels``: the active label of a_{a,k,i} at index q w + i (16 bytes each). The label
  of a_{a,k,0} is not used when w >= 2 (gate 0 reads a_0 in the clear); it is sent to keep the
  layout regular.
* evaluator input wires: b_{a,i} at index a w + i; the garbler returns their (0-label, 1-label)
  pairs for the oblivious transfer, the evaluator passes the labels it received in that order.
* ``decode``: the decode bit of output q is bit q of the packed string, most significant bit of
  each byte first (``numpy.packbits`` order), padding bits zero.

The label pairs reveal Delta (pair[0] XOR pair[1]); they must only feed the OT sender and never
leave the garbler in any other form.
"""

from __future__ import annotations

import hashlib
import operator
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from blindscore.errors import InvalidInputError

LABEL_BYTES = 16
MAX_WIDTH = 257
MAX_COUNT = 64
MAX_INSTANCES = 100_000
GARBLING_ID_BYTES = 16
_TWEAK_BYTES = 8
_DOMAIN = b"blindscore/garble/v1"
_LABEL_BITS = 8 * LABEL_BYTES


@dataclass(frozen=True)
class GarbledComparisons:
    """What the garbler sends the evaluator: public, it reveals nothing without the input labels."""

    garbling_id: bytes
    instances: int
    count: int
    width: int
    #: 16 bytes per ciphertext, ``ciphertexts(width)`` per comparison, in the documented gate order.
    tables: bytes
    #: 16 bytes per garbler input bit (instances * count * width), index (a count + k) width + i.
    garbler_labels: bytes
    #: One bit per output (instances * count), packed most significant bit first.
    decode: bytes


def _label_bytes(size: int) -> bytes:
    """Random 0-labels; their lsbs are the permutation bits (a hook so that leakage tests can fix them)."""
    return secrets.token_bytes(size)


def ciphertexts(width: int) -> int:
    """Ciphertexts per comparison: one for gate 0, two for each of the w - 2 further AND gates."""
    return 0 if width <= 1 else 2 * width - 3


def table_bytes(instances: int, count: int, width: int) -> int:
    """Length of ``GarbledComparisons.tables`` for this shape."""
    return instances * count * ciphertexts(width) * LABEL_BYTES


def hash_label(garbling_id: bytes, tweak: int, label: int) -> int:
    """H(label, tweak): the reference form of the hash the garbling loops inline."""
    data = _DOMAIN + garbling_id + tweak.to_bytes(_TWEAK_BYTES, "big") + label.to_bytes(LABEL_BYTES, "big")
    return int.from_bytes(hashlib.blake2b(data, digest_size=LABEL_BYTES).digest(), "big")


def garble_comparisons(
    garbler_values: Sequence[Sequence[int]], width: int
) -> tuple[GarbledComparisons, list[tuple[int, int]]]:
    """Garble o_{a,k} = bit w-1 of (b_a - a_{a,k}) mod 2^w for every instance a and k < K.

    ``garbler_values[a][k]`` is a_{a,k}. Returns the garbled circuit (for the evaluator) and the
    label pairs (label of 0, label of 1) of the evaluator's input bit i of instance a at index
    a width + i (for the OT sender only: they reveal Delta).
    """
    values = _check_garbler_values(garbler_values, width)
    instances, count = len(values), len(values[0])
    w = width
    n_eval = instances * w
    n_garb = instances * count * w
    rand = _label_bytes(LABEL_BYTES * (n_eval + n_garb))
    fb = int.from_bytes
    delta = secrets.randbits(_LABEL_BITS) | 1
    gid = secrets.token_bytes(GARBLING_ID_BYTES)
    copy = hashlib.blake2b(_DOMAIN + gid, digest_size=LABEL_BYTES).copy

    pairs: list[tuple[int, int]] = []
    tables: list[int] = []
    emit = tables.append
    active: list[int] = []  # active labels of the garbler's input bits
    decode = 0
    tweak = 0
    off = 0
    for row in values:
        e0 = [fb(rand[off + LABEL_BYTES * i : off + LABEL_BYTES * (i + 1)], "big") for i in range(w)]
        off += LABEL_BYTES * w
        pairs.extend((x, x ^ delta) for x in e0)
        # 0-labels of NOT b_i, reused by every comparison of the instance.
        ne0 = [x ^ delta for x in e0]
        for a_value in row:
            g0 = [fb(rand[off + LABEL_BYTES * i : off + LABEL_BYTES * (i + 1)], "big") for i in range(w)]
            off += LABEL_BYTES * w
            active.extend(g0[i] ^ delta if (a_value >> i) & 1 else g0[i] for i in range(w))
            if w == 1:
                c0 = 0  # borrow_0 = 0: a constant wire whose only label is 0
            else:
                # Gate 0: borrow_1 = (NOT b_0) AND a_0, a garbler half gate with a_0 in the clear.
                x0 = ne0[0]
                h = copy()
                h.update(tweak.to_bytes(8, "big"))
                h0 = h.copy()
                h0.update(x0.to_bytes(16, "big"))
                h.update((x0 ^ delta).to_bytes(16, "big"))
                hx0 = fb(h0.digest(), "big")
                tg = hx0 ^ fb(h.digest(), "big")
                if a_value & 1:
                    tg ^= delta
                emit(tg)
                c0 = hx0 ^ tg if x0 & 1 else hx0
                tweak += 1
                for i in range(1, w - 1):
                    gi = g0[i]
                    x0 = ne0[i] ^ gi  # NOT b_i XOR a_i
                    y0 = gi ^ c0  # a_i XOR borrow_i
                    # Garbler half: x0-side hashes, masks delta by lsb(y0).
                    h = copy()
                    h.update(tweak.to_bytes(8, "big"))
                    h0 = h.copy()
                    h0.update(x0.to_bytes(16, "big"))
                    h.update((x0 ^ delta).to_bytes(16, "big"))
                    hx0 = fb(h0.digest(), "big")
                    tg = hx0 ^ fb(h.digest(), "big")
                    if y0 & 1:
                        tg ^= delta
                    wg0 = hx0 ^ tg if x0 & 1 else hx0
                    # Evaluator half: y0-side hashes, masks x0.
                    h = copy()
                    h.update((tweak + 1).to_bytes(8, "big"))
                    h0 = h.copy()
                    h0.update(y0.to_bytes(16, "big"))
                    h.update((y0 ^ delta).to_bytes(16, "big"))
                    hy0 = fb(h0.digest(), "big")
                    te = hy0 ^ fb(h.digest(), "big") ^ x0
                    we0 = hy0 ^ te ^ x0 if y0 & 1 else hy0
                    emit(tg)
                    emit(te)
                    tweak += 2
                    c0 = wg0 ^ we0 ^ gi  # borrow_{i+1} = a_i XOR (x AND y)
            decode = (decode << 1) | ((e0[w - 1] ^ g0[w - 1] ^ c0) & 1)
    n_out = instances * count
    pad = -n_out % 8
    garbled = GarbledComparisons(
        garbling_id=gid,
        instances=instances,
        count=count,
        width=w,
        tables=b"".join([t.to_bytes(16, "big") for t in tables]),
        garbler_labels=b"".join([g.to_bytes(16, "big") for g in active]),
        decode=(decode << pad).to_bytes((n_out + pad) // 8, "big"),
    )
    return garbled, pairs


def evaluate_comparisons(garbled: GarbledComparisons, evaluator_labels: Sequence[int]) -> list[list[int]]:
    """The evaluator's side: o[a][k] from the garbled circuit and its labels (index a width + i)."""
    instances, count, w = _check_garbled(garbled, evaluator_labels)
    fb = int.from_bytes
    tab = garbled.tables
    glab = garbled.garbler_labels
    decode = fb(garbled.decode, "big") >> (-(instances * count) % 8)
    copy = hashlib.blake2b(_DOMAIN + garbled.garbling_id, digest_size=LABEL_BYTES).copy

    result: list[list[int]] = []
    shift = instances * count
    tweak = 0
    pos = 0  # byte offset in tab
    gpos = 0  # byte offset in glab
    for a in range(instances):
        e = evaluator_labels[a * w : (a + 1) * w]
        row: list[int] = []
        for _ in range(count):
            if w == 1:
                c = 0
            else:
                x = e[0]
                h = copy()
                h.update(tweak.to_bytes(8, "big") + x.to_bytes(16, "big"))
                c = fb(h.digest(), "big")
                if x & 1:
                    c ^= fb(tab[pos : pos + 16], "big")
                pos += 16
                tweak += 1
                for i in range(1, w - 1):
                    gi = fb(glab[gpos + 16 * i : gpos + 16 * i + 16], "big")
                    x = e[i] ^ gi
                    y = gi ^ c
                    h = copy()
                    h.update(tweak.to_bytes(8, "big") + x.to_bytes(16, "big"))
                    c = fb(h.digest(), "big")
                    if x & 1:
                        c ^= fb(tab[pos : pos + 16], "big")
                    h = copy()
                    h.update((tweak + 1).to_bytes(8, "big") + y.to_bytes(16, "big"))
                    c ^= fb(h.digest(), "big") ^ gi
                    if y & 1:
                        c ^= fb(tab[pos + 16 : pos + 32], "big") ^ x
                    pos += 32
                    tweak += 2
            top = fb(glab[gpos + 16 * (w - 1) : gpos + 16 * w], "big")
            shift -= 1
            row.append((e[w - 1] ^ top ^ c ^ (decode >> shift)) & 1)
            gpos += 16 * w
        result.append(row)
    return result


def plain_comparisons(
    evaluator_values: Sequence[int], garbler_values: Sequence[Sequence[int]], width: int
) -> list[list[int]]:
    """The function in the clear, for tests: o[a][k] = bit w-1 of (b_a - a_{a,k}) mod 2^w."""
    values = _check_garbler_values(garbler_values, width)
    if len(evaluator_values) != len(values):
        raise InvalidInputError(
            f"instances mismatch: {len(evaluator_values)} evaluator values, {len(values)} garbler rows"
        )
    mask = (1 << width) - 1
    out: list[list[int]] = []
    for a, row in enumerate(values):
        b = _check_value(evaluator_values[a], width, f"evaluator value {a}")
        out.append([((b - v) & mask) >> (width - 1) for v in row])
    return out


def _check_width(width: object) -> int:
    if not isinstance(width, int) or isinstance(width, bool):
        raise InvalidInputError(f"width must be an int, got {type(width).__name__}")
    if not 1 <= width <= MAX_WIDTH:
        raise InvalidInputError(f"width must be between 1 and {MAX_WIDTH}, got {width}")
    return width


def _check_value(value: Any, width: int, what: str) -> int:
    if isinstance(value, bool):
        raise InvalidInputError(f"{what}: expected an integer, got a bool")
    try:
        v = operator.index(value)
    except TypeError:
        raise InvalidInputError(f"{what}: expected an integer, got {type(value).__name__}") from None
    if not 0 <= v < 1 << width:
        raise InvalidInputError(f"{what} = {v} is out of range [0, 2^{width})")
    return v


def _check_garbler_values(garbler_values: Sequence[Sequence[int]], width: int) -> list[list[int]]:
    w = _check_width(width)
    instances = len(garbler_values)
    if not 1 <= instances <= MAX_INSTANCES:
        raise InvalidInputError(f"instances must be between 1 and {MAX_INSTANCES}, got {instances}")
    try:
        counts = [len(row) for row in garbler_values]
    except TypeError:
        raise InvalidInputError("garbler values must be a sequence of sequences of ints") from None
    count = counts[0]
    if not 1 <= count <= MAX_COUNT:
        raise InvalidInputError(
            f"count (comparisons per instance) must be between 1 and {MAX_COUNT}, got {count}"
        )
    out: list[list[int]] = []
    for a, row in enumerate(garbler_values):
        if counts[a] != count:
            raise InvalidInputError(f"instance {a} has {counts[a]} garbler values, instance 0 has {count}")
        out.append([_check_value(v, w, f"garbler value [{a}][{k}]") for k, v in enumerate(row)])
    return out


def _check_garbled(garbled: GarbledComparisons, evaluator_labels: Sequence[int]) -> tuple[int, int, int]:
    """Shape checks on what arrived from the garbler; returns (instances, count, width)."""
    gid = garbled.garbling_id
    if not isinstance(gid, bytes) or len(gid) != GARBLING_ID_BYTES:
        raise InvalidInputError(f"garbling_id must be {GARBLING_ID_BYTES} bytes")
    instances, count = garbled.instances, garbled.count
    w = _check_width(garbled.width)
    for name, value, top in (("instances", instances, MAX_INSTANCES), ("count", count, MAX_COUNT)):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
            raise InvalidInputError(f"{name} must be between 1 and {top}, got {value!r}")
    if len(evaluator_labels) != instances * w:
        raise InvalidInputError(
            f"evaluator labels: expected {instances * w} ({instances} instances x width {w}), "
            f"got {len(evaluator_labels)}"
        )
    for j, label in enumerate(evaluator_labels):
        if type(label) is not int or label < 0 or label >> _LABEL_BITS:
            raise InvalidInputError(f"evaluator label {j} is not a {_LABEL_BITS}-bit non-negative int")
    expected = {
        "tables": table_bytes(instances, count, w),
        "garbler_labels": instances * count * w * LABEL_BYTES,
        "decode": (instances * count + 7) // 8,
    }
    for name, size in expected.items():
        got = getattr(garbled, name)
        if not isinstance(got, bytes):
            raise InvalidInputError(f"{name} must be bytes, got {type(got).__name__}")
        if len(got) != size:
            raise InvalidInputError(
                f"{name}: expected {size} bytes for {instances} instances x {count} comparisons x "
                f"width {w}, got {len(got)}"
            )
    pad = -(instances * count) % 8
    if pad and garbled.decode[-1] & ((1 << pad) - 1):
        raise InvalidInputError("decode: padding bits after the last output must be zero")
    return instances, count, w
