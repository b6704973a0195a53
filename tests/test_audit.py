"""The bureau's audit trail: hash chain, tamper detection, concurrent appends and input refusals."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import itertools
import multiprocessing
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blindscore.bureau.audit import GENESIS_HASH, OUTCOMES, AuditLog, AuditRecord, canonical_bytes
from blindscore.errors import InvalidInputError, PreconditionError

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
TEXT_FIELDS = ("platform_id", "bank_id", "application_id", "consent_reference", "model_id", "model_version")
APPEND_FIELDS = {*TEXT_FIELDS, "outcome", "duration_ms", "at"}
COLUMNS = (
    "seq",
    "at",
    "platform_id",
    "bank_id",
    "application_id",
    "consent_reference",
    "model_id",
    "model_version",
    "outcome",
    "duration_us",
    "prev_hash",
    "hash",
)


def fields(i: int = 1, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "platform_id": "platform-a",
        "bank_id": "bank-1",
        "application_id": f"app-{i:04d}",
        "consent_reference": f"consent/{i}",
        "model_id": "german-credit",
        "model_version": "3",
        "outcome": "OK",
        "duration_ms": 12.5 + i,
        "at": T0 + timedelta(seconds=i),
    }
    base.update(overrides)
    return base


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog(tmp_path / "audit" / "audit.db") as audit:
        yield audit


@pytest.fixture
def five(log: AuditLog) -> list[AuditRecord]:
    return [log.append(**fields(i)) for i in range(1, 6)]


def tamper(path: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    """What an attacker with the file can do: drop the append-only triggers and rewrite rows."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            db.execute(f"DROP TRIGGER {name}")
        db.execute(sql, params)
    finally:
        db.close()


def rechain_from(path: Path, start: int) -> None:
    """Recompute prev_hash and hash from ``start`` on, as an attacker who rewrites the whole DB would."""
    with AuditLog(path) as audit:
        rows = list(audit.records())
    prev = GENESIS_HASH if start == 1 else rows[start - 2].hash
    for record in rows[start - 1 :]:
        fixed = dataclasses.replace(record, prev_hash=prev, hash="")
        fixed = dataclasses.replace(fixed, hash=fixed.computed_hash())
        tamper(path, "UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, fixed.hash, record.seq))
        prev = fixed.hash


# ----------------------------------------------------------------------------------------- happy path


def test_append_builds_a_chain(log: AuditLog) -> None:
    records = [log.append(**fields(i)) for i in range(1, 4)]
    assert [r.seq for r in records] == [1, 2, 3]
    assert records[0].prev_hash == GENESIS_HASH == "0" * 64
    assert records[1].prev_hash == records[0].hash and records[2].prev_hash == records[1].hash
    assert len({r.hash for r in records}) == 3
    for r in records:
        assert r.hash == hashlib.sha256(r.canonical_bytes()).hexdigest()
    first = records[0]
    assert first.at == "2025-03-01T12:00:01.123456+00:00"
    assert first.timestamp == T0 + timedelta(seconds=1)
    assert (first.platform_id, first.bank_id, first.application_id) == ("platform-a", "bank-1", "app-0001")
    assert (first.consent_reference, first.model_id, first.model_version) == (
        "consent/1",
        "german-credit",
        "3",
    )
    assert first.outcome == "OK" and first.duration_us == 13_500 and first.duration_ms == 13.5

    report = log.verify()
    assert (report.ok, report.records, report.first_bad_seq) == (True, 3, None)
    assert log.head() == (3, records[2].hash)
    assert log.verify(expected_head=log.head()).ok


def test_append_many_chains_in_one_transaction_and_validates_first(log: AuditLog) -> None:
    first = log.append(**fields(1))
    batch = log.append_many([fields(i) for i in range(2, 5)])
    assert [r.seq for r in batch] == [2, 3, 4]
    assert batch[0].prev_hash == first.hash and batch[2].prev_hash == batch[1].hash
    assert [r.application_id for r in batch] == ["app-0002", "app-0003", "app-0004"]
    with pytest.raises(
        InvalidInputError,
        match=r"^audit outcome 'NOT-A-STATUS' is not a gRPC status name \(e\.g\. 'OK'\) or ACCEPTED$",
    ):
        log.append_many([fields(5), {**fields(6), "outcome": "NOT-A-STATUS"}])
    assert log.head() == (4, batch[2].hash)  # nothing of the refused batch was written
    assert log.append_many([]) == []
    assert log.verify().ok


def test_canonical_encoding_regression_vector(log: AuditLog) -> None:
    record = log.append(
        **fields(1, consent_reference='ref "quoted" \\ ünï', model_version="v1.2", duration_ms=0.0015)
    )
    expected = (
        '{"application_id":"app-0001","at":"2025-03-01T12:00:01.123456+00:00","bank_id":"bank-1",'
        '"consent_reference":"ref \\"quoted\\" \\\\ ünï","duration_us":2,"format":1,'
        '"model_id":"german-credit","model_version":"v1.2","outcome":"OK",'
        '"platform_id":"platform-a","prev_hash":"' + "0" * 64 + '","seq":1}'
    ).encode()
    assert record.canonical_bytes() == expected
    assert record.hash == hashlib.sha256(expected).hexdigest()
    assert record.hash == "f47046fc91f964a3eb7e9c178878d7b95989e0b21070fd52ec6c06af783d9910"


def test_canonical_bytes_needs_exactly_the_hashed_columns() -> None:
    values: dict[str, str | int] = {c: 0 for c in COLUMNS if c != "hash"}
    canonical_bytes(values)  # the right key set encodes
    with pytest.raises(
        InvalidInputError, match=r"^canonical encoding needs exactly the hashed audit columns$"
    ):
        canonical_bytes({**values, "score": 700})
    del values["outcome"]
    with pytest.raises(
        InvalidInputError, match=r"^canonical encoding needs exactly the hashed audit columns$"
    ):
        canonical_bytes(values)


def test_time_is_utc_with_microseconds(log: AuditLog) -> None:
    plus_two = timezone(timedelta(hours=2))
    record = log.append(**fields(1, at=datetime(2025, 3, 1, 14, 0, 0, tzinfo=plus_two)))
    assert record.at == "2025-03-01T12:00:00.000000+00:00"
    now = log.append(**fields(2, at=None))
    assert abs(now.timestamp - datetime.now(UTC)) < timedelta(seconds=10)
    assert now.at.endswith("+00:00") and len(now.at.split(".")[1]) == len("123456+00:00")


def test_empty_log(log: AuditLog) -> None:
    assert log.head() == (0, GENESIS_HASH)
    assert log.verify() == log.verify(expected_head=(0, GENESIS_HASH))
    report = log.verify()
    assert (report.ok, report.records, report.first_bad_seq) == (True, 0, None)
    assert list(log.records()) == []


def test_records_listing(log: AuditLog, five: list[AuditRecord]) -> None:
    assert list(log.records()) == five
    assert list(log.records(limit=2)) == five[:2]
    assert list(log.records(limit=0)) == []
    assert list(log.records(after=3)) == five[3:]
    assert list(log.records(limit=1, after=4)) == five[4:]
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(InvalidInputError, match=r"^limit must be None or a non-negative int$"):
            log.records(limit=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match=r"^after must be a non-negative int$"):
            log.records(after=bad)  # type: ignore[arg-type]


def test_append_while_listing_does_not_deadlock(log: AuditLog, five: list[AuditRecord]) -> None:
    seen = []
    for record in log.records():
        seen.append(record.seq)
        if record.seq == 1:
            log.append(**fields(6))
    assert seen == [1, 2, 3, 4, 5, 6]


def test_reopen_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as audit:
        first = audit.append(**fields(1))
    with AuditLog(path) as audit:
        second = audit.append(**fields(2))
        assert (second.seq, second.prev_hash) == (2, first.hash)
        assert audit.verify().ok and audit.verify().records == 2


def test_refuses_foreign_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(PreconditionError, match=r"^cannot open database .*junk\.db: file is not a database$"):
        AuditLog(junk)
    future = tmp_path / "future.db"
    db = sqlite3.connect(future)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(PreconditionError, match="format 99"):
        AuditLog(future)


def test_triggers_refuse_update_and_delete(log: AuditLog, five: list[AuditRecord]) -> None:
    db = sqlite3.connect(log.path, isolation_level=None)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("UPDATE audit SET outcome = 'INTERNAL' WHERE seq = 2")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM audit WHERE seq = 5")
    finally:
        db.close()
    assert list(log.records()) == five and log.verify().ok


# ----------------------------------------------------------------------------------------- tampering


def assert_bad(log: AuditLog, first_bad_seq: int, reason_part: str, **kwargs: Any) -> None:
    report = log.verify(**kwargs)
    assert not report.ok
    assert report.first_bad_seq == first_bad_seq, report.reason
    assert report.records == first_bad_seq - 1
    assert reason_part in report.reason


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("bank_id", "bank-2"),
        ("outcome", "INTERNAL"),
        ("duration_us", 1),
        ("at", "2025-03-01T12:00:03.123457+00:00"),
        ("consent_reference", "consent/3 "),
        ("model_version", "4"),
    ],
)
def test_edited_field_is_detected(log: AuditLog, five: list[AuditRecord], column: str, value: object) -> None:
    tamper(log.path, f"UPDATE audit SET {column} = ? WHERE seq = 3", (value,))
    assert_bad(log, 3, "do not match its stored hash")


def test_edit_with_recomputed_record_hash_breaks_the_next_link(
    log: AuditLog, five: list[AuditRecord]
) -> None:
    tamper(log.path, "UPDATE audit SET outcome = 'PERMISSION_DENIED' WHERE seq = 3")
    edited = dataclasses.replace(next(log.records(after=2)), hash="")
    tamper(log.path, "UPDATE audit SET hash = ? WHERE seq = 3", (edited.computed_hash(),))
    assert_bad(log, 4, "does not link to record 3")


def test_deleted_middle_record_is_detected(log: AuditLog, five: list[AuditRecord]) -> None:
    tamper(log.path, "DELETE FROM audit WHERE seq = 3")
    assert_bad(log, 3, "record 3 is missing")


def test_deleted_first_record_is_detected(log: AuditLog, five: list[AuditRecord]) -> None:
    tamper(log.path, "DELETE FROM audit WHERE seq = 1")
    assert_bad(log, 1, "record 1 is missing")


def test_deleted_middle_record_with_renumbering_is_detected(log: AuditLog, five: list[AuditRecord]) -> None:
    tamper(log.path, "DELETE FROM audit WHERE seq = 3")
    tamper(log.path, "UPDATE audit SET seq = seq - 1 WHERE seq > 3")
    assert_bad(log, 3, "does not link to record 2")


@pytest.mark.parametrize("seq", [0, -7])
def test_row_planted_before_the_first_record_is_detected(
    log: AuditLog, five: list[AuditRecord], seq: int
) -> None:
    values = [seq, *(getattr(five[0], c) for c in COLUMNS[1:])]
    tamper(log.path, f"INSERT INTO audit VALUES ({', '.join('?' * len(COLUMNS))})", tuple(values))
    assert_bad(log, 1, f"unexpected row with seq {seq}")
    assert list(log.records()) == five  # listing starts after seq 0


def test_swapped_records_are_detected(log: AuditLog, five: list[AuditRecord]) -> None:
    tamper(log.path, "UPDATE audit SET seq = -2 WHERE seq = 2")
    tamper(log.path, "UPDATE audit SET seq = 2 WHERE seq = 4")
    tamper(log.path, "UPDATE audit SET seq = 4 WHERE seq = -2")
    rows = {r.seq: r for r in log.records()}
    assert (rows[2].application_id, rows[4].application_id) == ("app-0004", "app-0002")
    assert_bad(log, 2, "does not link to record 1")


def test_swapped_contents_keeping_hashes_in_place_are_detected(
    log: AuditLog, five: list[AuditRecord]
) -> None:
    # Swap every field except seq, prev_hash and hash, so the links still look right.
    content = [c for c in COLUMNS if c not in ("seq", "prev_hash", "hash")]
    a, b = five[1], five[3]
    for target, source in ((a, b), (b, a)):
        assignments = ", ".join(f"{c} = ?" for c in content)
        tamper(
            log.path,
            f"UPDATE audit SET {assignments} WHERE seq = ?",
            (*(getattr(source, c) for c in content), target.seq),
        )
    assert_bad(log, 2, "do not match its stored hash")


def test_altered_hash_is_detected(log: AuditLog, five: list[AuditRecord]) -> None:
    forged = ("f" if five[2].hash[0] != "f" else "e") + five[2].hash[1:]
    tamper(log.path, "UPDATE audit SET hash = ? WHERE seq = 3", (forged,))
    assert_bad(log, 3, "do not match its stored hash")


def test_altered_last_hash_is_detected(log: AuditLog, five: list[AuditRecord]) -> None:
    tamper(log.path, "UPDATE audit SET hash = ? WHERE seq = 5", ("0" * 64,))
    assert_bad(log, 5, "do not match its stored hash")


def test_truncated_head_needs_an_anchor(log: AuditLog, five: list[AuditRecord]) -> None:
    anchor = log.head()
    assert anchor == (5, five[4].hash)
    tamper(log.path, "DELETE FROM audit WHERE seq = 5")
    # Without an anchor, a log cut at its end is indistinguishable from a shorter log.
    unanchored = log.verify()
    assert (unanchored.ok, unanchored.records, unanchored.first_bad_seq) == (True, 4, None)
    assert_bad(log, 5, "anchored head is seq 5", expected_head=anchor)
    # An older anchor that still lies within the log passes.
    assert log.verify(expected_head=(3, five[2].hash)).ok


def test_truncation_of_several_records_against_anchor(log: AuditLog, five: list[AuditRecord]) -> None:
    anchor = log.head()
    tamper(log.path, "DELETE FROM audit WHERE seq >= 3")
    assert_bad(log, 3, "log ends at seq 2", expected_head=anchor)


def test_full_rewrite_passes_the_chain_but_not_the_anchor(log: AuditLog, five: list[AuditRecord]) -> None:
    anchor = log.head()
    tamper(log.path, "UPDATE audit SET outcome = 'OK', bank_id = 'bank-9' WHERE seq = 2")
    rechain_from(log.path, 2)
    assert log.verify().ok  # the documented limit: the chain alone cannot catch a full rewrite
    assert_bad(log, 5, "differs from the anchored head", expected_head=anchor)


def test_rewrite_then_append_still_fails_the_anchor(log: AuditLog, five: list[AuditRecord]) -> None:
    anchor = log.head()
    tamper(log.path, "UPDATE audit SET duration_us = 1 WHERE seq = 1")
    rechain_from(log.path, 1)
    log.append(**fields(6))
    assert log.verify().ok
    assert_bad(log, 5, "differs from the anchored head", expected_head=anchor)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("bank_id", "bank\nFORGED LINE"),
        ("outcome", "APPROVED"),
        ("at", "yesterday"),
        ("model_version", "v" * 65),
    ],
)
def test_rechained_record_that_append_would_refuse_is_detected(
    log: AuditLog, five: list[AuditRecord], column: str, value: str
) -> None:
    tamper(log.path, f"UPDATE audit SET {column} = ? WHERE seq = 2", (value,))
    rechain_from(log.path, 2)
    assert_bad(log, 2, "could not have been appended")


def test_forged_row_after_a_gap_is_detected(log: AuditLog, five: list[AuditRecord]) -> None:
    values = [getattr(five[4], c) for c in COLUMNS]
    values[0], values[-2] = 7, five[4].hash
    tamper(log.path, f"INSERT INTO audit VALUES ({', '.join('?' * len(COLUMNS))})", tuple(values))
    assert_bad(log, 6, "record 6 is missing")


@pytest.mark.parametrize(
    ("column", "sql_value"),
    [("platform_id", "X'00ff'"), ("duration_us", "1.5"), ("hash", "NULL"), ("at", "X'3432'")],
)
def test_wrongly_typed_column_is_reported_not_crashed(
    log: AuditLog, five: list[AuditRecord], column: str, sql_value: str
) -> None:
    db = sqlite3.connect(log.path, isolation_level=None)
    try:
        # Recreate the table without NOT NULL so even a NULL can be planted.
        db.execute("DROP TRIGGER audit_no_update")
        db.execute("DROP TRIGGER audit_no_delete")
        db.execute("ALTER TABLE audit RENAME TO old")
        db.execute(f"CREATE TABLE audit AS SELECT {', '.join(COLUMNS)} FROM old")
        db.execute(f"UPDATE audit SET {column} = {sql_value} WHERE seq = 3")
    finally:
        db.close()
    assert_bad(log, 3, "malformed")
    listing = log.records()
    with pytest.raises(PreconditionError, match="seq 3 is malformed"):
        list(listing)


def test_bad_anchor_is_refused(log: AuditLog, five: list[AuditRecord]) -> None:
    for bad in [(5,), (5, "abc"), (-1, GENESIS_HASH), (True, five[0].hash), (0, "1" * 64), [5, five[4].hash]]:
        with pytest.raises(
            InvalidInputError,
            match=r"^expected_head (must be a \(seq, hash\) tuple|seq must|hash must|\(0, \.\.\.\) must)",
        ):
            log.verify(expected_head=bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------- concurrency


def test_eight_threads_keep_one_chain(log: AuditLog) -> None:
    threads, per_thread = 8, 40
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                log.append(**fields(i, application_id=f"t{t}-{i}", at=None))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    total = threads * per_thread
    report = log.verify()
    assert (report.ok, report.records) == (True, total)
    records = list(log.records())
    assert [r.seq for r in records] == list(range(1, total + 1))
    assert sorted(r.application_id for r in records) == sorted(
        f"t{t}-{i}" for t in range(threads) for i in range(per_thread)
    )


def append_from_process(path: str, worker: int, count: int, barrier: Any) -> None:
    """Runs in a spawned child: its own AuditLog on the same file."""
    with AuditLog(Path(path)) as audit:
        barrier.wait()
        for i in range(count):
            audit.append(**fields(i, application_id=f"p{worker}-{i}", at=None))
            time.sleep(0.002)  # release the write lock long enough for the other writers to get in


def test_two_processes_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    per_process = 40
    with AuditLog(path) as audit:
        audit.append(**fields(0, application_id="parent"))
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(3)
        procs = [
            ctx.Process(target=append_from_process, args=(str(path), w, per_process, barrier))
            for w in range(2)
        ]
        for p in procs:
            p.start()
        barrier.wait(timeout=60)
        for i in range(per_process):
            audit.append(**fields(i, application_id=f"parent-{i}"))
            time.sleep(0.002)
        for p in procs:
            p.join(timeout=60)
        assert [p.exitcode for p in procs] == [0, 0]
        total = 1 + 3 * per_process
        report = audit.verify()
        assert (report.ok, report.records) == (True, total)
        records = list(audit.records())
        assert [r.seq for r in records] == list(range(1, total + 1))
        assert sorted(r.application_id for r in records[1:]) == sorted(
            f"{who}-{i}" for who in ("p0", "p1", "parent") for i in range(per_process)
        )
        assert audit.head() == (total, records[-1].hash)
        # The writers really did contend: three writers one after another would switch only twice.
        writers = [r.application_id.split("-")[0] for r in records[1:]]
        assert sum(a != b for a, b in itertools.pairwise(writers)) > 2


# ----------------------------------------------------------------------------------------- refusals


def refused(log: AuditLog, **overrides: Any) -> None:
    before = log.head()
    with pytest.raises(InvalidInputError, match=r"^audit (duration_ms|field|outcome|time) "):
        log.append(**fields(1, **overrides))
    assert log.head() == before  # nothing was written


@pytest.mark.parametrize("outcome", ["BOGUS", "ok", "Ok", "", " OK", "OK\n", "200", "StatusCode.OK"])
def test_unknown_outcome_is_refused(log: AuditLog, outcome: str) -> None:
    refused(log, outcome=outcome)


def test_outcomes_are_exactly_the_grpc_status_names(log: AuditLog) -> None:
    # ... and ACCEPTED, the record written before an application is stored and scored (fail closed).
    assert {code.name for code in grpc.StatusCode} | {"ACCEPTED"} == OUTCOMES
    for name in sorted(OUTCOMES):
        assert log.append(**fields(1, outcome=name)).outcome == name
    assert log.append(**fields(1, outcome=grpc.StatusCode.NOT_FOUND)).outcome == "NOT_FOUND"


@pytest.mark.parametrize("field", TEXT_FIELDS)
@pytest.mark.parametrize(
    "char",
    ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\u202e", "\u200b", "\ud800"],
)
def test_control_characters_are_refused(log: AuditLog, field: str, char: str) -> None:
    refused(log, **{field: f"abc{char}def"})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("platform_id", 7),
        ("bank_id", None),
        ("application_id", b"app-1"),
        ("consent_reference", ["c"]),
        ("model_id", 1.0),
        ("model_version", 3),
        ("outcome", 0),
        ("outcome", None),
        ("duration_ms", "12"),
        ("duration_ms", True),
        ("duration_ms", None),
        ("duration_ms", float("nan")),
        ("duration_ms", float("inf")),
        ("duration_ms", -0.001),
        ("duration_ms", 7 * 24 * 3600 * 1000 + 1),
        ("at", "2025-03-01T12:00:00+00:00"),
        ("at", 1_700_000_000),
        ("at", datetime(2025, 3, 1, 12, 0, 0)),  # naive
        ("at", datetime(1, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=1)))),
    ],
)
def test_wrong_types_and_values_are_refused(log: AuditLog, field: str, value: object) -> None:
    refused(log, **{field: value})


@pytest.mark.parametrize(
    ("field", "limit"),
    [
        ("platform_id", 128),
        ("bank_id", 128),
        ("application_id", 128),
        ("consent_reference", 256),
        ("model_id", 128),
        ("model_version", 64),
    ],
)
def test_lengths_are_capped(log: AuditLog, field: str, limit: int) -> None:
    assert getattr(log.append(**fields(1, **{field: "é" * limit})), field) == "é" * limit
    refused(log, **{field: "a" * (limit + 1)})
    refused(log, **{field: "0123456789abcdef" * 64})  # room for a ciphertext is exactly what is refused


def test_empty_strings_record_missing_values(log: AuditLog) -> None:
    record = log.append(
        **fields(1, platform_id="", bank_id="", consent_reference="", outcome="INVALID_ARGUMENT")
    )
    assert (record.platform_id, record.bank_id, record.consent_reference) == ("", "", "")
    assert log.verify().ok


def test_str_subclasses_are_stored_as_plain_str(log: AuditLog) -> None:
    class Sneaky(str):
        def __str__(self) -> str:
            return "something else"

    record = log.append(**fields(1, bank_id=Sneaky("bank-1")))
    assert type(record.bank_id) is str and record.bank_id == "bank-1"
    assert log.verify().ok


def test_extra_fields_are_impossible(log: AuditLog) -> None:
    with pytest.raises(TypeError, match=r"^AuditLog\.append\(\) got an unexpected keyword argument 'score'$"):
        log.append(**fields(1), score=700)  # type: ignore[call-arg]
    with pytest.raises(
        TypeError, match=r"^AuditLog\.append\(\) got an unexpected keyword argument 'features'$"
    ):
        log.append(**fields(1), features={"age": 30})  # type: ignore[call-arg]
    with pytest.raises(
        TypeError, match=r"^AuditLog\.append\(\) takes 1 positional argument but 3 were given$"
    ):
        log.append("platform-a", "bank-1")  # type: ignore[call-arg]
    assert log.head() == (0, GENESIS_HASH)
    params = inspect.signature(AuditLog.append).parameters
    assert set(params) - {"self"} == APPEND_FIELDS
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for n, p in params.items() if n != "self")
    assert [f.name for f in dataclasses.fields(AuditRecord)] == list(COLUMNS)
    db = sqlite3.connect(log.path)
    try:
        stored = [row[1] for row in db.execute("PRAGMA table_info(audit)")]
    finally:
        db.close()
    assert stored == list(COLUMNS)


# ----------------------------------------------------------------------------------------- properties

# Control, format, surrogate, line and paragraph separator characters: what append refuses.
refused_char = st.characters(categories=("Cc", "Cf", "Cs", "Zl", "Zp"))
safe_char = st.characters(exclude_categories=("Cc", "Cf", "Cs", "Zl", "Zp"))
safe_text = st.text(safe_char, max_size=64)
short_text = st.text(safe_char, max_size=32)
record_contents = st.fixed_dictionaries(
    {
        **{name: safe_text for name in TEXT_FIELDS},
        "outcome": st.sampled_from(sorted(OUTCOMES)),
        "duration_ms": st.floats(min_value=0, max_value=1e6, allow_nan=False) | st.integers(0, 10**6),
        "at": st.datetimes(
            min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
        ),
    }
)


def fresh_log() -> tuple[tempfile.TemporaryDirectory[str], AuditLog]:
    tmp = tempfile.TemporaryDirectory()
    return tmp, AuditLog(Path(tmp.name) / "audit.db")


def flipped(column: str, old: object, data: st.DataObject) -> object:
    if column == "seq":
        assert isinstance(old, int)
        return old + 1000
    if column == "duration_us":
        assert isinstance(old, int)
        return old + data.draw(st.sampled_from([1, -1, 1000]))
    if column in ("hash", "prev_hash"):
        return data.draw(st.text("0123456789abcdef", min_size=64, max_size=64).filter(lambda h: h != old))
    if column == "outcome":
        return data.draw(st.sampled_from(sorted(OUTCOMES - {str(old)})))
    if column == "at":
        return data.draw(
            st.datetimes(timezones=st.just(UTC))
            .map(lambda d: d.isoformat(timespec="microseconds"))
            .filter(lambda a: a != old)
        )
    return data.draw(safe_text.filter(lambda v: v != old))


@settings(max_examples=60)
@given(
    contents=st.lists(record_contents, min_size=1, max_size=4),
    column=st.sampled_from(COLUMNS),
    data=st.data(),
)
def test_random_chains_verify_and_any_flip_is_detected(
    contents: list[dict[str, Any]], column: str, data: st.DataObject
) -> None:
    tmp, audit = fresh_log()
    try:
        records = [audit.append(**c) for c in contents]
        report = audit.verify()
        assert (report.ok, report.records) == (True, len(contents))
        assert list(audit.records()) == records
        for record, c in zip(records, contents, strict=True):
            assert all(getattr(record, name) == c[name] for name in TEXT_FIELDS)
            assert record.timestamp == c["at"]
        victim = data.draw(st.sampled_from(records))
        new = flipped(column, getattr(victim, column), data)
        tamper(audit.path, f"UPDATE audit SET {column} = ? WHERE seq = ?", (new, victim.seq))
        report = audit.verify()
        assert not report.ok
        assert report.first_bad_seq == victim.seq, report.reason
    finally:
        audit.close()
        tmp.cleanup()


@given(
    field=st.sampled_from(TEXT_FIELDS),
    prefix=short_text,
    bad=refused_char,
    suffix=short_text,
)
def test_any_refused_character_anywhere_is_refused(field: str, prefix: str, bad: str, suffix: str) -> None:
    tmp, audit = fresh_log()
    try:
        with pytest.raises(
            InvalidInputError,
            match=rf"^audit field {field} contains control character U\+{ord(bad):04X}; newlines, control "
            "and format characters are refused$",
        ):
            audit.append(**fields(1, **{field: prefix + bad + suffix}))
        assert audit.head() == (0, GENESIS_HASH)
    finally:
        audit.close()
        tmp.cleanup()
