"""The band protocol's randomness hooks, drawn directly: signs, units of Z_u, shuffles.

The leakage suites catch broken hooks through the bank's view, slowly; these catch them at the
source, in milliseconds. Each of the 52 bounds is at least 5 standard deviations wide: all
together a false alarm comes about once in 100 000 runs (the draws come from the CSPRNG, so no seed
can pin them).
"""

from __future__ import annotations

from collections import Counter

from blindscore.protocol import comparison


def test_signs_are_fair_coins() -> None:
    counts = Counter(comparison._random_sign() for _ in range(2000))
    assert set(counts) == {1, -1}
    assert 880 <= counts[1] <= 1120  # mean 1000, sd 22.4


def test_units_of_z_u_are_uniform_over_1_to_u_minus_1() -> None:
    # u - 1 a power of two (the exact path, as for u = 65537) and not (the reduced path).
    for u, draws in ((5, 4000), (8, 7000), (7, 6000)):
        counts = Counter(comparison._random_units(draws, u))
        assert set(counts) == set(range(1, u)), u
        assert all(850 <= counts[v] <= 1150 for v in range(1, u)), (u, counts)  # mean 1000, sd < 32


def test_a_shuffle_leaves_no_position_to_any_element() -> None:
    """Over 1700 shuffles of 17 values (l + 1 for l = 16) each value lands first about 100 times."""
    firsts: Counter[int] = Counter()
    lasts: Counter[int] = Counter()
    for _ in range(1700):
        values = list(range(17))
        comparison._shuffle(values)
        assert sorted(values) == list(range(17))
        firsts[values[0]] += 1
        lasts[values[-1]] += 1
    assert all(50 <= firsts[v] <= 150 for v in range(17)), firsts  # mean 100, sd 9.7
    assert all(50 <= lasts[v] <= 150 for v in range(17)), lasts
