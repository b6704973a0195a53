"""Shared statistics of the leakage tests: exact or conservative p-values, and the false-alarm budget.

Every test here has a fully known null distribution (a uniform residue, a fair bit, a uniform
position), so the tests are one-sample tests against it wherever possible, which have more power
than comparing two scores with each other; two-sample tests are added where a leak shows as a
difference between scores rather than as a departure from uniform.

The tests, and why their p-values are valid at the tiny levels used here (an asymptotic
approximation can be far off that far out in the tail, so none is used: every p-value below is
exact or a conservative bound):

- :func:`uniform_p`: is an integer uniform on ``cells`` values? Kolmogorov-Smirnov against U(0, 1)
  of the jittered values (v + U) / cells, U uniform on [0, 1) from a seeded generator. When v is
  uniform, (v + U) / cells is exactly continuous uniform, so the exact KS p-value is exact, for
  two cells as for 2^76. Jittering costs a little power for few cells, none for many.
- :func:`same_p`: do two samples of such integers have one distribution? Two-sample KS of the
  jittered values (no ties, so the exact permutation p-value applies).
- :func:`walsh_pvalues`: are the low ``bits`` bits of an integer jointly uniform? They are
  exactly when every XOR of a non-empty subset of them is a fair bit, so one exact binomial test
  per subset (2^bits - 1 of them). This is the exact counterpart of a chi-square test over the
  2^bits cells, with the same power against a joint pattern (two bits always equal, say) that a
  KS test over the cells hardly sees. Chi-square itself is not used: at the levels needed here
  its approximation understates the tail (by 1.2x to 1.6x at 1e-5 already, for 4 to 16 cells of
  12 to 80 expected, in a simulation of 2 million multinomial samples), and more further out.
- :func:`max_cell_p`: the fullest of ``cells`` equiprobable cells, with the union bound
  cells * P(Binomial(n, 1/cells) >= max): conservative (exact binomial tails), and powerful
  against a distribution that piles up in one cell.
- :func:`bits_p`: exact two-sided binomial test of a count of fair bits.
- :func:`impossible_p`: for an event that the honest protocol produces with probability at most
  ``each`` per trial (a collision of 128-bit values, say): p = min(1, trials * each) if it
  happened, else 1.

False alarms. :data:`FAMILY_ALPHA` is the probability that an honest run of both leakage files
raises any alarm at all. Each file gets half of it as a :class:`Family` of a declared size and
rejects a p-value at alpha / size (Bonferroni, which needs no independence between the tests);
the family refuses more p-values than it was sized for. A deliberately broken variant counts as
detected only below :data:`LEAK_P`, some five orders of magnitude below any honest threshold,
and every variant's sample is sized so that its p-value lands far below that.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

#: The probability that an honest run of both leakage files raises a false alarm, at most.
FAMILY_ALPHA = 1e-4
#: A broken variant is detected when its statistic's smallest p-value is below this.
LEAK_P = 1e-12
#: The low bits of a masked value that the Walsh tests check jointly (all j <= this at once).
WALSH_BITS = 4


def jittered(values: Iterable[int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """(v + U) / cells for integers v in [0, cells): exactly U(0, 1) when v is uniform."""
    ints = [int(v) for v in values]
    for v in ints:
        if not 0 <= v < cells:
            raise ValueError(f"value {v} outside [0, {cells})")
    # v / cells is a correctly rounded float even for integers far beyond 2^53.
    x = np.array([v / cells for v in ints], dtype=np.float64) + rng.random(len(ints)) / cells
    return np.minimum(x, np.nextafter(1.0, 0.0))


def uniform_p(values: Sequence[int], cells: int, rng: np.random.Generator) -> float:
    """Exact KS p-value of 'values are uniform on range(cells)' (see the module docstring)."""
    if len(values) == 0:
        raise ValueError("no values to test")
    return float(stats.kstest(jittered(values, cells, rng), "uniform", method="exact").pvalue)


def same_p(a: Sequence[int], b: Sequence[int], cells: int, rng: np.random.Generator) -> float:
    """Exact two-sample KS p-value of 'a and b (integers in range(cells)) are alike'."""
    if len(a) == 0 or len(b) == 0:
        raise ValueError("no values to compare")
    x, y = jittered(a, cells, rng), jittered(b, cells, rng)
    return float(stats.ks_2samp(x, y, method="exact").pvalue)


def max_cell_p(values: Sequence[int], cells: int) -> float:
    """Union-bound p-value of the fullest cell under uniform: cells * P(Bin(n, 1/cells) >= max)."""
    if not values:
        raise ValueError("no values to test")
    top = max(Counter(values).values())
    return float(min(1.0, cells * stats.binom.sf(top - 1, len(values), 1 / cells)))


def bits_p(ones: int, total: int) -> float:
    """Exact two-sided binomial p-value of ``ones`` set bits out of ``total`` fair bits."""
    return float(stats.binomtest(ones, total, 0.5).pvalue)


def impossible_p(occurred: int, trials: int, each: float) -> float:
    """p-value bound for an event of probability at most ``each`` per trial that occurred."""
    return min(1.0, trials * each) if occurred else 1.0


def walsh_pvalues(values: Sequence[int], bits: int, tag: str, *, singles: bool = True) -> dict[str, float]:
    """Exact binomial test of every XOR of a non-empty subset of the low ``bits`` bits of the values
    (subsets of one bit only when ``singles``): all fair iff those bits are jointly uniform."""
    out: dict[str, float] = {}
    for subset in range(1, 1 << bits):
        if subset.bit_count() == 1 and not singles:
            continue
        ones = sum((v & subset).bit_count() & 1 for v in values)
        out[f"{tag} xor of bits {subset:0{bits}b}"] = bits_p(ones, len(values))
    return out


def residue_pvalues(
    zs: Sequence[int], mask_bits: int, rng: np.random.Generator, tag: str
) -> dict[str, float]:
    """Is z mod 2^j uniform, for every j = 1 .. mask_bits? (z = s + C + R, R uniform of mask_bits bits.)

    One jittered KS test per j, and the Walsh tests of the low WALSH_BITS bits, which check
    z mod 2^j for every j <= WALSH_BITS jointly. A mask missing its low bits shows at the small
    j, a mask that is too short at the j above its width, a missing mask everywhere.
    """
    out = {
        f"{tag} z mod 2^{j} ks": uniform_p([z & ((1 << j) - 1) for z in zs], 1 << j, rng)
        for j in range(1, mask_bits + 1)
    }
    out.update(walsh_pvalues(zs, WALSH_BITS, f"{tag} z"))
    return out


def residue_count(mask_bits: int) -> int:
    """How many p-values :func:`residue_pvalues` returns."""
    return mask_bits + (1 << WALSH_BITS) - 1


@dataclass
class Family:
    """The honest p-values of one test file, each rejected at alpha / size (Bonferroni)."""

    alpha: float
    size: int
    checked: dict[str, float] = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        return self.alpha / self.size

    def check(self, pvalues: Mapping[str, float]) -> None:
        """Assert that no p-value is at or below the threshold; count them against the size."""
        assert pvalues, "a statistic without p-values tests nothing"
        for name, p in pvalues.items():
            assert name not in self.checked, f"p-value {name!r} checked twice"
            assert 0.0 <= p <= 1.0 and not math.isnan(p), f"{name}: not a p-value: {p}"
            self.checked[name] = p
        assert len(self.checked) <= self.size, (
            f"{len(self.checked)} honest p-values, but the family was sized for {self.size}: "
            "the false-alarm bound no longer holds"
        )
        alarms = {name: p for name, p in pvalues.items() if not p > self.threshold}
        assert not alarms, f"leak flagged at threshold {self.threshold:.2g}: {alarms}"


def smallest(pvalues: Mapping[str, float]) -> tuple[str, float]:
    """The statistic's smallest p-value and its name."""
    name = min(pvalues, key=lambda k: pvalues[k])
    return name, pvalues[name]
