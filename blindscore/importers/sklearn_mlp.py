"""Convert a fitted scikit-learn MLPClassifier (binary) or MLPRegressor, maybe after a StandardScaler.

Supported: ``MLPClassifier`` with two classes (output = the log-odds of the second class, link
logit: ``predict_proba[:, 1] = sigmoid(output)``) and ``MLPRegressor`` with one output (link
identity), hidden activation ``relu`` or ``identity``; either alone or as the last step of a
``Pipeline`` whose only other step is a ``StandardScaler``, which is folded into the first layer
(``W' = W / scale``, ``b' = b - W mean / scale``: exact in real arithmetic, a float64 rounding
apart). The declared feature ranges come from the caller: the fitted model knows only its
training data, and the ranges are a public promise the platform enforces. Refused, each with one
sentence naming the construct and what is supported: other activations, multi-class, multi-label
and multi-output models, other pipeline steps, other estimators.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from blindscore.errors import ModelFormatError
from blindscore.models.features import FeatureSpec, NumericFeature
from blindscore.models.mlp import ACTIVATIONS, DEFAULT_PRECISION, MLPModel
from blindscore.models.policy import BandPolicy

__all__ = ["SUPPORTED", "frac_bits_for", "mlp_from_sklearn"]

SUPPORTED = (
    "MLPClassifier (binary) or MLPRegressor (one output) with hidden activation relu or identity, "
    "alone or after a StandardScaler in a Pipeline"
)
#: Fractional bits of a feature not declared integer: its encoding error is 2^-(frac_bits + 1).
DEFAULT_FRAC_BITS = 16


def _split(estimator: Any) -> tuple[StandardScaler | None, Any]:
    if not isinstance(estimator, Pipeline):
        return None, estimator
    steps = [step for _, step in estimator.steps if step not in (None, "passthrough")]
    if len(steps) == 1:
        return None, steps[0]
    if len(steps) == 2 and isinstance(steps[0], StandardScaler):
        return steps[0], steps[1]
    kinds = ", ".join(type(s).__name__ for s in steps)
    raise ModelFormatError(f"a Pipeline of {kinds} is not supported; supported: {SUPPORTED}")


def _fold_columns(
    w1: np.ndarray, b1: np.ndarray, columns: Sequence[tuple[str, float, float]], names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Layer 1 on the raw features from layer 1 on the preprocessed columns (``a x + c`` each)."""
    if len(columns) != w1.shape[0]:
        raise ModelFormatError(
            f"the preprocessing yields {len(columns)} columns, the MLP takes {w1.shape[0]}"
        )
    index = {n: k for k, n in enumerate(names)}
    if any(x not in index for x, _, _ in columns):
        raise ModelFormatError("a preprocessed column comes from a feature not in feature_names")
    folded = np.zeros((len(names), w1.shape[1]))
    bias = b1.copy()
    for row, (x, a, c) in zip(w1, columns, strict=True):
        folded[index[x]] += a * row
        bias = bias + c * row
    return folded, bias


def frac_bits_for(
    mlp: Any, columns: Sequence[tuple[str, float, float]], names: Sequence[str], precision: float
) -> int:
    """The fractional bits (at least :data:`DEFAULT_FRAC_BITS`) that keep the features' encoding
    error within a quarter of ``precision`` at the output, by the bound's own propagation: an
    input error d_i reaches the output as at most ``sum |W_L| ... |W_1'| d``."""
    w1, _ = _fold_columns(
        np.asarray(mlp.coefs_[0], dtype=np.float64), np.zeros(len(mlp.coefs_[0][0])), columns, names
    )
    gain = np.abs(w1).sum(axis=0)
    for w in mlp.coefs_[1:]:
        gain = np.abs(np.asarray(w, dtype=np.float64)).T @ gain
    k = float(np.max(gain))
    if not (k > 0 and math.isfinite(k)):
        return DEFAULT_FRAC_BITS
    return max(DEFAULT_FRAC_BITS, math.ceil(math.log2(4 * k / precision)) - 1)


def check_mlp(mlp: Any) -> None:
    """Refuse, with one sentence, a network this module cannot convert (its kind, activation, outputs),
    before anything else is asked of the user (declared ranges, say)."""
    if not isinstance(mlp, MLPClassifier | MLPRegressor):
        raise ModelFormatError(f"{type(mlp).__name__} is not supported; supported: {SUPPORTED}")
    kind = type(mlp).__name__
    if not hasattr(mlp, "coefs_"):
        raise ModelFormatError(f"the {kind} is not fitted; fit it before converting")
    if mlp.activation not in ACTIVATIONS:
        raise ModelFormatError(
            f"hidden activation {mlp.activation!r} is not supported; supported: {', '.join(ACTIVATIONS)}"
        )
    if isinstance(mlp, MLPClassifier):
        classes = len(mlp.classes_)
        if classes != 2 or mlp.n_outputs_ != 1 or mlp.out_activation_ != "logistic":
            raise ModelFormatError(
                f"an MLPClassifier with {classes} classes and {mlp.n_outputs_} outputs (multi-class or "
                f"multi-label) is not supported; supported: {SUPPORTED}"
            )
    elif mlp.n_outputs_ != 1:
        raise ModelFormatError(
            f"an MLPRegressor with {mlp.n_outputs_} outputs is not supported; supported: {SUPPORTED}"
        )
    elif mlp.out_activation_ != "identity":
        raise ModelFormatError(
            f"an MLPRegressor with output activation {mlp.out_activation_!r} (loss {mlp.loss!r}) is not "
            f"supported; supported: {SUPPORTED} and the squared_error loss"
        )


def mlp_from_sklearn(
    estimator: Any,
    *,
    ranges: Mapping[str, tuple[float, float]],
    policy: BandPolicy,
    feature_names: Sequence[str] | None = None,
    integer: Collection[str] = (),
    frac_bits: int = DEFAULT_FRAC_BITS,
    precision: float = DEFAULT_PRECISION,
    name: str = "sklearn-mlp",
    columns: Sequence[tuple[str, float, float]] | None = None,
    impute: Mapping[str, float] | None = None,
) -> MLPModel:
    """An :class:`MLPModel` from a fitted estimator (or Pipeline), the declared range of every
    feature (``ranges[name] = (lo, hi)``) and a band policy.

    ``feature_names`` gives the column order (default: the estimator's ``feature_names_in_``);
    features listed in ``integer`` are integer-valued and encoded exactly, the others with
    ``frac_bits`` fractional bits. ``columns`` describes preprocessing the caller has read (then
    ``estimator`` is the bare MLP): input column j of the MLP is ``a * x + c`` of feature ``x``
    for ``columns[j] == (x, a, c)``, folded into layer 1 like a scaler; ``feature_names`` is then
    required. ``impute`` gives a feature's public fill value for a missing value.
    """
    if columns is not None and feature_names is None:
        raise ModelFormatError("columns need the feature_names of the features they are made of")
    scaler, mlp = _split(estimator) if columns is None else (None, estimator)
    check_mlp(mlp)
    kind = type(mlp).__name__
    names = list(feature_names) if feature_names is not None else None
    if names is None:
        source = estimator if hasattr(estimator, "feature_names_in_") else mlp
        if not hasattr(source, "feature_names_in_"):
            raise ModelFormatError("the model was fitted without column names: pass feature_names")
        names = [str(n) for n in source.feature_names_in_]
    coefs = [np.asarray(c, dtype=np.float64) for c in mlp.coefs_]
    intercepts = [np.asarray(b, dtype=np.float64) for b in mlp.intercepts_]
    if columns is not None:
        coefs[0], intercepts[0] = _fold_columns(coefs[0], intercepts[0], columns, names)
    if len(names) != coefs[0].shape[0]:
        raise ModelFormatError(f"the model takes {coefs[0].shape[0]} features, {len(names)} names were given")
    missing = [n for n in names if n not in ranges]
    if missing:
        raise ModelFormatError(f"no declared range for feature(s) {missing}: every input needs (lo, hi)")
    fills = dict(impute or {})
    if set(fills) - set(names):
        raise ModelFormatError(f"impute names unknown feature(s) {sorted(set(fills) - set(names))}")
    unknown = sorted(set(integer) - set(names))
    if unknown:
        raise ModelFormatError(f"integer lists unknown feature(s) {unknown}")
    spec = FeatureSpec(
        tuple(
            NumericFeature(
                n, ranges[n][0], ranges[n][1], 0 if n in integer else frac_bits, n in integer, fills.get(n)
            )
            for n in names
        )
    )
    w1, b1 = coefs[0], intercepts[0]
    if scaler is not None:
        mean = np.zeros(len(names)) if scaler.mean_ is None else np.asarray(scaler.mean_, dtype=np.float64)
        scale = np.ones(len(names)) if scaler.scale_ is None else np.asarray(scaler.scale_, dtype=np.float64)
        w1 = w1 / scale[:, None]
        b1 = b1 - mean @ w1
    layers = [(w1.T.tolist(), b1.tolist())]
    layers += [(w.T.tolist(), b.tolist()) for w, b in zip(coefs[1:], intercepts[1:], strict=True)]
    return MLPModel(
        name,
        spec,
        layers,
        activation="relu" if mlp.activation == "relu" else "identity",
        link="logit" if isinstance(mlp, MLPClassifier) else "identity",
        policy=policy,
        precision=precision,
        metadata={
            "source": "scikit-learn",
            "estimator": kind,
            "scaler_folded": scaler is not None or columns is not None,
        },
    )
