"""The platform's outbox: the exact payload sent for each application id, so a resubmission resends it."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields, replace
from pathlib import Path
from typing import Any

from blindscore._files import read_json, write_json
from blindscore.errors import AlreadyExistsError, PreconditionError
from blindscore.infra.db import Database, Tx, create_schema
from blindscore.protocol.application import Application

FORMAT_VERSION = 1
SECRET_FILE = "outbox.secret.json"
#: Sent, no answer from the bureau yet: resent until the bureau answers.
SENT = "sent"
#: The bureau accepted it (delivered or pending there): a resubmission resends the same payload.
ACKNOWLEDGED = "acknowledged"
#: The bureau refused it for good: a resubmission with other features may replace it.
REFUSED = "refused"
#: Payload prefixes of packed batches. An EncryptedApplication never starts with a zero byte (no
#: protobuf field has number 0), so these cannot be mistaken for one. The first member's entry
#: holds the serialized EncryptedBatch; every other member's entry names that first member.
BATCH_PAYLOAD = b"\x00"
BATCH_REFERENCE = b"\x01"

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS {outbox} (
        application_id  TEXT PRIMARY KEY,
        fingerprint     TEXT NOT NULL,
        bank_id         TEXT NOT NULL,
        key_id          TEXT NOT NULL,
        payload         {blob} NOT NULL,
        state           TEXT NOT NULL,
        attempts        INTEGER NOT NULL,
        next_attempt_at {real} NOT NULL,
        created_at      {real} NOT NULL,
        answered_at     {real},
        last_error      TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS {outbox}_due ON {outbox} (state, next_attempt_at)",
)


@dataclass(frozen=True)
class OutboxEntry:
    """One application as the platform sent it: ``payload`` is the serialized EncryptedApplication,
    or for a member of a packed batch a BATCH_PAYLOAD or BATCH_REFERENCE."""

    application_id: str
    fingerprint: str
    bank_id: str
    key_id: str
    payload: bytes
    state: str
    attempts: int
    next_attempt_at: float
    created_at: float
    answered_at: float | None
    last_error: str

    @classmethod
    def sent(
        cls, application_id: str, fingerprint: str, bank_id: str, key_id: str, payload: bytes, due_at: float
    ) -> OutboxEntry:
        """A new entry: sent now, no answer yet."""
        return cls(
            application_id, fingerprint, bank_id, key_id, payload, SENT, 0, due_at, time.time(), None, ""
        )


_COLUMNS = tuple(f.name for f in fields(OutboxEntry))
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM {{outbox}}"
_SELECT_ID = f"{_SELECT} WHERE application_id = ?"
_INSERT = f"INSERT INTO {{outbox}} ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


def _entry(row: Sequence[Any]) -> OutboxEntry:
    values = list(row)
    values[4] = bytes(values[4])
    return OutboxEntry(*values)


def canonical_plaintext(app: Application) -> bytes:
    """The bytes that make two requests "the same application": every field but the id, features
    included, as sorted JSON. Numbers are encoded as exact hex floats, so 1 and 1.0 agree."""

    def value(v: object) -> list[str]:
        if isinstance(v, int | float) and not isinstance(v, bool):
            return ["n", float(v).hex()]
        return ["s", str(v)]

    version = app.model_version.lstrip("v") if app.model_version not in ("", "latest") else ""
    doc = {
        "bank_id": app.bank_id,
        "model_id": app.model_id,
        "model_version": version,
        "key_id": app.key_id,
        "consent_reference": app.consent_reference,
        "features": {str(k): value(v) for k, v in app.features.items()},
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Outbox:
    """Applications by id with an HMAC-SHA256 of their plaintext (never the plaintext itself) and the
    exact encrypted payload sent for them.

    The same id with the same plaintext resends the stored payload, so the bureau sees the same
    submission and answers with the same outcome; the same id with other plaintext is refused. The
    HMAC key is a random secret of this platform, so the outbox alone does not let anyone test a
    guess of an applicant's features.
    """

    def __init__(self, target: Path | str | Database, secret: bytes) -> None:
        if len(secret) < 32:
            raise PreconditionError("the outbox HMAC secret must be at least 32 bytes")
        self._secret = secret
        self._owns = not isinstance(target, Database)
        self._db = Database.open(target, "platform") if not isinstance(target, Database) else target
        try:
            self._db.setup(self._create, "the outbox")
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"Outbox({self._db.url!r}, <secret>)"

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("an Outbox holds an HMAC secret and cannot be pickled")

    @classmethod
    def open(cls, data_dir: Path, database: str | None = None) -> Outbox:
        """The outbox in ``database`` (a URL) or else ``data_dir``/outbox.sqlite3; its HMAC secret
        in ``data_dir``/outbox.secret.json (0600, made on first start). Platforms that share one
        PostgreSQL outbox must share that file too."""
        return cls(database or data_dir / "outbox.sqlite3", _load_secret(data_dir / SECRET_FILE))

    @classmethod
    def in_memory(cls) -> Outbox:
        """An outbox that lasts as long as the process: resubmissions are recognised, restarts are not."""
        return cls(":memory:", secrets.token_bytes(32))

    def _create(self, tx: Tx) -> None:
        create_schema(self._db, tx, _SCHEMA)
        tx.check_version("platform.outbox", FORMAT_VERSION)

    @property
    def url(self) -> str:
        return self._db.url

    def fingerprint(self, app: Application) -> str:
        return hmac.new(self._secret, canonical_plaintext(app), hashlib.sha256).hexdigest()

    @staticmethod
    def _check(entry: OutboxEntry, fingerprint: str) -> OutboxEntry | None:
        if entry.state == REFUSED and entry.payload[:1] in (BATCH_PAYLOAD, BATCH_REFERENCE):
            # A refused batch may have been refused for another member's sake: this application
            # is free to go again, alone or in a new batch.
            return None
        if hmac.compare_digest(entry.fingerprint, fingerprint):
            return entry
        if entry.state == REFUSED:
            return None  # never accepted by the bureau: the id is free again
        raise AlreadyExistsError(
            f"application {entry.application_id!r} was already submitted with different features; "
            "a new application needs a new id"
        )

    def find(self, application_id: str, fingerprint: str) -> OutboxEntry | None:
        """The entry to resend for this id and plaintext, or None if there is none; AlreadyExistsError
        if the id was used for other plaintext."""
        entry = self.get(application_id)
        return None if entry is None else self._check(entry, fingerprint)

    def add(
        self,
        application_id: str,
        fingerprint: str,
        bank_id: str,
        key_id: str,
        payload: bytes,
        *,
        due_at: float,
    ) -> OutboxEntry:
        """Store a payload before it is sent. Returns the stored entry, which is an earlier one when
        another request for the same application got here first."""

        def add(tx: Tx) -> OutboxEntry:
            row = tx.one(_SELECT_ID, (application_id,))
            existing = None if row is None else self._check(_entry(row), fingerprint)
            if existing is not None:
                return existing
            return _put(tx, OutboxEntry.sent(application_id, fingerprint, bank_id, key_id, payload, due_at))

        return self._db.write(add)

    def add_batch(
        self,
        members: Sequence[tuple[str, str]],
        bank_id: str,
        key_id: str,
        payload: bytes,
        *,
        due_at: float,
    ) -> OutboxEntry | None:
        """Store a packed batch before it is sent: (application id, fingerprint) per member, in one
        transaction. Returns the first member's entry (the one holding the payload), or None,
        storing nothing, when any member id is already in the outbox (a concurrent submission of
        the same application got here first)."""

        def add(tx: Tx) -> OutboxEntry | None:
            taken = "SELECT 1 FROM {outbox} WHERE application_id = ? AND state <> ?"
            if any(tx.one(taken, (app_id, REFUSED)) for app_id, _ in members):
                return None
            (leader, leader_fp), *others = members
            first = _put(
                tx, OutboxEntry.sent(leader, leader_fp, bank_id, key_id, BATCH_PAYLOAD + payload, due_at)
            )
            reference = BATCH_REFERENCE + leader.encode()
            for app_id, fingerprint in others:
                _put(tx, replace(first, application_id=app_id, fingerprint=fingerprint, payload=reference))
            return first

        return self._db.write(add)

    @staticmethod
    def batch_leader(entry: OutboxEntry) -> str | None:
        """The id of the entry that holds this entry's batch payload, or None for a single one."""
        if entry.payload[:1] == BATCH_PAYLOAD:
            return entry.application_id
        if entry.payload[:1] == BATCH_REFERENCE:
            return entry.payload[1:].decode()
        return None

    def batch_payload(self, entry: OutboxEntry) -> bytes | None:
        """The serialized EncryptedBatch an entry was sent in, or None for a single application."""
        leader_id = self.batch_leader(entry)
        if leader_id == entry.application_id:
            return entry.payload[1:]
        if leader_id is not None:
            leader = self.get(leader_id)
            if leader is None or leader.payload[:1] != BATCH_PAYLOAD:
                raise PreconditionError(f"outbox entry {entry.application_id!r} names a batch that is gone")
            return leader.payload[1:]
        return None

    def _update(self, application_ids: str | Sequence[str], sets: str, params: tuple[object, ...]) -> None:
        ids = [application_ids] if isinstance(application_ids, str) else list(application_ids)
        sql = f"UPDATE {{outbox}} SET {sets} WHERE application_id = ?"

        def update(tx: Tx) -> None:
            for app_id in ids:
                tx.execute(sql, (*params, app_id))

        self._db.write(update)

    def acknowledged(self, application_ids: str | Sequence[str]) -> None:
        """The bureau has the application(s) (it answered with a receipt)."""
        self._update(
            application_ids, "state = ?, answered_at = ?, last_error = ''", (ACKNOWLEDGED, time.time())
        )

    def refused(self, application_ids: str | Sequence[str], error: str) -> None:
        """The bureau refused the application(s) for good."""
        sets = "state = ?, answered_at = ?, last_error = ?"
        self._update(application_ids, sets, (REFUSED, time.time(), error[:1000]))

    def retry_later(self, application_ids: str | Sequence[str], attempts: int, at: float, error: str) -> None:
        """No answer from the bureau: resend at ``at``."""
        self._update(
            application_ids,
            "attempts = ?, next_attempt_at = ?, last_error = ?",
            (attempts, at, error[:1000]),
        )

    def get(self, application_id: str) -> OutboxEntry | None:
        row = self._db.read(lambda tx: tx.one(_SELECT_ID, (application_id,)))
        return None if row is None else _entry(row)

    def due(self, now: float, limit: int) -> list[OutboxEntry]:
        """Entries the bureau never answered whose next attempt is due, the longest-waiting first."""
        rows = self._db.read(
            lambda tx: tx.all(
                f"{_SELECT} WHERE state = ? AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
                (SENT, now, limit),
            )
        )
        return [_entry(r) for r in rows]

    def next_due(self) -> float | None:
        row = self._db.read(
            lambda tx: tx.one("SELECT MIN(next_attempt_at) FROM {outbox} WHERE state = ?", (SENT,))
        )
        return None if row is None or row[0] is None else float(row[0])

    def resume_all(self, at: float) -> int:
        """Make every unanswered entry due at ``at`` (on start: resend what an earlier run left)."""

        def resume(tx: Tx) -> int:
            cursor = tx.execute("UPDATE {outbox} SET next_attempt_at = ? WHERE state = ?", (at, SENT))
            return int(cursor.rowcount)

        return self._db.write(resume)

    def counts(self) -> dict[str, int]:
        rows = self._db.read(lambda tx: tx.all("SELECT state, COUNT(*) FROM {outbox} GROUP BY state"))
        return {SENT: 0, ACKNOWLEDGED: 0, REFUSED: 0, **{str(s): int(n) for s, n in rows}}

    def close(self) -> None:
        if self._owns:
            self._db.close()


def _put(tx: Tx, entry: OutboxEntry) -> OutboxEntry:
    """Store an entry about to be sent, in place of any refused entry of the same id."""
    tx.execute("DELETE FROM {outbox} WHERE application_id = ?", (entry.application_id,))
    tx.execute(_INSERT, astuple(entry))
    return entry


def _load_secret(path: Path) -> bytes:
    """The platform's outbox HMAC secret, made (0600) on first use."""
    if not path.exists():
        write_json(path, {"format": FORMAT_VERSION, "hmac_sha256_key": secrets.token_hex(32)}, secret=True)
    doc = read_json(path, secret=True)
    try:
        key = bytes.fromhex(doc["hmac_sha256_key"])
    except (KeyError, TypeError, ValueError):
        raise PreconditionError(f"{path}: not an outbox secret file") from None
    if len(key) < 32:
        raise PreconditionError(f"{path}: the outbox secret is too short")
    return key
