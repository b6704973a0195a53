"""Test plug-in ($BLINDSCORE_MODEL_MODULES): a bureau without the fence check, the negative control
of tests/test_replicas.py. Never imported by blindscore itself."""

from __future__ import annotations

from typing import Any

from blindscore.bureau import applications, claims

_finish = applications.WorkStore._finish


def _unfenced_finish(self: Any, key: Any, sets: str, params: Any, claim: int | None, **options: Any) -> bool:
    return _finish(self, key, sets, params, None, **options)


claims.Fence.check = lambda self, tx: None  # type: ignore[method-assign]
applications.WorkStore._finish = _unfenced_finish  # type: ignore[method-assign]
