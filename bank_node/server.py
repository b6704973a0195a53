"""The bank's gRPC face: a thin servicer over BankNode, and registration with the bureau."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import grpc

from bank_node.flow import BankNode
from blindscore import serde
from blindscore.errors import UnavailableError
from blindscore.status import call, grpc_errors
from blindscore.transport import INSECURE, TransportSecurity, create_server, open_channel, require_role
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


F = TypeVar("F", bound=Callable[..., Any])


def timed(method: F) -> F:
    """Stamp the response's ``server_ms`` with the time the bank spent on the call."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        t0 = time.perf_counter()
        response = method(self, request, context)
        response.server_ms = (time.perf_counter() - t0) * 1e3
        return response

    return wrapper  # type: ignore[return-value]


class BankServicer(pb_grpc.BankServicer):
    """Converts protos to domain objects, calls BankNode, converts back."""

    def __init__(self, node: BankNode) -> None:
        self.node = node

    @grpc_errors
    @timed
    def CompareMasked(self, request: pb.MaskedRequest, context: grpc.ServicerContext) -> pb.BitsResponse:
        require_role(context, "bureau")
        pk = self.node.keypair.public_key
        self.node.check_key(request.key_id)  # before unpacking: the key decides the wire format
        resp = self.node.compare_masked(request.key_id, serde.masked_request_from_proto(request, pk))
        return serde.bits_response_to_proto(resp, pk, self.node.dgk.public_key)

    @grpc_errors
    @timed
    def CompareBlinded(self, request: pb.BlindedRequest, context: grpc.ServicerContext) -> pb.FinalResponse:
        require_role(context, "bureau")
        self.node.check_key(request.key_id)
        req = serde.blinded_request_from_proto(request, self.node.dgk.public_key)
        resp = self.node.compare_blinded(request.key_id, req)
        return serde.final_response_to_proto(resp, self.node.keypair.public_key)

    @grpc_errors
    @timed
    def DeliverBand(self, request: pb.BandDelivery, context: grpc.ServicerContext) -> pb.BandReceipt:
        require_role(context, "bureau")
        self.node.check_key(request.key_id)
        record = self.node.deliver_band(serde.band_delivery_from_proto(request, self.node.keypair.public_key))
        return pb.BandReceipt(application_id=record.application_id, stored=True)


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
