"""Declared feature grids: tree splits compared on grid indices, narrower and still exact.

A grid (``LO:STEP:HI``) is a public declaration that a feature only takes the values lo, lo + step,
..., hi. The index of a value on its grid replaces its float key, so a node's comparison in the
circuit is as wide as the grid, not 32 or 64 bits. These tests hold the grid path to the library's
own float rule by brute force over every grid point, in both domains and both split rules, and run
XGBoost and LightGBM models on German credit's integer columns through both parties.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
import xgboost as xgb
from hypothesis import given, settings
from hypothesis import strategies as st

from blindscore.crypto.paillier import KeyPair
from blindscore.data.german import NUMERIC_RANGES, load_german_credit
from blindscore.errors import InvalidInputError, ModelFormatError
from blindscore.importers.lightgbm import read_lightgbm
from blindscore.importers.xgboost import read_xgboost
from blindscore.models.floatkeys import Grid, encode_value, threshold_key
from blindscore.models.policy import BandPolicy
from blindscore.models.trees import TreeEnsemble
from blindscore.testing import TwoParties

PROB = BandPolicy((0.2, 0.5, 0.8))
COLUMNS = tuple(sorted(NUMERIC_RANGES))
INTEGER_GRIDS = {c: Grid(str(lo), "1", str(hi)) for c, (lo, hi) in NUMERIC_RANGES.items()}


def _float_rule(x: float, t: float, domain: str, strict: bool) -> bool:
    v = float(np.float32(x)) if domain == "float32" else x
    return v < t if strict else v <= t


def _brute_index(grid: Grid, t: float, domain: str, strict: bool) -> int:
    return max((k for k in range(grid.count) if _float_rule(grid.point(k), t, domain, strict)), default=-1)


# --- the grid itself ---------------------------------------------------------------------------


def test_grid_points_indices_and_width() -> None:
    g = Grid.parse("-4:0.001:4")
    assert (g.count, g.bits) == (8001, 13)
    assert (g.point(0), g.point(4123), g.point(8000)) == (-4.0, 0.123, 4.0)
    assert g.index(0.123) == 4123 and g.index(-4.0) == 0 and g.index(4.0) == 8000
    for off in (0.1234, 4.001, -4.001, math.nan, math.inf):
        assert g.index(off) is None
    assert Grid.parse("0:1:1").bits == 1 and Grid.parse("0:1:3").bits == 2 and Grid.parse("0:1:4").bits == 3
    assert Grid.from_dict(g.to_dict(), "here") == g and str(g) == "-4:0.001:4"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("0:1", "LO:STEP:HI"),
        ("0:0:10", "step > 0 and hi > lo"),
        ("10:1:0", "step > 0 and hi > lo"),
        ("0:0.3:1", "whole number of steps"),
        ("0:1e-12:1", "at most 2"),
        ("1e15:1e-3:1.000000000001e15", "distinct finite doubles"),
        ("1000000000000000:0.25:1000000000000001", "resolution"),
        ("a:1:2", "finite decimal number"),
        ("0:1:inf", "finite decimal number"),
    ],
)
def test_grid_refuses_what_it_cannot_represent(text: str, match: str) -> None:
    with pytest.raises(ModelFormatError, match=match):
        Grid.parse(text)


@settings(max_examples=60, deadline=None)
@given(
    lo=st.integers(-2000, 2000),
    step_exp=st.integers(-3, 2),
    count=st.integers(2, 300),
    t=st.floats(-3000.0, 3000.0, allow_nan=False),
    domain=st.sampled_from(["float32", "float64"]),
    strict=st.booleans(),
    snap=st.booleans(),
)
def test_threshold_index_is_the_library_rule_on_every_grid_point(
    lo: int, step_exp: int, count: int, t: float, domain: str, strict: bool, snap: bool
) -> None:
    step = Fraction(10) ** step_exp
    lo_q = Fraction(lo) * step
    hi_q = lo_q + (count - 1) * step
    grid = Grid(str(float(lo_q)) if step_exp < 0 else str(lo_q), str(float(step)), str(float(hi_q)))
    # snap_zero only reads |x| <= 1e-35 as 0.0: on these grids it changes no point's side
    k = grid.threshold_index(threshold_key(t, domain, strict), domain, snap)
    assert k == _brute_index(grid, t, domain, strict)
    # the points the index sends left are exactly those the library sends left
    for j in {0, max(k, 0), min(k + 1, grid.count - 1), grid.count - 1}:
        assert (j <= k) == _float_rule(grid.point(j), t, domain, strict)


def test_threshold_index_negative_control() -> None:
    """The brute-force check above catches an index off by one: it is not a test that cannot fail."""
    grid = Grid.parse("0:1:10")
    t = 4.5
    right = grid.threshold_index(threshold_key(t, "float32", True), "float32")
    assert right == 4 == _brute_index(grid, t, "float32", True)
    assert right - 1 != _brute_index(grid, t, "float32", True)
    # the float key of a point on either side of the threshold orders as the grid index does
    assert encode_value(grid.point(4), "float32")[0] <= threshold_key(t, "float32", True)
    assert encode_value(grid.point(5), "float32")[0] > threshold_key(t, "float32", True)


# --- models with grids -----------------------------------------------------------------------------


def _german(rows: int = 300) -> tuple[np.ndarray, np.ndarray]:
    data, target = load_german_credit()
    x = np.array([[float(r[c]) for c in COLUMNS] for r in data[:rows]])
    rng = np.random.default_rng(5)
    x[rng.random(x.shape) < 0.08] = np.nan
    return x, np.asarray(target[:rows])


def _xgb(tmp_path: Path) -> tuple[xgb.Booster, TreeEnsemble]:
    x, y = _german()
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1, "seed": 0},
        xgb.DMatrix(x, label=y, feature_names=list(COLUMNS)),
        6,
    )
    booster.save_model(tmp_path / "m.json")
    return booster, read_xgboost(tmp_path / "m.json", policy=PROB)


def _grid_tie_rows(model: TreeEnsemble, x: np.ndarray) -> np.ndarray:
    """Rows whose feature sits on the grid points on either side of a split threshold."""
    out = []
    for tree in model.trees:
        for f, t in zip(tree.feature, tree.threshold, strict=True):
            if f >= 0 and math.isfinite(t):
                lo, hi = NUMERIC_RANGES[COLUMNS[f]]
                for v in (math.floor(t), math.ceil(t), round(t)):
                    r = x[1].copy()
                    r[f] = min(max(v, lo), hi)
                    out.append(r)
    return np.array(out[:40])


def test_a_full_grid_narrows_the_keys_and_keeps_every_split(tmp_path: Path) -> None:
    _, model = _xgb(tmp_path)
    gridded = model.with_grids(INTEGER_GRIDS)
    assert model.key_bits == 32 and gridded.key_bits == 20  # credit_amount: 0..1,000,000
    assert gridded.circuit_shape().value_bits == 21 and model.circuit_shape().value_bits == 33
    # a partial grid buys nothing: one width for every node, or the width would name the feature
    partial = model.with_grids({COLUMNS[0]: INTEGER_GRIDS[COLUMNS[0]]})
    assert partial.key_bits == 32
    x, _ = _german()
    rows = np.vstack([x[:60], _grid_tie_rows(model, x)])
    for row in rows:
        assert gridded.encoded_leaves(gridded.encode_row(list(row))) == model.encoded_leaves(
            model.encode_row(list(row))
        )
        assert gridded.band_from_encoded(gridded.encode_row(list(row))) == model.band_from_encoded(
            model.encode_row(list(row))
        )
    assert TreeEnsemble.from_dict(gridded.to_dict()) == gridded
    assert "grids" not in model.to_dict() and "(declared grids)" in gridded.describe()


def test_off_grid_values_are_refused_naming_the_feature(tmp_path: Path) -> None:
    _xgb(tmp_path)
    gridded = read_xgboost(tmp_path / "m.json", policy=PROB).with_grids(INTEGER_GRIDS)
    row = {c: float(NUMERIC_RANGES[c][0]) for c in COLUMNS}
    gridded.encode_row(row)
    row["age_in_years"] = 30.5
    with pytest.raises(InvalidInputError, match=r"age_in_years': 30\.5 is not on its declared grid 18:1:120"):
        gridded.encode_row(row)
    row["age_in_years"] = 121.0
    with pytest.raises(InvalidInputError, match="age_in_years"):
        gridded.encode_row(row)
    with pytest.raises(ModelFormatError, match=r"unknown feature\(s\) \['nope'\]"):
        gridded.with_grids({"nope": Grid.parse("0:1:3")})
    bad = gridded.to_dict()
    bad["grids"]["age_in_years"] = {"lo": "18", "step": "1"}
    with pytest.raises(ModelFormatError, match="exactly 'lo', 'step' and 'hi'"):
        TreeEnsemble.from_dict(bad)


def test_encoded_rows_are_checked_against_the_grid(tmp_path: Path) -> None:
    _xgb(tmp_path)
    gridded = read_xgboost(tmp_path / "m.json", policy=PROB).with_grids(INTEGER_GRIDS)
    row = {c: float(NUMERIC_RANGES[c][0]) for c in COLUMNS}
    enc = gridded.encode_row(row)
    assert gridded.check_encoded_row(enc) == enc
    j = 3 * COLUMNS.index("age_in_years")
    too_far = list(enc)
    too_far[j] = INTEGER_GRIDS["age_in_years"].count  # one past the last grid point
    with pytest.raises(InvalidInputError, match="age_in_years"):
        gridded.check_encoded_row(too_far)


# --- through both parties --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parties(paillier_keypair: KeyPair) -> TwoParties:
    return TwoParties(paillier_keypair)


def test_xgboost_on_integer_grids_bands_through_the_pipeline(tmp_path: Path, parties: TwoParties) -> None:
    booster, model = _xgb(tmp_path)
    gridded = model.with_grids(INTEGER_GRIDS)
    x, _ = _german()
    rows = np.vstack([x[:10], _grid_tie_rows(model, x)[:14], np.full(x.shape[1], np.nan)])
    margins = booster.predict(xgb.DMatrix(rows, feature_names=list(COLUMNS)), output_margin=True)
    far = 0
    for row, m in zip(rows, margins, strict=True):
        enc = gridded.encode_row(list(row))
        band = parties.band(gridded, enc)
        assert band == gridded.band_from_encoded(enc) == model.band_from_encoded(model.encode_row(list(row)))
        if all(abs(m - c) > model.max_abs_error + 1e-6 * abs(m) for c in model.margin_cutoffs):
            far += 1
            assert band == model.band_of_margin(float(m))
    assert far >= len(rows) // 2


def test_lightgbm_zero_rule_on_integer_grids_in_the_pipeline(tmp_path: Path, parties: TwoParties) -> None:
    x, y = _german()
    x[::7, COLUMNS.index("number_of_existing_credits_at_this_bank")] = 0.0
    params = {"objective": "binary", "zero_as_missing": True, "num_leaves": 6, "verbose": -1, "seed": 0}
    booster = lgb.train(params, lgb.Dataset(x, label=y, feature_name=list(COLUMNS)), 5)
    booster.save_model(str(tmp_path / "m.txt"))
    model = read_lightgbm(tmp_path / "m.txt", policy=PROB)
    gridded = model.with_grids(INTEGER_GRIDS)
    assert gridded.circuit_shape().param("zero_bit") == 1 and gridded.key_bits == 20
    rows = np.vstack([x[:12], np.zeros(x.shape[1])])
    rows[-1] = [min(max(0.0, NUMERIC_RANGES[c][0]), NUMERIC_RANGES[c][1]) for c in COLUMNS]
    margins = booster.predict(rows, raw_score=True)
    for row, m in zip(rows, margins, strict=True):
        enc = gridded.encode_row(list(row))
        band = parties.band(gridded, enc)
        assert band == model.band_from_encoded(model.encode_row(list(row)))
        if all(abs(m - c) > model.max_abs_error + 1e-6 * abs(m) for c in model.margin_cutoffs):
            assert band == model.band_of_margin(float(m))


# --- the command line ------------------------------------------------------------------------------


def test_model_import_declares_grids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from blindscore.app.cli import main

    _xgb(tmp_path)
    grids = [f"--feature-grid={c}={g}" for c, g in INTEGER_GRIDS.items()]
    common = ["--cutoffs", "0.2,0.5,0.8", "--data-dir", str(tmp_path / "bureau")]
    assert main(["model", "import", str(tmp_path / "m.json"), "--name", "g", *common, *grids]) == 0
    assert "keys 20 bits (declared grids)" in capsys.readouterr().out
    bad = ["--feature-grid", "age_in_years=18:1"]
    assert main(["model", "import", str(tmp_path / "m.json"), "--name", "h", *common, *bad]) == 2
    assert "expected NAME=LO:STEP:HI" in capsys.readouterr().err
    assert (tmp_path / "bureau" / "models" / "g").is_dir() and not (
        tmp_path / "bureau" / "models" / "h"
    ).exists()
    twice = ["--feature-grid", "age_in_years=18:1:120", "--feature-grid", "age_in_years=0:1:200"]
    assert main(["model", "import", str(tmp_path / "m.json"), "--name", "h", *common, *twice]) == 2
    assert "more than one --feature-grid" in capsys.readouterr().err


def test_grids_are_refused_for_models_that_are_not_trees(tmp_path: Path) -> None:
    from blindscore.data.german import default_model
    from blindscore.importers.model_file import ImportOptions, read_model

    path = tmp_path / "linear.json"
    path.write_text(json.dumps(default_model().to_dict()))
    options = ImportOptions(feature_grids=(("age_in_years", "18:1:120"),))
    with pytest.raises(InvalidInputError, match="--feature-grid applies to tree ensembles"):
        read_model(path, options)


# --- what the bank sees, with narrow keys -------------------------------------------------------------
# Narrower values leave the mask as wide as before (kappa bits over the packed values), so the bank's
# decrypted slots stay uniform. Two applicants of one band: the bank's OT choices (the bits of its
# masked values) for every node have one distribution; with the mask removed they differ at once.

LEAK_RUNS = 40


def _node_choices(keypair: KeyPair, model: TreeEnsemble, ciphertexts: list[object], node: int) -> int:
    from blindscore.models import families
    from blindscore.protocol.circuit_band import CircuitBand, open_request

    bureau = CircuitBand(keypair.public_key, model, families.family("trees"), ciphertexts)
    opened = open_request(keypair, bureau.request)
    w = model.circuit_shape().value_bits
    bits = opened.choices[node * w : (node + 1) * w]
    return sum(bit << i for i, bit in enumerate(bits))


def _p_same(keypair: KeyPair, model: TreeEnsemble, rows: list[list[float]]) -> float:
    from scipy.stats import ks_2samp

    pk = keypair.public_key
    a, b = ([pk.encrypt(x) for x in model.encode_row(row)] for row in rows)
    xs = [_node_choices(keypair, model, a, 0) for _ in range(LEAK_RUNS)]
    ys = [_node_choices(keypair, model, b, 0) for _ in range(LEAK_RUNS)]
    return float(ks_2samp(xs, ys).pvalue)


def test_the_banks_view_of_a_gridded_ensemble_is_the_same_for_two_applicants_of_one_band(
    paillier_keypair: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blindscore.app.bench import hist_trees
    from blindscore.protocol import slots

    model = hist_trees(trees=2, depth=2, features=4, grid="-4:0.001:4")
    # two rows in one band whose value at the first node differs (its feature far apart)
    f0 = model.trees[0].feature[0]
    low, high = [0.0] * 4, [0.0] * 4
    low[f0], high[f0] = -3.9, 3.9
    band = model.band_from_encoded(model.encode_row(low))
    rows = [low, high] if model.band_from_encoded(model.encode_row(high)) == band else [low, low[:]]
    if rows[1] == rows[0]:  # this model separates them: take the nearest row of the same band instead
        rows[1][f0] = -3.8
    assert model.band_from_encoded(model.encode_row(rows[1])) == band and rows[0] != rows[1]
    assert _p_same(paillier_keypair, model, rows) > 1e-3, "honest run flagged"
    monkeypatch.setattr(slots, "_draw_mask", lambda bits: 0)  # the broken bureau: no mask
    assert _p_same(paillier_keypair, model, rows) < 1e-6, "an unmasked slot went undetected"
