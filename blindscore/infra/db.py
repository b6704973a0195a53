"""Durable node state: SQLite or PostgreSQL behind one small interface, and the loop that retries work."""

from __future__ import annotations

import logging
import os
import random
import re
import sqlite3
import string
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import unquote

from blindscore._files import private_dir
from blindscore.errors import (
    BlindscoreError,
    InvalidInputError,
    PeerError,
    PreconditionError,
    UnavailableError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Backend = Literal["sqlite", "postgresql"]

#: Column types that differ between the backends; SQL templates name them as {blob}, {real}, {bigint}.
#: Also the database's clock in seconds since the epoch ({now}: leases are measured on it, so replicas
#: on machines with skewed clocks agree on them), and row locks SQLite does without (its writers
#: are serialised whole): {for_update} and {skip_locked}.
_TYPES: dict[str, dict[str, str]] = {
    "sqlite": {
        "blob": "BLOB",
        "real": "REAL",
        "bigint": "INTEGER",
        "now": "((julianday('now') - 2440587.5) * 86400.0)",
        "for_update": "",
        "skip_locked": "",
    },
    "postgresql": {
        "blob": "BYTEA",
        "real": "DOUBLE PRECISION",
        "bigint": "BIGINT",
        "now": "CAST(extract(epoch FROM clock_timestamp()) AS DOUBLE PRECISION)",
        "for_update": "FOR UPDATE",
        "skip_locked": "FOR UPDATE SKIP LOCKED",
    },
}
_NAMESPACE = re.compile(r"[a-z][a-z0-9]{0,30}")
_SQLITE_PREFIX = "sqlite://"
_PG_PREFIXES = ("postgresql://", "postgres://")
#: How often a PostgreSQL transaction that lost a serialization race, or a dropped connection, is retried.
_PG_ATTEMPTS = 12
_CONNECT_TIMEOUT_S = 10
#: How long a SQLite statement waits for another connection's lock before "database is locked".
_SQLITE_BUSY_TIMEOUT_S = 30.0


#: A URL inside some text: its scheme, then everything up to the next white space.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"]*")
#: A secret in libpq's key=value form, also as a URL query parameter: ``password``, ``sslpassword``
#: (and anything else ending in "password", such as PGPASSWORD=...). A value is a quoted string
#: (backslash escapes, possibly unterminated) or runs to white space or "&".
_KEYWORD_SECRET = re.compile(r"(?i)([A-Za-z_]*password)(\s*=\s*)(?:'(?:[^'\\]|\\.)*(?:'|$)|[^\s&]*)")
#: What starts a libpq connection string (``host=db user=x``): a keyword and "=".
_CONNINFO = re.compile(r"\s*[A-Za-z_]+\s*=")
#: A secret goes where? Password query parameters of a URL, after percent-decoding their names.
_SECRET_PARAMS = frozenset({"password", "sslpassword"})


def redact(text: str) -> str:
    """``text`` with every database password replaced by ***, for logs and error messages.

    Covers ``scheme://user:password@host`` (a password holding "@" or "/" included), password
    query parameters (``?password=``, ``&sslpassword=``, percent-encoded names too) and libpq's
    ``key=value`` form (``password=secret``, ``password='a b'``), wherever they occur in ``text``.
    """
    # Text that is one URL ends at its end, even past an unencoded space.
    text = _redact_url(text) if _URL.match(text) else _URL.sub(lambda m: _redact_url(m.group(0)), text)
    return _KEYWORD_SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)


def _redact_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    query_at = rest.find("?")
    authority = rest if query_at < 0 else rest[:query_at]
    # libpq ends the user information at the first "@"; Python's urllib at the last one. Hide up to
    # the last, so that a password holding "@" or "/" is hidden whichever way it was read.
    at = authority.rfind("@")
    if at >= 0 and ":" in authority[:at]:
        user = authority[:at].split(":", 1)[0]
        authority = f"{user}:***{authority[at:]}"
    if query_at < 0:
        return f"{scheme}://{authority}"
    query, hash_, fragment = rest[query_at + 1 :].partition("#")
    params = []
    for param in query.split("&"):
        name, eq, _value = param.partition("=")
        params.append(f"{name}=***" if eq and unquote(name).strip().lower() in _SECRET_PARAMS else param)
    return f"{scheme}://{authority}?{'&'.join(params)}{hash_}{fragment}"


def parse_target(target: str | Path) -> tuple[Backend, str, Path | None]:
    """(backend, URL, SQLite path or None) of a database named by ``target``, as :meth:`Database.open`
    reads it; refuses, before anything is created, what it cannot read safely."""
    if isinstance(target, Path):
        return "sqlite", f"sqlite:///{target}", target
    if not isinstance(target, str) or not target:
        raise InvalidInputError("a database URL or path must be a non-empty string")
    if target.startswith(_PG_PREFIXES):
        return "postgresql", target, None
    if target in (":memory:", _SQLITE_PREFIX, _SQLITE_PREFIX + "/:memory:"):
        return "sqlite", "sqlite:///:memory:", None
    if target.startswith(_SQLITE_PREFIX + "/"):
        return "sqlite", target, Path(target[len(_SQLITE_PREFIX) + 1 :])
    if _CONNINFO.match(target) or ("=" in target and any(c.isspace() for c in target)):
        # Taken as a file name it would create a SQLite file with the password in its name.
        raise InvalidInputError(
            "a libpq connection string (key=value ...) is not accepted as a database: give a URL, "
            "postgresql://USER@HOST:PORT/DBNAME (keep the password in ~/.pgpass or $PGPASSWORD), "
            "or sqlite:///PATH"
        )
    if "://" in target:
        scheme = target.split("://", 1)[0]
        named = f" {scheme!r}" if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]{0,30}", scheme) else ""
        raise InvalidInputError(
            f"database URL scheme{named} is not supported: use postgresql://... or sqlite:///PATH"
        )
    return "sqlite", f"sqlite:///{target}", Path(target)


class _Names(dict[str, str]):
    """str.format mapping: type names first, any other {name} is a table of this namespace."""

    def __init__(self, types: Mapping[str, str], prefix: str) -> None:
        super().__init__(types)
        self.prefix = prefix

    def __missing__(self, key: str) -> str:
        return self.prefix + key


class Tx:
    """One open transaction (or, for reads, one autocommit session) on a Database."""

    def __init__(self, db: Database, conn: Any) -> None:
        self._db = db
        self._conn = conn

    @property
    def backend(self) -> Backend:
        return self._db.backend

    def execute(self, template: str, params: Sequence[object] | None = None) -> Any:
        """Run one statement written with ``?`` placeholders and {table} names; returns the cursor."""
        sql = self._db.sql(template)
        if params is None:
            return self._conn.execute(sql)
        return self._conn.execute(sql, tuple(params))

    def one(self, template: str, params: Sequence[object] = ()) -> tuple[Any, ...] | None:
        row = self.execute(template, params).fetchone()
        return None if row is None else tuple(row)

    def all(self, template: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.execute(template, params).fetchall()]

    def lock(self, table: str) -> None:
        """Serialise writers of ``table`` for the rest of this transaction. SQLite's BEGIN IMMEDIATE
        already holds the database's write lock; PostgreSQL takes EXCLUSIVE mode (readers go on)."""
        if self.backend == "postgresql":
            self._conn.execute(f"LOCK TABLE {self._db.table(table)} IN EXCLUSIVE MODE")

    def check_version(self, component: str, version: int) -> None:
        """Record ``component``'s format version on first use; refuse a store written by another one."""
        self.execute(
            "CREATE TABLE IF NOT EXISTS {schema_versions} (component TEXT PRIMARY KEY, version INTEGER)"
        )
        row = self.one("SELECT version FROM {schema_versions} WHERE component = ?", (component,))
        if row is None:
            self.execute("INSERT INTO {schema_versions} VALUES (?, ?)", (component, version))
        elif int(row[0]) != version:
            raise PreconditionError(
                f"{component} in {self._db.url} has format {row[0]}; this version reads format {version}"
            )


class Database:
    """A connection to one node's database: SQLite (WAL, synchronous=FULL) or PostgreSQL (psycopg 3).

    Write transactions are serialisable: SQLite takes the write lock up front (BEGIN IMMEDIATE);
    PostgreSQL runs SERIALIZABLE and replays the transaction function when it loses a race, so
    ``fn`` passed to :meth:`write` must only touch the database. One connection, one lock: safe to
    share between threads. On PostgreSQL every table is prefixed with the namespace ("bureau_audit"),
    so the nodes can share one database; a SQLite file belongs to one node and keeps plain names.
    """

    def __init__(self, backend: Backend, namespace: str, url: str, *, path: Path | None = None) -> None:
        if not _NAMESPACE.fullmatch(namespace):
            raise InvalidInputError(f"database namespace {namespace!r} must be a short lowercase word")
        self.backend: Backend = backend
        self.namespace = namespace
        self.url = redact(url)
        self.path = path
        self._conninfo = url
        self._lock = threading.RLock()
        self._conn: Any = None
        self._closed = False
        prefix = "" if backend == "sqlite" else namespace + "_"
        self._names = _Names(_TYPES[backend], prefix)
        self._sql: dict[str, str] = {}
        self._connect()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, target: str | Path, namespace: str) -> Database:
        """``postgresql://...`` opens PostgreSQL; ``sqlite:///relative.db``, ``sqlite:////abs.db``,
        ``:memory:`` or a plain path opens SQLite. A libpq ``key=value`` string is refused."""
        backend, url, path = parse_target(target)
        return cls(backend, namespace, url, path=path)

    def _connect(self) -> None:
        if self.backend == "sqlite":
            self._conn = _sqlite_connect(self.path)
        else:
            self._conn = _pg_connect(self._conninfo, self.url)

    # ------------------------------------------------------------------ SQL
    def table(self, name: str) -> str:
        """The real name of table ``name`` in this database."""
        return self._names.prefix + name

    def sql(self, template: str) -> str:
        """``template`` with {table} and {type} names filled in and placeholders for this backend."""
        cached = self._sql.get(template)
        if cached is None:
            fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
            cached = template.format_map(self._names) if fields else template
            if self.backend == "postgresql":
                if "%" in cached:
                    raise InvalidInputError("SQL templates must not contain '%'")
                cached = cached.replace("?", "%s")
            self._sql[template] = cached
        return cached

    # ------------------------------------------------------------------ transactions
    def write(self, fn: Callable[[Tx], T], *, sync: bool = True) -> T:
        """Run ``fn`` in one serialisable write transaction and return what it returned.

        A storage fault (disk full, I/O error, a database locked too long, read-only, the server
        gone) raises UnavailableError with a message that names no URL, path or password; the
        detail goes to this node's log.

        ``sync=False`` commits without waiting for the disk (SQLite: ``synchronous=NORMAL`` for
        this transaction; PostgreSQL: ``synchronous_commit`` off, which also skips the wait for a
        synchronous standby). The transaction is committed, visible to every reader and survives
        a crash of this process; a crash of the machine or a power cut may lose it, together with
        every later unsynced commit of this database, never an earlier one, and never one that a
        later synced commit of this database has flushed (both journals are written in commit
        order). For writes whose loss a retry repairs with the same outcome, each caller says why.
        """
        if sync:
            return self._guarded(self._write, fn)
        return self._guarded(self._write_unsynced, fn)

    def _write_unsynced(self, fn: Callable[[Tx], T]) -> T:
        if self.backend != "sqlite":

            def unsynced(tx: Tx) -> T:
                tx.execute("SET LOCAL synchronous_commit TO OFF")
                return fn(tx)

            return self._pg(unsynced, write=True)
        with self._lock:
            conn = self._live()
            # The setting is the connection's, read at COMMIT: set outside the transaction, and
            # always set back, so no other write of this connection goes unsynced.
            conn.execute("PRAGMA synchronous=NORMAL")
            try:
                return self._write(fn)
            finally:
                conn.execute("PRAGMA synchronous=FULL")

    def read(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` outside a write transaction (each statement sees the latest committed state).
        Storage faults as in :meth:`write`."""
        return self._guarded(self._read, fn)

    def setup(self, fn: Callable[[Tx], None], what: str) -> None:
        """Create ``what``'s tables with ``fn`` in a write transaction; a database that cannot hold
        them (a foreign file, missing privileges) raises PreconditionError naming it. Only at start,
        for the operator: the message may name the (redacted) database."""

        def locked(tx: Tx) -> None:
            # Processes starting together on an empty database (replicas, workers) would race
            # through CREATE TABLE IF NOT EXISTS in PostgreSQL's catalog: one at a time per
            # namespace (create_schema takes the same lock again, which a session may).
            if self.backend == "postgresql":
                tx.execute("SELECT pg_advisory_xact_lock(?)", (zlib.crc32(self.namespace.encode()),))
            fn(tx)

        try:
            self._write(locked)
        except sqlite3.DatabaseError as exc:
            raise PreconditionError(f"cannot open {what} in {self.path or self.url}: {exc}") from None
        except UnavailableError:
            raise
        except Exception as exc:
            if type(exc).__module__.startswith("psycopg"):
                raise PreconditionError(f"cannot set up {what} in {self.url}: {redact(str(exc))}") from None
            raise

    def _guarded(self, run: Callable[[Callable[[Tx], T]], T], fn: Callable[[Tx], T]) -> T:
        try:
            return run(fn)
        except Exception as exc:
            if isinstance(exc, UnavailableError) or not _storage_fault(exc):
                raise
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: BaseException) -> UnavailableError:
        """The error a caller (and through it a peer) sees for a storage fault; the detail is logged."""
        log.error("%s database %s: %s", self.namespace, self.path or self.url, redact(str(exc).strip()))
        return UnavailableError(f"the {self.namespace}'s database is unavailable; see its log")

    def _write(self, fn: Callable[[Tx], T]) -> T:
        if self.backend != "sqlite":
            return self._pg(fn, write=True)
        with self._lock:
            conn = self._live()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(Tx(self, conn))
                conn.execute("COMMIT")
            except BaseException:
                # Also after a failed COMMIT (disk full, I/O error): a transaction left open would
                # refuse every later BEGIN on this connection.
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error as exc:
                        log.warning("%s database: rollback failed: %s", self.namespace, exc)
                raise
            return result

    def _read(self, fn: Callable[[Tx], T]) -> T:
        if self.backend != "sqlite":
            return self._pg(fn, write=False)
        with self._lock:
            return fn(Tx(self, self._live()))

    def _live(self) -> Any:
        if self._closed:
            raise UnavailableError(f"the {self.namespace}'s database is closed: the node is stopping")
        if self._conn is None:
            try:
                self._connect()
            except (UnavailableError, PreconditionError) as exc:
                raise self._unavailable(exc) from exc
        return self._conn

    def _pg(self, fn: Callable[[Tx], T], *, write: bool) -> T:
        import psycopg
        from psycopg import errors

        pause = 0.005
        for attempt in range(1, _PG_ATTEMPTS + 1):
            with self._lock:
                conn = self._live()
                try:
                    if not write:
                        return fn(Tx(self, conn))
                    with conn.transaction():
                        return fn(Tx(self, conn))
                except (errors.SerializationFailure, errors.DeadlockDetected) as exc:
                    problem: Exception = exc
                except psycopg.OperationalError as exc:
                    if not conn.closed and not conn.broken:
                        raise self._unavailable(exc) from exc
                    # The server went away: reconnect and replay; a committed-but-unacknowledged write
                    # is replayed too, which is why the stores' writes are idempotent. If the server
                    # is still away, the reconnect in _live fails at once with UnavailableError.
                    log.warning("lost the connection to %s (%s); reconnecting", self.url, redact(str(exc)))
                    self._conn = None
                    problem = exc
            if attempt == _PG_ATTEMPTS:
                raise self._unavailable(problem) from problem
            time.sleep(pause * (1 + random.random()))
            pause = min(pause * 2, 0.5)
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __repr__(self) -> str:
        return f"Database({self.url!r}, namespace={self.namespace!r})"

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


#: SQLite result codes (the primary code, the low byte of an extended one) that mean the storage,
#: not the statement, failed: BUSY, LOCKED, NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN,
#: PROTOCOL, NOLFS, NOTADB.
_SQLITE_FAULTS = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 22, 26})


def _storage_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is the database's storage failing (UNAVAILABLE) rather than a bug in a statement."""
    if isinstance(exc, sqlite3.DatabaseError):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:
            return isinstance(exc, sqlite3.OperationalError)
        return (code & 0xFF) in _SQLITE_FAULTS
    if type(exc).__module__.startswith("psycopg"):
        import psycopg
        from psycopg import errors

        # OperationalError: connection lost, server shutting down, disk full, out of memory, too
        # many connections, statement or lock timeouts. A read-only transaction: a standby after a
        # failover.
        return isinstance(exc, psycopg.OperationalError | errors.ReadOnlySqlTransaction)
    return False


def _sqlite_connect(path: Path | None) -> sqlite3.Connection:
    if path is not None:
        private_dir(path.parent)
        try:
            # Owner-only before SQLite opens it: SQLite gives its -wal, -shm and -journal files the
            # mode of the database file.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        except FileExistsError:
            pass
        except OSError as exc:
            raise PreconditionError(f"cannot create database {path}: {exc.strerror}") from None
    conn = sqlite3.connect(
        ":memory:" if path is None else path,
        check_same_thread=False,
        isolation_level=None,
        timeout=_SQLITE_BUSY_TIMEOUT_S,
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a row the caller was told is stored survives a power cut, not only a crash.
        conn.execute("PRAGMA synchronous=FULL")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise PreconditionError(f"cannot open database {path}: {exc}") from None
    return conn


def _pg_connect(conninfo: str, shown: str, **kwargs: Any) -> Any:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - a dependency; only a broken install lacks it
        raise PreconditionError("PostgreSQL support needs psycopg: pip install 'psycopg[binary]'") from None
    try:
        conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S, **kwargs)
    except psycopg.OperationalError as exc:
        raise UnavailableError(f"cannot connect to {shown}: {redact(str(exc).strip())}") from None
    except psycopg.ProgrammingError as exc:
        raise InvalidInputError(f"bad PostgreSQL URL {shown}: {redact(str(exc).strip())}") from None
    conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
    return conn


def create_schema(db: Database, tx: Tx, statements: Sequence[str]) -> None:
    """Run idempotent DDL; on PostgreSQL under an advisory lock, since two processes racing through
    CREATE TABLE IF NOT EXISTS can still collide in the catalog."""
    if db.backend == "postgresql":
        tx.execute("SELECT pg_advisory_xact_lock(?)", (zlib.crc32(db.namespace.encode()),))
    for statement in statements:
        tx.execute(statement, None)


# ---------------------------------------------------------------------- retries

#: A peer's answers after which the same request may well succeed later: retried, not given up on.
RETRYABLE_CODES = frozenset(
    {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "INTERNAL", "UNKNOWN", "CANCELLED"}
)


def retryable(exc: BaseException) -> bool:
    """Whether a failed call to a peer is worth repeating (unreachable, overloaded, crashed)."""
    return isinstance(exc, UnavailableError) or (isinstance(exc, PeerError) and exc.code in RETRYABLE_CODES)


def error_code(exc: BlindscoreError) -> str:
    """The gRPC status name a retryable error stands for."""
    return exc.code if isinstance(exc, PeerError) else "UNAVAILABLE"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: ``base_s`` doubling per attempt up to ``cap_s``, less up to ``jitter`` of it
    at random so that many retries do not arrive in lockstep."""

    base_s: float = 0.5
    cap_s: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not (0 < self.base_s <= self.cap_s) or not 0 <= self.jitter < 1:
            raise InvalidInputError("retry policy needs 0 < base_s <= cap_s and 0 <= jitter < 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1 for the first failure)."""
        step = min(self.cap_s, self.base_s * 2 ** min(max(attempt - 1, 0), 60))
        return step * (1 - self.jitter * random.random())


class RetryLoop:
    """A daemon thread that calls ``step`` whenever it is due. ``step`` does one round of work and
    returns the seconds until more work is due (None: nothing pending; sleep until woken)."""

    def __init__(self, name: str, step: Callable[[], float | None], *, idle_s: float = 30.0) -> None:
        self.name = name
        self._step = step
        self._idle_s = idle_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._wake.clear()
            try:
                wait = self._step()
                failures = 0
            except Exception:
                failures += 1
                log.exception("%s: round failed (%d in a row); retrying", self.name, failures)
                wait = min(30.0, 0.5 * 2 ** min(failures, 6))
            if self._stop.is_set():
                return
            self._wake.wait(self._idle_s if wait is None else max(0.0, min(wait, self._idle_s)))
