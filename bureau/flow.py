"""Transport-free bureau logic: register banks, publish specs and keys, accept and score applications."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from blindscore.bureau.applications import (
    DELIVERED,
    FAILED,
    ApplicationStore,
    StoredApplication,
    Submission,
    SubmissionT,
    WorkStore,
)
from blindscore.bureau.audit import ACCEPTED, APPLICATIONS_FILE, LEGACY_FILE, AuditLog
from blindscore.bureau.bank_link import BankLink, CircuitRound, PackedRound
from blindscore.bureau.batches import BatchStore, BatchSubmission, StoredBatch
from blindscore.bureau.claims import DEFAULT_LEASE_S, Fence, lost
from blindscore.bureau.ledger import MAX_CIRCUIT_ROUNDS, EvaluationLedger
from blindscore.bureau.registry import BankRecord, BankRegistry, ModelStore, ModelVersion, parse_version
from blindscore.crypto.dgk import DGKPublicKey
from blindscore.crypto.paillier import PublicKey
from blindscore.data.german import DEFAULT_MODEL_ID, default_model
from blindscore.errors import (
    AlreadyExistsError,
    BlindscoreError,
    InvalidInputError,
    LeaseLostError,
    NotFoundError,
    PreconditionError,
    UnavailableError,
)
from blindscore.infra.db import Database, RetryLoop, RetryPolicy, error_code, retryable
from blindscore.infra.leases import LeaseKeeper, check_lease_s
from blindscore.infra.status import status_of
from blindscore.models import families
from blindscore.models.contract import AdditiveModel
from blindscore.models.linear import LinearModel
from blindscore.protocol import limits, packing
from blindscore.protocol.application import BandDelivery, EncryptedApplication, EncryptedBatch, ModelSpec
from blindscore.protocol.circuit_band import CircuitBand
from blindscore.protocol.comparison import BandComparison

log = logging.getLogger(__name__)

LinkFor = Callable[[str, str, PublicKey, DGKPublicKey], BankLink]
Stored = StoredApplication | StoredBatch

#: Rows the retry worker claims per round (few, so that replicas share a backlog).
RETRY_BATCH = 8


def _auditable(value: str, *, consent: bool = False) -> str:
    """``value`` if it passes its input limit (blindscore.protocol.limits), else "": a field a refused request
    got wrong is recorded as missing rather than dropping the record."""
    try:
        return limits.check_consent(value) if consent else limits.check_id("id", value)
    except InvalidInputError:
        return ""


@dataclass(frozen=True)
class ScoreReport:
    """Milliseconds per stage (the bureau's own and, as it measured them, the bank's) and bytes."""

    stage_ms: dict[str, float]
    wire_bytes: int
    model_version: int = 0
    #: Accepted and stored, but the band is not at the bank yet: the retry worker delivers it.
    pending: bool = False
    #: The stored outcome of an earlier submission of the same application; no new work was done.
    replayed: bool = False


@dataclass(frozen=True)
class Job:
    """One application or packed batch, resolved once: the bank and its public keys, the model
    version, the ciphertexts. Made on arrival, where everything in it is checked, or by the retry
    worker from the stored row; the protocol then runs on it without looking anything up again."""

    bank: BankRecord
    paillier: PublicKey
    dgk: DGKPublicKey
    model: ModelVersion
    ciphertexts: tuple[Any, ...]

    def link(self, link_for: LinkFor) -> BankLink:
        return link_for(self.bank.bank_id, self.bank.address, self.paillier, self.dgk)


def _arrived(
    sent: EncryptedApplication | EncryptedBatch, paillier: PublicKey, packed: bytes | None
) -> dict[str, Any]:
    """The fields a submission copies as they arrived; the ciphertexts in their fixed-width encoding
    (``packed``, the bytes they were unpacked from, when the caller has them)."""
    return {
        "platform_id": sent.platform_id,
        "bank_id": sent.bank_id,
        "model_id": sent.model_id,
        "key_id": sent.key_id,
        "width": len(sent.ciphertexts),
        "ciphertexts": packed if packed is not None else paillier.pack(sent.ciphertexts),
    }


def _check_width(entry: ModelVersion, got: int, what: str) -> None:
    width = entry.model.spec.encoded_width
    if got != width:
        raise InvalidInputError(
            f"model {entry.name!r} v{entry.version} takes {width} encrypted {what}, got {got}"
        )


def _spent(stored: StoredBatch) -> PreconditionError:
    return PreconditionError(
        f"batch {stored.batch_id[:64]!r}: its evaluation round was sent to the bank before and not "
        "confirmed; it is not run again, since a second run could tell a deviating bank more than "
        "one band per application (submit the applications again under new ids if they must be scored)"
    )


#: What the bureau answers the bank's OT request with (bank_link.Answer).
T = TypeVar("T")


def _garbling_reply(
    garble: Callable[[], tuple[Any, Any]], timing: dict[str, float]
) -> Callable[[Any, Any], Any]:
    """The bureau's answer to the bank's OT request: garble now (fresh labels for this round), send
    the labels of the bank's inputs through the OT, and time it as ``bureau.garble``."""

    def finish(request: Any, sender: Any) -> Any:
        garbling, pairs = garble()
        return sender.reply(request, pairs), garbling

    return _timed_garbling(finish, timing)


def _timed_garbling(finish: Callable[[Any, Any], T], timing: dict[str, float]) -> Callable[[Any, Any], T]:
    """``finish`` (the bank's OT request and the OT sender -> the bureau's answer: the OT reply and
    the garbling, or the garbled circuit alone), timed as ``bureau.garble``."""

    def timed(request: Any, sender: Any) -> T:
        t0 = time.perf_counter()
        out = finish(request, sender)
        timing["bureau.garble"] = (time.perf_counter() - t0) * 1e3
        return out

    return timed


#: How a unary application of an additive model gets its band (see :class:`BureauNode`).
BandProtocol = Literal["circuit", "dgk"]
BAND_PROTOCOLS: tuple[BandProtocol, ...] = ("circuit", "dgk")


class BureauNode:
    """The bureau's state and flows. It only ever holds public keys and model weights."""

    def __init__(
        self,
        banks: BankRegistry,
        models: ModelStore,
        audit: AuditLog | None = None,
        applications: ApplicationStore | None = None,
        *,
        retry: RetryPolicy | None = None,
        band_protocol: BandProtocol = "circuit",
        replica_id: str = "",
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        """Without ``applications`` the bureau keeps them in memory: exactly-once within this process
        only, and nothing resumes after a restart (tests and tools; ``open`` stores them durably).

        ``band_protocol`` is how a unary application of a linear model or scorecard gets its band:
        "circuit" (the default: one masked value and a garbled cutoff circuit, the pipeline every
        model family shares) or "dgk" (the DGK comparison rounds). Both survive a bank lost
        mid-protocol (a kept [band] ciphertext; a kept pad of one round). Other families always
        take the circuit; streamed batches are packed either way.

        ``replica_id`` names this process among bureau replicas sharing one database, and
        ``lease_s`` is how long its claim on a row lasts unless renewed (bureau/claims.py): the
        request that accepts an application claims it, the retry worker claims what is due and
        not held by a live replica, and a claim is renewed every third of ``lease_s`` while it runs."""
        if band_protocol not in BAND_PROTOCOLS:
            raise InvalidInputError(
                f"band protocol must be one of {list(BAND_PROTOCOLS)}, got {band_protocol!r}"
            )
        self.band_protocol = band_protocol
        self.replica_id = replica_id
        self.lease_s = check_lease_s(lease_s)
        self.banks = banks
        self.models = models
        self.audit = audit
        self.applications = applications if applications is not None else ApplicationStore(":memory:")
        # Packed batches live next to the applications, so a batch's ids are checked against both.
        self.batches = BatchStore(self.applications.database)
        # What each bank was given to decrypt: one band per application (bureau/ledger.py).
        self.ledger = EvaluationLedger(self.applications.database)
        self.retry = retry or RetryPolicy()
        self._database: Database | None = None
        self._inflight: set[tuple[str, ...]] = set()
        self._circuit_rounds: dict[tuple[str, str], int] = {}
        self._inflight_lock = threading.Lock()
        self._worker: RetryLoop | None = None
        self._worker_link: LinkFor | None = None
        self._worker_reset: Callable[[], None] | None = None
        # The claims this replica works on, renewed until let go, and those it lost.
        self._leases: LeaseKeeper[Fence] = LeaseKeeper(
            "bureau-leases", self.lease_s, self._renew_leases, self._release_leases
        )

    @classmethod
    def open(
        cls,
        data_dir: Path,
        database: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        band_protocol: BandProtocol = "circuit",
        replica_id: str = "",
        lease_s: float = DEFAULT_LEASE_S,
    ) -> BureauNode:
        """Open the bureau's stores; the default German credit model is installed on first start.

        Models and bank registrations live under ``data_dir``. Applications and the audit trail go to
        ``database`` (a ``postgresql://`` or ``sqlite:///`` URL) when given, else to one SQLite file
        in ``data_dir``, applications.sqlite3 (the trail stays in an audit.sqlite3 an earlier
        version made). One database for both lets an ACCEPTED record ride on the flush of the
        application it admits (:meth:`admit`).
        """
        models = ModelStore(data_dir / "models")
        if DEFAULT_MODEL_ID not in models.names():
            models.put(DEFAULT_MODEL_ID, default_model())
        banks = BankRegistry(data_dir / "banks")
        if database is None:
            applications = ApplicationStore(data_dir / APPLICATIONS_FILE)
            try:
                own = data_dir / LEGACY_FILE
                audit = AuditLog(own) if own.exists() else AuditLog(applications.database)
            except BaseException:
                applications.close()
                raise
            return cls(
                banks,
                models,
                audit,
                applications,
                retry=retry,
                band_protocol=band_protocol,
                replica_id=replica_id,
                lease_s=lease_s,
            )
        db = Database.open(database, "bureau")
        try:
            bureau = cls(
                banks,
                models,
                AuditLog(db),
                ApplicationStore(db),
                retry=retry,
                band_protocol=band_protocol,
                replica_id=replica_id,
                lease_s=lease_s,
            )
        except BaseException:
            db.close()
            raise
        bureau._database = db
        return bureau

    def close(self) -> None:
        """Stop the retry worker and close the stores. Pending applications stay stored for the next start."""
        self.stop_delivery()
        self._leases.stop()
        self.ledger.close()
        self.batches.close()
        self.applications.close()
        if self.audit is not None:
            self.audit.close()
        if self._database is not None:
            self._database.close()

    def record(self, request: Mapping[str, str], outcome: str, duration_ms: float) -> None:
        """Append the audit record of one query: who, for whom, which model, how it ended, how long.

        Never a feature, a ciphertext, a score or a band. A field that would be refused (a request
        turned down for a malformed id) is recorded as empty rather than dropping the record.
        """
        self.record_many([request], outcome, duration_ms)

    def record_many(
        self,
        requests: Sequence[Mapping[str, str]],
        outcome: str,
        duration_ms: float,
        *,
        sync: bool = True,
    ) -> None:
        """The audit records of several applications that ended together (a packed batch), in one
        transaction; ``duration_ms`` each. ``sync=False`` for a call's outcome records, not
        ACCEPTED: see AuditLog.append_many."""
        if self.audit is None or not requests:
            return
        entries = []
        # The members of a batch name one model version: look it up once.
        labels: dict[tuple[str, str | None], str] = {}
        for request in requests:
            model_id = _auditable(request.get("model_id", ""))
            wanted = request.get("model_version")
            version = labels.get((model_id, wanted))
            if version is None:
                try:
                    version = self.models.version(model_id, wanted) if model_id else ""
                except (NotFoundError, InvalidInputError):
                    version = ""
                labels[(model_id, wanted)] = version
            entries.append(
                {
                    "platform_id": _auditable(request.get("platform_id", "")),
                    "bank_id": _auditable(request.get("bank_id", "")),
                    "application_id": _auditable(request.get("application_id", "")),
                    "consent_reference": _auditable(request.get("consent_reference", ""), consent=True),
                    "model_id": model_id,
                    "model_version": version,
                    "outcome": outcome,
                    "duration_ms": duration_ms,
                }
            )
        self.audit.append_many(entries, sync=sync)

    def admit(
        self,
        platform_id: str,
        bank_id: str,
        model_id: str,
        model_version: int,
        members: Sequence[tuple[str, str]],
    ) -> None:
        """Fail closed: append the ACCEPTED audit record of each application (id, consent reference)
        before it is stored or scored. When the trail cannot be written the submission is refused
        with UnavailableError and nothing is stored, so no band is ever made without its record.

        ACCEPTED says the application passed every check and the band protocol may run from here;
        the outcome of the call follows in a record of its own. If that one cannot be written, the
        trail still says only what is true: accepted, outcome not recorded.

        Where the trail shares the applications' database the records commit without waiting for
        the disk: the application is stored next, synced, in the same database, which flushes
        them with it (commit order), and nothing is scored before that. Where it has a file of its
        own they are synced themselves.
        """
        requests = [
            {
                "platform_id": platform_id,
                "bank_id": bank_id,
                "application_id": application_id,
                "consent_reference": consent_reference,
                "model_id": model_id,
                "model_version": str(model_version),
            }
            for application_id, consent_reference in members
        ]
        try:
            shared = self.audit is not None and self.audit.database is self.applications.database
            self.record_many(requests, ACCEPTED, 0.0, sync=not shared)
        except Exception:
            log.exception(
                "cannot append the audit record of %d application(s) of %s (first %s); refused",
                len(members), platform_id, limits.quote(members[0][0]) if members else "-",
            )  # fmt: skip
            raise UnavailableError("the audit trail cannot be written; nothing was scored") from None

    def bank_key(self, bank_id: str, key_id: str) -> PublicKey:
        return self.banks.get(bank_id, key_id).key(key_id)[0]

    def model_spec(self, model_id: str, version: str = "") -> ModelSpec:
        """The public part of a model version: what the platform needs to encode features, and how
        its applications may be packed; never weights or points."""
        entry = self.models.resolve(model_id, version)
        return ModelSpec(
            model_id=model_id,
            version=str(entry.version),
            feature_spec=entry.model.spec.to_dict(),
            slot_bits=packing.slot_bits_for(entry.model) or 0,
            max_slots=packing.max_slots_for(entry.model),
        )

    # ------------------------------------------------------------------ exactly-once submission
    def submit(
        self, app: EncryptedApplication, link_for: LinkFor, *, packed: bytes | None = None
    ) -> ScoreReport:
        """Accept ``app`` exactly once, then score it and deliver its band.

        Everything that can be checked here (bank, key, model version, width) is checked before the
        application is stored; once stored it is accepted. The same (platform, application id) with
        the same payload returns the stored outcome; with a different payload it is refused
        (AlreadyExistsError). If the bank cannot be reached the application stays pending and the
        report says so; the retry worker delivers it later. ``packed``: the ciphertexts as they
        arrived (the fixed-width encoding ``app.ciphertexts`` were unpacked from), kept as they are.
        """
        bank = self.banks.get(app.bank_id, app.key_id)
        paillier, dgk = bank.key(app.key_id)
        stored = self.applications.get(app.platform_id, app.application_id)
        wanted = parse_version(app.model_version)
        job = None
        if stored is not None and (wanted is None or wanted == stored.model_version):
            # "latest" binds to the version resolved when the application was first accepted.
            version = stored.model_version
        else:
            entry = self.models.resolve(app.model_id, app.model_version)
            _check_width(entry, len(app.ciphertexts), "features")
            version = entry.version
            job = Job(bank, paillier, dgk, entry, app.ciphertexts)
        submission = Submission(
            application_id=app.application_id,
            model_version=version,
            consent_reference=app.consent_reference,
            **_arrived(app, paillier, packed),
        )
        members = [(app.application_id, app.consent_reference)]
        return self._accept(self.applications, submission, members, job, link_for, fresh=stored is None)

    def submit_batch(
        self, batch: EncryptedBatch, link_for: LinkFor, *, packed: bytes | None = None
    ) -> ScoreReport:
        """Accept a packed batch exactly once (whole), then score it and deliver its bands.

        As :meth:`submit`, for k applications at once: checked, stored, then accepted; the same
        batch again returns the stored outcome; a different payload under the batch id, or an
        application id used before, is refused with nothing stored. Stage times and bytes in the
        report are per application (the batch's divided by k).
        """
        bank = self.banks.get(batch.bank_id, batch.key_id)
        paillier, dgk = bank.key(batch.key_id)
        stored = self.batches.get(batch.platform_id, batch.batch_id)
        job = None
        if stored is None:
            entry = self.models.resolve(batch.model_id, batch.model_version)
            model = entry.model
            slot_bits = packing.slot_bits_for(model)
            if slot_bits is None:
                raise InvalidInputError(
                    f"model {batch.model_id!r} v{entry.version} ({model.type_name}) cannot be scored in "
                    "packed batches; submit its applications one by one"
                )
            if batch.slot_bits != slot_bits:
                raise InvalidInputError(
                    f"batch packed with {batch.slot_bits}-bit slots; model {batch.model_id!r} "
                    f"v{entry.version} needs {slot_bits}"
                )
            capacity = packing.slots_per_batch(slot_bits, paillier.bits, packing.max_slots_for(model))
            if len(batch.members) > capacity:
                raise InvalidInputError(
                    f"a packed batch for this model and key holds at most {capacity} applications, "
                    f"got {len(batch.members)}"
                )
            _check_width(entry, len(batch.ciphertexts), "columns")
            job = Job(bank, paillier, dgk, entry, batch.ciphertexts)
        submission = BatchSubmission(
            batch_id=batch.batch_id,
            model_version=int(batch.model_version),
            slot_bits=batch.slot_bits,
            members=tuple((m.application_id, m.consent_reference) for m in batch.members),
            **_arrived(batch, paillier, packed),
        )
        return self._accept(self.batches, submission, submission.members, job, link_for, fresh=stored is None)

    def _accept(
        self,
        store: WorkStore[SubmissionT, Any],
        submission: SubmissionT,
        members: Sequence[tuple[str, str]],
        job: Job | None,
        link_for: LinkFor,
        *,
        fresh: bool,
    ) -> ScoreReport:
        """The exactly-once gate both entries share: admit a first submission (its audit records),
        store it, and run it inline; a stored one answers with its stored outcome.

        ``job`` is what the entry resolved and validated on arrival (None when the key was stored
        already: then the row answers and nothing runs, or the payload differs and it is refused).
        """
        if fresh:
            # An id used before refuses it here, before any ACCEPTED record says otherwise; unless
            # the id is taken by this very submission, which a twin copy (a resend racing a
            # resubmission, another replica) stored since it was looked up: answer it as a replay.
            try:
                store.check_new(submission)
            except AlreadyExistsError:
                if store.get(*store.key_of(submission)) is None:
                    raise
                fresh = False
        if fresh:  # fail closed: its audit records first, or nothing is stored or scored
            self.admit(
                submission.platform_id,
                submission.bank_id,
                submission.model_id,
                submission.model_version,
                members,
            )
        claim = (store.kind, *store.key_of(submission))
        mine = self._claim(claim)
        try:
            stored, created = store.accept(
                submission,
                next_attempt_at=time.time() + self.lease_s,
                owner=self.replica_id,
                lease_s=self.lease_s,
            )
            if not created:
                return self._stored_outcome(stored)
            return self._run(stored, link_for, job)
        finally:
            if mine:
                self._release(claim)

    def _stored_outcome(self, stored: Stored) -> ScoreReport:
        if stored.state == DELIVERED:
            receipt = stored.receipt_fields()
            return ScoreReport(
                {str(k): float(v) for k, v in receipt.get("stage_ms", {}).items()},
                int(receipt.get("wire_bytes", 0)),
                stored.model_version,
                replayed=True,
            )
        if stored.state == FAILED:
            raise stored.failure()
        return ScoreReport({}, 0, stored.model_version, pending=True, replayed=True)

    def _job_of(self, stored: Stored) -> Job:
        """The job of a stored, pending row: its bank and keys, its model version, its ciphertexts
        unpacked (and validated) from the store."""
        if stored.ciphertexts is None:
            raise InvalidInputError(f"{stored.kind} {stored.key[1]!r} has no stored ciphertexts")
        bank = self.banks.get(stored.bank_id, stored.key_id)
        paillier, dgk = bank.key(stored.key_id)
        ciphertexts = tuple(paillier.unpack(stored.ciphertexts, stored.width))
        entry = self.models.resolve(stored.model_id, stored.model_version)
        return Job(bank, paillier, dgk, entry, ciphertexts)

    def _run(self, stored: Stored, link_for: LinkFor, job: Job | None = None) -> ScoreReport:
        """Run the protocol of a stored, pending application or packed batch and record how it ended.

        ``job``: resolved and validated on arrival when called inline; the retry worker passes none
        and it is resolved from the row.
        """

        def work() -> ScoreReport:
            resolved = job or self._job_of(stored)
            if isinstance(stored, StoredBatch):
                return self.score_batch(stored, resolved, link_for)
            return self.score(stored, resolved, link_for)

        store = self._store_of(stored)
        fence = self._fence_of(stored)
        if fence is not None:
            self._leases.hold(fence)
        try:
            return self._settle(store, stored, work)
        except LeaseLostError as exc:
            # Another replica took the row over: it finishes it; nothing more is written or sent here.
            log.warning("%s", exc)
            return ScoreReport({}, 0, stored.model_version, pending=True)
        finally:
            if fence is not None:
                self._leases.let_go(fence)

    def _store_of(self, stored: Stored) -> WorkStore[Any, Any]:
        return self.batches if isinstance(stored, StoredBatch) else self.applications

    def _fence_of(self, stored: Stored) -> Fence | None:
        """The claim this replica holds on ``stored`` (None for a row read without one)."""
        return self._store_of(stored).fence(stored) if stored.claim else None

    def _check_lease(self, stored: Stored) -> None:
        """Before a delivery that no fenced write precedes: LeaseLostError if the claim is gone."""
        fence = self._fence_of(stored)
        if fence is not None:
            if self._leases.is_lost(fence):
                raise lost(fence)
            self.applications.database.write(fence.check)

    def _settle(
        self, store: WorkStore[Any, Any], stored: Stored, work: Callable[[], ScoreReport]
    ) -> ScoreReport:
        """Run ``work`` for a stored, pending row and record how it ended: delivered, failed for good
        (the status a resubmission is answered with), or pending again with backoff. Every write is
        fenced by the row's claim: LeaseLostError (nothing written) when another replica holds it."""
        key = stored.key
        claim = stored.claim or None
        try:
            report = work()
        except LeaseLostError:
            raise
        except BlindscoreError as exc:
            if not retryable(exc):
                code, message = status_of(exc)
                store.failed(key, code.name, message, claim=claim)
                raise
            attempts = stored.attempts + 1
            delay = self.retry.delay(attempts)
            store.retry_later(key, attempts, time.time() + delay, error_code(exc), str(exc), claim=claim)
            log.warning(
                "%s of %s is pending (attempt %d: %s); retrying in %.1f s",
                stored.what, stored.platform_id, attempts, exc, delay,
            )  # fmt: skip
            if self._worker is not None:
                self._worker.wake()
            return ScoreReport({}, 0, stored.model_version, pending=True)
        except Exception as exc:
            # Not the bank's answer but our own trouble (a bug, the database): stays pending.
            attempts = stored.attempts + 1
            store.retry_later(
                key,
                attempts,
                time.time() + self.retry.delay(attempts),
                "INTERNAL",
                type(exc).__name__,
                claim=claim,
            )
            raise
        receipt = {
            "stage_ms": report.stage_ms,
            "wire_bytes": report.wire_bytes,
            "model_version": str(report.model_version),
        }
        store.delivered(key, receipt, claim=claim)
        return report

    # ------------------------------------------------------------------ packed batches
    def score_batch(self, stored: StoredBatch, job: Job, link_for: LinkFor) -> ScoreReport:
        """The packed protocol alone (:mod:`blindscore.protocol.packing`): dot product and masks for every
        slot, then the bank's two calls with the OT reply and the garbled comparisons."""
        model = job.model.model
        if not isinstance(model, LinearModel):
            raise InvalidInputError(f"model {stored.model_id!r} cannot be scored in packed batches")
        if self.ledger.batch_spent(stored.platform_id, stored.batch_id):
            raise _spent(stored)
        link = job.link(link_for)
        count = len(stored.members)
        t0 = time.perf_counter()
        protocol = packing.PackedBand(job.paillier, model, job.ciphertexts, count, stored.slot_bits)
        t1 = time.perf_counter()
        timing: dict[str, float] = {}
        finish = _garbling_reply(protocol.garble, timing)

        def spend() -> None:
            if not self.ledger.spend_batch(stored.platform_id, stored.batch_id, fence=self._fence_of(stored)):
                raise _spent(stored)

        labels = tuple(model.policy.labels)
        batch = PackedRound(
            protocol.masked(), stored.model_id, labels, stored.application_ids, stored.platform_id
        )
        link.packed_round(batch, finish, spend=spend)
        stages = {"bureau.evaluate": (t1 - t0) * 1e3, **timing, **link.stage_ms}
        per_app = {name: ms / count for name, ms in stages.items()}
        return ScoreReport(per_app, link.wire_bytes // count, job.model.version)

    def _score_circuit(self, stored: StoredApplication, job: Job, link_for: LinkFor) -> ScoreReport:
        """The garbled-circuit band (:mod:`blindscore.protocol.circuit_band`): the linear stage and
        masks, the bank's two calls with the OT reply and the garbled circuit (its outputs under a
        fresh one-time pad), then the pad of one round per application, ever (bureau/ledger.py).
        A round the bank lost or did not confirm is run again with fresh masks and a fresh pad (at
        most MAX_CIRCUIT_ROUNDS); once a pad is revealed only that pad is ever sent again."""
        model = job.model.model
        platform_id, application_id = stored.key
        link = job.link(link_for)
        labels = tuple(model.policy.labels)
        stages: dict[str, float] = {}
        revealed = self.ledger.revealed_round(platform_id, application_id)
        if revealed is None:
            t0 = time.perf_counter()
            protocol = CircuitBand(
                job.paillier, model, families.family(model.circuit_shape().family), job.ciphertexts
            )
            stages["bureau.evaluate"] = (time.perf_counter() - t0) * 1e3

            def spend() -> None:
                if not self._count_circuit_round(platform_id, application_id):
                    raise PreconditionError(
                        f"application {application_id[:64]!r}: the bank did not confirm any of its "
                        f"{MAX_CIRCUIT_ROUNDS} garbled-circuit rounds; it is not run again (submit it "
                        "again under a new id if it must be scored)"
                    )

            round_ = CircuitRound(protocol.request, stored.model_id, labels, application_id, platform_id)
            link.circuit_round(round_, _timed_garbling(protocol.finish, stages), spend=spend)
            revealed = self.ledger.reveal_round(
                platform_id, application_id, *protocol.last_round, fence=self._fence_of(stored)
            )
            with self._inflight_lock:
                self._circuit_rounds.pop((platform_id, application_id), None)
        else:
            self._check_lease(stored)
        link.circuit_reveal(application_id, platform_id, *revealed)
        stages.update(link.stage_ms)
        return ScoreReport(stages, link.wire_bytes, job.model.version)

    def _count_circuit_round(self, platform_id: str, application_id: str) -> bool:
        """Count a garbled-circuit round of an application about to be sent; False past
        MAX_CIRCUIT_ROUNDS (in this process: a bound on work, the privacy bound is the ledger's)."""
        with self._inflight_lock:
            key = (platform_id, application_id)
            count = self._circuit_rounds.get(key, 0)
            if count >= MAX_CIRCUIT_ROUNDS:
                return False
            self._circuit_rounds[key] = count + 1
            return True

    def _claim(self, key: tuple[str, ...]) -> bool:
        with self._inflight_lock:
            if key in self._inflight:
                return False
            self._inflight.add(key)
            return True

    def _release(self, key: tuple[str, ...]) -> None:
        with self._inflight_lock:
            self._inflight.discard(key)

    # ------------------------------------------------------------------ leases
    def _renew_leases(self, fences: list[Fence]) -> list[Fence]:
        """Renew the claims held, each in its store; returns those lost (taken over or finished)."""
        now, stores = time.time(), (self.applications, self.batches)
        return [g for s in stores for g in s.renew(s.mine(fences), self.lease_s, now)]

    def _release_leases(self, fences: list[Fence]) -> None:
        now = time.time()
        for store in (self.applications, self.batches):
            store.release(store.mine(fences), now)

    # ------------------------------------------------------------------ retry worker
    def start_delivery(self, link_for: LinkFor, *, reset: Callable[[], None] | None = None) -> None:
        """Start the worker that delivers pending applications, every one stored so far first.

        ``reset`` (e.g. closing the worker's own bank channels) runs after a round in which a bank
        was unreachable, so the next attempt dials afresh instead of waiting out gRPC's reconnect
        backoff.
        """
        if self._worker is not None:
            return
        resumed = self.applications.resume_all(time.time()) + self.batches.resume_all(time.time())
        if resumed:
            log.warning("resuming %d pending application(s)", resumed)
        self._worker_link, self._worker_reset = link_for, reset
        # Also wake for work a dead replica leaves behind: it is due when its lease expires.
        idle = min(30.0, max(0.2, self.lease_s / 2))
        self._worker = RetryLoop("bureau-delivery", self._deliver_due, idle_s=idle)
        self._worker.start()

    def stop_delivery(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop()
        if self._worker_reset is not None:
            self._worker_reset()

    def _deliver_due(self) -> float | None:
        """One round of the worker: attempt every due application; return seconds until the next."""
        link_for = self._worker_link
        if link_for is None:
            return None
        now = time.time()
        rows: list[Stored] = []
        for store in (self.applications, self.batches):
            claimed = store.claim_due(self.replica_id, self.lease_s, now, RETRY_BATCH)
            for row in claimed:  # renewed while they wait for their turn too
                self._leases.hold(store.fence(row))
            rows += claimed
        unreachable = False
        for i, row in enumerate(rows):
            if self._worker is None:  # stopping: the rows not yet run go back at once
                self._leases.hand_back(*(self._store_of(r).fence(r) for r in rows[i:]))
                return None
            claim, what = (row.kind, *row.key), f"{row.what} of {row.platform_id}"
            if not self._claim(claim):
                # This process runs it already, under an older claim that will be fenced off: let
                # the new claim expire and the row be taken again then.
                self._leases.let_go(self._store_of(row).fence(row))
                continue
            try:
                if self._run(row, link_for).pending:
                    unreachable = True
                else:
                    log.info("delivered %s", what)
            except BlindscoreError as exc:
                log.warning("%s failed: %s", what, exc)
            except Exception:
                log.exception("retrying %s failed unexpectedly", what)
            finally:
                self._release(claim)
        if unreachable and self._worker_reset is not None:
            self._worker_reset()
        dues = [d for d in (self.applications.next_due(), self.batches.next_due()) if d is not None]
        due = min(dues) if dues else None
        # At least a short pause: a due row may be one another thread is still working on.
        return None if due is None else max(0.05, due - time.time())

    # ------------------------------------------------------------------ the band protocol
    def score(self, stored: StoredApplication, job: Job, link_for: LinkFor) -> ScoreReport:
        """Score an accepted application under the bank's key, run the band protocol, hand the bank
        [band].

        The job fixes the model version: an application finishes on the version it was accepted
        with even if a newer one is imported meanwhile. This is the protocol alone; the
        exactly-once bookkeeping around it is :meth:`submit`.
        """
        model = job.model.model
        if not isinstance(model, AdditiveModel) or self.band_protocol == "circuit":
            return self._score_circuit(stored, job, link_for)
        paillier = job.paillier
        link = job.link(link_for)
        platform_id, application_id = stored.key
        stages: dict[str, float] = {}
        # One [band] per application, ever: a retry delivers the same ciphertext again (see
        # bureau/ledger.py), so a bank that forces retries learns no second band.
        kept = self.ledger.band_ciphertext(platform_id, application_id)
        if kept is None:
            t0 = time.perf_counter()
            score = model.evaluate_encrypted(paillier, job.ciphertexts)
            t1 = time.perf_counter()
            protocol = BandComparison(
                paillier,
                job.dgk,
                score,
                model.encoded_cutoffs,
                *model.encoded_score_bounds,
                model.truncate_bits,
            )
            masked = protocol.masked_request()
            t2 = time.perf_counter()
            bits = link.compare_masked(application_id, masked, platform_id=platform_id)
            t3 = time.perf_counter()
            blinded = protocol.blinded_request(bits)
            t4 = time.perf_counter()
            final = link.compare_blinded(application_id, blinded, platform_id=platform_id)
            t5 = time.perf_counter()
            band = protocol.band_ciphertext(final)
            t6 = time.perf_counter()
            kept = self.ledger.keep_band_ciphertext(
                platform_id, application_id, paillier.pack([band]), fence=self._fence_of(stored)
            )
            stages["bureau.evaluate"] = (t1 - t0) * 1e3
            stages["bureau.round1"] = (t2 - t1) * 1e3
            stages["bureau.round2"] = (t4 - t3) * 1e3
            stages["bureau.finish"] = (t6 - t5) * 1e3
        else:
            self._check_lease(stored)
        (band_ciphertext,) = paillier.unpack(kept, 1)
        link.deliver_band(
            BandDelivery(
                application_id=application_id,
                key_id=stored.key_id,
                model_id=stored.model_id,
                band_labels=tuple(model.policy.labels),
                band_ciphertext=int(band_ciphertext),
                platform_id=platform_id,
            )
        )
        stages.update(link.stage_ms)
        return ScoreReport(stages, link.wire_bytes, job.model.version)
