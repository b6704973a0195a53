"""The bureau's append-only, hash-chained audit trail: who asked what, when, and how it ended."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from math import isfinite
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from blindscore.errors import InvalidInputError, PreconditionError
from blindscore.infra.db import Database, Tx, create_schema

FORMAT_VERSION = 1
GENESIS_HASH = "0" * 64

#: The outcome of the record the bureau appends *before* it stores and scores an application: it
#: passed every check and the band protocol may run. The outcome of the call follows in a record of
#: its own; an ACCEPTED record with none after it means "accepted, outcome not recorded" (the
#: outcome write failed, or the bureau stopped meanwhile). No record, no scoring: see BureauNode.admit.
ACCEPTED = "ACCEPTED"

# The canonical gRPC status names (grpc.StatusCode members) and ACCEPTED. Anything else is refused,
# so the outcome column can never carry free text.
OUTCOMES: frozenset[str] = frozenset(
    {
        ACCEPTED,
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    }
)

# Text fields and their maximum length in code points. The caps are also what keeps the log from
# becoming a place to park a ciphertext or a feature vector: a 2048-bit Paillier ciphertext alone
# needs over a thousand hex digits.
_TEXT_LIMITS: dict[str, int] = {
    "platform_id": 128,
    "bank_id": 128,
    "application_id": 128,
    "consent_reference": 256,
    "model_id": 128,
    "model_version": 64,
}
# Control, format (bidi overrides, zero-width), surrogate and line/paragraph-separator characters: they
# could forge line breaks or hide text when the trail is printed, and surrogates cannot be stored.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_MAX_DURATION_MS = 7 * 24 * 3600 * 1000
_AT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\+00:00")
_HEX64 = re.compile(r"[0-9a-f]{64}")

# Column order of the table and of AuditRecord; every column except ``hash`` is hashed.
_COLUMNS = (
    "seq",
    "at",
    "platform_id",
    "bank_id",
    "application_id",
    "consent_reference",
    "model_id",
    "model_version",
    "outcome",
    "duration_us",
    "prev_hash",
    "hash",
)
_INT_COLUMNS = frozenset({"seq", "duration_us"})
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM {{audit}}"
_INSERT = f"INSERT INTO {{audit}} ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_PAGE = 512

# The audit table on either backend: SQLite names it "audit", PostgreSQL "{audit}" (prefixed
# "bureau_" like every bureau table there, filled in by create_schema) and needs 64-bit integers.
_TABLE = """
    CREATE TABLE IF NOT EXISTS <table> (
        seq               <int> PRIMARY KEY,
        at                TEXT NOT NULL,
        platform_id       TEXT NOT NULL,
        bank_id           TEXT NOT NULL,
        application_id    TEXT NOT NULL,
        consent_reference TEXT NOT NULL,
        model_id          TEXT NOT NULL,
        model_version     TEXT NOT NULL,
        outcome           TEXT NOT NULL,
        duration_us       <int> NOT NULL,
        prev_hash         TEXT NOT NULL,
        hash              TEXT NOT NULL
    )
    """

#: Where the bureau keeps its applications (and, since 2026-12, its audit trail) in SQLite.
APPLICATIONS_FILE = "applications.sqlite3"
#: The audit trail's own SQLite file, as versions before 2026-12 made it: used where it exists.
LEGACY_FILE = "audit.sqlite3"

_SCHEMA = (
    _TABLE.replace("<table>", "audit").replace("<int>", "INTEGER"),
    # Defence in depth against accidents through SQL; someone with the file can drop these, which is
    # what the hash chain (and an anchored head) is for.
    """
    CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END
    """,
)


# On PostgreSQL the triggers refuse UPDATE, DELETE and TRUNCATE; as on SQLite, the hash chain is
# what catches someone who drops them.
_PG_SCHEMA = (
    _TABLE.replace("<table>", "{audit}").replace("<int>", "BIGINT"),
    """
    CREATE OR REPLACE FUNCTION {audit}_append_only() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$
    """,
    """
    CREATE OR REPLACE TRIGGER {audit}_no_change BEFORE UPDATE OR DELETE ON {audit}
    FOR EACH ROW EXECUTE FUNCTION {audit}_append_only()
    """,
    """
    CREATE OR REPLACE TRIGGER {audit}_no_truncate BEFORE TRUNCATE ON {audit}
    FOR EACH STATEMENT EXECUTE FUNCTION {audit}_append_only()
    """,
)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One scoring query as the bureau saw it. Deliberately has no room for features, ciphertexts,
    scores or bands."""

    seq: int
    at: str
    platform_id: str
    bank_id: str
    application_id: str
    consent_reference: str
    model_id: str
    model_version: str
    outcome: str
    duration_us: int
    prev_hash: str
    hash: str

    @property
    def duration_ms(self) -> float:
        return self.duration_us / 1000

    @property
    def timestamp(self) -> datetime:
        return datetime.fromisoformat(self.at)

    def canonical_bytes(self) -> bytes:
        """The bytes ``hash`` is the SHA-256 of; see ``canonical_bytes`` at module level."""
        return canonical_bytes({name: getattr(self, name) for name in _COLUMNS if name != "hash"})

    def computed_hash(self) -> str:
        return hashlib.sha256(self.canonical_bytes()).hexdigest()


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """``records`` counts the records that verified, i.e. the trustworthy prefix of the log."""

    ok: bool
    records: int
    first_bad_seq: int | None
    reason: str


def canonical_bytes(values: dict[str, str | int]) -> bytes:
    """UTF-8 JSON of ``values`` plus ``"format": 1``: keys sorted, separators "," and ":", no whitespace,
    non-ASCII kept as UTF-8. Values are only str and int and strings never hold control characters, so
    the only escapes are \\" and \\\\ and any JSON encoder with these settings yields the same bytes."""
    if set(values) != set(_COLUMNS) - {"hash"}:
        raise InvalidInputError("canonical encoding needs exactly the hashed audit columns")
    doc: dict[str, str | int] = {**values, "format": FORMAT_VERSION}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _check_text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"audit field {name} must be a str, not {type(value).__name__}")
    limit = _TEXT_LIMITS[name]
    if len(value) > limit:
        raise InvalidInputError(f"audit field {name} is longer than {limit} characters")
    for ch in value:
        if unicodedata.category(ch) in _REFUSED_CATEGORIES:
            raise InvalidInputError(
                f"audit field {name} contains control character U+{ord(ch):04X}; newlines, control "
                "and format characters are refused"
            )
    return str.__str__(value)  # a plain str, whatever subclass came in


def _check_outcome(value: object) -> str:
    if isinstance(value, grpc.StatusCode):
        value = value.name
    if not isinstance(value, str):
        raise InvalidInputError(f"audit outcome must be a gRPC status name, not {type(value).__name__}")
    if value not in OUTCOMES:
        raise InvalidInputError(
            f"audit outcome {value[:40]!r} is not a gRPC status name (e.g. 'OK') or ACCEPTED"
        )
    return str.__str__(value)


def _check_duration(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"audit duration_ms must be a number, not {type(value).__name__}")
    if not isfinite(value) or not 0 <= value <= _MAX_DURATION_MS:
        raise InvalidInputError(f"audit duration_ms must be between 0 and {_MAX_DURATION_MS}")
    # Stored as whole microseconds so the hash never depends on how a float is printed.
    return round(value * 1000)


def _format_at(at: object) -> str:
    if at is None:
        at = datetime.now(UTC)
    if not isinstance(at, datetime):
        raise InvalidInputError(f"audit time must be a datetime, not {type(at).__name__}")
    if at.utcoffset() is None:
        raise InvalidInputError("audit time must be timezone-aware (naive datetimes are ambiguous)")
    try:
        text = at.astimezone(UTC).isoformat(timespec="microseconds")
    except (OverflowError, ValueError):
        raise InvalidInputError("audit time is out of range") from None
    if not _AT.fullmatch(text):
        raise InvalidInputError(f"audit time {text!r} is out of range")
    return text


def _problem(record: AuditRecord) -> str | None:
    """Why a stored record could never have been written by ``append``, or None."""
    try:
        for name in _TEXT_LIMITS:
            _check_text(name, getattr(record, name))
        _check_outcome(record.outcome)
    except InvalidInputError as exc:
        return str(exc)
    if not _AT.fullmatch(record.at):
        return "malformed time"
    try:
        datetime.fromisoformat(record.at)
    except ValueError:
        return "malformed time"
    if not 0 <= record.duration_us <= _MAX_DURATION_MS * 1000:
        return "duration out of range"
    return None


def _row_to_record(row: tuple[object, ...]) -> AuditRecord | str:
    """An AuditRecord, or a description of why the stored row has the wrong shape."""
    if len(row) != len(_COLUMNS):
        return "wrong number of columns"
    for name, value in zip(_COLUMNS, row, strict=True):
        want = int if name in _INT_COLUMNS else str
        if type(value) is not want:
            return f"column {name} holds a {type(value).__name__}, expected {want.__name__}"
    return AuditRecord(*row)  # type: ignore[arg-type]


class AuditLog:
    """An append-only audit trail of scoring queries, hash-chained so edits, removals and reordering
    show up in ``verify()``. Safe to share between threads and processes (on one host with SQLite;
    any number of bureaus on one PostgreSQL database)."""

    def __init__(self, target: Path | str | Database) -> None:
        """Open the trail in a SQLite file of its own (a Path), a database URL, or an open bureau
        Database it shares with the bureau's other stores (which then stays the caller's to close)."""
        self._owns = not isinstance(target, Database)
        db = Database.open(target, "bureau") if not isinstance(target, Database) else target
        self._db = db
        self.path = db.path
        try:
            db.setup(self._create, "the audit log")
        except BaseException:
            self._close_db()
            raise

    @property
    def database(self) -> Database:
        return self._db

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> AuditLog:
        """The trail of a bureau that keeps its state in SQLite files under ``data_dir`` (for tools:
        the node opens it with its applications store, ``BureauNode.open``): its own
        ``audit.sqlite3`` where an earlier version made one, else the applications file.
        PreconditionError when there is neither."""
        own = data_dir / LEGACY_FILE
        if own.exists():
            return cls(own)
        shared = data_dir / APPLICATIONS_FILE
        if not shared.exists():
            raise PreconditionError(
                f"no audit trail in {data_dir} (no {APPLICATIONS_FILE} or {LEGACY_FILE}): is it the "
                "bureau's data directory?"
            )
        db = Database.open(shared, "bureau")
        try:
            trail = cls(db)
        except BaseException:
            db.close()
            raise
        trail._owns = True
        return trail

    def _create(self, tx: Tx) -> None:
        if tx.backend == "postgresql":
            create_schema(self._db, tx, _PG_SCHEMA)
            tx.check_version("bureau.audit", FORMAT_VERSION)
            return
        if not self._owns:
            # A file shared with the applications store: the version where the other stores keep theirs.
            tx.check_version("bureau.audit", FORMAT_VERSION)
            for statement in _SCHEMA:
                tx.execute(statement)
            return
        # A file of its own keeps the version in the file header, as audit files always have.
        version = tx.one("PRAGMA user_version")[0]  # type: ignore[index]
        if version not in (0, FORMAT_VERSION):
            raise PreconditionError(
                f"audit log {self.path} has format {version}; this version reads format {FORMAT_VERSION}"
            )
        for statement in _SCHEMA:
            tx.execute(statement)
        if version == 0:
            tx.execute(f"PRAGMA user_version = {FORMAT_VERSION}")

    def _close_db(self) -> None:
        if self._owns:
            self._db.close()

    def append(
        self,
        *,
        platform_id: str,
        bank_id: str,
        application_id: str,
        consent_reference: str,
        model_id: str,
        model_version: str,
        outcome: str | grpc.StatusCode,
        duration_ms: float,
        at: datetime | None = None,
    ) -> AuditRecord:
        """Append one query's record and return it. Empty strings mean "not supplied" (e.g. a request
        refused before it named a bank); everything is validated before anything is written."""
        entry = {
            "platform_id": platform_id,
            "bank_id": bank_id,
            "application_id": application_id,
            "consent_reference": consent_reference,
            "model_id": model_id,
            "model_version": model_version,
            "outcome": outcome,
            "duration_ms": duration_ms,
            "at": at,
        }
        return self.append_many([entry])[0]

    def append_many(self, entries: Sequence[Mapping[str, Any]], *, sync: bool = True) -> list[AuditRecord]:
        """Append several records (each with :meth:`append`'s keyword fields) in one transaction,
        in order: one write lock and one commit for, say, every application of a packed batch.
        Every entry is validated before anything is written. ``sync=False``: committed without
        waiting for the disk (Database.write); a machine crash may lose these records and every
        later one, which leaves a shorter chain that still verifies."""
        drafts = [
            AuditRecord(
                seq=0,
                at=_format_at(e.get("at")),
                platform_id=_check_text("platform_id", e["platform_id"]),
                bank_id=_check_text("bank_id", e["bank_id"]),
                application_id=_check_text("application_id", e["application_id"]),
                consent_reference=_check_text("consent_reference", e["consent_reference"]),
                model_id=_check_text("model_id", e["model_id"]),
                model_version=_check_text("model_version", e["model_version"]),
                outcome=_check_outcome(e["outcome"]),
                duration_us=_check_duration(e["duration_ms"]),
                prev_hash=GENESIS_HASH,
                hash="",
            )
            for e in entries
        ]
        return self._chain(drafts, sync)

    def _chain(self, drafts: Sequence[AuditRecord], sync: bool = True) -> list[AuditRecord]:
        def chain(tx: Tx) -> list[AuditRecord]:
            # The head is read and the records written under the table's write lock, so two writers
            # (threads, processes, or bureaus sharing one PostgreSQL) can never fork the chain.
            tx.lock("audit")
            seq, prev_hash = self._head(tx)
            out = []
            for draft in drafts:
                seq += 1
                record = replace(draft, seq=seq, prev_hash=prev_hash)
                record = replace(record, hash=record.computed_hash())
                tx.execute(_INSERT, tuple(getattr(record, name) for name in _COLUMNS))
                out.append(record)
                prev_hash = record.hash
            return out

        return self._db.write(chain, sync=sync)

    @staticmethod
    def _head(tx: Tx) -> tuple[int, str]:
        row = tx.one("SELECT seq, hash FROM {audit} ORDER BY seq DESC LIMIT 1")
        return (0, GENESIS_HASH) if row is None else (int(row[0]), str(row[1]))

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the newest record, (0, 64 zeros) when empty: publish it elsewhere to anchor."""
        return self._db.read(self._head)

    def _rows(self, after: int | None) -> Iterator[tuple[object, ...]]:
        # Page by seq and yield outside the lock, so a consumer may append while it iterates. With
        # after=None even rows planted at seq <= 0 are read.
        last = after
        while True:
            params: tuple[int, ...]
            if last is None:
                query, params = f"{_SELECT} ORDER BY seq LIMIT ?", (_PAGE,)
            else:
                query, params = f"{_SELECT} WHERE seq > ? ORDER BY seq LIMIT ?", (last, _PAGE)
            page = self._db.read(partial(_page, query, params))
            if not page:
                return
            yield from page
            last = int(page[-1][0])

    def records(self, limit: int | None = None, *, after: int = 0) -> Iterator[AuditRecord]:
        """Records in seq order, starting after seq ``after``, at most ``limit`` of them. Listing does
        not verify the chain; a row of the wrong shape raises PreconditionError."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise InvalidInputError("limit must be None or a non-negative int")
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise InvalidInputError("after must be a non-negative int")
        return self._records(limit, after)

    def _records(self, limit: int | None, after: int) -> Iterator[AuditRecord]:
        if limit == 0:
            return
        for count, row in enumerate(self._rows(after), start=1):
            record = _row_to_record(row)
            if isinstance(record, str):
                raise PreconditionError(f"audit record at seq {row[0]} is malformed ({record}); run verify()")
            yield record
            if limit is not None and count >= limit:
                return

    def unsettled(self) -> list[AuditRecord]:
        """ACCEPTED records that no later record of the same (platform, application) follows: the
        applications whose outcome the trail does not hold (still running, or the outcome's write
        failed). Not a chain check; run verify() for that."""
        open_records: dict[tuple[str, str], AuditRecord] = {}
        for record in self.records():
            key = (record.platform_id, record.application_id)
            if record.outcome == ACCEPTED:
                open_records[key] = record
            else:
                open_records.pop(key, None)
        return sorted(open_records.values(), key=lambda r: r.seq)

    def verify(self, expected_head: tuple[int, str] | None = None) -> VerifyReport:
        """Recompute the whole chain. With ``expected_head`` (an earlier ``head()`` kept elsewhere) it
        also catches a truncated or rewritten log, which the chain alone cannot."""
        anchor = None if expected_head is None else _check_anchor(expected_head)
        expected_seq, prev_hash = 1, GENESIS_HASH
        for row in self._rows(None):
            seq = row[0]
            if not isinstance(seq, int) or seq < expected_seq:
                return _bad(
                    expected_seq, f"unexpected row with seq {seq!r} where record {expected_seq} belongs"
                )
            if seq > expected_seq:
                return _bad(expected_seq, f"record {expected_seq} is missing (next stored seq is {seq})")
            record = _row_to_record(row)
            if isinstance(record, str):
                return _bad(expected_seq, f"record {seq} is malformed: {record}")
            if record.prev_hash != prev_hash:
                return _bad(expected_seq, f"record {seq} does not link to record {seq - 1} (prev_hash)")
            if record.computed_hash() != record.hash:
                return _bad(expected_seq, f"record {seq}: contents do not match its stored hash")
            problem = _problem(record)
            if problem is not None:
                return _bad(expected_seq, f"record {seq} could not have been appended: {problem}")
            if anchor is not None and seq == anchor[0] and record.hash != anchor[1]:
                return _bad(seq, f"record {seq} differs from the anchored head (rewritten at or before it)")
            expected_seq, prev_hash = seq + 1, record.hash
        count = expected_seq - 1
        if anchor is not None and count < anchor[0]:
            return _bad(count + 1, f"log ends at seq {count} but the anchored head is seq {anchor[0]}")
        return VerifyReport(ok=True, records=count, first_bad_seq=None, reason=f"chain of {count} intact")

    def close(self) -> None:
        self._close_db()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _page(query: str, params: tuple[int, ...], tx: Tx) -> list[tuple[Any, ...]]:
    return tx.all(query, params)


def _bad(seq: int, reason: str) -> VerifyReport:
    return VerifyReport(ok=False, records=seq - 1, first_bad_seq=seq, reason=reason)


def _check_anchor(anchor: object) -> tuple[int, str]:
    if not (isinstance(anchor, tuple) and len(anchor) == 2):
        raise InvalidInputError("expected_head must be a (seq, hash) tuple as returned by head()")
    seq, digest = anchor
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise InvalidInputError("expected_head seq must be a non-negative int")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise InvalidInputError("expected_head hash must be 64 lowercase hex digits")
    if seq == 0 and digest != GENESIS_HASH:
        raise InvalidInputError("expected_head (0, ...) must carry the genesis hash of 64 zeros")
    return seq, digest
