"""Small neural networks (scikit-learn MLPs) through the garbled-circuit band pipeline.

Both parties in one process, as for the trees: the platform's public encoding and Paillier
encryption, the bureau's first layer on ciphertexts (masked, packed) and garbling, the bank's
decryption, oblivious transfer and evaluation. Each row's band equals the model's integer band,
and scikit-learn's band for rows farther than the proven error bound from a cutoff; the bound
itself is checked on data rows, random rows of the declared ranges and their corners.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from blindscore.crypto.circuit import to_bits
from blindscore.crypto.paillier import KeyPair
from blindscore.data.german import GERMAN_PD_CUTOFFS, NUMERIC_RANGES, load_german_credit
from blindscore.errors import ModelFormatError
from blindscore.importers.sklearn_mlp import mlp_from_sklearn
from blindscore.models import families
from blindscore.models.features import CategoricalFeature, FeatureSpec, NumericFeature
from blindscore.models.mlp import MLPModel
from blindscore.models.policy import BandPolicy, logit
from blindscore.protocol.circuit_band import (
    band_circuit,
    band_from_outputs,
)
from blindscore.testing import TwoParties

COLUMNS = tuple(sorted(NUMERIC_RANGES))
PD = BandPolicy(GERMAN_PD_CUTOFFS)
RAW = BandPolicy((0.2, 0.3, 0.45), output="raw")
MLP_FAMILY = families.family("mlp")


def fit(estimator: Any, x: np.ndarray, y: np.ndarray) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(x, y)


@pytest.fixture(scope="module")
def german() -> tuple[np.ndarray, np.ndarray]:
    data, target = load_german_credit()
    return np.array([[float(r[c]) for c in COLUMNS] for r in data]), np.asarray(target)


@pytest.fixture(scope="module")
def classifier(german: tuple[np.ndarray, np.ndarray]) -> tuple[Any, MLPModel]:
    """7 -> 8 relu -> 1 logistic, after a StandardScaler (folded into layer 1)."""
    x, y = german
    est = fit(
        make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(8,), random_state=0, max_iter=200)),
        x,
        y,
    )
    return est, mlp_from_sklearn(
        est, ranges=NUMERIC_RANGES, feature_names=COLUMNS, integer=COLUMNS, policy=PD
    )


@pytest.fixture(scope="module")
def regressor(german: tuple[np.ndarray, np.ndarray]) -> tuple[Any, MLPModel]:
    """7 -> 6 -> 4 identity -> 1, after a StandardScaler: two hidden layers, no relu."""
    x, y = german
    net = MLPRegressor(hidden_layer_sizes=(6, 4), activation="identity", random_state=0, max_iter=200)
    est = fit(make_pipeline(StandardScaler(), net), x, y.astype(float))
    model = mlp_from_sklearn(est, ranges=NUMERIC_RANGES, feature_names=COLUMNS, integer=COLUMNS, policy=RAW)
    return est, model


@pytest.fixture(scope="module")
def parties(paillier_keypair: KeyPair) -> TwoParties:
    return TwoParties(paillier_keypair)


def library_output(est: Any, rows: np.ndarray) -> np.ndarray:
    """scikit-learn's output before the link: log-odds of predict_proba, or predict."""
    if hasattr(est, "predict_proba"):
        p = est.predict_proba(rows)[:, 1]
        with np.errstate(divide="ignore"):
            return np.log(p) - np.log1p(-p)
    return np.asarray(est.predict(rows), dtype=np.float64)


def corners(rows: int = 2) -> np.ndarray:
    """The all-low and all-high corners of the declared ranges, and mixed ones."""
    lo = np.array([NUMERIC_RANGES[c][0] for c in COLUMNS], dtype=np.float64)
    hi = np.array([NUMERIC_RANGES[c][1] for c in COLUMNS], dtype=np.float64)
    mixed = [np.where(np.arange(len(COLUMNS)) % 2 == k, lo, hi) for k in range(rows)]
    return np.array([lo, hi, *mixed])


def blind_band(parties: TwoParties, model: MLPModel, row: Sequence[float]) -> int | None:
    """One application through both parties (platform encryption, bureau, bank, OT, garbling)."""
    return parties.band(model, model.encode_row(list(row)))


def circuit_band_in_clear(model: MLPModel, encoded: Sequence[int]) -> int | None:
    """The band circuit evaluated on plain bits with zero masks: the topology alone, no crypto.
    A value v sits in its (w + 1)-bit slot as 2 v (blindscore.protocol.slots)."""
    shape = model.circuit_shape()
    stage = model.linear_stage()
    values = [sum(w * encoded[c] for c, w in o.terms) + o.offset for o in stage.outputs]
    assert all(0 <= v < 1 << stage.value_bits for v in values)
    garbler = [0] * (shape.values * (shape.value_bits + 1))
    for value, width in model.garbler_inputs():
        garbler += to_bits(value, width)
    garbler += [0] * shape.cutoffs  # a zero pad: the outputs are the thermometer bits themselves
    evaluator = [b for v in values for b in to_bits(2 * v, shape.value_bits + 1)]
    return band_from_outputs(band_circuit(shape, MLP_FAMILY).evaluate(garbler, evaluator))


def check_blind_rows(parties: TwoParties, est: Any, model: MLPModel, rows: np.ndarray) -> None:
    reference = library_output(est, rows)
    far = 0
    for row, out in zip(rows, reference, strict=True):
        band = blind_band(parties, model, row)
        assert band == model.band_from_encoded(model.encode_row(list(row)))
        if all(abs(out - c) > model.max_abs_error + 1e-6 for c in model.output_cutoffs):
            far += 1
            assert band == model.band_of_output(float(out))
    assert far >= len(rows) // 2


# ---------------------------------------------------------------- both parties, with crypto


def test_classifier_bands_through_the_pipeline(
    parties: TwoParties,
    german: tuple[np.ndarray, np.ndarray],
    classifier: tuple[Any, MLPModel],
) -> None:
    est, model = classifier
    x, _ = german
    rows = np.vstack([x[:10], corners()])
    bands = {model.band_from_encoded(model.encode_row(list(r))) for r in x[:10]}
    assert len(bands) >= 2  # the rows exercise more than one band
    check_blind_rows(parties, est, model, rows)


def test_regressor_bands_through_the_pipeline(
    parties: TwoParties,
    german: tuple[np.ndarray, np.ndarray],
    regressor: tuple[Any, MLPModel],
) -> None:
    est, model = regressor
    x, _ = german
    check_blind_rows(parties, est, model, np.vstack([x[:8], corners()]))


# ---------------------------------------------------------------- the integer path, densely


@pytest.mark.parametrize("which", ["classifier", "regressor"])
def test_circuit_is_the_integer_path_and_sklearn_far_from_cutoffs(
    request: pytest.FixtureRequest, german: tuple[np.ndarray, np.ndarray], which: str
) -> None:
    est, model = request.getfixturevalue(which)
    x, _ = german
    rng = np.random.default_rng(5)
    lo = np.array([NUMERIC_RANGES[c][0] for c in COLUMNS])
    hi = np.array([NUMERIC_RANGES[c][1] for c in COLUMNS])
    random_rows = rng.integers(lo, hi + 1, size=(300, len(COLUMNS))).astype(np.float64)
    rows = np.vstack([x, random_rows, corners(4)])
    reference = library_output(est, rows)
    scale = 2.0**-model.output_frac_bits
    worst = 0.0
    seen: set[int] = set()
    for i, (row, out) in enumerate(zip(rows, reference, strict=True)):
        encoded = model.encode_row(list(row))
        band = model.band_from_encoded(encoded)
        if i % 3 == 0:  # the circuit's plain evaluation on a third of the rows keeps this fast
            assert circuit_band_in_clear(model, encoded) == band
        error = abs(model.encoded_output(encoded) * scale - model.output(list(row)))
        worst = max(worst, error)
        assert error <= model.max_abs_error
        if abs(out) < 12:  # beyond, log-odds from predict_proba lose digits to 1 - p
            assert abs(model.output(list(row)) - out) <= 1e-9 * (1 + abs(out))
        if all(abs(out - c) > model.max_abs_error + 1e-6 for c in model.output_cutoffs):
            assert band == model.band_of_output(float(out))
        seen.add(band)
    assert len(seen) >= 3
    assert worst > model.max_abs_error / 1000  # the bound is not vacuous by orders of magnitude


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.data())
def test_error_bound_holds_on_random_networks(data: st.DataObject) -> None:
    """Random small networks (relu or identity, fractional and integer features): the proven
    bound holds for random rows of the declared ranges, the circuit equals the integer path."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    units = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=2))
    activation = data.draw(st.sampled_from(["relu", "identity"]))
    spec = FeatureSpec(
        (
            NumericFeature("a", -50.0, 200.0, integer=True),
            NumericFeature("b", 0.0, 3.0, frac_bits=data.draw(st.integers(16, 24))),
        )
    )
    sizes = [2, *units, 1]
    layers = [
        (rng.normal(0, 1.5, (n_out, n_in)).tolist(), rng.normal(0, 1, n_out).tolist())
        for n_in, n_out in itertools.pairwise(sizes)
    ]
    layers[0] = ((np.array(layers[0][0]) * [0.02, 1.0]).tolist(), layers[0][1])
    model = MLPModel(
        "random",
        spec,
        layers,
        activation=activation,
        link="identity",
        policy=BandPolicy((-1.0, 0.0, 1.0), output="raw"),
        precision=data.draw(st.sampled_from([1e-2, 1e-3])),
    )
    assert model.max_abs_error <= model.precision
    for _ in range(5):
        row = {"a": data.draw(st.integers(-50, 200)), "b": data.draw(st.floats(0.0, 3.0))}
        encoded = model.encode_row(row)
        integer = model.encoded_output(encoded) * 2.0**-model.output_frac_bits
        assert abs(integer - model.output(row)) <= model.max_abs_error
        assert circuit_band_in_clear(model, encoded) == model.band_from_encoded(encoded)


# ---------------------------------------------------------------- refusals


def test_importer_refusals(german: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = german
    x, y = x[:200], y[:200]
    kw: dict[str, Any] = {"ranges": NUMERIC_RANGES, "feature_names": COLUMNS, "policy": PD}
    tanh = fit(MLPClassifier(hidden_layer_sizes=(3,), activation="tanh", max_iter=20, random_state=0), x, y)
    with pytest.raises(ModelFormatError, match="hidden activation 'tanh' is not supported; supported: relu"):
        mlp_from_sklearn(tanh, **kw)
    three = fit(MLPClassifier(hidden_layer_sizes=(3,), max_iter=20, random_state=0), x, np.arange(200) % 3)
    with pytest.raises(ModelFormatError, match=r"3 classes .*multi-class"):
        mlp_from_sklearn(three, **kw)
    two_out = fit(
        MLPRegressor(hidden_layer_sizes=(3,), max_iter=20, random_state=0), x, np.c_[y, y].astype(float)
    )
    with pytest.raises(ModelFormatError, match="MLPRegressor with 2 outputs is not supported"):
        mlp_from_sklearn(two_out, **{**kw, "policy": RAW})
    minmax = fit(
        make_pipeline(MinMaxScaler(), MLPClassifier(hidden_layer_sizes=(3,), max_iter=20, random_state=0)),
        x,
        y,
    )
    with pytest.raises(ModelFormatError, match="Pipeline of MinMaxScaler, MLPClassifier is not supported"):
        mlp_from_sklearn(minmax, **kw)
    with pytest.raises(ModelFormatError, match="LogisticRegression is not supported"):
        mlp_from_sklearn(fit(LogisticRegression(max_iter=50), x, y), **kw)
    with pytest.raises(ModelFormatError, match="not fitted"):
        mlp_from_sklearn(MLPClassifier(), **kw)
    ok = fit(MLPClassifier(hidden_layer_sizes=(3,), max_iter=20, random_state=0), x, y)
    with pytest.raises(ModelFormatError, match="no declared range for feature"):
        mlp_from_sklearn(ok, **{**kw, "ranges": {COLUMNS[0]: (0, 1)}})
    with pytest.raises(ModelFormatError, match="pass feature_names"):
        mlp_from_sklearn(ok, ranges=NUMERIC_RANGES, policy=PD)
    regressor = fit(MLPRegressor(hidden_layer_sizes=(3,), max_iter=20, random_state=0), x, y.astype(float))
    with pytest.raises(ModelFormatError, match="policy on probabilities needs link 'logit'"):
        mlp_from_sklearn(regressor, **kw)


def test_model_refusals() -> None:
    spec = FeatureSpec((NumericFeature("a", 0, 10, integer=True),))
    good = [([[1.0]], [0.0]), ([[1.0]], [0.0])]
    kw: dict[str, Any] = {"activation": "relu", "link": "identity", "policy": RAW}
    assert MLPModel("ok", spec, good, **kw).layer_sizes == (1, 1, 1)
    with pytest.raises(ModelFormatError, match="at least one hidden"):
        MLPModel("m", spec, good[:1], **kw)
    with pytest.raises(ModelFormatError, match="output layer must have one unit"):
        MLPModel("m", spec, [([[1.0]], [0.0]), ([[1.0], [2.0]], [0.0, 0.0])], **kw)
    with pytest.raises(ModelFormatError, match="weights must be units x 1"):
        MLPModel("m", spec, [([[1.0, 2.0]], [0.0]), ([[1.0]], [0.0])], **kw)
    with pytest.raises(ModelFormatError, match="finite"):
        MLPModel("m", spec, [([[math.nan]], [0.0]), ([[1.0]], [0.0])], **kw)
    with pytest.raises(ModelFormatError, match="activation must be one of"):
        MLPModel("m", spec, good, **{**kw, "activation": "tanh"})
    categorical = FeatureSpec((CategoricalFeature("c", ("x", "y")),))
    with pytest.raises(ModelFormatError, match="numeric features with declared ranges only"):
        MLPModel("m", categorical, [([[1.0, 1.0]], [0.0]), ([[1.0]], [0.0])], **kw)
    coarse = FeatureSpec((NumericFeature("a", 0.0, 10.0, frac_bits=2),))
    with pytest.raises(ModelFormatError, match="precision 1e-06 is out of reach"):
        MLPModel("m", coarse, good, **{**kw, "precision": 1e-6})


# ---------------------------------------------------------------- persistence and what is public


def test_round_trip_and_strict_loading(classifier: tuple[Any, MLPModel]) -> None:
    _, model = classifier
    d = json.loads(json.dumps(model.to_dict()))
    again = MLPModel.from_dict(d)
    assert again == model
    assert again.max_abs_error == model.max_abs_error
    assert model.output_cutoffs == tuple(logit(c) for c in GERMAN_PD_CUTOFFS)  # mapped in plaintext
    assert again.garbler_inputs() == model.garbler_inputs()
    assert again.linear_stage() == model.linear_stage()
    tampered = copy.deepcopy(d)
    tampered["encoded"]["cutoffs"][0] += 1
    with pytest.raises(ModelFormatError, match="stored integer parameters differ"):
        MLPModel.from_dict(tampered)
    with pytest.raises(ModelFormatError, match="unknown field"):
        MLPModel.from_dict({**d, "extra": 1})
    with pytest.raises(ModelFormatError, match="kind must be 'blindscore-mlp'"):
        MLPModel.from_dict({**d, "kind": "blindscore-tree-ensemble"})
    with pytest.raises(ModelFormatError, match="unsupported format 2"):
        MLPModel.from_dict({**d, "format": 2})
    bad_layer = copy.deepcopy(d)
    bad_layer["layers"][1]["weights"] = [["x"]]
    with pytest.raises(ModelFormatError, match="weight must be a number"):
        MLPModel.from_dict(bad_layer)


def test_the_bank_learns_sizes_only(classifier: tuple[Any, MLPModel]) -> None:
    _, model = classifier
    shape = model.circuit_shape()
    assert shape.family == "mlp" and shape.values == 8 and shape.cutoffs == len(GERMAN_PD_CUTOFFS)
    names = {name for name, _ in shape.params}
    assert names == {
        "layers",
        "relu",
        "inputs",
        "units_1",
        "units_2",
        "shift_1",
        "acc_bits_2",
        "weight_bits_2",
    }
    assert model.linear_stage().value_bits == shape.value_bits
    text = model.describe() + repr(model) + repr(shape)
    weights = model.layers[1][0][0]
    assert not any(f"{w:.6g}" in text or repr(w) in text for w in weights)
    assert "8 -> 1" in model.describe() and "max error" in model.describe()


def test_example_is_consistent() -> None:
    model = MLPModel.example()
    assert model.max_abs_error <= model.precision
    rows = [(0, 18, 0.0), (20000, 100, 1.5), (5000, 30, 0.7), (12000, 45, 0.2)]
    for row in rows:
        encoded = model.encode_row(list(row))
        assert circuit_band_in_clear(model, encoded) == model.band_from_encoded(encoded)
    assert MLPModel.from_dict(model.to_dict()) == model


def test_bound_covers_each_rounding_at_the_corners() -> None:
    """One integer input, one identity unit, output weight 1: the output error is mostly the
    layer-1 weight rounding times the input, largest at a corner of the range. Over many random
    weights the corners must stay within the bound, and come within a factor 4 of it for some
    (so a term left out of the proof shows up here)."""
    spec = FeatureSpec((NumericFeature("x", 0, 1000, integer=True),))
    rng = np.random.default_rng(3)
    closest = 0.0
    for _ in range(40):
        w, b = float(rng.normal()), float(rng.normal())
        model = MLPModel(
            "corner",
            spec,
            [([[w]], [b]), ([[1.0]], [0.0])],
            activation="identity",
            link="identity",
            policy=RAW,
            precision=1e-3,
        )
        for x in (0, 1, 999, 1000):
            integer = model.encoded_output([x]) * 2.0**-model.output_frac_bits
            error = abs(integer - model.output([x]))
            assert error <= model.max_abs_error
            closest = max(closest, error / model.max_abs_error)
    assert closest > 0.25


def test_a_file_that_cannot_be_converted_is_refused_before_ranges_are_asked_for(
    german: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    """A tanh or multi-class network imported without --feature-range: the refusal names what is
    not supported, not the ranges a supported network would need."""
    import pandas as pd
    import skops.io as sio

    from blindscore.importers.sklearn import load_sklearn_file

    x, y = german
    frame = pd.DataFrame(x[:200], columns=list(COLUMNS))
    cases = [
        (MLPClassifier(hidden_layer_sizes=(3,), activation="tanh", max_iter=20, random_state=0), y[:200],
         r"hidden activation 'tanh' is not supported; supported: relu, identity$"),
        (MLPClassifier(hidden_layer_sizes=(3,), max_iter=20, random_state=0), np.arange(200) % 3,
         r"an MLPClassifier with 3 classes and 3 outputs \(multi-class or multi-label\) is not supported"),
    ]  # fmt: skip
    for i, (mlp, target, message) in enumerate(cases):
        path = tmp_path / f"m{i}.skops"
        sio.dump(fit(mlp, frame, target), path)
        with pytest.raises(ModelFormatError, match=f"^{path}: {message}"):
            load_sklearn_file(path, cutoffs=GERMAN_PD_CUTOFFS)
