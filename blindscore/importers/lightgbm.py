"""Import a LightGBM text model (``Booster.save_model``) as a TreeEnsemble, without lightgbm.

Supported: objective ``binary`` with ``sigmoid:1`` (link logit) and the regression objectives
whose prediction is the raw score (``regression``, ``regression_l1``, ``huber``, ``fair``,
``quantile``, ``mape``; link identity), numeric splits, ``gbdt``/``goss`` boosting and random
forest mode (``average_output``: the raw score is the mean of the trees, represented by dividing
every leaf value by the number of trees; LightGBM's ``predict(raw_score=True)`` then returns the
sum, n_trees times our margin, and ``predict()`` the transformed mean), and categorical splits
(below). Refused, each with one sentence: multi-class models, other objectives or a sigmoid other
than 1, ``reg_sqrt``, linear trees, a category code of 65536 or more (naming the feature).

Semantics reproduced (``predict(raw_score=True)`` on a float64 array): a value with
``abs(x) <= kZeroThreshold`` (1e-35f) is read as 0.0 (LightGBM leaves it out of the sparse row it
builds from a dense one), then at each node, by its ``missing_type`` (decision_type bits 2-3):
None: NaN becomes 0.0; Zero: NaN becomes 0.0 and a zero goes the ``default_left`` way (bit 1);
NaN: NaN goes the ``default_left`` way; otherwise left iff ``x <= threshold`` in double.
Thresholds and leaf values are written with 17 significant digits, so they read back exactly.
Node ids: internal node i is node i, leaf j is node ``num_leaves - 1 + j``.

Categorical splits (decision_type bit 0): ``threshold`` is an index into ``cat_boundaries``, which
delimits the node's bitset of 32-bit words in ``cat_threshold``; a value goes left iff
``int(x)`` (C truncation toward zero) is >= 0 and its bit is set. On LightGBM's x86-64 build the
cast of NaN, +-inf or a value outside the int range is INT_MIN, so these go right whatever the
node's missing type; -0.5 and 0.9 are code 0 (checked against ``Booster.predict`` in
tests/test_lightgbm_categorical.py). Such a feature becomes a
:class:`~blindscore.models.features.CategoryCodeFeature` of C = 1 + the largest code any node sends
left: the platform one-hot encodes the code over C columns, and learns C.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from blindscore.errors import ModelFormatError
from blindscore.importers._common import category_codes, read_bytes
from blindscore.models.policy import BandPolicy, PolicyFor, policy_for_link
from blindscore.models.trees import Tree, TreeEnsemble

__all__ = ["REGRESSION_OBJECTIVES", "ensemble_from_lightgbm_text", "read_lightgbm"]

REGRESSION_OBJECTIVES = ("regression", "regression_l1", "huber", "fair", "quantile", "mape")
_MISSING: dict[int, str] = {0: "none", 1: "zero", 2: "nan"}


def _blocks(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The header's key=value lines and one dict per ``Tree=`` block."""
    header: dict[str, str] = {}
    trees: list[dict[str, str]] = []
    current = header
    for raw in text.splitlines():
        line = raw.strip()
        if line == "end of trees":
            break
        if not line:
            continue
        key, sep, value = line.partition("=")
        if key == "Tree":
            current = {}
            trees.append(current)
        elif sep:
            current[key] = value
        else:
            current[key] = ""  # a flag line such as "average_output"
    if "version" not in header or not header.get("version", "").startswith("v"):
        raise ModelFormatError("LightGBM model: no 'version=' header; not a Booster.save_model text file")
    return header, trees


def _numbers(block: dict[str, str], key: str, where: str, count: int, kind: type = float) -> list:
    if count == 0:
        return []
    if key not in block:
        raise ModelFormatError(f"LightGBM model: {where} lacks {key!r}")
    parts = block[key].split()
    if len(parts) != count:
        raise ModelFormatError(f"LightGBM model: {where} {key} has {len(parts)} entries, expected {count}")
    try:
        return [kind(p) for p in parts]
    except ValueError:
        raise ModelFormatError(f"LightGBM model: {where} {key} holds a non-number") from None


def _tree(block: dict[str, str], k: int, names: list[str], divisor: int) -> Tree:
    where = f"tree {k}"
    try:
        n_leaves = int(block["num_leaves"])
    except (KeyError, ValueError):
        raise ModelFormatError(f"LightGBM model: {where} lacks a valid num_leaves") from None
    if n_leaves < 1:
        raise ModelFormatError(f"LightGBM model: {where} has no leaves")
    if block.get("is_linear", "0") != "0":
        raise ModelFormatError(
            f"LightGBM model: {where} is a linear tree (linear_tree=true), which is not supported; "
            "retrain without linear_tree"
        )
    n_inner = n_leaves - 1
    split = _numbers(block, "split_feature", where, n_inner, int)
    dtype = _numbers(block, "decision_type", where, n_inner, int)
    thresholds = _numbers(block, "threshold", where, n_inner)
    categories = _categories(block, where, split, dtype, thresholds, names)
    left = _numbers(block, "left_child", where, n_inner, int)
    right = _numbers(block, "right_child", where, n_inner, int)
    leaf_values = _numbers(block, "leaf_value", where, n_leaves)
    if any(not math.isfinite(v) for v in leaf_values):
        raise ModelFormatError(f"LightGBM model: {where} has a non-finite leaf value")
    # Random forest mode averages the trees: leaf / n_trees, rounded once in double.
    leaf_values = [v / divisor for v in leaf_values]

    def node(child: int) -> int:
        return child if child >= 0 else n_inner + ~child

    try:
        return Tree(
            feature=tuple(split) + (-1,) * n_leaves,
            threshold=tuple(thresholds) + (0.0,) * n_leaves,
            left=tuple(node(c) for c in left) + (-1,) * n_leaves,
            right=tuple(node(c) for c in right) + (-1,) * n_leaves,
            default_left=tuple(bool(d & 2) for d in dtype) + (False,) * n_leaves,
            missing=tuple(_MISSING.get((d >> 2) & 3, "nan") for d in dtype) + ("nan",) * n_leaves,
            value=(0.0,) * n_inner + tuple(leaf_values),
            categories=tuple(categories) + (None,) * n_leaves if any(categories) else (),
        )
    except ModelFormatError as exc:
        raise ModelFormatError(f"LightGBM model: {where}: {exc}") from None


def _categories(
    block: dict[str, str],
    where: str,
    split: list[int],
    dtype: list[int],
    thresholds: list[float],
    names: list[str],
) -> list[tuple[int, ...] | None]:
    """Per internal node, the category codes a categorical node sends left, else None."""
    nodes = [i for i, d in enumerate(dtype) if d & 1]
    if not nodes:
        return [None] * len(dtype)
    try:
        n_cat = int(block.get("num_cat", "0"))
    except ValueError:
        raise ModelFormatError(f"LightGBM model: {where} has an invalid num_cat") from None
    bounds = _numbers(block, "cat_boundaries", where, n_cat + 1, int) if n_cat > 0 else []
    if not bounds or bounds[0] != 0 or any(b < a for a, b in itertools.pairwise(bounds)):
        raise ModelFormatError(
            f"LightGBM model: {where} has categorical splits but malformed cat_boundaries "
            "(num_cat + 1 non-decreasing offsets from 0 are expected)"
        )
    words = _numbers(block, "cat_threshold", where, bounds[-1], int)
    if any(not 0 <= w < 1 << 32 for w in words):
        raise ModelFormatError(f"LightGBM model: {where} cat_threshold holds a value that is no 32-bit word")
    out: list[tuple[int, ...] | None] = [None] * len(dtype)
    for i in nodes:
        f = split[i]
        fname = names[f] if 0 <= f < len(names) else str(f)
        idx = thresholds[i]
        if not (math.isfinite(idx) and idx == int(idx) and 0 <= idx < n_cat):
            raise ModelFormatError(
                f"LightGBM model: {where} node {i} on feature {fname!r} names category set {idx!r}, "
                f"outside the {n_cat} in cat_boundaries"
            )
        lo, hi = bounds[int(idx)], bounds[int(idx) + 1]
        codes = tuple(32 * k + b for k, w in enumerate(words[lo:hi]) for b in range(32) if w >> b & 1)
        out[i] = category_codes(
            "LightGBM", where, fname, codes, f"node {i} on feature {fname!r} sends no category left"
        )
    return out


def ensemble_from_lightgbm_text(
    text: str, *, policy: BandPolicy | PolicyFor, name: str = "lightgbm-model", precision: float = 1e-6
) -> TreeEnsemble:
    """The TreeEnsemble of the text that ``Booster.save_model`` / ``model_to_string`` writes.

    ``policy``: a band policy, or a function of the model's link ("logit" or "identity") giving one.
    """
    header, blocks = _blocks(text)
    n_class = int(header.get("num_class", "1"))
    if n_class > 1 or int(header.get("num_tree_per_iteration", "1")) > 1:
        raise ModelFormatError(
            f"LightGBM model: multi-class models ({n_class} classes) are not supported; only binary "
            "and regression objectives are"
        )
    objective = header.get("objective", "").split()
    if not objective:
        raise ModelFormatError("LightGBM model: no objective line")
    if objective[0] == "binary":
        sigmoid = [t for t in objective[1:] if t.startswith("sigmoid:")]
        if not sigmoid or float(sigmoid[0].split(":", 1)[1]) != 1.0:
            raise ModelFormatError(
                f"LightGBM model: objective {' '.join(objective)!r} has a sigmoid other than 1, which is not "
                "supported; retrain with sigmoid=1"
            )
        link, output = "logit", "probability"
    elif objective[0] in REGRESSION_OBJECTIVES:
        if "sqrt" in objective[1:]:
            raise ModelFormatError(
                "LightGBM model: reg_sqrt (a squared output) is not supported; retrain with reg_sqrt=false"
            )
        link, output = "identity", "raw"
    else:
        raise ModelFormatError(
            f"LightGBM model: objective {objective[0]!r} is not supported; only binary and the regression "
            f"objectives {', '.join(REGRESSION_OBJECTIVES)} are"
        )
    n_feat = int(header.get("max_feature_idx", "-1")) + 1
    names = header.get("feature_names", "").split() or [f"Column_{i}" for i in range(n_feat)]
    if len(names) != n_feat:
        raise ModelFormatError(f"LightGBM model: {len(names)} feature names for {n_feat} features")
    if not blocks:
        raise ModelFormatError("LightGBM model: no trees")
    divisor = len(blocks) if "average_output" in header else 1
    trees = [_tree(b, k, names, divisor) for k, b in enumerate(blocks)]
    return TreeEnsemble(
        name,
        names,
        trees,
        base_score=0.0,
        link="logit" if link == "logit" else "identity",
        output="probability" if output == "probability" else "raw",
        domain="float64",
        strict=False,
        policy=policy_for_link(policy, link),
        precision=precision,
        snap_zero=True,
        metadata={"source": "lightgbm", "objective": " ".join(objective), "version": header["version"]},
    )


def read_lightgbm(
    source: str | Path, *, policy: BandPolicy | PolicyFor, name: str | None = None, precision: float = 1e-6
) -> TreeEnsemble:
    """Read a LightGBM text model file."""
    path = Path(source)
    try:
        text = read_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFormatError(f"{path}: not a LightGBM text model (not UTF-8)") from None
    return ensemble_from_lightgbm_text(text, policy=policy, name=name or path.stem, precision=precision)
