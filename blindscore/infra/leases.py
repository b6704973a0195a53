"""Leases on shared rows, so that replicas of a node on one database each work on a row alone.

The design of bureau/claims.py, for any node's table: a claim sets ``claimed_by`` (the replica
id), ``lease_until`` (seconds on the *database's* clock, so replicas with skewed clocks agree) and
takes ``claim``, the fencing token, up by one. A replica renews the leases it holds every third
of a lease (:class:`LeaseKeeper`) and writes the outcome of a row's work only while the token is
still its own; a replica that was paused or cut off longer than its lease finds the token changed
and writes nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from blindscore.errors import BlindscoreError, InvalidInputError
from blindscore.infra.db import RetryLoop, Tx

log = logging.getLogger(__name__)

#: The columns a table with claims carries (added to older tables by :func:`add_claim_columns`).
CLAIM_COLUMNS = (
    ("claimed_by", "TEXT NOT NULL DEFAULT ''"),
    ("lease_until", "{real} NOT NULL DEFAULT 0"),
    ("claim", "{bigint} NOT NULL DEFAULT 0"),
)
#: Seconds a claim lasts unless renewed (``serve --lease-seconds``).
DEFAULT_LEASE_S = 30.0
#: Bounds of --lease-seconds: short leases make a paused replica lose its work sooner but cost
#: renewals (every third of a lease); a long one delays the takeover of a dead replica's work.
MIN_LEASE_S = 0.5
MAX_LEASE_S = 3600.0

F = TypeVar("F", bound=Hashable)


def check_lease_s(lease_s: float) -> float:
    """``lease_s`` if it is within the bounds, else InvalidInputError."""
    if not MIN_LEASE_S <= lease_s <= MAX_LEASE_S:
        raise InvalidInputError(f"lease must be between {MIN_LEASE_S} and {MAX_LEASE_S:.0f} seconds")
    return lease_s


def db_now(tx: Tx) -> float:
    """The database's clock, in seconds since the epoch: what leases are measured on."""
    row = tx.one("SELECT {now}")
    assert row is not None
    return float(row[0])


def add_claim_columns(tx: Tx, table: str) -> None:
    """Add the claim columns to ``table`` if it lacks them (a store made before replicas)."""
    if tx.backend == "postgresql":
        for name, kind in CLAIM_COLUMNS:
            tx.execute(f"ALTER TABLE {{{table}}} ADD COLUMN IF NOT EXISTS {name} {kind}")
        return
    have = {str(r[1]) for r in tx.all(f"PRAGMA table_info({{{table}}})")}
    for name, kind in CLAIM_COLUMNS:
        if name not in have:
            tx.execute(f"ALTER TABLE {{{table}}} ADD COLUMN {name} {kind}")


class LeaseKeeper(Generic[F]):
    """Renews the claims this process holds every third of a lease, and remembers those it lost.

    ``renew`` extends the leases of the fences it is given in one transaction and returns those
    whose rows were taken over (or finished) meanwhile. ``release`` gives rows back to every
    replica at once (:meth:`hand_back`). The keeper's thread starts on the first :meth:`hold`.
    """

    def __init__(
        self,
        name: str,
        lease_s: float,
        renew: Callable[[list[F]], list[F]],
        release: Callable[[list[F]], None],
    ) -> None:
        self.name = name
        self.lease_s = check_lease_s(lease_s)
        self._renew = renew
        self._release = release
        self._lock = threading.Lock()
        self._held: set[F] = set()
        self._lost: set[F] = set()
        self._loop: RetryLoop | None = None
        self._stopped = False

    def hold(self, fence: F) -> None:
        """Keep renewing ``fence``'s lease until :meth:`let_go`."""
        with self._lock:
            self._held.add(fence)
            if self._loop is None and not self._stopped:
                self._loop = RetryLoop(self.name, self._round, idle_s=self.lease_s / 3)
                self._loop.start()

    def let_go(self, *fences: F) -> None:
        with self._lock:
            for fence in fences:
                self._held.discard(fence)
                self._lost.discard(fence)

    def hand_back(self, *fences: F) -> None:
        """Let go of claims this process will not work on (it is stopping) and release their rows,
        so another replica, or this one restarted, takes them at once instead of waiting out the
        lease. If the database cannot be reached, the leases simply expire."""
        self.let_go(*fences)
        if not fences:
            return
        try:
            self._release(list(fences))
        except BlindscoreError as exc:
            log.warning(
                "%s: could not hand back %d row(s): %s; their leases expire", self.name, len(fences), exc
            )

    def is_lost(self, fence: F) -> bool:
        """Whether a renewal found ``fence``'s row taken over (or finished) by someone else."""
        with self._lock:
            return fence in self._lost

    def held(self) -> list[F]:
        with self._lock:
            return list(self._held)

    def stop(self) -> None:
        """Stop renewing, and hand back every claim still held (the process is going away)."""
        with self._lock:
            loop, self._loop, self._stopped = self._loop, None, True
        if loop is not None:
            loop.stop()
        with self._lock:
            held = list(self._held - self._lost)
        self.hand_back(*held)

    def _round(self) -> float:
        with self._lock:
            fences = list(self._held - self._lost)
        if fences:
            gone = self._renew(fences)
            if gone:
                log.warning(
                    "%s: lost the lease on %d row(s) (first %r): taken over by another replica or finished",
                    self.name, len(gone), gone[0],
                )  # fmt: skip
                with self._lock:
                    self._lost.update(f for f in gone if f in self._held)
        return self.lease_s / 3
