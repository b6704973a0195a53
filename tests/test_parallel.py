"""Horner packing on worker processes (blindscore.crypto.parallel) equals packing in process."""

from __future__ import annotations

import random

import gmpy2
import pytest

from blindscore.crypto import parallel
from blindscore.crypto.paillier import KeyPair
from blindscore.errors import InvalidInputError


def serial(modulus: int, shift: int, chunks: list[list[int]]) -> list[int]:
    """The definition: sum of c_j^(2^(shift j)), written as separate powers, no Horner."""
    out = []
    for chunk in chunks:
        acc = gmpy2.mpz(1)
        for j, c in enumerate(chunk):
            acc = acc * gmpy2.powmod(c, 1 << (shift * j), modulus) % modulus
        out.append(int(acc))
    return out


def test_the_workers_pack_what_the_definition_packs(
    paillier_keypair: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of different lengths, repeated ciphertexts (sent once per task), more chunks than
    tasks: the pool's result equals the definition, in chunk order."""
    monkeypatch.setenv(parallel.WORKERS_ENV, "2")
    monkeypatch.setattr(parallel, "MIN_SQUARINGS", 1)
    pk = paillier_keypair.public_key
    rng = random.Random(11)
    base = [int(pk.encrypt(rng.randrange(1000))) for _ in range(6)]
    chunks = [[base[rng.randrange(6)] for _ in range(rng.randrange(1, 9))] for _ in range(11)]
    calls: list[int] = []
    real = parallel._executor

    def counting() -> object:
        pool = real()
        assert pool is not None  # two workers: a real pool, not the in-process fallback
        calls.append(1)
        return pool

    monkeypatch.setattr(parallel, "_executor", counting)
    got = parallel.pack(pk.nsquare, 7, chunks)
    assert calls == [1]  # the pool was asked for, not bypassed
    assert [int(x) for x in got] == serial(int(pk.nsquare), 7, chunks)
    decrypted = [paillier_keypair.secret_key.decrypt(c) for c in pk.pack_slots(chunks, 7)]
    assert decrypted == [
        sum(paillier_keypair.secret_key.decrypt(c) << (7 * j) for j, c in enumerate(chunk))
        for chunk in chunks
    ]


def test_small_jobs_and_single_cores_stay_in_process(
    paillier_keypair: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    pk = paillier_keypair.public_key
    c = [int(pk.encrypt(v)) for v in (1, 2, 3, 4)]
    chunks = [c[:1], c[:3], [c[3], c[1], c[0], c[2]]]  # lengths 1, 3, 4: Horner's order matters

    def refuse() -> None:
        raise AssertionError("the pool must not be used")

    monkeypatch.setattr(parallel, "_executor", refuse)
    assert [int(x) for x in parallel.pack(pk.nsquare, 5, chunks)] == serial(int(pk.nsquare), 5, chunks)
    monkeypatch.undo()
    monkeypatch.setenv(parallel.WORKERS_ENV, "1")
    assert parallel._executor() is None


@pytest.mark.parametrize(("raw", "count"), [("0", 0), ("3", 3), (" 2 ", 2), ("-4", 0)])
def test_the_worker_count_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, raw: str, count: int
) -> None:
    monkeypatch.setenv(parallel.WORKERS_ENV, raw)
    assert parallel.worker_count() == count


def test_a_malformed_worker_count_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(parallel.WORKERS_ENV, "two")
    with pytest.raises(
        InvalidInputError, match=r"^BLINDSCORE_CRYPTO_WORKERS must be a whole number of processes, got 'two'$"
    ):
        parallel.worker_count()


def test_packing_refuses_empty_chunks(paillier_keypair: KeyPair) -> None:
    with pytest.raises(
        InvalidInputError, match=r"^packing needs a positive slot width and non-empty chunks$"
    ):
        paillier_keypair.public_key.pack_slots([[]], 5)


def test_the_pool_never_forks_the_node_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers come from a fork server (a fresh interpreter), never from forking a process that
    runs gRPC threads; where there is no fork server, from spawn."""
    monkeypatch.setenv(parallel.WORKERS_ENV, "2")
    pool = parallel._executor()
    assert pool is not None
    assert pool._mp_context.get_start_method() == "forkserver"  # type: ignore[attr-defined]
    monkeypatch.setattr(parallel, "_pool", None)
    monkeypatch.setattr(parallel.multiprocessing, "get_all_start_methods", lambda: ["fork", "spawn"])
    spawned = parallel._executor()
    assert spawned is not None and spawned._mp_context.get_start_method() == "spawn"  # type: ignore[attr-defined]
    spawned.shutdown()


def test_a_task_packs_chunks_given_as_indices_into_its_bases() -> None:
    """The worker's side, run here: each chunk names its ciphertexts by index into ``bases`` (a
    base used twice, a chunk of one), and the packed values come back as ints in chunk order."""
    modulus = (1 << 127) - 1
    bases = [3, 5, 1 << 100, modulus - 2]
    chunks = [[0, 1, 0], [2], [3, 3, 1, 2]]
    got = parallel._pack_task(modulus, 6, bases, chunks)
    assert all(type(x) is int for x in got)
    assert got == serial(modulus, 6, [[bases[i] for i in chunk] for chunk in chunks])


def test_warm_starts_the_workers_before_the_first_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """After ``warm`` the pool exists and has live worker processes. (From a fork server the
    executor spawns a worker per submitted job while none is idle, so warm's two short jobs
    normally start both; one may finish before the second is submitted, hence not ``== 2``.)"""
    monkeypatch.setenv(parallel.WORKERS_ENV, "2")
    monkeypatch.setattr(parallel, "_pool", None)
    parallel.warm()
    pool = parallel._pool
    assert pool is not None
    try:
        workers = list(pool._processes.values())  # type: ignore[attr-defined]
        assert 1 <= len(workers) <= 2
        assert all(p.is_alive() for p in workers)
    finally:
        pool.shutdown()


def test_at_exit_the_pool_is_let_go_without_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_shutdown`` (registered with atexit) does not wait for running jobs, cancels queued ones
    and forgets the pool, so that a later job would start a new one."""
    calls: list[dict[str, object]] = []

    class Pool:
        def shutdown(self, **kwargs: object) -> None:
            calls.append(kwargs)

    monkeypatch.setattr(parallel, "_pool", Pool())
    parallel._shutdown()
    assert calls == [{"wait": False, "cancel_futures": True}]
    assert parallel._pool is None
    parallel._shutdown()  # nothing left to shut down
    assert calls == [{"wait": False, "cancel_futures": True}]
