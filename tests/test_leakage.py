"""Leakage of the per-application band protocol: within a band, the bank's view does not depend on the score.

The bank is instrumented as a curious bank: every ciphertext it receives is decrypted with its
own keys directly (not through ``answer_masked`` / ``answer_blinded``, which may change), and
the plaintexts are tested against the distribution the honest protocol promises, for several
scores of one band. What the bank sees per application, and the statistic over it:

1. Round 1, [z] with z = s + C + R. "masked value residues": z mod 2^j for EVERY j = 1 .. m
   (m = 61, the width of R) is uniform on 2^j values for each score: one jittered KS test per j,
   and exact binomial tests of every XOR of the low 4 bits, which check z mod 2^j for j <= 4
   jointly, as a chi-square test would (leakage_stats explains why every p-value is exact or
   conservative at these tiny levels).
2. Its own [[beta_i]] and [z_h]: functions of z, nothing to test.
3. Round 2, one group of l + 1 blinded DGK values per cutoff; every value is decrypted
   (``DGKSecretKey.decrypt``, a discrete log in the order-u group). All tests are PER CUTOFF,
   never pooled over cutoffs: the two cutoffs' groups of a score near one cutoff and of a score
   near the other are close to mirror images, so pooling hides a leak that shows in each group.
   - "round-2 zeros and deltas": at most one zero per group (asserted), and delta_k = [group k
     holds a zero] is a fair bit for each score and cutoff (exact binomial), jointly uniform over
     the 2^K patterns (the XOR of the K bits fair as well).
   - "zero positions": the zero's position in its group is uniform on l + 1 places (jittered KS
     and the fullest-cell test per score and cutoff) and alike for every pair of scores (jittered
     two-sample KS per cutoff).
   - "nonzero blinded values": uniform on Z_u^* = {1 .. u-1} per score and cutoff (jittered KS),
     and alike for every pair of scores per cutoff.
4. The band: the same for every run (asserted; the scores are far from every cutoff).
5. "band randomness", the randomness of [band]. The bank knows the factorisation, so it can take
   the n-th root of every ciphertext's randomness; an unbounded bank also gets its discrete
   logarithm E (the exponent of hs in [band]), and it knows the exponents e_h of its own [z_h]
   and e_k of its own [delta_k]. E = K e_h + sum_k s_k e_k + R with the bureau's secret signs s_k
   and its re-randomisation exponent R. For a sign guess sigma the bank computes
   W(sigma) = E - K e_h - sum_k sigma_k e_k = R + sum_k (s_k - sigma_k) e_k and calls sigma
   consistent when 0 <= W < 2^r_bits (a plain DJN exponent). With plain re-randomisation the true
   signs are always consistent and mostly the only ones: the bank learns s_k, hence t_k and
   beta's relation to the mask, hence the score. With the smudging exponent (r_bits + 83 bits) no
   guess is consistent except with probability (2K + 1) 2^-80. Tested per score: the number of
   runs with some consistent guess (one-sided binomial against that bound) and the number of
   runs whose guess (the first consistent pattern, else all +1) is right (one-sided binomial
   against 2^-K).
   Honest limitation: a distinguisher that works on the ciphertext alone needs a 1024-bit
   short-exponent discrete logarithm, which no test can compute. The test supplies it instead:
   every hs^e drawn under the bank's key is recorded with its e (PublicKey._obfuscator and the
   smudging table are wrapped), the bank's own exponents are found by stripping (1 + m n) from its
   ciphertexts, and the [band] ciphertext is checked to be exactly (1 + band n) hs^E. So the
   statistic is a function of what an unbounded bank knows, and the recording is verified, not
   assumed; it is white-box in how E is obtained.

Negative controls (``test_broken_variant_is_detected``): each deliberately broken bureau, swapped
in through a module-level hook, must push its statistic's smallest p-value below LEAK_P = 1e-12
(observed values are listed in each variant's comment; most are below 1e-20):
no mask (R = 0); kappa = 0 (``_allow_weak_mask_for_tests``); a full-width mask with its low 20
bits cleared (the bank reads every score from z mod 2^20); fixed signs s_k = +1; blinding units
fixed to 1; no shuffle; plain re-randomisation of [band] instead of smudging.

Parameters: scores in [0, 2^20 - 1], T = 4, cutoffs 2^16 and 2^20 - 2^16, so l = 16 and
m = 20 + 1 + 40 = 61. Scores 2^16 + 2^7, 2^19 and 2^20 - 2^16 - 2^7 all lie in band 1, at least
2^7 (eight truncation steps) from every cutoff, so the band is the same whatever the carry, while
their distances to each cutoff differ by almost the whole range. 100 runs per score (about 10 s);
the controls use the two outer scores and as few runs as their effect allows.

False alarms: this file's honest p-values form one Bonferroni family with FAMILY_ALPHA / 2
(see leakage_stats), about 2e-7 per p-value.
"""

from __future__ import annotations

import itertools
import secrets
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gmpy2
import numpy as np
import pytest
from scipy import stats

from blindscore.crypto.dgk import DGKKeyPair
from blindscore.crypto.paillier import KeyPair, PublicKey
from blindscore.protocol import comparison
from blindscore.protocol.comparison import (
    DEFAULT_KAPPA,
    BandComparison,
    BitsResponse,
    FinalResponse,
    answer_blinded,
    answer_masked,
)

from leakage_stats import (
    FAMILY_ALPHA,
    LEAK_P,
    Family,
    bits_p,
    max_cell_p,
    residue_count,
    residue_pvalues,
    same_p,
    smallest,
    uniform_p,
    walsh_pvalues,
)

LO, HI = 0, 2**20 - 1
TRUNCATE = 4
CUTOFFS = (2**16, 2**20 - 2**16)
K = len(CUTOFFS)
BITS = 16
MASK_BITS = (HI - LO).bit_length() + 1 + DEFAULT_KAPPA  # m = 61
SCORES = (2**16 + 2**7, 2**19, 2**20 - 2**16 - 2**7)
CONTROL_SCORES = (SCORES[0], SCORES[-1])
BAND = 1
RUNS = 100
U = 65537
#: An honest [band] admits a consistent sign guess with at most this probability (module docstring).
CONSISTENT_P0 = (2 * K + 1) * 2.0**-comparison.SMUDGE_BITS
PAIRS = len(SCORES) * (len(SCORES) - 1) // 2
S = len(SCORES)
#: The honest p-values of each statistic: the Bonferroni family is their sum.
COUNTS = {
    "masked value residues": S * residue_count(MASK_BITS),
    "round-2 zeros and deltas": S * ((1 << K) - 1),  # each delta, and every XOR of two or more
    "zero positions": S * 2 * K + PAIRS * K,  # KS and fullest cell; two-sample per pair of scores
    "nonzero blinded values": S * K + PAIRS * K,
    "band randomness": S * 2,
}
FAMILY_SIZE = sum(COUNTS.values())


# ---------------------------------------------------------------- the instrumented bank


@dataclass(frozen=True)
class BandRandomness:
    """One [band]'s randomness as an unbounded bank sees it."""

    exponent: int  # E: [band] = (1 + band n) hs^E
    high: int  # e_h, the exponent of the bank's own [z_h]
    deltas: tuple[int, ...]  # e_k, the exponents of the bank's own [delta_k]
    signs: tuple[int, ...]  # the bureau's s_k: ground truth to score the bank's guesses against


@dataclass
class BankView:
    """Everything the bank decrypts over many runs for one score."""

    values: bool = True  # the DGK values were decrypted, not only zero-tested
    z: list[int] = field(default_factory=list)
    groups: list[list[tuple[int, ...]]] = field(default_factory=lambda: [[] for _ in CUTOFFS])  # [k][run]
    bands: list[int] = field(default_factory=list)
    randomness: list[BandRandomness] = field(default_factory=list)


class _RecordingTable:
    """The smudging table hs^(2^r_bits), recording each high part it hands out as an exponent of hs."""

    def __init__(self, table: Any, r_bits: int, drawn: list[tuple[Any, int]]) -> None:
        self._table, self._r_bits, self._drawn = table, r_bits, drawn

    def pow(self, exponent: int) -> Any:
        value = self._table.pow(exponent)
        self._drawn.append((value, exponent << self._r_bits))
        return value


class _Exponents:
    """The discrete logarithms an unbounded bank would compute, obtained by recording every hs^e
    drawn under its key (both the bank's own encryptions and the bureau's re-randomisations)."""

    def __init__(self, pk: PublicKey) -> None:
        self.pk = pk
        self.known: dict[int, int] = {}  # hs^e mod n^2 -> e
        self.drawn: list[tuple[Any, int]] = []  # (hs^e, e) in order
        self.signs: list[int] = []

    def install(self, mp: pytest.MonkeyPatch) -> None:
        original = PublicKey._obfuscator
        table_of = comparison._smudge_table
        draw_sign = comparison._random_sign

        def obfuscator(key: PublicKey, exponent: int | None = None) -> Any:
            e = secrets.randbits(key.r_bits) if exponent is None else exponent
            value = original(key, e)  # hs^e from the key's own fixed-base table
            if key is self.pk:
                self.known[int(value)] = e
                self.drawn.append((value, e))
            return value

        def random_sign() -> int:
            s = draw_sign()
            self.signs.append(s)
            return s

        mp.setattr(PublicKey, "_obfuscator", obfuscator)
        mp.setattr(
            comparison,
            "_smudge_table",
            lambda ns, hs, rb: _RecordingTable(table_of(ns, hs, rb), rb, self.drawn),
        )
        mp.setattr(comparison, "_random_sign", random_sign)

    def randomness(self, c: int, plaintext: int) -> Any:
        """hs^e of a ciphertext with a known plaintext: c (1 + m n)^-1 = c (1 - m n) mod n^2."""
        n, ns = self.pk.n, self.pk.nsquare
        return gmpy2.mpz(c) * (1 - plaintext * n) % ns

    def exponent_of(self, c: int, plaintext: int, what: str) -> int:
        rho = self.randomness(c, plaintext)
        assert int(rho) in self.known, f"{what}: its randomness is not one recorded hs^e"
        return self.known[int(rho)]


def observe(
    kp: KeyPair,
    dk: DGKKeyPair,
    score: int,
    runs: int,
    *,
    kappa: int = DEFAULT_KAPPA,
    rounds: int = 2,
    values: bool = True,
    randomness: bool = True,
) -> BankView:
    """Run the protocol ``runs`` times for ``score`` (in process) and record the bank's view.

    ``rounds=1`` stops after z. Without ``values`` the DGK values are only zero-tested (a zero
    stays 0, every other value is recorded as 1); without ``randomness`` the exponents of [band]
    are not recorded. Both save time in the controls that do not need them.
    """
    pk, sk, dsk = kp.public_key, kp.secret_key, dk.secret_key
    view = BankView(values=values)
    with pytest.MonkeyPatch.context() as mp:
        log = _Exponents(pk)
        if rounds == 2 and randomness:
            log.install(mp)
        for _ in range(runs):
            log.known.clear()
            log.signs.clear()
            bureau = BandComparison(
                pk,
                dk.public_key,
                pk.encrypt(score),
                CUTOFFS,
                LO,
                HI,
                TRUNCATE,
                kappa,
                _allow_weak_mask_for_tests=kappa < DEFAULT_KAPPA,
            )
            masked = bureau.masked_request()
            z = sk.decrypt(masked.ciphertext)
            view.z.append(z)
            if rounds == 1:
                continue
            bits = answer_masked(kp, dk.public_key, masked)
            blinded = bureau.blinded_request(bits)
            for k, group in enumerate(blinded.groups):
                if values:
                    view.groups[k].append(tuple(dsk.decrypt(c) for c in group))
                else:
                    view.groups[k].append(tuple(int(not zero) for zero in dsk.zero_flags(list(group))))
            final = answer_blinded(pk, dsk, blinded)
            log.drawn.clear()
            c_band = bureau.band_ciphertext(final)
            bureau_draws = list(log.drawn)
            band = sk.decrypt_small(c_band)  # a band is tiny; an odd one fails the band assertions
            view.bands.append(band)
            if randomness:
                # The bank knows its own plaintexts: z_h from z, delta_k from its zero tests.
                plain = (z >> TRUNCATE >> BITS, *(int(0 in view.groups[k][-1]) for k in range(K)))
                view.randomness.append(_band_randomness(log, bits, final, plain, c_band, band, bureau_draws))
    return view


def _band_randomness(
    log: _Exponents,
    bits: BitsResponse,
    final: FinalResponse,
    plain: tuple[int, ...],
    c_band: int,
    band: int,
    bureau_draws: list[tuple[Any, int]],
) -> BandRandomness:
    """[band]'s randomness split into the exponents of the bank's own [z_h] and [delta_k] (plaintexts
    ``plain``) and the bureau's draws, checked against the [band] ciphertext itself.

    [band] = [z_h]^K prod_k [delta_k]^(s_k) times the bureau's re-randomisation.
    """
    signs = tuple(log.signs)
    assert len(signs) == K
    own = (bits.high, *final.deltas)
    names = ("[z_h]", *(f"[delta_{k}]" for k in range(K)))
    exponents = [log.exponent_of(c, m, name) for c, m, name in zip(own, plain, names, strict=True)]
    ns = log.pk.nsquare
    expected = gmpy2.mpz(1)
    for c, m, power in zip(own, plain, (K, *signs), strict=True):
        expected = expected * gmpy2.powmod(log.randomness(c, m), power, ns) % ns
    for value, _ in bureau_draws:
        expected = expected * value % ns
    assert log.randomness(c_band, band) == expected, "[band] holds randomness that was not recorded"
    exponent = sum(p * e for p, e in zip((K, *signs), exponents, strict=True)) + sum(
        e for _, e in bureau_draws
    )
    return BandRandomness(exponent, exponents[0], tuple(exponents[1:]), signs)


# ---------------------------------------------------------------- statistics over the views

Views = Mapping[int, BankView]


def _rng(name: str) -> np.random.Generator:
    """A fixed jitter generator per statistic: the tests are deterministic given the data."""
    return np.random.default_rng(zlib.crc32(name.encode()))


def masked_residues(views: Views) -> dict[str, float]:
    rng = _rng("masked")
    out: dict[str, float] = {}
    for i, view in enumerate(views.values()):
        out.update(residue_pvalues(view.z, MASK_BITS, rng, f"score {i}"))
    return out


def _deltas(view: BankView, k: int) -> list[int]:
    return [int(0 in group) for group in view.groups[k]]


def delta_bits(views: Views) -> dict[str, float]:
    out: dict[str, float] = {}
    for i, view in enumerate(views.values()):
        deltas = [_deltas(view, k) for k in range(K)]
        for k in range(K):
            out[f"score {i} delta_{k} fair"] = bits_p(sum(deltas[k]), len(deltas[k]))
        # Jointly uniform over the 2^K patterns: every XOR of two or more deltas is fair as well.
        joint = [sum(bit << k for k, bit in enumerate(bits)) for bits in zip(*deltas, strict=True)]
        out.update(walsh_pvalues(joint, K, f"score {i} deltas", singles=False))
    return out


def _positions(view: BankView, k: int) -> list[int]:
    return [group.index(0) for group in view.groups[k] if 0 in group]


def zero_positions(views: Views) -> dict[str, float]:
    rng = _rng("positions")
    places = BITS + 1
    out: dict[str, float] = {}
    for i, view in enumerate(views.values()):
        for k in range(K):
            positions = _positions(view, k)
            out[f"score {i} cutoff {k} zero position ks"] = uniform_p(positions, places, rng)
            out[f"score {i} cutoff {k} zero position fullest"] = max_cell_p(positions, places)
    for (i, a), (j, b) in itertools.combinations(enumerate(views.values()), 2):
        for k in range(K):
            out[f"scores {i}/{j} cutoff {k} zero positions alike"] = same_p(
                _positions(a, k), _positions(b, k), places, rng
            )
    return out


def _nonzero(view: BankView, k: int) -> list[int]:
    return [m - 1 for group in view.groups[k] for m in group if m]  # Z_u^* shifted to range(u - 1)


def nonzero_values(views: Views) -> dict[str, float]:
    assert all(view.values for view in views.values()), "the DGK values were only zero-tested"
    rng = _rng("nonzero")
    out: dict[str, float] = {}
    for i, view in enumerate(views.values()):
        for k in range(K):
            out[f"score {i} cutoff {k} nonzero values uniform"] = uniform_p(_nonzero(view, k), U - 1, rng)
    for (i, a), (j, b) in itertools.combinations(enumerate(views.values()), 2):
        for k in range(K):
            out[f"scores {i}/{j} cutoff {k} nonzero values alike"] = same_p(
                _nonzero(a, k), _nonzero(b, k), U - 1, rng
            )
    return out


def _guess(record: BandRandomness, r_bits: int) -> tuple[tuple[int, ...], bool]:
    """The bank's sign guess: the first consistent pattern, else all +1; and whether any was."""
    base = record.exponent - K * record.high
    for signs in itertools.product((1, -1), repeat=K):
        w = base - sum(s * e for s, e in zip(signs, record.deltas, strict=True))
        if 0 <= w < 1 << r_bits:
            return signs, True
    return (1,) * K, False


def band_randomness(views: Views, r_bits: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for i, view in enumerate(views.values()):
        runs = len(view.randomness)
        guesses = [_guess(record, r_bits) for record in view.randomness]
        consistent = sum(found for _, found in guesses)
        right = sum(
            guess == record.signs for (guess, _), record in zip(guesses, view.randomness, strict=True)
        )
        out[f"score {i} [band] exponent explained by a sign guess"] = float(
            stats.binom.sf(consistent - 1, runs, CONSISTENT_P0)
        )
        out[f"score {i} signs guessed from [band]"] = float(
            stats.binom.sf(right - 1, runs, 2.0**-K + CONSISTENT_P0)
        )
    return out


Statistic = Callable[[Views, KeyPair], dict[str, float]]
STATISTICS: dict[str, Statistic] = {
    "masked value residues": lambda views, kp: masked_residues(views),
    "round-2 zeros and deltas": lambda views, kp: delta_bits(views),
    "zero positions": lambda views, kp: zero_positions(views),
    "nonzero blinded values": lambda views, kp: nonzero_values(views),
    "band randomness": lambda views, kp: band_randomness(views, kp.public_key.r_bits),
}


# ---------------------------------------------------------------- the honest protocol


@pytest.fixture(scope="module")
def honest(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> dict[int, BankView]:
    return {s: observe(paillier_keypair, dgk_keypair, s, RUNS) for s in SCORES}


@pytest.fixture(scope="module")
def family() -> Family:
    return Family(FAMILY_ALPHA / 2, FAMILY_SIZE)


def test_parameters(
    paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert comparison.comparison_bits(LO, HI, CUTOFFS, TRUNCATE) == BITS
    bands = {comparison.truncated_band(s, CUTOFFS, LO, HI, TRUNCATE, e) for s in SCORES for e in (0, 1)}
    assert bands == {BAND}  # every score, both carries
    assert all(abs(s - c) >= 2**7 for s in SCORES for c in CUTOFFS)
    assert dgk_keypair.public_key.u == U
    drawn: list[int] = []

    def draw_mask(bits: int) -> int:
        drawn.append(bits)
        return 0

    monkeypatch.setattr(comparison, "_draw_mask", draw_mask)
    pk = paillier_keypair.public_key
    BandComparison(pk, dgk_keypair.public_key, pk.encrypt(0), CUTOFFS, LO, HI, TRUNCATE)
    assert drawn == [MASK_BITS]  # the residue tests go up to the mask's real width


def test_honest_view_structure(honest: dict[int, BankView]) -> None:
    """What holds in every run, not just in distribution."""
    for view in honest.values():
        assert len(view.z) == len(view.bands) == len(view.randomness) == RUNS
        assert set(view.bands) == {BAND}
        assert all(2**20 <= z < 2 ** (MASK_BITS + 1) for z in view.z)  # z = s + C + R, C = 2^(l+T)
        for k in range(K):
            assert len(view.groups[k]) == RUNS
            for group in view.groups[k]:
                assert len(group) == BITS + 1 and group.count(0) <= 1  # at most one zero per group
                assert all(0 <= m < U for m in group)


@pytest.mark.parametrize("statistic", list(STATISTICS))
def test_honest_view_is_independent_of_the_score(
    statistic: str, honest: dict[int, BankView], family: Family, paillier_keypair: KeyPair
) -> None:
    pvalues = STATISTICS[statistic](honest, paillier_keypair)
    name, p = smallest(pvalues)
    print(f"honest {statistic}: {len(pvalues)} p-values, smallest {p:.3g} ({name})")
    assert len(pvalues) == COUNTS[statistic]
    family.check(pvalues)


# ---------------------------------------------------------------- deliberately broken bureaus


@dataclass(frozen=True)
class Variant:
    """A broken bureau: a hook of protocol.comparison replaced, and the statistic that must flag it."""

    name: str
    statistic: str
    runs: int
    hook: str = ""
    replacement: Callable[..., Any] | None = None
    kappa: int = DEFAULT_KAPPA


#: What each statistic needs observed (the rest is skipped in the controls, to save time).
NEEDS: dict[str, dict[str, Any]] = {
    "masked value residues": {"rounds": 1},
    "round-2 zeros and deltas": {"values": False, "randomness": False},
    "zero positions": {"values": False, "randomness": False},
    "nonzero blinded values": {"randomness": False},
    "band randomness": {"values": False},
}

VARIANTS = [
    # z = s + C, constant: every residue is a point mass (observed: p underflows to 0).
    Variant("no mask", "masked value residues", 100, "_draw_mask", lambda bits: 0),
    # R of 21 bits: z mod 2^j for j > 22 crowds into half its range or less (observed: p = 0).
    Variant("kappa = 0", "masked value residues", 100, kappa=0),
    # The motivating bug: z mod 2^20 = (s + C) mod 2^20, the score itself (observed: p ~ 1e-271).
    Variant(
        "mask with low 20 bits cleared",
        "masked value residues",
        100,
        "_draw_mask",
        lambda bits: secrets.randbits(bits) & ~(2**20 - 1),
    ),
    # delta_k = [beta >= alpha_k]: 1 in every run for the cutoff a score is nearer to (observed:
    # p = 2^-59 = 1.7e-18, exact binomial, in 12 repetitions out of 12).
    Variant("fixed signs", "round-2 zeros and deltas", 60, "_random_sign", lambda: 1),
    # The values are s + alpha_i - beta_i + 3 w_i themselves, small or near u (observed: p ~ 1e-230).
    Variant("blinding units 1", "nonzero blinded values", 10, "_random_units", lambda count, u: [1] * count),
    # The zero sits at the highest bit where alpha_k and beta differ: late in the group for the
    # nearer cutoff, early for the farther one (observed: p ~ 1e-21, at worst 3e-19 in 12 repetitions).
    Variant("no shuffle", "zero positions", 50, "_shuffle", lambda values: None),
    # The bank can explain E with the true signs in every run (observed: p ~ 1e-234).
    Variant(
        "plain re-randomisation of band",
        "band randomness",
        10,
        "_rerandomize_smudged",
        lambda pk, c, count: pk.rerandomize(c),
    ),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_broken_variant_is_detected(
    variant: Variant, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    if variant.replacement is not None:
        assert hasattr(comparison, variant.hook), f"the hook {variant.hook} is gone"
        monkeypatch.setattr(comparison, variant.hook, variant.replacement)
    views = {
        s: observe(
            paillier_keypair, dgk_keypair, s, variant.runs, kappa=variant.kappa, **NEEDS[variant.statistic]
        )
        for s in CONTROL_SCORES
    }
    for view in views.values():  # every variant still yields the right band: only a statistic can tell
        assert set(view.bands) <= {BAND}
    pvalues = STATISTICS[variant.statistic](views, paillier_keypair)
    name, p = smallest(pvalues)
    print(f"{variant.name}: {variant.statistic} smallest p = {p:.3g} ({name})")
    assert p < LEAK_P, f"{variant.name} not detected: smallest p = {p:.3g} ({name})"
