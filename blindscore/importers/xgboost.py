"""Import an XGBoost ``Booster.save_model`` file (JSON or UBJSON) as a TreeEnsemble, without xgboost.

Supported: ``gbtree`` boosters with objective ``binary:logistic`` (link logit, bands on the
probability or the margin) or ``reg:squarederror`` (link identity), numeric splits, any number
of trees (``num_parallel_tree`` included: every tree adds to the margin), categorical splits on
integer category codes (below). Refused, each with one sentence: multi-class and multi-target
models, other objectives, ``gblinear`` and ``dart`` boosters, a feature trained from a pandas or
arrow categorical column whose categories the model stores (``cats``, XGBoost >= 3.1: it re-codes
the data at prediction), a category code of 65536 or more (naming the feature).

Semantics reproduced (XGBoost's ``predict(output_margin=True)``): a feature value is cast to
float32 and goes left iff ``x < t``; a missing value (NaN) goes the node's default direction.
Thresholds and leaf values are float32 in the file (UBJSON stores them as float32, JSON prints them
so that they read back to the same float32) and are cast to float32 here. The base score in
``learner_model_param`` is in the objective's output space (a probability for
``binary:logistic``, in XGBoost 1.x and >= 2 alike); the margin starts at its logit, computed in
float32 like XGBoost's ``ProbToMargin``. XGBoost >= 3 writes it as a one-element list ``"[5E-1]"``.
The DMatrix ``missing`` value is a caller's setting, not part of the model: rows must carry NaN
(or None) for missing values.

Categorical splits (``split_type`` 1; ``categories_nodes``, ``categories_segments``,
``categories_sizes`` and ``categories`` give each such node's listed codes). XGBoost's
``common::Decision``, checked against ``Booster.predict`` in tests/test_xgboost_categorical.py: a
missing value (NaN) takes the node's default direction; otherwise the float32 value goes left if it
is negative (-0.5 and -1 too; -0.0 is code 0) or at or beyond the largest category, else its code
``(int) x`` (truncation: 2.7 is code 2) goes right iff the node lists it, left otherwise (a code
beyond the node's bitfield too). The listed set is the one sent right, whether the split is a
partition or one-hot (``max_cat_to_onehot``). Such a feature becomes an
:class:`~blindscore.models.features.XGBoostCategoryFeature` of C = 1 + the largest code any node
lists: the platform one-hot encodes the code over C columns plus a missing column, and learns C.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np

from blindscore.errors import ModelFormatError
from blindscore.importers._common import category_codes, read_bytes
from blindscore.models.policy import BandPolicy, PolicyFor, policy_for_link
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


def _ints(t: Mapping[str, Any], key: str, where: str) -> list[int]:
    """An optional list of integers (absent: empty), refused with one sentence if malformed."""
    items = t.get(key, [])
    if not isinstance(items, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in items):
        raise ModelFormatError(f"XGBoost model: {where} has a malformed {key!r} (a list of integers)")
    return items


def _categories(
    t: Mapping[str, Any], where: str, n: int, leaf: list[bool], feat: list[Any], names: list[str]
) -> list[tuple[int, ...] | None]:
    """Per node, the category codes a categorical node lists (sends right), else None."""
    split_type = _ints(t, "split_type", where)
    nodes = _ints(t, "categories_nodes", where)
    segments = _ints(t, "categories_segments", where)
    sizes = _ints(t, "categories_sizes", where)
    codes = _ints(t, "categories", where)
    if (split_type and len(split_type) != n) or any(s not in (0, 1) for s in split_type):
        raise ModelFormatError(f"XGBoost model: {where} has a malformed 'split_type' (0 or 1 per node)")
    categorical = [i for i, s in enumerate(split_type) if s == 1 and not leaf[i]]
    if (
        sorted(nodes) != categorical
        or len(segments) != len(nodes)
        or len(sizes) != len(nodes)
        or any(not (a >= 0 and z >= 0 and a + z <= len(codes)) for a, z in zip(segments, sizes, strict=True))
        or any(c < 0 for c in codes)
    ):
        raise ModelFormatError(
            f"XGBoost model: {where} has malformed categorical fields (categories_nodes must list the "
            "split_type 1 nodes, with a segment of non-negative codes each)"
        )
    out: list[tuple[int, ...] | None] = [None] * n
    for i, a, z in zip(nodes, segments, sizes, strict=True):
        f = int(feat[i])
        fname = names[f] if 0 <= f < len(names) else str(f)
        listed = tuple(sorted(set(codes[a : a + z])))
        none = f"node {i} on feature {fname!r} lists no category"
        out[i] = category_codes("XGBoost", where, fname, listed, none)
    return out


def _tree(t: object, k: int, names: list[str]) -> Tree:
    where = f"tree {k}"
    left = _get(t, "left_children", where)
    right = _get(t, "right_children", where)
    feat = _get(t, "split_indices", where)
    cond = _get(t, "split_conditions", where)
    dflt = _get(t, "default_left", where)
    lists = (left, right, feat, cond, dflt)
    if not all(isinstance(a, list) for a in lists) or len({len(a) for a in lists}) != 1:
        raise ModelFormatError(f"XGBoost model: {where} has malformed node arrays")
    n = len(left)
    leaf = [int(c) == -1 for c in left]
    cats = _categories(cast(Mapping[str, Any], t), where, n, leaf, feat, names)
    try:
        return Tree(
            feature=tuple(-1 if leaf[i] else int(feat[i]) for i in range(n)),
            threshold=tuple(
                0.0 if leaf[i] or cats[i] is not None else _f32(cond[i], f"{where} threshold")
                for i in range(n)
            ),
            left=tuple(int(c) for c in left),
            right=tuple(-1 if leaf[i] else int(right[i]) for i in range(n)),
            default_left=tuple(bool(dflt[i]) and not leaf[i] for i in range(n)),
            missing=("nan",) * n,
            value=tuple(_f32(cond[i], f"{where} leaf") if leaf[i] else 0.0 for i in range(n)),
            categories=tuple(cats) if any(c is not None for c in cats) else (),
            category_rule="xgboost",
        )
    except ModelFormatError as exc:
        raise ModelFormatError(f"XGBoost model: {where}: {exc}") from None


def _check_no_category_mapping(model: Mapping[str, Any], names: list[str]) -> None:
    """XGBoost >= 3.1 stores the categories of pandas/arrow categorical columns (``cats``) and
    re-codes the data with them at prediction; only plain integer codes are supported."""
    cats = model.get("cats")
    if cats is None:
        return
    enc = cats.get("enc", []) if isinstance(cats, Mapping) else None
    if not isinstance(enc, list) or not all(isinstance(e, Mapping) for e in enc):
        raise ModelFormatError("XGBoost model: the 'cats' category mapping is malformed")
    for f, e in enumerate(enc):
        if e.get("values"):
            fname = names[f] if f < len(names) else str(f)
            raise ModelFormatError(
                f"XGBoost model: feature {fname!r} was trained from a categorical column whose "
                "categories the model stores and re-codes; only integer category codes are "
                "supported (train on numbers with feature_types 'c')"
            )


def ensemble_from_xgboost(
    document: Mapping[str, Any],
    *,
    policy: BandPolicy | PolicyFor,
    name: str = "xgboost-model",
    precision: float = 1e-6,
    feature_names: list[str] | None = None,
) -> TreeEnsemble:
    """The TreeEnsemble of a decoded ``save_model`` document (JSON or UBJSON alike).

    ``policy``: a band policy, or a function of the model's link ("logit" or "identity") giving one.
    """
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
    n_feat = int(_param_number(_get(params, "num_feature", "learner_model_param"), "num_feature"))
    names = feature_names or list(learner.get("feature_names") or []) or [f"f{i}" for i in range(n_feat)]
    if len(names) != n_feat:
        raise ModelFormatError(f"XGBoost model: {len(names)} feature names for {n_feat} features")
    _check_no_category_mapping(model, names)
    trees = [_tree(t, k, names) for k, t in enumerate(trees_doc)]
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
        policy=policy_for_link(policy, link),
        precision=precision,
        metadata={"source": "xgboost", "objective": objective, "version": document.get("version")},
    )


def read_xgboost(
    source: str | Path | bytes,
    *,
    policy: BandPolicy | PolicyFor,
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
