"""The platform's gRPC face: a thin servicer over PlatformNode."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import asdict
from functools import partial

import grpc

from blindscore.crypto.pools import request_scope
from blindscore.errors import BlindscoreError, InvalidInputError
from blindscore.infra.metrics import NodeMetrics
from blindscore.infra.status import grpc_errors, status_of
from blindscore.infra.transport import INSECURE, TransportSecurity, create_server, require_role
from blindscore.platform_node.flow import PlatformNode, Receipt
from blindscore.protocol import limits
from blindscore.protocol.application import Application
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc
from blindscore.wire import serde

log = logging.getLogger(__name__)

STREAM_CONCURRENCY = 8
#: Requests of a stream scored together (and so packed together) at most.
STREAM_CHUNK = 64
#: Chunks of one stream scored at once: enough to keep bureau and bank busy while this node
#: encrypts, few enough that requests queue up (and pack) under load.
STREAM_WORKERS = 3
#: Requests of one stream in flight at most.
STREAM_WINDOW = 4 * STREAM_CHUNK
#: Bytes of requests of one stream in flight at most (a request larger than this goes alone).
STREAM_WINDOW_BYTES = 16 * 1024 * 1024
#: Streams a platform node serves at once; more are refused with RESOURCE_EXHAUSTED, so streams
#: can never take every server thread from unary calls (16 workers: see blindscore.infra.transport).
MAX_STREAMS = 4
#: A stream with nothing in flight that sends nothing for this long is ended (DEADLINE_EXCEEDED).
STREAM_IDLE_S = 30.0
_IDLE = object()


class ByteWindow:
    """Admits items while the bytes in flight stay within ``capacity`` (one item always fits)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.peak = 0
        self._cond = threading.Condition()

    def acquire(self, size: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.used == 0 or self.used + size <= self.capacity)
            self.used += size
            self.peak = max(self.peak, self.used)

    def release(self, size: int) -> None:
        with self._cond:
            self.used -= size
            self._cond.notify_all()


def checked_request(request: pb.ScoreRequest) -> Application:
    """A score request as a domain object, its ids and consent reference checked against the input
    limits first (blindscore.protocol.limits), so every refusal names the field and quotes a short prefix."""
    for name in ("application_id", "bank_id", "model_id", "key_id"):
        limits.check_id(name, getattr(request, name))
    limits.check_id("model_version", request.model_version, optional=True)
    limits.check_consent(request.consent_reference)
    return serde.application_from_proto(request)


def _echoed_id(request: pb.ScoreRequest) -> str:
    """The application id a refusal receipt carries: the request's, unless it is no valid id."""
    try:
        return limits.check_id("application_id", request.application_id)
    except InvalidInputError:
        return ""


class PlatformServicer(pb_grpc.PlatformServicer):
    """Converts protos to domain objects, calls PlatformNode, converts back."""

    def __init__(self, node: PlatformNode, metrics: NodeMetrics | None = None) -> None:
        self.node = node
        self.metrics = metrics or NodeMetrics("platform")
        self._streams = threading.BoundedSemaphore(MAX_STREAMS)
        #: The largest number of request bytes any one stream had in flight (tests, diagnostics).
        self.peak_stream_bytes = 0
        self._pool = futures.ThreadPoolExecutor(max_workers=STREAM_CONCURRENCY, thread_name_prefix="score")

    def _receipt(self, receipt: Receipt) -> pb.ScoreReceipt:
        self.metrics.observe_application("pending" if receipt.pending else "accepted")
        self.metrics.observe_stages(receipt.stage_ms, prefixes=("platform.", "transport.platform."))
        # Receipt's fields are ScoreReceipt's, field by field, but for ``accepted``.
        return pb.ScoreReceipt(accepted=True, **asdict(receipt))

    def _require_own_platform(self, context: grpc.ServicerContext) -> None:
        """Only this platform's own certificate, or a platform-client certificate naming this
        platform, may score through it: another platform's would otherwise submit (and be audited)
        under this platform's id."""
        identity = require_role(context, "platform", "platform-client")
        owner = identity.serves if identity is not None and identity.is_client else None
        if identity is not None and owner is not None and owner != self.node.platform_id:
            log.warning(
                "refused %s from %s: this node is platform %s",
                identity,
                context.peer(),
                self.node.platform_id,
            )
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"platform-client {identity.party_id!r} serves platform {owner!r}, "
                f"not {self.node.platform_id!r}",
            )
        if identity is not None and owner is None and identity.party_id != self.node.platform_id:
            log.warning(
                "refused %s from %s: this node is platform %s",
                identity,
                context.peer(),
                self.node.platform_id,
            )
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"platform {identity.party_id!r} may not score through the node of platform "
                f"{self.node.platform_id!r}",
            )

    def _refusal(self, application_id: str, exc: BaseException) -> pb.ScoreReceipt:
        if isinstance(exc, BlindscoreError):
            code, message = status_of(exc)
        else:
            log.error("scoring %s failed", application_id, exc_info=exc)
            code, message = grpc.StatusCode.INTERNAL, "internal error; see the platform's log"
        self.metrics.observe_application(code.name)
        return pb.ScoreReceipt(
            application_id=application_id, accepted=False, error_code=code.value[0], error_message=message
        )

    def _score(self, request: pb.ScoreRequest) -> pb.ScoreReceipt:
        try:
            with request_scope():
                receipt = self.node.score(checked_request(request))
        except BlindscoreError as exc:
            self.metrics.observe_application(status_of(exc)[0].name)
            raise
        except Exception:
            self.metrics.observe_application("INTERNAL")
            raise
        return self._receipt(receipt)

    def _score_chunk(self, requests: list[pb.ScoreRequest]) -> list[pb.ScoreReceipt]:
        """Score requests gathered from a stream together, so the node can pack them."""
        out: list[pb.ScoreReceipt | None] = [None] * len(requests)
        apps: list[Application] = []
        where: list[int] = []
        for i, request in enumerate(requests):
            try:
                apps.append(checked_request(request))
                where.append(i)
            except BlindscoreError as exc:
                out[i] = self._refusal(_echoed_id(request), exc)
        try:
            with request_scope():
                results: list[Receipt | BaseException] = list(self.node.score_many(apps))
        except Exception as exc:  # a bug or the outbox's database: every request of the chunk fails
            results = [exc] * len(apps)
        for i, result in zip(where, results, strict=True):
            if isinstance(result, Receipt):
                out[i] = self._receipt(result)
            else:
                out[i] = self._refusal(requests[i].application_id, result)
        return [r for r in out if r is not None]

    @grpc_errors
    def ScoreApplication(self, request: pb.ScoreRequest, context: grpc.ServicerContext) -> pb.ScoreReceipt:
        self._require_own_platform(context)
        return self._score(request)

    def ScoreApplications(
        self, request_iterator: Iterator[pb.ScoreRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ScoreReceipt]:
        """Score a stream; a failed application yields a receipt carrying its status.

        Requests that queue up while STREAM_WORKERS chunks are being scored are scored together
        (up to STREAM_CHUNK), which lets the node pack them (:meth:`PlatformNode.score_many`).
        """
        self._require_own_platform(context)
        if not self._streams.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this platform node serves at most {MAX_STREAMS} streams at once; retry later",
            )
        try:
            yield from self._stream(request_iterator, context)
        finally:
            self._streams.release()

    def _stream(
        self, request_iterator: Iterator[pb.ScoreRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ScoreReceipt]:
        done: queue.Queue[pb.ScoreReceipt | object | None] = queue.Queue()
        incoming: queue.Queue[pb.ScoreRequest | None] = queue.Queue()
        window = threading.Semaphore(STREAM_WINDOW)
        window_bytes = ByteWindow(STREAM_WINDOW_BYTES)
        workers = threading.Semaphore(STREAM_WORKERS)
        in_flight = [0]  # requests read and not yet answered
        lock = threading.Lock()

        def run(chunk: list[pb.ScoreRequest]) -> None:
            try:
                for receipt in self._score_chunk(chunk):
                    done.put(receipt)
            finally:
                workers.release()
                for request in chunk:
                    window.release()
                    window_bytes.release(request.ByteSize())
                with lock:
                    in_flight[0] -= len(chunk)

        def feed() -> None:
            try:
                for request in request_iterator:
                    window.acquire()
                    window_bytes.acquire(request.ByteSize())
                    with lock:
                        in_flight[0] += 1
                    incoming.put(request)
            except Exception:
                if context.is_active():
                    log.exception("reading the request stream failed")
            finally:
                incoming.put(None)

        def dispatch() -> None:
            # A chunk starts when a worker is free and takes everything queued by then: one
            # request alone goes at once, and under load the queue fills while workers are
            # busy, so chunks (and packed batches) grow with the load.
            pending: list[futures.Future[None]] = []
            try:
                ended = False
                while not ended:
                    try:
                        first = incoming.get(timeout=STREAM_IDLE_S)
                    except queue.Empty:
                        with lock:
                            idle = in_flight[0] == 0
                        if idle:
                            done.put(_IDLE)
                            return
                        continue
                    if first is None:
                        break
                    workers.acquire()
                    chunk = [first]
                    while len(chunk) < STREAM_CHUNK:
                        try:
                            item = incoming.get_nowait()
                        except queue.Empty:
                            break
                        if item is None:
                            ended = True
                            break
                        chunk.append(item)
                    pending.append(self._pool.submit(run, chunk))
            finally:
                futures.wait(pending)
                done.put(None)

        threading.Thread(target=feed, daemon=True).start()
        threading.Thread(target=dispatch, daemon=True).start()
        try:
            while (receipt := done.get()) is not None:
                if receipt is _IDLE:
                    context.abort(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"the stream sent nothing for {STREAM_IDLE_S:g} s with nothing in flight; "
                        "open a new one when there is more to score",
                    )
                assert isinstance(receipt, pb.ScoreReceipt)
                yield receipt
        finally:
            self.peak_stream_bytes = max(self.peak_stream_bytes, window_bytes.peak)


def start_platform_server(
    node: PlatformNode,
    address: str,
    *,
    security: TransportSecurity = INSECURE,
    metrics: NodeMetrics | None = None,
) -> tuple[grpc.Server, int]:
    """Serve the Platform service on ``address``; returns (server, bound port). Also starts the
    node's resender, which first resends what an earlier run left unanswered in the outbox."""
    metrics = metrics or NodeMetrics("platform")
    servicer = PlatformServicer(node, metrics)
    server, port = create_server(
        address,
        [partial(pb_grpc.add_PlatformServicer_to_server, servicer)],
        security=security,
        service_names=("blindscore.v1.Platform",),
        metrics=metrics,
    )
    node.start_resending()
    return server, port
