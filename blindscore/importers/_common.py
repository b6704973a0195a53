"""What the scorecard converters share: value checks, the caller's band choice, and reading a file once."""

from __future__ import annotations

import importlib
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from blindscore.errors import InvalidInputError, ModelFormatError
from blindscore.models.features import MAX_CATEGORY_CODES
from blindscore.models.scorecard import DEFAULT_PRECISION, PdoScaling, Scorecard, ScorecardFeature

#: A model file is small; this only stops a hostile file from exhausting memory.
MAX_FILE_BYTES = 64 << 20

BandsOn = Literal["points", "probability"]


def require(module: str, what: str) -> ModuleType:
    """Import an optional library, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelFormatError(f"{what} needs {module}: install blindscore[scorecards]") from None


def read_bytes(path: Path) -> bytes:
    """The whole file, refused when missing or too large to be a model."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except (FileNotFoundError, IsADirectoryError):
        raise InvalidInputError(f"{path}: no such file") from None
    if len(data) > MAX_FILE_BYTES:
        raise ModelFormatError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB; not a model file")
    return data


#: Suffixes of files that hold a pickle (joblib's too): refused by name, never opened as a model.
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")


def is_pickle(path: Path, head: bytes = b"") -> bool:
    """Whether ``path`` is a pickle: by its suffix, or by ``head`` (its first bytes) starting with
    the PROTO opcode 0x80 and a protocol of 2 to 5. Nothing is unpickled."""
    return path.suffix.lower() in PICKLE_SUFFIXES or (
        len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
    )


def refuse_pickle(path: Path, head: bytes = b"") -> None:
    """Refuse a pickle file (:func:`is_pickle`) by name, in one sentence that says what to do instead."""
    if is_pickle(path, head):
        raise ModelFormatError(
            f"{path} is a pickle file; blindscore never loads pickles (they can run code): save the model "
            "with skops.io.dump(model, 'model.skops')"
        )


def real(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ModelFormatError(f"{what} must be a number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise ModelFormatError(f"{what} must be finite, got {value!r}")
    return x


def number(text: object, what: str) -> float:
    """A finite number from a number or from its text (as a CSV cell holds it)."""
    if isinstance(text, str):
        try:
            value: object = float(text.strip())
        except ValueError:
            raise ModelFormatError(f"{what}: {text!r} is not a number") from None
    else:
        value = text
    return real(value, what)


def is_nan(value: object) -> bool:
    return value is None or (
        isinstance(value, numbers.Real) and not isinstance(value, bool) and value != value
    )


def tolist(value: object) -> list[Any]:
    """A list from a list, tuple or numpy array (``tolist`` turns numpy scalars into Python ones)."""
    to = getattr(value, "tolist", None)
    if callable(to):
        value = to()
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise ModelFormatError(f"expected a list, got {type(value).__name__}")
    return value


def later_wins(groups: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Make groups disjoint as the libraries assign them, in order: the last group listing a value wins."""
    seen: set[Any] = set()
    out: list[list[Any]] = []
    for group in reversed(groups):
        kept = []
        for v in group:
            if v not in seen:
                seen.add(v)
                kept.append(v)
        out.append(kept)
    return out[::-1]


def category(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ModelFormatError(
            f"{where}: category {value!r} is not a string; only string categories are supported"
        )
    return str(value)


@dataclass(frozen=True)
class CardBands:
    """The caller's part of a converted scorecard: its name and band policy, and the error bound."""

    name: str
    cutoffs: Sequence[float]
    labels: Sequence[str] = ()
    on: str = "points"
    precision: float = DEFAULT_PRECISION

    def card(
        self,
        features: Sequence[ScorecardFeature],
        base_points: float,
        *,
        scaling: PdoScaling | None,
        metadata: Mapping[str, Any],
    ) -> Scorecard:
        """The scorecard of ``features`` banded as the caller asked."""
        if self.on not in ("points", "probability"):
            raise InvalidInputError(f"bands must be on 'points' or 'probability', got {self.on!r}")
        on: BandsOn = "points" if self.on == "points" else "probability"
        return Scorecard(
            self.name,
            features,
            base_points,
            self.cutoffs,
            self.labels,
            on=on,
            scaling=scaling,
            precision=self.precision,
            metadata=metadata,
        )


def category_codes(
    library: str, where: str, fname: str, codes: tuple[int, ...], none: str
) -> tuple[int, ...]:
    """A categorical node's sorted codes, or ModelFormatError: ``none`` completes the sentence for
    a node with no code; a code past MAX_CATEGORY_CODES (one encrypted column each) is refused."""
    if not codes:
        raise ModelFormatError(f"{library} model: {where} {none}; the model file is malformed")
    if codes[-1] >= MAX_CATEGORY_CODES:
        raise ModelFormatError(
            f"{library} model: {where} splits feature {fname!r} on category code {codes[-1]}; codes "
            f"up to {MAX_CATEGORY_CODES - 1} are supported (one encrypted column per code): "
            "re-code the categories as small integers"
        )
    return codes
