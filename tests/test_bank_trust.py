"""The bank's run limits, fault records and bureau suspensions: the store on both backends, the CLI."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from blindscore.app.cli import main
from blindscore.bank_node.store import BandRecord, Completion, ResultStore, RunLimits
from blindscore.errors import InvalidInputError, PermissionDeniedError, PreconditionError

LIMITS = RunLimits(max_runs=2, max_faults=2)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def record(app_id: str, band: int = 1) -> BandRecord:
    return BandRecord(app_id, "m", "k", band, "ABC"[band], 0.0)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ResultStore:
    if request.param == "postgresql":
        request.applymarker(pytest.mark.postgresql)
        target: Path | str = request.getfixturevalue("pg_schema_url")
    else:
        target = tmp_path / "bank" / "results.sqlite3"
    s = ResultStore(target)
    request.addfinalizer(s.close)
    return s


def test_runs_are_counted_per_bureau_and_refused_past_the_limit(store: ResultStore) -> None:
    store.begin_runs("bureau-1", ["a"], [""], LIMITS)
    store.begin_runs("bureau-1", ["a"], [""], LIMITS)
    with pytest.raises(PreconditionError, match="had its 2 runs"):
        store.begin_runs("bureau-1", ["a"], [""], LIMITS)
    assert store.runs("bureau-1", "a") == (2, False, "")
    # Another bureau's runs of the same id are its own; a refused batch counts for none of its members.
    store.begin_runs("bureau-2", ["a"], [""], LIMITS)
    with pytest.raises(PreconditionError, match="'a'"):
        store.begin_runs("bureau-1", ["b", "a"], ["", ""], LIMITS)
    assert store.runs("bureau-1", "b") is None


def test_a_fault_stores_no_band_and_counts_against_the_bureau(store: ResultStore) -> None:
    store.begin_runs("bureau-1", ["a", "b", "c"], ["", "slot_guard", ""], LIMITS)
    done = store.complete(
        "bureau-1",
        [Completion(record("a")), Completion(record("b")), Completion(record("c"), "garbled_output")],
        LIMITS,
    )
    assert (done.new, done.kept) == (3, [])
    assert [r.application_id for r in store.all()] == ["a"]
    assert done.held == [store.get("a"), None, None]  # the band held afterwards, as stored
    assert store.runs("bureau-1", "b") == (1, True, "faulted")
    assert store.runs("bureau-1", "c") == (1, True, "faulted")
    assert sorted((f.application_id, f.reason) for f in store.faults()) == [
        ("b", "slot_guard"),
        ("c", "garbled_output"),
    ]
    (standing,) = store.standing()
    assert (standing.bureau_id, standing.faults, standing.suspended) == ("bureau-1", 2, True)
    # Suspended: no new run, whatever it is; completing a run already answered is still recorded.
    with pytest.raises(PermissionDeniedError, match="bank trust reset"):
        store.begin_runs("bureau-1", ["d"], [""], LIMITS)
    assert store.reset_standing("bureau-1") and not store.reset_standing("bureau-9")
    store.begin_runs("bureau-1", ["d"], [""], LIMITS)


def test_completion_answers_depend_on_ids_not_on_faults(store: ResultStore) -> None:
    """A second run's completion reports 0 new whether the first run faulted or not, and a band
    that differs from the stored one is kept out (the first band stays)."""
    for app_id, fault in (("clean", ""), ("bad", "band_range")):
        store.begin_runs("b", [app_id], [""], LIMITS)
        done = store.complete("b", [Completion(record(app_id), fault)], LIMITS)
        assert (done.new, done.kept) == (1, [])
        store.begin_runs("b", [app_id], [""], LIMITS)
        again = store.complete("b", [Completion(record(app_id, 2))], LIMITS)
        assert again.new == 0
        assert again.kept == (["clean"] if app_id == "clean" else [])
        assert again.held == done.held  # the first band stays held (none after a fault)
    clean = store.get("clean")
    assert clean is not None and clean.band == 1
    assert store.get("bad") is None  # faulted once: no band, ever
    with pytest.raises(PreconditionError, match="no run"):
        store.complete("b", [Completion(record("never"))], LIMITS)


def test_run_limits_are_validated() -> None:
    for bad in (0, -1, 1001, 2.5, True):
        with pytest.raises(
            InvalidInputError, match=rf"^max_runs must be an integer in 1\.\.1000, got {bad}$"
        ):
            RunLimits(max_runs=bad)  # type: ignore[arg-type]
        with pytest.raises(
            InvalidInputError, match=rf"^max_faults must be an integer in 1\.\.1000, got {bad}$"
        ):
            RunLimits(max_faults=bad)  # type: ignore[arg-type]


def test_trust_cli_shows_and_resets(tmp_path: Path) -> None:
    data = tmp_path / "bank"
    store = ResultStore(data / "results.sqlite3")
    store.begin_runs("bureau-x", ["a1", "a2"], ["masked_range", "masked_range"], LIMITS)
    store.close()
    code, out, _ = run_cli(["bank", "trust", "show", "--data-dir", str(data)])
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0] == "bureau_id,faults,suspended,updated_at"
    assert lines[1].startswith("bureau-x,2,yes,")
    code, out, _ = run_cli(["bank", "trust", "show", "--faults", "--data-dir", str(data)])
    assert code == 0 and out.count("masked_range") == 2 and ",a1," in out and ",a2," in out
    code, out, _ = run_cli(["bank", "trust", "reset", "bureau-x", "--data-dir", str(data)])
    assert code == 0 and "faults cleared" in out
    code, out, _ = run_cli(["bank", "trust", "show", "--data-dir", str(data)])
    assert out.strip().splitlines()[1].startswith("bureau-x,0,no,")
    code, _, err = run_cli(["bank", "trust", "reset", "bureau-y", "--data-dir", str(data)])
    assert code != 0 and "no record of bureau 'bureau-y'" in err
    code, _, err = run_cli(["bank", "trust", "show", "--data-dir", str(tmp_path / "nowhere")])
    assert code != 0 and "no results database" in err


def test_serve_refuses_bad_limits(tmp_path: Path) -> None:
    code, _, err = run_cli(
        ["bank", "serve", "--insecure", "--data-dir", str(tmp_path), "--bureau", "", "--max-runs", "0"]
    )
    assert code != 0 and "--max-runs" in err
