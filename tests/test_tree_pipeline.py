"""Tree ensembles of XGBoost, LightGBM and scikit-learn through the garbled-circuit band pipeline.

Both parties in one process: the platform's public encoding and Paillier encryption, the bureau's
linear stage (one masked value per node, the tested feature hidden in it) and garbling, the bank's
decryption, oblivious transfer and evaluation. Each row's band equals the model's exact integer
band (ties at thresholds, missing values, LightGBM's zero region included) and the library's own
band for rows farther than the proven error from a cutoff.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
import xgboost as xgb
from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor

from blindscore.crypto.paillier import KeyPair
from blindscore.data.german import NUMERIC_RANGES, load_german_credit
from blindscore.importers.lightgbm import read_lightgbm
from blindscore.importers.sklearn_trees import ensemble_from_sklearn
from blindscore.importers.xgboost import read_xgboost
from blindscore.models.policy import BandPolicy
from blindscore.models.trees import TreeEnsemble
from blindscore.testing import TwoParties

PROB = BandPolicy((0.2, 0.5, 0.8))
RAW = BandPolicy((0.2, 0.5), output="raw")
COLUMNS = tuple(sorted(NUMERIC_RANGES))


@pytest.fixture(scope="module")
def parties(paillier_keypair: KeyPair) -> TwoParties:
    return TwoParties(paillier_keypair)


def german(rows: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """German credit's numeric columns with 8 % of cells missing, and zeros in one column."""
    data, target = load_german_credit()
    x = np.array([[float(r[c]) for c in COLUMNS] for r in data[:rows]])
    rng = np.random.default_rng(11)
    x[rng.random(x.shape) < 0.08] = np.nan
    x[::9, 3] = 0.0
    return x, np.asarray(target[:rows])


def blind_band(parties: TwoParties, circuit: TreeEnsemble, row: Sequence[float]) -> int | None:
    """One application through both parties (platform encryption, bureau, bank, OT, garbling)."""
    return parties.band(circuit, circuit.encode_row(list(row)))


def check_rows(
    parties: TwoParties,
    model: TreeEnsemble,
    x: np.ndarray,
    library_margin: np.ndarray,
) -> None:
    circuit = model
    far = 0
    for row, m in zip(x, library_margin, strict=True):
        band = blind_band(parties, circuit, row)
        assert band == circuit.band_from_encoded(circuit.encode_row(list(row)))
        if all(abs(m - c) > model.max_abs_error + 1e-6 * abs(m) for c in model.margin_cutoffs):
            far += 1
            assert band == model.band_of_margin(float(m))
    assert far >= len(x) // 2


def tie_rows(model: TreeEnsemble, x: np.ndarray) -> np.ndarray:
    """Rows whose feature sits exactly on a split threshold, a missing row and a zero row."""
    out = [x[0].copy()]
    for tree in model.trees[:2]:
        for f, t in zip(tree.feature, tree.threshold, strict=True):
            if f >= 0 and math.isfinite(t):
                r = x[1].copy()
                r[f] = t
                out.append(r)
    out.append(np.full(x.shape[1], np.nan))
    out.append(np.zeros(x.shape[1]))
    return np.array(out)


def test_xgboost_bands_through_the_pipeline(tmp_path: Path, parties: TwoParties) -> None:
    x, y = german()
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1, "seed": 0},
        xgb.DMatrix(x, label=y),
        6,
    )
    booster.save_model(tmp_path / "m.ubj")
    model = read_xgboost(tmp_path / "m.ubj", policy=PROB)
    rows = np.vstack([x[:12], tie_rows(model, x)])
    check_rows(parties, model, rows, booster.predict(xgb.DMatrix(rows), output_margin=True))


def test_lightgbm_zero_as_missing_bands_through_the_pipeline(tmp_path: Path, parties: TwoParties) -> None:
    x, y = german()
    params = {"objective": "binary", "zero_as_missing": True, "num_leaves": 6, "verbose": -1}
    booster = lgb.train({**params, "min_data_in_leaf": 5, "num_threads": 1}, lgb.Dataset(x, y), 5)
    booster.save_model(tmp_path / "m.txt")
    model = read_lightgbm(tmp_path / "m.txt", policy=PROB)
    rows = np.vstack([x[:12], tie_rows(model, x)])
    check_rows(parties, model, rows, booster.predict(rows, raw_score=True))


@pytest.mark.parametrize("estimator", [GradientBoostingClassifier, RandomForestRegressor])
def test_sklearn_bands_through_the_pipeline(parties: TwoParties, estimator: type) -> None:
    x, y = german()
    filled = np.nan_to_num(x, nan=-1.0)  # these estimators take no missing values
    est = estimator(n_estimators=4, max_depth=3, random_state=0).fit(filled, y)
    classifier = hasattr(est, "classes_")
    model = ensemble_from_sklearn(est, policy=PROB if classifier else RAW)
    rows = np.vstack([filled[:10], tie_rows(model, filled)[:-2]])
    margin = est.decision_function(rows) if classifier else est.predict(rows)
    check_rows(parties, model, rows, np.asarray(margin))


def test_the_bank_learns_sizes_only(paillier_keypair: KeyPair) -> None:
    x, y = german()
    est = GradientBoostingClassifier(n_estimators=3, max_depth=2, random_state=0).fit(np.nan_to_num(x), y)
    circuit = ensemble_from_sklearn(est, policy=PROB)
    shape = circuit.circuit_shape()
    assert shape.family == "trees" and shape.values == 3 * 3 and shape.cutoffs == 3
    assert {name for name, _ in shape.params} == {"trees", "depth", "leaf_bits", "zero_bit"}
    assert shape.param("zero_bit") == 0  # scikit-learn has no zero rule: no zero column in the circuit
