"""End to end: three separate processes over real gRPC on loopback, and the CLI as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from blindscore.app.client import score_applications
from blindscore.app.localnet import LocalNetwork
from blindscore.bank_node.store import ResultStore
from blindscore.data.german import DEFAULT_MODEL_ID, default_model, load_german_credit
from blindscore.protocol.application import Application

pytestmark = pytest.mark.slow


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blindscore", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def test_whole_german_credit_set_through_three_processes(tmp_path: Path) -> None:
    rows, _ = load_german_credit()
    model = default_model()
    with LocalNetwork(tmp_path) as net:
        pids = net.pids()
        assert len(set(pids.values())) == 3  # three separate processes
        apps = [
            Application(f"g-{i:04d}", net.bank_id, DEFAULT_MODEL_ID, net.key_id, f"consent-{i}", row)
            for i, row in enumerate(rows)
        ]
        outcomes = score_applications(net.platform_address, apps, security=net.client_security)
        failed = [o for o in outcomes if not o.accepted]
        assert not failed, failed[:3]
        store = ResultStore(net.bank_dir / "results.sqlite3")
        records = {r.application_id: r for r in store.all()}
        store.close()
        # `blindscore bank results` reads the same store, as the bank's operator would.
        listing = run_cli("bank", "results", "--data-dir", str(net.bank_dir))
        assert listing.returncode == 0, listing.stderr
        audit = run_cli("bureau", "audit", "verify", "--data-dir", str(net.bureau_dir))
        assert audit.returncode == 0, audit.stdout + audit.stderr
        # Two records per application: ACCEPTED before it was stored and scored, then its outcome.
        assert "audit trail intact: 2000 records" in audit.stdout
    assert len(records) == len(rows) == 1000
    encrypted = np.array([records[f"g-{i:04d}"].band for i in range(len(rows))])
    plain = np.array([model.band(row) for row in rows])
    assert (encrypted == plain).all(), np.flatnonzero(encrypted != plain)[:10]
    assert len(set(plain.tolist())) == len(model.policy.labels)  # every band occurs
    lines = listing.stdout.strip().splitlines()
    assert lines[0] == "platform_id,application_id,model_id,band,band_label,received_at,bureau_id"
    assert lines[1].startswith(f"{net.platform_id},") and lines[1].endswith(f",{net.bureau_id}")
    assert len(lines) == 1001
    # The bank's key persisted and survives a restart of the whole network.
    with LocalNetwork(tmp_path) as again:
        assert again.key_id == net.key_id


def test_demo_command(tmp_path: Path) -> None:
    result = run_cli("demo", "--applicants", "30", "--workdir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "band agreement with plaintext scoring of the same model: 30/30 (100.00%)" in out
    for label in default_model().policy.labels:
        assert f"\n{label} " in out
    assert "latency per application" in out


@pytest.mark.parametrize("family", ["gbdt", "mlp"])
def test_demo_with_a_tree_ensemble_or_a_network(tmp_path: Path, family: str) -> None:
    """The shipped XGBoost ensemble and MLP on German credit, scored by the garbled-circuit path
    through three node processes: every band equals the plaintext model's."""
    result = run_cli("demo", "--model", family, "--applicants", "12", "--workdir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"model german-credit-{family}" in result.stdout
    assert "band agreement with plaintext scoring of the same model: 12/12 (100.00%)" in result.stdout


def test_demo_refuses_small_keys() -> None:
    result = run_cli("demo", "--applicants", "5", "--key-bits", "1024")
    assert result.returncode == 2
    assert "1024-bit Paillier keys are refused" in result.stderr
