"""Transport-free platform logic: encode and encrypt an applicant's features, submit them."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from blindscore.application import Application, EncryptedApplication, check_id
from blindscore.errors import CryptoError
from blindscore.model import FeatureSpec
from blindscore.paillier import PublicKey
from platform_node.bureau_link import BureauLink

log = logging.getLogger(__name__)

#: 16384 precomputed hs^r values: 8 MiB at 2048 bits, the randomness of ~320 50-feature applications.
PLATFORM_POOL_CAPACITY = 16384


@dataclass(frozen=True)
class Receipt:
    application_id: str
    encrypt_ms: float
    total_ms: float
    stage_ms: dict[str, float] = field(default_factory=dict)
    wire_bytes: int = 0


class PlatformNode:
    """The platform: it sees features in the clear but never a weight, a score or a band."""

    def __init__(self, platform_id: str, bureau: BureauLink) -> None:
        self.platform_id = check_id("platform id", platform_id)
        self.bureau = bureau
        self._lock = threading.Lock()
        self._specs: dict[str, FeatureSpec] = {}
        self._keys: dict[tuple[str, str], PublicKey] = {}

    def feature_spec(self, model_id: str) -> FeatureSpec:
        with self._lock:
            spec = self._specs.get(model_id)
        if spec is None:
            spec = FeatureSpec.from_dict(self.bureau.model_spec(model_id))
            with self._lock:
                self._specs[model_id] = spec
        return spec

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
        spec = self.feature_spec(app.model_id)
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
            ),
            key,
        )
        t2 = time.perf_counter()
        stages = {"platform.encrypt": (t1 - t0) * 1e3, **result.stage_ms}
        return Receipt(app.application_id, (t1 - t0) * 1e3, (t2 - t0) * 1e3, stages, result.wire_bytes)
