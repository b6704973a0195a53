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
from blindscore.protocol.comparison import MAX_KAPPA
from blindscore.protocol.slots import MaskedSlots, SlotLayout, SlotMasks, open_slots


def hand_over(keypair: KeyPair, values: list[int], bits: int) -> tuple[SlotMasks, slots.OpenedSlots]:
    pk = keypair.public_key
    layout = SlotLayout(len(values), bits)
    bureau = SlotMasks(pk, [pk.encrypt(v) for v in values], layout)
    return bureau, open_slots(keypair, bureau.request)


def unmask(z: int, r: int, layout: SlotLayout) -> int:
    """What the circuit computes per slot: ((z - r) mod 2^s) >> 1."""
    return ((z - r) % (1 << layout.slot_bits)) >> 1


def test_layout_packs_as_many_slots_as_the_key_holds() -> None:
    layout = SlotLayout(count=100, value_bits=34)
    assert layout.slot_bits == 34 + 1
    assert layout.per_ciphertext(2048) == (2048 - 3 - 40) // 35 == 57
    assert layout.ciphertexts(2048) == 2  # 57 + 43
    assert [len(c) for c in layout.chunks(2048)] == [57, 43]
    assert layout.mask_bits(57) == 57 * 35 + 40


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
    """Found by mutation testing (docs/testing.md): the bounds' upper ends, the mask's margin and
    the key's clear top bits are pinned down."""
    widest = SlotLayout(slots.MAX_VALUES, slots.MAX_VALUE_BITS, MAX_KAPPA)
    assert widest.slot_bits == slots.MAX_VALUE_BITS + 1
    layout = SlotLayout(1, 20)
    s, k = layout.slot_bits, layout.kappa
    assert layout.per_ciphertext(3 + k + s) == 1  # one slot, the margin, a bit for Z's carry, two clear
    assert layout.per_ciphertext(3 + k + 2 * s - 1) == 1
    assert layout.per_ciphertext(3 + k + 2 * s) == 2
    with pytest.raises(InvalidInputError, match=rf"^a {s}-bit slot and a {k}-bit margin do not fit a "):
        layout.per_ciphertext(2 + k + s)


def test_one_mask_per_plaintext_from_the_documented_range(
    paillier_keypair: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R uniform in [0, 2^(k s + kappa)): randbits gets that width, one draw per ciphertext; the
    largest mask and the largest values still decode exactly and raise no fault."""
    widths: list[int] = []

    def randbits(bits: int) -> int:
        widths.append(bits)
        return (1 << bits) - 1

    monkeypatch.setattr(slots.secrets, "randbits", randbits)
    assert slots._draw_mask(77) == 2**77 - 1 and widths == [77]
    monkeypatch.undo()
    widths.clear()
    monkeypatch.setattr(slots, "_draw_mask", randbits)
    bits = 12
    layout = SlotLayout(200, bits)
    per = layout.per_ciphertext(paillier_keypair.public_key.bits)
    values = [2**bits - 1] * 200
    bureau, opened = hand_over(paillier_keypair, values, bits)
    assert widths == [layout.mask_bits(per), layout.mask_bits(200 - per)]
    assert not any(opened.faulted)
    assert [unmask(z, r, layout) for z, r in zip(opened.values, bureau.mask_slots, strict=True)] == values


def test_the_banks_inputs_are_the_slots_of_the_plaintext(paillier_keypair: KeyPair) -> None:
    bits = 10
    values = [0, 1, 2**bits - 1, 517]
    bureau, opened = hand_over(paillier_keypair, values, bits)
    plain = paillier_keypair.secret_key.decrypt(bureau.request.ciphertexts[0])
    s = bureau.layout.slot_bits
    assert list(opened.values) == [(plain >> (a * s)) % (1 << s) for a in range(len(values))]


def test_carries_between_slots_are_absorbed_by_the_spare_bit(
    paillier_keypair: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an all-ones mask every slot but the first receives a carry from below: the slot's
    difference is 2 v + 1 there, and dropping the spare bit still gives v. Negative control: the
    difference read without dropping it is off for exactly those slots."""
    monkeypatch.setattr(slots, "_draw_mask", lambda bits: (1 << bits) - 1)
    bits = 16
    values = [1, 2**bits - 1, 0, 300, 2**bits - 2]
    bureau, opened = hand_over(paillier_keypair, values, bits)
    layout = bureau.layout
    diffs = [(z - r) % (1 << layout.slot_bits) for z, r in zip(opened.values, bureau.mask_slots, strict=True)]
    assert [d >> 1 for d in diffs] == values
    assert [d & 1 for d in diffs] == [0, 1, 1, 1, 1]
    assert [d // 2 + (d & 1) for d in diffs] != values


def opened_plaintext(keypair: KeyPair, layout: SlotLayout, plain: int) -> slots.OpenedSlots:
    """What the bank opens from a ciphertext of ``plain`` that a deviating bureau built."""
    return open_slots(keypair, MaskedSlots((int(keypair.public_key.encrypt(plain)),), layout))


def test_a_plaintext_wider_than_its_mask_faults_every_slot(paillier_keypair: KeyPair) -> None:
    layout = SlotLayout(3, 8)
    top = layout.mask_bits(3)
    assert opened_plaintext(paillier_keypair, layout, (1 << (top + 1)) - 1).faulted == (False,) * 3
    assert opened_plaintext(paillier_keypair, layout, 1 << (top + 1)).faulted == (True,) * 3


def test_a_faulted_slot_carries_a_fresh_random_value(paillier_keypair: KeyPair) -> None:
    """Not its own bits, not all ones, not zero, whatever its position: with s = 65 each of those
    has probability 2^-65 for an honest decoy."""
    bits = 64
    layout = SlotLayout(4, bits)
    s = layout.slot_bits
    own = [5, 6, 7, 8]
    plain = sum(v << (a * s) for a, v in enumerate(own)) | 1 << (layout.mask_bits(4) + 1)
    seen = [opened_plaintext(paillier_keypair, layout, plain) for _ in range(2)]
    low = (1 << s) - 1
    for opened in seen:
        assert opened.faulted == (True,) * 4
        for a, value in enumerate(opened.values):
            assert value not in (own[a], 0, low) and 0 <= value <= low
    assert seen[0].values != seen[1].values


@settings(max_examples=8, deadline=None)
@given(st.integers(1, 60), st.data())
def test_the_circuit_recovers_every_value_from_the_slots(
    paillier_keypair: KeyPair, bits: int, data: st.DataObject
) -> None:
    count = data.draw(st.integers(1, 150))  # several ciphertexts for narrow layouts too
    values = data.draw(st.lists(st.integers(0, 2**bits - 1), min_size=count, max_size=count))
    bureau, opened = hand_over(paillier_keypair, values, bits)
    assert not any(opened.faulted)
    layout = bureau.layout
    assert [unmask(z, r, layout) for z, r in zip(opened.values, bureau.mask_slots, strict=True)] == values
    assert len(bureau.request.ciphertexts) == layout.ciphertexts(paillier_keypair.public_key.bits)


def test_plaintext_offsets_are_added_to_their_own_values(paillier_keypair: KeyPair) -> None:
    """v_j = [x_j] + offset_j: the offsets ride on the mask's plaintext addition, slot by slot."""
    pk = paillier_keypair.public_key
    bits = 20
    xs = [0, 7, 1000, 2**19 - 1] * 60  # 240 values: several ciphertexts, offsets in each
    offsets = [(13 * j) % 2**19 for j in range(len(xs))]
    layout = SlotLayout(len(xs), bits)
    assert layout.ciphertexts(pk.bits) >= 3
    bureau = SlotMasks(pk, [pk.encrypt(x) for x in xs], layout, offsets)
    opened = open_slots(paillier_keypair, bureau.request)
    got = [unmask(z, r, layout) for z, r in zip(opened.values, bureau.mask_slots, strict=True)]
    assert got == [x + o for x, o in zip(xs, offsets, strict=True)]
    with pytest.raises(InvalidInputError, match=r"^the layout declares 240 values, got 3 offsets$"):
        SlotMasks(pk, [pk.encrypt(x) for x in xs], layout, [1, 2, 3])


def test_a_value_beyond_its_bound_spoils_only_its_own_plaintext(paillier_keypair: KeyPair) -> None:
    """A deviating bureau's too-wide value spills into the next slot (a wrong input for that value:
    a result it spoils, never a refusal); far enough, the whole plaintext faults. Other plaintexts
    are unaffected."""
    bits = 8
    layout = SlotLayout(2, bits)
    per = layout.per_ciphertext(paillier_keypair.public_key.bits)
    values = [3, 2 << bits, 5] + [7] * (per - 3) + [9, 11]
    bureau, opened = hand_over(paillier_keypair, values, bits)
    got = [unmask(z, r, bureau.layout) for z, r in zip(opened.values, bureau.mask_slots, strict=True)]
    assert got[0] == 3 and got[1] == 0 and got[2] == 6  # 2 v spills a 2 into the next slot
    assert got[per:] == [9, 11] and not any(opened.faulted)
    huge = [3, 1 << (layout.mask_bits(per) + 1)] + [0] * (per - 2) + [9, 11]
    bureau, opened = hand_over(paillier_keypair, huge, bits)
    assert opened.faulted == (True,) * per + (False, False)
    assert [
        unmask(z, r, bureau.layout) for z, r in zip(opened.values[per:], bureau.mask_slots[per:], strict=True)
    ] == [9, 11]


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
    """How often each of the ``bits + 1`` bits of the bank's input (its slot) is 1, for one value."""
    counts = [0] * (bits + 1)
    for _ in range(trials):
        _, opened = hand_over(keypair, [value] * 20, bits)
        for z in opened.values:
            for i in range(bits + 1):
                counts[i] += (z >> i) & 1
    return counts


def biased_bits(counts: list[int], total: int) -> int:
    """Bits whose frequency of 1 is more than 5 standard deviations from 1/2."""
    sd = (total / 4) ** 0.5
    return sum(abs(c - total / 2) > 5 * sd for c in counts)


def test_the_banks_inputs_look_the_same_for_any_value(
    paillier_keypair: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bank's circuit inputs (the s bits of each slot of Z) have balanced bits for the smallest
    and largest value; negative control: a mask with every slot's bits cleared makes the inputs
    the values themselves (all but the carry bit biased)."""
    bits, trials = 12, 10
    total = trials * 20
    for value in (0, 2**bits - 1):
        assert biased_bits(low_bit_counts(paillier_keypair, value, bits, trials), total) == 0
    rng = random.Random(5)
    s = bits + 1
    monkeypatch.setattr(
        slots, "_draw_mask", lambda width: rng.getrandbits(width) >> (width - 40) << (width - 40)
    )
    assert biased_bits(low_bit_counts(paillier_keypair, 0, bits, trials), total) == s


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
