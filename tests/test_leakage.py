"""Leakage: what the bank decrypts does not depend on the score within a band; broken variants are caught.

The bank is instrumented: every ciphertext it receives is decrypted with its own keys, as a
curious bank would, and the plaintexts are compared between two scores in the same band with
two-sample tests. Per application the bank sees one masked score z (plus the bits of it it
encrypts itself), one delta bit per cutoff, the blinded DGK values and the band. The honest
protocol must pass (family-wise false-alarm rate 0.1%, Bonferroni over the honest tests); three
deliberately broken variants must be caught with p-values that are astronomically small at these
sample sizes, so neither side is flaky in practice.

Parameters: scores in [0, 2^20 - 1], truncated by T = 4 bits, cutoffs 2^16 and 2^20 - 2^16, so
l = 16. Score A sits 2^7 above the first cutoff and score B 2^7 below the second: both in band 1,
far beyond one truncation step from every cutoff (so the band is deterministic), while their
distances to each cutoff differ by almost the whole range, the largest gap one band allows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from scipy import stats

from blindscore import comparison
from blindscore.comparison import BandComparison, answer_blinded, answer_masked
from blindscore.dgk import DGKKeyPair
from blindscore.paillier import KeyPair

LO, HI = 0, 2**20 - 1
TRUNCATE = 4
CUTOFFS = (2**16, 2**20 - 2**16)
SCORE_A, SCORE_B = 2**16 + 2**7, 2**20 - 2**16 - 2**7
BITS = 16
BAND = 1
RUNS = 150
FAMILY_ALPHA = 1e-3
HONEST_TESTS = 7  # p-values checked against the honest protocol below
HONEST_THRESHOLD = FAMILY_ALPHA / HONEST_TESTS
LEAK_THRESHOLD = 1e-6


@dataclass
class BankView:
    """Everything the bank can decrypt over many runs for one score."""

    z: list[int] = field(default_factory=list)  # the one masked score per run
    delta: list[list[int]] = field(default_factory=lambda: [[] for _ in CUTOFFS])  # round-2 bits per cutoff
    zero_positions: list[list[int]] = field(default_factory=lambda: [[] for _ in CUTOFFS])  # per cutoff
    nonzero_values: list[int] = field(default_factory=list)  # the other blinded DGK plaintexts


def observe(
    kp: KeyPair,
    dk: DGKKeyPair,
    score: int,
    runs: int,
    *,
    kappa: int = 40,
    rounds: int = 2,
    zeros: bool = True,
    nonzero_sample: int = 0,
) -> BankView:
    """Run the protocol ``runs`` times for ``score`` and record the bank's decryptions.

    ``zeros`` records where each group's zero sits; ``nonzero_sample`` decrypts the nonzero
    values among the first that many of each group (a full DGK decryption is a discrete
    logarithm, the slowest step here).
    """
    pk, sk, dsk = kp.public_key, kp.secret_key, dk.secret_key
    view = BankView()
    for _ in range(runs):
        bureau = BandComparison(
            pk,
            dk.public_key,
            pk.encrypt(score),
            CUTOFFS,
            LO,
            HI,
            TRUNCATE,
            kappa,
            _allow_weak_mask_for_tests=kappa < 40,
        )
        masked = bureau.masked_request()
        assert masked.bits == BITS
        view.z.append(sk.decrypt(masked.ciphertext))
        if rounds == 1:
            continue
        blinded = bureau.blinded_request(answer_masked(kp, dk.public_key, masked))
        if zeros:
            for k, group in enumerate(blinded.groups):
                for j, c in enumerate(group):
                    if dsk.is_zero(c):
                        view.zero_positions[k].append(j)
                    elif j < nonzero_sample:
                        view.nonzero_values.append(dsk.decrypt(c))
        final = answer_blinded(pk, dsk, blinded)
        for k, c in enumerate(final.deltas):
            view.delta[k].append(sk.decrypt(c))
        assert sk.decrypt(bureau.band_ciphertext(final)) == BAND
    return view


def counts_p(a: Sequence[int], b: Sequence[int]) -> float:
    """Chi-square test of two samples of a small categorical variable."""
    columns = sorted(set(a) | set(b))
    table = [[list(a).count(j) for j in columns], [list(b).count(j) for j in columns]]
    return float(stats.chi2_contingency(table).pvalue)


def ks_p(a: Sequence[int], b: Sequence[int]) -> float:
    return float(stats.ks_2samp(a, b).pvalue)


def joint(view: BankView) -> list[int]:
    """The delta bits of one run as one category (2^K of them)."""
    return [sum(bit << k for k, bit in enumerate(bits)) for bits in zip(*view.delta, strict=True)]


@pytest.fixture(scope="module")
def honest(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> tuple[BankView, BankView]:
    return (
        observe(paillier_keypair, dgk_keypair, SCORE_A, RUNS, nonzero_sample=6),
        observe(paillier_keypair, dgk_keypair, SCORE_B, RUNS, nonzero_sample=6),
    )


# ---------------------------------------------------------------- the real protocol


def test_parameters() -> None:
    assert comparison.comparison_bits(LO, HI, CUTOFFS, TRUNCATE) == BITS
    bands = [
        comparison.truncated_band(s, CUTOFFS, LO, HI, TRUNCATE, e) for s in (SCORE_A, SCORE_B) for e in (0, 1)
    ]
    assert bands == [BAND] * 4  # both scores, both carries
    assert all(abs(s - c) >= 2**TRUNCATE for s in (SCORE_A, SCORE_B) for c in CUTOFFS)


def test_masked_score_indistinguishable(honest: tuple[BankView, BankView]) -> None:
    a, b = honest
    assert len(a.z) == len(b.z) == RUNS
    assert ks_p(a.z, b.z) > HONEST_THRESHOLD
    # The mask is 41 bits wider than the range of s: nothing near the bare 20-bit score (each
    # z falls below 2^30 with probability 2^-31).
    assert min(a.z + b.z) > 2**30


def test_delta_bits_indistinguishable(honest: tuple[BankView, BankView]) -> None:
    a, b = honest
    for k in range(len(CUTOFFS)):
        assert 0 < sum(a.delta[k]) < RUNS and 0 < sum(b.delta[k]) < RUNS
        assert counts_p(a.delta[k], b.delta[k]) > HONEST_THRESHOLD
    # ... and jointly: the K bits of one application are independent uniform bits.
    assert counts_p(joint(a), joint(b)) > HONEST_THRESHOLD


def test_blinded_values_indistinguishable(honest: tuple[BankView, BankView]) -> None:
    a, b = honest
    for k in range(len(CUTOFFS)):
        # At most one zero per group, and exactly as many zeros as delta bits set.
        assert len(a.zero_positions[k]) == sum(a.delta[k])
        assert len(b.zero_positions[k]) == sum(b.delta[k])
        assert set(a.zero_positions[k]) | set(b.zero_positions[k]) <= set(range(BITS + 1))
        assert counts_p(a.zero_positions[k], b.zero_positions[k]) > HONEST_THRESHOLD
    assert len(a.nonzero_values) > 1500 and len(b.nonzero_values) > 1500
    assert ks_p(a.nonzero_values, b.nonzero_values) > HONEST_THRESHOLD
    assert all(0 < m < 65537 for m in a.nonzero_values + b.nonzero_values)


# ---------------------------------------------------------------- deliberately leaky variants


def test_weak_mask_is_detected(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    """kappa = 0: R has only 21 bits, so z = s + C + R shows where s lies."""
    a = observe(paillier_keypair, dgk_keypair, SCORE_A, RUNS, kappa=0, rounds=1)
    b = observe(paillier_keypair, dgk_keypair, SCORE_B, RUNS, kappa=0, rounds=1)
    assert ks_p(a.z, b.z) < LEAK_THRESHOLD


def _patched(monkeypatch: pytest.MonkeyPatch, name: str, replacement: Callable[..., Any]) -> None:
    assert hasattr(comparison, name)
    monkeypatch.setattr(comparison, name, replacement)


def test_fixed_sign_is_detected(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the random sign s_k, delta_k is the carry bit itself, which depends on the score."""
    _patched(monkeypatch, "_random_sign", lambda: 1)
    a = observe(paillier_keypair, dgk_keypair, SCORE_A, 50, zeros=False)
    b = observe(paillier_keypair, dgk_keypair, SCORE_B, 50, zeros=False)
    for k in range(len(CUTOFFS)):
        assert counts_p(a.delta[k], b.delta[k]) < LEAK_THRESHOLD


def test_unshuffled_groups_are_detected(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the shuffle, the zero's position is the highest bit where alpha_k and beta differ.

    For cutoff k that is where x_k = sigma - gamma_k + 2^l first changes alpha_k: low for A and
    the first cutoff (x_1 = 2^l + 8), high for B (x_1 = 2^l + 57336), and the other way round for
    the second cutoff.
    """
    _patched(monkeypatch, "_shuffle", lambda values: None)
    a = observe(paillier_keypair, dgk_keypair, SCORE_A, 80)
    b = observe(paillier_keypair, dgk_keypair, SCORE_B, 80)
    for k in range(len(CUTOFFS)):
        assert counts_p(a.zero_positions[k], b.zero_positions[k]) < LEAK_THRESHOLD
