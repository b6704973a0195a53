"""Transport-free bank logic: the key ring, the two comparison rounds, and decrypting the band index."""

from __future__ import annotations

import logging
import os
import queue
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from blindscore._files import private_dir, read_json, write_json
from blindscore.bank_node.sessions import PackedSessions
from blindscore.bank_node.store import BandRecord, Completion, ResultStore, RunLimits
from blindscore.crypto import garble, ot
from blindscore.crypto.dgk import (
    DGK_PUBLIC_FILE,
    DGK_SECRET_FILE,
    DGKKeyPair,
    generate_dgk_keypair,
    load_dgk_keypair,
    save_dgk_keypair,
)
from blindscore.crypto.keyfile import MISSING_PASSPHRASE_HINT, Passphrase, secret_is_sealed
from blindscore.crypto.paillier import (
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
    BlindscoreError,
    CryptoError,
    InvalidInputError,
    NotFoundError,
    PreconditionError,
)
from blindscore.infra.metrics import NodeMetrics
from blindscore.protocol import comparison, limits, packing
from blindscore.protocol.application import BandDelivery

log = logging.getLogger(__name__)

MAX_BANDS = 64
#: The check that fails when a delivered band decrypts outside 0..K.
FAULT_BAND_RANGE = "band_range"
#: Round-2 faults waiting for the delivery of their application; the oldest are dropped beyond this
#: (a bureau that never delivers loses only the detection of a fault that leaked nothing).
MAX_PENDING_FAULTS = 4096
KEYS_DIR = "keys"
RING_FILE = "ring.json"
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
    """

    def __init__(self, directory: Path, *, passphrase: Passphrase | None = None) -> None:
        self.directory = Path(directory)
        self._passphrase = passphrase

    def __repr__(self) -> str:
        return f"KeyRing({str(self.directory)!r}, passphrase={'given' if self._passphrase else 'none'})"

    # reading (never changes the directory) ------------------------------------------------
    def _key_dir(self, key_id: str) -> Path:
        if not _KEY_ID.match(key_id):
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
                if _KEY_ID.match(entry.name) and (entry / PUBLIC_FILE).exists():
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
            if not isinstance(current, str) or not _KEY_ID.match(current):
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
        paillier = load_keypair(directory, passphrase=self._passphrase)
        if paillier.public_key.key_id != key_id:
            raise CryptoError(f"{directory} holds key {paillier.public_key.key_id}, not {key_id}")
        dgk = load_dgk_keypair(directory, passphrase=self._passphrase)
        return BankKey(paillier, dgk)

    def load(self, known: Mapping[str, BankKey] | None = None) -> tuple[dict[str, BankKey], str]:
        """Every key of the ring and the current key id; keys in ``known`` are reused, not re-read."""
        known = known or {}
        current = self.current_id()
        keys = {kid: known.get(kid) or self.load_key(kid) for kid in self.ids()}
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
        key_id = self._legacy_key_id()
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
        self.migrate_legacy()
        if self.ids():
            self.load()
        return self.generate(bits)

    def ensure(self, bits: int = 2048) -> bool:
        """Migrate an old layout and make the first key if there is none. Returns True if it made one."""
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
        self.migrate_legacy()
        converted: list[Path] = []
        for kid in self.ids():
            directory = self.directory / kid
            # Sealed files are opened too: one sealed with another passphrase fails here.
            sealed = secret_is_sealed(directory / SECRET_FILE)
            paillier = load_keypair(directory, passphrase=self._passphrase if sealed else None)
            if paillier.public_key.key_id != kid:
                raise CryptoError(f"{directory} holds key {paillier.public_key.key_id}, not {kid}")
            if not sealed:
                save_keypair(directory, paillier, passphrase=self._passphrase)
                converted.append(directory / SECRET_FILE)
            sealed = secret_is_sealed(directory / DGK_SECRET_FILE)
            dgk = load_dgk_keypair(directory, passphrase=self._passphrase if sealed else None)
            if not sealed:
                save_dgk_keypair(directory, dgk, passphrase=self._passphrase)
                converted.append(directory / DGK_SECRET_FILE)
        return converted


class BankNode:
    """The bank: its key ring, stateless comparison answers, and the result store."""

    def __init__(
        self,
        bank_id: str,
        keypair: KeyPair,
        dgk: DGKKeyPair,
        store: ResultStore,
        *,
        ring: KeyRing | None = None,
        limits: RunLimits | None = None,
        on_fault: Callable[[str, str, str], None] | None = None,
    ) -> None:
        """``keypair`` and ``dgk`` form the current key; with ``ring`` the node also answers every key
        of the ring and picks up keys added or retired there (:meth:`refresh_keys`). ``limits``
        bound the runs per application and the faults per bureau; ``on_fault(bureau_id,
        application_id, check)`` is told of every protocol fault (metrics)."""
        if not bank_id:
            raise InvalidInputError("bank id must not be empty")
        self.bank_id = bank_id
        self.store = store
        key = BankKey(keypair, dgk)
        # One tuple, replaced whole, so a reader never sees the key set and the current id disagree.
        self._view: tuple[dict[str, BankKey], str] = ({key.key_id: key}, key.key_id)
        self._ring = ring
        self._ring_state: RingState | None = None
        self._reload_lock = threading.Lock()
        self.packed = PackedSessions()
        self.limits = limits or RunLimits()
        self._on_fault = on_fault
        # Round-2 faults by (bureau, application), recorded with the delivery of the band.
        self._pending_faults: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._faults_lock = threading.Lock()
        self._fault_reports: queue.SimpleQueue[tuple[str, list[str], str]] = queue.SimpleQueue()
        self._fault_reporter: threading.Thread | None = None

    def __repr__(self) -> str:
        keys, current = self._view
        return f"BankNode(bank_id={self.bank_id!r}, current={current}, keys={sorted(keys)})"

    @classmethod
    def open(
        cls,
        bank_id: str,
        data_dir: Path,
        *,
        key_bits: int = 2048,
        passphrase: Passphrase | None = None,
        database: str | None = None,
        limits: RunLimits | None = None,
    ) -> BankNode:
        """Load (or create on first start) the key ring under ``data_dir`` and open the result store:
        ``database`` (a ``postgresql://`` or ``sqlite:///`` URL) or ``data_dir/results.sqlite3``."""
        ring = KeyRing(data_dir / KEYS_DIR, passphrase=passphrase)
        ring.ensure(key_bits)
        state = ring.state()
        keys, current = ring.load()
        key = keys[current]
        store = ResultStore.open(database or data_dir / "results.sqlite3")
        node = cls(bank_id, key.paillier, key.dgk, store, ring=ring, limits=limits)
        node._view, node._ring_state = (keys, current), state
        if key.paillier.public_key.bits != key_bits:
            log.warning(
                "current key %s has %d bits; --key-bits %d applies to new keys only",
                current,
                key.paillier.public_key.bits,
                key_bits,
            )
        return node

    @property
    def key_id(self) -> str:
        """The current key id: the one new applications should name."""
        return self._view[1]

    @property
    def current(self) -> BankKey:
        keys, current = self._view
        return keys[current]

    @property
    def keypair(self) -> KeyPair:
        """The current Paillier key pair."""
        return self.current.paillier

    @property
    def dgk(self) -> DGKKeyPair:
        """The DGK key pair used with the current key."""
        return self.current.dgk

    def all_keys(self) -> list[BankKey]:
        """Every key the node answers, sorted by key id."""
        keys = self._view[0]
        return [keys[kid] for kid in sorted(keys)]

    def refresh_keys(self) -> list[BankKey]:
        """Reread the key ring if its directory changed; returns the keys that were not there before."""
        if self._ring is None:
            return []
        with self._reload_lock:
            state = self._ring.state()
            if state == self._ring_state:
                return []
            old = self._view[0]
            try:
                keys, current = self._ring.load(known=old)
            except BlindscoreError:
                # Reported once per change of the ring, not at every poll; the keys in use stay.
                self._ring_state = state
                raise
            self._view, self._ring_state = (keys, current), state
        added = [keys[kid] for kid in sorted(keys) if kid not in old]
        retired = sorted(set(old) - set(keys))
        if added or retired:
            log.info(
                "key ring reloaded: current %s, added %s, retired %s",
                current,
                [k.key_id for k in added] or "none",
                retired or "none",
            )
        return added

    def key(self, key_id: str) -> BankKey:
        """The key named ``key_id``; an unknown id first rereads the ring (a rotation just now)."""
        found = self._view[0].get(key_id)
        if found is None and self._ring is not None:
            try:
                self.refresh_keys()
            except BlindscoreError as exc:
                log.error("could not reload the key ring: %s", exc)
            found = self._view[0].get(key_id)
        if found is None:
            raise NotFoundError(f"bank {self.bank_id!r} has no key {key_id!r}")
        return found

    def check_key(self, key_id: str) -> BankKey:
        return self.key(key_id)

    # ------------------------------------------------------------------ the band protocol
    #
    # Nothing a bureau can observe depends on a value decrypted under the bank's key: range and
    # shape checks on decrypted values never refuse, they mark the run faulted (stored, logged at
    # ERROR with ids only, counted) and the answer keeps its normal form. Refusals depend on ids
    # and counts only: a bureau suspended after ``limits.max_faults`` faults, an application
    # past ``limits.max_runs`` runs.

    def _fault(self, bureau_id: str, application_ids: Sequence[str], check: str) -> None:
        # The fault is already in the store (same statements either way); the log line and the
        # metric are handed to a thread so the answer's timing does not carry them either.
        self._fault_reports.put((bureau_id, list(application_ids), check))
        with self._faults_lock:
            if self._fault_reporter is None:
                self._fault_reporter = threading.Thread(
                    target=self._report_faults, name="bank-fault-reports", daemon=True
                )
                self._fault_reporter.start()

    def watch_faults(self, metrics: NodeMetrics) -> None:
        """Count every protocol fault in ``metrics`` and keep its suspended-bureau gauge current."""
        gauge = metrics.suspended_peers.labels(node=metrics.node)
        gauge.set(sum(1 for b in self.store.standing() if b.suspended))

        def observe(bureau_id: str, application_id: str, check: str) -> None:
            metrics.observe_fault(check)
            gauge.set(sum(1 for b in self.store.standing() if b.suspended))

        self._on_fault = observe

    def _report_faults(self) -> None:
        while True:
            bureau_id, application_ids, check = self._fault_reports.get()
            log.error(
                "protocol fault (%s) by bureau %r on %d application(s): %s",
                check, bureau_id[:64], len(application_ids), [a[:64] for a in application_ids[:8]],
            )  # fmt: skip
            if self._on_fault is not None:
                for app_id in application_ids:
                    try:
                        self._on_fault(bureau_id, app_id, check)
                    except Exception:
                        log.exception("fault hook failed")

    def compare_masked(
        self,
        key_id: str,
        request: comparison.MaskedRequest,
        *,
        application_id: str,
        bureau_id: str = "",
        platform_id: str = "",
    ) -> comparison.BitsResponse:
        """Round 1: counts a run of ``platform_id``'s ``application_id`` for ``bureau_id`` and answers
        the masked value."""
        _check_application_id(application_id)
        limits.check_id("platform_id", platform_id, optional=True)
        key = self.key(key_id)
        faults: list[str] = []
        response = comparison.answer_masked(key.paillier, key.dgk.public_key, request, on_fault=faults.append)
        fault = faults[0] if faults else ""
        self.store.begin_runs(bureau_id, [application_id], [fault], self.limits, platform_id=platform_id)
        if fault:
            self._fault(bureau_id, [application_id], fault)
        return response

    def compare_blinded(
        self,
        key_id: str,
        request: comparison.BlindedRequest,
        *,
        application_id: str,
        bureau_id: str = "",
        platform_id: str = "",
    ) -> comparison.FinalResponse:
        """Round 2: the fresh [delta_k]; a fault is kept for the application's delivery."""
        _check_application_id(application_id)
        key = self.key(key_id)
        faults: list[str] = []
        response = comparison.answer_blinded(
            key.paillier.public_key, key.dgk.secret_key, request, on_fault=faults.append
        )
        with self._faults_lock:
            if faults:
                self._pending_faults[(bureau_id, platform_id, application_id)] = faults[0]
                while len(self._pending_faults) > MAX_PENDING_FAULTS:
                    self._pending_faults.popitem(last=False)
        return response

    def deliver_band(self, delivery: BandDelivery, *, bureau_id: str = "") -> BandRecord | None:
        """Decrypt the band index and store it (the only plaintext the bank learns), or record the
        application as faulted. Returns the band the bank holds for the application afterwards
        (the first one delivered is kept), None when it holds none. The bureau is answered the
        same either way."""
        key = self.key(delivery.key_id)
        _check_application_id(delivery.application_id)
        labels = delivery.band_labels
        if not 2 <= len(labels) <= MAX_BANDS or len(set(labels)) != len(labels):
            raise InvalidInputError(f"band labels must be 2 to {MAX_BANDS} distinct names")
        pk = key.paillier.public_key
        # The full decryption: a band is decrypted and range-checked like any other value.
        band = key.paillier.secret_key.decrypt(pk.validate(delivery.band_ciphertext))
        in_range = 0 <= band < len(labels)
        with self._faults_lock:
            fault = self._pending_faults.pop((bureau_id, delivery.platform_id, delivery.application_id), "")
        fault = fault or ("" if in_range else FAULT_BAND_RANGE)
        index = band if in_range else 0
        record = BandRecord(
            application_id=delivery.application_id,
            model_id=delivery.model_id,
            key_id=delivery.key_id,
            band=index,
            band_label=labels[index],
            received_at=time.time(),
            platform_id=delivery.platform_id,
            bureau_id=bureau_id,
        )
        _, kept = self.store.complete(bureau_id, [Completion(record, fault)], self.limits)
        if fault:
            self._fault(bureau_id, [delivery.application_id], fault)
        if kept:
            log.warning(
                "kept the earlier band of application %r delivered again", delivery.application_id[:64]
            )
        return self.store.get(delivery.application_id, delivery.platform_id, bureau_id)

    # ------------------------------------------------------------------ packed batches
    def packed_start(
        self,
        key_id: str,
        session_id: bytes,
        request: packing.PackedMasked,
        application_ids: Sequence[str],
        *,
        bureau_id: str = "",
        platform_id: str = "",
    ) -> tuple[bytes, ot.ExtensionRequest]:
        """Round 1 of a packed batch: decrypt its masked scores (one decryption), count a run for
        every member, answer with the OT request for the comparison bits and a ticket only this
        bank can open."""
        key = self.key(key_id)
        ids = _check_batch_ids(application_ids, request.count)
        limits.check_id("platform_id", platform_id, optional=True)
        self.packed.require_session(session_id)
        opened = packing.open_packed(key.paillier, request)
        faults = [packing.FAULT_SLOT_GUARD if bad else "" for bad in opened.faulted]
        self.store.begin_runs(bureau_id, ids, faults, self.limits, platform_id=platform_id)
        if any(faults):
            self._fault(
                bureau_id, [a for a, f in zip(ids, faults, strict=True) if f], packing.FAULT_SLOT_GUARD
            )
        result = self.packed.start(key_id, session_id, request, opened, ids, bureau_id, platform_id)
        return result.ticket, result.request

    def packed_finish(
        self,
        key_id: str,
        ticket: bytes,
        reply: ot.ExtensionReply,
        circuit: garble.GarbledComparisons,
        model_id: str,
        labels: tuple[str, ...],
        application_ids: tuple[str, ...],
        *,
        bureau_id: str = "",
        platform_id: str = "",
    ) -> int:
        """Round 2: evaluate the garbled comparisons and store every band of the batch in one
        transaction (a faulted slot is recorded as faulted); returns how many members were
        completed for the first time, which depends on ids alone."""
        self.key(key_id)
        if not 2 <= len(labels) <= MAX_BANDS:
            raise InvalidInputError(f"band labels must be 2 to {MAX_BANDS} distinct names")
        completions = self.packed.finish(
            key_id, ticket, reply, circuit, model_id, labels, application_ids, bureau_id, platform_id
        )
        new, kept = self.store.complete(bureau_id, completions, self.limits)
        faulted = [c.record.application_id for c in completions if c.fault]
        if faulted:
            self._fault(bureau_id, faulted, packing.FAULT_GARBLED_OUTPUT)
        if kept:
            log.warning("kept the earlier band of %d application(s) delivered again: %s", len(kept), kept[:5])
        return new


def _check_application_id(application_id: object) -> str:
    return limits.check_id("application_id", application_id)


def _check_batch_ids(application_ids: Sequence[str], count: int) -> list[str]:
    ids = [_check_application_id(a) for a in application_ids]
    if len(ids) != count or len(set(ids)) != count:
        raise InvalidInputError(f"a batch of {count} needs {count} distinct, non-empty application ids")
    return ids
