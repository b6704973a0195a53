"""The bureau's gRPC face: a thin servicer over Bureau."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import grpc

from blindscore.bureau.bank_link import BankChannels
from blindscore.bureau.flow import BureauNode, ScoreReport
from blindscore.crypto import parallel
from blindscore.crypto.paillier import PublicKey
from blindscore.infra.metrics import NodeMetrics
from blindscore.infra.status import grpc_errors
from blindscore.infra.transport import INSECURE, TransportSecurity, create_server, peer_identity, require_role
from blindscore.protocol import limits, packing
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc
from blindscore.wire import serde

log = logging.getLogger(__name__)

_ID_FIELDS = ("application_id", "platform_id", "bank_id", "model_id", "key_id")
_BATCH_ID_FIELDS = ("batch_id", "platform_id", "bank_id", "model_id", "key_id")


def check_application(request: pb.EncryptedApplication) -> None:
    """The input limits (blindscore.protocol.limits) of a submission, before anything is stored or scored."""
    for name in _ID_FIELDS:
        limits.check_id(name, getattr(request, name))
    limits.check_id("model_version", request.model_version, optional=True)
    limits.check_consent(request.consent_reference)


def check_batch(request: pb.EncryptedBatch) -> None:
    """The input limits of a packed batch: its ids, and every member's id and consent reference."""
    for name in _BATCH_ID_FIELDS:
        limits.check_id(name, getattr(request, name))
    limits.check_id("model_version", request.model_version, optional=True)
    for i, member in enumerate(request.members):
        limits.check_id(f"members[{i}].application_id", member.application_id)
        limits.check_consent(member.consent_reference, f"members[{i}].consent_reference")


def audited_platform(context: grpc.ServicerContext, claimed: str) -> str:
    """The platform id an audit record names: the one in the caller's certificate, never the one the
    request claims. A caller of another role is recorded as role/party (e.g. "bank/bank-1"), and a
    TLS caller without a blindscore identity as "". Only on a plaintext connection, where nothing is
    authenticated (and require_role lets every call through), is the claimed id all there is."""
    identity = peer_identity(context)
    if identity is not None:
        return identity.party_id if identity.role == "platform" else str(identity)
    plaintext = context.auth_context().get("transport_security_type") == [b"insecure"]
    return claimed if plaintext else ""


class BureauServicer(pb_grpc.BureauServicer):
    """Converts protos to domain objects, calls Bureau, converts back."""

    def __init__(
        self,
        bureau: BureauNode,
        channels: BankChannels,
        metrics: NodeMetrics | None = None,
        *,
        share_timings: bool = False,
    ) -> None:
        self.bureau = bureau
        self.channels = channels
        self.metrics = metrics or NodeMetrics("bureau")
        self.share_timings = share_timings

    @grpc_errors
    def RegisterBank(
        self, request: pb.RegisterBankRequest, context: grpc.ServicerContext
    ) -> pb.RegisterBankResponse:
        # Only a bank may register, and only itself: otherwise a platform (or another bank) could
        # point the bureau at its own address and key and collect another bank's bands.
        identity = require_role(context, "bank")
        limits.check_id("bank_id", request.bank_id)
        for key_id in request.active_key_ids:
            limits.check_id("active_key_ids", key_id)
        if identity is not None and identity.party_id != request.bank_id:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"bank {identity.party_id!r} may not register as bank {limits.quote(request.bank_id)}",
            )
        key_id = self.bureau.banks.register(
            request.bank_id,
            request.address,
            serde.paillier_key_from_json(request.paillier_public_key),
            serde.dgk_key_from_json(request.dgk_public_key),
            active=tuple(request.active_key_ids),
        )
        return pb.RegisterBankResponse(key_id=key_id)

    @grpc_errors
    def GetBankKey(self, request: pb.GetBankKeyRequest, context: grpc.ServicerContext) -> pb.BankKey:
        require_role(context, "platform")
        limits.check_id("bank_id", request.bank_id)
        limits.check_id("key_id", request.key_id)
        key = self.bureau.bank_key(request.bank_id, request.key_id)
        return pb.BankKey(
            bank_id=request.bank_id, key_id=key.key_id, paillier_public_key=serde.paillier_key_to_json(key)
        )

    @grpc_errors
    def GetModelSpec(self, request: pb.GetModelSpecRequest, context: grpc.ServicerContext) -> pb.ModelSpec:
        require_role(context, "platform")
        limits.check_id("model_id", request.model_id)
        limits.check_id("model_version", request.model_version, optional=True)
        return serde.model_spec_to_proto(self.bureau.model_spec(request.model_id, request.model_version))

    def SubmitApplication(
        self, request: pb.EncryptedApplication, context: grpc.ServicerContext
    ) -> pb.SubmitReceipt:
        """Accept one application exactly once and score it; every submission, accepted or refused,
        leaves one audit record of its outcome (one accepted for the first time also its ACCEPTED
        record, written before it is stored). ``pending`` in the receipt: the band follows later."""
        members = [(request.application_id, request.consent_reference)]
        return self._audited(request, members, context, self._submit)

    def _audited(
        self,
        request: Any,
        members: list[tuple[str, str]],
        context: grpc.ServicerContext,
        submit: Callable[[Any, grpc.ServicerContext], Any],
    ) -> Any:
        """Run ``submit`` and append one audit record per application it concerns, with its outcome
        and the caller's authenticated platform id (:func:`audited_platform`).

        An application that is accepted got its ACCEPTED record before it was stored or scored
        (BureauNode.admit: no record, no scoring). This record is the call's outcome; if it cannot be
        written the answer stands (the band may be at the bank already) and the trail keeps saying
        only what is true: accepted, outcome not recorded (AuditLog.unsettled).
        """
        t0 = time.perf_counter()
        platform_id = audited_platform(context, request.platform_id)
        outcome = "INTERNAL"
        version = request.model_version
        try:
            receipt = submit(request, context)
            outcome = "OK"
            version = receipt.model_version  # the version it was (or will be) scored with
            return receipt
        except BaseException:
            code = getattr(context, "code", lambda: None)()
            outcome = code.name if isinstance(code, grpc.StatusCode) else "INTERNAL"
            raise
        finally:
            per_app_ms = (time.perf_counter() - t0) * 1e3 / max(1, len(members))
            fields = [
                {
                    "platform_id": platform_id,
                    "bank_id": request.bank_id,
                    "application_id": application_id,
                    "consent_reference": consent_reference,
                    "model_id": request.model_id,
                    "model_version": version,
                }
                for application_id, consent_reference in members
            ]
            try:
                # Unsynced: an outcome record lost with the machine leaves what a failed write
                # leaves (accepted, outcome not recorded); the next ACCEPTED record, synced,
                # flushes it with it.
                self.bureau.record_many(fields, outcome, per_app_ms, sync=False)
            except Exception:
                log.exception(
                    "could not append the %s audit record(s) of %s",
                    outcome,
                    ", ".join(limits.quote(m[0]) for m in members[:5]),
                )

    def _receipt(self, report: ScoreReport) -> dict[str, Any]:
        """The fields both receipts share. Stage times for the platform: none by default (the
        bureau's evaluation time tracks the bit length of its weights; they stay in this node's
        metrics), all with --share-timings."""
        return {
            "stage_ms": report.stage_ms if self.share_timings else {},
            "wire_bytes": report.wire_bytes,
            "model_version": str(report.model_version),
            "pending": report.pending,
        }

    @staticmethod
    def _require_platform(context: grpc.ServicerContext, platform_id: str) -> None:
        """Only a platform may submit, and only as itself."""
        identity = require_role(context, "platform")
        if identity is not None and identity.party_id != platform_id:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"platform {identity.party_id!r} may not submit as platform {limits.quote(platform_id)}",
            )

    @grpc_errors
    def _submit(self, request: pb.EncryptedApplication, context: grpc.ServicerContext) -> pb.SubmitReceipt:
        report = self._score(
            request, context, check_application, serde.encrypted_application_from_proto, self.bureau.submit
        )
        return pb.SubmitReceipt(application_id=request.application_id, accepted=True, **self._receipt(report))

    def _score(
        self,
        request: Any,
        context: grpc.ServicerContext,
        check: Callable[[Any], None],
        from_proto: Callable[[Any, PublicKey], Any],
        submit: Callable[..., ScoreReport],
    ) -> ScoreReport:
        """What both submissions do: only the platform itself may submit; then the input limits;
        the ciphertexts are unpacked and checked against the bank's key, then handed to the bureau
        together with the bytes they came in (stored as they are)."""
        self._require_platform(context, request.platform_id)
        check(request)
        key, _ = self.bureau.banks.get(request.bank_id, request.key_id).key(request.key_id)
        report: ScoreReport = submit(from_proto(request, key), self.channels.link, packed=request.ciphertexts)
        if not report.replayed:
            self.metrics.observe_stages(report.stage_ms)
        return report

    def SubmitBatch(self, request: pb.EncryptedBatch, context: grpc.ServicerContext) -> pb.BatchReceipt:
        """Accept a packed batch exactly once and score it; one audit record per application in it,
        each with the batch's outcome."""
        members = [(m.application_id, m.consent_reference) for m in request.members[: packing.MAX_SLOTS]]
        return self._audited(request, members, context, self._submit_batch)

    @grpc_errors
    def _submit_batch(self, request: pb.EncryptedBatch, context: grpc.ServicerContext) -> pb.BatchReceipt:
        report = self._score(
            request, context, check_batch, serde.encrypted_batch_from_proto, self.bureau.submit_batch
        )
        return pb.BatchReceipt(batch_id=request.batch_id, **self._receipt(report))


def start_bureau_server(
    bureau: BureauNode,
    address: str,
    *,
    security: TransportSecurity = INSECURE,
    metrics: NodeMetrics | None = None,
    share_timings: bool = False,
) -> tuple[grpc.Server, int, BankChannels]:
    """Serve the Bureau service on ``address``; returns (server, bound port, bank channels).

    Also starts the bureau's retry worker, which first resumes every application left pending by an
    earlier run; it dials banks over channels of its own (:meth:`BureauNode.close` stops it).
    """
    channels = BankChannels(security)
    metrics = metrics or NodeMetrics("bureau")
    servicer = BureauServicer(bureau, channels, metrics, share_timings=share_timings)
    server, port = create_server(
        address,
        [partial(pb_grpc.add_BureauServicer_to_server, servicer)],
        security=security,
        service_names=("blindscore.v1.Bureau",),
        metrics=metrics,
    )
    retry_channels = BankChannels(security)
    bureau.start_delivery(retry_channels.link, reset=retry_channels.close)
    parallel.warm()  # the packing workers exist before the first large model's application
    return server, port, channels
