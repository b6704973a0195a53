"""Model types defined outside blindscore reach node processes: modules named in an environment variable."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping

from blindscore.errors import InvalidInputError
from blindscore.models.contract import PrivateModel

#: Comma-separated importable modules every blindscore command imports first; a module that
#: registers a model type (``@register_model_type``) makes the type known to the nodes it starts.
MODEL_MODULES_ENV = "BLINDSCORE_MODEL_MODULES"


def import_model_modules(environ: Mapping[str, str] = os.environ) -> list[str]:
    """Import every module named in ``$BLINDSCORE_MODEL_MODULES``; returns their names."""
    names = [n.strip() for n in environ.get(MODEL_MODULES_ENV, "").split(",") if n.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise InvalidInputError(
                f"${MODEL_MODULES_ENV}: cannot import {name!r} ({exc}); is its directory on PYTHONPATH?"
            ) from None
    return names


def modules_for(model: PrivateModel) -> tuple[str, ...]:
    """The module node processes must import to know ``model``'s type (none for built-in types).

    A type defined in ``__main__`` (a notebook cell, a script) cannot be imported by another
    process: refused with the way out.
    """
    module = type(model).__module__
    if module == "blindscore" or module.startswith("blindscore."):
        return ()
    if module == "__main__":
        raise InvalidInputError(
            f"model type {type(model).__qualname__!r} is defined in __main__ (a notebook or a script), "
            "which the node processes cannot import; move the class (with @register_model_type) into "
            "a module, e.g. my_models.py beside the notebook, and import it from there"
        )
    return (module,)


def with_model_modules(environ: Mapping[str, str], modules: tuple[str, ...]) -> dict[str, str]:
    """``environ`` with ``modules`` added to ``$BLINDSCORE_MODEL_MODULES`` (for child processes)."""
    env = dict(environ)
    have = [n for n in env.get(MODEL_MODULES_ENV, "").split(",") if n]
    merged = have + [m for m in modules if m not in have]
    if merged:
        env[MODEL_MODULES_ENV] = ",".join(merged)
    return env
