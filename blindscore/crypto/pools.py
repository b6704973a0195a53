"""Pools of precomputed randomness, filled from idle CPU so the online path only multiplies."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

#: How long the filling thread waits before looking again when requests are in flight.
_BUSY_WAIT_S = 0.002

_ALL: weakref.WeakSet[RandomnessPool] = weakref.WeakSet()
_inflight = 0
_inflight_lock = threading.Lock()


@contextlib.contextmanager
def request_scope() -> Iterator[None]:
    """Mark a request as in flight: pools do not refill while any request of the process runs.

    Node servicers wrap every call in it (blindscore.infra.status.grpc_errors does), so precomputation
    happens between requests, not on their time: under the GIL a value made while a request is
    served is paid for by that request (refilling alongside the bureau's round 2 measured +50%
    CPU on the request thread).
    """
    global _inflight
    with _inflight_lock:
        _inflight += 1
    try:
        yield
    finally:
        with _inflight_lock:
            _inflight -= 1


@contextlib.contextmanager
def waiting_on_peer() -> Iterator[None]:
    """Inside a request, mark a blocking call to another node: the pools may refill meanwhile."""
    global _inflight
    with _inflight_lock:
        _inflight -= 1
    try:
        yield
    finally:
        with _inflight_lock:
            _inflight += 1


class RandomnessPool:
    """A bounded pool of precomputed values (e.g. hs^r mod n^2 for fresh r), filled from idle CPU.

    ``take()`` pops a value or, when the pool is dry, computes one inline, so the pool changes
    speed, never results; a value is handed out once. A daemon thread starts on the first
    ``take()`` and makes one value at a time, at the lowest CPU priority, and only while no
    request is in flight in this process (see :func:`request_scope`). So bursts drain the pool,
    quiet periods refill it, and under sustained full load it stays empty, which costs what no
    pool would.

    A pool belongs to the process that filled it. Two ciphertexts with the same randomness leak
    the difference of their plaintexts to anyone holding the public key (for Paillier
    c1 / c2 = 1 + (m1 - m2) n mod n^2), so a forked child must never hand out a value its parent
    also holds. Two independent guards: the at-fork hook empties every pool in the child, and
    every draw compares ``os.getpid()`` with the pid that filled the values and drops them all
    on a mismatch, for a child made by a fork that skips the hooks (a C extension's ``fork()``).
    A pool cannot be pickled or copied either.
    """

    def __init__(self, make: Callable[[], Any], capacity: int, *, name: str = "randomness-pool") -> None:
        self._make = make
        self.capacity = capacity
        self.name = name
        self._values: deque[Any] = deque()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pid = os.getpid()  # the process whose values these are
        _ALL.add(self)

    def __len__(self) -> int:
        return len(self._values) if self._pid == os.getpid() else 0

    def __reduce_ex__(self, protocol: Any) -> Any:
        # A copy would hand out the same values twice (and a pickle would carry them elsewhere).
        raise TypeError(f"{type(self).__name__} holds process-local randomness: never copied or pickled")

    def take(self) -> Any:
        if self._pid != os.getpid():  # one cheap call on the hot path: see the class docstring
            self._forget()
        try:
            value = self._values.popleft()  # atomic under the GIL: no lock on the request path
        except IndexError:
            value = self._make()
        if self._thread is None:
            self._start()
        return value

    def warm(self, count: int | None = None) -> None:
        """Fill up to ``count`` values (default: capacity) synchronously, in the calling thread."""
        if self._pid != os.getpid():
            self._forget()
        target = self.capacity if count is None else min(self.capacity, count)
        while len(self._values) < target:
            self._values.append(self._make())

    def _forget(self) -> None:
        """Drop every value and the filling thread: this process did not make them."""
        # Only the forking thread survives a fork: the filling thread is gone (it restarts on the
        # next draw) and the lock may have been held by it. The new deque is in place before the
        # pid says so, so a thread that sees this process's pid also sees the empty deque.
        self._values = deque()
        self._thread = None
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                # The thread holds the pool weakly: once nothing else uses the pool (its key was
                # dropped, e.g. a node closed in a long-lived process) the thread ends.
                self._thread = threading.Thread(
                    target=_fill, args=(weakref.ref(self),), name=self.name, daemon=True
                )
                self._thread.start()


def _lowest_priority() -> None:
    """Make the calling thread run only on a core nothing else wants (Linux threads have their own
    scheduling policy and nice value).

    SCHED_IDLE, not only nice 19: the kernel counts a core that runs nothing but SCHED_IDLE
    threads as idle when it places a woken thread, while a nice-19 thread makes the core look busy.
    With nice 19 the second thread of a two-thread decryption (SecretKey.decrypt_many) was woken
    onto its waker's core behind it: one decryption took 2.2 ms at the median instead of 1.3 while
    another node's pool was filling (docs/performance.md). Nice 19 where SCHED_IDLE is missing.
    """
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, tid, 19)


def _fill(ref: weakref.ref[RandomnessPool]) -> None:
    _lowest_priority()
    while (pool := ref()) is not None:
        if len(pool._values) >= pool.capacity:
            pause = 0.05
        elif _inflight:
            pause = _BUSY_WAIT_S
        else:
            pool._values.append(pool._make())
            pause = 0.0  # hand the GIL to a request that may just have arrived
        del pool  # no strong reference while asleep
        time.sleep(pause)


def _after_fork_in_child() -> None:
    # The child must not hand out the values its parent holds (see RandomnessPool): empty every
    # pool now rather than waiting for the pid check of the next draw.
    for pool in list(_ALL):
        pool._forget()


os.register_at_fork(after_in_child=_after_fork_in_child)
