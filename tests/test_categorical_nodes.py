"""Categorical tree models scored blind over the real services: bureau, bank and platform over mutual TLS.

An XGBoost model trained with categorical features (integer codes, saved as JSON) and a LightGBM
categorical model (its text file) are imported as a user would (``read_model``, the bureau's model
store), and applications go through the platform with categorical cells each library reads in its
own way: NaN, a missing cell, -0.5, 2.7, a code beyond every category set and a huge value. The
band the bank stores equals the band of the library's own prediction under the model's cutoffs.

Every edge row is picked so that it exercises its path: the library's band for it differs from the
band of the value a careless encoder would read instead (NaN or a missing cell as code 0, -0.5 as
code 0 for XGBoost but as an invalid code for LightGBM, 2.7 rounded to 3, a code beyond every set
or a huge value clamped to the last code). Every row is farther than the model's proven error
bound (plus XGBoost's float32 rounding) from every cutoff, so the library's band is the only right one.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
import xgboost as xgb

from blindscore.app.client import score_one
from blindscore.importers import ImportOptions, read_model
from blindscore.models.features import CategoryCodeFeature, XGBoostCategoryFeature
from blindscore.models.trees import TreeEnsemble
from blindscore.protocol.application import Application

from support import Nodes, NodesFactory

NAMES = ("wide", "small", "tiny", "x", "y")  # three categorical features, then two numeric ones
CATEGORICAL = (0, 1, 2)
CUTOFFS = (0.2, 0.5, 0.8)  # probability cutoffs: four bands

#: (what the row probes, the cell's value, the value it must not be read as); both given the
#: feature's public n_categories. None is a missing cell (sent unset; NaN in the library's row).
Value = Callable[[int], float | None]
XGBOOST_EDGES: tuple[tuple[str, Value, Value], ...] = (
    ("nan", lambda n: math.nan, lambda n: 0.0),  # NaN takes each node's default direction
    ("missing", lambda n: None, lambda n: 0.0),
    ("minus-half", lambda n: -0.5, lambda n: 0.0),  # negative: invalid, left at every node
    ("fraction", lambda n: 2.7, lambda n: 3.0),  # truncated: code 2
    ("beyond", lambda n: float(n), lambda n: float(n - 1)),  # beyond every set: left everywhere
    ("huge", lambda n: 1e20, lambda n: float(n - 1)),
)
LIGHTGBM_EDGES: tuple[tuple[str, Value, Value], ...] = (
    ("nan", lambda n: math.nan, lambda n: 0.0),  # NaN: right at every node, not code 0
    ("missing", lambda n: None, lambda n: 0.0),
    ("minus-half", lambda n: -0.5, lambda n: math.nan),  # truncated toward zero: code 0
    ("fraction", lambda n: 2.7, lambda n: 3.0),  # truncated: code 2
    ("beyond", lambda n: float(n), lambda n: float(n - 1)),  # beyond every set: right everywhere
    ("huge", lambda n: 1e20, lambda n: float(n - 1)),  # the int cast overflows: right everywhere
)


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer-coded categories (codes past 32 in one), numeric features, a few missing cells; the
    label favours categories 0 (of each feature), so code 0 sits in the sets the models learn."""
    rng = np.random.default_rng(seed)
    wide = rng.integers(0, 40, n).astype(float)
    small = rng.integers(0, 6, n).astype(float)
    tiny = rng.integers(0, 3, n).astype(float)
    x = rng.normal(size=n)
    y = rng.normal(size=n)
    score = (
        1.5 * np.isin(wide, [0, 3, 5, 33, 35, 38])
        + np.isin(small, [0, 2])
        - 0.8 * (tiny == 0)
        + 0.5 * x
        - 0.3 * y
        + rng.normal(scale=0.5, size=n)
    )
    rows = np.c_[wide, small, tiny, x, y]
    rows[rng.random(n) < 0.08, 0] = np.nan
    rows[rng.random(n) < 0.08, 1] = np.nan
    rows[rng.random(n) < 0.1, 3] = np.nan
    return rows, (score > np.median(score)).astype(float)


@dataclass(frozen=True)
class Library:
    """A trained model as its library scores it: the margin and the probability of each row."""

    predict: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    slack: Callable[[TreeEnsemble], float]  # the library's own rounding, margin units


@dataclass(frozen=True)
class Row:
    """An application to score: its cells, the library's margin and band for them."""

    app_id: str
    record: dict[str, float | None]
    margin: float
    band: int  # the library's band


def xgb_matrix(rows: np.ndarray, label: np.ndarray | None = None) -> xgb.DMatrix:
    return xgb.DMatrix(
        np.asarray(rows, dtype=np.float32),
        label=label,
        enable_categorical=True,
        feature_types=["c", "c", "c", "q", "q"],
        feature_names=list(NAMES),
    )


def f32_slack(model: TreeEnsemble) -> float:
    """As tests/test_xgboost_categorical.py: XGBoost sums the margin in float32, each of n_trees + 1
    additions rounding by at most half an ulp of a partial sum bounded by the largest |leaves|."""
    top = abs(model.base_score) + sum(max(abs(v) for v in t.value) for t in model.trees)
    return (model.n_trees + 2) * top * 2.0**-24


def library_band(probability: float) -> int:
    """The band of the library's probability under the cutoffs: how many of them it is at or above."""
    return bisect.bisect_right(CUTOFFS, probability)


def pick_rows(
    model: TreeEnsemble, library: Library, edges: tuple[tuple[str, Value, Value], ...], prefix: str
) -> list[Row]:
    """One far row per library band of a pool, then per edge the first (pool row, categorical
    feature) where the edge value and its misreading are both far and banded apart."""
    pool, _ = data(300, 11)
    cut = np.array(model.margin_cutoffs)
    slack = model.max_abs_error + library.slack(model)

    def scored(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        margins, probabilities = library.predict(rows)
        far = np.min(np.abs(margins[:, None] - cut[None, :]), axis=1) > slack + 1e-9 * np.abs(margins)
        return margins, np.array([library_band(float(p)) for p in probabilities]), far

    def record(row: np.ndarray) -> dict[str, float | None]:
        return {name: None if math.isnan(v) else float(v) for name, v in zip(NAMES, row, strict=True)}

    out: list[Row] = []
    margins, bands, far = scored(pool)
    for band in sorted(set(bands[far].tolist())):
        i = int(np.flatnonzero(far & (bands == band))[0])
        out.append(Row(f"{prefix}-base-{band}", record(pool[i]), float(margins[i]), band))
    for kind, value, alias in edges:
        for f in CATEGORICAL:
            n = model.n_categories[NAMES[f]]
            given, misread = pool.copy(), pool.copy()
            v, w = value(n), alias(n)
            given[:, f] = math.nan if v is None else v
            misread[:, f] = math.nan if w is None else w
            margins, bands, far = scored(given)
            _, misread_bands, misread_far = scored(misread)
            hits = np.flatnonzero(far & misread_far & (bands != misread_bands))
            if len(hits):
                i = int(hits[0])
                rec = record(pool[i])
                rec[NAMES[f]] = v
                out.append(Row(f"{prefix}-{kind}", rec, float(margins[i]), int(bands[i])))
                break
        else:
            raise AssertionError(f"no pool row where {kind!r} and its misreading fall in different bands")
    return out


@pytest.fixture(scope="module")
def nodes(module_nodes: NodesFactory) -> Nodes:
    return module_nodes("categorical", tls=True)


def score(nodes: Nodes, model_id: str, app_id: str, record: dict[str, float | None]) -> int:
    app = Application(
        app_id,
        "bank-a",
        model_id,
        nodes.key_id,
        "consent-c",
        record,
    )
    outcome = score_one(nodes.platform, app, security=nodes.creds("platform-a").expecting("platform"))
    assert outcome.accepted and not outcome.pending, outcome.error
    stored = nodes.bank_node.store.get(app_id, "platform-a", "bureau-1")
    assert stored is not None
    return stored.band


def check(nodes: Nodes, model: TreeEnsemble, model_id: str, rows: list[Row], library: Library) -> None:
    """Every row is far from the cutoffs, the rows span at least two bands, and the bank stores
    the library's band for each."""
    slack = library.slack(model)
    nodes.bureau_obj.models.put(model_id, model)
    assert len({r.band for r in rows}) >= 2
    stored: dict[str, int] = {}
    for r in rows:
        assert min(abs(r.margin - c) for c in model.margin_cutoffs) > model.max_abs_error + slack
        assert bisect.bisect_right(model.margin_cutoffs, r.margin) == r.band  # probability and margin agree
        stored[r.app_id] = score(nodes, model_id, r.app_id, r.record)
        assert stored[r.app_id] == model.band_from_encoded(model.spec.encode_row(r.record)), r.app_id
    assert stored == {r.app_id: r.band for r in rows}


def test_an_xgboost_categorical_file_scored_through_the_nodes(nodes: Nodes, tmp_path: Path) -> None:
    x, y = data(400, 5)
    params = {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "max_cat_to_onehot": 1,  # partition splits: sets of several codes
        "max_depth": 3,
        "nthread": 1,
        "seed": 0,
    }
    booster = xgb.train(params, xgb_matrix(x, y), 4)
    booster.save_model(tmp_path / "xgb-cat.json")
    assert (tmp_path / "xgb-cat.json").read_bytes().startswith(b'{"')  # JSON, not UBJSON
    model = read_model(tmp_path / "xgb-cat.json", ImportOptions(cutoffs=CUTOFFS))
    assert isinstance(model, TreeEnsemble)
    features = [model.spec.features[f] for f in CATEGORICAL]
    assert all(isinstance(f, XGBoostCategoryFeature) for f in features)

    def predict(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dm = xgb_matrix(rows)
        margin = booster.predict(dm, output_margin=True).astype(np.float64)
        return margin, booster.predict(dm).astype(np.float64)

    library = Library(predict, f32_slack)
    check(nodes, model, "xgb-cat", pick_rows(model, library, XGBOOST_EDGES, "xgb"), library)


def test_a_lightgbm_categorical_file_scored_through_the_nodes(nodes: Nodes, tmp_path: Path) -> None:
    x, y = data(400, 5)
    params = {
        "objective": "binary",
        "num_leaves": 8,
        "max_depth": 3,
        "max_cat_to_onehot": 4,  # "tiny" one-vs-rest, the others many-vs-many
        "cat_smooth": 1.0,
        "min_data_per_group": 5,
        "min_data_in_leaf": 5,
        "num_threads": 1,
        "deterministic": True,
        "seed": 0,
        "verbose": -1,
    }
    ds = lgb.Dataset(x, y, feature_name=list(NAMES), categorical_feature=list(CATEGORICAL))
    booster = lgb.train(params, ds, 4)
    booster.save_model(tmp_path / "lgb-cat.txt")
    model = read_model(tmp_path / "lgb-cat.txt", ImportOptions(cutoffs=CUTOFFS))
    assert isinstance(model, TreeEnsemble)
    features = [model.spec.features[f] for f in CATEGORICAL]
    assert all(type(f) is CategoryCodeFeature for f in features)

    def predict(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        margin = np.asarray(booster.predict(rows, raw_score=True), dtype=np.float64)
        return margin, np.asarray(booster.predict(rows), dtype=np.float64)

    library = Library(predict, lambda m: 0.0)  # float64 throughout: no rounding beyond the bound
    check(nodes, model, "lgb-cat", pick_rows(model, library, LIGHTGBM_EDGES, "lgb"), library)
