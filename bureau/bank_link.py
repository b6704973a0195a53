"""How the bureau reaches a bank during the band protocol: an interface and its gRPC implementation."""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

import grpc

from blindscore import comparison, serde
from blindscore._pool import waiting_on_peer
from blindscore.application import BandDelivery
from blindscore.dgk import DGKPublicKey
from blindscore.paillier import PublicKey
from blindscore.status import call
from blindscore.transport import INSECURE, TransportSecurity, open_channel
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc

RPC_TIMEOUT_S = 30.0


class BankLink(Protocol):
    """The three calls the bureau makes to a bank for one application.

    ``stage_ms`` and ``wire_bytes`` accumulate what the calls cost, for the receipt.
    """

    stage_ms: dict[str, float]
    wire_bytes: int

    def compare_masked(
        self, application_id: str, request: comparison.MaskedRequest
    ) -> comparison.BitsResponse: ...

    def compare_blinded(
        self, application_id: str, request: comparison.BlindedRequest
    ) -> comparison.FinalResponse: ...

    def deliver_band(self, delivery: BandDelivery) -> None: ...


class GrpcBankLink:
    """BankLink over one gRPC channel to the bank's address; one instance per application."""

    def __init__(self, channel: grpc.Channel, key: PublicKey, dgk: DGKPublicKey) -> None:
        self._stub: Any = pb_grpc.BankStub(channel)
        self.key = key
        self.dgk = dgk
        self.stage_ms: dict[str, float] = {}
        self.wire_bytes = 0

    def _call(self, stage: str, method: Any, msg: Any) -> Any:
        t0 = time.perf_counter()
        with waiting_on_peer():
            resp = call("bank", method, msg, timeout=RPC_TIMEOUT_S)
        elapsed = (time.perf_counter() - t0) * 1e3
        self.stage_ms[f"bank.{stage}"] = resp.server_ms
        self.stage_ms[f"transport.bank.{stage}"] = max(0.0, elapsed - resp.server_ms)
        self.wire_bytes += msg.ByteSize() + resp.ByteSize()
        return resp

    def compare_masked(
        self, application_id: str, request: comparison.MaskedRequest
    ) -> comparison.BitsResponse:
        msg = serde.masked_request_to_proto(application_id, self.key, request)
        resp = self._call("round1", self._stub.CompareMasked, msg)
        return serde.bits_response_from_proto(resp, self.key, self.dgk, request.bits)

    def compare_blinded(
        self, application_id: str, request: comparison.BlindedRequest
    ) -> comparison.FinalResponse:
        msg = serde.blinded_request_to_proto(application_id, self.key, self.dgk, request)
        resp = self._call("round2", self._stub.CompareBlinded, msg)
        return serde.final_response_from_proto(resp, self.key, len(request.groups))

    def deliver_band(self, delivery: BandDelivery) -> None:
        self._call("deliver", self._stub.DeliverBand, serde.band_delivery_to_proto(delivery, self.key))


class BankChannels:
    """One long-lived channel per bank address, shared by every application."""

    def __init__(self, security: TransportSecurity = INSECURE) -> None:
        self.security = security
        self._lock = threading.Lock()
        self._channels: dict[tuple[str, str], grpc.Channel] = {}

    def link(self, bank_id: str, address: str, key: PublicKey, dgk: DGKPublicKey) -> GrpcBankLink:
        """A link to ``bank_id`` at ``address``; with mTLS only that bank's certificate is accepted,
        so a band is delivered to the bank the application names and to no one else."""
        with self._lock:
            channel = self._channels.get((bank_id, address))
            if channel is None:
                channel = open_channel(address, security=self.security.expecting("bank", bank_id))
                self._channels[(bank_id, address)] = channel
        return GrpcBankLink(channel, key, dgk)

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
