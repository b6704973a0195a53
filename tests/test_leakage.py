"""Leakage: what the bank decrypts does not depend on the score within a band; broken variants are caught.

The bank is instrumented: every ciphertext it receives is decrypted with its own keys, as a
curious bank would, and the plaintexts are compared between two scores in the same band with
two-sample tests. The honest protocol must pass (family-wise false-alarm rate 0.1%, Bonferroni
over the six honest tests); three deliberately broken variants must be caught with p-values
that are astronomically small at these sample sizes, so neither side is flaky in practice.

Parameters: l = 16, cutoffs 0 and 65535, scores 0 and 65534, so both scores are in band 1 while
their differences to each cutoff are almost 2^16 apart, the largest gap the same band allows.
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

BITS = 16
CUTOFFS = (0, 65535)
SCORE_A, SCORE_B = 0, 65534
BAND = 1
RUNS = 200
FAMILY_ALPHA = 1e-3
HONEST_TESTS = 6  # p-values checked against the honest protocol below
HONEST_THRESHOLD = FAMILY_ALPHA / HONEST_TESTS
LEAK_THRESHOLD = 1e-6


@dataclass
class BankView:
    """Everything the bank can decrypt over many runs for one score."""

    z: list[list[int]] = field(default_factory=lambda: [[] for _ in CUTOFFS])  # masked values per cutoff
    delta: list[list[int]] = field(default_factory=lambda: [[] for _ in CUTOFFS])  # round-2 bits per cutoff
    zero_positions: list[int] = field(default_factory=list)  # where a group's zero sits
    nonzero_values: list[int] = field(default_factory=list)  # the other blinded DGK plaintexts


def observe(
    kp: KeyPair,
    dk: DGKKeyPair,
    score: int,
    runs: int,
    *,
    kappa: int = 40,
    rounds: int = 2,
    blinded_plaintexts: bool = True,
) -> BankView:
    """Run the protocol ``runs`` times for ``score`` and record the bank's decryptions."""
    pk, sk, dsk = kp.public_key, kp.secret_key, dk.secret_key
    view = BankView()
    diffs = [score - c for c in CUTOFFS]
    for _ in range(runs):
        bureau = BandComparison(
            pk,
            dk.public_key,
            [pk.encrypt(d) for d in diffs],
            BITS,
            kappa,
            _allow_weak_mask_for_tests=kappa < 40,
        )
        masked = bureau.masked_request()
        (packed,) = masked.ciphertexts
        v = sk.decrypt(packed)
        for k in range(len(CUTOFFS)):
            view.z[k].append((v >> (k * masked.slot_bits)) % 2**masked.slot_bits)
        bits_resp = answer_masked(kp, dk.public_key, masked)
        if rounds == 1:
            continue
        blinded = bureau.blinded_request(bits_resp)
        if blinded_plaintexts:
            for group in blinded.groups:
                for j, c in enumerate(group):
                    m = dsk.decrypt(c)
                    if m == 0:
                        view.zero_positions.append(j)
                    else:
                        view.nonzero_values.append(m)
        final = answer_blinded(pk, dsk, blinded)
        for k, c in enumerate(final.deltas):
            view.delta[k].append(sk.decrypt(c))
        assert sk.decrypt(bureau.band_ciphertext(final)) == BAND
    return view


def delta_p(a: Sequence[int], b: Sequence[int]) -> float:
    table = [[sum(a), len(a) - sum(a)], [sum(b), len(b) - sum(b)]]
    return float(stats.chi2_contingency(table).pvalue)


def position_p(a: Sequence[int], b: Sequence[int]) -> float:
    columns = sorted(set(a) | set(b))
    table = [[a.count(j) for j in columns], [b.count(j) for j in columns]]
    return float(stats.chi2_contingency(table).pvalue)


def ks_p(a: Sequence[int], b: Sequence[int]) -> float:
    return float(stats.ks_2samp(a, b).pvalue)


@pytest.fixture(scope="module")
def honest(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> tuple[BankView, BankView]:
    return (
        observe(paillier_keypair, dgk_keypair, SCORE_A, RUNS),
        observe(paillier_keypair, dgk_keypair, SCORE_B, RUNS),
    )


# ---------------------------------------------------------------- the real protocol


def test_scores_share_a_band() -> None:
    bands = [sum(score >= c for c in CUTOFFS) for score in (SCORE_A, SCORE_B)]
    assert bands == [BAND, BAND]
    assert all(abs(s - c) < 2**BITS for s in (SCORE_A, SCORE_B) for c in CUTOFFS)


def test_masked_values_indistinguishable(honest: tuple[BankView, BankView]) -> None:
    a, b = honest
    for k in range(len(CUTOFFS)):
        assert len(a.z[k]) == len(b.z[k]) == RUNS
        assert ks_p(a.z[k], b.z[k]) > HONEST_THRESHOLD
        # The masks are 40 bits wider than the values: nothing near the bare 17-bit x_k.
        assert min(a.z[k] + b.z[k]) > 2**30


def test_delta_bits_indistinguishable(honest: tuple[BankView, BankView]) -> None:
    a, b = honest
    for k in range(len(CUTOFFS)):
        assert 0 < sum(a.delta[k]) < RUNS and 0 < sum(b.delta[k]) < RUNS
        assert delta_p(a.delta[k], b.delta[k]) > HONEST_THRESHOLD


def test_blinded_values_indistinguishable(honest: tuple[BankView, BankView]) -> None:
    a, b = honest
    # At most one zero per group, and exactly as many zeros as delta bits set.
    assert len(a.zero_positions) == sum(map(sum, a.delta))
    assert len(b.zero_positions) == sum(map(sum, b.delta))
    assert set(a.zero_positions) | set(b.zero_positions) <= set(range(BITS + 1))
    assert position_p(a.zero_positions, b.zero_positions) > HONEST_THRESHOLD
    assert ks_p(a.nonzero_values, b.nonzero_values) > HONEST_THRESHOLD
    assert all(0 < m < 65537 for m in a.nonzero_values + b.nonzero_values)


# ---------------------------------------------------------------- deliberately leaky variants


def test_weak_mask_is_detected(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    """kappa = 0: r_k has only l + 1 bits, so z_k = x_k + r_k shows where x_k lies."""
    a = observe(paillier_keypair, dgk_keypair, SCORE_A, RUNS, kappa=0, rounds=1)
    b = observe(paillier_keypair, dgk_keypair, SCORE_B, RUNS, kappa=0, rounds=1)
    for k in range(len(CUTOFFS)):
        assert ks_p(a.z[k], b.z[k]) < LEAK_THRESHOLD


def _patched(monkeypatch: pytest.MonkeyPatch, name: str, replacement: Callable[..., Any]) -> None:
    assert hasattr(comparison, name)
    monkeypatch.setattr(comparison, name, replacement)


def test_fixed_sign_is_detected(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the random sign s_k, delta_k is the carry bit itself, which depends on the score."""
    _patched(monkeypatch, "_random_sign", lambda: 1)
    a = observe(paillier_keypair, dgk_keypair, SCORE_A, 60, blinded_plaintexts=False)
    b = observe(paillier_keypair, dgk_keypair, SCORE_B, 60, blinded_plaintexts=False)
    for k in range(len(CUTOFFS)):
        assert delta_p(a.delta[k], b.delta[k]) < LEAK_THRESHOLD


def test_unshuffled_groups_are_detected(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the shuffle, the zero's position is the highest bit where alpha_k and beta_k differ."""
    _patched(monkeypatch, "_shuffle", lambda values: None)
    a = observe(paillier_keypair, dgk_keypair, SCORE_A, 100)
    b = observe(paillier_keypair, dgk_keypair, SCORE_B, 100)
    assert position_p(a.zero_positions, b.zero_positions) < LEAK_THRESHOLD
