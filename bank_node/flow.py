"""Transport-free bank logic: answer the two comparison rounds and decrypt the band index."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from bank_node.store import BandRecord, ResultStore
from blindscore import comparison
from blindscore.application import BandDelivery
from blindscore.dgk import DGKKeyPair, load_or_generate_dgk_keypair
from blindscore.errors import CryptoError, InvalidInputError, NotFoundError
from blindscore.paillier import KeyPair, load_or_generate_keypair

log = logging.getLogger(__name__)

MAX_BANDS = 64


class BankNode:
    """The bank: secret keys, stateless comparison answers, and the result store."""

    def __init__(self, bank_id: str, keypair: KeyPair, dgk: DGKKeyPair, store: ResultStore) -> None:
        if not bank_id:
            raise InvalidInputError("bank id must not be empty")
        self.bank_id = bank_id
        self.keypair = keypair
        self.dgk = dgk
        self.store = store

    @classmethod
    def open(cls, bank_id: str, data_dir: Path, *, key_bits: int = 2048) -> BankNode:
        """Load (or create on first start) the keys and the result store under ``data_dir``."""
        keys = data_dir / "keys"
        keypair, created = load_or_generate_keypair(keys, key_bits)
        if created:
            log.info("generated a %d-bit Paillier key %s", key_bits, keypair.public_key.key_id)
        elif keypair.public_key.bits != key_bits:
            log.warning(
                "existing key %s has %d bits; --key-bits %d applies to new keys only",
                keypair.public_key.key_id,
                keypair.public_key.bits,
                key_bits,
            )
        dgk, created = load_or_generate_dgk_keypair(keys)
        if created:
            log.info("generated a DGK key for the comparison protocol")
        return cls(bank_id, keypair, dgk, ResultStore(data_dir / "results.sqlite3"))

    @property
    def key_id(self) -> str:
        return self.keypair.public_key.key_id

    def check_key(self, key_id: str) -> None:
        if key_id != self.key_id:
            raise NotFoundError(f"bank {self.bank_id!r} has no key {key_id!r}")

    def compare_masked(self, key_id: str, request: comparison.MaskedRequest) -> comparison.BitsResponse:
        self.check_key(key_id)
        return comparison.answer_masked(self.keypair, self.dgk.public_key, request)

    def compare_blinded(self, key_id: str, request: comparison.BlindedRequest) -> comparison.FinalResponse:
        self.check_key(key_id)
        return comparison.answer_blinded(self.keypair.public_key, self.dgk.secret_key, request)

    def deliver_band(self, delivery: BandDelivery) -> BandRecord:
        """Decrypt the band index and store it; the only plaintext the bank learns."""
        self.check_key(delivery.key_id)
        if not delivery.application_id:
            raise InvalidInputError("application id must not be empty")
        labels = delivery.band_labels
        if not 2 <= len(labels) <= MAX_BANDS or len(set(labels)) != len(labels):
            raise InvalidInputError(f"band labels must be 2 to {MAX_BANDS} distinct names")
        pk = self.keypair.public_key
        # The band index is tiny, far below the prime p: the p-half of CRT decryption suffices.
        band = self.keypair.secret_key.decrypt_small(pk.validate(delivery.band_ciphertext))
        if not 0 <= band < len(labels):
            raise CryptoError(
                f"band ciphertext for {delivery.application_id} decrypts outside 0..{len(labels) - 1}"
            )
        record = BandRecord(
            application_id=delivery.application_id,
            model_id=delivery.model_id,
            key_id=delivery.key_id,
            band=band,
            band_label=labels[band],
            received_at=time.time(),
        )
        self.store.put(record)
        return record
