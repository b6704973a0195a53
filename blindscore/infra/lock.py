"""One live node process per role and store, and owner-only permissions on the node's data directory.

A second bureau on the same applications database would run every pending application a second
time; a second bank or platform would answer from and write to the same state. So each ``serve``
process first takes an exclusive lock that the operating system (or the database server) drops
when the process ends, however it ends (kill -9 included):

* ``flock`` on ``DATA_DIR/<role>.lock`` (and on ``DB.<role>.lock`` beside a SQLite file given
  with ``--database``);
* on PostgreSQL, a session-level advisory lock on the role's tables (namespace and schema), held
  on a connection of its own for the life of the process.

This module is the one place that decides "one process per store". A role in
:data:`SHARING_ROLES` (the bureau: its replicas claim rows with leases, bureau/claims.py; the bank:
its store writes are idempotent per application and its protocol state stays in one replica) shares
its store when it is on PostgreSQL: its processes take the same locks in *shared* mode (``flock``
LOCK_SH, ``pg_try_advisory_lock_shared``), so any number of its replicas run together while a
process that wants the store alone (an older version, or one on SQLite in the same data
directory) is still refused, and refuses them. On SQLite every role keeps one process per store.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import time
import zlib
from pathlib import Path
from typing import Any

from blindscore._files import private_dir
from blindscore.errors import PreconditionError
from blindscore.infra.db import _pg_connect, parse_target, redact

log = logging.getLogger(__name__)

#: What each role keeps in its data directory: these (and the lock file) are tightened at start.
#: Only the node's own entries, never the whole directory: --data-dir may name a shared place.
NODE_FILES: dict[str, tuple[str, ...]] = {
    "bureau": ("models", "banks", "applications.sqlite3", "audit.sqlite3"),
    "bank": ("keys", "results.sqlite3"),
    "platform": ("outbox.sqlite3", "outbox.secret.json"),
}
_SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-journal")
#: First key of the two-key advisory lock: "a blindscore node process". Disjoint from the one-key
#: locks create_schema takes (PostgreSQL keeps the one-key and two-key spaces apart).
_PG_LOCK_CLASS = zlib.crc32(b"blindscore.serve") - 2**31
#: A crashed holder's session ends when the server sees its socket close, which can take a moment:
#: a busy lock is tried again for this long before the start is refused.
PG_LOCK_WAIT_S = 3.0

#: Roles whose processes may share one PostgreSQL store (replicas). The bureau's replicas claim
#: rows with leases (bureau/claims.py); the bank's share its key ring and result store, every
#: write of which is idempotent per application (bank_node/store.py), while OT sessions and
#: tickets stay in the replica that issued them (docs/deployment.md); the platform's claim their
#: outbox entries (platform_node/outbox.py).
SHARING_ROLES: frozenset[str] = frozenset({"bureau", "bank", "platform"})

#: Locks this process holds; kept here so that they live as long as the process.
_HELD: list[StoreLock] = []


class StoreLock:
    """The locks one node process holds on its stores; :meth:`release` lets them go."""

    def __init__(self, role: str) -> None:
        self.role = role
        self._files: list[int] = []
        self._pg: Any = None

    def release(self) -> None:
        if self._pg is not None:
            with contextlib.suppress(Exception):
                self._pg.close()
            self._pg = None
        for fd in self._files:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._files.clear()
        with contextlib.suppress(ValueError):
            _HELD.remove(self)

    def _lock_file(self, path: Path, what: str, *, shared: bool = False) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = "" if shared else _read_pid(fd)
            os.close(fd)
            raise PreconditionError(
                f"another {self.role} process{holder} holds {what}: {self._one_per_store()}"
            ) from None
        except OSError:
            os.close(fd)
            raise
        self._files.append(fd)
        if not shared:  # the pid of the one holder, for the message above
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def _one_per_store(self) -> str:
        text = f"one {self.role} per store; stop it first, or give this one another --data-dir / --database"
        if self.role in SHARING_ROLES:
            text += (
                f" ({self.role} replicas need PostgreSQL: run every one of them with the same "
                "--database postgresql://...)"
            )
        return text

    def _lock_postgresql(self, url: str, *, shared: bool = False) -> None:
        shown = redact(url)
        conn = _pg_connect(url, shown, application_name=f"blindscore {self.role} lock")
        try:
            row = conn.execute("SELECT current_database(), coalesce(current_schema(), '')").fetchone()
            database, schema = str(row[0]), str(row[1])
            key = zlib.crc32(f"{schema}.{self.role}".encode()) - 2**31
            deadline = time.monotonic() + PG_LOCK_WAIT_S
            take = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
            while not conn.execute(f"SELECT {take}(%s::int4, %s::int4)", (_PG_LOCK_CLASS, key)).fetchone()[0]:
                if time.monotonic() >= deadline:
                    alone = "holds" if shared else "holds or shares"
                    raise PreconditionError(
                        f"another {self.role} process {alone} the {self.role} tables of database "
                        f"{database!r} (schema {schema!r}) at {shown}: one {self.role} per database"
                        + (" unless all are replicas of this version" if shared else "")
                        + "; stop it first"
                    )
                time.sleep(0.1)
        except BaseException:
            conn.close()
            raise
        self._pg = conn


def hold_store(
    role: str, data_dir: Path, database: str | None = None, *, shared: bool | None = None
) -> StoreLock:
    """Lock ``role``'s stores for this process, or refuse with PreconditionError naming the store.

    Call it before the node opens its stores. ``database`` is checked first (a libpq string is
    refused before anything is created); then the data directory is made (0700) and locked, the
    node's files in it that group or others could read are tightened (with a warning), and a
    SQLite file or PostgreSQL tables named by ``database`` are locked too. ``shared`` (default:
    whether ``role`` is in SHARING_ROLES) takes the locks in shared mode when ``database`` is
    PostgreSQL, for replicas; on SQLite it has no effect.
    """
    backend, url, sqlite_path = parse_target(database) if database else ("sqlite", "", None)
    sharing = (role in SHARING_ROLES if shared is None else shared) and backend == "postgresql"
    held = StoreLock(role)
    try:
        private_dir(data_dir)
        held._lock_file(data_dir / f"{role}.lock", f"the data directory {data_dir}", shared=sharing)
        tighten(data_dir, role)
        if backend == "postgresql":
            held._lock_postgresql(url, shared=sharing)
        elif sqlite_path is not None:
            private_dir(sqlite_path.parent)
            lock_path = sqlite_path.with_name(f"{sqlite_path.name}.{role}.lock")
            held._lock_file(lock_path, f"the database {sqlite_path}")
    except BaseException:
        held.release()
        raise
    _HELD.append(held)
    return held


def tighten(data_dir: Path, role: str) -> list[Path]:
    """Take group and other permissions off ``data_dir`` and ``role``'s files and directories in it
    (0644 -> 0600, 0755 -> 0700); logs a WARNING naming them and returns them.

    Secret key files are left alone: they are refused on load when others can read them
    (blindscore.crypto.keyfile), which is the stricter answer. Symbolic links are not followed.
    """
    names = [f"{role}.lock"]
    for name in NODE_FILES.get(role, ()):
        names += [name + side for side in _SQLITE_SIDE_FILES] if name.endswith(".sqlite3") else [name]
    loose = [p for p in [data_dir, *_entries(data_dir, names)] if _tighten_one(p)]
    if loose:
        shown = ", ".join(str(p) for p in loose[:10]) + (
            f" and {len(loose) - 10} more" if len(loose) > 10 else ""
        )
        log.warning(
            "%d file(s) or directory(ies) of the %s were open to group or others; now owner-only: %s",
            len(loose),
            role,
            shown,
        )
    return loose


def _entries(data_dir: Path, names: list[str]) -> list[Path]:
    found = []
    for name in names:
        top = data_dir / name
        if not os.path.lexists(top):
            continue
        found.append(top)
        if top.is_dir() and not top.is_symlink():
            for root, dirs, files in os.walk(top):
                found += [Path(root, n) for n in sorted(dirs) + sorted(files)]
    return found


def _tighten_one(path: Path) -> bool:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode) or not mode & (stat.S_IRWXG | stat.S_IRWXO) or "secret" in path.name:
        return False
    if mode & stat.S_ISVTX or st.st_uid != os.geteuid():
        # A shared directory (/tmp-like, or someone else's): not ours to close.
        log.warning("%s is open to group or others and not this node's alone; left as it is", path)
        return False
    try:
        os.chmod(path, mode & stat.S_IRWXU)
    except OSError as exc:
        log.warning("%s is open to group or others and could not be tightened: %s", path, exc.strerror)
        return False
    return True


def _read_pid(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode().strip())
        return f" (pid {pid})"
    return ""


def _after_fork_in_child() -> None:
    # A forked child must not keep its parent's locks alive after the parent dies: drop the child's
    # references. Closing an inherited flock descriptor leaves the parent's lock in place; the
    # PostgreSQL socket is pointed at /dev/null rather than closed, so that nothing in the child
    # can end the parent's session by talking on it.
    for held in _HELD:
        for fd in held._files:
            with contextlib.suppress(OSError):
                os.close(fd)
        held._files = []
        if held._pg is not None:
            with contextlib.suppress(Exception):
                devnull = os.open(os.devnull, os.O_RDWR)
                os.dup2(devnull, held._pg.fileno())
                os.close(devnull)
            held._pg = None
    _HELD.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
