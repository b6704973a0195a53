"""The benchmark harness: workload definitions, the naive baseline, and the JSON line's fields."""

from __future__ import annotations

import json

import pytest

from blindscore.app import bench

REQUIRED = {
    "workload", "key_bits", "features", "applications", "p50_ms", "p99_ms", "apps_per_s", "bytes_per_app",
    "naive_p50_ms", "naive_apps_per_s", "speedup_p50", "speedup_throughput", "cpu",
}  # fmt: skip


def test_synthetic_workload_is_fixed() -> None:
    model = bench.synthetic_model(50)
    assert model.spec.encoded_width == 50
    assert all(-1.0 <= w <= 1.0 for w in model.coef)
    assert model.policy.cutoffs == bench.CUTOFFS and len(model.policy.labels) == 5
    assert model.coef == bench.synthetic_model(50).coef  # seeded: the same model every run
    rows = bench.synthetic_rows(50, 3)
    assert all(-4.0 <= v <= 4.0 for row in rows for v in row.values())


def test_naive_baseline_decrypts_the_exact_score() -> None:
    result = bench.run_naive(features=4, applications=2)
    assert result.applications == 2 and len(result.latencies_ms) == 2
    assert result.p50 > 0 and result.apps_per_s > 0
    assert result.bytes_per_app > 4 * 400  # 4 + 1 ciphertexts of ~512 bytes


@pytest.mark.slow
def test_online_json_line_over_three_processes() -> None:
    naive = bench.run_naive(features=5, applications=2)
    result = bench.run_online(features=5, applications=4, warmup=1, settle_s=0)
    line = json.loads(json.dumps(bench.summary(result, naive)))
    assert set(line) >= REQUIRED
    assert line["workload"] == "online" and line["applications"] == 4 and line["features"] == 5
    assert line["p50_ms"] > 0 and line["p99_ms"] >= line["p50_ms"]
    # 5 feature ciphertexts plus the band protocol, all under 2048-bit keys.
    assert 5 * 512 < line["bytes_per_app"] < 64 * 1024
    assert {"platform.encrypt", "bureau.evaluate", "bank.round2"} <= set(line["stage_ms_p50"])
    assert line["speedup_throughput"] > 0
