"""The bureau's durable application store: each application accepted once, then worked on until done."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from blindscore.bureau.claims import CLAIM_COLUMNS, Fence, add_claim_columns, db_now, lost
from blindscore.errors import AlreadyExistsError, BlindscoreError, PeerError
from blindscore.infra.db import Database, Tx, create_schema

FORMAT_VERSION = 1
PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"

#: The columns both stores have after their own: the payload (digest, ciphertexts) and the state
#: of its delivery. Their order is the tables' column order.
ROW_STATE_COLUMNS = (
    ("digest", "TEXT NOT NULL"),
    ("width", "INTEGER NOT NULL"),
    ("ciphertexts", "{blob}"),
    ("state", "TEXT NOT NULL"),
    ("attempts", "INTEGER NOT NULL"),
    ("next_attempt_at", "{real} NOT NULL"),
    ("accepted_at", "{real} NOT NULL"),
    ("finished_at", "{real}"),
    ("error_code", "TEXT NOT NULL"),
    ("error_message", "TEXT NOT NULL"),
    ("receipt", "TEXT NOT NULL"),
    # Who works on a pending row, until when, and the fencing token (bureau/claims.py).
    *CLAIM_COLUMNS,
)


def work_table(table: str, own: Sequence[tuple[str, str]], id_column: str) -> tuple[str, tuple[str, ...]]:
    """The CREATE TABLE statement of a store's table, keyed by (platform_id, ``id_column``): its own
    columns, then ROW_STATE_COLUMNS; and the names of all its columns, in order."""
    columns = (*own, *ROW_STATE_COLUMNS)
    pad = max(len(name) for name, _ in columns) + 1
    body = "".join(f"        {name.ljust(pad)}{kind},\n" for name, kind in columns)
    key = f"        PRIMARY KEY (platform_id, {id_column})\n"
    ddl = f"\n    CREATE TABLE IF NOT EXISTS {{{table}}} (\n{body}{key}    )\n    "
    return ddl, tuple(name for name, _ in columns)


_TABLE, _COLUMNS = work_table(
    "applications",
    (
        ("platform_id", "TEXT NOT NULL"),
        ("application_id", "TEXT NOT NULL"),
        ("bank_id", "TEXT NOT NULL"),
        ("model_id", "TEXT NOT NULL"),
        ("model_version", "INTEGER NOT NULL"),
        ("key_id", "TEXT NOT NULL"),
        ("consent_reference", "TEXT NOT NULL"),
    ),
    "application_id",
)
_SCHEMA = (
    _TABLE,
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
_DIGEST_DOMAIN = b"blindscore/bureau/application/v1\x00"


def framed_digest(domain: bytes, parts: Sequence[str], payload: bytes) -> str:
    """SHA-256 of ``domain``, then every part and the payload each length-prefixed, so no two
    different submissions share an encoding."""
    h = hashlib.sha256(domain)
    for part in parts:
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "big") + data)
    h.update(len(payload).to_bytes(8, "big") + payload)
    return h.hexdigest()


@dataclass(frozen=True)
class _Application:
    """Who sent an application, for which bank, model version and key, under which consent."""

    platform_id: str
    application_id: str
    bank_id: str
    model_id: str
    model_version: int
    key_id: str
    consent_reference: str


@dataclass(frozen=True)
class Submission(_Application):
    """What the bureau stores before it says "accepted": the application and its payload digest."""

    width: int
    ciphertexts: bytes

    @property
    def digest(self) -> str:
        """SHA-256 over the fields that make two submissions "the same application"."""
        parts = (self.platform_id, self.bank_id, self.model_id, str(self.model_version), self.key_id)
        return framed_digest(_DIGEST_DOMAIN, (*parts, self.consent_reference), self.ciphertexts)


@dataclass(frozen=True, kw_only=True)
class StoredRow:
    """What a stored application and a stored batch have in common: the payload (``ciphertexts`` is
    None once the row is finished) and the state of its delivery."""

    #: What a row holds, in messages: "application" or "batch".
    kind: ClassVar[str]

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
    #: The replica that holds the row's lease, when it ends (database clock) and the fencing token
    #: of that claim: a row returned by ``accept`` (created) or ``claim_due`` is this replica's.
    claimed_by: str = ""
    lease_until: float = 0.0
    claim: int = 0

    @property
    def key(self) -> tuple[str, str]:
        raise NotImplementedError

    @property
    def what(self) -> str:
        """E.g. "application app-1", for logs and messages."""
        return f"{self.kind} {self.key[1]}"

    def receipt_fields(self) -> dict[str, Any]:
        """The stored receipt of a delivered row: stage_ms, wire_bytes, model_version."""
        return dict(json.loads(self.receipt)) if self.receipt else {}

    def failure(self) -> BlindscoreError:
        """The error a failed row ended with, to be raised again on resubmission."""
        return StoredFailure(self.error_code, self.error_message)


@dataclass(frozen=True)
class StoredApplication(StoredRow, _Application):
    """One row of the store."""

    kind = "application"

    @property
    def key(self) -> tuple[str, str]:
        return self.platform_id, self.application_id


class StoredFailure(PeerError):
    """A terminal failure recorded earlier, answered again with the same status and message."""

    def __init__(self, code: str, message: str) -> None:
        BlindscoreError.__init__(self, message)
        self.peer = "bureau"
        self.code = code


class Payload(Protocol):
    """What a store needs of a submission besides its own columns."""

    @property
    def platform_id(self) -> str: ...

    @property
    def bank_id(self) -> str: ...

    @property
    def model_id(self) -> str: ...

    @property
    def model_version(self) -> int: ...

    @property
    def digest(self) -> str: ...


SubmissionT = TypeVar("SubmissionT", bound=Payload)
RowT = TypeVar("RowT", bound=StoredRow)


class WorkStore(Generic[SubmissionT, RowT]):
    """The state machine both stores share: a row is accepted once, then retried until delivered or
    failed.

    A subclass names its table, columns, id column and row type, and what ``accept`` checks and
    writes besides its own row.
    """

    _table: str
    _columns: tuple[str, ...]
    _id_column: str
    _row_type: type[RowT]
    _what: str
    #: Whether ``delivered`` may commit without waiting for the disk (Database.write's ``sync``):
    #: only where a lost DELIVERED is repaired by the retry worker with the same outcome.
    _lazy_delivery: bool = False

    def __init__(self, target: Path | str | Database) -> None:
        """Open the store in a SQLite file (a Path), a database URL, or an open bureau Database."""
        self._owns = not isinstance(target, Database)
        self._db = Database.open(target, "bureau") if not isinstance(target, Database) else target
        self._select = f"SELECT {', '.join(self._columns)} FROM {{{self._table}}}"
        self._where_key = f"platform_id = ? AND {self._id_column} = ?"
        columns = ", ".join(self._columns)
        self._insert = (
            f"INSERT INTO {{{self._table}}} ({columns}) VALUES ({', '.join('?' * len(self._columns))})"
        )
        try:
            self._db.setup(self._setup, self._what)
        except BaseException:
            self.close()
            raise

    def _setup(self, tx: Tx) -> None:
        self._create(tx)  # under create_schema's lock on PostgreSQL, which the ALTERs need too
        add_claim_columns(tx, self._table)

    def _create(self, tx: Tx) -> None:
        raise NotImplementedError

    @property
    def kind(self) -> str:
        """What a row holds: "application" or "batch"."""
        return self._row_type.kind

    def key_of(self, sub: SubmissionT) -> tuple[str, str]:
        """The key ``sub`` is stored under: (platform id, its id)."""
        return sub.platform_id, str(getattr(sub, self._id_column))

    @property
    def url(self) -> str:
        return self._db.url

    @property
    def database(self) -> Database:
        return self._db

    # -- the row's own encoding: the columns as stored ------------------------------------------

    def _decode(self, values: dict[str, Any]) -> None:
        """Turn stored column values (in place) into the row's field values."""
        blob = values["ciphertexts"]
        values["ciphertexts"] = None if blob is None else bytes(blob)

    def _encode(self, values: dict[str, Any]) -> None:
        """Turn the row's field values (in place) into the values stored."""

    def _row(self, row: Sequence[Any]) -> RowT:
        values = dict(zip(self._columns, row, strict=True))
        self._decode(values)
        return self._row_type(**values)

    # -- the exactly-once gate ------------------------------------------------------------------

    def _check_ids(self, tx: Tx, sub: SubmissionT) -> None:
        """Refuse ``sub`` when an application id in it was used before (AlreadyExistsError)."""

    def _stored_with(self, tx: Tx, sub: SubmissionT) -> None:
        """What ``accept`` writes besides the row."""

    def check_new(self, sub: SubmissionT) -> None:
        """Refuse ``sub`` (AlreadyExistsError) when an application id in it was used before, storing
        nothing. For the bureau to call before it writes a new submission's ACCEPTED records, so a
        submission refused this way leaves its refusal in the audit trail and no ACCEPTED record;
        ``accept`` checks again in its own transaction."""
        self._db.read(lambda tx: self._check_ids(tx, sub))

    def accept(
        self, sub: SubmissionT, *, next_attempt_at: float, owner: str = "", lease_s: float = 0.0
    ) -> tuple[RowT, bool]:
        """Store ``sub`` as pending, or return the row already stored under its key.

        Returns (row, created). Raises AlreadyExistsError, storing nothing, when the key is taken by
        a different payload (or an id in it is used already). ``next_attempt_at`` is when the retry
        worker may first pick it up. A created row is claimed for replica ``owner`` in the same
        transaction (claim 1, a lease of ``lease_s`` seconds on the database's clock).
        """
        digest = sub.digest
        key = self.key_of(sub)
        kind = self.kind

        def accept(tx: Tx) -> tuple[RowT, bool]:
            row = tx.one(f"{self._select} WHERE {self._where_key}", key)
            if row is not None:
                stored = self._row(row)
                if stored.digest != digest:
                    raise AlreadyExistsError(
                        f"{kind} {key[1]!r} of platform {key[0]!r} was already submitted with a different "
                        f"payload; a new {kind} needs a new id"
                    )
                return stored, False
            self._check_ids(tx, sub)
            stored = self._row_type(
                **{f.name: getattr(sub, f.name) for f in fields(sub)},  # type: ignore[arg-type]
                digest=digest, state=PENDING, attempts=0, next_attempt_at=next_attempt_at,
                accepted_at=time.time(), finished_at=None, error_code="", error_message="", receipt="",
                claimed_by=owner, lease_until=db_now(tx) + lease_s, claim=1,
            )  # fmt: skip
            values = {c: getattr(stored, c) for c in self._columns}
            self._encode(values)
            tx.execute(self._insert, tuple(values.values()))
            self._stored_with(tx, sub)
            return stored, True

        return self._db.write(accept)

    def get(self, platform_id: str, row_id: str) -> RowT | None:
        row = self._db.read(
            lambda tx: tx.one(f"{self._select} WHERE {self._where_key}", (platform_id, row_id))
        )
        return None if row is None else self._row(row)

    # -- claims: which replica works on a pending row (bureau/claims.py) -----------------------

    def fence(self, row: StoredRow) -> Fence:
        """The claim this replica holds on ``row`` (as ``accept`` or ``claim_due`` returned it)."""
        return Fence(self._table, self._id_column, row.key[0], row.key[1], row.claim)

    def claim_due(self, owner: str, lease_s: float, now: float, limit: int) -> list[RowT]:
        """Claim for replica ``owner`` up to ``limit`` pending rows that are due at ``now`` and that
        no live replica holds (unclaimed, or the lease expired), the longest-waiting first.

        Each claim takes the fencing token up by one and leases the row for ``lease_s`` seconds
        (its next attempt moves past the lease too, so other replicas' workers do not wake for it).
        On PostgreSQL rows another replica is claiming at the same moment are skipped, not waited for.
        """
        returning = ", ".join(self._columns)
        sql = (
            f"UPDATE {{{self._table}}} SET claimed_by = ?, lease_until = {{now}} + ?, "
            f"claim = claim + 1, next_attempt_at = ? WHERE (platform_id, {self._id_column}) IN ("
            f"SELECT platform_id, {self._id_column} FROM {{{self._table}}} WHERE state = ? "
            "AND next_attempt_at <= ? AND lease_until < {now} ORDER BY next_attempt_at LIMIT ? "
            f"{{skip_locked}}) RETURNING {returning}"
        )

        def claim(tx: Tx) -> list[tuple[Any, ...]]:
            return tx.all(sql, (owner, lease_s, now + lease_s, PENDING, now, limit))

        rows = sorted((self._row(r) for r in self._db.write(claim)), key=lambda r: r.next_attempt_at)
        return rows

    def mine(self, fences: list[Fence]) -> list[Fence]:
        """Those of ``fences`` that are claims on this store's rows."""
        return [f for f in fences if f.table == self._table]

    def renew(self, fences: list[Fence], lease_s: float, now: float) -> list[Fence]:
        """Extend this replica's leases by ``lease_s`` seconds, in one transaction; returns the
        fences whose rows were taken over, finished or let go meanwhile (their work must stop; a
        lease let go by ``retry_later`` or ``release`` is never renewed back by a racing renewal)."""
        sql = (
            f"UPDATE {{{self._table}}} SET lease_until = {{now}} + ?, next_attempt_at = ? "
            f"WHERE {self._where_key} AND claim = ? AND state = ? AND lease_until > 0"
        )

        def renew(tx: Tx) -> list[Fence]:
            return [
                f
                for f in fences
                if int(
                    tx.execute(
                        sql, (lease_s, now + lease_s, f.platform_id, f.row_id, f.claim, PENDING)
                    ).rowcount
                )
                == 0
            ]

        return self._db.write(renew) if fences else []

    def release(self, fences: list[Fence], at: float) -> None:
        """Let go of claims this replica will not work on (it is stopping): each row still pending
        under its fence's claim is unclaimed and due at ``at``, so another replica, or this one
        restarted, takes it at once instead of waiting out the lease. A row claimed again or
        finished meanwhile is left alone; its claim number stays, so a late write under the
        released claim is still fenced off once a new claim takes it."""
        sql = (
            f"UPDATE {{{self._table}}} SET claimed_by = '', lease_until = 0, next_attempt_at = ? "
            f"WHERE {self._where_key} AND claim = ? AND state = ?"
        )

        def release(tx: Tx) -> None:
            for f in fences:
                tx.execute(sql, (at, f.platform_id, f.row_id, f.claim, PENDING))

        if fences:
            self._db.write(release)

    # -- pending -> delivered | failed ----------------------------------------------------------

    def _finish(
        self,
        key: tuple[str, str],
        sets: str,
        params: tuple[object, ...],
        claim: int | None,
        *,
        sync: bool = True,
    ) -> bool:
        """Apply ``sets`` to a pending row; False if it is not pending. With ``claim`` (the fencing
        token this replica holds), LeaseLostError when another replica's claim replaced it."""
        sql = f"UPDATE {{{self._table}}} SET {sets} WHERE {self._where_key} AND state = ?"
        if claim is not None:
            sql += " AND claim = ?"

        def finish(tx: Tx) -> bool:
            fenced = () if claim is None else (claim,)
            if int(tx.execute(sql, (*params, *key, PENDING, *fenced)).rowcount) > 0:
                return True
            if claim is not None:
                row = tx.one(f"SELECT claim FROM {{{self._table}}} WHERE {self._where_key}", key)
                if row is not None and int(row[0]) != claim:
                    raise lost(Fence(self._table, self._id_column, key[0], key[1], claim))
            return False

        return self._db.write(finish, sync=sync)

    def delivered(self, key: tuple[str, str], receipt: dict[str, Any], *, claim: int | None = None) -> bool:
        """Pending -> delivered; the ciphertexts are dropped, the digest and receipt kept. ``claim``:
        see ``_finish`` (the same for ``failed`` and ``retry_later``)."""
        return self._finish(
            key,
            "state = ?, ciphertexts = NULL, finished_at = ?, receipt = ?, error_code = '', "
            "error_message = ''",
            (DELIVERED, time.time(), json.dumps(receipt, sort_keys=True)),
            claim,
            sync=not self._lazy_delivery,
        )

    def failed(self, key: tuple[str, str], code: str, message: str, *, claim: int | None = None) -> bool:
        """Pending -> failed for good, with the status a resubmission will be answered with."""
        return self._finish(
            key,
            "state = ?, ciphertexts = NULL, finished_at = ?, error_code = ?, error_message = ?",
            (FAILED, time.time(), code, message[:1000]),
            claim,
        )

    def retry_later(
        self,
        key: tuple[str, str],
        attempts: int,
        at: float,
        code: str,
        message: str,
        *,
        claim: int | None = None,
    ) -> bool:
        """Keep a pending row pending and let go of its lease; a worker tries again at ``at``."""
        return self._finish(
            key,
            "attempts = ?, next_attempt_at = ?, error_code = ?, error_message = ?, claimed_by = '', "
            "lease_until = 0",
            (attempts, at, code, message[:1000]),
            claim,
        )

    def due(self, now: float, limit: int) -> list[RowT]:
        """Pending rows whose next attempt is due, the longest-waiting first."""
        rows = self._db.read(
            lambda tx: tx.all(
                f"{self._select} WHERE state = ? AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
                (PENDING, now, limit),
            )
        )
        return [self._row(r) for r in rows]

    def next_due(self) -> float | None:
        """When the earliest pending row is due, or None when nothing is pending."""
        sql = f"SELECT MIN(next_attempt_at) FROM {{{self._table}}} WHERE state = ?"
        row = self._db.read(lambda tx: tx.one(sql, (PENDING,)))
        return None if row is None or row[0] is None else float(row[0])

    def resume_all(self, at: float) -> int:
        """Make every pending row that no live replica holds due at ``at``: a restarted bureau does
        not wait out old backoffs, nor take work another replica is doing (its lease has not expired)."""
        sql = f"UPDATE {{{self._table}}} SET next_attempt_at = ? WHERE state = ? AND lease_until < {{now}}"

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


#: Which packed batch an application id came in (bureau/batches.py).
BATCH_OF = "SELECT batch_id FROM {batch_members} WHERE platform_id = ? AND application_id = ?"


class ApplicationStore(WorkStore[Submission, StoredApplication]):
    """Applications by (platform id, application id), with the state of their delivery.

    ``accept`` is the exactly-once gate: the first submission is stored (pending); the same payload
    again returns the stored row; a different payload under the same key is refused. Pending rows
    keep their ciphertexts so the band protocol can be re-run; finished rows drop them.
    """

    _table = "applications"
    _columns = _COLUMNS
    _id_column = "application_id"
    _row_type = StoredApplication
    _what = "the application store"
    # A unary application's band is already the bank's when this is written: its revealed pad or
    # its [band] ciphertext is in the ledger (synced). If DELIVERED is lost with the machine, the
    # row is pending again and the retry worker sends the same pad or ciphertext, which the bank
    # answers as a repeat. (Not a packed batch: its spent round would fail the retry.)
    _lazy_delivery = True

    def _create(self, tx: Tx) -> None:
        create_schema(self._db, tx, _SCHEMA)
        tx.check_version("bureau.applications", FORMAT_VERSION)

    def _check_ids(self, tx: Tx, sub: Submission) -> None:
        if tx.one(BATCH_OF, (sub.platform_id, sub.application_id)) is not None:
            raise AlreadyExistsError(
                f"application {sub.application_id!r} of platform {sub.platform_id!r} was already "
                "submitted in a batch; a new application needs a new id"
            )
