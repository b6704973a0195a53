"""blindscore: privacy-preserving credit scoring between a platform, a credit bureau and a bank.

The public API, for notebooks and scripts (imported on first use, so ``import blindscore`` stays
light)::

    blindscore.score(data, model, cutoffs=[...])   # bands through three local nodes, as a DataFrame
    blindscore.verify(data, model, cutoffs=[...])  # encrypted bands vs the plaintext model
    blindscore.report(data, model, "target")       # band table: bad rates, KS, AUC (plaintext)
    blindscore.bench("online")                     # a benchmark workload's summary, as a dict
    blindscore.load_model(model_or_path, ...)      # a model file or fitted estimator as a model
    blindscore.Client(...)                         # submit applications to a running platform node
    blindscore.BankClient(...)                     # the bank's own systems: bands by id, as they come
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from blindscore.errors import BlindscoreError

if TYPE_CHECKING:
    __version__: str
    from blindscore.app.api import bench, load_model, report, score, verify
    from blindscore.app.client import Client, Outcome
    from blindscore.bank_node.client import Band, BankClient

__all__ = [
    "Band",
    "BankClient",
    "BlindscoreError",
    "Client",
    "Outcome",
    "__version__",
    "bench",
    "load_model",
    "report",
    "score",
    "verify",
]
#: Public names and the module each is imported from on first use.
_LAZY = {
    "score": "blindscore.app.api",
    "verify": "blindscore.app.api",
    "report": "blindscore.app.api",
    "bench": "blindscore.app.api",
    "load_model": "blindscore.app.api",
    "Client": "blindscore.app.client",
    "Outcome": "blindscore.app.client",
    "BankClient": "blindscore.bank_node.client",
    "Band": "blindscore.bank_node.client",
}


def _version() -> str:
    """The installed distribution's version: pyproject.toml's ``version`` is its only source."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("blindscore")
    except PackageNotFoundError:  # a source tree on sys.path that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value = globals()["__version__"] = _version()
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'blindscore' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
