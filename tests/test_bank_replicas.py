"""Bank replicas (issue 16): several bank processes on one key ring and one PostgreSQL result store.

In-process: the key ring's change lock (two replicas starting on an empty ring make one key), a
rotation one replica makes reaching another, and the store's one-band-per-application insert under
concurrent writers. Over real processes: two bank replicas registered with the bureau as one
address list, under unary and streamed load, the replica in use killed -9 mid-load; at the bank's
store every application has exactly one band, the right one, and no second band was learned.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from blindscore.bank_node import keyring
from blindscore.bank_node.flow import BankNode
from blindscore.bank_node.keyring import KEYS_DIR, KeyRing
from blindscore.bank_node.store import BandRecord, PendingRound, ResultStore, RunLimits
from blindscore.crypto.dgk import DGKKeyPair
from blindscore.crypto.paillier import KeyPair

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
