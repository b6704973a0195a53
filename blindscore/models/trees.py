"""Tree ensembles (boosted trees, forests) with each library's exact split rule, in floats and integers.

Plaintext side of blind tree scoring. A :class:`TreeEnsemble` holds trees as flat node arrays
plus the public facts the bank may learn (:meth:`TreeEnsemble.shape`). The encrypted pipeline
(linear stage, masking, garbled circuit) is built on top of the integer path defined here.

Split rules. Each library compares a feature value x with a node threshold t differently:

============  ===========================  ===========  ==========================================
flavour       x is compared as             go left iff  missing value (NaN)
============  ===========================  ===========  ==========================================
XGBoost       float32 (t is a float32)     x < t        default direction of the node
LightGBM      float64 (t is a double)      x <= t       missing_type None: NaN becomes 0.0;
                                                        Zero: NaN and abs(x) <= 1e-35f go the default way;
                                                        NaN: NaN goes the default way
scikit-learn  float32 (t a double)         x <= t       ``missing_go_to_left``
sklearn HGB   float64 (t a double)         x <= t       ``missing_go_to_left``
============  ===========================  ===========  ==========================================

Integer form. :func:`float_key` maps a value, cast to the comparison domain, to its IEEE-754 bit
pattern read as a sign-magnitude integer (negative patterns negated), so that the map is strictly
monotone on non-NaN values and -0.0 and +0.0 both map to 0. :func:`threshold_key` gives, for any
double threshold, the key K of the largest domain value that goes left, so every split test is
the exact integer test ``key(x) <= K`` - no fixed-point error. A missing value is encoded as key 0
plus a missing bit (LightGBM's None rule, NaN -> 0.0, then needs no special case).

Categorical splits (LightGBM). A node may instead send x left iff its category code is in the
node's set; the code is LightGBM's ``static_cast<int>(x)`` (truncation toward zero; NaN, +-inf and
values outside the int range give INT_MIN), and a negative code goes right. The platform one-hot
encodes the code over the feature's C codes (:class:`~blindscore.models.features.CategoryCodeFeature`,
all zero for a value no node sends left), and the node's test is the sum of its set's columns.

Categorical splits (XGBoost, ``Tree.category_rule == "xgboost"``). A node lists the codes it sends
right: NaN takes the node's default direction; x is cast to float32, a negative value or one at or
beyond the largest category goes left, else the code ``(int) x`` (truncation) goes right iff the
node lists it. The platform one-hot encodes the code over the feature's C codes plus a missing
column (:class:`~blindscore.models.features.XGBoostCategoryFeature`), and the node's test is the sum
of its listed codes' columns, with the missing column as a numeric node's missing bit.

Fixed point. Leaf values are encoded as ``L = round(v 2^S)`` (S = :attr:`TreeEnsemble.leaf_frac_bits`),
with the base score folded into the first tree's leaves before rounding (exactly, as rationals).
The encoded margin is the sum of one encoded leaf per tree, so, each rounding being at most half a
unit of 2^-S, ``|encoded_margin 2^-S - exact margin| <= n_trees 2^-(S+1)``. Forests average: their
leaf values are divided by the number of trees in the float domain, and the same bound holds for
those (float) leaf values.

Proven margin (:attr:`TreeEnsemble.max_abs_error`). Bands are promised equal to the library's own
band for every row farther than this margin from a cutoff, so it also bounds the library's own
rounding (:attr:`TreeEnsemble.library_error`), which :meth:`TreeEnsemble.margin` (the exact sum,
correctly rounded) does not have. Let T = |base| + sum over trees of the tree's largest |leaf|, a
bound on every partial sum of every row.

* XGBoost (the float32 ``x < t`` rule) sums in float32: ``predict(output_margin=True)`` starts at
  the base margin (a float32) and adds each tree's float32 leaf in tree order, rounding each sum
  to nearest (checked bit for bit in tests/test_xgboost_margin.py). With M_k = |base| + the
  largest |leaf| of trees 1..k and e_k a bound on the error after k trees (e_0 = 0), the exact
  result of the k-th addition is at most M_k + e_(k-1) in magnitude, so its rounding error is at
  most half the float32 spacing there: ``e_k = e_(k-1) + ulp32(M_k + e_(k-1)) / 2``, which is
  at most ``2^-24 (M_k + e_(k-1))``. So ``e_n <= 2^-24 (1 + 2^-24)^n sum_k M_k
  <= n 2^-24 T (1 + 2^-24)^n``; the prefix recursion is computed exactly (rationals). A
  100-tree model's is about 2e-5 to 1e-4, where the fixed-point term alone is 7.5e-7, and XGBoost's
  float32 margin was measured up to several 1e-6 from the exact sum.
* LightGBM and scikit-learn sum in float64 (sequentially or, for a forest, any order, then divide
  by the number of trees, whose per-leaf quotient blindscore stores rounded): at most n + 2
  roundings, each relative to a partial sum bounded by T (1 + gamma), so the error is at most
  ``gamma_(n+2) T``, ``gamma_k = k 2^-53 / (1 - k 2^-53)`` (Higham, Accuracy and Stability of
  Numerical Algorithms, section 4.2): about 1e-13 for 100 trees, far below the fixed-point term.

Then, for a row whose exact margin m is farther than ``max_abs_error = n 2^-(S+1) + T 2^-53 +
library_error`` from a cutoff c, the encrypted margin (within n 2^-(S+1) + T 2^-53 of the rounded
m) and the library's (within ``library_error``) are both on m's side of c, and a row whose library
margin is that far from c has its exact margin farther than the fixed-point error from c.
"""

from __future__ import annotations

import bisect
import functools
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np

from blindscore.errors import InvalidInputError, ModelFormatError
from blindscore.models._json import _check_format, _check_keys, _get_int, _get_list, _get_real, _get_str
from blindscore.models.contract import PrivateModel, register_model_type
from blindscore.models.families import tree_sum_bits
from blindscore.models.features import (
    MAX_CATEGORY_CODES,
    CategoryCodeFeature,
    Feature,
    FeatureSpec,
    FloatKeyFeature,
    XGBoostCategoryFeature,
)
from blindscore.models.floatkeys import (
    DOMAINS,
    KZERO_THRESHOLD,
    Grid,
    _as_value,
    _cast,
    _check_domain,
    encode_value,
    float_key,
    key_bits,
    key_bounds,
    threshold_key,
)
from blindscore.models.policy import BandPolicy, logit, sigmoid
from blindscore.protocol.circuit_band import CircuitShape, LinearOutput, LinearStage

__all__ = [
    "CATEGORY_RULES",
    "DOMAINS",
    "KZERO_THRESHOLD",
    "MAX_DEPTH",
    "MISSING_KINDS",
    "TREE_FORMAT_VERSION",
    "TREE_KIND",
    "Tree",
    "TreeEnsemble",
    "encode_value",
    "float_key",
    "key_bits",
    "key_bounds",
    "threshold_key",
]

MissingKind = Literal["nan", "zero", "none"]
MISSING_KINDS: tuple[MissingKind, ...] = ("nan", "zero", "none")
#: What a categorical node's listed codes mean: sent left (LightGBM) or sent right (XGBoost).
CATEGORY_RULES = ("lightgbm", "xgboost")
TREE_KIND = "blindscore-tree-ensemble"
TREE_FORMAT_VERSION = 1
#: The circuit evaluates 2^depth leaves per tree; beyond this the garbled circuit is too large.
MAX_DEPTH = 10
#: A precision finer than this would need absurd leaf scales.
MIN_PRECISION = 1e-30


@dataclass(frozen=True)
class Tree:
    """One tree as flat node arrays; node 0 is the root.

    For an internal node i: ``feature[i]`` >= 0, ``threshold[i]`` (a double, +-inf allowed),
    children ``left[i]`` / ``right[i]``, ``default_left[i]`` (where a missing value goes) and
    ``missing[i]`` ("nan", "zero" or "none", see the module docstring). A leaf has
    ``feature[i] == -1``, children -1 and its value in ``value[i]`` (``value`` is 0 elsewhere).

    ``categories`` (categorical splits) is empty when no node is categorical, else one entry per
    node: None for a numeric node or a leaf, or the sorted, non-empty tuple of category codes the
    node lists. ``category_rule`` says what the list means: "lightgbm" (the default, and what a
    file without the key means) lists the codes the node sends left
    (:class:`~blindscore.models.features.CategoryCodeFeature` gives the rule; the node's threshold,
    default direction and missing kind are unused); "xgboost" lists the codes it sends right, a
    missing value takes ``default_left`` (missing kind "nan") and every other value goes left
    (:class:`~blindscore.models.features.XGBoostCategoryFeature`). A tree without categorical nodes
    has rule "lightgbm".
    """

    feature: tuple[int, ...]
    threshold: tuple[float, ...]
    left: tuple[int, ...]
    right: tuple[int, ...]
    default_left: tuple[bool, ...]
    missing: tuple[str, ...]
    value: tuple[float, ...]
    categories: tuple[tuple[int, ...] | None, ...] = ()
    category_rule: str = "lightgbm"

    def __post_init__(self) -> None:
        n = len(self.feature)
        arrays = (self.threshold, self.left, self.right, self.default_left, self.missing, self.value)
        if n == 0 or any(len(a) != n for a in arrays):
            raise ModelFormatError("a tree needs at least one node and node arrays of equal length")
        for name in ("feature", "threshold", "left", "right", "default_left", "missing", "value"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "categories", _check_categories(self.categories, self.feature))
        if self.category_rule not in CATEGORY_RULES:
            raise ModelFormatError(
                f"tree category_rule must be one of {list(CATEGORY_RULES)}, got {self.category_rule!r}"
            )
        if not self.categories:
            object.__setattr__(self, "category_rule", "lightgbm")
        elif self.category_rule == "xgboost":
            bad = [i for i, c in enumerate(self.categories) if c is not None and self.missing[i] != "nan"]
            if bad:
                raise ModelFormatError(
                    f"tree node {bad[0]}: an XGBoost categorical node has missing kind 'nan' (NaN takes "
                    "the default direction)"
                )
        seen = [False] * n
        stack = [0]
        while stack:
            i = stack.pop()
            if seen[i]:
                raise ModelFormatError(f"tree node {i} is reached twice; the arrays do not form a tree")
            seen[i] = True
            if self.feature[i] < 0:
                if self.left[i] != -1 or self.right[i] != -1:
                    raise ModelFormatError(f"tree leaf {i} has children")
                if not math.isfinite(self.value[i]):
                    raise ModelFormatError(f"tree leaf {i} has a non-finite value {self.value[i]!r}")
                continue
            if math.isnan(self.threshold[i]):
                raise ModelFormatError(f"tree node {i} has a NaN threshold")
            if self.missing[i] not in MISSING_KINDS:
                raise ModelFormatError(f"tree node {i}: missing kind must be one of {list(MISSING_KINDS)}")
            for child in (self.left[i], self.right[i]):
                if not 0 < child < n:
                    raise ModelFormatError(f"tree node {i} has a child {child} outside the tree")
                stack.append(child)
        if not all(seen):
            raise ModelFormatError("a tree has nodes that the root does not reach")

    @classmethod
    def leaf(cls, value: float) -> Tree:
        """A tree that is a single leaf."""
        return cls((-1,), (0.0,), (-1,), (-1,), (False,), ("nan",), (float(value),))

    @property
    def depth(self) -> int:
        """Edges on the longest root-to-leaf path (0 for a single leaf)."""
        best = 0
        stack = [(0, 0)]
        while stack:
            i, d = stack.pop()
            if self.feature[i] < 0:
                best = max(best, d)
            else:
                stack += [(self.left[i], d + 1), (self.right[i], d + 1)]
        return best

    def leaves(self) -> list[int]:
        return [i for i, f in enumerate(self.feature) if f < 0]

    def category_set(self, i: int) -> tuple[int, ...] | None:
        """The codes node ``i`` lists if it is a categorical node, else None: the codes it sends
        left under rule "lightgbm", right under rule "xgboost" (:attr:`category_rule`)."""
        return self.categories[i] if self.categories else None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "feature": list(self.feature),
            "threshold": [_num_out(t) for t in self.threshold],
            "left": list(self.left),
            "right": list(self.right),
            "default_left": list(self.default_left),
            "missing": list(self.missing),
            "value": list(self.value),
        }
        # Written only when some node is categorical, so older files and models read as before.
        if self.categories:
            d["categories"] = [None if c is None else list(c) for c in self.categories]
            if self.category_rule != "lightgbm":
                d["category_rule"] = self.category_rule
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> Tree:
        fields = {"feature", "threshold", "left", "right", "default_left", "missing", "value"}
        _check_keys(d, where, fields, frozenset({"categories", "category_rule"}))
        rule = d.get("category_rule", "lightgbm")
        if rule not in CATEGORY_RULES or ("category_rule" in d and "categories" not in d):
            raise ModelFormatError(
                f"{where}: 'category_rule' is one of {list(CATEGORY_RULES)}, given with 'categories'"
            )
        cats: list[tuple[int, ...] | None] = []
        for c in _get_list(d, "categories", where) if "categories" in d else []:
            if c is not None and not (
                isinstance(c, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in c)
            ):
                raise ModelFormatError(f"{where}: 'categories' entries must be null or lists of integers")
            cats.append(None if c is None else tuple(c))
        ints = {k: _int_list(d, k, where) for k in ("feature", "left", "right")}
        flags = _get_list(d, "default_left", where)
        if not all(isinstance(b, bool) for b in flags):
            raise ModelFormatError(f"{where}: 'default_left' must be a list of booleans")
        kinds = _get_list(d, "missing", where)
        if not all(k in MISSING_KINDS for k in kinds):
            raise ModelFormatError(f"{where}: 'missing' entries must be one of {list(MISSING_KINDS)}")
        thresholds = [_num_in(t, f"{where}: threshold") for t in _get_list(d, "threshold", where)]
        values = [_num_in(v, f"{where}: value") for v in _get_list(d, "value", where)]
        try:
            return cls(
                tuple(ints["feature"]),
                tuple(thresholds),
                tuple(ints["left"]),
                tuple(ints["right"]),
                tuple(flags),
                tuple(kinds),
                tuple(values),
                tuple(cats),
                rule,
            )
        except ModelFormatError as exc:
            raise ModelFormatError(f"{where}: {exc}") from None


def _check_categories(
    categories: Sequence[Sequence[int] | None], feature: Sequence[int]
) -> tuple[tuple[int, ...] | None, ...]:
    """Per node None or the sorted codes it sends left; () when no node is categorical."""
    if isinstance(categories, str) or not isinstance(categories, Sequence):
        raise ModelFormatError("tree categories must be a sequence with one entry per node")
    if not categories or all(c is None for c in categories):
        return ()
    if len(categories) != len(feature):
        raise ModelFormatError(
            f"tree categories have {len(categories)} entries for {len(feature)} nodes; one per node"
        )
    out: list[tuple[int, ...] | None] = []
    for i, c in enumerate(categories):
        if c is None:
            out.append(None)
            continue
        if feature[i] < 0:
            raise ModelFormatError(f"tree leaf {i} has a category set; only internal nodes split")
        codes = tuple(c)
        if (
            not codes
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in codes)
            or not all(0 <= x < MAX_CATEGORY_CODES for x in codes)
            or len(set(codes)) != len(codes)
        ):
            raise ModelFormatError(
                f"tree node {i}: a category set is a non-empty list of distinct codes in "
                f"[0, {MAX_CATEGORY_CODES}), got {list(codes)[:8]!r}"
            )
        out.append(tuple(sorted(codes)))
    return tuple(out)


def _num_out(x: float) -> float | str:
    # JSON has no infinities; HistGradientBoosting stores +inf thresholds.
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


def _num_in(x: object, what: str) -> float:
    if x == "inf":
        return math.inf
    if x == "-inf":
        return -math.inf
    if isinstance(x, bool) or not isinstance(x, int | float) or math.isnan(float(x)):
        raise ModelFormatError(f"{what} must be a number, 'inf' or '-inf', got {x!r}")
    return float(x)


def _int_list(d: Mapping[str, Any], key: str, where: str) -> list[int]:
    items = _get_list(d, key, where)
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in items):
        raise ModelFormatError(f"{where}: {key!r} must be a list of integers")
    return items


@dataclass(frozen=True)
class _Padded:
    """A tree padded to a complete tree of the ensemble's depth, in heap order, with integer tests.

    Internal node j (0 <= j < 2^D - 1) has children 2j+1, 2j+2; leaf slot k is node 2^D - 1 + k.
    A padding node tests feature 0 and has both subtrees equal, so its outcome does not matter.
    """

    feature: tuple[int, ...]
    #: The circuit's threshold key K: "go left" is ``key(x) <= K`` (a grid index on a declared grid).
    key: tuple[int, ...]
    default_left: tuple[bool, ...]
    missing: tuple[str, ...]
    leaf: tuple[int, ...]
    #: Where the value 0.0 goes (LightGBM's "none" rule sends a missing value there).
    zero_left: tuple[bool, ...]
    #: Per node, the codes a categorical node sends left, else None (a numeric node).
    cats: tuple[tuple[int, ...] | None, ...]


# ---------------------------------------------------------------------------------------------
# The ensemble


@register_model_type
class TreeEnsemble(PrivateModel):
    """A sum of trees plus a base score, with a link, a split rule and a band policy.

    ``margin = base_score + sum of one leaf value per tree``; ``predict`` is ``sigmoid(margin)``
    for ``link="logit"`` and the margin itself for ``link="identity"``. ``output`` says what
    :meth:`predict` returns: "probability" (logit link, or a forest/tree classifier that averages
    class probabilities with the identity link) or "raw" (regression). A policy on probabilities
    needs ``output="probability"``; its cutoffs are mapped to the margin by the link.

    ``domain`` and ``strict`` give the split rule: x cast to ``domain`` goes left iff ``x < t``
    (``strict``) or ``x <= t``. ``precision`` bounds the fixed-point error of the integer path (part
    of :attr:`max_abs_error`, which adds the library's own rounding, :attr:`library_error`); the
    leaf scale S is the smallest with ``n_trees 2^-(S+1) <= precision``.
    """

    type_name = TREE_KIND

    def __init__(
        self,
        name: str,
        feature_names: Sequence[str],
        trees: Sequence[Tree],
        *,
        base_score: float,
        link: Literal["logit", "identity"],
        output: Literal["probability", "raw"],
        domain: str,
        strict: bool,
        policy: BandPolicy,
        precision: float = 1e-6,
        snap_zero: bool = False,
        metadata: Mapping[str, Any] | None = None,
        grids: Mapping[str, Grid] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ModelFormatError("a model needs a non-empty name")
        names = tuple(feature_names)
        if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise ModelFormatError("feature names must be distinct non-empty strings, at least one")
        trees = tuple(trees)
        if not trees or not all(isinstance(t, Tree) for t in trees):
            raise ModelFormatError("an ensemble needs at least one Tree")
        for k, t in enumerate(trees):
            bad = [f for f in t.feature if f >= len(names)]
            if bad:
                raise ModelFormatError(f"tree {k} tests feature {bad[0]}, but the model has {len(names)}")
        if link not in ("logit", "identity"):
            raise ModelFormatError(f"link must be 'logit' or 'identity', got {link!r}")
        if output not in ("probability", "raw") or (link == "logit" and output != "probability"):
            raise ModelFormatError("output must be 'probability' (required with link logit) or 'raw'")
        if not isinstance(policy, BandPolicy):
            raise ModelFormatError("policy must be a BandPolicy")
        if policy.output == "probability" and output != "probability":
            raise ModelFormatError("a policy on probabilities needs a model whose output is a probability")
        if not isinstance(strict, bool) or not isinstance(snap_zero, bool):
            raise ModelFormatError("strict and snap_zero must be true or false")
        base = float(base_score)
        if not math.isfinite(base):
            raise ModelFormatError(f"base_score must be finite, got {base_score!r}")
        if not (
            isinstance(precision, int | float) and precision >= MIN_PRECISION and math.isfinite(precision)
        ):
            raise ModelFormatError(f"precision must be a finite number >= {MIN_PRECISION}, got {precision!r}")
        depth = max(t.depth for t in trees)
        if depth > MAX_DEPTH:
            raise ModelFormatError(
                f"the deepest tree has depth {depth}; blind evaluation pads every tree to a complete "
                f"tree and supports depth <= {MAX_DEPTH}: retrain with max_depth <= {MAX_DEPTH}"
            )
        # Categorical features: C = 1 + the largest code any node lists (public), and the rule.
        n_cats: dict[int, int] = {}
        rules: dict[int, str] = {}
        numeric: set[int] = set()
        for t in trees:
            for i, f in enumerate(t.feature):
                codes = t.category_set(i)
                if f < 0:
                    continue
                if codes is None:
                    numeric.add(f)
                else:
                    n_cats[f] = max(n_cats.get(f, 0), codes[-1] + 1)
                    if rules.setdefault(f, t.category_rule) != t.category_rule:
                        raise ModelFormatError(
                            f"feature {names[f]!r} is split under both the LightGBM and the XGBoost "
                            "category rule; a model's categorical feature follows one library"
                        )
        mixed = sorted(numeric & set(n_cats))
        if mixed:
            raise ModelFormatError(
                f"feature {names[mixed[0]]!r} is split both as a category code and as a number; "
                "a feature is one or the other"
            )
        grids = dict(grids or {})
        unknown = sorted(set(grids) - set(names))
        if unknown:
            raise ModelFormatError(f"grids name unknown feature(s) {unknown[:5]}")
        on_cats = [n for n in names if n in grids and names.index(n) in n_cats]
        if on_cats:
            lib = "XGBoost" if rules[names.index(on_cats[0])] == "xgboost" else "LightGBM"
            raise ModelFormatError(
                f"feature {on_cats[0]!r} is categorical ({lib} category codes); a grid declares the "
                "values of a numeric feature and cannot apply to it"
            )
        if not all(isinstance(g, Grid) for g in grids.values()):
            raise ModelFormatError("a feature grid must be a Grid")
        self.grids: dict[str, Grid] = {n: grids[n] for n in names if n in grids}
        self.name = name
        self.feature_names = names
        self.trees = trees
        self.base_score = base
        self.link: Literal["logit", "identity"] = link
        self.output: Literal["probability", "raw"] = output
        self.domain = _check_domain(domain)
        self.strict = strict
        self.snap_zero = snap_zero
        self.policy = policy
        self.precision = float(precision)
        self.metadata: dict[str, Any] = dict(metadata or {})
        #: Categorical feature name -> C, its number of code columns (public: the platform's).
        self.n_categories: dict[str, int] = {names[f]: c for f, c in sorted(n_cats.items())}
        #: Categorical feature name -> its rule, "lightgbm" or "xgboost" (:attr:`Tree.category_rule`).
        self.category_rules: dict[str, str] = {names[f]: r for f, r in sorted(rules.items())}
        self.depth = depth
        s = 0
        while math.ldexp(len(trees), -(s + 1)) > self.precision:
            s += 1
        self.leaf_frac_bits = s
        if policy.output == "probability" and link == "logit":
            self.margin_cutoffs = tuple(logit(c) for c in policy.cutoffs)
        else:
            self.margin_cutoffs = tuple(policy.cutoffs)
        scale = Fraction(2) ** s
        # ceil(c 2^S), exactly: m_enc >= this iff m_enc 2^-S >= c.
        self.encoded_cutoffs = tuple(math.ceil(Fraction(c) * scale) for c in self.margin_cutoffs)
        self._zero_key = threshold_key(KZERO_THRESHOLD, self.domain, strict=False)
        #: The public feature spec the platform encodes with: a float-key feature per input, or a
        #: category-code feature (C one-hot columns) for a LightGBM categorical feature, or an
        #: XGBoost one (C one-hot columns and a missing column).
        features: list[Feature] = [
            (XGBoostCategoryFeature if self.category_rules[n] == "xgboost" else CategoryCodeFeature)(
                n, self.n_categories[n]
            )
            if n in self.n_categories
            else FloatKeyFeature(n, self.domain, self.snap_zero, self.grids.get(n))
            for n in self.feature_names
        ]
        self.spec = FeatureSpec(tuple(features))
        #: Per feature, the index of its first encoded column.
        self._columns = tuple(cols.start for _, cols in self.spec.feature_slices())
        #: Per feature, the offset of its missing column if it is an XGBoost categorical one, else 0.
        self._xgb_cat = tuple(
            f.n_categories if isinstance(f, XGBoostCategoryFeature) else 0 for f in self.spec.features
        )
        self._padded = tuple(self._pad(t, k == 0) for k, t in enumerate(trees))
        # The zero column enters the circuit only if some node applies LightGBM's zero rule; the
        # bank learns that one bit (docs/threat-model.md), and the others save a bit per node.
        self.zero_bit = int(
            any(
                kind == "zero" and t.category_set(i) is None
                for t in trees
                for i, kind in enumerate(t.missing)
            )
        )
        self._shape = CircuitShape(
            "trees",
            values=self.n_trees * ((1 << self.depth) - 1),
            # With the zero rule the values carry a missing and a zero bit; without it the missing
            # rule is folded into the value (models/families.py, trees).
            value_bits=self.key_bits + (3 if self.zero_bit else 1),
            cutoffs=len(self.encoded_cutoffs),
            params=(
                ("depth", self.depth),
                ("leaf_bits", self.leaf_bits),
                ("trees", self.n_trees),
                ("zero_bit", self.zero_bit),
            ),
        )

    # -- public encoding and shape ----------------------------------------------------------

    @property
    def n_trees(self) -> int:
        return len(self.trees)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def key_bits(self) -> int:
        """Width of a feature key (and of a threshold key) in the circuit: the float keys' (32 or
        64), or, when every numeric feature has a declared grid, the widest grid's. One width for
        all nodes, so the width never tells which feature a node tests (a categorical node's value
        fits every width)."""
        if self._all_grids:
            return max(g.bits for g in self.grids.values())
        return key_bits(self.domain)

    @property
    def _all_grids(self) -> bool:
        numeric = [n for n in self.feature_names if n not in self.n_categories]
        return bool(numeric) and all(n in self.grids for n in numeric)

    def with_grids(self, grids: Mapping[str, Grid]) -> TreeEnsemble:
        """This model with ``grids`` declared on (some of) its features: same splits and leaves,
        narrower keys once every feature has one (:class:`~blindscore.models.floatkeys.Grid`)."""
        return type(self)(
            self.name,
            self.feature_names,
            self.trees,
            base_score=self.base_score,
            link=self.link,
            output=self.output,
            domain=self.domain,
            strict=self.strict,
            policy=self.policy,
            precision=self.precision,
            snap_zero=self.snap_zero,
            metadata=self.metadata,
            grids={**self.grids, **grids},
        )

    @property
    def encoded_margin_bounds(self) -> tuple[int, int]:
        """The smallest and largest encoded margin: sums of the per-tree extreme encoded leaves."""
        lo = sum(min(p.leaf) for p in self._padded)
        hi = sum(max(p.leaf) for p in self._padded)
        return lo, hi

    @property
    def leaf_bits(self) -> int:
        """Two's-complement width of the widest encoded leaf."""
        return max(_signed_bits(min(p.leaf), max(p.leaf)) for p in self._padded)

    @property
    def margin_bits(self) -> int:
        """Two's-complement width holding every encoded margin and every encoded cutoff."""
        lo, hi = self.encoded_margin_bounds
        cut = self.encoded_cutoffs
        return _signed_bits(min(lo, *cut), max(hi, *cut))

    def shape(self) -> dict[str, int]:
        """What the bank may learn: sizes only, never thresholds, leaves or tested features."""
        return {
            "n_trees": self.n_trees,
            "depth": self.depth,
            "n_features": self.n_features,
            "key_bits": self.key_bits,
            "zero_bit": self.zero_bit,
            "leaf_bits": self.leaf_bits,
            "margin_bits": self.margin_bits,
            "n_bands": self.policy.n_bands,
        }

    def encode_row(self, row: Mapping[str, object] | Sequence[object]) -> list[int]:
        """The public encoding of a raw row (platform side): per numeric feature its key, missing
        bit and zero bit (:class:`~blindscore.models.features.FloatKeyFeature`), per categorical one
        its C one-hot columns (:class:`~blindscore.models.features.CategoryCodeFeature`); a
        sequence is read in feature order."""
        values = self._values(row)
        return [x for f, v in zip(self.spec.features, values, strict=True) for x in f.encode(v)]

    # -- plaintext path -------------------------------------------------------------------

    def _values(self, row: Mapping[str, object] | Sequence[object]) -> list[float]:
        if isinstance(row, Mapping):
            absent = [n for n in self.feature_names if n not in row]
            if absent:
                raise InvalidInputError(f"the row lacks feature(s) {absent[:5]}")
            items = [row[n] for n in self.feature_names]
        elif isinstance(row, str | bytes) or not isinstance(row, Sequence | np.ndarray):
            raise InvalidInputError("a row must be a mapping of feature names or a sequence of values")
        else:
            items = list(row)
            if len(items) != self.n_features:
                raise InvalidInputError(f"a row has {self.n_features} values, got {len(items)}")
        return [_as_value(v, f"feature {n!r}") for n, v in zip(self.feature_names, items, strict=True)]

    def _goes_left(self, tree: Tree, i: int, x: float) -> bool:
        if self.snap_zero and -KZERO_THRESHOLD <= x <= KZERO_THRESHOLD:
            x = 0.0  # LightGBM drops such values from a dense row: the predictor reads them as 0.0
        codes = tree.category_set(i)
        if codes is not None and tree.category_rule == "xgboost":
            if math.isnan(x):
                return tree.default_left[i]
            x32 = _cast(x, "float32")
            # common/categorical.h Decision: a negative or too large float32 is invalid, goes left
            return not 0.0 <= x32 < 2.0**31 or math.trunc(x32) not in codes
        if codes is not None:
            code = _lightgbm_int(x)
            return code >= 0 and code in codes  # a negative int (NaN included) goes right
        kind = tree.missing[i]
        if kind != "nan" and math.isnan(x):
            x = 0.0  # LightGBM: NaN is zero unless the node's missing type is NaN
        if (kind == "nan" and math.isnan(x)) or (kind == "zero" and -KZERO_THRESHOLD <= x <= KZERO_THRESHOLD):
            return tree.default_left[i]
        xd = _cast(x, self.domain)
        t = tree.threshold[i]
        return xd < t if self.strict else xd <= t

    def leaf_nodes(self, row: Mapping[str, object] | Sequence[object]) -> list[int]:
        """The node id of the leaf each tree reaches, following the library's float rule."""
        xs = self._values(row)
        out = []
        for tree in self.trees:
            i = 0
            while tree.feature[i] >= 0:
                i = tree.left[i] if self._goes_left(tree, i, xs[tree.feature[i]]) else tree.right[i]
            out.append(i)
        return out

    def leaf_values(self, row: Mapping[str, object] | Sequence[object]) -> list[float]:
        """The leaf value each tree reaches."""
        return [t.value[i] for t, i in zip(self.trees, self.leaf_nodes(row), strict=True)]

    def margin(self, row: Mapping[str, object] | Sequence[object]) -> float:
        """base_score plus the leaf values, correctly rounded from the exact sum (``math.fsum``)."""
        return math.fsum([self.base_score, *self.leaf_values(row)])

    def predict(self, row: Mapping[str, object] | Sequence[object]) -> float:
        """sigmoid(margin) for link logit, the margin for link identity."""
        z = self.margin(row)
        return sigmoid(z) if self.link == "logit" else z

    def band_of_margin(self, margin: float) -> int:
        """The number of margin cutoffs ``margin`` is at or above."""
        if math.isnan(margin):
            raise InvalidInputError("cannot band NaN")
        return bisect.bisect_right(self.margin_cutoffs, margin)

    def band(self, row: Mapping[str, object] | Sequence[object]) -> int:
        """The plaintext band, cutoffs applied to the margin."""
        return self.band_of_margin(self.margin(row))

    # -- integer path ---------------------------------------------------------------------

    def _pad(self, tree: Tree, first: bool) -> _Padded:
        d = self.depth
        scale = Fraction(2) ** self.leaf_frac_bits
        base = Fraction(self.base_score) if first else Fraction(0)
        n_inner = (1 << d) - 1
        feature = [0] * n_inner
        key = [0] * n_inner
        zero_left = [True] * n_inner
        default_left = [True] * n_inner
        missing = ["nan"] * n_inner
        # A padding node on a categorical feature 0 is a categorical node sending nothing left.
        pad_cats: tuple[int, ...] | None = () if self.feature_names[0] in self.n_categories else None
        cats: list[tuple[int, ...] | None] = [pad_cats] * n_inner
        leaf = [0] * (1 << d)
        # (heap slot, tree node, level); a leaf met above the last level fills its whole subtree.
        stack = [(0, 0, 0)]
        while stack:
            slot, i, level = stack.pop()
            if tree.feature[i] >= 0:
                feature[slot] = tree.feature[i]
                codes = tree.category_set(i)
                cats[slot] = codes
                if codes is not None and tree.category_rule == "xgboost":
                    # Compared in the linear stage from the one-hot columns; missing as for "nan".
                    zero_left[slot] = False
                    default_left[slot] = tree.default_left[i]
                elif codes is not None:
                    # Compared in the linear stage from the one-hot columns; no missing or zero rule.
                    zero_left[slot] = default_left[slot] = False
                    missing[slot] = "none"
                else:
                    float_key = threshold_key(tree.threshold[i], self.domain, self.strict)
                    zero_left[slot] = float_key >= 0  # the key of 0.0 is 0
                    grid = self.grids.get(self.feature_names[tree.feature[i]])
                    if grid is not None:
                        float_key = grid.threshold_index(float_key, self.domain, self.snap_zero)
                    key[slot] = float_key
                    default_left[slot] = tree.default_left[i]
                    missing[slot] = tree.missing[i]
                stack += [(2 * slot + 1, tree.left[i], level + 1), (2 * slot + 2, tree.right[i], level + 1)]
                continue
            # round() on a Fraction rounds half to even: |L - v 2^S| <= 1/2, the bound's premise.
            value = round((Fraction(tree.value[i]) + base) * scale)
            first_leaf = ((slot + 1) << (d - level)) - 1 - n_inner
            for k in range(first_leaf, first_leaf + (1 << (d - level))):
                leaf[k] = value
        return _Padded(
            tuple(feature),
            tuple(key),
            tuple(default_left),
            tuple(missing),
            tuple(leaf),
            tuple(zero_left),
            tuple(cats),
        )

    def padded_trees(self) -> list[dict[str, list[Any]]]:
        """The complete padded trees in heap order, with integer threshold keys and encoded leaves
        (the garbler's inputs; secret)."""
        return [
            {
                "feature": list(p.feature),
                "key": list(p.key),
                "default_left": list(p.default_left),
                "missing": list(p.missing),
                "leaf": list(p.leaf),
                "zero_left": list(p.zero_left),
                "categories": [None if c is None else list(c) for c in p.cats],
            }
            for p in self._padded
        ]

    def check_encoded_row(self, encoded_row: Sequence[int]) -> list[int]:
        """``encoded_row`` as ints if :meth:`encode_row` could have produced it, else raise."""
        width = self.spec.encoded_width
        if isinstance(encoded_row, str | bytes) or len(encoded_row) != width:
            raise InvalidInputError(
                f"an encoded row has {width} integers (key, missing bit, zero bit per numeric feature, "
                "C indicators per categorical one)"
            )
        z = self._zero_key
        out: list[int] = []
        for j, x in enumerate(encoded_row):
            if isinstance(x, bool) or not isinstance(x, numbers.Integral):
                raise InvalidInputError(f"encoded column {j}: expected an integer, got {x!r}")
            out.append(int(x))
        for f, feature in enumerate(self.spec.features):
            col = self._columns[f]
            if isinstance(feature, CategoryCodeFeature):
                bits = out[col : col + len(feature.columns)]  # C codes, then XGBoost's missing column
                if any(b not in (0, 1) for b in bits) or sum(bits) > 1:
                    raise InvalidInputError(
                        f"feature {self.feature_names[f]!r}: category-code columns are 0/1 with at most one 1"
                    )
                continue
            k, m, zero = out[col : col + 3]
            (lo, hi), _, _ = feature.encoded_bounds
            grid = self.grids.get(self.feature_names[f])
            in_range = lo <= k <= hi
            fk = encode_value(grid.point(k), self.domain, self.snap_zero)[0] if grid and in_range else k
            if m not in (0, 1) or not in_range or (m == 1 and k != 0) or zero != int(m == 1 or -z <= fk <= z):
                raise InvalidInputError(
                    f"feature {self.feature_names[f]!r}: invalid (key, missing, zero) triple"
                )
        return out

    def encoded_leaves(self, encoded_row: Sequence[int]) -> list[int]:
        """The encoded leaf each padded tree reaches, by integer comparisons only (the circuit's job)."""
        xs = self.check_encoded_row(encoded_row)
        out: list[int] = []
        for p in self._padded:
            j = 0
            for _ in range(self.depth):
                col = self._columns[p.feature[j]]
                codes = p.cats[j]
                if codes is not None and self._xgb_cat[p.feature[j]]:
                    # unit (2^b - 1 + s) + missing: the top bit is [s == 1], go right; missing: default.
                    s = sum(xs[col + c] for c in codes)
                    m = xs[col + self._xgb_cat[p.feature[j]]]
                    left = p.default_left[j] if m == 1 else s == 0
                    j = 2 * j + (1 if left else 2)
                    continue
                if codes is not None:
                    # The linear stage's value is unit (2^b - s): its top bit is [s == 0], go right.
                    s = sum(xs[col + c] for c in codes)
                    j = 2 * j + (1 if s >= 1 else 2)
                    continue
                k, m, zero = xs[col : col + 3]
                kind = p.missing[j]
                default = (kind == "nan" and m == 1) or (kind == "zero" and zero == 1)
                left = p.default_left[j] if default else k <= p.key[j]
                j = 2 * j + (1 if left else 2)
            out.append(p.leaf[j - ((1 << self.depth) - 1)])
        return out

    def encoded_margin(self, encoded_row: Sequence[int]) -> int:
        """The margin at scale 2^S: the sum of the encoded leaves (base score folded into tree 0)."""
        return sum(self.encoded_leaves(encoded_row))

    def band_from_encoded(self, encoded_row: Sequence[int]) -> int:
        """#{k: encoded_margin >= encoded_cutoffs[k]}: the band the circuit outputs."""
        m = self.encoded_margin(encoded_row)
        return sum(m >= c for c in self.encoded_cutoffs)

    @property
    def max_abs_error(self) -> float:
        """Bound on |encoded_margin 2^-S - margin(row)| plus the library's own rounding, over all rows.

        Three terms (derivation in the module docstring, "Proven margin"):

        * n_trees 2^-(S+1) for the leaf rounding (one rounding of at most half a unit per tree, the
          base score folded in exactly);
        * half an ulp of the largest possible |margin|, ``T 2^-53``, for the correct rounding of
          :meth:`margin` (T = |base_score| + the sum over trees of the largest |leaf|);
        * :attr:`library_error`: how far the library's own floating-point margin (XGBoost's
          float32 sum, the other libraries' float64 ones) can be from the exact sum.

        The encrypted band equals :meth:`band` whenever the margin is farther than this from every
        margin cutoff, and so does the band of the library's own margin, whether the distance is
        taken from the exact margin or from the library's.
        """
        top = math.fsum([abs(self.base_score), *(max(abs(v) for v in t.value) for t in self.trees)])
        fixed = math.ldexp(self.n_trees, -(self.leaf_frac_bits + 1)) + math.ldexp(top, -53)
        return _round_up(fixed + self.library_error, 2)

    @functools.cached_property
    def library_error(self) -> float:
        """A proven bound on |the library's own margin - the exact margin| over all rows.

        For the XGBoost split rule (float32, ``x < t``) XGBoost's float32 accumulation, bounded
        prefix by prefix (:func:`_float32_sum_error`); for every other rule the float64 sums of
        LightGBM and scikit-learn, ``gamma_(n_trees+2) T`` with unit roundoff 2^-53
        (:func:`_float64_sum_error`). See the module docstring, "Proven margin".
        """
        if self.domain == "float32" and self.strict:
            return _float32_sum_error(self.base_score, [t.value for t in self.trees])
        return _float64_sum_error(self.base_score, [t.value for t in self.trees])

    # -- the decision value (what the cutoffs compare) -----------------------------------------

    def decision_value(self, row: Mapping[str, object]) -> float:
        return self.margin(row)

    @property
    def decision_cutoffs(self) -> list[float]:
        return list(self.margin_cutoffs)

    def encoded_decision_value(self, encoded_row: Sequence[int]) -> float:
        return math.ldexp(self.encoded_margin(encoded_row), -self.leaf_frac_bits)

    # -- the garbled-circuit pipeline: the "trees" family of blindscore.models.families --------
    # One value per internal node of every padded tree: its comparison, done in the linear stage,
    #     value = 4 (key - T + 2^b) + 2 zero + missing      (b = key_bits, T = K + 1)
    # (without the zero term, 2 (key - T + 2^b) + missing, when no node applies the zero rule),
    # so which feature a node tests and its threshold both stay in the (secret) linear stage: the
    # top bit is [key > K], go right. Per node the secrets are the direction of a missing value
    # ("nan" and "zero" nodes: the default; "none": where the value 0 goes), whether a zero counts
    # as missing ("zero" nodes) and its direction; then every leaf's fixed-point value, and the K
    # margin cutoffs. This is :meth:`encoded_leaves` exactly, which the tests hold the circuit to.
    # A categorical node's value is unit (2^b - sum of its set's one-hot columns), no missing or zero
    # term (key - T is -1 or 0), kind "none" with both directions right: same width, same circuit.
    # An XGBoost categorical node's is unit (2^b - 1 + sum of its listed codes' columns) + missing
    # (key - T is -1 or 0, the missing column as a numeric node's missing bit), kind "nan" with the
    # node's default direction: same width, same circuit.

    def circuit_shape(self) -> CircuitShape:
        return self._shape

    def linear_stage(self) -> LinearStage:
        return self._linear_stage

    @functools.cached_property
    def _linear_stage(self) -> LinearStage:
        # Fixed by the model: built once, not for every application. |key - (K + 1)| < 2^b for
        # every key in key_bounds (or a grid's [0, count)) and K in [key(-inf) - 1, key(+inf)] (or
        # [-1, count)), so key - (K + 1) + 2^b is in [0, 2^(b + 1)).
        if self.zero_bit:
            return self._flagged_stage()
        # Folded (models/families.py): key - T + 2^b + missing delta with T = K + 1 (keys are
        # signed, |T| <= 2^b). A missing value has key 0, so it lands on 2^b - T + delta: to go
        # left (below 2^b), delta = 0 if T > 0, else -2^b (landing on -T); to go right, delta = 0
        # if T <= 0, else 2^b (landing on 2^(b+1) - T). Three weights at most per feature, so its
        # nodes share few dot products (linear_values). Categorical nodes land on 2^b - 1 (left)
        # or 2^b (right).
        b = self.key_bits
        outputs = []
        for p in self._padded:
            for f, key, codes, kind, default, zero_left in zip(
                p.feature, p.key, p.cats, p.missing, p.default_left, p.zero_left, strict=True
            ):
                col = self._columns[f]
                if codes is not None and self._xgb_cat[f]:
                    # 2^b - 1 + the listed codes' column (at most one is 1) + missing (1 - left)
                    terms = (*((col + c, 1) for c in codes), (col + self._xgb_cat[f], 1 - int(default)))
                    outputs.append(LinearOutput(tuple(t for t in terms if t[1]), (1 << b) - 1))
                    continue
                if codes is not None:
                    # LightGBM: 2^b - its codes' columns: 2^b - 1 in the set (left), 2^b out of it
                    outputs.append(LinearOutput(tuple((col + c, -1) for c in codes), 1 << b))
                    continue
                left = zero_left if kind == "none" else default
                t = key + 1
                delta = (0 if t > 0 else -(1 << b)) if left else (1 << b if t > 0 else 0)
                terms = ((col, 1), (col + 1, delta)) if delta else ((col, 1),)
                outputs.append(LinearOutput(terms, (1 << b) - t))
        return LinearStage(tuple(outputs), b + 1)

    def _flagged_stage(self) -> LinearStage:
        """The linear stage with the missing and zero bits in each value (the zero rule's layout)."""
        b, z = self.key_bits, self.zero_bit
        unit = 2 << z
        # A categorical node (LightGBM) is unit (2^b - sum of its codes' one-hot columns), at most
        # one of which is 1: key - (K + 1) is -1 (in the set: left) or 0 (right), no missing or
        # zero term, so its value is in [unit (2^b - 1), unit 2^b], inside the same range. An XGBoost
        # one is unit (2^b - 1 + sum of its listed codes' columns) + missing, at most one of these
        # columns 1: key - (K + 1) is -1 (not listed: left) or 0 (listed: right), the missing bit as
        # for a numeric "nan" node, so its value is in [unit (2^b - 1), unit 2^b], the same range.
        outputs = []
        for p in self._padded:
            for f, key, codes in zip(p.feature, p.key, p.cats, strict=True):
                col = self._columns[f]
                if codes is not None and self._xgb_cat[f]:
                    terms = (*((col + c, unit) for c in codes), (col + self._xgb_cat[f], 1))
                    outputs.append(LinearOutput(terms, unit * ((1 << b) - 1)))
                    continue
                if codes is not None:
                    outputs.append(LinearOutput(tuple((col + c, -unit) for c in codes), unit << b))
                    continue
                terms = ((col, unit), (col + 1, 1), (col + 2, 2)) if z else ((col, unit), (col + 1, 1))
                outputs.append(LinearOutput(terms, unit * ((1 << b) - (key + 1))))
        return LinearStage(tuple(outputs), b + 2 + z)

    def garbler_inputs(self) -> list[tuple[int, int]]:
        return list(self._garbler_inputs)

    @functools.cached_property
    def _garbler_inputs(self) -> tuple[tuple[int, int], ...]:
        leaf_bits = self._shape.param("leaf_bits")
        out: list[tuple[int, int]] = []
        for p in self._padded:
            if self.zero_bit:  # the node rules as circuit inputs; folded into the values otherwise
                for zero_left, kind, default in zip(p.zero_left, p.missing, p.default_left, strict=True):
                    missing_left = int(zero_left) if kind == "none" else int(default)
                    out += [(missing_left, 1), (int(kind == "zero"), 1), (int(default), 1)]
            out += [(leaf & ((1 << leaf_bits) - 1), leaf_bits) for leaf in p.leaf]
        width = tree_sum_bits(self._shape) + 1
        top = 1 << (width - 1)
        out += [(min(max(c, -top), top - 1) & ((1 << width) - 1), width) for c in self.encoded_cutoffs]
        return tuple(out)

    # -- persistence and display ----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready, lossless form (the bureau's artifact: it holds thresholds and leaves)."""
        return {
            "format": TREE_FORMAT_VERSION,
            "kind": TREE_KIND,
            "name": self.name,
            "features": list(self.feature_names),
            "domain": self.domain,
            "split": "<" if self.strict else "<=",
            "snap_zero": self.snap_zero,
            "link": self.link,
            "output": self.output,
            "base_score": self.base_score,
            "precision": self.precision,
            "policy": self.policy.to_dict(),
            "metadata": self.metadata,
            "trees": [t.to_dict() for t in self.trees],
            **({"grids": {n: g.to_dict() for n, g in self.grids.items()}} if self.grids else {}),
            "encoded": {"leaf_frac_bits": self.leaf_frac_bits, "cutoffs": list(self.encoded_cutoffs)},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TreeEnsemble:
        """Rebuild from :meth:`to_dict`; unknown or missing fields, wrong types and a stored
        ``encoded`` section that differs from the recomputed one raise :class:`ModelFormatError`."""
        where = "tree model"
        keys = {"format", "kind", "name", "features", "domain", "split", "snap_zero", "link", "output"}
        keys |= {"base_score"}
        keys |= {"precision", "policy", "metadata", "trees"}
        _check_keys(d, where, keys, frozenset({"encoded", "grids"}))
        _check_format(d, TREE_KIND, where, TREE_FORMAT_VERSION)
        split = _get_str(d, "split", where)
        if split not in ("<", "<="):
            raise ModelFormatError(f"{where}: split must be '<' or '<=', got {split!r}")
        link = _get_str(d, "link", where)
        output = _get_str(d, "output", where)
        if link not in ("logit", "identity") or output not in ("probability", "raw"):
            raise ModelFormatError(f"{where}: link must be logit/identity and output probability/raw")
        domain = _get_str(d, "domain", where)
        if domain not in DOMAINS:
            raise ModelFormatError(f"{where}: domain must be one of {list(DOMAINS)}")
        policy_d, metadata = d["policy"], d["metadata"]
        if not isinstance(policy_d, Mapping) or not isinstance(metadata, dict):
            raise ModelFormatError(f"{where}: 'policy' and 'metadata' must be objects")
        features = _get_list(d, "features", where)
        trees = [
            Tree.from_dict(t, f"{where}: trees[{k}]") for k, t in enumerate(_get_list(d, "trees", where))
        ]
        model = cls(
            _get_str(d, "name", where),
            features,
            trees,
            base_score=_get_real(d, "base_score", where),
            link="logit" if link == "logit" else "identity",
            output="probability" if output == "probability" else "raw",
            domain=domain,
            strict=split == "<",
            policy=BandPolicy.from_dict(policy_d, f"{where}: policy"),
            precision=_get_real(d, "precision", where),
            snap_zero=d["snap_zero"],
            metadata=metadata,
            grids=_grids_from_dict(d.get("grids", {}), where),
        )
        if "encoded" in d:
            enc = d["encoded"]
            if not isinstance(enc, Mapping):
                raise ModelFormatError(f"{where}: 'encoded' must be an object")
            _check_keys(enc, f"{where}: encoded", {"leaf_frac_bits", "cutoffs"})
            stored = (_get_int(enc, "leaf_frac_bits", where), _get_list(enc, "cutoffs", where))
            if stored != (model.leaf_frac_bits, list(model.encoded_cutoffs)):
                raise ModelFormatError(
                    f"{where} {model.name!r}: the stored integer parameters differ from those recomputed; "
                    "the file was edited or written by an incompatible version"
                )
        return model

    @classmethod
    def example(cls) -> TreeEnsemble:
        """Two depth-2 trees over three features (XGBoost rule), for the conformance tests."""
        t0 = Tree(
            feature=(0, 1, -1, -1, 2, -1, -1),
            threshold=(5000.0, 30.0, 0.0, 0.0, 0.5, 0.0, 0.0),
            left=(1, 2, -1, -1, 5, -1, -1),
            right=(4, 3, -1, -1, 6, -1, -1),
            default_left=(True, False, False, False, True, False, False),
            missing=("nan",) * 7,
            value=(0.0, 0.4, -0.1, 0.0, 0.0, -0.3, 0.05),
        )
        t1 = Tree(
            feature=(1, -1, -1),
            threshold=(45.0, 0.0, 0.0),
            left=(1, -1, -1),
            right=(2, -1, -1),
            default_left=(False, False, False),
            missing=("nan",) * 3,
            value=(0.0, 0.2, -0.25),
        )
        return cls(
            "example-trees",
            ("income", "age", "has_default"),
            (t0, t1),
            base_score=-0.5,
            link="logit",
            output="probability",
            domain="float32",
            strict=True,
            policy=BandPolicy((0.1, 0.3, 0.6)),
        )

    def describe(self) -> str:
        """A multi-line summary; it shows sizes and the band policy, never thresholds or leaves."""
        rule = "x < t" if self.strict else "x <= t"
        lines = [
            f"model {self.name} (tree ensemble)",
            f"  link {self.link}, output {self.output}, bands on {self.policy.output}",
            f"  trees {self.n_trees}, depth {self.depth} (padded), features {self.n_features}",
            f"  split rule {rule} in {self.domain}{', |x| <= 1e-35 read as 0' if self.snap_zero else ''}, "
            f"keys {self.key_bits} bits{' (declared grids)' if self._all_grids else ''}",
            f"  leaf scale 2^{self.leaf_frac_bits}, max error {self.max_abs_error:.3g} "
            f"(precision {self.precision:g}), margin {self.margin_bits} bits",
        ]
        if self.n_categories:
            libs = " and ".join(
                {"lightgbm": "LightGBM", "xgboost": "XGBoost"}[r]
                for r in CATEGORY_RULES
                if r in self.category_rules.values()
            )
            lines.append(f"  categorical features {len(self.n_categories)} ({libs} category codes)")
        lines += self.policy.describe(self.policy.output)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"TreeEnsemble(name={self.name!r}, trees={self.n_trees}, depth={self.depth}, "
            f"features={self.n_features})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TreeEnsemble):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


def _lightgbm_int(x: float) -> int:
    """``static_cast<int>(x)`` as LightGBM's x86-64 build computes it (cvttsd2si): truncation
    toward zero, and INT_MIN for NaN, +-inf and anything outside the int range."""
    if math.isnan(x) or not -(2.0**31) < x < 2.0**31:
        return -(2**31)
    return math.trunc(x)


def _grids_from_dict(d: object, where: str) -> dict[str, Grid]:
    if not isinstance(d, Mapping):
        raise ModelFormatError(f"{where}: 'grids' must be an object of feature name to grid")
    return {str(n): Grid.from_dict(g, f"{where}: grids[{n!r}]") for n, g in d.items()}


def _signed_bits(lo: int, hi: int) -> int:
    """The smallest two's-complement width holding every integer in [lo, hi]."""
    return max((~lo).bit_length() if lo < 0 else 0, hi.bit_length() if hi > 0 else 0) + 1


def _round_up(x: float, steps: int = 1) -> float:
    """``x`` moved ``steps`` doubles toward +inf: an upper bound on a value that a few correctly
    rounded float operations on non-negative terms computed as ``x``."""
    for _ in range(steps):
        x = math.nextafter(x, math.inf)
    return x


def _upper_float(q: Fraction) -> float:
    """The smallest double >= the non-negative rational ``q`` (inf beyond the double range)."""
    try:
        x = float(q)
    except OverflowError:
        return math.inf
    return x if Fraction(x) >= q else math.nextafter(x, math.inf)


def _half_ulp32(bound: Fraction) -> Fraction:
    """Half the float32 spacing at ``bound`` (> 0): the largest rounding error of a float32
    addition whose exact result has magnitude at most ``bound`` (the spacing never decreases with
    the magnitude). Below 2^-126 it overstates the error: such sums are exact."""
    e = bound.numerator.bit_length() - bound.denominator.bit_length()
    if Fraction(2) ** e > bound:
        e -= 1  # now 2^e <= bound < 2^(e+1): float32 spacing 2^(e-23) there
    return Fraction(2) ** (e - 24)


def _float32_sum_error(base_score: float, leaves: Sequence[Sequence[float]]) -> float:
    """A bound on |XGBoost's float32 margin - the exact sum| for every row (module docstring).

    XGBoost starts a row's margin at the base margin and adds each tree's leaf in tree order, in
    float32 (``predict(output_margin=True)``, bit for bit). With ``M_k = |b| + sum_(t<=k) max|leaf_t|``
    and ``e_k`` the bound after k trees, the exact sum of the k-th addition is at most
    ``M_k + e_(k-1)`` in magnitude, so it rounds by at most half a float32 ulp there:
    ``e_k = e_(k-1) + ulp32(M_k + e_(k-1)) / 2``. A base or leaf that is not a float32 (never
    from the importer, which casts them) adds its own conversion error |v - f32(v)|.
    """
    f32 = np.float32
    total = Fraction(0)
    base32 = Fraction(float(f32(base_score)))
    total += abs(Fraction(base_score) - base32)
    m = abs(base32)
    for values in leaves:
        total += max(abs(Fraction(v) - Fraction(float(f32(v)))) for v in values)
        m += max(abs(Fraction(float(f32(v)))) for v in values)
    if m >= Fraction(2) ** 128:
        return math.inf  # a float32 sum could overflow
    e = Fraction(0)
    m = abs(base32)
    for values in leaves:
        m += max(abs(Fraction(float(f32(v)))) for v in values)
        if m + e > 0:
            e += _half_ulp32(m + e)
    return _upper_float(total + e)


def _float64_sum_error(base_score: float, leaves: Sequence[Sequence[float]]) -> float:
    """A bound on |a float64 library's margin - the exact sum| for every row (module docstring):
    ``gamma_(n+2) T``, ``gamma_k = k u / (1 - k u)``, u = 2^-53, n trees,
    T = |base| + sum over trees of the largest |leaf|."""
    n = len(leaves) + 2
    u = Fraction(1, 2**53)
    top = abs(Fraction(base_score))
    for values in leaves:
        top += max(abs(Fraction(v)) for v in values)
    return _upper_float(n * u / (1 - n * u) * top)
