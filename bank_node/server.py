"""The bank's gRPC face: a thin servicer over BankNode, and registration with the bureau."""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any

import grpc

from bank_node.flow import BankNode
from blindscore import serde
from blindscore.errors import UnavailableError
from blindscore.status import call, grpc_errors
from blindscore.transport import INSECURE, TransportSecurity, create_server, open_channel, require_role
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


class BankServicer(pb_grpc.BankServicer):
    """Converts protos to domain objects, calls BankNode, converts back."""

    def __init__(self, node: BankNode) -> None:
        self.node = node

    @grpc_errors
    def CompareMasked(self, request: pb.MaskedRequest, context: grpc.ServicerContext) -> pb.BitsResponse:
        t0 = time.perf_counter()
        require_role(context, "bureau")
        pk = self.node.keypair.public_key
        self.node.check_key(request.key_id)
        req = serde.masked_request_from_proto(request, pk)
        resp = self.node.compare_masked(request.key_id, req)
        msg = serde.bits_response_to_proto(resp, pk, self.node.dgk.public_key)
        msg.server_ms = (time.perf_counter() - t0) * 1e3
        return msg

    @grpc_errors
    def CompareBlinded(self, request: pb.BlindedRequest, context: grpc.ServicerContext) -> pb.FinalResponse:
        t0 = time.perf_counter()
        require_role(context, "bureau")
        self.node.check_key(request.key_id)
        req = serde.blinded_request_from_proto(request, self.node.dgk.public_key)
        resp = self.node.compare_blinded(request.key_id, req)
        msg = serde.final_response_to_proto(resp, self.node.keypair.public_key)
        msg.server_ms = (time.perf_counter() - t0) * 1e3
        return msg

    @grpc_errors
    def DeliverBand(self, request: pb.BandDelivery, context: grpc.ServicerContext) -> pb.BandReceipt:
        t0 = time.perf_counter()
        require_role(context, "bureau")
        self.node.check_key(request.key_id)
        delivery = serde.band_delivery_from_proto(request, self.node.keypair.public_key)
        record = self.node.deliver_band(delivery)
        return pb.BandReceipt(
            application_id=record.application_id, stored=True, server_ms=(time.perf_counter() - t0) * 1e3
        )


def start_bank_server(
    node: BankNode, address: str, *, security: TransportSecurity = INSECURE
) -> tuple[grpc.Server, int]:
    """Serve the Bank service on ``address``; returns (server, bound port)."""
    servicer = BankServicer(node)
    return create_server(
        address,
        [partial(pb_grpc.add_BankServicer_to_server, servicer)],
        security=security,
        service_names=("blindscore.v1.Bank",),
    )


def register_with_bureau(
    node: BankNode,
    bureau_address: str,
    advertise_address: str,
    *,
    security: TransportSecurity = INSECURE,
    attempts: int = 60,
    delay: float = 0.5,
) -> str:
    """Publish the bank's public keys and address at the bureau, retrying while it starts."""
    request = pb.RegisterBankRequest(
        bank_id=node.bank_id,
        address=advertise_address,
        paillier_public_key=serde.paillier_key_to_json(node.keypair.public_key),
        dgk_public_key=serde.dgk_key_to_json(node.dgk.public_key),
    )
    with open_channel(bureau_address, security=security.expecting("bureau")) as channel:
        stub: Any = pb_grpc.BureauStub(channel)
        for attempt in range(attempts):
            try:
                resp = call("bureau", stub.RegisterBank, request, timeout=10)
                log.info("registered key %s with the bureau at %s", resp.key_id, bureau_address)
                return str(resp.key_id)
            except UnavailableError:
                if attempt == attempts - 1:
                    raise
                time.sleep(delay)
    raise UnavailableError(f"bureau at {bureau_address} unavailable")  # pragma: no cover
