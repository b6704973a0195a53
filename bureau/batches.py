"""The bureau's durable store of packed batches: each accepted whole, once, then worked on until done."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from blindscore.bureau.applications import _SCHEMA as _APPLICATIONS_SCHEMA
from blindscore.bureau.applications import BATCH_OF, StoredRow, WorkStore, framed_digest, work_table
from blindscore.errors import AlreadyExistsError
from blindscore.infra.db import Tx, create_schema

FORMAT_VERSION = 1

_TABLE, _COLUMNS = work_table(
    "batches",
    (
        ("platform_id", "TEXT NOT NULL"),
        ("batch_id", "TEXT NOT NULL"),
        ("bank_id", "TEXT NOT NULL"),
        ("model_id", "TEXT NOT NULL"),
        ("model_version", "INTEGER NOT NULL"),
        ("key_id", "TEXT NOT NULL"),
        ("slot_bits", "INTEGER NOT NULL"),
        ("members", "TEXT NOT NULL"),
    ),
    "batch_id",
)
_SCHEMA = (_TABLE, "CREATE INDEX IF NOT EXISTS {batches}_due ON {batches} (state, next_attempt_at)")
_DIGEST_DOMAIN = b"blindscore/bureau/batch/v1\x00"


@dataclass(frozen=True)
class _Batch:
    """Who sent a packed batch, for which bank, model version and key, and its members."""

    platform_id: str
    batch_id: str
    bank_id: str
    model_id: str
    model_version: int
    key_id: str
    slot_bits: int
    #: (application id, consent reference) per slot, slot 0 first.
    members: tuple[tuple[str, str], ...]

    @property
    def application_ids(self) -> tuple[str, ...]:
        return tuple(m[0] for m in self.members)


@dataclass(frozen=True)
class BatchSubmission(_Batch):
    """A packed batch as the bureau stores it before saying "accepted"."""

    width: int
    ciphertexts: bytes

    @property
    def digest(self) -> str:
        """SHA-256 over every field, each length-prefixed: equal digests mean the same batch."""
        parts = [self.platform_id, self.bank_id, self.model_id, str(self.model_version), self.key_id]
        parts += [str(self.slot_bits), json.dumps(self.members), str(self.width)]
        return framed_digest(_DIGEST_DOMAIN, parts, self.ciphertexts)


@dataclass(frozen=True)
class StoredBatch(StoredRow, _Batch):
    """One row of the store."""

    kind = "batch"

    @property
    def key(self) -> tuple[str, str]:
        return self.platform_id, self.batch_id


class BatchStore(WorkStore[BatchSubmission, StoredBatch]):
    """Packed batches by (platform id, batch id), and which batch each application id belongs to.

    ``accept`` is the exactly-once gate for a whole batch: the first submission is stored
    (pending); the same payload again returns the stored row; a different payload under the same
    batch id, or an application id already used (in another batch or submitted alone), refuses
    the batch and stores nothing. Open it on the application store's database so that the last
    check sees the applications submitted one by one.
    """

    _table = "batches"
    _columns = _COLUMNS
    _id_column = "batch_id"
    _row_type = StoredBatch
    _what = "the batch store"

    def _create(self, tx: Tx) -> None:
        # The applications schema too (idempotent): it holds {batch_members}, and accept() checks
        # the ids submitted one by one there.
        create_schema(self._db, tx, (*_APPLICATIONS_SCHEMA, *_SCHEMA))
        tx.check_version("bureau.batches", FORMAT_VERSION)

    def _decode(self, values: dict[str, Any]) -> None:
        super()._decode(values)
        values["members"] = tuple((str(a), str(c)) for a, c in json.loads(values["members"]))

    def _encode(self, values: dict[str, Any]) -> None:
        values["members"] = json.dumps([list(m) for m in values["members"]])

    def _check_ids(self, tx: Tx, sub: BatchSubmission) -> None:
        for app_id in sub.application_ids:
            taken = tx.one(BATCH_OF, (sub.platform_id, app_id))
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

    def _stored_with(self, tx: Tx, sub: BatchSubmission) -> None:
        for app_id in sub.application_ids:
            tx.execute(
                "INSERT INTO {batch_members} (platform_id, application_id, batch_id) VALUES (?, ?, ?)",
                (sub.platform_id, app_id, sub.batch_id),
            )

    def batch_of(self, platform_id: str, application_id: str) -> str | None:
        """The id of the batch an application was submitted in, if it was."""
        row = self._db.read(lambda tx: tx.one(BATCH_OF, (platform_id, application_id)))
        return None if row is None else str(row[0])
