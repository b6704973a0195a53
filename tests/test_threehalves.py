"""Three-halves garbling (blindscore/crypto/halfgates.py): its constants, and what the evaluator learns."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

from blindscore.crypto import halfgates
from blindscore.crypto.circuit import Circuit, CircuitBuilder

# Symbols of the label part of a half: the colour-0 labels' halves and Delta's (GF(2)^6 as bits).
A_L, A_R, B_L, B_R, D_L, D_R = 1, 2, 4, 8, 16, 32
COLOURS = ((0, 0), (0, 1), (1, 0), (1, 1))


def f(colour: tuple[int, int], pa: int, pb: int) -> tuple[int, int]:
    """The documented offsets of the control bits at each colour (r = q ^ f)."""
    return {(0, 0): (0, 0), (0, 1): (pa ^ pb, pa), (1, 0): (pb, pa ^ pb), (1, 1): (pa, pb)}[colour]


def rows(
    s1: tuple[int, int],
    s2: tuple[int, int],
    rp: npt.NDArray[np.uint8],
    colour: tuple[int, int],
    r: tuple[int, int],
) -> tuple[int, int]:
    i, j = colour
    return tuple(int(rp[2 * i + j, k]) ^ (s1[k] if r[0] else 0) ^ (s2[k] if r[1] else 0) for k in (0, 1))  # type: ignore[return-value]


def times(row: int, colour: tuple[int, int]) -> int:
    """The label part of R's row times the halves an evaluator at ``colour`` holds."""
    i, j = colour
    held = (
        A_L | (D_L if i else 0),
        A_R | (D_R if i else 0),
        B_L | (D_L if j else 0),
        B_R | (D_R if j else 0),
    )
    out = 0
    for c in range(4):
        if row >> c & 1:
            out ^= held[c]
    return out


def equations_hold(s1: tuple[int, int], s2: tuple[int, int], rp: npt.NDArray[np.uint8]) -> bool:
    """For every p_a, p_b and q, the label parts of the four colours' outputs solve to one 0-label
    W0 and halves G0, G1, G2 with W(i, j) = W0 ^ ((i ^ p_a)(j ^ p_b)) Delta (the hash parts cancel
    by construction: they are the same in every scheme of this shape)."""
    for pa, pb, q1, q2 in itertools.product((0, 1), repeat=4):
        r = {c: (q1 ^ f(c, pa, pb)[0], q2 ^ f(c, pa, pb)[1]) for c in COLOURS}
        mat = {c: rows(s1, s2, rp, c, r[c]) for c in COLOURS}
        out = {(i, j): (i ^ pa) & (j ^ pb) for i, j in COLOURS}
        w_l = times(mat[0, 0][0], (0, 0)) ^ (D_L if out[0, 0] else 0)
        w_r = times(mat[0, 0][1], (0, 0)) ^ (D_R if out[0, 0] else 0)
        g0 = w_l ^ (D_L if out[1, 1] else 0) ^ times(mat[1, 1][0], (1, 1))
        g1 = w_r ^ (D_R if out[1, 1] else 0) ^ times(mat[1, 1][1], (1, 1))
        g2 = w_l ^ (D_L if out[0, 1] else 0) ^ times(mat[0, 1][0], (0, 1))
        for i, j in COLOURS:
            both = g2 if i ^ j else 0
            left = (g0 if i else 0) ^ both ^ times(mat[i, j][0], (i, j))
            right = (g1 if j else 0) ^ both ^ times(mat[i, j][1], (i, j))
            if (left, right) != (w_l ^ (D_L if out[i, j] else 0), w_r ^ (D_R if out[i, j] else 0)):
                return False
        # the z equations: r decodes as z0 ^ i z2 ^ (i^j) z4 (and z1 ^ j z3 ^ (i^j) z4) up to
        # hash bits that cancel in these sums, so the four r must satisfy
        if (
            r[0, 0][0] ^ r[0, 1][0] ^ r[1, 0][0] ^ r[1, 1][0]
            or r[0, 0][1] ^ r[0, 1][1] ^ r[1, 0][1] ^ r[1, 1][1]
        ):
            return False
        if r[0, 0][0] ^ r[0, 1][0] != r[0, 0][1] ^ r[1, 0][1]:
            return False
    return True


def library_constants() -> tuple[tuple[int, int], tuple[int, int], npt.NDArray[np.uint8]]:
    s1 = (int(halfgates._S1[0]), int(halfgates._S1[1]))
    s2 = (int(halfgates._S2[0]), int(halfgates._S2[1]))
    return s1, s2, halfgates._RP.copy()


def test_the_constants_solve_the_scheme() -> None:
    """The library's S1, S2, RP and the documented f give every p_a, p_b, q a solution."""
    assert equations_hold(*library_constants())


def test_any_one_constant_bit_changed_breaks_the_scheme() -> None:
    """Negative control: each of the 48 single-bit changes of S1, S2 and RP leaves some case without
    a solution, so the check above can fail."""
    s1, s2, rp = library_constants()
    broken = 0
    for which, row, bit in itertools.product(range(6), (0, 1), range(4)):
        a, b, c = list(s1), list(s2), rp.copy()
        if which == 0:
            a[row] ^= 1 << bit
        elif which == 1:
            b[row] ^= 1 << bit
        else:
            c[which - 2, row] ^= np.uint8(1 << bit)
        broken += not equations_hold((a[0], a[1]), (b[0], b[1]), c)
    assert broken == 48


def test_what_the_evaluator_decodes_is_uniform_whatever_the_permute_bits() -> None:
    """At each colour, q -> r = q ^ f(p_a, p_b) takes all four values once, and R = RP ^ r1 S1 ^ r2
    S2 runs over the same four matrices for every p_a, p_b: the evaluator's R says nothing of the
    permute bits, so nothing of the inputs' values."""
    s1, s2, rp = library_constants()
    for colour in COLOURS:
        seen = set()
        for pa, pb in COLOURS:
            rs = [(q1 ^ f(colour, pa, pb)[0], q2 ^ f(colour, pa, pb)[1]) for q1, q2 in COLOURS]
            assert sorted(rs) == sorted(COLOURS)
            seen.add(frozenset(rows(s1, s2, rp, colour, r) for r in rs))
        assert len(seen) == 1 and len(next(iter(seen))) == 4


def one_and() -> Circuit:
    b = CircuitBuilder()
    x, y = b.evaluator_input(2)
    b.output(b.and_(x, y))
    return b.build()


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, int, int]]]:
    """Records (colour index 2i + j, r1, r2) each time the evaluator builds R."""
    seen: list[tuple[int, int, int]] = []
    real = halfgates._matrix

    def spy(
        i: object, r1: npt.NDArray[np.uint8], r2: npt.NDArray[np.uint8], row: int
    ) -> npt.NDArray[np.uint8]:
        if row == 0 and isinstance(i, np.ndarray):
            seen.append((int(i[0]), int(r1[0]), int(r2[0])))
        return real(i, r1, r2, row)  # type: ignore[arg-type]

    monkeypatch.setattr(halfgates, "_matrix", spy)
    yield seen


def guess_rate(
    decoded: list[tuple[int, int, int]], monkeypatch: pytest.MonkeyPatch, *, fixed_q: bool
) -> float:
    """An evaluator that guesses its first input's value from its colour and what it decoded
    (a = i ^ p_a, and at colours (0, 1), (1, 1) the zero-q r1 or r2 is p_a): its hit rate."""
    if fixed_q:
        monkeypatch.setattr(
            halfgates, "_control_randomness", lambda delta, gid, n: np.zeros((n, 2), dtype=np.uint8)
        )
    circuit = one_and()
    rng = random.Random(5)
    hits = 0
    trials = 400
    for _ in range(trials):
        x, y = rng.getrandbits(1), rng.getrandbits(1)
        garbled, pairs = halfgates.garble(circuit, [])
        assert halfgates.evaluate(circuit, garbled, [pairs[0][x], pairs[1][y]]) == [x & y]
        colour, r1, r2 = decoded[-1]
        i = colour >> 1
        # p_a as the decoded bits give it when q = 0: r2 at (0, 1), r1 at (1, 1), r1 ^ r2 at (1, 0)
        p_a = {1: r2, 3: r1, 2: r1 ^ r2}.get(colour, 0)
        hits += (i ^ p_a) == x
    return hits / trials


def test_the_evaluator_cannot_read_its_inputs_from_the_control_bits(
    decoded: list[tuple[int, int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over real garblings, the evaluator's decoded control bits let it guess its own input no
    better than chance. Negative control: with the garbler's q fixed to 0 (r = f(p_a, p_b)), the
    same guess is right whenever its colour is not (0, 0), about 7 times in 8."""
    honest = guess_rate(decoded, monkeypatch, fixed_q=False)
    assert 0.4 < honest < 0.6
    broken = guess_rate(decoded, monkeypatch, fixed_q=True)
    assert broken > 0.8


def test_control_bits_and_halves_look_fresh() -> None:
    """Across garblings of one gate, the halves never repeat and the five control bits take every
    pattern, each about equally often."""
    circuit = one_and()
    tables = []
    for _ in range(640):
        garbled, _ = halfgates.garble(circuit, [])
        tables.append(garbled.tables)
    assert len({t[:24] for t in tables}) == len(tables)
    patterns = Counter(t[24] >> 3 for t in tables)
    assert len(patterns) == 32 and max(patterns.values()) < 45
