"""Transport-free platform logic: encode and encrypt an applicant's features, submit them once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from blindscore import serde
from blindscore.application import Application, EncryptedApplication, check_id
from blindscore.db import RetryLoop, RetryPolicy, retryable
from blindscore.errors import BlindscoreError, CryptoError, InvalidInputError
from blindscore.model import FeatureSpec
from blindscore.paillier import PublicKey
from blindscore.v1 import blindscore_pb2 as pb
from platform_node.bureau_link import BureauLink, SubmitResult
from platform_node.outbox import Outbox, OutboxEntry

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
            resolved, spec_dict = self.bureau.model_spec(model_id, version)
            if not resolved.isdigit() or (version and resolved != version):
                raise InvalidInputError(
                    f"bureau answered version {resolved!r} for model {model_id!r} v{version or 'latest'}"
                )
            spec = FeatureSpec.from_dict(spec_dict)
            with self._lock:
                self._specs[(model_id, resolved)] = spec
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
        """Send an outbox entry's payload as it was stored; record the bureau's answer."""
        link = link or self.bureau
        with self._lock:
            self._sending.add(entry.application_id)
        try:
            key = self.bank_key(entry.bank_id, entry.key_id, link)
            msg = pb.EncryptedApplication.FromString(entry.payload)
            encrypted = serde.encrypted_application_from_proto(msg, key)
            result = link.submit(encrypted, key)
        except BlindscoreError as exc:
            if retryable(exc):
                attempts = entry.attempts + 1
                delay = self.retry.delay(attempts)
                self.outbox.retry_later(entry.application_id, attempts, time.time() + delay, str(exc))
                log.warning(
                    "bureau did not answer for %s (%s); resending in %.1f s", entry.application_id, exc, delay
                )
                if self._resender is not None:
                    self._resender.wake()
            else:
                self.outbox.refused(entry.application_id, str(exc))
            raise
        finally:
            with self._lock:
                self._sending.discard(entry.application_id)
        self.outbox.acknowledged(entry.application_id)
        return result, msg.model_version

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
        for entry in self.outbox.due(time.time(), RESEND_BATCH):
            if self._resender is None:
                return None
            with self._lock:
                busy = entry.application_id in self._sending
            if busy:
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
