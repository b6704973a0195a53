"""The bank's key ring on disk: one Paillier + DGK key pair per key id, and which one is current."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blindscore._files import private_dir, read_json, write_json
from blindscore.crypto.dgk import (
    DGK_KEY_FILES,
    DGK_PUBLIC_FILE,
    DGK_SECRET_FILE,
    DGKKeyPair,
    generate_dgk_keypair,
    load_dgk_keypair,
    save_dgk_keypair,
)
from blindscore.crypto.keyfile import MISSING_PASSPHRASE_HINT, KeyPairFiles, Passphrase, secret_is_sealed
from blindscore.crypto.paillier import (
    KEY_FILES,
    PUBLIC_FILE,
    SECRET_FILE,
    KeyPair,
    PublicKey,
    check_key_bits,
    generate_keypair,
    load_keypair,
    save_keypair,
)
from blindscore.errors import (
    AlreadyExistsError,
    CryptoError,
    InvalidInputError,
    NotFoundError,
    PreconditionError,
)

log = logging.getLogger(__name__)

KEYS_DIR = "keys"
RING_FILE = "ring.json"
#: Taken (flock, exclusive) by whoever changes the ring: bank replicas sharing the directory, and
#: the key commands run beside them, change it one at a time. Readers take no lock: every change
#: appears with one rename.
LOCK_FILE = ".lock"
RING_FORMAT = 1
DGK_KEY_BITS = 2048
_KEY_ID = re.compile(r"^pk-[0-9a-f]{32}$")
# The single-key layout of earlier versions, in the order migration moves it: the Paillier public
# file last, so an interrupted migration still finds the key id it was moving.
_LEGACY_FILES = (DGK_SECRET_FILE, DGK_PUBLIC_FILE, SECRET_FILE, PUBLIC_FILE)


@dataclass(frozen=True, repr=False)
class BankKey:
    """One key of the ring: a Paillier key pair (its id names the key) and the DGK pair used with it."""

    paillier: KeyPair
    dgk: DGKKeyPair

    @property
    def key_id(self) -> str:
        return self.paillier.public_key.key_id

    def __repr__(self) -> str:
        return f"BankKey(key_id={self.key_id}, dgk_key_id={self.dgk.public_key.key_id})"


RingState = tuple[tuple[str, ...], tuple[int, int, int] | None]


class KeyRing:
    """The bank's keys on disk: ``keys/<key id>/`` per key pair, ``keys/ring.json`` names the current one.

    New applications use the current key; older keys stay until retired, so applications made
    under them still finish. With a passphrase, secret files are sealed (see blindscore.crypto.keyfile).

    Several processes may use one ring (bank replicas on one host, ``bank rotate-key`` beside
    them): changes hold ``keys/.lock`` and appear with one rename each, so a reader sees a key
    whole or not at all, and two replicas starting on an empty ring make one key, not two.
    """

    def __init__(self, directory: Path, *, passphrase: Passphrase | None = None) -> None:
        self.directory = Path(directory)
        self._passphrase = passphrase
        self._mutex = threading.RLock()
        self._held = 0

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Hold the ring's change lock (reentrant within this object); blocks while another
        process changes the ring (a key being generated takes seconds)."""
        with self._mutex:
            fd = -1
            if not self._held:
                private_dir(self.directory)
                fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
            self._held += 1
            try:
                yield
            finally:
                self._held -= 1
                if fd >= 0:
                    os.close(fd)  # drops the flock

    def __repr__(self) -> str:
        return f"KeyRing({str(self.directory)!r}, passphrase={'given' if self._passphrase else 'none'})"

    # reading (never changes the directory) ------------------------------------------------
    def _key_dir(self, key_id: str) -> Path:
        if not _KEY_ID.fullmatch(key_id):
            raise InvalidInputError(f"{key_id!r} is not a bank key id (pk- and 32 hex digits)")
        return self.directory / key_id

    def _legacy_key_id(self) -> str | None:
        path = self.directory / PUBLIC_FILE
        if not path.exists():
            return None
        return PublicKey.from_dict(read_json(path)).key_id

    def ids(self) -> list[str]:
        """Key ids in the ring, sorted (a not yet migrated single-key layout counts as one)."""
        found: set[str] = set()
        if self.directory.is_dir():
            for entry in self.directory.iterdir():
                if _KEY_ID.fullmatch(entry.name) and (entry / PUBLIC_FILE).exists():
                    found.add(entry.name)
        legacy = self._legacy_key_id()
        if legacy:
            found.add(legacy)
        return sorted(found)

    def current_id(self) -> str | None:
        """The key new applications should use, or None when the ring is empty."""
        path = self.directory / RING_FILE
        if path.exists():
            d = read_json(path)
            current = d.get("current") if isinstance(d, dict) and d.get("format") == RING_FORMAT else None
            if not isinstance(current, str) or not _KEY_ID.fullmatch(current):
                raise InvalidInputError(f"{path}: not a blindscore key ring file (format {RING_FORMAT})")
            return current
        legacy = self._legacy_key_id()
        if legacy:
            return legacy
        ids = self.ids()
        if len(ids) > 1:
            raise PreconditionError(f"{path} is missing: cannot tell which of {len(ids)} keys is current")
        return ids[0] if ids else None

    def public_key(self, key_id: str) -> PublicKey:
        path = self._key_dir(key_id) / PUBLIC_FILE
        if not path.exists() and key_id == self._legacy_key_id():
            path = self.directory / PUBLIC_FILE
        if not path.exists():
            raise NotFoundError(f"no key {key_id} in {self.directory}")
        return PublicKey.from_dict(read_json(path))

    def state(self) -> RingState:
        """A cheap fingerprint of the ring's directory: it changes when a key is added or retired."""
        try:
            names = tuple(sorted(n for n in os.listdir(self.directory) if not n.startswith(".")))
        except FileNotFoundError:
            return ((), None)
        try:
            st = (self.directory / RING_FILE).stat()
            ring = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            ring = None
        return (names, ring)

    def load_key(self, key_id: str) -> BankKey:
        """Load (and decrypt) one key pair; its files must hold the key its directory names."""
        directory = self._key_dir(key_id)
        if not (directory / PUBLIC_FILE).exists():
            raise NotFoundError(f"no key {key_id} in {self.directory}")
        paillier = _holding(key_id, directory, load_keypair(directory, passphrase=self._passphrase))
        dgk = load_dgk_keypair(directory, passphrase=self._passphrase)
        return BankKey(paillier, dgk)

    def load(self, known: Mapping[str, BankKey] | None = None) -> tuple[dict[str, BankKey], str]:
        """Every key of the ring and the current key id; keys in ``known`` are reused, not re-read."""
        known = known or {}
        current = self.current_id()
        keys: dict[str, BankKey] = {}
        for kid in self.ids():
            try:
                keys[kid] = known.get(kid) or self.load_key(kid)
            except NotFoundError:
                if kid == current:
                    raise
                # Retired by another process between the listing and the read: not in the ring.
        if current is None or current not in keys:
            raise PreconditionError(
                f"{self.directory}: the current key {current} is not in the ring; "
                "run 'blindscore bank rotate-key' to make a new one"
            )
        return keys, current

    # changing the ring ----------------------------------------------------------------------
    def migrate_legacy(self) -> str | None:
        """Move a single-key layout (keys/paillier_*.json, keys/dgk_*.json) into keys/<key id>/.

        Each file moves with one rename and the key id comes from the Paillier public file, which
        moves last: an interrupted migration resumes on the next start.
        """
        if self._legacy_key_id() is None:
            return None
        with self._changing():
            return self._migrate_legacy()

    def _migrate_legacy(self) -> str | None:
        key_id = self._legacy_key_id()  # again under the lock: another process may have moved it
        if key_id is None:
            return None
        target = self.directory / key_id
        target.mkdir(mode=0o700, exist_ok=True)
        if not (self.directory / RING_FILE).exists():
            self._set_current(key_id)
        for name in _LEGACY_FILES:
            if (self.directory / name).exists():
                os.replace(self.directory / name, target / name)
        log.info("moved the single-key layout in %s to %s", self.directory, target)
        return key_id

    def _set_current(self, key_id: str) -> None:
        write_json(self.directory / RING_FILE, {"format": RING_FORMAT, "current": key_id})

    def _sealed_files(self) -> list[bool]:
        flags = []
        for kid in self.ids():
            for name in (SECRET_FILE, DGK_SECRET_FILE):
                path = self.directory / kid / name
                if path.exists():
                    flags.append(secret_is_sealed(path))
        return flags

    def add(self, key: BankKey, *, make_current: bool = True) -> None:
        """Write a key pair into the ring (all files appear at once), optionally as the current key."""
        with self._changing():
            self._add(key, make_current=make_current)

    def _add(self, key: BankKey, *, make_current: bool) -> None:
        self.migrate_legacy()
        sealed = self._sealed_files()
        if any(sealed) and self._passphrase is None:
            raise PreconditionError(
                f"the keys in {self.directory} are encrypted and so must the new one be; "
                f"{MISSING_PASSPHRASE_HINT}"
            )
        target = self.directory / key.key_id
        if target.exists():
            raise AlreadyExistsError(f"key {key.key_id} is already in {self.directory}")
        private_dir(self.directory)
        staging = Path(tempfile.mkdtemp(prefix=".new-", dir=self.directory))
        try:
            save_keypair(staging, key.paillier, passphrase=self._passphrase)
            save_dgk_keypair(staging, key.dgk, passphrase=self._passphrase)
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if make_current:
            self._set_current(key.key_id)

    def generate(self, bits: int = 2048, *, make_current: bool = True) -> BankKey:
        """Make a new Paillier + DGK key pair and add it to the ring."""
        key = BankKey(generate_keypair(bits), generate_dgk_keypair(DGK_KEY_BITS))
        self.add(key, make_current=make_current)
        log.info("generated a %d-bit Paillier key %s", bits, key.key_id)
        return key

    def rotate(self, bits: int = 2048) -> BankKey:
        """A new current key; the old ones stay for applications still running under them.

        The existing keys are loaded first, so a wrong or missing passphrase fails here rather than
        leaving a ring that no single passphrase opens.
        """
        check_key_bits(bits)
        with self._changing():
            self.migrate_legacy()
            if self.ids():
                self.load()
            return self.generate(bits)

    def ensure(self, bits: int = 2048) -> bool:
        """Migrate an old layout and make the first key if there is none. Returns True if it made one.

        Under the ring's lock: of two replicas starting on an empty ring, one makes the key and
        the other finds it."""
        with self._changing():
            return self._ensure(bits)

    def _ensure(self, bits: int) -> bool:
        self.migrate_legacy()
        if not self.ids():
            self.generate(bits)
            return True
        for kid in self.ids():
            # Earlier versions made the DGK key after the Paillier one: a crash in between left none.
            if not (self.directory / kid / DGK_SECRET_FILE).exists():
                save_dgk_keypair(
                    self.directory / kid, generate_dgk_keypair(DGK_KEY_BITS), passphrase=self._passphrase
                )
                log.warning("key %s had no DGK key pair; generated one", kid)
        return False

    def retire(self, key_id: str) -> None:
        """Delete a key that is no longer current: applications still under it will be refused."""
        with self._changing():
            self._retire(key_id)

    def _retire(self, key_id: str) -> None:
        self.migrate_legacy()
        directory = self._key_dir(key_id)
        if not directory.is_dir():
            raise NotFoundError(f"no key {key_id} in {self.directory}")
        if key_id == self.current_id():
            raise PreconditionError(
                f"key {key_id} is the current key; rotate to a new key before retiring it"
            )
        # Out of the ring with one rename, then deleted.
        doomed = self.directory / f".retired-{key_id}-{secrets.token_hex(4)}"
        os.rename(directory, doomed)
        shutil.rmtree(doomed)

    def encrypt_all(self) -> list[Path]:
        """Seal every plaintext secret file with the passphrase, each replaced atomically.

        Files already sealed must open with the same passphrase. Returns the files converted.
        """
        if self._passphrase is None:
            raise PreconditionError(f"encrypting the keys needs a passphrase; {MISSING_PASSPHRASE_HINT}")
        with self._changing():
            self.migrate_legacy()
            converted: list[Path] = []
            for kid in self.ids():
                directory = self.directory / kid
                converted += self._seal(directory, KEY_FILES, key_id=kid)
                converted += self._seal(directory, DGK_KEY_FILES)
            return converted

    def _seal(
        self, directory: Path, files: KeyPairFiles[Any, Any], *, key_id: str | None = None
    ) -> list[Path]:
        """Seal one secret file of ``directory`` if it is plaintext; returns it if it was converted.
        Sealed files are opened too: one sealed with another passphrase fails here. ``key_id``: the
        key the files must hold."""
        path = directory / files.secret_file
        sealed = secret_is_sealed(path)
        keypair = files.load(directory, passphrase=self._passphrase if sealed else None)
        if key_id is not None:
            _holding(key_id, directory, keypair)
        if sealed:
            return []
        files.save(directory, keypair, passphrase=self._passphrase)
        return [path]


def _holding(key_id: str, directory: Path, keypair: KeyPair) -> KeyPair:
    """``keypair``, read from ``directory``, if it is the key the directory names."""
    if keypair.public_key.key_id != key_id:
        raise CryptoError(f"{directory} holds key {keypair.public_key.key_id}, not {key_id}")
    return keypair
