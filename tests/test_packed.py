"""Packed batches: slot layout, the garbled band protocol in process, the stores, and refusals."""

from __future__ import annotations

import pickle
import re
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from blindscore.bank_node.calls import Batch, BatchFinish, BatchStart
from blindscore.bank_node.sessions import PackedSessions
from blindscore.bank_node.store import BandRecord, ResultStore
from blindscore.bureau.applications import ApplicationStore, Submission
from blindscore.bureau.bank_link import OtSessions
from blindscore.bureau.batches import BatchStore, BatchSubmission
from blindscore.crypto import garble, ot
from blindscore.crypto.paillier import KeyPair
from blindscore.data.german import default_model, load_german_credit
from blindscore.errors import (
    AlreadyExistsError,
    InvalidInputError,
    NotFoundError,
    PreconditionError,
)
from blindscore.models.linear import LinearModel
from blindscore.platform_node.outbox import Outbox
from blindscore.protocol import packing
from blindscore.protocol.application import BatchMember, EncryptedBatch
from blindscore.protocol.comparison import truncated_band

MODEL = default_model()
ROWS, TARGET = load_german_credit()
SLOT_BITS = packing.slot_bits_for(MODEL)


@pytest.fixture(scope="module")
def ot_pair() -> tuple[ot.OtSender, PackedSessions, bytes]:
    """A bank's packed sessions with one finished base-OT setup, and the bureau's sender."""
    sessions = PackedSessions()
    offer = sessions.setup_start()
    setup, choice = ot.SenderSetup.start(offer)
    sender = setup.finish(sessions.setup_finish(choice))
    return sender, sessions, offer.session_id


def encoded(rows: Sequence[Mapping[str, object]]) -> list[list[int]]:
    return [MODEL.spec.encode_row(r) for r in rows]


def start_batch(
    sessions: PackedSessions,
    keypair: KeyPair,
    session_id: bytes,
    masked: packing.PackedMasked,
    ids: Sequence[str],
) -> Any:
    """The bank's PackedStart without the node around it: open the batch, then the OT request."""
    opened = packing.open_packed(keypair, masked)
    batch = Batch(keypair.public_key.key_id, tuple(ids))
    return sessions.start(BatchStart(batch, session_id, masked), opened)


def finish_of(
    key_id: str,
    ticket: bytes,
    reply: ot.ExtensionReply,
    circuit: garble.GarbledComparisons,
    labels: Sequence[str],
    ids: Sequence[str],
) -> BatchFinish:
    """The bank's PackedFinish input for a batch of model "m" from the bureau and platform ""."""
    return BatchFinish(Batch(key_id, tuple(ids)), ticket, reply, circuit, "m", tuple(labels))


def batch_ids(n: int) -> list[str]:
    return ["a", "b"] if n == 2 else [f"a{i}" for i in range(n)]


def run_batch(
    keypair: KeyPair,
    model: LinearModel,
    rows: list[list[int]],
    ot_pair: tuple[ot.OtSender, PackedSessions, bytes],
) -> list[int]:
    """Platform, bureau and bank of one packed batch, in process, through the bank's real ticket code."""
    sender, sessions, session_id = ot_pair
    pk = keypair.public_key
    slot_bits = packing.slot_bits_for(model)
    assert slot_bits is not None
    cts = packing.encrypt_packed(pk, model.spec, slot_bits, rows)
    band = packing.PackedBand(pk, model, cts, len(rows), slot_bits)
    ids = [f"a{i}" for i in range(len(rows))]
    start = start_batch(sessions, keypair, session_id, band.masked(), ids)
    circuit, pairs = band.garble()
    reply = sender.reply(start.request, pairs)
    done = sessions.finish(finish_of(pk.key_id, start.ticket, reply, circuit, model.policy.labels, ids))
    assert not any(c.fault for c in done)
    return [c.record.band for c in done]


# layout -----------------------------------------------------------------------------------


def test_slot_bits_hold_one_masked_score_and_a_2048_bit_key_holds_about_twenty() -> None:
    assert SLOT_BITS is not None
    lo, hi = MODEL.encoded_score_bounds
    # z = s + C + R < 2^width: the score range, l + T bits of offset and 41 + range bits of mask.
    assert (hi - lo).bit_length() + 1 + 40 <= SLOT_BITS
    k = packing.slots_per_batch(SLOT_BITS, 2048)
    assert k * SLOT_BITS <= 2046 < (k + 1) * SLOT_BITS
    assert 15 <= k <= packing.MAX_SLOTS
    assert packing.slots_per_batch(SLOT_BITS, 4096) > k


def test_batch_messages_stay_within_the_grpc_limit(
    paillier_keypair: KeyPair, ot_pair: tuple[ot.OtSender, PackedSessions, bytes]
) -> None:
    """The per-slot size estimate is exact for the bureau's finishing call, and models with many
    cutoffs and long comparisons get batches small enough for a 4 MiB message."""
    sender, sessions, session_id = ot_pair
    pk = paillier_keypair.public_key
    assert SLOT_BITS is not None
    n = 3
    cts = packing.encrypt_packed(pk, MODEL.spec, SLOT_BITS, encoded(ROWS[:n]))
    band = packing.PackedBand(pk, MODEL, cts, n, SLOT_BITS)
    start = start_batch(sessions, paillier_keypair, session_id, band.masked(), batch_ids(n))
    circuit, pairs = band.garble()
    reply = sender.reply(start.request, pairs)
    sent = len(circuit.tables) + len(circuit.garbler_labels) + len(reply.y0) + len(reply.y1)
    received = len(start.request.u) + len(start.request.check) - ot.REQUEST_OVERHEAD_BYTES
    estimate = n * packing.round_bytes_per_slot(len(MODEL.encoded_cutoffs), MODEL.comparison_bits)
    assert abs((sent + received) - estimate) <= 128  # u pads each of its 128 columns to whole bytes
    assert packing.max_slots_for(MODEL) == packing.MAX_SLOTS  # German: far below the limit
    per_slot = packing.round_bytes_per_slot(64, 256)
    assert packing.MAX_ROUND_BYTES // per_slot < 20
    assert packing.slots_per_batch(SLOT_BITS, 2048, packing.MAX_ROUND_BYTES // per_slot) < 20
    assert packing.slots_per_batch(3000, 2048) == 0  # a slot wider than the key: not packable


def test_pack_rows_puts_application_a_in_slot_a_offset_by_the_column_minimum() -> None:
    rows = encoded(ROWS[:3])
    assert SLOT_BITS is not None
    plain = packing.pack_rows(MODEL.spec, SLOT_BITS, rows, 2048)
    assert len(plain) == MODEL.spec.encoded_width
    mask = (1 << SLOT_BITS) - 1
    for j, (lo, _) in enumerate(MODEL.spec.encoded_bounds):
        for a in range(3):
            assert (plain[j] >> (a * SLOT_BITS)) & mask == rows[a][j] - lo
        assert plain[j] >> (3 * SLOT_BITS) == 0


def test_pack_rows_refuses_out_of_range_rows_and_too_many_rows() -> None:
    assert SLOT_BITS is not None
    rows = encoded(ROWS[:2])
    bad = list(rows[0])
    bad[0] = MODEL.spec.encoded_bounds[0][1] + 1
    with pytest.raises(InvalidInputError, match="outside"):
        packing.pack_rows(MODEL.spec, SLOT_BITS, [rows[1], bad], 2048)
    k = packing.slots_per_batch(SLOT_BITS, 2048)
    with pytest.raises(InvalidInputError, match=f"1..{k} applications"):
        packing.pack_rows(MODEL.spec, SLOT_BITS, [rows[0]] * (k + 1), 2048)
    with pytest.raises(InvalidInputError, match=f"1..{k} applications"):
        packing.pack_rows(MODEL.spec, SLOT_BITS, [], 2048)


# the protocol -----------------------------------------------------------------------------


def test_packed_bands_equal_the_plaintext_model_on_german_credit(
    paillier_keypair: KeyPair, ot_pair: tuple[ot.OtSender, PackedSessions, bytes]
) -> None:
    assert SLOT_BITS is not None
    k = packing.slots_per_batch(SLOT_BITS, paillier_keypair.public_key.bits)
    rows = ROWS[: 3 * k + 5]
    got: list[int] = []
    for start in range(0, len(rows), k):
        got += run_batch(paillier_keypair, MODEL, encoded(rows[start : start + k]), ot_pair)
    for enc, band in zip(encoded(rows), got, strict=True):
        # The protocol's band: the truncated comparison with carry 0 or 1 (see comparison.py) ...
        assert band in {MODEL.truncated_band_from_encoded(enc, 0), MODEL.truncated_band_from_encoded(enc, 1)}
    # ... which is the plaintext band for every row of this sample.
    assert got == [MODEL.band(row) for row in rows]
    assert len(set(got)) >= 4


def test_a_single_application_batch_and_edge_scores(
    paillier_keypair: KeyPair, ot_pair: tuple[ot.OtSender, PackedSessions, bytes]
) -> None:
    """The lowest and highest admissible encoded rows sit in the extreme bands."""
    spec = MODEL.spec
    lows = [lo for lo, _ in spec.encoded_bounds]
    highs = [hi for _, hi in spec.encoded_bounds]
    weights = MODEL.encoded_weights
    low_row = [lo if w > 0 else hi for w, lo, hi in zip(weights, lows, highs, strict=True)]
    high_row = [hi if w > 0 else lo for w, lo, hi in zip(weights, lows, highs, strict=True)]
    # One-hot groups must hold exactly one 1: take the extreme that check_encoded_row accepts.
    try:
        spec.check_encoded_row(low_row)
        spec.check_encoded_row(high_row)
    except InvalidInputError:
        low_row = min(encoded(ROWS), key=MODEL.encoded_score)
        high_row = max(encoded(ROWS), key=MODEL.encoded_score)
    bands = run_batch(paillier_keypair, MODEL, [low_row, high_row], ot_pair)
    s_min, s_max = MODEL.encoded_score_bounds
    cut = MODEL.encoded_cutoffs
    expect = [
        truncated_band(MODEL.encoded_score(r), cut, s_min, s_max, MODEL.truncate_bits)
        for r in (low_row, high_row)
    ]
    assert bands == expect
    assert run_batch(paillier_keypair, MODEL, [high_row], ot_pair) == expect[1:]


def test_every_slot_gets_its_own_mask(paillier_keypair: KeyPair) -> None:
    """Identical applications in one batch decrypt to different masked scores at the bank, and the
    garbler's inputs depend only on the masks (two batches of the same rows differ)."""
    assert SLOT_BITS is not None
    pk = paillier_keypair.public_key
    row = encoded(ROWS[:1])[0]
    cts = packing.encrypt_packed(pk, MODEL.spec, SLOT_BITS, [row] * 4)
    band = packing.PackedBand(pk, MODEL, cts, 4, SLOT_BITS)
    opened = packing.open_packed(paillier_keypair, band.masked())
    assert len(set(opened.values)) == 4 and not any(opened.faulted)
    again = packing.PackedBand(pk, MODEL, cts, 4, SLOT_BITS)
    assert band.garbler_values() != again.garbler_values()
    assert band.masked().ciphertext != again.masked().ciphertext


def test_bank_marks_overflowing_slots_faulted_and_refuses_bad_parameters(paillier_keypair: KeyPair) -> None:
    """Overflows are never refused (a refusal would be an oracle on the decrypted value): the slots
    are marked faulted and get uniformly random comparison inputs of the right width."""
    pk = paillier_keypair.public_key
    assert SLOT_BITS is not None
    k = packing.slots_per_batch(SLOT_BITS, pk.bits)
    wide = packing.PackedMasked(int(pk.encrypt(1 << (2 * SLOT_BITS))), 2, SLOT_BITS, 4, 27, 24)
    opened = packing.open_packed(paillier_keypair, wide)
    assert opened.faulted == (True, True)
    # A score wider than declared sets its slot's guard bit instead of spilling into the next slot.
    guarded = packing.PackedMasked(int(pk.encrypt(1 << (2 * SLOT_BITS - 1))), 2, SLOT_BITS, 4, 27, 24)
    assert packing.open_packed(paillier_keypair, guarded).faulted == (False, True)
    # The faulted slot's input is random (not the zero that its decrypted low bits hold).
    seen = {packing.open_packed(paillier_keypair, guarded).values[1] for _ in range(8)}
    assert len(seen) > 1 and all(0 <= v < 1 << 28 for v in seen)
    ct = int(pk.encrypt(5))
    for bad, message in [
        (packing.PackedMasked(ct, k + 1, SLOT_BITS, 4, 27, 24), "do not fit"),
        (packing.PackedMasked(ct, 0, SLOT_BITS, 4, 27, 24), "do not fit"),
        (packing.PackedMasked(ct, 2, SLOT_BITS, 0, 27, 24), "cutoffs"),
        (packing.PackedMasked(ct, 2, SLOT_BITS, 4, 0, 24), "comparison bits"),
        (packing.PackedMasked(ct, 2, 30, 4, 27, 24), "cannot hold"),
        (packing.PackedMasked(ct, 2, SLOT_BITS, 4, 27, SLOT_BITS), "truncate_bits"),
    ]:
        with pytest.raises(InvalidInputError, match=message):
            packing.open_packed(paillier_keypair, bad)


def test_non_monotone_comparison_bits_are_a_protocol_fault() -> None:
    assert packing.bands_from_bits([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]) == [2, 0, 4]
    assert packing.bands_from_bits([[1, 0], [0, 1], [1, 0, 1]]) == [1, None, None]


def test_bureau_refuses_a_batch_packed_for_other_slots(paillier_keypair: KeyPair) -> None:
    pk = paillier_keypair.public_key
    assert SLOT_BITS is not None
    cts = packing.encrypt_packed(pk, MODEL.spec, SLOT_BITS, encoded(ROWS[:2]))
    with pytest.raises(InvalidInputError, match="bit slots"):
        packing.PackedBand(pk, MODEL, cts, 2, SLOT_BITS + 1)
    with pytest.raises(InvalidInputError, match="encrypted features"):
        packing.PackedBand(pk, MODEL, cts[:-1], 2, SLOT_BITS)
    with pytest.raises(InvalidInputError, match="kappa"):
        packing.PackedBand(pk, MODEL, cts, 2, SLOT_BITS, kappa=39)


# the bank's tickets and sessions ----------------------------------------------------------


def _started(
    keypair: KeyPair, ot_pair: tuple[ot.OtSender, PackedSessions, bytes], n: int = 2
) -> tuple[packing.PackedBand, bytes, ot.ExtensionReply, garble.GarbledComparisons]:
    sender, sessions, session_id = ot_pair
    pk = keypair.public_key
    assert SLOT_BITS is not None
    cts = packing.encrypt_packed(pk, MODEL.spec, SLOT_BITS, encoded(ROWS[:n]))
    band = packing.PackedBand(pk, MODEL, cts, n, SLOT_BITS)
    start = start_batch(sessions, keypair, session_id, band.masked(), batch_ids(n))
    circuit, pairs = band.garble()
    return band, start.ticket, sender.reply(start.request, pairs), circuit


def test_tickets_are_sealed_single_use_and_bound_to_the_key_and_the_batch(
    paillier_keypair: KeyPair, ot_pair: tuple[ot.OtSender, PackedSessions, bytes]
) -> None:
    _, sessions, _ = ot_pair
    key_id = paillier_keypair.public_key.key_id
    labels = MODEL.policy.labels
    _, ticket, reply, circuit = _started(paillier_keypair, ot_pair)
    tampered = ticket[:-1] + bytes([ticket[-1] ^ 1])
    with pytest.raises(PreconditionError, match="ticket"):
        sessions.finish(finish_of(key_id, tampered, reply, circuit, labels, ["a", "b"]))
    with pytest.raises(PreconditionError, match="ticket"):
        # another process
        PackedSessions().finish(finish_of(key_id, ticket, reply, circuit, labels, ["a", "b"]))
    records = sessions.finish(finish_of(key_id, ticket, reply, circuit, labels, ["a", "b"]))
    assert [r.record.application_id for r in records] == ["a", "b"]
    # Single use: the same ticket again (one OT nonce, a second reply) is refused.
    with pytest.raises(PreconditionError, match="ticket"):
        sessions.finish(finish_of(key_id, ticket, reply, circuit, labels, ["a", "b"]))
    refusals: list[tuple[str, list[str], tuple[str, ...], str]] = [
        ("pk-" + "0" * 32, ["a", "b"], labels, "another key"),
        (key_id, ["a", "a"], labels, "distinct"),
        (key_id, ["a", "b"], labels[:-1], "band labels"),
        (key_id, ["b", "a"], labels, "other members"),
        (key_id, ["a", "c"], labels, "other members"),
    ]
    for key, ids, names, message in refusals:
        _, ticket, reply, circuit = _started(paillier_keypair, ot_pair)
        with pytest.raises(InvalidInputError, match=message):
            sessions.finish(finish_of(key, ticket, reply, circuit, names, ids))
    # The circuit of another batch does not fit a ticket.
    _, ticket, reply, _ = _started(paillier_keypair, ot_pair)
    _, _, _, other = _started(paillier_keypair, ot_pair, n=3)
    with pytest.raises(InvalidInputError, match="garbled comparisons"):
        sessions.finish(finish_of(key_id, ticket, reply, other, labels, ["a", "b"]))


def test_unknown_sessions_and_setups_are_not_found(paillier_keypair: KeyPair) -> None:
    sessions = PackedSessions()
    offer = sessions.setup_start()
    _, choice = ot.SenderSetup.start(offer)
    other = PackedSessions()
    with pytest.raises(NotFoundError, match="OT setup"):
        other.setup_finish(choice)
    mask = packing.PackedMasked(int(paillier_keypair.public_key.encrypt(1)), 1, 94, 4, 27, 24)
    with pytest.raises(NotFoundError, match="OT session"):
        sessions.require_session(secrets.token_bytes(16))
    with pytest.raises(NotFoundError, match="OT session"):
        start_batch(sessions, paillier_keypair, secrets.token_bytes(16), mask, ["a"])
    for holder in (sessions, other):
        with pytest.raises(TypeError, match=REFUSES_PICKLING[PackedSessions]):
            pickle.dumps(holder)
        assert "secret" in repr(holder)


#: Each OT-session holder's own refusal to be pickled.
REFUSES_PICKLING = {
    PackedSessions: "^PackedSessions hold OT seeds and cannot be pickled$",
    OtSessions: "^OtSessions hold OT seeds and cannot be pickled$",
}


@pytest.mark.parametrize("holder", list(REFUSES_PICKLING), ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("refusal", ["own", "removed"])
def test_session_holders_refuse_pickling_themselves(
    holder: type, refusal: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both holders own a lock, whose TypeError pickling would raise anyway: only the holder's own
    message shows its refusal. Negative control ("removed"): without its ``__reduce__`` the holder
    still fails to pickle, with the lock's message, which the match above does not accept."""
    if refusal == "removed":
        monkeypatch.delattr(holder, "__reduce__")
    with pytest.raises(TypeError) as info:
        pickle.dumps(holder())
    own = re.search(REFUSES_PICKLING[holder], str(info.value)) is not None
    assert own == (refusal == "own"), str(info.value)
    if refusal == "removed":
        assert "lock" in str(info.value)  # the weak test's bare TypeError would have passed here


def test_bureau_sessions_refuse_a_repeated_nonce_and_rotate(
    ot_pair: tuple[ot.OtSender, PackedSessions, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    sender, _, _ = ot_pair
    sessions = OtSessions()
    setups: list[int] = []

    def setup() -> ot.OtSender:
        setups.append(1)
        return sender

    where = ("bank", "127.0.0.1:1")
    assert sessions.sender(where, setup) is sender and sessions.sender(where, setup) is sender
    assert len(setups) == 1  # set up once, then reused
    nonce = secrets.token_bytes(16)
    assert sessions.fresh_nonce(where, sender, nonce)
    assert not sessions.fresh_nonce(where, sender, nonce)  # a bank repeating a nonce is caught
    monkeypatch.setattr(OtSessions, "MAX_BATCHES_PER_SESSION", 3)
    assert sessions.fresh_nonce(where, sender, secrets.token_bytes(16))
    assert sessions.sender(where, setup) is sender and len(setups) == 1
    assert sessions.fresh_nonce(where, sender, secrets.token_bytes(16))  # the third: retired
    sessions.sender(where, setup)
    assert len(setups) == 2  # the next batch sets up a new session
    sessions.drop(where, ot_pair[0])
    with pytest.raises(TypeError, match=REFUSES_PICKLING[OtSessions]):
        pickle.dumps(sessions)


# stores -----------------------------------------------------------------------------------


def _submission(batch_id: str, ids: tuple[str, ...], payload: bytes = b"\x01" * 64) -> BatchSubmission:
    return BatchSubmission(
        platform_id="plat",
        batch_id=batch_id,
        bank_id="bank",
        model_id="m",
        model_version=1,
        key_id="pk-x",
        slot_bits=94,
        members=tuple((i, "consent") for i in ids),
        width=1,
        ciphertexts=payload,
    )


def test_batch_store_accepts_once_and_refuses_reused_ids(tmp_path: Path) -> None:
    apps = ApplicationStore(tmp_path / "bureau.sqlite3")
    store = BatchStore(apps.database)
    stored, created = store.accept(_submission("b1", ("x", "y")), next_attempt_at=0)
    assert created and stored.application_ids == ("x", "y")
    again, created = store.accept(_submission("b1", ("x", "y")), next_attempt_at=0)
    assert not created and again.digest == stored.digest
    with pytest.raises(AlreadyExistsError, match="different payload"):
        store.accept(_submission("b1", ("x", "y"), b"\x02" * 64), next_attempt_at=0)
    with pytest.raises(AlreadyExistsError, match="'y'"):
        store.accept(_submission("b2", ("z", "y")), next_attempt_at=0)
    assert store.get("plat", "b2") is None and store.batch_of("plat", "z") is None  # nothing half-written
    apps.accept(
        Submission("plat", "single", "bank", "m", 1, "pk-x", "consent", 1, b"\x01" * 64), next_attempt_at=0
    )
    with pytest.raises(AlreadyExistsError, match="'single'"):
        store.accept(_submission("b3", ("single",)), next_attempt_at=0)
    assert store.batch_of("plat", "x") == "b1"
    assert [b.batch_id for b in store.due(1.0, 10)] == ["b1"]
    store.delivered(("plat", "b1"), {"stage_ms": {}})
    assert store.due(1.0, 10) == [] and store.counts()["delivered"] == 1
    store.close()
    apps.close()


def test_outbox_stores_a_batch_once_and_every_member_resolves_to_it() -> None:
    outbox = Outbox.in_memory()
    members = [("a", "fa"), ("b", "fb"), ("c", "fc")]
    leader = outbox.add_batch(members, "bank", "pk-x", b"payload", due_at=0)
    assert leader is not None and leader == outbox.get("a")
    assert [outbox.batch_payload(e) for e in map(outbox.get, "abc") if e] == [b"payload"] * 3
    # The payload is stored once; the others name the first member.
    entry_b = outbox.get("b")
    assert entry_b is not None and len(entry_b.payload) < len(b"payload") + 2
    # A batch with a member already in the outbox is not stored at all.
    assert outbox.add_batch([("d", "fd"), ("b", "fb")], "bank", "pk-x", b"other", due_at=0) is None
    assert outbox.get("d") is None
    outbox.acknowledged(["a", "b", "c"])
    assert outbox.counts()["acknowledged"] == 3
    outbox.close()


def test_results_store_keeps_the_first_band_of_each_application(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.sqlite3")
    first = [BandRecord("a", "m", "k", 1, "B", 1.0), BandRecord("b", "m", "k", 2, "C", 1.0)]
    assert store.put_many(first) == (2, [])
    assert store.put_many(first) == (0, [])  # a repeated batch stores nothing twice
    # A batch run again may put a score next to a cutoff in the neighbouring band: the first stays.
    again = [BandRecord("c", "m", "k", 0, "A", 1.0), BandRecord("a", "m", "k", 2, "C", 1.0)]
    assert store.put_many(again) == (1, ["a"])
    stored_a, stored_c = store.get("a"), store.get("c")
    assert stored_a is not None and stored_a.band == 1
    assert stored_c is not None and stored_c.band == 0 and store.count() == 3
    # One at a time (the per-application protocol), a different band is refused, as before.
    with pytest.raises(AlreadyExistsError, match="different band"):
        store.put(BandRecord("b", "m", "k", 0, "A", 1.0))
    assert store.put(BandRecord("b", "m", "k", 2, "C", 1.0)) is False
    store.close()


def test_domain_objects_refuse_malformed_batches() -> None:
    member = BatchMember("a", "consent")
    good: dict[str, Any] = dict(
        batch_id="b", platform_id="p", bank_id="bank", model_id="m", key_id="k", model_version="1",
        slot_bits=94, members=(member,), ciphertexts=(1,),
    )  # fmt: skip
    EncryptedBatch(**good)
    changes: list[tuple[dict[str, Any], str]] = [
        ({"model_version": "latest"}, "resolved model version"),
        ({"members": ()}, "at least one"),
        ({"members": (member, member)}, "twice"),
        ({"ciphertexts": ()}, "encrypted columns"),
    ]
    for change, message in changes:
        with pytest.raises(InvalidInputError, match=message):
            EncryptedBatch(**{**good, **change})
    with pytest.raises(InvalidInputError, match="consent"):
        BatchMember("a", "")
