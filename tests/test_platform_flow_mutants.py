"""The platform's transport-free flows (platform_node/flow.py) driven in process, for its mutation run."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from clocks import SteppedClock

from blindscore.bureau.flow import BureauNode
from blindscore.crypto.dgk import DGKKeyPair
from blindscore.crypto.paillier import KeyPair, PublicKey
from blindscore.data.german import DEFAULT_MODEL_ID, default_model, load_german_credit
from blindscore.errors import (
    AlreadyExistsError,
    BlindscoreError,
    CryptoError,
    InvalidInputError,
    PeerError,
    UnavailableError,
)
from blindscore.infra.db import RetryPolicy
from blindscore.infra.status import status_of
from blindscore.models.registry import load_model
from blindscore.platform_node import flow
from blindscore.platform_node.bureau_link import SubmitResult
from blindscore.platform_node.flow import PlatformNode, Receipt
from blindscore.platform_node.outbox import Outbox
from blindscore.protocol.application import Application, ModelSpec
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.wire import serde

BANK = "bank-t"
PLATFORM = "platform-t"
CONSENT = "consent-t"
ROWS, _ = load_german_credit()
LOG = "blindscore.platform_node.flow"
FAST = RetryPolicy(base_s=0.05, cap_s=0.2, jitter=0.0)


class Unreachable:
    """The bank as the bureau sees it when it cannot be reached: every band stays pending."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise UnavailableError("bank unavailable: not started")

        return refuse


def unreachable_bank(*args: Any) -> Any:
    return Unreachable()


class InProcessBureau:
    """A BureauLink to a real BureauNode in this process: what the bureau's servicer does with a
    payload, without gRPC; errors come back as GrpcBureauLink's ``call`` makes them. ``sent`` keeps
    every payload; ``down`` makes the next calls fail as an unreachable bureau; ``refusals`` are
    errors raised (one each) by the next submissions before they reach the bureau."""

    def __init__(self, bureau: BureauNode) -> None:
        self.bureau = bureau
        self.sent: list[bytes] = []
        self.calls: list[str] = []
        self.down = False
        self.refusals: list[BlindscoreError] = []
        #: False: answer as a bureau that names no model version in its receipts.
        self.names_version = True
        #: Seconds each submission, and each request for a model's spec, takes.
        self.delay_s = 0.0

    def _call(self, name: str, work: Callable[[], Any]) -> Any:
        self.calls.append(name)
        if self.down:
            raise UnavailableError("bureau unavailable: connection refused")
        try:
            return work()
        except (PeerError, UnavailableError):
            raise  # injected, as the call would raise them
        except BlindscoreError as exc:
            code, message = status_of(exc)
            raise PeerError("bureau", code.name, message) from None

    def model_spec(self, model_id: str, version: str = "") -> ModelSpec:
        time.sleep(self.delay_s)
        return self._call("model_spec", lambda: self.bureau.model_spec(model_id, version))

    def bank_key(self, bank_id: str, key_id: str) -> PublicKey:
        key = self._call("bank_key", lambda: self.bureau.bank_key(bank_id, key_id))
        return serde.paillier_key_from_json(serde.paillier_key_to_json(key))

    def _result(self, report: Any, count: int) -> SubmitResult:
        time.sleep(self.delay_s)
        version = str(report.model_version) if self.names_version else ""
        return SubmitResult({"bureau.t": 1.0}, 100, version, report.pending)

    def _refusal(self) -> None:
        if self.refusals:
            raise self.refusals.pop(0)

    def submit(self, payload: bytes) -> SubmitResult:
        self.sent.append(payload)

        def work() -> SubmitResult:
            self._refusal()
            request = pb.EncryptedApplication.FromString(payload)
            key, _ = self.bureau.banks.get(request.bank_id, request.key_id).key(request.key_id)
            app = serde.encrypted_application_from_proto(request, key)
            report = self.bureau.submit(app, unreachable_bank, packed=request.ciphertexts)
            return self._result(report, 1)

        return self._call("submit", work)

    def submit_batch(self, payload: bytes, count: int) -> SubmitResult:
        self.sent.append(payload)

        def work() -> SubmitResult:
            self._refusal()
            request = pb.EncryptedBatch.FromString(payload)
            assert count == len(request.members)
            key, _ = self.bureau.banks.get(request.bank_id, request.key_id).key(request.key_id)
            batch = serde.encrypted_batch_from_proto(request, key)
            report = self.bureau.submit_batch(batch, unreachable_bank, packed=request.ciphertexts)
            return self._result(report, count)

        return self._call("submit_batch", work)


@pytest.fixture
def bureau(tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> Iterator[BureauNode]:
    """A real bureau on a tmp dir (the default German model), the session key registered for BANK."""
    node = BureauNode.open(tmp_path / "bureau")
    node.banks.register(BANK, "127.0.0.1:1", paillier_keypair.public_key, dgk_keypair.public_key)
    yield node
    node.close()


@pytest.fixture
def link(bureau: BureauNode) -> InProcessBureau:
    return InProcessBureau(bureau)


@pytest.fixture
def key_id(paillier_keypair: KeyPair) -> str:
    return paillier_keypair.public_key.key_id


@pytest.fixture
def platform(link: InProcessBureau) -> Iterator[PlatformNode]:
    node = PlatformNode(PLATFORM, link, retry=FAST, replica_id="r1", lease_s=6.0)
    yield node
    node.close()


def app(kid: str, i: int, *, prefix: str = "a", version: str = "1", **changes: Any) -> Application:
    fields: dict[str, Any] = {
        "application_id": f"{prefix}-{i}",
        "bank_id": BANK,
        "model_id": DEFAULT_MODEL_ID,
        "key_id": kid,
        "consent_reference": CONSENT,
        "features": ROWS[i],
        "model_version": version,
    }
    fields.update(changes)
    return Application(**fields)


def prefetch(node: PlatformNode, key_id: str) -> None:
    """Ask the bureau for the model's spec and the bank's key while it is up."""
    node.feature_spec(DEFAULT_MODEL_ID, "1")
    node.bank_key(BANK, key_id)


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the platform's flow logged (not the bureau's, nor the lease keeper's)."""
    return [r.getMessage() for r in caplog.records if r.name == LOG]


def receipt(result: Receipt | BlindscoreError) -> Receipt:
    assert isinstance(result, Receipt), result
    return result


# ---------------------------------------------------------------------- one application


def test_check_entry_refuses_a_consent_outside_the_limits(key_id: str) -> None:
    bad = app(key_id, 0, consent_reference="a\x07b")
    with pytest.raises(InvalidInputError, match=r"^consent_reference 'a\\x07b' has U\+0007 \(category Cc\)"):
        flow.check_entry(bad)
    good = app(key_id, 0)
    assert flow.check_entry(good) is good


def test_a_refused_consent_is_neither_encrypted_stored_nor_sent(
    platform: PlatformNode, link: InProcessBureau, key_id: str
) -> None:
    bad = app(key_id, 0, consent_reference="a\x07b")
    with pytest.raises(InvalidInputError, match=r"^consent_reference 'a\\x07b' has U\+0007"):
        platform.score(bad)
    [result] = platform.score_many([bad])
    assert isinstance(result, InvalidInputError)
    assert str(result).startswith("consent_reference 'a\\x07b' has U+0007")
    assert link.calls == [] and platform.outbox.get("a-0") is None


def test_score_stores_sends_and_answers_one_application(
    platform: PlatformNode, link: InProcessBureau, bureau: BureauNode, key_id: str
) -> None:
    platform._leases.stop()  # no renewal: the lease below is the one the entry was stored with
    link.delay_s = 0.02
    before, t0 = time.time(), time.perf_counter()
    got = platform.score(app(key_id, 1))
    elapsed_ms = (time.perf_counter() - t0) * 1e3
    # Encoding and encrypting, the spec's fetch included, then sending.
    assert got.encrypt_ms >= 20.0 and 40.0 <= got.total_ms <= elapsed_ms
    assert got.application_id == "a-1" and got.pending is True
    assert got.model_version == "1" and got.wire_bytes == 100
    assert list(got.stage_ms) == ["platform.encrypt", "bureau.t"]
    assert got.stage_ms["platform.encrypt"] == got.encrypt_ms > 0
    assert got.total_ms >= got.encrypt_ms
    [payload] = link.sent
    sent = pb.EncryptedApplication.FromString(payload)
    assert (sent.application_id, sent.platform_id, sent.bank_id, sent.model_id, sent.key_id) == (
        "a-1",
        PLATFORM,
        BANK,
        DEFAULT_MODEL_ID,
        key_id,
    )
    assert (sent.consent_reference, sent.model_version) == (CONSENT, "1")
    entry = platform.outbox.get("a-1")
    assert entry is not None and entry.payload == payload
    assert entry.state == "acknowledged" and entry.last_error == "" and entry.attempts == 0
    assert platform._leases.held() == []  # answered: its lease is no longer renewed
    assert entry.claimed_by == "r1"
    # Stored due a lease from now (what a resender would wait before sending it again).
    assert before + 6.0 <= entry.next_attempt_at <= time.time() + 6.0
    assert before + 6.0 <= entry.lease_until <= time.time() + 6.0
    stored = bureau.applications.get(PLATFORM, "a-1")
    assert stored is not None and stored.model_version == 1


def test_a_resubmission_resends_the_stored_payload(
    platform: PlatformNode, link: InProcessBureau, key_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "latest" stays resolved however slowly a loaded machine runs the two calls (the TTL has its own test).
    monkeypatch.setattr(flow, "LATEST_TTL_S", 1e6)
    first = platform.score(app(key_id, 2))
    again = platform.score(app(key_id, 2))
    assert link.sent[0] == link.sent[1] and len(link.sent) == 2
    assert link.calls.count("model_spec") == 1 and link.calls.count("bank_key") == 1
    assert again.model_version == first.model_version == "1"
    assert "platform.encrypt" in again.stage_ms and again.pending
    with pytest.raises(
        AlreadyExistsError,
        match=r"^application 'a-2' was already submitted with different features; "
        r"a new application needs a new id$",
    ):
        platform.score(app(key_id, 3, prefix="x", application_id="a-2"))


def test_latest_resolves_at_the_bureau_and_is_remembered(
    platform: PlatformNode, link: InProcessBureau, key_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Remembered however slowly a loaded machine scores (a full-suite CI run took longer than the
    # 2 s TTL here); the TTL itself is test_latest_is_asked_again_after_its_ttl's.
    monkeypatch.setattr(flow, "LATEST_TTL_S", 1e6)
    got = platform.score(app(key_id, 4, version="latest"))
    assert got.model_version == "1"
    sent = pb.EncryptedApplication.FromString(link.sent[0])
    assert sent.model_version == "1"
    assert platform.feature_spec(DEFAULT_MODEL_ID, "")[0] == "1"
    assert platform.feature_spec(DEFAULT_MODEL_ID, "v1")[0] == "1"
    assert link.calls.count("model_spec") == 1


def test_latest_is_asked_again_after_its_ttl(
    platform: PlatformNode, link: InProcessBureau, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(flow.time, "monotonic", lambda: clock[0])
    assert platform.feature_spec(DEFAULT_MODEL_ID)[0] == "1"
    clock[0] += flow.LATEST_TTL_S - 0.01
    assert platform.feature_spec(DEFAULT_MODEL_ID, "latest")[0] == "1"
    assert link.calls.count("model_spec") == 1
    clock[0] += 0.01  # exactly the TTL since it was asked: ask again
    assert platform.feature_spec(DEFAULT_MODEL_ID)[0] == "1"
    assert link.calls.count("model_spec") == 2
    # A numbered version is cached for good.
    platform.feature_spec(DEFAULT_MODEL_ID, "1")
    clock[0] += 1e6
    platform.feature_spec(DEFAULT_MODEL_ID, "1")
    assert link.calls.count("model_spec") == 2


class LyingSpec(InProcessBureau):
    """A bureau answering another version than the one asked for."""

    def __init__(self, bureau: BureauNode, answer: str) -> None:
        super().__init__(bureau)
        self.answer = answer

    def model_spec(self, model_id: str, version: str = "") -> ModelSpec:
        spec = super().model_spec(model_id, version)
        return ModelSpec(spec.model_id, self.answer, spec.feature_spec, spec.slot_bits, spec.max_slots)


@pytest.mark.parametrize(
    ("asked", "answer", "message"),
    [
        ("1", "2", "bureau answered version '2' for model 'german_credit' v1"),
        ("", "x1", "bureau answered version 'x1' for model 'german_credit' vlatest"),
        ("latest", "", "bureau answered version '' for model 'german_credit' vlatest"),
    ],
)
def test_a_version_the_bureau_was_not_asked_for_is_refused(
    bureau: BureauNode, asked: str, answer: str, message: str
) -> None:
    node = PlatformNode(PLATFORM, LyingSpec(bureau, answer))
    try:
        with pytest.raises(InvalidInputError, match=f"^{re.escape(message)}$".replace("german_credit", ".*")):
            node.feature_spec(DEFAULT_MODEL_ID, asked)
    finally:
        node.close()


def test_a_latest_answer_with_a_number_is_taken(bureau: BureauNode) -> None:
    node = PlatformNode(PLATFORM, LyingSpec(bureau, "1"))
    try:
        assert node.feature_spec(DEFAULT_MODEL_ID, "latest")[0] == "1"
    finally:
        node.close()


class OtherKey(InProcessBureau):
    """A bureau handing out a key other than the one the key id names."""

    def __init__(self, bureau: BureauNode, key: PublicKey) -> None:
        super().__init__(bureau)
        self.key = key

    def bank_key(self, bank_id: str, key_id: str) -> PublicKey:
        self.calls.append("bank_key")
        return self.key


def test_a_key_not_matching_its_id_is_refused(
    bureau: BureauNode, key_id: str, second_paillier_keypair: KeyPair
) -> None:
    node = PlatformNode(PLATFORM, OtherKey(bureau, second_paillier_keypair.public_key))
    try:
        with pytest.raises(
            CryptoError, match=f"^bureau returned a key whose fingerprint does not match key id {key_id}$"
        ):
            node.score(app(key_id, 5))
        assert node.outbox.get("a-5") is None
    finally:
        node.close()


def test_the_bank_key_is_fetched_once_and_kept_with_its_pool(platform: PlatformNode, key_id: str) -> None:
    key = platform.bank_key(BANK, key_id)
    assert platform.bank_key(BANK, key_id) is key
    assert key.matches_key_id(key_id)
    # The precomputed randomness the platform reserved for a burst of applications.
    assert key._randomness().capacity == flow.PLATFORM_POOL_CAPACITY


def test_an_unreachable_bureau_leaves_the_entry_to_be_resent(
    platform: PlatformNode, link: InProcessBureau, key_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    prefetch(platform, key_id)
    link.down = True
    caplog.set_level(logging.WARNING, LOG)
    before = time.time()
    with pytest.raises(UnavailableError, match=r"^bureau unavailable: connection refused$"):
        platform.score(app(key_id, 9))
    entry = platform.outbox.get("a-9")
    assert entry is not None and entry.state == "sent" and entry.attempts == 1
    assert platform._leases.held() == []  # let go: a resender claims it when it is due
    assert entry.last_error == "bureau unavailable: connection refused" and entry.lease_until == 0
    # FAST has no jitter: the first retry is 0.05 s away.
    assert before + 0.05 <= entry.next_attempt_at <= time.time() + 0.05
    assert messages(caplog) == [
        "bureau did not answer for a-9 (bureau unavailable: connection refused); resending in 0.1 s"
    ]
    # Its second failure doubles the wait (attempts counted from the entry it was stored as).
    with pytest.raises(UnavailableError, match=r"^bureau unavailable: connection refused$"):
        platform.score(app(key_id, 9))
    again = platform.outbox.get("a-9")
    assert again is not None and again.attempts == 1  # a replay without a claim records no retry
    link.down = False
    assert platform.score(app(key_id, 9)).pending
    done = platform.outbox.get("a-9")
    assert done is not None and done.state == "acknowledged" and done.last_error == ""


def test_a_refusal_is_recorded_for_good(platform: PlatformNode, link: InProcessBureau, key_id: str) -> None:
    link.refusals.append(PeerError("bureau", "INVALID_ARGUMENT", "no such thing"))
    with pytest.raises(PeerError, match=r"^bureau: no such thing$"):
        platform.score(app(key_id, 10))
    entry = platform.outbox.get("a-10")
    assert entry is not None and entry.state == "refused" and entry.last_error == "bureau: no such thing"
    assert entry.attempts == 0
    # Refused, the id is free again: the same application goes anew.
    assert platform.score(app(key_id, 10)).pending
    assert len(link.sent) == 2


def test_a_refused_replay_is_recorded_without_a_claim(
    platform: PlatformNode, link: InProcessBureau, key_id: str
) -> None:
    prefetch(platform, key_id)
    link.down = True
    with pytest.raises(UnavailableError, match=r"^bureau unavailable: connection refused$"):
        platform.score(app(key_id, 11))
    link.down = False
    link.refusals.append(PeerError("bureau", "FAILED_PRECONDITION", "not now"))
    with pytest.raises(PeerError, match=r"^bureau: not now$"):
        platform.score(app(key_id, 11))
    entry = platform.outbox.get("a-11")
    assert entry is not None and entry.state == "refused" and entry.last_error == "bureau: not now"


def test_an_outcome_after_a_lost_lease_is_not_recorded(
    platform: PlatformNode, key_id: str, bureau: BureauNode, caplog: pytest.LogCaptureFixture
) -> None:
    class TakenOver(InProcessBureau):
        """Another replica takes the entry over while this one is sending it."""

        def submit(self, payload: bytes) -> SubmitResult:
            outbox = platform.outbox
            outbox.retry_later("a-12", 0, time.time(), "paused")
            [taken] = outbox.claim_due("r2", 6.0, time.time() + 1, 16)
            assert taken.application_id == "a-12"
            return super().submit(payload)

    platform.bureau = TakenOver(bureau)
    caplog.set_level(logging.WARNING, LOG)
    got = platform.score(app(key_id, 12))
    assert got.application_id == "a-12" and got.pending
    entry = platform.outbox.get("a-12")
    assert entry is not None and entry.state == "sent" and entry.claimed_by == "r2" and entry.claim == 2
    assert messages(caplog) == [
        "lost the lease on outbox entry 'a-12' (claim 1): another platform replica took it over or it "
        "was answered; this one records nothing about it"
    ]


def test_a_retry_after_a_lost_lease_is_not_recorded(
    platform: PlatformNode, key_id: str, bureau: BureauNode, caplog: pytest.LogCaptureFixture
) -> None:
    class TakenOverDown(InProcessBureau):
        def submit(self, payload: bytes) -> SubmitResult:
            platform.outbox.retry_later("a-13", 0, time.time(), "paused")
            platform.outbox.claim_due("r2", 6.0, time.time() + 1, 16)
            raise UnavailableError("bureau unavailable: reset")

    platform.bureau = TakenOverDown(bureau)
    caplog.set_level(logging.WARNING, LOG)
    with pytest.raises(UnavailableError, match=r"^bureau unavailable: reset$"):
        platform.score(app(key_id, 13))
    entry = platform.outbox.get("a-13")
    assert entry is not None and entry.attempts == 0 and entry.last_error == "paused"
    assert messages(caplog) == [
        "lost the lease on outbox entry 'a-13' (claim 1): another platform replica took it over or it "
        "was answered; this one records nothing about it"
    ]


def test_an_interrupted_send_lets_go_of_its_lease(
    platform: PlatformNode, key_id: str, bureau: BureauNode
) -> None:
    class Interrupted(InProcessBureau):
        def submit(self, payload: bytes) -> SubmitResult:
            raise KeyboardInterrupt

    platform.bureau = Interrupted(bureau)
    with pytest.raises(KeyboardInterrupt, match=r"^$"):
        platform.score(app(key_id, 14))
    assert platform._leases.held() == []
    entry = platform.outbox.get("a-14")
    assert entry is not None and entry.state == "sent" and entry.attempts == 0


# ---------------------------------------------------------------------- packed batches


def test_score_many_packs_a_group_into_one_batch(
    platform: PlatformNode,
    link: InProcessBureau,
    bureau: BureauNode,
    key_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encrypt_packed = flow.packing.encrypt_packed

    def slow(*args: Any) -> Any:  # 30 ms of encryption at least, whatever the pool holds
        time.sleep(0.03)
        return encrypt_packed(*args)

    monkeypatch.setattr(flow.packing, "encrypt_packed", slow)
    apps = [app(key_id, i, prefix="p") for i in (20, 21, 22)]
    platform._leases.stop()  # no renewal: the lease below is the one the batch was stored with
    before, t0 = time.time(), time.perf_counter()
    results = [receipt(r) for r in platform.score_many(apps)]
    elapsed_ms = (time.perf_counter() - t0) * 1e3
    [payload] = link.sent
    batch = pb.EncryptedBatch.FromString(payload)
    assert [m.application_id for m in batch.members] == ["p-20", "p-21", "p-22"]
    assert [m.consent_reference for m in batch.members] == [CONSENT] * 3
    assert (batch.platform_id, batch.bank_id, batch.model_id, batch.key_id, batch.model_version) == (
        PLATFORM,
        BANK,
        DEFAULT_MODEL_ID,
        key_id,
        "1",
    )
    assert batch.slot_bits == 95 and re.fullmatch(r"b-[0-9a-f]{32}", batch.batch_id)
    assert [r.application_id for r in results] == ["p-20", "p-21", "p-22"]
    for r in results:
        assert r.pending and r.model_version == "1" and r.wire_bytes == 100
        assert list(r.stage_ms) == ["platform.encrypt", "bureau.t"]
        assert 10.0 <= r.encrypt_ms == r.stage_ms["platform.encrypt"] < r.total_ms <= elapsed_ms
    # The encryption time is shared by the batch's members.
    assert results[0].encrypt_ms * 3 < results[0].total_ms
    entries = [platform.outbox.get(f"p-{i}") for i in (20, 21, 22)]
    assert all(e is not None and e.state == "acknowledged" for e in entries)
    lead = entries[0]
    assert lead is not None and platform.outbox.batch_payload(lead) == payload and lead.claimed_by == "r1"
    # Stored due, and held, a lease from now.
    assert before + 6.0 <= lead.next_attempt_at <= time.time() + 6.0
    assert before + 6.0 <= lead.lease_until <= time.time() + 6.0
    assert bureau.batches.get(PLATFORM, batch.batch_id) is not None


def test_resubmitted_members_resend_their_batch_once(
    platform: PlatformNode, link: InProcessBureau, key_id: str
) -> None:
    first = [app(key_id, i, prefix="q") for i in (23, 24, 25)]
    platform.score_many(first)
    again = [first[2], app(key_id, 26, prefix="q"), first[0], first[2]]
    results = platform.score_many(again)
    assert len(link.sent) == 3
    assert [m.application_id for m in pb.EncryptedBatch.FromString(link.sent[1]).members] == ["q-26"]
    assert link.sent[2] == link.sent[0]  # the stored batch, once
    got = [receipt(r) for r in results]
    assert [r.application_id for r in got] == ["q-25", "q-26", "q-23", "q-25"]
    for r in (got[0], got[2], got[3]):
        assert r.encrypt_ms == 0.0 and "platform.encrypt" not in r.stage_ms and r.model_version == "1"
        assert r.pending and r.total_ms > 0 and r.wire_bytes == 100
    assert "platform.encrypt" in got[1].stage_ms


def test_an_id_twice_in_one_call_goes_after_its_batch(
    platform: PlatformNode, link: InProcessBureau, key_id: str
) -> None:
    apps = [app(key_id, i, prefix="d") for i in (27, 28, 27, 31)]
    results = [receipt(r) for r in platform.score_many(apps)]
    assert [r.application_id for r in results] == ["d-27", "d-28", "d-27", "d-31"]
    assert len(link.sent) == 2 and link.sent[1] == link.sent[0]
    assert len(pb.EncryptedBatch.FromString(link.sent[0]).members) == 3
    other = app(key_id, 29, prefix="d", application_id="d-27")
    [refused] = platform.score_many([app(key_id, 30, prefix="d"), other])[1:]
    assert isinstance(refused, AlreadyExistsError)


def test_a_group_larger_than_a_batch_is_split(
    platform: PlatformNode, link: InProcessBureau, key_id: str
) -> None:
    apps = [app(key_id, i, prefix="s") for i in range(40, 63)]  # 23: a batch holds 21
    results = [receipt(r) for r in platform.score_many(apps)]
    assert [r.application_id for r in results] == [a.application_id for a in apps]
    sizes = [len(pb.EncryptedBatch.FromString(p).members) for p in link.sent]
    assert sizes == [21, 2]


def test_groups_follow_the_bank_key_and_the_model_version(
    platform: PlatformNode, link: InProcessBureau, key_id: str
) -> None:
    apps = [
        app(key_id, 64, prefix="g"),
        app(key_id, 65, prefix="g", version="latest"),
        app(key_id, 66, prefix="g"),
    ]
    [receipt(r) for r in platform.score_many(apps)]
    assert [[m.application_id for m in pb.EncryptedBatch.FromString(p).members] for p in link.sent] == [
        ["g-64", "g-65", "g-66"]
    ]


def test_errors_come_back_in_place(platform: PlatformNode, link: InProcessBureau, key_id: str) -> None:
    apps = [
        app(key_id, 67, prefix="e"),
        app(key_id, 68, prefix="e", model_id="nope"),
        app(key_id, 69, prefix="e", key_id="pk-" + "0" * 32),
        app(key_id, 70, prefix="e"),
    ]
    results = platform.score_many(apps)
    assert isinstance(results[1], PeerError) and results[1].code == "NOT_FOUND"
    assert isinstance(results[2], PeerError) and results[2].code == "NOT_FOUND"
    assert str(results[2]).startswith("bureau: ") and "pk-000" in str(results[2])
    assert [receipt(results[i]).application_id for i in (0, 3)] == ["e-67", "e-70"]
    assert len(link.sent) == 1


def test_an_unreachable_bureau_fails_the_whole_batch(
    platform: PlatformNode, link: InProcessBureau, key_id: str
) -> None:
    platform.feature_spec(DEFAULT_MODEL_ID, "1")
    link.calls.clear()
    link.down = True
    results = platform.score_many([app(key_id, 71, prefix="u"), app(key_id, 72, prefix="u")])
    assert all(isinstance(r, UnavailableError) for r in results)
    assert str(results[0]) == "bureau unavailable: connection refused"
    assert platform.outbox.get("u-71") is None
    link.down = False
    key = platform.bank_key(BANK, key_id)
    link.down = True
    results = platform.score_many([app(key_id, 71, prefix="u"), app(key_id, 72, prefix="u")])
    assert all(isinstance(r, UnavailableError) for r in results)
    entry = platform.outbox.get("u-71")
    assert entry is not None and entry.attempts == 1 and entry.state == "sent"
    assert key is platform.bank_key(BANK, key_id)
    link.down = False
    resent = [receipt(r) for r in platform.score_many([app(key_id, 72, prefix="u")])]
    assert resent[0].encrypt_ms == 0.0


def test_a_model_without_a_packed_form_goes_one_by_one(bureau: BureauNode, key_id: str) -> None:
    class Unpacked(InProcessBureau):
        slot_bits = 0
        max_slots = 0

        def model_spec(self, model_id: str, version: str = "") -> ModelSpec:
            spec = super().model_spec(model_id, version)
            return ModelSpec(spec.model_id, spec.version, spec.feature_spec, self.slot_bits, self.max_slots)

    for slot_bits, max_slots in ((0, 64), (95, 0), (4096, 64)):
        link = Unpacked(bureau)
        link.slot_bits, link.max_slots = slot_bits, max_slots
        node = PlatformNode(PLATFORM, link)
        try:
            prefix = f"o{slot_bits}-{max_slots}"
            results = [
                receipt(r)
                for r in node.score_many([app(key_id, 73, prefix=prefix), app(key_id, 74, prefix=prefix)])
            ]
            assert [r.application_id for r in results] == [f"{prefix}-73", f"{prefix}-74"]
            assert link.calls.count("submit") == 2 and "submit_batch" not in link.calls
            assert all("platform.encrypt" in r.stage_ms for r in results)
        finally:
            node.close()


def test_a_batch_refused_for_an_id_the_bureau_has_goes_one_by_one(
    bureau: BureauNode, key_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    elsewhere = PlatformNode(PLATFORM, InProcessBureau(bureau))
    link = InProcessBureau(bureau)
    node = PlatformNode(PLATFORM, link)
    try:
        elsewhere.score(app(key_id, 75, prefix="r"))
        caplog.set_level(logging.WARNING, LOG)
        results = node.score_many([app(key_id, 75, prefix="r"), app(key_id, 76, prefix="r")])
        assert isinstance(results[0], PeerError) and results[0].code == "ALREADY_EXISTS"
        assert receipt(results[1]).application_id == "r-76"
        assert link.calls == ["model_spec", "bank_key", "submit_batch", "submit", "submit"]
        assert messages(caplog)[0].startswith("batch refused (bureau: ")
        assert messages(caplog)[0].endswith("); sending its 2 applications one by one")
        # A batch of one refused so is refused, not sent again alone.
        link.calls.clear()
        [alone] = node.score_many([app(key_id, 75, prefix="r", application_id="r-77")])
        assert receipt(alone).application_id == "r-77"
        elsewhere.score(app(key_id, 78, prefix="r"))
        link.calls.clear()
        [refused] = node.score_many([app(key_id, 78, prefix="r")])
        assert isinstance(refused, PeerError) and refused.code == "ALREADY_EXISTS"
        assert link.calls == ["submit_batch"]
    finally:
        node.close()
        elsewhere.close()


def test_a_batch_refused_otherwise_is_refused_whole(
    platform: PlatformNode, link: InProcessBureau, key_id: str
) -> None:
    link.refusals.append(PeerError("bureau", "INVALID_ARGUMENT", "bad batch"))
    results = platform.score_many([app(key_id, 79, prefix="w"), app(key_id, 80, prefix="w")])
    assert [str(r) for r in results] == ["bureau: bad batch"] * 2
    assert link.calls.count("submit_batch") == 1 and "submit" not in link.calls


def test_a_replayed_batch_refused_as_already_there_is_asked_once_more(
    platform: PlatformNode, link: InProcessBureau, key_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    apps = [app(key_id, 81, prefix="k"), app(key_id, 82, prefix="k")]
    platform.score_many(apps)
    caplog.set_level(logging.INFO, LOG)
    link.refusals.append(PeerError("bureau", "ALREADY_EXISTS", "taken"))
    results = [receipt(r) for r in platform.score_many(apps)]
    assert [r.application_id for r in results] == ["k-81", "k-82"]
    assert len(link.sent) == 3 and link.sent[2] == link.sent[0]
    assert messages(caplog) == ["batch of k-81 refused as already submitted; asking once more"]
    link.refusals.extend([PeerError("bureau", "ALREADY_EXISTS", "taken")] * 2)
    results2 = platform.score_many(apps)
    assert [str(r) for r in results2] == ["bureau: taken"] * 2
    link.refusals.clear()
    link.refusals.append(PeerError("bureau", "NOT_FOUND", "gone"))
    assert [str(r) for r in platform.score_many(apps)] == ["bureau: gone"] * 2


def test_a_fresh_batch_refused_as_already_there_is_not_asked_again(
    platform: PlatformNode, link: InProcessBureau, key_id: str
) -> None:
    link.refusals.append(PeerError("bureau", "ALREADY_EXISTS", "taken"))
    [result] = platform.score_many([app(key_id, 83, prefix="f")])
    assert str(result) == "bureau: taken"
    assert link.calls.count("submit_batch") == 1


def test_a_batch_an_id_of_which_was_stored_meanwhile_goes_one_by_one(
    tmp_path: Path, bureau: BureauNode, key_id: str
) -> None:
    class Racing(Outbox):
        """Another request stores the first member alone just before the batch is stored."""

        def add_batch(self, members: Any, *args: Any, **kwargs: Any) -> Any:
            if not hasattr(self, "raced"):
                self.raced = True
                other.score(app(key_id, 84, prefix="m"))
            return super().add_batch(members, *args, **kwargs)

    outbox = Racing(tmp_path / "outbox.sqlite3", b"s" * 32)
    link = InProcessBureau(bureau)
    node = PlatformNode(PLATFORM, link, outbox)
    other = PlatformNode(PLATFORM, InProcessBureau(bureau), outbox)
    try:
        results = [
            receipt(r) for r in node.score_many([app(key_id, 84, prefix="m"), app(key_id, 85, prefix="m")])
        ]
        assert [r.application_id for r in results] == ["m-84", "m-85"]
        assert link.calls.count("submit_batch") == 0 and link.calls.count("submit") == 2
    finally:
        node.close()


# ---------------------------------------------------------------------- the resender


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the resender did not get there"
        time.sleep(0.01)


def test_the_resender_sends_what_the_bureau_never_answered(
    tmp_path: Path, bureau: BureauNode, key_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox"
    link = InProcessBureau(bureau)
    first = PlatformNode(PLATFORM, link, Outbox.open(path), retry=FAST)
    prefetch(first, key_id)
    link.down = True
    with pytest.raises(UnavailableError, match=r"^bureau unavailable: connection refused$"):
        first.score(app(key_id, 86, prefix="z"))
    first.score_many([app(key_id, 87, prefix="z"), app(key_id, 88, prefix="z")])
    first.close()
    dials: list[InProcessBureau] = []
    hung_up: list[int] = []

    def dial() -> tuple[InProcessBureau, Callable[[], None]]:
        fresh = InProcessBureau(bureau)
        fresh.down = len(dials) == 0  # the first link finds the bureau down
        dials.append(fresh)
        return fresh, lambda: hung_up.append(len(dials))

    main = InProcessBureau(bureau)
    node = PlatformNode(PLATFORM, main, Outbox.open(path), retry=FAST, dial=dial, lease_s=3.0)
    caplog.set_level(logging.INFO, LOG)
    caplog.clear()
    try:
        node.start_resending()
        node.start_resending()  # once is enough
        # The resender logs "resent" after the bureau's answer is recorded: wait for both.
        resent = {"resent z-86 to the bureau", "resent z-87 to the bureau"}
        eventually(lambda: node.outbox.counts()["acknowledged"] == 3 and resent <= set(messages(caplog)))
        assert main.sent == [] and len(dials) >= 2 and hung_up[0] == 1
        logged = messages(caplog)
        assert logged[0] == "resending 3 application(s) the bureau never answered"
        assert any(m.startswith("resending z-86: bureau unavailable") for m in logged)
    finally:
        node.close()
    assert hung_up[-1] == len(dials)


def test_a_round_returns_when_the_next_entry_is_due(
    platform: PlatformNode, link: InProcessBureau, key_id: str
) -> None:
    prefetch(platform, key_id)
    platform.retry = RetryPolicy(base_s=0.5, cap_s=5.0, jitter=0.0)  # not due before the first round
    link.down = True
    with pytest.raises(UnavailableError, match=r"^bureau unavailable: connection refused$"):
        platform.score(app(key_id, 89, prefix="n"))
    platform._resender = flow.RetryLoop("test", lambda: None)  # a round, not its thread
    entry = platform.outbox.get("n-89")
    assert entry is not None
    now = time.time()
    wait = platform._resend_due()  # not due yet
    assert wait is not None and 0.05 <= wait <= entry.next_attempt_at - now
    time.sleep(max(0.0, entry.next_attempt_at - time.time()) + 0.01)
    wait = platform._resend_due()  # due: sent, the bureau still down; the next attempt in 1 s
    assert wait is not None and 0.05 <= wait <= 1.0 and link.calls.count("submit") == 2
    retried = platform.outbox.get("n-89")
    assert retried is not None and retried.attempts == 2
    link.down = False
    time.sleep(max(0.0, retried.next_attempt_at - time.time()) + 0.01)
    assert platform._resend_due() is None  # nothing left
    platform._resender = None


def test_a_stopping_resender_hands_back_what_it_claimed(
    platform: PlatformNode, link: InProcessBureau, key_id: str
) -> None:
    prefetch(platform, key_id)
    link.down = True
    for i in (90, 91):
        with pytest.raises(UnavailableError, match=r"^bureau unavailable: connection refused$"):
            platform.score(app(key_id, i, prefix="h"))
    time.sleep(0.06)
    link.down = False
    assert platform._resend_due() is None  # no resender: hands back at once
    assert link.calls.count("submit") == 2
    for i in (90, 91):
        entry = platform.outbox.get(f"h-{i}")
        assert (
            entry is not None and entry.state == "sent" and entry.claimed_by == "" and entry.lease_until == 0
        )


def test_a_receipt_names_the_stored_version_when_the_bureau_names_none(
    platform: PlatformNode, link: InProcessBureau, key_id: str
) -> None:
    link.names_version = False
    single, pair = app(key_id, 92, prefix="v"), [app(key_id, 93, prefix="v"), app(key_id, 94, prefix="v")]
    for _ in range(2):  # fresh, then resubmitted
        assert platform.score(single).model_version == "1"
        assert [receipt(r).model_version for r in platform.score_many(pair)] == ["1", "1"]
        assert receipt(platform.score_many([single])[0]).model_version == "1"


def test_a_resent_batch_is_timed_from_its_resending(
    platform: PlatformNode, link: InProcessBureau, key_id: str
) -> None:
    pair = [app(key_id, 95, prefix="t"), app(key_id, 96, prefix="t")]
    platform.score_many(pair)
    link.delay_s = 0.05
    t0 = time.perf_counter()
    results = [receipt(r) for r in platform.score_many(pair)]
    elapsed_ms = (time.perf_counter() - t0) * 1e3
    assert all(50.0 <= r.total_ms <= elapsed_ms for r in results)


def test_a_refusal_after_a_lost_lease_is_not_recorded(
    platform: PlatformNode, key_id: str, bureau: BureauNode, caplog: pytest.LogCaptureFixture
) -> None:
    class TakenOverRefused(InProcessBureau):
        def submit(self, payload: bytes) -> SubmitResult:
            platform.outbox.retry_later("a-97", 0, time.time(), "paused")
            platform.outbox.claim_due("r2", 6.0, time.time() + 1, 16)
            raise PeerError("bureau", "INVALID_ARGUMENT", "no")

    platform.bureau = TakenOverRefused(bureau)
    caplog.set_level(logging.WARNING, LOG)
    with pytest.raises(PeerError, match=r"^bureau: no$"):
        platform.score(app(key_id, 97))
    entry = platform.outbox.get("a-97")
    assert entry is not None and entry.state == "sent" and entry.claimed_by == "r2"
    assert messages(caplog) == [
        "lost the lease on outbox entry 'a-97' (claim 1): another platform replica took it over or it "
        "was answered; this one records nothing about it"
    ]


def unanswered(node: PlatformNode, link: InProcessBureau, key_id: str, ids: range) -> None:
    """Store applications ``ids`` while the bureau is down, then wait until they are due."""
    prefetch(node, key_id)
    link.down = True
    for i in ids:
        with pytest.raises(UnavailableError, match=r"^bureau unavailable: connection refused$"):
            node.score(app(key_id, i, prefix="l"))
    link.down = False
    time.sleep(0.06)


def test_a_round_skips_an_entry_taken_over_while_it_waited(
    platform: PlatformNode,
    link: InProcessBureau,
    key_id: str,
    bureau: BureauNode,
    caplog: pytest.LogCaptureFixture,
) -> None:
    unanswered(platform, link, key_id, range(100, 103))
    caplog.set_level(logging.WARNING, "blindscore.infra.leases")

    class TakeOverNext(InProcessBureau):
        def submit(self, payload: bytes) -> SubmitResult:
            if pb.EncryptedApplication.FromString(payload).application_id == "l-100":
                platform.outbox.retry_later("l-101", 1, time.time(), "paused")
                platform.outbox.claim_due("r2", 6.0, time.time() + 1, 1)
                platform._leases._round()  # the renewal that finds it taken over
            return super().submit(payload)

    resend = TakeOverNext(bureau)
    platform.bureau = resend
    platform._resender = flow.RetryLoop("test", lambda: None)  # a round, not its thread
    try:
        platform._resend_due()
    finally:
        platform._resender = None
    sent = [pb.EncryptedApplication.FromString(p).application_id for p in resend.sent]
    assert sent == ["l-100", "l-102"]
    assert platform._leases.held() == []
    taken = platform.outbox.get("l-101")
    assert taken is not None and taken.claimed_by == "r2" and taken.state == "sent"
    # The renewal's warning names the platform's lease keeper.
    lost = [r.getMessage() for r in caplog.records if r.name == "blindscore.infra.leases"]
    # (The keeper's own renewal thread may find l-100, answered meanwhile, and log that too.)
    assert any(
        m.startswith("platform-leases: lost the lease on 1 row(s) (first outbox entry 'l-101'") for m in lost
    )


def test_a_round_hangs_up_only_after_the_bureau_was_unreachable(
    platform: PlatformNode, link: InProcessBureau, key_id: str, bureau: BureauNode
) -> None:
    unanswered(platform, link, key_id, range(103, 106))
    dialed: list[InProcessBureau] = []
    hung_up: list[int] = []

    def dial() -> tuple[InProcessBureau, Callable[[], None]]:
        dialed.append(InProcessBureau(bureau))
        if len(dialed) == 1:  # unreachable for one, refused for the next, answered for the last
            dialed[0].refusals = [
                UnavailableError("bureau unavailable: reset"),
                PeerError("bureau", "INVALID_ARGUMENT", "no"),
            ]
        return dialed[-1], lambda: hung_up.append(len(dialed))

    platform._dial = dial
    platform.retry = RetryPolicy(base_s=5.0, jitter=0.0)  # l-103 is not due again during the test
    platform._resender = flow.RetryLoop("test", lambda: None)  # rounds, not their thread
    try:
        platform._resend_due()
        assert dialed[0].calls == ["submit"] * 3 and hung_up == [1]
        refused = platform.outbox.get("l-104")
        assert refused is not None and refused.state == "refused"
        # Rounds in which the bureau answered keep their link for the next round.
        platform.retry = FAST
        unanswered(platform, link, key_id, range(106, 107))
        platform._resend_due()
        unanswered(platform, link, key_id, range(107, 108))
        platform._resend_due()
        assert len(dialed) == 2 and hung_up == [1] and dialed[1].calls == ["submit", "submit"]
    finally:
        platform._resender = None


@pytest.mark.parametrize(("lease_s", "idle_s"), [(6.0, 3.0), (0.5, 0.25), (3600.0, 30.0)])
def test_the_resender_wakes_for_entries_a_dead_replica_leaves(
    link: InProcessBureau, lease_s: float, idle_s: float
) -> None:
    node = PlatformNode(PLATFORM, link, lease_s=lease_s)
    try:
        node.start_resending()
        loop = node._resender
        assert loop is not None and loop._idle_s == idle_s and loop.running
        assert "platform-resend" in [t.name for t in threading.enumerate()]
    finally:
        node.close()
    assert node._resender is None and not loop.running


def test_resubmissions_of_two_batches_and_a_single_go_each_their_way(
    platform: PlatformNode, link: InProcessBureau, key_id: str
) -> None:
    single = app(key_id, 110, prefix="y")
    first, second = (
        [app(key_id, 111, prefix="y"), app(key_id, 112, prefix="y")],
        [app(key_id, 113, prefix="y")],
    )
    platform.score(single)
    platform.score_many(first)
    platform.score_many(second)
    link.sent.clear()
    results = [receipt(r) for r in platform.score_many([first[1], second[0], single])]
    assert [r.application_id for r in results] == ["y-112", "y-113", "y-110"]
    # The single one is sent while the requests are sorted, the batches after, each once.
    assert len(link.sent) == 3
    assert pb.EncryptedApplication.FromString(link.sent[0]).application_id == "y-110"
    batches = [[m.application_id for m in pb.EncryptedBatch.FromString(p).members] for p in link.sent[1:]]
    assert batches == [["y-111", "y-112"], ["y-113"]]
    # A single application resubmitted goes through score: its receipt has an encryption stage.
    assert "platform.encrypt" in results[2].stage_ms
    assert "platform.encrypt" not in results[0].stage_ms


def test_an_application_stored_meanwhile_by_another_request_sends_that_one(
    tmp_path: Path, bureau: BureauNode, key_id: str
) -> None:
    class Racing(Outbox):
        """Another request stores the same application just before this one does."""

        def add(self, *args: Any, **kwargs: Any) -> Any:
            if not hasattr(self, "raced"):
                self.raced = True
                other.score(app(key_id, 114, prefix="c"))
            return super().add(*args, **kwargs)

    outbox = Racing(tmp_path / "outbox.sqlite3", b"s" * 32)
    link, other_link = InProcessBureau(bureau), InProcessBureau(bureau)
    node = PlatformNode(PLATFORM, link, outbox)
    other = PlatformNode(PLATFORM, other_link, outbox)
    try:
        got = node.score(app(key_id, 114, prefix="c"))
        assert got.application_id == "c-114" and got.model_version == "1" and got.pending
        assert link.sent == other_link.sent  # the payload the other request stored, not a new one
    finally:
        node.close()


def test_a_resubmission_after_a_restart_only_resends(tmp_path: Path, bureau: BureauNode, key_id: str) -> None:
    path = tmp_path / "outbox"
    first = PlatformNode(PLATFORM, InProcessBureau(bureau), Outbox.open(path))
    first.score(app(key_id, 115, prefix="b"))
    stored = first.outbox.get("b-115")
    assert stored is not None and stored.claimed_by == ""  # a platform with no replica id
    first.close()
    link = InProcessBureau(bureau)
    node = PlatformNode(PLATFORM, link, Outbox.open(path))
    try:
        assert node.score(app(key_id, 115, prefix="b")).model_version == "1"
        assert link.calls == ["submit"]  # neither the model's spec nor the key: the stored payload
    finally:
        node.close()


@pytest.mark.parametrize(("max_slots", "sizes"), [(1, [1, 1, 1]), (2, [2, 1])])
def test_a_batch_holds_at_most_the_models_slots(
    bureau: BureauNode, key_id: str, max_slots: int, sizes: list[int]
) -> None:
    class FewSlots(InProcessBureau):
        """The model's spec allowing fewer applications a batch than the key would hold."""

        def model_spec(self, model_id: str, version: str = "") -> ModelSpec:
            spec = super().model_spec(model_id, version)
            return ModelSpec(spec.model_id, spec.version, spec.feature_spec, spec.slot_bits, max_slots)

    link = FewSlots(bureau)
    node = PlatformNode(PLATFORM, link)
    try:
        prefix = f"fs{max_slots}"
        results = node.score_many([app(key_id, i, prefix=prefix) for i in (116, 117, 118)])
        assert [receipt(r).application_id for r in results] == [f"{prefix}-{i}" for i in (116, 117, 118)]
        assert "submit" not in link.calls
        assert [len(pb.EncryptedBatch.FromString(p).members) for p in link.sent] == sizes
    finally:
        node.close()


def test_a_numbered_version_is_asked_for_as_it_is(
    platform: PlatformNode, link: InProcessBureau, bureau: BureauNode
) -> None:
    document = default_model().to_dict()
    document["metadata"] = {**document["metadata"], "note": "version 2"}
    assert bureau.models.put(DEFAULT_MODEL_ID, load_model(document)).version == 2  # now the latest
    assert platform.feature_spec(DEFAULT_MODEL_ID, "v1")[0] == "1"
    assert platform.feature_spec(DEFAULT_MODEL_ID)[0] == "2"
    with pytest.raises(
        PeerError, match=r"^bureau: model version 'X1' must be a positive integer or 'latest'$"
    ) as refused:
        platform.feature_spec(DEFAULT_MODEL_ID, "X1")  # only a leading v is dropped
    assert refused.value.code == "INVALID_ARGUMENT"


def test_a_platform_id_and_a_lease_are_checked(link: InProcessBureau) -> None:
    with pytest.raises(
        InvalidInputError,
        match=r"^platform id 'bad id' is not a valid identifier "
        r"\(1-128 characters: letters, digits, \. _ : -\)$",
    ):
        PlatformNode("bad id", link)
    with pytest.raises(InvalidInputError, match=r"^lease must be between 0\.5 and 3600 seconds$"):
        PlatformNode(PLATFORM, link, lease_s=0.4)


def test_receipts_report_milliseconds(
    platform: PlatformNode, key_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flow, "LATEST_TTL_S", 1e6)
    prefetch(platform, key_id)
    monkeypatch.setattr(flow, "time", SteppedClock())
    # One application: read at 0.5, looked up 1.0, encrypted 1.5, answered 2.0.
    fresh = platform.score(app(key_id, 110, prefix="ms"))
    assert (fresh.encrypt_ms, fresh.total_ms, fresh.stage_ms["platform.encrypt"]) == (1000.0, 1500.0, 1000.0)
    # Resubmitted: nothing encrypted, the lookup is the "encryption" stage.
    again = platform.score(app(key_id, 110, prefix="ms"))
    assert (again.encrypt_ms, again.total_ms) == (500.0, 1000.0)
    # A packed pair: encrypted and stored in one step (shared by two), answered one step later.
    pair = [app(key_id, i, prefix="ms") for i in (111, 112)]
    packed = [receipt(r) for r in platform.score_many(pair)]
    assert [(r.encrypt_ms, r.total_ms) for r in packed] == [(250.0, 1000.0)] * 2
    # The same pair again: the stored batch resent, timed from its resending, nothing encrypted.
    resent = [receipt(r) for r in platform.score_many(pair)]
    assert [(r.encrypt_ms, r.total_ms, "platform.encrypt" in r.stage_ms) for r in resent] == [
        (0.0, 500.0, False)
    ] * 2
