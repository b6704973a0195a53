"""Randomness pools (blindscore.crypto.pools): the filler's rounds, request scopes, warm-up, fork hook."""

from __future__ import annotations

import copy
import itertools
import os
import pickle
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

from blindscore.crypto import pools
from blindscore.crypto.pools import RandomnessPool, request_scope, waiting_on_peer


class Maker:
    """A pool's ``make``: numbered values, and the thread, scheduling policy and nice value each
    was made with."""

    def __init__(self) -> None:
        self.count = itertools.count(100)
        self.seen: list[tuple[str, int, int]] = []

    def __call__(self) -> int:
        tid = threading.get_native_id()
        policy = os.sched_getscheduler(tid)
        self.seen.append((threading.current_thread().name, policy, os.getpriority(os.PRIO_PROCESS, tid)))
        return next(self.count)


@dataclass
class Round:
    """What a filling thread did up to its first pause."""

    thread: threading.Thread
    pauses: list[Any]
    values: list[int]


def first_round(monkeypatch: pytest.MonkeyPatch, make_pool: Callable[[], RandomnessPool]) -> Round:
    """Start the filling thread of the pool ``make_pool`` returns, hold it at its first pause, note
    what it did, then let go of the pool: the thread finds it gone and ends (it holds it weakly)."""
    pauses: list[Any] = []
    paused, released = threading.Event(), threading.Event()
    real_sleep = time.sleep

    def sleep(seconds: Any) -> None:
        if threading.current_thread().name != "pool-under-test":  # another pool's filler
            real_sleep(seconds)
            return
        pauses.append(seconds)
        paused.set()
        released.wait(10)

    monkeypatch.setattr(pools, "time", SimpleNamespace(sleep=sleep))
    pool = make_pool()
    pool._start()
    thread = pool._thread
    assert thread is not None
    deadline = time.monotonic() + 10
    while not paused.wait(0.01) and thread.is_alive() and time.monotonic() < deadline:
        pass
    values = [int(v) for v in pool._values]
    del pool
    released.set()
    thread.join(10)
    assert not thread.is_alive()
    return Round(thread, pauses, values)


def new_pool(make: Maker, *, warm: bool = False) -> Callable[[], RandomnessPool]:
    def build() -> RandomnessPool:
        pool = RandomnessPool(make, 3, name="pool-under-test")
        if warm:
            pool.warm()
        return pool

    return build


def test_an_idle_filler_makes_a_value_at_the_lowest_priority_and_goes_on_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make = Maker()
    assert pools._inflight == 0
    done = first_round(monkeypatch, new_pool(make))
    assert done.thread.daemon is True  # never keeps the process alive
    # SCHED_IDLE, and its nice value left as it was (not also 19).
    own_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert make.seen == [("pool-under-test", os.SCHED_IDLE, own_nice)]
    assert done.values == [100]
    assert done.pauses == [0.0]  # no wait between values while nothing else runs


def test_a_full_pool_is_looked_at_again_soon_without_making_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    make = Maker()
    done = first_round(monkeypatch, new_pool(make, warm=True))
    assert len(make.seen) == 3 and done.values == [100, 101, 102]  # warm's three only
    assert len(done.pauses) == 1 and 0 < done.pauses[0] <= 0.1


def test_a_filler_waits_while_a_request_is_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    make = Maker()
    with request_scope():
        done = first_round(monkeypatch, new_pool(make))
    assert make.seen == [] and done.values == []
    assert done.pauses == [pools._BUSY_WAIT_S] and 0 < pools._BUSY_WAIT_S <= 0.01


class _OsRefusingPriorities:
    """The os module where setting a thread's policy or priority is refused (a sandbox)."""

    def sched_setscheduler(self, pid: int, policy: int, param: Any) -> None:
        raise PermissionError(1, "Operation not permitted")

    def setpriority(self, which: int, who: int, priority: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


class _OsWithoutPriorities:
    """The os module of a platform without thread policies or priorities."""

    def __getattr__(self, name: str) -> Any:
        if name in ("sched_setscheduler", "SCHED_IDLE", "setpriority"):
            raise AttributeError(name)
        return getattr(os, name)


class _OsRefusingIdle:
    """The os module where SCHED_IDLE is refused but a nice value may be set."""

    def sched_setscheduler(self, pid: int, policy: int, param: Any) -> None:
        raise PermissionError(1, "Operation not permitted")

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def test_a_filler_refused_sched_idle_runs_at_nice_19(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pools, "os", _OsRefusingIdle())
    make = Maker()
    done = first_round(monkeypatch, new_pool(make))
    assert make.seen == [("pool-under-test", os.SCHED_OTHER, 19)] and done.values == [100]


@pytest.mark.parametrize(
    "stand_in", [_OsRefusingPriorities, _OsWithoutPriorities], ids=["refused", "missing"]
)
def test_a_filler_fills_where_thread_priorities_cannot_be_set(
    monkeypatch: pytest.MonkeyPatch, stand_in: type
) -> None:
    monkeypatch.setattr(pools, "os", stand_in())
    done = first_round(monkeypatch, new_pool(Maker()))
    assert done.values == [100] and done.pauses == [0.0]


def test_the_filler_is_named_after_its_pool() -> None:
    pool = RandomnessPool(Maker(), 2)
    assert pool.name == "randomness-pool"
    pool.take()
    assert pool._thread is not None and pool._thread.name == "randomness-pool"


def test_request_scopes_count_the_requests_in_flight() -> None:
    base = pools._inflight
    with request_scope():
        assert pools._inflight == base + 1
        with request_scope():
            assert pools._inflight == base + 2
            with waiting_on_peer():
                assert pools._inflight == base + 1
            assert pools._inflight == base + 2
        with pytest.raises(KeyError, match=r"^'a failing request still leaves the count'$"), request_scope():
            raise KeyError("a failing request still leaves the count")
        assert pools._inflight == base + 1
    assert pools._inflight == base


def test_warm_fills_up_to_the_count_and_never_beyond_the_capacity() -> None:
    pool = RandomnessPool(Maker(), 4, name="pool-under-test")
    pool.warm(2)
    assert list(pool._values) == [100, 101]
    pool.warm(10)
    assert list(pool._values) == [100, 101, 102, 103]
    pool.warm()
    assert len(pool) == 4
    assert pool.take() == 100


def test_the_fork_hook_empties_every_pool_of_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the at-fork hook does in a child, run here on two pools of the test's own."""
    first, second = RandomnessPool(Maker(), 3, name="a"), RandomnessPool(Maker(), 3, name="b")
    monkeypatch.setattr(pools, "_ALL", weakref.WeakSet([first, second]))
    first.warm()
    second.warm()
    pools._after_fork_in_child()
    assert (len(first._values), len(second._values)) == (0, 0)
    assert (first._thread, second._thread) == (None, None)


def test_a_pool_refuses_copies_with_the_whole_text() -> None:
    pool = RandomnessPool(Maker(), 2, name="pool-under-test")
    message = "RandomnessPool holds process-local randomness: never copied or pickled"
    for duplicate in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError) as caught:
            duplicate(pool)
        assert str(caught.value) == message
