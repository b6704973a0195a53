"""What the bureau has let a bank learn: at most one band per application, whatever the bank does.

A bank that deviates can evaluate the comparison on a value of its choosing (other DGK bits,
other OT choice bits): each run of the band protocol then tells it the band of a shifted score,
and a bank that answered with an error to force a re-run could binary-search the score. So the
bureau gives a bank the means to decrypt a band once per application:

- one application: the [band] ciphertext is made once and kept here; a retry delivers the same
  ciphertext again (which tells the bank nothing new) instead of running the protocol afresh;
- a packed batch: its evaluation round (garbled comparisons and OT reply) is sent once; the batch
  is marked here first, and a batch marked before is never run again: it fails for good;
- one application's garbled circuit: its outputs carry a fresh one-time pad per round, so a round
  the bank evaluated tells it nothing until the bureau reveals that round's pad. Rounds may be
  run again until a pad is revealed (the bureau bounds them, :data:`MAX_CIRCUIT_ROUNDS`); the
  revealed round and its pad are kept here first, and only that pad is ever sent again.

With bureau replicas on one database (bureau/claims.py) each of these writes takes a ``fence``,
the claim the writing replica holds on the row: it is checked, the row locked, in the write's own
transaction, so a replica whose lease was taken over spends nothing (LeaseLostError) and the one
that took over finds what was kept before (the same [band], the same revealed pad) or spends it.

Runs that stop before that point (the masked value, the DGK bits, the blinded groups) may be
repeated: each draws fresh masks, and what the bank sees of them is statistically independent
of the score.
"""

from __future__ import annotations

import time
from pathlib import Path

from blindscore.bureau.claims import Fence
from blindscore.infra.db import Database, Tx, create_schema

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS {band_ciphertexts} (
        platform_id    TEXT NOT NULL,
        application_id TEXT NOT NULL,
        ciphertext     {blob} NOT NULL,
        made_at        {real} NOT NULL,
        PRIMARY KEY (platform_id, application_id)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS {circuit_reveals} (
        platform_id    TEXT NOT NULL,
        application_id TEXT NOT NULL,
        garbling_id    {blob} NOT NULL,
        pad            {blob} NOT NULL,
        revealed_at    {real} NOT NULL,
        PRIMARY KEY (platform_id, application_id)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS {batch_evaluations} (
        platform_id TEXT NOT NULL,
        batch_id    TEXT NOT NULL,
        sent_at     {real} NOT NULL,
        PRIMARY KEY (platform_id, batch_id)
    )
    """,
)


#: Garbled-circuit rounds the bureau sends for one application, per process, before it gives up (a
#: bank that keeps losing the round, or claims to: each costs the bureau a garbling, the bank
#: nothing). Not a privacy bound, which is the one revealed pad: a count, kept in memory.
MAX_CIRCUIT_ROUNDS = 5


class EvaluationLedger:
    """The band ciphertexts the bureau made and the batches whose evaluation round it sent."""

    def __init__(self, target: Path | str | Database) -> None:
        self._owns = not isinstance(target, Database)
        self._db = target if isinstance(target, Database) else Database.open(target, "bureau")
        try:
            self._db.setup(lambda tx: create_schema(self._db, tx, _SCHEMA), "the evaluation ledger")
        except BaseException:
            self.close()
            raise

    def band_ciphertext(self, platform_id: str, application_id: str) -> bytes | None:
        """The [band] made for an application earlier, if any."""
        row = self._db.read(
            lambda tx: tx.one(
                "SELECT ciphertext FROM {band_ciphertexts} WHERE platform_id = ? AND application_id = ?",
                (platform_id, application_id),
            )
        )
        return None if row is None else bytes(row[0])

    def keep_band_ciphertext(
        self, platform_id: str, application_id: str, ciphertext: bytes, *, fence: Fence | None = None
    ) -> bytes:
        """Record the application's [band] before it is delivered; returns the one to deliver (an
        earlier one, if another run got there first). ``fence``: see the module docstring."""

        def run(tx: Tx) -> bytes:
            if fence is not None:
                fence.check(tx)
            row = tx.one(
                "SELECT ciphertext FROM {band_ciphertexts} WHERE platform_id = ? AND application_id = ?",
                (platform_id, application_id),
            )
            if row is not None:
                return bytes(row[0])
            tx.execute(
                "INSERT INTO {band_ciphertexts} (platform_id, application_id, ciphertext, made_at) "
                "VALUES (?, ?, ?, ?)",
                (platform_id, application_id, ciphertext, time.time()),
            )
            return ciphertext

        return self._db.write(run)

    def spend_batch(self, platform_id: str, batch_id: str, *, fence: Fence | None = None) -> bool:
        """Mark a batch's evaluation round as sent; False if it was marked before (do not send)."""

        def run(tx: Tx) -> bool:
            if fence is not None:
                fence.check(tx)
            key = (platform_id, batch_id)
            if tx.one("SELECT 1 FROM {batch_evaluations} WHERE platform_id = ? AND batch_id = ?", key):
                return False
            tx.execute(
                "INSERT INTO {batch_evaluations} (platform_id, batch_id, sent_at) VALUES (?, ?, ?)",
                (*key, time.time()),
            )
            return True

        return self._db.write(run)

    def revealed_round(self, platform_id: str, application_id: str) -> tuple[bytes, bytes] | None:
        """(garbling id, pad) of the round whose pad was revealed for the application, if any."""
        row = self._db.read(
            lambda tx: tx.one(
                "SELECT garbling_id, pad FROM {circuit_reveals} WHERE platform_id = ? AND application_id = ?",
                (platform_id, application_id),
            )
        )
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    def reveal_round(
        self,
        platform_id: str,
        application_id: str,
        garbling_id: bytes,
        pad: bytes,
        *,
        fence: Fence | None = None,
    ) -> tuple[bytes, bytes]:
        """Record the round whose pad is revealed, before it is sent; returns the one to send (an
        earlier one, if another attempt got there first): one pad per application, ever."""

        def run(tx: Tx) -> tuple[bytes, bytes]:
            if fence is not None:
                fence.check(tx)
            key = (platform_id, application_id)
            row = tx.one(
                "SELECT garbling_id, pad FROM {circuit_reveals} WHERE platform_id = ? AND application_id = ?",
                key,
            )
            if row is not None:
                return bytes(row[0]), bytes(row[1])
            tx.execute(
                "INSERT INTO {circuit_reveals} (platform_id, application_id, garbling_id, pad, revealed_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (*key, garbling_id, pad, time.time()),
            )
            return garbling_id, pad

        return self._db.write(run)

    def batch_spent(self, platform_id: str, batch_id: str) -> bool:
        row = self._db.read(
            lambda tx: tx.one(
                "SELECT 1 FROM {batch_evaluations} WHERE platform_id = ? AND batch_id = ?",
                (platform_id, batch_id),
            )
        )
        return row is not None

    def close(self) -> None:
        if self._owns:
            self._db.close()
