"""Transport-free bureau logic: register banks, publish specs and keys, score one application blind."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from blindscore.application import BandDelivery, EncryptedApplication
from blindscore.comparison import BandComparison
from blindscore.dgk import DGKPublicKey
from blindscore.errors import InvalidInputError
from blindscore.german import DEFAULT_MODEL_ID, default_model
from blindscore.paillier import PublicKey
from bureau.bank_link import BankLink
from bureau.registry import BankRegistry, ModelStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreTimings:
    evaluate_ms: float
    compare_ms: float
    deliver_ms: float


class Bureau:
    """The bureau's state and flows. It only ever holds public keys and model weights."""

    def __init__(self, banks: BankRegistry, models: ModelStore) -> None:
        self.banks = banks
        self.models = models

    @classmethod
    def open(cls, data_dir: Path) -> Bureau:
        """Open the bureau's stores; the default German credit model is installed on first start."""
        models = ModelStore(data_dir / "models")
        if DEFAULT_MODEL_ID not in models.ids():
            models.put(DEFAULT_MODEL_ID, default_model())
        return cls(BankRegistry(data_dir / "banks"), models)

    def register_bank(self, bank_id: str, address: str, paillier: PublicKey, dgk: DGKPublicKey) -> str:
        key_id = self.banks.register(bank_id, address, paillier, dgk)
        log.info("bank %s registered key %s at %s", bank_id, key_id, address)
        return key_id

    def bank_key(self, bank_id: str, key_id: str) -> PublicKey:
        return self.banks.get(bank_id).key(key_id)[0]

    def model_spec(self, model_id: str) -> dict[str, object]:
        """The public part of a model: what the platform needs to encode features. No weights."""
        return self.models.get(model_id).spec.to_dict()

    def score(
        self, app: EncryptedApplication, link_for: Callable[[str, PublicKey, DGKPublicKey], BankLink]
    ) -> ScoreTimings:
        """Score ``app`` under the bank's key, run the band protocol, hand the bank [band]."""
        bank = self.banks.get(app.bank_id)
        pk, dgk = bank.key(app.key_id)
        model = self.models.get(app.model_id)
        width = model.spec.encoded_width
        if len(app.ciphertexts) != width:
            raise InvalidInputError(
                f"model {app.model_id!r} takes {width} encrypted features, got {len(app.ciphertexts)}"
            )
        t0 = time.perf_counter()
        score = pk.add_plain(pk.dot(app.ciphertexts, model.encoded_weights), model.encoded_intercept)
        diffs = [pk.add_plain(score, -c) for c in model.encoded_cutoffs]
        t1 = time.perf_counter()
        link = link_for(bank.address, pk, dgk)
        protocol = BandComparison(pk, dgk, diffs, model.comparison_bits)
        bits = link.compare_masked(app.application_id, protocol.masked_request())
        final = link.compare_blinded(app.application_id, protocol.blinded_request(bits))
        band = protocol.band_ciphertext(final)
        t2 = time.perf_counter()
        link.deliver_band(
            BandDelivery(
                application_id=app.application_id,
                key_id=app.key_id,
                model_id=app.model_id,
                band_labels=tuple(model.policy.labels),
                band_ciphertext=band,
            )
        )
        t3 = time.perf_counter()
        return ScoreTimings((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)
