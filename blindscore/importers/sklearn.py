"""Import a scikit-learn model from a skops file, without pickle: linear models, trees and MLPs.

:func:`load_sklearn_file` reads every supported family; linear models become a
:class:`LinearModel` (below), tree models a :class:`~blindscore.models.trees.TreeEnsemble`
(:mod:`blindscore.importers.sklearn_trees`) and MLPs an :class:`~blindscore.models.mlp.MLPModel`
(:mod:`blindscore.importers.sklearn_mlp`). :func:`load_sklearn_model` is the linear-only reader.

Missing values. A ``SimpleImputer`` (numeric, ``missing_values=nan``, strategy mean, median,
most_frequent or constant, no indicator) at the front of the pipeline, before a scaler, or in a
``ColumnTransformer`` (alone or first in a nested ``Pipeline`` with a scaler) becomes part of the
public encoding: a linear model's or an MLP's :class:`NumericFeature` carries the fill value
(``impute``), which the platform puts in for a missing value; a tree model's is folded into its
trees (a missing value goes where the fill value goes, the float key's missing bit says so) and
stays secret. Before trees imputers, ``StandardScaler`` / ``MinMaxScaler`` (folded into the
thresholds exactly, :mod:`blindscore.importers.sklearn_trees`), ``"passthrough"`` and ``"drop"``
are allowed, unweighted; before an MLP no ``OneHotEncoder``.

Linear models (:data:`SUPPORTED_MODELS`): the estimators binary ``LogisticRegression``,
``LinearRegression``, ``Ridge``, ``Lasso``, ``ElasticNet``, ``SGDRegressor``, binary
``SGDClassifier`` and binary ``LinearSVC``, each alone or as the last step of a ``Pipeline``
whose one preprocessing step is

- a ``StandardScaler`` or ``MinMaxScaler``: folded into the weights and the intercept;
- a ``OneHotEncoder`` (every input categorical): each input becomes a :class:`CategoricalFeature`
  that the platform one-hot encodes;
- a ``ColumnTransformer`` whose transformers are ``StandardScaler``, ``MinMaxScaler``,
  ``"passthrough"`` (numeric inputs), ``OneHotEncoder`` (categorical inputs) or ``"drop"``, with
  ``remainder="drop"``.

Outputs and links. Cutoffs apply to what scikit-learn reports for the model:
``predict_proba[:, 1]`` (link logit, cutoffs in (0, 1)) for ``LogisticRegression`` and
``SGDClassifier(loss="log_loss")``, whose probability is exactly the sigmoid of the decision
function; ``decision_function`` (link identity, raw cutoffs) for every other ``SGDClassifier``
loss and for ``LinearSVC``, whose ``predict_proba``, if any, is not a sigmoid; ``predict`` (link
identity) for the regressors. After the conversion the imported model is evaluated on probe rows
and compared with scikit-learn's own output; any configuration that is not that plain linear
form is refused.

Safety. The file is vetted before anything in it is constructed: every type named anywhere in
its schema, and every type skops itself does not trust, must be on a short allow-list
(:data:`ALLOWED_TYPES`); only then is it loaded by ``skops.io.loads`` with exactly those types
trusted. Functions never are: a ``FunctionTransformer`` is allowed only because a fitted
``ColumnTransformer`` stores ``"passthrough"`` as one whose function is None.

Categorical inputs. The categories are the encoder's ``categories_``, which must be strings. A
category dropped by ``drop="first"``, ``"if_binary"`` or an explicit list weighs 0. An encoder
with ``handle_unknown="ignore"`` (or ``"warn"``, ``"infrequent_if_exist"``) scores an unseen
category as all-zero indicators; the platform instead refuses a value outside the declared
categories, so such a row gets no band rather than a different one. Infrequent-category
grouping (``min_frequency``, ``max_categories``) is refused.

Declared ranges. Each numeric input becomes a :class:`NumericFeature`. Without ``feature_ranges``
a feature is declared to lie in [-1e6, 1e6] (:data:`DEFAULT_RANGE`), except behind a
``MinMaxScaler(clip=True)``: clipping is not linear, but it never acts on values inside the
scaler's fitted [data_min_, data_max_], so that is the default declared range of such a feature,
and a wider declared range is refused. Fractional bits f are shared by every numeric feature
given no explicit encoding: the smallest f for which the feature rounding error,
``sum_i |w_i| 2^-(f+1)``, is at most half of ``precision``; the other half goes to rounding the
weights (which fixes the score scale S) and to truncating the score for the band comparison (see
:class:`~blindscore.models.linear.LinearModel`). Because f grows with log2(sum |w_i|), the public spec
reveals that one coarse number about the weights; pass ``frac_bits`` (or NumericFeature entries
in ``feature_ranges``) to fix it independently of them. Wide ranges and a fine precision cost
comparison bits: narrow ranges that fit the data make comparisons cheaper.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import skops.io as sio
from sklearn.compose import ColumnTransformer
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
from sklearn.impute import SimpleImputer
from sklearn.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Ridge,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, OneHotEncoder, StandardScaler
from sklearn.svm import LinearSVC
from sklearn.tree import (
    DecisionTreeClassifier,
    DecisionTreeRegressor,
    ExtraTreeClassifier,
    ExtraTreeRegressor,
)

from blindscore.errors import InvalidInputError, ModelFormatError
from blindscore.importers._common import refuse_pickle
from blindscore.importers.sklearn_mlp import check_mlp, frac_bits_for, mlp_from_sklearn
from blindscore.importers.sklearn_trees import ensemble_from_sklearn
from blindscore.models.contract import PrivateModel
from blindscore.models.features import CategoricalFeature, Feature, FeatureSpec, NumericFeature
from blindscore.models.linear import LinearModel
from blindscore.models.mlp import DEFAULT_PRECISION as MLP_PRECISION
from blindscore.models.policy import BandPolicy, sigmoid

__all__ = [
    "ALLOWED_TYPES",
    "DEFAULT_RANGE",
    "SUPPORTED_MODELS",
    "SUPPORTED_SUMMARY",
    "UnsupportedModelError",
    "load_sklearn_file",
    "load_sklearn_model",
]

DEFAULT_RANGE: tuple[float, float] = (-1e6, 1e6)
#: A linear model's file is a few kilobytes; this only stops a hostile file from exhausting memory.
MAX_FILE_BYTES = 64 << 20
SUPPORTED_MODELS = (
    "LogisticRegression (binary)",
    "LinearRegression",
    "Ridge",
    "Lasso",
    "ElasticNet",
    "SGDRegressor",
    "SGDClassifier (binary; loss log_loss, hinge, modified_huber, squared_hinge or perceptron)",
    "LinearSVC (binary)",
    "Pipeline(StandardScaler or MinMaxScaler, one of those)",
    "Pipeline(OneHotEncoder, one of those)",
    "Pipeline(ColumnTransformer of StandardScaler, MinMaxScaler, 'passthrough', OneHotEncoder or "
    "'drop' with remainder='drop', one of those)",
    "DecisionTreeClassifier/Regressor, RandomForestClassifier/Regressor, "
    "ExtraTreesClassifier/Regressor (binary classifier or one output; depth <= 10)",
    "GradientBoostingClassifier (binary, log_loss, default or 'zero' init), GradientBoostingRegressor "
    "(squared_error, absolute_error, huber or quantile loss)",
    "HistGradientBoostingClassifier (binary, numeric splits), HistGradientBoostingRegressor "
    "(squared_error, absolute_error or quantile loss)",
    "MLPClassifier (binary) or MLPRegressor (one output), hidden activation relu or identity; every "
    "input needs a declared range (feature_ranges, --feature-range NAME=LO:HI)",
    "Pipeline(SimpleImputer, [StandardScaler or MinMaxScaler,] a linear model or an MLP)",
    "Pipeline([SimpleImputer,] [StandardScaler or MinMaxScaler,] a tree model), or an unweighted "
    "ColumnTransformer of SimpleImputer, those scalers, 'passthrough' and 'drop' before it",
    "SimpleImputer: numeric, missing_values=nan, strategy mean, median, most_frequent or constant, "
    "no add_indicator; also inside a ColumnTransformer, alone or in a Pipeline before a scaler",
)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


_CLASSIFIERS: tuple[type, ...] = (LogisticRegression, SGDClassifier, LinearSVC)
_REGRESSORS: tuple[type, ...] = (LinearRegression, Ridge, Lasso, ElasticNet, SGDRegressor)
_ESTIMATORS: tuple[type, ...] = _CLASSIFIERS + _REGRESSORS
_SCALERS: tuple[type, ...] = (StandardScaler, MinMaxScaler)
_PREPROCESSORS: tuple[type, ...] = (*_SCALERS, OneHotEncoder, ColumnTransformer)
_TREES: tuple[type, ...] = (
    DecisionTreeClassifier,
    DecisionTreeRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
)
_MLPS: tuple[type, ...] = (MLPClassifier, MLPRegressor)
#: Every estimator a file may end in, of every family.
_ALL_ESTIMATORS: tuple[type, ...] = (*_ESTIMATORS, *_TREES, *_MLPS)
#: What fitted tree models and MLPs store beside their estimators, by name (private modules): the
#: trees of the CART family and of HistGradientBoosting, the sub-estimators of forests and
#: GradientBoosting's init, the losses and links of the supported losses (those of refused losses,
#: such as exponential, poisson or gamma, stay off the list), label encoders and optimiser state.
_MODEL_INTERNALS = frozenset(
    {
        _qualname(t)
        for t in (DecisionTreeClassifier, DecisionTreeRegressor, ExtraTreeClassifier, ExtraTreeRegressor)
    }
    | {
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.dummy.DummyClassifier",
        "sklearn.dummy.DummyRegressor",
        "sklearn.preprocessing._label.LabelEncoder",
        "sklearn.preprocessing._label.LabelBinarizer",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        "sklearn._loss.link.IdentityLink",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss.link.Interval",
        "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss.loss.HalfSquaredError",
        "sklearn._loss.loss.AbsoluteError",
        "sklearn._loss.loss.HuberLoss",
        "sklearn._loss.loss.PinballLoss",
        "sklearn._loss._loss.CyHalfSquaredError",
        "sklearn._loss._loss.CyAbsoluteError",
        "sklearn._loss._loss.CyHuberLoss",
        "sklearn._loss._loss.CyPinballLoss",
    }
)
#: The random states fitted forests, boosting and MLPs keep, and the dtype an imputer records.
_NUMPY_INTERNALS = frozenset(
    {"numpy.dtype", "numpy.uint64", "numpy.random.mtrand.RandomState", "numpy.random._generator.Generator"}
)
#: The loss objects a fitted SGDClassifier stores (skops rebuilds them with LossNode, calling the
#: allow-listed class on plain data): log_loss, hinge and perceptron, modified_huber, squared_hinge.
#: They live in private scikit-learn modules, hence names rather than imports; the regression
#: losses an SGDClassifier also accepts are left out.
_SGD_CLASSIFIER_LOSSES = frozenset(
    {
        "sklearn._loss._loss.CyHalfBinomialLoss",
        "sklearn.linear_model._sgd_fast.Hinge",
        "sklearn.linear_model._sgd_fast.ModifiedHuber",
        "sklearn.linear_model._sgd_fast.SquaredHinge",
    }
)
_SGD_CLASSIFIER_LOSS_NAMES = ("log_loss", "hinge", "modified_huber", "squared_hinge", "perceptron")
#: Every type a supported file may name: the estimators, the preprocessing steps, SGD losses and
#: the plain containers skops uses.
ALLOWED_TYPES: frozenset[str] = frozenset(
    {_qualname(t) for t in (*_ALL_ESTIMATORS, *_PREPROCESSORS, SimpleImputer, Pipeline, FunctionTransformer)}
    | _SGD_CLASSIFIER_LOSSES
    | _MODEL_INTERNALS
    | _NUMPY_INTERNALS
    | {f"builtins.{t}" for t in ("dict", "list", "tuple", "str", "int", "float", "bool", "NoneType", "slice")}
    | {
        f"numpy.{t}"
        for t in ("ndarray", "float64", "float32", "int64", "int32", "bool_", "str_", "intc", "longlong")
    }
)
#: skops node kinds that only rebuild data or allow-listed objects: no function objects; the one
#: reduce (LossNode) calls an allow-listed loss class on plain data, TreeNode builds a
#: ``sklearn.tree._tree.Tree`` from its node arrays, the random-state nodes a numpy generator from its
#: state (skops declares the bit generator's name as a type, so it is vetted too), DTypeNode a dtype.
_ALLOWED_LOADERS = frozenset(
    {
        "ObjectNode",
        "DictNode",
        "ListNode",
        "TupleNode",
        "JsonNode",
        "TypeNode",
        "NdArrayNode",
        "SliceNode",
        "LossNode",
        "TreeNode",
        "RandomStateNode",
        "RandomGeneratorNode",
        "DTypeNode",
    }
)
Output = Literal["predict_proba", "decision_function", "predict"]


# ---------------------------------------------------------------------------------------------
# Vetting the file


def _schema_types(data: bytes, where: str) -> tuple[set[str], set[str]]:
    """Every ``module.class`` and every node kind named in the file's schema, read as JSON."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            info = zf.getinfo("schema.json")
            if info.file_size > MAX_FILE_BYTES:
                raise ModelFormatError(f"{where}: schema too large")
            schema = json.loads(zf.read(info))
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{where}: not a skops file ({exc})") from exc
    types: set[str] = set()
    loaders: set[str] = set()
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__class__" in node or "__module__" in node or "__loader__" in node:
                types.add(f"{node.get('__module__')}.{node.get('__class__')}")
                loaders.add(str(node.get("__loader__")))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return types, loaders


#: What the importer reads, in one line; :data:`SUPPORTED_MODELS` and :data:`ALLOWED_TYPES` in full
#: go to :attr:`UnsupportedModelError.details`.
SUPPORTED_SUMMARY = (
    "binary or one-output linear models (LogisticRegression, Ridge, SGD, LinearSVC, ...), "
    "DecisionTree, RandomForest, ExtraTrees, (Hist)GradientBoosting and MLP, alone or in a Pipeline "
    "after SimpleImputer, scalers, OneHotEncoder or a ColumnTransformer of those"
)


class UnsupportedModelError(ModelFormatError):
    """A model of a type or shape the importer does not read. The message is one sentence;
    ``details`` lists every supported model with its conditions and every allowed type."""

    def __init__(self, message: str, supported: str | None = SUPPORTED_SUMMARY) -> None:
        super().__init__(message if supported is None else f"{message}; supported: {supported}")
        self.details = "\n".join(
            [
                "Supported models:",
                *(f"  {m}" for m in SUPPORTED_MODELS),
                "Types a model file may contain:",
                *(f"  {t}" for t in sorted(ALLOWED_TYPES)),
            ]
        )


#: Types that betray a construct the importer refuses, and how to name it; their files are never
#: loaded, so this is all that can be said of them.
_REFUSED_CONSTRUCTS = {
    "sklearn._loss.loss.HalfMultinomialLoss": "a multi-class model (multinomial loss)",
    "sklearn._loss.loss.ExponentialLoss": "the exponential loss",
    "sklearn._loss.loss.HalfPoissonLoss": "the poisson loss (a log link)",
    "sklearn._loss.loss.HalfGammaLoss": "the gamma loss (a log link)",
    "sklearn.impute._base.MissingIndicator": "a SimpleImputer with add_indicator=True",
    "sklearn.preprocessing._encoders.OrdinalEncoder": (
        "a model with categorical splits (categorical_features)"
    ),
}


def _refusal(where: str, offending: Sequence[str]) -> ModelFormatError:
    constructs = [_REFUSED_CONSTRUCTS[t] for t in offending if t in _REFUSED_CONSTRUCTS]
    if constructs:
        # The construct is named; the internal types that betray it would only lengthen the sentence.
        return UnsupportedModelError(f"{where}: {' and '.join(constructs)} is not supported")
    return UnsupportedModelError(
        f"{where}: refusing to load a model that contains unsupported types: {', '.join(offending)}"
    )


def _load_vetted(path: Path) -> Any:
    where = str(path)
    refuse_pickle(path)
    with open(path, "rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
    refuse_pickle(path, data[:2])  # before the zip reader calls it "not a skops file"
    if len(data) > MAX_FILE_BYTES:
        raise ModelFormatError(f"{where}: larger than {MAX_FILE_BYTES} bytes; not a linear model")
    # One read: the bytes vetted are the bytes loaded.
    types, loaders = _schema_types(data, where)
    try:
        untrusted = set(sio.get_untrusted_types(data=data))
    except Exception as exc:  # skops raises assorted errors on malformed files
        raise ModelFormatError(f"{where}: not a readable skops file ({exc})") from exc
    offending = sorted((types | untrusted) - ALLOWED_TYPES)
    if offending:
        raise _refusal(where, offending)
    bad_loaders = sorted(loaders - _ALLOWED_LOADERS)
    if bad_loaders:
        raise ModelFormatError(f"{where}: refusing skops node kinds {', '.join(bad_loaders)}")
    try:
        return sio.loads(data, trusted=sorted(types | untrusted))
    except Exception as exc:
        raise ModelFormatError(f"{where}: skops could not load the vetted file ({exc})") from exc


# ---------------------------------------------------------------------------------------------
# The preprocessing as affine maps of the platform's features


@dataclass(frozen=True)
class _Input:
    """One platform feature: numeric (``categories`` None) or categorical."""

    name: str
    categories: tuple[str, ...] | None = None
    #: Behind MinMaxScaler(clip=True): the fitted [data_min_, data_max_], where clipping never acts.
    clip: tuple[float, float] | None = None
    #: Behind a SimpleImputer: the value a missing one is replaced by.
    impute: float | None = None


@dataclass(frozen=True)
class _Column:
    """One input column of the estimator: ``a * x + c`` of a numeric feature, or
    ``a * [x == category]`` of a categorical one."""

    feature: str
    a: float
    c: float = 0.0
    category: str | None = None
    #: Behind an unweighted scaler: the scaler's own map of this column, ``a * x + c`` exactly as
    #: scikit-learn computes it in float64 (clipping included), elementwise on an array.
    transform: Callable[[np.ndarray], np.ndarray] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class _Plan:
    """What lies before the estimator: the platform features and the estimator's input columns."""

    sklearn_inputs: tuple[str, ...]  # every column scikit-learn's input has, in order
    inputs: tuple[_Input, ...]  # the features the score depends on, in sklearn_inputs order
    columns: tuple[_Column, ...]  # the estimator's inputs, in order
    steps: str  # for the metadata
    unseen_ignored: bool  # an encoder would score unseen categories as all-zero indicators


def _unsupported_pipeline(where: str, steps: Sequence[Any]) -> ModelFormatError:
    kinds = ", ".join(type(s).__name__ if not isinstance(s, str) else repr(s) for s in steps)
    return UnsupportedModelError(f"{where}: unsupported pipeline ({kinds})")


def _steps(pipeline: Any) -> list[Any]:
    """A Pipeline's steps without the identities (a step given as "passthrough" or None)."""
    return [step for _, step in pipeline.steps if step is not None and not _is_passthrough(step)]


def _split(obj: Any, where: str) -> tuple[list[Any], Any]:
    """(the preprocessing steps, the estimator): none, a SimpleImputer, a scaler, a SimpleImputer
    then a scaler, a OneHotEncoder or a ColumnTransformer."""
    if type(obj) is Pipeline:
        steps = _steps(obj)
        if steps and type(steps[-1]) in _ALL_ESTIMATORS:
            pre, kinds = steps[:-1], [type(step) for step in steps[:-1]]
            if (len(pre) <= 1 and all(k in (*_PREPROCESSORS, SimpleImputer) for k in kinds)) or (
                len(pre) == 2 and kinds[0] is SimpleImputer and kinds[1] in _SCALERS
            ):
                return pre, steps[-1]
        raise _unsupported_pipeline(where, [step for _, step in obj.steps])
    if type(obj) in _ALL_ESTIMATORS:
        return [], obj
    raise _refusal(where, [_qualname(type(obj))])


def _imputer_fills(imputer: Any, names: Sequence[str], where: str) -> dict[str, float]:
    """The fill value per input of a fitted SimpleImputer, refused unless it is the plain numeric one."""
    missing = imputer.missing_values
    if not (isinstance(missing, float) and math.isnan(missing)):
        raise UnsupportedModelError(
            f"{where}: a SimpleImputer with missing_values={missing!r} is not supported",
            "a numeric SimpleImputer with missing_values=nan (the default)",
        )
    if imputer.add_indicator:
        raise UnsupportedModelError(
            f"{where}: a SimpleImputer with add_indicator=True is not supported",
            "a SimpleImputer without missing indicators",
        )
    if imputer.strategy not in ("mean", "median", "most_frequent", "constant"):
        raise UnsupportedModelError(
            f"{where}: SimpleImputer strategy {imputer.strategy!r} (a callable) is not supported",
            "strategies mean, median, most_frequent and constant",
        )
    fitted = getattr(imputer, "statistics_", None)
    if fitted is None:
        raise ModelFormatError(f"{where}: the SimpleImputer is not fitted")
    own = getattr(imputer, "feature_names_in_", None)
    if own is not None and [str(x) for x in own] != list(names):
        raise ModelFormatError(f"{where}: the SimpleImputer was fitted on other columns")
    values = np.asarray(fitted).reshape(-1)
    if values.dtype.kind == "O" and all(
        isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) for v in values
    ):
        values = values.astype(np.float64)  # strategy "constant" keeps its number in an object array
    if values.dtype.kind not in "iuf":
        raise UnsupportedModelError(
            f"{where}: a SimpleImputer over non-numeric values is not supported",
            "a numeric SimpleImputer (categories need no imputer: give the missing value its own category)",
        )
    if values.size != len(names):
        raise ModelFormatError(
            f"{where}: the SimpleImputer has {values.size} statistics for {len(names)} inputs"
        )
    fills: dict[str, float] = {}
    for name, value in zip(names, values.astype(np.float64).tolist(), strict=True):
        if not math.isfinite(value):
            raise ModelFormatError(
                f"{where}: the SimpleImputer has no finite fill value for {name!r} (no value of it was seen "
                "in training); drop the column or refit"
            )
        fills[name] = value
    return fills


def _imputed(inputs: Sequence[_Input], fills: Mapping[str, float]) -> list[_Input]:
    return [
        dataclasses.replace(item, impute=fills[item.name]) if item.name in fills else item for item in inputs
    ]


def _is_passthrough(step: Any) -> bool:
    return isinstance(step, str) and step == "passthrough"


def _feature_names(obj: Any, n_features: int, given: Sequence[str] | None, where: str) -> list[str]:
    fitted = getattr(obj, "feature_names_in_", None)
    if fitted is None and given is None:
        raise ModelFormatError(
            f"{where}: the model was fitted without feature names; fit it on a pandas DataFrame with "
            "named columns, or pass feature_names=[...]"
        )
    names = [str(n) for n in (fitted if fitted is not None else given or [])]
    if given is not None and fitted is not None and list(given) != names:
        raise InvalidInputError(f"{where}: feature_names differ from the names the model was fitted with")
    if len(names) != n_features:
        raise ModelFormatError(f"{where}: {len(names)} feature names for {n_features} model inputs")
    if len(set(names)) != len(names) or not all(names):
        raise ModelFormatError(f"{where}: feature names must be distinct and non-empty")
    return names


def _vector(obj: Any, attr: str, n: int, where: str) -> np.ndarray:
    value = getattr(obj, attr, None)
    if value is None:
        raise ModelFormatError(f"{where}: the {type(obj).__name__} is not fitted (no {attr})")
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.shape != (n,):
        raise ModelFormatError(f"{where}: {type(obj).__name__}.{attr} has {arr.size} entries for {n} inputs")
    if not np.all(np.isfinite(arr)):
        raise ModelFormatError(f"{where}: {type(obj).__name__}.{attr} is not finite")
    return arr


def _scaler_columns(
    scaler: Any, names: Sequence[str], weight: float, where: str
) -> tuple[list[_Input], list[_Column]]:
    """The scaler's output columns as ``a x + c`` (times a ColumnTransformer weight)."""
    n = len(names)
    inputs = [_Input(name) for name in names]
    if type(scaler) is StandardScaler:
        # (x - mean) / scale; with_mean / with_std False leave mean_ / scale_ unused (or None).
        mean = _vector(scaler, "mean_", n, where) if scaler.with_mean else np.zeros(n)
        scale = _vector(scaler, "scale_", n, where) if scaler.with_std else np.ones(n)
        if np.any(scale == 0):
            raise ModelFormatError(f"{where}: StandardScaler.scale_ has a zero")
        a = 1.0 / scale
        c = -mean / scale
    else:
        # x * scale_ + min_ is MinMaxScaler.transform whatever feature_range is: both are in them.
        a = _vector(scaler, "scale_", n, where)
        c = _vector(scaler, "min_", n, where)
        if scaler.clip:
            # Clipping to feature_range is not linear, but it never acts on an x inside the fitted
            # [data_min_, data_max_] (there x * scale_ + min_ already lies in feature_range, up to
            # float rounding). The platform refuses values outside a feature's declared range, so
            # declaring a range within [data_min_, data_max_] makes the linear fold exact on every
            # value it will ever score; see _numeric_features.
            lo = _vector(scaler, "data_min_", n, where)
            hi = _vector(scaler, "data_max_", n, where)
            inputs = [
                _Input(name, clip=(float(low), float(high)))
                for name, low, high in zip(names, lo, hi, strict=True)
            ]
    columns = [
        _Column(
            name,
            float(ai) * weight,
            float(ci) * weight,
            transform=_column_map(scaler, i) if weight == 1.0 else None,
        )
        for i, (name, ai, ci) in enumerate(zip(names, a, c, strict=True))
    ]
    return inputs, columns


def _column_map(scaler: Any, i: int) -> Callable[[np.ndarray], np.ndarray]:
    """Column ``i`` of the fitted scaler's own ``transform``, elementwise on finite float64 values
    (the other columns are zeros; the library's arithmetic, whatever its operation order)."""
    n = int(scaler.n_features_in_)

    def transform(x: np.ndarray) -> np.ndarray:
        m = np.zeros((x.size, n), dtype=np.float64)
        m[:, i] = x.reshape(-1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fitted with feature names, given an array; overflow
            return np.asarray(scaler.transform(m), dtype=np.float64)[:, i]

    return transform


def _encoder_columns(
    encoder: OneHotEncoder, names: Sequence[str], weight: float, where: str
) -> tuple[list[_Input], list[_Column]]:
    """One CategoricalFeature per encoder input; one indicator column per kept category."""
    if encoder.min_frequency is not None or encoder.max_categories is not None:
        raise ModelFormatError(
            f"{where}: OneHotEncoder with min_frequency or max_categories (infrequent-category "
            "grouping) is not supported; refit without them"
        )
    fitted = getattr(encoder, "categories_", None)
    if fitted is None or len(fitted) != len(names):
        raise ModelFormatError(f"{where}: the OneHotEncoder is not fitted for {len(names)} inputs")
    drop_idx = getattr(encoder, "drop_idx_", None)
    inputs: list[_Input] = []
    columns: list[_Column] = []
    for i, (name, cats) in enumerate(zip(names, fitted, strict=True)):
        values = list(np.asarray(cats, dtype=object).reshape(-1))
        if not all(isinstance(v, str) for v in values):
            shown = ", ".join(repr(v) for v in values[:5])
            raise ModelFormatError(
                f"{where}: OneHotEncoder input {name!r} has non-string categories ({shown}); blindscore's "
                "categorical features take strings: fit the encoder on string values (astype(str)), or "
                "feed the column as a number"
            )
        categories = tuple(str(v) for v in values)
        dropped = None if drop_idx is None else drop_idx[i]
        if dropped is not None and not 0 <= int(dropped) < len(categories):
            raise ModelFormatError(f"{where}: OneHotEncoder.drop_idx_ out of range for {name!r}")
        inputs.append(_Input(name, categories))
        columns.extend(
            _Column(name, weight, 0.0, category)
            for k, category in enumerate(categories)
            if dropped is None or k != int(dropped)
        )
    return inputs, columns


def _selected(spec: Any, names: Sequence[str], where: str) -> list[str]:
    """The input names a fitted ColumnTransformer column selection picks."""
    n = len(names)
    if isinstance(spec, slice):
        if not all(v is None or isinstance(v, int | np.integer) for v in (spec.start, spec.stop, spec.step)):
            raise ModelFormatError(f"{where}: ColumnTransformer column slices by name are not supported")
        return list(names)[spec]
    arr = np.asarray(spec, dtype=object if isinstance(spec, str) else None)
    if arr.ndim != 1:
        raise ModelFormatError(
            f"{where}: a ColumnTransformer column selection must be a list (a scalar passes a 1-D column)"
        )
    items = arr.tolist()
    if arr.dtype.kind == "b":
        if len(items) != n:
            raise ModelFormatError(f"{where}: a boolean column mask of {len(items)} for {n} inputs")
        return [name for name, keep in zip(names, items, strict=True) if keep]
    if all(isinstance(v, str) for v in items):
        missing = [v for v in items if v not in names]
        if missing:
            raise ModelFormatError(f"{where}: ColumnTransformer selects unknown column(s) {missing}")
        return [str(v) for v in items]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        if not all(-n <= v < n for v in items):
            raise ModelFormatError(f"{where}: ColumnTransformer selects a column index out of range")
        return [names[v] for v in items]
    raise ModelFormatError(f"{where}: unsupported ColumnTransformer column selection {items[:5]!r}")


def _column_transformer_columns(
    ct: ColumnTransformer, names: Sequence[str], where: str
) -> tuple[list[_Input], list[_Column], list[str]]:
    remainder = ct.remainder
    if not (isinstance(remainder, str) and remainder == "drop"):
        shown = remainder if isinstance(remainder, str) else type(remainder).__name__
        raise ModelFormatError(
            f"{where}: ColumnTransformer remainder must be 'drop' (got {shown!r}); name every column "
            "the model uses in a transformer"
        )
    fitted = getattr(ct, "transformers_", None)
    if fitted is None:
        raise ModelFormatError(f"{where}: the ColumnTransformer is not fitted")
    weights = dict(ct.transformer_weights or {})
    inputs: dict[str, _Input] = {}
    columns: list[_Column] = []
    kinds: list[str] = []
    for label, transformer, spec in fitted:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        selected = _selected(spec, names, where)
        if not selected:
            continue  # scikit-learn skips a transformer that selects no column
        identity = _is_passthrough(transformer) or (
            type(transformer) is FunctionTransformer and transformer.func is None
        )
        fills: dict[str, float] = {}
        nested: list[Any] = [transformer]
        if type(transformer) is Pipeline:
            # A nested pipeline: a SimpleImputer, a scaler, or a SimpleImputer then a scaler.
            nested = _steps(transformer)
            step_types = [type(step) for step in nested]
            if not (
                step_types
                in ([SimpleImputer], [SimpleImputer, StandardScaler], [SimpleImputer, MinMaxScaler])
                or (len(step_types) == 1 and step_types[0] in _SCALERS)
            ):
                shown = ", ".join(k.__name__ for k in step_types)
                raise UnsupportedModelError(
                    f"{where}: unsupported pipeline ({shown}) in ColumnTransformer transformer {label!r}",
                    "a SimpleImputer, a StandardScaler or MinMaxScaler, or a SimpleImputer then one of those",
                )
        if type(nested[0]) is SimpleImputer:
            fills = _imputer_fills(nested[0], _selected(spec, names, where), where)
            nested = nested[1:]
            transformer = nested[0] if nested else "passthrough"
            identity = not nested
        if not identity and type(transformer) not in (*_SCALERS, OneHotEncoder):
            kind = transformer if isinstance(transformer, str) else type(transformer).__name__
            raise UnsupportedModelError(
                f"{where}: unsupported ColumnTransformer transformer {label!r} ({kind})",
                "StandardScaler, MinMaxScaler, OneHotEncoder, SimpleImputer, a Pipeline of a SimpleImputer "
                "and a scaler, 'passthrough' and 'drop'",
            )
        own = getattr(transformer, "feature_names_in_", None)
        if own is not None and [str(x) for x in own] != selected:
            raise ModelFormatError(f"{where}: transformer {label!r} was fitted on other columns")
        weight = float(weights.get(label, 1.0))
        if not math.isfinite(weight):
            raise ModelFormatError(f"{where}: transformer weight of {label!r} is not finite")
        if identity:
            new_inputs = [_Input(name) for name in selected]
            new_columns = [_Column(name, weight) for name in selected]
            kinds.append("SimpleImputer" if fills else "passthrough")
        elif type(transformer) is OneHotEncoder:
            new_inputs, new_columns = _encoder_columns(transformer, selected, weight, where)
            kinds.append("OneHotEncoder")
        else:
            new_inputs, new_columns = _scaler_columns(transformer, selected, weight, where)
            kinds.append(("SimpleImputer+" if fills else "") + type(transformer).__name__)
        new_inputs = _imputed(new_inputs, fills)
        for item in new_inputs:
            if item.name in inputs:
                raise ModelFormatError(
                    f"{where}: column {item.name!r} feeds more than one ColumnTransformer transformer; "
                    "blindscore needs each input in exactly one"
                )
            inputs[item.name] = item
        columns.extend(new_columns)
    ordered = [inputs[name] for name in names if name in inputs]
    return ordered, columns, kinds


def _plan(obj: Any, pres: Sequence[Any], estimator: Any, given: Sequence[str] | None, where: str) -> _Plan:
    first = pres[0] if pres else estimator
    n_in = getattr(first, "n_features_in_", None)
    if not isinstance(n_in, int | np.integer):
        raise ModelFormatError(f"{where}: the model is not fitted")
    names = _feature_names(obj, int(n_in), given, where)
    unseen_ignored = False
    steps = type(estimator).__name__
    fills: dict[str, float] = {}
    if pres and type(pres[0]) is SimpleImputer:
        fills = _imputer_fills(pres[0], names, where)
        steps = f"SimpleImputer -> {steps}" if len(pres) == 1 else steps
        pres = pres[1:]
    pre = pres[0] if pres else None
    if pre is None:
        inputs, columns = [_Input(name) for name in names], [_Column(name, 1.0) for name in names]
    elif type(pre) is ColumnTransformer:
        inputs, columns, kinds = _column_transformer_columns(pre, names, where)
        if not inputs:
            raise ModelFormatError(f"{where}: the ColumnTransformer drops every column")
        steps = f"ColumnTransformer({', '.join(kinds)}) -> {steps}"
        encoders = [t for _, t, _ in pre.transformers_ if type(t) is OneHotEncoder]
        unseen_ignored = any(e.handle_unknown != "error" for e in encoders)
    elif type(pre) is OneHotEncoder:
        inputs, columns = _encoder_columns(pre, names, 1.0, where)
        steps = f"OneHotEncoder -> {steps}"
        unseen_ignored = pre.handle_unknown != "error"
    else:
        inputs, columns = _scaler_columns(pre, names, 1.0, where)
        steps = f"{'SimpleImputer -> ' if fills else ''}{type(pre).__name__} -> {steps}"
    inputs = _imputed(inputs, fills)
    return _Plan(tuple(names), tuple(inputs), tuple(columns), steps, unseen_ignored)


# ---------------------------------------------------------------------------------------------
# The estimator


def _estimator_form(estimator: Any, where: str) -> tuple[np.ndarray, float, Output]:
    """The estimator's weights, intercept and the output its cutoffs apply to."""
    kind = type(estimator).__name__
    if not hasattr(estimator, "coef_"):
        raise ModelFormatError(f"{where}: the estimator is not fitted")
    if type(estimator) in _CLASSIFIERS:
        n_classes = len(getattr(estimator, "classes_", ()))
        if n_classes != 2:
            raise ModelFormatError(
                f"{where}: only binary classifiers are supported; this {kind} has {n_classes} classes"
            )
    if type(estimator) is SGDClassifier and estimator.loss not in _SGD_CLASSIFIER_LOSS_NAMES:
        raise UnsupportedModelError(
            f"{where}: an SGDClassifier with the regression loss {estimator.loss!r} is not supported",
            f"SGDClassifier losses {', '.join(_SGD_CLASSIFIER_LOSS_NAMES)}",
        )
    coef = np.asarray(estimator.coef_, dtype=np.float64)
    intercept = np.asarray(estimator.intercept_, dtype=np.float64).reshape(-1)
    if (coef.ndim == 2 and coef.shape[0] != 1) or coef.ndim > 2 or intercept.size > 1:
        raise ModelFormatError(
            f"{where}: only single-output models are supported; this {kind} has coef_ of shape "
            f"{coef.shape} (multi-output regression)"
        )
    w = coef.reshape(-1)
    b = float(intercept[0]) if intercept.size else 0.0
    if not (np.all(np.isfinite(w)) and math.isfinite(b)):
        raise ModelFormatError(f"{where}: weights are not finite")
    output: Output
    if type(estimator) is LogisticRegression or (
        type(estimator) is SGDClassifier and estimator.loss == "log_loss"
    ):
        output = "predict_proba"
    elif type(estimator) in _CLASSIFIERS:
        output = "decision_function"
    else:
        output = "predict"
    return w, b, output


def _fold(plan: _Plan, w: np.ndarray, b: float, where: str) -> tuple[list[float], float]:
    """Weights on the encoded columns of the platform features, and the intercept."""
    if len(plan.columns) != w.size:
        raise ModelFormatError(
            f"{where}: the preprocessing yields {len(plan.columns)} columns, the estimator takes {w.size}"
        )
    slots: dict[tuple[str, str | None], int] = {}
    for item in plan.inputs:
        for category in item.categories if item.categories is not None else (None,):
            slots[(item.name, category)] = len(slots)
    coef = [0.0] * len(slots)
    terms = [b]
    for column, wj in zip(plan.columns, w, strict=True):
        # A dropped category has no column: its weight stays 0.
        coef[slots[(column.feature, column.category)]] += float(wj) * column.a
        terms.append(float(wj) * column.c)
    intercept = math.fsum(terms)
    if not (all(math.isfinite(x) for x in coef) and math.isfinite(intercept)):
        raise ModelFormatError(f"{where}: folded weights are not finite")
    return coef, intercept


def _numeric_features(
    plan: _Plan,
    coef: Sequence[float],
    feature_ranges: Mapping[str, tuple[float, float] | NumericFeature] | None,
    frac_bits: int | None,
    precision: float,
    where: str,
) -> dict[str, NumericFeature]:
    numeric = [item for item in plan.inputs if item.categories is None]
    categorical = {item.name for item in plan.inputs if item.categories is not None}
    weight: dict[str, float] = {}
    position = 0
    for item in plan.inputs:
        if item.categories is None:
            weight[item.name] = coef[position]
        position += len(item.categories) if item.categories is not None else 1
    ranges = dict(feature_ranges or {})
    named_categorical = sorted(set(ranges) & categorical)
    if named_categorical:
        raise InvalidInputError(
            f"{where}: feature_ranges names categorical feature(s) {named_categorical}; their "
            "categories come from the OneHotEncoder"
        )
    unknown = sorted(set(ranges) - set(weight))
    if unknown:
        raise InvalidInputError(f"{where}: feature_ranges names unknown feature(s) {unknown}")
    explicit: dict[str, NumericFeature] = {}
    declared: dict[str, tuple[float, float]] = {}
    for name, entry in ranges.items():
        if isinstance(entry, NumericFeature):
            if entry.name != name:
                raise InvalidInputError(f"feature_ranges[{name!r}] describes feature {entry.name!r}")
            explicit[name] = entry
            declared[name] = (entry.lo, entry.hi)
        elif isinstance(entry, Sequence) and not isinstance(entry, str) and len(entry) == 2:
            declared[name] = (entry[0], entry[1])
        else:
            raise InvalidInputError(f"feature_ranges[{name!r}] must be (lo, hi) or a NumericFeature")
    for item in numeric:
        if item.clip is None:
            continue
        lo, hi = item.clip
        if item.name not in declared:
            declared[item.name] = item.clip
            continue
        try:
            inside = lo <= float(declared[item.name][0]) <= float(declared[item.name][1]) <= hi
        except (TypeError, ValueError):
            raise InvalidInputError(f"feature_ranges[{item.name!r}] must hold two numbers") from None
        if not inside:
            raise InvalidInputError(
                f"{where}: MinMaxScaler(clip=True) clips {item.name!r} outside its fitted range "
                f"[{lo!r}, {hi!r}], which a linear score cannot do; declare a range within it, or "
                "refit with clip=False"
            )
    if frac_bits is None:
        used = sum(abs(weight[n]) * f.codec.max_error for n, f in explicit.items())
        shared = sum(abs(wi) for n, wi in weight.items() if n not in explicit)
        budget = (precision - used) / 2
        frac_bits = 0
        while budget > 0 and shared * math.ldexp(1.0, -(frac_bits + 1)) > budget and frac_bits < 200:
            frac_bits += 1
    features: dict[str, NumericFeature] = {}
    for item in numeric:
        if item.name in explicit:
            given = explicit[item.name]
            features[item.name] = (
                given if item.impute is None else dataclasses.replace(given, impute=item.impute)
            )
        else:
            lo, hi = declared.get(item.name, DEFAULT_RANGE)
            features[item.name] = NumericFeature(item.name, lo, hi, frac_bits, impute=item.impute)
    return features


# ---------------------------------------------------------------------------------------------
# Checking the result against scikit-learn


def _probe_rows(plan: _Plan) -> list[dict[str, Any]]:
    """Rows that pin down an affine function of the features: a base row, every numeric feature
    moved alone, all of them moved twice, every category of every categorical feature; and every
    imputed feature missing, alone and all at once."""

    def values(item: _Input) -> tuple[float, float, float]:
        if item.clip is not None:  # clipping would act outside the fitted range
            lo, hi = item.clip
            return lo, hi, lo / 2 + hi / 2
        return 0.0, 1.0, -1.0

    numeric = [item for item in plan.inputs if item.categories is None]
    base: dict[str, Any] = {
        item.name: values(item)[0] if item.categories is None else item.categories[0] for item in plan.inputs
    }
    rows = [base]
    rows.extend({**base, item.name: values(item)[1]} for item in numeric)
    for pick in (1, 2):
        rows.append({**base, **{item.name: values(item)[pick] for item in numeric}})
    for item in plan.inputs:
        rows.extend({**base, item.name: c} for c in (item.categories or ())[1:])
    imputed = [item.name for item in numeric if item.impute is not None]
    rows.extend({**base, name: math.nan} for name in imputed)
    if len(imputed) > 1:
        rows.append({**base, **dict.fromkeys(imputed, math.nan)})
    return rows


def _filled(item: _Input | NumericFeature, value: Any) -> float:
    """A probe value as the imputer leaves it."""
    x = float(value)
    return item.impute if math.isnan(x) and item.impute is not None else x


def _sklearn_input(obj: Any, plan: _Plan, rows: Sequence[Mapping[str, Any]]) -> Any:
    """The probe rows as scikit-learn's input: a DataFrame if the model was fitted on one."""
    # Columns the model ignores (a ColumnTransformer's "drop") still have to be present.
    table = {name: [row.get(name, 0.0) for row in rows] for name in plan.sklearn_inputs}
    categorical = {item.name for item in plan.inputs if item.categories is not None}
    if getattr(obj, "feature_names_in_", None) is not None:
        try:
            import pandas as pd
        except ImportError:  # a numeric model still runs on an array
            pass
        else:
            return pd.DataFrame(
                {
                    name: pd.Series(col, dtype=object if name in categorical else np.float64)
                    for name, col in table.items()
                }
            )
    dtype = object if categorical else np.float64
    return np.array([table[name] for name in plan.sklearn_inputs], dtype=dtype).T.reshape(
        len(rows), len(plan.sklearn_inputs)
    )


def _probe(
    obj: Any, plan: _Plan, model: LinearModel, w: np.ndarray, b: float, output: Output, where: str
) -> None:
    """Check the imported model against scikit-learn itself on probe rows.

    It evaluates the LinearModel's weights through its feature spec (one-hot columns and all, but
    without the declared-range check, as probe values need not lie in the declared ranges) and
    compares with ``decision_function`` (and that ``predict_proba[:, 1]`` is its sigmoid) or
    ``predict``. It catches any fitted configuration whose output is not that plain linear form,
    and any slip in mapping columns to features, whatever the scikit-learn version.
    """
    rows = _probe_rows(plan)
    ours = []
    for row in rows:
        x: list[float] = []
        for feature in model.spec.features:
            if isinstance(feature, NumericFeature):
                x.append(_filled(feature, row[feature.name]))
            else:
                x.extend(feature.transform(row[feature.name]))
        ours.append(math.fsum([wi * xi for wi, xi in zip(model.coef, x, strict=True)] + [model.intercept]))
    # Rounding in scikit-learn's evaluation and in the fold grows with the terms it adds up.
    magnitude = []
    by_name = {item.name: item for item in plan.inputs}
    for row in rows:
        total = 1.0 + abs(b)
        for column, wj in zip(plan.columns, w, strict=True):
            value = row[column.feature]
            x_j = (
                float(value == column.category)
                if column.category is not None
                else abs(_filled(by_name[column.feature], value))
            )
            total += abs(float(wj)) * (abs(column.a) * x_j + abs(column.c))
        magnitude.append(total)
    data = _sklearn_input(obj, plan, rows)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        try:
            if output == "predict":
                theirs = np.asarray(obj.predict(data), dtype=np.float64).reshape(-1)
                link_ok = True
            else:
                theirs = np.asarray(obj.decision_function(data), dtype=np.float64).reshape(-1)
                link_ok = True
                if output == "predict_proba":
                    proba = np.asarray(obj.predict_proba(data), dtype=np.float64)[:, 1]
                    link_ok = bool(np.allclose(proba, [sigmoid(z) for z in theirs], rtol=0, atol=1e-12))
        except Exception as exc:  # scikit-learn's own errors on a configuration we do not handle
            raise ModelFormatError(
                f"{where}: scikit-learn could not evaluate the model on probe rows ({exc})"
            ) from exc
    gap = np.abs(np.asarray(ours) - theirs)
    if not (link_ok and theirs.shape == gap.shape and np.all(gap <= 1e-9 * np.asarray(magnitude))):
        raise ModelFormatError(
            f"{where}: the estimator's output is not the plain linear form blindscore evaluates "
            "(e.g. a multinomial binary logistic regression); refit with the defaults"
        )


def load_sklearn_model(
    path: str | Path,
    cutoffs: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    feature_ranges: Mapping[str, tuple[float, float] | NumericFeature] | None = None,
    *,
    feature_names: Sequence[str] | None = None,
    frac_bits: int | None = None,
    precision: float = 1e-9,
    name: str | None = None,
) -> LinearModel:
    """Load a skops file holding a supported linear model and return the equivalent LinearModel.

    Cutoffs apply to the output the model is banded on: ``predict_proba[:, 1]`` (the
    probability of ``classes_[1]``; link logit) for LogisticRegression and log-loss
    SGDClassifier, default ``(0.5,)``; ``decision_function`` (link identity) for the other
    classifiers, default ``(0.0,)``, the sign scikit-learn's ``predict`` uses; ``predict``
    (link identity) for regressors, where they are required. ``feature_ranges`` maps a numeric
    feature name to its declared ``(lo, hi)`` or to a complete :class:`NumericFeature`; other
    numeric features get :data:`DEFAULT_RANGE` (the fitted range behind
    ``MinMaxScaler(clip=True)``). Raises :class:`ModelFormatError` for unsupported or unsafe
    files, listing what is supported.
    """
    path = Path(path)
    where = str(path)
    obj = _load_vetted(path)
    pre, estimator = _split(obj, where)
    if type(estimator) not in _ESTIMATORS:
        raise UnsupportedModelError(
            f"{where}: a {type(estimator).__name__} is not a linear model",
            "linear models here; load_sklearn_file reads tree models and MLPs too",
        )
    return _linear(
        obj, pre, estimator, path, cutoffs, labels, feature_ranges, feature_names, frac_bits, precision, name
    )


def _linear(
    obj: Any,
    pre: Sequence[Any],
    estimator: Any,
    path: Path,
    cutoffs: Sequence[float] | None,
    labels: Sequence[str] | None,
    feature_ranges: Mapping[str, tuple[float, float] | NumericFeature] | None,
    feature_names: Sequence[str] | None,
    frac_bits: int | None,
    precision: float,
    name: str | None,
) -> LinearModel:
    where = str(path)
    w, b, output = _estimator_form(estimator, where)
    plan = _plan(obj, pre, estimator, feature_names, where)
    coef, intercept = _fold(plan, w, b, where)
    numeric = _numeric_features(plan, coef, feature_ranges, frac_bits, precision, where)
    features: list[Feature] = [
        numeric[item.name] if item.categories is None else CategoricalFeature(item.name, item.categories)
        for item in plan.inputs
    ]
    logistic = output == "predict_proba"
    if cutoffs is None:
        if output == "predict":
            raise InvalidInputError(f"{where}: a regression model needs cutoffs on its predictions")
        cutoffs = (0.5,) if logistic else (0.0,)
    policy = BandPolicy(tuple(cutoffs), tuple(labels or ()), "probability" if logistic else "raw")
    metadata: dict[str, Any] = {
        "source": f"scikit-learn model from a skops file ({path.name})",
        "estimator": plan.steps,
        "output": "predict_proba[:, 1]" if logistic else output,
    }
    if type(estimator) in _CLASSIFIERS:
        metadata["positive_class"] = str(estimator.classes_[1])
    if plan.unseen_ignored:
        metadata["unseen_categories"] = (
            "refused by the platform; the OneHotEncoder (handle_unknown != 'error') would score them "
            "as all-zero indicators"
        )
    imputed = [item.name for item in plan.inputs if item.impute is not None]
    if imputed:
        metadata["imputed"] = "SimpleImputer: the platform fills a missing value of " + ", ".join(imputed)
    clipped = [item.name for item in plan.inputs if item.clip is not None]
    if clipped:
        metadata["minmax_clip"] = (
            "declared ranges within the MinMaxScaler's fitted range, where clipping never acts: "
            + ", ".join(clipped)
        )
    model = LinearModel(
        name or path.stem,
        FeatureSpec(tuple(features)),
        coef,
        intercept,
        "logit" if logistic else "identity",
        policy,
        precision,
        metadata=metadata,
    )
    _probe(obj, plan, model, w, b, output, where)
    return model


# ---------------------------------------------------------------------------------------------
# Tree models and MLPs


def _is_classifier(estimator: Any) -> bool:
    return type(estimator).__name__.endswith("Classifier")


def _policy(
    estimator: Any, cutoffs: Sequence[float] | None, labels: Sequence[str] | None, where: str
) -> BandPolicy:
    """Bands on ``predict_proba[:, 1]`` for a classifier (default one cutoff at 0.5), on
    ``predict`` for a regressor (cutoffs required)."""
    classifier = _is_classifier(estimator)
    if cutoffs is None:
        if not classifier:
            raise InvalidInputError(f"{where}: a regression model needs cutoffs on its predictions")
        cutoffs = (0.5,)
    return BandPolicy(tuple(cutoffs), tuple(labels or ()), "probability" if classifier else "raw")


def _tree_model(
    plan: _Plan,
    estimator: Any,
    policy: BandPolicy,
    feature_ranges: Mapping[str, Any] | None,
    precision: float,
    name: str,
    where: str,
) -> PrivateModel:
    kind = type(estimator).__name__
    if feature_ranges:
        raise InvalidInputError(
            f"{where}: a {kind} takes no declared feature ranges, since its features are encoded exactly "
            "whatever their value; drop them"
        )
    if any(
        c.category is not None or (c.transform is None and (c.a != 1.0 or c.c != 0.0)) for c in plan.columns
    ):
        raise UnsupportedModelError(
            f"{where}: a {kind} after a OneHotEncoder or a weighted transformer is not supported",
            "SimpleImputer, StandardScaler, MinMaxScaler, 'passthrough' and 'drop' before a tree model",
        )
    if any(c.transform is not None and not c.a >= 0.0 for c in plan.columns):
        raise UnsupportedModelError(
            f"{where}: a scaler with a negative scale (a decreasing map) before a {kind} is not supported",
            "StandardScaler and MinMaxScaler as scikit-learn fits them, with a positive scale",
        )
    transforms = {j: c.transform for j, c in enumerate(plan.columns) if c.transform is not None}
    by_name = {item.name: item for item in plan.inputs}
    fill = {
        j: float(by_name[c.feature].impute or 0.0)
        for j, c in enumerate(plan.columns)
        if by_name[c.feature].impute is not None
    }
    try:
        model = ensemble_from_sklearn(
            estimator,
            policy=policy,
            name=name,
            precision=precision,
            feature_names=[c.feature for c in plan.columns],
            fill=fill,
            transforms=transforms,
        )
    except ModelFormatError as exc:
        raise UnsupportedModelError(f"{where}: {exc}", None) from None
    model.metadata["estimator"] = plan.steps
    return model


def _mlp_ranges(
    plan: _Plan, feature_ranges: Mapping[str, Any] | None, kind: str, where: str
) -> dict[str, tuple[float, float]]:
    """Every input's declared range: given, else the fitted range behind MinMaxScaler(clip=True)."""
    names = [item.name for item in plan.inputs]
    ranges: dict[str, tuple[float, float]] = {}
    for feature, entry in (feature_ranges or {}).items():
        if feature not in plan.sklearn_inputs:
            raise InvalidInputError(f"{where}: feature_ranges names unknown feature {feature!r}")
        if feature not in names:
            continue  # a column the model drops
        lo, hi = (entry.lo, entry.hi) if isinstance(entry, NumericFeature) else entry
        ranges[feature] = (float(lo), float(hi))
    for item in plan.inputs:
        if item.clip is None:
            continue
        if item.name not in ranges:
            ranges[item.name] = item.clip
        elif not item.clip[0] <= ranges[item.name][0] <= ranges[item.name][1] <= item.clip[1]:
            raise InvalidInputError(
                f"{where}: MinMaxScaler(clip=True) clips {item.name!r} outside its fitted range "
                f"[{item.clip[0]!r}, {item.clip[1]!r}]; declare a range within it, or refit with clip=False"
            )
    absent = [n for n in names if n not in ranges]
    if absent:
        more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
        raise InvalidInputError(
            f"{where}: the {kind} needs a declared range for feature {absent[0]!r}{more}: pass "
            f"--feature-range {absent[0]}=LO:HI (feature_ranges from Python)"
        )
    return ranges


def _mlp_model(
    plan: _Plan,
    estimator: Any,
    policy: BandPolicy,
    feature_ranges: Mapping[str, Any] | None,
    precision: float,
    name: str,
    where: str,
) -> PrivateModel:
    kind = type(estimator).__name__
    if any(item.categories is not None for item in plan.inputs):
        raise UnsupportedModelError(
            f"{where}: a OneHotEncoder before an {kind} is not supported",
            "SimpleImputer, StandardScaler, MinMaxScaler, 'passthrough' and 'drop' before an MLP",
        )
    try:
        check_mlp(estimator)  # what cannot be converted is refused before ranges are asked for
    except ModelFormatError as exc:
        raise UnsupportedModelError(f"{where}: {exc}", None) from None
    ranges = _mlp_ranges(plan, feature_ranges, kind, where)
    columns = [(c.feature, c.a, c.c) for c in plan.columns]
    names = [item.name for item in plan.inputs]
    try:
        if not hasattr(estimator, "coefs_") or len(estimator.coefs_[0]) != len(columns):
            raise ModelFormatError(f"the {kind} is not fitted on the {len(columns)} preprocessed columns")
        model = mlp_from_sklearn(
            estimator,
            ranges=ranges,
            policy=policy,
            feature_names=names,
            frac_bits=frac_bits_for(estimator, columns, names, precision),
            precision=precision,
            name=name,
            columns=columns,
            impute={item.name: item.impute for item in plan.inputs if item.impute is not None},
        )
    except ModelFormatError as exc:
        raise UnsupportedModelError(f"{where}: {exc}", None) from None
    model.metadata["estimator"] = plan.steps
    return model


#: The default error bound per family: linear (probability or raw units), trees (margin), MLPs.
DEFAULT_PRECISION = {"linear": 1e-9, "trees": 1e-6, "mlp": MLP_PRECISION}


def load_sklearn_file(
    path: str | Path,
    cutoffs: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    feature_ranges: Mapping[str, tuple[float, float] | NumericFeature] | None = None,
    *,
    feature_names: Sequence[str] | None = None,
    precision: float | None = None,
    name: str | None = None,
) -> PrivateModel:
    """Load a skops file of any supported family: a :class:`LinearModel` (as
    :func:`load_sklearn_model`), a :class:`~blindscore.models.trees.TreeEnsemble` or an
    :class:`~blindscore.models.mlp.MLPModel`.

    Cutoffs apply to ``predict_proba[:, 1]`` for a classifier (default ``(0.5,)``) and to
    ``predict`` for a regressor (required); a linear classifier without probabilities is banded
    on ``decision_function``. ``feature_ranges`` declares numeric features' ranges: optional for a
    linear model, required for every input of an MLP (except behind ``MinMaxScaler(clip=True)``,
    whose fitted range is the default), refused for a tree model, whose encoding needs none.
    ``precision`` defaults per family (:data:`DEFAULT_PRECISION`).
    """
    path = Path(path)
    where = str(path)
    obj = _load_vetted(path)
    pre, estimator = _split(obj, where)
    label = name or path.stem
    if type(estimator) in _ESTIMATORS:
        linear_precision = DEFAULT_PRECISION["linear"] if precision is None else precision
        return _linear(
            obj,
            pre,
            estimator,
            path,
            cutoffs,
            labels,
            feature_ranges,
            feature_names,
            None,
            linear_precision,
            name,
        )
    plan = _plan(obj, pre, estimator, feature_names, where)
    policy = _policy(estimator, cutoffs, labels, where)
    if type(estimator) in _TREES:
        tree_precision = DEFAULT_PRECISION["trees"] if precision is None else precision
        return _tree_model(plan, estimator, policy, feature_ranges, tree_precision, label, where)
    mlp_precision = DEFAULT_PRECISION["mlp"] if precision is None else precision
    return _mlp_model(plan, estimator, policy, feature_ranges, mlp_precision, label, where)
