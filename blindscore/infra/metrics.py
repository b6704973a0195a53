"""Prometheus metrics of one node: RPC counts, errors and latency, per-stage timings, an HTTP endpoint."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from blindscore.errors import InvalidInputError

log = logging.getLogger(__name__)

ROLES = ("bureau", "bank", "platform")

#: Latency buckets in seconds, from 1 ms to 10 s (a 2048-bit application takes tens of milliseconds).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: Only the project's own services are measured; health checks and reflection are not.
_SERVICE_PREFIX = "/blindscore."

# Stage names are made by our own code ("bureau.evaluate", "transport.bank.round1"); the checks only
# keep a bug (or a peer) from turning the stage label into an unbounded set of series.
_STAGE_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+){0,3}")
MAX_STAGES = 64


_OUTCOMES = frozenset({"accepted", "pending", *(c.name for c in grpc.StatusCode)})


class NodeMetrics:
    """The metrics of one node, in a registry of its own.

    A registry per node (not prometheus_client's global one) lets one process run several nodes,
    as the tests do, without duplicate-metric errors, and exports only this node's series.
    Labels are bounded by construction: node role, RPC method name, gRPC status code name and
    stage name. Never an id, a feature, a score or a band.
    """

    def __init__(self, node: str) -> None:
        if node not in ROLES:
            raise InvalidInputError(f"metrics node {node!r} must be one of {', '.join(ROLES)}")
        self.node = node
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "blindscore_requests",
            "RPCs handled, by method (counted when the call ends, whatever its status).",
            ["node", "method"],
            registry=self.registry,
        )
        self.errors = Counter(
            "blindscore_request_errors",
            "RPCs that ended with a status other than OK, by method and gRPC status code.",
            ["node", "method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "blindscore_request_seconds",
            "Time a node spent handling an RPC (for a response stream: until the stream ended).",
            ["node", "method"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.stages = Histogram(
            "blindscore_stage_seconds",
            "Time spent in one stage of scoring an application, as this node measured or was told it.",
            ["node", "stage"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.applications = Counter(
            "blindscore_applications",
            "Applications by outcome: accepted, pending (stored, band not delivered yet) or the gRPC status "
            "that refused them; also for applications inside a ScoreApplications stream.",
            ["node", "outcome"],
            registry=self.registry,
        )
        self.protocol_faults = Counter(
            "blindscore_protocol_faults",
            "Band-protocol runs in which a peer broke the protocol (a value outside its promise, "
            "malformed garbled outputs), as this node detected them; each is also in its fault record.",
            ["node", "check"],
            registry=self.registry,
        )
        self.suspended_peers = Gauge(
            "blindscore_suspended_peers",
            "Peers this node refuses until an operator resets them (the bank: suspended bureaus).",
            ["node"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "blindscore_in_flight_requests",
            "RPCs being handled right now.",
            ["node"],
            registry=self.registry,
        )
        self._in_flight = self.in_flight.labels(node=node)
        self._lock = threading.Lock()
        self._stage_names: set[str] = set()

    def __repr__(self) -> str:
        return f"NodeMetrics({self.node!r})"

    # ------------------------------------------------------------------ recording
    def observe_request(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        """Count one finished RPC of ``method`` that ended with ``code`` after ``seconds``."""
        self.requests.labels(node=self.node, method=method).inc()
        self.latency.labels(node=self.node, method=method).observe(seconds)
        if code != grpc.StatusCode.OK:
            self.errors.labels(node=self.node, method=method, code=code.name).inc()

    def observe_fault(self, check: str) -> None:
        """Count one protocol fault; ``check`` is one of a fixed set of check names."""
        self.protocol_faults.labels(node=self.node, check=check).inc()

    def observe_application(self, outcome: str) -> None:
        """Count one application: "accepted", "pending" or a gRPC status code name."""
        if outcome not in _OUTCOMES:
            outcome = "UNKNOWN"
        self.applications.labels(node=self.node, outcome=outcome).inc()

    def observe_stage(self, stage: str, seconds: float) -> None:
        """Record one timing of ``stage``; a malformed name, or one past MAX_STAGES, is dropped."""
        if not self._admit(stage):
            return
        self.stages.labels(node=self.node, stage=stage).observe(max(0.0, seconds))

    def observe_stages(self, stage_ms: Mapping[str, float], *, prefixes: tuple[str, ...] = ()) -> None:
        """Record every stage of a report in milliseconds (only those starting with ``prefixes``, if
        given: a node that is handed a peer's report keeps the stages it measured itself)."""
        for stage, ms in stage_ms.items():
            if not prefixes or stage.startswith(prefixes):
                self.observe_stage(stage, ms / 1e3)

    def _admit(self, stage: str) -> bool:
        with self._lock:
            if stage in self._stage_names:
                return True
            if _STAGE_NAME.fullmatch(stage) is None or len(self._stage_names) >= MAX_STAGES:
                log.warning("stage name %r not recorded in the metrics (malformed or too many)", stage[:80])
                return False
            self._stage_names.add(stage)
            return True

    # ------------------------------------------------------------------ gRPC
    def interceptor(self) -> grpc.ServerInterceptor:
        """A server interceptor recording every call of the blindscore services."""
        return _MetricsInterceptor(self)


def _code_of(context: grpc.ServicerContext, failed: bool) -> grpc.StatusCode:
    """The status a call ended with: the one set or aborted with, else OK or (on an exception) UNKNOWN.

    ``context.abort`` records its code and then raises, so the code is read after the exception.
    """
    code = getattr(context, "code", lambda: None)()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK


class _MetricsInterceptor(grpc.ServerInterceptor):
    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        full_name = handler_call_details.method
        # An unknown method gets no handler and no series: a caller cannot mint label values.
        if handler is None or not full_name.startswith(_SERVICE_PREFIX):
            return handler
        method = full_name.rsplit("/", 1)[-1]
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._unary(method, handler.unary_unary), **kwargs)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(self._unary(method, handler.stream_unary), **kwargs)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(self._stream(method, handler.unary_stream), **kwargs)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream(method, handler.stream_stream), **kwargs
            )
        return handler  # pragma: no cover - gRPC handlers always have one behaviour

    def _unary(self, method: str, behaviour: Callable[[Any, grpc.ServicerContext], Any]) -> Any:
        metrics = self.metrics

        def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
            metrics._in_flight.inc()
            t0 = time.perf_counter()
            failed = True
            try:
                response = behaviour(request, context)
                failed = False
                return response
            finally:
                metrics._in_flight.dec()
                metrics.observe_request(method, _code_of(context, failed), time.perf_counter() - t0)

        return wrapper

    def _stream(self, method: str, behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]]) -> Any:
        metrics = self.metrics

        def wrapper(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            metrics._in_flight.inc()
            t0 = time.perf_counter()
            code: grpc.StatusCode | None = None
            try:
                yield from behaviour(request, context)
                code = _code_of(context, failed=False)
            except GeneratorExit:
                # gRPC stopped pulling responses: the client cancelled or the deadline passed.
                code = grpc.StatusCode.CANCELLED
                raise
            except BaseException:
                code = _code_of(context, failed=True)
                raise
            finally:
                metrics._in_flight.dec()
                metrics.observe_request(method, code or grpc.StatusCode.UNKNOWN, time.perf_counter() - t0)

        return wrapper


@dataclass
class MetricsServer:
    """The HTTP endpoint serving one node's metrics at ``/metrics``."""

    server: Any
    thread: threading.Thread
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(metrics: NodeMetrics, port: int, addr: str = "127.0.0.1") -> MetricsServer:
    """Serve ``metrics`` over plain HTTP on ``addr:port`` (port 0 picks a free one; see ``.port``).

    The endpoint has no authentication and no TLS, hence loopback by default: expose it further
    only on a network where the scraper alone can reach it.
    """
    if not 0 <= port <= 65535:
        raise InvalidInputError(f"metrics port {port} is not a TCP port (0-65535; 0 picks a free one)")
    try:
        server, thread = start_http_server(port, addr=addr, registry=metrics.registry)
    except OSError as exc:
        raise InvalidInputError(f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}") from None
    exporter = MetricsServer(server, thread, addr, int(server.server_port))
    log.warning("%s metrics at %s", metrics.node, exporter.url)
    return exporter


def serve_node_metrics(
    node: str, port: int | None, addr: str = "127.0.0.1"
) -> tuple[NodeMetrics, MetricsServer | None]:
    """A node's metrics, served on ``addr:port`` unless ``port`` is None (the --metrics-port flags)."""
    metrics = NodeMetrics(node)
    return metrics, None if port is None else start_metrics_server(metrics, port, addr)
