"""Bank replicas (issue 16): several bank processes on one key ring and one PostgreSQL result store.

In-process: the key ring's change lock (two replicas starting on an empty ring make one key), a
rotation one replica makes reaching another, and the store's one-band-per-application insert under
concurrent writers. Over real processes: two bank replicas registered with the bureau as one
address list, under unary and streamed load, the replica in use killed -9 mid-load; at the bank's
store every application has exactly one band, the right one, and no second band was learned.
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from blindscore.app.localnet import LocalNetwork, NodeProcess
from blindscore.bank_node import keyring
from blindscore.bank_node.flow import BankNode
from blindscore.bank_node.keyring import KEYS_DIR, KeyRing
from blindscore.bank_node.store import BandRecord, PendingRound, ResultStore, RunLimits
from blindscore.bureau.registry import BankRegistry
from blindscore.crypto.dgk import DGKKeyPair
from blindscore.crypto.paillier import KeyPair
from blindscore.data.german import default_model
from blindscore.errors import InvalidInputError
from blindscore.infra.transport import TransportSecurity, open_channel
from blindscore.protocol.application import Application, BandDelivery
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc
from blindscore.wire import serde

from support import german_application, german_credit, pg_rows, status_name
from waiting import wait_for

T = TypeVar("T")

# ---------------------------------------------------------------------------------- key ring


def _fake_generation(
    monkeypatch: pytest.MonkeyPatch, pairs: list[KeyPair], dgk: DGKKeyPair, meet: threading.Barrier
) -> list[int]:
    """Key generation hands out ``pairs`` in turn, after waiting (at most 1 s) for a second
    generator at ``meet``: two replicas that both generate do so at once. Returns the call log."""
    calls: list[int] = []
    lock = threading.Lock()

    def paillier(bits: int = 2048) -> KeyPair:
        with contextlib.suppress(threading.BrokenBarrierError):
            meet.wait(timeout=1.0)
        with lock:
            calls.append(bits)
            return pairs[len(calls) - 1]

    monkeypatch.setattr(keyring, "generate_keypair", paillier)
    monkeypatch.setattr(keyring, "generate_dgk_keypair", lambda bits: dgk)
    return calls


@pytest.mark.parametrize("locked", [True, pytest.param(False, id="negative-control-unlocked")])
def test_two_replicas_starting_on_an_empty_ring_make_one_key(
    locked: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    paillier_keypair: KeyPair,
    second_paillier_keypair: KeyPair,
    dgk_keypair: DGKKeyPair,
) -> None:
    """Two KeyRing objects (as two processes: the lock is a flock on keys/.lock) call ensure() at
    once on one empty directory: one makes the key, the other finds it. Without the change lock
    (negative control) both make one, and the replicas would publish different current keys."""
    meet = threading.Barrier(2)
    calls = _fake_generation(monkeypatch, [paillier_keypair, second_paillier_keypair], dgk_keypair, meet)
    if not locked:
        monkeypatch.setattr(KeyRing, "_changing", lambda self: contextlib.nullcontext())
    directory = tmp_path / KEYS_DIR
    made: list[bool] = []
    threads = [threading.Thread(target=lambda: made.append(KeyRing(directory).ensure())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    ring = KeyRing(directory)
    if locked:
        assert sorted(made) == [False, True] and len(calls) == 1
        assert ring.ids() == [paillier_keypair.public_key.key_id] == [ring.current_id()]
    else:
        assert made == [True, True] and len(ring.ids()) == 2  # two keys: what the lock prevents


def test_a_rotation_reaches_every_replica_sharing_the_ring(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    paillier_keypair: KeyPair,
    second_paillier_keypair: KeyPair,
    dgk_keypair: DGKKeyPair,
) -> None:
    """Two bank nodes on one data directory (one result store); ``bank rotate-key`` (another
    KeyRing object) makes a new key: a replica that is asked for the new key id before its
    watcher polled rereads the ring at once, and both then answer under old and new keys."""
    _fake_generation(
        monkeypatch, [paillier_keypair, second_paillier_keypair], dgk_keypair, threading.Barrier(1)
    )
    a = BankNode.open("bank-r", tmp_path)
    b = BankNode.open("bank-r", tmp_path, database=f"sqlite:///{tmp_path / 'results.sqlite3'}")
    try:
        old = paillier_keypair.public_key.key_id
        assert a.key_id == b.key_id == old
        new = KeyRing(tmp_path / KEYS_DIR).rotate().key_id
        assert new == second_paillier_keypair.public_key.key_id
        assert b.key(new).key_id == new and b.key_id == new  # unknown id: reread at once
        assert [k.key_id for k in a.refresh_keys()] == [new] and a.key_id == new
        for node in (a, b):
            assert sorted(k.key_id for k in node.all_keys()) == sorted([old, new])
    finally:
        a.store.close()
        b.store.close()


# -------------------------------------------------------------------------- result store


def _record(app_id: str, band: int) -> BandRecord:
    return BandRecord(app_id, "m", "pk-x", band, f"band-{band}", time.time(), "plat", "bureau-1")


@contextlib.contextmanager
def _stores(url: str, count: int) -> Iterator[list[ResultStore]]:
    stores = [ResultStore.open(url) for _ in range(count)]
    try:
        yield stores
    finally:
        for store in stores:
            store.close()


def _race(stores: list[ResultStore], job: Callable[[ResultStore], T]) -> list[T]:
    """Run ``job(store)`` in one thread per store, released together; their results in order."""
    start = threading.Barrier(len(stores))
    out: dict[int, T] = {}

    def run(i: int) -> None:
        start.wait()
        out[i] = job(stores[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return [out[i] for i in range(len(stores))]


@pytest.mark.postgresql
def test_concurrent_replicas_store_one_band_and_one_round(pg_schema_url: str) -> None:
    """Four connections (as four replicas) store bands for the same applications at once, some
    with another band, and keep the same circuit round at once: each application ends with one
    band (the first committed), exactly one writer was told it was new, and one round row."""
    with _stores(pg_schema_url, 4) as stores:
        ids = [f"race-{i}" for i in range(20)]
        results = _race(stores, lambda s: s.put_many([_record(a, stores.index(s) % 2) for a in ids]))
        assert sum(new for new, _ in results) == len(ids)
        bands = {r.application_id: r.band for r in stores[0].all()}
        assert sorted(bands) == sorted(ids) and stores[0].count() == len(ids)
        for new, kept in results:
            assert len(kept) <= len(ids) - new  # refused only where another band came first

        stores[0].begin_runs("bureau-1", ["round-1"], [""], RunLimits(), platform_id="plat")
        pending = PendingRound("round-1", "plat", "ab" * 16, "0101", "m", "pk-x", ("a", "b", "c", "d", "e"))
        fresh = _race(stores, lambda s: s.put_round("bureau-1", pending))
        assert sorted(fresh) == [False, False, False, True]
        assert stores[1].round("bureau-1", "plat", "round-1", "ab" * 16) == pending


def test_the_bureau_registers_a_bank_as_a_list_of_replicas(
    tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    """``bank serve --advertise a,b`` registers both replicas: the bureau keeps the list (spaces
    dropped) and still refuses what is no address."""
    banks = BankRegistry(tmp_path)
    pk, dgk = paillier_keypair.public_key, dgk_keypair.public_key
    banks.register("bank-l", "127.0.0.1:5001, 127.0.0.1:5002", pk, dgk)
    assert banks.get("bank-l").address == "127.0.0.1:5001,127.0.0.1:5002"
    for bad in ("127.0.0.1:5001,", "127.0.0.1:5001,nohost", "a b:1", "dns:///x:1,127.0.0.1:2"):
        with pytest.raises(InvalidInputError, match="must look like host:port"):
            banks.register("bank-l", bad, pk, dgk)


# ----------------------------------------------------------------- replicas as processes

#: Generous: the machine is shared; a deadline only ever ends a test that failed.
DEADLINE_S = 90.0
_KEPT = re.compile(r"kept the earlier band of \d+ application\(s\) delivered again: (\[.*\])")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BankReplicas:
    """Bank replica "a" (the LocalNetwork's bank) and "b" on one data directory and one PostgreSQL
    database, registered with the bureau as the address list "a,b" (pick-first: a while it lives)."""

    def __init__(self, net: LocalNetwork, database: str, bank_b: NodeProcess, b_address: str) -> None:
        self.net = net
        self.database = database
        self.bank_b = bank_b
        #: b's own address (its ready file names the advertised list)
        self.b_address = b_address
        self.rows, _ = german_credit()
        self.channels: list[grpc.Channel] = []

    @property
    def bank_a(self) -> NodeProcess:
        return self.net.nodes["bank"]

    def platform(self) -> Any:
        channel = open_channel(self.net.platform_address, security=self.net.client_security)
        self.channels.append(channel)
        return pb_grpc.PlatformStub(channel)

    def app(self, i: int) -> Application:
        return german_application(self.net, self.rows, i, "bank", "bank-replica-test")

    def sql(self, query: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        return pg_rows(self.database, query, params)

    def deliveries(self) -> dict[str, int]:
        return {str(a): int(d) for a, d in self.sql("SELECT application_id, deliveries FROM bank_runs")}

    def band_rows(self) -> list[tuple[str, str]]:
        return [(str(a), str(b)) for a, b in self.sql("SELECT application_id, band_label FROM bank_bands")]

    def kept_again(self) -> set[str]:
        """Ids the banks logged as delivered again with another band than the one they keep."""
        found: set[str] = set()
        for node in (self.bank_a, self.bank_b):
            for match in _KEPT.finditer(node.log_file.read_text(errors="replace")):
                found |= set(ast.literal_eval(match.group(1)))
        return found

    def expected_label(self, app_id: str) -> set[str]:
        """The plaintext model's band label, and its neighbour when the score lies within the
        model's proven error margin of a cutoff (either is right)."""
        model = default_model()
        row = self.rows[int(app_id.split("-")[1])]
        labels = {model.policy.labels[model.band(row)]}
        score = model.linear_score(row)
        for k, cutoff in enumerate(model.score_cutoffs):
            if abs(score - cutoff) <= model.max_abs_error:
                labels |= {model.policy.labels[k], model.policy.labels[k + 1]}
        return labels


@contextlib.contextmanager
def bank_replicas(tmp_path: Path, database: str) -> Iterator[BankReplicas]:
    net = LocalNetwork(tmp_path, database=database)
    r: BankReplicas | None = None
    try:
        with net:
            a = net.nodes["bank"]
            b_address = f"127.0.0.1:{_free_port()}"
            bank_b = net.add_node(
                "bank2", [*a.args, "--advertise", f"{a.address},{b_address}"], listen=b_address
            )
            r = BankReplicas(net, database, bank_b, b_address)
            yield r
    finally:
        for channel in r.channels if r else []:
            channel.close()


def exactly_once(
    r: BankReplicas, accepted: set[str], refused: set[str], redeliverable: set[str]
) -> dict[str, list[str]]:
    """What breaks "every application gets exactly one band, the right one" at the bank's store:

    * lost: accepted, and no band; extra_rows: more than one band row for an id; unexpected: a
      band for an id nobody submitted (or refused: a refused member may hold one, committed
      before the bank died, and it is checked like the others);
    * wrong: a band the plaintext model does not give (outside its error margin);
    * doubled: the bank completed an application more than once (``bank_runs.deliveries``) and
      either learned another band the second time (its log's "kept the earlier band") or the
      application is not ``redeliverable``. Only a unary application may be delivered twice,
      when a kill lands between the bank's commit and its answer: the bureau then sends the same
      kept pad (or [band]) again and the bank decrypts the band it already holds.
    """
    rows = r.band_rows()
    per_app = Counter(a for a, _ in rows)
    kept_again = r.kept_again()
    problems = {
        "lost": sorted(accepted - set(per_app)),
        "extra_rows": sorted(a for a, n in per_app.items() if n > 1),
        "unexpected": sorted(set(per_app) - accepted - refused),
        "wrong": sorted(a for a, label in rows if label not in r.expected_label(a)),
        "doubled": sorted(
            a
            for a, n in r.deliveries().items()
            if n > 1 and (a in kept_again or a not in redeliverable or n > 2)
        ),
    }
    return {k: v for k, v in problems.items() if v}


def _submit_unary(stub: Any, apps: list[Application], answers: dict[str, str]) -> None:
    for app in apps:
        try:
            receipt = stub.ScoreApplication(serde.application_to_proto(app), timeout=60)
            answers[app.application_id] = "accepted" if receipt.accepted else status_name(receipt.error_code)
        except grpc.RpcError as exc:
            answers[app.application_id] = exc.code().name


def _submit_stream(stub: Any, apps: list[Application], answers: dict[str, str]) -> None:
    requests = [serde.application_to_proto(a) for a in apps]
    try:
        for receipt in stub.ScoreApplications(iter(requests), timeout=60):
            answers[receipt.application_id] = (
                "accepted" if receipt.accepted else status_name(receipt.error_code)
            )
    except grpc.RpcError as exc:
        for app in apps:
            answers.setdefault(app.application_id, exc.code().name)


def _load(r: BankReplicas, unary: range, stream: range, answers: dict[str, str]) -> list[threading.Thread]:
    """Two unary clients and two streams over the platform, started; the threads."""
    stub = r.platform()
    halves = [list(unary)[::2], list(unary)[1::2], list(stream)[::2], list(stream)[1::2]]
    jobs = [_submit_unary, _submit_unary, _submit_stream, _submit_stream]
    threads = [
        threading.Thread(target=job, args=(stub, [r.app(i) for i in ids], answers), daemon=True)
        for job, ids in zip(jobs, halves, strict=True)
    ]
    for t in threads:
        t.start()
    return threads


def _join(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(DEADLINE_S)
        assert not t.is_alive()


def _delivered(r: BankReplicas, count: int) -> set[str]:
    """The applications the bank completed, once there are at least ``count``, else none."""
    done = {a for a, d in r.deliveries().items() if d}
    return done if len(done) >= count else set()


def _deliver_another_band(r: BankReplicas, app_id: str) -> None:
    """The negative control's doubled band: a second DeliverBand for a completed application, with
    another band encrypted under the bank's key, sent to replica b as the bureau (its certificate)."""
    ((model_id, band),) = r.sql("SELECT model_id, band FROM bank_bands WHERE application_id = %s", (app_id,))
    key = KeyRing(r.net.bank_dir / KEYS_DIR).public_key(r.net.key_id)
    labels = tuple(default_model().policy.labels)
    delivery = BandDelivery(
        app_id,
        key.key_id,
        str(model_id),
        labels,
        key.encrypt((int(band) + 1) % len(labels)),
        r.net.platform_id,
    )
    security = TransportSecurity.from_pki(r.net.pki_dir, r.net.bureau_id).expecting("bank", r.net.bank_id)
    with open_channel(r.b_address, security=security) as channel:
        receipt = pb_grpc.BankStub(channel).DeliverBand(
            serde.band_delivery_to_proto(delivery, key), timeout=30
        )
    assert receipt.stored  # the same answer as for any delivery: the bank keeps its first band


@pytest.mark.postgresql
def test_bank_replicas_survive_a_kill_of_the_one_in_use(pg_schema_url: str, tmp_path: Path) -> None:
    """Two bank replicas on one key ring and one PostgreSQL store, registered as "a,b". Unary
    (garbled-circuit bands) and streamed (packed batches) load runs on a; a is killed -9 once
    bands are arriving, with the rest in flight; the bureau's next calls reach b, which holds none
    of a's OT sessions or tickets: they cost a fresh OT setup or round, or a retry. Then more load
    on b alone. Every accepted application has exactly one band, the right one, and none was
    learned twice (only a unary application in flight at the kill may be delivered twice, with
    the same band). A refusal is allowed only for a packed batch whose evaluation round was in
    flight at the kill (the bureau never runs one again). Negative control: a second delivery
    with another band, sent through b's RPC boundary, is caught by the same check."""
    with bank_replicas(tmp_path, pg_schema_url) as r:
        assert r.bank_b.info["key_id"] == r.net.key_id  # one ring: one current key
        registered = json.loads((r.net.bureau_dir / "banks" / f"{r.net.bank_id}.json").read_text())
        assert registered["address"] == f"{r.bank_a.address},{r.b_address}"

        answers: dict[str, str] = {}
        threads = _load(r, range(0, 16), range(16, 32), answers)
        at_kill = wait_for(lambda: _delivered(r, 4), DEADLINE_S, "bands from a")
        r.bank_a.process.kill()  # kill -9 mid-load
        r.bank_a.process.wait()
        _join(threads)
        assert len(at_kill) < 32  # the kill landed with work left
        _join(_load(r, range(32, 40), range(40, 48), answers))  # on b alone

        unary = {f"bank-{i}" for i in (*range(0, 16), *range(32, 40))}
        accepted = {a for a, v in answers.items() if v == "accepted"}
        refused = {a for a, v in answers.items() if v == "FAILED_PRECONDITION" and a not in unary}
        odd = sorted(f"{a}={v}" for a, v in answers.items() if v != "accepted")
        assert set(answers) == {f"bank-{i}" for i in range(48)} and accepted | refused == set(answers), odd
        assert unary <= accepted
        wait_for(
            lambda: set(accepted) <= {a for a, d in r.deliveries().items() if d},
            DEADLINE_S,
            "every accepted application's band at the bank",
        )
        assert exactly_once(r, accepted, refused, unary) == {}
        assert r.sql("SELECT COUNT(*) FROM bank_faults") == [(0,)]
        after_kill = {a for a in accepted if a not in at_kill}
        assert after_kill, "replica b completed nothing"

        # Negative control: the bank learns a second, different band of one application.
        victim = sorted(unary)[0]
        _deliver_another_band(r, victim)
        wait_for(lambda: victim in r.kept_again(), DEADLINE_S, "b's log of the band it did not keep")
        assert exactly_once(r, accepted, refused, unary) == {"doubled": [victim]}
