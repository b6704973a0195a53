"""Client side of the platform node: stream applications to it and collect the receipts."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc

from blindscore.errors import UnavailableError
from blindscore.infra.transport import INSECURE, TransportSecurity, open_channel, wait_ready
from blindscore.protocol.application import Application
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc
from blindscore.wire import serde


@dataclass(frozen=True)
class Outcome:
    application_id: str
    accepted: bool
    total_ms: float
    encrypt_ms: float
    error: str = ""
    stage_ms: dict[str, float] = field(default_factory=dict)
    wire_bytes: int = 0
    model_version: str = ""
    #: Accepted and stored, but the band is not delivered yet (the bank was unreachable); the
    #: bureau retries until it is.
    pending: bool = False


_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _outcome(r: pb.ScoreReceipt) -> Outcome:
    error = ""
    if not r.accepted:
        error = f"{_CODE_NAMES.get(r.error_code, 'UNKNOWN')}: {r.error_message}"
    return Outcome(
        r.application_id,
        r.accepted,
        r.total_ms,
        r.encrypt_ms,
        error,
        dict(r.stage_ms),
        r.wire_bytes,
        r.model_version,
        r.pending,
    )


def score_applications(
    platform_address: str,
    applications: Iterable[Application],
    *,
    on_outcome: Callable[[Outcome], None] | None = None,
    security: TransportSecurity = INSECURE,
    timeout: float = 3600.0,
) -> list[Outcome]:
    """Send every application over one ScoreApplications stream; returns outcomes in completion order."""
    outcomes: list[Outcome] = []
    with open_channel(platform_address, security=security) as channel:
        try:
            wait_ready(channel, 30)
        except grpc.FutureTimeoutError:
            raise UnavailableError(f"platform at {platform_address} did not answer") from None
        stub: Any = pb_grpc.PlatformStub(channel)
        requests = (serde.application_to_proto(a) for a in applications)
        try:
            for receipt in stub.ScoreApplications(requests, timeout=timeout):
                outcome = _outcome(receipt)
                outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
        except grpc.RpcError as exc:
            raise UnavailableError(f"platform stream failed: {exc.details()}") from None
    return outcomes


class PlatformClient:
    """A long-lived channel to a platform node for unary calls (one application at a time)."""

    def __init__(self, platform_address: str, *, security: TransportSecurity = INSECURE) -> None:
        self._channel = open_channel(platform_address, security=security)
        self._stub: Any = pb_grpc.PlatformStub(self._channel)

    def score(self, application: Application, *, timeout: float = 120) -> Outcome:
        """Score one application; gRPC errors propagate as grpc.RpcError with the node's status."""
        return _outcome(self._stub.ScoreApplication(serde.application_to_proto(application), timeout=timeout))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PlatformClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def score_one(
    platform_address: str, application: Application, *, security: TransportSecurity = INSECURE
) -> Outcome:
    """Score a single application over a fresh channel; gRPC errors propagate as grpc.RpcError."""
    with PlatformClient(platform_address, security=security) as client:
        return client.score(application)
