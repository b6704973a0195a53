"""Invalid rows of a CSV run: the --on-invalid policy and the rejects file (original columns and a reason)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from blindscore._files import write_atomic
from blindscore.errors import EncodingError, InvalidInputError

#: What a run does with a row the model's public encoding refuses: stop the run (the default, nothing
#: written) or skip the row to the rejects file and go on.
ON_INVALID = ("stop", "skip")
REASON = "reason"


@dataclass(frozen=True)
class Rejected:
    """One skipped row: its 1-based number among the data rows, its cells as given, and why."""

    row: int
    values: Mapping[str, object]
    reason: str


def reason_of(exc: InvalidInputError) -> str:
    """The refusal as a rejects-file reason, naming the column (the feature of that name)."""
    if isinstance(exc, EncodingError):
        return str(exc).replace(f"feature {exc.feature!r}:", f"column {exc.feature!r}:", 1)
    return str(exc)


def check_on_invalid(on_invalid: str, flag: str = "on_invalid") -> None:
    if on_invalid not in ON_INVALID:
        raise InvalidInputError(f"{flag} {on_invalid!r}: choose one of {', '.join(ON_INVALID)}")


def check_policy(
    on_invalid: str,
    rejects: Path | None,
    *,
    flags: tuple[str, str] = ("--on-invalid", "--rejects"),
    others: Mapping[str, Path | None] | None = None,
) -> None:
    """Refuse a policy that cannot be followed: an unknown value, skip without a rejects file, a rejects
    file without skip, or a rejects file that is also one of ``others`` (e.g. the input or output)."""
    policy, where = flags
    check_on_invalid(on_invalid, policy)
    if on_invalid == "skip" and rejects is None:
        raise InvalidInputError(f"{policy} skip needs {where} FILE: the CSV the skipped rows are written to")
    if on_invalid == "stop" and rejects is not None:
        raise InvalidInputError(f"{where} is for {policy} skip (stop ends the run at the first invalid row)")
    for name, other in (others or {}).items():
        if rejects is not None and other is not None and _same(rejects, other):
            raise InvalidInputError(f"{where} {rejects} is also the {name}; give another file")


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def rejects_csv(header: Sequence[str], rejected: Sequence[Rejected]) -> bytes:
    """The rejects file: the input's columns as given, then ``reason`` (``reason_`` ... if taken)."""
    reason = REASON
    while reason in header:
        reason += "_"
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow([*header, reason])
    for r in rejected:
        out.writerow([_cell(r.values.get(column)) for column in header] + [r.reason])
    return buf.getvalue().encode()


def _cell(value: object) -> object:
    return "" if value is None else value


def write_rejects(path: Path, header: Sequence[str], rejected: Sequence[Rejected]) -> None:
    """Write the rejects file atomically (readers see the old file or the whole new one)."""
    write_atomic(path, rejects_csv(header, rejected))


def header_of(rows: Sequence[Mapping[str, object]]) -> list[str]:
    """Every column of ``rows`` in first-seen order."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)
