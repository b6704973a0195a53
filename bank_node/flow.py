"""Transport-free bank flows: the two comparison rounds, packed batches, and decrypting the band index."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

from blindscore.bank_node.calls import (
    BatchFinish,
    BatchStart,
    CircuitFinish,
    CircuitReveal,
    CircuitStart,
    Run,
)
from blindscore.bank_node.keyring import KEYS_DIR, BankKey, KeyRing, RingState
from blindscore.bank_node.sessions import PackedSessions, StartResult
from blindscore.bank_node.store import BandRecord, Completed, Completion, PendingRound, ResultStore, RunLimits
from blindscore.crypto.dgk import DGKKeyPair
from blindscore.crypto.keyfile import Passphrase
from blindscore.crypto.paillier import KeyPair
from blindscore.errors import BlindscoreError, CryptoError, InvalidInputError, NotFoundError
from blindscore.infra.metrics import NodeMetrics
from blindscore.models import families
from blindscore.protocol import circuit_band, comparison, limits, packing
from blindscore.protocol.application import BandDelivery

log = logging.getLogger(__name__)

MAX_BANDS = 64
#: The check that fails when a delivered band decrypts outside 0..K.
FAULT_BAND_RANGE = "band_range"
#: Round-2 faults waiting for the delivery of their application; the oldest are dropped beyond this
#: (a bureau that never delivers loses only the detection of a fault that leaked nothing).
MAX_PENDING_FAULTS = 4096
#: Told of each protocol fault: (bureau_id, application_id, check).
FaultHook = Callable[[str, str, str], None]
#: A fault report: bureau, applications, check, and the hook set when the fault was found.
_Report = tuple[str, list[str], str, FaultHook | None]


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
        on_fault: FaultHook | None = None,
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
        # Each report carries the hook set when the fault happened (watch_faults counts from then on).
        self._fault_reports: queue.SimpleQueue[_Report] = queue.SimpleQueue()
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
        self._fault_reports.put((bureau_id, list(application_ids), check, self._on_fault))
        with self._faults_lock:
            if self._fault_reporter is None:
                self._fault_reporter = threading.Thread(
                    target=self._report_faults, name="bank-fault-reports", daemon=True
                )
                self._fault_reporter.start()

    def watch_faults(self, metrics: NodeMetrics) -> None:
        """Count every protocol fault from now on in ``metrics`` (a fault found earlier is not
        counted, however late its report runs) and keep its suspended-bureau gauge current."""
        gauge = metrics.suspended_peers.labels(node=metrics.node)
        gauge.set(sum(1 for b in self.store.standing() if b.suspended))

        def observe(bureau_id: str, application_id: str, check: str) -> None:
            metrics.observe_fault(check)
            gauge.set(sum(1 for b in self.store.standing() if b.suspended))

        self._on_fault = observe

    def _report_faults(self) -> None:
        while True:
            bureau_id, application_ids, check, hook = self._fault_reports.get()
            log.error(
                "protocol fault (%s) by bureau %r on %d application(s): %s",
                check, bureau_id[:64], len(application_ids), [a[:64] for a in application_ids[:8]],
            )  # fmt: skip
            if hook is not None:
                for app_id in application_ids:
                    try:
                        hook(bureau_id, app_id, check)
                    except Exception:
                        log.exception("fault hook failed")

    def compare_masked(self, run: Run, request: comparison.MaskedRequest) -> comparison.BitsResponse:
        """Round 1: counts a run of the application for its bureau and answers the masked value."""
        _check_application_id(run.application_id)
        limits.check_id("platform_id", run.platform_id, optional=True)
        key = self.key(run.key_id)
        faults: list[str] = []
        response = comparison.answer_masked(key.paillier, key.dgk.public_key, request, on_fault=faults.append)
        fault = faults[0] if faults else ""
        self._begin_runs(run.bureau_id, run.platform_id, [run.application_id], [fault])
        return response

    def compare_blinded(self, run: Run, request: comparison.BlindedRequest) -> comparison.FinalResponse:
        """Round 2: the fresh [delta_k]; a fault is kept for the application's delivery."""
        _check_application_id(run.application_id)
        key = self.key(run.key_id)
        faults: list[str] = []
        response = comparison.answer_blinded(
            key.paillier.public_key, key.dgk.secret_key, request, on_fault=faults.append
        )
        with self._faults_lock:
            if faults:
                self._pending_faults[run.key] = faults[0]
                while len(self._pending_faults) > MAX_PENDING_FAULTS:
                    self._pending_faults.popitem(last=False)
        return response

    def deliver_band(self, delivery: BandDelivery, *, bureau_id: str = "") -> BandRecord | None:
        """Decrypt the band index and store it (the only plaintext the bank learns), or record the
        application as faulted. Returns the band the bank holds for the application afterwards
        (the first one delivered is kept), None when it holds none. The bureau is answered the
        same either way."""
        key = self.key(delivery.key_id)
        run = Run(
            delivery.key_id, _check_application_id(delivery.application_id), bureau_id, delivery.platform_id
        )
        labels = _check_labels(delivery.band_labels, distinct=True)
        pk = key.paillier.public_key
        # The full decryption: a band is decrypted and range-checked like any other value.
        band = key.paillier.secret_key.decrypt(pk.validate(delivery.band_ciphertext))
        in_range = 0 <= band < len(labels)
        with self._faults_lock:
            fault = self._pending_faults.pop(run.key, "")
        fault = fault or ("" if in_range else FAULT_BAND_RANGE)
        index = band if in_range else 0
        record = BandRecord(
            application_id=run.application_id,
            model_id=delivery.model_id,
            key_id=run.key_id,
            band=index,
            band_label=labels[index],
            received_at=time.time(),
            platform_id=run.platform_id,
            bureau_id=bureau_id,
        )
        return self._complete(bureau_id, [Completion(record, fault)]).held[0]

    # ------------------------------------------------------------------ packed batches
    def packed_start(self, start: BatchStart) -> StartResult:
        """Round 1 of a packed batch: decrypt its masked scores (one decryption), count a run for
        every member, answer with the OT request for the comparison bits and a ticket only this
        bank can open."""
        batch, masked = start.batch, start.masked
        key = self.key(batch.key_id)
        ids = [_check_application_id(a) for a in batch.application_ids]
        batch.check_count(masked.count)
        limits.check_id("platform_id", batch.platform_id, optional=True)
        self.packed.require_session(start.session_id)
        opened = packing.open_packed(key.paillier, masked)
        faults = [packing.FAULT_SLOT_GUARD if bad else "" for bad in opened.faulted]
        self._begin_runs(batch.bureau_id, batch.platform_id, ids, faults)
        return self.packed.start(start, opened)

    def packed_finish(self, finish: BatchFinish) -> int:
        """Round 2: evaluate the garbled comparisons and store every band of the batch in one
        transaction (a faulted slot is recorded as faulted); returns how many members were
        completed for the first time, which depends on ids alone."""
        self.key(finish.batch.key_id)
        _check_labels(finish.labels)
        completions = self.packed.finish(finish)
        return self._complete(finish.batch.bureau_id, completions).new

    # ------------------------------------------------------------------ garbled-circuit bands
    def circuit_start(self, start: CircuitStart) -> StartResult:
        """Round 1 of an application's circuit band: decrypt the masked linear stage (one
        decryption per packed ciphertext), count a run, answer with the OT request for the bank's
        input bits and a ticket only this bank can open. A slot whose guard bit is set is recorded
        as a fault, never refused: the bank's inputs for it are random."""
        batch = start.batch
        key = self.key(batch.key_id)
        ids = [_check_application_id(a) for a in batch.application_ids]
        batch.check_count(1)
        limits.check_id("platform_id", batch.platform_id, optional=True)
        self.packed.require_session(start.session_id)
        opened = circuit_band.open_request(key.paillier, start.request)
        self._begin_runs(
            batch.bureau_id, batch.platform_id, ids, [packing.FAULT_SLOT_GUARD if opened.faulted else ""]
        )
        return self.packed.circuit_start(start, opened.choices)

    def circuit_finish(self, finish: CircuitFinish) -> int:
        """Round 2: evaluate the circuit the bank rebuilds from the public shape and keep the
        round's padded outcome (uniform bits until the bureau reveals this round's pad) under its
        garbling id. A garbled circuit that does not fit the bank's circuit is kept as an outcome
        that no pad turns into a band: the fault is recorded at the reveal, never refused. Returns
        1 when the round is new (ids alone decide)."""
        self.key(finish.batch.key_id)
        labels = _check_labels(finish.labels, distinct=True)
        shape, own_labels = self.packed.circuit_finish(finish)
        if len(labels) != shape.cutoffs + 1:
            raise InvalidInputError(f"{shape.cutoffs} cutoffs need {shape.cutoffs + 1} band labels")
        family = families.family(shape.family)
        try:
            outputs = "".join(
                map(str, circuit_band.evaluate_outputs(shape, family, finish.garbled, own_labels))
            )
        except (CryptoError, InvalidInputError):
            outputs = ""  # fits no pad: a fault at the reveal
        batch = finish.batch
        pending = PendingRound(
            batch.application_ids[0],
            batch.platform_id,
            finish.garbled.garbling_id.hex(),
            outputs or "x" * shape.cutoffs,
            finish.model_id,
            batch.key_id,
            tuple(labels),
        )
        return int(self.store.put_round(batch.bureau_id, pending))

    def circuit_reveal(self, reveal: CircuitReveal) -> int:
        """Round 3: the pad of one kept round; the band is its outcome XOR the pad, stored like any
        band (a repeat keeps the first). Outputs that are no thermometer code under the pad, or a
        round whose circuit did not fit, are recorded as a fault, never refused. An unknown round is
        NOT_FOUND (ids alone decide). Returns 1 when the band is new."""
        batch = reveal.batch
        self.key(batch.key_id)
        batch.check_count(1)
        app_id = _check_application_id(batch.application_ids[0])
        pending = self.store.round(batch.bureau_id, batch.platform_id, app_id, reveal.garbling_id.hex())
        if pending is None or pending.key_id != batch.key_id:
            raise NotFoundError(
                f"no evaluated circuit round {reveal.garbling_id.hex()[:32]} of this application"
            )
        # The pad's size is checked against the public number of cutoffs before anything else, so
        # a refusal never depends on whether the round's evaluation worked.
        cutoffs = len(pending.padded)
        if len(reveal.pad) != (cutoffs + 7) // 8:
            raise InvalidInputError(
                f"the pad of a round with {cutoffs} cutoffs is {(cutoffs + 7) // 8} bytes"
            )
        bits = [int(c) for c in pending.padded] if set(pending.padded) <= {"0", "1"} else None
        band = None if bits is None else circuit_band.unpad(bits, reveal.pad)
        index = 0 if band is None else band
        record = BandRecord(
            app_id,
            pending.model_id,
            batch.key_id,
            index,
            pending.labels[index],
            time.time(),
            batch.platform_id,
            batch.bureau_id,
        )
        fault = circuit_band.FAULT_CIRCUIT_OUTPUT if band is None else ""
        return self._complete(batch.bureau_id, [Completion(record, fault)]).new

    def _begin_runs(
        self, bureau_id: str, platform_id: str, application_ids: Sequence[str], faults: Sequence[str]
    ) -> None:
        """Count a run for each application (refusals depend on ids and counts only), then report
        the faults found in this round."""
        self.store.begin_runs(bureau_id, application_ids, faults, self.limits, platform_id=platform_id)
        for fault in sorted(set(faults) - {""}):
            self._fault(
                bureau_id, [a for a, f in zip(application_ids, faults, strict=True) if f == fault], fault
            )

    def _complete(self, bureau_id: str, completions: Sequence[Completion]) -> Completed:
        """End the runs in one transaction, then report the faulted ones and the bands kept from before."""
        done = self.store.complete(bureau_id, completions, self.limits)
        for fault in sorted({c.fault for c in completions} - {""}):
            self._fault(bureau_id, [c.record.application_id for c in completions if c.fault == fault], fault)
        if done.kept:
            log.warning(
                "kept the earlier band of %d application(s) delivered again: %s",
                len(done.kept),
                done.kept[:5],
            )
        return done


def _check_application_id(application_id: object) -> str:
    return limits.check_id("application_id", application_id)


def _check_labels(labels: Sequence[str], *, distinct: bool = False) -> Sequence[str]:
    """Band labels within the size bound; ``distinct``: checked here too (a packed batch's labels
    are checked against its cutoffs once the ticket is open)."""
    if not 2 <= len(labels) <= MAX_BANDS or (distinct and len(set(labels)) != len(labels)):
        raise InvalidInputError(f"band labels must be 2 to {MAX_BANDS} distinct names")
    return labels
