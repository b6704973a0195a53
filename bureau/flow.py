"""Transport-free bureau logic: register banks, publish specs and keys, accept and score applications."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from blindscore.bureau.applications import DELIVERED, FAILED, ApplicationStore, StoredApplication, Submission
from blindscore.bureau.audit import ACCEPTED, AuditLog
from blindscore.bureau.bank_link import BankLink
from blindscore.bureau.batches import BatchStore, BatchSubmission, StoredBatch
from blindscore.bureau.ledger import EvaluationLedger
from blindscore.bureau.registry import BankRegistry, ModelStore, parse_version
from blindscore.crypto.dgk import DGKPublicKey
from blindscore.crypto.paillier import PublicKey
from blindscore.data.german import DEFAULT_MODEL_ID, default_model
from blindscore.errors import (
    BlindscoreError,
    InvalidInputError,
    NotFoundError,
    PreconditionError,
    UnavailableError,
)
from blindscore.infra.db import Database, RetryLoop, RetryPolicy, error_code, retryable
from blindscore.infra.status import status_of
from blindscore.models.linear import LinearModel
from blindscore.protocol import limits, packing
from blindscore.protocol.application import BandDelivery, EncryptedApplication, EncryptedBatch, ModelSpec
from blindscore.protocol.comparison import BandComparison

log = logging.getLogger(__name__)

LinkFor = Callable[[str, str, PublicKey, DGKPublicKey], BankLink]

#: Seconds the request that accepted an application has it to itself before the retry worker may
#: try too (a restart makes everything pending due at once, so this only matters for a stuck call).
INLINE_GRACE_S = 120.0
#: Applications the retry worker takes per round.
RETRY_BATCH = 32


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


def _spent(stored: StoredBatch) -> PreconditionError:
    return PreconditionError(
        f"batch {stored.batch_id[:64]!r}: its evaluation round was sent to the bank before and not "
        "confirmed; it is not run again, since a second run could tell a deviating bank more than "
        "one band per application (submit the applications again under new ids if they must be scored)"
    )


class Bureau:
    """The bureau's state and flows. It only ever holds public keys and model weights."""

    def __init__(
        self,
        banks: BankRegistry,
        models: ModelStore,
        audit: AuditLog | None = None,
        applications: ApplicationStore | None = None,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Without ``applications`` the bureau keeps them in memory: exactly-once within this process
        only, and nothing resumes after a restart (tests and tools; ``open`` stores them durably)."""
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
        self._inflight_lock = threading.Lock()
        self._worker: RetryLoop | None = None
        self._worker_link: LinkFor | None = None
        self._worker_reset: Callable[[], None] | None = None

    @classmethod
    def open(cls, data_dir: Path, database: str | None = None, *, retry: RetryPolicy | None = None) -> Bureau:
        """Open the bureau's stores; the default German credit model is installed on first start.

        Models and bank registrations live under ``data_dir``. Applications and the audit trail go to
        ``database`` (a ``postgresql://`` or ``sqlite:///`` URL) when given, else to SQLite files in
        ``data_dir`` (applications.sqlite3, audit.sqlite3).
        """
        models = ModelStore(data_dir / "models")
        if DEFAULT_MODEL_ID not in models.names():
            models.put(DEFAULT_MODEL_ID, default_model())
        banks = BankRegistry(data_dir / "banks")
        if database is None:
            applications = ApplicationStore(data_dir / "applications.sqlite3")
            return cls(banks, models, AuditLog(data_dir / "audit.sqlite3"), applications, retry=retry)
        db = Database.open(database, "bureau")
        try:
            bureau = cls(banks, models, AuditLog(db), ApplicationStore(db), retry=retry)
        except BaseException:
            db.close()
            raise
        bureau._database = db
        return bureau

    def close(self) -> None:
        """Stop the retry worker and close the stores. Pending applications stay stored for the next start."""
        self.stop_delivery()
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

    def record_many(self, requests: Sequence[Mapping[str, str]], outcome: str, duration_ms: float) -> None:
        """The audit records of several applications that ended together (a packed batch), in one
        transaction; ``duration_ms`` each."""
        if self.audit is None or not requests:
            return
        entries = []
        for request in requests:
            model_id = _auditable(request.get("model_id", ""))
            try:
                version = self.models.version(model_id, request.get("model_version")) if model_id else ""
            except (NotFoundError, InvalidInputError):
                version = ""
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
        self.audit.append_many(entries)

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
            self.record_many(requests, ACCEPTED, 0.0)
        except Exception:
            log.exception(
                "cannot append the audit record of %d application(s) of %s (first %s); refused",
                len(members), platform_id, limits.quote(members[0][0]) if members else "-",
            )  # fmt: skip
            raise UnavailableError("the audit trail cannot be written; nothing was scored") from None

    def register_bank(
        self,
        bank_id: str,
        address: str,
        paillier: PublicKey,
        dgk: DGKPublicKey,
        *,
        active: tuple[str, ...] = (),
    ) -> str:
        """Record a bank's address and key; with ``active``, forget its keys not listed there."""
        key_id = self.banks.register(bank_id, address, paillier, dgk, active=active)
        log.info("bank %s registered key %s at %s", bank_id, key_id, address)
        return key_id

    def bank_key(self, bank_id: str, key_id: str) -> PublicKey:
        return self.banks.get(bank_id).key(key_id)[0]

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
    def submit(self, app: EncryptedApplication, link_for: LinkFor) -> ScoreReport:
        """Accept ``app`` exactly once, then score it and deliver its band.

        Everything that can be checked here (bank, key, model version, width) is checked before the
        application is stored; once stored it is accepted. The same (platform, application id) with
        the same payload returns the stored outcome; with a different payload it is refused
        (AlreadyExistsError). If the bank cannot be reached the application stays pending and the
        report says so; the retry worker delivers it later.
        """
        key = (app.platform_id, app.application_id)
        pk, _ = self.banks.get(app.bank_id).key(app.key_id)
        stored = self.applications.get(*key)
        wanted = parse_version(app.model_version)
        if stored is not None and (wanted is None or wanted == stored.model_version):
            # "latest" binds to the version resolved when the application was first accepted.
            version = stored.model_version
        else:
            entry = self.models.resolve(app.model_id, app.model_version)
            version = entry.version
            width = entry.model.spec.encoded_width
            if len(app.ciphertexts) != width:
                raise InvalidInputError(
                    f"model {app.model_id!r} v{version} takes {width} encrypted features, "
                    f"got {len(app.ciphertexts)}"
                )
        submission = Submission(
            platform_id=app.platform_id,
            application_id=app.application_id,
            bank_id=app.bank_id,
            model_id=app.model_id,
            model_version=version,
            key_id=app.key_id,
            consent_reference=app.consent_reference,
            width=len(app.ciphertexts),
            ciphertexts=pk.pack(app.ciphertexts),
        )
        if stored is None:  # fail closed: its audit record first, or nothing is stored or scored
            self.admit(
                app.platform_id,
                app.bank_id,
                app.model_id,
                version,
                [(app.application_id, app.consent_reference)],
            )
        mine = self._claim(key)
        try:
            stored, created = self.applications.accept(
                submission, next_attempt_at=time.time() + INLINE_GRACE_S
            )
            if not created:
                return self._stored_outcome(stored)
            # Inline: the ciphertexts were unpacked and validated on arrival; no second pass.
            return self._process(stored, link_for, app.ciphertexts)
        finally:
            if mine:
                self._release(key)

    def _stored_outcome(self, stored: StoredApplication | StoredBatch) -> ScoreReport:
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

    def _process(
        self, stored: StoredApplication, link_for: LinkFor, ciphertexts: tuple[Any, ...] | None = None
    ) -> ScoreReport:
        """Run the band protocol for a stored, pending application and record how it ended.

        ``ciphertexts``: the already validated ciphertexts when called inline on arrival; the retry
        worker passes none and they are unpacked (and validated) from the store.
        """

        def work() -> ScoreReport:
            if stored.ciphertexts is None:
                raise InvalidInputError(f"application {stored.application_id!r} has no stored ciphertexts")
            pk, _ = self.banks.get(stored.bank_id).key(stored.key_id)
            cts = (
                ciphertexts if ciphertexts is not None else tuple(pk.unpack(stored.ciphertexts, stored.width))
            )
            app = EncryptedApplication(
                application_id=stored.application_id,
                platform_id=stored.platform_id,
                bank_id=stored.bank_id,
                model_id=stored.model_id,
                key_id=stored.key_id,
                consent_reference=stored.consent_reference,
                ciphertexts=cts,
                model_version=str(stored.model_version),
            )
            return self.score(app, link_for)

        return self._settle(self.applications, stored, f"application {stored.application_id}", work)

    def _settle(
        self,
        store: ApplicationStore | BatchStore,
        stored: StoredApplication | StoredBatch,
        what: str,
        work: Callable[[], ScoreReport],
    ) -> ScoreReport:
        """Run ``work`` for a stored, pending row and record how it ended: delivered, failed for good
        (the status a resubmission is answered with), or pending again with backoff."""
        key = stored.key
        try:
            report = work()
        except BlindscoreError as exc:
            if not retryable(exc):
                code, message = status_of(exc)
                store.failed(key, code.name, message)
                raise
            attempts = stored.attempts + 1
            delay = self.retry.delay(attempts)
            store.retry_later(key, attempts, time.time() + delay, error_code(exc), str(exc))
            log.warning(
                "%s of %s is pending (attempt %d: %s); retrying in %.1f s",
                what, stored.platform_id, attempts, exc, delay,
            )  # fmt: skip
            if self._worker is not None:
                self._worker.wake()
            return ScoreReport({}, 0, stored.model_version, pending=True)
        except Exception as exc:
            # Not the bank's answer but our own trouble (a bug, the database): stays pending.
            attempts = stored.attempts + 1
            store.retry_later(
                key, attempts, time.time() + self.retry.delay(attempts), "INTERNAL", type(exc).__name__
            )
            raise
        receipt = {
            "stage_ms": report.stage_ms,
            "wire_bytes": report.wire_bytes,
            "model_version": str(report.model_version),
        }
        store.delivered(key, receipt)
        return report

    # ------------------------------------------------------------------ packed batches
    def submit_batch(self, batch: EncryptedBatch, link_for: LinkFor) -> ScoreReport:
        """Accept a packed batch exactly once (whole), then score it and deliver its bands.

        As :meth:`submit`, for k applications at once: checked, stored, then accepted; the same
        batch again returns the stored outcome; a different payload under the batch id, or an
        application id used before, is refused with nothing stored. Stage times and bytes in the
        report are per application (the batch's divided by k).
        """
        key = (batch.platform_id, batch.batch_id)
        pk, _ = self.banks.get(batch.bank_id).key(batch.key_id)
        stored = self.batches.get(*key)
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
            capacity = packing.slots_per_batch(slot_bits, pk.bits, packing.max_slots_for(model))
            if len(batch.members) > capacity:
                raise InvalidInputError(
                    f"a packed batch for this model and key holds at most {capacity} applications, "
                    f"got {len(batch.members)}"
                )
            width = model.spec.encoded_width
            if len(batch.ciphertexts) != width:
                raise InvalidInputError(
                    f"model {batch.model_id!r} v{entry.version} takes {width} encrypted columns, "
                    f"got {len(batch.ciphertexts)}"
                )
        submission = BatchSubmission(
            platform_id=batch.platform_id,
            batch_id=batch.batch_id,
            bank_id=batch.bank_id,
            model_id=batch.model_id,
            model_version=int(batch.model_version),
            key_id=batch.key_id,
            slot_bits=batch.slot_bits,
            members=tuple((m.application_id, m.consent_reference) for m in batch.members),
            width=len(batch.ciphertexts),
            ciphertexts=pk.pack(batch.ciphertexts),
        )
        if stored is None:  # fail closed: its audit records first, or nothing is stored or scored
            self.admit(
                batch.platform_id, batch.bank_id, batch.model_id, submission.model_version, submission.members
            )
        mine = self._claim(("batch", *key))
        try:
            stored, created = self.batches.accept(submission, next_attempt_at=time.time() + INLINE_GRACE_S)
            if not created:
                return self._stored_outcome(stored)
            return self._process_batch(stored, link_for, batch.ciphertexts)
        finally:
            if mine:
                self._release(("batch", *key))

    def _process_batch(
        self, stored: StoredBatch, link_for: LinkFor, ciphertexts: tuple[Any, ...] | None = None
    ) -> ScoreReport:
        """Run the packed protocol for a stored, pending batch and record how it ended."""

        def work() -> ScoreReport:
            if stored.ciphertexts is None:
                raise InvalidInputError(f"batch {stored.batch_id!r} has no stored ciphertexts")
            pk, _ = self.banks.get(stored.bank_id).key(stored.key_id)
            cts = (
                ciphertexts if ciphertexts is not None else tuple(pk.unpack(stored.ciphertexts, stored.width))
            )
            return self.score_batch(stored, cts, link_for)

        return self._settle(self.batches, stored, f"batch {stored.batch_id}", work)

    def score_batch(
        self, stored: StoredBatch, ciphertexts: tuple[Any, ...], link_for: LinkFor
    ) -> ScoreReport:
        """The packed protocol alone (:mod:`blindscore.protocol.packing`): dot product and masks for every
        slot, then the bank's two calls with the OT reply and the garbled comparisons."""
        bank = self.banks.get(stored.bank_id)
        pk, dgk = bank.key(stored.key_id)
        entry = self.models.resolve(stored.model_id, str(stored.model_version))
        model = entry.model
        if not isinstance(model, LinearModel):
            raise InvalidInputError(f"model {stored.model_id!r} cannot be scored in packed batches")
        if self.ledger.batch_spent(stored.platform_id, stored.batch_id):
            raise _spent(stored)
        link = link_for(bank.bank_id, bank.address, pk, dgk)
        count = len(stored.members)
        t0 = time.perf_counter()
        protocol = packing.PackedBand(pk, model, ciphertexts, count, stored.slot_bits)
        t1 = time.perf_counter()
        timing: dict[str, float] = {}

        def finish(request: Any, sender: Any) -> Any:
            t2 = time.perf_counter()
            circuit, pairs = protocol.garble()
            reply = sender.reply(request, pairs)
            timing["bureau.garble"] = (time.perf_counter() - t2) * 1e3
            return reply, circuit

        def spend() -> None:
            if not self.ledger.spend_batch(stored.platform_id, stored.batch_id):
                raise _spent(stored)

        link.packed_round(
            protocol.masked(),
            finish,
            stored.model_id,
            tuple(model.policy.labels),
            stored.application_ids,
            spend=spend,
            platform_id=stored.platform_id,
        )
        stages = {"bureau.evaluate": (t1 - t0) * 1e3, **timing, **link.stage_ms}
        per_app = {name: ms / count for name, ms in stages.items()}
        return ScoreReport(per_app, link.wire_bytes // count, entry.version)

    def _claim(self, key: tuple[str, ...]) -> bool:
        with self._inflight_lock:
            if key in self._inflight:
                return False
            self._inflight.add(key)
            return True

    def _release(self, key: tuple[str, ...]) -> None:
        with self._inflight_lock:
            self._inflight.discard(key)

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
        self._worker = RetryLoop("bureau-delivery", self._deliver_due)
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
        work: list[tuple[tuple[str, ...], str, Callable[[], ScoreReport]]] = [
            (a.key, f"application {a.application_id} of {a.platform_id}", partial(self._process, a, link_for))
            for a in self.applications.due(now, RETRY_BATCH)
        ] + [
            (
                ("batch", *b.key),
                f"batch {b.batch_id} of {b.platform_id}",
                partial(self._process_batch, b, link_for),
            )
            for b in self.batches.due(now, RETRY_BATCH)
        ]
        unreachable = False
        for claim, what, process in work:
            if self._worker is None:
                return None
            if not self._claim(claim):
                continue  # the request that accepted it is still working on it
            try:
                if process().pending:
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
    def score(self, app: EncryptedApplication, link_for: LinkFor) -> ScoreReport:
        """Score ``app`` under the bank's key, run the band protocol, hand the bank [band].

        The model version is resolved once, here: an application finishes on the version it
        started with even if a newer one is imported meanwhile. This is the protocol alone; the
        exactly-once bookkeeping around it is :meth:`submit`.
        """
        bank = self.banks.get(app.bank_id)
        pk, dgk = bank.key(app.key_id)
        entry = self.models.resolve(app.model_id, app.model_version)
        model = entry.model
        width = model.spec.encoded_width
        if len(app.ciphertexts) != width:
            raise InvalidInputError(
                f"model {app.model_id!r} v{entry.version} takes {width} encrypted features, "
                f"got {len(app.ciphertexts)}"
            )
        link = link_for(bank.bank_id, bank.address, pk, dgk)
        stages: dict[str, float] = {}
        # One [band] per application, ever: a retry delivers the same ciphertext again (see
        # bureau/ledger.py), so a bank that forces retries learns no second band.
        kept = self.ledger.band_ciphertext(app.platform_id, app.application_id)
        if kept is None:
            t0 = time.perf_counter()
            score = model.evaluate_encrypted(pk, app.ciphertexts)
            t1 = time.perf_counter()
            protocol = BandComparison(
                pk, dgk, score, model.encoded_cutoffs, *model.encoded_score_bounds, model.truncate_bits
            )
            masked = protocol.masked_request()
            t2 = time.perf_counter()
            bits = link.compare_masked(app.application_id, masked, platform_id=app.platform_id)
            t3 = time.perf_counter()
            blinded = protocol.blinded_request(bits)
            t4 = time.perf_counter()
            final = link.compare_blinded(app.application_id, blinded, platform_id=app.platform_id)
            t5 = time.perf_counter()
            band = protocol.band_ciphertext(final)
            t6 = time.perf_counter()
            kept = self.ledger.keep_band_ciphertext(app.platform_id, app.application_id, pk.pack([band]))
            stages["bureau.evaluate"] = (t1 - t0) * 1e3
            stages["bureau.round1"] = (t2 - t1) * 1e3
            stages["bureau.round2"] = (t4 - t3) * 1e3
            stages["bureau.finish"] = (t6 - t5) * 1e3
        (band_ciphertext,) = pk.unpack(kept, 1)
        link.deliver_band(
            BandDelivery(
                application_id=app.application_id,
                key_id=app.key_id,
                model_id=app.model_id,
                band_labels=tuple(model.policy.labels),
                band_ciphertext=int(band_ciphertext),
                platform_id=app.platform_id,
            )
        )
        stages.update(link.stage_ms)
        return ScoreReport(stages, link.wire_bytes, entry.version)
