"""gRPC plumbing shared by the three nodes: servers, channels, limits and credentials in one place."""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from blindscore.errors import InvalidInputError

log = logging.getLogger(__name__)

# Largest message any node accepts. A 4096-bit key and a few hundred features stay far below it;
# anything bigger is refused by gRPC with RESOURCE_EXHAUSTED before our code sees it.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024

_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]


@dataclass(frozen=True)
class TransportSecurity:
    """How a node protects its links. Only plaintext loopback exists so far; mTLS plugs in here.

    Every server and channel is built from this one object, so turning on mutual TLS means
    filling in server_credentials()/channel_credentials() and nothing else.
    """

    insecure: bool = True

    def server_credentials(self) -> grpc.ServerCredentials | None:
        return None

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        return None


INSECURE = TransportSecurity(insecure=True)


def create_server(
    address: str,
    register: list[object],
    *,
    security: TransportSecurity = INSECURE,
    max_workers: int = 16,
    service_names: tuple[str, ...] = (),
) -> tuple[grpc.Server, int]:
    """Build and start a server on ``address`` (port 0 picks a free port); returns (server, port).

    ``register`` holds callables taking the server (the generated add_*_to_server partials).
    A gRPC health service reports SERVING for every name in ``service_names``.
    """
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=_OPTIONS)
    for add in register:
        add(server)  # type: ignore[operator]
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *service_names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    creds = security.server_credentials()
    port = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
    if port == 0:
        raise InvalidInputError(f"cannot listen on {address!r}: address in use or invalid")
    server.start()
    return server, port


def open_channel(address: str, *, security: TransportSecurity = INSECURE) -> grpc.Channel:
    """A channel to ``address`` with the project's message limits and credentials."""
    if not address or ":" not in address:
        raise InvalidInputError(f"node address {address!r} must look like host:port")
    creds = security.channel_credentials()
    if creds is not None:
        return grpc.secure_channel(address, creds, options=_OPTIONS)
    return grpc.insecure_channel(address, options=_OPTIONS)


def wait_ready(channel: grpc.Channel, timeout: float) -> None:
    """Block until the channel connects or ``timeout`` seconds pass (grpc.FutureTimeoutError)."""
    grpc.channel_ready_future(channel).result(timeout=timeout)


def host_port(address: str, port: int) -> str:
    """Replace the port in a listen address with the bound one (for port 0)."""
    host = address.rsplit(":", 1)[0]
    if host in ("", "0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"{host}:{port}"
