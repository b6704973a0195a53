"""All five import formats end to end: import, verify through three node processes, hot swap (CI-sized).

The full-size run is ``python scripts/verify_importers.py`` (1000 rows per format).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from blindscore.app.cli import main
from blindscore.app.localnet import LocalNetwork
from blindscore.app.model_commands import compare_bands
from blindscore.importers import read_model
from blindscore.models.contract import PrivateModel
from scripts.model_zoo import (
    BUILDERS,
    Artifact,
    build,
    german_csv_rows,
    rows_covering_bands,
    swap_in,
)

LIBRARIES = ("optbinning", "toad", "scorecardpy", "pandas")
ROWS = 40
NAME = "zoo"


def test_core_and_model_zoo_import_without_the_scorecard_libraries() -> None:
    code = (
        "import sys, scripts.model_zoo, blindscore.models.scorecard, blindscore.app.model_commands\n"
        f"print(sorted(m for m in {LIBRARIES!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_hand_card_builds_and_imports_with_the_libraries_absent(tmp_path: Path) -> None:
    """What a core install (no [scorecards] extra) can do with the zoo; the rest says what to install."""
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        for m in {LIBRARIES!r}:
            sys.modules[m] = None  # import now fails as if not installed
        from blindscore.errors import PreconditionError
        from blindscore.importers import read_model
        from scripts.model_zoo import build
        a = build("blindscore", Path({str(tmp_path)!r}))
        m = read_model(a.path, a.options, fmt=a.format, name="hand")
        print(m.type_name, m.feature_count, m.policy.output, "/".join(m.policy.labels))
        try:
            build("toad", Path({str(tmp_path)!r}))
        except PreconditionError as exc:
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "blindscore-scorecard 5 raw E/D/C/B/A",
        "this model-zoo builder needs pandas: pip install 'blindscore[scorecards]'",
    ]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Artifact]:
    workdir = tmp_path_factory.mktemp("zoo")
    return {fmt: build(fmt, workdir) for fmt in BUILDERS}


@pytest.fixture(scope="module")
def models(artifacts: dict[str, Artifact]) -> dict[str, PrivateModel]:
    """Each artifact imported in this process, as `blindscore model import` would store it."""
    return {fmt: read_model(a.path, a.options, fmt=a.format, name=NAME) for fmt, a in artifacts.items()}


def test_imported_models_reproduce_their_libraries(
    artifacts: dict[str, Artifact], models: dict[str, PrivateModel]
) -> None:
    rows = german_csv_rows()
    assert len(rows) == 1000
    expected_types = {
        "skops": "blindscore-linear-model",
        "optbinning": "blindscore-scorecard",
        "toad": "blindscore-scorecard",
        "scorecardpy": "blindscore-scorecard",
        "blindscore": "blindscore-scorecard",
    }
    assert {fmt: m.type_name for fmt, m in models.items()} == expected_types
    for fmt, artifact in artifacts.items():
        model = models[fmt]
        if fmt == "blindscore":
            assert not artifact.reference
            continue
        assert len(artifact.reference) == 1000
        gap = max(abs(model.predict(r) - ref) for r, ref in zip(rows, artifact.reference, strict=True))
        assert gap <= 1e-9, (fmt, gap)
        bands = {model.band(r) for r in rows}
        assert bands == set(range(model.policy.n_bands)), fmt  # every band occurs on German credit


def digest(model: PrivateModel) -> str:
    return hashlib.sha256(json.dumps(model.to_dict(), sort_keys=True).encode()).hexdigest()


@pytest.mark.slow
def test_builds_are_deterministic_across_processes(models: dict[str, PrivateModel], tmp_path: Path) -> None:
    """Another process, another string-hash seed: the same five models, to the bit."""
    code = textwrap.dedent(
        f"""
        import hashlib, json
        from pathlib import Path
        from blindscore.importers import read_model
        from scripts.model_zoo import BUILDERS, build
        for fmt in BUILDERS:
            a = build(fmt, Path({str(tmp_path)!r}))
            m = read_model(a.path, a.options, fmt=a.format, name={NAME!r})
            print(fmt, hashlib.sha256(json.dumps(m.to_dict(), sort_keys=True).encode()).hexdigest())
        """
    )
    seed = "1" if os.environ.get("PYTHONHASHSEED") != "1" else "2"
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.splitlines() == [f"{fmt} {digest(m)}" for fmt, m in models.items()]


@pytest.mark.slow
def test_five_formats_verify_and_swap_in_at_a_running_bureau(
    artifacts: dict[str, Artifact], models: dict[str, PrivateModel], tmp_path: Path
) -> None:
    rows = german_csv_rows()
    chosen = rows_covering_bands(list(models.values()), rows, ROWS)
    assert len(chosen) == ROWS
    with LocalNetwork(tmp_path / "net") as net:
        pids = net.pids()
        for k, (fmt, artifact) in enumerate(artifacts.items(), start=1):
            pinned = [(f"{fmt}-{i}", rows[i]) for i in chosen]
            latest = (f"{fmt}-latest", rows[900 + k])
            check = swap_in(net, artifact, name=NAME, rows=pinned, latest_row=latest)
            # The running bureau stored it as the next version, exactly the model imported here.
            assert check.version == k and check.format == fmt
            assert check.model == models[fmt]
            assert check.errors == ()
            # Every pinned application: receipt names the new version, bank band = plaintext band.
            assert {v for _, _, v in check.pinned.values()} == {str(k)}
            stored = {app_id: s for app_id, (_, s, _) in check.pinned.items() if s is not None}
            assert len(stored) == ROWS  # the bank stored a band for every application
            v = compare_bands(check.model, [a for a, _ in pinned], [row for _, row in pinned], stored)
            assert (v.agree, v.rows, v.disagreements, v.allowed) == (ROWS, ROWS, (), ()), fmt
            assert v.worst_fixed_point_error <= v.margin
            assert {b for b, _, _ in check.pinned.values()} == set(range(check.model.policy.n_bands))
            # "latest", asked after the platform's cache expired, is the new version too.
            _, want, got, version = check.latest
            assert (got, version) == (want, str(k)), fmt
            assert check.ok
        # No node was restarted.
        assert net.pids() == pids
        assert all(node.process.poll() is None for node in net.nodes.values())
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["model", "list", "--data-dir", str(net.bureau_dir)]) == 0
    listed = [line.split() for line in out.getvalue().splitlines() if line.startswith(f"{NAME} ")]
    assert [(cols[1], cols[2] if cols[2] != "*" else cols[3]) for cols in listed] == [
        (str(k), models[fmt].type_name) for k, fmt in enumerate(BUILDERS, start=1)
    ]
    assert listed[-1][2] == "*"  # v5 is the latest
