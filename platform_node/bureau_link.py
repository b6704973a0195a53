"""How the platform reaches the bureau: an interface and its gRPC implementation."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from blindscore.crypto.paillier import PublicKey
from blindscore.crypto.pools import waiting_on_peer
from blindscore.infra.status import call
from blindscore.protocol.application import ModelSpec
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc
from blindscore.wire import serde

RPC_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class SubmitResult:
    """What the bureau's receipt and the call itself cost, for monitoring."""

    stage_ms: dict[str, float]
    wire_bytes: int
    model_version: str = ""
    #: The bureau stored the application but has not delivered its band yet.
    pending: bool = False


class BureauLink(Protocol):
    def model_spec(self, model_id: str, version: str = "") -> ModelSpec: ...

    def bank_key(self, bank_id: str, key_id: str) -> PublicKey: ...

    def submit(self, payload: bytes) -> SubmitResult: ...

    def submit_batch(self, payload: bytes, count: int) -> SubmitResult: ...


class GrpcBureauLink:
    """BureauLink over a gRPC channel."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._stub: Any = pb_grpc.BureauStub(channel)
        # Submissions go as the platform's outbox stored them: bytes, no request serializer.
        self._submit_application = channel.unary_unary(
            "/blindscore.v1.Bureau/SubmitApplication",
            request_serializer=None,
            response_deserializer=pb.SubmitReceipt.FromString,
        )
        self._submit_batch = channel.unary_unary(
            "/blindscore.v1.Bureau/SubmitBatch",
            request_serializer=None,
            response_deserializer=pb.BatchReceipt.FromString,
        )

    def model_spec(self, model_id: str, version: str = "") -> ModelSpec:
        """The public spec of ``model_id`` at ``version`` ("" for the latest)."""
        req = pb.GetModelSpecRequest(model_id=model_id, model_version=version)
        return serde.model_spec_from_proto(call("bureau", self._stub.GetModelSpec, req, timeout=10))

    def bank_key(self, bank_id: str, key_id: str) -> PublicKey:
        req = pb.GetBankKeyRequest(bank_id=bank_id, key_id=key_id)
        resp = call("bureau", self._stub.GetBankKey, req, timeout=10)
        return serde.paillier_key_from_json(resp.paillier_public_key)

    def submit(self, payload: bytes) -> SubmitResult:
        """Submit a serialized EncryptedApplication as it is."""
        return self._submit(self._submit_application, payload, 1)

    def submit_batch(self, payload: bytes, count: int) -> SubmitResult:
        """Submit a serialized EncryptedBatch of ``count`` applications as it is; stage times and
        bytes in the result are per application."""
        return self._submit(self._submit_batch, payload, count)

    def _submit(self, method: Any, payload: bytes, count: int) -> SubmitResult:
        t0 = time.perf_counter()
        with waiting_on_peer():
            resp = call("bureau", method, payload, timeout=RPC_TIMEOUT_S)
        elapsed = (time.perf_counter() - t0) * 1e3 / count
        stages = dict(resp.stage_ms)
        bureau_total = sum(v for k, v in stages.items() if not k.startswith("transport.platform"))
        stages["transport.platform.submit"] = max(0.0, elapsed - bureau_total)
        wire = (len(payload) + resp.ByteSize()) // count + resp.wire_bytes
        return SubmitResult(stages, wire, resp.model_version, resp.pending)
