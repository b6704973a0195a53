"""Platform replicas: two platform processes on one PostgreSQL outbox in front of one bureau and
bank; claims on unanswered entries, takeover of a dead replica's entries, fencing, and the outbox
secret the replicas share.

The boundaries where a double send or a lost application shows: the bank's run ledger
(``bank_runs``: deliveries per application), the bureau's request counters (SubmitApplication and
SubmitBatch calls it answered), and the shared outbox table (who claimed what, under which token).
"""

from __future__ import annotations

import os
import signal
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from blindscore.app.localnet import LocalNetwork, NodeProcess
from blindscore.errors import LeaseLostError, PreconditionError
from blindscore.infra.lock import hold_store
from blindscore.infra.transport import open_channel
from blindscore.platform_node.outbox import ACKNOWLEDGED, SENT, Outbox
from blindscore.protocol.application import Application
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc
from blindscore.wire import serde

from support import german_application, german_credit, pg_rows, status_name
from waiting import wait_for

TESTS = Path(__file__).resolve().parent
#: Generous: the machine is shared; a deadline only ever ends a test that failed.
DEADLINE_S = 60.0


# ------------------------------------------------------------------ the outbox alone, in process


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "outbox.sqlite3")
    return str(request.getfixturevalue("pg_schema_url"))


def test_claims_give_each_unanswered_entry_to_one_replica_at_a_time(target: str, tmp_path: Path) -> None:
    """Two outboxes on one store (two replicas): the entry a request stored is its own until its
    lease ends; then one resender claims it (token 2), the other finds nothing; the first
    replica's outcome is refused (LeaseLostError) and nothing of it is written; a batch is
    claimed once, through the member that holds its payload."""
    a = Outbox(target, b"k" * 32)
    b = Outbox(target, b"k" * 32)
    try:
        stored = a.add("x", "fx", "bank", "pk", b"payload-x", due_at=0.0, owner="a", lease_s=30.0)
        assert (stored.claimed_by, stored.claim) == ("a", 1)
        assert b.claim_due("b", 30.0, 1e12, 10) == []  # held by a live lease
        a.renew([stored.fence], 0.5, 0.0)  # a's lease now ends in 0.5 s
        taken = wait_for(lambda: b.claim_due("b", 30.0, 1e12, 10), 10, "the lease to expire")
        assert [(e.application_id, e.claimed_by, e.claim) for e in taken] == [("x", "b", 2)]
        assert a.claim_due("a", 30.0, 1e12, 10) == []  # one replica at a time
        with pytest.raises(LeaseLostError, match="lost the lease on outbox entry 'x'"):
            a.retry_later("x", 1, 0.0, "bureau unavailable", fence=stored.fence)
        assert a.renew([stored.fence], 30.0, 0.0) == [stored.fence]
        assert b.acknowledged("x", fence=taken[0].fence)
        entry = a.get("x")
        assert entry is not None and (entry.state, entry.claimed_by, entry.claim, entry.last_error) == (
            ACKNOWLEDGED,
            "b",
            2,
            "",
        )

        leader = a.add_batch([("m1", "f1"), ("m2", "f2")], "bank", "pk", b"batch", due_at=0.0, owner="a")
        assert leader is not None and leader.claim == 1
        # lease_s 0: the claim at insert lapsed at once; the batch is claimed once, by its first member.
        claimed = wait_for(lambda: b.claim_due("b", 30.0, 1e12, 10), 10, "the batch")
        assert [e.application_id for e in claimed] == ["m1"]
        assert b.acknowledged(["m1", "m2"], fence=claimed[0].fence)
        assert a.counts() == {SENT: 0, ACKNOWLEDGED: 3, "refused": 0}
    finally:
        a.close()
        b.close()


def test_a_replica_with_another_secret_is_refused(target: str) -> None:
    """Replicas with different HMAC secrets would not recognise each other's resubmissions."""
    Outbox(target, b"s" * 32).close()
    with pytest.raises(PreconditionError, match="made with another HMAC secret") as caught:
        Outbox(target, b"t" * 32)
    assert "ssss" not in str(caught.value) and "tttt" not in str(caught.value)
    Outbox(target, b"s" * 32).close()


def test_platform_replicas_share_postgresql_but_not_sqlite(tmp_path: Path, pg_schema_url: str) -> None:
    first = hold_store("platform", tmp_path / "p")
    try:
        with pytest.raises(PreconditionError, match="platform replicas need PostgreSQL"):
            hold_store("platform", tmp_path / "p")
    finally:
        first.release()
    held = [hold_store("platform", tmp_path / "p", pg_schema_url) for _ in range(2)]  # shared
    for lock in held:
        lock.release()


# ------------------------------------------------------------------ real processes


class Cluster:
    """Bureau, bank and platform replica "a" (a LocalNetwork on one PostgreSQL database), and
    platform replica "b" on the same outbox and data directory (so the same HMAC secret)."""

    def __init__(self, net: LocalNetwork, database: str) -> None:
        self.net = net
        self.database = database
        self.b: NodeProcess
        self.channels: list[grpc.Channel] = []
        self.rows, _ = german_credit()

    @property
    def a(self) -> NodeProcess:
        return self.net.nodes["platform"]

    def stub(self, *nodes: NodeProcess) -> Any:
        """A client of the platform at ``nodes``' addresses (several: round-robin over them)."""
        channel = open_channel(",".join(n.address for n in nodes), security=self.net.client_security)
        self.channels.append(channel)
        return pb_grpc.PlatformStub(channel)

    def app(self, i: int, prefix: str = "prep") -> Application:
        return german_application(self.net, self.rows, i, prefix, "platform-replica-test")

    def sql(self, query: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        return pg_rows(self.database, query, params)

    def outbox(self) -> dict[str, tuple[str, str, int, bool]]:
        """application id -> (state, claimed_by, claim, holds its payload) in the shared outbox."""
        rows = self.sql(
            "SELECT application_id, state, claimed_by, claim, get_byte(payload, 0) <> 1 FROM platform_outbox"
        )
        return {str(a): (str(s), str(c), int(n), bool(h)) for a, s, c, n, h in rows}

    def deliveries(self) -> dict[str, int]:
        return {str(a): int(d) for a, d in self.sql("SELECT application_id, deliveries FROM bank_runs")}

    def bureau_submissions(self) -> int:
        """SubmitApplication and SubmitBatch calls the (current) bureau process answered."""
        port = self.net.nodes["bureau"].info["metrics_port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        return int(
            sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("blindscore_requests_total{")
                and ('method="SubmitApplication"' in line or 'method="SubmitBatch"' in line)
            )
        )

    def log(self, node: NodeProcess) -> str:
        return node.log_file.read_text(errors="replace")


@contextmanager
def cluster(
    tmp_path: Path, database: str, *, lease_a: float, lease_b: float, modules: tuple[str, ...] = ()
) -> Iterator[Cluster]:
    net = LocalNetwork(
        tmp_path,
        database=database,
        model_modules=modules,
        bureau_args=("--metrics-port", "0"),
        platform_args=("--replica-id", "a", "--lease-seconds", str(lease_a)),
    )
    c = Cluster(net, database)
    try:
        with net:
            args = list(c.a.args)
            args[args.index("--replica-id") + 1] = "b"
            args[args.index("--lease-seconds") + 1] = str(lease_b)
            c.b = net.add_node("platform2", args)
            yield c
            for node in net.nodes.values():  # nothing left stopped for the shutdown
                if node.process.poll() is None:
                    os.kill(node.process.pid, signal.SIGCONT)
    finally:
        for channel in c.channels:
            channel.close()


@pytest.fixture
def plugins_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Node processes can import tests/outbox_gate.py and tests/outbox_unfenced.py."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))


def _unary(stub: Any, apps: list[Application], answers: dict[str, str]) -> None:
    for app in apps:
        try:
            receipt = stub.ScoreApplication(serde.application_to_proto(app), timeout=60)
            answers[app.application_id] = "accepted" if receipt.accepted else status_name(receipt.error_code)
        except grpc.RpcError as exc:
            answers[app.application_id] = exc.code().name


def _stream(stub: Any, apps: list[Application], answers: dict[str, str]) -> None:
    requests = [serde.application_to_proto(a) for a in apps]
    for receipt in stub.ScoreApplications(iter(requests), timeout=60):
        answers[receipt.application_id] = "accepted" if receipt.accepted else status_name(receipt.error_code)


def _in_threads(*jobs: tuple[Any, ...]) -> None:
    threads = [threading.Thread(target=fn, args=args) for fn, *args in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE_S)
        assert not t.is_alive()


def _delivered(c: Cluster, ids: set[str]) -> dict[str, int] | None:
    got = c.deliveries()
    return got if ids <= set(got) and all(got[i] for i in ids) else None


def _answered(c: Cluster, ids: set[str]) -> dict[str, tuple[str, str, int, bool]] | None:
    rows = c.outbox()
    return rows if all(rows[i][0] == ACKNOWLEDGED for i in ids) else None


@pytest.mark.postgresql
def test_a_killed_platform_replicas_entries_are_resent_once_by_the_survivor(
    pg_schema_url: str, tmp_path: Path
) -> None:
    """Load through both replicas (a client pointing at "a,b", unary and streamed, and some
    straight to b) while the bureau is down: every application is stored, unanswered, in the
    shared outbox. b is killed -9; the bureau comes back: a resends every unanswered entry (b's
    too, once b's leases expire), each exactly once (the bureau answers one call per entry),
    and every application reaches the bank exactly once. A resubmission to a of an application
    b stored is recognised: same outcome, no new delivery; other features under its id are refused.
    """
    with cluster(tmp_path, pg_schema_url, lease_a=2, lease_b=2) as c:
        answers: dict[str, str] = {}
        # Each replica learns the model's spec and the bank's key while the bureau is up.
        _unary(c.stub(c.a), [c.app(0)], answers)
        _unary(c.stub(c.b), [c.app(1)], answers)
        assert answers == {"prep-0": "accepted", "prep-1": "accepted"}

        c.net.kill("bureau")
        both = c.stub(c.a, c.b)
        _in_threads(
            (_unary, both, [c.app(i) for i in range(2, 10)], answers),
            (_stream, both, [c.app(i) for i in range(10, 18)], answers),
            (_stream, both, [c.app(i) for i in range(18, 26)], answers),
            (_unary, c.stub(c.b), [c.app(i) for i in range(26, 30)], answers),
        )
        ids = {f"prep-{i}" for i in range(2, 30)}
        assert {answers[i] for i in ids} <= {"UNAVAILABLE"}  # nobody answered: all to resend
        rows = c.outbox()
        assert {i: rows[i][0] for i in ids} == dict.fromkeys(ids, SENT)  # none lost
        leaders = {i for i in ids if rows[i][3]}
        assert len(leaders) < len(ids)  # the streams went in packed batches

        c.net.kill("platform2")  # kill -9
        c.net.restart("bureau")
        runs = wait_for(lambda: _delivered(c, ids), DEADLINE_S, "every application at the bank")
        assert {i: n for i, n in runs.items() if n != 1} == {}  # exactly once each
        rows = wait_for(lambda: _answered(c, ids), DEADLINE_S, "every outbox entry answered")
        assert {i: rows[i][1] for i in leaders} == dict.fromkeys(leaders, "a")  # the survivor resent
        assert {f"prep-{i}" for i in range(26, 30)} <= leaders  # b's own entries among them
        assert c.bureau_submissions() == len(leaders)  # each unanswered entry resent once

        # Resubmissions to the other replica are recognised from the shared outbox. A client asks
        # again on UNAVAILABLE (a's channel to the restarted bureau may still be reconnecting).
        def resubmitted() -> bool:
            _unary(c.stub(c.a), [c.app(i) for i in range(26, 30)], answers)
            _stream(c.stub(c.a), [c.app(12)], answers)
            return "UNAVAILABLE" not in {answers[f"prep-{i}"] for i in (12, 26, 27, 28, 29)}

        wait_for(resubmitted, DEADLINE_S, "the resubmissions answered")
        assert {answers[f"prep-{i}"] for i in (12, 26, 27, 28, 29)} == {"accepted"}
        other = replace(c.app(26), features=c.rows[31])
        refused: dict[str, str] = {}
        _unary(c.stub(c.a), [other], refused)
        assert refused == {"prep-26": "ALREADY_EXISTS"}
        assert {i: n for i, n in c.deliveries().items() if n != 1} == {}


@pytest.mark.postgresql
@pytest.mark.parametrize("fenced", [True, pytest.param(False, id="negative-control-unfenced")])
def test_a_replica_whose_claim_was_taken_over_records_nothing(
    fenced: bool,
    pg_schema_url: str,
    tmp_path: Path,
    plugins_path: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Replica a stores an application while the bureau is down (its claim, token 1) and is held
    (tests/outbox_gate.py), then paused, just before it records "no answer, resend later"; its
    lease is made to expire (what a pause longer than the lease does). The bureau comes back but
    is paused too, so replica b's resender claims the entry (token 2) and its resend hangs there.
    When a resumes, its write is fenced: it logs "lost the lease" and records nothing, so b's
    claim stands; the bureau then answers b's one call and the bank gets one delivery.

    Negative control (``fenced`` False, tests/outbox_unfenced.py): a's stale write lands, lets go
    of b's claim, and a resender sends the entry a second time while b's copy is still out: the
    same check (one bureau call, b's claim) fails.
    """
    gate = tmp_path / "gate"
    gate.mkdir()
    monkeypatch.setenv("BLINDSCORE_TEST_GATE", str(gate))
    monkeypatch.setenv("BLINDSCORE_TEST_GATE_REPLICA", "a")
    modules = ("outbox_gate",) if fenced else ("outbox_gate", "outbox_unfenced")
    with cluster(tmp_path, pg_schema_url, lease_a=30, lease_b=2, modules=modules) as c:
        warm: dict[str, str] = {}
        _unary(c.stub(c.a), [c.app(0)], warm)
        assert warm == {"prep-0": "accepted"}
        app = c.app(1, prefix="gate")
        c.net.kill("bureau")
        answers: dict[str, str] = {}
        threading.Thread(target=_unary, args=(c.stub(c.a), [app], answers), daemon=True).start()
        wait_for((gate / "gate-1.waiting").exists, DEADLINE_S, "a at the gate")
        assert c.outbox()["gate-1"][:3] == (SENT, "a", 1)

        os.kill(c.a.process.pid, signal.SIGSTOP)
        c.net.restart("bureau")
        bureau = c.net.nodes["bureau"]
        os.kill(bureau.process.pid, signal.SIGSTOP)
        c.sql(
            "UPDATE platform_outbox SET lease_until = 0, next_attempt_at = 0 WHERE application_id = 'gate-1'"
        )
        wait_for(lambda: c.outbox()["gate-1"][1:3] == ("b", 2), DEADLINE_S, "b's claim")

        os.kill(c.a.process.pid, signal.SIGCONT)
        (gate / "gate-1.open").touch()
        if fenced:
            wait_for(
                lambda: "lost the lease on outbox entry 'gate-1'" in c.log(c.a), DEADLINE_S, "a's refusal"
            )
        else:
            wait_for(lambda: c.outbox()["gate-1"][2] >= 3, DEADLINE_S, "a claim after a's stale write")
        os.kill(bureau.process.pid, signal.SIGCONT)
        wait_for(lambda: c.outbox()["gate-1"][0] == ACKNOWLEDGED, DEADLINE_S, "the bureau's answer")
        wait_for(lambda: _delivered(c, {"gate-1"}), DEADLINE_S, "the delivery")

        def violations() -> list[str]:
            found = []
            if (calls := c.bureau_submissions()) != 1:
                found.append(f"the bureau got {calls} copies")
            if (holder := c.outbox()["gate-1"][1:3]) != ("b", 2):
                found.append(f"outcome recorded under {holder}, not b's claim 2")
            return found

        if fenced:
            assert violations() == []
            assert answers == {"gate-1": "UNAVAILABLE"}
        else:  # the check catches the double send
            assert "the bureau got 2 copies" in wait_for(violations, DEADLINE_S, "the second copy")
            assert "lost the lease on outbox entry" not in c.log(c.a)
        assert c.deliveries()["gate-1"] == 1  # the bureau's exactly-once still holds at the bank
