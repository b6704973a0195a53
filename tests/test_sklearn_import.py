"""scikit-learn models through skops files: bands match scikit-learn, unsafe or unsupported files refused."""

from __future__ import annotations

import io
import json
import math
import pickle
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Ridge,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, OneHotEncoder, StandardScaler
from sklearn.svm import LinearSVC

from blindscore.data.german import (
    CATEGORIES,
    FEATURE_ORDER,
    GERMAN_PD_CUTOFFS,
    GERMAN_PRECISION,
    NUMERIC_RANGES,
    design_matrix,
    german_feature_spec,
    load_german_credit,
)
from blindscore.errors import EncodingError, InvalidInputError, ModelFormatError
from blindscore.importers import sklearn as sklearn_import
from blindscore.importers.sklearn import ALLOWED_TYPES, DEFAULT_RANGE, load_sklearn_model
from blindscore.models.features import CategoricalFeature, FeatureSpec, NumericFeature
from blindscore.models.linear import LinearModel
from blindscore.models.policy import BandPolicy

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
        assert model.truncated_band_from_encoded(model.spec.encode_row(record)) == want[i]
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


def test_unsupported_estimator_is_refused_with_the_type_lists(
    tmp_path: Path, frame: tuple[pd.DataFrame, np.ndarray]
) -> None:
    x, y = frame
    knn = KNeighborsClassifier(3).fit(x, y)
    with pytest.raises(ModelFormatError) as info:
        load_sklearn_model(dump(knn, tmp_path / "knn.skops"), PD_CUTOFFS)
    message = str(info.value)
    assert "unsupported types: sklearn.neighbors._classification.KNeighborsClassifier" in message
    assert "LogisticRegression" in message and "RandomForest" in message  # what is supported
    assert message.count(". ") == 0  # one sentence


def test_linear_reader_refuses_a_forest_naming_the_reader_that_takes_it(
    tmp_path: Path, frame: tuple[pd.DataFrame, np.ndarray]
) -> None:
    x, y = frame
    rf = RandomForestClassifier(n_estimators=2, max_depth=3, random_state=0).fit(x, y)
    with pytest.raises(
        ModelFormatError, match=r"a RandomForestClassifier is not a linear model.*load_sklearn_file"
    ):
        load_sklearn_model(dump(rf, tmp_path / "rf.skops"), PD_CUTOFFS)


def test_pipeline_with_pca_is_refused(tmp_path: Path, frame: tuple[pd.DataFrame, np.ndarray]) -> None:
    x, y = frame
    pipe = Pipeline([("pca", PCA(5)), ("lr", LogisticRegression(max_iter=10_000))]).fit(x, y)
    with pytest.raises(ModelFormatError, match=r"sklearn\.decomposition\._pca\.PCA") as info:
        load_sklearn_model(dump(pipe, tmp_path / "pca.skops"), PD_CUTOFFS)
    assert "; supported: " in str(info.value) and "SimpleImputer, scalers" in str(info.value)


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
    path.write_bytes(b"definitely not a zip")
    with pytest.raises(ModelFormatError, match="not a skops file"):
        load_sklearn_model(path, PD_CUTOFFS)
    path.write_bytes(b"\x80\x04a pickle's header")  # refused by name before the zip reader
    with pytest.raises(ModelFormatError, match="is a pickle file; blindscore never loads pickles"):
        load_sklearn_model(path, PD_CUTOFFS)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("other.json", "{}")
    path.write_bytes(buf.getvalue())
    with pytest.raises(ModelFormatError, match="not a skops file"):
        load_sklearn_model(path, PD_CUTOFFS)


def test_allow_list_is_small() -> None:
    sklearn_types = {t.rsplit(".", 1)[1] for t in ALLOWED_TYPES if t.startswith("sklearn.")}
    assert sklearn_types == {
        *("LogisticRegression", "LinearRegression", "Ridge", "Lasso", "ElasticNet"),
        *("SGDClassifier", "SGDRegressor", "LinearSVC", "Pipeline"),
        *("StandardScaler", "MinMaxScaler", "OneHotEncoder", "ColumnTransformer", "SimpleImputer"),
        "FunctionTransformer",  # how a fitted ColumnTransformer stores "passthrough"
        # The loss objects a fitted SGDClassifier stores (log_loss, hinge/perceptron, ...).
        *("CyHalfBinomialLoss", "Hinge", "ModifiedHuber", "SquaredHinge"),
        # Tree models, their trees and sub-estimators, GradientBoosting's init estimators.
        *("DecisionTreeClassifier", "DecisionTreeRegressor", "ExtraTreeClassifier", "ExtraTreeRegressor"),
        *("RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier", "ExtraTreesRegressor"),
        *("GradientBoostingClassifier", "GradientBoostingRegressor"),
        *("HistGradientBoostingClassifier", "HistGradientBoostingRegressor", "_BinMapper", "TreePredictor"),
        *("Tree", "DummyClassifier", "DummyRegressor"),
        # MLPs, their optimiser state, and the label encoders of classifiers.
        *("MLPClassifier", "MLPRegressor", "AdamOptimizer", "SGDOptimizer", "LabelEncoder", "LabelBinarizer"),
        # The losses and links of the supported losses only (binomial, squared, absolute, huber, pinball).
        *("HalfBinomialLoss", "HalfSquaredError", "AbsoluteError", "HuberLoss", "PinballLoss"),
        *("CyHalfSquaredError", "CyAbsoluteError", "CyHuberLoss", "CyPinballLoss"),
        *("IdentityLink", "LogitLink", "Interval"),
    }
    numpy_types = {t for t in ALLOWED_TYPES if t.startswith("numpy.")}
    assert {
        "numpy.random.mtrand.RandomState",
        "numpy.random._generator.Generator",
        "numpy.dtype",
    } <= numpy_types
    assert not {t for t in ALLOWED_TYPES if not t.startswith(("sklearn.", "builtins.", "numpy."))}


# ---------------------------------------------------------------------------------------------
# Every supported estimator in every supported pipeline shape, on German credit

NUMERIC = [c for c in FEATURE_ORDER if c in NUMERIC_RANGES]
CATEGORICAL = [c for c in FEATURE_ORDER if c not in NUMERIC_RANGES]

#: Small iteration budgets and fixed seeds: fast and deterministic; the fits need not converge,
#: the import only has to reproduce whatever was fitted.
ALL_ESTIMATORS: dict[str, Callable[[], Any]] = {
    "logistic": lambda: LogisticRegression(max_iter=200),
    "linear": LinearRegression,
    "ridge": lambda: Ridge(alpha=1.0),
    "lasso": lambda: Lasso(alpha=1e-3, max_iter=200),
    "elasticnet": lambda: ElasticNet(alpha=1e-3, l1_ratio=0.5, max_iter=200),
    "sgd-regressor": lambda: SGDRegressor(max_iter=20, tol=None, random_state=0),
    "sgd-log": lambda: SGDClassifier(loss="log_loss", alpha=0.05, max_iter=20, tol=None, random_state=0),
    "sgd-hinge": lambda: SGDClassifier(loss="hinge", max_iter=20, tol=None, random_state=0),
    "sgd-modified-huber": lambda: SGDClassifier(loss="modified_huber", max_iter=20, tol=None, random_state=0),
    "linear-svc": lambda: LinearSVC(max_iter=200, random_state=0),
}
#: What the cutoffs apply to, by estimator: written out here rather than asked of the importer.
OUTPUTS = {
    "logistic": "predict_proba",
    "sgd-log": "predict_proba",
    "sgd-hinge": "decision_function",
    "sgd-modified-huber": "decision_function",  # its predict_proba is not a sigmoid
    "linear-svc": "decision_function",
    "linear": "predict",
    "ridge": "predict",
    "lasso": "predict",
    "elasticnet": "predict",
    "sgd-regressor": "predict",
}


def _ct(num: Any, cat: OneHotEncoder) -> ColumnTransformer:
    return ColumnTransformer([("num", num, NUMERIC), ("cat", cat, CATEGORICAL)])


#: Pipeline shape -> (wrap an estimator, which data it is fitted on).
SHAPES: dict[str, tuple[Callable[[Any], Any], str]] = {
    "bare": (lambda e: e, "numeric-standardised"),
    "standard-scaler": (lambda e: Pipeline([("scale", StandardScaler()), ("est", e)]), "numeric"),
    "minmax-scaler": (lambda e: Pipeline([("scale", MinMaxScaler((-1, 2))), ("est", e)]), "numeric"),
    "minmax-clip": (lambda e: Pipeline([("scale", MinMaxScaler(clip=True)), ("est", e)]), "numeric"),
    "ct-standard-onehot": (
        lambda e: Pipeline([("prep", _ct(StandardScaler(), OneHotEncoder())), ("est", e)]),
        "german",
    ),
    "ct-minmax-onehot-drop-first": (
        lambda e: Pipeline([("prep", _ct(MinMaxScaler(), OneHotEncoder(drop="first"))), ("est", e)]),
        "german",
    ),
    "ct-passthrough-onehot-if-binary": (
        lambda e: Pipeline(
            [
                ("prep", _ct("passthrough", OneHotEncoder(drop="if_binary", handle_unknown="ignore"))),
                ("est", e),
            ]
        ),
        "german-standardised",
    ),
    "onehot": (
        lambda e: Pipeline([("onehot", OneHotEncoder(sparse_output=False)), ("est", e)]),
        "categorical",
    ),
}


@pytest.fixture(scope="module")
def german() -> dict[str, pd.DataFrame | np.ndarray]:
    """German credit in the frames the shapes train on (named columns), and the target."""
    rows, y = load_german_credit()
    df = pd.DataFrame(rows, columns=list(FEATURE_ORDER))
    num = df[NUMERIC].astype(np.float64)
    z = (num - num.mean()) / num.std()  # for shapes with no scaler: SGD needs scaled inputs
    return {
        "y": y,
        "german": df,
        "german-standardised": df.assign(**{c: z[c] for c in NUMERIC}),
        "numeric": df[NUMERIC],
        "numeric-standardised": z,
        "categorical": df[CATEGORICAL],
    }


def fit_quietly(model: Any, x: pd.DataFrame, y: np.ndarray) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y)


def sklearn_output(est: Any, x: pd.DataFrame, output: str) -> tuple[np.ndarray, np.ndarray]:
    """(the value cutoffs apply to, the score in the model's units: log-odds or the value)."""
    if output == "predict_proba":
        return est.predict_proba(x)[:, 1], est.decision_function(x)
    if output == "decision_function":
        values = est.decision_function(x)
        return values, values
    values = np.asarray(est.predict(x), dtype=np.float64).reshape(-1)
    return values, values


def quantile_cutoffs(values: np.ndarray) -> tuple[float, ...]:
    """Cutoffs that split the sample into four bands (rounded, so no row sits exactly on one)."""
    return tuple(float(f"{q:.4g}") for q in np.quantile(values, [0.25, 0.5, 0.75]))


def check_against_sklearn(
    model: LinearModel, est: Any, x: pd.DataFrame, output: str, cutoffs: tuple[float, ...]
) -> None:
    """Plaintext outputs, bands, encoded scores and the JSON round trip, on every row of ``x``."""
    values, scores = sklearn_output(est, x, output)
    records = x.to_dict(orient="records")
    assert len(records) == 1000

    # Plaintext output: predict_proba[:, 1] / decision_function / predict, to 1e-9 relative (with
    # a floor of 1e-12 of the output's scale for values that are nearly 0).
    scale = max(1.0, float(np.max(np.abs(values))))
    predicted = np.array([model.predict(r) for r in records])
    linear = np.array([model.linear_score(r) for r in records])
    np.testing.assert_allclose(predicted, values, rtol=1e-9, atol=1e-12 * scale)
    np.testing.assert_allclose(
        linear, scores, rtol=1e-9, atol=1e-12 * max(1.0, float(np.max(np.abs(scores))))
    )

    # Bands: every row farther than max_abs_error (score units) from every cutoff gets the band
    # scikit-learn's output gives, in plaintext and on the encrypted path's integers.
    want = expected_bands(values, cutoffs)
    gap = np.min(np.abs(scores[:, None] - np.asarray(model.score_cutoffs)[None, :]), axis=1)
    far = gap > model.max_abs_error
    assert far.sum() >= len(records) - 5
    assert len(set(want[far].tolist())) == len(cutoffs) + 1  # every band occurs
    s = model.score_frac_bits
    for i, record in enumerate(records):
        encoded = model.spec.encode_row(record)
        s_enc = model.encoded_score(encoded)
        assert abs(math.ldexp(s_enc, -s) - linear[i]) <= model.max_abs_error
        assert abs(math.ldexp(s_enc, -s) - scores[i]) <= model.max_abs_error + 1e-12 * scale
        if far[i]:
            assert model.band(record) == want[i]
            assert model.truncated_band_from_encoded(encoded, 0) == want[i]
            assert model.truncated_band_from_encoded(encoded, 1) == want[i]

    # Round trip through JSON: an equal model, same integers.
    again = LinearModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again == model
    assert again.encoded_weights == model.encoded_weights and again.spec == model.spec


@pytest.fixture(scope="module")
def fitted_shapes(german: dict[str, Any]) -> dict[tuple[str, str], Any]:
    """Each (shape, estimator) pair fitted on first use."""
    cache: dict[tuple[str, str], Any] = {}

    class Lazy(dict[tuple[str, str], Any]):
        def __missing__(self, key: tuple[str, str]) -> Any:
            shape, kind = key
            wrap, data = SHAPES[shape]
            cache[key] = fit_quietly(wrap(ALL_ESTIMATORS[kind]()), german[data], german["y"])
            return cache[key]

    return Lazy()


#: A covering design instead of the full product (which costs ~40 s): every estimator alone and
#: behind a ColumnTransformer with one-hot encoding, and every shape with a probabilistic
#: classifier, a decision-function classifier and a regressor.
PAIRS = sorted(
    {(shape, kind) for shape in ("bare", "ct-standard-onehot") for kind in ALL_ESTIMATORS}
    | {(shape, kind) for shape in SHAPES for kind in ("logistic", "linear-svc", "ridge")}
)


@pytest.mark.parametrize(("shape", "kind"), PAIRS)
def test_every_estimator_in_every_shape_matches_sklearn(
    tmp_path: Path, german: dict[str, Any], fitted_shapes: dict[tuple[str, str], Any], shape: str, kind: str
) -> None:
    est = fitted_shapes[(shape, kind)]
    x = german[SHAPES[shape][1]]
    output = OUTPUTS[kind]
    values, _ = sklearn_output(est, x, output)
    cutoffs = quantile_cutoffs(values)
    model = load_sklearn_model(dump(est, tmp_path / f"{kind}.skops"), cutoffs)

    assert model.link == ("logit" if output == "predict_proba" else "identity")
    assert model.policy.output == ("probability" if output == "predict_proba" else "raw")
    assert model.metadata["output"] == ("predict_proba[:, 1]" if output == "predict_proba" else output)
    assert model.metadata["estimator"].endswith(type(ALL_ESTIMATORS[kind]()).__name__)
    assert model.max_abs_error <= 1e-9
    categorical = [f for f in model.spec.features if isinstance(f, CategoricalFeature)]
    if shape.startswith(("ct-", "onehot")):
        assert [f.name for f in categorical] == CATEGORICAL
        assert all(f.categories == tuple(sorted(CATEGORIES[f.name])) for f in categorical)
    else:
        assert not categorical
    assert model.spec.input_names == [c for c in FEATURE_ORDER if c in x.columns]
    check_against_sklearn(model, est, x, output, cutoffs)


# ---------------------------------------------------------------------------------------------
# One-hot encoding, scalers and ColumnTransformer details


def test_onehot_columns_become_categorical_features(tmp_path: Path, german: dict[str, Any]) -> None:
    df, y = german["german"], german["y"]
    pipe = fit_quietly(
        Pipeline(
            [("prep", _ct(StandardScaler(), OneHotEncoder(drop="first"))), ("lr", LogisticRegression())]
        ),
        df,
        y,
    )
    model = load_sklearn_model(dump(pipe, tmp_path / "ct.skops"), PD_CUTOFFS)
    encoder = pipe.named_steps["prep"].named_transformers_["cat"]
    assert (
        model.metadata["estimator"]
        == "ColumnTransformer(StandardScaler, OneHotEncoder) -> LogisticRegression"
    )
    assert model.metadata["positive_class"] == "1"
    assert "unseen_categories" not in model.metadata
    assert model.spec.input_names == list(FEATURE_ORDER)  # the DataFrame's order, not the transformers'
    coef = dict(zip(model.spec.encoded_names, model.coef, strict=True))
    lr = pipe.named_steps["lr"].coef_[0]
    position = len(NUMERIC)
    for feature, categories in zip(CATEGORICAL, encoder.categories_, strict=True):
        f = model.spec.features[model.spec.input_names.index(feature)]
        assert isinstance(f, CategoricalFeature) and f.categories == tuple(categories)
        assert coef[f"{feature}={categories[0]}"] == 0.0  # dropped: weight 0
        for c in categories[1:]:  # the kept indicators weigh exactly what the estimator says
            assert coef[f"{feature}={c}"] == lr[position]
            position += 1
    assert position == lr.size
    scaler = pipe.named_steps["prep"].named_transformers_["num"]
    for i, feature in enumerate(NUMERIC):
        assert coef[feature] == pytest.approx(lr[i] / scaler.scale_[i], rel=1e-12)


def test_drop_if_binary_zeroes_only_binary_features(tmp_path: Path, german: dict[str, Any]) -> None:
    x, y = german["categorical"], german["y"]
    pipe = fit_quietly(Pipeline([("oh", OneHotEncoder(drop="if_binary")), ("r", Ridge())]), x, y)
    model = load_sklearn_model(dump(pipe, tmp_path / "oh.skops"), RAW_CUTOFFS)
    coef = dict(zip(model.spec.encoded_names, model.coef, strict=True))
    assert model.metadata["estimator"] == "OneHotEncoder -> Ridge"
    for f in model.spec.features:
        assert isinstance(f, CategoricalFeature)
        weights = [coef[c] for c in f.columns]
        assert (weights[0] == 0.0) == (len(f.categories) == 2)
        assert all(w != 0.0 for w in weights[1:])


def test_handle_unknown_ignore_imports_but_the_platform_refuses_unseen_values(
    tmp_path: Path, german: dict[str, Any]
) -> None:
    """Chosen behaviour: import, document, and let the platform refuse an unseen category.

    scikit-learn would score it as all-zero indicators; blindscore never gives it a band at all,
    so no band ever differs from scikit-learn's, some rows are refused instead.
    """
    df, y = german["german"], german["y"]
    make = lambda unknown: Pipeline(  # noqa: E731
        [("prep", _ct(StandardScaler(), OneHotEncoder(handle_unknown=unknown))), ("lr", LogisticRegression())]
    )
    ignoring = fit_quietly(make("ignore"), df, y)
    model = load_sklearn_model(dump(ignoring, tmp_path / "ignore.skops"), PD_CUTOFFS)
    assert "refused by the platform" in model.metadata["unseen_categories"]
    row = df.iloc[0].to_dict()
    row["purpose"] = "vacation"  # A47: a UCI code absent from the data
    assert ignoring.predict_proba(pd.DataFrame([row]))[0, 1] > 0  # scikit-learn scores it ...
    with pytest.raises(EncodingError, match=r"purpose.*unseen category 'vacation'"):
        model.band(row)  # ... the platform refuses it
    with pytest.raises(EncodingError, match="unseen category"):
        model.spec.encode_row(row)

    strict = fit_quietly(make("error"), df, y)
    model = load_sklearn_model(dump(strict, tmp_path / "error.skops"), PD_CUTOFFS)
    assert "unseen_categories" not in model.metadata
    with pytest.raises(ValueError, match="unknown categor"):
        strict.predict_proba(pd.DataFrame([row]))
    with pytest.raises(EncodingError, match="unseen category"):
        model.band(row)


def test_minmax_clip_declares_the_fitted_range(tmp_path: Path, german: dict[str, Any]) -> None:
    x, y = german["numeric"], german["y"]
    pipe = fit_quietly(Pipeline([("mm", MinMaxScaler(clip=True)), ("r", Ridge())]), x, y)
    path = dump(pipe, tmp_path / "clip.skops")
    model = load_sklearn_model(path, RAW_CUTOFFS)
    scaler = pipe.named_steps["mm"]
    for f, lo, hi in zip(model.spec.features, scaler.data_min_, scaler.data_max_, strict=True):
        assert isinstance(f, NumericFeature)
        assert (f.lo, f.hi) == (lo, hi)
    assert "age_in_years" in model.metadata["minmax_clip"]
    # Outside the fitted range scikit-learn clips, which no linear score can do: the platform
    # refuses such a value instead of scoring it differently.
    row = x.iloc[0].to_dict()
    row["age_in_years"] = float(scaler.data_max_[NUMERIC.index("age_in_years")]) + 1
    unclipped = row["age_in_years"] * scaler.scale_[4] + scaler.min_[4]
    assert unclipped > 1.0  # scikit-learn would have clipped it to 1
    with pytest.raises(EncodingError, match=r"age_in_years.*outside the declared range"):
        model.spec.encode_row(row)

    # A narrower declared range is fine; a wider one is refused, naming the feature and the fix.
    narrow = load_sklearn_model(path, RAW_CUTOFFS, feature_ranges={"age_in_years": (20, 70)})
    age = narrow.spec.features[4]
    assert isinstance(age, NumericFeature) and age.name == "age_in_years"
    assert (age.lo, age.hi) == (20, 70)
    with pytest.raises(InvalidInputError, match=r"clip=True.*'age_in_years'.*clip=False"):
        load_sklearn_model(path, RAW_CUTOFFS, feature_ranges={"age_in_years": (18, 120)})
    with pytest.raises(InvalidInputError, match="clip=True"):
        load_sklearn_model(
            path, RAW_CUTOFFS, feature_ranges={"age_in_years": NumericFeature("age_in_years", 0, 75, 8)}
        )

    # Without clip the declared range is the usual default, and any value in it scores linearly.
    plain = fit_quietly(Pipeline([("mm", MinMaxScaler()), ("r", Ridge())]), x, y)
    model = load_sklearn_model(dump(plain, tmp_path / "plain.skops"), RAW_CUTOFFS)
    assert all((f.lo, f.hi) == DEFAULT_RANGE for f in model.spec.features if isinstance(f, NumericFeature))
    assert model.linear_score(row) == pytest.approx(plain.predict(pd.DataFrame([row]))[0], rel=1e-9)


def test_german_declared_ranges_on_a_column_transformer(tmp_path: Path, german: dict[str, Any]) -> None:
    df, y = german["german"], german["y"]
    pipe = fit_quietly(
        Pipeline([("prep", _ct(StandardScaler(), OneHotEncoder())), ("lr", LogisticRegression())]), df, y
    )
    path = dump(pipe, tmp_path / "ct.skops")
    ranges_by_name = {c: NumericFeature(c, *NUMERIC_RANGES[c], integer=True) for c in NUMERIC}
    ranges: dict[str, tuple[float, float] | NumericFeature] = dict(ranges_by_name)
    narrow = load_sklearn_model(path, GERMAN_PD_CUTOFFS, feature_ranges=ranges, precision=GERMAN_PRECISION)
    wide = load_sklearn_model(path, GERMAN_PD_CUTOFFS, precision=GERMAN_PRECISION)
    assert narrow.spec == FeatureSpec(
        tuple(
            ranges_by_name[f.name]
            if f.name in ranges_by_name
            else CategoricalFeature(f.name, tuple(sorted(CATEGORIES[f.name])))
            for f in german_feature_spec().features
        )
    )
    assert narrow.comparison_bits < wide.comparison_bits
    check_against_sklearn(narrow, pipe, df, "predict_proba", GERMAN_PD_CUTOFFS)
    with pytest.raises(InvalidInputError, match=r"categorical feature\(s\) \['purpose'\]"):
        load_sklearn_model(path, PD_CUTOFFS, feature_ranges={"purpose": (0, 1)})


def test_column_transformer_weights_and_dropped_columns(tmp_path: Path, german: dict[str, Any]) -> None:
    df, y = german["german"], german["y"]
    ct = ColumnTransformer(
        [
            ("num", MinMaxScaler(), NUMERIC[:3]),
            ("skip", "drop", ["credit_history"]),
            ("cat", OneHotEncoder(), ["purpose", "housing"]),
        ],
        transformer_weights={"num": 2.0, "cat": 0.5},
    )
    pipe = fit_quietly(Pipeline([("prep", ct), ("svc", LinearSVC(max_iter=200, random_state=0))]), df, y)
    model = load_sklearn_model(dump(pipe, tmp_path / "w.skops"))
    used = {*NUMERIC[:3], "purpose", "housing"}
    assert model.spec.input_names == [c for c in FEATURE_ORDER if c in used]  # DataFrame order
    assert model.policy.cutoffs == (0.0,)  # the sign, as scikit-learn's predict uses
    assert model.metadata["estimator"] == "ColumnTransformer(MinMaxScaler, OneHotEncoder) -> LinearSVC"
    check_against_sklearn(model, pipe, df, "decision_function", (0.0,))
    far = [
        r
        for r, d in zip(df.to_dict(orient="records"), pipe.decision_function(df), strict=True)
        if abs(d) > model.max_abs_error
    ]
    assert [model.band(r) for r in far] == [int(p) for p in pipe.predict(pd.DataFrame(far))]


def test_probe_catches_a_wrong_fold(tmp_path: Path, german: dict[str, Any], monkeypatch: Any) -> None:
    """The import is checked against scikit-learn after the fact: a slip in the mapping is refused."""
    x, y = german["categorical"], german["y"]
    pipe = fit_quietly(Pipeline([("oh", OneHotEncoder()), ("lr", LogisticRegression())]), x, y)
    path = dump(pipe, tmp_path / "oh.skops")
    real_fold = sklearn_import._fold

    def swapped(*args: Any) -> tuple[list[float], float]:
        coef, intercept = real_fold(*args)
        coef[0], coef[1] = coef[1], coef[0]  # two categories of the first feature exchanged
        return coef, intercept

    monkeypatch.setattr(sklearn_import, "_fold", swapped)
    with pytest.raises(ModelFormatError, match="not the plain linear form"):
        load_sklearn_model(path, PD_CUTOFFS)


@pytest.mark.parametrize("shape", ["ct-standard-onehot", "onehot"])
def test_no_pickle_for_pipelines_with_encoders(
    tmp_path: Path, fitted_shapes: dict[tuple[str, str], Any], monkeypatch: Any, shape: str
) -> None:
    path = dump(fitted_shapes[(shape, "sgd-log")], tmp_path / "p.skops")

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle was used")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    model = load_sklearn_model(path, PD_CUTOFFS)
    assert model.spec.encoded_width == sum(len(CATEGORIES[c]) for c in CATEGORICAL) + (
        len(NUMERIC) if shape.startswith("ct") else 0
    )


# ---------------------------------------------------------------------------------------------
# Refusals of the new shapes


def test_unknown_types_in_a_pipeline_are_listed(tmp_path: Path, german: dict[str, Any]) -> None:
    x, y = german["numeric"], german["y"]
    knn = fit_quietly(Pipeline([("s", StandardScaler()), ("k", KNeighborsClassifier(3))]), x, y)
    with pytest.raises(ModelFormatError) as info:
        load_sklearn_model(dump(knn, tmp_path / "knn.skops"), PD_CUTOFFS)
    message = str(info.value)
    assert "unsupported types: " in message
    assert "sklearn.neighbors._classification.KNeighborsClassifier" in message
    assert message.count("; supported: ") == 1 and ". " not in message  # one sentence
    assert "SGD" in message and "ColumnTransformer" in message  # what is supported

    log = fit_quietly(Pipeline([("f", FunctionTransformer(np.log1p)), ("lr", LogisticRegression())]), x, y)
    with pytest.raises(ModelFormatError, match=r"unsupported types: numpy\.log1p; supported"):
        load_sklearn_model(dump(log, tmp_path / "log.skops"), PD_CUTOFFS)
    # FunctionTransformer itself is allowed (a fitted "passthrough"), but not as a pipeline step.
    ident = fit_quietly(Pipeline([("f", FunctionTransformer()), ("lr", LogisticRegression())]), x, y)
    with pytest.raises(
        ModelFormatError, match=r"unsupported pipeline \(FunctionTransformer, LogisticRegression\)"
    ):
        load_sklearn_model(dump(ident, tmp_path / "ident.skops"), PD_CUTOFFS)
    # An SGDClassifier with a regression loss: its loss type is allow-listed (for the regressors'
    # losses), the loss itself is refused by name.
    sgd = fit_quietly(SGDClassifier(loss="squared_error", max_iter=5, tol=None, random_state=0), x, y)
    with pytest.raises(
        ModelFormatError,
        match=r"an SGDClassifier with the regression loss 'squared_error' is not supported; supported: "
        r"SGDClassifier losses log_loss, hinge",
    ):
        load_sklearn_model(dump(sgd, tmp_path / "sgd.skops"), PD_CUTOFFS)


@pytest.mark.parametrize(
    "make",
    [
        lambda: LogisticRegression(max_iter=200),
        lambda: SGDClassifier(max_iter=5, tol=None, random_state=0),
        lambda: SGDClassifier(loss="log_loss", max_iter=5, tol=None, random_state=0),
        lambda: LinearSVC(max_iter=200, random_state=0),
    ],
    ids=["logistic", "sgd-hinge", "sgd-log", "linear-svc"],
)
def test_multiclass_classifiers_are_refused(tmp_path: Path, german: dict[str, Any], make: Any) -> None:
    x = german["numeric-standardised"]
    three = fit_quietly(make(), x, np.arange(len(x)) % 3)
    with pytest.raises(
        ModelFormatError, match=r"only binary classifiers are supported; this \w+ has 3 classes"
    ):
        load_sklearn_model(dump(three, tmp_path / "three.skops"), PD_CUTOFFS)


@pytest.mark.parametrize("make", [LinearRegression, Ridge, Lasso, ElasticNet], ids=lambda m: m.__name__)
def test_multi_output_regressors_are_refused(tmp_path: Path, german: dict[str, Any], make: Any) -> None:
    x, y = german["numeric-standardised"], german["y"]
    two = fit_quietly(make(), x, np.column_stack([y, 1 - y]))
    with pytest.raises(ModelFormatError, match=r"single-output.*\(2, 7\)"):
        load_sklearn_model(dump(two, tmp_path / "two.skops"), RAW_CUTOFFS)


def test_unsupported_column_transformers_are_refused(tmp_path: Path, german: dict[str, Any]) -> None:
    df, y = german["german"], german["y"]

    def load(ct: ColumnTransformer) -> LinearModel:
        pipe = fit_quietly(Pipeline([("prep", ct), ("r", Ridge())]), df, y)
        return load_sklearn_model(dump(pipe, tmp_path / "ct.skops"), RAW_CUTOFFS)

    onehot = ("cat", OneHotEncoder(), CATEGORICAL)
    with pytest.raises(ModelFormatError, match=r"remainder must be 'drop' \(got 'passthrough'\)"):
        load(ColumnTransformer([onehot], remainder="passthrough"))
    with pytest.raises(ModelFormatError, match=r"remainder must be 'drop' \(got 'StandardScaler'\)"):
        load(ColumnTransformer([onehot], remainder=StandardScaler()))
    nested = Pipeline([("s", StandardScaler()), ("m", MinMaxScaler())])
    with pytest.raises(
        ModelFormatError,
        match=r"unsupported pipeline \(StandardScaler, MinMaxScaler\) in ColumnTransformer transformer 'num'",
    ):
        load(ColumnTransformer([("num", nested, NUMERIC), onehot]))
    with pytest.raises(ModelFormatError, match="'age_in_years' feeds more than one"):
        load(ColumnTransformer([("a", StandardScaler(), NUMERIC), ("b", MinMaxScaler(), ["age_in_years"])]))
    numeric_categories = ColumnTransformer([("cat", OneHotEncoder(), ["present_residence_since"])])
    with pytest.raises(ModelFormatError, match=r"'present_residence_since' has non-string categories \(1, 2"):
        load(numeric_categories)
    with pytest.raises(ModelFormatError, match="infrequent-category grouping"):
        load(ColumnTransformer([("cat", OneHotEncoder(min_frequency=10), CATEGORICAL)]))
    # A bare ColumnTransformer is no model.
    bare = ColumnTransformer([onehot]).fit(df)
    with pytest.raises(ModelFormatError, match=r"unsupported types: .*ColumnTransformer"):
        load_sklearn_model(dump(bare, tmp_path / "bare.skops"), RAW_CUTOFFS)
    # A onehot step followed by a scaler is not one of the shapes.
    pipe = fit_quietly(
        Pipeline([("oh", OneHotEncoder()), ("s", StandardScaler(with_mean=False)), ("r", Ridge())]),
        german["categorical"],
        y,
    )
    with pytest.raises(
        ModelFormatError, match=r"unsupported pipeline \(OneHotEncoder, StandardScaler, Ridge\)"
    ):
        load_sklearn_model(dump(pipe, tmp_path / "p.skops"), RAW_CUTOFFS)


def test_decision_function_classifiers_default_to_the_sign(tmp_path: Path, german: dict[str, Any]) -> None:
    x, y = german["numeric-standardised"], german["y"]
    sgd = fit_quietly(SGDClassifier(max_iter=20, tol=None, random_state=0), x, y)
    model = load_sklearn_model(dump(sgd, tmp_path / "sgd.skops"), labels=("good", "bad"))
    assert model.policy.cutoffs == (0.0,) and model.policy.output == "raw" and model.link == "identity"
    with pytest.raises(ModelFormatError, match="between 0 and 1"):
        BandPolicy((0.0,), (), "probability")  # why raw: a decision function is no probability
    records = x.to_dict(orient="records")
    decision = sgd.decision_function(x)
    predicted = sgd.predict(x)
    checked = 0
    for r, d, p in zip(records, decision, predicted, strict=True):
        if abs(d) > model.max_abs_error:
            assert model.policy.labels[model.band(r)] == ("bad" if p == 1 else "good")
            checked += 1
    assert checked >= 995
