"""The band protocol's refusals, word for word: which field, which type, which rule.

tests/test_comparison.py checks that each bad input is refused; these pin the whole message, so a
message naming the wrong field or type (or none) fails, and the limits at their exact edges.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import pickle
from typing import Any

import pytest

from blindscore.crypto.dgk import DGKKeyPair
from blindscore.crypto.paillier import KeyPair
from blindscore.errors import InvalidInputError, PreconditionError
from blindscore.protocol.comparison import (
    BandComparison,
    BitsResponse,
    BlindedRequest,
    FinalResponse,
    MaskedRequest,
    answer_blinded,
    answer_masked,
    comparison_bits,
    run_band_protocol,
)

ORDER = "called out of order (a BandComparison is used once, in order)"
UNIT = "ciphertext is not a unit modulo n^2 of this key"


def refusal(error: type[Exception], call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(error) as info:
        call(*args, **kwargs)
    return str(info.value)


def test_parameter_refusals_name_the_field_and_the_type(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    pk, dgk = paillier_keypair.public_key, dgk_keypair.public_key
    ct = pk.encrypt(1)

    def make(*args: Any, **kwargs: Any) -> str:
        return refusal(InvalidInputError, BandComparison, pk, dgk, ct, *args, **kwargs)

    assert make([0], 1.0, 5, 0) == "score bounds must be integers, not float and int"
    assert make([0], 1, 5.0, 0) == "score bounds must be integers, not int and float"
    assert make("12", 1, 5, 0) == "cutoffs must be a sequence of integers, not str"
    assert make([1, 2.0], 1, 5, 0) == "cutoffs[1] must be an integer, not float"
    assert make([0], 1, 5, 0, kappa="40") == "kappa must be an integer, not str"
    assert make([0], 1, 5, 0, kappa=129, _allow_weak_mask_for_tests=True) == "kappa = 129 outside 0..128"
    assert make([0], 1, 5, 0, kappa=-1, _allow_weak_mask_for_tests=True) == "kappa = -1 outside 0..128"
    bad_score = refusal(InvalidInputError, BandComparison, pk, dgk, 0, [0], 1, 5, 0)
    assert bad_score == f"score_ciphertext: {UNIT}"
    assert comparison_bits(0, 100, list(range(64)), 0) == 7  # 64 cutoffs: the most allowed
    assert refusal(InvalidInputError, comparison_bits, 0, 2**257 - 1, [0], 0) == (
        "the score range and cutoffs need l = 257 comparison bits; at most 256 are supported "
        "(narrow the declared ranges, coarsen the precision or truncate more)"
    )


def test_kappa_is_kept_and_passed_through(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    pk, dgk = paillier_keypair.public_key, dgk_keypair.public_key
    assert BandComparison(pk, dgk, pk.encrypt(1), [0], -8, 8, 0).kappa == 40
    assert BandComparison(pk, dgk, pk.encrypt(1), [0], -8, 8, 0, 64).kappa == 64
    message = refusal(
        InvalidInputError, run_band_protocol, paillier_keypair, dgk_keypair, pk.encrypt(1), [0], -8, 8, 0, 39
    )
    assert message.startswith("kappa = 39 is refused")


def test_round_refusals_name_the_message_and_the_field(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    kp, dk = paillier_keypair, dgk_keypair
    bureau = BandComparison(kp.public_key, dk.public_key, kp.public_key.encrypt(2), [0, 9], -100, 155, 0)
    wrong_bits = BitsResponse(bit_ciphertexts=(1,) * 8, high=1)
    assert refusal(PreconditionError, bureau.blinded_request, wrong_bits) == f"blinded_request() {ORDER}"
    assert refusal(PreconditionError, bureau.band_ciphertext, FinalResponse(deltas=(1, 1))) == (
        f"band_ciphertext() {ORDER}"
    )
    masked = bureau.masked_request()
    assert refusal(PreconditionError, bureau.masked_request) == f"masked_request() {ORDER}"
    assert refusal(InvalidInputError, answer_masked, kp, dk.public_key, BlindedRequest(groups=())) == (
        "expected a MaskedRequest, not BlindedRequest"
    )
    bits = answer_masked(kp, dk.public_key, masked)
    assert refusal(InvalidInputError, bureau.blinded_request, FinalResponse(deltas=())) == (
        "expected a BitsResponse, not FinalResponse"
    )
    changes: list[tuple[dict[str, Any], str]] = [
        ({"bit_ciphertexts": bits.bit_ciphertexts[:7]}, "bit_ciphertexts: expected 8 DGK ciphertexts, got 7"),
        ({"bit_ciphertexts": b"\x00" * 8}, "bit_ciphertexts must be a sequence of ciphertexts, not bytes"),
        ({"high": 1.5}, "high must be an integer ciphertext, not float"),
        ({"high": 0}, f"high: {UNIT}"),
    ]
    for change, message in changes:
        bad = dataclasses.replace(bits, **change)
        assert refusal(InvalidInputError, bureau.blinded_request, bad) == message
    blinded = bureau.blinded_request(bits)
    assert refusal(InvalidInputError, answer_blinded, kp.public_key, dk.secret_key, masked) == (
        "expected a BlindedRequest, not MaskedRequest"
    )
    not_groups = BlindedRequest(groups="ab")  # type: ignore[arg-type]
    assert refusal(InvalidInputError, answer_blinded, kp.public_key, dk.secret_key, not_groups) == (
        "groups must be a sequence of ciphertexts, not str"
    )
    final = answer_blinded(kp.public_key, dk.secret_key, blinded)
    assert (
        refusal(InvalidInputError, bureau.band_ciphertext, bits)
        == "expected a FinalResponse, not BitsResponse"
    )
    assert refusal(InvalidInputError, bureau.band_ciphertext, FinalResponse(deltas="ab")) == (  # type: ignore[arg-type]
        "deltas must be a sequence of ciphertexts, not str"
    )
    assert kp.secret_key.decrypt(bureau.band_ciphertext(final)) == 1


def test_sixty_four_cutoffs_run_end_to_end(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    kp = paillier_keypair
    cutoffs = list(range(-32, 32))
    band = run_band_protocol(kp, dgk_keypair, kp.public_key.encrypt(5), cutoffs, -40, 40, 0)
    assert kp.secret_key.decrypt(band) == 38  # cutoffs -32..5


def test_masked_request_type_is_named(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    masked = MaskedRequest(ciphertext=1, count=1, bits=1, truncate_bits=0, width_bits="9")  # type: ignore[arg-type]
    message = refusal(InvalidInputError, answer_masked, paillier_keypair, dgk_keypair.public_key, masked)
    assert message == "width_bits must be an integer, not str"


def test_a_bureau_side_refuses_pickling_and_copying(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    pk = paillier_keypair.public_key
    bureau = BandComparison(pk, dgk_keypair.public_key, pk.encrypt(1), [0], -8, 8, 0)
    for attempt in (pickle.dumps, copy.copy, copy.deepcopy):
        assert refusal(TypeError, attempt, bureau) == (
            "a BandComparison holds its masks and signs and cannot be pickled or copied"
        )


def test_the_default_fault_report_is_an_error_log_line(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    pk = paillier_keypair.public_key
    bureau = BandComparison(pk, dgk_keypair.public_key, pk.encrypt(1), [0], -8, 8, 0)
    masked = dataclasses.replace(bureau.masked_request(), width_bits=bureau.bits + 1)  # z is far wider
    with caplog.at_level(logging.ERROR, logger="blindscore.protocol.comparison"):
        answer_masked(paillier_keypair, dgk_keypair.public_key, masked)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "band protocol fault: masked_range")
    ]


def test_the_declared_width_covers_the_largest_honest_z_and_no_more(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    """Scores far above 0: [10^6, 10^6 + 100], one cutoff, T = 0, kappa = 40. By hand: H = 100,
    gamma = 50, l = 6, C = 2^6 - 10^6, m = 7 + 1 + 40 = 48, so the largest z an honest bureau
    sends is C + s_max + 2^48 - 1 = 2^48 + 163: 49 bits."""
    pk = paillier_keypair.public_key
    lo = 10**6
    bureau = BandComparison(pk, dgk_keypair.public_key, pk.encrypt(lo), [lo + 50], lo, lo + 100, 0)
    assert (bureau.bits, bureau.width_bits) == (6, 49)
