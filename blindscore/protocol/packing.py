"""Packed batch scoring: many applications per Paillier plaintext, their bands by a garbled comparison.

Transport-free, like :mod:`blindscore.protocol.comparison`. The platform side is :func:`pack_rows`, the
bureau side :class:`PackedBand`, the bank side :func:`open_packed` and :func:`bands_from_bits`.

Why
---
The per-application protocol (:mod:`blindscore.protocol.comparison`) spends ~20 ms of public-key work per
application in the band comparison alone (l + 1 DGK zero tests per cutoff) and ~30 ms in the
platform's 50 feature encryptions; two cores cannot reach 100 applications a second that way.
For a batch of k applications of one platform, one bank key and one model version this module
moves every public-key operation to 1/k per application and replaces the DGK comparison with a
half-gates garbled circuit whose per-application cost is symmetric crypto only.

Protocol (notation of :mod:`blindscore.protocol.comparison`; w = ``slot_bits``; slot a < k)
-----------------------------------------------------------------------------------
The model is linear, s = B + sum_j W_j x_j, over encoded columns x_j in [lo_j, hi_j] (public).

1. Platform: for every column j one Paillier ciphertext of X_j = sum_a (x_aj - lo_j) 2^(a w)
   (fresh DJN randomness). Feature j of every application of the batch shares one ciphertext.
   One plaintext scaling multiplies every slot alike, which is all a dot product needs.
2. Bureau: [P] = prod_j [X_j]^(W_j) (signed multi-exponentiation) = [sum_a u_a 2^(a w)] with
   u_a = s_a - B - sum_j W_j lo_j, then adds the public constant and fresh masks
   sum_a (B + sum_j W_j lo_j + C + R_a) 2^(a w) and re-randomises (DJN short exponent). Slot a
   now holds z_a = s_a + C + R_a, exactly the per-application protocol's masked value:
   0 <= z_a < 2^width_bits = 2^(w-1), so the slots neither borrow nor carry, the top (guard) bit
   of every slot is 0 and P < 2^(k w) <= 2^(n_bits - 2) < n: nothing wraps.
   R_a is uniform of m = bitlen(s_max - s_min) + 1 + kappa bits per slot, independently.
3. Bank (one decryption for k applications): P -> z_a (a set guard bit marks the slot faulted:
   it gets a random input and no band, and nothing the bank answers depends on the check) ->
   z'_a = floor(z_a / 2^T) and
   b_a = z'_a mod 2^(l+1). As in :mod:`blindscore.protocol.comparison`, z'_a = x_ak + A_ak with
   A_ak = floor(R_a / 2^T) + gamma_k and 0 < x_ak < 2^(l+1), so
   bit_ak = [sigma_a >= gamma_k] = bit l of ((b_a - a_ak) mod 2^(l+1)), a_ak = A_ak mod 2^(l+1).
4. Garbled circuit (:mod:`blindscore.crypto.garble`): the bureau garbles, for every slot and cutoff,
   bit l of (b_a - a_ak) mod 2^(l+1) with its a_ak as garbler input; the bank obtains the labels
   of its bits b_a by oblivious transfer (:mod:`blindscore.crypto.ot`, IKNP extension over a once-per-
   session base OT), evaluates, and decodes the K output bits of each slot. The bureau sorts the
   cutoffs, so the bits of a slot are 1...1 0...0 and their sum is the band: the bank learns the
   band and nothing else (a non-monotone output is a protocol fault: that slot is stored as
   faulted, and the bank answers the bureau exactly as for any other batch).

What each party sees
--------------------
- Platform: the public spec and ``slot_bits``, which tells it that the model is linear and the
  bit length of its masked score range (about bitlen(s_max - s_min) + 42; the bank learns the
  same as width_bits): nothing of the weights.
- Bureau: k-slot Paillier ciphertexts under the bank's key, and the OT receiver's first message,
  which is pseudorandom (IKNP): nothing about features, scores, bands or the bank's bits.
- Bank: z_a for every slot, each within statistical distance 2^-(kappa+1) of uniform for any
  admissible score (as in the per-application protocol); the garbled circuit and its labels,
  which a simulator produces from the output bits alone (half-gates, semi-honest); the band.
  The truncation carry caveat of :mod:`blindscore.protocol.comparison` applies unchanged.
- Semi-honest, non-colluding parties; a deviating party learns nothing more than an honest one.
  A deviating bureau can garble other functions or break slot promises, but the bank's checks
  (guard bits, monotone outputs) never change its answers, only what it stores (faulted instead
  of a band), and it runs each member at most a few times. A deviating bank can choose other OT
  choice bits, i.e. compare a shifted score: the bureau sends a batch's evaluation round once
  and never runs that batch again, so the bank learns one band-wide interval per member at
  most. A platform that encrypts out-of-range features can spoil the scores of the other
  applications in its own batch (a slot overflows into the next); the bank's guard bits turn
  most such overflows into faulted slots.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, runtime_checkable

from blindscore.crypto import garble
from blindscore.crypto.paillier import KeyPair, PublicKey
from blindscore.errors import InvalidInputError
from blindscore.protocol.comparison import DEFAULT_KAPPA, MIN_KAPPA, _mask_bits, _plan, _width_bits

#: Applications per packed batch at most, whatever the key size allows.
MAX_SLOTS = 64
#: The bank's refusals when it no longer holds what a batch needs (after a restart, an eviction,
#: an expiry): the bureau recognises them and runs the batch's round again from the start.
#: Bytes a batch's garbled round may put in one message (gRPC's limit here is 4 MiB).
MAX_ROUND_BYTES = 3 * 1024 * 1024
SESSION_GONE = "unknown OT session; set up a new one"
#: The bank's checks on a batch: a slot's guard bit (or the whole plaintext) overflowed; a slot's
#: garbled outputs were not monotone.
FAULT_SLOT_GUARD = "slot_guard"
FAULT_GARBLED_OUTPUT = "garbled_output"
SETUP_GONE = "unknown or expired OT setup; start a new one"
TICKET_GONE = "batch ticket not valid here; start the batch again"


# What this module needs of a model, stated here so that the protocol layer does not depend on
# the model layer (models satisfy these structurally; blindscore.models.linear.LinearModel does).


class ColumnLayout(Protocol):
    """The public encoded columns of a feature spec: names, declared bounds and a row check."""

    @property
    def encoded_width(self) -> int: ...
    @property
    def encoded_names(self) -> list[str]: ...
    @property
    def encoded_bounds(self) -> list[tuple[int, int]]: ...
    def check_encoded_row(self, encoded_row: Sequence[int]) -> list[int]: ...


@runtime_checkable
class LinearScore(Protocol):
    """A model whose encrypted score is a public linear form of its encoded columns:
    s_enc = B + sum_j W_j x_j. Only such models are scored in packed batches."""

    name: str

    @property
    def spec(self) -> ColumnLayout: ...
    @property
    def encoded_weights(self) -> list[int]: ...
    @property
    def encoded_intercept(self) -> int: ...
    @property
    def encoded_score_bounds(self) -> tuple[int, int]: ...
    @property
    def encoded_cutoffs(self) -> list[int]: ...
    @property
    def truncate_bits(self) -> int: ...
    @property
    def comparison_bits(self) -> int: ...


def slot_bits_for(model: object, kappa: int = DEFAULT_KAPPA) -> int | None:
    """w for ``model``'s packed batches, or None when the model type has no public linear form
    over its encoded columns and must be scored one by one.

    w = width_bits + 1: one masked score and a guard bit, which the bank checks is 0 in every
    slot, so a score outside its declared bounds is marked faulted instead of spilling into the next.
    """
    if not isinstance(model, LinearScore):
        return None
    plan = _plan(*model.encoded_score_bounds, model.encoded_cutoffs, model.truncate_bits)
    return _width_bits(plan, _mask_bits(plan, kappa)) + 1


def slots_per_batch(slot_bits: int, key_bits: int, max_slots: int = MAX_SLOTS) -> int:
    """How many applications one plaintext of a ``key_bits`` key holds: k w <= n_bits - 2, and
    at most ``max_slots`` (the model's :func:`max_slots_for`)."""
    if slot_bits < 1:
        raise InvalidInputError(f"slot_bits must be positive, got {slot_bits}")
    return min(MAX_SLOTS, max_slots, (key_bits - 2) // slot_bits)


def round_bytes_per_slot(cutoffs: int, bits: int) -> int:
    """Bytes one application adds to a batch's bureau -> bank messages: garbled tables, the
    bureau's input labels, the OT request and reply for its l + 1 bits. A batch adds a fixed
    ``ot.REQUEST_OVERHEAD_BYTES`` (about 3 KB) on top, well inside MAX_ROUND_BYTES's 1 MiB margin
    to the gRPC message limit."""
    width = bits + 1
    return cutoffs * (garble.table_bytes(1, 1, width) + garble.LABEL_BYTES * width) + 3 * 16 * width


def max_slots_for(model: object) -> int:
    """Applications per batch such that its largest message stays within MAX_ROUND_BYTES (models
    with many cutoffs and long comparisons get smaller batches); 0 for a model that is not packed."""
    if not isinstance(model, LinearScore):
        return 0
    per_slot = round_bytes_per_slot(len(model.encoded_cutoffs), model.comparison_bits)
    return max(1, min(MAX_SLOTS, MAX_ROUND_BYTES // per_slot))


# platform ---------------------------------------------------------------------------------


def pack_rows(spec: ColumnLayout, slot_bits: int, rows: Sequence[Sequence[int]], key_bits: int) -> list[int]:
    """The packed plaintexts X_j = sum_a (x_aj - lo_j) 2^(a w), one per encoded column.

    ``rows`` are encoded rows (:meth:`~blindscore.models.features.FeatureSpec.encode_row`); each is
    checked against the declared bounds so that no slot can spill into its neighbour.
    """
    count = len(rows)
    capacity = slots_per_batch(slot_bits, key_bits)
    if not 1 <= count <= capacity:
        raise InvalidInputError(f"a packed batch holds 1..{capacity} applications, got {count}")
    checked = [spec.check_encoded_row(row) for row in rows]
    limit = 1 << slot_bits
    packed: list[int] = []
    for j, (lo, hi) in enumerate(spec.encoded_bounds):
        if hi - lo >= limit:
            raise InvalidInputError(
                f"encoded column {spec.encoded_names[j]!r} spans more than a {slot_bits}-bit slot"
            )
        value = 0
        for a in range(count - 1, -1, -1):
            value = (value << slot_bits) | (checked[a][j] - lo)
        packed.append(value)
    return packed


def encrypt_packed(
    pk: PublicKey, spec: ColumnLayout, slot_bits: int, rows: Sequence[Sequence[int]]
) -> list[Any]:
    """[X_j] for every column: the platform's whole encryption work for a batch."""
    return [pk.encrypt(x) for x in pack_rows(spec, slot_bits, rows, pk.n.bit_length())]


# bureau -----------------------------------------------------------------------------------


def _draw_slot_mask(bits: int) -> int:
    """One slot's mask R_a, uniform of ``bits`` bits (a hook so that the leakage tests can break it)."""
    return secrets.randbits(bits)


@dataclass(frozen=True)
class PackedMasked:
    """Bureau -> bank: one Paillier ciphertext of k masked scores and the public parameters."""

    ciphertext: int
    count: int
    slot_bits: int
    cutoffs: int
    bits: int
    truncate_bits: int

    @property
    def comparison_width(self) -> int:
        """The garbled comparisons' input width, l + 1 bits."""
        return self.bits + 1


class PackedBand:
    """The bureau's side of one packed batch: masked scores, then the garbled comparisons."""

    def __init__(
        self,
        pk: PublicKey,
        model: LinearScore,
        ciphertexts: Sequence[Any],
        count: int,
        slot_bits: int,
        *,
        kappa: int = DEFAULT_KAPPA,
    ) -> None:
        if kappa < MIN_KAPPA:
            raise InvalidInputError(f"kappa = {kappa} is below the minimum of {MIN_KAPPA}")
        spec = model.spec
        if len(ciphertexts) != spec.encoded_width:
            raise InvalidInputError(
                f"model {model.name!r} takes {spec.encoded_width} encrypted features, got {len(ciphertexts)}"
            )
        s_min, s_max = model.encoded_score_bounds
        plan = _plan(s_min, s_max, model.encoded_cutoffs, model.truncate_bits)
        mask_bits = _mask_bits(plan, kappa)
        width = _width_bits(plan, mask_bits) + 1  # and a guard bit: see slot_bits_for
        if slot_bits != width:
            raise InvalidInputError(
                f"the batch was packed with {slot_bits}-bit slots; model {model.name!r} needs {width}"
            )
        capacity = slots_per_batch(width, pk.n.bit_length(), max_slots_for(model))
        if not 1 <= count <= capacity:
            raise InvalidInputError(f"a packed batch holds 1..{capacity} applications, got {count}")
        self._plan = plan
        self.count = count
        self.slot_bits = width
        weights = model.encoded_weights
        lows = [lo for lo, _ in spec.encoded_bounds]
        # z_a = u_a + base + R_a with u_a = sum_j W_j (x_aj - lo_j): see the module docstring.
        base = (
            model.encoded_intercept + sum(w * lo for w, lo in zip(weights, lows, strict=True)) + plan.offset
        )
        self._masks = [_draw_slot_mask(mask_bits) for _ in range(count)]
        # A sum, not an OR: base + R_a may be negative or wider than a slot for odd models;
        # only the final z_a is promised to lie in [0, 2^(w-1)).
        constant = sum((base + r) << (a * width) for a, r in enumerate(self._masks))
        packed = pk.add_plain(pk.dot(ciphertexts, weights), constant)
        self._masked = PackedMasked(
            ciphertext=int(pk.rerandomize(packed)),
            count=count,
            slot_bits=width,
            cutoffs=len(plan.thresholds),
            bits=plan.bits,
            truncate_bits=plan.truncate_bits,
        )

    def __repr__(self) -> str:
        return f"PackedBand(count={self.count}, slot_bits={self.slot_bits}, <masks>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a PackedBand holds the slot masks and cannot be pickled or copied")

    def masked(self) -> PackedMasked:
        return self._masked

    def garbler_values(self) -> list[list[int]]:
        """a_ak = (floor(R_a / 2^T) + gamma_k) mod 2^(l+1), cutoffs in ascending gamma order."""
        t, mod = self._plan.truncate_bits, (1 << (self._plan.bits + 1)) - 1
        gammas = sorted(self._plan.thresholds)
        return [[((r >> t) + g) & mod for g in gammas] for r in self._masks]

    def garble(self) -> tuple[garble.GarbledComparisons, list[tuple[int, int]]]:
        """The garbled comparisons and the label pairs of the bank's input wires (for the OT)."""
        return garble.garble_comparisons(self.garbler_values(), self._plan.bits + 1)


# bank -------------------------------------------------------------------------------------


def _check_params(req: PackedMasked, key_bits: int) -> None:
    if not 1 <= req.bits <= 256:
        raise InvalidInputError(f"comparison bits {req.bits} outside 1..256")
    if not 1 <= req.cutoffs <= garble.MAX_COUNT:
        raise InvalidInputError(f"number of cutoffs {req.cutoffs} outside 1..{garble.MAX_COUNT}")
    if not 0 <= req.truncate_bits < req.slot_bits:
        raise InvalidInputError(f"truncate_bits {req.truncate_bits} outside 0..{req.slot_bits - 1}")
    if req.slot_bits < req.bits + req.truncate_bits + 2:
        raise InvalidInputError(
            f"{req.slot_bits}-bit slots cannot hold l = {req.bits} and T = {req.truncate_bits}"
        )
    capacity = slots_per_batch(req.slot_bits, key_bits)
    if not 1 <= req.count <= capacity:
        raise InvalidInputError(
            f"{req.count} slots of {req.slot_bits} bits do not fit a {key_bits}-bit key (1..{capacity})"
        )


@dataclass(frozen=True)
class OpenedBatch:
    """The bank's view of a batch after its one decryption: every slot's comparison input b_a,
    and which slots broke their promise (a set guard bit or an overflow of the whole plaintext).

    A faulted slot's value is uniformly random, so everything the bank sends on (its OT choices)
    has the same distribution whether or not a slot faulted.
    """

    values: tuple[int, ...]
    faulted: tuple[bool, ...]


def open_packed(keypair: KeyPair, req: PackedMasked) -> OpenedBatch:
    """Decrypt the k masked scores and return each slot's comparison input b_a.

    One CRT decryption for the whole batch. A plaintext wider than its slots, or a slot whose
    guard bit is set (only a broken score bound or a deviating party can cause either), is never
    refused: a refusal would be an oracle on the decrypted value. Such slots are marked faulted
    and get a random input instead; the bank node stores them as faulted, not as bands.
    """
    pk = keypair.public_key
    _check_params(req, pk.n.bit_length())
    plain = keypair.secret_key.decrypt(pk.validate(req.ciphertext))
    w = req.slot_bits
    overflow = plain >> (w * req.count) != 0
    mask = (1 << w) - 1
    guard = 1 << (w - 1)
    low = (1 << (req.bits + 1)) - 1
    decoys = secrets.randbits((req.bits + 1) * req.count)  # one draw, used or not
    values = []
    faulted = []
    for a in range(req.count):
        z = (plain >> (a * w)) & mask
        bad = overflow or z & guard != 0
        decoy = (decoys >> (a * (req.bits + 1))) & low
        values.append(decoy if bad else (z >> req.truncate_bits) & low)
        faulted.append(bad)
    return OpenedBatch(tuple(values), tuple(faulted))


def choice_bits(values: Sequence[int], width: int) -> list[int]:
    """The bank's OT choices: every value's ``width`` bits, LSB first, slot after slot."""
    return [(v >> i) & 1 for v in values for i in range(width)]


def bands_from_bits(outputs: Sequence[Sequence[int]]) -> list[int | None]:
    """Each slot's band from its K comparison bits, which an honest garbling makes read 1...1 0...0;
    None for a slot whose bits do not (a deviating garbler: the bank stores it as faulted)."""
    bands: list[int | None] = []
    for bits in outputs:
        band = sum(bits)
        monotone = list(bits) == [1] * band + [0] * (len(bits) - band)
        bands.append(band if monotone else None)
    return bands
