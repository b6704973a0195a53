"""What the bank's calls carry, as named types: whose run or batch it is, and each packed round's input."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from blindscore.crypto import garble, halfgates, ot
from blindscore.errors import InvalidInputError
from blindscore.protocol import circuit_band, packing


@dataclass(frozen=True)
class Run:
    """Whose run of the band protocol a call belongs to: one application (named by the platform it
    came from), the bureau running it and the bank key it runs under."""

    key_id: str
    application_id: str
    bureau_id: str = ""
    platform_id: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        """The application's key in the bank's ledger: (bureau, platform, application id)."""
        return self.bureau_id, self.platform_id, self.application_id


@dataclass(frozen=True)
class Batch:
    """Who a packed batch is for: its applications in slot order (named by the platform they came
    from), the bureau running it and the bank key it runs under."""

    key_id: str
    application_ids: tuple[str, ...]
    bureau_id: str = ""
    platform_id: str = ""

    def check_count(self, count: int) -> None:
        """A batch of ``count`` slots names ``count`` distinct, non-empty applications."""
        ids = self.application_ids
        if len(ids) != count or len(set(ids)) != count or not all(ids):
            raise InvalidInputError(f"a batch of {count} needs {count} distinct, non-empty application ids")

    def digest(self) -> str:
        """A fixed-size digest of who the batch is for: a ticket is only good for the same members."""
        h = hashlib.sha256(b"blindscore/bank/packed-members/v1")
        for part in (self.bureau_id, self.platform_id, *self.application_ids):
            data = part.encode("utf-8")
            h.update(len(data).to_bytes(8, "big") + data)
        return h.hexdigest()


@dataclass(frozen=True)
class BatchStart:
    """Round 1 of a packed batch: the masked scores, and the bureau's OT session for the bits."""

    batch: Batch
    session_id: bytes
    masked: packing.PackedMasked


@dataclass(frozen=True)
class BatchFinish:
    """Round 2 of a packed batch: the ticket from round 1, the OT reply carrying the bank's labels,
    the garbled comparisons, and the model and band labels the bands are stored under."""

    batch: Batch
    ticket: bytes
    reply: ot.ExtensionReply
    circuit: garble.GarbledComparisons
    model_id: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class CircuitStart:
    """Round 1 of an application's garbled-circuit band: its masked linear stage and public shape,
    and the bureau's OT session for the bank's input bits. ``batch`` names the one application."""

    batch: Batch
    session_id: bytes
    request: circuit_band.CircuitRequest


@dataclass(frozen=True)
class CircuitFinish:
    """Round 2: the ticket from round 1, the garbled circuit (the bank's input labels came from its
    own OT request: correlated OT sends nothing back), and the model and band labels the band is
    stored under."""

    batch: Batch
    ticket: bytes
    garbled: halfgates.GarbledCircuit
    model_id: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class CircuitReveal:
    """Round 3: the pad of one evaluated round (named by its garbling id) of the application the
    batch names; the bank removes it from the round's kept outcome and stores the band."""

    batch: Batch
    garbling_id: bytes
    pad: bytes
