"""The German credit demo: vendored UCI data, its public feature spec and the shipped logistic model.

Data: UCI Statlog (German Credit Data), Hofmann 1994, CC BY 4.0; see ``data/NOTICE.md``. The
target is 1 for a bad credit risk (300 of 1000 rows), so the model predicts a probability of
default (PD) and band A is the lowest PD.

Model: scikit-learn ``LogisticRegression`` (lbfgs, C=1) on the seven numeric attributes,
standardised, plus one-hot indicators of the thirteen categorical ones; the standardisation is
folded back into the weights so the model scores raw feature values. The PD band cutoffs
:data:`GERMAN_PD_CUTOFFS` are the in-sample PD quintiles of that fit, rounded to two decimals
(0.0717, 0.1625, 0.3192, 0.5420 with scikit-learn 1.9). Everything is in-sample: the data set
is small and this model is a demonstration of the protocol, not a credit policy.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import numpy as np

from blindscore.errors import InvalidInputError, ModelFormatError
from blindscore.models.contract import PrivateModel
from blindscore.models.features import CategoricalFeature, FeatureSpec, NumericFeature
from blindscore.models.linear import LinearModel
from blindscore.models.policy import BandPolicy
from blindscore.models.registry import load_model_file

__all__ = [
    "CATEGORIES",
    "DEFAULT_MODEL_ID",
    "DEMO_MODELS",
    "GERMAN_C",
    "GERMAN_MODEL_NAME",
    "GERMAN_PD_CUTOFFS",
    "GERMAN_PRECISION",
    "NUMERIC_RANGES",
    "TARGET",
    "default_model",
    "demo_model",
    "design_matrix",
    "german_feature_spec",
    "load_german_credit",
    "train_german_model",
]

TARGET = "creditability"
GERMAN_MODEL_NAME = "german-credit-lr"
#: The id under which nodes install the shipped model.
DEFAULT_MODEL_ID = GERMAN_MODEL_NAME
GERMAN_MODEL_FILE = "german_credit_lr.json"
#: The shipped tree ensemble and network (numeric columns only; scripts/train_german_model.py).
GERMAN_GBDT_NAME = "german-credit-gbdt"
GERMAN_GBDT_FILE = "german_credit_gbdt.json"
GERMAN_MLP_NAME = "german-credit-mlp"
GERMAN_MLP_FILE = "german_credit_mlp.json"
#: Demo model families: name in the bureau's store and the shipped file.
DEMO_MODELS = {
    "linear": (GERMAN_MODEL_NAME, GERMAN_MODEL_FILE),
    "gbdt": (GERMAN_GBDT_NAME, GERMAN_GBDT_FILE),
    "mlp": (GERMAN_MLP_NAME, GERMAN_MLP_FILE),
}
GERMAN_C = 1.0
#: Rounded in-sample PD quintiles of the C=1 fit; band A: PD < 0.07, ..., band E: PD >= 0.54.
GERMAN_PD_CUTOFFS = (0.07, 0.16, 0.32, 0.54)
#: In log-odds. 1e-6 moves a PD by at most 2.5e-7, and it keeps the comparison width small.
GERMAN_PRECISION = 1e-6

#: Public declared ranges of the integer-valued attributes (inclusive). The 1..4 attributes are
#: codes in the source data; the rest are counts, months, Deutsche Mark and years.
NUMERIC_RANGES: dict[str, tuple[int, int]] = {
    "duration_in_month": (1, 120),
    "credit_amount": (0, 1_000_000),
    "installment_rate_in_percentage_of_disposable_income": (1, 4),
    "present_residence_since": (1, 4),
    "age_in_years": (18, 120),
    "number_of_existing_credits_at_this_bank": (0, 20),
    "number_of_people_being_liable_to_provide_maintenance_for": (0, 20),
}

#: Categories as spelled in the vendored CSV, in the order of the UCI attribute codes. Codes
#: absent from the data (A47 vacation, A95 female single) are not listed and are refused.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "status_of_existing_checking_account": (
        "... < 0 DM",
        "0 <= ... < 200 DM",
        "... >= 200 DM / salary assignments for at least 1 year",
        "no checking account",
    ),
    "credit_history": (
        "no credits taken/ all credits paid back duly",
        "all credits at this bank paid back duly",
        "existing credits paid back duly till now",
        "delay in paying off in the past",
        "critical account/ other credits existing (not at this bank)",
    ),
    "purpose": (
        "car (new)",
        "car (used)",
        "furniture/equipment",
        "radio/television",
        "domestic appliances",
        "repairs",
        "education",
        "retraining",
        "business",
        "others",
    ),
    "savings_account_and_bonds": (
        "... < 100 DM",
        "100 <= ... < 500 DM",
        "500 <= ... < 1000 DM",
        "... >= 1000 DM",
        "unknown/ no savings account",
    ),
    "present_employment_since": (
        "unemployed",
        "... < 1 year",
        "1 <= ... < 4 years",
        "4 <= ... < 7 years",
        "... >= 7 years",
    ),
    "personal_status_and_sex": (
        "male : divorced/separated",
        "female : divorced/separated/married",
        "male : single",
        "male : married/widowed",
    ),
    "other_debtors_or_guarantors": ("none", "co-applicant", "guarantor"),
    "property": (
        "real estate",
        "building society savings agreement/ life insurance",
        "car or other, not in attribute Savings account/bonds",
        "unknown / no property",
    ),
    "other_installment_plans": ("bank", "stores", "none"),
    "housing": ("rent", "own", "for free"),
    "job": (
        "unemployed/ unskilled - non-resident",
        "unskilled - resident",
        "skilled employee / official",
        "management/ self-employed/ highly qualified employee/ officer",
    ),
    "telephone": ("none", "yes, registered under the customers name"),
    "foreign_worker": ("yes", "no"),
}

#: Feature order: the column order of the CSV.
FEATURE_ORDER = (
    "status_of_existing_checking_account",
    "duration_in_month",
    "credit_history",
    "purpose",
    "credit_amount",
    "savings_account_and_bonds",
    "present_employment_since",
    "installment_rate_in_percentage_of_disposable_income",
    "personal_status_and_sex",
    "other_debtors_or_guarantors",
    "present_residence_since",
    "property",
    "age_in_years",
    "other_installment_plans",
    "housing",
    "number_of_existing_credits_at_this_bank",
    "job",
    "number_of_people_being_liable_to_provide_maintenance_for",
    "telephone",
    "foreign_worker",
)


def _data_text(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def load_german_credit() -> tuple[list[dict[str, int | str]], np.ndarray]:
    """Return the 1000 applications and the target.

    Rows are dicts keyed by :data:`FEATURE_ORDER` (ints for the numeric attributes, strings for
    the categorical ones, the target column removed); the target is an int array, 1 = bad.
    """
    reader = csv.DictReader(io.StringIO(_data_text("germancredit.csv")))
    expected = [*FEATURE_ORDER, TARGET]
    if reader.fieldnames != expected:
        raise ModelFormatError(f"germancredit.csv: unexpected header {reader.fieldnames}")
    rows: list[dict[str, int | str]] = []
    target: list[int] = []
    for line in reader:
        label = line.pop(TARGET)
        if label not in ("good", "bad"):
            raise ModelFormatError(f"germancredit.csv: unexpected {TARGET} value {label!r}")
        target.append(1 if label == "bad" else 0)
        rows.append({k: int(v) if k in NUMERIC_RANGES else v for k, v in line.items()})
    return rows, np.asarray(target, dtype=np.int64)


def german_feature_spec() -> FeatureSpec:
    """The public feature spec: integer numerics with declared ranges, one-hot categoricals."""
    features: list[NumericFeature | CategoricalFeature] = []
    for name in FEATURE_ORDER:
        if name in NUMERIC_RANGES:
            lo, hi = NUMERIC_RANGES[name]
            features.append(NumericFeature(name, lo, hi, frac_bits=0, integer=True))
        else:
            features.append(CategoricalFeature(name, CATEGORIES[name]))
    return FeatureSpec(tuple(features))


def design_matrix(spec: FeatureSpec, rows: Sequence[Mapping[str, object]]) -> np.ndarray:
    """The validated, one-hot rows as a float matrix with columns ``spec.encoded_names``."""
    return np.asarray([spec.transform_row(r) for r in rows], dtype=np.float64).reshape(
        len(rows), spec.encoded_width
    )


def train_german_model(
    C: float = GERMAN_C,
    cutoffs: Sequence[float] = GERMAN_PD_CUTOFFS,
    precision: float = GERMAN_PRECISION,
) -> LinearModel:
    """Fit the logistic PD model on all 1000 rows and return it with a five-band policy.

    Deterministic: lbfgs from zero with a tight tolerance. Numeric columns are standardised for
    the fit (so C penalises them comparably with the indicators) and the scaling is folded into
    the returned raw-unit weights.
    """
    from sklearn import __version__ as sklearn_version
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    rows, y = load_german_credit()
    spec = german_feature_spec()
    x = design_matrix(spec, rows)
    numeric = np.asarray([name in NUMERIC_RANGES for name in spec.encoded_names])
    mean = np.where(numeric, x.mean(axis=0), 0.0)
    scale = np.where(numeric, x.std(axis=0), 1.0)
    clf = LogisticRegression(C=C, solver="lbfgs", max_iter=100_000, tol=1e-12)
    clf.fit((x - mean) / scale, y)
    coef = clf.coef_[0] / scale
    intercept = float(clf.intercept_[0] - np.sum(coef * mean))
    pd_ = clf.predict_proba((x - mean) / scale)[:, 1]
    metadata: dict[str, Any] = {
        "data": "UCI Statlog German Credit (Hofmann 1994, CC BY 4.0), 1000 rows, blindscore/data",
        "target": "probability that creditability is 'bad'",
        "estimator": f"LogisticRegression(C={C}, solver='lbfgs') on standardised numerics and "
        "one-hot categoricals; scaling folded into the weights",
        "sklearn_version": sklearn_version,
        "auc_in_sample": round(float(roc_auc_score(y, pd_)), 4),
        "pd_quintiles_in_sample": [round(float(q), 4) for q in np.quantile(pd_, [0.2, 0.4, 0.6, 0.8])],
    }
    return LinearModel(
        GERMAN_MODEL_NAME,
        spec,
        [float(w) for w in coef],
        intercept,
        "logit",
        BandPolicy(tuple(cutoffs), ("A", "B", "C", "D", "E"), "probability"),
        precision,
        metadata=metadata,
    )


def demo_model(family: str) -> PrivateModel:
    """The shipped German credit model of ``family`` (linear, gbdt or mlp)."""
    if family not in DEMO_MODELS:
        raise InvalidInputError(f"unknown demo model {family!r}; choose one of {', '.join(DEMO_MODELS)}")
    with resources.as_file(resources.files(__package__).joinpath(DEMO_MODELS[family][1])) as path:
        return load_model_file(path)


def default_model() -> LinearModel:
    """The shipped German credit model (``data/german_credit_lr.json``)."""
    with resources.as_file(resources.files(__package__).joinpath(GERMAN_MODEL_FILE)) as path:
        return LinearModel.load(path)
