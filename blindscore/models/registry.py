"""The registry of model types: the built-in ones and third-party plug-ins, looked up by name."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path

from blindscore.errors import ModelFormatError
from blindscore.models import linear, mlp, scorecard, trees
from blindscore.models._json import read_object
from blindscore.models.contract import ENTRY_POINT_GROUP, PrivateModel, _lock, _types, register_model_type

log = logging.getLogger(__name__)

#: The built-in model types (they register themselves when their modules are imported).
BUILTIN_TYPES: tuple[type[PrivateModel], ...] = (
    linear.LinearModel,
    scorecard.Scorecard,
    trees.TreeEnsemble,
    mlp.MLPModel,
)
_entry_points_loaded = False


def _load_builtin_and_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    with _lock:
        if _entry_points_loaded:
            return
        _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plug-in must not take the bureau down
            log.error("model type entry point %r (%s) failed to load: %s", ep.name, ep.value, exc)
            continue
        try:
            register_model_type(cls)
        except ModelFormatError as exc:
            log.error("model type entry point %r refused: %s", ep.name, exc)


def model_types() -> dict[str, type[PrivateModel]]:
    """Every registered model type by name (built-in ones and entry-point plug-ins)."""
    _load_builtin_and_entry_points()
    with _lock:
        return dict(_types)


def model_type(name: str) -> type[PrivateModel]:
    """The model type registered under ``name``."""
    types = model_types()
    try:
        return types[name]
    except KeyError:
        known = ", ".join(sorted(types))
        raise ModelFormatError(f"unknown model type {name!r}; registered: {known}") from None


def load_model(d: object) -> PrivateModel:
    """Rebuild a model of any registered type from its serialised form (dispatch on ``kind``)."""
    if not isinstance(d, Mapping):
        raise ModelFormatError("a model must be a JSON object")
    kind = d.get("kind")
    if not isinstance(kind, str):
        raise ModelFormatError("a model needs a 'kind' naming its model type")
    return model_type(kind).from_dict(d)


def load_model_file(path: str | Path) -> PrivateModel:
    """Read a model of any registered type from a JSON file."""
    return load_model(read_object(Path(path)))
