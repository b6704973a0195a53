"""CI-sized crash runs (scripts/crash.py): kill -9 each node while applications (unary) or packed
batches (streamed) are in flight, restart it; nothing lost, nothing delivered twice with another band.

The kill schedule is drawn from a fixed seed, but where a kill lands inside a request depends on
timing. So the unary runs do not assert "no application delivered twice": a kill of the bureau or
the bank between the bank's commit of a delivery and the bureau's record of it makes the bureau
deliver the same [band] ciphertext again, which is correct and which a run may or may not hit.
They assert what must hold however the kill lands: every duplicate belongs to an application in
flight (or pending at the bureau) at a bureau or bank kill, none carried another band, and no
application was delivered more often than there were such kills plus one. On the packed path a
batch's evaluation round is sent once, so there no duplicate is allowed at all; what a kill may
cause there is a refusal (FAILED_PRECONDITION) the client sees, counted apart from lost ones.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from blindscore.bank_node.store import BandRecord, Completion, ResultStore, RunLimits
from scripts.crash import (
    SPENT_MARKER,
    CrashReport,
    _Answer,
    _answer_for,
    _judge,
    _kept_earlier,
    _schedule,
    main,
    run_crash,
)

KILLS = ["bureau", "bank", "platform"]
#: The CI-sized cluster: the issue's 3 bureau, 2 bank and 2 platform processes.
CLUSTER = {"bureau": 3, "bank": 2, "platform": 2}
CLIENTS = 3
UNARY_APPLICATIONS = 40
# Enough for several packed batches in flight at each kill: 3 clients x 21-application rounds.
STREAM_APPLICATIONS = 300


def _check_unary(report: CrashReport) -> None:
    assert report.kills == KILLS
    assert all(n > 0 for n in report.in_flight_at_kill), report.format()  # each kill cut requests short
    assert report.ok, report.format()
    assert report.accepted == UNARY_APPLICATIONS and report.refused == {}
    assert report.bands_stored == UNARY_APPLICATIONS and report.resubmissions > 0
    assert report.packed_applications == 0
    assert report.lost == [] and report.unexpected == [] and report.wrong_band == []
    # Duplicates: only of applications a bureau or bank kill cut short, never with another band,
    # at most one extra delivery per such kill (two of them here).
    assert report.duplicated_with_different_band == [] and report.duplicated_unexplained == []
    assert set(report.deliveries_per_application) <= {1, 2, 3}, report.format()
    assert sum(report.deliveries_per_application.values()) == UNARY_APPLICATIONS
    assert report.protocol_faults == 0 and report.audit_ok


def _check_stream(report: CrashReport) -> None:
    assert report.kills == KILLS
    assert all(n > 0 for n in report.in_flight_at_kill), report.format()
    assert report.ok, report.format()
    n = STREAM_APPLICATIONS
    refused = sum(report.refused.values())
    assert report.accepted + refused == n
    # Refusals: FAILED_PRECONDITION for a spent batch; ALREADY_EXISTS only for members of a batch the
    # bureau failed as spent (the platform's known misreport, see TOLERATE_ALREADY_EXISTS_FOR_SPENT).
    assert set(report.refused) <= {"FAILED_PRECONDITION", "ALREADY_EXISTS"}
    assert report.refused.get("ALREADY_EXISTS", 0) == len(report.misreported_refusals)
    # Every refusal that is not such a misreport names the spent evaluation round.
    assert refused == len(report.misreported_refusals) or any(
        SPENT_MARKER in reason for reason in report.refusal_reasons
    ), report.format()
    # Nearly every application went in a packed batch (a kill can leave a few members of a batch the
    # bureau never accepted to be resent alone), and batches did hold several.
    assert report.packed_applications >= 0.9 * n and sum(report.batches.values()) < n / 2, report.format()
    # The client saw a refusal exactly when the bureau failed a batch for good.
    assert bool(refused) == bool(report.batches.get("failed")), report.format()
    assert report.lost == [] and report.unexpected == [] and report.wrong_band == []
    assert report.bands_stored == report.accepted + len(report.refused_with_band)
    # A batch's evaluation round is sent once: no application is delivered twice.
    assert report.duplicated == [] and set(report.deliveries_per_application) <= {0, 1}
    assert report.deliveries_per_application.get(1, 0) == report.bands_stored
    assert report.protocol_faults == 0 and report.audit_ok


@pytest.mark.slow
def test_kill_each_node_unary_on_sqlite() -> None:
    _check_unary(run_crash(applications=UNARY_APPLICATIONS, clients=CLIENTS, seed=11))


@pytest.mark.slow
def test_kill_each_node_streamed_on_sqlite() -> None:
    report = run_crash(applications=STREAM_APPLICATIONS, clients=CLIENTS, seed=11, path="stream")
    _check_stream(report)


@pytest.mark.slow
@pytest.mark.postgresql
def test_kill_each_node_unary_on_postgresql(pg_schema_url: str) -> None:
    report = run_crash(applications=UNARY_APPLICATIONS, clients=CLIENTS, seed=12, database=pg_schema_url)
    assert report.database == "PostgreSQL"
    _check_unary(report)


@pytest.mark.slow
@pytest.mark.postgresql
def test_kill_each_node_streamed_on_postgresql(pg_schema_url: str) -> None:
    report = run_crash(
        applications=STREAM_APPLICATIONS, clients=CLIENTS, seed=12, database=pg_schema_url, path="stream"
    )
    assert report.database == "PostgreSQL"
    _check_stream(report)


@pytest.mark.slow
@pytest.mark.postgresql
def test_a_cluster_of_replicas_with_kills_on_postgresql(pg_schema_url: str) -> None:
    """The cluster harness (scripts/cluster.py) at CI size: 3 bureau, 2 bank and 2 platform
    processes on one PostgreSQL, half the clients unary and half streaming over the platforms'
    address list, a replica of each role killed -9 and restarted: nothing lost, nothing wrong, no
    packed application delivered twice, every duplicate explained by a kill, the chain intact."""
    report = run_crash(
        applications=120,
        clients=4,
        seed=13,
        database=pg_schema_url,
        path="mixed",
        kill_order=("bureau", "bank", "platform", "bureau"),
        replicas=CLUSTER,
    )
    assert report.replicas == CLUSTER and len(report.kills) == 4, report.format()
    assert report.ok, report.format()
    assert report.lost == [] and report.wrong_band == [] and report.duplicated_packed == []
    assert report.duplicated_unexplained == [] and report.duplicated_with_different_band == []
    assert 0 < report.packed_applications < report.applications  # both paths were exercised
    assert report.audit_ok and report.protocol_faults == 0


def test_arguments_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--bureaus", "2"]) == 2
    assert "replicas share their state through PostgreSQL" in capsys.readouterr().err
    assert main(["--applications", "0"]) == 2
    assert "--applications" in capsys.readouterr().err
    assert main(["--kill", "bureau,printer"]) == 2
    assert "printer" in capsys.readouterr().err
    assert main(["--path", "stream", "--window", "0"]) == 2
    assert "--window" in capsys.readouterr().err
    with pytest.raises(SystemExit, match=r"^2$"):
        main(["--path", "carrier-pigeon"])


# ---------------------------------------------------------------------- the checks themselves


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize(("applications", "margin"), [(240, 63), (40, 6), (1000, 128)])
def test_schedule_leaves_work_in_flight_at_every_kill(seed: int, applications: int, margin: int) -> None:
    points, limits = _schedule(random.Random(seed), applications, 3, margin)
    assert points == sorted(points) and len(points) == 3
    used = min(margin, (applications - 3) // 4)  # the margin shrinks when the run is too small for it
    for k, (point, limit) in enumerate(zip(points, limits, strict=True)):
        # A kill point is reached only with applications released after the previous kill...
        assert k == 0 or point > limits[k - 1]
        # ...and the whole margin is still unanswered when it is.
        assert limit - point == used
    # A round is left after the last phase, for a kill that found nothing in flight to release.
    assert limits[-1] <= applications - used
    assert _schedule(random.Random(seed), applications, 3, margin) == (points, limits)


def test_schedule_shrinks_the_margin_for_small_runs() -> None:
    points, limits = _schedule(random.Random(1), 10, 3, 63)
    assert all(1 <= p < lim <= 10 for p, lim in zip(points, limits, strict=True))
    assert _schedule(random.Random(1), 5, 0, 6) == ([], [])


def test_only_a_spent_batch_may_be_refused_and_only_when_packed() -> None:
    import grpc

    spent = f"bureau: batch 'b-1': its {SPENT_MARKER} was sent to the bank before and not confirmed"
    assert _answer_for(grpc.StatusCode.FAILED_PRECONDITION, spent, packed=True).kind == "refused"
    assert _answer_for(grpc.StatusCode.FAILED_PRECONDITION, spent, packed=False).kind == "error"
    runs = "application 'x' has had its 3 runs of the band protocol at this bank"
    assert _answer_for(grpc.StatusCode.FAILED_PRECONDITION, runs, packed=True).kind == "error"
    assert _answer_for(grpc.StatusCode.UNAVAILABLE, "", packed=True).kind == "retry"
    assert _answer_for(grpc.StatusCode.INVALID_ARGUMENT, "", packed=True).kind == "error"


def _band(i: int) -> BandRecord:
    """The plaintext model's band for German credit row i, as the bank would store it."""
    from blindscore.data.german import default_model, load_german_credit

    rows, _ = load_german_credit()
    model = default_model()
    band = model.band(rows[i])
    return BandRecord(f"crash-{i}", "german-credit-lr", "pk-0", band, model.policy.labels[band], 1.0)


def _judged(path: str, deliveries: dict[str, int], suspects: set[str], other: set[str]) -> CrashReport:
    report = CrashReport(applications=3, database="SQLite", path=path, audit_ok=True)
    final = {i: _Answer("accepted") for i in range(3)}
    _judge(report, final, [_band(i) for i in range(3)], deliveries, other, suspects)
    return report


def test_a_redelivery_after_a_kill_is_reported_and_allowed_on_the_unary_path() -> None:
    report = _judged("unary", {"crash-0": 2, "crash-1": 1, "crash-2": 1}, {"crash-0"}, set())
    assert report.duplicated == ["crash-0"] and report.duplicated_unexplained == []
    assert report.deliveries == 4 and report.deliveries_per_application == {1: 2, 2: 1}
    assert report.ok, report.format()
    assert "delivered more than once 1 ['crash-0']" in report.format()


def test_a_duplicate_no_kill_explains_fails() -> None:
    report = _judged("unary", {"crash-0": 1, "crash-1": 2, "crash-2": 1}, {"crash-0"}, set())
    assert report.duplicated_unexplained == ["crash-1"] and not report.ok


def test_a_redelivery_with_another_band_fails() -> None:
    report = _judged("unary", {"crash-0": 2, "crash-1": 1, "crash-2": 1}, {"crash-0"}, {"crash-0"})
    assert report.duplicated_with_different_band == ["crash-0"] and not report.ok


def test_any_duplicate_fails_the_packed_path() -> None:
    report = _judged("stream", {"crash-0": 2, "crash-1": 1, "crash-2": 1}, {"crash-0"}, set())
    assert report.duplicated == ["crash-0"] and not report.ok


def test_lost_refused_and_unexpected_are_told_apart() -> None:
    report = CrashReport(applications=4, database="SQLite", path="stream", audit_ok=True)
    final = {
        0: _Answer("accepted"),  # band stored: fine
        1: _Answer("accepted"),  # no band: lost
        2: _Answer("refused", "FAILED_PRECONDITION", SPENT_MARKER),  # band stored anyway: allowed
        3: _Answer("refused", "FAILED_PRECONDITION", SPENT_MARKER),  # no band: allowed
    }
    records = [_band(0), _band(2)]
    _judge(report, final, records, {"crash-0": 1, "crash-2": 1, "crash-3": 0}, set(), set())
    assert report.lost == ["crash-1"] and report.refused == {"FAILED_PRECONDITION": 2}
    assert report.refused_with_band == ["crash-2"] and report.unexpected == []
    assert not report.ok
    final[1] = _Answer("refused", "FAILED_PRECONDITION", SPENT_MARKER)
    report = CrashReport(applications=4, database="SQLite", path="stream", audit_ok=True)
    _judge(report, final, [*records, _band(1)], {"crash-0": 1, "crash-1": 1, "crash-2": 1}, set(), set())
    assert report.lost == [] and report.ok, report.format()
    report = CrashReport(applications=4, database="SQLite", path="stream", audit_ok=True)
    _judge(report, {0: final[0]}, records, {}, set(), set())
    assert report.unexpected == ["crash-2"] and report.errors == {"NO_ANSWER": 3} and not report.ok


def test_already_exists_counts_as_a_refusal_only_for_a_spent_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    from scripts import crash

    monkeypatch.setattr(crash, "TOLERATE_ALREADY_EXISTS_FOR_SPENT", True)
    taken = "bureau: application 'crash-1' of platform 'p' was already submitted; a new one needs a new id"
    final = {
        0: _Answer("refused", "FAILED_PRECONDITION", SPENT_MARKER),
        1: _Answer("error", "ALREADY_EXISTS", taken),
    }
    report = CrashReport(applications=2, database="SQLite", path="stream", audit_ok=True)
    _judge(report, final, [], {}, set(), set(), {"crash-0", "crash-1"})
    assert report.refused == {"FAILED_PRECONDITION": 1, "ALREADY_EXISTS": 1}
    assert report.misreported_refusals == ["crash-1"] and report.ok, report.format()
    assert report.refusal_reasons == [
        "1 x ALREADY_EXISTS: bureau: application '…' of platform '…' was already submitted; a new one "
        "needs a new id",
        f"1 x FAILED_PRECONDITION: {SPENT_MARKER}",
    ]
    report = CrashReport(applications=2, database="SQLite", path="stream", audit_ok=True)
    _judge(report, final, [], {}, set(), set(), {"crash-0"})  # crash-1's batch was not spent
    assert report.errors == {"ALREADY_EXISTS": 1} and not report.ok


def test_a_band_other_than_the_plaintext_one_fails() -> None:
    from blindscore.data.german import default_model, load_german_credit

    rows, _ = load_german_credit()
    model = default_model()
    # A row whose score is clear of every cutoff, so no band but the plaintext one is acceptable.
    i = next(
        i
        for i, row in enumerate(rows)
        if all(abs(model.linear_score(row) - c) > model.max_abs_error for c in model.score_cutoffs)
    )
    good = _band(i)
    other = (good.band + 1) % len(model.policy.labels)
    bad = BandRecord(good.application_id, good.model_id, good.key_id, other, model.policy.labels[other], 1.0)
    report = CrashReport(applications=i + 1, database="SQLite", audit_ok=True)
    final = {j: _Answer("accepted") for j in range(i + 1)}
    _judge(report, final, [*(_band(j) for j in range(i)), bad], {}, set(), set())
    assert report.wrong_band == [good.application_id] and not report.ok


def test_the_bank_log_names_redeliveries_with_another_band() -> None:
    log = "\n".join(
        [
            "2025-01-01 bank_node.flow WARNING kept the earlier band of application"
            " 'crash-7' delivered again",
            "2025-01-01 bank_node.flow WARNING kept the earlier band of 2 application(s) delivered again: "
            "['crash-8', 'crash-9']",
            "2025-01-01 bank_node.flow WARNING something else about crash-10",
        ]
    )
    assert _kept_earlier(log) == {"crash-7", "crash-8", "crash-9"}


def test_the_bank_counts_a_redelivery(tmp_path: Path) -> None:
    """The signal the crash tool reads: a second completed delivery of one application counts 2,
    while the bank keeps one band."""
    store = ResultStore(tmp_path / "bank.sqlite3")
    try:
        limits = RunLimits()
        store.begin_runs("bureau-1", ["crash-0", "crash-1"], ["", ""], limits)
        store.complete("bureau-1", [Completion(_band(0)), Completion(_band(1))], limits)
        store.complete("bureau-1", [Completion(_band(0))], limits)  # the bureau never heard back
        assert store.deliveries() == {"crash-0": 2, "crash-1": 1}
        assert sorted(r.application_id for r in store.all()) == ["crash-0", "crash-1"]
    finally:
        store.close()
