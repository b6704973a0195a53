"""The three gRPC services in-process on port 0: happy path and a precise status for each refusal."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.json_format import MessageToJson

from blindscore.app.client import score_one
from blindscore.bureau.flow import BureauNode
from blindscore.crypto.paillier import PublicKey
from blindscore.data.german import DEFAULT_MODEL_ID, default_model, load_german_credit
from blindscore.infra.transport import open_channel
from blindscore.models.linear import LinearModel
from blindscore.platform_node.bureau_link import GrpcBureauLink, SubmitResult
from blindscore.platform_node.flow import PlatformNode, Receipt
from blindscore.protocol.application import Application
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc
from blindscore.wire import serde

from support import Nodes as Net
from support import NodesFactory, german_credit


@pytest.fixture(scope="module")
def net(module_nodes: NodesFactory) -> Net:
    return module_nodes("nodes", bank_id="bank-a", platform_id="platform-a")


def german_app(net: Net, i: int, **overrides: Any) -> Application:
    rows, _ = german_credit()
    fields: dict[str, Any] = {
        "application_id": f"app-{i}",
        "bank_id": "bank-a",
        "model_id": DEFAULT_MODEL_ID,
        "key_id": net.key_id,
        "consent_reference": f"consent-{i}",
        "features": rows[i],
    }
    fields.update(overrides)
    return Application(**fields)


def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_bands_match_plaintext(net: Net) -> None:
    rows, _ = load_german_credit()
    model = default_model()
    for i in range(6):
        outcome = score_one(net.platform, german_app(net, i))
        assert outcome.accepted and outcome.application_id == f"app-{i}"
        record = net.bank_node.store.get(f"app-{i}")
        assert record is not None
        assert record.band == model.band(rows[i])
        assert record.band_label == model.policy.labels[record.band]
        assert record.model_id == DEFAULT_MODEL_ID
        # No timing measured at the bureau or the bank reaches the platform (no --share-timings).
        assert outcome.stage_ms and all(
            k.startswith(("platform.", "transport.platform.")) for k in outcome.stage_ms
        ), outcome.stage_ms


def test_resubmission_is_idempotent(net: Net) -> None:
    score_one(net.platform, german_app(net, 20))
    before = net.bank_node.store.count()
    score_one(net.platform, german_app(net, 20))
    assert net.bank_node.store.count() == before


class RecordingLink(GrpcBureauLink):
    """The platform's link to the bureau, keeping every payload it sends."""

    def __init__(self, channel: grpc.Channel) -> None:
        super().__init__(channel)
        self.sent: list[bytes] = []

    def submit(self, payload: bytes) -> SubmitResult:
        self.sent.append(payload)
        return super().submit(payload)

    def submit_batch(self, payload: bytes, count: int) -> SubmitResult:
        self.sent.append(payload)
        return super().submit_batch(payload, count)


def test_the_platform_sends_what_its_outbox_stored_without_unpacking_it(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    unpacked_with: list[PublicKey] = []
    unpack = PublicKey.unpack

    def spy(key: PublicKey, data: bytes, count: int | None = None) -> list[Any]:
        unpacked_with.append(key)
        return unpack(key, data, count)

    monkeypatch.setattr(PublicKey, "unpack", spy)
    channel = open_channel(net.bureau)
    link = RecordingLink(channel)
    node = PlatformNode("platform-a", link)
    try:
        single = german_app(net, 40, application_id="sent-40")
        batch = [german_app(net, i, application_id=f"sent-{i}") for i in (41, 42, 43)]
        for _ in range(2):  # fresh, then resubmitted
            assert node.score(single).application_id == "sent-40"
            assert all(isinstance(r, Receipt) for r in node.score_many(batch))
        stored_single = node.outbox.get("sent-40")
        stored_batch = node.outbox.get("sent-41")
        assert stored_single is not None and stored_batch is not None
        batch_payload = node.outbox.batch_payload(stored_batch)
        assert link.sent == [stored_single.payload, batch_payload] * 2
        assert batch_payload is not None and pb.EncryptedBatch.FromString(batch_payload).count > 0
        # The bureau validates every ciphertext it receives; the platform never re-reads its own.
        platform_key = node.bank_key("bank-a", net.key_id)
        assert unpacked_with and all(key is not platform_key for key in unpacked_with)
    finally:
        node.close()
        channel.close()


def test_unknown_model_key_bank(net: Net) -> None:
    code, msg = status_of(
        lambda: score_one(net.platform, german_app(net, 1, application_id="x1", model_id="nope"))
    )
    assert code == grpc.StatusCode.NOT_FOUND and "nope" in msg
    code, msg = status_of(
        lambda: score_one(net.platform, german_app(net, 1, application_id="x2", key_id="pk-" + "0" * 32))
    )
    assert code == grpc.StatusCode.NOT_FOUND and "pk-000" in msg
    code, msg = status_of(
        lambda: score_one(net.platform, german_app(net, 1, application_id="x3", bank_id="ghost"))
    )
    assert code == grpc.StatusCode.NOT_FOUND and "ghost" in msg


def test_bad_features_name_the_feature(net: Net) -> None:
    rows, _ = load_german_credit()
    before = net.bank_node.store.count()
    for bad in (-5.0, float("nan"), float("inf"), "many"):
        features = {**rows[2], "duration_in_month": bad}
        code, msg = status_of(
            lambda f=features: score_one(net.platform, german_app(net, 2, application_id="bad", features=f))
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (bad, msg)
        assert "duration_in_month" in msg
    features = {k: v for k, v in rows[2].items() if k != "age_in_years"}
    code, msg = status_of(
        lambda: score_one(net.platform, german_app(net, 2, application_id="bad", features=features))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "age_in_years" in msg
    assert net.bank_node.store.count() == before
    assert net.bank_node.store.get("bad") is None


def test_missing_consent_and_bad_ids(net: Net) -> None:
    stub: Any = pb_grpc.PlatformStub(open_channel(net.platform))
    msg = serde.application_to_proto(german_app(net, 3))
    msg.consent_reference = ""
    code, text = status_of(lambda: stub.ScoreApplication(msg, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "consent" in text
    msg = serde.application_to_proto(german_app(net, 3))
    msg.application_id = "../etc/passwd"
    code, text = status_of(lambda: stub.ScoreApplication(msg, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "application id" in text


def test_bureau_refuses_bad_ciphertexts(net: Net) -> None:
    stub: Any = pb_grpc.BureauStub(open_channel(net.bureau))
    key = net.bank_node.keypair.public_key
    width = default_model().spec.encoded_width
    good = [key.encrypt(0) for _ in range(width)]
    base = {
        "application_id": "cipher-1",
        "platform_id": "p",
        "bank_id": "bank-a",
        "model_id": DEFAULT_MODEL_ID,
        "key_id": net.key_id,
        "consent_reference": "c",
    }
    cases = {
        "count": pb.EncryptedApplication(**base, count=width - 1, ciphertexts=key.pack(good[:-1])),
        "zero": pb.EncryptedApplication(**base, count=width, ciphertexts=key.pack([0, *good[1:]])),
        "n": pb.EncryptedApplication(**base, count=width, ciphertexts=key.pack([key.n, *good[1:]])),
        "length": pb.EncryptedApplication(**base, count=width, ciphertexts=key.pack(good)[:-1]),
        "mismatch": pb.EncryptedApplication(**base, count=width + 1, ciphertexts=key.pack(good)),
    }
    for name, msg in cases.items():
        code, text = status_of(lambda m=msg: stub.SubmitApplication(m, timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (name, text)
    assert net.bank_node.store.get("cipher-1") is None


def _start_run(net: Net, stub: Any, application_id: str) -> None:
    """One honest-looking round 1 for ``application_id``, so the bank has a run to complete."""
    key = net.bank_node.keypair.public_key
    stub.CompareMasked(
        pb.MaskedRequest(
            application_id=application_id,
            key_id=net.key_id,
            count=1,
            bits=8,
            truncate_bits=0,
            width_bits=60,
            ciphertext=key.pack([key.encrypt(12345)]),
        ),
        timeout=10,
    )


def test_bank_refuses_by_ids_and_records_a_bad_band_as_a_fault(net: Net) -> None:
    """Refusals depend on ids and shapes only: an unknown key, a delivery with no run, a malformed
    request. A band that decrypts out of range is answered like any other and stored as a fault."""
    stub: Any = pb_grpc.BankStub(open_channel(net.bank))
    key = net.bank_node.keypair.public_key
    code, _ = status_of(
        lambda: stub.DeliverBand(
            pb.BandDelivery(
                application_id="b1", key_id="pk-" + "1" * 32, model_id="m", band_labels=["A", "B"]
            ),
            timeout=10,
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND

    def out_of_range(app_id: str) -> Any:
        return pb.BandDelivery(
            application_id=app_id,
            key_id=net.key_id,
            model_id="m",
            band_labels=["A", "B"],
            band_ciphertext=key.pack([key.encrypt(7)]),
        )

    code, text = status_of(lambda: stub.DeliverBand(out_of_range("b2"), timeout=10))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "no run of the band protocol" in text
    _start_run(net, stub, "b2")
    receipt = stub.DeliverBand(out_of_range("b2"), timeout=10)
    assert receipt.stored and receipt.application_id == "b2" and receipt.server_ms == 0
    assert net.bank_node.store.get("b2") is None
    assert net.bank_node.store.runs("", "b2") == (1, True, "faulted")
    assert [
        (f.application_id, f.reason) for f in net.bank_node.store.faults() if f.application_id == "b2"
    ] == [("b2", "band_range")]
    code, _ = status_of(
        lambda: stub.CompareMasked(
            pb.MaskedRequest(application_id="b3", key_id=net.key_id, count=0, bits=8), timeout=10
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    net.bank_node.store.reset_standing("")


def test_a_changed_band_keeps_the_first_and_is_answered_as_any_retry(net: Net) -> None:
    """A retried application whose band changes keeps its first band, and the bureau cannot tell:
    the receipt is the same as for a repeat of the same band (no ALREADY_EXISTS)."""
    stub: Any = pb_grpc.BankStub(open_channel(net.bank))
    key = net.bank_node.keypair.public_key

    def deliver(band: int) -> Any:
        return stub.DeliverBand(
            pb.BandDelivery(
                application_id="conflict",
                key_id=net.key_id,
                model_id="m",
                band_labels=["A", "B", "C"],
                band_ciphertext=key.pack([key.encrypt(band)]),
            ),
            timeout=10,
        )

    _start_run(net, stub, "conflict")
    first, same, changed = deliver(1), deliver(1), deliver(2)
    assert first == same == changed
    record = net.bank_node.store.get("conflict")
    assert record is not None and record.band == 1


def test_registration_refusals(net: Net) -> None:
    stub: Any = pb_grpc.BureauStub(open_channel(net.bureau))
    code, _ = status_of(
        lambda: stub.RegisterBank(
            pb.RegisterBankRequest(bank_id="b", address="x:1", paillier_public_key="{"), timeout=10
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = status_of(lambda: stub.GetModelSpec(pb.GetModelSpecRequest(model_id="missing"), timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND


NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def weights_shown(text: str, model: LinearModel) -> list[float]:
    """Every weight and intercept of ``model``, float or encoded integer, that appears as a number in
    ``text``: exactly, or a float to 6 significant digits (a rounded print leaks it too)."""
    shown = [float(token) for token in NUMBER.findall(text)]
    exact = {float(w) for w in (*model.encoded_weights, model.encoded_intercept)}
    rounded = [float(w) for w in (*model.coef, model.intercept) if abs(w) > 1e-3]
    found = [w for w in exact if w in set(shown)]
    found += [w for w in rounded if any(abs(t - w) <= 5e-6 * abs(w) for t in shown)]
    return found


@pytest.mark.parametrize("spec", ["honest", "broken: weights to 6 digits in the spec"])
def test_spec_has_no_weights(net: Net, spec: str) -> None:
    """Every number of the whole GetModelSpec answer is searched for every weight (124 values for the
    German model, none of which equals a public number of its spec). Negative control: the same
    answer with the weights, rounded to 6 digits, added to its feature spec must be flagged."""
    stub: Any = pb_grpc.BureauStub(open_channel(net.bureau))
    answer = stub.GetModelSpec(pb.GetModelSpecRequest(model_id=DEFAULT_MODEL_ID), timeout=10)
    model = default_model()
    if spec != "honest":
        leaky = json.loads(answer.feature_spec) | {"terms": [float(f"{w:.6g}") for w in model.coef]}
        answer.feature_spec = json.dumps(leaky)
    text = MessageToJson(answer)
    assert "coef" not in text and "intercept" not in text and "cutoff" not in text
    shown = weights_shown(text, model)
    assert len(shown) == (0 if spec == "honest" else sum(abs(w) > 1e-3 for w in model.coef)), shown


def test_bureau_state_survives_restart(net: Net, tmp_path: Path) -> None:
    reopened = BureauNode.open(net.bureau_obj.banks.directory.parent)
    assert reopened.bank_key("bank-a", net.key_id) == net.bank_node.keypair.public_key
    assert DEFAULT_MODEL_ID in reopened.models.ids()


def test_health_and_reflection(net: Net) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    for address, service in ((net.bureau, "blindscore.v1.Bureau"), (net.bank, "blindscore.v1.Bank")):
        channel = open_channel(address)
        health_stub: Any = health_pb2_grpc.HealthStub(channel)
        status = health_stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        stub: Any = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for r in replies for s in r.list_services_response.service}
        assert service in names and "grpc.health.v1.Health" in names


def test_every_submission_is_audited_without_secrets(net: Net) -> None:
    audit = net.bureau_obj.audit
    assert audit is not None
    before = audit.head()[0]
    score_one(net.platform, german_app(net, 30, application_id="audit-ok"))
    stub: Any = pb_grpc.BureauStub(open_channel(net.bureau))
    key = net.bank_node.keypair.public_key
    refused = pb.EncryptedApplication(
        application_id="audit-bad", platform_id="platform-a", bank_id="bank-a", model_id="nope",
        key_id=net.key_id, consent_reference="consent-31", count=1, ciphertexts=key.pack([key.encrypt(1)]),
    )  # fmt: skip
    code, _ = status_of(lambda: stub.SubmitApplication(refused, timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND
    records = list(audit.records(after=before))
    by_app = {r.application_id: r for r in records}
    ok, bad = by_app["audit-ok"], by_app["audit-bad"]
    assert (ok.outcome, ok.platform_id, ok.bank_id, ok.model_id) == (
        "OK",
        "platform-a",
        "bank-a",
        DEFAULT_MODEL_ID,
    )
    assert ok.consent_reference == "consent-30" and ok.model_version.startswith("v1 sha256:")
    assert ok.duration_ms > 0
    assert (bad.outcome, bad.model_version) == ("NOT_FOUND", "")
    # A record holds identifiers and an outcome only: no feature value, ciphertext or band.
    text = " ".join(str(v) for r in records for v in (r.canonical_bytes(),))
    assert "duration_in_month" not in text and str(net.bank_node.keypair.public_key.n)[:40] not in text
    report = audit.verify()
    assert report.ok and report.records == audit.head()[0]


def test_audit_cli_verifies_and_detects_tampering(net: Net, tmp_path: Path) -> None:
    import shutil
    import sqlite3

    from blindscore.app.cli import main

    data = net.bureau_obj.banks.directory.parent
    net.bureau_obj.record({"platform_id": "platform-a", "application_id": "cli-1"}, "OK", 1.0)  # seq >= 1
    assert main(["bureau", "audit", "verify", "--data-dir", str(data)]) == 0
    copy = tmp_path / "bureau"
    copy.mkdir()
    trail = "applications.sqlite3"  # the bureau's trail shares its applications file
    with sqlite3.connect(data / trail) as src, sqlite3.connect(copy / trail) as dst:
        src.backup(dst)
    with sqlite3.connect(copy / trail) as db:
        db.execute("DROP TRIGGER IF EXISTS audit_no_update")
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")]
        for name in names:
            db.execute(f"DROP TRIGGER {name}")
        db.execute("UPDATE audit SET outcome = 'OK' WHERE seq = 1")
        db.execute("UPDATE audit SET application_id = 'forged' WHERE seq = 1")
    assert main(["bureau", "audit", "verify", "--data-dir", str(copy)]) == 1
    shutil.rmtree(copy)
