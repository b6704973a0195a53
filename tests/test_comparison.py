"""Band protocol: correct bands below, at and above every cutoff, packing, refusal of bad messages."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import gmpy2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blindscore import comparison
from blindscore.comparison import (
    BandComparison,
    BitsResponse,
    BlindedRequest,
    FinalResponse,
    MaskedRequest,
    answer_blinded,
    answer_masked,
    run_band_protocol,
)
from blindscore.dgk import DGKKeyPair, DGKPublicKey
from blindscore.errors import InvalidInputError, PreconditionError
from blindscore.paillier import KeyPair, PublicKey, generate_keypair


def band_of(kp: KeyPair, dk: DGKKeyPair, diffs: Sequence[int], bits: int, kappa: int = 40) -> int:
    cts = [kp.public_key.encrypt(d) for d in diffs]
    return kp.secret_key.decrypt(run_band_protocol(kp, dk, cts, bits, kappa))


def expected_band(score: int, cutoffs: Sequence[int]) -> int:
    return sum(score >= c for c in cutoffs)


def run_rounds(
    kp: KeyPair, dk: DGKKeyPair, diffs: Sequence[int], bits: int
) -> tuple[BandComparison, MaskedRequest, BitsResponse, BlindedRequest, FinalResponse]:
    bureau = BandComparison(kp.public_key, dk.public_key, [kp.public_key.encrypt(d) for d in diffs], bits)
    masked = bureau.masked_request()
    bits_resp = answer_masked(kp, dk.public_key, masked)
    blinded = bureau.blinded_request(bits_resp)
    final = answer_blinded(kp.public_key, dk.secret_key, blinded)
    return bureau, masked, bits_resp, blinded, final


# ---------------------------------------------------------------- correctness


@pytest.mark.parametrize("bits", [1, 2, 16, 48])
def test_single_cutoff_edges(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, bits: int) -> None:
    top = 2**bits - 1
    ds = sorted(d for d in {-top, -2, -1, 0, 1, 2, top} if abs(d) <= top)
    got = [band_of(paillier_keypair, dgk_keypair, [d], bits) for d in ds]
    assert got == [int(d >= 0) for d in ds]


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("d", [-(2**20 - 1), -1, 0, 1, 2**20 - 1, 0b1010_1010_1010_1010_1010])
def test_both_sign_branches(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, monkeypatch: pytest.MonkeyPatch, sign: int, d: int
) -> None:
    """Fix the random sign to exercise each branch of Veugen's comparison deterministically."""
    monkeypatch.setattr(comparison, "_random_sign", lambda: sign)
    assert band_of(paillier_keypair, dgk_keypair, [d, -d], 20) == int(d >= 0) + int(-d >= 0)


def test_four_cutoffs_around_each_cutoff(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    cutoffs = [300, 500, 650, 800]
    scores = sorted({c + e for c in cutoffs for e in (-1, 0, 1)} | {0, 299, 801, 4000})
    got = [band_of(paillier_keypair, dgk_keypair, [s - c for c in cutoffs], 12) for s in scores]
    assert got == [expected_band(s, cutoffs) for s in scores]
    assert got[:4] == [0, 0, 1, 1]  # 0, 299, 300, 301: s == c_k counts as at-or-above


def test_eight_cutoffs_with_extremes(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    bits = 32
    top = 2**bits - 1
    diffs = [-top, top, -1, 0, 1, -(2**31), 2**31, 12345]
    assert band_of(paillier_keypair, dgk_keypair, diffs, bits) == 5
    assert band_of(paillier_keypair, dgk_keypair, [-top] * 8, bits) == 0
    assert band_of(paillier_keypair, dgk_keypair, [top] * 8, bits) == 8
    assert band_of(paillier_keypair, dgk_keypair, [0] * 8, bits) == 8


def test_maximum_bit_length(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    top = 2**256 - 1
    bureau, masked, bits_resp, blinded, final = run_rounds(paillier_keypair, dgk_keypair, [-top, top, 0], 256)
    assert masked.slot_bits == 298 and len(masked.ciphertexts) == 1
    assert [len(g) for g in bits_resp.bit_ciphertexts] == [256] * 3
    assert [len(g) for g in blinded.groups] == [257] * 3
    assert paillier_keypair.secret_key.decrypt(bureau.band_ciphertext(final)) == 2


def test_many_cutoffs_split_over_ciphertexts(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    # slot = 48 + 2 + 40 = 90 bits, so a 2048-bit plaintext holds (2048 - 2) // 90 = 22 values.
    diffs = [(-1) ** k * (k * 1_000_003 + k % 2) for k in range(30)]
    bureau, masked, bits_resp, _, final = run_rounds(paillier_keypair, dgk_keypair, diffs, 48)
    assert (masked.count, masked.bits, masked.slot_bits, len(masked.ciphertexts)) == (30, 48, 90, 2)
    assert len(bits_resp.bit_ciphertexts) == 30 and len(final.deltas) == 30
    assert paillier_keypair.secret_key.decrypt(bureau.band_ciphertext(final)) == sum(d >= 0 for d in diffs)


def test_packing_on_a_small_key(dgk_keypair: DGKKeyPair) -> None:
    kp = generate_keypair(512, allow_insecure_for_tests=True)
    diffs = [5, -5, 0, -1, 2**47, -(2**47), 7, 9]
    # (512 - 2) // 90 = 5 values per ciphertext: 8 cutoffs need 2 ciphertexts.
    assert comparison.ciphertext_count(8, kp.public_key.bits, 90) == 2
    assert band_of(kp, dgk_keypair, diffs, 48) == 5


@pytest.mark.parametrize("kappa", [40, 64, 128])
def test_kappa_values(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, kappa: int) -> None:
    assert band_of(paillier_keypair, dgk_keypair, [3, -3, 0], 16, kappa) == 2


@settings(max_examples=40)
@given(
    score=st.integers(0, 2**19 - 1),
    cutoffs=st.lists(st.integers(0, 2**19 - 1), min_size=1, max_size=8),
)
def test_random_scores_and_cutoffs(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, score: int, cutoffs: list[int]
) -> None:
    diffs = [score - c for c in cutoffs]
    assert band_of(paillier_keypair, dgk_keypair, diffs, 20) == expected_band(score, cutoffs)


# ---------------------------------------------------------------- messages


def test_messages_are_plain_integers_of_the_documented_shape(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    bureau, masked, bits_resp, blinded, final = run_rounds(paillier_keypair, dgk_keypair, [1, -1, 0, 7], 48)
    flat = [
        *masked.ciphertexts,
        bits_resp.high_sum,
        *(c for g in bits_resp.bit_ciphertexts for c in g),
        *(c for g in blinded.groups for c in g),
        *final.deltas,
    ]
    assert all(type(c) is int for c in flat)
    assert len(masked.ciphertexts) == 1
    assert [len(g) for g in bits_resp.bit_ciphertexts] == [48] * 4
    assert [len(g) for g in blinded.groups] == [49] * 4
    assert len(final.deltas) == 4
    band = bureau.band_ciphertext(final)
    assert type(band) is int and paillier_keypair.secret_key.decrypt(band) == 3


def test_what_the_bank_decrypts(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    """Each group holds at most one zero, and the bank's delta bits say nothing on their own."""
    diffs = [1, -1, 0, 2**40]
    _, masked, _, blinded, final = run_rounds(paillier_keypair, dgk_keypair, diffs, 48)
    sk = dgk_keypair.secret_key
    for group, delta in zip(blinded.groups, final.deltas, strict=True):
        zeros = sum(sk.is_zero(c) for c in group)
        assert zeros <= 1
        assert zeros == paillier_keypair.secret_key.decrypt(delta)
    # The packed plaintext holds z_k = d_k + 2^48 + r_k in 90-bit slots, never d_k itself.
    v = paillier_keypair.secret_key.decrypt(masked.ciphertexts[0])
    zs = [(v >> (90 * k)) & (2**90 - 1) for k in range(4)]
    assert all(z >= d + 2**48 for z, d in zip(zs, diffs, strict=True))
    assert v < 2 ** (4 * 90)


def test_band_ciphertext_is_rerandomised(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    cts = [paillier_keypair.public_key.encrypt(d) for d in (4, -4)]
    a = run_band_protocol(paillier_keypair, dgk_keypair, cts, 8)
    b = run_band_protocol(paillier_keypair, dgk_keypair, cts, 8)
    assert a != b
    assert paillier_keypair.secret_key.decrypt(a) == paillier_keypair.secret_key.decrypt(b) == 1


# ---------------------------------------------------------------- refusals: bureau side


@pytest.fixture(scope="module")
def diff_cts(paillier_keypair: KeyPair) -> list[int]:
    return [int(paillier_keypair.public_key.encrypt(d)) for d in (3, -3, 0)]


@pytest.mark.parametrize("kappa", [39, 20, 0])
def test_weak_kappa_refused(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, diff_cts: list[int], kappa: int
) -> None:
    with pytest.raises(InvalidInputError, match=f"kappa = {kappa} is refused"):
        BandComparison(paillier_keypair.public_key, dgk_keypair.public_key, diff_cts, 16, kappa)


def test_weak_kappa_needs_the_test_only_flag(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, diff_cts: list[int]
) -> None:
    bc = BandComparison(
        paillier_keypair.public_key, dgk_keypair.public_key, diff_cts, 16, 0, _allow_weak_mask_for_tests=True
    )
    assert bc.masked_request().slot_bits == 18


@pytest.mark.parametrize(
    ("bits", "kappa", "message"),
    [
        (0, 40, r"bits = 0 outside 1\.\.256"),
        (257, 40, r"bits = 257 outside 1\.\.256"),
        (True, 40, "bits must be an integer"),
        (16, 129, r"kappa = 129 outside 40\.\.128"),
        (16, 40.0, "kappa must be an integer"),
    ],
)
def test_bad_parameters_refused(
    paillier_keypair: KeyPair,
    dgk_keypair: DGKKeyPair,
    diff_cts: list[int],
    bits: int,
    kappa: int,
    message: str,
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        BandComparison(paillier_keypair.public_key, dgk_keypair.public_key, diff_cts, bits, kappa)


def test_bad_diffs_refused(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, diff_cts: list[int]) -> None:
    pk, dgk = paillier_keypair.public_key, dgk_keypair.public_key
    with pytest.raises(InvalidInputError, match=r"number of cutoffs 0 outside 1\.\.64"):
        BandComparison(pk, dgk, [], 16)
    with pytest.raises(InvalidInputError, match=r"number of cutoffs 65 outside 1\.\.64"):
        BandComparison(pk, dgk, diff_cts[:1] * 65, 16)
    for bad in (0, int(pk.nsquare), int(pk.n), "123"):
        with pytest.raises(InvalidInputError, match=r"diffs\[1\]"):
            BandComparison(pk, dgk, [diff_cts[0], bad, diff_cts[2]], 16)


def test_bit_length_beyond_headroom_refused(dgk_keypair: DGKKeyPair) -> None:
    p, q = gmpy2.next_prime(3 * 2**126), gmpy2.next_prime(3 * 2**126 + 2**100)
    tiny = PublicKey(p * q, 4, _min_bits=0)  # a 256-bit toy key: room for slots up to 254 bits
    assert tiny.bits == 256
    with pytest.raises(InvalidInputError, match="does not fit below n/4"):
        BandComparison(tiny, dgk_keypair.public_key, [2], 213)  # slot = 213 + 2 + 40 = 255
    assert BandComparison(tiny, dgk_keypair.public_key, [2], 212).slot_bits == 254


def test_bit_length_beyond_dgk_plaintext_space_refused(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    dk = dgk_keypair.public_key
    small_u = DGKPublicKey(dk.n, dk.g, dk.h, 101, dk.t)  # values up to 3 (l + 1) + 2 must stay below u
    ct = [paillier_keypair.public_key.encrypt(1)]
    with pytest.raises(InvalidInputError, match="too long for DGK plaintext space u = 101"):
        BandComparison(paillier_keypair.public_key, small_u, ct, 32)
    assert BandComparison(paillier_keypair.public_key, small_u, ct, 31).bits == 31


def test_rounds_must_run_once_in_order(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    kp, dk = paillier_keypair, dgk_keypair
    bureau = BandComparison(kp.public_key, dk.public_key, [kp.public_key.encrypt(1)], 8)
    with pytest.raises(PreconditionError, match="blinded_request"):
        bureau.blinded_request(BitsResponse(bit_ciphertexts=((1,) * 8,), high_sum=1))
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
    bureau = BandComparison(kp.public_key, dk.public_key, [kp.public_key.encrypt(d) for d in (2, -2)], 8)
    masked = bureau.masked_request()
    return bureau, masked, answer_masked(kp, dk.public_key, masked)


def test_bad_bits_response_refused(
    round_one: tuple[BandComparison, MaskedRequest, BitsResponse], dgk_keypair: DGKKeyPair
) -> None:
    bureau, _, resp = round_one
    groups = resp.bit_ciphertexts
    n = int(dgk_keypair.public_key.n)
    p = int(dgk_keypair.secret_key._export()["p"], 16)
    bad_cases = [
        (dataclasses.replace(resp, bit_ciphertexts=groups[:1]), "expected 2 groups, got 1"),
        (dataclasses.replace(resp, bit_ciphertexts=(groups[0], groups[1][:7])), r"\[1\]: expected 8 DGK"),
        (dataclasses.replace(resp, bit_ciphertexts=(groups[0], (*groups[1][:7], 0))), "not a unit modulo n"),
        (dataclasses.replace(resp, bit_ciphertexts=(groups[0], (*groups[1][:7], n))), "not a unit modulo n"),
        (
            dataclasses.replace(resp, bit_ciphertexts=(groups[0], (*groups[1][:7], 5 * p))),
            "not a unit modulo n",
        ),
        (dataclasses.replace(resp, bit_ciphertexts=b"\x00" * 16), "must be a sequence"),  # type: ignore[arg-type]
        (dataclasses.replace(resp, high_sum=0), "high_sum: ciphertext is not a unit"),
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
    for bad, message in [
        (dataclasses.replace(masked, count=0), r"count = 0 outside 1\.\.64"),
        (dataclasses.replace(masked, count=65), r"count = 65 outside 1\.\.64"),
        (dataclasses.replace(masked, bits=0), r"bits = 0 outside"),
        (dataclasses.replace(masked, bits=257), r"bits = 257 outside"),
        (dataclasses.replace(masked, slot_bits=9), r"slot_bits = 9 outside 10\.\.138"),
        (dataclasses.replace(masked, slot_bits=139), r"slot_bits = 139 outside 10\.\.138"),
        (dataclasses.replace(masked, slot_bits="50"), "slot_bits must be an integer"),  # type: ignore[arg-type]
        (dataclasses.replace(masked, ciphertexts=()), "expected 1 Paillier ciphertexts, got 0"),
        (
            dataclasses.replace(masked, ciphertexts=masked.ciphertexts * 2),
            "expected 1 Paillier ciphertexts, got 2",
        ),
        (dataclasses.replace(masked, ciphertexts=(0,)), "not a unit modulo n"),
        (dataclasses.replace(masked, ciphertexts=(n,)), "not a unit modulo n"),
        (dataclasses.replace(masked, ciphertexts=(n * n + 1,)), "not a unit modulo n"),
        (dataclasses.replace(masked, ciphertexts=(b"\x01",)), "must be an integer ciphertext"),  # type: ignore[arg-type]
    ]:
        with pytest.raises(InvalidInputError, match=message):
            answer_masked(kp, dk, bad)
    with pytest.raises(InvalidInputError, match="expected a MaskedRequest"):
        answer_masked(kp, dk, BlindedRequest(groups=()))  # type: ignore[arg-type]


def test_masked_request_beyond_headroom_refused(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    """30 values of 90 bits need two 2048-bit plaintexts; one ciphertext claiming all 30 is refused."""
    pk = paillier_keypair.public_key
    req = MaskedRequest(ciphertexts=(int(pk.encrypt(1)),), count=30, bits=48, slot_bits=90)
    with pytest.raises(InvalidInputError, match="expected 2 Paillier ciphertexts, got 1"):
        answer_masked(paillier_keypair, dgk_keypair.public_key, req)


def test_broken_promise_detected_by_the_bank(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    """A difference far below -2^l makes z_k negative, which wraps modulo n: the bank refuses it."""
    pk = paillier_keypair.public_key
    bureau = BandComparison(pk, dgk_keypair.public_key, [pk.encrypt(1), pk.encrypt(-(2**100))], 48)
    with pytest.raises(InvalidInputError, match=r"ciphertexts\[0\] holds more than 2 x 90 bits"):
        answer_masked(paillier_keypair, dgk_keypair.public_key, bureau.masked_request())
    too_wide = MaskedRequest(ciphertexts=(int(pk.encrypt(2**180)),), count=2, bits=48, slot_bits=90)
    with pytest.raises(InvalidInputError, match="holds more than 2 x 90 bits"):
        answer_masked(paillier_keypair, dgk_keypair.public_key, too_wide)


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
        (((ok, ok), (ok, 0)), r"groups\[1\]: DGK ciphertext is not a unit"),
        (((ok, n), (ok, ok)), r"groups\[0\]: DGK ciphertext is not a unit"),
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
    bureau = BandComparison(pk, dk.public_key, [pk.encrypt(d) for d in (9, -9, 0)], 8)
    masked = bureau.masked_request()
    assert [out for _, out in seen] == list(masked.ciphertexts)
    final = answer_blinded(
        pk, dk.secret_key, bureau.blinded_request(answer_masked(kp, dk.public_key, masked))
    )
    band = bureau.band_ciphertext(final)
    assert len(smudged) == 1 and smudged[0][1] == band
    before, after = smudged[0]
    assert before != after and kp.secret_key.decrypt(before) == kp.secret_key.decrypt(after) == 2


def test_smudged_rerandomisation_keeps_the_plaintext(paillier_keypair: KeyPair) -> None:
    pk, sk = paillier_keypair.public_key, paillier_keypair.secret_key
    c = pk.encrypt(-17)
    outs = {int(comparison._rerandomize_smudged(pk, c, 4)) for _ in range(5)}
    assert len(outs) == 5 and int(c) not in outs
    assert {sk.decrypt_signed(o) for o in outs} == {-17}
