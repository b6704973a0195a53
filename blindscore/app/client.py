"""Client side of the platform node: send it applications, collect the receipts (blindscore.Client)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from blindscore._files import write_atomic
from blindscore.app.rejects import Rejected, check_on_invalid, check_policy, header_of, reason_of, rejects_csv
from blindscore.app.tables import Data, load_rows
from blindscore.errors import InvalidInputError, UnavailableError
from blindscore.infra.status import error_of
from blindscore.infra.transport import (
    INSECURE,
    TransportSecurity,
    client_credentials,
    open_channel,
    wait_ready,
)
from blindscore.protocol.application import Application, FeatureValue
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

    @property
    def status(self) -> str:
        """ "accepted" (the band is at the bank), "pending" (it will be) or "refused" (see ``error``).
        The platform never learns the band: the bank's own systems read it (BankClient)."""
        if not self.accepted:
            return "refused"
        return "pending" if self.pending else "accepted"


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
    with open_channel(platform_address, security=security, retry_unavailable=True) as channel:
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


#: How a refusal of the application's own content starts (an outcome's ``error``).
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.name


class _Duplicate(InvalidInputError):
    """An id given twice: which row is meant is unclear, so it stops a run whatever the policy."""


def _column_reason(message: str) -> str:
    """The platform's "feature 'x': ..." as a rejects reason naming the column."""
    if message.startswith("feature '"):
        return "column" + message.removeprefix("feature")
    return message


class PlatformClient:
    """A long-lived channel to a platform node for unary calls (one application at a time)."""

    def __init__(self, platform_address: str, *, security: TransportSecurity = INSECURE) -> None:
        self._channel = open_channel(platform_address, security=security, retry_unavailable=True)
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


class Client:
    """Submit applications to a running platform node, as that platform's own systems.

    Connects over mutual TLS with a platform-client certificate (``blindscore certs init
    --platform-client ID``; it names the platform it serves, and only that platform's node accepts
    it). ``certs`` is the PKI directory holding it, ``client_id`` its party id (None: the
    directory's only platform-client certificate); ``insecure=True`` talks to a node started with
    ``--insecure`` (development only). Every application names the bank, its key id (``blindscore
    bank key-id``) and the model at the bureau; the platform answers with an acknowledgement only,
    never the band.

    Example::

        with blindscore.Client("platform.internal:7300", certs="pki", bank_id="bank-1",
                               key_id="3f9c...", model_id="german-credit-lr") as client:
            for outcome in client.submit("applicants.csv", consent_reference="consent-2026-01"):
                print(outcome.application_id, outcome.status, outcome.error)
    """

    def __init__(
        self,
        platform: str,
        *,
        bank_id: str,
        key_id: str,
        model_id: str,
        model_version: str = "",
        certs: Path | str | None = None,
        client_id: str | None = None,
        insecure: bool = False,
        connect_timeout: float = 10.0,
        timeout: float = 3600.0,
    ) -> None:
        security = client_credentials("platform-client", certs, client_id, insecure=insecure)
        # Checked now, so a typo fails before any row is read.
        Application("check", bank_id, model_id, key_id, "check", model_version=model_version)
        self.address = platform
        self.bank_id, self.key_id, self.model_id = bank_id, key_id, model_id
        self.model_version = model_version
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._channel = open_channel(platform, security=security, retry_unavailable=True)
        self._stub: Any = pb_grpc.PlatformStub(self._channel)
        self._ready = False
        #: The rows the last :meth:`submit` with ``on_invalid="skip"`` skipped.
        self.rejected: list[Rejected] = []
        self._rows: dict[str, tuple[int, Mapping[str, object]]] = {}
        self._header: list[str] = []

    def applications(
        self,
        data: Data,
        *,
        id_column: str = "application_id",
        consent_column: str = "consent_reference",
        consent_reference: str | None = None,
        on_invalid: str = "stop",
    ) -> list[Application]:
        """The applications ``data`` holds (see :meth:`submit`), checked, without sending anything.

        A row without a usable id or consent reference raises, or with ``on_invalid="skip"`` is left
        out and recorded in :attr:`rejected`. An id given twice always raises."""
        check_on_invalid(on_invalid)
        rows = load_rows(data)
        apps: list[Application] = []
        seen: set[str] = set()
        self.rejected = []
        self._rows = {}
        for i, row in enumerate(rows):
            where = f"row {i + 1}"
            app_id = row.get(id_column)
            try:
                if app_id is None:
                    raise InvalidInputError(f"{where}: no application id (column {id_column!r})")
                app_id = str(app_id)
                if app_id in seen:
                    raise _Duplicate(f"{where}: application id {app_id!r} appears twice")
                seen.add(app_id)
                consent = row.get(consent_column) if consent_column in row else consent_reference
                if consent is None or consent == "":
                    raise InvalidInputError(
                        f"{where} ({app_id}): no consent reference: give a {consent_column!r} column "
                        "or consent_reference= (--consent)"
                    )
                features: dict[str, FeatureValue | None] = {
                    k: v for k, v in row.items() if k not in (id_column, consent_column)
                }
                try:
                    apps.append(
                        Application(
                            app_id,
                            self.bank_id,
                            self.model_id,
                            self.key_id,
                            str(consent),
                            features,
                            self.model_version,
                        )
                    )
                except InvalidInputError as exc:
                    raise InvalidInputError(f"{where}: {exc}") from None
            except _Duplicate:
                raise
            except InvalidInputError as exc:
                if on_invalid == "stop":
                    raise
                self.rejected.append(Rejected(i + 1, row, reason_of(exc).removeprefix(f"{where}: ")))
            else:
                self._rows[app_id] = (i + 1, row)
        self._header = header_of(rows)
        return apps

    def submit(
        self,
        data: Data,
        *,
        id_column: str = "application_id",
        consent_column: str = "consent_reference",
        consent_reference: str | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
        on_invalid: str = "stop",
        rejects: Path | str | None = None,
    ) -> list[Outcome]:
        """Send every application in ``data`` over one stream; returns their outcomes in input order.

        ``data``: a pandas DataFrame, a CSV or Parquet path, or a list of dicts, one applicant per
        row: the application id in ``id_column``, the consent reference in ``consent_column`` (or
        one ``consent_reference`` for every row), the model's features in the other columns.
        Submitting an id again with the same features returns its stored outcome; with other
        features it is refused (ALREADY_EXISTS). A refused application is an outcome with status
        "refused"; an unreachable or refusing node raises (UnavailableError, PermissionDeniedError).

        ``on_invalid="skip"`` with ``rejects=PATH``: a row the platform refuses as invalid input (it
        checks every row against the model's public encoding: an empty cell without an imputer, an
        unseen category, a value outside its range, not a number) or a row without a usable id or
        consent is left out of the returned outcomes and written to the CSV ``rejects`` (its cells
        and a ``reason``; also in :attr:`rejected`). The default ``"stop"`` raises on a row without
        a usable id or consent before anything is sent, and returns the platform's refusals as
        "refused" outcomes.
        """
        rejects_path = Path(rejects) if rejects is not None else None
        others = {"data": Path(data)} if isinstance(data, str | Path) else {}
        check_policy(on_invalid, rejects_path, flags=("on_invalid", "rejects"), others=others)
        apps = self.applications(
            data,
            id_column=id_column,
            consent_column=consent_column,
            consent_reference=consent_reference,
            on_invalid=on_invalid,
        )
        self._wait_ready()
        got: dict[str, Outcome] = {}
        refused: list[Outcome] = []
        requests = (serde.application_to_proto(a) for a in apps)
        try:
            for receipt in self._stub.ScoreApplications(requests, timeout=self.timeout):
                outcome = _outcome(receipt)
                if outcome.application_id in got or not outcome.application_id:
                    refused.append(outcome)  # an id the platform could not echo
                else:
                    got[outcome.application_id] = outcome
                if on_outcome is not None:
                    on_outcome(outcome)
        except grpc.RpcError as exc:
            raise error_of(f"platform at {self.address}", exc) from None
        ordered = [got[a.application_id] for a in apps if a.application_id in got]
        if on_invalid == "skip" and rejects_path is not None:
            kept = []
            for outcome in ordered:
                if outcome.error.startswith(INVALID_ARGUMENT):
                    number, row = self._rows[outcome.application_id]
                    reason = outcome.error.removeprefix(INVALID_ARGUMENT).removeprefix(": ")
                    self.rejected.append(Rejected(number, row, _column_reason(reason)))
                else:
                    kept.append(outcome)
            ordered = kept
            self.rejected.sort(key=lambda r: r.row)
            write_atomic(rejects_path, rejects_csv(self._header, self.rejected))
        return ordered + refused

    def submit_one(
        self, application_id: str, features: Mapping[str, FeatureValue | None], consent_reference: str
    ) -> Outcome:
        """Send one application; returns its outcome, or raises the error of a refusal
        (InvalidInputError, AlreadyExistsError, ...)."""
        app = Application(
            application_id,
            self.bank_id,
            self.model_id,
            self.key_id,
            consent_reference,
            dict(features),
            self.model_version,
        )
        self._wait_ready()
        try:
            receipt = self._stub.ScoreApplication(serde.application_to_proto(app), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise error_of(f"platform at {self.address}", exc) from None
        return _outcome(receipt)

    def _wait_ready(self) -> None:
        if self._ready:
            return
        try:
            wait_ready(self._channel, self.connect_timeout)
        except grpc.FutureTimeoutError:
            raise UnavailableError(
                f"the platform at {self.address} did not answer within {self.connect_timeout:g} s "
                "(is it running, is it the platform this certificate serves, and does it share its CA?)"
            ) from None
        self._ready = True

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
