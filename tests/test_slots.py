"""Masked slots (blindscore.protocol.slots): the bureau's hand-over of a model's linear stage to the bank."""

from __future__ import annotations

import pickle
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blindscore.crypto.paillier import KeyPair
from blindscore.errors import InvalidInputError
from blindscore.protocol import slots
from blindscore.protocol.slots import MaskedSlots, SlotLayout, SlotMasks, open_slots


def hand_over(keypair: KeyPair, values: list[int], bits: int) -> tuple[SlotMasks, slots.OpenedSlots]:
    pk = keypair.public_key
    layout = SlotLayout(len(values), bits)
    bureau = SlotMasks(pk, [pk.encrypt(v) for v in values], layout)
    return bureau, open_slots(keypair, bureau.request)


def test_layout_packs_as_many_slots_as_the_key_holds() -> None:
    layout = SlotLayout(count=100, value_bits=34)
    assert layout.slot_bits == 34 + 40 + 1
    assert layout.per_ciphertext(2048) == 2046 // 75 == 27
    assert layout.ciphertexts(2048) == 4  # 27 + 27 + 27 + 19


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0, "value_bits": 8}, "count"),
        ({"count": 1, "value_bits": 0}, "value_bits"),
        ({"count": 1, "value_bits": 8, "kappa": 39}, "kappa"),
        ({"count": 1, "value_bits": True}, "value_bits"),
    ],
)
def test_layout_refuses_what_it_cannot_hide(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        SlotLayout(**kwargs)


@settings(max_examples=8, deadline=None)
@given(st.integers(1, 60), st.data())
def test_the_circuit_recovers_every_value_from_the_low_bits(
    paillier_keypair: KeyPair, bits: int, data: st.DataObject
) -> None:
    count = data.draw(st.integers(1, 70))  # several ciphertexts for narrow layouts too
    values = data.draw(st.lists(st.integers(0, 2**bits - 1), min_size=count, max_size=count))
    bureau, opened = hand_over(paillier_keypair, values, bits)
    assert not any(opened.faulted)
    low = (1 << bits) - 1
    assert [(z - r) & low for z, r in zip(opened.values, bureau.low_masks, strict=True)] == values
    assert len(bureau.request.ciphertexts) == bureau.layout.ciphertexts(paillier_keypair.public_key.bits)


def test_a_value_beyond_its_bound_is_faulted_not_refused(paillier_keypair: KeyPair) -> None:
    """2^(w+kappa) sets the guard bit whatever the mask (z < 2^(w+kappa+1) still, so nothing spills):
    the bank marks the slot faulted and carries on with a random input; its neighbours are unaffected."""
    bits = 8
    wide = 1 << (bits + 40)
    bureau, opened = hand_over(paillier_keypair, [3, wide, 5], bits)
    assert opened.faulted == (False, True, False)
    low = (1 << bits) - 1
    assert (opened.values[0] - bureau.low_masks[0]) & low == 3
    assert (opened.values[2] - bureau.low_masks[2]) & low == 5


def test_the_bank_refuses_a_request_of_the_wrong_shape(paillier_keypair: KeyPair) -> None:
    bureau, _ = hand_over(paillier_keypair, [1, 2], 8)
    short = MaskedSlots((), bureau.layout)
    with pytest.raises(InvalidInputError, match="take 1 ciphertexts"):
        open_slots(paillier_keypair, short)


def test_masks_are_not_printable_or_picklable(paillier_keypair: KeyPair) -> None:
    bureau, _ = hand_over(paillier_keypair, [1, 2], 8)
    assert repr(bureau) == "SlotMasks(count=2, value_bits=8, <masks>)"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(bureau)


# ---------------------------------------------------------------------- leakage


def low_bit_counts(keypair: KeyPair, value: int, bits: int, trials: int) -> list[int]:
    """How often each of the low ``bits`` bits of the bank's input is 1, for one value."""
    counts = [0] * bits
    for _ in range(trials):
        _, opened = hand_over(keypair, [value] * 20, bits)
        for z in opened.values:
            for i in range(bits):
                counts[i] += (z >> i) & 1
    return counts


def biased_bits(counts: list[int], total: int) -> int:
    """Bits whose frequency of 1 is more than 5 standard deviations from 1/2."""
    sd = (total / 4) ** 0.5
    return sum(abs(c - total / 2) > 5 * sd for c in counts)


def test_the_banks_inputs_look_the_same_for_any_value(
    paillier_keypair: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bank's circuit inputs (low w bits of z) have balanced bits for the smallest and largest
    value; negative control: masks with their low bits cleared make the inputs equal the values."""
    bits, trials = 12, 10
    total = trials * 20
    for value in (0, 2**bits - 1):
        assert biased_bits(low_bit_counts(paillier_keypair, value, bits, trials), total) == 0
    rng = random.Random(5)
    monkeypatch.setattr(
        slots, "_draw_mask", lambda layout: rng.getrandbits(layout.value_bits + layout.kappa) >> bits << bits
    )
    assert biased_bits(low_bit_counts(paillier_keypair, 0, bits, trials), total) == bits
