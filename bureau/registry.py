"""What the bureau keeps on disk: registered banks with their public keys, and its scoring models."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from blindscore._files import private_dir, read_json, stage, write_json
from blindscore.crypto.dgk import DGKPublicKey
from blindscore.crypto.paillier import PublicKey
from blindscore.errors import BlindscoreError, InvalidInputError, ModelFormatError, NotFoundError
from blindscore.models.contract import PrivateModel
from blindscore.models.registry import load_model, load_model_file
from blindscore.protocol.application import check_id

#: More keys than a bank would ever keep live at once; bounds a registration message.
MAX_ACTIVE_KEYS = 64

log = logging.getLogger(__name__)


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


def check_id_quiet(value: str) -> bool:
    try:
        check_id("id", value)
    except BlindscoreError:
        return False
    return True


#: Longest bank address (a list of a bank's replicas included) the bureau stores.
MAX_ADDRESS_CHARS = 1024


class BankRegistry:
    """Banks by id, persisted one JSON file per bank so registrations survive restarts."""

    def __init__(self, directory: Path) -> None:
        self.directory = private_dir(directory)
        self._lock = threading.Lock()
        self._banks: dict[str, BankRecord] = {}
        for path in sorted(directory.glob("*.json")):
            record = BankRecord.from_dict(read_json(path))
            self._banks[record.bank_id] = record

    def register(
        self,
        bank_id: str,
        address: str,
        paillier: PublicKey,
        dgk: DGKPublicKey,
        *,
        active: tuple[str, ...] = (),
    ) -> str:
        """Add (or refresh) a bank's key and address. A non-empty ``active`` lists every key id the
        bank still answers for; its other keys are dropped (retired at the bank)."""
        check_id("bank id", bank_id)
        address = _bank_address(address)
        if len(active) > MAX_ACTIVE_KEYS:
            raise InvalidInputError(f"a bank may list at most {MAX_ACTIVE_KEYS} active keys")
        for kid in active:
            check_id("key id", kid)
        if active and paillier.key_id not in active:
            raise InvalidInputError(f"key {paillier.key_id} is registered but not among the active key ids")
        with self._lock:
            record = self._banks.get(bank_id) or BankRecord(bank_id, address)
            record.address = address
            record.keys[paillier.key_id] = (paillier, dgk)
            if active:
                for kid in [k for k in record.keys if k not in active]:
                    del record.keys[kid]
                    log.info("bank %s retired key %s", bank_id, kid)
            write_json(self.directory / f"{bank_id}.json", record.to_dict(), secret=True)  # owner-only
            self._banks[bank_id] = record
        log.info("bank %s registered key %s at %s", bank_id, paillier.key_id, address)
        return paillier.key_id

    def get(self, bank_id: str, key_id: str | None = None) -> BankRecord:
        """The bank ``bank_id`` (holding ``key_id``, if given). A miss re-reads the bank's file: with
        several bureau processes on one data directory (replicas, ``--workers``) a bank may have
        registered, or registered a new key, with another one."""
        with self._lock:
            record = self._banks.get(bank_id)
            if record is None or (key_id is not None and key_id not in record.keys):
                path = self.directory / f"{bank_id}.json"
                if check_id_quiet(bank_id) and path.is_file():
                    record = BankRecord.from_dict(read_json(path))
                    self._banks[bank_id] = record
            if record is None:
                raise NotFoundError(f"no bank registered under id {bank_id!r}")
            return record


@dataclass(frozen=True)
class ModelVersion:
    """One stored version of a named model."""

    name: str
    version: int
    model: PrivateModel
    digest: str
    created: float

    @property
    def label(self) -> str:
        """What the audit trail records: the version number and the content digest."""
        return f"v{self.version} {self.digest}"


def _digest(document: dict[str, object]) -> str:
    """A model's content digest: SHA-256 of its serialised form as canonical (sorted, compact) JSON."""
    return "sha256:" + hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:24]


LATEST = "latest"


def parse_version(text: str | int | None) -> int | None:
    """``None``, ``""`` or ``"latest"`` mean the newest version; otherwise a positive integer."""
    if text is None or text == "" or text == LATEST:
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    elif isinstance(text, str) and re.fullmatch(r"v?[0-9]{1,9}", text):
        value = int(text.lstrip("v"))
    else:
        raise InvalidInputError(f"model version {text!r} must be a positive integer or 'latest'")
    if value < 1:
        raise InvalidInputError(f"model version {text!r} must be a positive integer or 'latest'")
    return value


class ModelStore:
    """Named scoring models with immutable, numbered versions, one JSON file per version.

    Layout: ``DIR/NAME/v1.json``, ``DIR/NAME/v2.json``, ... A version file is created once
    (hard-linked into place, so two importers racing for the same number cannot overwrite each
    other) and never changed; "latest" is the highest number on disk, read at every lookup, so a
    version imported by ``blindscore model import`` while the bureau runs is live at once, with
    no restart, and a lookup that already resolved its version keeps that model object to the
    end. A file holds any registered model type (:mod:`blindscore.models.contract`). Models from the
    flat layout of earlier releases (``DIR/NAME.json``) become version 1 on open.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = private_dir(directory)
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, int], ModelVersion] = {}
        for legacy in sorted(directory.glob("*.json")):
            target = directory / legacy.stem / "v1.json"
            if check_id_quiet(legacy.stem) and not target.exists():
                target.parent.mkdir(mode=0o700, exist_ok=True)
                os.replace(legacy, target)

    # -- writing ------------------------------------------------------------------------------

    def put(self, name: str, model: PrivateModel) -> ModelVersion:
        """Store ``model`` as the next version of ``name`` and return that stored version.

        Importing a model identical to the latest version stores nothing and returns that
        version, so re-running an import is harmless.
        """
        check_id("model name", name)
        if not isinstance(model, PrivateModel):
            raise InvalidInputError(f"not a model: {type(model).__name__}")
        document = model.to_dict()
        # Refuse anything that would not load back; what loads is what the store hands out later.
        stored = load_model(document)
        digest = _digest(document)
        data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
        folder = self.directory / name
        private_dir(folder)
        while True:
            numbers = self._numbers(name)
            if numbers:
                latest = self._load(name, numbers[-1])
                if latest.digest == digest:
                    return latest
            version = (numbers[-1] if numbers else 0) + 1
            path = folder / f"v{version}.json"
            tmp = stage(path, data, secret=True)  # the weights: owner-only
            try:
                os.link(tmp, path)
            except FileExistsError:
                continue  # another importer took this number: try the next one
            finally:
                os.unlink(tmp)
            return self._remember(ModelVersion(name, version, stored, digest, path.stat().st_mtime))

    # -- reading ------------------------------------------------------------------------------

    def _numbers(self, name: str) -> list[int]:
        try:
            entries = os.listdir(self.directory / name)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(int(e[1:-5]) for e in entries if re.fullmatch(r"v[0-9]{1,9}\.json", e))

    def _load(self, name: str, version: int) -> ModelVersion:
        with self._lock:
            hit = self._cache.get((name, version))
        if hit is not None:
            return hit
        path = self.directory / name / f"v{version}.json"
        try:
            model = load_model_file(path)
        except FileNotFoundError:
            raise NotFoundError(f"model {name!r} has no version {version}") from None
        except ModelFormatError as exc:
            raise ModelFormatError(f"stored model {name!r} v{version} is unreadable: {exc}") from exc
        return self._remember(
            ModelVersion(name, version, model, _digest(model.to_dict()), path.stat().st_mtime)
        )

    def _remember(self, entry: ModelVersion) -> ModelVersion:
        with self._lock:
            return self._cache.setdefault((entry.name, entry.version), entry)

    def resolve(self, name: str, version: str | int | None = None) -> ModelVersion:
        """The stored version ``version`` of ``name`` (the latest when None, "" or "latest")."""
        check_id("model id", name)
        wanted = parse_version(version)
        numbers = self._numbers(name)
        if not numbers:
            known = ", ".join(self.names()) or "none"
            raise NotFoundError(f"unknown model {name!r} (installed: {known})")
        if wanted is None:
            wanted = numbers[-1]
        elif wanted not in numbers:
            raise NotFoundError(
                f"model {name!r} has no version {wanted} (versions: {', '.join(map(str, numbers))})"
            )
        return self._load(name, wanted)

    def get(self, name: str, version: str | int | None = None) -> PrivateModel:
        """The model object of :meth:`resolve`."""
        return self.resolve(name, version).model

    def names(self) -> list[str]:
        """Every model name with at least one version."""
        return sorted(p.name for p in self.directory.iterdir() if p.is_dir() and self._numbers(p.name))

    def ids(self) -> list[str]:
        return self.names()

    def versions(self, name: str) -> list[ModelVersion]:
        """Every stored version of ``name``, oldest first."""
        return [self._load(name, v) for v in self._numbers(name)]

    def version(self, name: str, version: str | int | None = None) -> str:
        """The audit label of a version: its number and content digest (SHA-256 of canonical JSON)."""
        return self.resolve(name, version).label


_HOST_PORT = re.compile(r"^(dns:///)?[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


def _bank_address(address: str) -> str:
    """A bank's address as registered: ``host:port``, ``dns:///name:port``, or a comma-separated
    list of ``host:port`` (the bank's replicas, which the bureau uses pick-first in that order)."""
    parts = [p.strip() for p in address.split(",")]
    if (
        len(address) > MAX_ADDRESS_CHARS
        or not all(_HOST_PORT.match(p) for p in parts)
        or (len(parts) > 1 and any("/" in p for p in parts))
    ):
        raise InvalidInputError(
            f"bank address {address[:80]!r} must look like host:port, or a comma-separated list of them"
        )
    return ",".join(parts)
