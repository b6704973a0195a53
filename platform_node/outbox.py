"""The platform's outbox: the exact payload sent for each application id, so a resubmission resends it.

Platform replicas share one outbox on PostgreSQL (claims, leases and fencing tokens as in
:mod:`blindscore.infra.leases`): the entry that holds a payload (a single application, or the first
member of a packed batch) is claimed by the request that stores it and, once due unanswered, by
one replica's resender at a time; an outcome is recorded only under the claim that sent it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields, replace
from pathlib import Path
from typing import Any

from blindscore._files import read_json, stage
from blindscore.errors import AlreadyExistsError, LeaseLostError, PreconditionError
from blindscore.infra.db import Database, Tx, create_schema
from blindscore.infra.leases import CLAIM_COLUMNS, add_claim_columns, db_now
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
    # A check value of the HMAC secret (never the secret): replicas with different secrets would
    # not recognise each other's resubmissions, so a replica with another secret is refused.
    "CREATE TABLE IF NOT EXISTS {outbox_secret} (id INTEGER PRIMARY KEY, check_value TEXT NOT NULL)",
)
#: What the secret check value is the HMAC of.
_CHECK_LABEL = b"blindscore platform outbox secret check v1"


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
    #: The replica that holds (or last held) the entry's claim, when the lease ends (database
    #: clock) and the fencing token. Only entries that hold a payload are claimed; the other
    #: members of a batch follow their first member.
    claimed_by: str = ""
    lease_until: float = 0.0
    claim: int = 0

    @classmethod
    def sent(
        cls, application_id: str, fingerprint: str, bank_id: str, key_id: str, payload: bytes, due_at: float
    ) -> OutboxEntry:
        """A new entry: sent now, no answer yet."""
        return cls(
            application_id, fingerprint, bank_id, key_id, payload, SENT, 0, due_at, time.time(), None, ""
        )

    @property
    def fence(self) -> OutboxFence:
        """The claim this entry was read under (as ``add``, ``add_batch`` or ``claim_due`` returned it)."""
        return OutboxFence(self.application_id, self.claim)


@dataclass(frozen=True)
class OutboxFence:
    """A replica's claim on an entry that holds a payload: the entry's id and the fencing token."""

    application_id: str
    claim: int

    def __repr__(self) -> str:
        return f"outbox entry {self.application_id[:64]!r} (claim {self.claim})"


def lost(fence: OutboxFence) -> LeaseLostError:
    return LeaseLostError(
        f"lost the lease on {fence!r}: another platform replica took it over or it was answered; "
        "this one records nothing about it"
    )


_COLUMNS = tuple(f.name for f in fields(OutboxEntry))
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM {{outbox}}"
_SELECT_ID = f"{_SELECT} WHERE application_id = ?"
_INSERT = f"INSERT INTO {{outbox}} ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
assert tuple(name for name, _ in CLAIM_COLUMNS) == _COLUMNS[-3:]
#: SQL: the entry holds a payload (a single application, or a batch's first member), not a
#: reference to its batch's first member. Only these are claimed and resent.
_HOLDS_PAYLOAD = {
    "sqlite": "substr(payload, 1, 1) <> x'01'",
    "postgresql": "get_byte(payload, 0) <> 1",
}


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
        in ``data_dir``/outbox.secret.json (0600, made on first start). Platform replicas that
        share one PostgreSQL outbox must share that file too (one data directory on one host, a
        copy on every other host): a replica with another secret is refused at start."""
        return cls(database or data_dir / "outbox.sqlite3", _load_secret(data_dir / SECRET_FILE))

    @classmethod
    def in_memory(cls) -> Outbox:
        """An outbox that lasts as long as the process: resubmissions are recognised, restarts are not."""
        return cls(":memory:", secrets.token_bytes(32))

    def _create(self, tx: Tx) -> None:
        create_schema(self._db, tx, _SCHEMA)
        add_claim_columns(tx, "outbox")
        tx.check_version("platform.outbox", FORMAT_VERSION)
        check = hmac.new(self._secret, _CHECK_LABEL, hashlib.sha256).hexdigest()
        row = tx.one("SELECT check_value FROM {outbox_secret} WHERE id = 1")
        if row is None:
            tx.execute("INSERT INTO {outbox_secret} (id, check_value) VALUES (1, ?)", (check,))
        elif not hmac.compare_digest(str(row[0]), check):
            raise PreconditionError(
                f"the outbox in {self._db.url} was made with another HMAC secret than this platform's "
                f"{SECRET_FILE}: every platform replica on one outbox needs the same secret file; copy "
                "it (0600) from the data directory of a replica that runs"
            )

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
        owner: str = "",
        lease_s: float = 0.0,
    ) -> OutboxEntry:
        """Store a payload before it is sent. Returns the stored entry, which is an earlier one when
        another request for the same application got here first (on any replica). A new entry is
        claimed for replica ``owner`` in the same transaction, with a lease of ``lease_s`` seconds:
        the request that stores it sends it, no resender (``due_at`` is when a resender may first
        look at it)."""

        def add(tx: Tx) -> OutboxEntry:
            row = tx.one(_SELECT_ID, (application_id,))
            existing = None if row is None else self._check(_entry(row), fingerprint)
            if existing is not None:
                return existing
            entry = OutboxEntry.sent(application_id, fingerprint, bank_id, key_id, payload, due_at)
            return _put(tx, _claimed(tx, entry, owner, lease_s))

        return self._db.write(add)

    def add_batch(
        self,
        members: Sequence[tuple[str, str]],
        bank_id: str,
        key_id: str,
        payload: bytes,
        *,
        due_at: float,
        owner: str = "",
        lease_s: float = 0.0,
    ) -> OutboxEntry | None:
        """Store a packed batch before it is sent: (application id, fingerprint) per member, in one
        transaction. Returns the first member's entry (the one holding the payload, claimed as in
        :meth:`add`), or None, storing nothing, when any member id is already in the outbox (a
        concurrent submission of the same application, on any replica, got here first)."""

        def add(tx: Tx) -> OutboxEntry | None:
            taken = "SELECT 1 FROM {outbox} WHERE application_id = ? AND state <> ?"
            if any(tx.one(taken, (app_id, REFUSED)) for app_id, _ in members):
                return None
            (leader, leader_fp), *others = members
            sent = OutboxEntry.sent(leader, leader_fp, bank_id, key_id, BATCH_PAYLOAD + payload, due_at)
            first = _put(tx, _claimed(tx, sent, owner, lease_s))
            reference = BATCH_REFERENCE + leader.encode()
            # The other members follow the first: they are never claimed themselves.
            member = replace(first, payload=reference, claimed_by="", lease_until=0.0, claim=0)
            for app_id, fingerprint in others:
                _put(tx, replace(member, application_id=app_id, fingerprint=fingerprint))
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

    # -- outcomes: sent -> acknowledged | refused, or sent again later ------------------------------

    def _finish(
        self,
        ids: Sequence[str],
        sets: str,
        params: tuple[object, ...],
        fence: OutboxFence | None,
        *,
        sync: bool = True,
    ) -> bool:
        """Apply ``sets`` to the entries ``ids`` of one submission (the first holds its payload)
        while they are unanswered; False if they were answered already. With ``fence`` (the claim
        this replica sent them under), LeaseLostError, writing nothing, when another claim replaced
        it. The payload's entry is locked first, so a takeover and a fenced write never both
        commit on one token."""
        sql = f"UPDATE {{outbox}} SET {sets} WHERE application_id = ? AND state = ?"
        lead = fence.application_id if fence is not None else ids[0]

        def finish(tx: Tx) -> bool:
            row = tx.one("SELECT claim, state FROM {outbox} WHERE application_id = ? {for_update}", (lead,))
            if fence is not None and (row is None or int(row[0]) != fence.claim):
                raise lost(fence)
            if row is None or row[1] != SENT:
                return False
            for app_id in ids:
                tx.execute(sql, (*params, app_id, SENT))
            return True

        return self._db.write(finish, sync=sync)

    @staticmethod
    def _ids(application_ids: str | Sequence[str]) -> list[str]:
        return [application_ids] if isinstance(application_ids, str) else list(application_ids)

    def acknowledged(self, application_ids: str | Sequence[str], *, fence: OutboxFence | None = None) -> bool:
        """The bureau has the application(s) (it answered with a receipt). A fact whoever learnt it:
        without ``fence`` (a resubmission's replay) it is recorded too.

        Committed without waiting for the disk (Database.write's ``sync``): lost with the machine,
        the entry is unanswered again and a resender sends its stored payload once more, which the
        bureau answers with the same receipt."""
        sets = "state = ?, answered_at = ?, last_error = ''"
        ids = self._ids(application_ids)
        return self._finish(ids, sets, (ACKNOWLEDGED, time.time()), fence, sync=False)

    def refused(
        self, application_ids: str | Sequence[str], error: str, *, fence: OutboxFence | None = None
    ) -> bool:
        """The bureau refused the application(s) for good."""
        sets = "state = ?, answered_at = ?, last_error = ?"
        return self._finish(self._ids(application_ids), sets, (REFUSED, time.time(), error[:1000]), fence)

    def retry_later(
        self,
        application_ids: str | Sequence[str],
        attempts: int,
        at: float,
        error: str,
        *,
        fence: OutboxFence | None = None,
    ) -> bool:
        """No answer from the bureau: let go of the lease; any replica's resender sends it at ``at``.
        Only the claim that sent it may say so (``fence``): an unfenced call is for tools and tests."""
        sets = "attempts = ?, next_attempt_at = ?, last_error = ?, lease_until = 0"
        return self._finish(self._ids(application_ids), sets, (attempts, at, error[:1000]), fence)

    # -- claims: which replica sends an unanswered entry -------------------------------------------

    def claim_due(self, owner: str, lease_s: float, now: float, limit: int) -> list[OutboxEntry]:
        """Claim for replica ``owner`` up to ``limit`` unanswered entries holding a payload that are
        due at ``now`` and that no live replica holds (unclaimed, or the lease expired), the
        longest-waiting first. Each claim takes the fencing token up by one and leases the entry
        for ``lease_s`` seconds (its next attempt moves past the lease, so other replicas'
        resenders do not wake for it). On PostgreSQL entries another replica is claiming at the
        same moment are skipped, not waited for."""
        holds = _HOLDS_PAYLOAD[self._db.backend]
        sql = (
            "UPDATE {outbox} SET claimed_by = ?, lease_until = {now} + ?, claim = claim + 1, "
            "next_attempt_at = ? WHERE application_id IN (SELECT application_id FROM {outbox} "
            f"WHERE state = ? AND next_attempt_at <= ? AND lease_until < {{now}} AND {holds} "
            f"ORDER BY next_attempt_at LIMIT ? {{skip_locked}}) RETURNING {', '.join(_COLUMNS)}"
        )

        def claim(tx: Tx) -> list[tuple[Any, ...]]:
            return tx.all(sql, (owner, lease_s, now + lease_s, SENT, now, limit))

        return sorted((_entry(r) for r in self._db.write(claim)), key=lambda e: e.next_attempt_at)

    def renew(self, fences: Sequence[OutboxFence], lease_s: float, now: float) -> list[OutboxFence]:
        """Extend this replica's leases by ``lease_s`` seconds, in one transaction; returns the
        fences whose entries were taken over, answered or let go meanwhile (a lease let go by
        ``retry_later`` is never renewed back: a renewal racing it must not hold the entry)."""
        sql = (
            "UPDATE {outbox} SET lease_until = {now} + ?, next_attempt_at = ? "
            "WHERE application_id = ? AND claim = ? AND state = ? AND lease_until > 0"
        )

        def renew(tx: Tx) -> list[OutboxFence]:
            gone = []
            for f in fences:
                if (
                    int(tx.execute(sql, (lease_s, now + lease_s, f.application_id, f.claim, SENT)).rowcount)
                    == 0
                ):
                    gone.append(f)
            return gone

        return self._db.write(renew) if fences else []

    def release(self, fences: Sequence[OutboxFence], at: float) -> None:
        """Let go of claims this replica will not work on (it is stopping): each entry still
        unanswered under its fence's claim is unclaimed and due at ``at``, so another replica, or
        this one restarted, resends it at once instead of waiting out the lease. The claim number
        stays, so a late write under the released claim is fenced off once a new claim takes it."""
        sql = (
            "UPDATE {outbox} SET claimed_by = '', lease_until = 0, next_attempt_at = ? "
            "WHERE application_id = ? AND claim = ? AND state = ?"
        )

        def release(tx: Tx) -> None:
            for f in fences:
                tx.execute(sql, (at, f.application_id, f.claim, SENT))

        if fences:
            self._db.write(release)

    def get(self, application_id: str) -> OutboxEntry | None:
        row = self._db.read(lambda tx: tx.one(_SELECT_ID, (application_id,)))
        return None if row is None else _entry(row)

    def due(self, now: float, limit: int) -> list[OutboxEntry]:
        """Unanswered entries holding a payload whose next attempt is due, the longest-waiting
        first (read only: :meth:`claim_due` is what a resender takes)."""
        holds = _HOLDS_PAYLOAD[self._db.backend]
        rows = self._db.read(
            lambda tx: tx.all(
                f"{_SELECT} WHERE state = ? AND next_attempt_at <= ? AND {holds} "
                "ORDER BY next_attempt_at LIMIT ?",
                (SENT, now, limit),
            )
        )
        return [_entry(r) for r in rows]

    def next_due(self) -> float | None:
        """When the earliest unanswered entry holding a payload is due (held ones: when their lease
        ends), or None when every entry is answered."""
        holds = _HOLDS_PAYLOAD[self._db.backend]
        sql = f"SELECT MIN(next_attempt_at) FROM {{outbox}} WHERE state = ? AND {holds}"
        row = self._db.read(lambda tx: tx.one(sql, (SENT,)))
        return None if row is None or row[0] is None else float(row[0])

    def resume_all(self, at: float) -> int:
        """Make every unanswered entry that no live replica holds due at ``at`` (on start: resend
        what an earlier run left, not what another replica is sending)."""

        def resume(tx: Tx) -> int:
            cursor = tx.execute(
                "UPDATE {outbox} SET next_attempt_at = ? WHERE state = ? AND lease_until < {now}", (at, SENT)
            )
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


def _claimed(tx: Tx, entry: OutboxEntry, owner: str, lease_s: float) -> OutboxEntry:
    """``entry`` claimed for ``owner``: its fencing token continues that of a refused entry it
    replaces, so a replica still holding the old token can never write to the new entry."""
    row = tx.one("SELECT claim FROM {outbox} WHERE application_id = ?", (entry.application_id,))
    token = (0 if row is None else int(row[0])) + 1
    return replace(entry, claimed_by=owner, lease_until=db_now(tx) + lease_s, claim=token)


def _load_secret(path: Path) -> bytes:
    """The platform's outbox HMAC secret, made (0600) on first use. Replicas starting together on
    one data directory agree: the first file to be linked into place wins, none is replaced."""
    if not path.exists():
        doc = {"format": FORMAT_VERSION, "hmac_sha256_key": secrets.token_hex(32)}
        tmp = stage(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), secret=True)
        try:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    doc = read_json(path, secret=True)
    try:
        key = bytes.fromhex(doc["hmac_sha256_key"])
    except (KeyError, TypeError, ValueError):
        raise PreconditionError(f"{path}: not an outbox secret file") from None
    if len(key) < 32:
        raise PreconditionError(f"{path}: the outbox secret is too short")
    return key
