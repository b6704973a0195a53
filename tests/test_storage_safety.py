"""Storage safety: one live node process per role and store, owner-only files, storage faults that
answer UNAVAILABLE without naming the database, and database URLs redacted in every form."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest

import blindscore.infra.db
from blindscore.bureau.applications import Submission
from blindscore.bureau.flow import BureauNode
from blindscore.bureau.server import start_bureau_server
from blindscore.crypto.dgk import DGKKeyPair
from blindscore.crypto.paillier import KeyPair
from blindscore.data.german import DEFAULT_MODEL_ID, default_model, load_german_credit
from blindscore.errors import InvalidInputError
from blindscore.infra.db import Database, redact
from blindscore.infra.transport import open_channel
from blindscore.platform_node.outbox import Outbox
from blindscore.protocol.application import EncryptedApplication
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc
from blindscore.wire import serde

SECRET = "hunter2"
TIMEOUT_S = 30.0

#: Each node's serve command, started on its own (no peers needed to come up).
SERVE = {
    "bureau": ["bureau", "serve"],
    "bank": ["bank", "serve", "--bureau", ""],
    "platform": ["platform", "serve", "--bureau", "127.0.0.1:1"],
}


# ------------------------------------------------------------------------------------ helpers


@dataclass
class Node:
    process: subprocess.Popen[bytes]
    ready: Path
    log: Path

    def wait_ready(self) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT_S
        while not self.ready.exists():
            assert self.process.poll() is None, f"node exited {self.process.returncode}:\n{self.text()}"
            assert time.monotonic() < deadline, f"node not ready in {TIMEOUT_S:.0f} s:\n{self.text()}"
            time.sleep(0.05)
        info: dict[str, Any] = json.loads(self.ready.read_text())
        return info

    def wait_exit(self) -> int:
        try:
            return self.process.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"node still running after {TIMEOUT_S:.0f} s:\n{self.text()}") from None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait_exit()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # SIGKILL: no handler runs, the kernel drops the process's locks
        self.process.wait()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """Start ``blindscore <args> --insecure`` as a real process, logging to its own file."""
    started: list[Node] = []

    def start(*args: str, cwd: Path | None = None) -> Node:
        n = len(started)
        ready, log = tmp_path / f"node{n}.ready.json", tmp_path / f"node{n}.log"
        cmd = [sys.executable, "-m", "blindscore", "--log-level", "WARNING", *args, "--insecure",
               "--listen", "127.0.0.1:0", "--ready-file", str(ready)]  # fmt: skip
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd
            )
        node = Node(proc, ready, log)
        started.append(node)
        return node

    yield start
    for node in started:
        node.kill()


def modes(*roots: Path) -> dict[str, int]:
    """Permission bits of each root and of everything under it."""
    found = {}
    for root in roots:
        found[str(root)] = stat.S_IMODE(root.lstat().st_mode)
        for path in root.rglob("*"):
            found[str(path)] = stat.S_IMODE(path.lstat().st_mode)
    return found


def loose(found: dict[str, int]) -> dict[str, str]:
    """What is not owner-only: directories other than 0700, files other than 0600."""
    return {
        p: oct(m)
        for p, m in found.items()
        if m != (0o700 if Path(p).is_dir() and not Path(p).is_symlink() else 0o600)
    }


def with_password(url: str, password: str = SECRET, *, netloc: str | None = None) -> str:
    """``url`` with a password (trust authentication ignores it) and optionally another host:port."""
    parts = urlsplit(url)
    host = netloc or f"{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{password}@{host}"))


def encrypted_application(key: KeyPair, app_id: str) -> pb.EncryptedApplication:
    rows, _ = load_german_credit()
    public = key.public_key
    ciphertexts = tuple(public.encrypt(v) for v in default_model().spec.encode_row(rows[0]))
    app = EncryptedApplication(
        app_id, "platform-s", "bank-s", DEFAULT_MODEL_ID, public.key_id, f"consent-{app_id}", ciphertexts
    )
    return serde.encrypted_application_to_proto(app, public)


@contextlib.contextmanager
def serving_bureau(
    data_dir: Path, database: str | None, paillier: KeyPair, dgk: DGKKeyPair
) -> Iterator[tuple[BureauNode, Any]]:
    """An in-process bureau on port 0 that knows bank-s (at an address nobody answers)."""
    bureau = BureauNode.open(data_dir, database)
    server, port, channels = start_bureau_server(bureau, "127.0.0.1:0")
    channel = open_channel(f"127.0.0.1:{port}")
    try:
        bureau.banks.register("bank-s", "127.0.0.1:1", paillier.public_key, dgk.public_key)
        yield bureau, pb_grpc.BureauStub(channel)
    finally:
        channel.close()
        server.stop(None).wait()
        channels.close()
        bureau.close()


def rpc_error(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details() or ""


class Proxy:
    """A TCP forwarder to a PostgreSQL server that can be cut: the database "goes away"."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() above
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


# ------------------------------------------------------------------- one process per store


@pytest.mark.parametrize("role", ["bureau", "bank", "platform"])
def test_second_serve_on_the_same_data_dir_is_refused(
    role: str, tmp_path: Path, spawn: Callable[..., Node]
) -> None:
    data = tmp_path / role
    args = [*SERVE[role], "--data-dir", str(data)]
    first = spawn(*args)
    first.wait_ready()

    second = spawn(*args)
    assert second.wait_exit() != 0
    assert (
        f"another {role} process (pid {first.process.pid}) holds the data directory {data}" in second.text()
    )
    assert not second.ready.exists() and first.process.poll() is None  # the first one serves on

    first.kill()  # a crash, not a shutdown: the kernel releases the lock
    third = spawn(*args)
    third.wait_ready()
    assert third.stop() == 0


def test_second_bureau_on_the_same_sqlite_database_is_refused(
    tmp_path: Path, spawn: Callable[..., Node]
) -> None:
    """Two bureaus with their own data directories but one SQLite file: the second is refused,
    and told that replicas need PostgreSQL."""
    database = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    first = spawn("bureau", "serve", "--data-dir", str(tmp_path / "a"), "--database", database)
    first.wait_ready()

    second = spawn("bureau", "serve", "--data-dir", str(tmp_path / "b"), "--database", database)
    assert second.wait_exit() != 0
    held = (
        f"another bureau process (pid {first.process.pid}) holds the database {tmp_path / 'shared.sqlite3'}"
    )
    assert held in second.text() and "bureau replicas need PostgreSQL" in second.text()

    first.kill()
    third = spawn("bureau", "serve", "--data-dir", str(tmp_path / "b"), "--database", database)
    third.wait_ready()
    assert third.stop() == 0


@pytest.mark.postgresql
def test_replicas_share_a_postgresql_database_and_a_platform_needs_the_same_secret(
    request: pytest.FixtureRequest, tmp_path: Path, spawn: Callable[..., Node]
) -> None:
    """Two bureaus, two banks and two platforms on one PostgreSQL database (each pair on one data
    directory) all serve (replicas: docs/deployment.md); a bureau or a bank on SQLite in a
    replica's data directory is refused (it would want the directory alone), and so is a platform
    on the shared outbox with another HMAC secret (its own data directory)."""
    database = with_password(request.getfixturevalue("pg_schema_url"))
    first = spawn("bureau", "serve", "--data-dir", str(tmp_path / "a"), "--database", database)
    first.wait_ready()
    second = spawn("bureau", "serve", "--data-dir", str(tmp_path / "a"), "--database", database)
    second.wait_ready()
    assert first.process.poll() is None and second.process.poll() is None

    alone = spawn("bureau", "serve", "--data-dir", str(tmp_path / "a"))
    assert alone.wait_exit() != 0
    assert f"another bureau process holds the data directory {tmp_path / 'a'}" in alone.text()

    bank = spawn(*SERVE["bank"], "--data-dir", str(tmp_path / "bank1"), "--database", database)
    bank.wait_ready()
    bank2 = spawn(*SERVE["bank"], "--data-dir", str(tmp_path / "bank1"), "--database", database)
    bank2.wait_ready()
    assert bank.process.poll() is None and bank2.process.poll() is None
    assert json.loads(bank.ready.read_text())["key_id"] == json.loads(bank2.ready.read_text())["key_id"]
    bank_alone = spawn(*SERVE["bank"], "--data-dir", str(tmp_path / "bank1"))
    assert bank_alone.wait_exit() != 0
    assert "bank replicas need PostgreSQL" in bank_alone.text()

    platform = spawn(*SERVE["platform"], "--data-dir", str(tmp_path / "p1"), "--database", database)
    platform.wait_ready()
    platform2 = spawn(*SERVE["platform"], "--data-dir", str(tmp_path / "p1"), "--database", database)
    platform2.wait_ready()
    stranger = spawn(*SERVE["platform"], "--data-dir", str(tmp_path / "p2"), "--database", database)
    assert stranger.wait_exit() != 0
    assert "made with another HMAC secret" in stranger.text()
    assert SECRET not in stranger.text()
    for node in (platform2, platform, bank2, bank, first, second):
        assert node.stop() == 0


# ---------------------------------------------------------------------------- file modes


def test_in_process_nodes_create_owner_only_files(
    tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    """Explicit modes, not the umask: under the usual 022 everything made is still 0600 / 0700."""
    os.umask(0o022)  # conftest restores the session's umask afterwards
    bureau = BureauNode.open(tmp_path / "bureau")
    outbox = Outbox.open(tmp_path / "platform")
    try:
        bureau.banks.register("bank-s", "127.0.0.1:1", paillier_keypair.public_key, dgk_keypair.public_key)
        assert bureau.models.put("second", default_model()).version == 1
        bureau.applications.accept(
            Submission("platform-s", "app-1", "bank-s", DEFAULT_MODEL_ID, 1, "pk-1", "consent", 1, b"\x01"),
            next_attempt_at=0.0,
        )
        bureau.record({"platform_id": "platform-s", "application_id": "app-1"}, "OK", 1.0)
        found = modes(tmp_path / "bureau", tmp_path / "platform")  # while open: -wal and -shm exist
    finally:
        outbox.close()
        bureau.close()

    names = {Path(p).name for p in found}
    assert {"v1.json", "bank-s.json", "applications.sqlite3", "outbox.sqlite3"} <= names
    assert "audit.sqlite3" not in names  # the trail lives in applications.sqlite3
    assert {"outbox.secret.json", "applications.sqlite3-wal", "outbox.sqlite3-shm"} <= names
    assert loose(found) == {}


def test_serve_processes_create_owner_only_files_and_tighten_loose_ones(
    tmp_path: Path, spawn: Callable[..., Node]
) -> None:
    bureau_dir = tmp_path / "bureau"
    bureau_dir.mkdir(mode=0o755)
    bureau_dir.chmod(0o755)  # a data directory from before: world-readable
    (bureau_dir / "applications.sqlite3").touch(mode=0o644)
    (bureau_dir / "applications.sqlite3").chmod(0o644)
    (bureau_dir / "notes.txt").write_text("not the bureau's")
    (bureau_dir / "notes.txt").chmod(0o644)

    bureau = spawn("bureau", "serve", "--data-dir", str(bureau_dir))
    address = bureau.wait_ready()["address"]
    bank = spawn("bank", "serve", "--data-dir", str(tmp_path / "bank"), "--bureau", address)
    platform = spawn("platform", "serve", "--data-dir", str(tmp_path / "platform"), "--bureau", address)
    bank.wait_ready()  # after the bank registered with the bureau: banks/bank-1.json exists
    platform.wait_ready()
    for node in (platform, bank, bureau):
        assert node.stop() == 0, node.text()

    assert "now owner-only" in bureau.text() and f"{bureau_dir / 'applications.sqlite3'}" in bureau.text()
    found = modes(tmp_path / "bureau", tmp_path / "bank", tmp_path / "platform")
    assert found.pop(str(bureau_dir / "notes.txt")) == 0o644  # not the node's: left alone
    names = {Path(p).name for p in found}
    assert {"v1.json", "bank-1.json", "applications.sqlite3", "paillier_secret.json", "ring.json"} <= names
    assert {"results.sqlite3", "outbox.secret.json", "bureau.lock", "bank.lock", "platform.lock"} <= names
    assert loose(found) == {}
    assert {stat.S_IMODE(n.ready.stat().st_mode) for n in (bureau, bank, platform)} == {0o600}


# --------------------------------------------------------------------------- storage faults


def test_sqlite_fault_answers_unavailable_without_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    """Another process holds the write lock past the busy timeout: "database is locked"."""
    monkeypatch.setattr(blindscore.infra.db, "_SQLITE_BUSY_TIMEOUT_S", 0.2)
    with serving_bureau(tmp_path / "bureau", None, paillier_keypair, dgk_keypair) as (bureau, stub):
        other = sqlite3.connect(tmp_path / "bureau" / "applications.sqlite3", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        msg = encrypted_application(paillier_keypair, "app-1")
        code, details = rpc_error(lambda: stub.SubmitApplication(msg, timeout=TIMEOUT_S))
        assert code == grpc.StatusCode.UNAVAILABLE
        # The ACCEPTED record, the first write, shares the locked file: refused, and nothing stored.
        assert details == "the audit trail cannot be written; nothing was scored"
        assert bureau.applications.get("platform-s", "app-1") is None
        other.execute("ROLLBACK")
        other.close()
        receipt = stub.SubmitApplication(msg, timeout=TIMEOUT_S)  # the fault passed: accepted now
        assert receipt.accepted and receipt.pending  # pending: nobody answers at the bank's address


@pytest.mark.postgresql
def test_postgresql_gone_answers_unavailable_without_the_url(
    tmp_path: Path, pg_schema_url: str, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    parts = urlsplit(pg_schema_url)
    assert parts.hostname and parts.port
    proxy = Proxy(parts.hostname, parts.port)
    url = with_password(pg_schema_url, netloc=f"127.0.0.1:{proxy.port}")
    try:
        with serving_bureau(tmp_path / "bureau", url, paillier_keypair, dgk_keypair) as (_, stub):
            proxy.cut()  # the server is gone: the connection drops and reconnecting is refused
            msg = encrypted_application(paillier_keypair, "app-1")
            code, details = rpc_error(lambda: stub.SubmitApplication(msg, timeout=TIMEOUT_S))
    finally:
        proxy.cut()
    assert code == grpc.StatusCode.UNAVAILABLE
    assert details == "the bureau's database is unavailable; see its log"
    for leak in ("postgres", str(proxy.port), "127.0.0.1", SECRET, "blindscore_test", "search_path"):
        assert leak not in details


# ---------------------------------------------------------------------------- database URLs


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://app:hunter2@db:5432/x", "postgresql://app:***@db:5432/x"),
        ("postgres://:hunter2@db/x", "postgres://:***@db/x"),
        ("postgresql://app:hun@ter2/x@db:5432/x", "postgresql://app:***@db:5432/x"),  # "@", "/" in it
        ("postgresql://app@db/x?password=hunter2", "postgresql://app@db/x?password=***"),
        (
            "postgresql://app@db/x?sslmode=require&sslpassword=hunter2&application_name=a",
            "postgresql://app@db/x?sslmode=require&sslpassword=***&application_name=a",
        ),
        ("postgresql://app@db/x?pass%77ord=hunter2", "postgresql://app@db/x?pass%77ord=***"),
        ("host=db user=app password=hunter2 dbname=x", "host=db user=app password=*** dbname=x"),
        ("host=db password = 'hun ter\\'2' dbname=x", "host=db password = *** dbname=x"),
        (
            "cannot connect to postgresql://app:hunter2@db/x: PGPASSWORD=hunter2 failed",
            "cannot connect to postgresql://app:***@db/x: PGPASSWORD=*** failed",
        ),
        (
            "postgresql://app@db:5432/x?passfile=/etc/pgpass",
            "postgresql://app@db:5432/x?passfile=/etc/pgpass",
        ),
        ("sqlite:////var/lib/blindscore/a.sqlite3", "sqlite:////var/lib/blindscore/a.sqlite3"),
    ],
)
def test_redact_every_form(text: str, shown: str) -> None:
    assert redact(text) == shown
    assert "ter2" not in redact(text)


@pytest.mark.postgresql
def test_a_database_shows_only_the_redacted_url(pg_schema_url: str) -> None:
    url = f"{pg_schema_url}&password={SECRET}"  # trust authentication: any password will do
    with Database.open(url, "bank") as db:
        assert db.read(lambda tx: tx.one("SELECT 1")) == (1,)
        assert SECRET not in db.url and SECRET not in repr(db) and "password=***" in db.url


def test_libpq_string_is_refused_and_creates_nothing(tmp_path: Path, spawn: Callable[..., Node]) -> None:
    conninfo = f"host=127.0.0.1 port=5432 user=app password={SECRET} dbname=x"
    for target in (conninfo, "dbname=x", f"password={SECRET}"):
        with pytest.raises(InvalidInputError, match="libpq connection string") as info:
            Database.open(target, "bureau")
        assert SECRET not in str(info.value)

    work = tmp_path / "cwd"
    work.mkdir()
    node = spawn("bureau", "serve", "--data-dir", str(work / "data"), "--database", conninfo, cwd=work)
    assert node.wait_exit() == 2
    assert "give a URL, postgresql://USER@HOST:PORT/DBNAME" in node.text() and SECRET not in node.text()
    assert list(work.iterdir()) == []  # no data directory, no SQLite file named after the password
