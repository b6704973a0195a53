"""The bank's result store: one row per application with the band it learned (SQLite or PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from blindscore.db import Database, Tx, create_schema
from blindscore.errors import AlreadyExistsError

FORMAT_VERSION = 1

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS {bands} (
        application_id TEXT PRIMARY KEY,
        model_id       TEXT NOT NULL,
        key_id         TEXT NOT NULL,
        band           INTEGER NOT NULL,
        band_label     TEXT NOT NULL,
        received_at    {real} NOT NULL
    )
    """,
)
_COLUMNS = "application_id, model_id, key_id, band, band_label, received_at"


@dataclass(frozen=True)
class BandRecord:
    application_id: str
    model_id: str
    key_id: str
    band: int
    band_label: str
    received_at: float


class ResultStore:
    """Bands by application id: a repeated delivery of the same band is a no-op, a different one refused.

    That makes delivery idempotent, which is what lets the bureau retry a band it is not sure
    arrived: the bank ends up with exactly one band per application.
    """

    def __init__(self, target: Path | str | Database) -> None:
        """Open the store in a SQLite file (a Path), a database URL, or an open bank Database."""
        self._owns = not isinstance(target, Database)
        self._db = Database.open(target, "bank") if not isinstance(target, Database) else target
        self.path = self._db.path
        try:
            self._db.setup(self._create, "the result store")
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, target: Path | str) -> ResultStore:
        """The store at a path or a ``postgresql://`` / ``sqlite:///`` URL."""
        return cls(target)

    def _create(self, tx: Tx) -> None:
        create_schema(self._db, tx, _SCHEMA)
        tx.check_version("bank.results", FORMAT_VERSION)

    @property
    def url(self) -> str:
        return self._db.url

    def put(self, record: BandRecord) -> bool:
        """Store a band; returns False when the same band was already stored for this application,
        raises AlreadyExistsError (storing nothing) when a different one was."""
        new, kept = self.put_many([record])
        if kept:
            raise AlreadyExistsError(
                f"application {record.application_id!r} already has a different band stored"
            )
        return new == 1

    def put_many(self, records: Sequence[BandRecord]) -> tuple[int, list[str]]:
        """Store several bands in one transaction; returns (how many were new, the ids whose
        earlier, different band was kept).

        A band already stored identically is skipped. One already stored differently stays as it
        is: the first band delivered for an application is the one the bank keeps. (A batch run
        again draws fresh masks, so a score within one truncation step of a cutoff may come out
        in the neighbouring band; both are within the model's precision.)
        """

        def put(tx: Tx) -> tuple[int, list[str]]:
            new = 0
            kept: list[str] = []
            for record in records:
                row = tx.one(
                    "SELECT model_id, band FROM {bands} WHERE application_id = ?", (record.application_id,)
                )
                if row is not None:
                    if (row[0], row[1]) != (record.model_id, record.band):
                        kept.append(record.application_id)
                    continue
                tx.execute(
                    f"INSERT INTO {{bands}} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        record.application_id,
                        record.model_id,
                        record.key_id,
                        record.band,
                        record.band_label,
                        record.received_at or time.time(),
                    ),
                )
                new += 1
            return new, kept

        return self._db.write(put)

    def get(self, application_id: str) -> BandRecord | None:
        row = self._db.read(
            lambda tx: tx.one(f"SELECT {_COLUMNS} FROM {{bands}} WHERE application_id = ?", (application_id,))
        )
        return BandRecord(*row) if row else None

    def all(self) -> list[BandRecord]:
        rows = self._db.read(
            lambda tx: tx.all(f"SELECT {_COLUMNS} FROM {{bands}} ORDER BY received_at, application_id")
        )
        return [BandRecord(*r) for r in rows]

    def count(self) -> int:
        row = self._db.read(lambda tx: tx.one("SELECT COUNT(*) FROM {bands}"))
        return int(row[0]) if row else 0

    def close(self) -> None:
        if self._owns:
            self._db.close()
