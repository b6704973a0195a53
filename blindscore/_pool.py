"""Pools of precomputed randomness, filled from idle CPU so the online path only multiplies."""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

#: The filling thread naps this long between values and checks that the rest of the process was idle.
_PROBE_S = 0.0005
#: ... where idle means: the other threads used less than this share of one core during the nap.
_BUSY_SHARE = 0.2

_ALL: weakref.WeakSet[RandomnessPool] = weakref.WeakSet()


class RandomnessPool:
    """A bounded pool of precomputed values (e.g. hs^r mod n^2 for fresh r), filled from idle CPU.

    ``take()`` pops a value or, when the pool is dry, computes one inline, so the pool changes
    speed, never results; a value is handed out once. A daemon thread starts on the first
    ``take()`` and makes one value at a time, and only after a short nap in which the other
    threads of the process were (nearly) idle. Under the GIL a value made while a request is
    being served is paid for by that request (refilling alongside the bureau's round 2 measured
    +50% CPU on the request thread). So bursts drain the pool, quiet periods refill it, and under
    sustained full load it stays empty, which costs what no pool would.
    """

    def __init__(self, make: Callable[[], Any], capacity: int, *, name: str = "randomness-pool") -> None:
        self._make = make
        self.capacity = capacity
        self.name = name
        self._values: deque[Any] = deque()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        _ALL.add(self)

    def __len__(self) -> int:
        return len(self._values)

    def take(self) -> Any:
        try:
            value = self._values.popleft()  # atomic under the GIL: no lock on the request path
        except IndexError:
            value = self._make()
        if self._thread is None:
            self._start()
        return value

    def warm(self, count: int | None = None) -> None:
        """Fill up to ``count`` values (default: capacity) synchronously, in the calling thread."""
        target = self.capacity if count is None else min(self.capacity, count)
        while len(self._values) < target:
            self._values.append(self._make())

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._fill, name=self.name, daemon=True)
                self._thread.start()

    def _fill(self) -> None:
        while True:
            if len(self._values) >= self.capacity:
                time.sleep(0.05)
                continue
            wall, proc, own = time.monotonic(), time.process_time(), time.thread_time()
            time.sleep(_PROBE_S)
            others = (time.process_time() - proc) - (time.thread_time() - own)
            if others > _BUSY_SHARE * (time.monotonic() - wall):
                continue
            self._values.append(self._make())


def _after_fork_in_child() -> None:
    # Only the forking thread survives a fork: filling threads are gone and restart on the next
    # draw; a lock may have been held by one of them.
    for pool in list(_ALL):
        pool._thread = None
        pool._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
