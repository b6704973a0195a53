"""A client for the bank's own systems: read a band by application id, follow new bands as they arrive."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from blindscore.infra.status import error_of
from blindscore.infra.transport import client_credentials, open_channel
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc


@dataclass(frozen=True)
class Band:
    """The band the bank learned for one application, as its own systems read it."""

    application_id: str
    platform_id: str
    model_id: str
    band: int
    band_label: str
    received_at: float
    bureau_id: str = ""
    key_id: str = ""


def band_from_proto(message: pb.BandResult) -> Band:
    """A BandResult as a :class:`Band` (the inverse of ``bank_node.server.band_to_proto``)."""
    return Band(
        message.application_id,
        message.platform_id,
        message.model_id,
        message.band,
        message.band_label,
        message.received_at,
        message.bureau_id,
        message.key_id,
    )


class BankClient:
    """The bank's own systems' view of a running bank node, over mutual TLS with a bank-client
    certificate (``blindscore certs init --bank-client ID``) naming that bank.

    ``certs``: the PKI directory holding the certificate; ``client_id``: its party id (None: the
    directory's only bank-client certificate). ``insecure=True`` talks to a node started with
    ``--insecure`` (development only). Failed calls raise the BlindscoreError of their status
    (NotFoundError, PermissionDeniedError, UnavailableError, ...).
    """

    def __init__(
        self,
        bank: str,
        *,
        certs: Path | str | None = None,
        client_id: str | None = None,
        insecure: bool = False,
        timeout: float = 30.0,
    ) -> None:
        security = client_credentials("bank-client", certs, client_id, insecure=insecure)
        self.address = bank
        self.timeout = timeout
        self._channel = open_channel(bank, security=security, retry_unavailable=True)
        self._stub: Any = pb_grpc.BankStub(self._channel)

    def band(self, application_id: str, platform_id: str = "") -> Band:
        """The band of ``application_id`` (from ``platform_id``; "" when only one platform used the id)."""
        request = pb.GetBandRequest(application_id=application_id, platform_id=platform_id)
        try:
            return band_from_proto(self._stub.GetBand(request, timeout=self.timeout))
        except grpc.RpcError as exc:
            raise error_of(f"bank at {self.address}", exc) from None

    def watch(self, since: float = 0.0, *, timeout: float | None = None) -> Iterator[Band]:
        """Every band received at or after ``since`` (epoch seconds), then each new one as it
        arrives, until the caller stops iterating (or ``timeout`` seconds pass: UnavailableError)."""
        stream = self._stub.WatchBands(pb.WatchBandsRequest(since=since), timeout=timeout)
        try:
            for message in stream:
                yield band_from_proto(message)
        except grpc.RpcError as exc:
            raise error_of(f"bank at {self.address}", exc) from None
        finally:
            stream.cancel()

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> BankClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
