"""Float-key features: the exact public encoding of tree ensembles' inputs in a feature spec."""

from __future__ import annotations

import math

import pytest

from blindscore.errors import EncodingError, ModelFormatError
from blindscore.models.features import FeatureSpec, FloatKeyFeature
from blindscore.models.floatkeys import KZERO_THRESHOLD, float_key, key_bounds
from blindscore.models.linear import LinearModel
from blindscore.models.policy import BandPolicy


def test_a_value_encodes_to_its_key_and_two_clear_bits() -> None:
    f = FloatKeyFeature("income", "float32")
    assert f.columns == ("income", "income#missing", "income#zero")
    assert f.encode(2.5) == [float_key(2.5, "float32"), 0, 0]
    assert f.encode("-7") == [float_key(-7.0, "float32"), 0, 0]
    assert f.encoded_bounds == (key_bounds("float32"), (0, 1), (0, 1))


@pytest.mark.parametrize("missing", [None, "", float("nan"), "  "])
def test_a_missing_value_is_key_zero_with_both_bits(missing: object) -> None:
    assert FloatKeyFeature("x").encode(missing) == [0, 1, 1]


def test_the_zero_bit_marks_lightgbms_zero_region() -> None:
    f = FloatKeyFeature("x", "float64", snap_zero=True)
    assert f.encode(0.0)[2] == 1 and f.encode(-0.0) == f.encode(0.0)
    assert f.encode(KZERO_THRESHOLD / 2) == [0, 0, 1]  # snapped to 0.0, as LightGBM reads it
    assert f.encode(1e-30)[2] == 0
    plain = FloatKeyFeature("x", "float64")
    assert plain.encode(KZERO_THRESHOLD / 2)[0] != 0 and plain.encode(KZERO_THRESHOLD / 2)[2] == 1


def test_keys_keep_the_order_of_the_floats() -> None:
    values = [-3.0e38, -3.5, -1e-30, 0.0, 1e-30, 2.0, 2.0000002, 3.0e38]
    keys = [FloatKeyFeature("x").encode(v)[0] for v in values]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert FloatKeyFeature("x").encode(math.inf)[0] == key_bounds("float32")[1]  # as the libraries read it
    with pytest.raises(EncodingError, match="expected a number, got the string 'inf'"):
        FloatKeyFeature("x").encode("inf")  # text is parsed strictly


def test_the_spec_round_trips_and_refuses_a_bad_domain() -> None:
    spec = FeatureSpec((FloatKeyFeature("a", "float64", True), FloatKeyFeature("b")))
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    assert spec.encode_row({"a": 1.0, "b": None}) == [float_key(1.0, "float64"), 0, 0, 0, 1, 1]
    with pytest.raises(ModelFormatError, match="domain must be float32 or float64"):
        FloatKeyFeature("a", "float16")
    bad = spec.to_dict()
    bad["features"][0]["snap_zero"] = "yes"
    with pytest.raises(ModelFormatError, match="'snap_zero' must be true or false"):
        FeatureSpec.from_dict(bad)


def test_a_linear_model_refuses_float_key_features() -> None:
    spec = FeatureSpec((FloatKeyFeature("a"),))
    with pytest.raises(ModelFormatError, match="feature 'a' is a float-key feature"):
        LinearModel("m", spec, [1.0, 0.0, 0.0], 0.0, "identity", BandPolicy((0.5,), output="raw"))
