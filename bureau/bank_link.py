"""How the bureau reaches a bank during the band protocol: an interface and its gRPC implementation."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, TypeVar

import grpc

from blindscore.crypto import garble, halfgates, ot
from blindscore.crypto.dgk import DGKPublicKey
from blindscore.crypto.paillier import PublicKey
from blindscore.crypto.pools import waiting_on_peer
from blindscore.errors import BlindscoreError, CryptoError, PeerError, PreconditionError, UnavailableError
from blindscore.infra.status import call
from blindscore.infra.transport import INSECURE, MAX_CIRCUIT_MESSAGE_BYTES, TransportSecurity, open_channel
from blindscore.protocol import circuit_band, comparison, packing
from blindscore.protocol.application import BandDelivery
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc
from blindscore.wire import serde

#: Deadline of one call to a bank: its answers take milliseconds (a large packed batch, ~1 s).
RPC_TIMEOUT_S = 10.0
#: Calls to one bank that may be in flight at once. A bank that hangs holds at most this many of
#: the bureau's threads (16 serve requests); the rest stay free for other banks and platforms.
MAX_CALLS_PER_BANK = 6
#: How long a call waits for one of its bank's slots before the application is left pending (the
#: retry worker delivers it later) rather than tying up a request thread.
SLOT_WAIT_S = 0.5
#: Times a packed batch's round starts over when the bank has lost its session state.
ROUND_ATTEMPTS = 3


class BankLink(Protocol):
    """The three calls the bureau makes to a bank for one application.

    ``stage_ms`` and ``wire_bytes`` accumulate what the calls cost, for the receipt.
    """

    stage_ms: dict[str, float]
    wire_bytes: int

    def compare_masked(
        self, application_id: str, request: comparison.MaskedRequest, *, platform_id: str = ""
    ) -> comparison.BitsResponse: ...

    def compare_blinded(
        self, application_id: str, request: comparison.BlindedRequest, *, platform_id: str = ""
    ) -> comparison.FinalResponse: ...

    def deliver_band(self, delivery: BandDelivery) -> None: ...

    def packed_round(self, batch: PackedRound, finish: FinishBatch, *, spend: Callable[[], None]) -> int: ...

    def circuit_round(
        self, app: CircuitRound, finish: FinishCircuit, *, spend: Callable[[], None]
    ) -> int: ...

    def circuit_reveal(
        self, application_id: str, platform_id: str, garbling_id: bytes, pad: bytes
    ) -> int: ...


@dataclass(frozen=True)
class PackedRound:
    """What the bank is told of a packed batch: its masked scores, whose applications they are (in
    slot order), and the model whose bands it may decrypt."""

    masked: packing.PackedMasked
    model_id: str
    labels: tuple[str, ...]
    application_ids: tuple[str, ...]
    #: The platform the batch came from, as the bureau authenticated it.
    platform_id: str = ""


@dataclass(frozen=True)
class CircuitRound:
    """What the bank is told of one application's garbled-circuit band: the masked linear stage
    and public shape, whose application it is, and the model whose band it may decode."""

    request: circuit_band.CircuitRequest
    model_id: str
    labels: tuple[str, ...]
    application_id: str
    platform_id: str = ""


#: The bureau's answer to the bank's OT request: the OT reply and garbled comparisons (packed
#: batches) or the garbled circuit alone (circuits: the correlated OT sends nothing back).
Answer = TypeVar("Answer", tuple[ot.ExtensionReply, garble.GarbledComparisons], halfgates.GarbledCircuit)

#: Given the bank's OT request, the bureau's garbled circuit (its labels from the correlated OT).
FinishCircuit = Callable[[ot.ExtensionRequest, ot.OtSender], halfgates.GarbledCircuit]

#: Given the bank's OT request for a batch, the bureau's OT reply and garbled comparisons.
FinishBatch = Callable[
    [ot.ExtensionRequest, ot.OtSender], tuple[ot.ExtensionReply, garble.GarbledComparisons]
]


class OtSessions:
    """The bureau's OT sessions, one per bank address, set up on first use (one setup at a time per
    bank) and again when the bank has forgotten its side (a restart).

    Also remembers the OT nonces each session has seen: a bank that sent one twice would learn
    the XOR of labels it did not choose, so a repeat is refused.
    """

    #: A session is replaced after this many batches (a new base OT, ~0.2 s, every ~20k applications),
    #: which bounds the memory of seen nonces to about 100 KB per bank.
    MAX_BATCHES_PER_SESSION = 1024

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._senders: dict[tuple[str, str], ot.OtSender] = {}
        self._setup_locks: dict[tuple[str, str], threading.Lock] = {}
        self._nonces: dict[bytes, set[bytes]] = {}

    def __repr__(self) -> str:
        return f"OtSessions({len(self._senders)} sessions, <secret>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("OtSessions hold OT seeds and cannot be pickled")

    def sender(self, where: tuple[str, str], setup: Callable[[], ot.OtSender]) -> ot.OtSender:
        """The session with the bank at ``where``, set up with ``setup`` if there is none."""
        with self._lock:
            sender = self._senders.get(where)
            lock = self._setup_locks.setdefault(where, threading.Lock())
        if sender is not None:
            return sender
        with lock:
            with self._lock:
                sender = self._senders.get(where)
            if sender is None:
                sender = setup()
                with self._lock:
                    self._senders[where] = sender
                    self._nonces[sender.session_id] = set()
            return sender

    def drop(self, where: tuple[str, str], sender: ot.OtSender) -> None:
        """Forget ``sender`` (the bank forgot it), unless another thread already replaced it."""
        with self._lock:
            if self._senders.get(where) is sender:
                del self._senders[where]
                self._nonces.pop(sender.session_id, None)

    def fresh_nonce(self, where: tuple[str, str], sender: ot.OtSender, nonce: bytes) -> bool:
        """Record ``nonce`` for the session; False if the session has seen it before."""
        with self._lock:
            seen = self._nonces.get(sender.session_id)
            if seen is None:
                # The session was retired while this batch was in flight; the bank cannot tell a
                # retired session from a live one, and the batch is the last to use it.
                return True
            if nonce in seen:
                return False
            seen.add(nonce)
            if len(seen) >= self.MAX_BATCHES_PER_SESSION:
                # Retire it: the next batch sets up a new session.
                del self._nonces[sender.session_id]
                if self._senders.get(where) is sender:
                    del self._senders[where]
            return True


class GrpcBankLink:
    """BankLink over one gRPC channel to the bank's address; one instance per application."""

    def __init__(
        self,
        channel: grpc.Channel,
        key: PublicKey,
        dgk: DGKPublicKey,
        sessions: OtSessions | None = None,
        where: tuple[str, str] = ("", ""),
        slots: threading.BoundedSemaphore | None = None,
    ) -> None:
        self._stub: Any = pb_grpc.BankStub(channel)
        self._slots = slots or threading.BoundedSemaphore(MAX_CALLS_PER_BANK)
        self.key = key
        self.dgk = dgk
        self.stage_ms: dict[str, float] = {}
        self.wire_bytes = 0
        self._sessions = sessions or OtSessions()
        self._where = where

    def _call(self, stage: str, method: Any, msg: Any) -> Any:
        t0 = time.perf_counter()
        with waiting_on_peer():
            if not self._slots.acquire(timeout=SLOT_WAIT_S):
                raise UnavailableError(
                    f"bank {self._where[0]!r} has {MAX_CALLS_PER_BANK} calls in flight; the application "
                    "stays pending and is retried"
                )
            try:
                resp = call("bank", method, msg, timeout=RPC_TIMEOUT_S)
            finally:
                self._slots.release()
        elapsed = (time.perf_counter() - t0) * 1e3
        if resp.server_ms:  # only a bank that shares its timings (local benchmarks) sends them
            self.stage_ms[f"bank.{stage}"] = resp.server_ms
            self.stage_ms[f"transport.bank.{stage}"] = max(0.0, elapsed - resp.server_ms)
        else:
            self.stage_ms[f"roundtrip.bank.{stage}"] = elapsed
        self.wire_bytes += msg.ByteSize() + resp.ByteSize()
        return resp

    def compare_masked(
        self, application_id: str, request: comparison.MaskedRequest, *, platform_id: str = ""
    ) -> comparison.BitsResponse:
        msg = serde.masked_request_to_proto(application_id, self.key, request, platform_id)
        resp = self._call("round1", self._stub.CompareMasked, msg)
        return serde.bits_response_from_proto(resp, self.key, self.dgk, request.bits)

    def compare_blinded(
        self, application_id: str, request: comparison.BlindedRequest, *, platform_id: str = ""
    ) -> comparison.FinalResponse:
        msg = serde.blinded_request_to_proto(application_id, self.key, self.dgk, request, platform_id)
        resp = self._call("round2", self._stub.CompareBlinded, msg)
        return serde.final_response_from_proto(resp, self.key, len(request.groups))

    def deliver_band(self, delivery: BandDelivery) -> None:
        self._call("deliver", self._stub.DeliverBand, serde.band_delivery_to_proto(delivery, self.key))

    # packed batches -----------------------------------------------------------------------------

    def _setup(self) -> ot.OtSender:
        offer = self._call("ot_setup", self._stub.OtSetupStart, pb.OtSetupStartRequest())
        setup, choice = ot.SenderSetup.start(serde.ot_offer_from_proto(offer))
        reply = self._call("ot_setup", self._stub.OtSetupFinish, serde.ot_choice_to_proto(choice))
        return setup.finish(serde.ot_reply_from_proto(reply))

    def packed_round(self, batch: PackedRound, finish: FinishBatch, *, spend: Callable[[], None]) -> int:
        """The two calls of a packed batch; returns how many members the bank completed anew."""

        def start(session_id: bytes) -> Any:
            return serde.packed_start_to_proto(
                self.key, session_id, batch.masked, batch.application_ids, batch.platform_id
            )

        def done(ticket: bytes, answer: tuple[ot.ExtensionReply, garble.GarbledComparisons]) -> Any:
            reply, circuit = answer
            return serde.packed_finish_to_proto(
                self.key.key_id,
                ticket,
                reply,
                circuit,
                batch.model_id,
                batch.labels,
                batch.application_ids,
                batch.platform_id,
            )

        return self._two_rounds("packed", start, finish, done, spend, "a batch")

    def circuit_round(self, app: CircuitRound, finish: FinishCircuit, *, spend: Callable[[], None]) -> int:
        """The first two calls of one application's garbled-circuit band; returns 1 if the bank
        kept the round's padded outcome for the first time. A failure of the finish leaves the work
        to a new round (its pad was never revealed); ``spend`` counts and bounds the rounds."""

        def start(session_id: bytes) -> Any:
            return serde.circuit_start_to_proto(
                self.key, session_id, app.request, app.application_id, app.platform_id
            )

        def done(ticket: bytes, garbled: halfgates.GarbledCircuit) -> Any:
            return serde.circuit_finish_to_proto(
                self.key.key_id,
                ticket,
                garbled,
                app.model_id,
                app.labels,
                app.application_id,
                app.platform_id,
            )

        return self._two_rounds("circuit", start, finish, done, spend, "an application", final=False)

    def circuit_reveal(self, application_id: str, platform_id: str, garbling_id: bytes, pad: bytes) -> int:
        """The third call: the pad of the application's one revealed round; returns 1 if the bank
        stored the band for the first time. Safe to repeat (the same round, the same pad)."""
        request = pb.CircuitRevealRequest(
            key_id=self.key.key_id,
            application_id=application_id,
            platform_id=platform_id,
            garbling_id=garbling_id,
            pad=pad,
        )
        return int(self._call("circuit_reveal", self._stub.CircuitReveal, request).stored)

    def _two_rounds(
        self,
        kind: str,
        start: Callable[[bytes], Any],
        finish: Callable[[ot.ExtensionRequest, ot.OtSender], Answer],
        done: Callable[[bytes, Answer], Any],
        spend: Callable[[], None],
        what: str,
        *,
        final: bool = True,
    ) -> int:
        """Start (masked values in, the bank's OT request out), then finish (OT reply and garbling
        in); returns the bank's count of newly stored bands.

        When the bank no longer holds what the start needs (the OT session or setup after a
        restart or an eviction) the round starts over with a new session, up to ROUND_ATTEMPTS
        times; then the work is left to the retry worker (UNAVAILABLE). Starting over there is
        safe: the bank decrypts values under fresh masks and has evaluated nothing.
        ``spend()`` runs just before the evaluation round (the finish) is sent and raises if it
        may not be sent (bureau/ledger.py). With ``final`` (packed batches) that round is the last:
        any failure of the call fails the work for good. Without it (circuits, whose outcome the
        bank cannot read before a later reveal) a bank that forgot the round's ticket gets a new
        round, and other failures go to the caller as they are.
        """
        start_stub = getattr(self._stub, f"{kind.capitalize()}Start")
        finish_stub = getattr(self._stub, f"{kind.capitalize()}Finish")
        for _ in range(ROUND_ATTEMPTS):
            sender = None
            try:
                sender = self._sessions.sender(self._where, self._setup)
                resp = self._call(f"{kind}_start", start_stub, start(sender.session_id))
                nonce = bytes(resp.ot_nonce)
                if not self._sessions.fresh_nonce(self._where, sender, nonce):
                    raise CryptoError("the bank repeated an OT nonce")
                ext = ot.ExtensionRequest(
                    session_id=sender.session_id,
                    nonce=nonce,
                    count=resp.ot_count,
                    u=bytes(resp.ot_u),
                    check=bytes(resp.ot_check),
                )
                try:
                    answer = finish(ext, sender)
                except CryptoError as exc:
                    # A failed consistency check is a deviating bank: nothing was sent, this
                    # session's s is never used again (the next round sets up a new one), and the
                    # work waits for the retry worker like any other failure of the bank's.
                    self._sessions.drop(self._where, sender)
                    raise UnavailableError(f"the bank's OT request was refused: {exc}") from exc
            except PeerError as exc:
                if not _forgotten(exc):
                    raise
                if sender is not None:
                    self._sessions.drop(self._where, sender)
                continue
            msg = done(bytes(resp.ticket), answer)
            spend()
            try:
                return int(self._call(f"{kind}_finish", finish_stub, msg).stored)
            except PeerError as exc:
                if final:
                    raise _unconfirmed(what, exc) from exc
                if _forgotten(exc):
                    self._sessions.drop(self._where, sender)
                    continue
                raise
            except BlindscoreError as exc:
                if not final:
                    raise
                raise _unconfirmed(what, exc) from exc
        raise UnavailableError(f"the bank lost its OT session state {ROUND_ATTEMPTS} times in a row")


def _unconfirmed(what: str, exc: BlindscoreError) -> PreconditionError:
    return PreconditionError(
        f"the bank did not confirm the evaluation round of {what} ({exc}); it is not run "
        "again, so that no bank learns more than one band per application"
    )


def _forgotten(exc: PeerError) -> bool:
    """Whether the bank refused because it no longer holds a session, setup or ticket key."""
    text = str(exc)
    return exc.code in ("NOT_FOUND", "FAILED_PRECONDITION") and any(
        marker in text for marker in (packing.SESSION_GONE, packing.SETUP_GONE, packing.TICKET_GONE)
    )


class BankChannels:
    """One long-lived channel per bank address, shared by every application."""

    def __init__(self, security: TransportSecurity = INSECURE) -> None:
        self.security = security
        self._lock = threading.Lock()
        self._channels: dict[tuple[str, str], grpc.Channel] = {}
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self.ot_sessions = OtSessions()

    def link(self, bank_id: str, address: str, key: PublicKey, dgk: DGKPublicKey) -> GrpcBankLink:
        """A link to ``bank_id`` at ``address``; with mTLS only that bank's certificate is accepted,
        so a band is delivered to the bank the application names and to no one else."""
        with self._lock:
            channel = self._channels.get((bank_id, address))
            if channel is None:
                channel = open_channel(
                    address,
                    security=self.security.expecting("bank", bank_id),
                    max_message_bytes=MAX_CIRCUIT_MESSAGE_BYTES,
                    # A bank's OT session and circuit tickets live in one replica between calls:
                    # stay on one replica, move to the next only when it is gone.
                    balancing="pick_first",
                )
                self._channels[(bank_id, address)] = channel
            slots = self._slots.setdefault(bank_id, threading.BoundedSemaphore(MAX_CALLS_PER_BANK))
        return GrpcBankLink(channel, key, dgk, self.ot_sessions, (bank_id, address), slots)

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
