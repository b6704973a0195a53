"""circuit_band's own rules on a toy model, both parties in one process (issue 14's survivors).

A three-value model (two values share their terms, one has none) whose circuit sums the unmasked
values and compares the sum with two secret cutoffs. Small enough to pin every step: the values
the bank's choices stand for, the shared and trivial linear terms, each refusal with its text, the
pad of every round, the bit order of the garbler's inputs and of the pad bytes.
"""

from __future__ import annotations

import copy
import pickle
import re
from dataclasses import dataclass

import numpy as np
import pytest

from blindscore.crypto import ot
from blindscore.crypto.circuit import Bits, CircuitBuilder
from blindscore.crypto.paillier import KeyPair
from blindscore.errors import InvalidInputError
from blindscore.models import families
from blindscore.protocol import circuit_band as cb
from blindscore.protocol.circuit_band import (
    CircuitBand,
    CircuitRequest,
    CircuitShape,
    Family,
    LinearOutput,
    LinearStage,
    MaskedBuild,
)
from blindscore.protocol.slots import MaskedSlots, SlotLayout

W = 4  # value bits
TERMS = ((0, 1), (1, 2))  # x0 + 2 x1


def toy_build(shape: CircuitShape, b: CircuitBuilder, values: list[Bits], secrets_: list[Bits]) -> list[int]:
    return families.thermometer(b, b.sum(values, signed=False), secrets_)


def toy_widths(shape: CircuitShape) -> list[int]:
    return [shape.value_bits + 3] * shape.cutoffs  # the sum of 3 values has w + 2 bits


TOY = Family(build=toy_build, secret_widths=toy_widths)


@dataclass
class Toy:
    """v0 = x0 + 2 x1 + 3, v1 = x0 + 2 x1 + 1 (same terms), v2 = 7 (no terms); band of v0 + v1 + v2."""

    cutoffs: tuple[int, ...] = (21, 31)
    values: int = 3
    value_bits: int = W
    widths: tuple[int, ...] | None = None

    def linear_stage(self) -> LinearStage:
        return LinearStage(
            (LinearOutput(TERMS, 3), LinearOutput(TERMS, 1), LinearOutput((), 7))[: self.values],
            self.value_bits,
        )

    def circuit_shape(self) -> CircuitShape:
        return CircuitShape(
            "toy", values=3, value_bits=W, cutoffs=len(self.cutoffs), params=(("z", 0), ("a", 5))
        )

    def garbler_inputs(self) -> list[tuple[int, int]]:
        widths = self.widths or (W + 3,) * len(self.cutoffs)
        return [(c, w) for c, w in zip(self.cutoffs, widths, strict=True)]


def plain_values(x0: int, x1: int) -> list[int]:
    return [x0 + 2 * x1 + 3, x0 + 2 * x1 + 1, 7]


def band_of(values: list[int], cutoffs: tuple[int, ...]) -> int:
    return sum(sum(values) >= c for c in cutoffs)


@pytest.fixture(scope="module")
def ot_pair() -> tuple[ot.OtSender, ot.OtReceiver]:
    receiver_setup, offer = ot.ReceiverSetup.start()
    sender_setup, choice = ot.SenderSetup.start(offer)
    receiver, reply = receiver_setup.finish(choice)
    return sender_setup.finish(reply), receiver


def bureau_for(keypair: KeyPair, x: tuple[int, int], model: Toy | None = None, **kw: int) -> CircuitBand:
    pk = keypair.public_key
    return CircuitBand(pk, model or Toy(), TOY, [pk.encrypt(v) for v in x], **kw)


def test_the_banks_choices_are_the_masked_values_lsb_first_and_unmask_to_the_linear_stage(
    paillier_keypair: KeyPair,
) -> None:
    bureau = bureau_for(paillier_keypair, (2, 3))
    opened = cb.open_request(paillier_keypair, bureau.request)
    s = W + 1
    assert len(opened.choices) == 3 * s and set(opened.choices) <= {0, 1} and opened.faulted is False
    z = [sum(opened.choices[j * s + i] << i for i in range(s)) for j in range(3)]
    r = bureau._masks.mask_slots
    assert [((zj - rj) % (1 << s)) >> 1 for zj, rj in zip(z, r, strict=True)] == plain_values(2, 3)
    assert bureau.request.shape == Toy().circuit_shape()
    assert bureau.request.masked.layout == SlotLayout(3, W, 40)
    assert bureau_for(paillier_keypair, (2, 3), kappa=57).request.masked.layout.kappa == 57


def test_outputs_with_the_same_terms_share_one_ciphertext_and_no_terms_is_a_zero(
    paillier_keypair: KeyPair,
) -> None:
    pk = paillier_keypair.public_key
    cts = [pk.encrypt(5), pk.encrypt(6)]
    values, offsets = cb.linear_values(pk, Toy().linear_stage(), cts)
    assert values[0] is values[1] and offsets == [3, 1, 7]
    assert [paillier_keypair.secret_key.decrypt(v) for v in values] == [17, 17, 0]


@pytest.mark.parametrize("x", [(0, 0), (4, 4), (2, 3), (4, 3), (1, 2)])
def test_toy_bands_by_both_rounds_and_every_round_has_its_own_pad(
    paillier_keypair: KeyPair, ot_pair: tuple[ot.OtSender, ot.OtReceiver], x: tuple[int, int]
) -> None:
    sender, receiver = ot_pair
    model = Toy()
    expected = band_of(plain_values(*x), model.cutoffs)
    bureau = bureau_for(paillier_keypair, x, model)
    shape = bureau.request.shape
    opened = cb.open_request(paillier_keypair, bureau.request)
    # Round 2 by correlated OT (the nodes' path), six times: a new garbling and pad each time.
    ids: set[bytes] = set()
    for _ in range(6):
        request = receiver.request(opened.choices)
        garbled = bureau.finish(request, sender)
        labels = receiver.receive_correlated(request.nonce, len(opened.choices))
        padded = cb.evaluate_outputs(shape, TOY, garbled, labels)
        assert bureau.last_round == (garbled.garbling_id, bureau.pad)
        bits = np.unpackbits(np.frombuffer(bureau.pad, dtype=np.uint8))[: shape.cutoffs].tolist()
        assert [p ^ q for p, q in zip(padded, bits, strict=True)] == [1] * expected + [0] * (2 - expected)
        assert cb.evaluate_band(shape, TOY, garbled, labels, bureau.pad) == expected
        ids.add(garbled.garbling_id)
    assert len(ids) == 6  # a fresh garbling each round (fresh pads: the round-bits test, K = 9)
    # Round 2 by a plain OT of fresh label pairs.
    request = receiver.request(opened.choices)
    garbled, pairs = bureau.garble()
    plain_labels = receiver.receive(request.nonce, opened.choices, sender.reply(request, pairs))
    assert cb.evaluate_band(shape, TOY, garbled, plain_labels, bureau.pad) == expected


def test_round_bits_are_the_inputs_then_a_fresh_pad_of_k_bits(paillier_keypair: KeyPair) -> None:
    model = Toy(cutoffs=(1, 2, 3, 60, 61, 62, 63, 63, 63))
    bureau = bureau_for(paillier_keypair, (1, 1), model)
    r = bureau._masks.mask_slots
    inputs = cb._bits([(v, W + 1) for v in r] + model.garbler_inputs())
    seen = []
    for _ in range(8):
        bits = bureau._round_bits()
        assert bits.dtype == np.uint8 and len(bits) == len(inputs) + 9
        assert bits[: len(inputs)].tolist() == inputs.tolist()
        pad = bits[len(inputs) :].tolist()
        assert set(pad) <= {0, 1} and bureau.pad == cb.pad_bytes(pad) and len(bureau.pad) == 2
        seen.append(tuple(pad))
    assert len(set(seen)) > 1 and {b for pad in seen for b in pad} == {0, 1}


def test_garbler_bits_are_each_value_lsb_first_and_must_fit_their_width() -> None:
    assert cb._bits([(1, 3), (6, 3), (0, 1), (1, 1)]).tolist() == [1, 0, 0, 0, 1, 1, 0, 1]
    assert cb._bits([(15, 4)]).tolist() == [1, 1, 1, 1]
    for bad in ([(16, 4)], [(-1, 4)], [(1, 0)]):
        with pytest.raises(InvalidInputError, match=r"^a garbler input does not fit its declared width$"):
            cb._bits(bad)


def test_pads_travel_in_packbits_order_and_unpad_decodes_thermometers_only() -> None:
    assert cb.pad_bytes([1, 0, 0, 0, 0, 0, 0, 0, 1]) == b"\x80\x80"
    assert cb.pad_bytes([0, 1, 1]) == b"\x60"
    assert cb.unpad([1, 1, 0], b"\x00") == 2
    assert cb.unpad([0, 0, 1], b"\xe0") == 2  # XOR 1 1 1
    assert cb.unpad([1, 0, 1], b"\x00") is None
    assert cb.unpad([0] * 9, cb.pad_bytes([1] * 9)) == 9
    assert cb.unpad([0] * 9, cb.pad_bytes([1] * 8 + [0])) == 8
    assert cb.unpad([1] * 8, b"\x00") == 8 and cb.unpad([0] * 8, b"\xfe") == 7  # K = 8: one byte
    for padded, pad in (
        ([1, 1, 0], b""),
        ([1, 1, 0], b"\x00\x00"),
        ([0] * 9, b"\x00"),
        ([0] * 8, b"\x00\x00"),
    ):
        k = len(padded)
        message = f"a pad for {k} outputs is {(k + 7) // 8} bytes, got {len(pad)}"
        with pytest.raises(InvalidInputError, match=f"^{re.escape(message)}$"):
            cb.unpad(padded, pad)
    assert cb.band_from_outputs([1, 1, 0, 0]) == 2 and cb.band_from_outputs([0, 1]) is None


def test_shape_cutoffs_and_parameters() -> None:
    for k in (1, 64):
        assert CircuitShape("x", 1, 1, k).cutoffs == k
    for k in (0, 65):
        message = f"a band circuit ends in 1..64 cutoffs, got {k}"
        with pytest.raises(InvalidInputError, match=f"^{re.escape(message)}$"):
            CircuitShape("x", 1, 1, k)
    shape = Toy().circuit_shape()
    assert shape.params == (("a", 5), ("z", 0))
    assert shape.param("a") == 5 and shape.param("z") == 0
    with pytest.raises(InvalidInputError, match=r"^the toy circuit shape has no parameter 'b'$"):
        shape.param("b")


def test_the_bureau_refuses_a_model_that_does_not_match_its_shape_or_family(
    paillier_keypair: KeyPair,
) -> None:
    stage = "^the model's linear stage does not match its circuit shape$"
    for model, message in (
        (Toy(values=2), stage),
        (Toy(value_bits=W + 1), stage),
        (Toy(widths=(W + 3, W + 2)), "^the model's secret inputs do not match its family's declared widths$"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            bureau_for(paillier_keypair, (1, 1), model)

    def wrong_inputs(
        shape: CircuitShape, masks: list[int], secrets_: list[tuple[int, int]]
    ) -> list[tuple[int, int]]:
        return [(m, W + 1) for m in masks]  # one input fewer than declared

    masked = MaskedBuild(widths=lambda shape: [W + 1] * 4, inputs=wrong_inputs, build=toy_build)
    family = Family(build=toy_build, secret_widths=toy_widths, masked=masked)
    pk = paillier_keypair.public_key
    with pytest.raises(
        InvalidInputError, match=r"^the family's round inputs do not match its declared widths$"
    ):
        CircuitBand(pk, Toy(), family, [pk.encrypt(1), pk.encrypt(1)])


def test_no_pad_and_no_round_before_a_garbling_and_no_copies(paillier_keypair: KeyPair) -> None:
    one_cutoff = bureau_for(paillier_keypair, (1, 1), Toy(cutoffs=(21,)))  # K = 1: a 1-bit pad
    bureau = bureau_for(paillier_keypair, (1, 1))
    for b in (one_cutoff, bureau):
        for attribute in ("pad", "last_round"):
            with pytest.raises(InvalidInputError, match=r"^no round has been garbled yet$"):
                getattr(b, attribute)
    bureau.garble()
    assert len(bureau.pad) == 1
    with pytest.raises(InvalidInputError, match=r"^no round has been garbled yet$"):
        bureau.last_round  # noqa: B018 (garble() is not a round the ledger records)
    assert repr(bureau) == "CircuitBand(toy, values=3, <secrets>)"
    message = "^a CircuitBand holds masks and model secrets and cannot be pickled or copied$"
    for attempt in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(TypeError, match=message):
            attempt(bureau)


def test_the_bank_refuses_masked_values_of_another_shape_and_flags_a_faulted_slot(
    paillier_keypair: KeyPair,
) -> None:
    bureau = bureau_for(paillier_keypair, (1, 1))
    masked = bureau.request.masked
    shape = bureau.request.shape
    message = "^the masked values do not match the declared circuit shape$"
    for other in (
        CircuitShape("toy", values=2, value_bits=W, cutoffs=2),
        CircuitShape("toy", values=3, value_bits=W + 1, cutoffs=2),
    ):
        with pytest.raises(InvalidInputError, match=message):
            cb.open_request(paillier_keypair, CircuitRequest(other, masked))
    pk = paillier_keypair.public_key
    wide = MaskedSlots((int(pk.encrypt(1 << (3 * (W + 1) + 41))),), masked.layout)
    opened = cb.open_request(paillier_keypair, CircuitRequest(shape, wide))
    assert opened.faulted is True and len(opened.choices) == 3 * (W + 1)
