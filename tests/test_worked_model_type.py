"""The worked example of docs/models.md, a model type with its own circuit family, run as written."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from blindscore.crypto.circuit import Bits, CircuitBuilder
from blindscore.crypto.paillier import KeyPair
from blindscore.models import model_type
from blindscore.models.families import register_family, thermometer
from blindscore.protocol.circuit_band import CircuitShape, Family
from blindscore.testing import TwoParties, check_blind_pipeline, check_model_type, sample_rows

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "worst_of_two.py"


@pytest.fixture(scope="module")
def acme() -> ModuleType:
    """The example file imported as the plug-in package a researcher would ship (once: it registers)."""
    if "acme_models" in sys.modules:
        return sys.modules["acme_models"]
    spec = importlib.util.spec_from_file_location("acme_models", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["acme_models"] = module
    spec.loader.exec_module(module)
    return module


def test_the_docs_show_the_example_file_as_it_is() -> None:
    docs = (ROOT / "docs" / "models.md").read_text()
    assert f"```python\n{EXAMPLE.read_text()}```" in docs


def test_the_example_passes_the_conformance_checks(acme: ModuleType, paillier_keypair: KeyPair) -> None:
    assert model_type("acme-worst-of-two") is acme.WorstOfTwo
    check_model_type(acme.WorstOfTwo, keypair=paillier_keypair, rows=200)


def disagreeing_rows(model: Any) -> list[dict[str, object]]:
    """Rows on which champion and challenger give different bands, each side the worse at least once."""
    rows = [r for r in sample_rows(model, 400, seed=11) if model.champion.band(r) != model.challenger.band(r)]
    worse_champion = [r for r in rows if model.champion.band(r) > model.challenger.band(r)]
    worse_challenger = [r for r in rows if model.challenger.band(r) > model.champion.band(r)]
    assert worse_champion and worse_challenger
    return worse_champion[:2] + worse_challenger[:2]


def test_the_blind_band_is_the_worse_of_the_two(acme: ModuleType, paillier_keypair: KeyPair) -> None:
    model = acme.WorstOfTwo.example()
    parties = TwoParties(paillier_keypair)
    for row in disagreeing_rows(model):
        worse = max(model.champion.band(row), model.challenger.band(row))
        assert model.band(row) == worse
        assert parties.band(model, model.spec.encode_row(row)) == worse
    # The bank's shape: two values of one width and the cutoffs, nothing of the weights.
    shape = model.circuit_shape()
    assert (shape.family, shape.values, shape.cutoffs, shape.params) == ("acme-worst-of-two", 2, 3, ())


def _best_build(shape: CircuitShape, b: CircuitBuilder, values: list[Bits], secrets: list[Bits]) -> list[int]:
    champion, challenger = values
    better = b.mux(b.less_than(champion, challenger, signed=False), champion, challenger)
    return thermometer(b, better, secrets)


def test_a_circuit_that_takes_the_better_score_is_caught(acme: ModuleType, paillier_keypair: KeyPair) -> None:
    """Negative control: the same model with a family that bands the lower score must fail the
    conformance suite's blind-pipeline check on rows where the two models disagree."""
    register_family("acme-best-of-two", Family(build=_best_build, secret_widths=acme._widths))

    class BestOfTwo(acme.WorstOfTwo):  # type: ignore[name-defined]
        def circuit_shape(self) -> CircuitShape:
            shape = super().circuit_shape()
            return CircuitShape("acme-best-of-two", shape.values, shape.value_bits, shape.cutoffs)

    model = BestOfTwo.example()
    rows = disagreeing_rows(model)
    with pytest.raises(AssertionError, match=r"^blind band \d differs from the clear one$"):
        check_blind_pipeline(model, rows, paillier_keypair)
