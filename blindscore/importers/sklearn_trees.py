"""Convert fitted scikit-learn tree models to a TreeEnsemble (loading the skops file is the caller's job).

Supported (binary classification or single-output regression):

- ``DecisionTreeClassifier`` / ``DecisionTreeRegressor``, ``RandomForest*`` and ``ExtraTrees*``:
  the output is ``predict_proba[:, 1]`` (a classifier's leaf holds its class-1 fraction) or
  ``predict``; link identity. Forests average, represented by dividing every leaf value by the
  number of trees (one double rounding per leaf; the fixed-point bound applies to those values).
- ``GradientBoostingClassifier`` (``log_loss``: link logit, margin = ``decision_function``) and
  ``GradientBoostingRegressor`` (any loss; link identity): base score = the init estimator's
  constant raw prediction (a ``DummyClassifier`` prior's log-odds, a ``DummyRegressor``'s
  constant, or 0 for ``init="zero"``), leaf values ``learning_rate * value`` as scikit-learn
  multiplies them.
- ``HistGradientBoostingClassifier`` (``log_loss``, binary) and ``HistGradientBoostingRegressor``
  (``squared_error``, ``absolute_error``, ``quantile``): base = ``_baseline_prediction``, leaves
  from each predictor's ``nodes`` array (learning rate already applied).

Semantics reproduced: the ``DecisionTree`` family casts X to float32 and goes left iff
``X[i, f] <= threshold`` with the float32 value upcast to the double threshold; the
HistGradientBoosting family keeps X in float64 and goes left iff ``x <= num_threshold`` (which may
be +inf). A NaN goes the ``missing_go_to_left`` way in both. Refused, each with one sentence:
multi-class and multi-output models, categorical splits, custom init estimators, losses whose
prediction is not the raw score (``exponential``, ``poisson``, ``gamma``).

A ``SimpleImputer`` before the trees (``fill``: feature index -> fill value) is folded into the
trees, exactly: after imputation a missing value is the fill value v, which goes left at a node
iff v (cast to the comparison domain) goes left, so every node testing that feature sends a
missing value the way v goes. The platform still encodes "missing" as the float key's missing
bit, and the fill values stay as secret as the thresholds.

A ``StandardScaler`` or ``MinMaxScaler`` before the trees (``transforms``: feature index -> the
scaler's own float64 map of that column) is folded into the thresholds, exactly. The map is
monotone non-decreasing (IEEE rounding is monotone; the scale is positive; clipping is monotone),
and so is the cast to float32, so the raw values a node sends left, ``cast(transform(x)) <= t``,
are the finite doubles up to some x*: the largest is found by bisection over the float64 keys
(:func:`_raw_thresholds`), and the node becomes ``x <= x*`` on the raw value in float64. Such a
model compares float64 keys at every node (one key width for all nodes; a column without a scaler
gets its x* from the identity map). If every finite value goes left, x* is +inf; if none does, x*
is -inf: an infinite value, which scikit-learn refuses, has no library output to match. A fill
value is a raw value (the imputer comes first), so it is folded after the rewrite.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.dummy import DummyClassifier, DummyRegressor
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
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from blindscore.errors import ModelFormatError
from blindscore.models.policy import BandPolicy
from blindscore.models.trees import Tree, TreeEnsemble

__all__ = ["SUPPORTED_ESTIMATORS", "ensemble_from_sklearn"]

SUPPORTED_ESTIMATORS = (
    "DecisionTreeClassifier",
    "DecisionTreeRegressor",
    "ExtraTreesClassifier",
    "ExtraTreesRegressor",
    "GradientBoostingClassifier",
    "GradientBoostingRegressor",
    "HistGradientBoostingClassifier",
    "HistGradientBoostingRegressor",
    "RandomForestClassifier",
    "RandomForestRegressor",
)
_HGB_IDENTITY_LOSSES = ("squared_error", "absolute_error", "quantile")


def _refuse(what: str) -> ModelFormatError:
    return ModelFormatError(f"scikit-learn model: {what}")


def _cart_tree(tree: Any, leaf_value: Callable[[np.ndarray], float]) -> Tree:
    """A fitted ``tree_`` (sklearn.tree._tree.Tree); ``leaf_value`` maps a ``value[node]`` row to a float."""
    left = tree.children_left.tolist()
    right = tree.children_right.tolist()
    leaf = [c == -1 for c in left]
    go_left = getattr(tree, "missing_go_to_left", None)
    n = len(left)
    return Tree(
        feature=tuple(-1 if leaf[i] else int(tree.feature[i]) for i in range(n)),
        threshold=tuple(0.0 if leaf[i] else float(tree.threshold[i]) for i in range(n)),
        left=tuple(left),
        right=tuple(-1 if leaf[i] else right[i] for i in range(n)),
        default_left=tuple(
            bool(go_left[i]) if go_left is not None and not leaf[i] else False for i in range(n)
        ),
        missing=("nan",) * n,
        value=tuple(leaf_value(tree.value[i]) if leaf[i] else 0.0 for i in range(n)),
    )


def _class1_fraction(divisor: int) -> Callable[[np.ndarray], float]:
    def value(v: np.ndarray) -> float:
        # As DecisionTreeClassifier.predict_proba normalises: the class-1 share, 0 / 0 read as 0.
        total = float(v[0, 0]) + float(v[0, 1])
        p = float(v[0, 1]) / (total if total != 0.0 else 1.0)
        return p / divisor if divisor != 1 else p

    return value


def _scaled(scale: float, divisor: int = 1) -> Callable[[np.ndarray], float]:
    def value(v: np.ndarray) -> float:
        x = scale * float(v[0, 0]) if scale != 1.0 else float(v[0, 0])
        return x / divisor if divisor != 1 else x

    return value


def _check_binary(est: Any) -> None:
    classes = getattr(est, "classes_", None)
    if classes is None or len(classes) != 2 or getattr(est, "n_outputs_", 1) != 1:
        n = 0 if classes is None else len(classes)
        raise _refuse(
            f"{type(est).__name__} has {n} classes or several outputs; only binary classifiers and "
            "single-output regressors are supported"
        )


def _filled(tree: Tree, fill: Mapping[int, float], float32: bool) -> Tree:
    """``tree`` with a missing value of feature f sent where ``fill[f]`` goes (split rule ``x <= t``)."""
    default_left = list(tree.default_left)
    for i, f in enumerate(tree.feature):
        if f >= 0 and f in fill:
            v = float(np.float32(fill[f])) if float32 else fill[f]
            default_left[i] = v <= tree.threshold[i]
    return dataclasses.replace(tree, default_left=tuple(default_left))


_SIGN = np.uint64(1 << 63)
#: Offset keys (float64 key + 2^63, as uint64) of the largest negative and positive finite doubles.
_U_MIN = np.uint64((1 << 63) - 0x7FEFFFFFFFFFFFFF)
_U_MAX = np.uint64((1 << 63) + 0x7FEFFFFFFFFFFFFF)


def _doubles(u: np.ndarray) -> np.ndarray:
    """The doubles whose order-preserving keys (:func:`~blindscore.models.floatkeys.float_key`)
    are ``u - 2^63`` (uint64 offset keys, so that differences never overflow)."""
    k = (u ^ _SIGN).view(np.int64)
    bits = np.where(k >= 0, k.view(np.uint64), (-k).view(np.uint64) | _SIGN)
    return bits.view(np.float64)


def _raw_thresholds(
    thresholds: np.ndarray, transform: Callable[[np.ndarray], np.ndarray] | None, float32: bool
) -> np.ndarray:
    """Per threshold t, the largest finite double x with ``cast(transform(x)) <= t`` (cast: float32
    or none), +inf if every finite double qualifies, -inf if none does; ``transform`` (None: the
    identity) maps a float64 array elementwise and must be monotone non-decreasing."""
    t = np.asarray(thresholds, dtype=np.float64)

    def left(u: np.ndarray) -> np.ndarray:
        x = _doubles(u)
        with np.errstate(over="ignore", invalid="ignore"):
            z = np.asarray(transform(x), dtype=np.float64) if transform is not None else x
            if np.isnan(z).any():
                raise ModelFormatError("a scaler maps a finite value to NaN")
            zc = z.astype(np.float32) if float32 else z
        return np.asarray(zc <= t)

    lo = np.full(t.shape, _U_MIN, dtype=np.uint64)
    hi = np.full(t.shape, _U_MAX, dtype=np.uint64)
    all_left, none_left = left(hi), ~left(lo)
    # Invariant (where neither holds): lo goes left, hi goes right; halve the key interval.
    one = np.uint64(1)
    while True:
        open_ = (hi - lo > one) & ~all_left & ~none_left
        if not open_.any():
            break
        mid = lo + (hi - lo) // np.uint64(2)
        go = left(mid)
        lo = np.where(open_ & go, mid, lo)
        hi = np.where(open_ & ~go, mid, hi)
    out = _doubles(lo)
    out[all_left] = np.inf
    out[none_left] = -np.inf
    return out


def _unscaled(
    trees: Sequence[Tree], transforms: Mapping[int, Callable[[np.ndarray], np.ndarray]], float32: bool
) -> list[Tree]:
    """``trees`` with each node's threshold moved to the raw feature: ``x <= x*`` in float64 (one
    bisection per feature over all its nodes)."""
    thresholds = [list(t.threshold) for t in trees]
    nodes: dict[int, list[tuple[int, int]]] = {}
    for k, t in enumerate(trees):
        for i, f in enumerate(t.feature):
            if f >= 0:
                nodes.setdefault(f, []).append((k, i))
    for f, where in sorted(nodes.items()):
        given = np.array([trees[k].threshold[i] for k, i in where])
        for (k, i), x in zip(where, _raw_thresholds(given, transforms.get(f), float32).tolist(), strict=True):
            thresholds[k][i] = x
    return [dataclasses.replace(t, threshold=tuple(th)) for t, th in zip(trees, thresholds, strict=True)]


def _hgb_tree(predictor: Any, names: Sequence[str]) -> Tree:
    nodes = predictor.nodes
    leaf = nodes["is_leaf"].astype(bool).tolist()
    for i, cat in enumerate(nodes["is_categorical"].tolist()):
        if cat and not leaf[i]:
            f = int(nodes["feature_idx"][i])
            raise _refuse(
                f"HistGradientBoosting has a categorical split on feature {names[f]!r}, which is not "
                "supported; pass it as a numeric feature (categorical_features=None)"
            )
    n = len(leaf)
    return Tree(
        feature=tuple(-1 if leaf[i] else int(nodes["feature_idx"][i]) for i in range(n)),
        threshold=tuple(0.0 if leaf[i] else float(nodes["num_threshold"][i]) for i in range(n)),
        left=tuple(-1 if leaf[i] else int(nodes["left"][i]) for i in range(n)),
        right=tuple(-1 if leaf[i] else int(nodes["right"][i]) for i in range(n)),
        default_left=tuple(not leaf[i] and bool(nodes["missing_go_to_left"][i]) for i in range(n)),
        missing=("nan",) * n,
        value=tuple(float(nodes["value"][i]) if leaf[i] else 0.0 for i in range(n)),
    )


def ensemble_from_sklearn(
    estimator: Any,
    *,
    policy: BandPolicy,
    name: str | None = None,
    precision: float = 1e-6,
    feature_names: Sequence[str] | None = None,
    fill: Mapping[int, float] | None = None,
    transforms: Mapping[int, Callable[[np.ndarray], np.ndarray]] | None = None,
) -> TreeEnsemble:
    """The TreeEnsemble of a fitted estimator of :data:`SUPPORTED_ESTIMATORS`; ``fill`` maps an
    input column to the fill value a ``SimpleImputer`` before the trees puts in for a missing value,
    ``transforms`` an input column to the monotone non-decreasing float64 map a scaler applies to
    it (elementwise on an array, exactly as the scaler computes it); see the module docstring."""
    kind = type(estimator).__name__
    n_feat = getattr(estimator, "n_features_in_", None)
    if n_feat is None:
        raise _refuse(f"{kind} is not fitted (or not a supported tree model)")
    if feature_names is not None:
        names = list(feature_names)
    elif hasattr(estimator, "feature_names_in_"):
        names = [str(n) for n in estimator.feature_names_in_]
    else:
        names = [f"x{i}" for i in range(n_feat)]
    if len(names) != n_feat:
        raise _refuse(f"{len(names)} feature names for {n_feat} features")
    base = 0.0
    float32 = True
    link = "identity"
    output = "raw"
    if isinstance(estimator, DecisionTreeClassifier | DecisionTreeRegressor):
        estimators = [estimator]
    elif isinstance(
        estimator, RandomForestClassifier | RandomForestRegressor | ExtraTreesClassifier | ExtraTreesRegressor
    ):
        estimators = list(estimator.estimators_)
    else:
        estimators = []
    if isinstance(estimator, DecisionTreeClassifier | RandomForestClassifier | ExtraTreesClassifier):
        _check_binary(estimator)
        div = len(estimators)
        trees = [_cart_tree(e.tree_, _class1_fraction(div)) for e in estimators]
        output = "probability"
    elif isinstance(estimator, DecisionTreeRegressor | RandomForestRegressor | ExtraTreesRegressor):
        if getattr(estimator, "n_outputs_", 1) != 1:
            raise _refuse(f"{kind} has several outputs; only single-output regressors are supported")
        trees = [_cart_tree(e.tree_, _scaled(1.0, len(estimators))) for e in estimators]
    elif isinstance(estimator, GradientBoostingClassifier | GradientBoostingRegressor):
        if estimator.estimators_.shape[1] != 1:
            raise _refuse(
                f"{kind} has {estimator.estimators_.shape[1]} trees per stage (multi-class); only binary "
                "classifiers and regressors are supported"
            )
        if isinstance(estimator, GradientBoostingClassifier):
            _check_binary(estimator)
            if estimator.loss != "log_loss":
                raise _refuse(
                    f"GradientBoostingClassifier loss {estimator.loss!r} is not supported; use log_loss"
                )
            link, output = "logit", "probability"
        init = estimator.init_
        if not (isinstance(init, str) and init == "zero") and not isinstance(
            init, DummyClassifier | DummyRegressor
        ):
            raise _refuse(
                f"{kind} has a custom init estimator {type(init).__name__}, which is not supported; use the "
                "default init or init='zero'"
            )
        # The constant raw prediction, exactly as scikit-learn computes it for every row.
        base = float(estimator._raw_predict_init(np.zeros((1, n_feat)))[0, 0])
        lr = float(estimator.learning_rate)
        trees = [_cart_tree(stage[0].tree_, _scaled(lr)) for stage in estimator.estimators_]
    elif isinstance(estimator, HistGradientBoostingClassifier | HistGradientBoostingRegressor):
        if estimator.n_trees_per_iteration_ != 1:
            raise _refuse(f"{kind} is multi-class; only binary classifiers and regressors are supported")
        loss = estimator.loss
        if isinstance(estimator, HistGradientBoostingClassifier):
            _check_binary(estimator)
            link, output = "logit", "probability"
        elif loss not in _HGB_IDENTITY_LOSSES:
            raise _refuse(
                f"HistGradientBoostingRegressor loss {loss!r} (a log link) is not supported; use one of "
                f"{', '.join(_HGB_IDENTITY_LOSSES)}"
            )
        base = float(np.asarray(estimator._baseline_prediction).reshape(-1)[0])
        trees = [_hgb_tree(p[0], names) for p in estimator._predictors]
        float32 = False
    else:
        raise _refuse(f"{kind} is not supported; supported: {', '.join(SUPPORTED_ESTIMATORS)}")
    metadata: dict[str, Any] = {"source": "scikit-learn", "estimator": kind}
    if transforms:
        if not all(0 <= f < n_feat for f in transforms):
            raise _refuse("a scaled column names no input column")
        trees = _unscaled(trees, transforms, float32)
        float32 = False
        metadata["scaled"] = (
            "scaler folded into the thresholds: each node compares the raw value in float64 ("
            + ", ".join(names[f] for f in sorted(transforms))
            + ")"
        )
    if fill:
        if not all(0 <= f < n_feat and math.isfinite(v) for f, v in fill.items()):
            raise _refuse("a fill value is not finite or names no input column")
        trees = [_filled(t, fill, float32) for t in trees]
        metadata["imputed"] = (
            "SimpleImputer folded into the trees: a missing value goes where the fill value goes ("
            + ", ".join(names[f] for f in sorted(fill))
            + ")"
        )
    return TreeEnsemble(
        name or kind,
        names,
        trees,
        base_score=base,
        link="logit" if link == "logit" else "identity",
        output="probability" if output == "probability" else "raw",
        domain="float32" if float32 else "float64",
        strict=False,
        policy=policy,
        precision=precision,
        metadata=metadata,
    )
