"""LightGBM categorical splits: the category-code encoding, the importer and the blind pipeline,
each held to ``Booster.predict`` on float64 rows, edge values (NaN, negatives, fractions, codes
beyond every set, huge values) included."""

from __future__ import annotations

import json
import math
import re

import lightgbm as lgb
import numpy as np
import pytest

from blindscore.crypto.paillier import KeyPair
from blindscore.errors import InvalidInputError, ModelFormatError
from blindscore.importers.lightgbm import ensemble_from_lightgbm_text
from blindscore.models import CategoryCodeFeature, FeatureSpec, LinearModel
from blindscore.models.floatkeys import Grid
from blindscore.models.policy import BandPolicy
from blindscore.models.trees import Tree, TreeEnsemble
from blindscore.testing import TwoParties, check_round_trip, check_spec_is_public

PROB = BandPolicy((0.2, 0.5, 0.8))
RAW = BandPolicy((-0.3, 0.3), output="raw")
NAMES = ["wide", "small", "tiny", "x", "y"]  # three categorical features, then two numeric ones
CATEGORICAL = [0, 1, 2]
#: Values LightGBM reads in unusual ways: int(x) truncates toward zero, a negative int (NaN and
#: anything outside the int range cast to INT_MIN) goes right, and so does a code beyond a set.
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
    2.9999999,
    31.0,
    32.0,
    33.0,
    33.5,
    39.9,
    40.0,
    64.0,
    100.0,
    2.0**31 - 1,
    2.0**31,
    2.0**32 + 2,
    1e20,
    -1e20,
    math.inf,
    -math.inf,
)


def _data(n: int = 1500, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Integer-coded categories (one with codes past 32, so bitsets of two words), a numeric
    feature with zeros and missing values; the label favours sets that hold code 0."""
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
    data[::13, 4] = 0.0
    return data, score


def _train(objective: str, rounds: int = 20, depth: int = 4, **extra: object) -> lgb.Booster:
    data, score = _data()
    label = (score > np.median(score)).astype(float) if objective == "binary" else score / 2
    params = {
        "objective": objective,
        "num_leaves": 12,
        "max_depth": depth,
        "max_cat_to_onehot": 4,  # "tiny" one-vs-rest, the others many-vs-many
        "cat_smooth": 1.0,
        "min_data_per_group": 5,
        "min_data_in_leaf": 5,
        "num_threads": 1,
        "deterministic": True,
        "seed": 0,
        "verbose": -1,
        **extra,
    }
    ds = lgb.Dataset(data, label, feature_name=NAMES, categorical_feature=CATEGORICAL)
    return lgb.train(params, ds, rounds)


@pytest.fixture(scope="module")
def boosters() -> dict[str, lgb.Booster]:
    return {
        "binary": _train("binary"),
        "regression": _train("regression"),
        # numeric nodes with missing_type Zero next to categorical ones (which ignore it)
        "zero-as-missing": _train("binary", zero_as_missing=True),
    }


def _model(booster: lgb.Booster, objective: str) -> TreeEnsemble:
    policy = RAW if objective == "regression" else PROB
    return ensemble_from_lightgbm_text(booster.model_to_string(), policy=policy)


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


@pytest.mark.parametrize("objective", ["binary", "regression", "zero-as-missing"])
def test_margins_leaves_and_bands_match_lightgbm(boosters: dict[str, lgb.Booster], objective: str) -> None:
    booster = boosters[objective]
    model = _model(booster, objective)
    sets = _sets(model)
    # The model exercises what the edge values probe: every categorical feature split on, sets
    # holding code 0 (where reading NaN or -1 as 0 would go wrong), sets past one 32-bit word.
    assert sorted(sets) == CATEGORICAL
    assert any(0 in s for f in CATEGORICAL for s in sets[f])
    assert any(s[-1] >= 32 for s in sets[0])
    assert model.n_categories == {NAMES[f]: 1 + max(s[-1] for s in sets[f]) for f in CATEGORICAL}
    assert model.zero_bit == (objective == "zero-as-missing")
    rows = _rows()
    raw = np.asarray(booster.predict(rows, raw_score=True), dtype=float)
    ours = np.array([model.margin(list(r)) for r in rows])
    np.testing.assert_allclose(ours, raw, rtol=1e-12, atol=1e-15)
    first_leaf = np.array([t.leaves()[0] for t in model.trees])
    nodes = np.array([model.leaf_nodes(list(r)) for r in rows])
    assert (nodes == booster.predict(rows, pred_leaf=True) + first_leaf).all()
    cut = np.array(model.margin_cutoffs)
    far = np.min(np.abs(raw[:, None] - cut[None, :]), axis=1) > model.max_abs_error + 1e-12 * np.abs(raw)
    assert far.mean() > 0.9
    lib_bands = np.searchsorted(cut, raw, side="right")
    for row, is_far, lib in zip(rows, far, lib_bands, strict=True):
        encoded = model.encode_row(list(row))
        assert model.spec.check_encoded_row(encoded) == encoded
        fixed = math.ldexp(model.encoded_margin(encoded), -model.leaf_frac_bits)
        assert abs(fixed - model.margin(list(row))) <= model.max_abs_error
        if is_far:
            assert model.band_from_encoded(encoded) == model.band(list(row)) == lib


def test_each_edge_value_goes_where_lightgbm_sends_it(boosters: dict[str, lgb.Booster]) -> None:
    """Per categorical feature and edge value, the leaf of every tree equals LightGBM's, and the
    one-hot encoding sets the column LightGBM's int(x) names, or none when no node sends x left."""
    booster = boosters["binary"]
    model = _model(booster, "binary")
    first_leaf = np.array([t.leaves()[0] for t in model.trees])
    base, _ = _data(40, 2)
    for f in CATEGORICAL:
        feature = model.spec.features[f]
        assert isinstance(feature, CategoryCodeFeature)
        n = feature.n_categories
        for v in EDGES:
            rows = base.copy()
            rows[:, f] = v
            lib = booster.predict(rows, pred_leaf=True) + first_leaf
            assert (np.array([model.leaf_nodes(list(r)) for r in rows]) == lib).all(), (NAMES[f], v)
            code = math.trunc(v) if not math.isnan(v) and -1 < v < n else None
            assert feature.encode(v) == [int(c == code) for c in range(n)], (NAMES[f], v)


def test_category_code_feature_rule_and_refusals() -> None:
    f = CategoryCodeFeature("c", 4)
    expected = {
        -0.5: 0,
        -0.0: 0,
        0.9: 0,
        1e-40: 0,
        2.7: 2,
        3.99: 3,
        "2": 2,
        "2.5": 2,
        np.float64(1.0): 1,
        np.int64(3): 3,
        3: 3,
    }
    for value, code in expected.items():
        assert f.encode(value) == [int(c == code) for c in range(4)], value
    for value in (None, "", " ", math.nan, np.nan, -1.0, -1.5, 4.0, 4, 10**30, 2.0**31, math.inf, -math.inf):
        assert f.encode(value) == [0, 0, 0, 0], value
    for bad in (True, "abc", [1], object()):
        with pytest.raises(InvalidInputError, match="feature 'c'"):
            f.encode(bad)
    with pytest.raises(
        ModelFormatError, match=r"feature 'c': n_categories must be an integer in \[1, 65536\]"
    ):
        CategoryCodeFeature("c", 0)
    spec = FeatureSpec((f, CategoryCodeFeature("d", 2)))
    again = FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and spec.to_dict()["features"][0] == {
        "type": "category-code",
        "name": "c",
        "n_categories": 4,
    }
    assert spec.encoded_names == ["c=0", "c=1", "c=2", "c=3", "d=0", "d=1"]
    assert spec.check_encoded_row([0, 0, 0, 0, 0, 1]) == [0, 0, 0, 0, 0, 1]
    with pytest.raises(InvalidInputError, match="feature 'c': category-code columns hold at most one 1"):
        spec.check_encoded_row([1, 1, 0, 0, 0, 0])
    with pytest.raises(
        ModelFormatError, match="feature 'c' is a category-code feature, which tree ensembles use"
    ):
        LinearModel("lin", spec, (1.0,) * 6, 0.0, "logit", PROB)


def test_round_trip_public_spec_and_shape(boosters: dict[str, lgb.Booster]) -> None:
    model = _model(boosters["binary"], "binary")
    check_round_trip(model)
    check_spec_is_public(model)
    again = TreeEnsemble.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again == model and again.n_categories == model.n_categories
    # A categorical feature is C one-hot columns, a numeric one (key, missing, zero).
    widths = [len(f.columns) for f in model.spec.features]
    assert widths == [model.n_categories[n] for n in NAMES[:3]] + [3, 3]
    # The circuit is the numeric one: one value per padded node, value_bits from the key width.
    shape = model.circuit_shape()
    assert shape.values == model.n_trees * (2**model.depth - 1)
    assert shape.value_bits == model.key_bits + (3 if model.zero_bit else 1)
    stage = model.linear_stage()
    assert stage.value_bits == shape.value_bits
    # Every value of the linear stage lies in [0, 2^value_bits) for edge rows of every kind.
    for row in _rows(20)[::3]:
        enc = model.encode_row(list(row))
        for out in stage.outputs:
            v = out.offset + sum(w * enc[c] for c, w in out.terms)
            assert 0 <= v < 1 << stage.value_bits


def test_the_blind_pipeline_bands_equal_plaintext(paillier_keypair: KeyPair) -> None:
    booster = _train("binary", rounds=4, depth=3)
    model = _model(booster, "binary")
    assert model.n_categories
    parties = TwoParties(paillier_keypair)
    base, _ = _data(6, 4)
    rows = [list(base[0]), list(base[1]), list(base[2])]
    rows += [
        [math.nan, -0.5, 0.9, 0.1, 0.0],
        [0.0, 2.7, 100.0, math.nan, -1.0],
        [-1.0, 1e20, -0.0, 2.0, 1e-40],
    ]
    seen = set()
    for row in rows:
        encoded = model.encode_row(row)
        band = parties.band(model, encoded)
        assert band == model.band_from_encoded(encoded) == model.band(row)
        seen.add(band)
    assert len(seen) >= 2


def _with_cat_lines(text: str, tree: int, **lines: str) -> str:
    """``text`` with lines such as cat_boundaries of tree ``tree`` replaced."""
    blocks = text.split("\nTree=")
    for key, value in lines.items():
        blocks[tree + 1], n = re.subn(rf"(?m)^{key}=.*$", f"{key}={value}", blocks[tree + 1])
        assert n == 1, key
    return "\nTree=".join(blocks)


def _first_categorical_tree(text: str) -> tuple[int, int]:
    for k, block in enumerate(text.split("\nTree=")[1:]):
        found = re.search(r"(?m)^num_cat=(\d+)$", block)
        if found and int(found.group(1)) > 0:
            return k, int(found.group(1))
    raise AssertionError("no categorical tree")


def test_refusals(boosters: dict[str, lgb.Booster]) -> None:
    text = boosters["binary"].model_to_string()
    model = _model(boosters["binary"], "binary")
    with pytest.raises(
        ModelFormatError, match=r"^feature 'wide' is categorical \(LightGBM category codes\); a grid"
    ):
        model.with_grids({"wide": Grid.parse("0:1:39")})
    assert model.with_grids({"x": Grid.parse("-4:0.5:4")}).grids  # numeric features still take grids
    k, n_cat = _first_categorical_tree(text)
    decreasing = " ".join(["0", "2", "1", *[str(3 + i) for i in range(n_cat - 2)]])
    with pytest.raises(
        ModelFormatError,
        match=rf"^LightGBM model: tree {k} has categorical splits but malformed cat_boundaries",
    ):
        ensemble_from_lightgbm_text(_with_cat_lines(text, k, cat_boundaries=decreasing), policy=PROB)
    short = " ".join(str(i) for i in range(n_cat))
    with pytest.raises(
        ModelFormatError,
        match=rf"^LightGBM model: tree {k} cat_boundaries has {n_cat} entries, expected {n_cat + 1}",
    ):
        ensemble_from_lightgbm_text(_with_cat_lines(text, k, cat_boundaries=short), policy=PROB)
    # Every set one code: 65536, in word 2048 (a code past what the encoding takes).
    bounds = " ".join(str(2049 * i) for i in range(n_cat + 1))
    words = " ".join((["0"] * 2048 + ["1"]) * n_cat)
    with pytest.raises(
        ModelFormatError, match=r"splits feature '\w+' on category code 65536; codes up to 65535"
    ):
        ensemble_from_lightgbm_text(
            _with_cat_lines(text, k, cat_boundaries=bounds, cat_threshold=words), policy=PROB
        )
    zeros = " ".join(
        ["0"]
        * len(
            _with_cat_lines(text, k).split("\nTree=")[k + 1].split("cat_threshold=")[1].split("\n")[0].split()
        )
    )
    with pytest.raises(ModelFormatError, match=r"sends no category left; the model file is malformed"):
        ensemble_from_lightgbm_text(_with_cat_lines(text, k, cat_threshold=zeros), policy=PROB)
    with pytest.raises(
        ModelFormatError, match=r"^tree node 0: a category set is a non-empty list of distinct codes"
    ):
        Tree(
            (0, -1, -1),
            (0.0,) * 3,
            (1, -1, -1),
            (2, -1, -1),
            (False,) * 3,
            ("none",) * 3,
            (0.0, 1.0, 2.0),
            ((), None, None),
        )
    split = Tree(
        (0, -1, -1),
        (0.0,) * 3,
        (1, -1, -1),
        (2, -1, -1),
        (False,) * 3,
        ("none",) * 3,
        (0.0, 1.0, 2.0),
        ((1,), None, None),
    )
    numeric = Tree(
        (0, -1, -1), (0.5,) * 3, (1, -1, -1), (2, -1, -1), (False,) * 3, ("nan",) * 3, (0.0, 1.0, 2.0)
    )
    with pytest.raises(
        ModelFormatError, match=r"^feature 'a' is split both as a category code and as a number"
    ):
        TreeEnsemble(
            "m",
            ["a"],
            [split, numeric],
            base_score=0.0,
            link="logit",
            output="probability",
            domain="float64",
            strict=False,
            policy=PROB,
        )
    ok = TreeEnsemble(
        "m",
        ["a"],
        [split],
        base_score=0.0,
        link="logit",
        output="probability",
        domain="float64",
        strict=False,
        policy=PROB,
    )
    with pytest.raises(InvalidInputError, match=r"^feature 'a': expected a number"):
        ok.encode_row([True])
    with pytest.raises(
        InvalidInputError, match=r"^feature 'a': category-code columns are 0/1 with at most one 1"
    ):
        ok.encoded_leaves([1, 1])
    # A file written before categorical splits (no "categories" key) loads as before.
    d = model.to_dict()
    plain = {k: v for k, v in d["trees"][0].items() if k != "categories"}
    assert "categories" in d["trees"][0] and Tree.from_dict(plain, "t").categories == ()


def test_negative_control_missing_and_negative_codes_are_not_code_zero(
    boosters: dict[str, lgb.Booster],
) -> None:
    """Reading NaN, a missing value or -1 and below as code 0 changes these margins: the encoding
    must set no column for them (this test fails if CategoryCodeFeature maps them to code 0)."""
    model = _model(boosters["binary"], "binary")
    base, _ = _data(1, 1)
    differs = 0
    for f in CATEGORICAL:
        for v in (math.nan, None, -1.0, -1.5, -1e20, -math.inf):
            row: list[object] = list(base[0])
            row[f] = v
            fixed = math.ldexp(model.encoded_margin(model.encode_row(row)), -model.leaf_frac_bits)
            assert abs(fixed - model.margin(row)) <= model.max_abs_error, (NAMES[f], v)
            row[f] = 0.0
            differs += abs(fixed - model.margin(row)) > model.max_abs_error
    assert differs >= 6  # code 0 goes elsewhere than these values, for some feature
