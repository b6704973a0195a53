"""No audit record, no scoring: when the bureau cannot append to its audit trail (disk full, read-only,
a revoked privilege) a submission is refused with UNAVAILABLE, nothing is stored or delivered to the
bank, and the trail stays truthful. Real gRPC nodes, on SQLite and on PostgreSQL.

How each failure is made, without root or mocks of our own code:

* SQLite, disk full: ``PRAGMA max_page_count`` caps the audit file (by default the applications
  file it shares, so both are full, as on a full disk) at its current size and records
  are appended until SQLite answers SQLITE_FULL ("database or disk is full"), the very error a full
  disk (ENOSPC) gives; the filler records stand for earlier traffic.
* SQLite, read-only: ``PRAGMA query_only`` on the bureau's audit connection, which makes SQLite
  answer SQLITE_READONLY ("attempt to write a readonly database") as for a file it may not write.
  (File modes cannot be used: as root they do not stop writes, and a running SQLite in WAL mode
  writes through files it already holds open.)
* PostgreSQL: the bureau connects as a dedicated role that owns its schema; ``REVOKE INSERT`` on
  ``bureau_audit`` from that role takes away exactly the audit append.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest

from blindscore.app.cli import main as cli
from blindscore.bank_node.flow import BankNode
from blindscore.bureau.audit import AuditLog
from blindscore.bureau.flow import BureauNode
from blindscore.crypto.dgk import DGKKeyPair
from blindscore.crypto.paillier import KeyPair
from blindscore.data.german import DEFAULT_MODEL_ID, default_model, load_german_credit
from blindscore.errors import UnavailableError
from blindscore.infra.db import RetryPolicy
from blindscore.infra.transport import open_channel
from blindscore.platform_node.flow import PlatformNode
from blindscore.protocol import packing
from blindscore.protocol.application import Application, BatchMember, EncryptedApplication, EncryptedBatch
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc
from blindscore.wire import serde

from support import running_nodes
from waiting import wait_for

PLATFORM = "platform-f"
BANK = "bank-f"
TIMEOUT = 30
REFUSAL = "the audit trail cannot be written; nothing was scored"
FAST = RetryPolicy(base_s=0.05, cap_s=0.2, jitter=0.2)


# ------------------------------------------------------------------------------ how the audit breaks


@dataclass
class Failure:
    """One way the audit append fails: ``brake`` makes it fail, ``heal`` undoes that."""

    name: str
    brake: Callable[[BureauNode], None]
    heal: Callable[[BureauNode], None]


def _audit_pragma(bureau: BureauNode, pragma: str) -> Any:
    assert bureau.audit is not None
    return bureau.audit._db.read(lambda tx: tx.one(f"PRAGMA {pragma}"))


def _fill_disk(bureau: BureauNode) -> None:
    assert bureau.audit is not None
    (pages,) = _audit_pragma(bureau, "page_count")
    _audit_pragma(bureau, f"max_page_count = {pages}")
    for i in range(1000):
        try:
            bureau.audit.append(
                platform_id="filler", bank_id="", application_id=f"filler-{i}", consent_reference="",
                model_id="", model_version="", outcome="INVALID_ARGUMENT", duration_ms=0.0,
            )  # fmt: skip
        except UnavailableError:
            return  # SQLITE_FULL: "database or disk is full"
    raise AssertionError("the audit file never filled up")


def _free_disk(bureau: BureauNode) -> None:
    _audit_pragma(bureau, "max_page_count = 1073741823")


SQLITE_FAILURES = [
    Failure("sqlite-disk-full", _fill_disk, _free_disk),
    Failure(
        "sqlite-read-only",
        lambda b: _audit_pragma(b, "query_only = 1"),
        lambda b: _audit_pragma(b, "query_only = 0"),
    ),
]


@dataclass
class PgRole:
    """A PostgreSQL role that owns one fresh schema, and the superuser URL that can take rights away."""

    admin_url: str
    role: str
    schema: str
    url: str

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql)


@pytest.fixture
def pg_role(pg_url: str) -> Iterator[PgRole]:
    tag = uuid.uuid4().hex[:12]
    role, schema, password = f"bureau_{tag}", f"failclosed_{tag}", uuid.uuid4().hex
    parts = urlsplit(pg_url)
    netloc = f"{role}:{password}@{parts.netloc.rsplit('@', 1)[-1]}"
    query = "&".join(q for q in (parts.query, f"options=-csearch_path%3D{schema}") if q)
    url = urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    pg = PgRole(pg_url, role, schema, url)
    pg.admin(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    pg.admin(f"CREATE SCHEMA {schema} AUTHORIZATION {role}")
    try:
        yield pg
    finally:
        pg.admin(f"DROP SCHEMA {schema} CASCADE")
        pg.admin(f"DROP ROLE {role}")


# ------------------------------------------------------------------------------ the nodes


@dataclass
class Nodes:
    tmp: Path
    database: str | None
    bank: BankNode
    bureau: BureauNode
    platform: PlatformNode
    bureau_addr: str
    platform_addr: str
    key_id: str
    #: Applications whose band reached the bank, in order (every DeliverBand the bank handled).
    delivered: list[str] = field(default_factory=list)
    closers: list[Callable[[], Any]] = field(default_factory=list)

    @property
    def audit(self) -> AuditLog:
        assert self.bureau.audit is not None
        return self.bureau.audit

    def stub(self, kind: str) -> Any:
        channel = open_channel(self.bureau_addr if kind == "Bureau" else self.platform_addr)
        self.closers.append(channel.close)
        return getattr(pb_grpc, f"{kind}Stub")(channel)

    def outcomes(self, app_id: str) -> list[str]:
        return [r.outcome for r in self.audit.records() if r.application_id == app_id]

    def assert_truthful(self) -> None:
        """The chain verifies (also through `blindscore bureau audit verify`), every band at the bank
        has its ACCEPTED record, and no record says OK for an application the bank has no band of."""
        assert self.audit.verify().ok
        args = ["bureau", "audit", "verify", "--data-dir", str(self.tmp / "bureau")]
        assert cli([*args, "--database", self.database] if self.database else args) == 0
        records = list(self.audit.records())
        accepted = {r.application_id for r in records if r.outcome == "ACCEPTED"}
        ok = {r.application_id for r in records if r.outcome == "OK"}
        banded = {b.application_id for b in self.bank.store.all()}
        assert banded <= accepted, banded - accepted
        assert ok <= banded, ok - banded

    def close(self) -> None:
        for close in reversed(self.closers):
            close()


def start_nodes(
    tmp: Path, database: str | None, paillier: KeyPair, dgk: DGKKeyPair, *, own_trail: bool = False
) -> Nodes:
    """``own_trail``: the bureau's SQLite trail in an audit.sqlite3 of its own (as data directories
    made before 2026-12 have it), so that it can fail while the applications' file works."""
    if own_trail:
        (tmp / "bureau").mkdir(parents=True)
        AuditLog(tmp / "bureau" / "audit.sqlite3").close()
    stack = ExitStack()
    net = stack.enter_context(
        running_nodes(tmp, paillier, dgk, bank_id=BANK, platform_id=PLATFORM, database=database, retry=FAST)
    )
    assert net.platform_obj is not None
    bank = net.bank_node
    nodes = Nodes(
        tmp,
        database,
        bank,
        net.bureau_obj,
        net.platform_obj,
        net.bureau,
        net.platform,
        net.key_id,
        [],
        [stack.close],
    )
    # Every band the bank takes in, by either unary path: the one application a CircuitReveal
    # names (the circuit band, the default) or DeliverBand (the DGK rounds).
    real, real_circuit = bank.deliver_band, bank.circuit_reveal

    def counting(delivery: Any, **kw: Any) -> Any:
        nodes.delivered.append(delivery.application_id)
        return real(delivery, **kw)

    def counting_circuit(reveal: Any, **kw: Any) -> Any:
        nodes.delivered.extend(reveal.batch.application_ids)
        return real_circuit(reveal, **kw)

    bank.deliver_band = counting  # type: ignore[method-assign]
    bank.circuit_reveal = counting_circuit  # type: ignore[method-assign]
    return nodes


@pytest.fixture(
    params=[
        *(pytest.param(f, id=f.name) for f in SQLITE_FAILURES),
        pytest.param("postgresql-revoked-insert", marks=pytest.mark.postgresql),
    ]
)
def broken(
    request: pytest.FixtureRequest, tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> Iterator[tuple[Nodes, Failure]]:
    """Running nodes and a way to break (and heal) the bureau's audit append, on each backend."""
    if isinstance(request.param, Failure):
        nodes = start_nodes(tmp_path, None, paillier_keypair, dgk_keypair)
        failure = request.param
    else:
        pg: PgRole = request.getfixturevalue("pg_role")
        nodes = start_nodes(tmp_path, pg.url, paillier_keypair, dgk_keypair)
        table = f"{pg.schema}.bureau_audit"
        failure = Failure(
            request.param,
            lambda _: pg.admin(f"REVOKE INSERT ON {table} FROM {pg.role}"),
            lambda _: pg.admin(f"GRANT INSERT ON {table} TO {pg.role}"),
        )
    try:
        yield nodes, failure
    finally:
        nodes.close()


def german(i: int, app_id: str, key_id: str) -> Application:
    rows, _ = load_german_credit()
    return Application(app_id, BANK, DEFAULT_MODEL_ID, key_id, f"consent-{app_id}", rows[i])


def encrypted(nodes: Nodes, i: int, app_id: str) -> pb.EncryptedApplication:
    rows, _ = load_german_credit()
    key = nodes.bank.keypair.public_key
    ciphertexts = tuple(key.encrypt(v) for v in default_model().spec.encode_row(rows[i]))
    app = EncryptedApplication(
        app_id, PLATFORM, BANK, DEFAULT_MODEL_ID, key.key_id, f"c-{app_id}", ciphertexts
    )
    return serde.encrypted_application_to_proto(app, key)


def encrypted_batch(nodes: Nodes, batch_id: str, ids: list[str]) -> pb.EncryptedBatch:
    model = default_model()
    key = nodes.bank.keypair.public_key
    slot_bits = packing.slot_bits_for(model)
    assert slot_bits is not None
    rows, _ = load_german_credit()
    encoded = [model.spec.encode_row(rows[i]) for i in range(len(ids))]
    batch = EncryptedBatch(
        batch_id=batch_id, platform_id=PLATFORM, bank_id=BANK, model_id=DEFAULT_MODEL_ID, key_id=key.key_id,
        model_version="1", slot_bits=slot_bits, members=tuple(BatchMember(a, f"c-{a}") for a in ids),
        ciphertexts=tuple(packing.encrypt_packed(key, model.spec, slot_bits, encoded)),
    )  # fmt: skip
    return serde.encrypted_batch_to_proto(batch, key)


def banded(nodes: Nodes, app_id: str) -> None:
    wait_for(lambda: nodes.bank.store.get(app_id), what=f"the band of {app_id}")


def refused(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details() or ""


# ------------------------------------------------------------------------------ the tests


def test_a_submission_is_refused_when_its_audit_record_cannot_be_written(
    broken: tuple[Nodes, Failure],
) -> None:
    """Old behaviour: scored and delivered to the bank with no record, and verify said intact."""
    nodes, failure = broken
    bureau = nodes.stub("Bureau")
    msg = encrypted(nodes, 1, "fc-1")
    bands = nodes.bank.store.count()
    failure.brake(nodes.bureau)
    code, text = refused(lambda: bureau.SubmitApplication(msg, timeout=TIMEOUT))
    assert (code, text) == (grpc.StatusCode.UNAVAILABLE, REFUSAL)
    assert nodes.bank.store.get("fc-1") is None and nodes.bank.store.count() == bands
    assert "fc-1" not in nodes.delivered
    assert nodes.bureau.applications.get(PLATFORM, "fc-1") is None  # nothing stored: the id stays free
    assert nodes.outcomes("fc-1") == []
    # The same submission once the trail can be written again: scored, with its records.
    failure.heal(nodes.bureau)
    assert nodes.audit.verify().ok
    assert bureau.SubmitApplication(msg, timeout=TIMEOUT).accepted
    banded(nodes, "fc-1")  # at once, or from the retry worker if the bank did not answer at once
    assert nodes.outcomes("fc-1") == ["ACCEPTED", "OK"]
    nodes.assert_truthful()


def test_a_packed_batch_is_refused_whole_when_its_audit_records_cannot_be_written(
    broken: tuple[Nodes, Failure],
) -> None:
    nodes, failure = broken
    bureau = nodes.stub("Bureau")
    ids = ["fc-b0", "fc-b1", "fc-b2"]
    msg = encrypted_batch(nodes, "b-fail-closed", ids)
    failure.brake(nodes.bureau)
    code, text = refused(lambda: bureau.SubmitBatch(msg, timeout=TIMEOUT))
    assert (code, text) == (grpc.StatusCode.UNAVAILABLE, REFUSAL)
    assert all(nodes.bank.store.get(a) is None for a in ids) and not set(ids) & set(nodes.delivered)
    assert nodes.bureau.batches.get(PLATFORM, "b-fail-closed") is None
    assert all(nodes.outcomes(a) == [] for a in ids)
    failure.heal(nodes.bureau)
    assert bureau.SubmitBatch(msg, timeout=TIMEOUT).batch_id == "b-fail-closed"
    for app_id in ids:
        banded(nodes, app_id)
    assert all(nodes.outcomes(a) == ["ACCEPTED", "OK"] for a in ids)
    nodes.assert_truthful()


def test_the_platform_operator_gets_unavailable_and_the_platform_resends_after_recovery(
    broken: tuple[Nodes, Failure],
) -> None:
    nodes, failure = broken
    platform = nodes.stub("Platform")
    failure.brake(nodes.bureau)
    app = serde.application_to_proto(german(2, "fc-op", nodes.key_id))
    code, text = refused(lambda: platform.ScoreApplication(app, timeout=TIMEOUT))
    assert code == grpc.StatusCode.UNAVAILABLE and REFUSAL in text
    stream = list(
        platform.ScoreApplications(
            iter([serde.application_to_proto(german(3, "fc-st", nodes.key_id))]), timeout=TIMEOUT
        )
    )
    assert [(r.accepted, r.error_code) for r in stream] == [(False, grpc.StatusCode.UNAVAILABLE.value[0])]
    assert REFUSAL in stream[0].error_message
    assert nodes.bank.store.get("fc-op") is None and nodes.bank.store.get("fc-st") is None
    assert nodes.delivered == []
    nodes.assert_truthful()
    # UNAVAILABLE is retryable: the platform kept the payload and resends it once the trail heals.
    failure.heal(nodes.bureau)

    def scored_and_recorded(app_id: str) -> bool:
        # The band reaches the bank before the bureau appends the call's outcome: wait for both. A
        # resend refused just as the trail healed may have left a true UNAVAILABLE record before.
        outcomes = nodes.outcomes(app_id)
        return outcomes[-2:] == ["ACCEPTED", "OK"] and set(outcomes[:-2]) <= {"UNAVAILABLE"}

    for app_id in ("fc-op", "fc-st"):
        wait_for(partial(scored_and_recorded, app_id), what=f"{app_id} scored and recorded")
        assert nodes.bank.store.get(app_id) is not None
    assert nodes.delivered.count("fc-op") == 1  # "fc-st" went as a packed batch (neither call)
    nodes.assert_truthful()


def test_a_failed_outcome_record_leaves_the_trail_true(
    tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    """The ACCEPTED record was written, the band delivered, then the trail became read-only: the
    answer stands (the band is at the bank) and the trail says only "accepted", never an outcome
    that did not happen; AuditLog.unsettled() names the application. The trail is in a file of its
    own, the one SQLite layout where it can fail while the applications' file goes on."""
    nodes = start_nodes(tmp_path, None, paillier_keypair, dgk_keypair, own_trail=True)
    try:
        (readonly,) = [f for f in SQLITE_FAILURES if f.name == "sqlite-read-only"]
        # The band reaches the bank with the pad of its circuit round (CircuitReveal, the default
        # band protocol); break the trail right after the bank has stored it.
        delivering = nodes.bank.circuit_reveal

        def then_break(reveal: Any, **kw: Any) -> Any:
            result = delivering(reveal, **kw)
            readonly.brake(nodes.bureau)
            return result

        nodes.bank.circuit_reveal = then_break  # type: ignore[method-assign]
        bureau = nodes.stub("Bureau")
        for attempt in range(3):
            app_id = f"fc-late-{attempt}"
            msg = encrypted(nodes, 4, app_id)
            receipt = bureau.SubmitApplication(msg, timeout=TIMEOUT)
            if not receipt.pending:
                break
            # The bank did not answer at once, so the call's OK record came before the band: not
            # the case under test. Let the retry worker deliver it, heal and try a new application.
            banded(nodes, app_id)
            readonly.heal(nodes.bureau)
        assert receipt.accepted and not receipt.pending and nodes.bank.store.get(app_id) is not None
        assert nodes.outcomes(app_id) == ["ACCEPTED"]
        assert [r.application_id for r in nodes.audit.unsettled()] == [app_id]
        nodes.assert_truthful()
        # Once writable again, the same submission gets its stored outcome, now on record too.
        readonly.heal(nodes.bureau)
        nodes.bank.circuit_reveal = delivering  # type: ignore[method-assign]
        assert bureau.SubmitApplication(msg, timeout=TIMEOUT) == receipt
        assert nodes.outcomes(app_id) == ["ACCEPTED", "OK"] and nodes.audit.unsettled() == []
        assert nodes.delivered.count(app_id) == 1
        nodes.assert_truthful()
    finally:
        nodes.close()
