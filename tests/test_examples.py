"""The issue's "done when" as a user runs it: docs/examples/notebook.py (public API only) and
docs/examples/integrator.py against three nodes started by hand with the commands of
docs/operations.md, plus `blindscore submit` and `blindscore bank band` against the same nodes."""

from __future__ import annotations

import ast
import csv
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import blindscore
from blindscore.data.german import DEFAULT_MODEL_ID, default_model, load_german_credit

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
GERMAN_CSV = ROOT / "blindscore" / "data" / "germancredit.csv"
READY_TIMEOUT_S = 120


def blindscore_cmd(*args: str) -> list[str]:
    """`blindscore ARGS` as typed, run by this interpreter (the console script may not be on PATH)."""
    return [sys.executable, "-m", "blindscore", *args]


def run(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


# ---------------------------------------------------------------------- public API only


def public_api_uses(path: Path) -> tuple[set[str], set[str]]:
    """The blindscore modules a script imports and the ``blindscore.NAME`` attributes it reads."""
    tree = ast.parse(path.read_text())
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.name for a in node.names if a.name.split(".")[0] == "blindscore"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "blindscore":
            modules.add(node.module or "")
    names = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "blindscore"
    }
    return modules, names


@pytest.mark.parametrize("script", ["notebook.py", "integrator.py"])
def test_example_scripts_use_only_the_documented_api(script: str) -> None:
    modules, names = public_api_uses(EXAMPLES / script)
    assert modules == {"blindscore"}  # `import blindscore`, no `from blindscore.app... import`
    assert names and names <= set(blindscore.__all__), names - set(blindscore.__all__)


def test_the_api_check_catches_an_internal_import(tmp_path: Path) -> None:
    """Negative control: the check above refuses what it is meant to refuse."""
    bad = tmp_path / "bad.py"
    bad.write_text("import blindscore\nfrom blindscore.app.api import score\nblindscore.app.localnet\n")
    modules, names = public_api_uses(bad)
    assert modules == {"blindscore", "blindscore.app.api"} and names == {"app"}


def test_notebook_script_scores_verifies_reports_and_benchmarks(tmp_path: Path) -> None:
    rows = 8
    out = tmp_path / "result.json"
    cmd = [sys.executable, str(EXAMPLES / "notebook.py"), str(GERMAN_CSV), "--rows", str(rows)]
    done = run([*cmd, "--applications", "2", "--out", str(out)], cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads(out.read_text())
    bands = result["bands"]
    assert [b["application_id"] for b in bands] == [f"cust-{i:04d}" for i in range(rows)]
    p = np.asarray(result["probability"])
    cutoffs = np.asarray([0.15, 0.3, 0.5])
    want = (p[:, None] >= cutoffs[None, :]).sum(axis=1)
    far = np.min(np.abs(p[:, None] - cutoffs[None, :]), axis=1) > 1e-6
    got = np.asarray([b["band"] for b in bands])
    assert far.sum() >= rows - 1 and (got[far] == want[far]).all()
    assert len(set(want.tolist())) >= 3  # the sample spans bands: the comparison can fail
    assert [b["band_label"] for b in bands] == ["ABCD"[b] for b in got]
    assert result["verify"] == {"ok": True, "rows": rows, "agree": rows}
    assert (result["report"]["total"], result["report"]["bads"]) == (1000, 300)
    assert 0.6 < result["report"]["auc"] < 1
    bench = result["bench"]
    assert bench["workload"] == "online" and bench["applications"] == 2 and bench["p50_ms"] > 0
    assert "verify: 8/8 bands agree, ok=True" in done.stdout and "KS " in done.stdout


# ---------------------------------------------------------------------- nodes started by hand


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class HandStarted:
    """Three ``serve`` processes and what an integrator knows about them."""

    work: Path
    pki: Path
    bureau: str
    bank: str
    platform: str
    key_id: str


@pytest.fixture(scope="module")
def by_hand(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HandStarted]:
    """docs/operations.md, typed into a shell: `certs init` with a platform-client and a bank-client
    certificate, then `bureau serve`, `bank serve`, `platform serve` on loopback ports."""
    work = tmp_path_factory.mktemp("by-hand")
    init = run(
        blindscore_cmd(
            "certs", "init", "pki", "--bank-id", "bank-1", "--platform-id", "platform-1",
            "--platform-client", "frontend-1", "--bank-client", "loans-1",
        ),
        cwd=work,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    bureau, bank, platform = (f"127.0.0.1:{free_port()}" for _ in range(3))
    commands = {
        "bureau": ["bureau", "serve", "--pki", "pki", "--listen", bureau, "--data-dir", "data/bureau"],
        "bank": [
            "bank", "serve", "--pki", "pki", "--listen", bank, "--data-dir", "data/bank",
            "--bank-id", "bank-1", "--bureau", bureau, "--advertise", bank,
        ],
        "platform": [
            "platform", "serve", "--pki", "pki", "--listen", platform, "--bureau", bureau,
            "--platform-id", "platform-1", "--data-dir", "data/platform",
        ],
    }  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for role, args in commands.items():  # in the order of the docs; each waits for the one before
            ready = work / f"{role}.ready"
            with open(work / f"{role}.log", "wb") as log:
                procs.append(
                    subprocess.Popen(
                        blindscore_cmd(*args, "--ready-file", str(ready)),
                        cwd=work,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                )
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not ready.exists():
                log_text = (work / f"{role}.log").read_text()
                assert procs[-1].poll() is None, f"{role} exited: {log_text[-3000:]}"
                assert time.monotonic() < deadline, f"{role} not ready: {log_text[-3000:]}"
                time.sleep(0.1)
        key_id = run(blindscore_cmd("bank", "key-id", "--data-dir", "data/bank"), cwd=work)
        assert key_id.returncode == 0, key_id.stderr
        yield HandStarted(work, work / "pki", bureau, bank, platform, key_id.stdout.strip())
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def applicants(path: Path, first: int, count: int, prefix: str) -> list[dict[str, Any]]:
    german, _ = load_german_credit()
    data = [{"application_id": f"{prefix}-{i}", **german[i]} for i in range(first, first + count)]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(data[0]))
        writer.writeheader()
        writer.writerows(data)
    return data


def plain_band(row: dict[str, Any]) -> int:
    return default_model().band({k: v for k, v in row.items() if k != "application_id"})


def test_integrator_script_submits_with_a_client_certificate_and_the_bank_reads_each_band(
    by_hand: HandStarted,
) -> None:
    data = applicants(by_hand.work / "applicants.csv", 0, 6, "loan")
    out = by_hand.work / "integrator.json"
    done = run(
        [
            sys.executable, str(EXAMPLES / "integrator.py"), "--platform", by_hand.platform,
            "--bank", by_hand.bank, "--certs", "pki", "--bank-id", "bank-1", "--key-id", by_hand.key_id,
            "--model-id", DEFAULT_MODEL_ID, "--input", "applicants.csv", "--consent", "consent-2026",
            "--out", str(out),
        ],
        cwd=by_hand.work,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["outcomes"] == [[row["application_id"], "accepted", ""] for row in data]
    want = {row["application_id"]: plain_band(row) for row in data}
    assert {k: v["band"] for k, v in result["bands"].items()} == want
    assert len(set(want.values())) >= 3  # several bands: a wrong band would show
    labels = default_model().policy.labels
    assert all(
        v["label"] == labels[v["band"]] and v["platform"] == "platform-1" for v in result["bands"].values()
    )


def test_submit_and_bank_band_commands_against_the_nodes_started_by_hand(by_hand: HandStarted) -> None:
    data = applicants(by_hand.work / "cli.csv", 10, 3, "cli")
    submit = run(
        blindscore_cmd(
            "submit", "--platform", by_hand.platform, "--input", "cli.csv", "--certs", "pki",
            "--client-id", "frontend-1", "--bank-id", "bank-1", "--key-id", by_hand.key_id,
            "--model-id", DEFAULT_MODEL_ID, "--consent", "consent-cli",
        ),
        cwd=by_hand.work,
    )  # fmt: skip
    assert submit.returncode == 0, submit.stderr
    lines = submit.stdout.splitlines()
    assert [line.split(",")[:2] for line in lines[1:]] == [[r["application_id"], "accepted"] for r in data]
    for row in data:
        read = run(
            blindscore_cmd(
                "bank", "band", "--bank", by_hand.bank, "--certs", "pki", "--client-id", "loans-1",
                "--id", row["application_id"],
            ),
            cwd=by_hand.work,
        )  # fmt: skip
        assert read.returncode == 0, read.stderr
        header, line = read.stdout.splitlines()
        fields = dict(zip(header.split(","), line.split(","), strict=True))
        assert (fields["platform_id"], fields["application_id"]) == ("platform-1", row["application_id"])
        assert int(fields["band"]) == plain_band(row)
    # The platform's client certificate opens no door at the bank: refused before anything is sent.
    wrong = run(
        blindscore_cmd(
            "bank", "band", "--bank", by_hand.bank, "--certs", "pki", "--client-id", "frontend-1",
            "--id", data[0]["application_id"],
        ),
        cwd=by_hand.work,
    )  # fmt: skip
    assert wrong.returncode == 2 and "platform-client certificate, not a bank-client" in wrong.stderr
