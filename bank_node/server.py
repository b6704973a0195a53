"""The bank's gRPC face: a thin servicer over BankNode, and registration with the bureau."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, TypeVar

import grpc

from blindscore.bank_node import bands
from blindscore.bank_node.calls import (
    Batch,
    BatchFinish,
    BatchStart,
    CircuitFinish,
    CircuitReveal,
    CircuitStart,
    Run,
)
from blindscore.bank_node.flow import BankNode
from blindscore.bank_node.keyring import BankKey
from blindscore.bank_node.sessions import StartResult
from blindscore.bank_node.store import BandRecord
from blindscore.errors import BlindscoreError, UnavailableError
from blindscore.infra.certs import Identity
from blindscore.infra.metrics import NodeMetrics
from blindscore.infra.status import call, grpc_errors, status_of
from blindscore.infra.transport import (
    INSECURE,
    MAX_CIRCUIT_MESSAGE_BYTES,
    TransportSecurity,
    create_server,
    open_channel,
    require_role,
)
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc
from blindscore.wire import serde

log = logging.getLogger(__name__)

#: WatchBands streams a bank serves at once; more are refused with RESOURCE_EXHAUSTED, so watchers
#: never take every server thread from the band protocol.
MAX_WATCHERS = 4


F = TypeVar("F", bound=Callable[..., Any])


def timed(stage: str) -> Callable[[F], F]:
    """Record the time the bank spent on the call as ``stage`` in its own metrics; stamp it into
    the response's ``server_ms`` only when the node shares timings (local benchmarks). By default
    no timing measured at the bank reaches the bureau."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            t0 = time.perf_counter()
            response = method(self, request, context)
            elapsed = time.perf_counter() - t0
            if self.share_timings:
                response.server_ms = elapsed * 1e3
            self.metrics.observe_stage(stage, elapsed)
            return response

        return wrapper  # type: ignore[return-value]

    return decorate


class BankServicer(pb_grpc.BankServicer):
    """Converts protos to domain objects, calls BankNode, converts back."""

    def __init__(
        self, node: BankNode, metrics: NodeMetrics | None = None, *, share_timings: bool = False
    ) -> None:
        self.node = node
        self.metrics = metrics or NodeMetrics("bank")
        self.share_timings = share_timings
        self._watchers = threading.BoundedSemaphore(MAX_WATCHERS)

    @grpc_errors
    @timed("bank.round1")
    def CompareMasked(self, request: pb.MaskedRequest, context: grpc.ServicerContext) -> pb.BitsResponse:
        run = _run(request, context)
        key = self.node.key(run.key_id)  # before unpacking: the key decides the wire format
        pk = key.paillier.public_key
        resp = self.node.compare_masked(run, serde.masked_request_from_proto(request, pk))
        return serde.bits_response_to_proto(resp, pk, key.dgk.public_key)

    @grpc_errors
    @timed("bank.round2")
    def CompareBlinded(self, request: pb.BlindedRequest, context: grpc.ServicerContext) -> pb.FinalResponse:
        run = _run(request, context)
        key = self.node.key(run.key_id)
        resp = self.node.compare_blinded(run, serde.blinded_request_from_proto(request, key.dgk.public_key))
        return serde.final_response_to_proto(resp, key.paillier.public_key)

    @grpc_errors
    @timed("bank.deliver")
    def DeliverBand(self, request: pb.BandDelivery, context: grpc.ServicerContext) -> pb.BandReceipt:
        bureau = _party(require_role(context, "bureau"))
        key = self.node.key(request.key_id)
        delivery = serde.band_delivery_from_proto(request, key.paillier.public_key)
        self.node.deliver_band(delivery, bureau_id=bureau)
        # The same receipt whether the band was stored, kept from before or recorded as a fault.
        return pb.BandReceipt(application_id=delivery.application_id, stored=True)

    # packed batches ----------------------------------------------------------------------------

    @grpc_errors
    @timed("bank.ot_setup")
    def OtSetupStart(self, request: pb.OtSetupStartRequest, context: grpc.ServicerContext) -> pb.OtSetupOffer:
        require_role(context, "bureau")
        return serde.ot_offer_to_proto(self.node.packed.setup_start())

    @grpc_errors
    @timed("bank.ot_setup")
    def OtSetupFinish(self, request: pb.OtSetupChoice, context: grpc.ServicerContext) -> pb.OtSetupReply:
        require_role(context, "bureau")
        return serde.ot_reply_to_proto(self.node.packed.setup_finish(serde.ot_choice_from_proto(request)))

    @grpc_errors
    @timed("bank.packed_start")
    def PackedStart(
        self, request: pb.PackedStartRequest, context: grpc.ServicerContext
    ) -> pb.PackedStartResponse:
        batch = _batch(request, context)
        key = self.node.key(batch.key_id)
        masked = serde.packed_start_from_proto(request, key.paillier.public_key)
        started = self.node.packed_start(BatchStart(batch, bytes(request.ot_session_id), masked))
        return pb.PackedStartResponse(**_started(started))

    @grpc_errors
    @timed("bank.packed_finish")
    def PackedFinish(
        self, request: pb.PackedFinishRequest, context: grpc.ServicerContext
    ) -> pb.PackedFinishResponse:
        batch = _batch(request, context)
        reply, circuit = serde.packed_finish_from_proto(request)
        finish = BatchFinish(
            batch, bytes(request.ticket), reply, circuit, request.model_id, tuple(request.band_labels)
        )
        return pb.PackedFinishResponse(stored=self.node.packed_finish(finish))

    @grpc_errors
    @timed("bank.circuit_start")
    def CircuitStart(
        self, request: pb.CircuitStartRequest, context: grpc.ServicerContext
    ) -> pb.CircuitStartResponse:
        batch = _batch(request, context)
        key = self.node.key(batch.key_id)
        masked = serde.circuit_start_from_proto(request, key.paillier.public_key)
        started = self.node.circuit_start(CircuitStart(batch, bytes(request.ot_session_id), masked))
        return pb.CircuitStartResponse(**_started(started))

    @grpc_errors
    @timed("bank.circuit_finish")
    def CircuitFinish(
        self, request: pb.CircuitFinishRequest, context: grpc.ServicerContext
    ) -> pb.CircuitFinishResponse:
        batch = _batch(request, context)
        garbled = serde.circuit_finish_from_proto(request)
        finish = CircuitFinish(
            batch, bytes(request.ticket), garbled, request.model_id, tuple(request.band_labels)
        )
        return pb.CircuitFinishResponse(stored=self.node.circuit_finish(finish))

    @grpc_errors
    @timed("bank.circuit_reveal")
    def CircuitReveal(
        self, request: pb.CircuitRevealRequest, context: grpc.ServicerContext
    ) -> pb.CircuitRevealResponse:
        reveal = CircuitReveal(_batch(request, context), bytes(request.garbling_id), bytes(request.pad))
        return pb.CircuitRevealResponse(stored=self.node.circuit_reveal(reveal))

    # the bank's own systems ------------------------------------------------------------------

    def _require_own_client(self, context: grpc.ServicerContext) -> None:
        """Only the bank's own systems (a bank-client certificate naming this bank) read its bands."""
        identity = require_role(context, "bank-client")
        if identity is not None and identity.serves != self.node.bank_id:
            log.warning(
                "refused %s from %s: this node is bank %s", identity, context.peer(), self.node.bank_id
            )
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"bank-client {identity.party_id!r} serves bank {identity.serves!r}, "
                f"not {self.node.bank_id!r}",
            )

    @grpc_errors
    def GetBand(self, request: pb.GetBandRequest, context: grpc.ServicerContext) -> pb.BandResult:
        self._require_own_client(context)
        return band_to_proto(bands.band_of(self.node.store, request.application_id, request.platform_id))

    def WatchBands(
        self, request: pb.WatchBandsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.BandResult]:
        self._require_own_client(context)
        if not self._watchers.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this bank serves at most {MAX_WATCHERS} WatchBands streams at once; retry later",
            )
        try:
            for record in bands.follow_bands(self.node.store, request.since, active=context.is_active):
                yield band_to_proto(record)
        except BlindscoreError as exc:
            context.abort(*status_of(exc))
        finally:
            self._watchers.release()


def band_to_proto(record: BandRecord) -> pb.BandResult:
    """A stored band as the bank's own systems receive it."""
    return pb.BandResult(
        application_id=record.application_id,
        platform_id=record.platform_id,
        model_id=record.model_id,
        band=record.band,
        band_label=record.band_label,
        received_at=record.received_at,
        bureau_id=record.bureau_id,
        key_id=record.key_id,
    )


def _started(started: StartResult) -> dict[str, Any]:
    """The fields of a start response: the sealed ticket and the bank's OT-extension request."""
    ext = started.request
    return {
        "ticket": started.ticket,
        "ot_nonce": ext.nonce,
        "ot_count": ext.count,
        "ot_u": ext.u,
        "ot_check": ext.check,
    }


def _run(request: pb.MaskedRequest | pb.BlindedRequest, context: grpc.ServicerContext) -> Run:
    """Whose run a comparison round belongs to: the calling bureau's and the request's ids."""
    bureau = _party(require_role(context, "bureau"))
    return Run(request.key_id, request.application_id, bureau, request.platform_id)


def _batch(
    request: pb.PackedStartRequest
    | pb.PackedFinishRequest
    | pb.CircuitStartRequest
    | pb.CircuitFinishRequest
    | pb.CircuitRevealRequest,
    context: grpc.ServicerContext,
) -> Batch:
    """Who a packed batch (or one application's circuit round) is for: the calling bureau and the
    request's ids."""
    bureau = _party(require_role(context, "bureau"))
    if isinstance(request, pb.CircuitStartRequest | pb.CircuitFinishRequest | pb.CircuitRevealRequest):
        ids: tuple[str, ...] = (request.application_id,)
    else:
        ids = tuple(request.application_ids)
    return Batch(request.key_id, ids, bureau, request.platform_id)


def _party(identity: Identity | None) -> str:
    """The calling bureau's party id from its certificate ("" on a plaintext --insecure server)."""
    return identity.party_id if identity is not None else ""


def start_bank_server(
    node: BankNode,
    address: str,
    *,
    security: TransportSecurity = INSECURE,
    metrics: NodeMetrics | None = None,
    share_timings: bool = False,
) -> tuple[grpc.Server, int]:
    """Serve the Bank service on ``address``; returns (server, bound port)."""
    metrics = metrics or NodeMetrics("bank")
    servicer = BankServicer(node, metrics, share_timings=share_timings)
    return create_server(
        address,
        [partial(pb_grpc.add_BankServicer_to_server, servicer)],
        security=security,
        service_names=("blindscore.v1.Bank",),
        metrics=metrics,
        max_message_bytes=MAX_CIRCUIT_MESSAGE_BYTES,
    )


def register_keys(
    node: BankNode,
    keys: Sequence[BankKey],
    bureau_address: str,
    advertise_address: str,
    *,
    security: TransportSecurity = INSECURE,
    attempts: int = 60,
    delay: float = 0.5,
) -> list[str]:
    """Publish public keys and the bank's address at the bureau: one RegisterBank call per key,
    each retried while the bureau is unavailable. Returns the key ids the bureau confirmed."""
    registered = []
    with open_channel(
        bureau_address, security=security.expecting("bureau"), retry_unavailable=True
    ) as channel:
        stub: Any = pb_grpc.BureauStub(channel)
        for key in keys:
            request = pb.RegisterBankRequest(
                bank_id=node.bank_id,
                address=advertise_address,
                paillier_public_key=serde.paillier_key_to_json(key.paillier.public_key),
                dgk_public_key=serde.dgk_key_to_json(key.dgk.public_key),
                active_key_ids=[k.key_id for k in node.all_keys()],
            )
            for attempt in range(attempts):
                try:
                    resp = call("bureau", stub.RegisterBank, request, timeout=10)
                    break
                except UnavailableError:
                    if attempt == attempts - 1:
                        raise
                    time.sleep(delay)
            log.info("registered key %s with the bureau at %s", resp.key_id, bureau_address)
            registered.append(str(resp.key_id))
    return registered


def register_with_bureau(
    node: BankNode,
    bureau_address: str,
    advertise_address: str,
    *,
    security: TransportSecurity = INSECURE,
    attempts: int = 60,
    delay: float = 0.5,
) -> str:
    """Publish every key of the bank's ring (the current one last), retrying while the bureau
    starts. Returns the current key id as the bureau confirmed it."""
    current = node.key_id
    keys = sorted(node.all_keys(), key=lambda k: k.key_id == current)
    registered = register_keys(
        node, keys, bureau_address, advertise_address, security=security, attempts=attempts, delay=delay
    )
    return registered[-1]


class KeyWatcher:
    """Rereads the bank's key ring every few seconds, so a rotation or retirement made with the CLI
    reaches the running node; new keys go to ``register`` (the bureau) until it succeeds."""

    def __init__(
        self,
        node: BankNode,
        *,
        register: Callable[[BankKey], object] | None = None,
        interval: float = 2.0,
    ) -> None:
        self.node = node
        self.register = register
        self.interval = interval
        self._pending: dict[str, BankKey] = {}
        # The key ids the bureau last heard as this bank's ring; a retirement re-publishes it.
        self._published = frozenset(k.key_id for k in node.all_keys())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bank-key-watcher", daemon=True)

    def __repr__(self) -> str:
        return f"KeyWatcher(bank_id={self.node.bank_id!r}, pending={sorted(self._pending)})"

    def poll(self) -> list[str]:
        """One round: reread the ring, register what is pending. Returns the key ids registered."""
        try:
            for key in self.node.refresh_keys():
                self._pending[key.key_id] = key
        except BlindscoreError as exc:
            log.error("could not reload the key ring: %s", exc)
        live = {k.key_id for k in self.node.all_keys()}
        if live != self._published and not self._pending:
            # Only retirements (additions are pending): registering the current key again carries
            # the new active list, and the bureau drops the retired keys.
            self._pending[self.node.key_id] = self.node.current
        done = []
        for key_id, key in sorted(self._pending.items()):
            if key_id not in live:  # retired before it was ever registered
                del self._pending[key_id]
                continue
            if self.register is None:
                continue
            try:
                self.register(key)
            except BlindscoreError as exc:
                log.warning("could not register key %s with the bureau (will retry): %s", key_id, exc)
                continue
            del self._pending[key_id]
            done.append(key_id)
        if not self._pending:
            self._published = frozenset(live)
        return done

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
