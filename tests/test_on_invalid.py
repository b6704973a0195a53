"""--on-invalid {stop,skip} and --rejects: an invalid row stops a run, or goes to a rejects file."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import blindscore
from blindscore.app.cli import main
from blindscore.app.client import Client
from blindscore.data.german import DEFAULT_MODEL_ID, default_model, load_german_credit
from blindscore.errors import InvalidInputError

from support import Nodes as Net
from support import NodesFactory

ROWS = 12
#: Row number (1-based) -> (column, bad value, what the reason must say). One of each kind of problem.
BROKEN = {
    3: ("age_in_years", "", "missing"),
    5: ("purpose", "space travel", "unseen category 'space travel'"),
    8: ("duration_in_month", "999", "outside the declared range"),
    10: ("credit_amount", "lots", "expected a number, got the string 'lots'"),
}


def applicants(n: int = ROWS, broken: dict[int, tuple[str, str, str]] = BROKEN) -> list[dict[str, Any]]:
    rows, _ = load_german_credit()
    out = []
    for i in range(n):
        row = {"customer": f"cust-{i + 1}", **{k: str(v) for k, v in rows[i].items()}}
        if i + 1 in broken:
            column, value, _ = broken[i + 1]
            row[column] = value
        out.append(row)
    return out


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def names_the_problem(reason: str, column: str, problem: str) -> bool:
    """``reason`` names the column and the problem. A missing value sent over the wire reaches the
    platform as NaN, which its encoding refuses as "expected a finite number, got nan"."""
    if problem == "missing" and "got nan" in reason:
        problem = "got nan"
    return reason.startswith(f"column {column!r}: ") and problem in reason


def check_rejects(rejects: list[dict[str, str]], given: list[dict[str, Any]], id_column: str) -> None:
    """Exactly the broken rows, in input order, with their cells as given and a reason naming the
    column and the problem; no valid row among them (the negative control)."""
    want_ids = [given[n - 1][id_column] for n in sorted(BROKEN)]
    assert [r[id_column] for r in rejects] == want_ids
    for r, n in zip(rejects, sorted(BROKEN), strict=True):
        column, value, problem = BROKEN[n]
        assert {k: v for k, v in r.items() if k != "reason"} == {k: str(v) for k, v in given[n - 1].items()}
        assert r[column] == value
        assert names_the_problem(r["reason"], column, problem), r["reason"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "german.json"
    default_model().save(path)
    return path


def run_score(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blindscore", "score", *args],
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )


# ---------------------------------------------------------------------- blindscore score


@pytest.mark.slow
def test_score_skip_scores_the_valid_rows_and_rejects_the_others(model_file: Path, tmp_path: Path) -> None:
    given = applicants()
    source = write_csv(tmp_path / "in.csv", given)
    out, rejects = tmp_path / "bands.csv", tmp_path / "rejects.csv"
    result = run_score(
        "--model", str(model_file), "--input", str(source), "--output", str(out), "--id-column", "customer",
        "--on-invalid", "skip", "--rejects", str(rejects),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"wrote {ROWS - len(BROKEN)} bands" in result.stderr
    assert f"skipped {len(BROKEN)} invalid rows, written to {rejects}" in result.stderr
    bands = read_csv(out)
    rejected = read_csv(rejects)
    check_rejects(rejected, given, "customer")
    valid = [row for n, row in enumerate(given, 1) if n not in BROKEN]
    assert [b["application_id"] for b in bands] == [row["customer"] for row in valid]
    # Every input row is scored or rejected, never both, never neither.
    scored_ids = {b["application_id"] for b in bands}
    assert len(bands) + len(rejected) == ROWS and scored_ids.isdisjoint(r["customer"] for r in rejected)
    # The bands are the model's (the protocol ran on the valid rows only).
    model = default_model()
    features = [{k: v for k, v in row.items() if k != "customer"} for row in valid]
    plain = [model.policy.labels[model.band(row)] for row in features]
    assert [b["band_label"] for b in bands] == plain


def test_score_stops_at_the_first_invalid_row_by_default(model_file: Path, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", applicants())
    out = tmp_path / "bands.csv"
    result = run_score("--model", str(model_file), "--input", str(source), "--output", str(out))
    assert result.returncode == 2
    assert "row 3 (row-3): feature 'age_in_years'" in result.stderr and "missing" in result.stderr
    assert result.stderr.count("\n") <= 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]  # nothing written


def test_score_skip_with_no_valid_row_writes_both_files_and_exits_1(model_file: Path, tmp_path: Path) -> None:
    broken = {1: ("age_in_years", "", "missing"), 2: ("purpose", "x", "unseen category 'x'")}
    given = applicants(2, broken)
    source = write_csv(tmp_path / "in.csv", given)
    out, rejects = tmp_path / "bands.csv", tmp_path / "rejects.csv"
    result = run_score(
        "--model", str(model_file), "--input", str(source), "--output", str(out),
        "--on-invalid", "skip", "--rejects", str(rejects),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "no row was valid" in result.stderr
    assert out.read_text() == "application_id,band,band_label\n"
    reasons = [r["reason"].split(":")[0] for r in read_csv(rejects)]
    assert reasons == ["column 'age_in_years'", "column 'purpose'"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--on-invalid", "skip"], "--on-invalid skip needs --rejects FILE"),
        (["--rejects", "REJECTS"], "--rejects is for --on-invalid skip"),
        (["--on-invalid", "skip", "--rejects", "INPUT"], "is also the --input"),
        (["--on-invalid", "skip", "--rejects", "OUTPUT"], "is also the --output"),
    ],
)
def test_score_policy_flags_that_cannot_work_are_refused(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    source = write_csv(tmp_path / "in.csv", applicants(2, {}))
    before = source.read_text()
    names = {"REJECTS": str(tmp_path / "r.csv"), "INPUT": str(source), "OUTPUT": str(tmp_path / "o.csv")}
    argv = ["score", "--model", str(model_file), "--input", str(source), "--output", str(tmp_path / "o.csv")]
    assert main([*argv, *(names.get(f, f) for f in flags)]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"] and source.read_text() == before
    with pytest.raises(SystemExit, match=r"^2$"):
        main([*argv, "--on-invalid", "drop"])
    assert "invalid choice: 'drop'" in capsys.readouterr().err


# ---------------------------------------------------------------------- the Python API


@pytest.mark.slow
def test_api_score_skip_returns_the_valid_rows(model_file: Path, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    given = applicants(8, {k: v for k, v in BROKEN.items() if k <= 8})
    frame = pd.DataFrame(given)
    with pytest.raises(InvalidInputError, match=r"row 3 \(cust-3\): feature 'age_in_years'"):
        blindscore.score(frame, model_file, id_column="customer")
    rejects = tmp_path / "rejects.csv"
    with pytest.raises(InvalidInputError, match="on_invalid skip needs rejects FILE"):
        blindscore.score(frame, model_file, id_column="customer", on_invalid="skip")
    bands = blindscore.score(frame, model_file, id_column="customer", on_invalid="skip", rejects=rejects)
    rejected = read_csv(rejects)
    assert list(bands["application_id"]) == ["cust-1", "cust-2", "cust-4", "cust-6", "cust-7"]
    assert [r["customer"] for r in rejected] == ["cust-3", "cust-5", "cust-8"]
    assert len(bands) + len(rejected) == len(given)
    assert rejected[0]["age_in_years"] == "" and rejected[0]["reason"].startswith("column 'age_in_years'")


# ---------------------------------------------------------------------- submit to running nodes


@pytest.fixture(scope="module")
def net(module_nodes: NodesFactory) -> Net:
    parties = [("platform-client", "app-1", "platform-a")]
    return module_nodes(
        "rejects", bank_id="bank-a", platform_id="platform-a", tls=True, extra_parties=parties
    )


def submit_rows(prefix: str) -> list[dict[str, Any]]:
    given = applicants()
    for row in given:
        row["application_id"] = row.pop("customer").replace("cust", prefix)
    return given


def test_client_submit_skip_moves_the_platforms_refusals_to_rejects(net: Net, tmp_path: Path) -> None:
    given = submit_rows("api")
    given[0]["consent_reference"] = ""  # refused before sending: a row the client cannot send
    rejects = tmp_path / "rejects.csv"
    with Client(
        net.platform,
        certs=net.directory / "pki",
        client_id="app-1",
        bank_id="bank-a",
        key_id=net.key_id,
        model_id=DEFAULT_MODEL_ID,
    ) as client:
        for row in given[1:]:
            row["consent_reference"] = "c-1"
            row.update({k: None for k, v in row.items() if v == ""})  # a missing value
        outcomes = client.submit(given, on_invalid="skip", rejects=rejects)
    rejected = read_csv(rejects)
    assert [r["application_id"] for r in rejected] == ["api-1", "api-3", "api-5", "api-8", "api-10"]
    assert "no consent reference" in rejected[0]["reason"]
    for r in rejected[1:]:
        column, _, problem = BROKEN[int(r["application_id"].split("-")[1])]
        assert names_the_problem(r["reason"], column, problem), r["reason"]
    accepted = [o.application_id for o in outcomes if o.status == "accepted"]
    assert accepted == [row["application_id"] for n, row in enumerate(given, 1) if n not in {1, *BROKEN}]
    assert len(outcomes) + len(rejected) == ROWS
    assert {o.application_id for o in outcomes}.isdisjoint(r["application_id"] for r in rejected)
    for app_id in accepted:  # the band is at the bank
        assert net.bank_node.store.get(app_id) is not None


def test_submit_command_stop_and_skip(net: Net, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_csv(tmp_path / "in.csv", submit_rows("cli"))
    pki = str(net.directory / "pki")
    base = ["submit", "--platform", net.platform, "--input", str(source), "--certs", pki,
            "--client-id", "app-1", "--bank-id", "bank-a", "--key-id", net.key_id,
            "--model-id", DEFAULT_MODEL_ID, "--consent", "c-1"]  # fmt: skip
    # stop (the default): the platform refuses each invalid row; they are reported refused, exit 1.
    assert main(base) == 1
    out = capsys.readouterr()
    assert f"{ROWS - len(BROKEN)} accepted, 0 pending, {len(BROKEN)} refused" in out.err
    assert main([*base, "--on-invalid", "skip"]) == 2
    assert "--on-invalid skip needs --rejects FILE" in capsys.readouterr().err
    # skip: the same rows (resubmitted: the valid ones get their stored outcomes) land in the rejects.
    rejects = tmp_path / "rejects.csv"
    assert main([*base, "--on-invalid", "skip", "--rejects", str(rejects)]) == 0
    out = capsys.readouterr()
    assert f"{ROWS - len(BROKEN)} accepted, 0 pending, 0 refused, {len(BROKEN)} skipped as invalid" in out.err
    lines = out.out.splitlines()[1:]
    rejected = read_csv(rejects)
    check_rejects(rejected, submit_rows("cli"), "application_id")
    assert len(lines) + len(rejected) == ROWS
