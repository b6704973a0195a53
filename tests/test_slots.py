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
from blindscore.protocol.comparison import DEFAULT_KAPPA, MAX_KAPPA
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
        ({"count": 0, "value_bits": 8}, r"^slot layout: count must be an integer in \[1, 65536\], got 0$"),
        ({"count": 1, "value_bits": 0}, r"^slot layout: value_bits must be an integer in \[1, 128\], got 0$"),
        ({"count": 1, "value_bits": 8, "kappa": 39}, r"^slot layout: kappa must be an integer in \[40, "),
        ({"count": 1, "value_bits": True}, r"^slot layout: value_bits must be an integer .* got True$"),
    ],
)
def test_layout_refuses_what_it_cannot_hide(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        SlotLayout(**kwargs)


def test_layout_bounds_are_inclusive_and_slots_fill_the_key_exactly() -> None:
    """Found by mutation testing (docs/testing.md): the bounds' upper ends and the key's two clear
    top bits were not pinned down."""
    widest = SlotLayout(slots.MAX_VALUES, slots.MAX_VALUE_BITS, MAX_KAPPA)
    assert widest.slot_bits == slots.MAX_VALUE_BITS + MAX_KAPPA + 1
    layout = SlotLayout(1, 20)
    s = layout.slot_bits
    assert layout.per_ciphertext(2 + s) == 1  # one slot exactly fills key bits - 2
    assert layout.per_ciphertext(2 + 3 * s - 1) == 2
    assert layout.per_ciphertext(2 + 3 * s) == 3
    with pytest.raises(InvalidInputError, match=rf"^a {s}-bit slot does not fit a {s + 1}-bit key$"):
        layout.per_ciphertext(s + 1)


def test_masks_are_drawn_from_the_documented_range(
    paillier_keypair: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """r_j uniform in [0, 2^(w+kappa) - 2^w]: randbelow gets that range's size, one draw per value."""
    sizes: list[int] = []

    def randbelow(n: int) -> int:
        sizes.append(n)
        return n - 1  # the largest mask: z_j = v_j + r_j must still leave the guard bit clear

    monkeypatch.setattr(slots.secrets, "randbelow", randbelow)
    bits = 12
    values = [0, 2**bits - 1]
    _, opened = hand_over(paillier_keypair, values, bits)
    assert sizes == [(1 << (bits + DEFAULT_KAPPA)) - (1 << bits) + 1] * 2
    assert not any(opened.faulted)


def test_the_values_are_the_low_bits_of_the_masked_values(paillier_keypair: KeyPair) -> None:
    bits = 10
    values = [0, 1, 2**bits - 1, 517]
    bureau, opened = hand_over(paillier_keypair, values, bits)
    plain = paillier_keypair.secret_key.decrypt(bureau.request.ciphertexts[0])
    s = bureau.layout.slot_bits
    z = [(plain >> (a * s)) & ((1 << s) - 1) for a in range(len(values))]
    assert list(opened.values) == [x % (1 << bits) for x in z]  # w bits, not the mask's high bits


def opened_plaintext(keypair: KeyPair, layout: SlotLayout, plain: int) -> slots.OpenedSlots:
    """What the bank opens from a ciphertext of ``plain`` that a deviating bureau built."""
    return open_slots(keypair, MaskedSlots((int(keypair.public_key.encrypt(plain)),), layout))


def test_a_plaintext_wider_than_its_slots_faults_every_slot(paillier_keypair: KeyPair) -> None:
    layout = SlotLayout(3, 8)
    s = layout.slot_bits
    plain = (1 << (3 * s)) | (7 << s) | 5  # no guard bit set, one bit past the last slot
    opened = opened_plaintext(paillier_keypair, layout, plain)
    assert opened.faulted == (True, True, True)


def test_a_faulted_slot_carries_a_fresh_random_value(paillier_keypair: KeyPair) -> None:
    """Not its own low bits, not all ones, not zero, whatever its position: with w = 64 each of
    those has probability 2^-64 for an honest decoy."""
    bits = 64
    layout = SlotLayout(4, bits)
    s = layout.slot_bits
    guard = 1 << (s - 1)
    own = [5, 6, 7, 8]
    plain = sum((guard | v) << (a * s) for a, v in enumerate(own))
    seen = [opened_plaintext(paillier_keypair, layout, plain) for _ in range(2)]
    low = (1 << bits) - 1
    for opened in seen:
        assert opened.faulted == (True,) * 4
        for a, value in enumerate(opened.values):
            assert value not in (own[a], 0, low) and 0 <= value <= low
    assert seen[0].values != seen[1].values


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
    with pytest.raises(InvalidInputError, match=r"^the layout declares 2 values, got 3$"):
        SlotMasks(paillier_keypair.public_key, [paillier_keypair.public_key.encrypt(0)] * 3, bureau.layout)


def test_masks_are_not_printable_or_picklable(paillier_keypair: KeyPair) -> None:
    bureau, _ = hand_over(paillier_keypair, [1, 2], 8)
    assert repr(bureau) == "SlotMasks(count=2, value_bits=8, <masks>)"
    with pytest.raises(TypeError, match=r"^SlotMasks holds the masks and cannot be pickled or copied$"):
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


def test_each_hand_over_is_re_randomised(paillier_keypair: KeyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bank (or anyone) reads c mod n = r^n mod n of a ciphertext without a key: masks add
    (1 + m n) factors, which leave it unchanged. Honest hand-overs of the same encrypted values are
    unlinkable that way; without the re-randomisation (negative control) they are linked at once."""
    pk = paillier_keypair.public_key
    layout = SlotLayout(3, 8)
    values = [pk.encrypt(v) for v in (1, 2, 3)]
    n = int(pk.n)

    def residues() -> list[int]:
        return [int(SlotMasks(pk, values, layout).request.ciphertexts[0]) % n for _ in range(2)]

    first, second = residues()
    assert first != second
    monkeypatch.setattr(type(pk), "rerandomize", lambda self, c: c)
    first, second = residues()
    assert first == second
