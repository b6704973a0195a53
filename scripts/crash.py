"""Crash test: kill -9 the bureau, then the bank, then the platform while applications are in flight,
restart each, and prove that none is lost, none is delivered twice with another band, and the audit
chain verifies.

Clients behave like a careful platform operator: an application whose call failed because a node
was down is resubmitted with the same id and the same features until it gets a final answer, and
one answered "accepted, pending" is asked again until the answer is final. ``path="unary"`` sends
one ``ScoreApplication`` call at a time per client; ``path="stream"`` sends rounds of ``window``
applications over ``ScoreApplications`` streams, which the platform scores in packed batches.

Kills follow a schedule drawn from ``seed``: the applications are released in phases, and kill k
waits until the answers reach a drawn point of phase k, while the rest of that phase (a full
window per client) is still in flight, plus a short drawn delay so that it lands inside requests.
If the answers came all at once and nothing is in flight then, one more round is released first.
Each killed node is restarted on its port with its data; the next phase is released after the
restart. The report gives the number of applications in flight at each kill.

At the end the bank's store and run ledger are read:

* **lost**: accepted (the client saw ``accepted``, at any point) and no band at the bank;
* **refused**: a final status the client saw. Only the packed path may refuse, and only with
  FAILED_PRECONDITION for a batch whose evaluation round (PackedFinish) the bureau had sent when the
  bank or the bureau died: the bureau never runs such a batch again (a re-run could tell a
  deviating bank a second band per application). The bank may hold a band for a refused member
  (it committed before dying); such bands are counted and checked like the others. Members of
  such a batch that the platform answers ALREADY_EXISTS (see TOLERATE_ALREADY_EXISTS_FOR_SPENT)
  count as refused too, listed apart in ``misreported_refusals``;
* **wrong_band**: a band that differs from the plaintext model's outside its proven error margin;
* **duplicated**: delivered more than once, i.e. the bank's run ledger
  (``ResultStore.deliveries()``) counts two or more completed deliveries for the application (a
  CircuitReveal or DeliverBand, or a PackedFinish naming it, that the bank committed). On the unary
  path this happens legitimately when a kill of the bureau or the bank lands between the bank's
  commit and the bureau's record of it: the bureau reveals the same kept pad of the same round (the
  circuit band, the default) or delivers the same kept [band] ciphertext (DGK) again, and the bank
  keeps its first band. So a duplicate must belong to an application in flight (or pending at
  the bureau) at a bureau or bank kill (else ``duplicated_unexplained``), and its second band must
  equal the first (else ``duplicated_with_different_band``, read from the bank's log line "kept the
  earlier band"). On the packed path a batch's evaluation round is sent once, so any duplicate
  fails the run.

``blindscore bureau audit verify`` must pass and the bank must have recorded no protocol fault.
Loopback only, bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import grpc

from blindscore.app.localnet import LocalNetwork, replica_name
from blindscore.bank_node.store import BandRecord, ResultStore
from blindscore.bureau.applications import FAILED
from blindscore.bureau.audit import AuditLog
from blindscore.bureau.batches import BatchStore
from blindscore.data.german import DEFAULT_MODEL_ID, default_model, load_german_credit
from blindscore.errors import InvalidInputError
from blindscore.infra.transport import open_channel
from blindscore.protocol.application import Application
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc
from blindscore.wire import serde

#: Statuses that mean "a node is down, restarting or shedding load": resubmit the same application.
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # a node's bulkhead (e.g. the platform's 4 streams at once)
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
}
#: The one refusal a crash may cause, on the packed path only: FAILED_PRECONDITION for a batch
#: whose evaluation round was sent and not confirmed (bureau/flow.py, bureau/bank_link.py).
SPENT_CODE = grpc.StatusCode.FAILED_PRECONDITION
SPENT_MARKER = "evaluation round"
#: A member of a batch the bureau failed for good, asked about again after another member was,
#: is answered ALREADY_EXISTS instead of the batch's FAILED_PRECONDITION: the platform's outbox
#: frees the members of a refused batch (platform_node/outbox.py, ``Outbox._check``) and the
#: bureau refuses their ids in a new batch. A wrong status, not a lost application: counted as a
#: refusal, listed in ``misreported_refusals``, when the bureau's store confirms the spent batch.
TOLERATE_ALREADY_EXISTS_FOR_SPENT = True
#: The bank's log line when a repeated delivery carried a band other than the one it kept.
KEPT_EARLIER = "kept the earlier band"
PATHS = ("unary", "stream", "mixed")
#: Applications per run at most: ids crash-0 ... crash-N-1 over German credit's rows, cycled.
MAX_APPLICATIONS = 10_000
NODES = ("bureau", "bank", "platform")
#: One application keeps being resubmitted this long at most before it counts as an error.
PER_APPLICATION_TIMEOUT_S = 180.0
#: How long the clients ask again about applications answered "accepted, pending".
SETTLE_TIMEOUT_S = 180.0
CALL_TIMEOUT_S = 30.0
STREAM_TIMEOUT_S = 60.0
#: The killer gives up (and the run fails) if the answers stop short of a kill point this long.
KILL_POINT_TIMEOUT_S = PER_APPLICATION_TIMEOUT_S + STREAM_TIMEOUT_S
#: Pause before resubmitting what failed because a node was down (polling, not a fixed wait).
RETRY_PAUSE_S = 0.2
#: Seconds between the kill point and the kill (short: what is in flight drains fast on the packed
#: path), and a killed node's time down; both drawn from the seed.
KILL_DELAY_S = (0.0, 0.05)
DOWN_TIME_S = (0.2, 1.0)
#: Applications per stream round by default: one packed batch at 2048 bits for the German model.
DEFAULT_WINDOW = 21
_CODES = {code.value[0]: code for code in grpc.StatusCode}


@dataclass
class CrashReport:
    applications: int
    database: str
    path: str = "unary"
    clients: int = 0
    seed: int | None = None
    #: Processes per role (a cluster of replicas; one each by default).
    replicas: dict[str, int] = field(default_factory=dict)
    #: Final answers the clients saw: accepted (delivered), refused with an allowed status, errors.
    accepted: int = 0
    pending_at_acceptance: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    #: "n x CODE: message", with quoted ids in the messages replaced by '…'.
    refusal_reasons: list[str] = field(default_factory=list)
    #: Refused for good (their batch was spent) but answered ALREADY_EXISTS by the platform.
    misreported_refusals: list[str] = field(default_factory=list)
    resubmissions: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    #: Nodes killed, in order, and how many applications were in flight (sent, no final answer)
    #: at each kill.
    kills: list[str] = field(default_factory=list)
    in_flight_at_kill: list[int] = field(default_factory=list)
    #: Applications the bureau stored as members of a packed batch, and its batches by state.
    packed_applications: int = 0
    batches: dict[str, int] = field(default_factory=dict)
    bands_stored: int = 0
    lost: list[str] = field(default_factory=list)
    refused_with_band: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    extra_band_rows: list[str] = field(default_factory=list)
    wrong_band: list[str] = field(default_factory=list)
    deliveries: int = 0
    #: How many applications the bank counts n deliveries for, by n (0: runs begun, none completed).
    deliveries_per_application: dict[int, int] = field(default_factory=dict)
    duplicated: list[str] = field(default_factory=list)
    duplicated_with_different_band: list[str] = field(default_factory=list)
    duplicated_unexplained: list[str] = field(default_factory=list)
    #: Delivered more than once and scored in a packed batch: never allowed (one evaluation round).
    duplicated_packed: list[str] = field(default_factory=list)
    protocol_faults: int = 0
    audit_ok: bool = False
    audit_records: int = 0
    audit_reason: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.accepted + sum(self.refused.values()) == self.applications
            and not self.errors
            and not self.lost
            and not self.unexpected
            and not self.extra_band_rows
            and not self.wrong_band
            and not self.duplicated_with_different_band
            and not self.duplicated_unexplained
            and not (self.path == "stream" and self.duplicated)
            and not self.duplicated_packed
            and self.protocol_faults == 0
            and self.audit_ok
        )

    def format(self) -> str:
        how = {
            "stream": "ScoreApplications streams (packed batches)",
            "mixed": "unary calls and streams (half the clients each)",
        }.get(self.path, "unary ScoreApplication calls")
        cluster = {r: n for r, n in self.replicas.items() if n > 1}
        kills = ", ".join(
            f"{n} ({k} in flight)" for n, k in zip(self.kills, self.in_flight_at_kill, strict=True)
        )
        refused = sum(self.refused.values())
        lines = [
            f"{self.applications} applications over {how} on {self.database}; {self.clients} clients, "
            f"seed {self.seed}" + (f"; replicas {cluster}" if cluster else ""),
            f"killed (-9) and restarted: {kills or 'none'}",
            f"answers: accepted {self.accepted} ({self.pending_at_acceptance} pending at first answer), "
            f"refused {refused}{' ' + str(self.refused) if self.refused else ''}, "
            f"errors {self.errors or 0}; resubmissions {self.resubmissions}",
        ]
        lines += [f"  refused: {reason}" for reason in self.refusal_reasons]
        if self.misreported_refusals:
            lines.append(
                f"  of which answered ALREADY_EXISTS for a spent batch (platform outbox issue): "
                f"{_few(self.misreported_refusals)}"
            )
        if self.path == "stream" or self.packed_applications:
            lines.append(
                f"packed: {self.packed_applications} applications in {sum(self.batches.values())} batches "
                f"{self.batches}"
            )
        lines += [
            f"bank: {self.bands_stored} bands; lost (accepted, no band) {_few(self.lost)}; "
            f"refused but band stored {_few(self.refused_with_band)}",
            f"  never accepted or refused {_few(self.unexpected)}, more than one band row "
            f"{_few(self.extra_band_rows)}, differing from plaintext {_few(self.wrong_band)}",
            f"deliveries: {self.deliveries} {self.deliveries_per_application} (count: applications); "
            f"delivered more than once {_few(self.duplicated)} "
            f"(with a different band {_few(self.duplicated_with_different_band)}, "
            f"not explained by a bureau or bank kill {_few(self.duplicated_unexplained)}, "
            f"packed {_few(self.duplicated_packed)}); "
            f"protocol faults {self.protocol_faults}",
            f"audit chain: {'verified' if self.audit_ok else 'BROKEN'} ({self.audit_records} records)"
            + (f" {self.audit_reason}" if self.audit_reason else ""),
            f"{'PASS' if self.ok else 'FAIL'} in {self.seconds:.0f} s",
        ]
        return "\n".join(lines)


def _few(ids: Sequence[str]) -> str:
    return f"{len(ids)}" + (f" {list(ids[:5])}{'...' if len(ids) > 5 else ''}" if ids else "")


@dataclass(frozen=True)
class _Answer:
    """What one call told the client about one application."""

    kind: str  # "accepted", "refused", "retry" or "error"
    code: str = ""
    message: str = ""
    pending: bool = False


def _answer_for(code: grpc.StatusCode | None, message: str, *, packed: bool) -> _Answer:
    name = code.name if code is not None else "UNKNOWN"
    if code is None or code in RETRYABLE:
        return _Answer("retry", name, message)
    if packed and code == SPENT_CODE and SPENT_MARKER in message:
        return _Answer("refused", name, message)
    return _Answer("error", name, message)


Submit = Callable[[Sequence[Application]], dict[str, _Answer]]


def _unary_submitter(address: str, security: Any, packed: bool = False) -> tuple[Submit, Callable[[], None]]:
    """Unary calls. ``packed``: the application may have gone in a packed batch (a mixed run: a
    stream stored it, a unary resubmission asks about it), so the batch's refusal for its spent
    evaluation round is an allowed answer here too (the judge checks that it was such a batch)."""
    channel = open_channel(address, security=security)
    stub: Any = pb_grpc.PlatformStub(channel)

    def submit(apps: Sequence[Application]) -> dict[str, _Answer]:
        out: dict[str, _Answer] = {}
        for app in apps:
            try:
                r = stub.ScoreApplication(serde.application_to_proto(app), timeout=CALL_TIMEOUT_S)
            except grpc.RpcError as exc:
                out[app.application_id] = _answer_for(exc.code(), exc.details() or "", packed=packed)
                continue
            out[app.application_id] = _receipt_answer(r, packed=packed)
        return out

    return submit, channel.close


def _stream_submitter(address: str, security: Any) -> tuple[Submit, Callable[[], None]]:
    channel = open_channel(address, security=security)
    stub: Any = pb_grpc.PlatformStub(channel)

    def submit(apps: Sequence[Application]) -> dict[str, _Answer]:
        out: dict[str, _Answer] = {}
        requests = [serde.application_to_proto(a) for a in apps]
        try:
            for r in stub.ScoreApplications(iter(requests), timeout=STREAM_TIMEOUT_S):
                out[r.application_id] = _receipt_answer(r, packed=True)
        except grpc.RpcError as exc:
            broken = _answer_for(exc.code(), exc.details() or "", packed=True)
            if broken.kind != "retry":  # the whole stream refused: not a crash symptom
                broken = _Answer("error", broken.code, broken.message)
            for app in apps:
                out.setdefault(app.application_id, broken)
        for app in apps:  # a stream that ended without a receipt for an application: ask again
            out.setdefault(app.application_id, _Answer("retry", "NO_RECEIPT"))
        return out

    return submit, channel.close


def _receipt_answer(r: pb.ScoreReceipt, *, packed: bool) -> _Answer:
    if r.accepted:
        return _Answer("accepted", pending=r.pending)
    return _answer_for(_CODES.get(r.error_code), r.error_message, packed=packed)


def _schedule(rng: random.Random, applications: int, kills: int, margin: int) -> tuple[list[int], list[int]]:
    """Kill points and phase limits: kill k fires once ``points[k]`` applications are answered; the
    applications below ``limits[k]`` (= ``points[k]`` + the margin) may be sent before it, the rest
    wait for it. Each point lies beyond the previous limit, so a point can only be reached with the
    applications released after the previous kill, and ``margin`` of them are in flight when it is;
    at least ``margin`` more are left after the last limit, for the round a kill releases when a
    burst of answers left nothing in flight. The margin shrinks when there are too few
    applications for that; the slack is spread at random over the gaps."""
    if kills == 0:
        return [], []
    # p_0 >= 1, p_k >= p_(k-1) + margin + 1, and p_last + margin <= applications - margin.
    margin = max(1, min(margin, (applications - kills) // (kills + 1)))
    slack = max(0, applications - (kills + 1) * margin - kills)
    weights = [rng.random() for _ in range(kills + 1)]
    gaps = [int(slack * w / sum(weights)) for w in weights]
    points: list[int] = []
    for k in range(kills):
        previous = points[-1] + margin + 1 if points else 1
        points.append(min(previous + gaps[k], applications))
    return points, [min(applications, p + margin) for p in points]


def run_crash(
    *,
    applications: int = 1000,
    clients: int = 4,
    database: str | None = None,
    kill_order: tuple[str, ...] = NODES,
    seed: int | None = None,
    key_bits: int = 2048,
    workdir: Path | None = None,
    path: str = "unary",
    window: int = DEFAULT_WINDOW,
    replicas: Mapping[str, int] | None = None,
) -> CrashReport:
    """One crash run; see the module docstring. ``replicas``: processes per role (a cluster on
    ``database``, PostgreSQL); each kill then hits one replica of the role, drawn from the seed."""
    replicas = {role: int((replicas or {}).get(role, 1)) for role in NODES}
    if not 1 <= applications <= MAX_APPLICATIONS:
        raise InvalidInputError(f"--applications must be between 1 and {MAX_APPLICATIONS}")
    if any(n > 1 for n in replicas.values()) and not database:
        raise InvalidInputError(
            "replicas share their state through PostgreSQL: give --database postgresql://..."
        )
    if not 1 <= clients <= 32:
        raise InvalidInputError("--clients must be between 1 and 32")
    if path not in PATHS:
        raise InvalidInputError(f"--path must be one of {', '.join(PATHS)}")
    if not 1 <= window <= 256:
        raise InvalidInputError("--window must be between 1 and 256")
    unknown = [r for r in kill_order if r not in NODES]
    if unknown:
        raise InvalidInputError(f"--kill: unknown node(s) {', '.join(unknown)}")
    stream = path == "stream"
    mixed = path == "mixed"
    window = window if stream or mixed else 1
    rng = random.Random(seed)
    rows, _ = load_german_credit()
    report = CrashReport(
        applications=applications,
        database="PostgreSQL" if database else "SQLite",
        path=path,
        clients=clients,
        seed=seed,
        replicas=replicas,
    )
    # Unary: each client has one request in flight, so two per client keeps every client busy at
    # a kill. Stream: a full round per client.
    margin = clients * window if stream or mixed else 2 * clients
    points, limits = _schedule(rng, applications, len(kill_order), margin)
    t_start = time.monotonic()
    with TemporaryDirectory(prefix="blindscore-crash-") as tmp:
        net = LocalNetwork(workdir or Path(tmp), key_bits=key_bits, database=database, replicas=replicas)
        with net:
            key_id, platform_address = net.key_id, net.platform_address  # stable across restarts
            apps = [
                Application(
                    application_id=f"crash-{i}",
                    bank_id=net.bank_id,
                    model_id=DEFAULT_MODEL_ID,
                    key_id=key_id,
                    consent_reference="crash-test",
                    features=rows[i % len(rows)],
                    model_version="1",
                )
                for i in range(applications)
            ]
            state = _Run(applications, limits[0] if limits else applications)
            make_submitter = _stream_submitter if stream else partial(_unary_submitter, packed=mixed)

            def client(k: int) -> None:
                streams = stream or (mixed and k % 2 == 1)
                maker = _stream_submitter if streams else partial(_unary_submitter, packed=mixed)
                submit, close = maker(platform_address, net.client_security)
                try:
                    _client_loop(state, apps, submit, window if streams else 1, report)
                except Exception as exc:  # its applications stay unanswered and count as errors
                    with state.cond:
                        report.errors[f"client failed: {type(exc).__name__}"] = 1
                    raise
                finally:
                    close()

            def kill_each() -> None:
                for k, role in enumerate(kill_order):
                    with state.cond:
                        if not state.cond.wait_for(
                            partial(state.reached, points[k]), timeout=KILL_POINT_TIMEOUT_S
                        ):
                            report.errors["kill point not reached"] = 1
                            return
                    time.sleep(rng.uniform(*KILL_DELAY_S))
                    with state.cond:
                        if not state.outstanding and state.limit < applications:
                            # Everything released was answered at once (a burst of receipts, or
                            # "pending" answers while the bureau cannot reach a restarted bank
                            # yet): release another round, so that this kill too cuts work short.
                            state.limit = min(applications, max(state.limit, state.next_index) + margin)
                            state.cond.notify_all()
                            state.cond.wait_for(partial(state.busy), timeout=KILL_POINT_TIMEOUT_S)
                        report.in_flight_at_kill.append(len(state.outstanding))
                        if role in ("bureau", "bank"):
                            # A delivery this kill cuts short may be made again: these may show up
                            # as delivered twice.
                            state.suspects |= state.outstanding | state.pending
                    name = replica_name(role, rng.randrange(replicas[role]))
                    net.kill(name)
                    report.kills.append(name)
                    time.sleep(rng.uniform(*DOWN_TIME_S))
                    net.restart(name)
                    with state.cond:
                        following = limits[k + 1] if k + 1 < len(limits) else applications
                        state.limit = max(state.limit, following)
                        state.cond.notify_all()

            def killer() -> None:
                try:
                    kill_each()
                except Exception as exc:
                    with state.cond:
                        report.errors[f"restart failed: {type(exc).__name__}"] = 1
                        state.abandoned = True
                    raise
                finally:
                    with state.cond:  # also if a restart failed: the clients must not wait forever
                        state.limit = applications
                        state.cond.notify_all()

            kill_thread = threading.Thread(target=killer, daemon=True)
            kill_thread.start()
            workers = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            with state.cond:
                state.cond.notify_all()
            kill_thread.join(timeout=120)

            # "Accepted, pending" is not final: ask again until the bureau says delivered or failed.
            submit, close = make_submitter(platform_address, net.client_security)
            try:
                _settle(state, apps, submit, window if stream else applications, report)
            finally:
                close()

            store = ResultStore.open(database or net.bank_dir / "results.sqlite3")
            try:
                records = store.all()
                deliveries = store.deliveries()
                report.protocol_faults = len(store.faults())
            finally:
                store.close()
        bank_logs = sorted(net.workdir.glob("bank*.log"))  # one per bank replica
        redelivered_other_band = _kept_earlier("".join(f.read_text(errors="replace") for f in bank_logs))
        batches = BatchStore(database or net.bureau_dir / "applications.sqlite3")
        spent: set[str] = set()  # members of batches the bureau failed for good, as spent
        try:
            report.batches = {k: v for k, v in batches.counts().items() if v}
            batch_ids = {a.application_id: batches.batch_of(net.platform_id, a.application_id) for a in apps}
            report.packed_applications = sum(b is not None for b in batch_ids.values())
            packed_ids = {a for a, b in batch_ids.items() if b is not None}
            for batch_id in {b for b in batch_ids.values() if b is not None}:
                stored_batch = batches.get(net.platform_id, batch_id)
                if (
                    stored_batch is not None
                    and stored_batch.state == FAILED
                    and stored_batch.error_code == SPENT_CODE.name
                ):
                    spent.update(stored_batch.application_ids)
        finally:
            batches.close()
        audit = AuditLog(database) if database else AuditLog.in_data_dir(net.bureau_dir)
        try:
            verified = audit.verify()
        finally:
            audit.close()

    _judge(report, state.final, records, deliveries, redelivered_other_band, state.suspects, spent)
    report.duplicated_packed = sorted(set(report.duplicated) & packed_ids)
    if mixed:  # a refusal is allowed only for a member of a batch the bureau failed as spent
        wrongly = sorted(
            f"crash-{i}" for i, a in state.final.items() if a.kind == "refused" and f"crash-{i}" not in spent
        )
        if wrongly:
            report.errors["refused outside a spent batch"] = len(wrongly)
    report.audit_ok, report.audit_records, report.audit_reason = (
        verified.ok,
        verified.records,
        verified.reason,
    )
    report.seconds = time.monotonic() - t_start
    return report


def _judge(
    report: CrashReport,
    final: Mapping[int, _Answer],
    records: Sequence[BandRecord],
    deliveries: Mapping[str, int],
    redelivered_other_band: set[str],
    suspects: set[str],
    spent: Set[str] = frozenset(),
) -> None:
    """Fill in ``report`` from the clients' final answers (by application index), the bank's bands
    and its deliveries per application id, the ids the bank logged as redelivered with another
    band, the ids in flight (or pending) at a bureau or bank kill, and the members of the batches
    the bureau failed for good because their evaluation round was spent."""
    rows, _ = load_german_credit()
    model = default_model()
    if report.path in ("stream", "mixed") and TOLERATE_ALREADY_EXISTS_FOR_SPENT:
        final = dict(final)
        for i, a in final.items():
            if a.kind == "error" and a.code == "ALREADY_EXISTS" and f"crash-{i}" in spent:
                final[i] = _Answer("refused", a.code, a.message)
                report.misreported_refusals.append(f"crash-{i}")
    accepted = {f"crash-{i}" for i, a in final.items() if a.kind == "accepted"}
    refused = {f"crash-{i}" for i, a in final.items() if a.kind == "refused"}
    report.accepted = len(accepted)
    report.refused = dict(Counter(a.code for a in final.values() if a.kind == "refused"))
    reasons = Counter(_reason(a) for a in final.values() if a.kind == "refused")
    report.refusal_reasons = [f"{n} x {reason}" for reason, n in sorted(reasons.items())]
    for a in final.values():
        if a.kind in ("error", "retry"):
            report.errors[a.code] = report.errors.get(a.code, 0) + 1
    unanswered = report.applications - len(final)
    if unanswered:
        report.errors["NO_ANSWER"] = unanswered
    rows_per_id = Counter(r.application_id for r in records)
    stored = set(rows_per_id)
    report.bands_stored = len(records)
    report.extra_band_rows = sorted(a for a, n in rows_per_id.items() if n > 1)
    report.lost = sorted(accepted - stored)
    report.refused_with_band = sorted(refused & stored)
    report.unexpected = sorted(stored - accepted - refused)
    by_id = {f"crash-{i}": i for i in range(report.applications)}
    for r in records:
        row = by_id.get(r.application_id)
        features = rows[row % len(rows)] if row is not None else None
        if features is not None and r.band_label != model.policy.labels[model.band(features)]:
            s = model.linear_score(features)
            if all(abs(s - c) > model.max_abs_error for c in model.score_cutoffs):
                report.wrong_band.append(r.application_id)
    report.deliveries = sum(deliveries.values())
    report.deliveries_per_application = dict(sorted(Counter(deliveries.values()).items()))
    report.duplicated = sorted(a for a, n in deliveries.items() if n > 1)
    report.duplicated_with_different_band = sorted(redelivered_other_band)
    report.duplicated_unexplained = sorted(set(report.duplicated) - suspects)


class _Run:
    """What the clients and the killer share, under one condition variable."""

    def __init__(self, applications: int, limit: int) -> None:
        self.cond = threading.Condition()
        self.applications = applications
        self.next_index = 0
        #: Applications with an index below this may be sent; the rest wait for the next kill.
        self.limit = limit
        self.answered = 0
        self.final: dict[int, _Answer] = {}
        self.outstanding: set[str] = set()
        #: Accepted "pending" so far: the bureau's worker may be delivering them at a kill.
        self.pending: set[str] = set()
        #: Applications in flight or pending at some bureau or bank kill.
        self.suspects: set[str] = set()
        self.abandoned = False

    def reached(self, point: int) -> bool:
        return self.answered >= point

    def busy(self) -> bool:
        """Some application is in flight, or none is left to send."""
        return bool(self.outstanding) or self.next_index >= self.applications

    def take(self, count: int, *, block: bool = True) -> list[int]:
        """Up to ``count`` unsent application indices; with ``block``, waits while the next ones are
        held back. Empty when every application has been handed out (or, without ``block``, when
        the next ones are held back)."""
        with self.cond:
            while True:
                if self.next_index >= self.applications or count < 1:
                    return []
                available = min(self.limit, self.applications) - self.next_index
                if available > 0:
                    taken = list(range(self.next_index, self.next_index + min(count, available)))
                    self.next_index += len(taken)
                    self.outstanding.update(f"crash-{i}" for i in taken)
                    return taken
                if not block:
                    return []
                self.cond.wait(timeout=1.0)

    def finish(self, i: int, answer: _Answer) -> None:
        with self.cond:
            self.final[i] = answer
            self.answered += 1
            self.outstanding.discard(f"crash-{i}")
            if answer.kind == "accepted" and answer.pending:
                self.pending.add(f"crash-{i}")
            self.cond.notify_all()


def _client_loop(
    state: _Run, apps: Sequence[Application], submit: Submit, window: int, report: CrashReport
) -> None:
    """Send rounds of up to ``window`` applications (resubmissions first) until none is left."""
    retry: list[tuple[int, float]] = []
    while True:
        if retry:
            # Never wait for held-back applications while holding resubmissions: the next kill
            # may be waiting for exactly these answers.
            fresh = state.take(window - len(retry), block=False)
        else:
            fresh = state.take(window)
            if not fresh:
                return
        deadline = time.monotonic() + PER_APPLICATION_TIMEOUT_S
        batch = retry + [(i, deadline) for i in fresh]
        retry = []
        answers = submit([apps[i] for i, _ in batch])
        for i, until in batch:
            answer = answers[apps[i].application_id]
            if answer.kind == "retry" and time.monotonic() < until and not state.abandoned:
                retry.append((i, until))
                continue
            if answer.kind == "accepted" and answer.pending:
                with state.cond:
                    report.pending_at_acceptance += 1
            state.finish(i, answer)
        if retry:
            with state.cond:
                report.resubmissions += len(retry)
            time.sleep(RETRY_PAUSE_S)


def _settle(
    state: _Run, apps: Sequence[Application], submit: Submit, window: int, report: CrashReport
) -> None:
    """Ask again about every application answered "accepted, pending" until the answer is final."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    waiting = sorted(i for i, a in state.final.items() if a.kind == "accepted" and a.pending)
    while waiting and time.monotonic() < deadline:
        still: list[int] = []
        for start in range(0, len(waiting), window):
            chunk = waiting[start : start + window]
            answers = submit([apps[i] for i in chunk])
            for i in chunk:
                answer = answers[apps[i].application_id]
                report.resubmissions += 1
                if answer.kind == "retry" or (answer.kind == "accepted" and answer.pending):
                    still.append(i)
                else:
                    state.final[i] = answer
        waiting = still
        if waiting:
            time.sleep(0.5)
    for i in waiting:  # accepted and still not delivered: a lost application unless it reaches the bank
        state.final[i] = _Answer("accepted", pending=True)


def _reason(answer: _Answer) -> str:
    """A refusal's code and message with the ids it quotes left out, so that refusals group."""
    message = re.sub(r"'[^']*'", "'…'", answer.message)
    return f"{answer.code}: {message[:160]}"


def _kept_earlier(log_text: str) -> set[str]:
    """Application ids the bank logged as delivered again with a band other than the one it kept."""
    out: set[str] = set()
    for line in log_text.splitlines():
        if KEPT_EARLIER in line:
            out.update(re.findall(r"crash-\d+", line))
            if not re.search(r"crash-\d+", line):
                out.add(f"<unnamed: {line[-80:]}>")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/crash.py", description=__doc__.splitlines()[0])
    p.add_argument("--applications", type=int, default=1000)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--database", help="postgresql:// URL for all three nodes (default: SQLite files)")
    p.add_argument("--kill", default="bureau,bank,platform", help="nodes to kill -9, in order")
    p.add_argument("--seed", type=int, help="random seed for the kill schedule")
    p.add_argument("--key-bits", type=int, default=2048)
    p.add_argument(
        "--path",
        choices=PATHS,
        default="unary",
        help="unary ScoreApplication calls, ScoreApplications streams (packed batches), or both "
        "(mixed: half the clients each)",
    )
    p.add_argument(
        "--window", type=int, default=DEFAULT_WINDOW, help="applications per stream round (--path stream)"
    )
    p.add_argument("--bureaus", type=int, default=1, help="bureau replicas (more than one: --database)")
    p.add_argument("--banks", type=int, default=1, help="bank replicas (more than one: --database)")
    p.add_argument("--platforms", type=int, default=1, help="platform replicas (more than one: --database)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        report = run_crash(
            applications=args.applications,
            clients=args.clients,
            database=args.database,
            kill_order=tuple(x for x in args.kill.split(",") if x),
            seed=args.seed,
            key_bits=args.key_bits,
            path=args.path,
            window=args.window,
            replicas={"bureau": args.bureaus, "bank": args.banks, "platform": args.platforms},
        )
    except InvalidInputError as exc:
        print(f"crash: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({**asdict(report), "ok": report.ok}) if args.json else report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
