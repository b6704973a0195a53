"""Client side of the platform node: stream applications to it and collect the receipts."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from blindscore import serde
from blindscore.application import Application
from blindscore.errors import UnavailableError
from blindscore.transport import INSECURE, TransportSecurity, open_channel, wait_ready
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc


@dataclass(frozen=True)
class Outcome:
    application_id: str
    accepted: bool
    total_ms: float
    encrypt_ms: float
    error: str = ""


_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _outcome(r: pb.ScoreReceipt) -> Outcome:
    error = ""
    if not r.accepted:
        error = f"{_CODE_NAMES.get(r.error_code, 'UNKNOWN')}: {r.error_message}"
    return Outcome(r.application_id, r.accepted, r.total_ms, r.encrypt_ms, error)


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


def score_one(
    platform_address: str, application: Application, *, security: TransportSecurity = INSECURE
) -> Outcome:
    """Score a single application with the unary call; gRPC errors propagate as grpc.RpcError."""
    with open_channel(platform_address, security=security) as channel:
        stub: Any = pb_grpc.PlatformStub(channel)
        receipt = stub.ScoreApplication(serde.application_to_proto(application), timeout=120)
    return _outcome(receipt)
