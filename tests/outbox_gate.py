"""Test plug-in ($BLINDSCORE_MODEL_MODULES): holds one platform replica just before it records that
the bureau did not answer, so tests/test_platform_replicas.py can pause it there. Never imported
by blindscore itself.

Active only in ``platform serve`` processes whose ``--replica-id`` is $BLINDSCORE_TEST_GATE_REPLICA,
for application ids starting with "gate-": it creates ``$BLINDSCORE_TEST_GATE/<id>.waiting`` and
waits until ``<id>.open`` exists there.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from blindscore.platform_node.outbox import Outbox

_retry_later = Outbox.retry_later


def _replica() -> str:
    argv = sys.argv
    return argv[argv.index("--replica-id") + 1] if "--replica-id" in argv[:-1] else ""


def _gated_retry_later(self: Outbox, application_ids: Any, *args: Any, **kwargs: Any) -> bool:
    gate = os.environ.get("BLINDSCORE_TEST_GATE")
    ids = [application_ids] if isinstance(application_ids, str) else list(application_ids)
    held = [i for i in ids if i.startswith("gate-")]
    if gate and held and _replica() == os.environ.get("BLINDSCORE_TEST_GATE_REPLICA"):
        (Path(gate) / f"{held[0]}.waiting").touch()
        while not (Path(gate) / f"{held[0]}.open").exists():
            time.sleep(0.02)
    return _retry_later(self, application_ids, *args, **kwargs)


Outbox.retry_later = _gated_retry_later  # type: ignore[method-assign]
