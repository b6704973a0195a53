"""Band protocol: parameters, correct bands around every cutoff and at the bounds, messages, refusals."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import gmpy2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blindscore.crypto.dgk import DGKKeyPair, DGKPublicKey
from blindscore.crypto.paillier import KeyPair, PublicKey
from blindscore.errors import InvalidInputError, PreconditionError
from blindscore.protocol import comparison
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
    truncated_band,
)

CUTOFFS = [300, 500, 650, 800]
LO, HI = -1000, 5000


def band_of(
    kp: KeyPair,
    dk: DGKKeyPair,
    score: int,
    cutoffs: Sequence[int],
    lo: int,
    hi: int,
    truncate: int,
    kappa: int = 40,
) -> int:
    ct = kp.public_key.encrypt(score)
    return kp.secret_key.decrypt(run_band_protocol(kp, dk, ct, cutoffs, lo, hi, truncate, kappa))


def exact_band(score: int, cutoffs: Sequence[int]) -> int:
    return sum(score >= c for c in cutoffs)


def possible_bands(score: int, cutoffs: Sequence[int], lo: int, hi: int, truncate: int) -> set[int]:
    """What the protocol may yield: the carry is 0, or 1 when 2^T does not divide score - lo."""
    carries = (0, 1) if (score - lo) % 2**truncate else (0,)
    return {truncated_band(score, cutoffs, lo, hi, truncate, e) for e in carries}


def replaced(message: Any, **changes: Any) -> Any:
    """dataclasses.replace without type checks: the refusal tests need ill-typed fields."""
    return dataclasses.replace(message, **changes)


def far_from_cutoffs(score: int, cutoffs: Sequence[int], truncate: int) -> bool:
    return all(abs(score - c) >= 2**truncate for c in cutoffs)


def run_rounds(
    kp: KeyPair, dk: DGKKeyPair, score: int, cutoffs: Sequence[int], lo: int, hi: int, truncate: int
) -> tuple[BandComparison, MaskedRequest, BitsResponse, BlindedRequest, FinalResponse]:
    bureau = BandComparison(
        kp.public_key, dk.public_key, kp.public_key.encrypt(score), cutoffs, lo, hi, truncate
    )
    masked = bureau.masked_request()
    bits_resp = answer_masked(kp, dk.public_key, masked)
    blinded = bureau.blinded_request(bits_resp)
    final = answer_blinded(kp.public_key, dk.secret_key, blinded)
    return bureau, masked, bits_resp, blinded, final


# ---------------------------------------------------------------- parameters (plain arithmetic)


def test_plan_by_hand() -> None:
    # W = 6000, T = 4: sigma in [0, H] with H = ceil(6000 / 16) = 375; gamma_k = ceil((c + 1000) / 16).
    plan = comparison._plan(LO, HI, CUTOFFS, 4)
    assert plan.thresholds == (82, 94, 104, 113)  # 1300/16 = 81.25 -> 82, 1500/16 = 93.75 -> 94, ...
    assert plan.bits == (375 - 82).bit_length() == 9
    assert plan.offset == 2 ** (9 + 4) + 1000
    assert comparison_bits(LO, HI, CUTOFFS, 4) == 9
    # Without truncation: |s - c| reaches 5000 + 1000 - 1300 = 4700 < 2^13.
    assert comparison_bits(LO, HI, CUTOFFS, 0) == 13
    # Every 4 bits of truncation take about 4 bits off l.
    assert [comparison_bits(0, 2**40, [2**39], t) for t in (0, 4, 8, 20, 39, 40, 41)] == [
        40,
        36,
        32,
        20,
        1,
        1,
        1,
    ]


def test_cutoffs_outside_the_range_do_not_inflate_l() -> None:
    # A cutoff below s_min is reached by every score, one above s_max by none: clamped to 0 and H + 1.
    plan = comparison._plan(0, 1000, [-(10**30), 500, 10**30], 0)
    assert plan.thresholds == (0, 500, 1001)
    assert plan.bits == comparison_bits(0, 1000, [0], 0) == 10
    assert [truncated_band(s, [-(10**30), 500, 10**30], 0, 1000, 0) for s in (0, 499, 500, 1000)] == [
        1,
        1,
        2,
        2,
    ]


def test_l_above_256_refused() -> None:
    with pytest.raises(InvalidInputError, match="need l = 257 comparison bits; at most 256"):
        comparison_bits(0, 2**257 - 1, [0], 0)
    with pytest.raises(InvalidInputError, match="l = 257"):  # T = 1: ceil((2^257 - 1) / 2) = 2^256
        comparison_bits(0, 2**257 - 1, [0], 1)
    assert comparison_bits(0, 2**257 - 1, [0], 2) == 256
    assert comparison_bits(-(2**255), 2**255, [0], 0) == 256  # a centred cutoff needs half the range


@settings(max_examples=300)
@given(
    lo=st.integers(-(2**40), 2**40),
    width=st.integers(0, 2**24),
    cut=st.lists(st.integers(-(2**25), 2**25), min_size=1, max_size=8),
    truncate=st.integers(0, 12),
    at=st.floats(0, 1),
)
def test_truncated_band_is_exact_beyond_one_step(
    lo: int, width: int, cut: list[int], truncate: int, at: float
) -> None:
    """The rounding argument of the module docstring, checked over random parameters."""
    hi = lo + width
    cutoffs = [lo + c for c in cut]
    score = lo + round(at * width)
    bands = possible_bands(score, cutoffs, lo, hi, truncate)
    exact = exact_band(score, cutoffs)
    if truncate == 0 or far_from_cutoffs(score, cutoffs, truncate):
        assert bands == {exact}
    assert all(abs(b - exact) <= sum(abs(score - c) < 2**truncate for c in cutoffs) for b in bands)
    l_bits = comparison_bits(lo, hi, cutoffs, truncate)
    plan = comparison._plan(lo, hi, cutoffs, truncate)
    top = -(-width // 2**truncate)
    assert all(abs(sigma - g) < 2**l_bits for g in plan.thresholds for sigma in (0, top))
    assert l_bits == 1 or any(max(g, top - g) >= 2 ** (l_bits - 1) for g in plan.thresholds)


def test_truncated_band_refusals() -> None:
    with pytest.raises(InvalidInputError, match=r"score = 5001 outside -1000\.\.5000"):
        truncated_band(5001, CUTOFFS, LO, HI, 0)
    with pytest.raises(InvalidInputError, match=r"carry = 2 outside 0\.\.1"):
        truncated_band(0, CUTOFFS, LO, HI, 2, 2)


# ---------------------------------------------------------------- correctness of the protocol


def test_every_cutoff_without_truncation(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    scores = sorted({c + e for c in CUTOFFS for e in (-1, 0, 1)} | {LO, 299, 801, HI})
    got = [band_of(paillier_keypair, dgk_keypair, s, CUTOFFS, LO, HI, 0) for s in scores]
    assert got == [exact_band(s, CUTOFFS) for s in scores]
    assert got[:4] == [0, 0, 1, 1]  # -1000, 299, 300, 301: s == c_k counts as at-or-above


def test_every_cutoff_with_truncation(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    """T = 4: exact one step (16) or more from a cutoff; within a step, one of the two carries."""
    far = sorted({c + e for c in CUTOFFS for e in (-17, -16, 16, 17)} | {LO, HI})
    got = [band_of(paillier_keypair, dgk_keypair, s, CUTOFFS, LO, HI, 4) for s in far]
    assert got == [exact_band(s, CUTOFFS) for s in far]
    near = [c + e for c in CUTOFFS for e in (-15, -1, 0, 15)]
    for s in near:
        assert band_of(paillier_keypair, dgk_keypair, s, CUTOFFS, LO, HI, 4) in possible_bands(
            s, CUTOFFS, LO, HI, 4
        )


@pytest.mark.parametrize("truncate", [0, 3])
def test_scores_at_the_bounds(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, truncate: int) -> None:
    cutoffs = [LO, LO + 8, HI - 8, HI]
    assert band_of(paillier_keypair, dgk_keypair, LO, cutoffs, LO, HI, truncate) == 1
    assert band_of(paillier_keypair, dgk_keypair, HI, cutoffs, LO, HI, truncate) == 4
    assert band_of(paillier_keypair, dgk_keypair, HI, [HI + 1], LO, HI, truncate) == 0
    assert band_of(paillier_keypair, dgk_keypair, LO, [LO - 1], LO, HI, truncate) == 1
    assert band_of(paillier_keypair, dgk_keypair, 7, [7], 7, 7, truncate) == 1  # a one-point range


def test_cutoffs_outside_the_score_range(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    cutoffs = [-(10**40), LO - 1, 500, HI + 1, 10**40]
    for s, want in ((LO, 2), (495, 2), (500, 3), (HI, 3)):  # T = 2: 495 is a step below 500
        assert band_of(paillier_keypair, dgk_keypair, s, cutoffs, LO, HI, 2) == want


@pytest.mark.parametrize("count", [1, 4, 8])
@pytest.mark.parametrize("truncate", [0, 5])
def test_one_four_and_eight_cutoffs(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, count: int, truncate: int
) -> None:
    lo, hi = -(2**30), 2**30
    cutoffs = [lo + (k + 1) * (hi - lo) // (count + 1) for k in range(count)]
    for s in (lo, cutoffs[0] - 2**truncate, cutoffs[-1] + 2**truncate, hi):
        assert band_of(paillier_keypair, dgk_keypair, s, cutoffs, lo, hi, truncate) == exact_band(s, cutoffs)


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("score", [-(2**20) + 1, -1, 0, 1, 2**20 - 1, 0b1010_1010_1010_1010_1010])
def test_both_sign_branches(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, monkeypatch: pytest.MonkeyPatch, sign: int, score: int
) -> None:
    """Fix the random sign to exercise each branch of Veugen's comparison deterministically."""
    monkeypatch.setattr(comparison, "_random_sign", lambda: sign)
    cutoffs = [-1, 0, 1, score]
    got = band_of(paillier_keypair, dgk_keypair, score, cutoffs, -(2**20), 2**20, 0)
    assert got == exact_band(score, cutoffs)


@pytest.mark.parametrize(("mask_low", "carry"), [(0, 0), (15, 1)])
def test_the_carry_comes_from_the_low_bits_of_the_mask(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, mask_low: int, carry: int
) -> None:
    """s just below a cutoff, s - s_min = 16 m + 9: R mod 16 = 0 gives carry 0, R mod 16 = 15 gives 1."""
    kp, dk = paillier_keypair, dgk_keypair
    lo, hi, score, cutoffs = 0, 4095, 16 * 100 + 9, [16 * 101]
    bureau = BandComparison(kp.public_key, dk.public_key, kp.public_key.encrypt(score), cutoffs, lo, hi, 4)
    bureau._mask = (bureau._mask & ~15) | mask_low
    final = answer_blinded(
        kp.public_key,
        dk.secret_key,
        bureau.blinded_request(answer_masked(kp, dk.public_key, bureau.masked_request())),
    )
    band = kp.secret_key.decrypt(bureau.band_ciphertext(final))
    assert band == truncated_band(score, cutoffs, lo, hi, 4, carry) == carry


def test_maximum_bit_length(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    lo, hi = 0, 2**256 - 1
    bureau, masked, bits_resp, blinded, final = run_rounds(
        paillier_keypair, dgk_keypair, 2**255, [0, 2**255 + 1], lo, hi, 0
    )
    assert masked.bits == bureau.bits == 256
    assert len(bits_resp.bit_ciphertexts) == 256
    assert [len(g) for g in blinded.groups] == [257, 257]
    assert paillier_keypair.secret_key.decrypt(bureau.band_ciphertext(final)) == 1


@pytest.mark.parametrize("kappa", [40, 64, 128])
def test_kappa_values(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, kappa: int) -> None:
    # s - s_min = 104 is even, so T = 1 has no carry and the score may sit on a cutoff.
    assert band_of(paillier_keypair, dgk_keypair, 3, [-3, 3, 4], -101, 100, 1, kappa) == 2


@settings(max_examples=25)
@given(
    lo=st.integers(-(2**45), 2**45),
    width=st.integers(0, 2**40),
    cut=st.lists(st.integers(-(2**38), 2**41), min_size=1, max_size=6),
    truncate=st.sampled_from([0, 1, 7, 20]),
    at=st.floats(0, 1),
)
def test_random_scores_match_the_plaintext_decision(
    paillier_keypair: KeyPair,
    dgk_keypair: DGKKeyPair,
    lo: int,
    width: int,
    cut: list[int],
    truncate: int,
    at: float,
) -> None:
    hi = lo + width
    cutoffs = [lo + c for c in cut]
    score = lo + round(at * width)
    band = band_of(paillier_keypair, dgk_keypair, score, cutoffs, lo, hi, truncate)
    assert band in possible_bands(score, cutoffs, lo, hi, truncate)
    if far_from_cutoffs(score, cutoffs, truncate):
        assert band == exact_band(score, cutoffs)


# ---------------------------------------------------------------- messages


def test_messages_are_plain_integers_of_the_documented_shape(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    bureau, masked, bits_resp, blinded, final = run_rounds(
        paillier_keypair, dgk_keypair, 1234, CUTOFFS, LO, HI, 4
    )
    assert (masked.count, masked.bits, masked.truncate_bits) == (4, 9, 4) == (4, bureau.bits, 4)
    assert (
        masked.width_bits
        == bureau.width_bits
        == ((2**13 + 1000 + 5000) + 2 ** (13 + 1 + 40) - 1).bit_length()
    )
    flat = [
        masked.ciphertext,
        bits_resp.high,
        *bits_resp.bit_ciphertexts,
        *(c for g in blinded.groups for c in g),
        *final.deltas,
    ]
    assert all(type(c) is int for c in flat)
    assert len(bits_resp.bit_ciphertexts) == 9
    assert [len(g) for g in blinded.groups] == [10] * 4
    assert len(final.deltas) == 4
    band = bureau.band_ciphertext(final)
    assert type(band) is int and paillier_keypair.secret_key.decrypt(band) == 4


def test_message_sizes_for_four_cutoffs(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    """The byte count documented in the module docstring: 1280 l + 4608 for K = 4 at 2048 bits."""
    pw, dw = paillier_keypair.public_key.ciphertext_bytes, dgk_keypair.public_key.ciphertext_bytes
    assert (pw, dw) == (512, 256)
    bureau, _, bits_resp, blinded, final = run_rounds(paillier_keypair, dgk_keypair, 1234, CUTOFFS, LO, HI, 0)
    l_bits = bureau.bits
    total = (
        pw  # [z]
        + dw * len(bits_resp.bit_ciphertexts)
        + pw  # [z_h]
        + dw * sum(len(g) for g in blinded.groups)
        + pw * len(final.deltas)
        + pw  # [band]
    )
    assert total == 1280 * l_bits + 4608
    assert 1280 * 27 + 4608 == 39_168  # the German model (l = 27)


def test_what_the_bank_decrypts(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    """One masked z per application; each group at most one zero; the delta bits match the groups."""
    score = 777
    bureau, masked, bits_resp, blinded, final = run_rounds(
        paillier_keypair, dgk_keypair, score, CUTOFFS, LO, HI, 4
    )
    plan = comparison._plan(LO, HI, CUTOFFS, 4)
    z = paillier_keypair.secret_key.decrypt(masked.ciphertext)
    assert z == score + plan.offset + bureau._mask
    assert z < 2**masked.width_bits and bureau._mask.bit_length() <= (HI - LO).bit_length() + 1 + 40
    sk = dgk_keypair.secret_key
    beta = (z >> 4) % 2**9
    assert [sk.decrypt(c) for c in bits_resp.bit_ciphertexts] == [(beta >> i) & 1 for i in range(9)]
    assert paillier_keypair.secret_key.decrypt(bits_resp.high) == z >> (4 + 9)
    for group, delta in zip(blinded.groups, final.deltas, strict=True):
        zeros = sum(sk.is_zero(c) for c in group)
        assert zeros <= 1
        assert zeros == paillier_keypair.secret_key.decrypt(delta)


def test_band_ciphertext_is_rerandomised(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    ct = paillier_keypair.public_key.encrypt(4)
    a = run_band_protocol(paillier_keypair, dgk_keypair, ct, [0, 5], -8, 8, 0)
    b = run_band_protocol(paillier_keypair, dgk_keypair, ct, [0, 5], -8, 8, 0)
    assert a != b
    assert paillier_keypair.secret_key.decrypt(a) == paillier_keypair.secret_key.decrypt(b) == 1


# ---------------------------------------------------------------- refusals: bureau side


@pytest.fixture(scope="module")
def score_ct(paillier_keypair: KeyPair) -> int:
    return int(paillier_keypair.public_key.encrypt(123))


@pytest.mark.parametrize("kappa", [39, 20, 0])
def test_weak_kappa_refused(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, score_ct: int, kappa: int
) -> None:
    with pytest.raises(InvalidInputError, match=f"kappa = {kappa} is refused"):
        BandComparison(
            paillier_keypair.public_key, dgk_keypair.public_key, score_ct, CUTOFFS, LO, HI, 0, kappa
        )


def test_weak_kappa_needs_the_test_only_flag(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, score_ct: int
) -> None:
    bc = BandComparison(
        paillier_keypair.public_key,
        dgk_keypair.public_key,
        score_ct,
        [0],
        0,
        2**16 - 1,
        0,
        0,
        _allow_weak_mask_for_tests=True,
    )
    assert bc.bits == 16 and bc.width_bits == 18  # 2^16 offset + 2^16 range + a 17-bit mask


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((CUTOFFS, LO, HI, 0, 129), r"kappa = 129 outside 40\.\.128"),
        ((CUTOFFS, LO, HI, 0, 40.0), "kappa must be an integer"),
        ((CUTOFFS, LO, HI, -1), r"truncate_bits = -1 outside 0\.\.1024"),
        ((CUTOFFS, LO, HI, 1025), r"truncate_bits = 1025 outside 0\.\.1024"),
        ((CUTOFFS, LO, HI, True), "truncate_bits must be an integer"),
        ((CUTOFFS, HI, LO, 0), "score bounds 5000 > -1000"),
        ((CUTOFFS, 0.5, HI, 0), "score bounds must be integers"),
        (([], LO, HI, 0), r"number of cutoffs 0 outside 1\.\.64"),
        (([1] * 65, LO, HI, 0), r"number of cutoffs 65 outside 1\.\.64"),
        (([1, 2.0], LO, HI, 0), r"cutoffs\[1\] must be an integer"),
        (("12", LO, HI, 0), "cutoffs must be a sequence"),
        (([0], 0, 2**257 - 1, 0), "need l = 257 comparison bits"),
    ],
)
def test_bad_parameters_refused(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, score_ct: int, args: tuple[object, ...], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        BandComparison(paillier_keypair.public_key, dgk_keypair.public_key, score_ct, *args)  # type: ignore[arg-type]


def test_bad_score_ciphertext_refused(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    pk, dgk = paillier_keypair.public_key, dgk_keypair.public_key
    for bad in (0, int(pk.nsquare), int(pk.n), "123"):
        with pytest.raises(InvalidInputError, match="score_ciphertext"):
            BandComparison(pk, dgk, bad, CUTOFFS, LO, HI, 0)


def test_width_beyond_headroom_refused(dgk_keypair: DGKKeyPair) -> None:
    p, q = gmpy2.next_prime(3 * 2**126), gmpy2.next_prime(3 * 2**126 + 2**100)
    tiny = PublicKey(p * q, 4, _min_bits=0)  # a 256-bit toy key: z may have up to 254 bits
    assert tiny.bits == 256
    ct = tiny.encrypt(1)
    # Range 2^200 - 1, cutoff 0: l = 200, offset 2^200, mask 200 + 1 + 40 bits: z < 2^242.
    assert BandComparison(tiny, dgk_keypair.public_key, ct, [0], 0, 2**200 - 1, 0).width_bits == 242
    # 2^212 - 1: l = 212, mask 253 bits, z < 2^254: still fits; 2^213 - 1 needs 255 bits.
    assert BandComparison(tiny, dgk_keypair.public_key, ct, [0], 0, 2**212 - 1, 0).width_bits == 254
    with pytest.raises(InvalidInputError, match=r"255-bit masked score .* does not fit below n/4"):
        BandComparison(tiny, dgk_keypair.public_key, ct, [0], 0, 2**213 - 1, 0)


def test_bit_length_beyond_dgk_plaintext_space_refused(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, score_ct: int
) -> None:
    dk = dgk_keypair.public_key
    small_u = DGKPublicKey(dk.n, dk.g, dk.h, 101, dk.t)  # values up to 3 (l + 1) + 2 must stay below u
    pk = paillier_keypair.public_key
    with pytest.raises(InvalidInputError, match="too long for DGK plaintext space u = 101"):
        BandComparison(pk, small_u, score_ct, [0], 0, 2**32 - 1, 0)
    assert BandComparison(pk, small_u, score_ct, [0], 0, 2**31 - 1, 0).bits == 31


def test_rounds_must_run_once_in_order(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    kp, dk = paillier_keypair, dgk_keypair
    bureau = BandComparison(kp.public_key, dk.public_key, kp.public_key.encrypt(1), [0], -8, 8, 0)
    with pytest.raises(PreconditionError, match="blinded_request"):
        bureau.blinded_request(BitsResponse(bit_ciphertexts=(1,) * bureau.bits, high=1))
    masked = bureau.masked_request()
    with pytest.raises(PreconditionError, match="masked_request"):
        bureau.masked_request()
    with pytest.raises(PreconditionError, match="band_ciphertext"):
        bureau.band_ciphertext(FinalResponse(deltas=(1,)))
    blinded = bureau.blinded_request(answer_masked(kp, dk.public_key, masked))
    with pytest.raises(PreconditionError, match="blinded_request"):
        bureau.blinded_request(answer_masked(kp, dk.public_key, masked))
    final = answer_blinded(kp.public_key, dk.secret_key, blinded)
    assert kp.secret_key.decrypt(bureau.band_ciphertext(final)) == 1
    with pytest.raises(PreconditionError, match="band_ciphertext"):
        bureau.band_ciphertext(final)


@pytest.fixture
def round_one(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> tuple[BandComparison, MaskedRequest, BitsResponse]:
    kp, dk = paillier_keypair, dgk_keypair
    bureau = BandComparison(kp.public_key, dk.public_key, kp.public_key.encrypt(2), [0, 9], -100, 155, 0)
    assert bureau.bits == 8
    masked = bureau.masked_request()
    return bureau, masked, answer_masked(kp, dk.public_key, masked)


def test_bad_bits_response_refused(
    round_one: tuple[BandComparison, MaskedRequest, BitsResponse], dgk_keypair: DGKKeyPair
) -> None:
    bureau, _, resp = round_one
    cts = resp.bit_ciphertexts
    n = int(dgk_keypair.public_key.n)
    p = int(dgk_keypair.secret_key._export()["p"], 16)
    bad_cases = [
        (replaced(resp, bit_ciphertexts=cts[:7]), "expected 8 DGK ciphertexts, got 7"),
        (replaced(resp, bit_ciphertexts=(*cts, cts[0])), "expected 8 DGK ciphertexts, got 9"),
        (replaced(resp, bit_ciphertexts=(*cts[:7], 0)), "ciphertext 7 is not a unit modulo n"),
        (replaced(resp, bit_ciphertexts=(n, *cts[1:])), "ciphertext 0 is not a unit modulo n"),
        (replaced(resp, bit_ciphertexts=(*cts[:3], 5 * p, *cts[4:])), "ciphertext 3 is not a unit"),
        (replaced(resp, bit_ciphertexts=(*cts[:7], "1")), "ciphertext 7 must be an integer"),
        (replaced(resp, bit_ciphertexts=b"\x00" * 16), "must be a sequence"),
        (replaced(resp, high=0), "high: ciphertext is not a unit"),
        (replaced(resp, high=1.5), "high must be an integer ciphertext"),
    ]
    for bad, message in bad_cases:
        with pytest.raises(InvalidInputError, match=message):
            bureau.blinded_request(bad)
    with pytest.raises(InvalidInputError, match="expected a BitsResponse"):
        bureau.blinded_request(FinalResponse(deltas=()))  # type: ignore[arg-type]
    # Refusals leave the object usable: the genuine response still completes the protocol.
    assert len(bureau.blinded_request(resp).groups) == 2


def test_bad_final_response_refused(
    paillier_keypair: KeyPair,
    dgk_keypair: DGKKeyPair,
    round_one: tuple[BandComparison, MaskedRequest, BitsResponse],
) -> None:
    bureau, _, resp = round_one
    final = answer_blinded(paillier_keypair.public_key, dgk_keypair.secret_key, bureau.blinded_request(resp))
    nsq = int(paillier_keypair.public_key.nsquare)
    for bad, message in [
        (final.deltas[:1], "expected 2 Paillier ciphertexts, got 1"),
        ((*final.deltas, final.deltas[0]), "expected 2 Paillier ciphertexts, got 3"),
        ((final.deltas[0], nsq), r"deltas\[1\]: ciphertext is not a unit"),
        ((final.deltas[0], -5), r"deltas\[1\]: ciphertext is not a unit"),
    ]:
        with pytest.raises(InvalidInputError, match=message):
            bureau.band_ciphertext(FinalResponse(deltas=bad))
    assert paillier_keypair.secret_key.decrypt(bureau.band_ciphertext(final)) == 1


# ---------------------------------------------------------------- refusals: bank side


def test_bad_masked_request_refused(
    paillier_keypair: KeyPair,
    dgk_keypair: DGKKeyPair,
    round_one: tuple[BandComparison, MaskedRequest, BitsResponse],
) -> None:
    _, masked, _ = round_one
    kp, dk = paillier_keypair, dgk_keypair.public_key
    n = int(kp.public_key.n)
    assert (masked.bits, masked.truncate_bits) == (8, 0)
    for bad, message in [
        (replaced(masked, count=0), r"count = 0 outside 1\.\.64"),
        (replaced(masked, count=65), r"count = 65 outside 1\.\.64"),
        (replaced(masked, count=2.0), "count must be an integer"),
        (replaced(masked, bits=0), r"bits = 0 outside 1\.\.256"),
        (replaced(masked, bits=257), r"bits = 257 outside 1\.\.256"),
        (replaced(masked, truncate_bits=-1), r"truncate_bits = -1 outside 0\.\.1024"),
        (replaced(masked, truncate_bits="0"), "truncate_bits must be an integer"),
        (replaced(masked, width_bits=8), r"width_bits = 8 outside 9\.\.2046"),
        (replaced(masked, width_bits=2047), r"width_bits = 2047 outside 9\.\.2046"),
        (replaced(masked, truncate_bits=40, width_bits=48), r"width_bits = 48 outside 49\.\.2046"),
        (replaced(masked, width_bits=None), "width_bits must be an integer"),
        (replaced(masked, ciphertext=0), "ciphertext: ciphertext is not a unit modulo n"),
        (replaced(masked, ciphertext=n), "ciphertext: ciphertext is not a unit modulo n"),
        (replaced(masked, ciphertext=n * n + 1), "ciphertext: ciphertext is not a unit modulo n"),
        (replaced(masked, ciphertext=b"\x01"), "ciphertext must be an integer ciphertext"),
        (replaced(masked, ciphertext=(masked.ciphertext,)), "must be an integer ciphertext"),
    ]:
        with pytest.raises(InvalidInputError, match=message):
            answer_masked(kp, dk, bad)
    with pytest.raises(InvalidInputError, match="expected a MaskedRequest"):
        answer_masked(kp, dk, BlindedRequest(groups=()))  # type: ignore[arg-type]


def test_z_wider_than_declared_is_a_fault_not_a_refusal(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    """A z outside its declared width is reported as a fault and answered in the normal form, for
    a random z of that width: the bureau sees the same kind of answer either way. Among the
    faults: z = p + small, which half of CRT decryption (z mod p) used to take as in range, the
    window the key-recovery scan searched for."""
    pk = paillier_keypair.public_key
    dk = dgk_keypair.public_key
    p = int(paillier_keypair.secret_key._sk.p)
    for z in (2**60, 2**61 - 1, -1, p, p + 5, p + 2**59):
        faults: list[str] = []
        req = MaskedRequest(ciphertext=int(pk.encrypt(z)), count=1, bits=16, truncate_bits=4, width_bits=60)
        resp = answer_masked(paillier_keypair, dk, req, on_fault=faults.append)
        assert faults == [comparison.FAULT_MASKED_RANGE]
        assert len(resp.bit_ciphertexts) == 16
        # The high part the bank encrypts is that of a random z below 2^60: z_h < 2^(60 - 4 - 16).
        assert 0 <= paillier_keypair.secret_key.decrypt(resp.high) < 2**40
    ok = MaskedRequest(
        ciphertext=int(pk.encrypt(2**60 - 1)), count=1, bits=16, truncate_bits=4, width_bits=60
    )
    faults = []
    resp = answer_masked(paillier_keypair, dk, ok, on_fault=faults.append)
    assert faults == [] and len(resp.bit_ciphertexts) == 16
    assert paillier_keypair.secret_key.decrypt(resp.high) == (2**60 - 1) >> 20


def test_faulted_answer_carries_no_information(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    """For an out-of-range z the DGK bits and the high part are those of a fresh random z: the
    same request twice gives unrelated answers, and they never encode the decrypted value."""
    pk = paillier_keypair.public_key
    sk = dgk_keypair.secret_key
    z = 2**61 + 0xBEEF  # low 16 bits after truncating 4: a fixed pattern the answer must not show
    req = MaskedRequest(ciphertext=int(pk.encrypt(z)), count=1, bits=16, truncate_bits=4, width_bits=60)
    betas = set()
    for _ in range(6):
        resp = answer_masked(paillier_keypair, dgk_keypair.public_key, req, on_fault=lambda _: None)
        bits = [0 if sk.is_zero(c) else 1 for c in resp.bit_ciphertexts]
        betas.add(sum(b << i for i, b in enumerate(bits)))
    assert len(betas) > 1
    assert (z >> 4) & 0xFFFF not in betas


@pytest.mark.parametrize("score", [5000 + 2**80, -1000 - 2**2000])
def test_broken_score_bound_detected_by_the_bank(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, score: int
) -> None:
    """A score far outside its declared bounds gives a z above width_bits (or wrapped mod n): a fault."""
    pk = paillier_keypair.public_key
    bureau = BandComparison(pk, dgk_keypair.public_key, pk.encrypt(score), CUTOFFS, LO, HI, 0)
    faults: list[str] = []
    answer_masked(paillier_keypair, dgk_keypair.public_key, bureau.masked_request(), on_fault=faults.append)
    assert faults == [comparison.FAULT_MASKED_RANGE]


def test_a_group_with_two_zeros_is_a_fault(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    """An honest group holds at most one zero; two are reported, and the answer keeps its form."""
    pk, dk = paillier_keypair.public_key, dgk_keypair.public_key
    zero, one = int(dk.encrypt(0)), int(dk.encrypt(1))
    for groups, expected in [
        (((one, zero, one), (one, one, one)), []),
        (((zero, zero, one),), ["group_zeros"]),
    ]:
        faults: list[str] = []
        resp = answer_blinded(
            pk, dgk_keypair.secret_key, BlindedRequest(groups=groups), on_fault=faults.append
        )
        assert faults == expected
        assert [paillier_keypair.secret_key.decrypt(c) for c in resp.deltas] == [
            int(any(c == zero for c in g)) for g in groups
        ]


def test_bad_blinded_request_refused(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    pk, sk = paillier_keypair.public_key, dgk_keypair.secret_key
    ok = int(dgk_keypair.public_key.encrypt(1))
    n = int(dgk_keypair.public_key.n)
    for bad, message in [
        ((), r"0 groups outside 1\.\.64"),
        (((ok, ok),) * 65, r"65 groups outside 1\.\.64"),
        (((ok,),), r"group size = 1 outside 2\.\.257"),
        (((ok,) * 258,), r"group size = 258 outside 2\.\.257"),
        (((ok, ok, ok), (ok, ok)), r"groups\[1\]: expected 3 DGK ciphertexts, got 2"),
        (((ok, ok), (ok, 0)), r"groups\[1\]: DGK ciphertext 1 is not a unit"),
        (((ok, n), (ok, ok)), r"groups\[0\]: DGK ciphertext 1 is not a unit"),
        (((ok, 1.5),), "must be an integer"),
        ("abc", "must be a sequence"),
    ]:
        with pytest.raises(InvalidInputError, match=message):
            answer_blinded(pk, sk, BlindedRequest(groups=bad))  # type: ignore[arg-type]
    assert len(answer_blinded(pk, sk, BlindedRequest(groups=((ok, ok),))).deltas) == 1


# ---------------------------------------------------------------- re-randomisation of what leaves the bureau


def test_every_outgoing_paillier_ciphertext_is_rerandomised(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    kp, dk = paillier_keypair, dgk_keypair
    pk = kp.public_key
    seen: list[tuple[int, int]] = []
    smudged: list[tuple[int, int]] = []
    plain_rerandomize = PublicKey.rerandomize
    plain_smudge = comparison._rerandomize_smudged

    def spy(self: PublicKey, c: int) -> int:
        out = plain_rerandomize(self, c)
        seen.append((int(c), int(out)))
        return out

    def spy_smudge(key: PublicKey, c: int, count: int) -> int:
        out = plain_smudge(key, c, count)
        smudged.append((int(c), int(out)))
        return out

    monkeypatch.setattr(PublicKey, "rerandomize", spy)
    monkeypatch.setattr(comparison, "_rerandomize_smudged", spy_smudge)
    bureau = BandComparison(pk, dk.public_key, pk.encrypt(8), [-9, 0, 10], -20, 20, 1)
    masked = bureau.masked_request()
    assert [out for _, out in seen] == [masked.ciphertext]
    final = answer_blinded(
        pk, dk.secret_key, bureau.blinded_request(answer_masked(kp, dk.public_key, masked))
    )
    band = bureau.band_ciphertext(final)
    assert len(smudged) == 1 and smudged[0][1] == band
    before, after = smudged[0]
    assert before != after and kp.secret_key.decrypt(before) == kp.secret_key.decrypt(after) == 2


def test_every_outgoing_dgk_value_is_blinded_and_rerandomised(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    kp, dk = paillier_keypair, dgk_keypair
    outputs: list[int] = []
    plain = DGKPublicKey.rerandomize

    def spy(self: DGKPublicKey, c: int) -> int:
        out = plain(self, c)
        outputs.append(int(out))
        return out

    bureau = BandComparison(kp.public_key, dk.public_key, kp.public_key.encrypt(3), [0, 5, 9], -16, 15, 0)
    resp = answer_masked(kp, dk.public_key, bureau.masked_request())
    monkeypatch.setattr(DGKPublicKey, "rerandomize", spy)
    blinded = bureau.blinded_request(resp)
    assert sorted(outputs) == sorted(c for g in blinded.groups for c in g)
    assert len(set(outputs)) == 3 * (bureau.bits + 1)
    assert not set(outputs) & set(resp.bit_ciphertexts)


def test_smudged_rerandomisation_keeps_the_plaintext(paillier_keypair: KeyPair) -> None:
    pk, sk = paillier_keypair.public_key, paillier_keypair.secret_key
    c = pk.encrypt(-17)
    outs = {int(comparison._rerandomize_smudged(pk, c, 4)) for _ in range(5)}
    assert len(outs) == 5 and int(c) not in outs
    assert {sk.decrypt_signed(o) for o in outs} == {-17}


def test_random_units_and_shuffle_are_uniform_in_shape() -> None:
    units = comparison._random_units(2000, 65537)
    assert all(1 <= x <= 65536 for x in units) and len(set(units)) > 1900
    odd = comparison._random_units(2000, 101)  # u - 1 not a power of two: the reduction path
    assert set(odd) <= set(range(1, 101)) and len(set(odd)) == 100
    values = list(range(10))
    seen = set()
    for _ in range(200):
        shuffled = list(values)
        comparison._shuffle(shuffled)
        assert sorted(shuffled) == values
        seen.add(tuple(shuffled))
    assert len(seen) > 190
