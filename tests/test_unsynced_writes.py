"""Writes committed without waiting for the disk: Database.write(sync=False), and which writes use it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from blindscore.app.client import PlatformClient
from blindscore.bank_node.store import ResultStore, RunLimits
from blindscore.bureau.applications import ApplicationStore, Submission
from blindscore.bureau.audit import ACCEPTED, AuditLog
from blindscore.bureau.batches import BatchStore, BatchSubmission
from blindscore.bureau.flow import BureauNode
from blindscore.data.german import load_german_credit
from blindscore.infra.db import Database, Tx
from blindscore.protocol.packing import FAULT_SLOT_GUARD

from support import german_application

SYNCED, UNSYNCED = "synced", "unsynced"


def _sqlite_sync_level(tx: Tx) -> int:
    row = tx.one("PRAGMA synchronous")
    assert row is not None
    return int(row[0])


def test_an_unsynced_sqlite_write_commits_with_synchronous_normal_then_full_again(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    db = Database.open(f"sqlite:///{path}", "test")
    try:
        db.write(lambda tx: tx.execute("CREATE TABLE t (v INTEGER)"))

        def insert(value: int) -> Callable[[Tx], int]:
            def fn(tx: Tx) -> int:
                tx.execute("INSERT INTO t VALUES (?)", (value,))
                return _sqlite_sync_level(tx)

            return fn

        assert db.write(insert(1), sync=False) == 1  # NORMAL while it commits
        assert db.write(insert(2)) == 2  # FULL again for the next write
        assert db.write(insert(3), sync=True) == 2

        def fails(tx: Tx) -> None:
            tx.execute("INSERT INTO t VALUES (4)")
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            db.write(fails, sync=False)
        assert db.write(insert(5)) == 2  # set back after a failed write too
        # Committed: another connection sees the unsynced row; the failed one was rolled back.
        with sqlite3.connect(path) as other:
            assert [r[0] for r in other.execute("SELECT v FROM t ORDER BY v")] == [1, 2, 3, 5]
    finally:
        db.close()


def test_an_unsynced_postgresql_write_turns_synchronous_commit_off_for_its_transaction_only(
    pg_schema_url: str,
) -> None:
    db = Database.open(pg_schema_url, "test")
    try:
        db.write(lambda tx: tx.execute("CREATE TABLE {t} (v INTEGER)"))

        def insert(value: int) -> Callable[[Tx], str]:
            def fn(tx: Tx) -> str:
                tx.execute("INSERT INTO {t} VALUES (?)", (value,))
                row = tx.one("SHOW synchronous_commit")
                assert row is not None
                return str(row[0])

            return fn

        assert db.write(insert(1), sync=False) == "off"
        assert db.write(insert(2)) == "on"  # SET LOCAL: the next transaction is synced again
        assert db.read(lambda tx: [r[0] for r in tx.all("SELECT v FROM {t} ORDER BY v")]) == [1, 2]
    finally:
        db.close()


@pytest.fixture
def write_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str, str]]]:
    """Every Database.write of this process as (namespace, the transaction function, synced or not)."""
    calls: list[tuple[str, str, str]] = []
    real = Database.write

    def spy(self: Database, fn: Callable[[Tx], Any], *, sync: bool = True) -> Any:
        calls.append((self.namespace, fn.__qualname__, SYNCED if sync else UNSYNCED))
        return real(self, fn, sync=sync)

    monkeypatch.setattr(Database, "write", spy)
    yield calls


def test_only_writes_a_retry_repairs_go_unsynced_when_an_application_is_scored(
    make_nodes: Any, write_log: list[tuple[str, str, str]]
) -> None:
    """One unary application through platform, bureau and bank: the bureau's DELIVERED and outcome
    audit record, the platform's acknowledgement and the bank's count of a run go unsynced; so does
    the ACCEPTED record, flushed by the stored application's commit right after it. The stored
    application, the ledger's revealed pad, the platform's outbox entry and the bank's kept round
    and band are synced, each before the step that depends on it."""
    nodes = make_nodes("unsynced", platform=True)
    rows, _ = load_german_credit()
    net = type("Net", (), {"bank_id": "bank-a", "key_id": nodes.key_id})()
    write_log.clear()
    with PlatformClient(nodes.platform) as client:
        outcome = client.score(german_application(net, rows, 0, "unsynced", "consent-1"))
    assert outcome.accepted and not outcome.pending
    unsynced = sorted({(ns, fn) for ns, fn, how in write_log if how == UNSYNCED})
    assert unsynced == [
        ("bank", "ResultStore.begin_runs.<locals>.run"),  # the run counted at round 1, no fault
        ("bureau", "AuditLog._chain.<locals>.chain"),  # the call's outcome record
        ("bureau", "WorkStore._finish.<locals>.finish"),  # DELIVERED
        ("platform", "Outbox._finish.<locals>.finish"),  # ACKNOWLEDGED
    ]
    # ACCEPTED shares the applications' database (one SQLite file here): it commits unsynced and
    # the stored application, synced next in that database, flushes it before anything is scored.
    node = nodes.bureau_obj
    assert node.audit is not None and node.audit.database is node.applications.database
    bureau = [(fn, how) for ns, fn, how in write_log if ns == "bureau"]
    assert bureau[:2] == [
        ("AuditLog._chain.<locals>.chain", UNSYNCED),
        ("WorkStore.accept.<locals>.accept", SYNCED),
    ]
    synced = [(ns, fn) for ns, fn, how in write_log if how == SYNCED]
    # The revealed pad before it is sent.
    assert any("reveal_round" in fn for ns, fn in synced if ns == "bureau")
    assert [fn for ns, fn in synced if ns == "platform"][:1] == ["Outbox.add.<locals>.add"]
    # The bank: the run it counts at round 1 unsynced (no fault), the kept round and the band synced.
    bank = [(fn.split(".")[1], how) for ns, fn, how in write_log if ns == "bank"]
    assert bank == [("begin_runs", UNSYNCED), ("put_round", SYNCED), ("complete", SYNCED)]


def test_a_run_is_counted_the_same_way_with_or_without_a_fault(
    tmp_path: Path, write_log: list[tuple[str, str, str]]
) -> None:
    """A fault is found in values the bank decrypted: whether its run is synced (a fsync the bureau
    could time) must not depend on it. Both runs unsynced; the fault's record is there."""
    store = ResultStore(tmp_path / "results.sqlite3")
    try:
        store.begin_runs("bureau-1", ["a", "b"], ["", ""], RunLimits())
        store.begin_runs("bureau-1", ["c", "d"], ["", FAULT_SLOT_GUARD], RunLimits())
        assert [how for _, _, how in write_log] == [UNSYNCED, UNSYNCED]
        assert [f.application_id for f in store.faults("bureau-1")] == ["d"]
    finally:
        store.close()


def test_a_packed_batchs_delivery_stays_synced(tmp_path: Path, write_log: list[tuple[str, str, str]]) -> None:
    """A lost DELIVERED of a batch would meet its spent round on the retry: it is synced; an
    application's is not."""
    apps = ApplicationStore(tmp_path / "bureau.sqlite3")
    batches = BatchStore(apps.database)
    try:
        members = (("x", "consent"), ("y", "consent"))
        batch = BatchSubmission("plat", "b1", "bank", "m", 1, "pk-x", 94, members, 1, b"\x01" * 64)
        batches.accept(batch, next_attempt_at=0)
        apps.accept(
            Submission("plat", "one", "bank", "m", 1, "pk-x", "consent", 1, b"\x01" * 64), next_attempt_at=0
        )
        write_log.clear()
        assert batches.delivered(("plat", "b1"), {"stage_ms": {}})
        assert write_log[-1][2] == SYNCED
        assert apps.delivered(("plat", "one"), {"stage_ms": {}})
        assert write_log[-1][2] == UNSYNCED
        assert batches.counts()["delivered"] == 1 and apps.counts()["delivered"] == 1
    finally:
        batches.close()
        apps.close()


def test_an_accepted_record_in_a_trail_file_of_its_own_stays_synced(
    tmp_path: Path, write_log: list[tuple[str, str, str]]
) -> None:
    """A bureau whose trail is the audit.sqlite3 an earlier version made keeps it there, and its
    ACCEPTED records are synced: no later commit of the applications' file would flush them."""
    data = tmp_path / "bureau"
    data.mkdir()
    AuditLog(data / "audit.sqlite3").close()  # a trail of its own, made before
    node = BureauNode.open(data)
    try:
        assert node.audit is not None and node.audit.database is not node.applications.database
        write_log.clear()
        node.admit("platform-s", "bank-s", "m", 1, [("a-1", "consent-1")])
        assert write_log == [("bureau", "AuditLog._chain.<locals>.chain", SYNCED)]
    finally:
        node.close()
    with AuditLog.in_data_dir(data) as trail:  # the offline tools read the same file
        assert trail.path == data / "audit.sqlite3"
        assert [(r.application_id, r.outcome) for r in trail.records()] == [("a-1", ACCEPTED)]
    assert not any("audit" in name for (name,) in _tables(data / "applications.sqlite3"))


def test_a_new_bureau_keeps_its_trail_in_the_applications_file(tmp_path: Path) -> None:
    data = tmp_path / "bureau"
    node = BureauNode.open(data)
    try:
        node.admit("platform-s", "bank-s", "m", 1, [("a-1", "consent-1")])
    finally:
        node.close()
    assert not (data / "audit.sqlite3").exists()
    assert ("audit",) in _tables(data / "applications.sqlite3")
    with AuditLog.in_data_dir(data) as trail:
        assert [r.application_id for r in trail.records()] == ["a-1"] and trail.verify().ok


def _tables(path: Path) -> list[tuple[str]]:
    with sqlite3.connect(path) as db:
        return list(db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
