"""Leases on pending rows, so that bureau replicas sharing one database run each one exactly once.

A replica that accepts an application or batch claims its row in the same transaction; the
retry worker of any replica claims rows whose lease expired (or that nobody holds). A claim sets
``claimed_by`` (the replica id), ``lease_until`` (seconds on the *database's* clock, so replicas
with skewed clocks agree) and increments ``claim``, the fencing token. Every write that finishes
a row, or spends a round of it in the evaluation ledger, runs :meth:`Fence.check` (or names the
token in its WHERE clause) in its own transaction: a replica whose lease was taken over meanwhile
gets LeaseLostError instead of writing, and stops.

The row is locked while it is checked (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite serialises
every writer), so a takeover and a fenced write can never both commit on one token.
"""

from __future__ import annotations

from dataclasses import dataclass

from blindscore.errors import LeaseLostError
from blindscore.infra.db import Tx

# The lease columns, bounds and the database clock are every node's (blindscore/infra/leases.py).
from blindscore.infra.leases import (
    CLAIM_COLUMNS,
    DEFAULT_LEASE_S,
    MAX_LEASE_S,
    MIN_LEASE_S,
    add_claim_columns,
    db_now,
)

__all__ = [
    "CLAIM_COLUMNS",
    "DEFAULT_LEASE_S",
    "MAX_LEASE_S",
    "MIN_LEASE_S",
    "PENDING",
    "Fence",
    "add_claim_columns",
    "db_now",
    "lost",
]

PENDING = "pending"


@dataclass(frozen=True)
class Fence:
    """The claim a replica holds on one pending row: the row's table and key, and the token."""

    table: str
    id_column: str
    platform_id: str
    row_id: str
    claim: int

    @property
    def what(self) -> str:
        return f"{self.table[:-1]} {self.row_id[:64]!r} of {self.platform_id[:64]!r}"

    def check(self, tx: Tx) -> None:
        """Lock the row and raise LeaseLostError unless it is still pending under this claim."""
        row = tx.one(
            f"SELECT claim, state FROM {{{self.table}}} WHERE platform_id = ? AND {self.id_column} = ? "
            "{for_update}",
            (self.platform_id, self.row_id),
        )
        if row is None or int(row[0]) != self.claim or row[1] != PENDING:
            raise lost(self)


def lost(fence: Fence) -> LeaseLostError:
    return LeaseLostError(
        f"lost the lease on {fence.what} (claim {fence.claim}): another replica took it over or "
        "finished it; this one writes and sends nothing more about it"
    )
