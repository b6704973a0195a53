"""What the bank sees of an MLP application: alike for two applicants of one band; a broken mask is caught.

The bank's view of one application is the bits of each first-layer unit's masked pre-activation
(its OT choices; the rest of its view is garbled tables and one label per wire). Two applicants
of one band whose unit-0 pre-activations lie far apart, many hand-overs each: a two-sample KS test
on the low bits of unit 0's masked value cannot tell them apart, and each broken bureau (no mask;
a mask with its low 12 bits cleared) is told apart at once.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import pytest

from blindscore.crypto.paillier import KeyPair
from blindscore.models import MLPModel, families
from blindscore.protocol import slots
from blindscore.protocol.circuit_band import CircuitBand, open_request
from blindscore.testing import sample_rows

RUNS = 40
MODEL = MLPModel.example()


def unit0(encoded: Sequence[int]) -> int:
    """Unit 0's pre-activation as the linear stage computes it (offset into [0, 2^w))."""
    out = MODEL.linear_stage().outputs[0]
    return out.offset + sum(w * encoded[i] for i, w in out.terms)


def two_applicants() -> tuple[list[int], list[int]]:
    """Encoded rows of one band whose unit-0 values lie farthest apart."""
    encoded = [MODEL.spec.encode_row(r) for r in sample_rows(MODEL, 300, seed=5)]
    by_band: dict[int, list[list[int]]] = {}
    for e in encoded:
        by_band.setdefault(MODEL.band_from_encoded(e), []).append(e)
    rows = max(by_band.values(), key=len)
    low, high = min(rows, key=unit0), max(rows, key=unit0)
    assert unit0(high) - unit0(low) > 1 << 12  # they differ beyond the low bits the statistic reads
    return low, high


def low_bits(keypair: KeyPair, ciphertexts: list[object]) -> int:
    bureau = CircuitBand(keypair.public_key, MODEL, families.family("mlp"), ciphertexts)
    opened = open_request(keypair, bureau.request)
    w = MODEL.circuit_shape().value_bits
    bits = opened.choices[:w]  # unit 0's slot
    return sum(bit << i for i, bit in enumerate(bits)) % 4096


def p_same(keypair: KeyPair) -> float:
    from scipy.stats import ks_2samp

    pk = keypair.public_key
    a, b = ([pk.encrypt(x) for x in row] for row in two_applicants())
    xs = [low_bits(keypair, a) for _ in range(RUNS)]
    ys = [low_bits(keypair, b) for _ in range(RUNS)]
    return float(ks_2samp(xs, ys).pvalue)


@pytest.mark.parametrize(
    ("name", "broken"),
    [
        ("no mask", lambda bits: 0),
        ("mask with its low 12 bits cleared", lambda bits: secrets.randbits(bits) >> 12 << 12),
    ],
)
def test_the_banks_view_of_an_mlp_is_the_same_for_two_applicants_of_one_band(
    paillier_keypair: KeyPair, monkeypatch: pytest.MonkeyPatch, name: str, broken: object
) -> None:
    assert p_same(paillier_keypair) > 1e-3, "honest run flagged"
    monkeypatch.setattr(slots, "_draw_mask", broken)
    assert p_same(paillier_keypair) < 1e-6, f"{name} went undetected"
