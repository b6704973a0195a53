"""Feature spec, band policy and the integer path of LinearModel, checked against exact arithmetic."""

from __future__ import annotations

import itertools
import json
import math
import random
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from blindscore.data.german import default_model, load_german_credit
from blindscore.errors import EncodingError, InvalidInputError, ModelFormatError
from blindscore.models.features import BinnedFeature, CategoricalFeature, FeatureSpec, NumericFeature
from blindscore.models.linear import MAX_EXTRA_SCALE_BITS, MODEL_FORMAT_VERSION, LinearModel
from blindscore.models.policy import BandPolicy, logit, sigmoid
from blindscore.protocol import comparison


def small_spec(income_bits: int = 4) -> FeatureSpec:
    return FeatureSpec(
        (
            NumericFeature("income", 0.0, 1e5, income_bits),
            NumericFeature("months", 1, 120, integer=True),
            CategoricalFeature("housing", ("rent", "own", "free")),
            BinnedFeature("age", (25, 40, 60)),
        )
    )


def small_model(precision: float = 1e-6) -> LinearModel:
    """Income carries 32 fractional bits so that precisions down to 1e-12 are attainable."""
    return LinearModel(
        "small",
        small_spec(income_bits=32),
        [-1.5e-5, 0.031, 0.4, -0.2, 0.05, 0.3, 0.0, -0.1, -0.45],
        -0.7,
        "logit",
        BandPolicy((0.1, 0.25, 0.5)),
        precision,
    )


ROW: dict[str, object] = {"income": 1234.5, "months": 24, "housing": "own", "age": 33, "note": "ignored"}


# ---------------------------------------------------------------------------------------------
# Feature spec


def test_spec_names_widths_and_bounds() -> None:
    spec = small_spec()
    assert spec.input_names == ["income", "months", "housing", "age"]
    assert spec.encoded_names == [
        "income",
        "months",
        "housing=rent",
        "housing=own",
        "housing=free",
        "age<25",
        "age[25,40)",
        "age[40,60)",
        "age>=60",
    ]
    assert spec.encoded_width == 9
    assert spec.column_frac_bits == [4, 0, 0, 0, 0, 0, 0, 0, 0]
    assert spec.max_abs == [1_600_000, 120, 1, 1, 1, 1, 1, 1, 1]
    assert spec.encoded_bounds[:2] == [(0, 1_600_000), (1, 120)]


def test_encode_row_one_hot_and_fixed_point() -> None:
    spec = small_spec()
    assert spec.encode_row(ROW) == [19752, 24, 0, 1, 0, 0, 1, 0, 0]
    assert spec.transform_row(ROW) == [1234.5, 24.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    # numeric strings are accepted; bin edges belong to the bin above
    encoded = spec.encode_row({"income": "0", "months": "120", "housing": "free", "age": 60})
    assert encoded == [0, 120, 0, 0, 1, 0, 0, 0, 1]
    assert all(type(x) is int for x in encoded)
    assert spec.encode_row({**ROW, "age": 24.999})[5:] == [1, 0, 0, 0]
    assert spec.encode_row({**ROW, "age": 25})[5:] == [0, 1, 0, 0]


@pytest.mark.parametrize(
    ("change", "feature", "message"),
    [
        ({"housing": "castle"}, "housing", "unseen category 'castle'"),
        ({"housing": 1}, "housing", "expected a category string"),
        ({"housing": None}, "housing", "missing"),
        ({"months": 12.5}, "months", "expected an integer"),
        ({"months": 0}, "months", "outside the declared range"),
        ({"income": float("nan")}, "income", "finite"),
        ({"income": "lots"}, "income", "expected a number"),
        ({"age": float("inf")}, "age", "finite"),
    ],
)
def test_encode_row_refusals_name_the_feature(change: dict[str, object], feature: str, message: str) -> None:
    with pytest.raises(EncodingError, match=message) as info:
        small_spec().encode_row({**ROW, **change})
    assert info.value.feature == feature


def test_missing_feature_is_named() -> None:
    row = dict(ROW)
    del row["months"]
    with pytest.raises(EncodingError, match="missing from the application") as info:
        small_spec().encode_row(row)
    assert info.value.feature == "months"
    with pytest.raises(InvalidInputError, match="mapping"):
        small_spec().encode_row([1, 2, 3])  # type: ignore[arg-type]


def test_unseen_category_message_lists_categories() -> None:
    with pytest.raises(EncodingError) as info:
        CategoricalFeature("housing", ("rent", "own")).encode("Own")
    assert "'rent', 'own'" in str(info.value)


def test_spec_dict_round_trip_and_json() -> None:
    spec = small_spec()
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["format"] == 1
    again = FeatureSpec.from_dict(d)
    assert again == spec
    assert again.encode_row(ROW) == spec.encode_row(ROW)


def _spec_dict() -> dict[str, Any]:
    return json.loads(json.dumps(small_spec().to_dict()))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format=2), "unsupported format"),
        (lambda d: d.update(format=True), "unsupported format"),
        (lambda d: d.update(kind="model"), "kind"),
        (lambda d: d.update(extra=1), "unknown field"),
        (lambda d: d.pop("features"), "missing field"),
        (lambda d: d.update(features=[]), "at least one feature"),
        (lambda d: d["features"][0].update(type="float"), "unknown feature type"),
        (lambda d: d["features"][0].update(lo="0"), "must be a number"),
        (lambda d: d["features"][0].update(frac_bits=1.0), "must be an integer"),
        (lambda d: d["features"][0].update(integer=1), "true or false"),
        (lambda d: d["features"][0].pop("hi"), "missing field"),
        (lambda d: d["features"][1].update(lo=200), "above"),
        (lambda d: d["features"][2].update(categories=["a", "a"]), "duplicate categories"),
        (lambda d: d["features"][2].update(categories=["a", 1]), "strings"),
        (lambda d: d["features"][3].update(edges=[40, 25]), "ascending"),
        (lambda d: d["features"][3].update(name="income"), "duplicate feature"),
        (lambda d: d["features"][2].update(categories=["x<25"], name="age"), "duplicate"),
    ],
)
def test_spec_from_dict_is_strict(mutate: Any, message: str) -> None:
    d = _spec_dict()
    mutate(d)
    with pytest.raises(ModelFormatError, match=message):
        FeatureSpec.from_dict(d)


def test_check_encoded_row() -> None:
    spec = small_spec()
    good = spec.encode_row(ROW)
    assert spec.check_encoded_row(good) == good
    with pytest.raises(InvalidInputError, match="9 columns"):
        spec.check_encoded_row(good[:-1])
    with pytest.raises(InvalidInputError, match="outside"):
        spec.check_encoded_row([1_600_001, *good[1:]])
    with pytest.raises(InvalidInputError, match="exactly one 1"):
        spec.check_encoded_row([*good[:2], 1, 1, 0, *good[5:]])
    with pytest.raises(InvalidInputError, match="integer"):
        spec.check_encoded_row([0.5, *good[1:]])  # type: ignore[list-item]


# ---------------------------------------------------------------------------------------------
# Band policy


def test_band_policy_at_below_and_above_cutoffs() -> None:
    policy = BandPolicy((0.1, 0.25, 0.5))
    assert policy.labels == ("A", "B", "C", "D")
    values = (0.0, 0.0999, 0.1, 0.2, 0.25, 0.49, 0.5, 0.99)
    assert [policy.band_of(v) for v in values] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert policy.band_of(math.nextafter(0.25, 0)) == 1
    assert policy.label_of(0.3) == "C"
    with pytest.raises(InvalidInputError, match="NaN"):
        policy.band_of(float("nan"))
    raw = BandPolicy((-1.0, 2.0), ("low", "mid", "high"), "raw")
    assert [raw.band_of(v) for v in (-5, -1, 1.9, 2, 1e300)] == [0, 1, 1, 2, 2]
    assert BandPolicy.from_dict(json.loads(json.dumps(raw.to_dict()))) == raw


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (((0.5, 0.2),), "ascending"),
        (((0.2, 0.2),), "ascending"),
        (((),), "non-empty"),
        (((0.0, 0.5),), "between 0 and 1"),
        (((0.5, 1.0),), "between 0 and 1"),
        (((0.5,), ("A",)), "need 2 labels"),
        (((0.5,), ("A", "A")), "distinct"),
        (((0.5,), (), "score"), "output"),
        (((float("nan"),),), "finite"),
    ],
)
def test_band_policy_refusals(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ModelFormatError, match=message):
        BandPolicy(*args)


# ---------------------------------------------------------------------------------------------
# Linear model: score scale, error bound, integer parameters


def test_score_scale_by_hand() -> None:
    spec = FeatureSpec((NumericFeature("n", 0, 100, integer=True), CategoricalFeature("c", ("a", "b"))))
    model = LinearModel(
        "m", spec, [0.3, 1.25, -0.5], 0.1, "identity", BandPolicy((5.0, 10.0), output="raw"), 1e-3
    )
    # Weight rounding (100 + 1 + 1) * 2^-(S+1) <= 1e-3 / 2 first holds at S = 17 (3.9e-4). The
    # largest power-of-two ulp left is 2^-11 (4.9e-4), so T = 17 - 11 = 6. Doubling the ulp to
    # 2^-10 would need the weight rounding below 2.3e-5, i.e. S = 22: more than 4 extra bits.
    assert (model.score_frac_bits, model.truncate_bits) == (17, 6)
    assert model.max_abs_error == 102 / 2**18 + 2**-11 <= 1e-3
    assert model.encoded_weights == [round(0.3 * 2**17), 163840, -65536]
    assert model.encoded_intercept == round(0.1 * 2**17)
    assert model.encoded_cutoffs == [5 * 2**17, 10 * 2**17]
    assert model.encoded_score_bounds == (
        round(0.1 * 2**17) - 65536,
        round(0.1 * 2**17) + 100 * 39322 + 163840,
    )
    lo, hi = model.encoded_score_bounds
    # sigma in [0, ceil((hi - lo) / 64)] = [0, 65025]; gamma = ceil((c - lo) / 64) = 11060, 21300;
    # the largest |sigma - gamma| is 65025 - 11060 = 53965 < 2^16.
    assert model.comparison_bits == comparison.comparison_bits(lo, hi, model.encoded_cutoffs, 6) == 16
    # Without truncation the same model would need 22 bits.
    assert comparison.comparison_bits(lo, hi, model.encoded_cutoffs, 0) == 22


def test_cutoff_is_inclusive_on_both_paths() -> None:
    spec = FeatureSpec((NumericFeature("n", 0, 10, integer=True),))
    model = LinearModel("m", spec, [1.0], 0.0, "identity", BandPolicy((5.0,), output="raw"))
    for n, band in ((4, 0), (5, 1), (6, 1)):
        assert model.band({"n": n}) == band
        assert model.truncated_band_from_encoded(spec.encode_row({"n": n})) == band


def test_probability_cutoffs_become_log_odds() -> None:
    model = small_model()
    s = model.score_frac_bits
    assert model.score_cutoffs == [logit(0.1), logit(0.25), 0.0]
    assert model.encoded_cutoffs == [math.ceil(logit(p) * 2**s) for p in (0.1, 0.25, 0.5)]
    assert model.encoded_cutoffs[2] == 0
    assert abs(sigmoid(logit(0.25)) - 0.25) < 1e-15
    assert model.predict(ROW) == pytest.approx(sigmoid(model.linear_score(ROW)), abs=0)
    z = sum(w * x for w, x in zip(model.coef, model.spec.transform_row(ROW), strict=True)) + model.intercept
    assert model.linear_score(ROW) == pytest.approx(z, rel=1e-12)
    assert model.band(ROW) == model.policy.band_of(model.predict(ROW))


def _error_terms(model: LinearModel) -> tuple[float, int]:
    """Feature rounding a and the weight-rounding count t: the computational error is a + t 2^-(S+1)."""
    a = sum(
        abs(model.coef[i]) * f.codec.max_error
        for f, cols in model.spec.feature_slices()
        for i in range(cols.start, cols.stop)
        if isinstance(f, NumericFeature)
    )
    t = 1 + sum(f.codec.max_abs if isinstance(f, NumericFeature) else 1 for f in model.spec.features)
    return a, t


@pytest.mark.parametrize("precision", [1e-3, 3e-4, 1e-6, 1.5e-6, 1e-9, 2**-30, 1e-12])
def test_precision_split_between_computation_and_truncation(precision: float) -> None:
    for model in (small_model(precision), _german_at(precision)):
        s, t_bits, p = model.score_frac_bits, model.truncate_bits, model.precision
        a, t = _error_terms(model)
        room = p - a
        weight = t * 2.0 ** -(s + 1)
        ulp = 2.0 ** (t_bits - s) if t_bits else 0.0
        assert model.max_abs_error == pytest.approx(a + weight + ulp, rel=1e-12)
        assert model.max_abs_error <= p
        # The computational error takes at most half of what feature rounding leaves ...
        assert weight <= room / 2
        # ... the truncation ulp is the largest power of two that fits next to it ...
        assert a + weight + 2.0 ** (t_bits + 1 - s) > p
        # ... and S is the smallest scale for that ulp, at most MAX_EXTRA_SCALE_BITS above the
        # smallest whose weight rounding is within half of the room.
        s_half = next(k for k in range(1025) if t * 2.0 ** -(k + 1) <= room / 2)
        assert s_half <= s <= s_half + MAX_EXTRA_SCALE_BITS
        if s > s_half:
            assert a + t * 2.0**-s + 2.0 ** (t_bits - s) > p
        lo, hi = model.encoded_score_bounds
        assert model.comparison_bits == comparison.comparison_bits(lo, hi, model.encoded_cutoffs, t_bits)


def _german_at(precision: float) -> LinearModel:
    m = default_model()
    return LinearModel(m.name, m.spec, m.coef, m.intercept, m.link, m.policy, precision)


def test_truncation_shortens_the_comparison() -> None:
    """Each bit of T takes a bit off l: at precision 1e-6 the German model needs 27 bits, not 46."""
    model = default_model()
    lo, hi = model.encoded_score_bounds
    assert (model.score_frac_bits, model.truncate_bits, model.comparison_bits) == (44, 24, 27)
    assert comparison.comparison_bits(lo, hi, model.encoded_cutoffs, 0) == 27 + 24
    assert model.max_abs_error == pytest.approx(2**-20 + _error_terms(model)[1] * 2**-45, rel=1e-12)
    assert model.max_abs_error < 1e-6


def _exact_score(model: LinearModel, row: dict[str, object]) -> Fraction:
    xs = model.spec.transform_row(row)
    return sum(
        (Fraction(w) * Fraction(x) for w, x in zip(model.coef, xs, strict=True)), Fraction(model.intercept)
    )


@given(
    income=st.floats(min_value=0, max_value=1e5),
    months=st.integers(min_value=1, max_value=120),
    housing=st.sampled_from(["rent", "own", "free"]),
    age=st.floats(min_value=-1e9, max_value=1e9),
    precision=st.sampled_from([1e-3, 1e-6, 1e-9, 1e-12]),
)
def test_integer_score_within_the_error_bound(
    income: float, months: int, housing: str, age: float, precision: float
) -> None:
    model = small_model(precision)
    row: dict[str, object] = {"income": income, "months": months, "housing": housing, "age": age}
    encoded = model.spec.encode_row(row)
    s_enc = model.encoded_score(encoded)
    scale = 2**model.score_frac_bits
    exact = _exact_score(model, row)
    a, t = _error_terms(model)
    assert abs(Fraction(s_enc, scale) - exact) <= Fraction(a + t / (2 * scale)) * (1 + Fraction(1, 10**9))
    # The protocol's decision value: s_enc truncated to 2^T with either carry, at scale 2^S.
    lo, _ = model.encoded_score_bounds
    step = 2**model.truncate_bits
    for carry in (0, 1) if (s_enc - lo) % step else (0,):
        decision = Fraction(lo + step * ((s_enc - lo) // step + carry), scale)
        assert abs(decision - exact) <= Fraction(model.max_abs_error) * (1 + Fraction(1, 10**9))
        far = all(abs(exact - Fraction(c)) > Fraction(model.max_abs_error) for c in model.score_cutoffs)
        if far:
            assert model.truncated_band_from_encoded(encoded, carry) == model.band(row)


def _corner_rows(spec: FeatureSpec) -> list[dict[str, object]]:
    choices: list[list[object]] = []
    for f in spec.features:
        if isinstance(f, NumericFeature):
            choices.append([f.lo, f.hi])
        elif isinstance(f, CategoricalFeature):
            choices.append(list(f.categories))
        else:
            choices.append([f.edges[0] - 1, *f.edges])
    return [dict(zip(spec.input_names, combo, strict=True)) for combo in itertools.product(*choices)]


def _truncated_gaps(model: LinearModel, scores: list[int]) -> list[int]:
    """|sigma - gamma_k| for the protocol's truncated scores (both carries) and cutoffs."""
    lo, hi = model.encoded_score_bounds
    t_bits = model.truncate_bits
    top = -(-(hi - lo) >> t_bits)
    gammas = [min(max(-((lo - c) >> t_bits), 0), top + 1) for c in model.encoded_cutoffs]
    sigmas = {sig for s in scores for e in (0, 1) if 0 <= (sig := ((s - lo) >> t_bits) + e) <= top}
    return [abs(sig - g) for sig in sigmas for g in gammas]


def test_comparison_bits_is_a_tight_bound_at_every_corner() -> None:
    model = small_model(1e-9)
    scores = [model.encoded_score(model.spec.encode_row(r)) for r in _corner_rows(model.spec)]
    assert len(scores) == 2 * 2 * 3 * 4
    assert (min(scores), max(scores)) == model.encoded_score_bounds
    gaps = _truncated_gaps(model, scores)
    assert max(gaps) < 2**model.comparison_bits
    assert max(gaps) >= 2 ** (model.comparison_bits - 1)  # and l is the smallest such


def _extreme_row(model: LinearModel, highest: bool) -> dict[str, object]:
    row: dict[str, object] = {}
    weights = model.encoded_weights
    for f, cols in model.spec.feature_slices():
        ws = weights[cols]
        if isinstance(f, NumericFeature):
            row[f.name] = f.hi if (ws[0] > 0) == highest else f.lo
        elif isinstance(f, CategoricalFeature):
            pick = max if highest else min
            row[f.name] = f.categories[ws.index(pick(ws))]
        else:
            raise AssertionError("no binned features in the German model")
    return row


def test_comparison_bits_bound_for_the_german_model() -> None:
    model = default_model()
    lo, hi = model.encoded_score_bounds
    assert model.encoded_score(model.spec.encode_row(_extreme_row(model, False))) == lo
    assert model.encoded_score(model.spec.encode_row(_extreme_row(model, True))) == hi
    assert max(_truncated_gaps(model, [lo, hi])) >= 2 ** (model.comparison_bits - 1)
    rng = random.Random(7)
    for _ in range(500):  # random corners of the declared input box
        row: dict[str, object] = {}
        for f in model.spec.features:
            if isinstance(f, NumericFeature):
                row[f.name] = rng.choice([f.lo, f.hi])
            elif isinstance(f, CategoricalFeature):
                row[f.name] = rng.choice(f.categories)
        s = model.encoded_score(model.spec.encode_row(row))
        assert lo <= s <= hi
        assert max(_truncated_gaps(model, [s])) < 2**model.comparison_bits


def test_integer_path_matches_float_path_on_german_rows() -> None:
    model = default_model()
    rows, _ = load_german_credit()
    scale = 2**model.score_frac_bits
    compared = 0
    for row in rows:
        encoded = model.spec.encode_row(row)
        z = model.linear_score(row)
        assert abs(model.encoded_score(encoded) - z * scale) <= model.max_abs_error * scale
        if min(abs(z - c) for c in model.score_cutoffs) > model.max_abs_error:
            compared += 1
            assert (
                model.truncated_band_from_encoded(encoded, 0)
                == model.truncated_band_from_encoded(encoded, 1)
                == model.band(row)
            )
    assert compared >= 990


# ---------------------------------------------------------------------------------------------
# Construction refusals and persistence


def test_unattainable_precision_is_refused() -> None:
    spec = FeatureSpec((NumericFeature("x", 0.0, 10.0, 0),))  # real-valued, rounded to integers
    with pytest.raises(ModelFormatError, match="raise frac_bits"):
        LinearModel("m", spec, [0.01], 0.0, "identity", BandPolicy((1.0,), output="raw"), 1e-3)
    finer = FeatureSpec((NumericFeature("x", 0.0, 10.0, 12),))
    model = LinearModel("m", finer, [0.01], 0.0, "identity", BandPolicy((1.0,), output="raw"), 1e-3)
    assert model.max_abs_error <= 1e-3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"link": "probit"}, "link"),
        ({"link": "identity"}, "need link 'logit'"),
        ({"coef": [0.1] * 8}, "8 entries"),
        ({"coef": [float("nan")] + [0.0] * 8}, "finite"),
        ({"intercept": float("inf")}, "finite"),
        ({"precision": 0.0}, "positive"),
        ({"name": ""}, "name"),
        ({"metadata": {"x": float("nan")}}, "plain JSON"),
    ],
)
def test_model_refusals(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {
        "name": "m",
        "spec": small_spec(),
        "coef": [0.0] * 9,
        "intercept": 0.0,
        "link": "logit",
        "policy": BandPolicy((0.5,)),
    }
    args.update(kwargs)
    with pytest.raises(ModelFormatError, match=message):
        LinearModel(**args)


def test_model_round_trips(tmp_path: Path) -> None:
    model = small_model()
    again = LinearModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again == model
    assert again.encoded_weights == model.encoded_weights
    assert again.comparison_bits == model.comparison_bits
    assert again.truncate_bits == model.truncate_bits
    assert model.to_dict()["format"] == MODEL_FORMAT_VERSION == 2
    path = tmp_path / "m.json"
    model.save(path)
    loaded = LinearModel.load(path)
    assert loaded == model
    assert loaded.band(ROW) == model.band(ROW)
    assert loaded.encoded_score(model.spec.encode_row(ROW)) == model.encoded_score(model.spec.encode_row(ROW))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format=0), "unsupported format"),
        (lambda d: d.update(format=1), "format 1 predates truncated band comparisons"),
        (lambda d: d.update(format=3), "unsupported format 3; this version reads format 2"),
        (lambda d: d["encoded"].update(truncate_bits=3), "differ from those recomputed"),
        (lambda d: d["encoded"].pop("truncate_bits"), "differ from those recomputed"),
        (lambda d: d.update(surprise=True), "unknown field"),
        (lambda d: d.pop("spec"), "missing field"),
        (lambda d: d["encoded"]["weights"].update(income=12345), "differ from those recomputed"),
        (lambda d: d["encoded"].update(comparison_bits=20), "differ from those recomputed"),
        (lambda d: d["coef"].pop("income"), "exactly the encoded column names"),
        (lambda d: d["coef"].update(income="0.1"), "must be a number"),
        (lambda d: d.update(link="logistic"), "link"),
        (lambda d: d["policy"].update(labels=[]), "one label per band"),
        (lambda d: d["policy"].update(output="odds"), "output"),
        (lambda d: d.update(metadata=[]), "metadata"),
    ],
)
def test_model_from_dict_is_strict(mutate: Any, message: str) -> None:
    d = json.loads(json.dumps(small_model().to_dict()))
    mutate(d)
    with pytest.raises(ModelFormatError, match=message):
        LinearModel.from_dict(d)


def test_load_refuses_non_json_and_non_objects(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        LinearModel.load(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ModelFormatError, match="JSON object"):
        LinearModel.load(bad)


def test_describe_and_repr_show_no_weights() -> None:
    model = small_model()
    text = model.describe()
    assert f"score scale 2^{model.score_frac_bits}, truncated by {model.truncate_bits} bits" in text
    assert f"comparison bits {model.comparison_bits}" in text
    assert "band B: 0.1 <= probability < 0.25" in text
    for secret in [repr(w) for w in model.coef[:3]] + [str(w) for w in model.encoded_weights if abs(w) > 9]:
        assert secret not in text
        assert secret not in repr(model)
    assert repr(model) == "LinearModel(name='small', link='logit', features=4, bands=4)"


def test_identity_model_predicts_the_score() -> None:
    spec = FeatureSpec((NumericFeature("x", -5.0, 5.0, 32),))
    model = LinearModel("r", spec, [2.0], 1.0, "identity", BandPolicy((0.0, 3.0), output="raw"))
    assert model.predict({"x": 0.75}) == 2.5
    assert [model.band({"x": x}) for x in (-1.0, -0.5, 0.75, 1.0, 5.0)] == [0, 1, 1, 2, 2]
    xs = np.linspace(-5, 5, 41)
    assert [model.truncated_band_from_encoded(spec.encode_row({"x": float(x)})) for x in xs] == [
        model.band({"x": float(x)}) for x in xs
    ]
