"""Waiting in tests: poll until something has happened instead of sleeping a guessed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: How long a test waits for something that normally takes milliseconds; generous because the
#: suite shares a small machine with other work, and a timeout only ever ends a test that failed.
WAIT_S = 30.0


def wait_for(condition: Callable[[], T], timeout: float = WAIT_S, what: str = "the condition") -> T:
    """Poll ``condition`` until it returns something truthy and return that; fail after ``timeout`` s.

    Stands in for a fixed sleep before checking that something happened: it returns as soon as
    it has, and a slow machine only makes it wait longer, never fail.
    """
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
