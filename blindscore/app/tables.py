"""Applicant rows from what a user has at hand: a pandas DataFrame, a CSV or Parquet path, or dicts."""

from __future__ import annotations

import csv
import math
import numbers
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from blindscore.errors import InvalidInputError

#: One applicant: column name -> a number, a text, or None for a missing value.
Row = dict[str, float | int | str | None]
#: What the public functions take as applicant data.
Data = Any  # pandas.DataFrame | str | Path | Iterable[Mapping[str, object]]


def load_rows(data: Data, *, what: str = "data") -> list[Row]:
    """The rows of ``data``: a pandas DataFrame, a path to a .csv (read as text, as a file's cells
    are) or .parquet file, or an iterable of mappings. Missing values (NaN, None, pandas.NA) become
    None. Refuses an empty table and values that are neither numbers nor texts."""
    if isinstance(data, str | Path):
        rows = _read_path(Path(data), what)
    elif hasattr(data, "to_dict") and hasattr(data, "columns"):
        _check_columns([str(c) for c in data.columns], what)
        rows = [{str(k): v for k, v in record.items()} for record in data.to_dict("records")]
    elif isinstance(data, Mapping) or not isinstance(data, Iterable):
        raise InvalidInputError(
            f"{what}: expected a pandas DataFrame, a CSV or Parquet path, or a list of dicts, "
            f"not {type(data).__name__}"
        )
    else:
        rows = []
        for i, row in enumerate(data):
            if not isinstance(row, Mapping):
                raise InvalidInputError(f"{what}, row {i + 1}: expected a dict, not {type(row).__name__}")
            rows.append({str(k): v for k, v in row.items()})
    if not rows:
        raise InvalidInputError(f"{what}: no rows")
    return [{k: _value(v, what, i, k) for k, v in row.items()} for i, row in enumerate(rows)]


def _read_path(path: Path, what: str) -> list[dict[str, Any]]:
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pandas as pd
        except ImportError:
            raise InvalidInputError(f"{what} {path}: reading Parquet needs pandas and pyarrow") from None
        if not path.is_file():
            raise InvalidInputError(f"{what} {path}: no such file")
        try:
            frame = pd.read_parquet(path)
        except (ImportError, ValueError, OSError) as exc:
            raise InvalidInputError(f"{what} {path}: not a readable Parquet file ({exc})") from None
        return load_rows(frame, what=f"{what} {path}")
    try:
        _, rows = read_rows(path)
    except InvalidInputError as exc:
        raise InvalidInputError(str(exc).replace("--input", what, 1)) from None
    # An empty cell is a missing value, as in a DataFrame read from the same file.
    return [{k: (v if v != "" else None) for k, v in row.items()} for row in rows]


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Read a CSV with a header; refuses empty files and duplicate column names."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            rows = list(reader)
    except FileNotFoundError:
        raise InvalidInputError(f"--input {path}: no such file") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInputError(f"--input {path}: not a readable CSV ({exc})") from None
    if not header:
        raise InvalidInputError(f"--input {path}: empty file (a header row is required)")
    if len(set(header)) != len(header):
        raise InvalidInputError(f"--input {path}: duplicate column names in the header")
    if not rows:
        raise InvalidInputError(f"--input {path}: no data rows")
    return header, rows


def _check_columns(columns: list[str], what: str) -> None:
    if len(set(columns)) != len(columns):
        raise InvalidInputError(f"{what}: duplicate column names")


def _value(value: object, what: str, row: int, column: str) -> float | int | str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        raise InvalidInputError(
            f"{what}, row {row + 1}, column {column!r}: a boolean is ambiguous; use 0/1 or a category"
        )
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return None if math.isnan(number) else number
    if isinstance(value, str):
        return value
    raise InvalidInputError(
        f"{what}, row {row + 1}, column {column!r}: expected a number or a text, not {type(value).__name__}"
    )
