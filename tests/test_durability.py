"""Exactly-once and recovery on SQLite and PostgreSQL: the stores directly, then real gRPC nodes over
mutual TLS that are stopped and restarted while applications are in flight.

A restart here is a new node object on the same data directory (or database) and the same port:
what a restarted process starts from, without its memory (OT sessions, ticket keys, worker
threads). Killed processes are tests/test_crash.py's."""

from __future__ import annotations

import multiprocessing
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import grpc
import pytest

from blindscore.app.client import Outcome, score_applications
from blindscore.bank_node.flow import BankNode
from blindscore.bank_node.server import register_with_bureau, start_bank_server
from blindscore.bank_node.store import BandRecord, Completion, ResultStore, RunLimits
from blindscore.bureau.applications import (
    DELIVERED,
    FAILED,
    PENDING,
    ApplicationStore,
    StoredApplication,
    Submission,
)
from blindscore.bureau.audit import AuditLog
from blindscore.bureau.bank_link import BankChannels
from blindscore.bureau.flow import BureauNode
from blindscore.bureau.server import start_bureau_server
from blindscore.crypto.dgk import DGKKeyPair
from blindscore.crypto.paillier import KeyPair, PublicKey
from blindscore.data.german import DEFAULT_MODEL_ID, default_model, load_german_credit
from blindscore.errors import AlreadyExistsError, InvalidInputError, PreconditionError, UnavailableError
from blindscore.infra.certs import init_pki
from blindscore.infra.db import Database, RetryPolicy, redact
from blindscore.infra.status import status_of
from blindscore.infra.transport import TransportSecurity, open_channel
from blindscore.platform_node.bureau_link import GrpcBureauLink
from blindscore.platform_node.flow import PlatformNode, Receipt
from blindscore.platform_node.outbox import ACKNOWLEDGED, REFUSED, SENT, Outbox, OutboxEntry
from blindscore.platform_node.server import start_platform_server
from blindscore.protocol.application import Application, EncryptedApplication
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc
from blindscore.wire import serde

from waiting import WAIT_S, wait_for

FAST = RetryPolicy(base_s=0.05, cap_s=0.3, jitter=0.2)
T = TypeVar("T")


@dataclass
class Backend:
    """Where the nodes keep state: SQLite files in their data directories, or one PostgreSQL schema."""

    name: str
    tmp: Path
    url: str | None = None

    def target(self, name: str) -> Path | str:
        return self.url if self.url else self.tmp / f"{name}.sqlite3"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", tmp_path)
    return Backend("postgresql", tmp_path, request.getfixturevalue("pg_schema_url"))


def is_state(get: Callable[[str], Any], app_id: str, state: str) -> bool:
    row = get(app_id)
    return row is not None and row.state == state


def submission(app_id: str = "app-1", payload: bytes = b"\x01" * 64, **overrides: Any) -> Submission:
    fields: dict[str, Any] = {
        "platform_id": "platform-d",
        "application_id": app_id,
        "bank_id": "bank-d",
        "model_id": DEFAULT_MODEL_ID,
        "model_version": 1,
        "key_id": "pk-" + "a" * 32,
        "consent_reference": f"consent-{app_id}",
        "width": 2,
        "ciphertexts": payload,
    }
    fields.update(overrides)
    return Submission(**fields)


# ----------------------------------------------------------------------------------- the stores


def test_database_urls_pick_the_backend(tmp_path: Path) -> None:
    with Database.open(f"sqlite:///{tmp_path}/a.db", "bureau") as db:
        assert (db.backend, db.path, db.table("audit")) == ("sqlite", tmp_path / "a.db", "audit")
    with Database.open(str(tmp_path / "b.db"), "bank") as db:
        assert db.backend == "sqlite" and db.path == tmp_path / "b.db"
    with Database.open(":memory:", "bank") as db:
        assert db.path is None and db.read(lambda tx: tx.one("SELECT 1")) == (1,)
    with pytest.raises(InvalidInputError, match="mysql"):
        Database.open("mysql://x@localhost/db", "bank")
    with pytest.raises(InvalidInputError, match="namespace"):
        Database.open(":memory:", "Bad Name")


@pytest.mark.postgresql
def test_postgresql_url_is_redacted_and_tables_prefixed(pg_schema_url: str) -> None:
    with Database.open(pg_schema_url, "bank") as db:
        assert db.backend == "postgresql" and db.table("bands") == "bank_bands" and db.path is None
        assert db.sql("SELECT * FROM {bands} WHERE a = ?") == "SELECT * FROM bank_bands WHERE a = %s"
    assert (
        redact("postgresql://someone:hunter2@db.example:5432/x")
        == "postgresql://someone:***@db.example:5432/x"
    )


def test_result_store_is_idempotent_and_durable(backend: Backend) -> None:
    record = BandRecord("app-1", "m", "pk-1", 2, "C", time.time())
    store = ResultStore(backend.target("bank"))
    try:
        assert store.put(record) is True
        assert store.put(record) is False  # the same band again: a no-op, not an error
        with pytest.raises(AlreadyExistsError, match="different band"):
            store.put(BandRecord("app-1", "m", "pk-1", 3, "D", time.time()))
        assert store.count() == 1
    finally:
        store.close()
    reopened = ResultStore(backend.target("bank"))
    try:
        got = reopened.get("app-1")
        assert got is not None and (got.band, got.band_label, got.key_id) == (2, "C", "pk-1")
        assert [r.application_id for r in reopened.all()] == ["app-1"]
        assert reopened.get("missing") is None
    finally:
        reopened.close()


def test_application_store_accepts_exactly_once(backend: Backend) -> None:
    store = ApplicationStore(backend.target("applications"))
    try:
        first, created = store.accept(submission(), next_attempt_at=0.0)
        assert created and first.state == PENDING and first.ciphertexts == b"\x01" * 64
        again, created = store.accept(submission(), next_attempt_at=0.0)
        assert not created and again == first
        with pytest.raises(AlreadyExistsError, match="different payload"):
            store.accept(submission(payload=b"\x02" * 64), next_attempt_at=0.0)
        for changed in ({"consent_reference": "other"}, {"model_version": 2}, {"bank_id": "bank-x"}):
            with pytest.raises(
                AlreadyExistsError,
                match=r"^application 'app-1' of platform 'platform-d' was already submitted with a",
            ):
                store.accept(submission(**changed), next_attempt_at=0.0)
        stored = store.get("platform-d", "app-1")
        assert stored is not None and stored.digest == first.digest and stored.ciphertexts == b"\x01" * 64
        # The key is (platform, application id): another platform may use the same id.
        _, created = store.accept(submission(platform_id="platform-e"), next_attempt_at=0.0)
        assert created
    finally:
        store.close()


def test_pending_applications_survive_a_reopen(backend: Backend) -> None:
    store = ApplicationStore(backend.target("applications"))
    try:
        for name in ("a", "b", "c", "d"):
            store.accept(submission(name), next_attempt_at=100.0)
        assert store.due(99.0, 10) == [] and store.next_due() == 100.0
        assert store.retry_later(("platform-d", "a"), 1, 50.0, "UNAVAILABLE", "bank unavailable")
        assert store.delivered(("platform-d", "b"), {"stage_ms": {"bureau.evaluate": 1.5}, "wire_bytes": 7})
        assert store.failed(("platform-d", "c"), "INVALID_ARGUMENT", "cryptographic check failed")
        # A finished application never goes back: a late duplicate attempt cannot overwrite it.
        assert not store.failed(("platform-d", "b"), "INTERNAL", "late")
        assert not store.delivered(("platform-d", "c"), {})
    finally:
        store.close()
    store = ApplicationStore(backend.target("applications"))
    try:
        assert store.counts() == {PENDING: 2, DELIVERED: 1, FAILED: 1}
        assert [s.application_id for s in store.due(60.0, 10)] == ["a"]
        a = store.get("platform-d", "a")
        assert a is not None and (a.attempts, a.error_code) == (1, "UNAVAILABLE")
        b = store.get("platform-d", "b")
        assert b is not None and b.state == DELIVERED and b.ciphertexts is None
        assert b.receipt_fields() == {"stage_ms": {"bureau.evaluate": 1.5}, "wire_bytes": 7}
        c = store.get("platform-d", "c")
        assert c is not None and c.state == FAILED and c.ciphertexts is None
        assert status_of(c.failure()) == (grpc.StatusCode.INVALID_ARGUMENT, "cryptographic check failed")
        assert store.resume_all(1.0) == 2  # a restart makes every pending application due now
        assert sorted(s.application_id for s in store.due(1.0, 10)) == ["a", "d"]
    finally:
        store.close()


def test_bureau_tables_share_one_database(backend: Backend) -> None:
    """BureauNode.open(database=...) keeps audit and applications in one database (prefixed on PostgreSQL)."""
    url = backend.url or f"sqlite:///{backend.tmp / 'bureau.db'}"
    bureau = BureauNode.open(backend.tmp / "bureau", url)
    try:
        assert bureau.audit is not None
        bureau.audit.append(**audit_fields(1))
        bureau.applications.accept(submission(), next_attempt_at=0.0)
    finally:
        bureau.close()
    reopened = BureauNode.open(backend.tmp / "bureau", url)
    try:
        assert reopened.audit is not None and reopened.audit.verify().records == 1
        assert reopened.applications.counts()[PENDING] == 1
    finally:
        reopened.close()
    assert not (backend.tmp / "bureau" / "audit.sqlite3").exists()


def audit_fields(i: int, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "platform_id": "platform-d",
        "bank_id": "bank-d",
        "application_id": f"app-{i}",
        "consent_reference": f"consent-{i}",
        "model_id": DEFAULT_MODEL_ID,
        "model_version": "v1",
        "outcome": "OK",
        "duration_ms": 1.0 + i,
    }
    fields.update(overrides)
    return fields


def test_audit_chain_on_each_backend(backend: Backend) -> None:
    with AuditLog(backend.target("audit")) as audit:
        records = [audit.append(**audit_fields(i)) for i in range(1, 6)]
        assert audit.head() == (5, records[-1].hash)
    with AuditLog(backend.target("audit")) as audit:
        nxt = audit.append(**audit_fields(6))
        assert (nxt.seq, nxt.prev_hash) == (6, records[-1].hash)
        assert list(audit.records(limit=5)) == records
        report = audit.verify(expected_head=(5, records[-1].hash))
        assert (report.ok, report.records) == (True, 6)


def append_from_process(target: str, worker: int, count: int, barrier: Any) -> None:
    """Runs in a spawned child: its own connection to the same audit trail."""
    with AuditLog(Path(target) if "://" not in target else target) as audit:
        barrier.wait()
        for i in range(count):
            audit.append(**audit_fields(i, application_id=f"p{worker}-{i}"))


def test_concurrent_writers_keep_one_chain(backend: Backend) -> None:
    """Two threads with their own connections and two processes append at once: one unforked chain."""
    target = backend.target("audit")
    per_writer = 25
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [
        ctx.Process(target=append_from_process, args=(str(target), w, per_writer, barrier)) for w in range(2)
    ]
    logs = [AuditLog(target), AuditLog(target)]
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            barrier.wait(timeout=60)
            for i in range(per_writer):
                logs[t].append(**audit_fields(i, application_id=f"t{t}-{i}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
    try:
        for p in procs:
            p.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for p in procs:
            p.join(60)
        assert errors == [] and [p.exitcode for p in procs] == [0, 0]
        total = 4 * per_writer
        report = logs[0].verify()
        assert (report.ok, report.records) == (True, total), report.reason
        records = list(logs[1].records())
        assert [r.seq for r in records] == list(range(1, total + 1))
        assert sorted(r.application_id for r in records) == sorted(
            f"{who}-{i}" for who in ("t0", "t1", "p0", "p1") for i in range(per_writer)
        )
    finally:
        for log_ in logs:
            log_.close()


def test_cli_reads_the_audit_trail_and_results_from_a_database(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    from blindscore.app.cli import main

    audit_url = backend.url or f"sqlite:///{backend.tmp / 'bureau.db'}"
    bank_url = backend.url or f"sqlite:///{backend.tmp / 'bank.db'}"
    with AuditLog(audit_url) as audit:
        for i in range(1, 4):
            audit.append(**audit_fields(i))
        seq, head = audit.head()
    store = ResultStore(bank_url)
    store.put(BandRecord("cli-1", DEFAULT_MODEL_ID, "pk-1", 1, "B", 1700000000.0))
    store.close()
    capsys.readouterr()
    assert main(["bureau", "audit", "verify", "--database", audit_url]) == 0
    assert f"audit trail intact: 3 records; head {seq}:{head}" in capsys.readouterr().out
    assert main(["bureau", "audit", "list", "--database", audit_url]) == 0
    assert capsys.readouterr().out.count("platform-d,bank-d,app-") == 3
    assert main(["bank", "results", "--database", bank_url]) == 0
    assert ",cli-1,german-credit-lr,1,B,2023-11-14T22:13:20," in capsys.readouterr().out


@pytest.mark.postgresql
def test_postgresql_audit_refuses_edits_and_verify_catches_them(pg_schema_url: str) -> None:
    import psycopg

    with AuditLog(pg_schema_url) as audit:
        for i in range(1, 4):
            audit.append(**audit_fields(i))
        with psycopg.connect(pg_schema_url, autocommit=True) as conn:
            for sql in (
                "UPDATE bureau_audit SET outcome = 'INTERNAL' WHERE seq = 2",
                "DELETE FROM bureau_audit WHERE seq = 3",
                "TRUNCATE bureau_audit",
            ):
                with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                    conn.execute(sql)
            assert audit.verify().ok
            conn.execute("DROP TRIGGER bureau_audit_no_change ON bureau_audit")
            conn.execute("UPDATE bureau_audit SET outcome = 'INTERNAL' WHERE seq = 2")
        report = audit.verify()
        assert (report.ok, report.first_bad_seq) == (False, 2)


def test_outbox_keeps_the_payload_and_refuses_other_features(backend: Backend) -> None:
    rows, _ = load_german_credit()
    app = Application("o-1", "bank-d", DEFAULT_MODEL_ID, "pk-1", "consent-o-1", rows[0])
    other = Application("o-1", "bank-d", DEFAULT_MODEL_ID, "pk-1", "consent-o-1", rows[1])
    data_dir = backend.tmp / "platform"
    outbox = Outbox.open(data_dir, backend.url)
    try:
        secret = data_dir / "outbox.secret.json"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        fp = outbox.fingerprint(app)
        assert fp != outbox.fingerprint(other) and "duration" not in repr(outbox)
        assert outbox.find("o-1", fp) is None
        entry = outbox.add("o-1", fp, "bank-d", "pk-1", b"payload-1", due_at=10.0)
        assert entry.state == SENT
        assert outbox.add("o-1", fp, "bank-d", "pk-1", b"payload-2", due_at=0) == entry  # first one kept
        with pytest.raises(AlreadyExistsError, match="different features"):
            outbox.find("o-1", outbox.fingerprint(other))
        with pytest.raises(
            AlreadyExistsError,
            match=r"^application 'o-1' was already submitted with different features; a new application",
        ):
            outbox.add("o-1", outbox.fingerprint(other), "bank-d", "pk-1", b"x", due_at=0)
        assert [e.application_id for e in outbox.due(10.0, 5)] == ["o-1"] and outbox.due(9.0, 5) == []
    finally:
        outbox.close()
    reopened = Outbox.open(data_dir, backend.url)
    try:
        assert reopened.fingerprint(app) == fp  # the secret persists with the data directory
        found = reopened.find("o-1", fp)
        assert found is not None and found.payload == b"payload-1"
        assert reopened.resume_all(1.0) == 1 and reopened.next_due() == 1.0
        reopened.acknowledged("o-1")
        assert reopened.due(2.0, 5) == [] and reopened.counts()[ACKNOWLEDGED] == 1
        # An id the bureau refused for good is free again for other features.
        reopened.add("o-2", fp, "bank-d", "pk-1", b"p", due_at=0)
        reopened.refused("o-2", "INVALID_ARGUMENT: bad")
        replaced = reopened.add("o-2", reopened.fingerprint(other), "bank-d", "pk-1", b"q", due_at=0)
        assert (replaced.payload, replaced.state) == (b"q", SENT)
        assert reopened.counts() == {SENT: 1, ACKNOWLEDGED: 1, REFUSED: 0}
    finally:
        reopened.close()
    # The same plaintext under the same secret, and only under it, gives the same fingerprint.
    (data_dir / "outbox.secret.json").chmod(0o644)
    with pytest.raises(PreconditionError, match="chmod 600"):
        Outbox.open(data_dir, backend.url)


# ----------------------------------------------------------------------------------- real nodes


BUREAU = "bureau-d"
PARTIES = [("bureau", BUREAU), ("bank", "bank-d"), ("platform", "platform-d"), ("platform", "platform-e")]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The certificates of this module's nodes (and of a second platform), made once."""
    directory = tmp_path_factory.mktemp("durability-pki")
    init_pki(directory, PARTIES)
    return directory


@dataclass
class Nodes:
    """Bank, bureau and platform in-process on loopback over mutual TLS, each stoppable and
    restartable: a restart opens a new node object on the same data directory (or database)."""

    backend: Backend
    paillier: KeyPair
    dgk: DGKKeyPair
    pki: Path
    bank: BankNode | None = None
    bank_server: grpc.Server | None = None
    bank_port: int = 0
    bureau: BureauNode | None = None
    bureau_server: grpc.Server | None = None
    bureau_channels: BankChannels | None = None
    bureau_addr: str = ""
    platform: PlatformNode | None = None
    platform_server: grpc.Server | None = None
    platform_addr: str = ""
    channels: list[grpc.Channel] = field(default_factory=list)
    deliveries: list[str] = field(default_factory=list)  # application ids completed at the bank's store
    dialled: int = 0

    @property
    def key(self) -> PublicKey:
        return self.paillier.public_key

    def creds(self, party: str) -> TransportSecurity:
        return TransportSecurity.from_pki(self.pki, party)

    def start_bank(self) -> None:
        """A new bank node on the bank's result store (its data directory or database), served on
        the port the bureau has registered (a free one the first time)."""
        assert self.bank is None, "stop the bank first"
        self.bank = BankNode("bank-d", self.paillier, self.dgk, ResultStore(self.bank_target()))
        store = self.bank.store
        real = store.complete

        # Counted where the bank stores, for both paths (DeliverBand and PackedFinish end here),
        # every completion, including one whose band put_many would skip as already stored; over
        # every bank node of the test, so across restarts.
        def counting(bureau_id: str, completions: Any, limits: RunLimits) -> Any:
            done = real(bureau_id, completions, limits)
            self.deliveries += [c.record.application_id for c in completions]
            return done

        store.complete = counting  # type: ignore[method-assign]
        self.bank_server, self.bank_port = start_bank_server(
            self.bank, f"127.0.0.1:{self.bank_port}", share_timings=True, security=self.creds("bank-d")
        )

    def bank_target(self) -> Path | str:
        return self.backend.url or self.backend.tmp / "bank" / "results.sqlite3"

    def stop_bank(self) -> None:
        """Stop serving and close the bank's store; nothing of the node object is used again."""
        assert self.bank_server is not None and self.bank is not None
        self.bank_server.stop(None).wait()
        self.bank_server = None
        self.bank.store.close()
        self.bank = None

    def restart_bank(self) -> None:
        self.stop_bank()
        self.start_bank()

    def _bank_store(self, read: Callable[[ResultStore], T]) -> T:
        """``read`` the bank's results: from the running node's store, or, while the bank is
        stopped, from its data directory as an operator would."""
        if self.bank is not None:
            return read(self.bank.store)
        store = ResultStore(self.bank_target())
        try:
            return read(store)
        finally:
            store.close()

    def start_bureau(self) -> None:
        self.bureau = BureauNode.open(self.backend.tmp / "bureau", self.backend.url, retry=FAST)
        self.bureau_server, port, self.bureau_channels = start_bureau_server(
            self.bureau, "127.0.0.1:0", share_timings=True, security=self.creds(BUREAU)
        )
        self.bureau_addr = f"127.0.0.1:{port}"
        assert self.bank is not None
        register_with_bureau(
            self.bank, self.bureau_addr, f"127.0.0.1:{self.bank_port}", security=self.creds("bank-d")
        )

    def stop_bureau(self) -> None:
        assert self.bureau is not None and self.bureau_server is not None and self.bureau_channels
        self.bureau_server.stop(None).wait()
        self.bureau_channels.close()
        self.bureau.close()
        self.bureau_server = None

    def start_platform(self) -> None:
        to_bureau = self.creds("platform-d").expecting("bureau", BUREAU)
        channel = open_channel(self.bureau_addr, security=to_bureau)
        self.channels.append(channel)
        outbox = Outbox.open(self.backend.tmp / "platform", self.backend.url)
        address = self.bureau_addr

        def dial() -> tuple[GrpcBureauLink, Callable[[], None]]:
            fresh = open_channel(address, security=to_bureau)
            self.dialled += 1
            return GrpcBureauLink(fresh), fresh.close

        self.platform = PlatformNode("platform-d", GrpcBureauLink(channel), outbox, retry=FAST, dial=dial)
        self.platform_server, port = start_platform_server(
            self.platform, "127.0.0.1:0", security=self.creds("platform-d")
        )
        self.platform_addr = f"127.0.0.1:{port}"

    def stop_platform(self) -> None:
        assert self.platform is not None and self.platform_server is not None
        self.platform_server.stop(None).wait()
        self.platform.close()
        self.platform_server = None

    def stub(self, kind: str, party: str = "platform-d") -> Any:
        """A client of the bureau or the platform node, calling with ``party``'s certificate."""
        address = {"bureau": self.bureau_addr, "platform": self.platform_addr}[kind]
        channel = open_channel(address, security=self.creds(party).expecting(kind))
        self.channels.append(channel)
        return getattr(pb_grpc, kind.capitalize() + "Stub")(channel)

    def bank_has(self, app_id: str) -> BandRecord | None:
        return self._bank_store(lambda store: store.get(app_id))

    def at_bureau(self, app_id: str) -> StoredApplication | None:
        assert self.bureau is not None
        return self.bureau.applications.get("platform-d", app_id)

    def not_once(self, app_ids: list[str]) -> dict[str, tuple[int, int]]:
        """The applications not completed exactly once at the bank: (completions counted at its
        store, deliveries in its own run ledger) for each."""
        ledger = self._bank_store(ResultStore.deliveries)
        counts = {a: (self.deliveries.count(a), ledger.get(a, 0)) for a in app_ids}
        return {a: n for a, n in counts.items() if n != (1, 1)}

    def in_outbox(self, app_id: str) -> OutboxEntry | None:
        assert self.platform is not None
        return self.platform.outbox.get(app_id)

    def close(self) -> None:
        if self.platform_server is not None:
            self.stop_platform()
        if self.bureau_server is not None:
            self.stop_bureau()
        if self.bank_server is not None:
            self.stop_bank()
        if self.bank is not None:
            self.bank.store.close()
        for channel in self.channels:
            channel.close()


@pytest.fixture
def nodes(backend: Backend, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, pki: Path) -> Iterator[Nodes]:
    net = Nodes(backend, paillier_keypair, dgk_keypair, pki)
    try:
        net.start_bank()
        net.start_bureau()
        net.start_platform()
        yield net
    finally:
        net.close()


def german(i: int, app_id: str, key_id: str, version: str = "") -> Application:
    rows, _ = load_german_credit()
    return Application(app_id, "bank-d", DEFAULT_MODEL_ID, key_id, f"consent-{app_id}", rows[i], version)


def encrypted(nodes: Nodes, i: int, app_id: str) -> pb.EncryptedApplication:
    """What a platform would submit for row ``i``, freshly encrypted (new randomness every call)."""
    rows, _ = load_german_credit()
    ciphertexts = tuple(nodes.key.encrypt(v) for v in default_model().spec.encode_row(rows[i]))
    app = EncryptedApplication(
        app_id, "platform-d", "bank-d", DEFAULT_MODEL_ID, nodes.key.key_id, f"consent-{app_id}", ciphertexts
    )
    return serde.encrypted_application_to_proto(app, nodes.key)


def expected_band(i: int) -> int:
    rows, _ = load_german_credit()
    return default_model().band(rows[i])


def rpc_code(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details() or ""


def test_resubmission_returns_the_same_outcome(nodes: Nodes) -> None:
    bureau = nodes.stub("bureau")
    msg = encrypted(nodes, 3, "same-1")
    first = bureau.SubmitApplication(msg, timeout=30)
    assert first.accepted and not first.pending and first.model_version == "1"
    assert "bureau.evaluate" in first.stage_ms  # this harness runs its nodes with share_timings
    band = nodes.bank_has("same-1")
    assert band is not None and band.band == expected_band(3)
    assert band.bureau_id == BUREAU  # the bank took it from the bureau's certificate: mutual TLS
    again = bureau.SubmitApplication(msg, timeout=30)
    assert again == first  # the stored receipt, stage times included: nothing was scored twice
    assert nodes.deliveries.count("same-1") == 1
    code, text = rpc_code(lambda: bureau.SubmitApplication(encrypted(nodes, 3, "same-1"), timeout=30))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "different payload" in text
    assert nodes.bureau is not None and nodes.bureau.audit is not None
    outcomes = [r.outcome for r in nodes.bureau.audit.records() if r.application_id == "same-1"]
    # One record per call, and the first call's ACCEPTED record before it was stored and scored.
    assert outcomes == ["ACCEPTED", "OK", "OK", "ALREADY_EXISTS"]

    # Through the platform: re-encryption would give a new payload, the outbox resends the old one.
    platform = nodes.stub("platform")
    request = serde.application_to_proto(german(5, "plat-1", nodes.key.key_id))
    one = platform.ScoreApplication(request, timeout=30)
    two = platform.ScoreApplication(request, timeout=30)
    assert one.accepted and two.accepted and not two.pending and two.model_version == one.model_version
    assert nodes.deliveries.count("plat-1") == 1
    changed = serde.application_to_proto(german(6, "plat-1", nodes.key.key_id))
    code, text = rpc_code(lambda: platform.ScoreApplication(changed, timeout=30))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "different features" in text
    record = nodes.bank_has("plat-1")
    assert record is not None and record.band == expected_band(5)


def test_bank_down_application_pending_then_delivered(nodes: Nodes) -> None:
    nodes.stop_bank()
    platform = nodes.stub("platform")
    request = serde.application_to_proto(german(7, "down-1", nodes.key.key_id))
    receipt = platform.ScoreApplication(request, timeout=30)
    assert receipt.accepted and receipt.pending and receipt.model_version == "1"
    stored = nodes.at_bureau("down-1")
    assert stored is not None and stored.state == PENDING and stored.ciphertexts is not None
    assert platform.ScoreApplication(request, timeout=30).pending  # still pending: same answer

    def retried_twice() -> StoredApplication | None:  # the worker keeps retrying with backoff meanwhile
        row = nodes.at_bureau("down-1")
        return row if row is not None and row.attempts >= 2 else None

    retried = wait_for(retried_twice, what="a second attempt at the stopped bank")
    assert retried.state == PENDING
    assert nodes.bank_has("down-1") is None

    nodes.start_bank()  # same port, as the bureau has it registered
    record = wait_for(lambda: nodes.bank_has("down-1"), what="the retried band at the bank")
    assert record.band == expected_band(7)
    wait_for(
        partial(is_state, nodes.at_bureau, "down-1", DELIVERED), what="the bureau to record the delivery"
    )
    done = nodes.at_bureau("down-1")
    assert done is not None and done.ciphertexts is None  # delivered: digest and receipt kept, no data
    final = platform.ScoreApplication(request, timeout=30)
    assert final.accepted and not final.pending and final.model_version == "1"
    assert nodes.deliveries.count("down-1") == 1


def test_bureau_restart_resumes_pending_work_exactly_once(nodes: Nodes) -> None:
    nodes.stop_bank()
    bureau = nodes.stub("bureau")
    msgs = {f"resume-{i}": encrypted(nodes, 10 + i, f"resume-{i}") for i in range(2)}
    for msg in msgs.values():
        receipt = bureau.SubmitApplication(msg, timeout=30)
        assert receipt.accepted and receipt.pending
    nodes.stop_bureau()  # the bureau goes away with two applications pending (its worker joined)
    nodes.start_bank()
    # Nobody is left to deliver them: the stopped bureau's worker has ended and its stores are closed.
    assert all(nodes.bank_has(app_id) is None for app_id in msgs) and nodes.deliveries == []

    nodes.start_bureau()  # a new bureau node on the same data directory / database
    for i, app_id in enumerate(msgs):
        record = wait_for(partial(nodes.bank_has, app_id), what=f"{app_id} at the bank")
        assert record.band == expected_band(10 + i)
    for app_id in msgs:
        wait_for(partial(is_state, nodes.at_bureau, app_id, DELIVERED), what=f"{app_id} delivered")
    assert sorted(nodes.deliveries) == sorted(msgs)  # exactly one delivery each
    again = nodes.stub("bureau").SubmitApplication(msgs["resume-0"], timeout=30)
    assert again.accepted and not again.pending
    assert nodes.deliveries.count("resume-0") == 1


def test_a_stopping_bureau_hands_back_the_rows_it_claimed_and_did_not_run(
    nodes: Nodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry worker claims a round of due rows, then runs them one at a time. Stopped between
    two, it hands the rest back at once, so a bureau restarted on the same data takes them without
    waiting out the 30 s lease (the deadline below is shorter)."""
    nodes.stop_bank()
    bureau = nodes.stub("bureau")
    msgs = {f"handback-{i}": encrypted(nodes, 20 + i, f"handback-{i}") for i in range(3)}
    for msg in msgs.values():
        assert bureau.SubmitApplication(msg, timeout=30).pending
    node = nodes.bureau
    assert node is not None
    node.stop_delivery()  # all three pending and due, none claimed
    claims = {a: cast(StoredApplication, nodes.at_bureau(a)).claim for a in msgs}
    real_run = node._run

    def paused(row: Any, link_for: Any) -> Any:  # the round's first row runs once the stop began
        wait_for(lambda: node._worker is None, what="the bureau to stop its worker")
        return real_run(row, link_for)

    monkeypatch.setattr(node, "_run", paused)
    channels = BankChannels(nodes.creds(BUREAU))
    node.start_delivery(channels.link, reset=channels.close)

    def claimed_all() -> bool:  # one round claimed the three rows
        return all(cast(StoredApplication, nodes.at_bureau(a)).claim == n + 1 for a, n in claims.items())

    wait_for(claimed_all, what="the worker to claim the three rows")
    nodes.stop_bureau()  # the first row runs (the bank is down), the other two are handed back
    nodes.start_bank()
    nodes.start_bureau()
    for i, app_id in enumerate(msgs):
        record = wait_for(partial(nodes.bank_has, app_id), timeout=15, what=f"{app_id} at the bank")
        assert record.band == expected_band(20 + i)
    assert nodes.not_once(list(msgs)) == {}


def test_platform_restart_resends_what_the_bureau_never_answered(nodes: Nodes) -> None:
    platform = nodes.stub("platform")
    # Encrypting needs the model spec and the bank key from the bureau: the platform caches both
    # (a pinned version's spec for good), so it can still encrypt once the bureau is gone.
    warm = serde.application_to_proto(german(1, "warm-1", nodes.key.key_id, "1"))
    assert platform.ScoreApplication(warm, timeout=30).accepted
    nodes.stop_bureau()
    request = serde.application_to_proto(german(2, "lost-1", nodes.key.key_id, "1"))
    code, _ = rpc_code(lambda: platform.ScoreApplication(request, timeout=30))
    assert code == grpc.StatusCode.UNAVAILABLE
    entry = nodes.in_outbox("lost-1")
    assert entry is not None and entry.state == SENT
    nodes.stop_platform()  # the platform goes away before the bureau ever answered
    nodes.dialled = 0

    nodes.start_bureau()
    nodes.start_platform()  # same outbox: resends lost-1 on start
    record = wait_for(lambda: nodes.bank_has("lost-1"), what="the resent application at the bank")
    assert record.band == expected_band(2) and nodes.dialled >= 1  # over the resender's own channel
    wait_for(
        partial(is_state, nodes.in_outbox, "lost-1", ACKNOWLEDGED), what="the outbox to record the answer"
    )
    # The operator, unsure, submits again: the same outcome, not ALREADY_EXISTS, and no second band.
    receipt = nodes.stub("platform").ScoreApplication(request, timeout=30)
    assert receipt.accepted and not receipt.pending
    assert nodes.deliveries.count("lost-1") == 1


def test_a_stopping_platform_hands_back_the_entries_it_claimed_and_did_not_send(
    nodes: Nodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resender claims a round of due entries, then sends them one at a time. Stopped between
    two, it hands the rest back at once, so a platform restarted on the same outbox resends them
    without waiting out the 30 s lease (the deadline below is shorter)."""
    platform = nodes.stub("platform")
    warm = serde.application_to_proto(german(1, "warm-2", nodes.key.key_id, "1"))
    assert platform.ScoreApplication(warm, timeout=30).accepted  # caches the spec and the bank key
    nodes.stop_bureau()
    ids = [f"handback-p{i}" for i in range(3)]
    for i, app_id in enumerate(ids):
        request = serde.application_to_proto(german(30 + i, app_id, nodes.key.key_id, "1"))
        code, _ = rpc_code(partial(platform.ScoreApplication, request, timeout=30))
        assert code == grpc.StatusCode.UNAVAILABLE
    node = nodes.platform
    assert node is not None
    node.stop_resending()  # all three unanswered, none claimed
    claims = {a: cast(OutboxEntry, nodes.in_outbox(a)).claim for a in ids}
    real_send = node._send

    def paused(submission: Any, link: Any = None) -> Any:  # the first entry goes once the stop began
        wait_for(lambda: node._resender is None, what="the platform to stop its resender")
        return real_send(submission, link)

    monkeypatch.setattr(node, "_send", paused)
    node.start_resending()

    def claimed_all() -> bool:  # one round claimed the three entries
        return all(cast(OutboxEntry, nodes.in_outbox(a)).claim == n + 1 for a, n in claims.items())

    wait_for(claimed_all, what="the resender to claim the three entries")
    nodes.stop_platform()  # the first is sent (the bureau is down), the other two handed back
    nodes.start_bureau()
    nodes.start_platform()
    for i, app_id in enumerate(ids):
        record = wait_for(partial(nodes.bank_has, app_id), timeout=15, what=f"{app_id} at the bank")
        assert record.band == expected_band(30 + i)
    assert nodes.not_once(ids) == {}


# ---------------------------------------------------------------- packed batches


def stream(nodes: Nodes, apps: list[Application]) -> list[Outcome]:
    security = nodes.creds("platform-d").expecting("platform")
    outcomes = score_applications(nodes.platform_addr, apps, security=security)
    assert sorted(o.application_id for o in outcomes) == sorted(a.application_id for a in apps)
    return outcomes


def batches_of(nodes: Nodes, app_ids: list[str]) -> set[str]:
    assert nodes.bureau is not None
    found = {nodes.bureau.batches.batch_of("platform-d", app_id) for app_id in app_ids}
    assert None not in found, "every application of the stream went through a packed batch"
    return {b for b in found if b is not None}


def test_streamed_applications_are_packed_and_scored_exactly_once(nodes: Nodes) -> None:
    apps = [german(i, f"pack-{i}", nodes.key.key_id) for i in range(30)]
    outcomes = stream(nodes, apps)
    assert all(o.accepted and not o.pending for o in outcomes), [o.error for o in outcomes if o.error]
    assert all("bureau.garble" in o.stage_ms for o in outcomes)
    ids = [a.application_id for a in apps]
    assert len(batches_of(nodes, ids)) >= 2  # 30 rows do not fit one 2048-bit batch
    for i, app_id in enumerate(ids):
        record = nodes.bank_has(app_id)
        assert record is not None and record.band == expected_band(i)
    assert nodes.bank is not None
    stored = nodes.bank.store.count()

    # The whole stream again: every application is resent as its stored batch, nothing is new.
    again = stream(nodes, apps)
    assert all(o.accepted and not o.pending for o in again)
    # One member alone over the unary call: its batch's stored outcome.
    platform = nodes.stub("platform")
    one = platform.ScoreApplication(serde.application_to_proto(apps[4]), timeout=30)
    assert one.accepted and not one.pending
    assert nodes.bank.store.count() == stored
    assert nodes.not_once(ids) == {}  # the replays completed nothing at the bank again
    # Other features under a batched id are refused by the platform, ...
    changed = serde.application_to_proto(german(40, "pack-4", nodes.key.key_id))
    code, text = rpc_code(lambda: platform.ScoreApplication(changed, timeout=30))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "different features" in text
    # ... and a batched id submitted alone to the bureau by anyone is refused there.
    code, text = rpc_code(
        lambda: nodes.stub("bureau").SubmitApplication(encrypted(nodes, 4, "pack-4"), timeout=30)
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS and "in a batch" in text
    assert nodes.bureau is not None and nodes.bureau.audit is not None
    audited = {r.application_id for r in nodes.bureau.audit.records() if r.outcome == "OK"}
    assert set(ids) <= audited  # one audit record per application of a batch


def test_batch_pending_while_the_bank_is_down_then_delivered(nodes: Nodes) -> None:
    nodes.stop_bank()
    apps = [german(50 + i, f"down-b{i}", nodes.key.key_id) for i in range(5)]
    outcomes = stream(nodes, apps)
    assert all(o.accepted and o.pending for o in outcomes), outcomes
    batch_ids = batches_of(nodes, [a.application_id for a in apps])
    bureau = nodes.bureau
    assert bureau is not None

    def batch_state(batch_id: str) -> str:
        stored = bureau.batches.get("platform-d", batch_id)
        assert stored is not None
        return stored.state

    assert {batch_state(b) for b in batch_ids} == {PENDING}
    nodes.start_bank()
    for i, app in enumerate(apps):
        record = wait_for(
            partial(nodes.bank_has, app.application_id), what=f"{app.application_id} at the bank"
        )
        assert record.band == expected_band(50 + i)
    for batch_id in batch_ids:
        wait_for(lambda b=batch_id: batch_state(b) == DELIVERED, what=f"batch {batch_id} delivered")
        done = bureau.batches.get("platform-d", batch_id)
        assert done is not None and done.ciphertexts is None  # delivered: no data kept
    assert nodes.not_once([a.application_id for a in apps]) == {}


@pytest.mark.parametrize("path", ["one by one", "packed"])
@pytest.mark.parametrize("bank", ["honest", "broken: completes every run twice"])
def test_exactly_once_is_counted_where_the_bank_stores(
    nodes: Nodes, path: str, bank: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both paths end in the bank's store, where the count is taken. Negative control: a bank whose
    flow completes every run twice (its store keeps the first band, so the stored bands alone look
    right) must show two completions per application on either path."""
    if bank != "honest":
        real = BankNode._complete

        def twice(self: BankNode, bureau_id: str, completions: Any) -> Any:
            real(self, bureau_id, completions)
            return real(self, bureau_id, completions)

        monkeypatch.setattr(BankNode, "_complete", twice)
    if path == "one by one":
        ids = ["once-1"]
        receipt = nodes.stub("bureau").SubmitApplication(encrypted(nodes, 20, "once-1"), timeout=30)
        assert receipt.accepted and not receipt.pending
    else:
        apps = [german(70 + i, f"once-b{i}", nodes.key.key_id) for i in range(4)]
        ids = [a.application_id for a in apps]
        assert all(o.accepted and not o.pending for o in stream(nodes, apps))
        assert batches_of(nodes, ids)  # packed: every one went through a batch
    for i, app_id in enumerate(ids):
        record = nodes.bank_has(app_id)
        assert record is not None and record.band == expected_band((20 if path == "one by one" else 70) + i)
    assert nodes.not_once(ids) == ({} if bank == "honest" else dict.fromkeys(ids, (2, 2)))


def test_a_bank_that_forgot_its_ot_sessions_is_set_up_again(nodes: Nodes) -> None:
    apps = [german(60 + i, f"ot-{i}", nodes.key.key_id) for i in range(3)]
    assert all(o.accepted and not o.pending for o in stream(nodes, apps[:1]))
    assert nodes.bank is not None
    before = nodes.bank
    nodes.restart_bank()  # a new bank node: no OT session, no ticket key of the old one
    assert nodes.bank is not before and nodes.bank.packed is not before.packed
    outcomes = stream(nodes, apps[1:])
    assert all(o.accepted and not o.pending for o in outcomes), [o.error for o in outcomes]
    for i, app in enumerate(apps):
        record = nodes.bank_has(app.application_id)
        assert record is not None and record.band == expected_band(60 + i)


def scored(nodes: Nodes, apps: list[Application]) -> list[tuple[str, str, bool]]:
    """Score ``apps`` as one chunk of a stream (PlatformNode.score_many: the packing of a stream
    without its timing-dependent chunking) over the real bureau and bank: (application id, status
    name, pending) for each, in order; the status is OK for an accepted one."""
    assert nodes.platform is not None
    results = nodes.platform.score_many(apps)
    return [
        (app.application_id, "OK", r.pending)
        if isinstance(r, Receipt)
        else (app.application_id, f"{status_of(r)[0].name}: {status_of(r)[1]}", False)
        for app, r in zip(apps, results, strict=True)
    ]


def audited(nodes: Nodes, app_id: str) -> list[str]:
    assert nodes.bureau is not None and nodes.bureau.audit is not None
    return [r.outcome for r in nodes.bureau.audit.records() if r.application_id == app_id]


def test_the_same_id_twice_in_one_stream_is_scored_once(nodes: Nodes) -> None:
    """The second request for an id being packed waits for the batches, then gets its batch's
    outcome (same features) or ALREADY_EXISTS (other features); never a second run at the bank."""
    apps = [
        german(80, "twice-1", nodes.key.key_id),
        german(81, "twice-2", nodes.key.key_id),
        german(80, "twice-1", nodes.key.key_id),  # the same application again
        german(82, "twice-3", nodes.key.key_id),
        german(83, "twice-3", nodes.key.key_id),  # the same id with other features
    ]
    got = scored(nodes, apps)
    assert [g[:2] for g in got[:4]] == [
        ("twice-1", "OK"),
        ("twice-2", "OK"),
        ("twice-1", "OK"),
        ("twice-3", "OK"),
    ]
    assert not any(pending for _, _, pending in got)
    assert got[4][1].startswith("ALREADY_EXISTS") and "different features" in got[4][1]
    for app_id, row in (("twice-1", 80), ("twice-2", 81), ("twice-3", 82)):
        record = nodes.bank_has(app_id)
        assert record is not None and record.band == expected_band(row)
    assert len(batches_of(nodes, ["twice-1", "twice-2", "twice-3"])) == 1  # one batch, each id once
    assert nodes.not_once(["twice-1", "twice-2", "twice-3"]) == {}
    # Over a real stream too (chunked as the requests arrive): the same outcomes, nothing run again.
    security = nodes.creds("platform-d").expecting("platform")
    outcomes = score_applications(nodes.platform_addr, apps, security=security)
    assert sorted((o.application_id, o.accepted) for o in outcomes) == [
        ("twice-1", True), ("twice-1", True), ("twice-2", True), ("twice-3", False), ("twice-3", True)
    ]  # fmt: skip
    assert nodes.not_once(["twice-1", "twice-2", "twice-3"]) == {}


def test_a_batch_refused_with_already_exists_is_sent_again_one_by_one(nodes: Nodes) -> None:
    """The bureau refuses a whole batch (ALREADY_EXISTS, nothing stored) when one member's id was
    used before; the platform then sends the members one by one, so only that one is refused."""
    direct = nodes.stub("bureau").SubmitApplication(encrypted(nodes, 90, "taken-1"), timeout=30)
    assert direct.accepted and not direct.pending  # the id is the bureau's now, not in the outbox
    ids = ["free-1", "taken-1", "free-2"]
    refusals: list[str] = []
    assert nodes.bureau is not None
    real = nodes.bureau.submit_batch

    def submit_batch(batch: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return real(batch, *args, **kwargs)
        except AlreadyExistsError as exc:
            refusals.append(str(exc))
            raise

    nodes.bureau.submit_batch = submit_batch  # type: ignore[method-assign]
    got = scored(nodes, [german(91 + i, app_id, nodes.key.key_id) for i, app_id in enumerate(ids)])
    assert len(refusals) == 1 and "'taken-1'" in refusals[0]  # the batch went first and was refused
    assert [(a, c.split(":")[0], p) for a, c, p in got] == [
        ("free-1", "OK", False), ("taken-1", "ALREADY_EXISTS", False), ("free-2", "OK", False)
    ]  # fmt: skip
    assert all(nodes.bureau.batches.batch_of("platform-d", a) is None for a in ids)  # nothing kept of it
    for app_id, row in (("free-1", 91), ("free-2", 93), ("taken-1", 90)):  # taken-1: its first band
        record = nodes.bank_has(app_id)
        assert record is not None and record.band == expected_band(row)
    assert nodes.not_once(ids) == {}
    # The trail: the refused batch left a refusal per member, then each member its own records.
    assert audited(nodes, "free-1") == ["ALREADY_EXISTS", "ACCEPTED", "OK"]
    assert audited(nodes, "taken-1") == ["ACCEPTED", "OK", "ALREADY_EXISTS", "ALREADY_EXISTS"]


@pytest.mark.parametrize("platform_asks_again", [True, False], ids=["platform-retry", "bureau-alone"])
def test_a_batch_resent_by_two_senders_at_once_is_answered_once_accepted(
    nodes: Nodes, platform_asks_again: bool
) -> None:
    """Issue 14 item 9, the crash run's 2 delivered applications answered ALREADY_EXISTS, with the
    kill timing replaced by events. A packed batch is in the outbox and not at the bureau (the
    bureau was unreachable when it was first sent); the resender sends it again, and so does the
    client's resubmission of its members. At the bureau the resender's copy is stored between the
    client copy's reading "no such batch" and its check of the member ids, which then finds the ids
    taken (by the very same batch) and refuses it with ALREADY_EXISTS. The client must get the
    batch's outcome (accepted), as for any resubmission of the same payload; each band reaches the
    bank once and the outbox keeps the batch as acknowledged."""
    platform, bureau = nodes.platform, nodes.bureau
    assert platform is not None and bureau is not None
    if not platform_asks_again:
        # The bureau itself answers the twin copy from the stored batch (its check of the member
        # ids recognises the batch as this very submission); the platform's second ask is off.
        def submit_once(submission: Any, link: Any) -> Any:
            if submission.batch:
                return link.submit_batch(submission.payload, len(submission.application_ids))
            return link.submit(submission.payload)

        cast(Any, platform)._submit = submit_once
    apps = [german(130 + i, f"twin-{i}", nodes.key.key_id) for i in range(2)]
    ids = [a.application_id for a in apps]
    link: Any = platform.bureau
    real_submit_batch = link.submit_batch
    faults: list[int] = []

    def unreachable_once(payload: bytes, count: int) -> Any:
        if not faults:
            faults.append(count)
            raise UnavailableError("bureau: unreachable (injected: the first send is lost)")
        return real_submit_batch(payload, count)

    link.submit_batch = unreachable_once
    store: Any = bureau.batches
    real_get, real_check_new, real_accept = store.get, store.check_new, store.accept
    first_storing = threading.Event()  # the first copy has passed its checks, about to be stored
    second_read = threading.Event()  # the second copy read the store and found no batch
    first_stored = threading.Event()  # the first copy is committed
    accepts: list[bool] = []

    def get(platform_id: str, batch_id: str) -> Any:
        found = real_get(platform_id, batch_id)
        if found is None and first_storing.is_set() and not first_stored.is_set():
            second_read.set()
        return found

    def check_new(sub: Any) -> None:
        if first_storing.is_set():  # the second copy: its ids are checked after the first is stored
            assert first_stored.wait(WAIT_S), "the first copy of the batch was never stored"
        real_check_new(sub)

    def accept(sub: Any, **kwargs: Any) -> Any:
        first = not first_storing.is_set()
        if first:
            first_storing.set()
            assert second_read.wait(WAIT_S), "no second copy of the batch arrived"
        stored, created = real_accept(sub, **kwargs)
        accepts.append(created)
        if first:
            first_stored.set()
        return stored, created

    store.get, store.check_new, store.accept = get, check_new, accept

    # The first send is lost: the client is told UNAVAILABLE, the batch waits in the outbox.
    lost = scored(nodes, apps)
    assert faults == [2] and [c.split(":")[0] for _, c, _ in lost] == ["UNAVAILABLE"] * 2
    assert [getattr(nodes.in_outbox(a), "state", None) for a in ids] == [SENT, SENT]
    assert bureau.batches.batch_of("platform-d", ids[0]) is None
    # The resender sends it again (over its own link) and is held just before the bureau stores it;
    # meanwhile the client resubmits the same applications.
    assert first_storing.wait(WAIT_S), "the resender never resent the batch"
    again = scored(nodes, apps)
    assert second_read.is_set() and first_stored.is_set()  # the interleaving did happen
    assert [(a, c) for a, c, _ in again] == [(a, "OK") for a in ids], again
    assert accepts[0] is True  # the resender's copy was stored; the client's was answered from it
    for app_id in ids:
        wait_for(partial(is_state, nodes.in_outbox, app_id, ACKNOWLEDGED), what=f"{app_id} acknowledged")
    for i, app_id in enumerate(ids):
        record = wait_for(partial(nodes.bank_has, app_id), what=f"{app_id} at the bank")
        assert record is not None and record.band == expected_band(130 + i)
    # Once more, after the resender's copy has run: delivered, and nothing is run a second time.
    (batch_id,) = batches_of(nodes, ids)

    def delivered() -> bool:
        stored = real_get("platform-d", batch_id)
        return stored is not None and stored.state == DELIVERED

    wait_for(delivered, what="the batch delivered")
    assert scored(nodes, apps) == [(a, "OK", False) for a in ids]
    assert nodes.not_once(ids) == {}


def test_a_replayed_batch_with_an_id_taken_elsewhere_is_still_refused(nodes: Nodes) -> None:
    """The control of the test above: a replayed batch refused with ALREADY_EXISTS is asked about
    once more, and when an id of it is really taken (here submitted alone, straight to the bureau,
    while the batch waited in the outbox) the bureau refuses it again and so does the platform;
    a batch's first send is never repeated."""
    platform, bureau = nodes.platform, nodes.bureau
    assert platform is not None and bureau is not None
    apps = [german(140 + i, f"held-{i}", nodes.key.key_id) for i in range(2)]
    ids = [a.application_id for a in apps]
    link: Any = platform.bureau
    real_submit_batch = link.submit_batch
    faults: list[int] = []

    def taken_while_lost(payload: bytes, count: int) -> Any:
        if not faults:
            faults.append(count)
            direct = nodes.stub("bureau").SubmitApplication(encrypted(nodes, 141, "held-1"), timeout=30)
            assert direct.accepted
            raise UnavailableError("bureau: unreachable (injected: the first send is lost)")
        return real_submit_batch(payload, count)

    link.submit_batch = taken_while_lost
    refusals: list[str] = []
    real = bureau.submit_batch

    def submit_batch(batch: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return real(batch, *args, **kwargs)
        except AlreadyExistsError as exc:
            refusals.append(str(exc))
            raise

    bureau.submit_batch = submit_batch  # type: ignore[method-assign]
    lost = scored(nodes, apps)
    assert faults == [2] and [c.split(":")[0] for _, c, _ in lost] == ["UNAVAILABLE"] * 2
    # The resender replays the batch: refused, asked once more, refused again, and given up.
    for app_id in ids:
        wait_for(partial(is_state, nodes.in_outbox, app_id, REFUSED), what=f"{app_id} refused")
    assert len(refusals) == 2 and all("'held-1'" in r for r in refusals)
    # The client again: a new batch (its first send, refused once), then one by one.
    again = scored(nodes, apps)
    assert [(a, c.split(":")[0]) for a, c, _ in again] == [("held-0", "OK"), ("held-1", "ALREADY_EXISTS")]
    assert len(refusals) == 3
    for app_id, row in (("held-0", 140), ("held-1", 141)):  # held-1: the band of its own submission
        record = nodes.bank_has(app_id)
        assert record is not None and record.band == expected_band(row)
    assert nodes.not_once(ids) == {}


def test_a_bank_restarted_between_packed_start_and_finish_gives_no_band_twice(
    nodes: Nodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bank is restarted after answering PackedStart and before PackedFinish arrives: the new
    bank cannot open the ticket. The evaluation round had been sent, so the bureau does not run the
    batch again (docs/threat-model.md: a second run could tell a deviating bank a second band):
    its members fail for good with FAILED_PRECONDITION, no band is stored, and a replay changes
    nothing. The next batch sets up a new OT session and gets exactly one band each."""
    from blindscore.bureau import flow as bureau_flow

    real = bureau_flow._garbling_reply
    restarts: list[int] = []

    def restart_then_garble(garble: Any, timing: dict[str, float]) -> Any:
        finish = real(garble, timing)

        def after_start(request: Any, sender: Any) -> Any:
            if not restarts:  # PackedStart has been answered; PackedFinish is not sent yet
                nodes.restart_bank()
                restarts.append(1)
            return finish(request, sender)

        return after_start

    monkeypatch.setattr(bureau_flow, "_garbling_reply", restart_then_garble)
    apps = [german(100 + i, f"mid-{i}", nodes.key.key_id) for i in range(3)]
    ids = [a.application_id for a in apps]
    got = scored(nodes, apps)
    assert restarts == [1]
    assert [(a, c.split(":")[0]) for a, c, _ in got] == [(a, "FAILED_PRECONDITION") for a in ids]
    assert all("did not confirm the evaluation round" in c for _, c, _ in got)
    (batch_id,) = batches_of(nodes, ids)
    assert nodes.bureau is not None
    stored = nodes.bureau.batches.get("platform-d", batch_id)
    assert stored is not None and stored.state == FAILED
    assert all(nodes.bank_has(a) is None for a in ids) and nodes.deliveries == []
    # The same applications again: refused, not run a second time. (The platform dropped the
    # failed batch's payload, so it packs a new batch, which the bureau refuses for the used ids:
    # ALREADY_EXISTS, the misreport scripts/crash.py tolerates for a spent batch.)
    again = scored(nodes, apps)
    assert [c.split(":")[0] for _, c, _ in again] == ["ALREADY_EXISTS"] * 3
    # In the trail: the one run, then the refused new batch and each member refused alone after it.
    trail = ["ACCEPTED", "FAILED_PRECONDITION", "ALREADY_EXISTS", "ALREADY_EXISTS"]
    assert [audited(nodes, a) for a in ids] == [trail] * 3
    assert all(nodes.bank_has(a) is None for a in ids) and nodes.deliveries == []
    # New applications after the restart: a new OT session, exactly one band each.
    fresh = [german(110 + i, f"after-{i}", nodes.key.key_id) for i in range(3)]
    assert [c for _, c, _ in scored(nodes, fresh)] == ["OK"] * 3
    for i, app in enumerate(fresh):
        record = nodes.bank_has(app.application_id)
        assert record is not None and record.band == expected_band(110 + i)
    assert nodes.not_once([a.application_id for a in fresh]) == {}


def test_slots_too_wide_for_the_key_are_scored_one_by_one(
    nodes: Nodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model version whose packed slot does not fit the bank key's plaintext (here the bureau
    announces 2048-bit slots for a 2048-bit key; no shipped model comes near: German needs 95) is
    scored one application at a time, each with its own band, and no batch is made."""
    from blindscore.protocol import packing

    assert packing.slots_per_batch(nodes.key.bits, nodes.key.bits) == 0
    monkeypatch.setattr(packing, "slot_bits_for", lambda model, kappa=0: nodes.key.bits)
    apps = [german(120 + i, f"wide-{i}", nodes.key.key_id) for i in range(3)]
    assert [(c, p) for _, c, p in scored(nodes, apps)] == [("OK", False)] * 3
    assert nodes.bureau is not None
    assert all(nodes.bureau.batches.batch_of("platform-d", a.application_id) is None for a in apps)
    for i, app in enumerate(apps):
        record = nodes.bank_has(app.application_id)
        assert record is not None and record.band == expected_band(120 + i)
    assert nodes.not_once([a.application_id for a in apps]) == {}


def test_two_platforms_with_one_application_id_keep_separate_bands(nodes: Nodes) -> None:
    """The bank keeps results per (bureau, platform, application id): a second platform using an id
    the first used gets its own band, never the first platform's, and no refusal that would tell it
    about the other platform's applicant."""
    rows, _ = load_german_credit()
    bands = [expected_band(i) for i in range(40)]
    i, j = 0, next(k for k in range(40) if bands[k] != bands[0])
    for platform, row in (("platform-d", i), ("platform-e", j)):
        bureau = nodes.stub("bureau", platform)  # each platform with its own certificate
        ciphertexts = tuple(nodes.key.encrypt(v) for v in default_model().spec.encode_row(rows[row]))
        app = EncryptedApplication(
            "shared-id", platform, "bank-d", DEFAULT_MODEL_ID, nodes.key.key_id, "consent", ciphertexts
        )
        receipt = bureau.SubmitApplication(serde.encrypted_application_to_proto(app, nodes.key), timeout=30)
        assert receipt.accepted and not receipt.pending
    assert nodes.bank is not None
    first = nodes.bank.store.get("shared-id", "platform-d")
    second = nodes.bank.store.get("shared-id", "platform-e")
    assert first is not None and first.band == bands[i]
    assert second is not None and second.band == bands[j]
    assert {r.platform_id for r in nodes.bank.store.all() if r.application_id == "shared-id"} == {
        "platform-d",
        "platform-e",
    }


def test_bank_store_format_1_is_migrated(backend: Backend) -> None:
    """A result store written by format 1 (bands keyed by application id alone) opens as format 2:
    its bands keep their values under an empty bureau and platform id."""
    from blindscore.infra.db import Database

    target = backend.url or backend.tmp / "bank" / "v1.sqlite3"
    db = Database.open(target, "bank")

    def old(tx: Any) -> None:
        tx.execute(
            "CREATE TABLE {bands} (application_id TEXT PRIMARY KEY, model_id TEXT NOT NULL, "
            "key_id TEXT NOT NULL, band INTEGER NOT NULL, band_label TEXT NOT NULL, "
            "received_at {real} NOT NULL)"
        )
        tx.execute("INSERT INTO {bands} VALUES ('old-1', 'm', 'pk-1', 2, 'C', 1.5)")
        tx.check_version("bank.results", 1)

    db.write(old)
    db.close()
    store = ResultStore(target)
    try:
        (record,) = store.all()
        assert (record.application_id, record.platform_id, record.bureau_id, record.band) == (
            "old-1",
            "",
            "",
            2,
        )
        store.begin_runs("b", ["old-1"], [""], RunLimits(), platform_id="p")
        store.complete("b", [Completion(BandRecord("old-1", "m", "pk-1", 1, "B", 2.0, "p"))], RunLimits())
        assert len(store.all()) == 2  # the same id from another platform is another application
    finally:
        store.close()
    again = ResultStore(target)  # a second open finds format 2 and changes nothing
    assert len(again.all()) == 2
    again.close()


def test_bank_store_format_2_gains_its_circuit_rounds(backend: Backend) -> None:
    """A result store of format 2 (before garbled-circuit rounds waited for their pad) opens as
    format 3 with its bands intact, and keeps a round's padded outcome from then on."""
    from blindscore.bank_node.store import FORMAT_VERSION, PendingRound
    from blindscore.infra.db import Database

    target = backend.url or backend.tmp / "bank" / "v2.sqlite3"
    store = ResultStore(target)
    store.begin_runs("b", ["kept-1"], [""], RunLimits(), platform_id="p")
    store.complete("b", [Completion(BandRecord("kept-1", "m", "pk-1", 1, "B", 2.0, "p"))], RunLimits())
    store.close()
    db = Database.open(target, "bank")

    def back_to_2(tx: Any) -> None:  # what a format-2 bank left behind
        tx.execute("DROP TABLE {circuit_rounds}")
        tx.execute("UPDATE {schema_versions} SET version = 2 WHERE component = 'bank.results'")

    db.write(back_to_2)
    db.close()
    store = ResultStore(target)
    try:
        assert FORMAT_VERSION == 3
        assert [r.application_id for r in store.all()] == ["kept-1"]
        store.begin_runs("b", ["new-1"], [""], RunLimits(), platform_id="p")
        pending = PendingRound("new-1", "p", "ab" * 16, "1100", "m", "pk-1", ("A", "B", "C", "D", "E"))
        assert store.put_round("b", pending) and not store.put_round("b", pending)
        assert store.round("b", "p", "new-1", "ab" * 16) == pending
        assert store.round("b", "p", "new-1", "cd" * 16) is None
    finally:
        store.close()
