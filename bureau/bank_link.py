"""How the bureau reaches a bank during the band protocol: an interface and its gRPC implementation."""

from __future__ import annotations

import threading
from typing import Any, Protocol

import grpc

from blindscore import comparison, serde
from blindscore.application import BandDelivery
from blindscore.dgk import DGKPublicKey
from blindscore.paillier import PublicKey
from blindscore.status import call
from blindscore.transport import INSECURE, TransportSecurity, open_channel
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc

RPC_TIMEOUT_S = 30.0


class BankLink(Protocol):
    """The three calls the bureau makes to a bank for one application."""

    def compare_masked(
        self, application_id: str, request: comparison.MaskedRequest
    ) -> comparison.BitsResponse: ...

    def compare_blinded(
        self, application_id: str, request: comparison.BlindedRequest
    ) -> comparison.FinalResponse: ...

    def deliver_band(self, delivery: BandDelivery) -> None: ...


class GrpcBankLink:
    """BankLink over one gRPC channel to the bank's address."""

    def __init__(self, channel: grpc.Channel, key: PublicKey, dgk: DGKPublicKey) -> None:
        self._stub: Any = pb_grpc.BankStub(channel)
        self.key = key
        self.dgk = dgk

    def compare_masked(
        self, application_id: str, request: comparison.MaskedRequest
    ) -> comparison.BitsResponse:
        msg = serde.masked_request_to_proto(application_id, self.key, request)
        resp = call("bank", self._stub.CompareMasked, msg, timeout=RPC_TIMEOUT_S)
        return serde.bits_response_from_proto(resp, self.key, self.dgk, request.count, request.bits)

    def compare_blinded(
        self, application_id: str, request: comparison.BlindedRequest
    ) -> comparison.FinalResponse:
        msg = serde.blinded_request_to_proto(application_id, self.key, self.dgk, request)
        resp = call("bank", self._stub.CompareBlinded, msg, timeout=RPC_TIMEOUT_S)
        return serde.final_response_from_proto(resp, self.key, len(request.groups))

    def deliver_band(self, delivery: BandDelivery) -> None:
        call(
            "bank",
            self._stub.DeliverBand,
            serde.band_delivery_to_proto(delivery, self.key),
            timeout=RPC_TIMEOUT_S,
        )


class BankChannels:
    """One long-lived channel per bank address, shared by every application."""

    def __init__(self, security: TransportSecurity = INSECURE) -> None:
        self.security = security
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}

    def link(self, address: str, key: PublicKey, dgk: DGKPublicKey) -> GrpcBankLink:
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                channel = open_channel(address, security=self.security)
                self._channels[address] = channel
        return GrpcBankLink(channel, key, dgk)

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
