"""Test plug-in ($BLINDSCORE_MODEL_MODULES): a platform whose outbox records outcomes without the
fence (any replica's write lands, whoever holds the claim now), the negative control of
tests/test_platform_replicas.py. Never imported by blindscore itself."""

from __future__ import annotations

from typing import Any

from blindscore.platform_node.outbox import Outbox

_finish = Outbox._finish


def _unfenced_finish(self: Outbox, ids: Any, sets: str, params: Any, fence: Any, **options: Any) -> bool:
    return _finish(self, ids, sets, params, None, **options)


Outbox._finish = _unfenced_finish  # type: ignore[method-assign]
