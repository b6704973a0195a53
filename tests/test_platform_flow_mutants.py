"""The platform's transport-free flows (platform_node/flow.py) driven in process, for its mutation run."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from blindscore.bureau.flow import BureauNode
from blindscore.bureau.registry import BankRecord
from blindscore.crypto.dgk import DGKKeyPair
from blindscore.crypto.paillier import KeyPair, PublicKey
from blindscore.data.german import DEFAULT_MODEL_ID, load_german_credit
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

    def _call(self, name: str, work: Callable[[], Any]) -> Any:
        self.calls.append(name)
        if self.down:
            raise UnavailableError("bureau unavailable: connection refused")
        try:
            return work()
        except BlindscoreError as exc:
            code, message = status_of(exc)
            raise PeerError("bureau", code.name, message) from None

    def model_spec(self, model_id: str, version: str = "") -> ModelSpec:
        return self._call("model_spec", lambda: self.bureau.model_spec(model_id, version))  # type: ignore[no-any-return]

    def bank_key(self, bank_id: str, key_id: str) -> PublicKey:
        key = self._call("bank_key", lambda: self.bureau.bank_key(bank_id, key_id))
        return serde.paillier_key_from_json(serde.paillier_key_to_json(key))

    def _result(self, report: Any, count: int) -> SubmitResult:
        return SubmitResult({"bureau.t": 1.0}, 100 * count, str(report.model_version), report.pending)

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

        return self._call("submit", work)  # type: ignore[no-any-return]

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

        return self._call("submit_batch", work)  # type: ignore[no-any-return]


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


def app(key_id: str, i: int, *, prefix: str = "a", version: str = "1", **changes: Any) -> Application:
    fields: dict[str, Any] = {
        "application_id": f"{prefix}-{i}",
        "bank_id": BANK,
        "model_id": DEFAULT_MODEL_ID,
        "key_id": key_id,
        "consent_reference": CONSENT,
        "features": ROWS[i],
        "model_version": version,
    }
    fields.update(changes)
    return Application(**fields)


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
    before = time.time()
    got = platform.score(app(key_id, 1))
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
    assert entry.claimed_by == "r1"
    # Stored due a lease from now (what a resender would wait before sending it again).
    assert before + 6.0 <= entry.next_attempt_at <= time.time() + 6.0
    stored = bureau.applications.get(PLATFORM, "a-1")
    assert stored is not None and stored.model_version == 1


def test_a_resubmission_resends_the_stored_payload(
    platform: PlatformNode, link: InProcessBureau, key_id: str
) -> None:
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
    platform: PlatformNode, link: InProcessBureau, key_id: str
) -> None:
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
