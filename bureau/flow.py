"""Transport-free bureau logic: register banks, publish specs and keys, score one application blind."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from blindscore.application import BandDelivery, EncryptedApplication
from blindscore.comparison import BandComparison
from blindscore.dgk import DGKPublicKey
from blindscore.errors import InvalidInputError, NotFoundError
from blindscore.german import DEFAULT_MODEL_ID, default_model
from blindscore.paillier import PublicKey
from bureau.audit import AuditLog
from bureau.bank_link import BankLink
from bureau.registry import BankRegistry, ModelStore

log = logging.getLogger(__name__)


def _auditable(value: str, limit: int) -> str:
    return value if len(value) <= limit and value.isprintable() else ""


@dataclass(frozen=True)
class ScoreReport:
    """Milliseconds per stage (the bureau's own and, as it measured them, the bank's) and bytes."""

    stage_ms: dict[str, float]
    wire_bytes: int
    model_version: int = 0


class Bureau:
    """The bureau's state and flows. It only ever holds public keys and model weights."""

    def __init__(self, banks: BankRegistry, models: ModelStore, audit: AuditLog | None = None) -> None:
        self.banks = banks
        self.models = models
        self.audit = audit

    @classmethod
    def open(cls, data_dir: Path) -> Bureau:
        """Open the bureau's stores; the default German credit model is installed on first start."""
        models = ModelStore(data_dir / "models")
        if DEFAULT_MODEL_ID not in models.names():
            models.put(DEFAULT_MODEL_ID, default_model())
        return cls(BankRegistry(data_dir / "banks"), models, AuditLog(data_dir / "audit.sqlite3"))

    def record(self, request: Mapping[str, str], outcome: str, duration_ms: float) -> None:
        """Append the audit record of one query: who, for whom, which model, how it ended, how long.

        Never a feature, a ciphertext, a score or a band. A field that would be refused (a request
        turned down for a malformed id) is recorded as empty rather than dropping the record.
        """
        if self.audit is None:
            return
        model_id = request.get("model_id", "")
        try:
            version = self.models.version(model_id, request.get("model_version")) if model_id else ""
        except (NotFoundError, InvalidInputError):
            version = ""
        self.audit.append(
            platform_id=_auditable(request.get("platform_id", ""), 128),
            bank_id=_auditable(request.get("bank_id", ""), 128),
            application_id=_auditable(request.get("application_id", ""), 128),
            consent_reference=_auditable(request.get("consent_reference", ""), 256),
            model_id=_auditable(model_id, 128),
            model_version=version,
            outcome=outcome,
            duration_ms=duration_ms,
        )

    def register_bank(self, bank_id: str, address: str, paillier: PublicKey, dgk: DGKPublicKey) -> str:
        key_id = self.banks.register(bank_id, address, paillier, dgk)
        log.info("bank %s registered key %s at %s", bank_id, key_id, address)
        return key_id

    def bank_key(self, bank_id: str, key_id: str) -> PublicKey:
        return self.banks.get(bank_id).key(key_id)[0]

    def model_spec(self, model_id: str, version: str = "") -> tuple[int, dict[str, object]]:
        """The public part of a model version: what the platform needs to encode features.

        Returns (resolved version number, feature spec); never weights or points.
        """
        entry = self.models.resolve(model_id, version)
        return entry.version, entry.model.spec.to_dict()

    def score(
        self, app: EncryptedApplication, link_for: Callable[[str, str, PublicKey, DGKPublicKey], BankLink]
    ) -> ScoreReport:
        """Score ``app`` under the bank's key, run the band protocol, hand the bank [band].

        The model version is resolved once, here: an application finishes on the version it
        started with even if a newer one is imported meanwhile.
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
        t0 = time.perf_counter()
        score = model.evaluate_encrypted(pk, app.ciphertexts)
        t1 = time.perf_counter()
        protocol = BandComparison(
            pk, dgk, score, model.encoded_cutoffs, *model.encoded_score_bounds, model.truncate_bits
        )
        masked = protocol.masked_request()
        t2 = time.perf_counter()
        bits = link.compare_masked(app.application_id, masked)
        t3 = time.perf_counter()
        blinded = protocol.blinded_request(bits)
        t4 = time.perf_counter()
        final = link.compare_blinded(app.application_id, blinded)
        t5 = time.perf_counter()
        band = protocol.band_ciphertext(final)
        t6 = time.perf_counter()
        link.deliver_band(
            BandDelivery(
                application_id=app.application_id,
                key_id=app.key_id,
                model_id=app.model_id,
                band_labels=tuple(model.policy.labels),
                band_ciphertext=band,
            )
        )
        stages["bureau.evaluate"] = (t1 - t0) * 1e3
        stages["bureau.round1"] = (t2 - t1) * 1e3
        stages["bureau.round2"] = (t4 - t3) * 1e3
        stages["bureau.finish"] = (t6 - t5) * 1e3
        stages.update(link.stage_ms)
        return ScoreReport(stages, link.wire_bytes, entry.version)
