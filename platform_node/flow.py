"""Transport-free platform logic: encode and encrypt an applicant's features, submit them once."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from blindscore.crypto.paillier import PublicKey
from blindscore.errors import BlindscoreError, CryptoError, InvalidInputError, PeerError
from blindscore.infra.db import RetryLoop, RetryPolicy, retryable
from blindscore.models.features import FeatureSpec
from blindscore.platform_node.bureau_link import BureauLink, SubmitResult
from blindscore.platform_node.outbox import Outbox, OutboxEntry
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
#: Seconds the request that stored an outbox entry has it to itself before the resender may send it.
INLINE_GRACE_S = 120.0
#: Outbox entries the resender takes per round.
RESEND_BATCH = 32

#: Opens a fresh link to the bureau for the resender: (link, close).
Dial = Callable[[], tuple[BureauLink, Callable[[], None]]]


def check_entry(app: Application) -> Application:
    """Entry validation of an application before anything is encrypted, stored or sent: the input
    limits of blindscore.protocol.limits. Its ids were checked (more narrowly) when it was made."""
    limits.check_consent(app.consent_reference)
    return app


@dataclass(frozen=True)
class Receipt:
    application_id: str
    encrypt_ms: float
    total_ms: float
    stage_ms: dict[str, float] = field(default_factory=dict)
    wire_bytes: int = 0
    model_version: str = ""
    #: The bureau stored the application; its band reaches the bank later (the bank is unreachable).
    pending: bool = False


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
    ) -> None:
        """Without ``outbox`` resubmissions are recognised only while this process lives. With
        ``dial`` the resender sends over links of its own and redials after a round in which the
        bureau was unreachable, instead of waiting out gRPC's reconnect backoff on ``bureau``."""
        self.platform_id = check_id("platform id", platform_id)
        self.bureau = bureau
        self.outbox = outbox if outbox is not None else Outbox.in_memory()
        self.retry = retry or RetryPolicy()
        self._lock = threading.Lock()
        self._specs: dict[tuple[str, str], FeatureSpec] = {}
        #: (slot bits, most slots) of a model version's packed batches; None: score one by one.
        self._slot_bits: dict[tuple[str, str], tuple[int, int] | None] = {}
        self._latest: dict[str, tuple[float, str]] = {}
        self._keys: dict[tuple[str, str], PublicKey] = {}
        self._sending: set[str] = set()
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

    def bank_key(self, bank_id: str, key_id: str, link: BureauLink | None = None) -> PublicKey:
        """Fetch the bank's key from the bureau and check it against the self-certifying key id.

        The key id is a hash of the key, so a bureau that substituted its own key would need a
        second preimage of SHA-256 truncated to 128 bits.
        """
        with self._lock:
            key = self._keys.get((bank_id, key_id))
        if key is None:
            key = (link or self.bureau).bank_key(bank_id, key_id)
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
            encoded = spec.encode_row(app.features)
            ciphertexts = tuple(key.encrypt(v) for v in encoded)
            t1 = time.perf_counter()
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
                app.application_id, fingerprint, app.bank_id, app.key_id, payload,
                due_at=time.time() + INLINE_GRACE_S,
            )  # fmt: skip
        result, version = self._send(entry)
        t2 = time.perf_counter()
        stages = {"platform.encrypt": (t1 - t0) * 1e3, **result.stage_ms}
        return Receipt(
            app.application_id,
            (t1 - t0) * 1e3,
            (t2 - t0) * 1e3,
            stages,
            result.wire_bytes,
            result.model_version or version,
            getattr(result, "pending", False),
        )

    def _send(self, entry: OutboxEntry, link: BureauLink | None = None) -> tuple[SubmitResult, str]:
        """Send an outbox entry's payload as it was stored; record the bureau's answer.

        An entry stored as part of a packed batch sends the whole batch (the bureau answers a
        batch it already has with its stored outcome) and records the answer for every member.
        """
        link = link or self.bureau
        batch = self._stored_batch(entry)
        ids = [entry.application_id] if batch is None else [m.application_id for m in batch.members]
        with self._lock:
            self._sending.update(ids)
        try:
            key = self.bank_key(entry.bank_id, entry.key_id, link)
            if batch is None:
                msg = pb.EncryptedApplication.FromString(entry.payload)
                result = link.submit(serde.encrypted_application_from_proto(msg, key), key)
                version = msg.model_version
            else:
                result = link.submit_batch(serde.encrypted_batch_from_proto(batch, key), key)
                version = batch.model_version
        except BlindscoreError as exc:
            if retryable(exc):
                attempts = entry.attempts + 1
                delay = self.retry.delay(attempts)
                self.outbox.retry_later(ids, attempts, time.time() + delay, str(exc))
                log.warning(
                    "bureau did not answer for %s (%s); resending in %.1f s", entry.application_id, exc, delay
                )
                if self._resender is not None:
                    self._resender.wake()
            else:
                self.outbox.refused(ids, str(exc))
            raise
        finally:
            with self._lock:
                self._sending.difference_update(ids)
        self.outbox.acknowledged(ids)
        return result, version

    def _stored_batch(self, entry: OutboxEntry) -> pb.EncryptedBatch | None:
        """The packed batch an outbox entry was sent in, or None for a single application."""
        payload = self.outbox.batch_payload(entry)
        return None if payload is None else pb.EncryptedBatch.FromString(payload)

    def _member_ids(self, entry: OutboxEntry) -> list[str]:
        """The ids an outbox entry's payload speaks for: its own, or every member of its batch."""
        batch = self._stored_batch(entry)
        return [entry.application_id] if batch is None else [m.application_id for m in batch.members]

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
        results: list[Receipt | BlindscoreError | None] = [None] * len(apps)
        groups: dict[tuple[str, str, str, str], list[tuple[int, Application, str, list[int]]]] = {}
        being_packed: set[str] = set()
        later: list[int] = []  # a second request for an id being packed: after the batches
        resend: dict[str, list[tuple[int, OutboxEntry]]] = {}  # resubmissions, by batch
        for i, app in enumerate(apps):
            if app.application_id in being_packed:
                later.append(i)
                continue
            try:
                check_entry(app)
                fingerprint = self.outbox.fingerprint(app)
                entry = self.outbox.find(app.application_id, fingerprint)
                leader = None if entry is None else self.outbox.batch_leader(entry)
                if entry is not None and leader is not None:
                    resend.setdefault(leader, []).append((i, entry))  # its batch goes once
                    continue
                if entry is None:
                    version, spec = self.feature_spec(app.model_id, app.model_version)
                    with self._lock:
                        layout = self._slot_bits.get((app.model_id, version))
                    if layout is not None:
                        encoded = spec.encode_row(app.features)
                        groups.setdefault((app.bank_id, app.key_id, app.model_id, version), []).append(
                            (i, app, fingerprint, encoded)
                        )
                        being_packed.add(app.application_id)
                        continue
                results[i] = self.score(app)
            except BlindscoreError as exc:
                results[i] = exc
        for (bank_id, key_id, model_id, version), members in groups.items():
            try:
                key = self.bank_key(bank_id, key_id)
                with self._lock:
                    layout = self._slot_bits[(model_id, version)]
                assert layout is not None
                slot_bits, max_slots = layout
                capacity = packing.slots_per_batch(slot_bits, key.bits, max_slots)
            except BlindscoreError as exc:
                for i, *_ in members:
                    results[i] = exc
                continue
            if capacity < 1:  # a slot wider than this key's plaintext: one by one
                for i, app, _, _ in members:
                    try:
                        results[i] = self.score(app)
                    except BlindscoreError as exc:
                        results[i] = exc
                continue
            for start in range(0, len(members), capacity):
                chunk = members[start : start + capacity]
                try:
                    receipts = self._score_packed(chunk, key, model_id, version, slot_bits)
                except BlindscoreError as exc:
                    receipts = [exc] * len(chunk)
                for (i, *_), receipt in zip(chunk, receipts, strict=True):
                    results[i] = receipt
        for items in resend.values():
            t0 = time.perf_counter()
            try:
                result, version = self._send(items[0][1])
            except BlindscoreError as exc:
                for i, _ in items:
                    results[i] = exc
                continue
            total_ms = (time.perf_counter() - t0) * 1e3
            for i, entry in items:
                results[i] = Receipt(
                    entry.application_id, 0.0, total_ms, dict(result.stage_ms), result.wire_bytes,
                    result.model_version or version, getattr(result, "pending", False),
                )  # fmt: skip
        for i in later:
            try:
                results[i] = self.score(apps[i])
            except BlindscoreError as exc:
                results[i] = exc
        return [r if r is not None else BlindscoreError("not scored") for r in results]

    def _one_by_one(self, apps: Sequence[Application]) -> list[Receipt | BlindscoreError]:
        out: list[Receipt | BlindscoreError] = []
        for app in apps:
            try:
                out.append(self.score(app))
            except BlindscoreError as exc:
                out.append(exc)
        return out

    def _score_packed(
        self,
        members: Sequence[tuple[int, Application, str, list[int]]],
        key: PublicKey,
        model_id: str,
        version: str,
        slot_bits: int,
    ) -> list[Receipt | BlindscoreError]:
        t0 = time.perf_counter()
        with self._lock:
            spec = self._specs[(model_id, version)]
        ciphertexts = packing.encrypt_packed(key, spec, slot_bits, [encoded for *_, encoded in members])
        first = members[0][1]
        batch = EncryptedBatch(
            batch_id="b-" + secrets.token_hex(16),
            platform_id=self.platform_id,
            bank_id=first.bank_id,
            model_id=model_id,
            key_id=first.key_id,
            model_version=version,
            slot_bits=slot_bits,
            members=tuple(BatchMember(app.application_id, app.consent_reference) for _, app, _, _ in members),
            ciphertexts=tuple(ciphertexts),
        )
        payload = serde.encrypted_batch_to_proto(batch, key).SerializeToString()
        t1 = time.perf_counter()
        entry = self.outbox.add_batch(
            [(app.application_id, fp) for _, app, fp, _ in members],
            first.bank_id,
            first.key_id,
            payload,
            due_at=time.time() + INLINE_GRACE_S,
        )
        if entry is None:
            # Another request stored one of these ids meanwhile: fall back to one by one, which
            # resends or refuses exactly as a resubmission would.
            return self._one_by_one([app for _, app, _, _ in members])
        try:
            result, _ = self._send(entry)
        except PeerError as exc:
            if exc.code != "ALREADY_EXISTS" or len(members) == 1:
                raise
            # The bureau refused the batch for an id it already has: send the members one by one,
            # so only that one is refused (the refused batch frees their outbox entries).
            log.warning("batch refused (%s); sending its %d applications one by one", exc, len(members))
            return self._one_by_one([app for _, app, _, _ in members])
        t2 = time.perf_counter()
        count = len(members)
        encrypt_ms = (t1 - t0) * 1e3 / count
        stages = {"platform.encrypt": encrypt_ms, **result.stage_ms}
        return [
            Receipt(
                app.application_id,
                encrypt_ms,
                (t2 - t0) * 1e3,
                stages,
                result.wire_bytes,
                result.model_version or version,
                getattr(result, "pending", False),
            )
            for _, app, _, _ in members
        ]

    # ------------------------------------------------------------------ resending
    def start_resending(self) -> None:
        """Start the worker that resends every outbox entry the bureau has not answered, those left
        by an earlier run first, with exponential backoff while the bureau is unreachable."""
        if self._resender is not None:
            return
        left = self.outbox.resume_all(time.time())
        if left:
            log.warning("resending %d application(s) the bureau never answered", left)
        self._resender = RetryLoop("platform-resend", self._resend_due)
        self._resender.start()

    def close(self) -> None:
        """Stop the resender and close the outbox; unanswered entries stay for the next start."""
        resender, self._resender = self._resender, None
        if resender is not None:
            resender.stop()
        self._hang_up()
        self.outbox.close()

    def _hang_up(self) -> None:
        opened, self._resend_link = self._resend_link, None
        if opened is not None:
            opened[1]()

    def _resend_due(self) -> float | None:
        unreachable = False
        covered: set[str] = set()  # every member of a batch is due; the batch goes once a round
        for entry in self.outbox.due(time.time(), RESEND_BATCH):
            if self._resender is None:
                return None
            with self._lock:
                busy = entry.application_id in self._sending
            if busy or entry.application_id in covered:
                continue
            try:
                covered.update(self._member_ids(entry))
            except BlindscoreError as exc:
                log.warning("resending %s: %s", entry.application_id, exc)
                continue
            if self._resend_link is None and self._dial is not None:
                self._resend_link = self._dial()
            try:
                self._send(entry, self._resend_link[0] if self._resend_link else None)
                log.info("resent %s to the bureau", entry.application_id)
            except BlindscoreError as exc:
                unreachable |= retryable(exc)
                log.warning("resending %s: %s", entry.application_id, exc)
        if unreachable:
            self._hang_up()
        due = self.outbox.next_due()
        return None if due is None else max(0.05, due - time.time())
