"""The bank's transport-free flows (bank_node/flow.py) driven in process, for its mutation run."""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from blindscore.bank_node import flow, keyring
from blindscore.bank_node.calls import (
    Batch,
    BatchFinish,
    BatchStart,
    CircuitFinish,
    CircuitReveal,
    CircuitStart,
    Run,
)
from blindscore.bank_node.flow import BankNode
from blindscore.bank_node.keyring import KEYS_DIR, RING_FILE, BankKey, KeyRing
from blindscore.bank_node.store import BandRecord, PendingRound, ResultStore, RunLimits
from blindscore.crypto import ot
from blindscore.crypto.dgk import DGKKeyPair
from blindscore.crypto.keyfile import Passphrase
from blindscore.crypto.paillier import KeyPair
from blindscore.data.german import default_model, load_german_credit
from blindscore.errors import InvalidInputError, NotFoundError, PermissionDeniedError
from blindscore.infra.metrics import NodeMetrics
from blindscore.models import families
from blindscore.protocol import circuit_band, comparison, packing
from blindscore.protocol.application import BandDelivery
from blindscore.protocol.circuit_band import CircuitBand

BANK = "bank-t"
BUREAU = "bureau-t"
PLATFORM = "platform-t"
CUTOFFS = [300, 500, 650, 800]
LABELS = ("A", "B", "C", "D", "E")
LABEL_RULE = re.escape(f"band labels must be 2 to {flow.MAX_BANDS} distinct names")
MODEL = default_model()
ROWS, _ = load_german_credit()
LOG = "blindscore.bank_node.flow"


@pytest.fixture
def node(tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> Iterator[BankNode]:
    """A bank with the session key and a fresh SQLite result store, no key ring."""
    bank = BankNode(BANK, paillier_keypair, dgk_keypair, ResultStore(tmp_path / "results.sqlite3"))
    yield bank
    bank.store.close()


@pytest.fixture
def ring_dir(tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> Path:
    """A data directory whose key ring holds the session key, as current."""
    data = tmp_path / "bank"
    KeyRing(data / KEYS_DIR).add(BankKey(paillier_keypair, dgk_keypair))
    return data


@pytest.fixture
def second_key(second_paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> BankKey:
    return BankKey(second_paillier_keypair, dgk_keypair)


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for the fault-report thread: ``condition`` must hold within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the fault report did not arrive"
        time.sleep(0.01)


def spaced(field: str, value: str, at: int) -> str:
    """The refusal of an id holding a space at position ``at``, as a pattern."""
    return "^" + re.escape(
        f"{field} '{value}' has U+0020 (SPACE, category Zs) at position {at}; ids are 1-128 "
    )


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOG and r.levelno == level]


# ---------------------------------------------------------------------- the comparison flow


def comparison_for(bank: BankNode, score: int) -> comparison.BandComparison:
    pk = bank.keypair.public_key
    return comparison.BandComparison(pk, bank.dgk.public_key, pk.encrypt(score), CUTOFFS, -1000, 5000, 0)


def run_of(bank: BankNode, app_id: str, bureau: str = BUREAU, platform: str = PLATFORM) -> Run:
    return Run(bank.key_id, app_id, bureau, platform)


def delivery(
    bank: BankNode,
    app_id: str,
    ciphertext: object,
    labels: tuple[str, ...] = LABELS,
    platform: str = PLATFORM,
) -> BandDelivery:
    return BandDelivery(app_id, bank.key_id, "model-1", labels, ciphertext, platform)


def band_run(
    bank: BankNode, app_id: str, score: int, *, bureau: str = BUREAU, platform: str = PLATFORM
) -> BandRecord | None:
    """Both rounds and the delivery of an honest bureau for ``score``."""
    side = comparison_for(bank, score)
    run = run_of(bank, app_id, bureau, platform)
    bits = bank.compare_masked(run, side.masked_request())
    final = bank.compare_blinded(run, side.blinded_request(bits))
    ciphertext = side.band_ciphertext(final)
    return bank.deliver_band(delivery(bank, app_id, ciphertext, platform=platform), bureau_id=bureau)


def blinded_with_zeros(bank: BankNode, run: Run, score: int) -> None:
    """Round 1 honest, round 2 with a group of several zeros: the fault waits for the delivery."""
    side = comparison_for(bank, score)
    bits = bank.compare_masked(run, side.masked_request())
    request = side.blinded_request(bits)
    zero = int(bank.dgk.public_key.encrypt(0))
    groups = ((zero,) * len(request.groups[0]), *request.groups[1:])
    bank.compare_blinded(run, comparison.BlindedRequest(groups))


def test_an_honest_comparison_run_stores_the_band_under_its_ids(node: BankNode) -> None:
    before = time.time()
    record = band_run(node, "app-1", 520)
    assert record is not None
    assert (record.application_id, record.model_id, record.key_id) == ("app-1", "model-1", node.key_id)
    assert (record.band, record.band_label, record.platform_id, record.bureau_id) == (
        2,
        "C",
        PLATFORM,
        BUREAU,
    )
    assert before <= record.received_at <= time.time()
    assert node.store.get("app-1", PLATFORM, BUREAU) == record
    assert node.store.runs(BUREAU, "app-1", PLATFORM) == (1, False, "band")
    assert node.store.faults() == []
    # The platform may be unnamed.
    unnamed = band_run(node, "app-1", 820, platform="")
    assert unnamed is not None and (unnamed.band, unnamed.platform_id) == (4, "")


def test_a_delivery_without_a_bureau_is_the_unnamed_bureaus(node: BankNode) -> None:
    """A run and a delivery that name no bureau (the in-process callers) meet in one ledger row."""
    side = comparison_for(node, 520)
    run = Run(node.key_id, "anon", "", PLATFORM)
    bits = node.compare_masked(run, side.masked_request())
    final = node.compare_blinded(run, side.blinded_request(bits))
    record = node.deliver_band(delivery(node, "anon", side.band_ciphertext(final)))
    assert record is not None and (record.band, record.bureau_id) == (2, "")
    assert node.store.runs("", "anon", PLATFORM) == (1, False, "band")


def test_bands_at_the_ends_of_the_label_range(node: BankNode) -> None:
    side = comparison_for(node, 0)
    node.compare_masked(run_of(node, "low"), side.masked_request())
    pk = node.keypair.public_key
    low = node.deliver_band(delivery(node, "low", pk.encrypt(0)), bureau_id=BUREAU)
    assert low is not None and (low.band, low.band_label) == (0, "A")
    node.compare_masked(run_of(node, "high"), comparison_for(node, 0).masked_request())
    high = node.deliver_band(delivery(node, "high", pk.encrypt(4)), bureau_id=BUREAU)
    assert high is not None and (high.band, high.band_label) == (4, "E")


@pytest.mark.parametrize("band", [5, -1])
def test_a_band_outside_the_labels_is_a_fault_not_a_refusal(node: BankNode, band: int) -> None:
    node.compare_masked(run_of(node, "out"), comparison_for(node, 0).masked_request())
    pk = node.keypair.public_key
    assert node.deliver_band(delivery(node, "out", pk.encrypt(band)), bureau_id=BUREAU) is None
    assert node.store.get("out") is None
    assert node.store.runs(BUREAU, "out", PLATFORM) == (1, True, "faulted")
    assert [(f.application_id, f.platform_id, f.reason) for f in node.store.faults(BUREAU)] == [
        ("out", PLATFORM, flow.FAULT_BAND_RANGE)
    ]


def test_a_masked_value_wider_than_declared_is_recorded_as_a_fault(node: BankNode) -> None:
    side = comparison_for(node, 100)
    masked = side.masked_request()
    wide = dataclasses.replace(
        masked, ciphertext=int(node.keypair.public_key.encrypt(1 << masked.width_bits))
    )
    response = node.compare_masked(run_of(node, "wide"), wide)
    assert len(response.bit_ciphertexts) == masked.bits
    assert node.store.runs(BUREAU, "wide", PLATFORM) == (1, True, "")
    assert [(f.application_id, f.reason) for f in node.store.faults()] == [("wide", "masked_range")]
    # An honest round 1 of another application records nothing.
    node.compare_masked(run_of(node, "fine"), comparison_for(node, 100).masked_request())
    assert node.store.runs(BUREAU, "fine", PLATFORM) == (1, False, "")
    assert len(node.store.faults()) == 1


def test_a_round_2_fault_is_kept_for_the_delivery_of_that_application_only(node: BankNode) -> None:
    blinded_with_zeros(node, run_of(node, "zeros"), 520)
    # The same application id from another platform is another application.
    other = run_of(node, "zeros", platform="platform-u")
    assert band_run(node, "ok", 520) is not None
    side = comparison_for(node, 700)
    bits = node.compare_masked(other, side.masked_request())
    node.compare_blinded(other, side.blinded_request(bits))
    moved = delivery(node, "zeros", node.keypair.public_key.encrypt(3), platform="platform-u")
    good = node.deliver_band(moved, bureau_id=BUREAU)
    assert good is not None and good.band == 3
    # The delivery of the faulted one is answered like any other, stored as faulted.
    held = node.deliver_band(delivery(node, "zeros", node.keypair.public_key.encrypt(2)), bureau_id=BUREAU)
    assert held is None
    assert node.store.get("zeros", PLATFORM, BUREAU) is None
    assert [(f.platform_id, f.application_id, f.reason) for f in node.store.faults()] == [
        (PLATFORM, "zeros", comparison.FAULT_GROUP_ZEROS)
    ]


def test_only_the_newest_pending_faults_are_kept(node: BankNode, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flow, "MAX_PENDING_FAULTS", 1)
    for app_id in ("first", "second"):
        blinded_with_zeros(node, run_of(node, app_id), 520)
    pk = node.keypair.public_key
    # The first fault was dropped to keep one: its delivery stores the band.
    assert node.deliver_band(delivery(node, "first", pk.encrypt(2)), bureau_id=BUREAU) is not None
    assert node.deliver_band(delivery(node, "second", pk.encrypt(2)), bureau_id=BUREAU) is None
    assert [f.application_id for f in node.store.faults()] == ["second"]


def test_a_second_band_keeps_the_first_and_is_logged(
    node: BankNode, caplog: pytest.LogCaptureFixture
) -> None:
    first = band_run(node, "twice", 520)
    caplog.set_level(logging.WARNING, LOG)
    assert messages(caplog, logging.WARNING) == []
    again = band_run(node, "twice", 820)
    assert again == first
    assert messages(caplog, logging.WARNING) == [
        "kept the earlier band of 1 application(s) delivered again: ['twice']"
    ]
    assert node.store.runs(BUREAU, "twice", PLATFORM) == (2, False, "band")


def test_each_call_checks_the_application_id(node: BankNode) -> None:
    side = comparison_for(node, 1)
    bad = run_of(node, "bad id")
    rule = spaced("application_id", "bad id", 3)
    with pytest.raises(InvalidInputError, match=rule):
        node.compare_masked(bad, side.masked_request())
    with pytest.raises(InvalidInputError, match=rule):
        node.compare_blinded(bad, comparison.BlindedRequest(((1, 1),)))
    with pytest.raises(InvalidInputError, match=rule):
        node.deliver_band(delivery(node, "bad id", 1), bureau_id=BUREAU)
    with pytest.raises(InvalidInputError, match=spaced("platform_id", "p 1", 1)):
        node.compare_masked(Run(node.key_id, "app", BUREAU, "p 1"), comparison_for(node, 1).masked_request())
    assert node.store.runs(BUREAU, "app", "p 1") is None


def test_band_labels_are_2_to_64_distinct_names(node: BankNode) -> None:
    pk = node.keypair.public_key
    for labels in [("A",), ("A", "A", "B"), tuple(f"L{i}" for i in range(65))]:
        with pytest.raises(InvalidInputError, match=f"^{LABEL_RULE}$"):
            node.deliver_band(delivery(node, "labels", pk.encrypt(0), labels), bureau_id=BUREAU)
    for app_id, labels in [("two", ("A", "B")), ("many", tuple(f"L{i}" for i in range(64)))]:
        node.compare_masked(run_of(node, app_id), comparison_for(node, 0).masked_request())
        record = node.deliver_band(
            delivery(node, app_id, pk.encrypt(len(labels) - 1), labels), bureau_id=BUREAU
        )
        assert record is not None and record.band_label == labels[-1]


# ---------------------------------------------------------------------- fault reports


def test_faults_are_reported_once_per_application_off_the_answering_thread(
    tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, str, str, str]] = []

    def hook(bureau_id: str, application_id: str, check: str) -> None:
        seen.append((bureau_id, application_id, check, threading.current_thread().name))
        if application_id == "boom":
            raise RuntimeError("hook broke")

    caplog.set_level(logging.ERROR, LOG)
    store = ResultStore(tmp_path / "r.sqlite3")
    bank = BankNode(BANK, paillier_keypair, dgk_keypair, store, on_fault=hook)
    long_bureau, after = "b" * 100, "a" * 100  # logged by their first 64 characters
    pk = paillier_keypair.public_key
    assert band_run(bank, "clean", 520, bureau=long_bureau) is not None  # nothing to report
    honest = comparison_for(bank, 1)
    bank.compare_masked(Run(bank.key_id, "honest", long_bureau), honest.masked_request())
    for app_id in ("boom", after):
        side = comparison_for(bank, 1)
        masked = side.masked_request()
        wide = dataclasses.replace(masked, ciphertext=int(pk.encrypt(1 << masked.width_bits)))
        bank.compare_masked(Run(bank.key_id, app_id, long_bureau), wide)
    eventually(lambda: len(seen) == 2)
    assert [s[:3] for s in seen] == [
        (long_bureau, "boom", "masked_range"),
        (long_bureau, after, "masked_range"),
    ]
    assert {s[3] for s in seen} == {"bank-fault-reports"}
    reporters = [t for t in threading.enumerate() if t.name == "bank-fault-reports" and t.is_alive()]
    assert reporters and all(t.daemon for t in reporters)
    errors = messages(caplog, logging.ERROR)
    assert errors[:3] == [
        f"protocol fault (masked_range) by bureau {'b' * 64!r} on 1 application(s): ['boom']",
        "fault hook failed",
        f"protocol fault (masked_range) by bureau {'b' * 64!r} on 1 application(s): ['{'a' * 64}']",
    ]
    # A fault found at the delivery (a completion) is reported the same way; an honest run never.
    bank.deliver_band(delivery(bank, "honest", pk.encrypt(len(LABELS)), platform=""), bureau_id=long_bureau)
    eventually(lambda: len(seen) == 3)
    assert seen[2][:3] == (long_bureau, "honest", flow.FAULT_BAND_RANGE)
    assert messages(caplog, logging.ERROR)[3:] == [
        f"protocol fault (band_range) by bureau {'b' * 64!r} on 1 application(s): ['honest']"
    ]
    failed = next(r for r in caplog.records if r.getMessage() == "fault hook failed")
    assert failed.exc_info is not None and str(failed.exc_info[1]) == "hook broke"
    store.close()


def test_watch_faults_counts_them_and_tracks_suspended_bureaus(
    tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    store = ResultStore(tmp_path / "r.sqlite3")
    bank = BankNode(BANK, paillier_keypair, dgk_keypair, store, limits=RunLimits(max_faults=1))
    assert bank.limits == RunLimits(max_faults=1)
    pk = paillier_keypair.public_key

    def fault(bureau: str, app_id: str) -> None:
        masked = comparison_for(bank, 1).masked_request()
        wide = dataclasses.replace(masked, ciphertext=int(pk.encrypt(1 << masked.width_bits)))
        bank.compare_masked(Run(bank.key_id, app_id, bureau), wide)

    # The early fault's report is held in the reporter thread until the watch has begun: a fault
    # found before the watch is not counted, however late its report runs.
    release, reported = threading.Event(), threading.Event()

    class Hold(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "bureau-early" in record.getMessage():
                release.wait(10)
                reported.set()

    hold = Hold()
    logging.getLogger(LOG).addHandler(hold)
    try:
        fault("bureau-early", "a0")  # suspended before anyone watched
        metrics = NodeMetrics("bank")
        bank.watch_faults(metrics)
        release.set()
        assert reported.wait(10)
    finally:
        logging.getLogger(LOG).removeHandler(hold)

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"node": "bank", **labels})

    assert value("blindscore_suspended_peers") == 1
    fault("bureau-late", "a1")
    # The gauge moves after the count in the late report's hook, and reports run in order: once it
    # reads 2 the early report is done too, so the count is final.
    eventually(lambda: value("blindscore_suspended_peers") == 2)
    assert value("blindscore_protocol_faults_total", check="masked_range") == 1
    with pytest.raises(
        PermissionDeniedError, match=r"^bureau 'bureau-late' is suspended at this bank after 1 "
    ):
        fault("bureau-late", "a2")
    store.close()


def test_one_fault_report_names_at_most_8_applications(
    node: BankNode, caplog: pytest.LogCaptureFixture
) -> None:
    """A packed batch of 9 overflowing slots: one fault of 9 applications, 8 named in the log."""
    caplog.set_level(logging.ERROR, LOG)
    pk = node.keypair.public_key
    slot_bits = packing.slot_bits_for(MODEL)
    assert slot_bits is not None
    ids = tuple(f"over-{i}" for i in range(9))
    cts = packing.encrypt_packed(pk, MODEL.spec, slot_bits, [MODEL.spec.encode_row(r) for r in ROWS[:9]])
    masked = packing.PackedBand(pk, MODEL, cts, 9, slot_bits).masked()
    wide = dataclasses.replace(masked, ciphertext=int(pk.encrypt(1 << (9 * slot_bits))))
    offer = node.packed.setup_start()
    setup, choice = ot.SenderSetup.start(offer)
    setup.finish(node.packed.setup_finish(choice))
    node.packed_start(BatchStart(Batch(node.key_id, ids, BUREAU, PLATFORM), offer.session_id, wide))
    assert [f.application_id for f in node.store.faults()] == list(ids)
    assert {f.reason for f in node.store.faults()} == {packing.FAULT_SLOT_GUARD}
    eventually(lambda: bool(messages(caplog, logging.ERROR)))
    assert messages(caplog, logging.ERROR) == [
        f"protocol fault (slot_guard) by bureau {BUREAU!r} on 9 application(s): {list(ids[:8])}"
    ]


# ---------------------------------------------------------------------- packed batches


def ot_session(bank: BankNode) -> tuple[ot.OtSender, bytes]:
    """A finished base-OT setup with the bank's packed sessions: the bureau's sender and its id."""
    offer = bank.packed.setup_start()
    setup, choice = ot.SenderSetup.start(offer)
    return setup.finish(bank.packed.setup_finish(choice)), offer.session_id


def packed_batch(bank: BankNode, ids: tuple[str, ...], platform: str = PLATFORM) -> tuple[int, list[int]]:
    """One packed batch of the first German rows through both calls; (new, the rows' plaintext bands)."""
    sender, session_id = ot_session(bank)
    pk = bank.keypair.public_key
    slot_bits = packing.slot_bits_for(MODEL)
    assert slot_bits is not None
    rows = ROWS[: len(ids)]
    cts = packing.encrypt_packed(pk, MODEL.spec, slot_bits, [MODEL.spec.encode_row(r) for r in rows])
    band = packing.PackedBand(pk, MODEL, cts, len(ids), slot_bits)
    batch = Batch(bank.key_id, ids, BUREAU, platform)
    start = bank.packed_start(BatchStart(batch, session_id, band.masked()))
    circuit, pairs = band.garble()
    reply = sender.reply(start.request, pairs)
    new = bank.packed_finish(BatchFinish(batch, start.ticket, reply, circuit, "model-p", MODEL.policy.labels))
    return new, [MODEL.band(r) for r in rows]


def test_a_packed_batch_stores_every_band_and_counts_new_members(node: BankNode) -> None:
    ids = ("p0", "p1", "p2")
    new, expected = packed_batch(node, ids)
    assert new == 3
    records = [node.store.get(a, PLATFORM, BUREAU) for a in ids]
    assert [(r.band, r.band_label, r.model_id) for r in records if r] == [
        (b, MODEL.policy.labels[b], "model-p") for b in expected
    ]
    assert [node.store.runs(BUREAU, a, PLATFORM) for a in ids] == [(1, False, "band")] * 3
    # The same members again: counted as runs, none new.
    assert packed_batch(node, ids)[0] == 0
    assert node.store.runs(BUREAU, "p0", PLATFORM) == (2, False, "band")
    # The platform may be unnamed.
    assert packed_batch(node, ("q0",), platform="")[0] == 1
    assert node.store.get("q0", "", BUREAU) is not None


def test_packed_start_refuses_by_ids_counts_and_sessions(node: BankNode) -> None:
    _, session_id = ot_session(node)
    pk = node.keypair.public_key
    masked = packing.PackedMasked(int(pk.encrypt(5)), 2, 96, 4, 27, 24)
    cases: list[tuple[Batch, bytes, type[Exception], str]] = [
        (Batch(node.key_id, ("x y", "b"), BUREAU, PLATFORM), session_id, InvalidInputError,
         spaced("application_id", "x y", 1)),
        (Batch(node.key_id, ("a", "b", "c"), BUREAU, PLATFORM), session_id, InvalidInputError,
         "^a batch of 2 needs 2 distinct, non-empty application ids$"),
        (Batch(node.key_id, ("a", "b"), BUREAU, "p 2"), session_id, InvalidInputError,
         spaced("platform_id", "p 2", 1)),
        (Batch(node.key_id, ("a", "b"), BUREAU, PLATFORM), b"\x00" * 16, NotFoundError,
         f"^{re.escape(packing.SESSION_GONE)}$"),
        (Batch("pk-" + "0" * 32, ("a", "b"), BUREAU, PLATFORM), session_id, NotFoundError,
         f"^bank {BANK!r} has no key 'pk-{'0' * 32}'$"),
    ]  # fmt: skip
    for batch, session, error, message in cases:
        with pytest.raises(error, match=message):
            node.packed_start(BatchStart(batch, session, masked))
    assert node.store.runs(BUREAU, "a", PLATFORM) is None


def packed_round(node: BankNode, app_id: str) -> tuple[Batch, Any, Any, Any]:
    """A packed batch of one German row, started at ``node``: (batch, start, OT reply, circuit)."""
    sender, session_id = ot_session(node)
    pk = node.keypair.public_key
    slot_bits = packing.slot_bits_for(MODEL)
    assert slot_bits is not None
    cts = packing.encrypt_packed(pk, MODEL.spec, slot_bits, [MODEL.spec.encode_row(ROWS[0])])
    band = packing.PackedBand(pk, MODEL, cts, 1, slot_bits)
    batch = Batch(node.key_id, (app_id,), BUREAU, PLATFORM)
    start = node.packed_start(BatchStart(batch, session_id, band.masked()))
    circuit, pairs = band.garble()
    return batch, start, sender.reply(start.request, pairs), circuit


def test_a_packed_batchs_labels_are_checked_for_repeats_against_its_cutoffs(node: BankNode) -> None:
    """Repeated labels of a packed batch are refused with its cutoffs, once the ticket is open."""
    batch, start, reply, circuit = packed_round(node, "d0")
    cutoffs = len(MODEL.encoded_cutoffs)
    repeated = ("A",) * (cutoffs + 1)
    with pytest.raises(
        InvalidInputError, match=f"^{cutoffs} cutoffs need {cutoffs + 1} distinct band labels$"
    ):
        node.packed_finish(BatchFinish(batch, start.ticket, reply, circuit, "m", repeated))
    assert node.store.get("d0") is None


def test_packed_finish_checks_the_key_and_the_labels_before_the_ticket(node: BankNode) -> None:
    batch, start, reply, circuit = packed_round(node, "f0")
    labels = MODEL.policy.labels
    with pytest.raises(InvalidInputError, match=f"^{LABEL_RULE}$"):
        node.packed_finish(BatchFinish(batch, start.ticket, reply, circuit, "m", ("A",)))
    other = dataclasses.replace(batch, key_id="pk-" + "1" * 32)
    with pytest.raises(NotFoundError, match=f"^bank {BANK!r} has no key 'pk-{'1' * 32}'$"):
        node.packed_finish(BatchFinish(other, start.ticket, reply, circuit, "m", labels))
    # Neither refusal used the ticket up.
    assert node.packed_finish(BatchFinish(batch, start.ticket, reply, circuit, "m", labels)) == 1
    record = node.store.get("f0", PLATFORM, BUREAU)
    assert record is not None and record.band == MODEL.band(ROWS[0])


# ---------------------------------------------------------------------- garbled-circuit bands


@dataclasses.dataclass
class CircuitRound:
    batch: Batch
    bureau: CircuitBand
    finish: CircuitFinish


def circuit_round(
    bank: BankNode,
    app_id: str,
    *,
    platform: str = PLATFORM,
    labels: tuple[str, ...] | None = None,
    row: int = 0,
) -> CircuitRound:
    """Rounds 1 and 2 of a German row's circuit band (the first by default), as the bureau; round 2
    not yet sent."""
    sender, session_id = ot_session(bank)
    pk = bank.keypair.public_key
    side = CircuitBand(
        pk, MODEL, families.family("linear"), [pk.encrypt(v) for v in MODEL.spec.encode_row(ROWS[row])]
    )
    batch = Batch(bank.key_id, (app_id,), BUREAU, platform)
    start = bank.circuit_start(CircuitStart(batch, session_id, side.request))
    garbled = side.finish(start.request, sender)
    finish = CircuitFinish(batch, start.ticket, garbled, "model-c", labels or MODEL.policy.labels)
    return CircuitRound(batch, side, finish)


def test_a_circuit_band_is_stored_at_the_reveal_once(node: BankNode) -> None:
    rnd = circuit_round(node, "c1")
    assert node.store.runs(BUREAU, "c1", PLATFORM) == (1, False, "")
    assert node.circuit_finish(rnd.finish) == 1
    assert node.store.get("c1") is None
    garbling_id, pad = rnd.bureau.last_round
    reveal = CircuitReveal(rnd.batch, garbling_id, pad)
    assert node.circuit_reveal(reveal) == 1
    record = node.store.get("c1", PLATFORM, BUREAU)
    band = MODEL.band(ROWS[0])
    assert record is not None
    assert (record.band, record.band_label, record.model_id, record.key_id) == (
        band,
        MODEL.policy.labels[band],
        "model-c",
        node.key_id,
    )
    assert node.store.runs(BUREAU, "c1", PLATFORM) == (1, False, "band")
    assert node.circuit_reveal(reveal) == 0
    assert node.store.faults() == []
    # The platform may be unnamed.
    rnd = circuit_round(node, "c2", platform="")
    assert node.circuit_finish(rnd.finish) == 1
    assert node.circuit_reveal(CircuitReveal(rnd.batch, *rnd.bureau.last_round)) == 1


def test_a_circuit_that_fails_to_evaluate_is_a_fault_at_the_reveal(node: BankNode) -> None:
    rnd = circuit_round(node, "c-bad")
    garbled = dataclasses.replace(rnd.finish.garbled, output_tags=bytes(len(rnd.finish.garbled.output_tags)))
    assert node.circuit_finish(dataclasses.replace(rnd.finish, garbled=garbled)) == 1
    pending = node.store.round(BUREAU, PLATFORM, "c-bad", garbled.garbling_id.hex())
    assert pending is not None and pending.padded == "x" * len(MODEL.encoded_cutoffs)
    assert pending.labels == tuple(MODEL.policy.labels) and pending.model_id == "model-c"
    assert node.circuit_reveal(CircuitReveal(rnd.batch, garbled.garbling_id, rnd.bureau.pad)) == 1
    assert node.store.get("c-bad") is None
    assert [(f.application_id, f.reason) for f in node.store.faults()] == [
        ("c-bad", circuit_band.FAULT_CIRCUIT_OUTPUT)
    ]
    assert node.store.runs(BUREAU, "c-bad", PLATFORM) == (1, True, "faulted")


def test_a_pad_that_leaves_no_thermometer_code_is_a_fault(node: BankNode) -> None:
    rnd = circuit_round(node, "c-pad")
    node.circuit_finish(rnd.finish)
    garbling_id, pad = rnd.bureau.last_round
    band = MODEL.band(ROWS[0])
    cutoffs = len(MODEL.encoded_cutoffs)
    # 1..10..0 with one bit flipped is no thermometer code: the last bit below K - 1, else the first.
    bit = cutoffs - 1 if band < cutoffs - 1 else 0
    flipped = bytearray(pad)
    flipped[bit // 8] ^= 0x80 >> (bit % 8)  # numpy.packbits order
    flip = circuit_band.pad_bytes([int(i == bit) for i in range(cutoffs)])
    assert circuit_band.unpad([int(i < band) for i in range(cutoffs)], flip) is None
    assert node.circuit_reveal(CircuitReveal(rnd.batch, garbling_id, bytes(flipped))) == 1
    assert node.store.get("c-pad") is None
    assert [f.reason for f in node.store.faults()] == [circuit_band.FAULT_CIRCUIT_OUTPUT]


def test_a_faulted_delivery_after_a_band_keeps_it_and_is_not_logged_as_another_band(
    node: BankNode, caplog: pytest.LogCaptureFixture
) -> None:
    """A faulted completion carries no band: the stored band stays, the fault is recorded, and
    no "kept the earlier band" warning compares the stored band with a placeholder."""
    pk = node.keypair.public_key
    first = band_run(node, "f1", 820)
    assert first is not None and first.band == 4
    # A band strictly inside: flipping every pad bit then leaves no thermometer code.
    row = next(i for i, r in enumerate(ROWS) if 1 <= MODEL.band(r) < len(MODEL.encoded_cutoffs))
    rnd = circuit_round(node, "f2", row=row)
    node.circuit_finish(rnd.finish)
    node.circuit_reveal(CircuitReveal(rnd.batch, *rnd.bureau.last_round))
    stored = node.store.get("f2", PLATFORM, BUREAU)
    assert stored is not None and stored.band == MODEL.band(ROWS[row]) >= 1
    caplog.set_level(logging.WARNING, LOG)
    # Again, faulted: a band outside the labels, and a pad that leaves no thermometer code.
    node.compare_masked(run_of(node, "f1"), comparison_for(node, 820).masked_request())
    assert node.deliver_band(delivery(node, "f1", pk.encrypt(len(LABELS))), bureau_id=BUREAU) == first
    rnd = circuit_round(node, "f2", row=row)
    node.circuit_finish(rnd.finish)
    garbling_id, pad = rnd.bureau.last_round
    assert node.circuit_reveal(CircuitReveal(rnd.batch, garbling_id, bytes([pad[0] ^ 0xFF, *pad[1:]]))) == 0
    assert node.store.get("f1", PLATFORM, BUREAU) == first
    assert node.store.get("f2", PLATFORM, BUREAU) == stored
    assert [(f.application_id, f.reason) for f in node.store.faults()] == [
        ("f1", flow.FAULT_BAND_RANGE),
        ("f2", circuit_band.FAULT_CIRCUIT_OUTPUT),
    ]
    assert messages(caplog, logging.WARNING) == []


def test_a_circuit_slot_that_overflows_is_a_fault_not_a_refusal(node: BankNode) -> None:
    _, session_id = ot_session(node)
    pk = node.keypair.public_key
    side = CircuitBand(
        pk, MODEL, families.family("linear"), [pk.encrypt(v) for v in MODEL.spec.encode_row(ROWS[0])]
    )
    masked = side.request.masked
    wide = dataclasses.replace(
        masked, ciphertexts=(int(pk.encrypt(1 << (pk.bits - 8))),) * len(masked.ciphertexts)
    )
    request = dataclasses.replace(side.request, masked=wide)
    start = node.circuit_start(
        CircuitStart(Batch(node.key_id, ("wide",), BUREAU, PLATFORM), session_id, request)
    )
    assert start.ticket and start.request.count > 0
    assert node.store.runs(BUREAU, "wide", PLATFORM) == (1, True, "")
    assert [(f.application_id, f.reason) for f in node.store.faults()] == [("wide", packing.FAULT_SLOT_GUARD)]


def test_circuit_calls_refuse_by_ids_counts_sizes_and_labels(node: BankNode) -> None:
    _, session_id = ot_session(node)
    pk = node.keypair.public_key
    side = CircuitBand(
        pk, MODEL, families.family("linear"), [pk.encrypt(v) for v in MODEL.spec.encode_row(ROWS[0])]
    )
    for batch, message in [
        (Batch(node.key_id, ("a b",), BUREAU, PLATFORM), spaced("application_id", "a b", 1)),
        (Batch(node.key_id, ("a", "b"), BUREAU, PLATFORM), "^a batch of 1 needs 1 distinct, non-empty"),
        (Batch(node.key_id, ("a",), BUREAU, "p 3"), spaced("platform_id", "p 3", 1)),
    ]:
        with pytest.raises(InvalidInputError, match=message):
            node.circuit_start(CircuitStart(batch, session_id, side.request))
    with pytest.raises(NotFoundError, match=f"^{re.escape(packing.SESSION_GONE)}$"):
        node.circuit_start(
            CircuitStart(Batch(node.key_id, ("a",), BUREAU, PLATFORM), b"\x01" * 16, side.request)
        )
    assert node.store.runs(BUREAU, "a", PLATFORM) is None

    cutoffs = len(MODEL.encoded_cutoffs)
    rnd = circuit_round(node, "c3", labels=tuple(f"L{i}" for i in range(cutoffs + 2)))
    with pytest.raises(InvalidInputError, match=f"^{cutoffs} cutoffs need {cutoffs + 1} band labels$"):
        node.circuit_finish(rnd.finish)
    for labels in [("A", "A", *MODEL.policy.labels[2:]), ("A",)]:
        with pytest.raises(InvalidInputError, match=f"^{LABEL_RULE}$"):
            node.circuit_finish(dataclasses.replace(rnd.finish, labels=labels))
    with pytest.raises(NotFoundError, match=f"^bank {BANK!r} has no key 'pk-{'2' * 32}'$"):
        node.circuit_finish(
            dataclasses.replace(rnd.finish, batch=dataclasses.replace(rnd.batch, key_id="pk-" + "2" * 32))
        )

    rnd = circuit_round(node, "c4")
    node.circuit_finish(rnd.finish)
    garbling_id, pad = rnd.bureau.last_round
    unknown = b"\x07" * 16
    with pytest.raises(
        NotFoundError, match=f"^no evaluated circuit round {unknown.hex()} of this application$"
    ):
        node.circuit_reveal(CircuitReveal(rnd.batch, unknown, pad))
    long_id = b"\x08" * 20  # named by its first 32 hex digits
    with pytest.raises(
        NotFoundError, match=f"^no evaluated circuit round {long_id.hex()[:32]} of this application$"
    ):
        node.circuit_reveal(CircuitReveal(rnd.batch, long_id, pad))
    size = (cutoffs + 7) // 8
    for wrong in (pad + b"\x00", pad[:-1]):
        with pytest.raises(
            InvalidInputError, match=f"^the pad of a round with {cutoffs} cutoffs is {size} bytes$"
        ):
            node.circuit_reveal(CircuitReveal(rnd.batch, garbling_id, wrong))
    with pytest.raises(InvalidInputError, match=r"^a batch of 1 needs 1 distinct, non-empty"):
        node.circuit_reveal(
            CircuitReveal(dataclasses.replace(rnd.batch, application_ids=("c4", "c5")), garbling_id, pad)
        )
    with pytest.raises(InvalidInputError, match=spaced("application_id", "c 4", 1)):
        node.circuit_reveal(
            CircuitReveal(dataclasses.replace(rnd.batch, application_ids=("c 4",)), garbling_id, pad)
        )
    assert node.store.get("c4") is None and node.store.faults() == []
    assert node.circuit_reveal(CircuitReveal(rnd.batch, garbling_id, pad)) == 1


def test_a_circuit_round_is_revealed_under_its_own_key_only(ring_dir: Path, second_key: BankKey) -> None:
    bank = BankNode.open(BANK, ring_dir)
    first = bank.key_id
    rnd = circuit_round(bank, "k1")
    bank.circuit_finish(rnd.finish)
    KeyRing(ring_dir / KEYS_DIR).add(second_key)
    other = dataclasses.replace(rnd.batch, key_id=second_key.key_id)
    garbling_id, pad = rnd.bureau.last_round
    with pytest.raises(
        NotFoundError, match=f"^no evaluated circuit round {garbling_id.hex()} of this application$"
    ):
        bank.circuit_reveal(CircuitReveal(other, garbling_id, pad))
    assert bank.circuit_reveal(CircuitReveal(rnd.batch, garbling_id, pad)) == 1
    assert bank.key_id == second_key.key_id != first
    bank.store.close()


# ---------------------------------------------------------------------- keys and the key ring


def test_a_bank_needs_an_id_and_shows_its_keys(
    node: BankNode, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInputError, match=r"^bank id must not be empty$"):
        BankNode("", paillier_keypair, dgk_keypair, node.store)
    kid = paillier_keypair.public_key.key_id
    assert repr(node) == f"BankNode(bank_id='bank-t', current={kid}, keys=['{kid}'])"
    assert node.key_id == kid and node.keypair is paillier_keypair and node.dgk is dgk_keypair
    assert node.current.key_id == kid and [k.key_id for k in node.all_keys()] == [kid]
    assert node.check_key(kid).paillier is paillier_keypair
    assert node.limits == RunLimits()
    assert node.refresh_keys() == []
    with pytest.raises(NotFoundError, match=f"^bank 'bank-t' has no key 'pk-{'3' * 32}'$"):
        node.key("pk-" + "3" * 32)


def test_open_uses_the_ring_its_store_and_its_limits(
    ring_dir: Path, tmp_path: Path, paillier_keypair: KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, LOG)
    kid = paillier_keypair.public_key.key_id
    bank = BankNode.open(BANK, ring_dir, limits=RunLimits(max_runs=7))
    assert (bank.key_id, bank.limits, bank.bank_id) == (kid, RunLimits(max_runs=7), BANK)
    assert bank.keypair.public_key == paillier_keypair.public_key
    assert bank.refresh_keys() == []  # the ring as loaded
    assert messages(caplog, logging.WARNING) == []
    assert band_run(bank, "o1", 520) is not None
    bank.store.close()
    reopened = ResultStore(ring_dir / "results.sqlite3")
    assert reopened.get("o1") is not None
    reopened.close()
    # Another database; a --key-bits that differs from the current key's is named.
    elsewhere = tmp_path / "elsewhere.sqlite3"
    bank = BankNode.open(BANK, ring_dir, key_bits=3072, database=f"sqlite:///{elsewhere}")
    assert bank.limits == RunLimits()
    assert messages(caplog, logging.WARNING) == [
        f"current key {kid} has 2048 bits; --key-bits 3072 applies to new keys only"
    ]
    assert band_run(bank, "o2", 520) is not None
    assert bank.store.get("o1") is None
    bank.store.close()
    assert elsewhere.exists()


def test_open_makes_the_first_key_of_the_size_asked_for(
    tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty ring gets its first key at --key-bits (the key itself is the session's: only the
    size asked for is checked, without generating a key in the test)."""
    asked: list[object] = []

    def make(bits: object) -> KeyPair:
        asked.append(bits)
        return paillier_keypair

    monkeypatch.setattr(keyring, "generate_keypair", make)
    monkeypatch.setattr(keyring, "generate_dgk_keypair", lambda bits: dgk_keypair)
    bank = BankNode.open(BANK, tmp_path / "fresh", key_bits=3072)  # the ring is made
    try:
        assert asked == [3072]
        assert bank.key_id == paillier_keypair.public_key.key_id
        assert KeyRing(tmp_path / "fresh" / KEYS_DIR).ids() == [bank.key_id]
    finally:
        bank.store.close()


def test_open_reads_a_sealed_ring_with_its_passphrase(
    tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    phrase = Passphrase("correct horse battery staple")
    data = tmp_path / "sealed"
    KeyRing(data / KEYS_DIR, passphrase=phrase).add(BankKey(paillier_keypair, dgk_keypair))
    bank = BankNode.open(BANK, data, passphrase=phrase)
    assert bank.key_id == paillier_keypair.public_key.key_id
    assert band_run(bank, "sealed-1", 520) is not None
    bank.store.close()


def test_the_ring_is_reread_when_it_changes(
    ring_dir: Path, paillier_keypair: KeyPair, second_key: BankKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOG)
    first = paillier_keypair.public_key.key_id
    bank = BankNode.open(BANK, ring_dir)
    in_use = bank.current
    ring = KeyRing(ring_dir / KEYS_DIR)
    ring.add(second_key)
    # A known key is answered without rereading the ring.
    assert bank.key(first) is in_use and bank.key_id == first
    added = bank.refresh_keys()
    assert bank.key(first) is in_use  # reused, not read again
    assert [k.key_id for k in added] == [second_key.key_id]
    assert bank.key_id == second_key.key_id
    assert [k.key_id for k in bank.all_keys()] == sorted([first, second_key.key_id])
    assert bank.refresh_keys() == []
    ring.retire(first)
    assert bank.refresh_keys() == []
    assert [k.key_id for k in bank.all_keys()] == [second_key.key_id]
    assert messages(caplog, logging.INFO) == [
        f"key ring reloaded: current {second_key.key_id}, added ['{second_key.key_id}'], retired none",
        f"key ring reloaded: current {second_key.key_id}, added none, retired ['{first}']",
    ]
    bank.store.close()


def test_an_unknown_key_rereads_the_ring_first(
    ring_dir: Path, second_key: BankKey, caplog: pytest.LogCaptureFixture
) -> None:
    bank = BankNode.open(BANK, ring_dir)
    KeyRing(ring_dir / KEYS_DIR).add(second_key, make_current=False)
    assert bank.key(second_key.key_id).paillier.public_key == second_key.paillier.public_key
    assert bank.key_id != second_key.key_id
    # A broken ring: reported once when read, the keys in use stay.
    (ring_dir / KEYS_DIR / RING_FILE).write_text("{}")
    caplog.set_level(logging.ERROR, LOG)
    missing = "pk-" + "4" * 32
    with pytest.raises(NotFoundError, match=f"^bank 'bank-t' has no key '{missing}'$"):
        bank.key(missing)
    assert [m.startswith("could not reload the key ring: ") for m in messages(caplog, logging.ERROR)] == [
        True
    ]
    assert "not a blindscore key ring file" in messages(caplog, logging.ERROR)[0]
    with pytest.raises(NotFoundError, match=f"^bank 'bank-t' has no key '{missing}'$"):
        bank.key(missing)
    assert len(messages(caplog, logging.ERROR)) == 1
    assert bank.refresh_keys() == []
    assert len(bank.all_keys()) == 2
    bank.store.close()


def test_a_broken_ring_is_raised_once_per_change(ring_dir: Path) -> None:
    bank = BankNode.open(BANK, ring_dir)
    (ring_dir / KEYS_DIR / RING_FILE).write_text("{}")
    with pytest.raises(InvalidInputError, match="not a blindscore key ring file"):
        bank.refresh_keys()
    assert bank.refresh_keys() == []
    bank.store.close()


@pytest.mark.parametrize("cutoffs", [1, 8, 9])
def test_a_reveal_takes_a_pad_of_whole_bytes_for_any_number_of_cutoffs(node: BankNode, cutoffs: int) -> None:
    """Rounds kept in the store by hand (the German model has 4 cutoffs): the pad is (K + 7) // 8
    bytes, the band is the padded outputs XOR the pad."""
    labels = tuple(f"L{i}" for i in range(cutoffs + 1))
    band = (cutoffs + 1) // 2
    pad_bits = [i % 2 for i in range(cutoffs)]
    padded = "".join(str(int(i < band) ^ p) for i, p in enumerate(pad_bits))
    app_id = f"r{cutoffs}"
    node.compare_masked(run_of(node, app_id), comparison_for(node, 0).masked_request())
    garbling_id = bytes([cutoffs]) * 16
    node.store.put_round(
        BUREAU, PendingRound(app_id, PLATFORM, garbling_id.hex(), padded, "model-r", node.key_id, labels)
    )
    batch = Batch(node.key_id, (app_id,), BUREAU, PLATFORM)
    pad = circuit_band.pad_bytes(pad_bits)
    size = (cutoffs + 7) // 8
    assert len(pad) == size
    rule = f"^the pad of a round with {cutoffs} cutoffs is {size} bytes$"
    for wrong in (pad + b"\x00", pad[:-1]):
        with pytest.raises(InvalidInputError, match=rule):
            node.circuit_reveal(CircuitReveal(batch, garbling_id, wrong))
    assert node.circuit_reveal(CircuitReveal(batch, garbling_id, pad)) == 1
    record = node.store.get(app_id, PLATFORM, BUREAU)
    assert record is not None
    assert (record.band, record.band_label, record.model_id) == (band, labels[band], "model-r")
    assert node.store.faults() == []


def test_a_batch_delivered_again_keeps_the_first_bands_and_names_five(
    node: BankNode, caplog: pytest.LogCaptureFixture
) -> None:
    by_band: dict[int, list[int]] = {}
    for i, row in enumerate(ROWS[:200]):
        by_band.setdefault(MODEL.band(row), []).append(i)
    low, high = sorted(b for b, rows in by_band.items() if len(rows) >= 6)[:2]
    ids = tuple(f"k{i}" for i in range(6))
    caplog.set_level(logging.WARNING, LOG)
    for band in (low, high):
        sender, session_id = ot_session(node)
        pk = node.keypair.public_key
        slot_bits = packing.slot_bits_for(MODEL)
        assert slot_bits is not None
        rows = [MODEL.spec.encode_row(ROWS[i]) for i in by_band[band][:6]]
        packed = packing.PackedBand(
            pk, MODEL, packing.encrypt_packed(pk, MODEL.spec, slot_bits, rows), 6, slot_bits
        )
        batch = Batch(node.key_id, ids, BUREAU, PLATFORM)
        start = node.packed_start(BatchStart(batch, session_id, packed.masked()))
        circuit, pairs = packed.garble()
        finish = BatchFinish(
            batch, start.ticket, sender.reply(start.request, pairs), circuit, "m", MODEL.policy.labels
        )
        node.packed_finish(finish)
    assert [r.band for r in node.store.all()] == [low] * 6
    assert messages(caplog, logging.WARNING) == [
        f"kept the earlier band of 6 application(s) delivered again: {list(ids[:5])}"
    ]
