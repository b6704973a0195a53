"""Input limits at every entry (protocol.limits) over real gRPC nodes: ids and consent references are
refused with INVALID_ARGUMENT before anything is stored, scored or audited, and no status message a
peer receives can outgrow gRPC's metadata limits."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import grpc
import pytest

import blindscore
from blindscore.app.client import score_applications
from blindscore.data.german import DEFAULT_MODEL_ID, default_model, load_german_credit
from blindscore.errors import InvalidInputError
from blindscore.infra.status import MAX_STATUS_BYTES
from blindscore.infra.transport import open_channel
from blindscore.models.features import CategoricalFeature
from blindscore.protocol import limits, packing
from blindscore.protocol.application import Application, BatchMember, EncryptedApplication, EncryptedBatch
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc
from blindscore.wire import serde

from support import Nodes as Net
from support import NodesFactory, german_credit, german_model

PLATFORM = "platform-l"
BANK = "bank-l"
TIMEOUT = 30

# What used to be accepted, scored and audited with an empty consent reference.
BAD_CONSENTS = {
    "newline": "consent-1\nforged audit line",
    "carriage-return": "consent-1\rx",
    "nul": "consent\x00",
    "rlo": "consent-\u202e1-tnesnoc",
    "zero-width-space": "con\u200bsent",
    "zero-width-joiner": "con\u200dsent",
    "line-separator": "a\u2028b",
    "paragraph-separator": "a\u2029b",
    "private-use": "consent-\ue000",
    "unassigned": "consent-\U000e0fff",
    "too-long": "c" * (limits.MAX_CONSENT_CHARS + 1),
    "three-megabytes": "c" * 3_000_000,
}
CHINESE_CONSENT = "借款合同编号：甲-2024-001 用户已同意授权查询（第三版）"


@pytest.fixture(scope="module")
def net(module_nodes: NodesFactory) -> Net:
    return module_nodes("limits", bank_id=BANK, platform_id=PLATFORM)


def request(net: Net, i: int, app_id: str, **overrides: Any) -> pb.ScoreRequest:
    rows, _ = german_credit()
    app = Application("placeholder", BANK, DEFAULT_MODEL_ID, net.key_id, f"consent-{i}", rows[i])
    msg = serde.application_to_proto(app)
    msg.application_id = app_id
    for name, value in overrides.items():
        if name == "features":
            for feature, text in value.items():
                msg.features[feature].text = text
        else:
            setattr(msg, name, value)
    return msg


def encrypted(net: Net, i: int, app_id: str, **overrides: Any) -> pb.EncryptedApplication:
    """What a platform would submit for row ``i``; ``overrides`` set proto fields afterwards."""
    rows, _ = german_credit()
    key = net.bank_node.keypair.public_key
    ciphertexts = tuple(key.encrypt(v) for v in german_model().spec.encode_row(rows[i]))
    app = EncryptedApplication(app_id, PLATFORM, BANK, DEFAULT_MODEL_ID, key.key_id, "consent", ciphertexts)
    msg = serde.encrypted_application_to_proto(app, key)
    for name, value in overrides.items():
        setattr(msg, name, value)
    return msg


def refused(call: Any, *args: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=TIMEOUT)
    return info.value.code(), info.value.details() or ""


def stub(address: str, kind: str) -> Any:
    return getattr(pb_grpc, f"{kind}Stub")(open_channel(address))


def audit_records(net: Net, app_id: str) -> list[Any]:
    assert net.bureau_obj.audit is not None
    return [r for r in net.bureau_obj.audit.records() if r.application_id == app_id]


def nothing_kept(net: Net, app_id: str) -> None:
    """Nothing of the application anywhere: no outbox entry, no stored application, no band."""
    assert net.platform_obj.outbox.get(app_id) is None
    assert net.bureau_obj.applications.get(PLATFORM, app_id) is None
    assert net.bank_node.store.get(app_id) is None


# ------------------------------------------------------------------------------ the rules alone


@pytest.mark.parametrize("value", ["a", "A" * 128, "app-1", "x/y#z@q", "!~", "pk-" + "0" * 32])
def test_valid_ids(value: str) -> None:
    assert limits.check_id("application_id", value) == value


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("", "application_id is empty"),
        ("a" * 129, "is 129 characters long"),
        ("app 1", "U+0020 (SPACE, category Zs) at position 3"),
        ("app\t1", "U+0009"),
        ("app-\u00e9", "U+00E9"),
        ("申请-1", "U+7533"),
        ("app\x7f", "U+007F"),
    ],
)
def test_invalid_ids_name_the_field_the_rule_and_the_character(value: str, says: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        limits.check_id("application_id", value)
    assert says in str(info.value) and limits.ID_RULE in str(info.value)


def test_consent_rules() -> None:
    assert limits.check_consent("") == ""
    assert limits.check_consent(CHINESE_CONSENT) == CHINESE_CONSENT
    assert limits.check_consent("中" * 256) == "中" * 256  # 768 UTF-8 bytes
    assert limits.check_consent("😀" * 256) == "😀" * 256  # 1024 UTF-8 bytes: the byte limit exactly
    for name, value in BAD_CONSENTS.items():
        with pytest.raises(InvalidInputError, match="consent_reference") as info:
            limits.check_consent(value)
        assert limits.CONSENT_RULE in str(info.value), name
        assert "\n" not in str(info.value) and "\u202e" not in str(info.value), name


def test_quote_shows_at_most_64_characters() -> None:
    assert limits.quote("abc") == "'abc'"
    assert limits.quote("x" * 64) == repr("x" * 64)
    assert limits.quote("x" * 65) == repr("x" * 64) + "…"
    assert limits.quote("a\u202eb\n") == "'a\\u202eb\\n'"  # escaped, never raw
    assert limits.quote(b"raw") == "<bytes>"


# ------------------------------------------------------------------------------ at the platform


@pytest.mark.parametrize("case", sorted(BAD_CONSENTS))
def test_platform_refuses_bad_consent_before_anything_is_kept(net: Net, case: str) -> None:
    app_id = f"consent-{case}"
    before = net.bank_node.store.count()
    msg = request(net, 1, app_id, consent_reference=BAD_CONSENTS[case])
    code, text = refused(stub(net.platform, "Platform").ScoreApplication, msg)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, text
    assert text.startswith("consent_reference ") and limits.CONSENT_RULE in text
    assert len(text.encode()) <= MAX_STATUS_BYTES
    nothing_kept(net, app_id)
    assert audit_records(net, app_id) == []  # refused before the bureau heard of it
    assert net.bank_node.store.count() == before


def test_platform_accepts_and_audits_a_chinese_consent_verbatim(net: Net) -> None:
    msg = request(net, 2, "consent-zh", consent_reference=CHINESE_CONSENT)
    receipt = stub(net.platform, "Platform").ScoreApplication(msg, timeout=TIMEOUT)
    assert receipt.accepted
    assert net.bank_node.store.get("consent-zh") is not None
    records = audit_records(net, "consent-zh")
    assert [r.outcome for r in records] == ["ACCEPTED", "OK"]
    assert {r.consent_reference for r in records} == {CHINESE_CONSENT}


@pytest.mark.parametrize("char", ["中", "a"])
def test_platform_answers_a_10000_character_id_with_a_short_precise_status(net: Net, char: str) -> None:
    """A 10,000-character id used to come back quoted in full: with non-ASCII characters the message
    outgrew gRPC's metadata limit and the caller got RESOURCE_EXHAUSTED instead of the refusal."""
    long_id = char * 10_000
    code, text = refused(stub(net.platform, "Platform").ScoreApplication, request(net, 1, long_id))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert text == f"application_id {char * 64!r}… is 10000 characters long; {limits.ID_RULE}"


@pytest.mark.parametrize("field", ["application_id", "bank_id", "model_id", "key_id", "model_version"])
def test_platform_refuses_ids_with_whitespace_naming_the_field(net: Net, field: str) -> None:
    code, text = refused(
        stub(net.platform, "Platform").ScoreApplication, request(net, 1, "ws-1", **{field: "a b"})
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert text == f"{field} 'a b' has U+0020 (SPACE, category Zs) at position 1; {limits.ID_RULE}"
    nothing_kept(net, "ws-1")


def test_a_bad_stream_entry_is_refused_alone(net: Net) -> None:
    rows, _ = load_german_credit()
    apps = [
        Application(f"stream-{i}", BANK, DEFAULT_MODEL_ID, net.key_id, f"consent-{i}", rows[i])
        for i in range(3)
    ]
    requests = [serde.application_to_proto(a) for a in apps]
    requests[1].consent_reference = "consent\u202e"
    requests.append(request(net, 4, "x" * 5000))
    channel = open_channel(net.platform)
    receipts = list(pb_grpc.PlatformStub(channel).ScoreApplications(iter(requests), timeout=TIMEOUT))
    channel.close()
    by_id = {r.application_id: r for r in receipts}
    assert len(receipts) == 4
    assert by_id["stream-0"].accepted and by_id["stream-2"].accepted
    bad = by_id["stream-1"]
    assert not bad.accepted and bad.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert bad.error_message.startswith(
        "consent_reference 'consent\\u202e' has U+202E (RIGHT-TO-LEFT OVERRIDE"
    )
    nothing_kept(net, "stream-1")
    # An id that is no id is not echoed back (it would be a 5000-character receipt field).
    unnamed = by_id[""]
    assert not unnamed.accepted and "is 5000 characters long" in unnamed.error_message


def test_status_messages_are_capped(net: Net) -> None:
    """An error that quotes input in full (here: an unseen category of 20,000 characters) reaches
    the caller as its real status, its message cut to MAX_STATUS_BYTES (it used to exceed gRPC's
    metadata limit and arrive as RESOURCE_EXHAUSTED)."""
    feature = next(f.name for f in default_model().spec.features if isinstance(f, CategoricalFeature))
    msg = request(net, 1, "cap-1", features={feature: "类" * 20_000})
    code, text = refused(stub(net.platform, "Platform").ScoreApplication, msg)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert feature in text and text.endswith("…")
    assert MAX_STATUS_BYTES - 3 <= len(text.encode()) <= MAX_STATUS_BYTES
    nothing_kept(net, "cap-1")


# ------------------------------------------------------------------------------ at the bureau


@pytest.mark.parametrize("case", ["newline", "rlo", "zero-width-space", "too-long", "three-megabytes"])
def test_bureau_refuses_bad_consent_before_storing_or_scoring(net: Net, case: str) -> None:
    """A platform that skips its own checks: the bureau used to store the 3 MB consent with the
    application, score it and audit the consent as empty."""
    app_id = f"b-consent-{case}"
    msg = encrypted(net, 1, app_id, consent_reference=BAD_CONSENTS[case])
    code, text = refused(stub(net.bureau, "Bureau").SubmitApplication, msg)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert text.startswith("consent_reference ") and limits.CONSENT_RULE in text
    assert len(text.encode()) <= MAX_STATUS_BYTES
    nothing_kept(net, app_id)
    # The refusal itself is audited, the consent it could not accept recorded as missing.
    (record,) = audit_records(net, app_id)
    assert (record.outcome, record.platform_id, record.consent_reference) == (
        "INVALID_ARGUMENT",
        PLATFORM,
        "",
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("application_id", "中" * 10_000),
        ("platform_id", "p" * 129),
        ("bank_id", "bank l"),
        ("model_id", "模型"),
        ("key_id", "k\n"),
        ("model_version", "1 "),
    ],
    ids=["10000-chinese", "129-chars", "space", "chinese", "newline", "trailing-space"],
)
def test_bureau_refuses_bad_ids_in_submissions(net: Net, field: str, value: str) -> None:
    msg = encrypted(net, 1, "b-ids", **{field: value})
    code, text = refused(stub(net.bureau, "Bureau").SubmitApplication, msg)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert text.startswith(f"{field} ") and limits.ID_RULE in text
    assert len(text) < 500
    assert net.bureau_obj.applications.get(PLATFORM, "b-ids") is None
    assert net.bank_node.store.get("b-ids") is None


def test_bureau_refuses_a_batch_with_one_bad_member_whole(net: Net) -> None:
    model = default_model()
    key = net.bank_node.keypair.public_key
    slot_bits = packing.slot_bits_for(model)
    assert slot_bits is not None
    rows, _ = load_german_credit()
    ids = ["batch-m0", "batch-m1", "batch-m2"]
    batch = EncryptedBatch(
        batch_id="b-limits",
        platform_id=PLATFORM,
        bank_id=BANK,
        model_id=DEFAULT_MODEL_ID,
        key_id=key.key_id,
        model_version="1",
        slot_bits=slot_bits,
        members=tuple(BatchMember(a, "consent") for a in ids),
        ciphertexts=tuple(
            packing.encrypt_packed(
                key, model.spec, slot_bits, [model.spec.encode_row(rows[i]) for i in range(3)]
            )
        ),
    )
    msg = serde.encrypted_batch_to_proto(batch, key)
    msg.members[1].consent_reference = "consent\n2"
    code, text = refused(stub(net.bureau, "Bureau").SubmitBatch, msg)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert text.startswith("members[1].consent_reference 'consent\\n2' has U+000A")
    assert net.bureau_obj.batches.get(PLATFORM, "b-limits") is None
    assert all(net.bank_node.store.get(a) is None for a in ids)
    assert [r.outcome for a in ids for r in audit_records(net, a)] == ["INVALID_ARGUMENT"] * 3
    msg.members[1].consent_reference = "consent-2"  # the same batch, fixed, is scored
    assert stub(net.bureau, "Bureau").SubmitBatch(msg, timeout=TIMEOUT).batch_id == "b-limits"
    assert all(net.bank_node.store.get(a) is not None for a in ids)


def test_bureau_refuses_bad_ids_in_lookups(net: Net) -> None:
    bureau = stub(net.bureau, "Bureau")
    code, text = refused(bureau.GetModelSpec, pb.GetModelSpecRequest(model_id="模" * 10_000))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert text == f"model_id {'模' * 64!r}… is 10000 characters long; {limits.ID_RULE}"
    code, text = refused(
        bureau.GetModelSpec, pb.GetModelSpecRequest(model_id=DEFAULT_MODEL_ID, model_version="1\n")
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and text.startswith("model_version '1\\n' has U+000A")
    code, text = refused(bureau.GetBankKey, pb.GetBankKeyRequest(bank_id="银行" * 5000, key_id=net.key_id))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and text.startswith("bank_id ")
    code, text = refused(bureau.GetBankKey, pb.GetBankKeyRequest(bank_id=BANK, key_id=""))
    assert (code, text) == (grpc.StatusCode.INVALID_ARGUMENT, f"key_id is empty; {limits.ID_RULE}")
    # The valid lookups still answer.
    assert bureau.GetModelSpec(
        pb.GetModelSpecRequest(model_id=DEFAULT_MODEL_ID), timeout=TIMEOUT
    ).model_version
    assert bureau.GetBankKey(pb.GetBankKeyRequest(bank_id=BANK, key_id=net.key_id), timeout=TIMEOUT).key_id


def test_score_applications_client_sees_the_refusal(net: Net) -> None:
    """The client library (and so `blindscore score`) gets the same precise refusal per row."""
    rows, _ = load_german_credit()
    apps = [Application("client-ok", BANK, DEFAULT_MODEL_ID, net.key_id, "c\u200b", rows[0])]
    (outcome,) = score_applications(net.platform, apps)
    assert not outcome.accepted and outcome.error.startswith("INVALID_ARGUMENT: consent_reference")
    nothing_kept(net, "client-ok")


@pytest.mark.parametrize(
    ("bad_id", "says"),
    [
        ("cust 2", "application id in column 'customer' 'cust 2' has U+0020 (SPACE"),
        ("客户-2", "application id in column 'customer' '客户-2' has U+5BA2"),
        ("c" * 200, "is 200 characters long"),
        ("cust/2", "application id 'cust/2' is not a valid identifier"),  # the nodes' narrower rule
    ],
)
def test_score_cli_names_the_row_of_a_bad_id(tmp_path: Path, bad_id: str, says: str) -> None:
    """`blindscore score` takes ids from a CSV column: a bad one is refused before any node starts,
    naming the row (it used to fail inside the three-node run without saying which row)."""
    from blindscore.app.scoring import score_csv

    rows, _ = load_german_credit()
    names = default_model().spec.input_names
    path = tmp_path / "in.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["customer", *names])
        for i, app_id in enumerate(["cust-1", bad_id, "cust-3"]):
            writer.writerow([app_id, *(rows[i][n] for n in names)])
    model = Path(blindscore.__file__).parent / "data" / "german_credit_lr.json"
    with pytest.raises(InvalidInputError) as info:
        score_csv(
            model_path=model, input_path=path, output_path=tmp_path / "out.csv", cutoffs=None,
            labels=None, id_column="customer",
        )  # fmt: skip
    assert str(info.value).startswith(f"--input {path}, row 2: ") and says in str(info.value)
    assert not (tmp_path / "out.csv").exists()
