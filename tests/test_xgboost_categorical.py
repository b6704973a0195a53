"""XGBoost categorical splits: the category-code encoding, the importer and the blind pipeline,
each held to ``Booster.predict`` (``output_margin=True``, ``pred_leaf=True``) on float32 rows, edge
values (NaN, negatives, fractions, float32 rounding, codes beyond every set, huge values) included."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from blindscore.app.bench import model_rows
from blindscore.crypto.paillier import KeyPair
from blindscore.errors import InvalidInputError, ModelFormatError
from blindscore.importers.xgboost import ensemble_from_xgboost, read_xgboost
from blindscore.models import FeatureSpec, LinearModel
from blindscore.models.features import CategoryCodeFeature, XGBoostCategoryFeature
from blindscore.models.floatkeys import Grid
from blindscore.models.policy import BandPolicy
from blindscore.models.trees import Tree, TreeEnsemble
from blindscore.testing import (
    TwoParties,
    check_error_bound,
    check_round_trip,
    check_spec_is_public,
    sample_rows,
)

PROB = BandPolicy((0.2, 0.5, 0.8))
RAW = BandPolicy((-0.3, 0.3), output="raw")
NAMES = ["wide", "small", "tiny", "x", "y"]  # three categorical features, then two numeric ones
CATEGORICAL = [0, 1, 2]
TYPES = ["c", "c", "c", "q", "q"]
#: Values XGBoost reads in unusual ways: cast to float32, NaN takes the default direction, a
#: negative value (even -0.5) or one beyond every category goes left, int(x) truncates.
EDGES = (
    math.nan,
    -0.0,
    0.0,
    1e-40,
    -1e-40,
    -0.5,
    -0.999,
    -1.0,
    -1.5,
    0.9,
    1.0,
    2.7,
    2.9999999999,  # the float32 3.0: code 3, not 2
    5.9999999999,
    31.0,
    32.0,
    33.0,
    33.5,
    39.9,
    39.999999999,  # the float32 40.0: beyond the codes
    40.0,
    64.0,
    100.0,
    2.0**24,
    2.0**24 + 1,
    2.0**31 - 1,
    2.0**31,
    2.0**32 + 2,
    1e20,
    -1e20,
    3e38,
)


def _data(n: int = 1500, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Integer-coded categories (one with codes past 32, so bitfields of two words), numeric
    features with missing values; the label favours sets that hold code 0."""
    rng = np.random.default_rng(seed)
    wide = rng.integers(0, 40, n).astype(float)
    small = rng.integers(0, 6, n).astype(float)
    tiny = rng.integers(0, 3, n).astype(float)
    x = rng.normal(size=n)
    y = rng.normal(size=n)
    score = (
        1.5 * np.isin(wide, [0, 3, 5, 33, 35, 38])
        + np.isin(small, [0, 2])
        - 0.8 * (tiny == 0)
        + 0.5 * x
        - 0.3 * y
        + rng.normal(scale=0.5, size=n)
    )
    data = np.c_[wide, small, tiny, x, y]
    data[rng.random(n) < 0.08, 0] = np.nan
    data[rng.random(n) < 0.08, 1] = np.nan
    data[rng.random(n) < 0.1, 3] = np.nan
    return data, score


def _dmatrix(rows: np.ndarray, label: np.ndarray | None = None) -> xgb.DMatrix:
    return xgb.DMatrix(
        np.asarray(rows, dtype=np.float32),
        label=label,
        enable_categorical=True,
        feature_types=TYPES,
        feature_names=NAMES,
    )


def _train(objective: str, rounds: int = 12, depth: int = 4, onehot: int = 1) -> xgb.Booster:
    data, score = _data()
    label = (score > np.median(score)).astype(float) if objective == "binary:logistic" else score / 2
    params = {
        "objective": objective,
        "tree_method": "hist",
        "max_cat_to_onehot": onehot,  # 1: partition splits; large: one category per split
        "max_depth": depth,
        "nthread": 1,
        "seed": 0,
    }
    return xgb.train(params, _dmatrix(data, label), rounds)


@pytest.fixture(scope="module")
def boosters() -> dict[str, xgb.Booster]:
    return {
        "binary:logistic": _train("binary:logistic"),
        "reg:squarederror": _train("reg:squarederror"),
        "one-hot": _train("binary:logistic", onehot=64),
    }


def _doc(booster: xgb.Booster) -> dict[str, Any]:
    return json.loads(booster.save_raw("json"))


def _model(booster: xgb.Booster, objective: str) -> TreeEnsemble:
    policy = RAW if objective == "reg:squarederror" else PROB
    return ensemble_from_xgboost(_doc(booster), policy=policy)


def _rows(n: int = 300, seed: int = 9) -> np.ndarray:
    """Rows of the training distribution with about a third of the categorical cells an edge value,
    plus, for every categorical feature and edge value, a row that differs only there."""
    data, _ = _data(n, seed)
    rng = np.random.default_rng(seed)
    for f in CATEGORICAL:
        hit = rng.random(n) < 0.35
        data[hit, f] = rng.choice(np.array(EDGES), size=int(hit.sum()))
    extra = []
    for f in CATEGORICAL:
        for v in EDGES:
            row = data[0].copy()
            row[f] = v
            extra.append(row)
    return np.vstack([data, np.array(extra)])


def _sets(model: TreeEnsemble) -> dict[int, list[tuple[int, ...]]]:
    out: dict[int, list[tuple[int, ...]]] = {}
    for t in model.trees:
        for i, f in enumerate(t.feature):
            codes = t.category_set(i)
            if codes is not None:
                out.setdefault(f, []).append(codes)
    return out


def _f32_slack(model: TreeEnsemble) -> float:
    # As tests/test_trees.py: XGBoost accumulates the margin in float32, each of n_trees + 1
    # additions rounding by at most half an ulp of a partial sum bounded by the largest |leaves|.
    top = abs(model.base_score) + sum(max(abs(v) for v in t.value) for t in model.trees)
    return (model.n_trees + 2) * top * 2.0**-24


def _expected_code(v: float, n: int) -> int | None:
    """The code column XGBoost's rule names for a non-missing v (float32, negative or >= n: none)."""
    x = float(np.float32(v))
    return math.trunc(x) if 0.0 <= x < n else None


@pytest.mark.parametrize("objective", ["binary:logistic", "reg:squarederror", "one-hot"])
def test_margins_leaves_and_bands_match_xgboost(boosters: dict[str, xgb.Booster], objective: str) -> None:
    booster = boosters[objective]
    model = _model(booster, "reg:squarederror" if objective == "reg:squarederror" else "binary:logistic")
    sets = _sets(model)
    # The model exercises what the edge values probe: every categorical feature split on, sets
    # holding code 0 (where reading -0.5 as code 0 would go wrong), and for partition splits sets
    # past one 32-bit word.
    assert sorted(sets) == CATEGORICAL
    assert any(0 in s for f in CATEGORICAL for s in sets[f])
    if objective == "one-hot":
        assert all(len(s) == 1 for f in CATEGORICAL for s in sets[f])
    else:
        assert any(s[-1] >= 32 for s in sets[0]) and any(len(s) > 1 for s in sets[0])
    assert model.n_categories == {NAMES[f]: 1 + max(s[-1] for s in sets[f]) for f in CATEGORICAL}
    assert model.category_rules == {NAMES[f]: "xgboost" for f in CATEGORICAL}
    assert model.zero_bit == 0
    # NaN meets categorical nodes whose default is left and others whose default is right.
    defaults = {t.default_left[i] for t in model.trees for i in range(len(t.feature)) if t.category_set(i)}
    assert defaults == {True, False}
    rows = _rows()
    dm = _dmatrix(rows)
    lib = booster.predict(dm, output_margin=True).astype(np.float64)
    ours = np.array([model.margin(list(r)) for r in rows])
    atol = _f32_slack(model)
    np.testing.assert_allclose(ours, lib, rtol=1e-6, atol=atol)
    nodes = np.array([model.leaf_nodes(list(r)) for r in rows])
    assert (nodes == booster.predict(dm, pred_leaf=True)).all()
    cut = np.array(model.margin_cutoffs)
    far = np.min(np.abs(lib[:, None] - cut[None, :]), axis=1) > model.max_abs_error + atol
    assert far.mean() > 0.9
    lib_bands = np.searchsorted(cut, lib, side="right")
    for row, is_far, band in zip(rows, far, lib_bands, strict=True):
        encoded = model.encode_row(list(row))
        assert model.spec.check_encoded_row(encoded) == encoded
        fixed = math.ldexp(model.encoded_margin(encoded), -model.leaf_frac_bits)
        assert abs(fixed - model.margin(list(row))) <= model.max_abs_error
        if is_far:
            assert model.band_from_encoded(encoded) == model.band(list(row)) == band


@pytest.mark.parametrize("objective", ["binary:logistic", "one-hot"])
def test_each_edge_value_goes_where_xgboost_sends_it(
    boosters: dict[str, xgb.Booster], objective: str
) -> None:
    """Per categorical feature and edge value, the leaf of every tree equals XGBoost's, and the
    encoding sets the column XGBoost's code names, the missing column, or none."""
    booster = boosters[objective]
    model = _model(booster, "binary:logistic")
    base, _ = _data(40, 2)
    for f in CATEGORICAL:
        feature = model.spec.features[f]
        assert isinstance(feature, XGBoostCategoryFeature)
        n = feature.n_categories
        for v in EDGES:
            rows = base.copy()
            rows[:, f] = v
            lib = booster.predict(_dmatrix(rows), pred_leaf=True)
            assert (np.array([model.leaf_nodes(list(r)) for r in rows]) == lib).all(), (NAMES[f], v)
            if math.isnan(v):
                assert feature.encode(v) == [0] * n + [1]
            else:
                code = _expected_code(v, n)
                assert feature.encode(v) == [int(c == code) for c in range(n)] + [0], (NAMES[f], v)


def test_xgboost_category_feature_rule_and_refusals() -> None:
    f = XGBoostCategoryFeature("c", 4)
    expected = {
        -0.0: 0,
        0.9: 0,
        1e-40: 0,
        2.7: 2,
        2.9999999999: 3,  # float32 rounding first
        3.99: 3,
        "2": 2,
        "2.5": 2,
        np.float64(1.0): 1,
        np.float32(1.5): 1,
        np.int64(3): 3,
        3: 3,
    }
    for value, code in expected.items():
        assert f.encode(value) == [int(c == code) for c in range(4)] + [0], value
    for value in (None, "", " ", math.nan, np.nan, np.float32("nan")):
        assert f.encode(value) == [0, 0, 0, 0, 1], value
    # Negative (-0.5 too), at or beyond the codes, +-inf (which XGBoost's DMatrix refuses): go left
    # at every node, so no column.
    for value in (-0.5, -1e-40, -1.0, -1, 4.0, 3.9999999999, 4, 10**30, 2.0**31, 1e39, math.inf, -math.inf):
        assert f.encode(value) == [0, 0, 0, 0, 0], value
    for bad in (True, "abc", [1], object()):
        with pytest.raises(InvalidInputError, match="feature 'c'"):
            f.encode(bad)
    with pytest.raises(
        ModelFormatError, match=r"feature 'c': n_categories must be an integer in \[1, 65536\]"
    ):
        XGBoostCategoryFeature("c", 65537)
    spec = FeatureSpec((f, CategoryCodeFeature("d", 2)))
    again = FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and isinstance(again.features[0], XGBoostCategoryFeature)
    assert spec.to_dict()["features"][0] == {"type": "xgboost-category-code", "name": "c", "n_categories": 4}
    assert spec.encoded_names == ["c=0", "c=1", "c=2", "c=3", "c#missing", "d=0", "d=1"]
    assert spec.check_encoded_row([0, 0, 0, 0, 1, 0, 1]) == [0, 0, 0, 0, 1, 0, 1]
    with pytest.raises(InvalidInputError, match="feature 'c': category-code columns hold at most one 1"):
        spec.check_encoded_row([1, 0, 0, 0, 1, 0, 0])
    with pytest.raises(
        ModelFormatError, match=r"^feature spec: features\[0\]: unknown field\(s\) \['missing'\]"
    ):
        FeatureSpec.from_dict({**spec.to_dict(), "features": [{**f.to_dict(), "missing": True}]})
    with pytest.raises(
        ModelFormatError, match="feature 'c' is a xgboost-category-code feature, which tree ensembles use"
    ):
        LinearModel("lin", spec, (1.0,) * 7, 0.0, "logit", PROB)


def test_round_trip_public_spec_shape_and_ubjson(boosters: dict[str, xgb.Booster], tmp_path: Path) -> None:
    booster = boosters["binary:logistic"]
    model = _model(booster, "binary:logistic")
    check_round_trip(model)
    check_spec_is_public(model)
    check_error_bound(model, sample_rows(model, 100))  # the conformance sampler's values
    check_error_bound(model, model_rows(model, 50))  # the benchmark's rows
    d = model.to_dict()
    assert {t.get("category_rule") for t in d["trees"] if "categories" in t} == {"xgboost"}
    again = TreeEnsemble.from_dict(json.loads(json.dumps(d)))
    assert again == model and again.category_rules == model.category_rules
    booster.save_model(tmp_path / "m.json")
    booster.save_model(tmp_path / "m.ubj")
    assert read_xgboost(tmp_path / "m.ubj", policy=PROB, name="m") == read_xgboost(
        tmp_path / "m.json", policy=PROB, name="m"
    )
    assert not (tmp_path / "m.ubj").read_bytes().startswith(b'{"')  # UBJSON, not JSON text
    assert "categorical features 3 (XGBoost category codes)" in model.describe()
    # A categorical feature is C one-hot columns and a missing column, a numeric one (key,
    # missing, zero).
    widths = [len(f.columns) for f in model.spec.features]
    assert widths == [model.n_categories[n] + 1 for n in NAMES[:3]] + [3, 3]
    # The circuit is the numeric one: one value per padded node, value_bits from the key width.
    shape = model.circuit_shape()
    assert shape.values == model.n_trees * (2**model.depth - 1)
    assert shape.value_bits == model.key_bits + (3 if model.zero_bit else 1)
    stage = model.linear_stage()
    assert stage.value_bits == shape.value_bits
    # Every value of the linear stage lies in [0, 2^value_bits) for edge rows of every kind, and
    # its top bit and missing bit give the node's direction as the circuit reads them.
    for row in _rows(20)[::3]:
        enc = model.encode_row(list(row))
        for out in stage.outputs:
            v = out.offset + sum(w * enc[c] for c, w in out.terms)
            assert 0 <= v < 1 << stage.value_bits


def test_the_blind_pipeline_bands_equal_plaintext(paillier_keypair: KeyPair) -> None:
    booster = _train("binary:logistic", rounds=4, depth=3)
    model = _model(booster, "binary:logistic")
    assert model.n_categories
    parties = TwoParties(paillier_keypair)
    base, _ = _data(6, 4)
    rows = [list(base[0]), list(base[1]), list(base[2])]
    rows += [
        [math.nan, -0.5, 0.9, 0.1, 0.0],
        [0.0, 2.7, 100.0, math.nan, -1.0],
        [-1.0, 1e20, -0.0, 2.0, 0.5],
        [3.0, math.nan, 2.9999999999, -0.3, 1.0],
    ]
    lib = booster.predict(_dmatrix(np.array(rows)), output_margin=True)
    cut = np.array(model.margin_cutoffs)
    seen = set()
    for row, m in zip(rows, lib, strict=True):
        encoded = model.encode_row(row)
        band = parties.band(model, encoded)
        assert band == model.band_from_encoded(encoded) == model.band(row)
        if np.min(np.abs(cut - float(m))) > model.max_abs_error + _f32_slack(model):
            assert band == int(np.searchsorted(cut, float(m), side="right"))
        seen.add(band)
    assert len(seen) >= 2


def _categorical_tree(doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    trees = doc["learner"]["gradient_booster"]["model"]["trees"]
    for k, t in enumerate(trees):
        if t["categories_nodes"]:
            return k, t
    raise AssertionError("no categorical tree")


def _refused(doc: dict[str, Any], match: str) -> None:
    with pytest.raises(ModelFormatError, match=match) as info:
        ensemble_from_xgboost(doc, policy=PROB)
    message = str(info.value)
    assert "\n" not in message and ". " not in message.rstrip(".")


def test_refusals(boosters: dict[str, xgb.Booster]) -> None:
    booster = boosters["binary:logistic"]
    model = _model(booster, "binary:logistic")
    with pytest.raises(
        ModelFormatError, match=r"^feature 'wide' is categorical \(XGBoost category codes\); a grid"
    ):
        model.with_grids({"wide": Grid.parse("0:1:39")})
    assert model.with_grids({"x": Grid.parse("-4:0.5:4")}).grids  # numeric features still take grids
    doc = _doc(booster)
    k, tree = _categorical_tree(doc)
    node = tree["categories_nodes"][0]

    def edited(**fields: Any) -> dict[str, Any]:
        d = copy.deepcopy(doc)
        d["learner"]["gradient_booster"]["model"]["trees"][k].update(fields)
        return d

    _refused(
        edited(split_type=[2] * len(tree["split_type"])),
        rf"^XGBoost model: tree {k} has a malformed 'split_type'",
    )
    _refused(
        edited(split_type=tree["split_type"][:-1]), rf"^XGBoost model: tree {k} has a malformed 'split_type'"
    )
    _refused(
        edited(categories="0 1"),
        rf"^XGBoost model: tree {k} has a malformed 'categories' \(a list of integers\)",
    )
    _refused(
        edited(categories_nodes=tree["categories_nodes"][1:]),
        rf"^XGBoost model: tree {k} has malformed categorical fields",
    )
    _refused(
        edited(categories_sizes=[len(tree["categories"]) + 1] * len(tree["categories_nodes"])),
        rf"^XGBoost model: tree {k} has malformed categorical fields",
    )
    _refused(
        edited(categories=[-1] * len(tree["categories"])),
        rf"^XGBoost model: tree {k} has malformed categorical fields",
    )
    _refused(
        edited(categories_sizes=[0] * len(tree["categories_nodes"])),
        rf"^XGBoost model: tree {k} node {node} on feature '\w+' lists no category; "
        "the model file is malformed",
    )
    _refused(
        edited(categories=[65536] * len(tree["categories"])),
        rf"^XGBoost model: tree {k} splits feature '\w+' on category code 65536; "
        "codes up to 65535 are supported",
    )
    # A pandas categorical column with string categories: XGBoost >= 3.1 stores them and re-codes.
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=200), "s": pd.Categorical(rng.choice(["u", "v", "w"], 200))})
    dm = xgb.DMatrix(frame, label=(frame.s == "v").astype(int), enable_categorical=True)
    params = {"objective": "binary:logistic", "tree_method": "hist", "max_cat_to_onehot": 1, "nthread": 1}
    pandas_doc = _doc(xgb.train(params, dm, 2))
    _refused(
        pandas_doc,
        r"^XGBoost model: feature 's' was trained from a categorical column whose categories the model "
        r"stores and re-codes; only integer category codes are supported",
    )
    # Tree-level checks.
    split = Tree(
        (0, -1, -1),
        (0.0,) * 3,
        (1, -1, -1),
        (2, -1, -1),
        (True, False, False),
        ("nan",) * 3,
        (0.0, 1.0, 2.0),
        ((1,), None, None),
        "xgboost",
    )
    lgb_split = Tree(
        (0, -1, -1),
        (0.0,) * 3,
        (1, -1, -1),
        (2, -1, -1),
        (False,) * 3,
        ("none",) * 3,
        (0.0, 1.0, 2.0),
        ((1,), None, None),
    )
    with pytest.raises(
        ModelFormatError, match=r"^tree category_rule must be one of \['lightgbm', 'xgboost'\], got 'sklearn'"
    ):
        dataclasses.replace(split, category_rule="sklearn")
    with pytest.raises(
        ModelFormatError, match=r"^tree node 0: an XGBoost categorical node has missing kind 'nan'"
    ):
        dataclasses.replace(lgb_split, category_rule="xgboost")
    common: dict[str, Any] = dict(
        base_score=0.0, link="logit", output="probability", domain="float32", strict=True, policy=PROB
    )
    with pytest.raises(
        ModelFormatError, match=r"^feature 'a' is split under both the LightGBM and the XGBoost category rule"
    ):
        TreeEnsemble("m", ["a"], [split, lgb_split], **common)
    ok = TreeEnsemble("m", ["a"], [split], **common)
    assert ok.leaf_nodes([math.nan]) == [1] and ok.leaf_nodes([1.0]) == [2] and ok.leaf_nodes([-0.5]) == [1]
    with pytest.raises(
        InvalidInputError, match=r"^feature 'a': category-code columns are 0/1 with at most one 1"
    ):
        ok.encoded_leaves([0, 1, 1])
    with pytest.raises(
        ModelFormatError,
        match=r"'category_rule' is one of \['lightgbm', 'xgboost'\], given with 'categories'",
    ):
        Tree.from_dict({**split.to_dict(), "category_rule": "both"}, "t")
    with pytest.raises(ModelFormatError, match=r"'category_rule' is one of"):
        Tree.from_dict({k2: v for k2, v in split.to_dict().items() if k2 != "categories"}, "t")
    # A LightGBM tree (no category_rule key) reads as before; the key is written for XGBoost only.
    assert (
        "category_rule" not in lgb_split.to_dict() and Tree.from_dict(lgb_split.to_dict(), "t") == lgb_split
    )
    assert Tree.from_dict(split.to_dict(), "t") == split


def test_negative_control_negative_values_are_not_code_zero(boosters: dict[str, xgb.Booster]) -> None:
    """-0.5 and -0.999 are invalid (left at every node), not code 0, and NaN takes the default
    direction: the encoded margin equals XGBoost's, and differs from code 0's for some feature
    (this test fails if XGBoostCategoryFeature truncates -0.5 to code 0)."""
    booster = boosters["binary:logistic"]
    model = _model(booster, "binary:logistic")
    base, _ = _data(1, 1)
    differs = 0
    for f in CATEGORICAL:
        for v, alias in ((-0.5, 0.0), (-0.999, 0.0), (math.nan, None)):
            row: list[object] = list(base[0])
            row[f] = v
            lib = float(booster.predict(_dmatrix(np.array([row], dtype=float)), output_margin=True)[0])
            fixed = math.ldexp(model.encoded_margin(model.encode_row(row)), -model.leaf_frac_bits)
            assert abs(fixed - lib) <= model.max_abs_error + _f32_slack(model), (NAMES[f], v)
            if alias is not None:
                row[f] = alias
                differs += abs(fixed - model.margin(row)) > model.max_abs_error
    assert differs >= 2  # code 0 goes elsewhere than -0.5 for some feature
