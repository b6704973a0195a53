"""The bureau's durable store of packed batches: each accepted whole, once, then worked on until done."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from blindscore.bureau.applications import _SCHEMA as _APPLICATIONS_SCHEMA
from blindscore.bureau.applications import PENDING, _StoredRow, _WorkStore
from blindscore.errors import AlreadyExistsError
from blindscore.infra.db import Tx, create_schema

FORMAT_VERSION = 1

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS {batches} (
        platform_id     TEXT NOT NULL,
        batch_id        TEXT NOT NULL,
        bank_id         TEXT NOT NULL,
        model_id        TEXT NOT NULL,
        model_version   INTEGER NOT NULL,
        key_id          TEXT NOT NULL,
        slot_bits       INTEGER NOT NULL,
        members         TEXT NOT NULL,
        digest          TEXT NOT NULL,
        width           INTEGER NOT NULL,
        ciphertexts     {blob},
        state           TEXT NOT NULL,
        attempts        INTEGER NOT NULL,
        next_attempt_at {real} NOT NULL,
        accepted_at     {real} NOT NULL,
        finished_at     {real},
        error_code      TEXT NOT NULL,
        error_message   TEXT NOT NULL,
        receipt         TEXT NOT NULL,
        PRIMARY KEY (platform_id, batch_id)
    )
    """,
    "CREATE INDEX IF NOT EXISTS {batches}_due ON {batches} (state, next_attempt_at)",
)
_COLUMNS = (
    "platform_id",
    "batch_id",
    "bank_id",
    "model_id",
    "model_version",
    "key_id",
    "slot_bits",
    "members",
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
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM {{batches}}"
_INSERT = f"INSERT INTO {{batches}} ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_KEY = "platform_id = ? AND batch_id = ?"
_DIGEST_DOMAIN = b"blindscore/bureau/batch/v1\x00"


@dataclass(frozen=True)
class BatchSubmission:
    """A packed batch as the bureau stores it before saying "accepted"."""

    platform_id: str
    batch_id: str
    bank_id: str
    model_id: str
    model_version: int
    key_id: str
    slot_bits: int
    #: (application id, consent reference) per slot, slot 0 first.
    members: tuple[tuple[str, str], ...]
    width: int
    ciphertexts: bytes

    @property
    def digest(self) -> str:
        """SHA-256 over every field, each length-prefixed: equal digests mean the same batch."""
        h = hashlib.sha256(_DIGEST_DOMAIN)
        parts = [self.platform_id, self.bank_id, self.model_id, str(self.model_version), self.key_id]
        parts += [str(self.slot_bits), json.dumps(self.members), str(self.width)]
        for part in parts:
            data = part.encode("utf-8")
            h.update(len(data).to_bytes(8, "big") + data)
        h.update(len(self.ciphertexts).to_bytes(8, "big") + self.ciphertexts)
        return h.hexdigest()


@dataclass(frozen=True)
class StoredBatch(_StoredRow):
    """One row of the store. ``ciphertexts`` is None once the batch is finished."""

    platform_id: str
    batch_id: str
    bank_id: str
    model_id: str
    model_version: int
    key_id: str
    slot_bits: int
    members: tuple[tuple[str, str], ...]
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
        return self.platform_id, self.batch_id

    @property
    def application_ids(self) -> tuple[str, ...]:
        return tuple(m[0] for m in self.members)


def _row(row: Sequence[Any]) -> StoredBatch:
    values = list(row)
    values[7] = tuple((str(a), str(c)) for a, c in json.loads(values[7]))
    values[10] = None if values[10] is None else bytes(values[10])
    return StoredBatch(*values)


class BatchStore(_WorkStore):
    """Packed batches by (platform id, batch id), and which batch each application id belongs to.

    ``accept`` is the exactly-once gate for a whole batch: the first submission is stored
    (pending); the same payload again returns the stored row; a different payload under the same
    batch id, or an application id already used (in another batch or submitted alone), refuses
    the batch and stores nothing. Open it on the application store's database so that the last
    check sees the applications submitted one by one.
    """

    _table = "batches"
    _key = _KEY
    _what = "the batch store"

    def _create(self, tx: Tx) -> None:
        # The applications schema too (idempotent): it holds {batch_members}, and accept() checks
        # the ids submitted one by one there.
        create_schema(self._db, tx, (*_APPLICATIONS_SCHEMA, *_SCHEMA))
        tx.check_version("bureau.batches", FORMAT_VERSION)

    def accept(self, sub: BatchSubmission, *, next_attempt_at: float) -> tuple[StoredBatch, bool]:
        """Store ``sub`` as pending, or return the row already stored under its key: (row, created)."""
        digest = sub.digest

        def accept(tx: Tx) -> tuple[StoredBatch, bool]:
            row = tx.one(f"{_SELECT} WHERE {_KEY}", (sub.platform_id, sub.batch_id))
            if row is not None:
                stored = _row(row)
                if stored.digest != digest:
                    raise AlreadyExistsError(
                        f"batch {sub.batch_id!r} of platform {sub.platform_id!r} was already submitted with "
                        "a different payload; a new batch needs a new id"
                    )
                return stored, False
            for app_id, _ in sub.members:
                taken = tx.one(
                    "SELECT batch_id FROM {batch_members} WHERE platform_id = ? AND application_id = ?",
                    (sub.platform_id, app_id),
                )
                if taken is None:
                    taken = tx.one(
                        "SELECT 1 FROM {applications} WHERE platform_id = ? AND application_id = ?",
                        (sub.platform_id, app_id),
                    )
                if taken is not None:
                    raise AlreadyExistsError(
                        f"application {app_id!r} of platform {sub.platform_id!r} was already submitted; "
                        "a new application needs a new id"
                    )
            now = time.time()
            stored = StoredBatch(
                sub.platform_id, sub.batch_id, sub.bank_id, sub.model_id, sub.model_version, sub.key_id,
                sub.slot_bits, sub.members, digest, sub.width, sub.ciphertexts, PENDING, 0,
                next_attempt_at, now, None, "", "", "",
            )  # fmt: skip
            values = [getattr(stored, c) for c in _COLUMNS]
            values[_COLUMNS.index("members")] = json.dumps([list(m) for m in sub.members])
            tx.execute(_INSERT, tuple(values))
            for app_id, _ in sub.members:
                tx.execute(
                    "INSERT INTO {batch_members} (platform_id, application_id, batch_id) VALUES (?, ?, ?)",
                    (sub.platform_id, app_id, sub.batch_id),
                )
            return stored, True

        return self._db.write(accept)

    def get(self, platform_id: str, batch_id: str) -> StoredBatch | None:
        row = self._db.read(lambda tx: tx.one(f"{_SELECT} WHERE {_KEY}", (platform_id, batch_id)))
        return None if row is None else _row(row)

    def batch_of(self, platform_id: str, application_id: str) -> str | None:
        """The id of the batch an application was submitted in, if it was."""
        row = self._db.read(
            lambda tx: tx.one(
                "SELECT batch_id FROM {batch_members} WHERE platform_id = ? AND application_id = ?",
                (platform_id, application_id),
            )
        )
        return None if row is None else str(row[0])

    def due(self, now: float, limit: int) -> list[StoredBatch]:
        """Pending batches whose next attempt is due, the longest-waiting first."""
        return [_row(r) for r in self._due_rows(_SELECT, now, limit)]
