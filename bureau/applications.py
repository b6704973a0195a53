"""The bureau's durable application store: each application accepted once, then worked on until done."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blindscore.errors import AlreadyExistsError, BlindscoreError, PeerError
from blindscore.infra.db import Database, Tx, create_schema

FORMAT_VERSION = 1
PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS {applications} (
        platform_id       TEXT NOT NULL,
        application_id    TEXT NOT NULL,
        bank_id           TEXT NOT NULL,
        model_id          TEXT NOT NULL,
        model_version     INTEGER NOT NULL,
        key_id            TEXT NOT NULL,
        consent_reference TEXT NOT NULL,
        digest            TEXT NOT NULL,
        width             INTEGER NOT NULL,
        ciphertexts       {blob},
        state             TEXT NOT NULL,
        attempts          INTEGER NOT NULL,
        next_attempt_at   {real} NOT NULL,
        accepted_at       {real} NOT NULL,
        finished_at       {real},
        error_code        TEXT NOT NULL,
        error_message     TEXT NOT NULL,
        receipt           TEXT NOT NULL,
        PRIMARY KEY (platform_id, application_id)
    )
    """,
    "CREATE INDEX IF NOT EXISTS {applications}_due ON {applications} (state, next_attempt_at)",
    # Which packed batch each application id came in (bureau/batches.py); here so that accept()
    # refuses an id used in a batch within its own transaction.
    """
    CREATE TABLE IF NOT EXISTS {batch_members} (
        platform_id    TEXT NOT NULL,
        application_id TEXT NOT NULL,
        batch_id       TEXT NOT NULL,
        PRIMARY KEY (platform_id, application_id)
    )
    """,
)
_COLUMNS = (
    "platform_id",
    "application_id",
    "bank_id",
    "model_id",
    "model_version",
    "key_id",
    "consent_reference",
    "digest",
    "width",
    "ciphertexts",
    "state",
    "attempts",
    "next_attempt_at",
    "accepted_at",
    "finished_at",
    "error_code",
    "error_message",
    "receipt",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM {{applications}}"
_INSERT = f"INSERT INTO {{applications}} ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_KEY = "platform_id = ? AND application_id = ?"
_DIGEST_DOMAIN = b"blindscore/bureau/application/v1\x00"


def payload_digest(
    *,
    platform_id: str,
    bank_id: str,
    model_id: str,
    model_version: int,
    key_id: str,
    consent_reference: str,
    ciphertexts: bytes,
) -> str:
    """SHA-256 over the fields that make two submissions "the same application": every field is
    length-prefixed, so no two different submissions share an encoding."""
    h = hashlib.sha256(_DIGEST_DOMAIN)
    for part in (platform_id, bank_id, model_id, str(model_version), key_id, consent_reference):
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "big") + data)
    h.update(len(ciphertexts).to_bytes(8, "big") + ciphertexts)
    return h.hexdigest()


@dataclass(frozen=True)
class Submission:
    """What the bureau stores before it says "accepted": the application and its payload digest."""

    platform_id: str
    application_id: str
    bank_id: str
    model_id: str
    model_version: int
    key_id: str
    consent_reference: str
    width: int
    ciphertexts: bytes

    @property
    def digest(self) -> str:
        return payload_digest(
            platform_id=self.platform_id,
            bank_id=self.bank_id,
            model_id=self.model_id,
            model_version=self.model_version,
            key_id=self.key_id,
            consent_reference=self.consent_reference,
            ciphertexts=self.ciphertexts,
        )


class _StoredRow:
    """What a stored application and a stored batch have in common: their outcome."""

    receipt: str
    error_code: str
    error_message: str

    def receipt_fields(self) -> dict[str, Any]:
        """The stored receipt of a delivered row: stage_ms, wire_bytes, model_version."""
        return dict(json.loads(self.receipt)) if self.receipt else {}

    def failure(self) -> BlindscoreError:
        """The error a failed row ended with, to be raised again on resubmission."""
        return StoredFailure(self.error_code, self.error_message)


@dataclass(frozen=True)
class StoredApplication(_StoredRow):
    """One row of the store. ``ciphertexts`` is None once the application is finished."""

    platform_id: str
    application_id: str
    bank_id: str
    model_id: str
    model_version: int
    key_id: str
    consent_reference: str
    digest: str
    width: int
    ciphertexts: bytes | None
    state: str
    attempts: int
    next_attempt_at: float
    accepted_at: float
    finished_at: float | None
    error_code: str
    error_message: str
    receipt: str

    @property
    def key(self) -> tuple[str, str]:
        return self.platform_id, self.application_id


class StoredFailure(PeerError):
    """A terminal failure recorded earlier, answered again with the same status and message."""

    def __init__(self, code: str, message: str) -> None:
        BlindscoreError.__init__(self, message)
        self.peer = "bureau"
        self.code = code


def _row(row: Sequence[Any]) -> StoredApplication:
    values = list(row)
    blob = values[9]
    values[9] = None if blob is None else bytes(blob)
    return StoredApplication(*values)


class _WorkStore:
    """The state machine both stores share: pending rows are retried until delivered or failed.

    A subclass names its table (``_table``), its key columns (``_key``) and how a row is read.
    """

    _table: str
    _key: str
    _what: str

    def __init__(self, target: Path | str | Database) -> None:
        """Open the store in a SQLite file (a Path), a database URL, or an open bureau Database."""
        self._owns = not isinstance(target, Database)
        self._db = Database.open(target, "bureau") if not isinstance(target, Database) else target
        try:
            self._db.setup(self._create, self._what)
        except BaseException:
            self.close()
            raise

    def _create(self, tx: Tx) -> None:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return self._db.url

    @property
    def database(self) -> Database:
        return self._db

    def _finish(self, key: tuple[str, str], sets: str, params: tuple[object, ...]) -> bool:
        sql = f"UPDATE {{{self._table}}} SET {sets} WHERE {self._key} AND state = ?"

        def finish(tx: Tx) -> bool:
            return int(tx.execute(sql, (*params, *key, PENDING)).rowcount) > 0

        return self._db.write(finish)

    def delivered(self, key: tuple[str, str], receipt: dict[str, Any]) -> bool:
        """Pending -> delivered; the ciphertexts are dropped, the digest and receipt kept."""
        return self._finish(
            key,
            "state = ?, ciphertexts = NULL, finished_at = ?, receipt = ?, error_code = '', "
            "error_message = ''",
            (DELIVERED, time.time(), json.dumps(receipt, sort_keys=True)),
        )

    def failed(self, key: tuple[str, str], code: str, message: str) -> bool:
        """Pending -> failed for good, with the status a resubmission will be answered with."""
        return self._finish(
            key,
            "state = ?, ciphertexts = NULL, finished_at = ?, error_code = ?, error_message = ?",
            (FAILED, time.time(), code, message[:1000]),
        )

    def retry_later(self, key: tuple[str, str], attempts: int, at: float, code: str, message: str) -> bool:
        """Keep a pending row pending; the worker tries again at ``at``."""
        return self._finish(
            key,
            "attempts = ?, next_attempt_at = ?, error_code = ?, error_message = ?",
            (attempts, at, code, message[:1000]),
        )

    def _due_rows(self, select: str, now: float, limit: int) -> list[tuple[Any, ...]]:
        return self._db.read(
            lambda tx: tx.all(
                f"{select} WHERE state = ? AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
                (PENDING, now, limit),
            )
        )

    def next_due(self) -> float | None:
        """When the earliest pending row is due, or None when nothing is pending."""
        sql = f"SELECT MIN(next_attempt_at) FROM {{{self._table}}} WHERE state = ?"
        row = self._db.read(lambda tx: tx.one(sql, (PENDING,)))
        return None if row is None or row[0] is None else float(row[0])

    def resume_all(self, at: float) -> int:
        """Make every pending row due at ``at``: a restarted bureau does not wait out old backoffs."""
        sql = f"UPDATE {{{self._table}}} SET next_attempt_at = ? WHERE state = ?"

        def resume(tx: Tx) -> int:
            return int(tx.execute(sql, (at, PENDING)).rowcount)

        return self._db.write(resume)

    def counts(self) -> dict[str, int]:
        """How many rows are in each state."""
        sql = f"SELECT state, COUNT(*) FROM {{{self._table}}} GROUP BY state"
        rows = self._db.read(lambda tx: tx.all(sql))
        return {PENDING: 0, DELIVERED: 0, FAILED: 0, **{str(s): int(n) for s, n in rows}}

    def close(self) -> None:
        if self._owns:
            self._db.close()


class ApplicationStore(_WorkStore):
    """Applications by (platform id, application id), with the state of their delivery.

    ``accept`` is the exactly-once gate: the first submission is stored (pending); the same payload
    again returns the stored row; a different payload under the same key is refused. Pending rows
    keep their ciphertexts so the band protocol can be re-run; finished rows drop them.
    """

    _table = "applications"
    _key = _KEY
    _what = "the application store"

    def _create(self, tx: Tx) -> None:
        create_schema(self._db, tx, _SCHEMA)
        tx.check_version("bureau.applications", FORMAT_VERSION)

    def accept(self, sub: Submission, *, next_attempt_at: float) -> tuple[StoredApplication, bool]:
        """Store ``sub`` as pending, or return the row already stored under its key.

        Returns (row, created). Raises AlreadyExistsError, storing nothing, when the key is taken by
        a different payload. ``next_attempt_at`` is when the retry worker may first pick it up.
        """
        digest = sub.digest

        def accept(tx: Tx) -> tuple[StoredApplication, bool]:
            row = tx.one(f"{_SELECT} WHERE {_KEY}", (sub.platform_id, sub.application_id))
            if row is not None:
                stored = _row(row)
                if stored.digest != digest:
                    raise AlreadyExistsError(
                        f"application {sub.application_id!r} of platform {sub.platform_id!r} was already "
                        "submitted with a different payload; a new application needs a new id"
                    )
                return stored, False
            batched = "SELECT batch_id FROM {batch_members} WHERE platform_id = ? AND application_id = ?"
            if tx.one(batched, (sub.platform_id, sub.application_id)) is not None:
                raise AlreadyExistsError(
                    f"application {sub.application_id!r} of platform {sub.platform_id!r} was already "
                    "submitted in a batch; a new application needs a new id"
                )
            now = time.time()
            stored = StoredApplication(
                sub.platform_id, sub.application_id, sub.bank_id, sub.model_id, sub.model_version,
                sub.key_id, sub.consent_reference, digest, sub.width, sub.ciphertexts, PENDING, 0,
                next_attempt_at, now, None, "", "", "",
            )  # fmt: skip
            tx.execute(_INSERT, tuple(getattr(stored, c) for c in _COLUMNS))
            return stored, True

        return self._db.write(accept)

    def get(self, platform_id: str, application_id: str) -> StoredApplication | None:
        row = self._db.read(lambda tx: tx.one(f"{_SELECT} WHERE {_KEY}", (platform_id, application_id)))
        return None if row is None else _row(row)

    def due(self, now: float, limit: int) -> list[StoredApplication]:
        """Pending applications whose next attempt is due, the longest-waiting first."""
        return [_row(r) for r in self._due_rows(_SELECT, now, limit)]
