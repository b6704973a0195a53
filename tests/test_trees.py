"""Tree ensembles: float keys, padding, the integer path, each importer against its library's output."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from hypothesis import given, settings
from hypothesis import strategies as st
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

from blindscore.data.german import NUMERIC_RANGES, load_german_credit
from blindscore.errors import InvalidInputError, ModelFormatError
from blindscore.importers.lightgbm import ensemble_from_lightgbm_text, read_lightgbm
from blindscore.importers.sklearn_trees import ensemble_from_sklearn
from blindscore.importers.xgboost import load_ubjson, read_xgboost
from blindscore.models.policy import BandPolicy, logit
from blindscore.models.trees import (
    KZERO_THRESHOLD,
    MAX_DEPTH,
    Tree,
    TreeEnsemble,
    encode_value,
    float_key,
    key_bits,
    key_bounds,
    threshold_key,
)

PROB = BandPolicy((0.2, 0.5, 0.8))
RAW = BandPolicy((0.2, 0.5), output="raw")


# ---------------------------------------------------------------------------------------------
# Data: synthetic and German credit, with missing values, integer features and signed zeros


def _synthetic() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 4))
    x[:, 3] = np.round(x[:, 3] * 2)  # integer-valued: rows land exactly on thresholds
    y = (x[:, 0] + x[:, 1] * x[:, 2] + 0.3 * x[:, 3] > 0).astype(np.int64)
    x[::7, 1] = np.nan
    x[::11, 3] = np.nan
    x[::5, 2] = 0.0
    return x, y


def _german() -> tuple[np.ndarray, np.ndarray]:
    rows, target = load_german_credit()
    cols = sorted(NUMERIC_RANGES)
    x = np.array([[float(r[c]) for c in cols] for r in rows])
    rng = np.random.default_rng(3)
    x[rng.random(x.shape) < 0.05] = np.nan
    return x[:400], target[:400]


DATASETS = {"synthetic": _synthetic, "german": _german}


def _probe_rows(model: TreeEnsemble, x: np.ndarray) -> np.ndarray:
    """x plus deliberate ties: for every split, rows whose feature equals the threshold and its
    neighbours in the comparison domain; plus NaN, -0.0, +0.0 and LightGBM's tiny-zero values."""
    base = x[0].copy()
    extra = []
    for tree in model.trees:
        for f, t in zip(tree.feature, tree.threshold, strict=True):
            if f < 0 or not math.isfinite(t):
                continue
            t32 = np.float32(t)
            for v in (
                t,
                float(t32),
                float(np.nextafter(t32, np.float32(np.inf))),
                float(np.nextafter(t32, np.float32(-np.inf))),
                math.nextafter(t, math.inf),
                math.nextafter(t, -math.inf),
            ):
                row = base.copy()
                row[f] = v
                extra.append(row)
    for v in (np.nan, -0.0, 0.0, 1e-36, -1e-40, KZERO_THRESHOLD, math.nextafter(KZERO_THRESHOLD, 1.0)):
        for f in range(x.shape[1]):
            row = base.copy()
            row[f] = v
            extra.append(row)
    extra.append(np.full(x.shape[1], np.nan))
    return np.vstack([x, np.array(extra)])


def _check(
    model: TreeEnsemble,
    rows: np.ndarray,
    lib_margin: np.ndarray,
    lib_leaves: np.ndarray | None,
    atol: np.ndarray | float = 0.0,
) -> None:
    """Leaves, margins, the integer path and bands agree with the library on every row."""
    ours = np.array([model.margin(list(r)) for r in rows])
    if lib_leaves is not None:
        nodes = np.array([model.leaf_nodes(list(r)) for r in rows])
        assert (nodes == lib_leaves).all()
    np.testing.assert_allclose(ours, lib_margin, rtol=1e-6, atol=atol)
    scale = 2.0**-model.leaf_frac_bits
    enc = [model.encoded_margin(model.encode_row(list(r))) for r in rows]
    fixed = np.array(enc) * scale
    assert np.max(np.abs(fixed - ours)) <= model.max_abs_error
    cut = np.array(model.margin_cutoffs)
    far = np.min(np.abs(lib_margin[:, None] - cut[None, :]), axis=1) > model.max_abs_error + np.max(atol)
    assert far.mean() > 0.9
    lib_bands = np.searchsorted(cut, lib_margin, side="right")
    our_bands = np.array([model.band_from_encoded(model.encode_row(list(r))) for r in rows])
    assert (our_bands[far] == lib_bands[far]).all()
    plain = np.array([model.band(list(r)) for r in rows])
    assert (plain[far] == lib_bands[far]).all()
    if model.output == "probability":
        pred = np.array([model.predict(list(r)) for r in rows[:20]])
        assert (np.searchsorted(model.policy.cutoffs, pred, side="right") == plain[:20]).all()


# ---------------------------------------------------------------------------------------------
# Float keys


def test_float_key_vectors() -> None:
    assert float_key(1.0, "float32") == 0x3F800000
    assert float_key(-1.0, "float32") == -0x3F800000
    assert float_key(1.0, "float64") == 0x3FF0000000000000
    assert float_key(-0.0, "float32") == float_key(0.0, "float32") == 0
    assert float_key(-0.0, "float64") == 0
    assert float_key(5e-324, "float64") == 1
    assert float_key(5e-324, "float32") == 0  # rounds to zero in float32
    assert float_key(1e39, "float32") == key_bounds("float32")[1] == 0x7F800000
    assert float_key(-math.inf, "float64") == -0x7FF0000000000000
    assert key_bits("float32") == 32 and key_bits("float64") == 64
    lo, hi = key_bounds("float64")
    assert lo - 1 >= -(2**63) and hi < 2**63
    with pytest.raises(InvalidInputError, match=r"^NaN has no key; encode it as a missing value$"):
        float_key(math.nan, "float64")
    with pytest.raises(
        InvalidInputError, match=r"^domain must be one of \['float32', 'float64'\], got 'float16'$"
    ):
        float_key(1.0, "float16")
    assert encode_value(None, "float64") == (0, 1)
    assert encode_value(math.nan, "float32") == (0, 1)
    assert encode_value(1e-36, "float64", snap_zero=True) == (0, 0)
    assert encode_value(1e-36, "float64") == (float_key(1e-36, "float64"), 0)


def test_threshold_key_vectors() -> None:
    one32 = 0x3F800000
    assert threshold_key(1.0, "float32", strict=True) == one32 - 1
    assert threshold_key(1.0, "float32", strict=False) == one32
    # A double between two float32 values: x32 <= t iff x32 <= the float32 below t.
    t = 1.0 + 2.0**-30
    assert threshold_key(t, "float32", strict=False) == one32
    assert threshold_key(t, "float32", strict=True) == one32
    assert threshold_key(-math.inf, "float64", strict=True) == key_bounds("float64")[0] - 1
    assert threshold_key(math.inf, "float64", strict=False) == key_bounds("float64")[1]
    assert threshold_key(1e300, "float32", strict=False) == float_key(3.4028234663852886e38, "float32")
    with pytest.raises(InvalidInputError, match=r"^a threshold cannot be NaN$"):
        threshold_key(math.nan, "float64", strict=False)


_ANY_FLOAT = st.floats(allow_nan=False, allow_infinity=True)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_ANY_FLOAT, _ANY_FLOAT, st.sampled_from(["float32", "float64"]))
def test_float_key_is_monotone(a: float, b: float, domain: str) -> None:
    cast = (lambda v: float(np.float32(v))) if domain == "float32" else (lambda v: v)
    with np.errstate(over="ignore"):
        ca, cb = cast(a), cast(b)
    assert (ca <= cb) == (float_key(a, domain) <= float_key(b, domain))
    assert (ca == cb) == (float_key(a, domain) == float_key(b, domain))
    assert float_key(-a, domain) == -float_key(a, domain)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_ANY_FLOAT, _ANY_FLOAT, st.booleans(), st.sampled_from(["float32", "float64"]))
def test_threshold_key_decides_the_split(x: float, t: float, strict: bool, domain: str) -> None:
    with np.errstate(over="ignore"):
        cx = float(np.float32(x)) if domain == "float32" else x
    expected = cx < t if strict else cx <= t
    assert (float_key(x, domain) <= threshold_key(t, domain, strict)) == expected


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.floats(width=32, allow_nan=False), st.integers(-3, 3))
def test_threshold_key_near_float32_threshold(t: float, step: int) -> None:
    x = np.float32(t)
    for _ in range(abs(step)):
        x = np.nextafter(x, np.float32(np.inf if step > 0 else -np.inf))
    xv = float(x)
    assert (float_key(xv, "float32") <= threshold_key(t, "float32", True)) == (xv < t)
    assert (float_key(xv, "float32") <= threshold_key(t, "float32", False)) == (xv <= t)


# ---------------------------------------------------------------------------------------------
# The model itself


def _chain(depth: int) -> Tree:
    """A chain of ``depth`` splits on feature 0: split i (node 2i, threshold i) sends x > i right to
    leaf 2i+1 (value i) and x <= i left to the next split; the last left child is leaf 2 depth."""
    n = 2 * depth + 1
    feature, thr, left, right, value = [-1] * n, [0.0] * n, [-1] * n, [-1] * n, [0.0] * n
    for i in range(depth):
        s = 2 * i
        feature[s], thr[s], left[s], right[s] = 0, float(i), s + 2, s + 1
        value[s + 1] = float(i)
    value[2 * depth] = -1.0
    return Tree(
        tuple(feature), tuple(thr), tuple(left), tuple(right), (False,) * n, ("nan",) * n, tuple(value)
    )


def _model(trees: list[Tree], **kw: object) -> TreeEnsemble:
    args: dict = {
        "base_score": 0.0,
        "link": "identity",
        "output": "raw",
        "domain": "float64",
        "strict": False,
    }
    args["policy"] = RAW
    args.update(kw)
    return TreeEnsemble("t", ("a", "b"), trees, **args)


def test_padding_keeps_the_function_and_depth_is_capped() -> None:
    model = _model([_chain(4), Tree.leaf(0.25)])
    assert model.depth == 4
    assert model.shape()["n_trees"] == 2 and model.shape()["depth"] == 4
    padded = model.padded_trees()
    assert all(len(p["leaf"]) == 16 and len(p["key"]) == 15 for p in padded)
    for x in (-2.0, 0.0, 0.5, 1.0, 2.5, 3.0, 9.0, math.nan):
        enc = model.encode_row([x, 0.0])
        assert model.encoded_margin(enc) == round(model.margin([x, 0.0]) * 2**model.leaf_frac_bits)
    _model([_chain(MAX_DEPTH)])
    with pytest.raises(ModelFormatError, match=f"depth {MAX_DEPTH + 1}.*depth <= {MAX_DEPTH}"):
        _model([_chain(MAX_DEPTH + 1)])


_SPECIAL = st.sampled_from([0.0, -0.0, 1e-36, -1e-40, KZERO_THRESHOLD, -KZERO_THRESHOLD, math.nan, math.inf])
_VALUE = st.one_of(_SPECIAL, st.floats(-4, 4), st.integers(-3, 3).map(float))


@st.composite
def _tree_and_rows(draw: st.DrawFn) -> tuple[TreeEnsemble, list[list[float]]]:
    """A random complete depth-3 tree over 2 features with random thresholds (often equal to the
    values drawn for rows), missing kinds and default directions, and rows to score."""
    thresholds = [
        draw(st.one_of(_VALUE.filter(lambda v: not math.isnan(v)), st.just(-math.inf))) for _ in range(7)
    ]
    feature = tuple(draw(st.integers(0, 1)) for _ in range(7)) + (-1,) * 8
    tree = Tree(
        feature=feature,
        threshold=(*thresholds, *([0.0] * 8)),
        left=tuple(2 * i + 1 for i in range(7)) + (-1,) * 8,
        right=tuple(2 * i + 2 for i in range(7)) + (-1,) * 8,
        default_left=tuple(draw(st.booleans()) for _ in range(7)) + (False,) * 8,
        missing=tuple(draw(st.sampled_from(["nan", "zero", "none"])) for _ in range(7)) + ("nan",) * 8,
        value=(0.0,) * 7 + tuple(float(k) for k in range(8)),
    )
    model = _model(
        [tree],
        domain=draw(st.sampled_from(["float32", "float64"])),
        strict=draw(st.booleans()),
        snap_zero=draw(st.booleans()),
    )
    rows = [[draw(st.one_of(_VALUE, st.sampled_from(thresholds))) for _ in range(2)] for _ in range(8)]
    return model, rows


@settings(max_examples=150, deadline=None, derandomize=True)
@given(_tree_and_rows())
def test_integer_path_follows_the_float_rule(case: tuple[TreeEnsemble, list[list[float]]]) -> None:
    model, rows = case
    for row in rows:
        (leaf,) = model.leaf_values(row)
        assert model.encoded_leaves(model.encode_row(row)) == [round(leaf * 2**model.leaf_frac_bits)]


def test_fixed_point_error_bound_and_scale() -> None:
    rng = np.random.default_rng(1)
    trees = [Tree.leaf(float(v)) for v in rng.normal(size=37)]
    model = _model(trees, base_score=0.123456789, precision=1e-5)
    s = model.leaf_frac_bits
    assert 37 * 2.0 ** -(s + 1) <= 1e-5 < 37 * 2.0**-s
    exact = math.fsum([0.123456789, *(t.value[0] for t in trees)])
    err = abs(model.encoded_margin(model.encode_row([0.0, 0.0])) * 2.0**-s - exact)
    assert err <= 37 * 2.0 ** -(s + 1) <= model.max_abs_error


def test_cutoffs_map_through_the_link() -> None:
    m = TreeEnsemble.example()
    assert m.margin_cutoffs == tuple(logit(p) for p in (0.1, 0.3, 0.6))
    s = m.leaf_frac_bits
    for c, ce in zip(m.margin_cutoffs, m.encoded_cutoffs, strict=True):
        assert (ce - 1) * 2.0**-s < c <= ce * 2.0**-s
    with pytest.raises(ModelFormatError, match="probabilit"):
        _model([Tree.leaf(0.0)], policy=PROB)


def test_round_trip_and_strict_load() -> None:
    m = TreeEnsemble.example()
    d = json.loads(json.dumps(m.to_dict()))
    assert TreeEnsemble.from_dict(d) == m
    inf_model = _model(
        [
            Tree(
                (0, -1, -1),
                (math.inf, 0.0, 0.0),
                (1, -1, -1),
                (2, -1, -1),
                (True, False, False),
                ("nan",) * 3,
                (0.0, 1.0, 2.0),
            )
        ]
    )
    d2 = json.loads(json.dumps(inf_model.to_dict(), allow_nan=False))
    assert TreeEnsemble.from_dict(d2) == inf_model
    for edit, message in (
        ({"extra": 1}, r"unknown field\(s\) \['extra'\]"),
        ({"format": 2}, "unsupported format 2; this version reads format 1"),
        ({"split": "<<"}, "split must be '<' or '<=', got '<<'"),
    ):
        with pytest.raises(ModelFormatError, match=f"^tree model: {message}$"):
            TreeEnsemble.from_dict({**d, **edit})
    bad = json.loads(json.dumps(d))
    bad["encoded"]["cutoffs"][0] += 1
    with pytest.raises(ModelFormatError, match="recomputed"):
        TreeEnsemble.from_dict(bad)
    bad = json.loads(json.dumps(d))
    bad["trees"][0]["left"][0] = 0
    with pytest.raises(ModelFormatError, match=r"twice|outside"):
        TreeEnsemble.from_dict(bad)


def test_describe_and_repr_hide_thresholds_and_leaves() -> None:
    m = TreeEnsemble.example()
    text = m.describe() + repr(m) + json.dumps(m.shape())
    for t in m.trees:
        for v in (*t.threshold, *t.value):
            if v not in (0.0,):
                assert fmt(v) not in text
    assert "trees 2" in m.describe() and "depth 2" in m.describe()


def fmt(v: float) -> str:
    return repr(v).rstrip("0").rstrip(".")


def test_encoded_rows_are_checked() -> None:
    m = TreeEnsemble.example()
    with pytest.raises(
        InvalidInputError,
        match=r"^an encoded row has 9 integers \(key, missing bit, zero bit per numeric feature, C",
    ):
        m.encoded_margin([0, 0, 0, 0])
    with pytest.raises(
        InvalidInputError,
        match=r"^an encoded row has 9 integers \(key, missing bit, zero bit per numeric feature, C",
    ):
        m.encoded_margin([5, 1, 0, 0, 0, 0])  # missing with a nonzero key
    with pytest.raises(
        InvalidInputError, match=r"^feature 'age': expected a number or a missing value, got True$"
    ):
        m.margin({"income": 1.0, "age": True, "has_default": 0.0})


# ---------------------------------------------------------------------------------------------
# XGBoost


def _xgb_leaves_margin(booster: xgb.Booster, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dm = xgb.DMatrix(rows)
    return booster.predict(dm, output_margin=True).astype(np.float64), booster.predict(dm, pred_leaf=True)


def _f32_slack(model: TreeEnsemble) -> float:
    # XGBoost accumulates the margin in float32: each of n_trees + 1 additions may round by half
    # an ulp of a partial sum bounded by the sum of the largest |leaf| values.
    top = abs(model.base_score) + sum(max(abs(v) for v in t.value) for t in model.trees)
    return (model.n_trees + 2) * top * 2.0**-24


@pytest.mark.parametrize("data", sorted(DATASETS))
@pytest.mark.parametrize("objective", ["binary:logistic", "reg:squarederror"])
def test_xgboost_matches_library(tmp_path: Path, data: str, objective: str) -> None:
    x, y = DATASETS[data]()
    booster = xgb.train(
        {"objective": objective, "max_depth": 3, "eta": 0.3, "nthread": 1, "seed": 0},
        xgb.DMatrix(x, label=y),
        8,
    )
    booster.save_model(tmp_path / "m.json")
    booster.save_model(tmp_path / "m.ubj")
    policy = PROB if objective == "binary:logistic" else RAW
    model = read_xgboost(tmp_path / "m.json", policy=policy)
    assert read_xgboost(tmp_path / "m.ubj", policy=policy, name="m") == model
    assert model.domain == "float32" and model.strict
    rows = _probe_rows(model, x)
    margin, leaves = _xgb_leaves_margin(booster, rows)
    _check(model, rows, margin, leaves, atol=_f32_slack(model))
    if objective == "binary:logistic":
        p = booster.predict(xgb.DMatrix(rows[:50]))
        np.testing.assert_allclose([model.predict(list(r)) for r in rows[:50]], p, rtol=1e-5)


def test_xgboost_json_and_ubjson_decode_to_the_same_model(tmp_path: Path) -> None:
    x, y = _synthetic()
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 2, "nthread": 1}, xgb.DMatrix(x, label=y), 3
    )
    booster.save_model(tmp_path / "m.json")
    booster.save_model(tmp_path / "m.ubj")
    doc = json.loads((tmp_path / "m.json").read_text())
    ubj = load_ubjson((tmp_path / "m.ubj").read_bytes())
    assert set(doc["learner"]) == set(ubj["learner"])
    t_json = doc["learner"]["gradient_booster"]["model"]["trees"][0]
    t_ubj = ubj["learner"]["gradient_booster"]["model"]["trees"][0]
    assert t_json["left_children"] == t_ubj["left_children"]
    assert [np.float32(v) for v in t_json["split_conditions"]] == [
        np.float32(v) for v in t_ubj["split_conditions"]
    ]
    for bad in (
        b"{",
        b"{L\x00\x00\x00\x00\x00\x00\x00\x05ab",
        b"[$d#L\xff\xff\xff\xff\xff\xff\xff\xff",
        b"{}}",
    ):
        with pytest.raises(
            ModelFormatError,
            match=r"^UBJSON: (impossible length -?\d+|trailing bytes after the document|truncated document)$",
        ):
            load_ubjson(bad)
    assert load_ubjson(b"[$i#U\x03\x01\x02\xff]"[:-1]) == [1, 2, -1]
    assert load_ubjson(b"{U\x01aSU\x02hi}") == {"a": "hi"}


def _one_sentence(message: str) -> None:
    assert message and ". " not in message.rstrip(".") and "\n" not in message


def _xgb_refusal(tmp_path: Path, params: dict, label: np.ndarray | None = None, cat: bool = False) -> str:
    x, y = _synthetic()
    if cat:
        frame = pd.DataFrame({"a": x[:, 0], "c": pd.Categorical(np.where(x[:, 2] > 0, "u", "v"))})
        dm = xgb.DMatrix(frame, label=(x[:, 2] > 0).astype(int), enable_categorical=True)
    else:
        dm = xgb.DMatrix(x, label=y if label is None else label)
    booster = xgb.train({"nthread": 1, "max_depth": 2, **params}, dm, 2)
    booster.save_model(tmp_path / "m.json")
    with pytest.raises(ModelFormatError) as info:
        read_xgboost(tmp_path / "m.json", policy=PROB)
    _one_sentence(str(info.value))
    return str(info.value)


@pytest.mark.filterwarnings("ignore::UserWarning")  # xgboost: "max_depth" unused by gblinear
def test_xgboost_refusals(tmp_path: Path) -> None:
    x, _ = _synthetic()
    three = (np.nan_to_num(x[:, 0]) * 2).astype(int) % 3
    assert "multi-class" in _xgb_refusal(tmp_path, {"objective": "multi:softprob", "num_class": 3}, three)
    assert "count:poisson" in _xgb_refusal(tmp_path, {"objective": "count:poisson"})
    assert "gblinear" in _xgb_refusal(tmp_path, {"objective": "binary:logistic", "booster": "gblinear"})
    assert "dart" in _xgb_refusal(tmp_path, {"objective": "binary:logistic", "booster": "dart"})
    # Integer-coded categorical splits are supported (tests/test_xgboost_categorical.py); a pandas
    # categorical column with string categories, which the model stores and re-codes, is refused.
    assert "feature 'c' was trained from a categorical column" in _xgb_refusal(
        tmp_path, {"objective": "binary:logistic", "tree_method": "hist", "max_cat_to_onehot": 1}, cat=True
    )


# ---------------------------------------------------------------------------------------------
# LightGBM

_LGB_CASES = {
    "binary": {"objective": "binary"},
    "regression": {"objective": "regression"},
    "zero-as-missing": {"objective": "binary", "zero_as_missing": True},
    "no-missing": {"objective": "binary", "use_missing": False},
}


@pytest.mark.parametrize("data", sorted(DATASETS))
@pytest.mark.parametrize("case", sorted(_LGB_CASES))
def test_lightgbm_matches_library(tmp_path: Path, data: str, case: str) -> None:
    x, y = DATASETS[data]()
    params = {**_LGB_CASES[case], "num_leaves": 8, "verbose": -1, "min_data_in_leaf": 5, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(x, y), 8)
    booster.save_model(tmp_path / "m.txt")
    policy = PROB if params["objective"] == "binary" else RAW
    model = read_lightgbm(tmp_path / "m.txt", policy=policy)
    assert model.domain == "float64" and not model.strict and model.snap_zero
    if case == "zero-as-missing":
        assert any("zero" in t.missing for t in model.trees)
    rows = _probe_rows(model, x)
    raw = booster.predict(rows, raw_score=True)
    first_leaf = np.array([t.leaves()[0] for t in model.trees])
    leaves = booster.predict(rows, pred_leaf=True) + first_leaf
    _check(model, rows, raw, leaves)


def test_lightgbm_random_forest_averages(tmp_path: Path) -> None:
    x, y = _synthetic()
    params = {"objective": "regression", "boosting": "rf", "bagging_freq": 1, "bagging_fraction": 0.8}
    booster = lgb.train({**params, "num_leaves": 6, "verbose": -1, "num_threads": 1}, lgb.Dataset(x, y), 5)
    model = ensemble_from_lightgbm_text(booster.model_to_string(), policy=RAW)
    rows = _probe_rows(model, x)
    np.testing.assert_allclose(booster.predict(rows, raw_score=True) / 5, booster.predict(rows), rtol=1e-12)
    _check(model, rows, booster.predict(rows), None)


def _lgb_refusal(params: dict, label: np.ndarray | None = None, **data_kw: object) -> str:
    x, y = _synthetic()
    x = np.nan_to_num(x)
    x[:, 3] = np.abs(x[:, 3])
    ds = lgb.Dataset(x, y if label is None else label, **data_kw)
    booster = lgb.train(
        {"verbose": -1, "num_leaves": 4, "num_threads": 1, "min_data_per_group": 5, **params}, ds, 2
    )
    with pytest.raises(ModelFormatError) as info:
        ensemble_from_lightgbm_text(booster.model_to_string(), policy=PROB)
    _one_sentence(str(info.value))
    return str(info.value)


def test_lightgbm_refusals() -> None:
    x, _ = _synthetic()
    three = (np.nan_to_num(x[:, 0]) * 2).astype(int) % 3
    assert "multi-class" in _lgb_refusal({"objective": "multiclass", "num_class": 3}, three)
    assert "poisson" in _lgb_refusal({"objective": "poisson"})
    # Categorical splits are supported: tests/test_lightgbm_categorical.py, refusals included.
    assert "linear" in _lgb_refusal({"objective": "regression", "linear_tree": True})
    assert "sigmoid" in _lgb_refusal({"objective": "binary", "sigmoid": 2.0})
    with pytest.raises(ModelFormatError, match="version"):
        ensemble_from_lightgbm_text("hello", policy=PROB)


# ---------------------------------------------------------------------------------------------
# scikit-learn

_SK: dict[str, Callable[[], object]] = {
    "DecisionTreeClassifier": lambda: DecisionTreeClassifier(max_depth=4, random_state=0),
    "DecisionTreeRegressor": lambda: DecisionTreeRegressor(max_depth=4, random_state=0),
    "RandomForestClassifier": lambda: RandomForestClassifier(5, max_depth=3, random_state=0),
    "RandomForestRegressor": lambda: RandomForestRegressor(5, max_depth=3, random_state=0),
    "ExtraTreesClassifier": lambda: ExtraTreesClassifier(5, max_depth=3, random_state=0),
    "ExtraTreesRegressor": lambda: ExtraTreesRegressor(5, max_depth=3, random_state=0),
    "GradientBoostingClassifier": lambda: GradientBoostingClassifier(
        n_estimators=6, max_depth=2, random_state=0
    ),
    "GradientBoostingRegressor": lambda: GradientBoostingRegressor(
        n_estimators=6, max_depth=2, random_state=0
    ),
    "HistGradientBoostingClassifier": lambda: HistGradientBoostingClassifier(max_iter=6, max_depth=3),
    "HistGradientBoostingRegressor": lambda: HistGradientBoostingRegressor(max_iter=6, max_depth=3),
}


@pytest.mark.parametrize("data", sorted(DATASETS))
@pytest.mark.parametrize("kind", sorted(_SK))
def test_sklearn_matches_library(data: str, kind: str) -> None:
    x, y = DATASETS[data]()
    if kind.startswith("Gradient"):  # the classic gradient boosting refuses NaN
        x = np.nan_to_num(x)
    est = _SK[kind]()
    est.fit(x, y)  # type: ignore[attr-defined]
    classifier = hasattr(est, "classes_")
    model = ensemble_from_sklearn(est, policy=PROB if classifier else RAW)
    rows = _probe_rows(model, x)
    keep = np.isnan(rows) if not kind.startswith("Gradient") else np.zeros(rows.shape, dtype=bool)
    rows = rows[np.all(keep | (np.abs(rows) < 3e38), axis=1)]
    if hasattr(est, "decision_function"):
        ref = est.decision_function(rows)
    elif classifier:
        ref = est.predict_proba(rows)[:, 1]
    else:
        ref = est.predict(rows)
    leaves = None
    if not kind.startswith("Hist"):  # HistGradientBoosting has no apply()
        leaves = np.asarray(est.apply(rows)).reshape(len(rows), -1)  # type: ignore[attr-defined]
    _check(model, rows, np.asarray(ref, dtype=np.float64), leaves)
    assert model.domain == ("float64" if kind.startswith("Hist") else "float32")


def test_sklearn_refusals() -> None:
    x, y = _synthetic()
    three = (np.nan_to_num(x[:, 0]) * 2).astype(int) % 3
    cases = [
        (DecisionTreeClassifier(max_depth=2).fit(x, three), "3 classes"),
        (
            GradientBoostingClassifier(loss="exponential", n_estimators=2).fit(np.nan_to_num(x), y),
            "exponential",
        ),
        (
            HistGradientBoostingRegressor(loss="poisson", max_iter=2).fit(x, np.abs(x[:, 0]) + 0.1 * y),
            "poisson",
        ),
        (
            HistGradientBoostingClassifier(max_iter=2, categorical_features=[3]).fit(
                np.abs(np.nan_to_num(x)), y
            ),
            "categorical",
        ),
        (
            GradientBoostingRegressor(n_estimators=2, init=DecisionTreeRegressor(max_depth=1)).fit(
                np.nan_to_num(x), y
            ),
            "init",
        ),
    ]
    for est, needle in cases:
        with pytest.raises(ModelFormatError) as info:
            ensemble_from_sklearn(est, policy=PROB if hasattr(est, "classes_") else RAW)
        assert needle in str(info.value)
        _one_sentence(str(info.value))
    with pytest.raises(ModelFormatError, match="not fitted"):
        ensemble_from_sklearn(DecisionTreeClassifier(), policy=PROB)


def test_struct_key_matches_numpy_view() -> None:
    for v in (1.5, -2.25, 3.4e38, -1e-45):
        bits = struct.unpack(">i", struct.pack(">f", v))[0]
        assert float_key(v, "float32") == (bits if bits >= 0 else -(bits & 0x7FFFFFFF))
