"""Tree nodes without the zero rule fold the missing-value rule into their linear-stage value."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest

from blindscore.models.policy import BandPolicy
from blindscore.models.trees import Tree, TreeEnsemble

THRESHOLDS = (-1e30, -2.5, -1.0, -1e-30, 0.0, 1e-30, 0.5, 3.0, 1e30)
VALUES = (math.nan, -math.inf, -1e31, -2.5, -1.0, -1e-30, -0.0, 0.0, 1e-30, 0.5, 3.0, 1e31, math.inf)


def stump_model(domain: str, strict: bool, kind: str) -> TreeEnsemble:
    """One stump per (threshold, default direction): every sign of T = K + 1 against both rules."""
    trees = [
        Tree(
            feature=(0, -1, -1),
            threshold=(t, 0.0, 0.0),
            left=(1, -1, -1),
            right=(2, -1, -1),
            default_left=(left, False, False),
            missing=(kind, kind, kind),
            value=(0.0, -0.25 * (k + 1), 0.25 * (k + 1)),
        )
        for k, (t, left) in enumerate(itertools.product(THRESHOLDS, (True, False)))
    ]
    return TreeEnsemble(
        f"stumps-{domain}-{kind}",
        ["x"],
        trees,
        base_score=0.0,
        link="identity",
        output="raw",
        domain=domain,
        strict=strict,
        policy=BandPolicy((0.0,), output="raw"),
    )


MODELS = {
    "xgboost-nan": lambda: stump_model("float32", True, "nan"),
    "sklearn-nan": lambda: stump_model("float32", False, "nan"),
    "lightgbm-nan": lambda: stump_model("float64", False, "nan"),
    "lightgbm-none": lambda: stump_model("float64", False, "none"),
}


def circuit_leaves(
    model: TreeEnsemble, encoded: list[int], delta: Callable[[int, bool], int] | None = None
) -> list[int]:
    """The leaf each stump reaches when the circuit reads bit b of its linear-stage value (the
    only bit it reads), with the values in [0, 2^(b+1)) asserted; ``delta`` replaces the model's
    missing weight (for the broken variants)."""
    b = model.key_bits
    out = []
    for p, o in zip(model._padded, model.linear_stage().outputs, strict=True):
        terms = dict(o.terms)
        if delta is not None:
            left = p.zero_left[0] if p.missing[0] == "none" else p.default_left[0]
            terms[1] = delta(p.key[0] + 1, left)
        v = sum(w * encoded[c] for c, w in terms.items()) + o.offset
        if not 0 <= v < 1 << (b + 1):
            raise OverflowError(f"value {v} outside [0, 2^{b + 1})")
        j = 1 if not (v >> b) & 1 else 2
        out.append(p.leaf[j - 1])
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_value_lands_on_the_side_the_library_rule_gives(name: str) -> None:
    model = MODELS[name]()
    assert model.zero_bit == 0 and model.circuit_shape().value_bits == model.key_bits + 1
    assert model.garbler_inputs() == [(x, w) for x, w in model.garbler_inputs() if w == model.leaf_bits] + [
        (x, w) for x, w in model.garbler_inputs() if w != model.leaf_bits
    ]  # leaves then cutoffs: no per-node secrets
    for x in VALUES:
        encoded = model.encode_row([x])
        assert circuit_leaves(model, encoded) == model.encoded_leaves(encoded), x


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_nodes_of_a_feature_share_at_most_three_weightings(name: str) -> None:
    """So the bureau's dot products are per feature and weighting, not per node (the speed of the
    linear stage): the weights are 1 on the key and 0 or +-2^b on the missing bit."""
    model = MODELS[name]()
    b = model.key_bits
    terms = {o.terms for o in model.linear_stage().outputs}
    assert terms <= {((0, 1),), ((0, 1), (1, 1 << b)), ((0, 1), (1, -(1 << b)))}
    # "none" sends a missing value where 0.0 goes, and 0.0 has key 0: no weight is needed at all
    assert len(terms) == (1 if name.endswith("none") else 3)


def outcome(model: TreeEnsemble, rule: Callable[[int, bool], int] | None) -> str:
    encoded = model.encode_row([math.nan])
    try:
        right = circuit_leaves(model, encoded, rule) == model.encoded_leaves(encoded)
    except OverflowError:
        return "overflow"
    return "right" if right else "wrong"


def test_a_wrong_missing_weight_is_caught() -> None:
    """Negative controls: the checks above fail when the weight ignores the sign of T (2^b for
    "right" overflows the slot at a negative threshold; 0 for "left" sends a missing value right
    at a threshold <= 0); the model's own weights pass."""
    model = MODELS["xgboost-nan"]()
    b = model.key_bits
    assert outcome(model, None) == "right"
    assert outcome(model, lambda t, left: 0 if left else 1 << b) == "overflow"
    assert outcome(model, lambda t, left: 0 if left else (1 << b if t > 0 else 0)) == "wrong"
