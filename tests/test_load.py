"""CI-sized run of the load test (scripts/load.py): concurrent clients, no errors, a full report."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from scripts.load import main, run_load


@pytest.mark.slow
def test_concurrent_clients_without_errors() -> None:
    report = run_load(clients=3, duration_s=4.0, warmup_s=2.0)
    assert report.errors == {}
    assert report.applications > 0 and report.apps_per_s > 0
    assert all(math.isfinite(x) for x in (report.p50_ms, report.p90_ms, report.p99_ms))
    assert report.p50_ms <= report.p90_ms <= report.p99_ms <= report.max_ms
    assert set(report.rss_start_mib) == {"bureau", "bank", "platform"}
    assert all(v > 10 for v in report.rss_end_mib.values())
    text = report.format()
    assert "errors 0" in text and "p99" in text and "bureau RSS MiB" in text


@pytest.mark.slow
def test_streaming_clients_are_scored_in_packed_batches_without_errors(tmp_path: Path) -> None:
    report = run_load(clients=2, duration_s=4.0, warmup_s=2.0, stream=True, workdir=tmp_path)
    assert report.errors == {}
    assert report.applications > 0 and report.apps_per_s > 0
    # Counted, not timed: every application scored (warm-up included) went through a packed
    # batch at the bureau, none one by one.
    with sqlite3.connect(tmp_path / "bureau" / "applications.sqlite3") as db:
        (batched,) = db.execute("SELECT COUNT(*) FROM batch_members").fetchone()
        (alone,) = db.execute("SELECT COUNT(*) FROM applications").fetchone()
    assert batched >= report.applications and alone == 0
    assert all(math.isfinite(x) for x in (report.p50_ms, report.p99_ms))


def test_bounds_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--clients", "0", "--duration", "1"]) == 2
    assert "--clients" in capsys.readouterr().err
    assert main(["--clients", "2", "--duration", "0"]) == 2
    assert "--duration" in capsys.readouterr().err
