"""Test plug-in ($BLINDSCORE_MODEL_MODULES): a bureau without the fence check, the negative control
of tests/test_replicas.py. Never imported by blindscore itself."""

from __future__ import annotations

from typing import Any

from blindscore.bureau import applications, bank_link, claims

_finish = applications.WorkStore._finish


def _unfenced_finish(self: Any, key: Any, sets: str, params: Any, claim: int | None, **options: Any) -> bool:
    return _finish(self, key, sets, params, None, **options)


claims.Fence.check = lambda self, tx: None  # type: ignore[method-assign]
applications.WorkStore._finish = _unfenced_finish  # type: ignore[method-assign]
# The test pauses this replica mid-call for as long as the other one takes to take the row over
# and deliver; past the 10 s deadline the call fails on resume and there is nothing to deliver
# again, so on a loaded machine the control would not show what it is there to show (one CI run
# timed out waiting for the second delivery). A deadline longer than any such pause.
bank_link.RPC_TIMEOUT_S = 600.0
