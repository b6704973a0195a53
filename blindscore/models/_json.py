"""Strict reading of the JSON-like dictionaries models, specs and policies are saved as."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from blindscore._files import read_json
from blindscore.errors import BlindscoreError, ModelFormatError

#: Format of a serialised feature spec.
FORMAT_VERSION = 1

_MAX_LISTED = 12


def _check_keys(d: object, where: str, required: set[str], optional: frozenset[str] = frozenset()) -> None:
    if not isinstance(d, Mapping):
        raise ModelFormatError(f"{where}: expected a JSON object, got {type(d).__name__}")
    keys = set(d)
    missing = required - keys
    unknown = keys - required - optional
    if missing:
        raise ModelFormatError(f"{where}: missing field(s) {sorted(missing)}")
    if unknown:
        raise ModelFormatError(f"{where}: unknown field(s) {sorted(map(str, unknown))}")


def _get_str(d: Mapping[str, Any], key: str, where: str) -> str:
    value = d[key]
    if not isinstance(value, str):
        raise ModelFormatError(f"{where}: {key!r} must be a string")
    return value


def _get_int(d: Mapping[str, Any], key: str, where: str) -> int:
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelFormatError(f"{where}: {key!r} must be an integer")
    return value


def _as_real(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ModelFormatError(f"{what} must be a number, got {type(value).__name__}")
    try:
        result = float(value)
    except OverflowError as exc:
        raise ModelFormatError(f"{what} is too large") from exc
    if not math.isfinite(result):
        raise ModelFormatError(f"{what} must be finite, got {value!r}")
    return result


def _get_real(d: Mapping[str, Any], key: str, where: str) -> float:
    return _as_real(d[key], f"{where}: {key!r}")


def _get_list(d: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = d[key]
    if not isinstance(value, list):
        raise ModelFormatError(f"{where}: {key!r} must be a list")
    return value


def _check_format(d: Mapping[str, Any], kind: str, where: str, version: int = FORMAT_VERSION) -> None:
    if d.get("format") != version or isinstance(d.get("format"), bool):
        raise ModelFormatError(
            f"{where}: unsupported format {d.get('format')!r}; this version reads format {version}"
        )
    if d.get("kind") != kind:
        raise ModelFormatError(f"{where}: kind must be {kind!r}, got {d.get('kind')!r}")


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(repr(x) for x in items[:_MAX_LISTED])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _MAX_LISTED else "")


def read_object(path: Path) -> Mapping[str, Any]:
    """The JSON object in the file at ``path``; anything unreadable or not an object is a
    :class:`ModelFormatError` naming the file."""
    try:
        d = read_json(path)
    except ModelFormatError:
        raise
    except BlindscoreError as exc:
        raise ModelFormatError(str(exc)) from exc
    if not isinstance(d, Mapping):
        raise ModelFormatError(f"{path}: a model file must hold a JSON object")
    return d
