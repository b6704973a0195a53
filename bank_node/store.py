"""The bank's result store: the band of each application, and the ledger of band-protocol runs and
faults per bureau that bounds what a deviating bureau can try (SQLite or PostgreSQL)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blindscore.errors import AlreadyExistsError, InvalidInputError, PermissionDeniedError, PreconditionError
from blindscore.infra.db import Database, Tx, create_schema

#: 3: the padded outcomes of garbled-circuit rounds waiting for their pad (added on open of a
#: format-2 store). 2: bands keyed by (bureau, platform, application id); format 1 keyed them by
#: application id alone, which let two platforms' applications with one id collide (migrated on open).
FORMAT_VERSION = 3

_BANDS = """
    CREATE TABLE IF NOT EXISTS {%s} (
        bureau_id      TEXT NOT NULL,
        platform_id    TEXT NOT NULL,
        application_id TEXT NOT NULL,
        model_id       TEXT NOT NULL,
        key_id         TEXT NOT NULL,
        band           INTEGER NOT NULL,
        band_label     TEXT NOT NULL,
        received_at    {real} NOT NULL,
        PRIMARY KEY (bureau_id, platform_id, application_id)
    )
    """

_SCHEMA = (
    _BANDS % "bands",
    # One row per (bureau, application): how many runs of the band protocol the bank answered,
    # whether any of them broke the protocol, how it ended ('' running, 'band', 'faulted') and how
    # many deliveries (DeliverBand, or PackedFinish naming it) completed it.
    """
    CREATE TABLE IF NOT EXISTS {runs} (
        bureau_id      TEXT NOT NULL,
        platform_id    TEXT NOT NULL,
        application_id TEXT NOT NULL,
        runs           INTEGER NOT NULL,
        faulted        INTEGER NOT NULL,
        outcome        TEXT NOT NULL,
        deliveries     INTEGER NOT NULL,
        updated_at     {real} NOT NULL,
        PRIMARY KEY (bureau_id, platform_id, application_id)
    )
    """,
    # Protocol faults per bureau; a bureau is suspended at the limit until an operator resets it.
    """
    CREATE TABLE IF NOT EXISTS {bureaus} (
        bureau_id  TEXT PRIMARY KEY,
        faults     INTEGER NOT NULL,
        suspended  INTEGER NOT NULL,
        updated_at {real} NOT NULL
    )
    """,
    # The bank's own systems follow new bands by time (WatchBands).
    "CREATE INDEX IF NOT EXISTS {bands}_received ON {bands} (received_at)",
    # A garbled-circuit round the bank evaluated: its outputs XOR the bureau's one-time pad (uniform
    # bits until the bureau reveals the pad of one round of the application), per garbling id.
    """
    CREATE TABLE IF NOT EXISTS {circuit_rounds} (
        bureau_id      TEXT NOT NULL,
        platform_id    TEXT NOT NULL,
        application_id TEXT NOT NULL,
        garbling_id    TEXT NOT NULL,
        padded         TEXT NOT NULL,
        model_id       TEXT NOT NULL,
        key_id         TEXT NOT NULL,
        labels         TEXT NOT NULL,
        at             {real} NOT NULL,
        PRIMARY KEY (bureau_id, platform_id, application_id, garbling_id)
    )
    """,
    # The fault record: which bureau, which application, which check, when. Never a value.
    """
    CREATE TABLE IF NOT EXISTS {faults} (
        bureau_id      TEXT NOT NULL,
        platform_id    TEXT NOT NULL,
        application_id TEXT NOT NULL,
        reason         TEXT NOT NULL,
        at             {real} NOT NULL
    )
    """,
)
_COLUMNS = "application_id, model_id, key_id, band, band_label, received_at, platform_id, bureau_id"
_KEY = "bureau_id = ? AND platform_id = ? AND application_id = ?"
#: One band per application, decided by the primary key in the insert itself: bank replicas
#: storing the same application's band at once cannot both insert (never a read, then a write).
_ONCE = "ON CONFLICT (bureau_id, platform_id, application_id) DO NOTHING"


#: Runs of the band protocol the bank answers for one (bureau, application id) by default.
DEFAULT_MAX_RUNS = 3
#: Protocol faults after which the bank suspends a bureau by default.
DEFAULT_MAX_FAULTS = 3


@dataclass(frozen=True)
class RunLimits:
    """How much the bank lets one bureau try: runs per application, faults before suspension."""

    max_runs: int = DEFAULT_MAX_RUNS
    max_faults: int = DEFAULT_MAX_FAULTS

    def __post_init__(self) -> None:
        for name in ("max_runs", "max_faults"):
            value = getattr(self, name)
            if type(value) is not int or not 1 <= value <= 1000:
                raise InvalidInputError(f"{name} must be an integer in 1..1000, got {value!r}")


@dataclass(frozen=True)
class Completion:
    """How one run of one application ended at the bank: its band record, or a fault."""

    record: BandRecord
    fault: str = ""  # the failed check; empty when the band is good


def _kept_over(stored: BandRecord | None, c: Completion) -> bool:
    """Whether the stored band is kept over a different one this completion brings. A faulted
    completion carries no band (its record's band is a placeholder), so it never differs."""
    return (
        stored is not None
        and not c.fault
        and (stored.model_id, stored.band) != (c.record.model_id, c.record.band)
    )


@dataclass(frozen=True)
class Completed:
    """What :meth:`ResultStore.complete` did: how many applications were completed for the first
    time, the ids whose earlier band was kept over a different one (a faulted completion has no
    band and is never among them), and per completion the band the bank holds afterwards (None
    when it holds none: the run faulted)."""

    new: int
    kept: list[str]
    held: list[BandRecord | None]


@dataclass(frozen=True)
class PendingRound:
    """A garbled-circuit round the bank evaluated, waiting for its pad: the K output bits XOR the
    bureau's pad as a string of 0s and 1s (uniform to the bank), and what the band is stored under."""

    application_id: str
    platform_id: str
    garbling_id: str  # hex
    padded: str
    model_id: str
    key_id: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class BureauStanding:
    bureau_id: str
    faults: int
    suspended: bool
    updated_at: float


@dataclass(frozen=True)
class FaultRecord:
    bureau_id: str
    platform_id: str
    application_id: str
    reason: str
    at: float


@dataclass(frozen=True)
class BandRecord:
    application_id: str
    model_id: str
    key_id: str
    band: int
    band_label: str
    received_at: float
    #: The platform the application came from and the bureau that delivered it: a result belongs
    #: to (bureau, platform, application id), so two platforms' ids never collide.
    platform_id: str = ""
    bureau_id: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return self.bureau_id, self.platform_id, self.application_id


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
        tx.execute(
            "CREATE TABLE IF NOT EXISTS {schema_versions} (component TEXT PRIMARY KEY, version INTEGER)"
        )
        row = tx.one("SELECT version FROM {schema_versions} WHERE component = ?", ("bank.results",))
        if row is not None and int(row[0]) == 1:
            self._migrate_v1(tx)
        create_schema(self._db, tx, _SCHEMA)
        if row is not None and int(row[0]) == 2:
            # Format 3 only adds the circuit_rounds table, which create_schema just made.
            tx.execute(
                "UPDATE {schema_versions} SET version = ? WHERE component = ?",
                (FORMAT_VERSION, "bank.results"),
            )
        tx.check_version("bank.results", FORMAT_VERSION)

    def _migrate_v1(self, tx: Tx) -> None:
        """Format 1 kept bands by application id alone; they move to (bureau '', platform '', id).

        Copied into a new table that then takes the old one's name (renaming the old table first
        would leave its primary-key index name taken on PostgreSQL).
        """
        create_schema(self._db, tx, (_BANDS % "bands_v2",))
        tx.execute(
            f"INSERT INTO {{bands_v2}} ({_COLUMNS}) SELECT application_id, model_id, key_id, band, "
            "band_label, received_at, '', '' FROM {bands}"
        )
        tx.execute("DROP TABLE {bands}")
        tx.execute(f"ALTER TABLE {{bands_v2}} RENAME TO {self._db.table('bands')}")
        tx.execute(
            "UPDATE {schema_versions} SET version = ? WHERE component = ?", (FORMAT_VERSION, "bank.results")
        )

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
                # The insert decides (the primary key), not a read before it: of two replicas
                # storing one application's band at once, one inserts and the other finds its row.
                cur = tx.execute(
                    f"INSERT INTO {{bands}} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) {_ONCE}",
                    _values(record),
                )
                if cur.rowcount == 1:
                    new += 1
                    continue
                row = tx.one(f"SELECT model_id, band FROM {{bands}} WHERE {_KEY}", record.key)
                if row is not None and (row[0], row[1]) != (record.model_id, record.band):
                    kept.append(record.application_id)
            return new, kept

        return self._db.write(put)

    # ------------------------------------------------------------------ runs and faults
    #
    # Every statement below runs whether or not a check failed (conditional inserts are
    # ``INSERT ... SELECT ... WHERE ?``): the work, and so the time, of a call does not depend on
    # what the bank decrypted. Refusals depend on counts and ids only.

    def begin_runs(
        self,
        bureau_id: str,
        application_ids: Sequence[str],
        faults: Sequence[str],
        limits: RunLimits,
        *,
        platform_id: str = "",
    ) -> None:
        """Count one run of the band protocol for each application, in one transaction.

        ``faults`` holds, per application, the failed check of this run ("" when none). Refuses
        (storing nothing) a suspended bureau (PermissionDeniedError) and an application that has
        had ``limits.max_runs`` runs (PreconditionError).
        """
        if len(faults) != len(application_ids):
            raise InvalidInputError("one fault entry per application")
        now = time.time()

        def run(tx: Tx) -> None:
            self._check_standing(tx, bureau_id)
            for app_id in application_ids:
                row = tx.one(f"SELECT runs FROM {{runs}} WHERE {_KEY}", (bureau_id, platform_id, app_id))
                if row is not None and int(row[0]) >= limits.max_runs:
                    raise PreconditionError(
                        f"application {app_id[:64]!r} has had its {limits.max_runs} runs of the band "
                        "protocol at this bank; it is not run again"
                    )
            for app_id, fault in zip(application_ids, faults, strict=True):
                tx.execute(
                    "INSERT INTO {runs} (bureau_id, platform_id, application_id, runs, faulted, outcome, "
                    "deliveries, updated_at) VALUES (?, ?, ?, 1, ?, '', 0, ?) "
                    "ON CONFLICT (bureau_id, platform_id, application_id) DO UPDATE SET "
                    "runs = {runs}.runs + 1, "
                    "faulted = CASE WHEN excluded.faulted > {runs}.faulted THEN 1 ELSE {runs}.faulted END, "
                    "updated_at = excluded.updated_at",
                    (bureau_id, platform_id, app_id, int(bool(fault)), now),
                )
            for app_id, fault in zip(application_ids, faults, strict=True):
                self._record_fault(tx, bureau_id, platform_id, app_id, fault, now)
            self._count_faults(tx, bureau_id, sum(1 for f in faults if f), limits, now)

        # Committed without waiting for the disk (Database.write's ``sync``): a run only goes on
        # in this process (its OT session and ticket key die with it), and the round or band
        # that ends it is a synced write that flushes this one; lost with the machine, a run that
        # could never finish is not counted. The same with a fault: a fault is found in values
        # decrypted under this bank's key, and a fsync only for faulted runs would tell the
        # bureau, by the time round 1 takes, whether its masked values overflowed. Its record is
        # flushed by this bank's next synced commit (the round's own, when the bureau goes on).
        self._db.write(run, sync=False)

    def complete(self, bureau_id: str, completions: Sequence[Completion], limits: RunLimits) -> Completed:
        """End a run for each application in one transaction: store its band, or record it as
        faulted when this run or an earlier one broke the protocol. The first band stored for an
        application is kept.

        ``new`` and ``kept`` of the result depend only on ids and on earlier completions, never
        on a fault. An application that never had a run here is refused (PreconditionError).
        """
        now = time.time()

        def run(tx: Tx) -> Completed:
            new = 0
            kept: list[str] = []
            held: list[BandRecord | None] = []
            for c in completions:
                app_id = c.record.application_id
                key = (bureau_id, c.record.platform_id, app_id)
                row = tx.one(f"SELECT faulted, outcome FROM {{runs}} WHERE {_KEY}", key)
                if row is None:
                    raise PreconditionError(
                        f"application {app_id[:64]!r} has no run of the band protocol at this bank"
                    )
                faulted = bool(row[0]) or bool(c.fault)
                new += row[1] == ""
                found = tx.one(f"SELECT {_COLUMNS} FROM {{bands}} WHERE {_KEY}", key)
                stored = BandRecord(*found) if found else None
                keep = stored is None and not faulted
                if _kept_over(stored, c):
                    kept.append(app_id)
                record = dataclasses.replace(
                    c.record, bureau_id=bureau_id, received_at=c.record.received_at or now
                )
                cur = tx.execute(
                    f"INSERT INTO {{bands}} ({_COLUMNS}) SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE ? = 1 {_ONCE}",
                    (*_values(record), int(keep)),
                )
                if keep and cur.rowcount != 1:
                    # Another replica stored this application's band since the read above (only
                    # where the isolation level lets that happen): its band is the one kept.
                    found = tx.one(f"SELECT {_COLUMNS} FROM {{bands}} WHERE {_KEY}", key)
                    stored, keep = (BandRecord(*found) if found else None), False
                    if _kept_over(stored, c):
                        kept.append(app_id)
                tx.execute(
                    "UPDATE {runs} SET faulted = ?, outcome = ?, deliveries = deliveries + 1, updated_at = ? "
                    f"WHERE {_KEY}",
                    (int(faulted), "faulted" if faulted else "band", now, *key),
                )
                self._record_fault(tx, bureau_id, key[1], app_id, c.fault, now)
                held.append(stored if stored is not None else record if keep else None)
            self._count_faults(tx, bureau_id, sum(1 for c in completions if c.fault), limits, now)
            return Completed(new, kept, held)

        return self._db.write(run)

    def _check_standing(self, tx: Tx, bureau_id: str) -> None:
        row = tx.one("SELECT suspended, faults FROM {bureaus} WHERE bureau_id = ?", (bureau_id,))
        if row is not None and int(row[0]):
            raise PermissionDeniedError(
                f"bureau {bureau_id[:64]!r} is suspended at this bank after {row[1]} protocol faults; "
                "the bank's operator must run 'blindscore bank trust reset'"
            )

    @staticmethod
    def _record_fault(
        tx: Tx, bureau_id: str, platform_id: str, application_id: str, fault: str, now: float
    ) -> None:
        """The fault record of one application ("" for none: the statement runs, inserting nothing)."""
        tx.execute(
            "INSERT INTO {faults} (bureau_id, platform_id, application_id, reason, at) "
            "SELECT ?, ?, ?, ?, ? WHERE ? = 1",
            (bureau_id, platform_id, application_id, fault, now, int(bool(fault))),
        )

    @staticmethod
    def _count_faults(tx: Tx, bureau_id: str, count: int, limits: RunLimits, now: float) -> None:
        """Add ``count`` faults (0 too) to the bureau's standing, suspending it at the limit."""
        tx.execute(
            "INSERT INTO {bureaus} (bureau_id, faults, suspended, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (bureau_id) DO UPDATE SET faults = {bureaus}.faults + excluded.faults, "
            "suspended = CASE WHEN {bureaus}.faults + excluded.faults >= ? THEN 1 "
            "ELSE {bureaus}.suspended END, "
            "updated_at = excluded.updated_at",
            (bureau_id, count, int(count >= limits.max_faults), now, limits.max_faults),
        )

    def standing(self, bureau_id: str | None = None) -> list[BureauStanding]:
        """Fault counts and suspensions, of one bureau or of all, sorted by bureau id."""
        rows = self._of_bureau("bureau_id, faults, suspended, updated_at", "bureaus", bureau_id, "bureau_id")
        return [BureauStanding(str(r[0]), int(r[1]), bool(r[2]), float(r[3])) for r in rows]

    def reset_standing(self, bureau_id: str) -> bool:
        """An operator's decision: clear a bureau's faults and lift its suspension. False if the
        bank has no record of the bureau."""

        def run(tx: Tx) -> bool:
            cur = tx.execute(
                "UPDATE {bureaus} SET faults = 0, suspended = 0, updated_at = ? WHERE bureau_id = ?",
                (time.time(), bureau_id),
            )
            return bool(cur.rowcount)

        return self._db.write(run)

    def faults(self, bureau_id: str | None = None) -> list[FaultRecord]:
        """The recorded protocol faults, oldest first."""
        rows = self._of_bureau(
            "bureau_id, platform_id, application_id, reason, at", "faults", bureau_id, "at, application_id"
        )
        return [FaultRecord(str(r[0]), str(r[1]), str(r[2]), str(r[3]), float(r[4])) for r in rows]

    def _of_bureau(
        self, columns: str, table: str, bureau_id: str | None, order: str
    ) -> list[tuple[Any, ...]]:
        """``columns`` of ``table``'s rows, of one bureau or of all (None), ordered by ``order``."""
        where, params = ("WHERE bureau_id = ? ", (bureau_id,)) if bureau_id is not None else ("", ())
        return self._db.read(
            lambda tx: tx.all(f"SELECT {columns} FROM {{{table}}} {where}ORDER BY {order}", params)
        )

    def runs(
        self, bureau_id: str, application_id: str, platform_id: str = ""
    ) -> tuple[int, bool, str] | None:
        """(runs, faulted, outcome) of one application's band protocol with one bureau."""
        row = self._db.read(
            lambda tx: tx.one(
                f"SELECT runs, faulted, outcome FROM {{runs}} WHERE {_KEY}",
                (bureau_id, platform_id, application_id),
            )
        )
        return None if row is None else (int(row[0]), bool(row[1]), str(row[2]))

    def put_round(self, bureau_id: str, pending: PendingRound) -> bool:
        """Keep a garbled-circuit round's padded outcome until its pad arrives; True when new (a
        repeat of the same round, by ids, changes nothing). The application must have a run here."""
        key = (bureau_id, pending.platform_id, pending.application_id)

        def run(tx: Tx) -> bool:
            if tx.one(f"SELECT 1 FROM {{runs}} WHERE {_KEY}", key) is None:
                app = pending.application_id[:64]
                raise PreconditionError(f"application {app!r} has no run of the band protocol at this bank")
            cur = tx.execute(
                "INSERT INTO {circuit_rounds} (bureau_id, platform_id, application_id, garbling_id, padded, "
                "model_id, key_id, labels, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (bureau_id, platform_id, application_id, garbling_id) DO NOTHING",
                (*key, pending.garbling_id, pending.padded, pending.model_id, pending.key_id,
                 json.dumps(list(pending.labels)), time.time()),
            )  # fmt: skip
            return cur.rowcount == 1  # a repeat of the round (by ids) keeps the first one

        return self._db.write(run)

    def round(
        self, bureau_id: str, platform_id: str, application_id: str, garbling_id: str
    ) -> PendingRound | None:
        """A round kept by :meth:`put_round`, or None."""
        row = self._db.read(
            lambda tx: tx.one(
                "SELECT padded, model_id, key_id, labels FROM {circuit_rounds} "
                f"WHERE {_KEY} AND garbling_id = ?",
                (bureau_id, platform_id, application_id, garbling_id),
            )
        )
        if row is None:
            return None
        return PendingRound(
            application_id, platform_id, garbling_id, str(row[0]), str(row[1]), str(row[2]),
            tuple(json.loads(row[3])),
        )  # fmt: skip

    def deliveries(self) -> dict[str, int]:
        """Deliveries received per application id (all bureaus): 1 each when every application was
        delivered exactly once; a crash between the bank's commit and the bureau's record of it
        shows up here as 2 (the bank then keeps the first band)."""
        rows = self._db.read(
            lambda tx: tx.all("SELECT application_id, SUM(deliveries) FROM {runs} GROUP BY application_id")
        )
        return {str(r[0]): int(r[1]) for r in rows}

    def get(
        self, application_id: str, platform_id: str | None = None, bureau_id: str | None = None
    ) -> BandRecord | None:
        """The band of an application; ``platform_id`` / ``bureau_id`` narrow it to one platform's
        (and bureau's) application when several share the id (None: any, the earliest first)."""
        where = ["application_id = ?"]
        params: list[object] = [application_id]
        for column, value in (("platform_id", platform_id), ("bureau_id", bureau_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        row = self._db.read(
            lambda tx: tx.one(
                f"SELECT {_COLUMNS} FROM {{bands}} WHERE {' AND '.join(where)} ORDER BY received_at", params
            )
        )
        return BandRecord(*row) if row else None

    def find(self, application_id: str, platform_id: str | None = None) -> list[BandRecord]:
        """Every band stored under ``application_id`` (of one platform, if given), oldest first."""
        where, params = (
            f"application_id = ?{' AND platform_id = ?' if platform_id is not None else ''}",
            ((application_id,) if platform_id is None else (application_id, platform_id)),
        )
        rows = self._db.read(
            lambda tx: tx.all(
                f"SELECT {_COLUMNS} FROM {{bands}} WHERE {where} ORDER BY received_at, bureau_id", params
            )
        )
        return [BandRecord(*r) for r in rows]

    def received_since(self, since: float, limit: int = 1000) -> list[BandRecord]:
        """At most ``limit`` bands stored at or after ``since`` (epoch seconds), oldest first."""
        rows = self._db.read(
            lambda tx: tx.all(
                f"SELECT {_COLUMNS} FROM {{bands}} WHERE received_at >= ? "
                "ORDER BY received_at, bureau_id, platform_id, application_id LIMIT ?",
                (since, limit),
            )
        )
        return [BandRecord(*r) for r in rows]

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


def _values(record: BandRecord) -> tuple[object, ...]:
    """A record's values in _COLUMNS order."""
    return (
        record.application_id,
        record.model_id,
        record.key_id,
        record.band,
        record.band_label,
        record.received_at or time.time(),
        record.platform_id,
        record.bureau_id,
    )
