"""The vendored German credit data, its feature spec and the shipped logistic model."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from blindscore.data.german import (
    CATEGORIES,
    DEFAULT_MODEL_ID,
    GERMAN_PD_CUTOFFS,
    NUMERIC_RANGES,
    default_model,
    design_matrix,
    german_feature_spec,
    load_german_credit,
    train_german_model,
)
from blindscore.models.features import CategoricalFeature, NumericFeature
from blindscore.models.linear import LinearModel


@pytest.fixture(scope="module")
def data() -> tuple[list[dict[str, int | str]], np.ndarray]:
    return load_german_credit()


@pytest.fixture(scope="module")
def model() -> LinearModel:
    return default_model()


def test_data_shape_and_target(data: tuple[list[dict[str, int | str]], np.ndarray]) -> None:
    rows, y = data
    assert len(rows) == 1000
    assert y.shape == (1000,)
    assert int(y.sum()) == 300  # bad
    assert int((y == 0).sum()) == 700  # good
    assert all(len(r) == 20 for r in rows)
    assert rows[0]["duration_in_month"] == 6
    assert rows[0]["credit_amount"] == 1169
    assert rows[0]["purpose"] == "radio/television"
    assert y[0] == 0 and y[1] == 1  # the first applicant is good, the second bad


def test_spec_covers_the_data_exactly(data: tuple[list[dict[str, int | str]], np.ndarray]) -> None:
    rows, _ = data
    spec = german_feature_spec()
    assert spec.input_names == list(rows[0])
    for f in spec.features:
        values = {r[f.name] for r in rows}
        if isinstance(f, NumericFeature):
            assert f.integer and f.frac_bits == 0
            assert (f.lo, f.hi) == NUMERIC_RANGES[f.name]
            assert all(isinstance(v, int) and f.lo <= v <= f.hi for v in values)
        else:
            assert isinstance(f, CategoricalFeature)
            assert set(f.categories) == values == set(CATEGORIES[f.name])
    x = design_matrix(spec, rows)
    assert x.shape == (1000, 61)
    # each one-hot group sums to one on every row
    for f, cols in spec.feature_slices():
        if f.one_hot:
            assert np.all(x[:, cols].sum(axis=1) == 1)


def test_default_model_loads_with_its_policy(model: LinearModel) -> None:
    assert model.name == DEFAULT_MODEL_ID == "german-credit-lr"
    assert model.spec == german_feature_spec()
    assert model.link == "logit"
    assert model.policy.output == "probability"
    assert model.policy.cutoffs == GERMAN_PD_CUTOFFS == (0.07, 0.16, 0.32, 0.54)
    assert model.policy.labels == ("A", "B", "C", "D", "E")
    assert model.precision == 1e-6
    # Scale 2^44 and truncation by 24 bits: comparisons of 27 bits (46 without truncation, before).
    assert (model.score_frac_bits, model.truncate_bits, model.comparison_bits) == (44, 24, 27)
    assert model.max_abs_error <= 1e-6


def test_default_model_matches_retraining(
    model: LinearModel, data: tuple[list[dict[str, int | str]], np.ndarray]
) -> None:
    fresh = train_german_model()
    assert fresh.spec == model.spec and fresh.policy == model.policy
    np.testing.assert_allclose(fresh.coef, model.coef, rtol=1e-4, atol=1e-8)
    assert fresh.intercept == pytest.approx(model.intercept, rel=1e-4)
    rows, _ = data
    pd_shipped = np.array([model.predict(r) for r in rows])
    pd_fresh = np.array([fresh.predict(r) for r in rows])
    assert np.max(np.abs(pd_shipped - pd_fresh)) < 1e-5
    far = np.min(np.abs(pd_shipped[:, None] - np.array(GERMAN_PD_CUTOFFS)[None, :]), axis=1) > 1e-5
    assert far.sum() >= 995
    assert all(fresh.band(r) == model.band(r) for r, keep in zip(rows, far, strict=True) if keep)


def test_band_table_is_monotone_and_non_degenerate(
    model: LinearModel, data: tuple[list[dict[str, int | str]], np.ndarray]
) -> None:
    rows, y = data
    bands = np.array([model.band(r) for r in rows])
    counts = np.bincount(bands, minlength=5)
    assert counts.sum() == 1000
    assert counts.min() >= 150  # the cutoffs are rounded quintiles
    bad_rates = [float(y[bands == k].mean()) for k in range(5)]
    assert all(a < b for a, b in itertools.pairwise(bad_rates))
    assert bad_rates[0] < 0.1 and bad_rates[-1] > 0.6
    pd_ = np.array([model.predict(r) for r in rows])
    assert roc_auc_score(y, pd_) > 0.8  # in-sample
    assert model.metadata["auc_in_sample"] == pytest.approx(roc_auc_score(y, pd_), abs=1e-4)


def test_weights_have_the_expected_signs(model: LinearModel) -> None:
    coef = dict(zip(model.spec.encoded_names, model.coef, strict=True))
    assert coef["duration_in_month"] > 0  # longer loans default more
    assert coef["credit_amount"] > 0
    assert coef["age_in_years"] < 0
    assert (
        coef["status_of_existing_checking_account=no checking account"]
        < coef["status_of_existing_checking_account=... < 0 DM"]
    )
