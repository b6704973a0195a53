"""skops files of scikit-learn tree models and MLPs, SimpleImputer in the public encoding, refusals.

Each family is saved with ``skops.io.dump`` and read back as ``blindscore model import`` reads it
(``read_model``); on rows with missing values its plaintext output equals scikit-learn's own
``predict_proba[:, 1]`` / ``predict`` and its integer (blind) band equals its plaintext band.
Every refusal is one sentence naming the construct and what is supported.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from blindscore.app.cli import main
from blindscore.errors import EncodingError, InvalidInputError, ModelFormatError
from blindscore.importers import ImportOptions, read_model
from blindscore.models.contract import PrivateModel
from blindscore.models.features import FeatureSpec, NumericFeature
from blindscore.models.linear import LinearModel
from blindscore.models.mlp import MLPModel
from blindscore.models.registry import load_model
from blindscore.models.trees import TreeEnsemble

COLUMNS = ("a", "b", "c", "d", "e")
CUTOFFS = (0.3, 0.6)


def fit(estimator: Any, x: Any, y: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(x, y)


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
    """Numeric features (clean and with ~8 % of cells missing), a binary and a continuous target."""
    x, y = make_classification(300, 5, n_informative=3, random_state=7)
    clean = pd.DataFrame(x * [1.0, 10.0, 100.0, 1.0, 0.1], columns=list(COLUMNS))
    holes = clean.mask(np.random.default_rng(7).random(clean.shape) < 0.08)
    return clean, holes, y, clean["a"].to_numpy() * 3 + clean["b"].to_numpy()


def ranges(frame: pd.DataFrame) -> tuple[tuple[str, float, float], ...]:
    return tuple((c, float(frame[c].min()) - 1, float(frame[c].max()) + 1) for c in frame.columns)


def dump(estimator: Any, path: Path) -> Path:
    sio.dump(estimator, path)
    return path


def records(frame: pd.DataFrame) -> list[dict[str, object]]:
    return [
        {c: (None if pd.isna(v) else float(v)) for c, v in row.items()} for row in frame.to_dict("records")
    ]


def check_against_sklearn(model: PrivateModel, estimator: Any, frame: pd.DataFrame, tol: float) -> None:
    """Plaintext output equals scikit-learn's; the integer band equals the plaintext band."""
    classifier = hasattr(estimator, "predict_proba")
    theirs = estimator.predict_proba(frame)[:, 1] if classifier else estimator.predict(frame)
    rows = records(frame)
    ours = np.array([model.predict(r) for r in rows])  # type: ignore[attr-defined]
    assert np.max(np.abs(ours - theirs)) <= tol
    assert [model.band_from_encoded(model.spec.encode_row(r)) for r in rows[:60]] == [
        model.band(r) for r in rows[:60]
    ]


CLASSIFIERS = [
    DecisionTreeClassifier(max_depth=4, random_state=0),
    RandomForestClassifier(n_estimators=6, max_depth=4, random_state=0),
    ExtraTreesClassifier(n_estimators=6, max_depth=4, random_state=0),
    HistGradientBoostingClassifier(max_iter=8, max_depth=3, random_state=0),
    make_pipeline(
        SimpleImputer(strategy="median"), GradientBoostingClassifier(n_estimators=8, random_state=0)
    ),
]
REGRESSORS = [
    DecisionTreeRegressor(max_depth=4, random_state=0),
    RandomForestRegressor(n_estimators=6, max_depth=4, random_state=0),
    ExtraTreesRegressor(n_estimators=6, max_depth=4, random_state=0),
    HistGradientBoostingRegressor(max_iter=8, max_depth=3, random_state=0),
    make_pipeline(SimpleImputer(), GradientBoostingRegressor(n_estimators=8, loss="huber", random_state=0)),
]


@pytest.mark.parametrize("estimator", CLASSIFIERS + REGRESSORS, ids=lambda e: type(e).__name__)
def test_tree_models_from_skops_equal_the_library_with_missing_values(
    estimator: Any, data: tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    _, holes, y, target = data
    classifier = any(estimator is e for e in CLASSIFIERS)
    fit(estimator, holes, y if classifier else target)
    cutoffs = CUTOFFS if classifier else (-1.0, 1.0)
    model = read_model(dump(estimator, tmp_path / "m.skops"), ImportOptions(cutoffs=cutoffs))
    assert isinstance(model, TreeEnsemble)
    assert model.policy.output == ("probability" if classifier else "raw")
    assert holes.isna().to_numpy().any()
    check_against_sklearn(model, estimator, holes, 1e-12)


def test_an_imputer_before_trees_is_folded_into_them_and_stays_secret(
    data: tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    _, holes, y, _ = data
    ct = ColumnTransformer(
        [
            ("fill", SimpleImputer(strategy="constant", fill_value=0.25), ["e", "b"]),
            ("keep", "passthrough", ["a"]),
        ]
    )
    pipe = fit(
        Pipeline([("ct", ct), ("tree", DecisionTreeClassifier(max_depth=5, random_state=0))]), holes, y
    )
    model = read_model(dump(pipe, tmp_path / "ct.skops"), ImportOptions(cutoffs=CUTOFFS))
    assert isinstance(model, TreeEnsemble)
    assert model.feature_names == ("e", "b", "a")  # the ColumnTransformer's output order; c, d dropped
    assert "0.25" not in json.dumps(model.spec.to_dict())  # the fill value is not in the public spec
    check_against_sklearn(model, pipe, holes[["a", "b", "c", "d", "e"]], 1e-12)
    # A missing "e" scores as 0.25 does, a missing "a" (not imputed) as the tree's own NaN rule.
    row = {"a": 0.1, "b": 1.0, "c": 0.0, "d": 0.0, "e": None}
    assert model.predict(row) == model.predict({**row, "e": 0.25})


def test_mlps_from_skops_take_ranges_and_an_imputer(
    data: tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    clean, holes, y, target = data
    clf = fit(
        make_pipeline(SimpleImputer(), StandardScaler(), MLPClassifier((6,), random_state=0, max_iter=300)),
        holes,
        y,
    )
    model = read_model(
        dump(clf, tmp_path / "clf.skops"), ImportOptions(cutoffs=CUTOFFS, feature_ranges=ranges(clean))
    )
    assert isinstance(model, MLPModel)
    fills = {f.name: f.impute for f in model.spec.features if isinstance(f, NumericFeature)}
    assert fills == pytest.approx(dict(zip(COLUMNS, clf[0].statistics_, strict=True)), rel=0, abs=0)
    check_against_sklearn(model, clf, holes, 1e-9)
    reg = fit(
        Pipeline(
            [
                (
                    "ct",
                    ColumnTransformer(
                        [
                            (
                                "n",
                                make_pipeline(SimpleImputer(strategy="most_frequent"), MinMaxScaler()),
                                list(COLUMNS),
                            )
                        ]
                    ),
                ),
                (
                    "mlp",
                    MLPRegressor(
                        hidden_layer_sizes=(5, 3), activation="identity", random_state=0, max_iter=300
                    ),
                ),
            ]
        ),
        holes,
        target,
    )
    model = read_model(
        dump(reg, tmp_path / "reg.skops"), ImportOptions(cutoffs=(-1.0, 1.0), feature_ranges=ranges(clean))
    )
    assert isinstance(model, MLPModel) and model.policy.output == "raw"
    check_against_sklearn(model, reg, holes, 1e-9)


def test_an_imputer_before_a_linear_model_fills_at_the_platform(
    data: tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    _, holes, y, _ = data
    pipe = fit(
        make_pipeline(SimpleImputer(strategy="mean"), StandardScaler(), LogisticRegression()), holes, y
    )
    model = read_model(dump(pipe, tmp_path / "lr.skops"), ImportOptions(cutoffs=CUTOFFS))
    assert isinstance(model, LinearModel)
    check_against_sklearn(model, pipe, holes, 1e-12)
    feature = model.spec.features[0]
    assert isinstance(feature, NumericFeature) and feature.impute == pipe[0].statistics_[0]
    assert (
        feature.encode(None)
        == feature.encode("")
        == feature.encode(math.nan)
        == feature.encode(feature.impute)
    )
    # The fill value travels in the model JSON, and a JSON without one (older files) still loads.
    d = model.to_dict()
    assert load_model(json.loads(json.dumps(d))).spec == model.spec
    spec = FeatureSpec((NumericFeature("x", 0, 10, 4), NumericFeature("y", 0, 10, 4, impute=2.5)))
    old = json.loads(json.dumps(spec.to_dict()))
    assert "impute" not in old["features"][0] and old["features"][1]["impute"] == 2.5
    assert FeatureSpec.from_dict(old) == spec
    with pytest.raises(EncodingError, match=r"'x'.*missing"):
        spec.encode_row({"x": None, "y": None})
    with pytest.raises(
        ModelFormatError,
        match=r"'x': the fill value 11 of a missing value must be within the declared range \[0, 10\]",
    ):
        NumericFeature("x", 0, 10, 4, impute=11)
    with pytest.raises(ModelFormatError, match="must be an integer within"):
        NumericFeature("x", 0, 10, 0, True, impute=2.5)


def test_imputers_inside_a_column_transformer_before_a_linear_model(
    data: tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    """SimpleImputer alone and in a nested pipeline (imputer then scaler) inside a ColumnTransformer,
    beside a one-hot column: each numeric column gets its own fill value and the model equals
    scikit-learn's on rows with holes."""
    _, holes, y, _ = data
    frame = holes.assign(kind=np.where(np.arange(len(holes)) % 3 == 0, "x", "y").astype(object))
    ct = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), ["a", "b", "c"]),
            ("mm", make_pipeline(SimpleImputer(strategy="constant", fill_value=0.5), MinMaxScaler()), ["d"]),
            ("fill", SimpleImputer(strategy="mean"), ["e"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["kind"]),
        ]
    )
    pipe = fit(Pipeline([("prep", ct), ("lr", LogisticRegression())]), frame, y)
    model = read_model(dump(pipe, tmp_path / "ct-lr.skops"), ImportOptions(cutoffs=CUTOFFS))
    assert isinstance(model, LinearModel)
    fills = {f.name: f.impute for f in model.spec.features if isinstance(f, NumericFeature)}
    num = pipe.named_steps["prep"].named_transformers_
    assert fills == {
        "a": num["num"][0].statistics_[0],
        "b": num["num"][0].statistics_[1],
        "c": num["num"][0].statistics_[2],
        "d": 0.5,
        "e": num["fill"].statistics_[0],
    }
    assert frame[["a", "b", "c", "d", "e"]].isna().any(axis=1).sum() > 50  # the holes are exercised
    rows = [{**r, "kind": k} for r, k in zip(records(frame.drop(columns="kind")), frame["kind"], strict=True)]
    ours = np.array([model.predict(r) for r in rows])  # type: ignore[attr-defined]
    assert np.max(np.abs(ours - pipe.predict_proba(frame)[:, 1])) <= 1e-9
    assert [model.band_from_encoded(model.spec.encode_row(r)) for r in rows[:60]] == [
        model.band(r) for r in rows[:60]
    ]


# ---------------------------------------------------------------------------------------------
# Refusals: one sentence, naming the construct and what is supported


def refusal(estimator: Any, x: Any, y: Any, tmp_path: Path, **options: Any) -> str:
    path = dump(fit(estimator, x, y), tmp_path / "refused.skops")
    with pytest.raises((ModelFormatError, InvalidInputError)) as info:
        read_model(path, ImportOptions(**options))
    message = str(info.value)
    assert message.count(". ") == 0 and "\n" not in message, message  # one sentence
    return message


def test_multi_class_and_multi_output_are_refused(
    data: tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    clean, _, y, target = data
    three = np.arange(len(y)) % 3
    two = np.stack([target, -target], axis=1)
    for estimator, pattern in [
        (RandomForestClassifier(3, max_depth=2, random_state=0), r"RandomForestClassifier has 3 classes"),
        (GradientBoostingClassifier(n_estimators=2), r"a multi-class model \(multinomial loss\) is not"),
        (HistGradientBoostingClassifier(max_iter=2), r"a multi-class model \(multinomial loss\) is not"),
        (MLPClassifier((3,), max_iter=5, random_state=0), r"an MLPClassifier with 3 classes"),
    ]:
        message = refusal(
            estimator, clean, three, tmp_path, feature_ranges=ranges(clean) if "MLP" in pattern else None
        )
        assert re.search(pattern, message) and "binary" in message.lower(), message
    for estimator, pattern in [
        (
            DecisionTreeRegressor(max_depth=2),
            r"DecisionTreeRegressor has several outputs; only single-output",
        ),
        (
            MLPRegressor(hidden_layer_sizes=(3,), max_iter=5, random_state=0),
            r"an MLPRegressor with 2 outputs is not supported",
        ),
    ]:
        message = refusal(
            estimator,
            clean,
            two,
            tmp_path,
            cutoffs=(0.0,),
            feature_ranges=ranges(clean) if "MLP" in pattern else None,
        )
        assert re.search(pattern, message), message


@pytest.mark.parametrize("activation", ["tanh", "logistic"])
def test_an_unsupported_activation_is_refused(
    activation: str, data: tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    clean, _, y, _ = data
    mlp = MLPClassifier((3,), activation=activation, max_iter=5, random_state=0)
    message = refusal(mlp, clean, y, tmp_path, feature_ranges=ranges(clean))
    assert re.search(
        rf"hidden activation '{activation}' is not supported; supported: relu, identity$", message
    )


def test_a_categorical_split_is_refused_naming_the_feature(
    data: tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    clean, _, y, _ = data
    x = clean.assign(e=(clean["e"] > 0).astype(int))
    hgb = HistGradientBoostingClassifier(max_iter=3, categorical_features=["e"], random_state=0)
    message = refusal(hgb, x, y, tmp_path)
    assert re.search(
        r"^[^ ]+: a model with categorical splits \(categorical_features\) is not supported; supported: ",
        message,
    )


def test_unknown_steps_and_misplaced_preprocessing_are_refused(
    data: tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    clean, _, y, _ = data
    tree = DecisionTreeClassifier(max_depth=2, random_state=0)
    message = refusal(make_pipeline(PCA(2), tree), clean, y, tmp_path)
    assert re.search(
        r"unsupported types: sklearn\.decomposition\._pca\.PCA; supported: .*DecisionTree", message
    )
    weighted = ColumnTransformer([("s", StandardScaler(), ["a", "b"])], transformer_weights={"s": 2.0})
    message = refusal(Pipeline([("ct", weighted), ("m", tree)]), clean, y, tmp_path)
    assert re.search(
        r"a DecisionTreeClassifier after a OneHotEncoder or a weighted transformer is not supported; "
        r"supported: SimpleImputer, StandardScaler, MinMaxScaler, 'passthrough' and 'drop' before a tree "
        r"model",
        message,
    )
    cats = clean.assign(e=np.where(clean["e"] > 0, "hi", "lo"))
    onehot = ColumnTransformer([("o", OneHotEncoder(), ["e"]), ("n", "passthrough", ["a", "b"])])
    message = refusal(
        Pipeline([("ct", onehot), ("m", MLPClassifier((2,), max_iter=5, random_state=0))]),
        cats,
        y,
        tmp_path,
        feature_ranges=ranges(clean[["a", "b"]]),
    )
    assert re.search(
        r"a OneHotEncoder before an MLPClassifier is not supported; supported: SimpleImputer", message
    )
    message = refusal(make_pipeline(SimpleImputer(add_indicator=True), tree), clean, y, tmp_path)
    assert re.search(r"a SimpleImputer with add_indicator=True is not supported; supported: ", message)
    message = refusal(make_pipeline(SimpleImputer(missing_values=-1.0), tree), clean, y, tmp_path)
    assert re.search(
        r"a SimpleImputer with missing_values=-1\.0 is not supported; supported: a numeric", message
    )
    message = refusal(GradientBoostingClassifier(n_estimators=2, loss="exponential"), clean, y, tmp_path)
    assert re.search(r": the exponential loss is not supported; supported: ", message)


def test_ranges_an_mlp_lacks_and_ranges_a_tree_does_not_take(
    data: tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    clean, _, y, _ = data
    mlp = MLPClassifier((3,), max_iter=5, random_state=0)
    message = refusal(mlp, clean, y, tmp_path, feature_ranges=ranges(clean)[:3])
    assert re.search(
        r"the MLPClassifier needs a declared range for feature 'd' \(and 1 more\): "
        r"pass --feature-range d=LO:HI",
        message,
    )
    message = refusal(DecisionTreeClassifier(max_depth=2), clean, y, tmp_path, feature_ranges=ranges(clean))
    assert "a DecisionTreeClassifier takes no declared feature ranges" in message


def test_model_import_takes_feature_ranges_from_the_command_line(
    data: tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clean, holes, y, _ = data
    mlp = fit(make_pipeline(SimpleImputer(), MLPClassifier((4,), random_state=0, max_iter=100)), holes, y)
    path = dump(mlp, tmp_path / "mlp.skops")
    base = ["model", "import", str(path), "--name", "mlp", "--data-dir", str(tmp_path / "bureau")]
    flags = [f"--feature-range={c}={lo}:{hi}" for c, lo, hi in ranges(clean)]
    assert main([*base, *flags[1:]]) == 2
    err = capsys.readouterr().err
    assert "needs a declared range for feature 'a': pass --feature-range a=LO:HI" in err
    assert not (tmp_path / "bureau").exists()
    assert main([*base, "--feature-range", "a=5"]) == 2
    assert "--feature-range 'a=5': expected NAME=LO:HI" in capsys.readouterr().err
    assert main([*base, *flags, "--cutoffs", "0.3,0.6"]) == 0
    assert "as model mlp v1 (blindscore-mlp" in capsys.readouterr().out
    xgb_like = tmp_path / "card.csv"
    xgb_like.write_text("variable,bin,points\n")
    assert main(["model", "import", str(xgb_like), "--name", "x", "--data-dir", str(tmp_path), flags[0]]) == 2
    assert "--feature-range applies only to a scikit-learn model" in capsys.readouterr().err
