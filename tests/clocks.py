"""Test clocks: a ``time`` module whose ``perf_counter`` steps, so that reported durations are exact."""

from __future__ import annotations

import time
from typing import Any


class SteppedClock:
    """Stands in for a module's ``time``: ``perf_counter`` moves 0.5 s a call (exact in binary), so
    every stage timed between two consecutive calls is exactly 500 ms; everything else (``time.time``
    ...) is the real module's. Patch it into one module (``monkeypatch.setattr(flow, "time", ...)``):
    nothing outside that module sees it."""

    def __init__(self) -> None:
        self.calls = 0

    def perf_counter(self) -> float:
        self.calls += 1
        return 0.5 * self.calls

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)
