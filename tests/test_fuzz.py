"""Fuzz every RPC with Hypothesis: garbage gets a precise status, never INTERNAL, a hang or a stored row;
hostile ids and consent references (megabytes long, control and bidi characters, zero-width and
private-use characters, Chinese text) get INVALID_ARGUMENT with a short message and store nothing.

The hostile-input properties follow the input limits (ids: 1-128 printable ASCII characters without
whitespace; consent references: at most 256 characters and 1024 UTF-8 bytes, none of category Cc, Cf,
Zl, Zp, Co, Cs or Cn; refusals quote at most 64 characters of the value; status messages at most
1000 characters).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from blindscore.crypto import ot
from blindscore.data.german import DEFAULT_MODEL_ID, default_model, load_german_credit
from blindscore.infra.transport import MAX_MESSAGE_BYTES, open_channel
from blindscore.protocol import packing
from blindscore.protocol.application import (
    Application,
    BandDelivery,
    BatchMember,
    EncryptedApplication,
    EncryptedBatch,
)
from blindscore.protocol.comparison import BandComparison
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc
from blindscore.wire import serde

from support import NodesFactory

ROOT = Path(__file__).resolve().parent.parent

# Statuses a well-behaved node may answer garbage with; INTERNAL and UNKNOWN mean a crash, and a
# hang shows up as DEADLINE_EXCEEDED after the 30 s per-call deadline. UNAVAILABLE is not among
# them: every node is up for the whole module, so UNAVAILABLE would mean one went down (or a
# refusal was dressed up as one).
PRECISE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
}
# CI-sized by default; scripts/fuzz.py --examples N sets this for long runs.
EXAMPLES = int(os.environ.get("BLINDSCORE_FUZZ_EXAMPLES", "60"))
# CI runs the same examples every time (the "ci" profile derandomizes). scripts/fuzz.py sets this
# for its long runs, which draw new examples from the seed it passes (--hypothesis-seed) and prints.
EXPLORE = os.environ.get("BLINDSCORE_FUZZ_EXPLORE") == "1"
fuzz = settings(max_examples=EXAMPLES, derandomize=not EXPLORE, database=None)

# The input limits the hostile-input tests hold the nodes to.
MAX_ID_CHARS = 128
MAX_CONSENT_CHARS = 256
MAX_CONSENT_BYTES = 1024
REFUSED_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"}
QUOTE_CHARS = 64
MAX_MESSAGE_CHARS = 1000
# Hostile consent references stay below the transport's message limit, so that the node's own
# check answers them; test_consent_over_the_message_limit covers what is larger.
MAX_HOSTILE_CONSENT_BYTES = 3_500_000
PLATFORM_ID = "p"


@pytest.fixture(scope="module")
def stubs(module_nodes: NodesFactory) -> dict[str, Any]:
    net = module_nodes("fuzz", bank_id="bank-f", platform_id="platform-f")
    assert net.platform_obj is not None
    key = net.bank_node.keypair.public_key
    return {
        "bureau": pb_grpc.BureauStub(open_channel(net.bureau)),
        "bank": pb_grpc.BankStub(open_channel(net.bank)),
        "platform": pb_grpc.PlatformStub(open_channel(net.platform)),
        "addresses": {"bureau": net.bureau, "bank": net.bank, "platform": net.platform},
        "store": net.bank_node.store,
        "applications": net.bureau_obj.applications,
        "batches": net.bureau_obj.batches,
        "banks_dir": net.directory / "bureau" / "banks",
        "outbox": net.platform_obj.outbox,
        "key": key,
        "key_id": key.key_id,
        "dgk": net.bank_node.dgk.public_key,
    }


def status(call: Any, request: Any) -> grpc.StatusCode:
    try:
        call(request, timeout=30)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


ids = st.one_of(st.just(""), st.text(max_size=40), st.sampled_from(["bank-f", "german-credit-lr", "x" * 200]))
blobs = st.one_of(st.binary(max_size=600), st.integers(0, 2**4200 - 1).map(lambda i: i.to_bytes(525, "big")))
small = st.integers(0, 2**32 - 1)
versions = st.one_of(
    st.just(""),
    st.text(max_size=12),
    st.sampled_from(["1", "v1", "latest", "0", "99", "-1", "1.0", "9" * 12]),
)


@fuzz
@given(
    app_id=ids, bank_id=ids, model_id=ids, consent=ids, count=small, blob=blobs, use_key=st.booleans(),
    version=versions,
)  # fmt: skip
def test_fuzz_submit(
    stubs: dict[str, Any], app_id: str, bank_id: str, model_id: str, consent: str, count: int, blob: bytes,
    use_key: bool, version: str,
) -> None:  # fmt: skip
    msg = pb.EncryptedApplication(
        application_id=app_id, platform_id="p", bank_id=bank_id, model_id=model_id,
        key_id=stubs["key_id"] if use_key else app_id, consent_reference=consent, count=count,
        ciphertexts=blob, model_version=version,
    )  # fmt: skip
    before = stubs["store"].count()
    assert status(stubs["bureau"].SubmitApplication, msg) in PRECISE - {grpc.StatusCode.OK}
    assert stubs["store"].count() == before
    assert stubs["applications"].get("p", app_id) is None  # refused: nothing accepted or stored


@fuzz
@given(
    count=small,
    bits=small,
    t=small,
    width=small,
    blob=blobs,
    groups=blobs,
    labels=st.lists(st.text(max_size=5)),
)
def test_fuzz_bank(
    stubs: dict[str, Any],
    count: int,
    bits: int,
    t: int,
    width: int,
    blob: bytes,
    groups: bytes,
    labels: list[str],
) -> None:
    key_id = stubs["key_id"]
    bank = stubs["bank"]
    before = stubs["store"].count()
    masked = pb.MaskedRequest(
        application_id="f",
        key_id=key_id,
        count=count,
        bits=bits,
        truncate_bits=t,
        width_bits=width,
        ciphertext=blob,
    )
    assert status(bank.CompareMasked, masked) in PRECISE
    blinded = pb.BlindedRequest(application_id="f", key_id=key_id, count=count, bits=bits, groups=groups)
    assert status(bank.CompareBlinded, blinded) in PRECISE
    delivery = pb.BandDelivery(
        application_id="fuzz-band", key_id=key_id, model_id="m", band_labels=labels, band_ciphertext=blob
    )
    code = status(bank.DeliverBand, delivery)
    assert code in PRECISE
    if code != grpc.StatusCode.OK:
        assert stubs["store"].count() == before


@fuzz
@given(
    app_id=ids, bank_id=ids, model_id=ids, consent=ids,
    features=st.dictionaries(st.text(max_size=30), st.one_of(st.floats(), st.text(max_size=20)), max_size=8),
    version=versions,
)  # fmt: skip
def test_fuzz_platform(
    stubs: dict[str, Any], app_id: str, bank_id: str, model_id: str, consent: str, features: dict[str, Any],
    version: str,
) -> None:  # fmt: skip
    values = {
        k: pb.FeatureValue(number=v) if isinstance(v, float) else pb.FeatureValue(text=v)
        for k, v in features.items()
    }
    msg = pb.ScoreRequest(
        application_id=app_id, bank_id=bank_id, model_id=model_id, key_id=stubs["key_id"],
        consent_reference=consent, features=values, model_version=version,
    )  # fmt: skip
    assert status(stubs["platform"].ScoreApplication, msg) in PRECISE - {grpc.StatusCode.OK}


@fuzz
@given(
    bank_id=ids, address=ids, paillier=st.text(max_size=200), dgk=st.text(max_size=200), key_id=ids,
    version=versions,
)  # fmt: skip
def test_fuzz_bureau_registry(
    stubs: dict[str, Any], bank_id: str, address: str, paillier: str, dgk: str, key_id: str, version: str
) -> None:
    bureau = stubs["bureau"]
    reg = pb.RegisterBankRequest(
        bank_id=bank_id, address=address, paillier_public_key=paillier, dgk_public_key=dgk
    )
    assert status(bureau.RegisterBank, reg) in PRECISE - {grpc.StatusCode.OK}
    assert status(bureau.GetBankKey, pb.GetBankKeyRequest(bank_id=bank_id, key_id=key_id)) in PRECISE
    assert status(bureau.GetModelSpec, pb.GetModelSpecRequest(model_id=key_id)) in PRECISE
    spec = pb.GetModelSpecRequest(model_id="german-credit-lr", model_version=version)
    assert status(bureau.GetModelSpec, spec) in PRECISE


@fuzz
@given(
    batch_id=ids, bank_id=ids, model_id=ids, app_ids=st.lists(ids, max_size=70), slot_bits=small, count=small,
    blob=blobs, use_key=st.booleans(), version=versions,
)  # fmt: skip
def test_fuzz_submit_batch(
    stubs: dict[str, Any], batch_id: str, bank_id: str, model_id: str, app_ids: list[str], slot_bits: int,
    count: int, blob: bytes, use_key: bool, version: str,
) -> None:  # fmt: skip
    msg = pb.EncryptedBatch(
        batch_id=batch_id, platform_id="p", bank_id=bank_id, model_id=model_id,
        key_id=stubs["key_id"] if use_key else batch_id, model_version=version, slot_bits=slot_bits,
        members=[pb.BatchMember(application_id=a, consent_reference="c") for a in app_ids],
        count=count, ciphertexts=blob,
    )  # fmt: skip
    before = stubs["store"].count()
    assert status(stubs["bureau"].SubmitBatch, msg) in PRECISE - {grpc.StatusCode.OK}
    assert stubs["store"].count() == before
    assert stubs["batches"].get("p", batch_id) is None  # refused: nothing accepted or stored


@pytest.fixture(scope="module")
def ot_session(stubs: dict[str, Any]) -> bytes:
    """A real OT session with the fuzzed bank, so that PackedStart gets past the session lookup."""
    bank = stubs["bank"]
    offer = serde.ot_offer_from_proto(bank.OtSetupStart(pb.OtSetupStartRequest(), timeout=30))
    setup, choice = ot.SenderSetup.start(offer)
    setup.finish(serde.ot_reply_from_proto(bank.OtSetupFinish(serde.ot_choice_to_proto(choice), timeout=30)))
    return offer.session_id


@fuzz
@given(
    count=small, slot_bits=small, cutoffs=small, bits=small, t=small, blob=blobs, real_session=st.booleans(),
    ticket=blobs, tables=blobs, labels=st.lists(st.text(max_size=5)), app_ids=st.lists(ids, max_size=5),
    group=st.lists(blobs, max_size=130),
)  # fmt: skip
def test_fuzz_bank_packed(
    stubs: dict[str, Any], ot_session: bytes, count: int, slot_bits: int, cutoffs: int, bits: int, t: int,
    blob: bytes, real_session: bool, ticket: bytes, tables: bytes, labels: list[str], app_ids: list[str],
    group: list[bytes],
) -> None:  # fmt: skip
    bank = stubs["bank"]
    before = stubs["store"].count()
    start = pb.PackedStartRequest(
        key_id=stubs["key_id"], ot_session_id=ot_session if real_session else ticket[:16], ciphertext=blob,
        count=count, slot_bits=slot_bits, cutoffs=cutoffs, bits=bits, truncate_bits=t,
    )  # fmt: skip
    assert status(bank.PackedStart, start) in PRECISE
    finish = pb.PackedFinishRequest(
        key_id=stubs["key_id"], ticket=ticket, ot_y0=tables, ot_y1=blob, garbling_id=ticket[:16],
        tables=tables, garbler_labels=blob, decode=ticket, model_id="m", band_labels=labels,
        application_ids=app_ids, count=count, cutoffs=cutoffs, width=bits,
    )  # fmt: skip
    assert status(bank.PackedFinish, finish) in PRECISE - {grpc.StatusCode.OK}
    choice = pb.OtSetupChoice(session_id=ticket[:16], pk0=group)
    assert status(bank.OtSetupFinish, choice) in PRECISE - {grpc.StatusCode.OK}
    assert stubs["store"].count() == before


def test_fuzz_suite_is_not_vacuous(stubs: dict[str, Any], tmp_path: Path) -> None:
    """The same harness accepts a well-formed registration, so refusals above are real refusals."""
    assert status(stubs["bureau"].GetModelSpec, pb.GetModelSpecRequest(model_id="german-credit-lr")) == (
        grpc.StatusCode.OK
    )


# ---------------------------------------------------------------------- hostile ids and consents

ID_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
#: Characters an id may not hold, the notorious ones named so that every run meets them.
BAD_ID_CHARS = st.one_of(
    st.sampled_from(
        [
            *(" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x00", "\x1b", "\x7f", "\x85", "\xa0", "\u3000"),
            *("\u2028", "\u202e", "\u200b", "\ufeff", "é", "申", "\U0001f600"),
        ]
    ),
    st.characters().filter(lambda c: not "\x21" <= c <= "\x7e"),
)
#: Characters a consent reference may not hold (no Cs: a lone surrogate cannot be sent at all).
FORBIDDEN = st.one_of(
    st.sampled_from(
        [
            *("\n", "\r\n", "\x00", "\x1b[31m", "\x7f", "\x85", "\u202e", "\u202d", "\u2066", "\u2069"),
            *("\u200b", "\u200c", "\u200d", "\u200e", "\ufeff", "\u00ad", "\u061c", "\u2028", "\u2029"),
            *("\ue000", "\U000f0000", "\u0378", "\U000e0fff", "\U000e0001"),
        ]
    ),
    st.characters(categories=["Cc", "Cf", "Zl", "Zp", "Co", "Cn"]),
)
CHINESE = st.sampled_from(["同意书编号", "借款合同", "用户已同意授权查询", "（第三版）", "甲-2024-001"])
#: Text a consent reference may hold: letters (Chinese among them), marks, digits, punctuation,
#: symbols and spaces.
PRINTABLE = st.one_of(
    CHINESE,
    st.text(st.characters(categories=["L", "M", "N", "P", "S", "Zs"]), max_size=16),
    st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), max_size=16),
)


def _stretched(head: str, unit: str, tail: str, chars: int) -> str:
    """``head`` + ``unit`` repeated + ``tail``, ``chars`` characters long at least."""
    middle = max(0, chars - len(head) - len(tail))
    return head + (unit * (middle // len(unit) + 1))[:middle] + tail


@st.composite
def hostile_ids(draw: st.DrawFn) -> str:
    """Ids the limits refuse: empty, longer than 128 characters (up to 10,000), or holding a
    character outside 0x21-0x7E (whitespace, controls, bidi and zero-width characters, Chinese)."""
    kind = draw(st.sampled_from(["empty", "long", "bad-char", "long-bad-char"]))
    if kind == "empty":
        return ""
    head = draw(st.text(ID_CHARS, max_size=20))
    tail = draw(st.text(ID_CHARS, max_size=20))
    if kind != "long":
        bad = "".join(draw(st.lists(BAD_ID_CHARS, min_size=1, max_size=3)))
        head, tail = (head + bad, tail) if draw(st.booleans()) else (head, bad + tail)
    if kind == "bad-char":
        value = head + tail
    else:
        unit = draw(st.text(ID_CHARS, min_size=1, max_size=12))
        low = MAX_ID_CHARS + 1 if kind == "long" else 1
        value = _stretched(head, unit, tail, draw(st.integers(low, 10_000)))
    assert not re.fullmatch(r"[\x21-\x7e]{1,128}", value)
    return value


@st.composite
def hostile_consents(draw: st.DrawFn) -> str:
    """Consent references the limits refuse: longer than 256 characters (up to 3.5 MB of UTF-8), or
    holding a character of category Cc, Cf, Zl, Zp, Co or Cn (newlines, escapes, U+202E, U+200B,
    U+FEFF, private-use and unassigned code points), amid Chinese and other printable text."""
    kind = draw(st.sampled_from(["forbidden", "long", "long-forbidden"]))
    head = draw(PRINTABLE)
    tail = draw(PRINTABLE)
    if kind != "long":
        bad = "".join(draw(st.lists(FORBIDDEN, min_size=1, max_size=3)))
        head, tail = (head + bad, tail) if draw(st.booleans()) else (head, bad + tail)
    if kind == "forbidden":
        value = head + tail
    else:
        unit = draw(st.one_of(CHINESE, st.text(st.characters(categories=["L", "N", "P"]), min_size=1)))
        size = draw(
            st.one_of(
                st.integers(MAX_CONSENT_CHARS + 1, 4096),
                st.integers(4097, 200_000),
                st.integers(200_001, MAX_HOSTILE_CONSENT_BYTES),
            )
        )
        chars = max(MAX_CONSENT_CHARS + 1, size * len(unit) // len(unit.encode()))
        value = _stretched(head, unit, tail, chars)
    assert _consent_refused(value) and len(value.encode()) <= MAX_HOSTILE_CONSENT_BYTES + 1024
    return value


def _consent_refused(value: str) -> bool:
    return (
        len(value) > MAX_CONSENT_CHARS
        or len(value.encode("utf-8", "surrogatepass")) > MAX_CONSENT_BYTES
        or any(unicodedata.category(c) in REFUSED_CATEGORIES for c in value)
    )


#: The hostile values are short pieces around one repeated unit, so every window of one shows up
#: in its first or last few thousand characters.
_SPAN = 4096


def _quotes_too_much(message: str, value: str) -> bool:
    """Whether ``message`` holds more than QUOTE_CHARS consecutive characters of ``value``, as they
    are or escaped the way repr() escapes them. A run that starts or ends with a quote character
    is not counted: that quote may be the delimiter of a quote of QUOTE_CHARS characters."""
    window = QUOTE_CHARS + 1
    parts = (value[:_SPAN], value[-_SPAN:]) if len(value) > 2 * _SPAN else (value,)
    for part in parts:
        for i in range(len(part) - window + 1):
            chunk = part[i : i + window]
            if chunk[0] in "'\"" or chunk[-1] in "'\"":
                continue
            escaped = repr(chunk)[1:-1]
            if escaped in message:
                return True
            # With backslashes in it, a chunk also shows up in the escaped quote of fewer characters
            # (each backslash doubled): only its escaped form counts.
            if "\\" not in chunk and chunk in message:
                return True
    return False


def refused_precisely(call: Any, request: Any, value: str) -> str:
    """Call; the answer must be INVALID_ARGUMENT with a short message quoting little of ``value``."""
    try:
        call(request, timeout=30)
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
    else:
        raise AssertionError(f"accepted a hostile value: {value[:80]!r} ({len(value)} characters)")
    check_refusal(code, details, value)
    return details


def check_refusal(code: grpc.StatusCode | None, details: str, value: str) -> None:
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details[:300])
    assert len(details) <= MAX_MESSAGE_CHARS, f"{len(details)}-character message: {details[:200]!r}"
    assert not _quotes_too_much(details, value), details[:300]


def stored(stubs: dict[str, Any]) -> tuple[object, ...]:
    """Everything the nodes keep: the bureau's applications and batches, the platform's outbox, the
    bank's bands and runs, the registered banks."""
    return (
        sum(stubs["applications"].counts().values()),
        sum(stubs["batches"].counts().values()),
        stubs["outbox"].counts(),
        stubs["store"].count(),
        len(stubs["store"].deliveries()),
        sorted(p.name for p in stubs["banks_dir"].glob("*.json")),
    )


class Messages(dict[str, Any]):
    """Well-formed messages by RPC; shown by name only in Hypothesis's reports (they are large)."""

    def __repr__(self) -> str:
        return f"<valid messages: {', '.join(self)}>"


@pytest.fixture(scope="module")
def valid(stubs: dict[str, Any]) -> dict[str, Any]:
    """Well-formed messages for every RPC the hostile tests reach, to change one field of."""
    key, key_id = stubs["key"], stubs["key_id"]
    model = default_model()
    rows, _ = load_german_credit()
    app = Application("fuzz-valid", "bank-f", DEFAULT_MODEL_ID, key_id, "consent-1", rows[0])
    encoded = [model.spec.encode_row(rows[i]) for i in range(3)]
    ciphertexts = tuple(key.encrypt(v) for v in encoded[0])
    encrypted = EncryptedApplication(
        "fuzz-valid", PLATFORM_ID, "bank-f", DEFAULT_MODEL_ID, key_id, "consent-1", ciphertexts
    )
    slot_bits = packing.slot_bits_for(model)
    assert slot_bits is not None
    batch = EncryptedBatch(
        batch_id="fuzz-batch",
        platform_id=PLATFORM_ID,
        bank_id="bank-f",
        model_id=DEFAULT_MODEL_ID,
        key_id=key_id,
        model_version="1",
        slot_bits=slot_bits,
        members=tuple(BatchMember(f"fuzz-member-{i}", f"consent-{i}") for i in range(3)),
        ciphertexts=tuple(packing.encrypt_packed(key, model.spec, slot_bits, encoded)),
    )
    score = model.evaluate_encrypted(key, ciphertexts)
    comparison = BandComparison(
        key, stubs["dgk"], score, model.encoded_cutoffs, *model.encoded_score_bounds, model.truncate_bits
    )
    delivery = serde.band_delivery_to_proto(
        BandDelivery("fuzz-valid", key_id, DEFAULT_MODEL_ID, tuple(model.policy.labels), key.encrypt(0)), key
    )
    registration = pb.RegisterBankRequest(
        bank_id="bank-f",
        address=stubs["addresses"]["bank"],
        paillier_public_key=serde.paillier_key_to_json(key),
        dgk_public_key=serde.dgk_key_to_json(stubs["dgk"]),
    )
    return Messages(
        score=serde.application_to_proto(app),
        submit=serde.encrypted_application_to_proto(encrypted, key),
        batch=serde.encrypted_batch_to_proto(batch, key),
        masked=serde.masked_request_to_proto("fuzz-valid", key, comparison.masked_request()),
        delivery=delivery,
        registration=registration,
    )


def _with(message: Any, **fields: str) -> Any:
    copy = type(message)()
    copy.CopyFrom(message)
    for name, value in fields.items():
        setattr(copy, name, value)
    return copy


_fresh = itertools.count()


def fresh_id() -> str:
    """An id no earlier example used, so that no example's outcome depends on another's."""
    return f"fuzz-hostile-{next(_fresh)}"


def hostile(field: str) -> st.SearchStrategy[str]:
    return hostile_consents() if "consent" in field else hostile_ids()


@st.composite
def field_and_value(draw: st.DrawFn, fields: list[str]) -> tuple[str, str]:
    field = draw(st.sampled_from(fields))
    return field, draw(hostile(field))


@fuzz
@given(
    case=field_and_value(["consent_reference", "application_id", "bank_id", "model_id", "key_id"]),
    streamed=st.booleans(),
)
def test_fuzz_hostile_platform_request(
    stubs: dict[str, Any], valid: dict[str, Any], case: tuple[str, str], streamed: bool
) -> None:
    field, value = case
    msg = _with(valid["score"], **{"application_id": fresh_id(), field: value})
    before = stored(stubs)
    if streamed:
        (receipt,) = stubs["platform"].ScoreApplications(iter([msg]), timeout=30)
        assert not receipt.accepted, f"accepted a hostile {field}: {value[:80]!r}"
        code = next((c for c in grpc.StatusCode if c.value[0] == receipt.error_code), None)
        check_refusal(code, receipt.error_message, value)
    else:
        refused_precisely(stubs["platform"].ScoreApplication, msg, value)
    assert stored(stubs) == before


@fuzz
@given(
    case=field_and_value(
        ["consent_reference", "application_id", "platform_id", "bank_id", "model_id", "key_id"]
    )
)
def test_fuzz_hostile_submission(stubs: dict[str, Any], valid: dict[str, Any], case: tuple[str, str]) -> None:
    field, value = case
    msg = _with(valid["submit"], **{"application_id": fresh_id(), field: value})
    before = stored(stubs)
    refused_precisely(stubs["bureau"].SubmitApplication, msg, value)
    assert stored(stubs) == before


@fuzz
@given(
    case=field_and_value(["batch_id", "platform_id", "member_id", "member_consent"]),
    member=st.integers(0, 2),
)
def test_fuzz_hostile_batch(
    stubs: dict[str, Any], valid: dict[str, Any], case: tuple[str, str], member: int
) -> None:
    field, value = case
    msg = _with(valid["batch"], batch_id=fresh_id())
    for m in msg.members:  # fresh ids: a refusal must not depend on what an earlier example left
        m.application_id = fresh_id()
    if field == "member_id":
        msg.members[member].application_id = value
    elif field == "member_consent":
        msg.members[member].consent_reference = value
    else:
        setattr(msg, field, value)
    before = stored(stubs)
    refused_precisely(stubs["bureau"].SubmitBatch, msg, value)
    assert stored(stubs) == before


@fuzz
@given(value=hostile_ids(), call=st.sampled_from(["CompareMasked", "DeliverBand"]))
def test_fuzz_hostile_bank_ids(stubs: dict[str, Any], valid: dict[str, Any], value: str, call: str) -> None:
    msg = _with(valid["masked"] if call == "CompareMasked" else valid["delivery"], application_id=value)
    before = stored(stubs)
    refused_precisely(getattr(stubs["bank"], call), msg, value)
    assert stored(stubs) == before


@fuzz
@given(
    value=hostile_ids(), call=st.sampled_from(["RegisterBank", "GetBankKey.bank", "GetBankKey.key", "Spec"])
)
def test_fuzz_hostile_lookups(stubs: dict[str, Any], valid: dict[str, Any], value: str, call: str) -> None:
    bureau = stubs["bureau"]
    if call == "RegisterBank":
        method, msg = bureau.RegisterBank, _with(valid["registration"], bank_id=value)
    elif call == "GetBankKey.bank":
        method, msg = bureau.GetBankKey, pb.GetBankKeyRequest(bank_id=value, key_id=stubs["key_id"])
    elif call == "GetBankKey.key":
        method, msg = bureau.GetBankKey, pb.GetBankKeyRequest(bank_id="bank-f", key_id=value)
    else:
        method, msg = bureau.GetModelSpec, pb.GetModelSpecRequest(model_id=value)
    before = stored(stubs)
    refused_precisely(method, msg, value)
    assert stored(stubs) == before


@settings(max_examples=min(EXAMPLES, 8), derandomize=not EXPLORE, database=None)
@given(
    consent=st.lists(PRINTABLE, min_size=1, max_size=40)
    .map("".join)
    .filter(lambda c: 0 < len(c) <= MAX_CONSENT_CHARS and not _consent_refused(c))
)
def test_fuzz_unusual_but_valid_consent_is_accepted(
    stubs: dict[str, Any], valid: dict[str, Any], consent: str
) -> None:
    """The other side of the limits: Chinese (and other printable) text within them is scored."""
    app_id = fresh_id()
    msg = _with(valid["score"], application_id=app_id, consent_reference=consent)
    before = sum(stubs["applications"].counts().values())
    receipt = stubs["platform"].ScoreApplication(msg, timeout=60)
    assert receipt.accepted and receipt.application_id == app_id
    assert sum(stubs["applications"].counts().values()) == before + 1


def test_consent_over_the_message_limit_is_refused_by_the_transport(
    stubs: dict[str, Any], valid: dict[str, Any]
) -> None:
    """Above MAX_MESSAGE_BYTES gRPC refuses the request (RESOURCE_EXHAUSTED) before any node code
    runs: the documented transport limit, and nothing is stored."""
    consent = "同意" * (MAX_MESSAGE_BYTES // 6 + 1)  # 4 MiB and more of UTF-8
    before = stored(stubs)
    for node, method, base in (
        ("platform", "ScoreApplication", "score"),
        ("bureau", "SubmitApplication", "submit"),
    ):
        # A client that allows sending more, so that the node's own limit is the one tested.
        channel = grpc.insecure_channel(
            stubs["addresses"][node], options=[("grpc.max_send_message_length", 16 * 1024 * 1024)]
        )
        try:
            stub = getattr(pb_grpc, f"{node.capitalize()}Stub")(channel)
            with pytest.raises(grpc.RpcError) as info:
                getattr(stub, method)(_with(valid[base], consent_reference=consent), timeout=30)
        finally:
            channel.close()
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stored(stubs) == before


@pytest.mark.parametrize("kind", ["ids", "consents"])
def test_hostile_strategies_produce_what_they_promise(kind: str) -> None:
    """The strategies above reach the sizes and characters the tests claim to cover."""
    seen: list[str] = []

    @settings(max_examples=300, derandomize=True, database=None)
    @given(value=hostile_ids() if kind == "ids" else hostile_consents())
    def collect(value: str) -> None:
        seen.append(value)

    collect()
    if kind == "ids":
        assert "" in seen
        assert max(len(v) for v in seen) > 5000
        assert any(re.search(r"\s", v) for v in seen) and any(re.search(r"[\x00-\x1f\x7f]", v) for v in seen)
    else:
        assert max(len(v.encode()) for v in seen) > 1_000_000
        joined = "".join(v[:200] + v[-200:] for v in seen)
        for char in ("\n", "\u202e", "\u200b", "\ufeff"):
            assert char in joined, repr(char)
        assert re.search("[\u4e00-\u9fff]", joined)
        assert {unicodedata.category(c) for c in joined} >= {"Cc", "Cf", "Zl", "Zp", "Co", "Cn"}


# ---------------------------------------------------------------------- scripts/fuzz.py


def _fuzz_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_script", ROOT / "scripts" / "fuzz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fuzz_script_counts_examples_per_phase() -> None:
    """Hypothesis's raw statistics (its ``collector`` API), summed per test and phase."""
    summary = _fuzz_script().summarize(
        {
            "tests/test_fuzz.py::test_a": {
                "reuse-phase": {"test-cases": [{"status": "valid"}], "duration-seconds": 0.1},
                "generate-phase": {
                    "test-cases": [{"status": "valid"}] * 7
                    + [{"status": "invalid"}, {"status": "overrun"}, {"status": "interesting"}],
                    "duration-seconds": 2.5,
                },
                "shrink-phase": {"test-cases": [{"status": "interesting"}] * 4, "duration-seconds": 1.0},
                "stopped-because": "settings.max_examples=10",
            },
            "tests/test_fuzz.py::test_b": {
                "generate-phase": {"test-cases": [{"status": "valid"}] * 3, "duration-seconds": 0.2},
                "stopped-because": "nothing left to do",
            },
        }
    )
    assert summary == [
        "test_a: 8 examples (7 passing, 1 failing, 2 invalid) in 2.5 s, stopped because "
        "settings.max_examples=10; other phases: reuse 1, shrink 4",
        "test_b: 3 examples (3 passing, 0 failing, 0 invalid) in 0.2 s, stopped because nothing left to do",
    ]


def test_fuzz_script_prints_a_count_per_test(tmp_path: Path) -> None:
    """End to end on a stand-in test file: one line per test with the examples Hypothesis ran."""
    target = tmp_path / "test_standin.py"
    target.write_text(
        "import os\n"
        "from hypothesis import assume, given, settings, strategies as st\n"
        "N = int(os.environ['BLINDSCORE_FUZZ_EXAMPLES'])\n"
        "@settings(max_examples=N, database=None)\n"
        "@given(st.integers())\n"
        "def test_many(x):\n"
        "    pass\n"
        "@settings(max_examples=N, database=None)\n"
        "@given(st.booleans())\n"
        "def test_two_values(x):\n"
        "    pass\n"
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fuzz.py"), "--examples", "9", "--seed", "5", str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "seed 5" in out
    assert re.search(r"^  test_many: 9 examples \(9 passing, 0 failing, 0 invalid\)", out, re.M), out
    assert re.search(r"^  test_two_values: 2 examples \(2 passing, 0 failing, 0 invalid\)", out, re.M), out
    assert "nothing left to do" in out


@fuzz
@given(app_id=ids, platform_id=ids, since=st.floats())
def test_fuzz_band_reads(stubs: dict[str, Any], app_id: str, platform_id: str, since: float) -> None:
    """The bank's own systems' calls: garbage ids get a precise status (NOT_FOUND at most for valid
    ones), a bad ``since`` INVALID_ARGUMENT, never INTERNAL."""
    request = pb.GetBandRequest(application_id=app_id, platform_id=platform_id)
    assert status(stubs["bank"].GetBand, request) in PRECISE - {grpc.StatusCode.OK}
    if not (since >= 0 and since != float("inf")):
        watch = stubs["bank"].WatchBands(pb.WatchBandsRequest(since=since), timeout=30)
        with pytest.raises(grpc.RpcError) as info:
            next(watch)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@fuzz
@given(value=hostile_ids(), field=st.sampled_from(["application_id", "platform_id"]))
def test_fuzz_hostile_band_read(stubs: dict[str, Any], value: str, field: str) -> None:
    assume(field != "platform_id" or value != "")  # "" names no platform: a valid request
    request = pb.GetBandRequest(**{"application_id": "app-1", field: value})
    refused_precisely(stubs["bank"].GetBand, request, value)
