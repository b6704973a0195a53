"""packing's own rules at their edges (issue 14's mutation run of blindscore/protocol/packing.py).

Batch sizes and message estimates at the limits, a column spanning exactly a slot, the bank's
parameter checks at each boundary with their text, what the bank takes from each slot (the bits
above the truncation, the decoy of a faulted slot at its own position), the choice-bit order, and
the bureau's refusals. Models here are stand-ins: packing only reads their public linear form.
"""

from __future__ import annotations

import copy
import pickle
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from blindscore.crypto import garble
from blindscore.crypto.paillier import KeyPair
from blindscore.data.german import default_model, load_german_credit
from blindscore.errors import InvalidInputError
from blindscore.protocol import packing
from blindscore.protocol.comparison import _mask_bits, _plan, _width_bits

MODEL = default_model()
ROWS, _ = load_german_credit()


def raises(message: str) -> pytest.RaisesExc[InvalidInputError]:
    return pytest.raises(InvalidInputError, match=f"^{re.escape(message)}$")


@dataclass
class Columns:
    bounds: list[tuple[int, int]]

    @property
    def encoded_width(self) -> int:
        return len(self.bounds)

    @property
    def encoded_names(self) -> list[str]:
        return [f"c{j}" for j in range(len(self.bounds))]

    @property
    def encoded_bounds(self) -> list[tuple[int, int]]:
        return self.bounds

    def check_encoded_row(self, encoded_row: Sequence[int]) -> list[int]:
        return list(encoded_row)


@dataclass
class Linear:
    """A stand-in LinearScore: s = B + sum W_j x_j over ``spec``'s columns."""

    spec: Columns = field(default_factory=lambda: Columns([(-3, 5), (0, 1)]))
    encoded_weights: list[int] = field(default_factory=lambda: [7, -2])
    encoded_intercept: int = 100
    encoded_score_bounds: tuple[int, int] = (77, 135)
    encoded_cutoffs: list[int] = field(default_factory=lambda: [90, 110, 130])
    truncate_bits: int = 0
    comparison_bits: int = 8
    name: str = "toy"


def test_models_without_a_linear_form_are_not_packed() -> None:
    assert packing.slot_bits_for(object()) is None
    assert packing.max_slots_for(object()) == 0
    toy = Linear()
    plan = _plan(77, 135, [90, 110, 130], 0)
    assert packing.slot_bits_for(toy) == _width_bits(plan, _mask_bits(plan, 40)) + 1
    assert packing.slot_bits_for(toy, 60) == _width_bits(plan, _mask_bits(plan, 60)) + 1
    assert packing.slot_bits_for(toy, 60) == packing.slot_bits_for(toy) + 20  # type: ignore[operator]


def test_slots_per_batch_at_its_limits() -> None:
    assert packing.slots_per_batch(1, 2048) == packing.MAX_SLOTS == 64
    assert packing.slots_per_batch(682, 2048) == 3  # 3 * 682 = 2046 = n_bits - 2 exactly
    assert packing.slots_per_batch(683, 2048) == 2
    assert packing.slots_per_batch(100, 2048, 5) == 5
    assert packing.slots_per_batch(100, 2048, 21) == 20
    assert packing.slots_per_batch(1, 2048, 100) == 64  # never above MAX_SLOTS, whatever is asked
    for bad in (0, -1):
        with raises(f"slot_bits must be positive, got {bad}"):
            packing.slots_per_batch(bad, 2048)


def test_round_bytes_per_slot_counts_tables_labels_and_the_ot() -> None:
    # K comparisons of l + 1 bits: (2 (l + 1) - 3) table ciphertexts and l + 1 garbler labels of 16
    # bytes each, plus the OT request and reply for the bank's l + 1 bits (3 x 16 bytes a bit).
    assert packing.round_bytes_per_slot(1, 1) == (1 + 2) * 16 + 48 * 2
    assert packing.round_bytes_per_slot(4, 27) == 4 * (53 * 16 + 28 * 16) + 48 * 28
    assert packing.round_bytes_per_slot(3, 8) == 3 * garble.table_bytes(1, 1, 9) + 3 * 9 * 16 + 48 * 9


def test_max_slots_for_keeps_a_round_within_its_limit_and_at_least_one() -> None:
    per = packing.round_bytes_per_slot(3, 8)
    assert packing.max_slots_for(Linear()) == min(64, packing.MAX_ROUND_BYTES // per) == 64
    big = Linear(encoded_cutoffs=list(range(64)), comparison_bits=256)
    per = packing.round_bytes_per_slot(64, 256)
    assert per == 64 * (511 + 257) * 16 + 48 * 257
    assert packing.max_slots_for(big) == packing.MAX_ROUND_BYTES // per == 3
    huge = Linear(comparison_bits=400_000)  # one slot alone is over the limit: still one
    assert packing.MAX_ROUND_BYTES // packing.round_bytes_per_slot(3, 400_000) == 0
    assert packing.max_slots_for(huge) == 1
    assert packing.MAX_ROUND_BYTES == 3 * 1024 * 1024


def test_pack_rows_takes_a_column_spanning_a_whole_slot_and_no_wider() -> None:
    w = 4
    fits = Columns([(-5, 10), (0, 0)])  # spans 15 = 2^4 - 1
    plain = packing.pack_rows(fits, w, [[10, 0], [-5, 0], [0, 0]], 2048)
    assert plain == [15 | 0 << 4 | 5 << 8, 0]
    wide = Columns([(0, 1), (-5, 11)])
    with raises("encoded column 'c1' spans more than a 4-bit slot"):
        packing.pack_rows(wide, w, [[0, 0]], 2048)
    k = packing.slots_per_batch(w, 2048)
    assert len(packing.pack_rows(fits, w, [[0, 0]] * k, 2048)) == 2
    with raises(f"a packed batch holds 1..{k} applications, got {k + 1}"):
        packing.pack_rows(fits, w, [[0, 0]] * (k + 1), 2048)
    with raises(f"a packed batch holds 1..{k} applications, got 0"):
        packing.pack_rows(fits, w, [], 2048)


def test_the_bank_checks_each_parameter_at_its_edge(paillier_keypair: KeyPair) -> None:
    pk = paillier_keypair.public_key
    ct = int(pk.encrypt(0))

    def opened(count: int, slot_bits: int, cutoffs: int, bits: int, t: int) -> packing.OpenedBatch:
        return packing.open_packed(
            paillier_keypair, packing.PackedMasked(ct, count, slot_bits, cutoffs, bits, t)
        )

    # Accepted at each edge.
    assert opened(1, 258, 1, 256, 0).values == (0,)
    assert opened(2, 40, 64, 8, 30).values == (0, 0)  # 40 = l + T + 2
    assert opened(2, 40, 3, 1, 0).values == (0, 0)  # l = 1
    k = packing.slots_per_batch(40, pk.n.bit_length())
    assert len(opened(k, 40, 3, 8, 0).values) == k
    for args, message in (
        ((1, 300, 1, 257, 0), "comparison bits 257 outside 1..256"),
        ((1, 300, 1, 0, 0), "comparison bits 0 outside 1..256"),
        ((1, 40, 65, 8, 0), "number of cutoffs 65 outside 1..64"),
        ((1, 40, 0, 8, 0), "number of cutoffs 0 outside 1..64"),
        ((1, 40, 3, 8, 40), "truncate_bits 40 outside 0..39"),
        ((1, 40, 3, 8, -1), "truncate_bits -1 outside 0..39"),
        ((1, 40, 3, 8, 31), "40-bit slots cannot hold l = 8 and T = 31"),
        ((k + 1, 40, 3, 8, 0), f"{k + 1} slots of 40 bits do not fit a {pk.n.bit_length()}-bit key (1..{k})"),
        ((0, 40, 3, 8, 0), f"0 slots of 40 bits do not fit a {pk.n.bit_length()}-bit key (1..{k})"),
    ):
        with raises(message):
            opened(*args)


def test_the_bank_takes_the_bits_above_the_truncation_and_decoys_at_their_own_slot(
    paillier_keypair: KeyPair,
) -> None:
    pk = paillier_keypair.public_key
    w, t, bits = 40, 5, 8
    low = (1 << (bits + 1)) - 1
    zs = [0b1_0110_1101_1_10101, (1 << 38) + 12345, 0, (1 << 39) + 7]  # the last one: guard bit set
    plain = sum(z << (a * w) for a, z in enumerate(zs))
    req = packing.PackedMasked(int(pk.encrypt(plain)), 4, w, 3, bits, t)
    last = []
    for _ in range(60):
        batch = packing.open_packed(paillier_keypair, req)
        assert batch.faulted == (False, False, False, True)
        assert batch.values[:3] == tuple((z >> t) & low for z in zs[:3])
        last.append(batch.values[3])
    # The faulted slot's input is uniform over its l + 1 bits: its own 9 bits of the draw.
    assert len(set(last)) > 40 and max(last) >= 256 and max(last) <= low
    # A plaintext wider than its slots faults every slot; the decoys are independent: no bit of one
    # slot's decoy is tied to a bit of the next one's (as overlapping strides of the draw would be).
    over = packing.PackedMasked(int(pk.encrypt(1 << (4 * w))), 4, w, 3, bits, t)
    draws = []
    for _ in range(60):
        batch = packing.open_packed(paillier_keypair, over)
        assert batch.faulted == (True, True, True, True)
        draws.append(batch.values)
    for a in range(3):
        for i in range(bits + 1):
            for j in range(bits + 1):
                assert len({((v[a] >> i) ^ (v[a + 1] >> j)) & 1 for v in draws}) == 2, (a, i, j)
    # Without truncation the bank takes the slot's lowest l + 1 bits, bit 0 included.
    zs = [0b11_0000_0001, 0b1_1111_1111, 0b10_1010_1011]
    req = packing.PackedMasked(int(pk.encrypt(sum(z << (a * w) for a, z in enumerate(zs)))), 3, w, 3, bits, 0)
    assert packing.open_packed(paillier_keypair, req).values == (0b1_0000_0001, 0b1_1111_1111, 0b0_1010_1011)


def test_choice_bits_are_lsb_first_slot_after_slot() -> None:
    assert packing.choice_bits([0b011, 0b100], 3) == [1, 1, 0, 0, 0, 1]
    assert packing.choice_bits([5], 2) == [1, 0]
    assert packing.choice_bits([], 4) == []


def test_bands_from_bits_reads_thermometers_only() -> None:
    assert packing.bands_from_bits([[1], [0], [], [1, 1, 1, 0], [0, 0, 1]]) == [1, 0, 0, 3, None]


def test_the_bureau_refuses_what_it_cannot_pack_with_the_reason(paillier_keypair: KeyPair) -> None:
    pk = paillier_keypair.public_key
    slot_bits = packing.slot_bits_for(MODEL)
    assert slot_bits is not None
    encoded = [MODEL.spec.encode_row(r) for r in ROWS[:2]]
    cts = packing.encrypt_packed(pk, MODEL.spec, slot_bits, encoded)
    k = packing.slots_per_batch(slot_bits, pk.bits, packing.max_slots_for(MODEL))
    width = MODEL.spec.encoded_width
    for c, count, bits, kappa, message in (
        (
            cts,
            2,
            slot_bits + 1,
            40,
            f"the batch was packed with {slot_bits + 1}-bit slots; model {MODEL.name!r} needs {slot_bits}",
        ),
        (
            cts[:-1],
            2,
            slot_bits,
            40,
            f"model {MODEL.name!r} takes {width} encrypted features, got {width - 1}",
        ),
        (cts, 2, slot_bits, 39, "kappa = 39 is below the minimum of 40"),
        (cts, 0, slot_bits, 40, f"a packed batch holds 1..{k} applications, got 0"),
        (cts, k + 1, slot_bits, 40, f"a packed batch holds 1..{k} applications, got {k + 1}"),
    ):
        with raises(message):
            packing.PackedBand(pk, MODEL, c, count, bits, kappa=kappa)
    band = packing.PackedBand(pk, MODEL, cts, 2, slot_bits, kappa=40)
    assert repr(band) == f"PackedBand(count=2, slot_bits={slot_bits}, <masks>)"
    message = "a PackedBand holds the slot masks and cannot be pickled or copied"
    for attempt in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
            attempt(band)


def test_the_bureau_keeps_a_batch_within_the_models_message_limit(paillier_keypair: KeyPair) -> None:
    """A model with many cutoffs and long comparisons gets fewer slots than the key holds."""
    pk = paillier_keypair.public_key
    big = Linear(encoded_score_bounds=(0, 1000), encoded_cutoffs=list(range(1, 65)), comparison_bits=256)
    slot_bits = packing.slot_bits_for(big)
    assert slot_bits is not None
    assert packing.max_slots_for(big) == 3 < packing.slots_per_batch(slot_bits, pk.n.bit_length())
    cts = packing.encrypt_packed(pk, big.spec, slot_bits, [[0, 0]] * 3)
    assert packing.PackedBand(pk, big, cts, 3, slot_bits).count == 3
    with raises("a packed batch holds 1..3 applications, got 4"):
        packing.PackedBand(pk, big, cts, 4, slot_bits)


def test_garbler_values_are_each_masks_truncation_plus_each_threshold_mod_2_to_the_l_plus_1(
    paillier_keypair: KeyPair,
) -> None:
    pk = paillier_keypair.public_key
    slot_bits = packing.slot_bits_for(MODEL)
    assert slot_bits is not None
    cts = packing.encrypt_packed(pk, MODEL.spec, slot_bits, [MODEL.spec.encode_row(r) for r in ROWS[:8]])
    band = packing.PackedBand(pk, MODEL, cts, 8, slot_bits)
    plan = _plan(*MODEL.encoded_score_bounds, MODEL.encoded_cutoffs, MODEL.truncate_bits)
    modulus = 1 << (plan.bits + 1)
    expected = [
        [((r >> plan.truncate_bits) + g) % modulus for g in sorted(plan.thresholds)] for r in band._masks
    ]
    assert band.garbler_values() == expected
    assert {v % 2 for row in expected for v in row} == {0, 1}
