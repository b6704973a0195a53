"""The bureau's transport-free flows (bureau/flow.py) run in process against a bank, for its mutation run."""

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
from clocks import SteppedClock

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
from blindscore.bank_node.store import ResultStore, RunLimits
from blindscore.bureau import flow
from blindscore.bureau.applications import DELIVERED, FAILED, PENDING, StoredFailure, Submission
from blindscore.bureau.audit import ACCEPTED, APPLICATIONS_FILE, LEGACY_FILE, AuditLog
from blindscore.bureau.bank_link import CircuitRound, PackedRound
from blindscore.bureau.flow import BureauNode, Job, ScoreReport
from blindscore.bureau.ledger import MAX_CIRCUIT_ROUNDS
from blindscore.bureau.registry import BankRegistry, ModelStore
from blindscore.crypto import ot
from blindscore.crypto.dgk import DGKKeyPair
from blindscore.crypto.paillier import KeyPair
from blindscore.data.german import DEFAULT_MODEL_ID, default_model, demo_model, load_german_credit
from blindscore.errors import (
    AlreadyExistsError,
    InvalidInputError,
    LeaseLostError,
    NotFoundError,
    PeerError,
    PreconditionError,
    UnavailableError,
)
from blindscore.infra.db import RetryPolicy
from blindscore.infra.leases import DEFAULT_LEASE_S
from blindscore.models.linear import LinearModel
from blindscore.protocol import comparison, packing
from blindscore.protocol.application import BandDelivery, BatchMember, EncryptedApplication, EncryptedBatch

BANK = "bank-t"
ADDRESS = "127.0.0.1:50999"
BUREAU = "bureau-t"
PLATFORM = "platform-t"
MODEL = default_model()
ROWS, _ = load_german_credit()
LOG = "blindscore.bureau.flow"
#: Backoff without jitter: 10 s after the first failure, 20 s after the second.
STEADY = RetryPolicy(base_s=10.0, cap_s=1000.0, jitter=0.0)
#: What the in-process link reports per call, so that the report's sums can be checked.
CALL_BYTES = 101


class LocalLink:
    """A BankLink that calls a BankNode in this process: the bureau's flows against the real bank,
    without gRPC. ``fail`` maps a call ("round1", "round2", "deliver", "packed", "circuit",
    "reveal") to the errors its next calls raise, one each, before the bank is reached (or, for
    "packed" and "circuit", after ``spend``); a callable in that list is called instead, and the
    call goes on."""

    def __init__(self, bank: BankNode, fail: dict[str, list[Any]] | None = None) -> None:
        self.bank = bank
        self.fail = fail or {}
        self.stage_ms: dict[str, float] = {}
        self.wire_bytes = 0
        self.calls: list[str] = []
        self.deliveries: list[BandDelivery] = []
        #: The platform each DGK round named to the bank (it files the round's faults under it).
        self.platforms: list[tuple[str, str]] = []

    def _call(self, name: str) -> None:
        self.calls.append(name)
        self.stage_ms[f"bank.{name}"] = 1.0 + self.stage_ms.get(f"bank.{name}", 0.0)
        self.wire_bytes += CALL_BYTES
        errors = self.fail.get(name)
        if errors:
            error = errors.pop(0)
            if isinstance(error, BaseException):
                raise error
            error()

    def _batch(self, ids: tuple[str, ...], platform_id: str) -> Batch:
        return Batch(self.bank.key_id, ids, BUREAU, platform_id)

    def _sender(self) -> tuple[ot.OtSender, bytes]:
        offer = self.bank.packed.setup_start()
        setup, choice = ot.SenderSetup.start(offer)
        return setup.finish(self.bank.packed.setup_finish(choice)), offer.session_id

    def compare_masked(
        self, application_id: str, request: comparison.MaskedRequest, *, platform_id: str = ""
    ) -> comparison.BitsResponse:
        self._call("round1")
        self.platforms.append(("round1", platform_id))
        return self.bank.compare_masked(Run(self.bank.key_id, application_id, BUREAU, platform_id), request)

    def compare_blinded(
        self, application_id: str, request: comparison.BlindedRequest, *, platform_id: str = ""
    ) -> comparison.FinalResponse:
        self._call("round2")
        self.platforms.append(("round2", platform_id))
        return self.bank.compare_blinded(Run(self.bank.key_id, application_id, BUREAU, platform_id), request)

    def deliver_band(self, delivery: BandDelivery) -> None:
        self._call("deliver")
        self.deliveries.append(delivery)
        self.bank.deliver_band(delivery, bureau_id=BUREAU)

    def packed_round(self, batch: PackedRound, finish: Any, *, spend: Callable[[], None]) -> int:
        sender, session_id = self._sender()
        who = self._batch(batch.application_ids, batch.platform_id)
        start = self.bank.packed_start(BatchStart(who, session_id, batch.masked))
        reply, circuit = finish(start.request, sender)
        spend()
        self._call("packed")
        return self.bank.packed_finish(
            BatchFinish(who, start.ticket, reply, circuit, batch.model_id, batch.labels)
        )

    def circuit_round(self, app: CircuitRound, finish: Any, *, spend: Callable[[], None]) -> int:
        sender, session_id = self._sender()
        who = self._batch((app.application_id,), app.platform_id)
        start = self.bank.circuit_start(CircuitStart(who, session_id, app.request))
        garbled = finish(start.request, sender)
        spend()
        self._call("circuit")
        return self.bank.circuit_finish(CircuitFinish(who, start.ticket, garbled, app.model_id, app.labels))

    def circuit_reveal(self, application_id: str, platform_id: str, garbling_id: bytes, pad: bytes) -> int:
        self._call("reveal")
        who = self._batch((application_id,), platform_id)
        return self.bank.circuit_reveal(CircuitReveal(who, garbling_id, pad))


class Links:
    """``link_for``: one LocalLink per job, each remembered with the arguments it was made for."""

    def __init__(self, bank: BankNode, fail: dict[str, list[Any]] | None = None) -> None:
        self.bank = bank
        self.fail = fail if fail is not None else {}
        self.made: list[tuple[str, str, Any, Any]] = []
        self.links: list[LocalLink] = []

    def __call__(self, bank_id: str, address: str, paillier: Any, dgk: Any) -> LocalLink:
        self.made.append((bank_id, address, paillier, dgk))
        link = LocalLink(self.bank, self.fail)
        self.links.append(link)
        return link

    @property
    def calls(self) -> list[str]:
        return [c for link in self.links for c in link.calls]


@pytest.fixture
def bank(tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> Iterator[BankNode]:
    node = BankNode(BANK, paillier_keypair, dgk_keypair, ResultStore(tmp_path / "results.sqlite3"))
    yield node
    node.store.close()


def open_bureau(data: Path, keys: tuple[KeyPair, DGKKeyPair] | None = None, **options: Any) -> BureauNode:
    """A bureau opened on ``data`` (its German model installed), the bank registered when ``keys``."""
    options.setdefault("retry", STEADY)
    node = BureauNode.open(data, **options)
    if keys is not None:
        node.banks.register(BANK, ADDRESS, keys[0].public_key, keys[1].public_key)
    return node


@pytest.fixture
def bureau(tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> Iterator[BureauNode]:
    node = open_bureau(tmp_path / "bureau", (paillier_keypair, dgk_keypair))
    yield node
    node.close()


@pytest.fixture
def dgk_bureau(tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> Iterator[BureauNode]:
    node = open_bureau(tmp_path / "bureau-dgk", (paillier_keypair, dgk_keypair), band_protocol="dgk")
    yield node
    node.close()


def application(
    keys: KeyPair,
    app_id: str,
    row: int = 0,
    *,
    version: str = "",
    consent: str = "consent-1",
    bank_id: str = BANK,
    key_id: str | None = None,
    width: int | None = None,
) -> EncryptedApplication:
    pk = keys.public_key
    values = MODEL.spec.encode_row(ROWS[row])
    cts = tuple(pk.encrypt(v) for v in values)
    if width is not None:
        cts = cts[:width]
    return EncryptedApplication(
        app_id, PLATFORM, bank_id, DEFAULT_MODEL_ID, key_id or pk.key_id, consent, cts, version
    )


def batch_of(keys: KeyPair, batch_id: str, ids: tuple[str, ...], **changes: Any) -> EncryptedBatch:
    pk = keys.public_key
    slot_bits = packing.slot_bits_for(MODEL)
    assert slot_bits is not None
    rows = [MODEL.spec.encode_row(ROWS[i]) for i in range(len(ids))]
    cts = tuple(packing.encrypt_packed(pk, MODEL.spec, slot_bits, rows))
    members = tuple(BatchMember(a, f"consent-{a}") for a in ids)
    batch = EncryptedBatch(
        batch_id, PLATFORM, BANK, DEFAULT_MODEL_ID, pk.key_id, "1", slot_bits, members, cts
    )
    return dataclasses.replace(batch, **changes)


def band_at_bank(bank: BankNode, app_id: str, model_id: str = DEFAULT_MODEL_ID) -> tuple[int, str] | None:
    """The band the bank stored for ``app_id`` (checked to be stored under ``model_id``)."""
    record = bank.store.get(app_id, PLATFORM, BUREAU)
    if record is None:
        return None
    assert record.model_id == model_id
    return record.band, record.band_label


def check_stages(report: ScoreReport, started: float, *names: str) -> None:
    """The bureau's own stages of ``report``: each measured, in milliseconds, within the call."""
    elapsed_ms = (time.perf_counter() - started) * 1e3
    for name in names:
        assert 0.01 < report.stage_ms[name] < elapsed_ms, (name, report.stage_ms[name], elapsed_ms)


def expected(row: int) -> tuple[int, str]:
    band = MODEL.band(ROWS[row])
    return band, MODEL.policy.labels[band]


def audit_rows(node: BureauNode) -> list[tuple[str, ...]]:
    assert node.audit is not None
    return [
        (
            r.platform_id,
            r.bank_id,
            r.application_id,
            r.consent_reference,
            r.model_id,
            r.model_version,
            r.outcome,
        )
        for r in node.audit.records()
    ]


def v1(node: BureauNode) -> str:
    return node.models.version(DEFAULT_MODEL_ID, 1)


def refused_link(*args: Any) -> Any:
    """``link_for`` when no channel to the bank can be had: the work stays pending."""
    raise UnavailableError("no channel")


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOG and r.levelno == level]


def eventually(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait for the retry worker: ``condition`` must hold within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the retry worker did not get there in time"
        time.sleep(0.02)


# ---------------------------------------------------------------------- construction and opening


def test_a_bureau_in_memory_has_its_defaults(tmp_path: Path) -> None:
    node = BureauNode(BankRegistry(tmp_path / "banks"), ModelStore(tmp_path / "models"))
    try:
        assert (node.band_protocol, node.replica_id, node.lease_s) == ("circuit", "", DEFAULT_LEASE_S)
        assert node.retry == RetryPolicy()
        assert node.audit is None
        assert node.applications.url.endswith(":memory:")
        # Batches and the ledger share the applications' database, so ids are checked against both.
        assert node.batches.database is node.applications.database
        assert node.ledger._db is node.applications.database
        # Without an audit trail nothing is recorded, and nothing fails.
        node.record({"platform_id": PLATFORM}, "OK", 1.0)
        node.admit(PLATFORM, BANK, DEFAULT_MODEL_ID, 1, [("a", "c")])
    finally:
        node.close()


def test_the_band_protocol_and_the_lease_are_checked(tmp_path: Path) -> None:
    banks, models = BankRegistry(tmp_path / "banks"), ModelStore(tmp_path / "models")
    with pytest.raises(
        InvalidInputError, match=re.escape("band protocol must be one of ['circuit', 'dgk'], got 'DGK'")
    ):
        BureauNode(banks, models, band_protocol="DGK")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"^lease must be between 0.5 and 3600 seconds$"):
        BureauNode(banks, models, lease_s=0.1)
    node = BureauNode(banks, models, band_protocol="dgk", replica_id="r-2", lease_s=2.0)
    assert (node.band_protocol, node.replica_id, node.lease_s) == ("dgk", "r-2", 2.0)
    node.close()


def test_open_installs_the_default_model_once_and_shares_one_file(tmp_path: Path) -> None:
    data = tmp_path / "b"
    policy = RetryPolicy(base_s=1.0, cap_s=2.0, jitter=0.0)
    node = BureauNode.open(data, retry=policy, band_protocol="dgk", replica_id="r-1", lease_s=3.0)
    try:
        assert [v.version for v in node.models.versions(DEFAULT_MODEL_ID)] == [1]
        assert (node.retry, node.band_protocol, node.replica_id, node.lease_s) == (policy, "dgk", "r-1", 3.0)
        assert node.applications.url.endswith(str(data / APPLICATIONS_FILE))
        # Where `blindscore model import` puts models and the start-up lock guards both.
        assert (node.models.directory, node.banks.directory) == (data / "models", data / "banks")
        assert node.audit is not None and node.audit.database is node.applications.database
        assert node._database is None
    finally:
        node.close()
    again = BureauNode.open(data)
    try:
        assert [v.version for v in again.models.versions(DEFAULT_MODEL_ID)] == [1]
        assert (again.band_protocol, again.replica_id, again.lease_s) == ("circuit", "", DEFAULT_LEASE_S)
    finally:
        again.close()


def test_open_keeps_an_audit_file_of_its_own_when_one_exists(tmp_path: Path) -> None:
    data = tmp_path / "b"
    data.mkdir(mode=0o700)
    AuditLog(data / LEGACY_FILE).close()
    node = BureauNode.open(data)
    try:
        assert node.audit is not None
        assert node.audit.database is not node.applications.database
        assert node.audit.database.url.endswith(LEGACY_FILE)
    finally:
        node.close()


def test_open_with_a_database_url_puts_everything_in_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'one.sqlite3'}"
    policy = RetryPolicy(base_s=1.0, cap_s=2.0, jitter=0.0)
    node = BureauNode.open(
        tmp_path / "b", url, retry=policy, band_protocol="dgk", replica_id="r-3", lease_s=4.0
    )
    try:
        assert node._database is not None
        assert node.applications.database is node._database
        data = tmp_path / "b"
        assert (node.models.directory, node.banks.directory) == (data / "models", data / "banks")
        assert node.audit is not None and node.audit.database is node._database
        assert (node.retry, node.band_protocol, node.replica_id, node.lease_s) == (policy, "dgk", "r-3", 4.0)
        assert [v.version for v in node.models.versions(DEFAULT_MODEL_ID)] == [1]
    finally:
        node.close()
    with pytest.raises(InvalidInputError, match="band protocol must be one of"):
        BureauNode.open(tmp_path / "b", url, band_protocol="x")  # type: ignore[arg-type]
    defaults = BureauNode.open(tmp_path / "b", url)
    try:
        assert (defaults.band_protocol, defaults.replica_id, defaults.lease_s) == ("circuit", "", 30.0)
        assert defaults.retry == RetryPolicy()
    finally:
        defaults.close()


# ---------------------------------------------------------------------- the audit trail


def test_records_name_the_model_version_and_blank_what_would_be_refused(bureau: BureauNode) -> None:
    bureau.record_many(
        [
            {"platform_id": PLATFORM, "bank_id": BANK, "application_id": "a-1",
             "consent_reference": "consent 1 (signed)", "model_id": DEFAULT_MODEL_ID, "model_version": "1"},
            {"platform_id": "bad id", "bank_id": "b\x00", "application_id": "", "consent_reference": "c\x07",
             "model_id": DEFAULT_MODEL_ID, "model_version": "x"},
            {"platform_id": PLATFORM, "model_id": "no-such-model"},
            {"platform_id": PLATFORM, "model_id": "bad model"},
            {"platform_id": PLATFORM, "model_id": DEFAULT_MODEL_ID, "model_version": "1"},
            {"platform_id": PLATFORM, "model_id": DEFAULT_MODEL_ID},
            {},
        ],
        "INVALID_ARGUMENT",
        12.5,
    )  # fmt: skip
    label = v1(bureau)
    assert label.startswith("v1 sha256:")
    assert audit_rows(bureau) == [
        (PLATFORM, BANK, "a-1", "consent 1 (signed)", DEFAULT_MODEL_ID, label, "INVALID_ARGUMENT"),
        ("", "", "", "", DEFAULT_MODEL_ID, "", "INVALID_ARGUMENT"),
        (PLATFORM, "", "", "", "no-such-model", "", "INVALID_ARGUMENT"),
        (PLATFORM, "", "", "", "", "", "INVALID_ARGUMENT"),
        (PLATFORM, "", "", "", DEFAULT_MODEL_ID, label, "INVALID_ARGUMENT"),
        (PLATFORM, "", "", "", DEFAULT_MODEL_ID, label, "INVALID_ARGUMENT"),
        ("", "", "", "", "", "", "INVALID_ARGUMENT"),
    ]
    assert bureau.audit is not None
    assert {r.duration_us for r in bureau.audit.records()} == {12500}
    # One record through `record`, none for an empty list.
    bureau.record({"platform_id": PLATFORM, "application_id": "a-2"}, "OK", 2.0)
    bureau.record_many([], "OK", 1.0)
    assert audit_rows(bureau)[7:] == [(PLATFORM, "", "a-2", "", "", "", "OK")]


def test_audit_writes_sync_unless_accepted_into_a_shared_database(
    bureau: BureauNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert bureau.audit is not None
    syncs: list[bool] = []
    real = bureau.audit.append_many

    def spy(entries: Any, *, sync: bool = True) -> Any:
        syncs.append(sync)
        return real(entries, sync=sync)

    monkeypatch.setattr(bureau.audit, "append_many", spy)
    bureau.record({"platform_id": PLATFORM}, "OK", 1.0)
    bureau.record_many([{"platform_id": PLATFORM}], "OK", 1.0, sync=False)
    bureau.admit(PLATFORM, BANK, DEFAULT_MODEL_ID, 1, [("a-1", "c-1"), ("a-2", "c-2")])
    assert syncs == [True, False, False]
    assert bureau.audit is not None
    assert [r.duration_us for r in bureau.audit.records()] == [1000, 1000, 0, 0]
    assert audit_rows(bureau)[2:] == [
        (PLATFORM, BANK, "a-1", "c-1", DEFAULT_MODEL_ID, v1(bureau), ACCEPTED),
        (PLATFORM, BANK, "a-2", "c-2", DEFAULT_MODEL_ID, v1(bureau), ACCEPTED),
    ]
    # A trail in a file of its own syncs its ACCEPTED records itself.
    data = tmp_path / "own"
    data.mkdir(mode=0o700)
    AuditLog(data / LEGACY_FILE).close()
    own = BureauNode.open(data)
    try:
        assert own.audit is not None
        own_syncs: list[bool] = []
        own_real = own.audit.append_many

        def own_spy(entries: Any, *, sync: bool = True) -> Any:
            own_syncs.append(sync)
            return own_real(entries, sync=sync)

        monkeypatch.setattr(own.audit, "append_many", own_spy)
        own.admit(PLATFORM, BANK, DEFAULT_MODEL_ID, 1, [("a-1", "c-1")])
        assert own_syncs == [True]
    finally:
        own.close()


def test_admit_fails_closed_when_the_trail_cannot_be_written(
    bureau: BureauNode, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert bureau.audit is not None

    def broken(entries: Any, *, sync: bool = True) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(bureau.audit, "append_many", broken)
    caplog.set_level(logging.ERROR, LOG)
    refusal = "^the audit trail cannot be written; nothing was scored$"
    with pytest.raises(UnavailableError, match=refusal) as info:
        bureau.admit(PLATFORM, BANK, DEFAULT_MODEL_ID, 1, [("a 1", "c"), ("a-2", "c")])
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert messages(caplog, logging.ERROR) == [
        f"cannot append the audit record of 2 application(s) of {PLATFORM} (first 'a 1'); refused"
    ]
    assert all(r.exc_info is not None for r in caplog.records if r.name == LOG)


def test_admit_records_nothing_for_no_members(bureau: BureauNode) -> None:
    bureau.admit(PLATFORM, BANK, DEFAULT_MODEL_ID, 1, [])
    assert audit_rows(bureau) == []


# ---------------------------------------------------------------------- keys and specs


def test_bank_key_and_model_spec(bureau: BureauNode, paillier_keypair: KeyPair, tmp_path: Path) -> None:
    pk = paillier_keypair.public_key
    assert bureau.bank_key(BANK, pk.key_id) == pk
    with pytest.raises(NotFoundError, match=f"^bank {BANK!r} has no registered key 'pk-x'$"):
        bureau.bank_key(BANK, "pk-x")
    spec = bureau.model_spec(DEFAULT_MODEL_ID)
    assert (spec.model_id, spec.version) == (DEFAULT_MODEL_ID, "1")
    assert spec.feature_spec == MODEL.spec.to_dict()
    assert (spec.slot_bits, spec.max_slots) == (packing.slot_bits_for(MODEL), packing.max_slots_for(MODEL))
    assert bureau.model_spec(DEFAULT_MODEL_ID, "1") == spec
    document = {k: v for k, v in MODEL.to_dict().items() if k != "encoded"}
    bureau.models.put(DEFAULT_MODEL_ID, LinearModel.from_dict({**document, "intercept": 0.5}))
    assert bureau.model_spec(DEFAULT_MODEL_ID, "1") == spec
    assert bureau.model_spec(DEFAULT_MODEL_ID).version == "2"
    bureau.models.put("gbdt", demo_model("gbdt"))
    trees = bureau.model_spec("gbdt", "latest")
    assert (trees.model_id, trees.version, trees.slot_bits, trees.max_slots) == ("gbdt", "1", 0, 0)


# ---------------------------------------------------------------------- one application, circuit band


def test_an_application_is_scored_by_circuit_and_its_band_reaches_the_bank(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    links = Links(bank)
    app = application(paillier_keypair, "app-1", 1)
    started = time.perf_counter()
    report = bureau.submit(app, links)
    check_stages(report, started, "bureau.evaluate", "bureau.garble")
    assert "bureau-leases" in {t.name for t in threading.enumerate()}
    assert bureau._leases.held() == [] and bureau._inflight == set()
    assert band_at_bank(bank, "app-1") == expected(1)
    assert links.made == [(BANK, ADDRESS, paillier_keypair.public_key, dgk_keypair.public_key)]
    assert links.calls == ["circuit", "reveal"]
    assert (report.model_version, report.pending, report.replayed) == (1, False, False)
    assert report.wire_bytes == 2 * CALL_BYTES
    assert set(report.stage_ms) == {"bureau.evaluate", "bureau.garble", "bank.circuit", "bank.reveal"}
    assert report.stage_ms["bank.circuit"] == report.stage_ms["bank.reveal"] == 1.0
    stored = bureau.applications.get(PLATFORM, "app-1")
    assert stored is not None
    assert (stored.state, stored.model_version, stored.ciphertexts, stored.width) == (
        DELIVERED,
        1,
        None,
        MODEL.spec.encoded_width,
    )
    assert stored.receipt_fields() == {
        "stage_ms": report.stage_ms, "wire_bytes": report.wire_bytes, "model_version": "1"
    }  # fmt: skip
    assert audit_rows(bureau) == [
        (PLATFORM, BANK, "app-1", "consent-1", DEFAULT_MODEL_ID, v1(bureau), ACCEPTED)
    ]
    assert bureau._circuit_rounds == {}
    assert bureau.ledger.revealed_round(PLATFORM, "app-1") is not None
    # The same application again: the stored outcome, nothing run, no second ACCEPTED record.
    again = bureau.submit(app, links)
    assert again == ScoreReport(report.stage_ms, report.wire_bytes, 1, replayed=True)
    assert len(links.made) == 1 and len(audit_rows(bureau)) == 1
    # The same id with another payload is refused.
    with pytest.raises(
        AlreadyExistsError,
        match=r"^application 'app-1' of platform 'platform-t' was already submitted with a different "
        r"payload; a new application needs a new id$",
    ):
        bureau.submit(application(paillier_keypair, "app-1", 2), links)


def test_a_submission_keeps_the_ciphertexts_as_they_arrived(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair
) -> None:
    pk = paillier_keypair.public_key
    app = application(paillier_keypair, "held")
    # Stored (and digested) as given, never re-encoded: here the bytes of another encryption of
    # the same row, which no re-encoding of ``app.ciphertexts`` gives.
    packed = pk.pack(application(paillier_keypair, "held").ciphertexts)
    assert packed != pk.pack(app.ciphertexts)
    links = Links(bank, {"circuit": [UnavailableError("bank away")]})
    report = bureau.submit(app, links, packed=packed)
    assert report == ScoreReport({}, 0, 1, pending=True)
    stored = bureau.applications.get(PLATFORM, "held")
    assert stored is not None
    assert (stored.ciphertexts, stored.width, stored.key_id, stored.bank_id) == (
        packed, MODEL.spec.encoded_width, pk.key_id, BANK
    )  # fmt: skip
    # Without ``packed`` the bureau packs them itself (the same fixed-width encoding).
    other = application(paillier_keypair, "packed-here")
    bureau.submit(other, Links(bank, {"circuit": [UnavailableError("bank away")]}))
    row = bureau.applications.get(PLATFORM, "packed-here")
    assert row is not None and row.ciphertexts == pk.pack(other.ciphertexts)
    assert (row.platform_id, row.model_id, row.consent_reference) == (PLATFORM, DEFAULT_MODEL_ID, "consent-1")


def test_a_submission_is_checked_before_it_is_stored(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair
) -> None:
    links = Links(bank)
    width = MODEL.spec.encoded_width
    with pytest.raises(
        InvalidInputError,
        match=f"^model {DEFAULT_MODEL_ID!r} v1 takes {width} encrypted features, got {width - 1}$",
    ):
        bureau.submit(application(paillier_keypair, "short", width=width - 1), links)
    with pytest.raises(NotFoundError, match=r"^no bank registered under id 'bank-u'$"):
        bureau.submit(application(paillier_keypair, "who", bank_id="bank-u"), links)
    with pytest.raises(NotFoundError, match=f"^bank {BANK!r} has no registered key 'pk-nope'$"):
        bureau.submit(application(paillier_keypair, "which", key_id="pk-nope"), links)
    with pytest.raises(NotFoundError, match=r"^model 'german-credit-lr' has no version 9 \(versions: 1\)$"):
        bureau.submit(application(paillier_keypair, "v9", version="9"), links)
    assert bureau.applications.counts() == {PENDING: 0, DELIVERED: 0, FAILED: 0}
    assert links.made == [] and audit_rows(bureau) == []


def test_latest_binds_to_the_version_first_accepted(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair, tmp_path: Path
) -> None:
    links = Links(bank, {"circuit": [UnavailableError("away")]})
    app = application(paillier_keypair, "late")
    assert bureau.submit(app, links).pending
    # A new version is imported; "latest" still names v1 for this application.
    document = {k: v for k, v in MODEL.to_dict().items() if k != "encoded"}
    bumped = LinearModel.from_dict({**document, "intercept": MODEL.intercept + 1.0})
    assert bureau.models.put(DEFAULT_MODEL_ID, bumped).version == 2
    again = bureau.submit(app, links)
    assert again == ScoreReport({}, 0, 1, pending=True, replayed=True)
    assert bureau.submit(dataclasses.replace(app, model_version="1"), links) == again
    # Naming v2 is another payload under the same id.
    with pytest.raises(AlreadyExistsError, match=r"^application 'late' of platform"):
        bureau.submit(dataclasses.replace(app, model_version="2"), links)
    # A new application on "latest" gets v2.
    fresh = bureau.submit(application(paillier_keypair, "new"), Links(bank))
    assert fresh.model_version == 2


# ---------------------------------------------------------------------- one application, DGK band


def test_an_application_is_scored_by_the_dgk_rounds(
    dgk_bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair
) -> None:
    links = Links(bank)
    started = time.perf_counter()
    report = dgk_bureau.submit(application(paillier_keypair, "dgk-1", 4), links)
    check_stages(report, started, "bureau.evaluate", "bureau.round1", "bureau.round2", "bureau.finish")
    assert band_at_bank(bank, "dgk-1") == expected(4)
    assert bank.store.runs(BUREAU, "dgk-1", PLATFORM) == (1, False, "band")
    assert links.calls == ["round1", "round2", "deliver"]
    assert links.links[0].platforms == [("round1", PLATFORM), ("round2", PLATFORM)]
    (delivery,) = links.links[0].deliveries
    assert (delivery.application_id, delivery.key_id, delivery.model_id, delivery.platform_id) == (
        "dgk-1", paillier_keypair.public_key.key_id, DEFAULT_MODEL_ID, PLATFORM
    )  # fmt: skip
    assert delivery.band_labels == MODEL.policy.labels and isinstance(delivery.band_ciphertext, int)
    assert set(report.stage_ms) == {
        "bureau.evaluate", "bureau.round1", "bureau.round2", "bureau.finish",
        "bank.round1", "bank.round2", "bank.deliver",
    }  # fmt: skip
    assert (report.wire_bytes, report.model_version) == (3 * CALL_BYTES, 1)
    kept = dgk_bureau.ledger.band_ciphertext(PLATFORM, "dgk-1")
    assert kept is not None
    (held,) = paillier_keypair.public_key.unpack(kept, 1)
    assert int(held) == delivery.band_ciphertext


def test_a_lost_delivery_sends_the_kept_band_again(
    dgk_bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, LOG)
    links = Links(bank, {"deliver": [UnavailableError("bank away"), UnavailableError("still away")]})
    before = time.time()
    report = dgk_bureau.submit(application(paillier_keypair, "again", 2), links)
    assert report == ScoreReport({}, 0, 1, pending=True)
    stored = dgk_bureau.applications.get(PLATFORM, "again")
    assert stored is not None
    assert (stored.state, stored.attempts, stored.error_code, stored.error_message) == (
        PENDING, 1, "UNAVAILABLE", "bank away"
    )  # fmt: skip
    assert before + 10.0 <= stored.next_attempt_at <= time.time() + 10.0
    assert (stored.claimed_by, stored.lease_until) == ("", 0.0)
    assert messages(caplog, logging.WARNING) == [
        f"application again of {PLATFORM} is pending (attempt 1: bank away); retrying in 10.0 s"
    ]
    # The retry worker's way in, twice: the kept [band] is delivered again, no comparison re-run.
    assert dgk_bureau._run(stored, links).pending
    stored = dgk_bureau.applications.get(PLATFORM, "again")
    assert stored is not None and (stored.attempts, stored.error_message) == (2, "still away")
    assert before + 20.0 <= stored.next_attempt_at <= time.time() + 20.0
    done = dgk_bureau._run(stored, links)
    assert not done.pending and done.model_version == 1
    assert set(done.stage_ms) == {"bank.deliver"}
    assert links.calls == ["round1", "round2", "deliver", "deliver", "deliver"]
    first, second, third = (link.deliveries for link in links.links)
    assert first == [] and second == [] and len(third) == 1
    kept = dgk_bureau.ledger.band_ciphertext(PLATFORM, "again")
    assert kept is not None
    assert third[0].band_ciphertext == int(paillier_keypair.public_key.unpack(kept, 1)[0])
    assert band_at_bank(bank, "again") == expected(2)
    row = dgk_bureau.applications.get(PLATFORM, "again")
    assert row is not None and row.state == DELIVERED


def test_other_families_take_the_circuit_even_under_dgk(
    dgk_bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair
) -> None:
    trees = demo_model("gbdt")
    dgk_bureau.models.put("gbdt", trees)
    pk = paillier_keypair.public_key
    row = 0
    cts = tuple(pk.encrypt(v) for v in trees.spec.encode_row(ROWS[row]))
    app = EncryptedApplication("tree-1", PLATFORM, BANK, "gbdt", pk.key_id, "c", cts)
    links = Links(bank)
    report = dgk_bureau.submit(app, links)
    assert links.calls == ["circuit", "reveal"]
    band = trees.band(ROWS[row])
    assert band_at_bank(bank, "tree-1", "gbdt") == (band, trees.policy.labels[band])
    assert report.model_version == 1


# ---------------------------------------------------------------------- how a run ends


def test_a_refusal_by_the_bank_fails_the_application_for_good(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair
) -> None:
    refusal = PeerError("bank", "INVALID_ARGUMENT", "labels refused")
    links = Links(bank, {"reveal": [refusal]})
    app = application(paillier_keypair, "refused")
    with pytest.raises(PeerError, match=r"^bank: labels refused$"):
        bureau.submit(app, links)
    stored = bureau.applications.get(PLATFORM, "refused")
    assert stored is not None
    assert (stored.state, stored.error_code, stored.error_message, stored.ciphertexts) == (
        FAILED, "INVALID_ARGUMENT", "bank: labels refused", None
    )  # fmt: skip
    # A resubmission is answered with the same status and message, without running anything.
    with pytest.raises(StoredFailure, match=r"^bank: labels refused$") as info:
        bureau.submit(app, links)
    assert info.value.code == "INVALID_ARGUMENT"
    assert links.calls == ["circuit", "reveal"]


def test_a_retryable_peer_error_keeps_its_code(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair
) -> None:
    links = Links(bank, {"circuit": [PeerError("bank", "RESOURCE_EXHAUSTED", "busy")]})
    assert bureau.submit(application(paillier_keypair, "busy"), links).pending
    stored = bureau.applications.get(PLATFORM, "busy")
    assert stored is not None
    assert (stored.state, stored.attempts, stored.error_code, stored.error_message) == (
        PENDING, 1, "RESOURCE_EXHAUSTED", "bank: busy"
    )  # fmt: skip


def test_our_own_failure_stays_pending_and_is_raised(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair
) -> None:
    links = Links(bank, {"circuit": [RuntimeError("bug")]})
    app = application(paillier_keypair, "bug")
    before = time.time()
    with pytest.raises(RuntimeError, match=r"^bug$"):
        bureau.submit(app, links)
    stored = bureau.applications.get(PLATFORM, "bug")
    assert stored is not None
    assert (stored.state, stored.attempts, stored.error_code, stored.error_message) == (
        PENDING, 1, "INTERNAL", "RuntimeError"
    )  # fmt: skip
    assert before + 10.0 <= stored.next_attempt_at <= time.time() + 10.0
    # Answered as pending from now on.
    assert bureau.submit(app, links) == ScoreReport({}, 0, 1, pending=True, replayed=True)


def test_a_lost_lease_stops_the_work_quietly(
    tmp_path: Path,
    bank: BankNode,
    paillier_keypair: KeyPair,
    dgk_keypair: DGKKeyPair,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, LOG)
    node = open_bureau(tmp_path / "r9", (paillier_keypair, dgk_keypair), replica_id="r-9", lease_s=5.0)
    try:
        lost = LeaseLostError("lost the lease on application 'x'")
        links = Links(bank, {"circuit": [lost]})
        before = time.time()
        report = node.submit(application(paillier_keypair, "taken"), links)
        assert report == ScoreReport({}, 0, 1, pending=True)
        stored = node.applications.get(PLATFORM, "taken")
        assert stored is not None and (stored.state, stored.attempts, stored.error_code) == (PENDING, 0, "")
        # As accepted: claimed by this replica for one lease, first due when that lease ends.
        assert (stored.claimed_by, stored.claim) == ("r-9", 1)
        assert before + 5.0 <= stored.next_attempt_at <= time.time() + 5.0
        assert before + 4.0 <= stored.lease_until <= time.time() + 6.0
        assert messages(caplog, logging.WARNING) == ["lost the lease on application 'x'"]
        assert node._leases.held() == []
    finally:
        node.close()


def test_a_stale_claim_writes_nothing(bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair) -> None:
    """Work that ends (pending again, or failed) under a claim another replica has replaced."""
    for app_id, error in (
        ("stale-1", UnavailableError("again")),
        ("stale-2", PeerError("bank", "INVALID_ARGUMENT", "no")),
        ("stale-3", RuntimeError("bug")),
    ):
        links = Links(bank, {"circuit": [UnavailableError("away"), error]})
        assert bureau.submit(application(paillier_keypair, app_id), links).pending
        (row,) = bureau.applications.claim_due("other", 60.0, time.time() + 100.0, 8)
        assert bureau._run(dataclasses.replace(row, claim=1), links) == ScoreReport({}, 0, 1, pending=True)
        after = bureau.applications.get(PLATFORM, app_id)
        assert after is not None
        assert (after.state, after.attempts, after.error_message, after.claimed_by, after.claim) == (
            PENDING, 1, "away", "other", 2
        )  # fmt: skip


def test_a_revealed_round_is_revealed_again_not_run_again(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair
) -> None:
    links = Links(bank, {"reveal": [UnavailableError("away")]})
    assert bureau.submit(application(paillier_keypair, "pad", 3), links).pending
    revealed = bureau.ledger.revealed_round(PLATFORM, "pad")
    assert revealed is not None and band_at_bank(bank, "pad") is None
    stored = bureau.applications.get(PLATFORM, "pad")
    assert stored is not None
    done = bureau._run(stored, links)
    assert not done.pending and set(done.stage_ms) == {"bank.reveal"}
    assert links.calls == ["circuit", "reveal", "reveal"]
    assert band_at_bank(bank, "pad") == expected(3)
    assert bureau.ledger.revealed_round(PLATFORM, "pad") == revealed


def test_a_claim_taken_over_stops_a_delivery_of_kept_work(
    bureau: BureauNode, dgk_bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair
) -> None:
    for node, kind in ((bureau, "reveal"), (dgk_bureau, "deliver")):
        links = Links(bank, {kind: [UnavailableError("away")]})
        app_id = f"fenced-{kind}"
        assert node.submit(application(paillier_keypair, app_id), links).pending
        # Another replica claims the row: this one's claim (the row as first accepted) is stale.
        (row,) = node.applications.claim_due("other", 60.0, time.time() + 100.0, 8)
        assert row.claim == 2
        stale = dataclasses.replace(row, claim=1)
        assert node._run(stale, links) == ScoreReport({}, 0, 1, pending=True)
        assert links.calls.count(kind) == 1
        # A claim the renewal found lost stops it before the database is asked.
        fence = node.applications.fence(row)
        node._leases._lost.add(fence)
        with pytest.raises(LeaseLostError, match=r"^lost the lease on application "):
            node._check_lease(row)
        node._leases._lost.discard(fence)
        node._check_lease(row)
        # A row read without a claim is not checked at all.
        node._check_lease(dataclasses.replace(row, claim=0))
        assert node._fence_of(dataclasses.replace(row, claim=0)) is None


def test_a_takeover_during_the_last_call_leaves_the_row_to_the_new_owner(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair
) -> None:
    def takeover() -> None:  # this replica's lease lapses and another one claims the row
        row = bureau.applications.get(PLATFORM, "late-1")
        assert row is not None
        bureau.applications.release([bureau.applications.fence(row)], time.time())
        assert len(bureau.applications.claim_due("other", 60.0, time.time() + 100.0, 8)) == 1

    links = Links(bank, {"reveal": [takeover]})
    report = bureau.submit(application(paillier_keypair, "late-1", 6), links)
    assert report == ScoreReport({}, 0, 1, pending=True)
    assert band_at_bank(bank, "late-1") == expected(6)  # the reveal went through; the new owner repeats it
    row = bureau.applications.get(PLATFORM, "late-1")
    assert row is not None and (row.state, row.claimed_by, row.claim, row.attempts) == (
        PENDING,
        "other",
        2,
        0,
    )


@pytest.mark.parametrize("kind", ["circuit", "dgk", "batch"])
def test_a_stale_claim_sends_nothing_to_the_bank(
    tmp_path: Path, bank: BankNode, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, kind: str
) -> None:
    """A row another replica took over: its ledger write (the round spent, the pad or the [band]
    kept) is fenced, so nothing that would need it reaches the bank."""
    protocol = "dgk" if kind == "dgk" else "circuit"
    node = open_bureau(tmp_path / kind, (paillier_keypair, dgk_keypair), band_protocol=protocol)
    store: Any
    try:
        if kind == "batch":
            assert node.submit_batch(batch_of(paillier_keypair, "sb", ("sb0",)), refused_link).pending
            store, row_id, app_id = node.batches, "sb", "sb0"
        else:
            assert node.submit(application(paillier_keypair, "sa"), refused_link).pending
            store, row_id, app_id = node.applications, "sa", "sa"
        (row,) = store.claim_due("other", 60.0, time.time() + 100.0, 8)
        links = Links(bank)
        assert node._run(dataclasses.replace(row, claim=1), links) == ScoreReport({}, 0, 1, pending=True)
        assert band_at_bank(bank, app_id) is None
        assert "deliver" not in links.calls and "reveal" not in links.calls and "packed" not in links.calls
        assert node.ledger.revealed_round(PLATFORM, app_id) is None
        assert node.ledger.band_ciphertext(PLATFORM, app_id) is None
        assert not node.ledger.batch_spent(PLATFORM, row_id)
    finally:
        node.close()


def test_at_most_max_circuit_rounds_are_sent_for_one_application(
    bureau: BureauNode, tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    store = ResultStore(tmp_path / "many.sqlite3")
    bank = BankNode(BANK, paillier_keypair, dgk_keypair, store, limits=RunLimits(max_runs=10))
    unconfirmed = [UnavailableError(f"no answer {i}") for i in range(MAX_CIRCUIT_ROUNDS)]
    links = Links(bank, {"circuit": unconfirmed})
    app_id = "rounds-" + "r" * 100  # named by its first 64 characters
    assert bureau.submit(application(paillier_keypair, app_id), links).pending
    for _ in range(MAX_CIRCUIT_ROUNDS - 1):
        stored = bureau.applications.get(PLATFORM, app_id)
        assert stored is not None
        assert bureau._run(stored, links).pending
    assert links.calls == ["circuit"] * MAX_CIRCUIT_ROUNDS
    stored = bureau.applications.get(PLATFORM, app_id)
    assert stored is not None
    message = (
        f"application {app_id[:64]!r}: the bank did not confirm any of its {MAX_CIRCUIT_ROUNDS} "
        "garbled-circuit rounds; it is not run again (submit it again under a new id if it must be scored)"
    )
    with pytest.raises(PreconditionError, match=f"^{re.escape(message)}$"):
        bureau._run(stored, links)
    assert links.calls == ["circuit"] * MAX_CIRCUIT_ROUNDS
    failed = bureau.applications.get(PLATFORM, app_id)
    assert failed is not None and (failed.state, failed.error_code, failed.error_message) == (
        FAILED, "FAILED_PRECONDITION", message
    )  # fmt: skip
    store.close()


def test_circuit_rounds_are_counted_per_application(bureau: BureauNode) -> None:
    for _ in range(MAX_CIRCUIT_ROUNDS):
        assert bureau._count_circuit_round("p", "a")
    assert not bureau._count_circuit_round("p", "a")
    assert bureau._count_circuit_round("p", "b")
    assert bureau._count_circuit_round("q", "a")
    assert bureau._circuit_rounds == {("p", "a"): MAX_CIRCUIT_ROUNDS, ("p", "b"): 1, ("q", "a"): 1}


def test_a_claim_in_flight_is_held_once(bureau: BureauNode) -> None:
    key = ("application", "p", "a")
    assert bureau._claim(key)
    assert not bureau._claim(key)
    assert bureau._claim(("application", "p", "b"))
    bureau._release(key)
    assert bureau._claim(key)


def test_a_stored_row_without_ciphertexts_has_no_job(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    assert bureau.submit(
        application(paillier_keypair, "gone"), Links(bank, {"circuit": [UnavailableError("x")]})
    ).pending
    stored = bureau.applications.get(PLATFORM, "gone")
    assert stored is not None
    # A newer version imported since: the row keeps the version it was accepted with.
    document = {k: v for k, v in MODEL.to_dict().items() if k != "encoded"}
    bureau.models.put(DEFAULT_MODEL_ID, LinearModel.from_dict({**document, "intercept": 0.5}))
    job = bureau._job_of(stored)
    assert job.bank.bank_id == BANK and job.paillier == paillier_keypair.public_key
    assert job.dgk == dgk_keypair.public_key
    assert job.model.version == 1 and job.model.name == DEFAULT_MODEL_ID
    assert [int(c) for c in job.ciphertexts] == [
        int(c) for c in paillier_keypair.public_key.unpack(stored.ciphertexts or b"", stored.width)
    ]
    with pytest.raises(InvalidInputError, match=r"^application 'gone' has no stored ciphertexts$"):
        bureau._job_of(dataclasses.replace(stored, ciphertexts=None))


# ---------------------------------------------------------------------- packed batches


def test_a_packed_batch_scores_every_member(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair
) -> None:
    ids = ("m0", "m1", "m2", "m3")
    links = Links(bank)
    batch = batch_of(paillier_keypair, "batch-1", ids)
    started = time.perf_counter()
    report = bureau.submit_batch(batch, links)
    check_stages(report, started, "bureau.evaluate", "bureau.garble")
    assert [band_at_bank(bank, a) for a in ids] == [expected(i) for i in range(4)]
    assert links.calls == ["packed"]
    assert (report.model_version, report.pending, report.replayed) == (1, False, False)
    assert report.wire_bytes == CALL_BYTES // 4
    assert set(report.stage_ms) == {"bureau.evaluate", "bureau.garble", "bank.packed"}
    assert report.stage_ms["bank.packed"] == 1.0 / 4
    assert audit_rows(bureau) == [
        (PLATFORM, BANK, a, f"consent-{a}", DEFAULT_MODEL_ID, v1(bureau), ACCEPTED) for a in ids
    ]
    stored = bureau.batches.get(PLATFORM, "batch-1")
    assert stored is not None and stored.state == DELIVERED
    assert (stored.slot_bits, stored.members, stored.model_version) == (
        batch.slot_bits, tuple((a, f"consent-{a}") for a in ids), 1
    )  # fmt: skip
    assert bureau.ledger.batch_spent(PLATFORM, "batch-1")
    # The same batch again: its stored outcome.
    assert bureau.submit_batch(batch, links) == dataclasses.replace(report, replayed=True)
    assert links.calls == ["packed"]


def test_a_batch_keeps_its_columns_as_they_arrived(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair
) -> None:
    pk = paillier_keypair.public_key
    batch = batch_of(paillier_keypair, "held-batch", ("h0", "h1"))
    packed = pk.pack(batch_of(paillier_keypair, "held-batch", ("h0", "h1")).ciphertexts)  # as given
    assert packed != pk.pack(batch.ciphertexts)
    links = Links(bank, {"packed": [UnavailableError("away")]})
    assert bureau.submit_batch(batch, links, packed=packed) == ScoreReport({}, 0, 1, pending=True)
    stored = bureau.batches.get(PLATFORM, "held-batch")
    assert stored is not None and stored.state == PENDING
    assert (stored.ciphertexts, stored.width) == (packed, len(batch.ciphertexts))
    # Its evaluation round was spent before the failing call: it is not run again.
    with pytest.raises(PreconditionError, match=r"^batch 'held-batch': its evaluation round was sent"):
        bureau._run(stored, links)
    assert links.calls == ["packed"]


def test_a_spent_batch_is_not_run_again(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair
) -> None:
    batch_id = "spent-" + "s" * 100  # named by its first 64 characters
    batch = batch_of(paillier_keypair, batch_id, ("s0",))
    assert bureau.ledger.spend_batch(PLATFORM, batch_id)
    message = (
        f"batch {batch_id[:64]!r}: its evaluation round was sent to the bank before and not confirmed; "
        "it is not run again, since a second run could tell a deviating bank more than one band per "
        "application (submit the applications again under new ids if they must be scored)"
    )
    links = Links(bank)
    with pytest.raises(PreconditionError, match=f"^{re.escape(message)}$"):
        bureau.submit_batch(batch, links)
    assert links.made == []
    stored = bureau.batches.get(PLATFORM, batch_id)
    assert stored is not None and (stored.state, stored.error_code) == (FAILED, "FAILED_PRECONDITION")


def test_a_batch_spent_meanwhile_is_not_sent(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spent by another replica between the check and the send: the spend itself refuses."""
    assert bureau.ledger.spend_batch(PLATFORM, "raced")
    monkeypatch.setattr(bureau.ledger, "batch_spent", lambda platform_id, batch_id: False)
    links = Links(bank)
    with pytest.raises(PreconditionError, match=r"^batch 'raced': its evaluation round was sent to the bank"):
        bureau.submit_batch(batch_of(paillier_keypair, "raced", ("r0",)), links)
    assert "packed" not in links.calls and band_at_bank(bank, "r0") is None
    stored = bureau.batches.get(PLATFORM, "raced")
    assert stored is not None and (stored.state, stored.error_code) == (FAILED, "FAILED_PRECONDITION")


def test_a_stored_batch_is_not_checked_again(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    """A batch id stored before answers with its outcome, or refuses another payload as such."""
    # A newer model version imported meanwhile: a batch for v1 is scored with v1.
    document = {k: v for k, v in MODEL.to_dict().items() if k != "encoded"}
    bureau.models.put(DEFAULT_MODEL_ID, LinearModel.from_dict({**document, "intercept": 0.5}))
    links = Links(bank)
    batch = batch_of(paillier_keypair, "once", ("o0", "o1"))
    report = bureau.submit_batch(batch, links)
    assert report.model_version == 1
    # Its ACCEPTED records name the version admitted, not the latest.
    assert {row[5] for row in audit_rows(bureau)} == {v1(bureau)} != {bureau.models.version(DEFAULT_MODEL_ID)}
    assert [band_at_bank(bank, a) for a in ("o0", "o1")] == [expected(0), expected(1)]
    assert links.made == [(BANK, ADDRESS, paillier_keypair.public_key, dgk_keypair.public_key)]
    with pytest.raises(
        AlreadyExistsError,
        match=r"^batch 'once' of platform 'platform-t' was already submitted with a different payload",
    ):
        bureau.submit_batch(dataclasses.replace(batch, slot_bits=batch.slot_bits + 1), links)


def test_a_key_registered_by_another_process_is_found(
    bureau: BureauNode, second_paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    """Another bureau process on the same data directory registered the bank's new key; each call
    below starts from a registry read before that (a lookup that finds the key caches it)."""
    second = second_paillier_keypair.public_key
    directory = bureau.banks.directory
    stale = [BankRegistry(directory), BankRegistry(directory)]
    BankRegistry(directory).register(BANK, ADDRESS, second, dgk_keypair.public_key)
    assert bureau.bank_key(BANK, second.key_id) == second
    bureau.banks = stale[0]
    app = application(second_paillier_keypair, "k2")
    assert bureau.submit(app, refused_link).pending
    bureau.banks = stale[1]
    batch = batch_of(second_paillier_keypair, "k2-batch", ("k2-0",))
    assert bureau.submit_batch(batch, refused_link).pending
    stored_app, stored_batch = (
        bureau.applications.get(PLATFORM, "k2"),
        bureau.batches.get(PLATFORM, "k2-batch"),
    )
    assert stored_app is not None and stored_batch is not None
    assert (stored_app.key_id, stored_batch.key_id) == (second.key_id, second.key_id)


def test_a_replica_resolves_a_row_under_a_key_it_has_not_seen(
    bureau: BureauNode, second_paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    """Another replica on the same data directory registered the key and accepted the row; this
    one's retry worker takes the row up."""
    other = BureauNode.open(bureau.banks.directory.parent)
    try:
        second = second_paillier_keypair.public_key
        other.banks.register(BANK, ADDRESS, second, dgk_keypair.public_key)
        assert other.submit(application(second_paillier_keypair, "seen-there"), refused_link).pending
    finally:
        other.close()
    stored = bureau.applications.get(PLATFORM, "seen-there")
    assert stored is not None
    job = bureau._job_of(stored)
    assert (job.bank.bank_id, job.paillier, job.model.version) == (BANK, second, 1)


def test_a_receipt_without_figures_replays_as_none(bureau: BureauNode, paillier_keypair: KeyPair) -> None:
    """A row delivered without stage times or bytes in its receipt (``delivered(key, {})``)."""
    app = application(paillier_keypair, "bare")
    assert bureau.submit(app, refused_link).pending
    assert bureau.applications.delivered((PLATFORM, "bare"), {})
    assert bureau.submit(app, refused_link) == ScoreReport({}, 0, 1, replayed=True)


def test_a_batch_is_checked_before_it_is_stored(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair
) -> None:
    pk = paillier_keypair.public_key
    links = Links(bank)
    slot_bits = packing.slot_bits_for(MODEL)
    assert slot_bits is not None
    batch = batch_of(paillier_keypair, "b-1", ("x0", "x1"))
    with pytest.raises(
        InvalidInputError,
        match=f"^batch packed with {slot_bits + 1}-bit slots; model {DEFAULT_MODEL_ID!r} v1 "
        f"needs {slot_bits}$",
    ):
        bureau.submit_batch(dataclasses.replace(batch, slot_bits=slot_bits + 1), links)
    capacity = packing.slots_per_batch(slot_bits, pk.bits, packing.max_slots_for(MODEL))
    members = tuple(BatchMember(f"c{i}", "c") for i in range(capacity + 1))
    with pytest.raises(
        InvalidInputError,
        match=f"^a packed batch for this model and key holds at most {capacity} applications, "
        f"got {capacity + 1}$",
    ):
        bureau.submit_batch(dataclasses.replace(batch, members=members), links)
    # Exactly the capacity passes that check (and fails on its columns here).
    width = MODEL.spec.encoded_width
    with pytest.raises(
        InvalidInputError, match=f"^model {DEFAULT_MODEL_ID!r} v1 takes {width} encrypted columns, got 1$"
    ):
        bureau.submit_batch(
            dataclasses.replace(batch, members=members[:capacity], ciphertexts=batch.ciphertexts[:1]), links
        )
    bureau.models.put("gbdt", demo_model("gbdt"))
    with pytest.raises(
        InvalidInputError,
        match=r"^model 'gbdt' v1 \(blindscore-tree-ensemble\) cannot be scored in packed batches; "
        r"submit its applications one by one$",
    ):
        bureau.submit_batch(dataclasses.replace(batch, model_id="gbdt"), links)
    with pytest.raises(NotFoundError, match=r"^no bank registered under id 'bank-u'$"):
        bureau.submit_batch(dataclasses.replace(batch, bank_id="bank-u"), links)
    assert bureau.batches.counts() == {PENDING: 0, DELIVERED: 0, FAILED: 0}
    assert links.made == [] and audit_rows(bureau) == []


def test_score_batch_takes_linear_models_only(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    links = Links(bank, {"packed": [UnavailableError("away")]})
    batch = batch_of(paillier_keypair, "lin", ("l0",))
    assert bureau.submit_batch(batch, links).pending
    stored = bureau.batches.get(PLATFORM, "lin")
    assert stored is not None
    bureau.models.put("gbdt", demo_model("gbdt"))
    trees = bureau.models.resolve("gbdt")
    record = bureau.banks.get(BANK)
    job = Job(record, paillier_keypair.public_key, dgk_keypair.public_key, trees, batch.ciphertexts)
    with pytest.raises(
        InvalidInputError, match=f"^model {DEFAULT_MODEL_ID!r} cannot be scored in packed batches$"
    ):
        bureau.score_batch(stored, job, links)


def test_an_id_used_before_refuses_the_batch_before_any_accepted_record(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair
) -> None:
    links = Links(bank)
    bureau.submit(application(paillier_keypair, "used"), links)
    with pytest.raises(
        AlreadyExistsError,
        match=r"^application 'used' of platform 'platform-t' was already submitted; a new application needs",
    ):
        bureau.submit_batch(batch_of(paillier_keypair, "b-used", ("fresh", "used")), links)
    assert [r[2] for r in audit_rows(bureau)] == ["used"]
    assert bureau.batches.get(PLATFORM, "b-used") is None


def test_a_twin_stored_meanwhile_is_answered_as_a_replay(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The id check fails because this very submission was stored since it was looked up."""
    app = application(paillier_keypair, "twin")
    first = bureau.submit(app, Links(bank))
    real_get = bureau.applications.get
    looks: list[int] = []

    def stale_get(platform_id: str, row_id: str) -> Any:
        looks.append(1)
        return None if len(looks) == 1 else real_get(platform_id, row_id)

    def taken(sub: Any) -> None:
        raise AlreadyExistsError("taken")

    monkeypatch.setattr(bureau.applications, "get", stale_get)
    monkeypatch.setattr(bureau.applications, "check_new", taken)
    assert bureau.submit(app, Links(bank)) == dataclasses.replace(first, replayed=True)
    assert len(audit_rows(bureau)) == 1
    # Taken by another submission: refused.
    monkeypatch.setattr(bureau.applications, "get", lambda p, r: None)
    with pytest.raises(AlreadyExistsError, match=r"^taken$"):
        bureau.submit(application(paillier_keypair, "other"), Links(bank))
    assert len(audit_rows(bureau)) == 1


def test_a_submission_claims_its_row_while_it_runs(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair
) -> None:
    seen: list[bool] = []
    key = ("application", PLATFORM, "inflight")

    class Watching(Links):
        def __call__(self, *args: Any) -> LocalLink:
            seen.append(key in bureau._inflight)
            return super().__call__(*args)

    bureau.submit(application(paillier_keypair, "inflight"), Watching(bank))
    assert seen == [True] and key not in bureau._inflight
    # Already claimed by another thread of this process: run, but the claim is not released here.
    bureau._inflight.add(("application", PLATFORM, "second"))
    bureau.submit(application(paillier_keypair, "second"), Links(bank))
    assert ("application", PLATFORM, "second") in bureau._inflight


# ---------------------------------------------------------------------- the retry worker


def test_the_worker_delivers_what_is_pending(
    tmp_path: Path,
    bank: BankNode,
    paillier_keypair: KeyPair,
    dgk_keypair: DGKKeyPair,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, LOG)
    node = open_bureau(tmp_path / "w", (paillier_keypair, dgk_keypair), lease_s=1.0)
    try:
        away = Links(bank, {"circuit": [UnavailableError("away")]})
        assert node.submit(application(paillier_keypair, "w-1", 5), away).pending
        batch_links = Links(bank, {"packed": [UnavailableError("away")]})
        assert node.submit_batch(batch_of(paillier_keypair, "wb", ("wb0",)), batch_links).pending
        resets: list[int] = []
        links = Links(bank)
        node.start_delivery(links, reset=lambda: resets.append(1))
        worker = node._worker
        assert worker is not None and worker._idle_s == 0.5
        node.start_delivery(Links(bank))  # a second start changes nothing
        assert node._worker is worker and node._worker_link is links
        eventually(lambda: band_at_bank(bank, "w-1") is not None)
        eventually(
            lambda: any(
                m == f"delivered application w-1 of {PLATFORM}" for m in messages(caplog, logging.INFO)
            )
        )
        assert band_at_bank(bank, "w-1") == expected(5)
        eventually(lambda: node.applications.counts()[DELIVERED] == 1)
        # The batch was spent before its failed call: the worker fails it for good.
        eventually(lambda: node.batches.counts()[FAILED] == 1)
        assert messages(caplog, logging.WARNING).count("resuming 2 pending application(s)") == 1
        assert resets == []
        node.stop_delivery()
        assert node._worker is None and resets == [1]
        node.stop_delivery()
        assert resets == [1, 1]
    finally:
        node.close()


@pytest.mark.parametrize(("lease_s", "idle_s"), [(0.5, 0.25), (1.0, 0.5), (3600.0, 30.0)])
def test_the_worker_wakes_at_least_every_half_lease(tmp_path: Path, lease_s: float, idle_s: float) -> None:
    """Work a dead replica leaves is due when its lease ends: the worker looks again by then."""
    node = open_bureau(tmp_path / "idle", lease_s=lease_s)
    try:
        node.start_delivery(Links(None))  # type: ignore[arg-type]
        assert node._worker is not None and node._worker._idle_s == idle_s
        assert "bureau-delivery" in {t.name for t in threading.enumerate()}
    finally:
        node.close()


def test_the_worker_resets_the_links_after_an_unreachable_bank(
    tmp_path: Path, bank: BankNode, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    node = open_bureau(
        tmp_path / "r", (paillier_keypair, dgk_keypair), lease_s=1.0, retry=RetryPolicy(0.05, 0.05, 0.0)
    )
    try:
        assert node.submit(
            application(paillier_keypair, "r-1"), Links(bank, {"circuit": [UnavailableError("x")]})
        ).pending
        resets: list[int] = []
        links = Links(bank, {"circuit": [UnavailableError("again")]})
        node.start_delivery(links, reset=lambda: resets.append(1))
        eventually(lambda: band_at_bank(bank, "r-1") is not None)
        assert resets[:1] == [1]
        assert links.calls.count("circuit") == 2
    finally:
        node.close()


def test_the_worker_logs_failures_and_skips_rows_in_flight(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOG)
    for app_id in ("f-1", "f-2", "f-3"):
        assert bureau.submit(
            application(paillier_keypair, app_id), Links(bank, {"circuit": [UnavailableError("x")]})
        ).pending
    future = time.time() + 100.0
    links = Links(bank, {"circuit": [PeerError("bank", "INVALID_ARGUMENT", "no"), RuntimeError("oops")]})
    resets: list[int] = []
    bureau._worker_link, bureau._worker_reset = links, lambda: resets.append(1)
    bureau._worker = flow.RetryLoop("test", lambda: None)  # never started: the round runs here
    # f-1, the first due, is being run by another thread of this process: skipped, the rest run.
    bureau._inflight.add(("application", PLATFORM, "f-1"))
    real_claim = bureau.applications.claim_due

    def claim_all(owner: str, lease_s: float, now: float, limit: int) -> Any:
        assert (owner, lease_s, limit) == (bureau.replica_id, bureau.lease_s, flow.RETRY_BATCH)
        return real_claim(owner, lease_s, future, limit)

    bureau.applications.claim_due = claim_all  # type: ignore[method-assign]
    try:
        bureau._deliver_due()
    finally:
        bureau._worker = None
    assert links.calls == ["circuit", "circuit"]
    assert f"application f-2 of {PLATFORM} failed: bank: no" in messages(caplog, logging.WARNING)
    assert messages(caplog, logging.ERROR) == [f"retrying application f-3 of {PLATFORM} failed unexpectedly"]
    states = [bureau.applications.get(PLATFORM, a) for a in ("f-1", "f-2", "f-3")]
    assert [(r.state, r.attempts) for r in states if r] == [(PENDING, 1), (FAILED, 1), (PENDING, 2)]
    assert bureau._inflight == {("application", PLATFORM, "f-1")}
    assert bureau._leases.held() == []
    assert resets == []  # no bank was unreachable


def test_a_round_claims_a_few_rows_and_resets_the_links_after_an_unreachable_bank(
    bureau: BureauNode, paillier_keypair: KeyPair
) -> None:
    app = application(paillier_keypair, "proto")
    packed = paillier_keypair.public_key.pack(app.ciphertexts)
    now = time.time()
    for i in range(flow.RETRY_BATCH + 1):
        sub = Submission(
            application_id=f"q-{i}", platform_id=PLATFORM, bank_id=BANK, model_id=DEFAULT_MODEL_ID,
            model_version=1, key_id=app.key_id, consent_reference="c", width=len(app.ciphertexts),
            ciphertexts=packed,
        )  # fmt: skip
        bureau.applications.accept(sub, next_attempt_at=now - 100.0 + i, lease_s=-1.0)
    made: list[str] = []

    def down(bank_id: str, *rest: Any) -> Any:
        made.append(bank_id)
        raise UnavailableError("bank down")

    resets: list[int] = []
    bureau._worker_link, bureau._worker_reset = down, lambda: resets.append(1)
    bureau._worker = flow.RetryLoop("test", lambda: None)
    try:
        wait = bureau._deliver_due()
    finally:
        bureau._worker = None
    assert made == [BANK] * flow.RETRY_BATCH and resets == [1]
    rows = [bureau.applications.get(PLATFORM, f"q-{i}") for i in range(flow.RETRY_BATCH + 1)]
    assert [r.attempts for r in rows if r] == [1] * flow.RETRY_BATCH + [0]
    assert bureau._leases.held() == []
    # The last row was not claimed in this round and is overdue: the next round follows at once.
    assert wait == 0.05


def test_a_round_without_a_link_or_work_waits(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair
) -> None:
    assert bureau._deliver_due() is None
    # Without a link (delivery not started) a due row is left alone.
    app = application(paillier_keypair, "idle")
    sub = Submission(
        application_id="idle", platform_id=PLATFORM, bank_id=BANK, model_id=DEFAULT_MODEL_ID,
        model_version=1, key_id=app.key_id, consent_reference="c", width=len(app.ciphertexts),
        ciphertexts=paillier_keypair.public_key.pack(app.ciphertexts),
    )  # fmt: skip
    bureau.applications.accept(sub, next_attempt_at=time.time() - 100.0, lease_s=-1.0)
    assert bureau._deliver_due() is None
    idle = bureau.applications.get(PLATFORM, "idle")
    assert idle is not None and (idle.state, idle.attempts, idle.claim) == (PENDING, 0, 1)
    bureau.applications.delivered(("platform-t", "idle"), {})
    bureau._worker_link = Links(bank)
    assert bureau._deliver_due() is None
    assert bureau.submit(
        application(paillier_keypair, "due"), Links(bank, {"circuit": [UnavailableError("x")]})
    ).pending
    stored = bureau.applications.get(PLATFORM, "due")
    assert stored is not None
    wait = bureau._deliver_due()
    assert wait is not None and 9.0 < wait <= stored.next_attempt_at - time.time() + 0.1


def test_a_stopping_worker_hands_its_rows_back(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair
) -> None:
    for app_id in ("h-1", "h-2"):
        assert bureau.submit(
            application(paillier_keypair, app_id), Links(bank, {"circuit": [UnavailableError("x")]})
        ).pending
    future = time.time() + 100.0
    real_claim = bureau.applications.claim_due
    bureau.applications.claim_due = (  # type: ignore[method-assign]
        lambda owner, lease_s, now, limit: real_claim(owner, lease_s, future, limit)
    )
    bureau._worker_link = Links(bank)
    bureau._worker = None
    assert bureau._deliver_due() is None
    for app_id in ("h-1", "h-2"):
        row = bureau.applications.get(PLATFORM, app_id)
        assert row is not None and (row.state, row.claimed_by, row.lease_until) == (PENDING, "", 0.0)
        assert row.claim == 2
    assert bureau._leases.held() == []


def pending_batch(bureau: BureauNode, bank: BankNode, keys: KeyPair, batch_id: str) -> None:
    """A batch stored pending (its bank unreachable at the packed call), due at once for the worker."""
    links = Links(bank, {"packed": [UnavailableError("x")]})
    assert bureau.submit_batch(batch_of(keys, batch_id, (f"{batch_id}-0",)), links).pending
    real_claim = bureau.batches.claim_due
    future = time.time() + 100.0
    bureau.batches.claim_due = (  # type: ignore[method-assign]
        lambda owner, lease_s, now, limit: real_claim(owner, lease_s, future, limit)
    )


def test_a_stopping_worker_hands_a_batch_back_in_its_own_store(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair
) -> None:
    pending_batch(bureau, bank, paillier_keypair, "hb")
    bureau._worker_link, bureau._worker = Links(bank), None
    assert bureau._deliver_due() is None
    row = bureau.batches.get(PLATFORM, "hb")
    assert row is not None and (row.state, row.lease_until, row.claim) == (PENDING, 0.0, 2)
    assert bureau._leases.held() == []


def test_a_batch_in_flight_is_let_go_in_its_own_store(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair
) -> None:
    """Run by another thread of this process under an older claim: the new claim is not held (nor
    renewed), so it expires and the row is taken up again then."""
    pending_batch(bureau, bank, paillier_keypair, "fb")
    bureau._inflight.add(("batch", PLATFORM, "fb"))
    links = Links(bank)
    bureau._worker_link, bureau._worker = links, flow.RetryLoop("test", lambda: None)
    try:
        bureau._deliver_due()
    finally:
        bureau._worker = None
    assert links.made == [] and bureau._leases.held() == []
    row = bureau.batches.get(PLATFORM, "fb")
    assert row is not None and (row.state, row.claim) == (PENDING, 2) and row.lease_until > time.time()


def test_leases_are_renewed_and_released_in_their_own_store(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair
) -> None:
    assert bureau.submit(
        application(paillier_keypair, "l-1"), Links(bank, {"circuit": [UnavailableError("x")]})
    ).pending
    with pytest.raises(PreconditionError, match=r"^x$"):
        bureau.submit_batch(
            batch_of(paillier_keypair, "lb", ("lb0",)), Links(bank, {"packed": [PreconditionError("x")]})
        )
    future = time.time() + 100.0
    (app_row,) = bureau.applications.claim_due("me", 60.0, future, 8)
    batch_row = bureau.batches.get(PLATFORM, "lb")
    assert batch_row is not None and batch_row.state == FAILED
    fences = [bureau.applications.fence(app_row), bureau.batches.fence(batch_row)]
    before = time.time()
    # The batch is finished: its lease cannot be renewed; the application's is.
    assert bureau._renew_leases(fences) == [fences[1]]
    renewed = bureau.applications.get(PLATFORM, "l-1")
    assert renewed is not None and renewed.lease_until >= before + bureau.lease_s - 1.0
    assert before + bureau.lease_s <= renewed.next_attempt_at <= time.time() + bureau.lease_s
    bureau._release_leases(fences)
    released = bureau.applications.get(PLATFORM, "l-1")
    assert released is not None and (released.claimed_by, released.lease_until) == ("", 0.0)
    assert before <= released.next_attempt_at <= time.time()


# ---------------------------------------------------------------------- what the mutation run left


def test_the_bureau_reports_its_stages_in_milliseconds(
    bureau: BureauNode, dgk_bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(flow, "time", SteppedClock())

    def own(report: ScoreReport) -> dict[str, float]:
        return {k: v for k, v in report.stage_ms.items() if k.startswith("bureau.")}

    circuit = bureau.submit(application(paillier_keypair, "ms-circuit"), Links(bank))
    assert own(circuit) == {"bureau.evaluate": 500.0, "bureau.garble": 500.0}
    dgk = dgk_bureau.submit(application(paillier_keypair, "ms-dgk"), Links(bank))
    assert own(dgk) == {
        "bureau.evaluate": 500.0, "bureau.round1": 500.0, "bureau.round2": 500.0, "bureau.finish": 500.0
    }  # fmt: skip
    # A batch's stages are per application: 500 ms over its two members.
    batch = bureau.submit_batch(batch_of(paillier_keypair, "ms-batch", ("ms-0", "ms-1")), Links(bank))
    assert own(batch) == {"bureau.evaluate": 250.0, "bureau.garble": 250.0}


def test_the_lease_keeper_renews_a_claim_while_its_work_runs(
    tmp_path: Path, bank: BankNode, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    """The keeper's own rounds (every third of a lease), not a call of ``_renew_leases`` by hand:
    the bank's call waits until the row's lease has moved on by more than the keeper's period."""
    node = open_bureau(tmp_path / "keeper", (paillier_keypair, dgk_keypair), replica_id="r-k", lease_s=1.5)

    def lease_until() -> float:
        row = node.applications.get(PLATFORM, "kept")
        assert row is not None and row.claimed_by == "r-k"
        return row.lease_until

    def wait_for_a_renewal() -> None:
        accepted = lease_until()
        eventually(lambda: lease_until() > accepted + 0.6, timeout=15.0)

    try:
        links = Links(bank, {"circuit": [wait_for_a_renewal]})
        report = node.submit(application(paillier_keypair, "kept"), links)
        assert not report.pending and band_at_bank(bank, "kept") == expected(0)
    finally:
        node.close()


def test_an_accepted_row_is_claimed_for_one_lease_and_due_when_it_ends(
    tmp_path: Path,
    bank: BankNode,
    paillier_keypair: KeyPair,
    dgk_keypair: DGKKeyPair,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The row as ``_accept`` stored it, read while its work runs, with the keeper's renewals held
    off (they would rewrite both columns): no other replica may take it up during one lease."""
    node = open_bureau(tmp_path / "fresh", (paillier_keypair, dgk_keypair), replica_id="r-a", lease_s=60.0)
    monkeypatch.setattr(node._leases, "hold", lambda fence: None)
    seen: list[Any] = []
    try:
        before = time.time()
        links = Links(bank, {"circuit": [lambda: seen.append(node.applications.get(PLATFORM, "fresh"))]})
        assert not node.submit(application(paillier_keypair, "fresh"), links).pending
        after = time.time()
        (row,) = seen
        assert (row.state, row.claimed_by, row.claim) == (PENDING, "r-a", 1)
        assert before + 59.0 <= row.lease_until <= after + 61.0
        assert before + 60.0 <= row.next_attempt_at <= after + 60.0
        assert node.applications.claim_due("r-b", 60.0, after + 1.0, 8) == []
    finally:
        node.close()


def test_an_accepted_submission_runs_on_what_was_checked_on_arrival(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job resolved on arrival (bank, keys, model version, ciphertexts) runs inline; only the
    retry worker resolves a job from the stored row (and unpacks its ciphertexts again)."""
    resolved: list[tuple[str, str]] = []
    job_of = bureau._job_of

    def spy(stored: Any) -> Job:
        resolved.append(stored.key)
        return job_of(stored)

    monkeypatch.setattr(bureau, "_job_of", spy)
    assert not bureau.submit(application(paillier_keypair, "inline"), Links(bank)).pending
    assert not bureau.submit_batch(batch_of(paillier_keypair, "inline-b", ("ib-0",)), Links(bank)).pending
    assert resolved == []
    assert [band_at_bank(bank, a) for a in ("inline", "ib-0")] == [expected(0), expected(0)]
    assert bureau.submit(application(paillier_keypair, "later", 2), refused_link).pending
    (row,) = bureau.applications.claim_due("", 60.0, time.time() + 100.0, 8)
    assert not bureau._run(row, Links(bank)).pending
    assert resolved == [(PLATFORM, "later")] and band_at_bank(bank, "later") == expected(2)


def test_a_batch_of_many_labels_looks_each_version_up_once(
    bureau: BureauNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[tuple[str, Any]] = []
    version = bureau.models.version

    def spy(name: str, wanted: Any = None) -> str:
        lookups.append((name, wanted))
        return version(name, wanted)

    monkeypatch.setattr(bureau.models, "version", spy)
    pinned = [{"platform_id": PLATFORM, "model_id": DEFAULT_MODEL_ID, "model_version": "1"}] * 5
    latest = [{"platform_id": PLATFORM, "model_id": DEFAULT_MODEL_ID}] * 3
    bureau.record_many([*pinned, *latest], "OK", 1.0)
    assert lookups == [(DEFAULT_MODEL_ID, "1"), (DEFAULT_MODEL_ID, None)]
    assert [row[5] for row in audit_rows(bureau)] == [v1(bureau)] * 8


def test_a_batch_is_bounded_by_the_model_as_well_as_by_the_key(
    bureau: BureauNode, bank: BankNode, paillier_keypair: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``max_slots_for`` caps a batch whose garbled comparisons would outgrow one message (about 60
    cutoffs of long comparisons). No model the checks accept reaches that below a 2048-bit key's
    21 slots, so the model's bound is set here: 3."""
    monkeypatch.setattr(packing, "max_slots_for", lambda model: 3)
    links = Links(bank)
    with pytest.raises(
        InvalidInputError,
        match=r"^a packed batch for this model and key holds at most 3 applications, got 4$",
    ):
        bureau.submit_batch(batch_of(paillier_keypair, "four", ("f0", "f1", "f2", "f3")), links)
    assert links.made == [] and bureau.batches.get(PLATFORM, "four") is None
    assert not bureau.submit_batch(batch_of(paillier_keypair, "three", ("t0", "t1", "t2")), links).pending
