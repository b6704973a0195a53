"""Randomness pools and fork(): a forked child never hands out randomness its parent holds.

Two ciphertexts with the same randomness leak the difference of their plaintexts to anyone with
the public key (Paillier: c1 / c2 = 1 + (m1 - m2) n mod n^2; DGK: c1 / c2 = g^(m1 - m2)). The
pools guard against it twice, and each guard is tested alone: the at-fork hook empties every pool
in the child, and every draw drops values that another process filled (pid check). A negative
control switches both off and shows that the detection below then finds the shared randomness.
"""

from __future__ import annotations

import copy
import itertools
import json
import multiprocessing
import os
import pickle
import select
import signal
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from typing import Any

import gmpy2
import pytest

from blindscore.crypto import pools
from blindscore.crypto.dgk import DGKKeyPair, DGKPublicKey
from blindscore.crypto.paillier import KeyPair, PublicKey
from blindscore.crypto.pools import RandomnessPool

from waiting import wait_for

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # Python 3.12+ warns about forking a process that runs threads (the pools' fillers): that is
    # the situation under test.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

#: Draws per kind (raw values, encryptions of 0, encryptions of m) on each side of the fork.
DRAWS = 8
#: Values precomputed before the fork: enough for every draw of one side.
WARM = 3 * DRAWS
PARENT_M = 3
CHILD_M = 5
CHILD_TIMEOUT_S = 20.0


# ---------------------------------------------------------------- helpers


def _draw(pk: PublicKey, dgk: DGKPublicKey, m: int) -> dict[str, list[int]]:
    """What one process takes from the two pools: raw values, then encryptions of 0 and of m."""
    ppool, dpool = pk._randomness(), dgk._rand().pool
    return {
        "paillier_values": [int(ppool.take()) for _ in range(DRAWS)],
        "paillier_zero": [int(pk.encrypt(0)) for _ in range(DRAWS)],
        "paillier_m": [int(pk.encrypt(m)) for _ in range(DRAWS)],
        "dgk_values": [int(dpool.take()) for _ in range(DRAWS)],
        "dgk_zero": [int(dgk.encrypt(0)) for _ in range(DRAWS)],
        "dgk_m": [int(dgk.encrypt(m)) for _ in range(DRAWS)],
    }


def _pool_state(pk: PublicKey, dgk: DGKPublicKey) -> dict[str, int]:
    """What the pools hold as seen from this process: stored values, and what len() admits."""
    ppool, dpool = pk._randomness(), dgk._rand().pool
    return {
        "paillier_stored": len(ppool._values),
        "paillier_len": len(ppool),
        "paillier_pid": getattr(ppool, "_pid", -1),
        "dgk_stored": len(dpool._values),
        "dgk_len": len(dpool),
        "dgk_pid": getattr(dpool, "_pid", -1),
        "pid": os.getpid(),
    }


def _warm(pk: PublicKey, dgk: DGKPublicKey) -> dict[str, list[int]]:
    """Fill both pools and return the values at their fronts: what the next draws would get."""
    pk.warm(WARM)
    dgk.warm(WARM)
    ppool, dpool = pk._randomness(), dgk._rand().pool
    assert len(ppool) >= WARM and len(dpool) >= WARM
    return {
        "paillier": [int(v) for v in list(ppool._values)[:WARM]],
        "dgk": [int(v) for v in list(dpool._values)[:WARM]],
    }


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _in_forked_child(work: Callable[[], Any]) -> Any:
    """Run ``work`` in a child made by os.fork(); return what it sent back as JSON through a pipe.

    The child always leaves through os._exit, so no pytest machinery runs twice.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read)
            payload = json.dumps({"ok": work()}).encode()
            code = 0
        except BaseException:
            payload = json.dumps({"error": traceback.format_exc()}).encode()
        try:
            _write_all(write, payload)
        finally:
            os._exit(code)
    os.close(write)
    chunks: list[bytes] = []
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    try:
        while True:
            ready, _, _ = select.select([read], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                pytest.fail(f"forked child did not answer within {CHILD_TIMEOUT_S} s")
            chunk = os.read(read, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read)
        _, status = os.waitpid(pid, 0)
    answer = json.loads(b"".join(chunks))
    assert os.waitstatus_to_exitcode(status) == 0, answer.get("error")
    return answer["ok"]


def _paillier_cancelling_pairs(pk: PublicKey, ours: list[int], theirs: list[int]) -> list[tuple[int, int]]:
    """Pairs (i, j) whose randomness cancels: ours[i] / theirs[j] = 1 + k n mod n^2.

    Public-key-only detection of shared randomness; k is then the plaintext difference.
    """
    n, ns = pk.n, pk.nsquare
    inverses = [gmpy2.invert(c, ns) for c in theirs]
    return [
        (i, j)
        for i, a in enumerate(ours)
        for j, b_inv in enumerate(inverses)
        if gmpy2.mpz(a) * b_inv % ns % n == 1
    ]


def _dgk_cancelling_pairs(
    dgk: DGKPublicKey, ours: list[int], our_m: int, theirs: list[int], their_m: int
) -> list[tuple[int, int]]:
    """Pairs (i, j) with ours[i] / theirs[j] = g^(our_m - their_m) mod n: the randomness cancelled.

    (g has order u v_p v_q, not u, so the target is g^our_m / g^their_m, not g^(difference mod u).)
    """
    target = dgk.encrypt_trivial(our_m) * gmpy2.invert(dgk.encrypt_trivial(their_m), dgk.n) % dgk.n
    inverses = [gmpy2.invert(c, dgk.n) for c in theirs]
    return [
        (i, j)
        for i, a in enumerate(ours)
        for j, b_inv in enumerate(inverses)
        if gmpy2.mpz(a) * b_inv % dgk.n == target
    ]


def _shared(
    pk: PublicKey, dgk: DGKPublicKey, parent: dict[str, list[int]], child: dict[str, list[int]]
) -> dict[str, Any]:
    """Every way the two processes' draws can share randomness, found from public values only."""
    return {
        "paillier_values": set(parent["paillier_values"]) & set(child["paillier_values"]),
        "paillier_zero": set(parent["paillier_zero"]) & set(child["paillier_zero"]),
        "paillier_pairs": _paillier_cancelling_pairs(
            pk,
            parent["paillier_zero"] + parent["paillier_m"],
            child["paillier_zero"] + child["paillier_m"],
        ),
        "dgk_values": set(parent["dgk_values"]) & set(child["dgk_values"]),
        "dgk_zero": set(parent["dgk_zero"]) & set(child["dgk_zero"]),
        "dgk_pairs": _dgk_cancelling_pairs(dgk, parent["dgk_m"], PARENT_M, child["dgk_m"], CHILD_M),
    }


def _assert_nothing_shared(
    keys: tuple[KeyPair, DGKKeyPair],
    queued: dict[str, list[int]],
    parent: dict[str, list[int]],
    child: dict[str, list[int]],
) -> None:
    paillier, dgk = keys
    pk, dpk = paillier.public_key, dgk.public_key
    found = _shared(pk, dpk, parent, child)
    assert found == {
        "paillier_values": set(),
        "paillier_zero": set(),
        "paillier_pairs": [],
        "dgk_values": set(),
        "dgk_zero": set(),
        "dgk_pairs": [],
    }
    # Nor did the child use any value the parent had precomputed before the fork (Paillier
    # encryptions of 0 are exactly the pool values hs^r; DGK ones are h^r).
    child_paillier = child["paillier_values"] + child["paillier_zero"]
    child_dgk = child["dgk_values"] + child["dgk_zero"]
    assert not set(child_paillier) & set(queued["paillier"])
    assert not set(child_dgk) & set(queued["dgk"])
    assert len(set(child_paillier)) == len(child_paillier) and len(set(child_dgk)) == len(child_dgk)
    # The parent itself drew the precomputed values, in order: its pools were left alone.
    assert parent["paillier_values"] + parent["paillier_zero"] == queued["paillier"][: 2 * DRAWS]
    assert parent["dgk_values"] + parent["dgk_zero"] == queued["dgk"][: 2 * DRAWS]
    # The child's ciphertexts are genuine encryptions, not just different numbers.
    psk, dsk = paillier.secret_key, dgk.secret_key
    sample = child["paillier_zero"][:2] + child["paillier_m"][:2]
    assert [psk.decrypt(c) for c in sample] == [0, 0, CHILD_M, CHILD_M]
    assert [dsk.decrypt(c) for c in child["dgk_zero"] + child["dgk_m"]] == [0] * DRAWS + [CHILD_M] * DRAWS


class _FrozenPidOs:
    """The os module, except that getpid() keeps returning one pid: blinds the pools' pid check."""

    def __init__(self, pid: int) -> None:
        self._pid = pid

    def getpid(self) -> int:
        return self._pid

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def _blind_pid_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """After this, a forked child's pools believe they are still in the parent."""
    monkeypatch.setattr(pools, "os", _FrozenPidOs(os.getpid()))


def _blind_fork_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    """After this, the registered at-fork hook finds no pool to empty (it cannot be unregistered)."""
    monkeypatch.setattr(pools, "_ALL", weakref.WeakSet())


@pytest.fixture(scope="module")
def keys(paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> tuple[KeyPair, DGKKeyPair]:
    """The session keys; the Paillier public key as a second object, so its pool is these tests'
    alone (a DGK pool is shared by every object of the same key anyway)."""
    pk = paillier_keypair.public_key
    return KeyPair(PublicKey(int(pk.n), int(pk.hs)), paillier_keypair.secret_key), dgk_keypair


# ---------------------------------------------------------------- both guards, as deployed


def test_forked_child_shares_no_randomness_with_parent(keys: tuple[KeyPair, DGKKeyPair]) -> None:
    pk, dpk = keys[0].public_key, keys[1].public_key
    queued = _warm(pk, dpk)

    def child() -> dict[str, Any]:
        return {"state": _pool_state(pk, dpk), "draws": _draw(pk, dpk, CHILD_M)}

    answer = _in_forked_child(child)
    parent = _draw(pk, dpk, PARENT_M)
    state = answer["state"]
    assert state["pid"] != os.getpid()
    assert (state["paillier_stored"], state["dgk_stored"]) == (0, 0)  # emptied at the fork
    assert (state["paillier_pid"], state["dgk_pid"]) == (state["pid"], state["pid"])
    _assert_nothing_shared(keys, queued, parent, answer["draws"])


def test_multiprocessing_fork_worker_draws_its_own_randomness(keys: tuple[KeyPair, DGKKeyPair]) -> None:
    pk, dpk = keys[0].public_key, keys[1].public_key
    queued = _warm(pk, dpk)
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)

    def worker() -> None:  # runs in the forked worker, which multiprocessing ends with os._exit
        sender.send(_draw(pk, dpk, CHILD_M))
        sender.close()

    process = ctx.Process(target=worker, name="pool-fork-worker")
    process.start()
    try:
        sender.close()
        parent = _draw(pk, dpk, PARENT_M)
        assert receiver.poll(CHILD_TIMEOUT_S), "the worker sent nothing"
        child = receiver.recv()
    finally:
        process.join(CHILD_TIMEOUT_S)
        if process.is_alive():
            process.kill()
            process.join()
    assert process.exitcode == 0
    _assert_nothing_shared(keys, queued, parent, child)


# ---------------------------------------------------------------- each guard alone


def test_fork_hook_alone_empties_the_child_pools(
    keys: tuple[KeyPair, DGKKeyPair], monkeypatch: pytest.MonkeyPatch
) -> None:
    pk, dpk = keys[0].public_key, keys[1].public_key
    queued = _warm(pk, dpk)
    _blind_pid_check(monkeypatch)

    def child() -> dict[str, Any]:
        return {"state": _pool_state(pk, dpk), "draws": _draw(pk, dpk, CHILD_M)}

    answer = _in_forked_child(child)
    parent = _draw(pk, dpk, PARENT_M)
    state = answer["state"]
    # The pid check was blind (the pools still name the parent's pid), and the hook emptied them.
    assert state["pid"] != os.getpid()
    assert (state["paillier_pid"], state["dgk_pid"]) == (os.getpid(), os.getpid())
    assert (state["paillier_stored"], state["dgk_stored"]) == (0, 0)
    _assert_nothing_shared(keys, queued, parent, answer["draws"])


def test_pid_check_alone_drops_values_the_hook_left(
    keys: tuple[KeyPair, DGKKeyPair], monkeypatch: pytest.MonkeyPatch
) -> None:
    pk, dpk = keys[0].public_key, keys[1].public_key
    queued = _warm(pk, dpk)
    _blind_fork_hook(monkeypatch)

    def child() -> dict[str, Any]:
        before = _pool_state(pk, dpk)
        draws = _draw(pk, dpk, CHILD_M)
        return {"before": before, "after": _pool_state(pk, dpk), "draws": draws}

    answer = _in_forked_child(child)
    parent = _draw(pk, dpk, PARENT_M)
    before, after = answer["before"], answer["after"]
    # The hook was blind: the child still held the parent's values, under the parent's pid ...
    assert before["paillier_stored"] >= WARM and before["dgk_stored"] >= WARM
    assert (before["paillier_pid"], before["dgk_pid"]) == (os.getpid(), os.getpid())
    # ... which len() already disowned and the first draw dropped, claiming the pools.
    assert (before["paillier_len"], before["dgk_len"]) == (0, 0)
    assert (after["paillier_pid"], after["dgk_pid"]) == (after["pid"], after["pid"])
    _assert_nothing_shared(keys, queued, parent, answer["draws"])


def test_take_from_a_pool_filled_by_another_pid_computes_fresh_values() -> None:
    """The pid check without any fork: a pool that records a foreign pid drops all it holds."""
    made = itertools.count()
    pool = RandomnessPool(lambda: next(made), 8, name="foreign-pid-pool")
    pool.warm()
    assert list(pool._values) == list(range(8)) and len(pool) == 8
    stale_thread = threading.Thread(target=lambda: None)  # a parent's filler, gone in a child
    pool._thread = stale_thread
    pool._pid = os.getppid()  # filled "by the parent"
    assert len(pool) == 0  # not this process's values
    assert pool.take() == 8  # computed now: none of 0..7 is handed out
    assert pool._pid == os.getpid()
    assert pool._thread is not stale_thread and pool._thread is not None and pool._thread.is_alive()
    wait_for(lambda: len(pool) >= 8, what="the new filler to refill the pool")
    assert len(pool) == 8 and all(v > 8 for v in list(pool._values))  # the new filler makes fresh values only
    # warm() checks too.
    pool._pid = os.getppid()
    pool.warm(4)
    assert pool._pid == os.getpid() and len(pool) == 4 and min(pool._values) > 16


def test_a_pool_cannot_be_copied_or_pickled() -> None:
    pool = RandomnessPool(itertools.count().__next__, 4, name="copy-pool")
    pool.warm()
    for duplicate in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError, match="process-local randomness"):
            duplicate(pool)
    assert list(pool._values) == [0, 1, 2, 3]


# ---------------------------------------------------------------- negative control


def test_negative_control_without_both_guards_the_child_reuses_parent_randomness(
    keys: tuple[KeyPair, DGKKeyPair], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both guards switched off: the detection used above must then find the shared randomness.

    This is the fork bug as it was; if this test fails, the checks above prove nothing.
    """
    pk, dpk = keys[0].public_key, keys[1].public_key
    queued = _warm(pk, dpk)
    _blind_pid_check(monkeypatch)
    _blind_fork_hook(monkeypatch)

    answer = _in_forked_child(lambda: _draw(pk, dpk, CHILD_M))
    parent = _draw(pk, dpk, PARENT_M)
    found = _shared(pk, dpk, parent, answer)
    # The child handed out exactly the parent's precomputed values, in the same order.
    for kind in ("values", "zero"):
        assert answer[f"paillier_{kind}"] == parent[f"paillier_{kind}"]
        assert answer[f"dgk_{kind}"] == parent[f"dgk_{kind}"]
        assert len(found[f"paillier_{kind}"]) == len(found[f"dgk_{kind}"]) == DRAWS
    assert answer["paillier_values"] + answer["paillier_zero"] == queued["paillier"][: 2 * DRAWS]
    diagonal = [(i, i) for i in range(2 * DRAWS)]
    assert found["paillier_pairs"] == diagonal
    assert found["dgk_pairs"] == [(i, i) for i in range(DRAWS)]
    # And anyone with the public key reads the plaintext difference off the two ciphertexts.
    ns, n = pk.nsquare, pk.n
    for c1, c2 in zip(parent["paillier_m"], answer["paillier_m"], strict=True):
        ratio = gmpy2.mpz(c1) * gmpy2.invert(c2, ns) % ns
        assert (ratio - 1) % n == 0 and (ratio - 1) // n == (PARENT_M - CHILD_M) % n


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="needs Linux scheduling policies")
def test_the_filling_thread_runs_at_idle_priority() -> None:
    """The filler is SCHED_IDLE (so a core running it still counts as idle when a woken thread is
    placed: the two-thread decryption needs that); the request thread keeps its own policy."""
    made: list[int] = []
    pool = RandomnessPool(lambda: made.append(1) or len(made), 4, name="idle-priority-test")
    before = os.sched_getscheduler(threading.get_native_id())
    pool.take()
    wait_for(lambda: len(pool) >= 4, what="the pool to fill")
    (filler,) = [t for t in threading.enumerate() if t.name == "idle-priority-test"]
    assert filler.native_id is not None
    assert os.sched_getscheduler(filler.native_id) == os.SCHED_IDLE
    assert os.sched_getscheduler(threading.get_native_id()) == before != os.SCHED_IDLE
