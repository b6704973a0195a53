"""scikit-learn models through skops files: bands match scikit-learn, unsafe or unsupported files refused."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from blindscore.errors import InvalidInputError, ModelFormatError
from blindscore.german import NUMERIC_RANGES, design_matrix, german_feature_spec, load_german_credit
from blindscore.model import LinearModel, NumericFeature
from blindscore.sklearn_import import ALLOWED_TYPES, DEFAULT_RANGE, load_sklearn_model

PD_CUTOFFS = (0.1, 0.2, 0.35, 0.6)
RAW_CUTOFFS = (0.1, 0.25, 0.45)


@pytest.fixture(scope="module")
def frame() -> tuple[pd.DataFrame, np.ndarray]:
    """German credit as a numeric + one-hot frame with named columns, and the target (1 = bad)."""
    rows, y = load_german_credit()
    spec = german_feature_spec()
    return pd.DataFrame(design_matrix(spec, rows), columns=spec.encoded_names), y


def german_ranges(columns: list[str]) -> dict[str, tuple[float, float] | NumericFeature]:
    """Tight declared ranges: the German ranges for numerics, exact 0/1 for indicator columns."""
    return {
        c: NumericFeature(c, *NUMERIC_RANGES[c], integer=True)
        if c in NUMERIC_RANGES
        else NumericFeature(c, 0, 1, integer=True)
        for c in columns
    }


def dump(model: Any, path: Path) -> Path:
    sio.dump(model, path)
    return path


def expected_bands(values: np.ndarray, cutoffs: tuple[float, ...]) -> np.ndarray:
    return (values[:, None] >= np.asarray(cutoffs)[None, :]).sum(axis=1)


def assert_bands_match(
    model: LinearModel, x: pd.DataFrame, values: np.ndarray, cutoffs: tuple[float, ...]
) -> None:
    want = expected_bands(values, cutoffs)
    far = np.min(np.abs(values[:, None] - np.asarray(cutoffs)[None, :]), axis=1) > 1e-6
    assert far.sum() >= len(values) - 5
    checked = 0
    for i, record in enumerate(x.to_dict(orient="records")):
        if not far[i]:
            continue
        assert model.band(record) == want[i]
        assert model.band_from_encoded(model.spec.encode_row(record)) == want[i]
        checked += 1
    assert checked == far.sum()
    assert len(set(want.tolist())) == len(cutoffs) + 1  # every band occurs


ESTIMATORS = {
    "logistic": lambda: LogisticRegression(max_iter=10_000),
    "scaled-logistic": lambda: Pipeline(
        [("scale", StandardScaler()), ("lr", LogisticRegression(max_iter=10_000))]
    ),
    "linear": LinearRegression,
    "ridge": lambda: Ridge(alpha=1.0),
    "scaled-ridge": lambda: Pipeline([("scale", StandardScaler(with_mean=False)), ("ridge", Ridge())]),
}


@pytest.fixture(scope="module")
def fitted(frame: tuple[pd.DataFrame, np.ndarray]) -> dict[str, Any]:
    """Each estimator fitted once on the whole frame (the unscaled logistic fit takes seconds)."""
    x, y = frame
    return {kind: make().fit(x, y) for kind, make in ESTIMATORS.items()}


@pytest.mark.parametrize("kind", sorted(ESTIMATORS))
@pytest.mark.parametrize("ranges", ["default", "german"])
def test_bands_match_scikit_learn(
    tmp_path: Path, frame: tuple[pd.DataFrame, np.ndarray], fitted: dict[str, Any], kind: str, ranges: str
) -> None:
    x, _ = frame
    est = fitted[kind]
    classifier = hasattr(est, "predict_proba")
    cutoffs = PD_CUTOFFS if classifier else RAW_CUTOFFS
    feature_ranges = german_ranges(list(x.columns)) if ranges == "german" else None
    model = load_sklearn_model(dump(est, tmp_path / f"{kind}.skops"), cutoffs, None, feature_ranges)

    assert model.name == kind
    assert model.spec.input_names == list(x.columns)
    assert model.link == ("logit" if classifier else "identity")
    assert model.policy.output == ("probability" if classifier else "raw")
    assert model.policy.labels == tuple("ABCDE"[: len(cutoffs) + 1])
    assert model.max_abs_error <= 1e-9
    numeric = [f for f in model.spec.features if isinstance(f, NumericFeature)]
    assert len(numeric) == len(model.spec.features)
    if ranges == "default":
        assert all((f.lo, f.hi) == DEFAULT_RANGE for f in numeric)
        assert len({f.frac_bits for f in numeric}) == 1
        assert 48 < model.comparison_bits <= 64  # wide default ranges cost comparison bits
    else:
        assert model.comparison_bits <= 40
    values = est.predict_proba(x)[:, 1] if classifier else est.predict(x)
    assert_bands_match(model, x, values, cutoffs)


def test_scaler_is_folded_into_the_weights(
    tmp_path: Path, frame: tuple[pd.DataFrame, np.ndarray], fitted: dict[str, Any]
) -> None:
    x, _ = frame
    pipe = fitted["scaled-logistic"]
    model = load_sklearn_model(dump(pipe, tmp_path / "p.skops"), PD_CUTOFFS)
    scaler, lr = pipe.named_steps["scale"], pipe.named_steps["lr"]
    np.testing.assert_allclose(model.coef, lr.coef_[0] / scaler.scale_, rtol=1e-12)
    scores = np.array([model.linear_score(r) for r in x.head(50).to_dict(orient="records")])
    np.testing.assert_allclose(scores, pipe.decision_function(x.head(50)), rtol=1e-9, atol=1e-9)
    assert model.metadata["estimator"] == "StandardScaler -> LogisticRegression"
    assert model.metadata["positive_class"] == "1"


def test_classifier_defaults_and_string_classes(
    tmp_path: Path, frame: tuple[pd.DataFrame, np.ndarray]
) -> None:
    x, y = frame
    labels = np.where(y == 1, "bad", "good")
    lr = Pipeline([("s", StandardScaler()), ("lr", LogisticRegression(max_iter=10_000))]).fit(x, labels)
    model = load_sklearn_model(dump(lr, tmp_path / "lr.skops"), labels=("no", "yes"))
    assert model.policy.cutoffs == (0.5,)
    assert model.policy.labels == ("no", "yes")
    assert model.metadata["positive_class"] == "good"  # cutoffs apply to P(classes_[1])
    assert_bands_match(model, x, lr.predict_proba(x)[:, 1], (0.5,))


def test_save_load_of_an_imported_model(tmp_path: Path, frame: tuple[pd.DataFrame, np.ndarray]) -> None:
    x, y = frame
    model = load_sklearn_model(dump(Ridge().fit(x, y), tmp_path / "r.skops"), RAW_CUTOFFS, name="ridge-v1")
    model.save(tmp_path / "r.json")
    again = LinearModel.load(tmp_path / "r.json")
    assert again == model and again.name == "ridge-v1"
    row = x.iloc[3].to_dict()
    assert again.encoded_score(again.spec.encode_row(row)) == model.encoded_score(model.spec.encode_row(row))


def test_no_pickle_is_used(tmp_path: Path, fitted: dict[str, Any], monkeypatch: Any) -> None:
    path = dump(fitted["logistic"], tmp_path / "lr.skops")

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle was used")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    assert load_sklearn_model(path, PD_CUTOFFS).spec.encoded_width == 61


# ---------------------------------------------------------------------------------------------
# Refusals


def test_random_forest_is_refused_with_the_type_lists(
    tmp_path: Path, frame: tuple[pd.DataFrame, np.ndarray]
) -> None:
    x, y = frame
    rf = RandomForestClassifier(n_estimators=2, random_state=0).fit(x, y)
    with pytest.raises(ModelFormatError) as info:
        load_sklearn_model(dump(rf, tmp_path / "rf.skops"), PD_CUTOFFS)
    message = str(info.value)
    assert "sklearn.ensemble._forest.RandomForestClassifier" in message
    assert "sklearn.tree._classes.DecisionTreeClassifier" in message
    assert "LogisticRegression (binary)" in message and "Ridge" in message  # what is supported


def test_pipeline_with_pca_is_refused(tmp_path: Path, frame: tuple[pd.DataFrame, np.ndarray]) -> None:
    x, y = frame
    pipe = Pipeline([("pca", PCA(5)), ("lr", LogisticRegression(max_iter=10_000))]).fit(x, y)
    with pytest.raises(ModelFormatError, match=r"sklearn\.decomposition\._pca\.PCA") as info:
        load_sklearn_model(dump(pipe, tmp_path / "pca.skops"), PD_CUTOFFS)
    assert "StandardScaler" in str(info.value)


def test_unsupported_pipeline_shape_is_refused(
    tmp_path: Path, frame: tuple[pd.DataFrame, np.ndarray]
) -> None:
    x, y = frame
    pipe = Pipeline([("a", StandardScaler()), ("b", StandardScaler()), ("lr", Ridge())]).fit(x, y)
    with pytest.raises(ModelFormatError, match=r"unsupported pipeline \(StandardScaler, StandardScaler"):
        load_sklearn_model(dump(pipe, tmp_path / "pp.skops"), PD_CUTOFFS)


def test_model_without_feature_names_is_refused(
    tmp_path: Path, frame: tuple[pd.DataFrame, np.ndarray]
) -> None:
    x, y = frame
    path = dump(Ridge().fit(x.to_numpy(), y), tmp_path / "plain.skops")
    with pytest.raises(ModelFormatError, match=r"without feature names.*DataFrame.*feature_names"):
        load_sklearn_model(path, PD_CUTOFFS)
    named = load_sklearn_model(path, RAW_CUTOFFS, feature_names=list(x.columns))
    assert named.spec.input_names == list(x.columns)
    with pytest.raises(ModelFormatError, match="61 model inputs"):
        load_sklearn_model(path, RAW_CUTOFFS, feature_names=["a", "b"])


def test_multiclass_and_missing_cutoffs_are_refused(
    tmp_path: Path, frame: tuple[pd.DataFrame, np.ndarray]
) -> None:
    x, y = frame
    scaled = (x - x.mean()) / x.std()
    three = LogisticRegression(max_iter=10_000).fit(scaled, np.arange(len(y)) % 3)
    with pytest.raises(ModelFormatError, match="binary"):
        load_sklearn_model(dump(three, tmp_path / "three.skops"), PD_CUTOFFS)
    with pytest.raises(InvalidInputError, match="needs cutoffs"):
        load_sklearn_model(dump(Ridge().fit(x, y), tmp_path / "r.skops"))
    with pytest.raises(ModelFormatError, match="between 0 and 1"):
        load_sklearn_model(dump(LogisticRegression().fit(scaled, y), tmp_path / "l.skops"), (0.5, 1.5))
    with pytest.raises(InvalidInputError, match="unknown feature"):
        load_sklearn_model(tmp_path / "r.skops", RAW_CUTOFFS, feature_ranges={"salary": (0, 1)})


def test_hostile_schema_is_refused_before_loading(
    tmp_path: Path, frame: tuple[pd.DataFrame, np.ndarray]
) -> None:
    x, y = frame
    good = dump(Ridge().fit(x, y), tmp_path / "r.skops")
    with zipfile.ZipFile(good) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    schema = json.loads(members["schema.json"])
    schema["content"]["content"]["alpha"] = {
        "__class__": "system",
        "__module__": "os",
        "__loader__": "FunctionNode",
        "content": {"module_path": "os", "function": "system"},
    }
    members["schema.json"] = json.dumps(schema).encode()
    hostile = tmp_path / "hostile.skops"
    with zipfile.ZipFile(hostile, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    with pytest.raises(ModelFormatError, match=r"unsupported types: os\.system"):
        load_sklearn_model(hostile, RAW_CUTOFFS)


def test_not_a_skops_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.skops"
    path.write_bytes(b"\x80\x04definitely not a zip")
    with pytest.raises(ModelFormatError, match="not a skops file"):
        load_sklearn_model(path, PD_CUTOFFS)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("other.json", "{}")
    path.write_bytes(buf.getvalue())
    with pytest.raises(ModelFormatError, match="not a skops file"):
        load_sklearn_model(path, PD_CUTOFFS)


def test_allow_list_is_small() -> None:
    sklearn_types = sorted(t for t in ALLOWED_TYPES if t.startswith("sklearn."))
    assert [t.rsplit(".", 1)[1] for t in sklearn_types] == [
        "LinearRegression",
        "LogisticRegression",
        "Ridge",
        "Pipeline",
        "StandardScaler",
    ]
