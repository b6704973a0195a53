"""CI-sized crash runs (scripts/crash.py): kill -9 each node mid-run, restart it, nothing lost or doubled."""

from __future__ import annotations

import pytest

from blindscore.crashtest import main, run_crash


@pytest.mark.slow
def test_kill_each_node_on_sqlite() -> None:
    report = run_crash(applications=40, clients=3, seed=11)
    assert report.kills == ["bureau", "bank", "platform"]
    assert report.ok, report.format()
    assert report.accepted == 40 and report.bands_stored == 40 and report.resubmissions > 0


@pytest.mark.slow
@pytest.mark.postgresql
def test_kill_each_node_on_postgresql(pg_schema_url: str) -> None:
    report = run_crash(applications=40, clients=3, seed=12, database=pg_schema_url)
    assert report.kills == ["bureau", "bank", "platform"]
    assert report.ok, report.format()
    assert report.database == "PostgreSQL" and report.bands_stored == 40


def test_arguments_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--applications", "0"]) == 2
    assert "--applications" in capsys.readouterr().err
    assert main(["--kill", "bureau,printer"]) == 2
    assert "printer" in capsys.readouterr().err
