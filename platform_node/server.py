"""The platform's gRPC face: a thin servicer over PlatformNode."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from concurrent import futures
from functools import partial

import grpc

from blindscore import serde
from blindscore._pool import request_scope
from blindscore.errors import BlindscoreError
from blindscore.metrics import NodeMetrics
from blindscore.status import grpc_errors, status_of
from blindscore.transport import INSECURE, TransportSecurity, create_server, require_role
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc
from platform_node.flow import PlatformNode

log = logging.getLogger(__name__)

STREAM_CONCURRENCY = 8


class PlatformServicer(pb_grpc.PlatformServicer):
    """Converts protos to domain objects, calls PlatformNode, converts back."""

    def __init__(self, node: PlatformNode, metrics: NodeMetrics | None = None) -> None:
        self.node = node
        self.metrics = metrics or NodeMetrics("platform")
        self._pool = futures.ThreadPoolExecutor(max_workers=STREAM_CONCURRENCY, thread_name_prefix="score")

    def _score(self, request: pb.ScoreRequest) -> pb.ScoreReceipt:
        try:
            with request_scope():
                receipt = self.node.score(serde.application_from_proto(request))
        except BlindscoreError as exc:
            self.metrics.observe_application(status_of(exc)[0].name)
            raise
        except Exception:
            self.metrics.observe_application("INTERNAL")
            raise
        self.metrics.observe_application("pending" if receipt.pending else "accepted")
        self.metrics.observe_stages(receipt.stage_ms, prefixes=("platform.", "transport.platform."))
        return pb.ScoreReceipt(
            application_id=receipt.application_id,
            accepted=True,
            encrypt_ms=receipt.encrypt_ms,
            total_ms=receipt.total_ms,
            stage_ms=receipt.stage_ms,
            wire_bytes=receipt.wire_bytes,
            model_version=receipt.model_version,
            pending=receipt.pending,
        )

    @grpc_errors
    def ScoreApplication(self, request: pb.ScoreRequest, context: grpc.ServicerContext) -> pb.ScoreReceipt:
        require_role(context, "platform")
        return self._score(request)

    def ScoreApplications(
        self, request_iterator: Iterator[pb.ScoreRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ScoreReceipt]:
        """Score a stream concurrently; a failed application yields a receipt carrying its status."""
        require_role(context, "platform")
        done: queue.Queue[pb.ScoreReceipt | None] = queue.Queue()
        window = threading.Semaphore(STREAM_CONCURRENCY * 2)

        def one(request: pb.ScoreRequest) -> None:
            try:
                done.put(self._score(request))
            except BlindscoreError as exc:
                code, message = status_of(exc)
                done.put(
                    pb.ScoreReceipt(
                        application_id=request.application_id,
                        accepted=False,
                        error_code=code.value[0],
                        error_message=message,
                    )
                )
            except Exception:
                log.exception("scoring %s failed", request.application_id)
                done.put(
                    pb.ScoreReceipt(
                        application_id=request.application_id,
                        accepted=False,
                        error_code=grpc.StatusCode.INTERNAL.value[0],
                        error_message="internal error; see the platform's log",
                    )
                )
            finally:
                window.release()

        def feed() -> None:
            pending: list[futures.Future[None]] = []
            try:
                for request in request_iterator:
                    window.acquire()
                    pending.append(self._pool.submit(one, request))
            finally:
                futures.wait(pending)
                done.put(None)

        threading.Thread(target=feed, daemon=True).start()
        while (receipt := done.get()) is not None:
            yield receipt


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
