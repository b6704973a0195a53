"""Packaging: one version (the package metadata), a CHANGELOG, the extras and the messages naming them."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

import blindscore
from blindscore.errors import InvalidInputError

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    from blindscore.app.cli import main

    assert blindscore.__version__ == metadata.version("blindscore")
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"blindscore {metadata.version('blindscore')}\n"
    # Reading it imports no gRPC (the public face stays light).
    code = "import sys, blindscore; print(blindscore.__version__); print('grpc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == [metadata.version("blindscore"), "False"]


def test_no_version_is_written_anywhere_else() -> None:
    version = PYPROJECT["project"]["version"]
    assignment = re.compile(r"""^\s*(__version__|VERSION|version)\s*[:=]\s*["']\d""", re.MULTILINE)
    offenders = []
    for folder in ("blindscore", "bureau", "bank_node", "platform_node", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            if "v1" in path.parts:
                continue  # generated code
            text = path.read_text()
            if assignment.search(text) or f'"{version}"' in text:
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_changelog_has_an_unreleased_section_and_this_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text
    assert f"## [{PYPROJECT['project']['version']}]" in text


def test_report_extra_brings_matplotlib_and_bench_builds_on_it() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert any(r.startswith("matplotlib") for r in extras["report"])
    assert "blindscore[report]" in extras["bench"]


def test_a_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from blindscore.app import bench
    from blindscore.app.report import BandTable, write_png

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    table = BandTable(model="m", rows=(), total=0, bads=0, ks=0.0, band_ks=0.0, auc=0.5, higher_is_bad=True)
    with pytest.raises(InvalidInputError, match=r"pip install 'blindscore\[report\]'"):
        write_png(table, tmp_path / "x.png")
    with pytest.raises(InvalidInputError, match=r"pip install 'blindscore\[bench\]'"):
        bench.make_plots(tmp_path / "plots")
    assert list(tmp_path.iterdir()) == []


def test_a_node_serves_without_health_checks_when_their_package_cannot_load(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`pip install optbinning` after blindscore leaves grpcio-health-checking's protobuf 7 gencode on
    a protobuf 6 runtime: the node starts anyway and says how to mend it."""
    import grpc

    from blindscore.infra.transport import create_server, open_channel, wait_ready

    monkeypatch.setitem(sys.modules, "grpc_health.v1", None)  # import raises ImportError
    server, port = create_server("127.0.0.1:0", [])
    try:
        assert (
            "serving without gRPC health checks" in caplog.text
            and "grpcio-health-checking<1.82" in caplog.text
        )
        channel = open_channel(f"127.0.0.1:{port}")
        wait_ready(channel, 10)
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        channel.close()
    finally:
        server.stop(None)
