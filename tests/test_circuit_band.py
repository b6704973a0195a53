"""The garbled-circuit band pipeline (blindscore.protocol.circuit_band), both parties in one process.

Bands: the German credit model through the whole pipeline equals its exact encoded band for every
row. Leakage: what the bank sees for two applications in the same band is indistinguishable, and
each deliberately broken bureau (no mask, mask with its low bits cleared, one mask reused for every
hand-over, a circuit that outputs a comparison result) is caught by the statistic that must catch
it. (A garbler label with a fixed permutation bit, the fourth variant of issue 13, cannot occur any
more: the garbler's inputs are hard-wired and no label of them is sent, which
tests/test_halfgates.py::test_garbler_inputs_are_hard_wired pins down.)
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from blindscore.crypto import ot
from blindscore.crypto.circuit import Bits, CircuitBuilder, to_bits
from blindscore.crypto.paillier import KeyPair
from blindscore.data.german import default_model, load_german_credit
from blindscore.errors import InvalidInputError
from blindscore.models import families
from blindscore.models.linear import LinearModel
from blindscore.protocol import slots
from blindscore.protocol.circuit_band import (
    CircuitBand,
    CircuitShape,
    Family,
    band_circuit,
    evaluate_band,
    open_request,
)
from blindscore.testing import TwoParties

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


def test_german_bands_through_the_circuit_pipeline(paillier_keypair: KeyPair) -> None:
    parties = TwoParties(paillier_keypair)
    rows, _ = load_german_credit()
    for row in rows[:40]:
        expected = MODEL.band_from_encoded(MODEL.spec.encode_row(row))
        assert parties.band(MODEL, MODEL.spec.encode_row(row)) == expected
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


# ---------------------------------------------------------------------- leakage
# The bank's view of one application: the bits of its masked slot (its OT choices), and the garbled
# circuit (tables, decode bits, output tags; the garbler's inputs are hard-wired, so no label of
# them). Two German applicants in the same band, many runs each; every statistic below is one a
# curious bank can compute, and each broken bureau is caught by the statistic aimed at it.

RUNS = 60


@dataclass(frozen=True)
class View:
    choices: int  # the s bits of the slot of Z, as an integer
    low: int  # its lowest 12 bits


def bank_view(keypair: KeyPair, ciphertexts: list[Any]) -> View:
    pk = keypair.public_key
    bureau = CircuitBand(pk, MODEL, families.family("linear"), ciphertexts)
    opened = open_request(keypair, bureau.request)
    choices = sum(bit << i for i, bit in enumerate(opened.choices))
    return View(choices, choices % 4096)


def two_applicants() -> tuple[Mapping[str, object], Mapping[str, object]]:
    """Two German rows in the same band with different scores."""
    rows, _ = load_german_credit()
    by_band: dict[int, list[Mapping[str, object]]] = {}
    for row in rows[:200]:
        by_band.setdefault(MODEL.band(row), []).append(row)
    same = max(by_band.values(), key=len)
    return same[0], same[-1]


def p_same(keypair: KeyPair, statistic: str) -> float:
    """Two-sample KS p-value of ``statistic`` between the two applicants' views."""
    from scipy.stats import ks_2samp

    pk = keypair.public_key
    # Encrypted once each: the bureau re-randomises what it sends, so the bank's view of a run does
    # not depend on the platform's randomness.
    a, b = ([pk.encrypt(x) for x in MODEL.spec.encode_row(row)] for row in two_applicants())
    xs = [getattr(bank_view(keypair, a), statistic) for _ in range(RUNS)]
    ys = [getattr(bank_view(keypair, b), statistic) for _ in range(RUNS)]
    return float(ks_2samp(xs, ys).pvalue)


def low_bits_cleared(bits: int) -> int:
    return secrets.randbits(bits) >> 12 << 12


REUSED_MASK = secrets.randbits(4096)


def reused_mask(bits: int) -> int:
    """One mask drawn once and handed out again (e.g. cached per model): z - z' = v - v'."""
    return REUSED_MASK % (1 << bits)


@pytest.mark.parametrize(
    ("name", "statistic", "target", "attribute", "broken"),
    [
        ("no mask", "low", slots, "_draw_mask", lambda bits: 0),
        ("mask with its low bits cleared", "low", slots, "_draw_mask", low_bits_cleared),
        ("one mask reused for every hand-over", "choices", slots, "_draw_mask", reused_mask),
    ],
)
def test_the_banks_view_is_the_same_for_two_applicants_of_one_band(
    paillier_keypair: KeyPair,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    statistic: str,
    target: object,
    attribute: str,
    broken: object,
) -> None:
    """Honest: the statistic cannot tell the applicants apart; broken: it tells them apart at once."""
    assert p_same(paillier_keypair, statistic) > 1e-3, f"honest run flagged by {statistic}"
    monkeypatch.setattr(target, attribute, broken)
    assert p_same(paillier_keypair, statistic) < 1e-6, f"{name} went undetected"


def test_a_circuit_that_reveals_a_comparison_is_caught_by_the_bank(
    paillier_keypair: KeyPair, ot_pair: OtPair
) -> None:
    """A bureau garbling another circuit (here: one whose first output is [score >= 0] instead of
    the first cutoff) cannot make the bank decode it: the bank evaluates the circuit it rebuilt from
    the public shape: its tables do not fit (InvalidInputError) or its output tags no longer match
    (CryptoError); either is recorded as a protocol fault."""

    def revealing(
        shape: CircuitShape, b: CircuitBuilder, values: list[Bits], secrets_: list[Bits]
    ) -> list[int]:
        honest = families.thermometer(b, values[0], secrets_)
        return [b.less_than(values[0], b.constant(1 << 10, len(values[0])), signed=False), *honest[1:]]

    rows, _ = load_german_credit()
    pk = paillier_keypair.public_key
    ciphertexts = [pk.encrypt(x) for x in MODEL.spec.encode_row(rows[0])]
    honest_family = families.family("linear")
    deviating = Family(build=revealing, secret_widths=honest_family.secret_widths)
    bureau = CircuitBand(pk, MODEL, deviating, ciphertexts)
    opened = open_request(paillier_keypair, bureau.request)
    request = ot_pair.receiver.request(opened.choices)
    garbled, pairs = bureau.garble()
    labels = ot_pair.receiver.receive(request.nonce, opened.choices, ot_pair.sender.reply(request, pairs))
    # Its extra gates do not fit the public shape's table size: refused before any gate is evaluated.
    with pytest.raises(InvalidInputError, match=r"^tables: expected \d+ bytes for this circuit, got \d+$"):
        evaluate_band(bureau.request.shape, honest_family, garbled, labels, bureau.pad)


# ---------------------------------------------------------------------- the linear circuit


def test_the_linear_circuit_removes_its_mask_itself_at_every_wrap() -> None:
    """The linear family's shallow circuit ([z >= A_k] XOR [z >= r] XOR no-wrap, A_k = r + 2 c_k mod
    2^s, computed by the garbler) gives [v >= c_k] for masks that wrap and masks that do not, a
    carry bit from below or none, and cutoffs at 0 and at 2^w (always / never), against the plain
    comparison. The outputs here carry a zero pad."""
    w, cutoffs = 6, 4
    s, modulus = w + 1, 1 << (w + 1)
    shape = CircuitShape("linear", 1, w, cutoffs, ())
    family = families.family("linear")
    assert family.masked is not None
    circuit = band_circuit(shape, family)
    rng = secrets.SystemRandom()
    for c in ([0, 1, 33, 64], [5, 5, 20, 63], [0, 0, 64, 64]):
        for r in [0, 1, modulus - 1, modulus // 2, *(rng.randrange(modulus) for _ in range(4))]:
            for v in range(1 << w):
                for carry in (0, 1):
                    inputs = family.masked.inputs(shape, [r], [(x, s) for x in c])
                    garbler = [bit for value, width in inputs for bit in to_bits(value, width)] + [
                        0
                    ] * cutoffs
                    z = (2 * v + carry + r) % modulus
                    out = circuit.evaluate(garbler, to_bits(z, s))
                    assert out == [int(v >= x) for x in c], (c, r, v, carry)
