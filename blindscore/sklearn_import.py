"""Import a linear scikit-learn model from a skops file, without pickle, as a LinearModel.

Supported: binary ``LogisticRegression``, ``LinearRegression`` and ``Ridge``, each alone or as
the last step of a ``Pipeline`` whose first step is a ``StandardScaler`` (the scaler is folded
into the weights and the intercept). The file is vetted before anything in it is constructed:
every type named anywhere in its schema, and every type skops itself does not trust, must be on
a short allow-list; only then is it loaded by ``skops.io.loads`` with exactly those types trusted.

Declared ranges. Each input becomes a :class:`NumericFeature`. Without ``feature_ranges`` a
feature is declared to lie in [-1e6, 1e6] (:data:`DEFAULT_RANGE`). Its fractional bits f are
shared by every feature given no explicit encoding: the smallest f for which the feature
rounding error, ``sum_i |w_i| 2^-(f+1)``, is at most half of ``precision``; the other half goes
to rounding the weights (which fixes the score scale S) and to truncating the score for the band
comparison (see :class:`~blindscore.model.LinearModel`). Because f grows with log2(sum |w_i|),
the public spec reveals that one coarse number about the weights; pass ``frac_bits`` (or
NumericFeature entries in ``feature_ranges``) to fix it independently of them. Wide ranges and a
fine precision cost comparison bits: narrow ranges that fit the data make comparisons cheaper.
"""

from __future__ import annotations

import io
import json
import math
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import skops.io as sio
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from blindscore.errors import InvalidInputError, ModelFormatError
from blindscore.model import BandPolicy, FeatureSpec, LinearModel, NumericFeature, sigmoid

__all__ = ["ALLOWED_TYPES", "DEFAULT_RANGE", "SUPPORTED_MODELS", "load_sklearn_model"]

DEFAULT_RANGE: tuple[float, float] = (-1e6, 1e6)
#: A linear model's file is a few kilobytes; this only stops a hostile file from exhausting memory.
MAX_FILE_BYTES = 64 << 20
SUPPORTED_MODELS = (
    "LogisticRegression (binary)",
    "LinearRegression",
    "Ridge",
    "Pipeline(StandardScaler, one of those)",
)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


_ESTIMATORS: tuple[type, ...] = (LogisticRegression, LinearRegression, Ridge)
#: Every type a supported file may name: the estimators and the plain containers skops uses.
ALLOWED_TYPES: frozenset[str] = frozenset(
    {_qualname(t) for t in (*_ESTIMATORS, Pipeline, StandardScaler)}
    | {f"builtins.{t}" for t in ("dict", "list", "tuple", "str", "int", "float", "bool", "NoneType")}
    | {
        f"numpy.{t}"
        for t in ("ndarray", "float64", "float32", "int64", "int32", "bool_", "str_", "intc", "longlong")
    }
)
#: skops node kinds that only rebuild data or allow-listed objects (no function calls, no reduce).
_ALLOWED_LOADERS = frozenset(
    {"ObjectNode", "DictNode", "ListNode", "TupleNode", "JsonNode", "TypeNode", "NdArrayNode"}
)


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


def _refusal(where: str, offending: Sequence[str]) -> ModelFormatError:
    return ModelFormatError(
        f"{where}: refusing to load a model that contains unsupported types: {', '.join(offending)}. "
        f"Supported models: {'; '.join(SUPPORTED_MODELS)}. "
        f"Allowed types: {', '.join(sorted(ALLOWED_TYPES))}"
    )


def _load_vetted(path: Path) -> Any:
    where = str(path)
    with open(path, "rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
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
# Turning the estimator into weights


def _unwrap(obj: Any, where: str) -> tuple[StandardScaler | None, Any]:
    if type(obj) is Pipeline:
        steps = [step for _, step in obj.steps]
        if len(steps) == 1 and type(steps[0]) in _ESTIMATORS:
            return None, steps[0]
        if len(steps) == 2 and type(steps[0]) is StandardScaler and type(steps[1]) in _ESTIMATORS:
            return steps[0], steps[1]
        kinds = ", ".join(type(s).__name__ for s in steps)
        raise ModelFormatError(
            f"{where}: unsupported pipeline ({kinds}); supported: {'; '.join(SUPPORTED_MODELS)}"
        )
    if type(obj) in _ESTIMATORS:
        return None, obj
    raise _refusal(where, [_qualname(type(obj))])


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


def _weights(estimator: Any, scaler: StandardScaler | None, where: str) -> tuple[np.ndarray, float]:
    """Weights and intercept on the raw inputs, the scaler folded in."""
    if not hasattr(estimator, "coef_"):
        raise ModelFormatError(f"{where}: the estimator is not fitted")
    coef = np.asarray(estimator.coef_, dtype=np.float64)
    intercept = np.asarray(estimator.intercept_, dtype=np.float64).reshape(-1)
    if (coef.ndim == 2 and coef.shape[0] != 1) or coef.ndim > 2 or intercept.size > 1:
        raise ModelFormatError(f"{where}: only single-output models are supported (coef_ {coef.shape})")
    w = coef.reshape(-1)
    b = float(intercept[0]) if intercept.size else 0.0
    if scaler is not None:
        mean = np.asarray(scaler.mean_, dtype=np.float64) if scaler.with_mean else np.zeros_like(w)
        scale = np.asarray(scaler.scale_, dtype=np.float64) if scaler.with_std else np.ones_like(w)
        if mean.shape != w.shape or scale.shape != w.shape:
            raise ModelFormatError(f"{where}: the scaler and the estimator disagree on the number of inputs")
        w = w / scale
        b = b - float(np.dot(w, mean))
    if not (np.all(np.isfinite(w)) and math.isfinite(b)):
        raise ModelFormatError(f"{where}: weights are not finite")
    return w, b


def _probe(model: Any, w: np.ndarray, b: float, logistic: bool, scaler: Any, where: str) -> None:
    """Check our folded weights against the estimator itself on a few points.

    It catches any fitted configuration whose output is not ``sigmoid(w.x + b)`` (or ``w.x + b``),
    whatever the scikit-learn version.
    """
    n = w.size
    probe = np.vstack([np.zeros(n), np.eye(n), np.ones(n), -np.ones(n)])
    ours = probe @ w + b
    mean = np.abs(np.asarray(scaler.mean_)) if scaler is not None and scaler.with_mean else 0.0
    magnitude = 1.0 + np.abs(probe) @ np.abs(w) + float(np.sum(np.abs(w) * mean)) + abs(b)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        if logistic:
            theirs = np.asarray(model.decision_function(probe), dtype=np.float64).reshape(-1)
            proba = np.asarray(model.predict_proba(probe), dtype=np.float64)[:, 1]
            link_ok = np.allclose(proba, [sigmoid(z) for z in theirs], rtol=0, atol=1e-12)
        else:
            theirs = np.asarray(model.predict(probe), dtype=np.float64).reshape(-1)
            link_ok = True
    if not (link_ok and np.all(np.abs(ours - theirs) <= 1e-9 * magnitude)):
        raise ModelFormatError(
            f"{where}: the estimator's output is not the plain linear form blindscore evaluates "
            "(e.g. a multinomial binary logistic regression); refit with the defaults"
        )


def _features(
    names: Sequence[str],
    w: np.ndarray,
    feature_ranges: Mapping[str, tuple[float, float] | NumericFeature] | None,
    frac_bits: int | None,
    precision: float,
    where: str,
) -> list[NumericFeature]:
    ranges = dict(feature_ranges or {})
    unknown = sorted(set(ranges) - set(names))
    if unknown:
        raise InvalidInputError(f"{where}: feature_ranges names unknown feature(s) {unknown}")
    explicit: dict[str, NumericFeature] = {}
    for name, entry in ranges.items():
        if isinstance(entry, NumericFeature):
            if entry.name != name:
                raise InvalidInputError(f"feature_ranges[{name!r}] describes feature {entry.name!r}")
            explicit[name] = entry
        elif not (isinstance(entry, Sequence) and len(entry) == 2):
            raise InvalidInputError(f"feature_ranges[{name!r}] must be (lo, hi) or a NumericFeature")
    if frac_bits is None:
        used = sum(
            abs(float(wi)) * explicit[n].codec.max_error
            for n, wi in zip(names, w, strict=True)
            if n in explicit
        )
        shared = sum(abs(float(wi)) for n, wi in zip(names, w, strict=True) if n not in explicit)
        budget = (precision - used) / 2
        frac_bits = 0
        while budget > 0 and shared * math.ldexp(1.0, -(frac_bits + 1)) > budget and frac_bits < 200:
            frac_bits += 1
    features = []
    for name in names:
        entry = ranges.get(name, DEFAULT_RANGE)
        if isinstance(entry, NumericFeature):
            features.append(entry)
        else:
            lo, hi = entry
            features.append(NumericFeature(name, lo, hi, frac_bits))
    return features


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

    Classifier cutoffs are on ``predict_proba[:, 1]`` (the probability of ``classes_[1]``; link
    logit) and default to ``(0.5,)``; regressor cutoffs are on ``predict`` (link identity) and are
    required. ``feature_ranges`` maps a feature name to its declared ``(lo, hi)`` or to a complete
    :class:`NumericFeature`; other features get :data:`DEFAULT_RANGE`. Raises
    :class:`ModelFormatError` for unsupported or unsafe files, listing what is supported.
    """
    path = Path(path)
    where = str(path)
    obj = _load_vetted(path)
    scaler, estimator = _unwrap(obj, where)
    logistic = type(estimator) is LogisticRegression
    if logistic and len(getattr(estimator, "classes_", ())) != 2:
        raise ModelFormatError(f"{where}: only binary LogisticRegression is supported")
    w, b = _weights(estimator, scaler, where)
    names = _feature_names(obj, w.size, feature_names, where)
    _probe(obj, w, b, logistic, scaler, where)

    if cutoffs is None:
        if not logistic:
            raise InvalidInputError(f"{where}: a regression model needs cutoffs on its predictions")
        cutoffs = (0.5,)
    output: Literal["probability", "raw"] = "probability" if logistic else "raw"
    policy = BandPolicy(tuple(cutoffs), tuple(labels or ()), output)
    spec = FeatureSpec(tuple(_features(names, w, feature_ranges, frac_bits, precision, where)))
    steps = [type(s).__name__ for s in ([scaler] if scaler is not None else []) + [estimator]]
    metadata: dict[str, Any] = {
        "source": f"scikit-learn model from a skops file ({path.name})",
        "estimator": " -> ".join(steps),
    }
    if logistic:
        metadata["positive_class"] = str(estimator.classes_[1])
    return LinearModel(
        name or path.stem,
        spec,
        [float(x) for x in w],
        b,
        "logit" if logistic else "identity",
        policy,
        precision,
        metadata=metadata,
    )
