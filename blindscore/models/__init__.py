"""Scoring models the bureau evaluates blind: the contract, feature specs, band policies, model types.

The public face of the model layer: a researcher adding a model type imports from here.
"""

from __future__ import annotations

from blindscore.models.contract import ENTRY_POINT_GROUP, AdditiveModel, PrivateModel, register_model_type
from blindscore.models.features import (
    BinnedFeature,
    CategoricalFeature,
    CategoryCodeFeature,
    Feature,
    FeatureSpec,
    FloatKeyFeature,
    GroupedCategoricalFeature,
    NumericFeature,
    XGBoostCategoryFeature,
)
from blindscore.models.linear import LinearModel
from blindscore.models.mlp import MLPModel
from blindscore.models.policy import BandPolicy
from blindscore.models.registry import load_model, load_model_file, model_type, model_types
from blindscore.models.scorecard import Scorecard
from blindscore.models.trees import TreeEnsemble

__all__ = [
    "ENTRY_POINT_GROUP",
    "AdditiveModel",
    "BandPolicy",
    "BinnedFeature",
    "CategoricalFeature",
    "CategoryCodeFeature",
    "Feature",
    "FeatureSpec",
    "FloatKeyFeature",
    "GroupedCategoricalFeature",
    "LinearModel",
    "MLPModel",
    "NumericFeature",
    "PrivateModel",
    "Scorecard",
    "TreeEnsemble",
    "XGBoostCategoryFeature",
    "load_model",
    "load_model_file",
    "model_type",
    "model_types",
    "register_model_type",
]
