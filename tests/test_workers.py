"""``serve --workers N``: N bureau processes on one port and one PostgreSQL, supervised.

The supervisor and its workers are real processes; connections are spread by the kernel
(SO_REUSEPORT), which the test sees in each worker's own metrics endpoint. A worker killed with
SIGKILL is started again; SIGTERM to the supervisor stops every worker. Roles and stores that
cannot be shared are refused before anything starts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from blindscore.bureau.registry import BankRegistry
from blindscore.crypto.dgk import DGKKeyPair
from blindscore.crypto.paillier import KeyPair
from blindscore.errors import InvalidInputError, NotFoundError
from blindscore.infra.transport import open_channel
from blindscore.infra.workers import WorkersError, check_workers
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc

from waiting import wait_for


def _args(**over: object) -> argparse.Namespace:
    base: dict[str, object] = {"workers": 2, "database": "postgresql://u@h/db", "listen": "127.0.0.1:5000"}
    return argparse.Namespace(**{**base, **over})


@pytest.mark.parametrize(
    ("role", "over", "match"),
    [
        ("bank", {}, "the bank's processes cannot share one store yet"),
        ("platform", {"database": None}, "give --database postgresql://"),
        ("bureau", {"database": None}, "give --database postgresql://"),
        ("bureau", {"database": "sqlite:///x.sqlite3"}, "give --database postgresql://"),
        ("bureau", {"listen": "127.0.0.1:0"}, "needs a fixed port"),
        ("bureau", {"workers": 0}, r"--workers must be 1\.\.64"),
        ("bureau", {"workers": 65}, r"--workers must be 1\.\.64"),
    ],
)
def test_workers_are_refused_where_processes_cannot_share(
    role: str, over: dict[str, object], match: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A role without replicas, whichever roles have them by now.
    monkeypatch.setattr("blindscore.infra.lock.SHARING_ROLES", frozenset({"bureau", "platform"}))
    with pytest.raises(WorkersError, match=match):
        check_workers(_args(**over), role)


def test_one_worker_needs_nothing_shared() -> None:
    check_workers(_args(workers=1, database=None, listen="127.0.0.1:0"), "bank")


def test_platform_workers_are_allowed_on_postgresql() -> None:
    check_workers(_args(), "platform")  # its outbox entries are claimed (platform_node/outbox.py)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.update(int(x) for x in text)
    return out


def _calls(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("blindscore_requests_total{") and 'method="GetModelSpec"' in line
    )


Supervisor = tuple[subprocess.Popen[bytes], int, list[int]]


def _adjacent_free_ports() -> int:
    """A port P with P + 1 free as well (the two workers' metrics endpoints)."""
    for _ in range(50):
        (p,) = _free_ports(1)
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise RuntimeError("no two adjacent free ports")


@pytest.fixture
def supervisor(tmp_path: Path, pg_schema_url: str) -> Iterator[Supervisor]:
    (port,) = _free_ports(1)
    metrics = _adjacent_free_ports()
    metrics_ports = [metrics, metrics + 1]
    ready = tmp_path / "ready.json"
    cmd = [
        *(sys.executable, "-m", "blindscore", "--log-level", "WARNING", "bureau", "serve", "--insecure"),
        *("--data-dir", str(tmp_path / "bureau"), "--database", pg_schema_url),
        *("--listen", f"127.0.0.1:{port}", "--workers", "2", "--ready-file", str(ready)),
        *("--metrics-port", str(metrics)),
    ]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, timeout=120, what="the workers to serve")
        assert proc.poll() is None, "the supervisor exited"
        info = json.loads(ready.read_text())
        assert info["role"] == "bureau" and len(info["workers"]) == 2
        yield proc, port, metrics_ports
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


@pytest.mark.postgresql
def test_two_workers_share_the_port_and_are_kept_running(supervisor: Supervisor) -> None:
    proc, port, metrics_ports = supervisor
    workers = _children(proc.pid)
    assert len(workers) == 2
    codes = []
    for _ in range(24):  # a fresh connection each time: the kernel picks a worker per connection
        with open_channel(f"127.0.0.1:{port}") as channel:
            try:
                pb_grpc.BureauStub(channel).GetModelSpec(pb.GetModelSpecRequest(model_id="nope"), timeout=10)
            except grpc.RpcError as exc:
                codes.append(exc.code())
    assert codes == [grpc.StatusCode.NOT_FOUND] * 24
    wait_for(lambda: sum(_calls(m) for m in metrics_ports) == 24, what="24 calls counted")
    assert all(_calls(m) > 0 for m in metrics_ports), "one worker took every connection"

    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: victim not in _children(proc.pid) and len(_children(proc.pid)) == 2,
        timeout=60,
        what="the supervisor to start a new worker",
    )
    with open_channel(f"127.0.0.1:{port}", retry_unavailable=True) as channel:
        wait_for(lambda: _answers(channel), timeout=60, what="the bureau to answer again")

    current = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    left = [w for w in current if Path(f"/proc/{w}").exists()]
    assert not left, f"workers still running after the supervisor stopped: {left}"


def _answers(channel: grpc.Channel) -> bool:
    try:
        pb_grpc.BureauStub(channel).GetModelSpec(pb.GetModelSpecRequest(model_id="nope"), timeout=5)
    except grpc.RpcError as exc:
        return exc.code() == grpc.StatusCode.NOT_FOUND
    return False


def test_processes_on_one_data_directory_see_each_others_bank_registrations(
    tmp_path: Path, paillier_keypair: KeyPair, second_paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    """A bank registers with one bureau process; another on the same data directory (a replica, a
    worker) finds it, and its next key, on first use instead of answering "no bank"."""
    a, b = BankRegistry(tmp_path / "banks"), BankRegistry(tmp_path / "banks")
    dgk = dgk_keypair.public_key
    with pytest.raises(NotFoundError, match="no bank registered under id 'bank-a'"):
        b.get("bank-a")
    first = a.register(
        "bank-a", "127.0.0.1:6001,127.0.0.1:6002", paillier_keypair.public_key, dgk_keypair.public_key
    )
    assert b.get("bank-a", first).key(first)[0] == paillier_keypair.public_key
    assert b.get("bank-a").address == "127.0.0.1:6001,127.0.0.1:6002"
    second = a.register(
        "bank-a", "127.0.0.1:6001", second_paillier_keypair.public_key, dgk_keypair.public_key
    )
    assert b.get("bank-a", second).key(second)[0] == second_paillier_keypair.public_key
    with pytest.raises(NotFoundError, match="has no registered key 'nope'"):
        b.get("bank-a", "nope").key("nope")
    for bad in ("127.0.0.1:6001,", "127.0.0.1:6001,no-port", "x" * 2000 + ":1"):
        with pytest.raises(InvalidInputError, match="must look like host:port, or a comma-separated list"):
            a.register("bank-b", bad, paillier_keypair.public_key, dgk)


@pytest.mark.postgresql
def test_workers_end_with_a_killed_supervisor(supervisor: Supervisor) -> None:
    """kill -9 of the supervisor: its workers get SIGTERM from the kernel (PR_SET_PDEATHSIG) and
    stop, so a restarted supervisor never shares the port with orphans."""
    proc, port, _ = supervisor
    workers = _children(proc.pid)
    assert len(workers) == 2
    proc.kill()
    proc.wait(10)
    wait_for(
        lambda: not any(Path(f"/proc/{w}").exists() for w in workers), timeout=30, what="the workers to end"
    )
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", port))


@pytest.mark.postgresql
def test_stores_set_up_at_once_on_a_fresh_database(pg_url: str) -> None:
    """N workers of every role open their stores at the same moment on an empty database: the
    schema (its version table included) is created once, under one advisory lock, never racing in
    PostgreSQL's catalog ("duplicate key value violates unique constraint pg_type_typname...")."""
    import uuid

    import psycopg

    from blindscore.bank_node.store import ResultStore
    from blindscore.bureau.applications import ApplicationStore
    from blindscore.bureau.audit import AuditLog
    from blindscore.bureau.batches import BatchStore
    from blindscore.platform_node.outbox import Outbox

    def outbox(url: str) -> Outbox:
        return Outbox(url, b"\x07" * 32)

    openers: list[Callable[[str], Any]] = [ResultStore.open, ApplicationStore, BatchStore, AuditLog, outbox]
    for opener in openers:
        schema = f"race_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        url = f"{pg_url}?options=-csearch_path%3D{schema}"
        errors = _open_at_once(opener, url, 6)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
        assert errors == [], errors


def _open_at_once(opener: Callable[[str], Any], url: str, n: int) -> list[Exception]:
    """Open ``n`` stores on ``url`` from ``n`` threads released together; the errors they raised."""
    import threading

    start = threading.Barrier(n)
    errors: list[Exception] = []
    stores: list[Any] = []

    def open_store() -> None:
        start.wait()
        try:
            stores.append(opener(url))
        except Exception as exc:  # collected: the caller's assertion names it
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for store in stores:
        store.close()
    return errors


@pytest.mark.slow
@pytest.mark.postgresql
def test_every_node_as_two_workers_scores_unary_and_streamed(tmp_path: Path, pg_schema_url: str) -> None:
    """Bureau, bank and platform each as `serve --workers 2` on one PostgreSQL (six worker
    processes): unary calls and a stream are all accepted, with bands equal to the plaintext model's
    at the bank, each delivered once."""
    from blindscore.app.bench import BENCH_MODEL_ID, synthetic_model, synthetic_rows
    from blindscore.app.client import PlatformClient, score_applications
    from blindscore.app.localnet import LocalNetwork
    from blindscore.bank_node.store import ResultStore
    from blindscore.protocol.application import Application

    model = synthetic_model(6)
    rows = synthetic_rows(6, 30)
    with LocalNetwork(tmp_path, models={BENCH_MODEL_ID: model}, database=pg_schema_url, workers=2) as net:
        for role in ("bureau", "bank", "platform"):
            assert len(net.nodes[role].info["workers"]) == 2, role
        apps = [
            Application(f"w-{i}", net.bank_id, BENCH_MODEL_ID, net.key_id, "consent", row)
            for i, row in enumerate(rows)
        ]
        with PlatformClient(net.platform_address, security=net.client_security) as client:
            unary = [client.score(a) for a in apps[:10]]
        streamed = score_applications(net.platform_address, apps[10:], security=net.client_security)
        assert all(o.accepted for o in [*unary, *streamed]), [o.error for o in [*unary, *streamed]]
        store = ResultStore.open(pg_schema_url)
        try:
            wait_for(lambda: len(store.all()) == 30, timeout=60, what="30 bands at the bank")
            bands = {r.application_id: r.band_label for r in store.all()}
            deliveries = store.deliveries()
        finally:
            store.close()
    expected = {f"w-{i}": model.policy.labels[model.band(row)] for i, row in enumerate(rows)}
    assert bands == expected
    assert set(deliveries.values()) == {1}
