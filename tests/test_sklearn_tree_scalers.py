"""StandardScaler and MinMaxScaler before scikit-learn tree models: folded into the thresholds, exactly.

Each pipeline is saved with skops and read as ``blindscore model import`` reads it. For every
split the raw threshold x* the importer found, x* goes left and the next double up goes right under
scikit-learn's own preprocessing and split rule; on rows at x* and its float64 neighbours (and
NaN where the model takes it, and values the clipping scaler clips) the leaves, margins and bands
equal the library's; a few rows go through both parties.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from blindscore.crypto.paillier import KeyPair
from blindscore.errors import ModelFormatError
from blindscore.importers import ImportOptions, read_model
from blindscore.models.trees import TreeEnsemble
from blindscore.testing import TwoParties

COLUMNS = ("a", "b", "c", "d")
CUTOFFS = (0.3, 0.6)
RAW_CUTOFFS = (-1.0, 1.0)

ESTIMATORS: dict[str, Any] = {
    "DecisionTreeClassifier": DecisionTreeClassifier(max_depth=4, random_state=0),
    "RandomForestClassifier": RandomForestClassifier(n_estimators=4, max_depth=3, random_state=0),
    "ExtraTreesClassifier": ExtraTreesClassifier(n_estimators=4, max_depth=3, random_state=0),
    "GradientBoostingClassifier": GradientBoostingClassifier(n_estimators=5, max_depth=2, random_state=0),
    "HistGradientBoostingClassifier": HistGradientBoostingClassifier(max_iter=5, max_depth=3, random_state=0),
    "GradientBoostingRegressor": GradientBoostingRegressor(n_estimators=5, max_depth=3, random_state=0),
}
SCALERS: dict[str, Any] = {
    "standard": [StandardScaler()],
    "minmax": [MinMaxScaler(feature_range=(-1.0, 2.0))],
    "minmax-clip": [MinMaxScaler(clip=True)],
    "imputer-standard": [SimpleImputer(strategy="median"), StandardScaler()],
}


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
    """Features of different scales (clean and with ~8 % missing), a binary and a continuous target."""
    x, y = make_classification(300, 4, n_informative=3, n_redundant=0, random_state=11)
    clean = pd.DataFrame(x * [1.0, 10.0, 1000.0, 0.01] + [0.0, 5.0, -300.0, 0.0], columns=list(COLUMNS))
    holes = clean.mask(np.random.default_rng(11).random(clean.shape) < 0.08)
    return clean, holes, y, clean["a"].to_numpy() * 3 + clean["b"].to_numpy() / 10


def pipeline(scaler: str, estimator: str) -> Pipeline:
    steps = [(type(s).__name__.lower(), clone(s)) for s in SCALERS[scaler]]
    return Pipeline([*steps, ("model", clone(ESTIMATORS[estimator]))])


def imported(
    scaler: str, estimator: str, data: tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray], tmp: Path
) -> tuple[Pipeline, TreeEnsemble]:
    clean, holes, y, target = data
    pipe = pipeline(scaler, estimator)
    classifier = estimator.endswith("Classifier")
    pipe.fit(holes if scaler.startswith("imputer") else clean, y if classifier else target)
    sio.dump(pipe, tmp / "m.skops")
    model = read_model(tmp / "m.skops", ImportOptions(cutoffs=CUTOFFS if classifier else RAW_CUTOFFS))
    assert isinstance(model, TreeEnsemble)
    return pipe, model


def library_nodes(est: Any) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per tree, in the importer's order: (feature, threshold, is-internal) per node."""
    if hasattr(est, "_predictors"):  # HistGradientBoosting
        return [
            (p[0].nodes["feature_idx"], p[0].nodes["num_threshold"], p[0].nodes["is_leaf"] == 0)
            for p in est._predictors
        ]
    if hasattr(est, "tree_"):
        trees = [est.tree_]
    elif isinstance(est.estimators_, np.ndarray):  # GradientBoosting: one tree per stage
        trees = [stage[0].tree_ for stage in est.estimators_]
    else:
        trees = [e.tree_ for e in est.estimators_]
    return [(t.feature, t.threshold, t.children_left != -1) for t in trees]


def preprocessed(pipe: Pipeline, rows: np.ndarray) -> np.ndarray:
    """What the trees see: the pipeline's own preprocessing, then float32 for the CART family."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z = np.asarray(pipe[:-1].transform(pd.DataFrame(rows, columns=list(COLUMNS))), dtype=np.float64)
    return z if hasattr(pipe[-1], "_predictors") else z.astype(np.float32).astype(np.float64)


def tie_rows(model: TreeEnsemble, base: np.ndarray) -> np.ndarray:
    """``base`` with one feature at a split's raw threshold x* or a float64 neighbour of it."""
    rows = []
    for tree in model.trees:
        for f, x in zip(tree.feature, tree.threshold, strict=True):
            if f < 0:
                continue
            for v in (x, math.nextafter(x, math.inf), math.nextafter(x, -math.inf)):
                if math.isfinite(v):
                    row = base.copy()
                    row[f] = v
                    rows.append(row)
    return np.array(rows)


def as_row(values: np.ndarray) -> dict[str, object]:
    return dict(zip(COLUMNS, values.tolist(), strict=True))


def library_margin(pipe: Pipeline, rows: np.ndarray) -> np.ndarray:
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    if hasattr(pipe[-1], "decision_function"):
        return np.asarray(pipe.decision_function(frame), dtype=np.float64)
    if hasattr(pipe[-1], "predict_proba"):
        return np.asarray(pipe.predict_proba(frame)[:, 1], dtype=np.float64)
    return np.asarray(pipe.predict(frame), dtype=np.float64)


def takes_nan(pipe: Pipeline) -> bool:
    try:
        pipe.predict(pd.DataFrame(np.full((1, len(COLUMNS)), np.nan), columns=list(COLUMNS)))
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("scaler", sorted(SCALERS))
@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_scaled_trees_split_exactly_where_the_library_does(
    scaler: str,
    estimator: str,
    data: tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray],
    tmp_path: Path,
) -> None:
    pipe, model = imported(scaler, estimator, data, tmp_path)
    assert model.domain == "float64" and model.key_bits == 64
    assert model.feature_names == COLUMNS and "scaled" in model.metadata
    # Every split's raw threshold: x* goes left, the next double up goes right, in the library.
    clean = data[0]
    base = clean.to_numpy()[0]
    for tree, (feature, threshold, internal) in zip(model.trees, library_nodes(pipe[-1]), strict=True):
        nodes = [i for i in range(len(tree.feature)) if tree.feature[i] >= 0]
        assert nodes == [i for i in range(len(internal)) if internal[i]]
        assert all(tree.feature[i] == feature[i] for i in nodes)
        at, up = [], []
        for i in nodes:
            x = tree.threshold[i]
            for out, v in ((at, x), (up, math.nextafter(x, math.inf))):
                row = base.copy()
                row[tree.feature[i]] = v if math.isfinite(v) else np.nan
                out.append(row)
        z_at, z_up = preprocessed(pipe, np.array(at)), preprocessed(pipe, np.array(up))
        for k, i in enumerate(nodes):
            f, x, t = tree.feature[i], tree.threshold[i], threshold[i]
            if math.isfinite(x):
                assert z_at[k, f] <= t, (i, x, t)
            if x < math.inf:
                assert z_up[k, f] > t, (i, x, t)
    # Whole rows: ties, clipped and far values, NaN where the pipeline takes it.
    extra = [base.copy() for _ in range(8)]
    lo, hi = clean.min().to_numpy(), clean.max().to_numpy()
    for k, v in enumerate((lo - 1.0, hi + 1.0, lo * 10 - 5, np.full(4, -1e20), np.full(4, 1e20))):
        extra[k] = np.asarray(v, dtype=np.float64)
    rows = np.vstack([clean.to_numpy()[:30], tie_rows(model, base), np.array(extra)])
    if takes_nan(pipe):
        nan_rows = np.repeat(base[None, :], len(COLUMNS) + 1, axis=0)
        for f in range(len(COLUMNS)):
            nan_rows[f, f] = np.nan
        nan_rows[-1, :] = np.nan
        rows = np.vstack([rows, nan_rows])
    else:
        assert estimator.startswith("GradientBoosting") and not scaler.startswith("imputer")
    lib = library_margin(pipe, rows)
    ours = np.array([model.margin(list(r)) for r in rows])
    np.testing.assert_allclose(ours, lib, rtol=1e-9, atol=1e-12)
    if not hasattr(pipe[-1], "_predictors"):  # HistGradientBoosting has no apply()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            z = pipe[:-1].transform(pd.DataFrame(rows, columns=list(COLUMNS)))
        leaves = np.asarray(pipe[-1].apply(z)).reshape(len(rows), -1)
        assert (np.array([model.leaf_nodes(list(r)) for r in rows]) == leaves).all()
    cut = np.array(model.margin_cutoffs)
    far = np.min(np.abs(lib[:, None] - cut[None, :]), axis=1) > model.max_abs_error
    assert far.mean() > 0.8
    theirs = np.searchsorted(cut, lib, side="right")
    blind = np.array([model.band_from_encoded(model.spec.encode_row(as_row(r))) for r in rows])
    plain = np.array([model.band(list(r)) for r in rows])
    assert (blind[far] == theirs[far]).all() and (plain[far] == theirs[far]).all()


def test_an_imputed_missing_value_goes_where_its_fill_value_goes(
    data: tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    pipe, model = imported("imputer-standard", "DecisionTreeClassifier", data, tmp_path)
    fills = pipe[0].statistics_
    base = data[0].to_numpy()[3]
    for f, name in enumerate(COLUMNS):
        row = dict(zip(COLUMNS, base.tolist(), strict=True))
        assert model.leaf_nodes({**row, name: None}) == model.leaf_nodes({**row, name: float(fills[f])})


def test_a_column_transformer_may_scale_some_columns_and_pass_others(
    data: tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    clean, _, y, _ = data
    ct = ColumnTransformer(
        [("s", MinMaxScaler(clip=True), ["c", "a"]), ("keep", "passthrough", ["b"])],
        transformer_weights={"s": 1.0},
    )
    pipe = Pipeline([("ct", ct), ("model", DecisionTreeClassifier(max_depth=5, random_state=0))]).fit(
        clean, y
    )
    sio.dump(pipe, tmp_path / "ct.skops")
    model = read_model(tmp_path / "ct.skops", ImportOptions(cutoffs=CUTOFFS))
    assert isinstance(model, TreeEnsemble) and model.feature_names == ("c", "a", "b")
    base = dict(zip(COLUMNS, clean.to_numpy()[0].tolist(), strict=True))
    rows = [dict(base)]
    tree = model.trees[0]
    for f, x in zip(tree.feature, tree.threshold, strict=True):
        for v in (x, math.nextafter(x, math.inf)) if f >= 0 and math.isfinite(x) else ():
            rows.append({**base, model.feature_names[f]: v})
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        leaves = pipe[-1].apply(pipe[:-1].transform(frame))
    assert [model.leaf_nodes(r)[0] for r in rows] == leaves.tolist()


def test_a_weighted_or_decreasing_scaler_before_trees_is_refused(
    data: tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    clean, _, y, _ = data
    tree = DecisionTreeClassifier(max_depth=2, random_state=0)
    ct = ColumnTransformer([("s", StandardScaler(), ["a", "b"])], transformer_weights={"s": 0.5})
    sio.dump(Pipeline([("ct", ct), ("m", tree)]).fit(clean, y), tmp_path / "w.skops")
    with pytest.raises(ModelFormatError, match="after a OneHotEncoder or a weighted transformer"):
        read_model(tmp_path / "w.skops", ImportOptions(cutoffs=CUTOFFS))
    pipe = Pipeline([("s", MinMaxScaler()), ("m", clone(tree))]).fit(clean, y)
    pipe[0].scale_ = -pipe[0].scale_  # a decreasing map, which scikit-learn never fits
    sio.dump(pipe, tmp_path / "n.skops")
    with pytest.raises(ModelFormatError, match=r"a scaler with a negative scale \(a decreasing map\)"):
        read_model(tmp_path / "n.skops", ImportOptions(cutoffs=CUTOFFS))


@pytest.fixture(scope="module")
def parties(paillier_keypair: KeyPair) -> TwoParties:
    return TwoParties(paillier_keypair)


@pytest.mark.parametrize(
    ("scaler", "estimator"),
    [("standard", "DecisionTreeClassifier"), ("minmax-clip", "HistGradientBoostingClassifier")],
)
def test_scaled_trees_band_through_both_parties(
    scaler: str,
    estimator: str,
    data: tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray],
    tmp_path: Path,
    parties: TwoParties,
) -> None:
    pipe, model = imported(scaler, estimator, data, tmp_path)
    base = data[0].to_numpy()[0]
    rows = np.vstack([data[0].to_numpy()[1:3], tie_rows(model, base)[:2], np.full(len(COLUMNS), np.nan)])
    lib = library_margin(pipe, rows)
    for row, m in zip(rows, lib, strict=True):
        enc = model.spec.encode_row(as_row(row))
        band = parties.band(model, enc)
        assert band == model.band_from_encoded(enc)
        if all(abs(m - c) > model.max_abs_error for c in model.margin_cutoffs):
            assert band == model.band_of_margin(float(m))
