"""Transport-free platform logic: encode and encrypt an applicant's features, submit them once."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from blindscore.crypto.paillier import PublicKey
from blindscore.errors import BlindscoreError, CryptoError, InvalidInputError, LeaseLostError, PeerError
from blindscore.infra.db import RetryLoop, RetryPolicy, retryable
from blindscore.infra.leases import DEFAULT_LEASE_S, LeaseKeeper, check_lease_s
from blindscore.models.features import FeatureSpec
from blindscore.platform_node.bureau_link import BureauLink, SubmitResult
from blindscore.platform_node.outbox import Outbox, OutboxEntry, OutboxFence
from blindscore.protocol import limits, packing
from blindscore.protocol.application import (
    Application,
    BatchMember,
    EncryptedApplication,
    EncryptedBatch,
    check_id,
)
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.wire import serde

log = logging.getLogger(__name__)

#: 16384 precomputed hs^r values: 8 MiB at 2048 bits, the randomness of ~320 50-feature applications.
PLATFORM_POOL_CAPACITY = 16384
#: Seconds a platform trusts its answer to "which version of model M is the latest?".
LATEST_TTL_S = 2.0
#: Outbox entries the resender claims per round (few, so that replicas share a backlog).
RESEND_BATCH = 16

#: Opens a fresh link to the bureau for the resender: (link, close).
Dial = Callable[[], tuple[BureauLink, Callable[[], None]]]


def check_entry(app: Application) -> Application:
    """Entry validation of an application before anything is encrypted, stored or sent: the input
    limits of blindscore.protocol.limits. Its ids were checked (more narrowly) when it was made."""
    limits.check_consent(app.consent_reference)
    return app


@dataclass(frozen=True)
class Receipt:
    """What the platform answers for one application (the fields of pb.ScoreReceipt but accepted)."""

    application_id: str
    encrypt_ms: float
    total_ms: float
    stage_ms: dict[str, float] = field(default_factory=dict)
    wire_bytes: int = 0
    model_version: str = ""
    #: The bureau stored the application; its band reaches the bank later (the bank is unreachable).
    pending: bool = False


def _receipt(
    application_id: str, result: SubmitResult, version: str, encrypt_ms: float | None, total_ms: float
) -> Receipt:
    """The receipt of one application; ``encrypt_ms`` None: nothing was encrypted for it now (a
    resent batch), so it has no platform.encrypt stage."""
    stages = dict(result.stage_ms)
    if encrypt_ms is not None:
        stages = {"platform.encrypt": encrypt_ms, **stages}
    return Receipt(
        application_id,
        encrypt_ms or 0.0,
        total_ms,
        stages,
        result.wire_bytes,
        result.model_version or version,
        result.pending,
    )


@dataclass(frozen=True)
class Submission:
    """A payload as the outbox stores it, ready to be sent as it is."""

    #: The entry the payload was stored in (the batch's first member for a packed batch).
    entry: OutboxEntry
    #: A serialized EncryptedApplication, or EncryptedBatch when ``batch``.
    payload: bytes
    #: Every application the bureau's answer is recorded for.
    application_ids: tuple[str, ...]
    #: The version the features were encoded for (a receipt's version when the bureau names none).
    model_version: str
    batch: bool
    #: Sent before (a resubmission or a resend): another copy may be at the bureau at the same time.
    replay: bool
    #: The claim this replica sends it under (stored it just now, or its resender claimed it); None
    #: for a resubmission's replay, which records only the bureau's answer, never a retry.
    fence: OutboxFence | None = None


class _Group(NamedTuple):
    """Applications packed together share a bank key and a model version."""

    bank_id: str
    key_id: str
    model_id: str
    version: str


@dataclass(frozen=True)
class _Packable:
    """An application to pack: its place among the requests and its encoded features."""

    index: int
    app: Application
    fingerprint: str
    encoded: list[int]


@dataclass
class _Plan:
    """score_many's requests sorted by how they go."""

    #: Results so far, by request index (the one-by-one ones are scored while sorting).
    results: dict[int, Receipt | BlindscoreError] = field(default_factory=dict)
    groups: dict[_Group, list[_Packable]] = field(default_factory=dict)
    #: Resubmissions of packed applications by the id holding their batch: each batch goes once.
    resubmitted: dict[str, list[tuple[int, OutboxEntry]]] = field(default_factory=dict)
    #: A second request for an id being packed: scored after the batches.
    later: list[int] = field(default_factory=list)


class PlatformNode:
    """The platform: it sees features in the clear but never a weight, a score or a band."""

    def __init__(
        self,
        platform_id: str,
        bureau: BureauLink,
        outbox: Outbox | None = None,
        *,
        retry: RetryPolicy | None = None,
        dial: Dial | None = None,
        replica_id: str = "",
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        """Without ``outbox`` resubmissions are recognised only while this process lives. With
        ``dial`` the resender sends over links of its own and redials after a round in which the
        bureau was unreachable, instead of waiting out gRPC's reconnect backoff on ``bureau``.

        ``replica_id`` names this process among platform replicas sharing one outbox, and
        ``lease_s`` is how long its claim on an entry lasts unless renewed (blindscore.infra.leases):
        the request that stores an entry claims it, the resender claims what is due and not held
        by a live replica, and a claim is renewed every third of ``lease_s`` while it is sent."""
        self.platform_id = check_id("platform id", platform_id)
        self.replica_id = replica_id
        self.lease_s = check_lease_s(lease_s)
        self.bureau = bureau
        self.outbox = outbox if outbox is not None else Outbox.in_memory()
        self.retry = retry or RetryPolicy()
        self._lock = threading.Lock()
        self._specs: dict[tuple[str, str], FeatureSpec] = {}
        #: (slot bits, most slots) of a model version's packed batches; None: score one by one.
        self._slot_bits: dict[tuple[str, str], tuple[int, int] | None] = {}
        self._latest: dict[str, tuple[float, str]] = {}
        self._keys: dict[tuple[str, str], PublicKey] = {}
        self._leases: LeaseKeeper[OutboxFence] = LeaseKeeper(
            "platform-leases",
            self.lease_s,
            lambda fences: self.outbox.renew(fences, self.lease_s, time.time()),
            lambda fences: self.outbox.release(fences, time.time()),
        )
        self._resender: RetryLoop | None = None
        self._dial = dial
        self._resend_link: tuple[BureauLink, Callable[[], None]] | None = None

    def feature_spec(self, model_id: str, version: str = "") -> tuple[str, FeatureSpec]:
        """(version number, spec) of a model version; "" or "latest" resolves at the bureau.

        A numbered version never changes, so its spec is cached for good. Which version is the
        latest is asked again after LATEST_TTL_S, so a model swapped in at the bureau reaches
        new applications within that time; an application always carries the version its
        features were encoded for.
        """
        now = time.monotonic()
        version = version.lstrip("v") if version not in ("", "latest") else ""
        with self._lock:
            if not version:
                cached = self._latest.get(model_id)
                if cached is not None and now - cached[0] < LATEST_TTL_S:
                    version = cached[1]
            spec = self._specs.get((model_id, version)) if version else None
        if spec is None:
            answer = self.bureau.model_spec(model_id, version)
            resolved, spec_dict = answer.version, answer.feature_spec
            slot_bits, max_slots = answer.slot_bits, answer.max_slots
            if not resolved.isdigit() or (version and resolved != version):
                raise InvalidInputError(
                    f"bureau answered version {resolved!r} for model {model_id!r} v{version or 'latest'}"
                )
            spec = FeatureSpec.from_dict(spec_dict)
            with self._lock:
                self._specs[(model_id, resolved)] = spec
                self._slot_bits[(model_id, resolved)] = (
                    (slot_bits, max_slots) if slot_bits and max_slots else None
                )
                if not version:
                    self._latest[model_id] = (now, resolved)
            version = resolved
        return version, spec

    def bank_key(self, bank_id: str, key_id: str) -> PublicKey:
        """Fetch the bank's key from the bureau and check it against the self-certifying key id.

        The key id is a hash of the key, so a bureau that substituted its own key would need a
        second preimage of SHA-256 truncated to 128 bits.
        """
        with self._lock:
            key = self._keys.get((bank_id, key_id))
        if key is None:
            key = self.bureau.bank_key(bank_id, key_id)
            if not key.matches_key_id(key_id):
                raise CryptoError(f"bureau returned a key whose fingerprint does not match key id {key_id}")
            # The platform encrypts every feature of every application: keep randomness for a
            # burst of a few hundred applications precomputed, refilled while idle.
            key.reserve(PLATFORM_POOL_CAPACITY)
            with self._lock:
                self._keys[(bank_id, key_id)] = key
        return key

    def score(self, app: Application) -> Receipt:
        """Encrypt and submit ``app`` once: a resubmission of the same id and features resends the
        payload stored in the outbox (same outcome at the bureau); other features under the same
        id are refused (AlreadyExistsError)."""
        check_entry(app)
        t0 = time.perf_counter()
        fingerprint = self.outbox.fingerprint(app)
        entry = self.outbox.find(app.application_id, fingerprint)
        t1 = time.perf_counter()
        if entry is None:
            version, spec = self.feature_spec(app.model_id, app.model_version)
            key = self.bank_key(app.bank_id, app.key_id)
            ciphertexts = tuple(key.encrypt(v) for v in spec.encode_row(app.features))
            t1 = time.perf_counter()
            submission = self._store_new(app, fingerprint, key, version, ciphertexts)
        else:
            submission = self._stored(entry)
        result = self._send(submission)
        total_ms = (time.perf_counter() - t0) * 1e3
        return _receipt(app.application_id, result, submission.model_version, (t1 - t0) * 1e3, total_ms)

    def _store_new(
        self, app: Application, fingerprint: str, key: PublicKey, version: str, ciphertexts: tuple[int, ...]
    ) -> Submission:
        """Store a freshly encrypted application in the outbox before it is sent; returns what to
        send: the payload just made, or the one another request for the same application stored
        first."""
        encrypted = EncryptedApplication(
            application_id=app.application_id,
            platform_id=self.platform_id,
            bank_id=app.bank_id,
            model_id=app.model_id,
            key_id=app.key_id,
            consent_reference=app.consent_reference,
            ciphertexts=ciphertexts,
            model_version=version,
        )
        payload = serde.encrypted_application_to_proto(encrypted, key).SerializeToString()
        entry = self.outbox.add(
            app.application_id,
            fingerprint,
            app.bank_id,
            app.key_id,
            payload,
            due_at=time.time() + self.lease_s,
            owner=self.replica_id,
            lease_s=self.lease_s,
        )
        if entry.payload != payload:
            return self._stored(entry)
        ids = (app.application_id,)
        return Submission(entry, payload, ids, version, batch=False, replay=False, fence=entry.fence)

    def _stored(self, entry: OutboxEntry, fence: OutboxFence | None = None) -> Submission:
        """What an outbox entry sends: its own payload, or the whole packed batch it was stored in.
        Only the message's header is read; its ciphertexts go out as they were stored. ``fence``:
        the claim the resender holds on it (None: a resubmission's replay)."""
        batch_payload = self.outbox.batch_payload(entry)
        if batch_payload is None:
            version = pb.EncryptedApplication.FromString(entry.payload).model_version
            ids: tuple[str, ...] = (entry.application_id,)
            return Submission(entry, entry.payload, ids, version, batch=False, replay=True, fence=fence)
        batch = pb.EncryptedBatch.FromString(batch_payload)
        ids = tuple(m.application_id for m in batch.members)
        return Submission(
            entry, batch_payload, ids, batch.model_version, batch=True, replay=True, fence=fence
        )

    def _send(self, submission: Submission, link: BureauLink | None = None) -> SubmitResult:
        """Send a stored payload as it is; record the bureau's answer for every application it
        speaks for (a batch the bureau already has is answered with its stored outcome).

        A claimed submission's lease is renewed while it is out, and its outcome is recorded only
        under its claim: if another replica took the entry over meanwhile (this one was paused
        longer than the lease), nothing is recorded here ("lost the lease" in the log) and the
        bureau's answer, which that replica gets too, still goes back to the caller. A replay
        without a claim records the bureau's answer but never a retry: the entry's holder, or a
        resender, sends it again."""
        link = link or self.bureau
        fence = submission.fence
        if fence is not None:
            self._leases.hold(fence)
        try:
            result = self._submit(submission, link)
        except BlindscoreError as exc:
            self._let_go(fence)
            self._record_failure(submission, exc)
            raise
        except BaseException:
            self._let_go(fence)
            raise
        self._let_go(fence)
        self._record(lambda: self.outbox.acknowledged(submission.application_ids, fence=fence))
        return result

    def _let_go(self, fence: OutboxFence | None) -> None:
        """Stop renewing ``fence`` before its outcome is recorded (the write is fenced anyway)."""
        if fence is not None:
            self._leases.let_go(fence)

    def _record_failure(self, submission: Submission, exc: BlindscoreError) -> None:
        entry, ids, fence = submission.entry, submission.application_ids, submission.fence
        if not retryable(exc):
            self._record(lambda: self.outbox.refused(ids, str(exc), fence=fence))
            return
        if fence is None:
            return
        attempts = entry.attempts + 1
        delay = self.retry.delay(attempts)
        if self._record(
            lambda: self.outbox.retry_later(ids, attempts, time.time() + delay, str(exc), fence=fence)
        ):
            log.warning(
                "bureau did not answer for %s (%s); resending in %.1f s", entry.application_id, exc, delay
            )
            if self._resender is not None:
                self._resender.wake()

    @staticmethod
    def _record(write: Callable[[], bool]) -> bool:
        """Record an outcome in the outbox; False (logged) when this replica's claim was lost."""
        try:
            return write()
        except LeaseLostError as exc:
            log.warning("%s", exc)
            return False

    @staticmethod
    def _submit(submission: Submission, link: BureauLink) -> SubmitResult:
        """One submission to the bureau; a replayed batch refused with ALREADY_EXISTS is sent once more.

        Two copies of one stored batch can be at the bureau at once: the resender's and a
        client's resubmission, or one still in the bureau's hands from before this platform
        restarted. If the first copy is stored while the second is between reading "no such
        batch" and checking its member ids, the bureau finds those ids taken (by the batch
        itself) and refuses the second copy with ALREADY_EXISTS. The ids and the batch are stored
        in one transaction, so the batch is at the bureau by then and the same payload again is
        answered with its stored outcome, as any resubmission is. An id really taken elsewhere
        is refused again.
        """
        count = len(submission.application_ids)
        if not submission.batch:
            return link.submit(submission.payload)
        try:
            return link.submit_batch(submission.payload, count)
        except PeerError as exc:
            if not submission.replay or exc.code != "ALREADY_EXISTS":
                raise
            log.info(
                "batch of %s refused as already submitted; asking once more", submission.entry.application_id
            )
            return link.submit_batch(submission.payload, count)

    # ------------------------------------------------------------------ packed batches
    def score_many(self, apps: Sequence[Application]) -> list[Receipt | BlindscoreError]:
        """Score several applications, in packed batches where the model allows (one result per
        application, in order; a failure is returned, not raised).

        Applications already in the outbox (resubmissions) are resent as they were stored (a
        batch once, whatever number of its members came again); those of models without a packed
        form go one by one through :meth:`score`. The rest are grouped by bank key and model
        version and encrypted k to a ciphertext (:mod:`blindscore.protocol.packing`); a batch is stored in
        the outbox before it is sent, and accepted or refused by the bureau as a whole.
        """
        plan = self._sort_requests(apps)
        for group, members in plan.groups.items():
            plan.results.update(self._score_group(group, members))
        for items in plan.resubmitted.values():
            plan.results.update(self._resend_stored(items))
        for i in plan.later:
            plan.results[i] = self._score_or_error(apps[i])
        return [
            plan.results[i] if i in plan.results else BlindscoreError("not scored") for i in range(len(apps))
        ]

    def _sort_requests(self, apps: Sequence[Application]) -> _Plan:
        """Sort requests into resubmissions, applications to pack and the rest, which are scored
        one by one here and now."""
        plan = _Plan()
        being_packed: set[str] = set()
        for i, app in enumerate(apps):
            if app.application_id in being_packed:
                plan.later.append(i)
                continue
            try:
                check_entry(app)
                fingerprint = self.outbox.fingerprint(app)
                entry = self.outbox.find(app.application_id, fingerprint)
                leader = None if entry is None else self.outbox.batch_leader(entry)
                if entry is not None and leader is not None:
                    plan.resubmitted.setdefault(leader, []).append((i, entry))  # its batch goes once
                    continue
                if entry is None:
                    version, spec = self.feature_spec(app.model_id, app.model_version)
                    with self._lock:
                        layout = self._slot_bits.get((app.model_id, version))
                    if layout is not None:
                        group = _Group(app.bank_id, app.key_id, app.model_id, version)
                        packable = _Packable(i, app, fingerprint, spec.encode_row(app.features))
                        plan.groups.setdefault(group, []).append(packable)
                        being_packed.add(app.application_id)
                        continue
                plan.results[i] = self.score(app)
            except BlindscoreError as exc:
                plan.results[i] = exc
        return plan

    def _score_group(self, group: _Group, members: list[_Packable]) -> dict[int, Receipt | BlindscoreError]:
        """Score the applications of one bank key and model version in batches as large as the key
        allows, or one by one when a slot does not fit its plaintext."""
        try:
            key = self.bank_key(group.bank_id, group.key_id)
            with self._lock:
                layout = self._slot_bits[(group.model_id, group.version)]
            assert layout is not None
            slot_bits, max_slots = layout
            capacity = packing.slots_per_batch(slot_bits, key.bits, max_slots)
        except BlindscoreError as exc:
            return {m.index: exc for m in members}
        if capacity < 1:  # a slot wider than this key's plaintext: one by one
            return {m.index: self._score_or_error(m.app) for m in members}
        results: dict[int, Receipt | BlindscoreError] = {}
        for start in range(0, len(members), capacity):
            chunk = members[start : start + capacity]
            try:
                receipts = self._score_packed(chunk, key, group, slot_bits)
            except BlindscoreError as exc:
                receipts = [exc] * len(chunk)
            results.update(zip((m.index for m in chunk), receipts, strict=True))
        return results

    def _resend_stored(self, items: list[tuple[int, OutboxEntry]]) -> dict[int, Receipt | BlindscoreError]:
        """Resend, once, the batch that resubmitted applications were stored in."""
        t0 = time.perf_counter()
        try:
            submission = self._stored(items[0][1])
            result = self._send(submission)
        except BlindscoreError as exc:
            return {i: exc for i, _ in items}
        total_ms = (time.perf_counter() - t0) * 1e3
        return {
            i: _receipt(entry.application_id, result, submission.model_version, None, total_ms)
            for i, entry in items
        }

    def _score_or_error(self, app: Application) -> Receipt | BlindscoreError:
        try:
            return self.score(app)
        except BlindscoreError as exc:
            return exc

    def _score_packed(
        self, members: Sequence[_Packable], key: PublicKey, group: _Group, slot_bits: int
    ) -> list[Receipt | BlindscoreError]:
        """Encrypt applications k to a ciphertext, store the batch in the outbox and send it."""
        t0 = time.perf_counter()
        with self._lock:
            spec = self._specs[(group.model_id, group.version)]
        ciphertexts = packing.encrypt_packed(key, spec, slot_bits, [m.encoded for m in members])
        batch = EncryptedBatch(
            batch_id="b-" + secrets.token_hex(16),
            platform_id=self.platform_id,
            bank_id=group.bank_id,
            model_id=group.model_id,
            key_id=group.key_id,
            model_version=group.version,
            slot_bits=slot_bits,
            members=tuple(BatchMember(m.app.application_id, m.app.consent_reference) for m in members),
            ciphertexts=tuple(ciphertexts),
        )
        payload = serde.encrypted_batch_to_proto(batch, key).SerializeToString()
        t1 = time.perf_counter()
        entry = self.outbox.add_batch(
            [(m.app.application_id, m.fingerprint) for m in members],
            group.bank_id,
            group.key_id,
            payload,
            due_at=time.time() + self.lease_s,
            owner=self.replica_id,
            lease_s=self.lease_s,
        )
        if entry is None:
            # Another request stored one of these ids meanwhile: fall back to one by one, which
            # resends or refuses exactly as a resubmission would.
            return [self._score_or_error(m.app) for m in members]
        ids = tuple(m.app.application_id for m in members)
        try:
            submission = Submission(
                entry, payload, ids, group.version, batch=True, replay=False, fence=entry.fence
            )
            result = self._send(submission)
        except PeerError as exc:
            if exc.code != "ALREADY_EXISTS" or len(members) == 1:
                raise
            # The bureau refused the batch for an id it already has: send the members one by one,
            # so only that one is refused (the refused batch frees their outbox entries).
            log.warning("batch refused (%s); sending its %d applications one by one", exc, len(members))
            return [self._score_or_error(m.app) for m in members]
        total_ms = (time.perf_counter() - t0) * 1e3
        encrypt_ms = (t1 - t0) * 1e3 / len(members)
        return [_receipt(app_id, result, group.version, encrypt_ms, total_ms) for app_id in ids]

    # ------------------------------------------------------------------ resending
    def start_resending(self) -> None:
        """Start the worker that resends every outbox entry the bureau has not answered, those left
        by an earlier run first, with exponential backoff while the bureau is unreachable. Among
        replicas sharing the outbox each unanswered entry is resent by one at a time (claims)."""
        if self._resender is not None:
            return
        left = self.outbox.resume_all(time.time())
        if left:
            log.warning("resending %d application(s) the bureau never answered", left)
        # Also wake for entries a dead replica leaves behind: they are due when its lease expires.
        idle = min(30.0, max(0.2, self.lease_s / 2))
        self._resender = RetryLoop("platform-resend", self._resend_due, idle_s=idle)
        self._resender.start()

    def stop_resending(self) -> None:
        """Stop the resender after the entry it is sending; the entries it claimed and did not
        send yet are handed back at once."""
        resender, self._resender = self._resender, None
        if resender is not None:
            resender.stop()

    def close(self) -> None:
        """Stop the resender and close the outbox; unanswered entries stay for the next start or
        another replica (the claims this one still holds are handed back)."""
        self.stop_resending()
        self._leases.stop()
        self._hang_up()
        self.outbox.close()

    def _hang_up(self) -> None:
        opened, self._resend_link = self._resend_link, None
        if opened is not None:
            opened[1]()

    def _resend_due(self) -> float | None:
        """One round of the resender: claim the due entries no live replica holds and resend them."""
        unreachable = False
        claimed = self.outbox.claim_due(self.replica_id, self.lease_s, time.time(), RESEND_BATCH)
        for entry in claimed:  # renewed while they wait for their turn too
            self._leases.hold(entry.fence)
        for k, entry in enumerate(claimed):
            fence = entry.fence
            if self._resender is None:  # stopping: the entries not yet sent go back at once
                self._leases.hand_back(*(e.fence for e in claimed[k:]))
                return None
            if self._leases.is_lost(fence):
                self._leases.let_go(fence)
                continue
            try:
                submission = self._stored(entry, fence)
            except BlindscoreError as exc:
                self._leases.let_go(fence)
                log.warning("resending %s: %s", entry.application_id, exc)
                continue
            if self._resend_link is None and self._dial is not None:
                self._resend_link = self._dial()
            try:
                self._send(submission, self._resend_link[0] if self._resend_link else None)
                log.info("resent %s to the bureau", entry.application_id)
            except BlindscoreError as exc:
                unreachable |= retryable(exc)
                log.warning("resending %s: %s", entry.application_id, exc)
        if unreachable:
            self._hang_up()
        due = self.outbox.next_due()
        return None if due is None else max(0.05, due - time.time())
