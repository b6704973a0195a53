"""What the bureau keeps on disk: registered banks with their public keys, and its scoring models."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from blindscore._files import read_json, write_json
from blindscore.application import check_id
from blindscore.dgk import DGKPublicKey
from blindscore.errors import InvalidInputError, NotFoundError
from blindscore.model import LinearModel
from blindscore.paillier import PublicKey


@dataclass
class BankRecord:
    bank_id: str
    address: str
    # key id -> (Paillier public key, DGK public key); several ids let a bank rotate keys.
    keys: dict[str, tuple[PublicKey, DGKPublicKey]] = field(default_factory=dict)

    def key(self, key_id: str) -> tuple[PublicKey, DGKPublicKey]:
        try:
            return self.keys[key_id]
        except KeyError:
            raise NotFoundError(f"bank {self.bank_id!r} has no registered key {key_id!r}") from None

    def to_dict(self) -> dict[str, object]:
        return {
            "format": 1,
            "bank_id": self.bank_id,
            "address": self.address,
            "keys": {
                kid: {"paillier": pk.to_dict(), "dgk": dgk.to_dict()} for kid, (pk, dgk) in self.keys.items()
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> BankRecord:
        keys_obj = d["keys"]
        assert isinstance(keys_obj, dict)
        keys = {
            str(kid): (PublicKey.from_dict(v["paillier"]), DGKPublicKey.from_dict(v["dgk"]))
            for kid, v in keys_obj.items()
        }
        return cls(bank_id=str(d["bank_id"]), address=str(d["address"]), keys=keys)


class BankRegistry:
    """Banks by id, persisted one JSON file per bank so registrations survive restarts."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._banks: dict[str, BankRecord] = {}
        for path in sorted(directory.glob("*.json")):
            record = BankRecord.from_dict(read_json(path))
            self._banks[record.bank_id] = record

    def register(self, bank_id: str, address: str, paillier: PublicKey, dgk: DGKPublicKey) -> str:
        check_id("bank id", bank_id)
        if not re.match(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$", address):
            raise InvalidInputError(f"bank address {address!r} must look like host:port")
        with self._lock:
            record = self._banks.get(bank_id) or BankRecord(bank_id, address)
            record.address = address
            record.keys[paillier.key_id] = (paillier, dgk)
            write_json(self.directory / f"{bank_id}.json", record.to_dict())
            self._banks[bank_id] = record
        return paillier.key_id

    def get(self, bank_id: str) -> BankRecord:
        with self._lock:
            try:
                return self._banks[bank_id]
            except KeyError:
                raise NotFoundError(f"no bank registered under id {bank_id!r}") from None


class ModelStore:
    """Scoring models by id: one JSON file each under the bureau's data directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._models: dict[str, LinearModel] = {}
        for path in sorted(directory.glob("*.json")):
            self._models[path.stem] = LinearModel.load(path)

    def put(self, model_id: str, model: LinearModel) -> None:
        check_id("model id", model_id)
        with self._lock:
            model.save(self.directory / f"{model_id}.json")
            self._models[model_id] = model

    def get(self, model_id: str) -> LinearModel:
        with self._lock:
            try:
                return self._models[model_id]
            except KeyError:
                known = ", ".join(sorted(self._models)) or "none"
                raise NotFoundError(f"unknown model {model_id!r} (installed: {known})") from None

    def ids(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def version(self, model_id: str) -> str:
        """A content version of the model: the first 96 bits of SHA-256 over its canonical JSON."""
        model = self.get(model_id)
        digest = hashlib.sha256(json.dumps(model.to_dict(), sort_keys=True).encode()).hexdigest()
        return "sha256:" + digest[:24]
