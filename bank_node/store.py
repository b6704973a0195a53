"""The bank's result store: one row per application with the band it learned (SQLite, WAL)."""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from blindscore._sqlite import immediate
from blindscore.errors import AlreadyExistsError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bands (
    application_id TEXT PRIMARY KEY,
    model_id       TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    band           INTEGER NOT NULL,
    band_label     TEXT NOT NULL,
    received_at    REAL NOT NULL
)
"""


@dataclass(frozen=True)
class BandRecord:
    application_id: str
    model_id: str
    key_id: str
    band: int
    band_label: str
    received_at: float


class ResultStore:
    """Bands by application id: a repeated delivery of the same band is a no-op, a different one refused."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate(self._db, self._lock)

    def put(self, record: BandRecord) -> bool:
        """Store a band; returns False when the same band was already stored for this application."""
        with self._tx() as db:
            row = db.execute(
                "SELECT model_id, band FROM bands WHERE application_id = ?", (record.application_id,)
            ).fetchone()
            if row is not None:
                if (row[0], row[1]) == (record.model_id, record.band):
                    return False
                raise AlreadyExistsError(
                    f"application {record.application_id!r} already has a different band stored"
                )
            db.execute(
                "INSERT INTO bands VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.application_id,
                    record.model_id,
                    record.key_id,
                    record.band,
                    record.band_label,
                    record.received_at or time.time(),
                ),
            )
            return True

    def get(self, application_id: str) -> BandRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM bands WHERE application_id = ?", (application_id,)
            ).fetchone()
        return BandRecord(*row) if row else None

    def all(self) -> list[BandRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM bands ORDER BY received_at, application_id").fetchall()
        return [BandRecord(*r) for r in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM bands").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
