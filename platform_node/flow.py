"""Transport-free platform logic: encode and encrypt an applicant's features, submit them."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from blindscore.application import Application, EncryptedApplication, check_id
from blindscore.errors import CryptoError, InvalidInputError
from blindscore.model import FeatureSpec
from blindscore.paillier import PublicKey
from platform_node.bureau_link import BureauLink

log = logging.getLogger(__name__)

#: 16384 precomputed hs^r values: 8 MiB at 2048 bits, the randomness of ~320 50-feature applications.
PLATFORM_POOL_CAPACITY = 16384
#: Seconds a platform trusts its answer to "which version of model M is the latest?".
LATEST_TTL_S = 2.0


@dataclass(frozen=True)
class Receipt:
    application_id: str
    encrypt_ms: float
    total_ms: float
    stage_ms: dict[str, float] = field(default_factory=dict)
    wire_bytes: int = 0
    model_version: str = ""


class PlatformNode:
    """The platform: it sees features in the clear but never a weight, a score or a band."""

    def __init__(self, platform_id: str, bureau: BureauLink) -> None:
        self.platform_id = check_id("platform id", platform_id)
        self.bureau = bureau
        self._lock = threading.Lock()
        self._specs: dict[tuple[str, str], FeatureSpec] = {}
        self._latest: dict[str, tuple[float, str]] = {}
        self._keys: dict[tuple[str, str], PublicKey] = {}

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
        t0 = time.perf_counter()
        version, spec = self.feature_spec(app.model_id, app.model_version)
        key = self.bank_key(app.bank_id, app.key_id)
        encoded = spec.encode_row(app.features)
        ciphertexts = tuple(key.encrypt(v) for v in encoded)
        t1 = time.perf_counter()
        result = self.bureau.submit(
            EncryptedApplication(
                application_id=app.application_id,
                platform_id=self.platform_id,
                bank_id=app.bank_id,
                model_id=app.model_id,
                key_id=app.key_id,
                consent_reference=app.consent_reference,
                ciphertexts=ciphertexts,
                model_version=version,
            ),
            key,
        )
        t2 = time.perf_counter()
        stages = {"platform.encrypt": (t1 - t0) * 1e3, **result.stage_ms}
        return Receipt(
            app.application_id,
            (t1 - t0) * 1e3,
            (t2 - t0) * 1e3,
            stages,
            result.wire_bytes,
            result.model_version or version,
        )
