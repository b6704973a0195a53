"""The bank's side of packed batches: OT sessions, sealed tickets between the two calls, the bands."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from blindscore.bank_node.calls import BatchFinish, BatchStart, CircuitFinish, CircuitStart
from blindscore.bank_node.store import BandRecord, Completion
from blindscore.crypto import garble, ot
from blindscore.errors import CryptoError, InvalidInputError, NotFoundError, PreconditionError
from blindscore.protocol import circuit_band, packing
from blindscore.protocol.packing import SESSION_GONE, SETUP_GONE, TICKET_GONE

#: Bureau sessions (base-OT seeds) a bank keeps; the least recently used is dropped beyond this.
MAX_SESSIONS = 64
#: Setups started but not finished that a bank keeps.
MAX_PENDING_SETUPS = 64
#: Seconds a ticket stays valid: a batch's two calls follow each other within milliseconds.
TICKET_TTL_S = 300.0
_TICKET_AAD = b"blindscore/bank/packed-ticket/v1"


@dataclass(frozen=True)
class StartResult:
    ticket: bytes
    request: ot.ExtensionRequest


class PackedSessions:
    """OT sessions by id and the key that seals tickets; both live only as long as this process.

    A restarted bank forgets them: the bureau's next call gets NOT_FOUND (session) or
    FAILED_PRECONDITION (ticket) and starts afresh, which costs one base-OT setup.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._setups: OrderedDict[bytes, ot.ReceiverSetup] = OrderedDict()
        self._sessions: OrderedDict[bytes, ot.OtReceiver] = OrderedDict()
        self._seal = AESGCM(AESGCM.generate_key(bit_length=256))
        self._used: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"PackedSessions(sessions={len(self._sessions)}, <secret>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("PackedSessions hold OT seeds and cannot be pickled")

    # -- base OT ------------------------------------------------------------------------------

    def setup_start(self) -> ot.SetupOffer:
        setup, offer = ot.ReceiverSetup.start()
        with self._lock:
            self._setups[offer.session_id] = setup
            while len(self._setups) > MAX_PENDING_SETUPS:
                self._setups.popitem(last=False)
        return offer

    def setup_finish(self, choice: ot.SetupChoice) -> ot.SetupReply:
        with self._lock:
            setup = self._setups.pop(choice.session_id, None)
        if setup is None:
            raise NotFoundError(SETUP_GONE)
        receiver, reply = setup.finish(choice)
        with self._lock:
            self._sessions[receiver.session_id] = receiver
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return reply

    def require_session(self, session_id: bytes) -> None:
        """Refuse (NOT_FOUND) a batch whose OT session this bank does not hold, before any work."""
        self._receiver(session_id)

    def _receiver(self, session_id: bytes) -> ot.OtReceiver:
        with self._lock:
            receiver = self._sessions.get(session_id)
            if receiver is not None:
                self._sessions.move_to_end(session_id)  # evict the least recently used
        if receiver is None:
            raise NotFoundError(SESSION_GONE)
        return receiver

    # -- the two calls of a batch ---------------------------------------------------------------

    def start(self, start: BatchStart, opened: packing.OpenedBatch) -> StartResult:
        """Answer an opened batch with the OT request for its bits and a ticket (sealed for this
        bank alone) holding what :meth:`finish` needs, bound to the bureau and the members."""
        receiver = self._receiver(start.session_id)
        masked = start.masked
        choices = packing.choice_bits(opened.values, masked.comparison_width)
        request = receiver.request(choices)
        state = {
            "kind": "packed",
            "key_id": start.batch.key_id,
            "session": start.session_id.hex(),
            "nonce": request.nonce.hex(),
            "count": masked.count,
            "cutoffs": masked.cutoffs,
            "width": masked.comparison_width,
            "choices": bytes(_pack_bits(choices)).hex(),
            "members": start.batch.digest(),
            "expires": time.time() + TICKET_TTL_S,
        }
        return StartResult(self._seal_ticket(state), request)

    def _seal_ticket(self, state: dict[str, Any]) -> bytes:
        iv = secrets.token_bytes(12)
        return iv + self._seal.encrypt(iv, json.dumps(state, sort_keys=True).encode(), _TICKET_AAD)

    def circuit_start(self, start: CircuitStart, choices: Sequence[int]) -> StartResult:
        """Answer an opened circuit request with the OT request for the bank's input bits and a
        ticket (sealed for this bank alone) holding the shape and the OT batch (its labels need
        the nonce and count only, not the choices)."""
        receiver = self._receiver(start.session_id)
        request = receiver.request(choices)
        shape = start.request.shape
        state = {
            "kind": "circuit",
            "key_id": start.batch.key_id,
            "session": start.session_id.hex(),
            "nonce": request.nonce.hex(),
            "count": len(choices),
            "members": start.batch.digest(),
            "shape": [shape.family, shape.values, shape.value_bits, shape.cutoffs, list(shape.params)],
            "expires": time.time() + TICKET_TTL_S,
        }
        return StartResult(self._seal_ticket(state), request)

    def circuit_finish(self, finish: CircuitFinish) -> tuple[circuit_band.CircuitShape, bytes]:
        """The shape sealed in round 1 and the labels of the bank's input bits (correlated OT: the
        rows t_j of its own request, :meth:`~blindscore.crypto.ot.OtReceiver.receive_correlated`)."""
        state = self._open_ticket(finish.ticket, "circuit")
        if state["key_id"] != finish.batch.key_id or state.get("members") != finish.batch.digest():
            raise InvalidInputError("the circuit ticket was issued for another key, application or bureau")
        family, values, value_bits, cutoffs, params = state["shape"]
        shape = circuit_band.CircuitShape(
            family, values, value_bits, cutoffs, tuple((str(k), int(v)) for k, v in params)
        )
        receiver = self._receiver(bytes.fromhex(state["session"]))
        return shape, receiver.receive_correlated(bytes.fromhex(state["nonce"]), int(state["count"]))

    def _open_ticket(self, ticket: bytes, kind: str = "packed") -> dict[str, Any]:
        try:
            state = json.loads(self._seal.decrypt(ticket[:12], ticket[12:], _TICKET_AAD))
        except (InvalidTag, ValueError):
            # Tampered, or issued before a restart of this bank (the sealing key is per process).
            raise PreconditionError(TICKET_GONE) from None
        now = time.time()
        if not isinstance(state, dict) or state.get("kind") != kind or now > float(state["expires"]):
            raise PreconditionError(TICKET_GONE)
        # Single use: a second finish of the same ticket is refused, so one OT nonce never meets
        # two replies (or two circuits).
        with self._lock:
            for nonce, expires in list(self._used.items()):
                if expires < now:
                    del self._used[nonce]
            if state["nonce"] in self._used:
                raise PreconditionError(TICKET_GONE)
            self._used[state["nonce"]] = float(state["expires"])
        return state

    def finish(self, finish: BatchFinish) -> list[Completion]:
        """Receive the labels of the bank's bits, evaluate the comparisons, return each member's
        band, or a fault for a slot whose outputs are not monotone."""
        state = self._open_ticket(finish.ticket)
        batch, labels, circuit = finish.batch, finish.labels, finish.circuit
        if state["key_id"] != batch.key_id:
            raise InvalidInputError("the batch ticket was issued for another key")
        count, width, cutoffs = int(state["count"]), int(state["width"]), int(state["cutoffs"])
        batch.check_count(count)
        if state.get("members") != batch.digest():
            raise InvalidInputError("the batch ticket was issued for other members or another bureau")
        if len(labels) != cutoffs + 1 or len(set(labels)) != len(labels):
            raise InvalidInputError(f"{cutoffs} cutoffs need {cutoffs + 1} distinct band labels")
        if (circuit.instances, circuit.count, circuit.width) != (count, cutoffs, width):
            raise InvalidInputError(
                f"garbled comparisons for {circuit.instances}x{circuit.count} of {circuit.width} bits; "
                f"the batch has {count}x{cutoffs} of {width}"
            )
        choices = _unpack_bits(bytes.fromhex(state["choices"]), count * width)
        receiver = self._receiver(bytes.fromhex(state["session"]))
        own_labels = receiver.receive(bytes.fromhex(state["nonce"]), choices, finish.reply)
        bits = garble.evaluate_comparisons(circuit, own_labels)
        now = time.time()
        completions = []
        for app_id, band in zip(batch.application_ids, packing.bands_from_bits(bits), strict=True):
            index = 0 if band is None else band
            record = BandRecord(
                app_id,
                finish.model_id,
                batch.key_id,
                index,
                labels[index],
                now,
                batch.platform_id,
                batch.bureau_id,
            )
            completions.append(Completion(record, packing.FAULT_GARBLED_OUTPUT if band is None else ""))
        return completions


def _pack_bits(bits: Sequence[int]) -> bytearray:
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        if b:
            out[i >> 3] |= 1 << (i & 7)
    return out


def _unpack_bits(data: bytes, count: int) -> list[int]:
    if len(data) != (count + 7) // 8:
        raise CryptoError("batch ticket holds the wrong number of choices")
    return [(data[i >> 3] >> (i & 7)) & 1 for i in range(count)]
