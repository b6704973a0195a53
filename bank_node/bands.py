"""The bank's own systems reading its bands: one by application id, or each new one as it arrives."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

from blindscore.bank_node.store import BandRecord, ResultStore
from blindscore.errors import InvalidInputError, NotFoundError, PreconditionError
from blindscore.protocol import limits

#: Seconds between two looks at the store while following bands.
POLL_S = 0.5
#: A band's ``received_at`` is stamped before its transaction commits, so one stamped earlier can
#: become visible after a later one: every look reaches back this far and skips what it has sent.
OVERLAP_S = 10.0
#: Bands read per look at most (the rest follow on the next look, without waiting).
PAGE = 500


def band_of(store: ResultStore, application_id: str, platform_id: str = "") -> BandRecord:
    """The band stored for ``application_id`` (from ``platform_id``, or from any platform when "").

    NotFoundError when the bank holds none; PreconditionError when several platforms' applications
    share the id and ``platform_id`` does not say which.
    """
    limits.check_id("application_id", application_id)
    limits.check_id("platform_id", platform_id, optional=True)
    found = store.find(application_id, platform_id or None)
    if not found:
        whose = f" from platform {platform_id!r}" if platform_id else ""
        raise NotFoundError(f"the bank holds no band for application {application_id!r}{whose} (yet)")
    if len({r.platform_id for r in found}) > 1:
        platforms = ", ".join(sorted({r.platform_id for r in found}))
        raise PreconditionError(
            f"application id {application_id!r} came from several platforms ({platforms}); name one"
        )
    return found[0]


def follow_bands(
    store: ResultStore,
    since: float,
    *,
    active: Callable[[], bool],
    poll_s: float = POLL_S,
    sleep: Callable[[float], object] = time.sleep,
) -> Iterator[BandRecord]:
    """Every band received at or after ``since``, oldest first, then each new one, while ``active()``.

    Each (bureau, platform, application) is yielded once per call, also when its band became
    visible after a band stamped later (see :data:`OVERLAP_S`).
    """
    if not isinstance(since, int | float) or not math.isfinite(since) or since < 0:
        raise InvalidInputError(f"since must be a time in seconds since the epoch, not {since!r}")
    cursor = float(since)
    sent: dict[tuple[str, str, str], float] = {}
    while active():
        want = PAGE + len(sent)
        page = store.received_since(max(float(since), cursor - OVERLAP_S), want)
        fresh = [r for r in page if r.key not in sent]
        for record in fresh[:PAGE]:
            sent[record.key] = record.received_at
            cursor = max(cursor, record.received_at)
            yield record
        # Forget what lies before the window: no look reaches back to it again.
        horizon = cursor - OVERLAP_S
        for key in [k for k, t in sent.items() if t < horizon]:
            del sent[key]
        if len(page) < want:  # a full page may have left more behind: look again at once
            sleep(poll_s)
