"""How the platform reaches the bureau: an interface and its gRPC implementation."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from blindscore.crypto.paillier import PublicKey
from blindscore.crypto.pools import waiting_on_peer
from blindscore.infra.status import call
from blindscore.protocol.application import EncryptedApplication, EncryptedBatch, ModelSpec
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

    def submit(self, app: EncryptedApplication, key: PublicKey) -> SubmitResult: ...

    def submit_batch(self, batch: EncryptedBatch, key: PublicKey) -> SubmitResult: ...


class GrpcBureauLink:
    """BureauLink over a gRPC channel."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._stub: Any = pb_grpc.BureauStub(channel)

    def model_spec(self, model_id: str, version: str = "") -> ModelSpec:
        """The public spec of ``model_id`` at ``version`` ("" for the latest)."""
        req = pb.GetModelSpecRequest(model_id=model_id, model_version=version)
        return serde.model_spec_from_proto(call("bureau", self._stub.GetModelSpec, req, timeout=10))

    def bank_key(self, bank_id: str, key_id: str) -> PublicKey:
        req = pb.GetBankKeyRequest(bank_id=bank_id, key_id=key_id)
        resp = call("bureau", self._stub.GetBankKey, req, timeout=10)
        return serde.paillier_key_from_json(resp.paillier_public_key)

    def submit(self, app: EncryptedApplication, key: PublicKey) -> SubmitResult:
        return self._submit(self._stub.SubmitApplication, serde.encrypted_application_to_proto(app, key), 1)

    def submit_batch(self, batch: EncryptedBatch, key: PublicKey) -> SubmitResult:
        """Submit a packed batch; stage times and bytes in the result are per application."""
        msg = serde.encrypted_batch_to_proto(batch, key)
        return self._submit(self._stub.SubmitBatch, msg, len(batch.members))

    def _submit(self, method: Any, msg: Any, count: int) -> SubmitResult:
        t0 = time.perf_counter()
        with waiting_on_peer():
            resp = call("bureau", method, msg, timeout=RPC_TIMEOUT_S)
        elapsed = (time.perf_counter() - t0) * 1e3 / count
        stages = dict(resp.stage_ms)
        bureau_total = sum(v for k, v in stages.items() if not k.startswith("transport.platform"))
        stages["transport.platform.submit"] = max(0.0, elapsed - bureau_total)
        wire = (msg.ByteSize() + resp.ByteSize()) // count + resp.wire_bytes
        return SubmitResult(stages, wire, resp.model_version, resp.pending)
