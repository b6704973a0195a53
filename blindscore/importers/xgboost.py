"""Import an XGBoost ``Booster.save_model`` file (JSON or UBJSON) as a TreeEnsemble, without xgboost.

Supported: ``gbtree`` boosters with objective ``binary:logistic`` (link logit, bands on the
probability or the margin) or ``reg:squarederror`` (link identity), numeric splits, any number
of trees (``num_parallel_tree`` included: every tree adds to the margin). Refused, each with one
sentence: multi-class and multi-target models, other objectives, categorical splits, ``gblinear``
and ``dart`` boosters.

Semantics reproduced (XGBoost's ``predict(output_margin=True)``): a feature value is cast to
float32 and goes left iff ``x < t``; a missing value (NaN) goes the node's default direction.
Thresholds and leaf values are float32 in the file (UBJSON stores them as float32, JSON prints them
so that they read back to the same float32) and are cast to float32 here. The base score in
``learner_model_param`` is in the objective's output space (a probability for
``binary:logistic``, in XGBoost 1.x and >= 2 alike); the margin starts at its logit, computed in
float32 like XGBoost's ``ProbToMargin``. XGBoost >= 3 writes it as a one-element list ``"[5E-1]"``.
The DMatrix ``missing`` value is a caller's setting, not part of the model: rows must carry NaN
(or None) for missing values.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from blindscore.errors import ModelFormatError
from blindscore.importers._common import read_bytes
from blindscore.models.policy import BandPolicy
from blindscore.models.trees import Tree, TreeEnsemble

__all__ = ["SUPPORTED_OBJECTIVES", "ensemble_from_xgboost", "load_ubjson", "read_xgboost"]

SUPPORTED_OBJECTIVES = ("binary:logistic", "reg:squarederror")
#: Containers nest a few levels deep in XGBoost's model; a deeper document is not a model.
_MAX_NESTING = 64
_SCALARS = {
    b"i": (">b", 1),
    b"U": (">B", 1),
    b"I": (">h", 2),
    b"l": (">i", 4),
    b"L": (">q", 8),
    b"d": (">f", 4),
    b"D": (">d", 8),
}


# ---------------------------------------------------------------------------------------------
# UBJSON: the subset XGBoost writes (draft 12 with optimised containers), strict.


class _UBJReader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ModelFormatError("UBJSON: truncated document")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def marker(self) -> bytes:
        return self.take(1)

    def scalar(self, m: bytes) -> Any:
        if m in _SCALARS:
            fmt, size = _SCALARS[m]
            (value,) = struct.unpack(fmt, self.take(size))
            return value
        if m == b"S":
            return self.string()
        if m == b"C":
            return self.take(1).decode("ascii")
        if m == b"T":
            return True
        if m == b"F":
            return False
        if m == b"Z":
            return None
        raise ModelFormatError(f"UBJSON: unsupported or invalid type marker {m!r} at byte {self.pos - 1}")

    def count(self) -> int:
        m = self.marker()
        if m not in (b"i", b"U", b"I", b"l", b"L"):
            raise ModelFormatError(f"UBJSON: a length must be an integer, got marker {m!r}")
        n = self.scalar(m)
        # Every element takes at least one byte, so a longer count is a lie.
        if n < 0 or n > len(self.data) - self.pos:
            raise ModelFormatError(f"UBJSON: impossible length {n}")
        return int(n)

    def string(self) -> str:
        try:
            return self.take(self.count()).decode("utf-8")
        except UnicodeDecodeError:
            raise ModelFormatError("UBJSON: a string is not UTF-8") from None

    def header(self) -> tuple[bytes | None, int | None]:
        """Optimised container header: optional ``$type`` (needs ``#``) and ``#count``."""
        typ = None
        if self.data[self.pos : self.pos + 1] == b"$":
            self.pos += 1
            typ = self.marker()
            if self.data[self.pos : self.pos + 1] != b"#":
                raise ModelFormatError("UBJSON: a typed container needs a count")
        if self.data[self.pos : self.pos + 1] == b"#":
            self.pos += 1
            return typ, self.count()
        return typ, None

    def value(self, m: bytes, depth: int) -> Any:
        if m == b"{":
            return self.obj(depth + 1)
        if m == b"[":
            return self.array(depth + 1)
        return self.scalar(m)

    def array(self, depth: int) -> list[Any]:
        if depth > _MAX_NESTING:
            raise ModelFormatError("UBJSON: nested too deeply")
        typ, n = self.header()
        if typ is not None and n is not None and typ in _SCALARS:
            fmt, size = _SCALARS[typ]
            raw = self.take(n * size)
            return np.frombuffer(raw, dtype=np.dtype(fmt)).tolist()
        out: list[Any] = []
        if n is not None:
            for _ in range(n):
                out.append(self.value(typ if typ is not None else self.marker(), depth))
            return out
        while True:
            m = self.marker()
            if m == b"]":
                return out
            out.append(self.value(m, depth))

    def obj(self, depth: int) -> dict[str, Any]:
        if depth > _MAX_NESTING:
            raise ModelFormatError("UBJSON: nested too deeply")
        typ, n = self.header()
        out: dict[str, Any] = {}

        def put(key: str, value: Any) -> None:
            if key in out:
                raise ModelFormatError(f"UBJSON: duplicate key {key!r}")
            out[key] = value

        if n is not None:
            for _ in range(n):
                key = self.string()
                put(key, self.value(typ if typ is not None else self.marker(), depth))
            return out
        while True:
            if self.data[self.pos : self.pos + 1] == b"}":
                self.pos += 1
                return out
            key = self.string()
            put(key, self.value(self.marker(), depth))


def load_ubjson(data: bytes) -> Any:
    """Decode a UBJSON document (the subset XGBoost writes); anything else is a ModelFormatError."""
    reader = _UBJReader(bytes(data))
    value = reader.value(reader.marker(), 0)
    if reader.pos != len(reader.data):
        raise ModelFormatError("UBJSON: trailing bytes after the document")
    return value


def _decode(data: bytes) -> Any:
    head = data.lstrip()[:2]
    if head[:1] == b"{" and (len(head) < 2 or head[1:2] in b'"} \t\r\n'):
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFormatError(f"not a valid XGBoost JSON model: {exc}") from None
    return load_ubjson(data)


# ---------------------------------------------------------------------------------------------
# The model document


def _f32(x: object, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise ModelFormatError(f"{what} must be a number, got {x!r}")
    with np.errstate(over="ignore"):
        return float(np.float32(x))


def _get(d: object, key: str, where: str) -> Any:
    if not isinstance(d, Mapping) or key not in d:
        raise ModelFormatError(f"XGBoost model: {where} has no {key!r}; not a Booster.save_model file")
    return d[key]


def _param_number(text: object, what: str) -> float:
    # Parameters are strings; XGBoost >= 3 writes base_score as a vector "[5E-1]".
    s = str(text).strip()
    if s.startswith("[") and s.endswith("]"):
        parts = [p for p in s[1:-1].split(",") if p.strip()]
        if len(parts) != 1:
            raise ModelFormatError(
                f"XGBoost model: {what} {text!r} has {len(parts)} values; only one target is supported"
            )
        s = parts[0]
    try:
        return float(s)
    except ValueError:
        raise ModelFormatError(f"XGBoost model: {what} {text!r} is not a number") from None


def _tree(t: object, k: int) -> Tree:
    where = f"tree {k}"
    left = _get(t, "left_children", where)
    right = _get(t, "right_children", where)
    feat = _get(t, "split_indices", where)
    cond = _get(t, "split_conditions", where)
    dflt = _get(t, "default_left", where)
    split_type = t.get("split_type", []) if isinstance(t, Mapping) else []
    cats = t.get("categories_nodes", []) if isinstance(t, Mapping) else []
    if any(int(s) != 0 for s in split_type) or len(cats):
        raise ModelFormatError(
            f"XGBoost model: tree {k} has a categorical split, which blind scoring does not support; "
            "retrain with numeric features only (enable_categorical=False)"
        )
    lists = (left, right, feat, cond, dflt)
    if not all(isinstance(a, list) for a in lists) or len({len(a) for a in lists}) != 1:
        raise ModelFormatError(f"XGBoost model: {where} has malformed node arrays")
    n = len(left)
    leaf = [int(c) == -1 for c in left]
    try:
        return Tree(
            feature=tuple(-1 if leaf[i] else int(feat[i]) for i in range(n)),
            threshold=tuple(0.0 if leaf[i] else _f32(cond[i], f"{where} threshold") for i in range(n)),
            left=tuple(int(c) for c in left),
            right=tuple(-1 if leaf[i] else int(right[i]) for i in range(n)),
            default_left=tuple(bool(dflt[i]) and not leaf[i] for i in range(n)),
            missing=("nan",) * n,
            value=tuple(_f32(cond[i], f"{where} leaf") if leaf[i] else 0.0 for i in range(n)),
        )
    except ModelFormatError as exc:
        raise ModelFormatError(f"XGBoost model: {where}: {exc}") from None


def ensemble_from_xgboost(
    document: Mapping[str, Any],
    *,
    policy: BandPolicy,
    name: str = "xgboost-model",
    precision: float = 1e-6,
    feature_names: list[str] | None = None,
) -> TreeEnsemble:
    """The TreeEnsemble of a decoded ``save_model`` document (JSON or UBJSON alike)."""
    learner = _get(document, "learner", "the document")
    booster = _get(learner, "gradient_booster", "learner")
    kind = _get(booster, "name", "gradient_booster")
    if kind == "dart":
        raise ModelFormatError(
            "XGBoost model: the dart booster (dropout-weighted trees) is not supported; use booster='gbtree'"
        )
    if kind != "gbtree":
        raise ModelFormatError(
            f"XGBoost model: booster {kind!r} is not supported; only gbtree tree ensembles are"
        )
    objective = _get(_get(learner, "objective", "learner"), "name", "objective")
    params = _get(learner, "learner_model_param", "learner")
    n_class = int(_param_number(params.get("num_class", "0"), "num_class"))
    n_target = int(_param_number(params.get("num_target", "1"), "num_target"))
    if n_class > 1 or n_target > 1 or objective.startswith("multi:"):
        raise ModelFormatError(
            f"XGBoost model: multi-class or multi-target models ({objective}, "
            f"{max(n_class, n_target)} outputs) are not supported; only binary:logistic and "
            "reg:squarederror are"
        )
    if objective not in SUPPORTED_OBJECTIVES:
        raise ModelFormatError(
            f"XGBoost model: objective {objective!r} is not supported; only binary:logistic and "
            "reg:squarederror are"
        )
    base = _param_number(_get(params, "base_score", "learner_model_param"), "base_score")
    if objective == "binary:logistic":
        if not 0.0 < base < 1.0:
            raise ModelFormatError(f"XGBoost model: base_score {base} must lie in (0, 1) for binary:logistic")
        # XGBoost's ProbToMargin, in float32 as in its C++.
        b32 = np.float32(base)
        margin0 = float(-np.log(np.float32(1.0) / b32 - np.float32(1.0)))
        link, output = "logit", "probability"
    else:
        margin0 = float(np.float32(base))
        link, output = "identity", "raw"
    model = _get(booster, "model", "gradient_booster")
    trees_doc = _get(model, "trees", "model")
    if not isinstance(trees_doc, list) or not trees_doc:
        raise ModelFormatError("XGBoost model: no trees")
    trees = [_tree(t, k) for k, t in enumerate(trees_doc)]
    n_feat = int(_param_number(_get(params, "num_feature", "learner_model_param"), "num_feature"))
    names = feature_names or list(learner.get("feature_names") or []) or [f"f{i}" for i in range(n_feat)]
    if len(names) != n_feat:
        raise ModelFormatError(f"XGBoost model: {len(names)} feature names for {n_feat} features")
    if not math.isfinite(margin0):
        raise ModelFormatError(f"XGBoost model: base_score {base} gives a non-finite margin")
    return TreeEnsemble(
        name,
        names,
        trees,
        base_score=margin0,
        link="logit" if link == "logit" else "identity",
        output="probability" if output == "probability" else "raw",
        domain="float32",
        strict=True,
        policy=policy,
        precision=precision,
        metadata={"source": "xgboost", "objective": objective, "version": document.get("version")},
    )


def read_xgboost(
    source: str | Path | bytes,
    *,
    policy: BandPolicy,
    name: str | None = None,
    precision: float = 1e-6,
    feature_names: list[str] | None = None,
) -> TreeEnsemble:
    """Read a ``Booster.save_model`` file (``.json`` or ``.ubj``; detected from the content) or its bytes."""
    data = source if isinstance(source, bytes) else read_bytes(Path(source))
    default = "xgboost-model" if isinstance(source, bytes) else Path(source).stem
    doc = _decode(data)
    if not isinstance(doc, Mapping):
        raise ModelFormatError("XGBoost model: the document is not an object")
    return ensemble_from_xgboost(
        doc, policy=policy, name=name or default, precision=precision, feature_names=feature_names
    )
