"""The benchmark harness: workload definitions, the naive baseline, and the JSON line's fields."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from phe import paillier as phe_paillier

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


def naive_scores(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every score the naive baseline decrypts, recorded at phe's private key."""
    decrypt = phe_paillier.PaillierPrivateKey.decrypt
    seen: list[float] = []

    def recording(key: phe_paillier.PaillierPrivateKey, number: phe_paillier.EncryptedNumber) -> float:
        value = decrypt(key, number)
        seen.append(value)
        return value

    monkeypatch.setattr(phe_paillier.PaillierPrivateKey, "decrypt", recording)
    return seen


@pytest.mark.parametrize("pipeline", ["honest", "broken: another model's weights"])
def test_naive_baseline_decrypts_the_exact_score(pipeline: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scores the baseline decrypts are the plaintext dot products of its rows and weights.
    Negative control: a baseline scoring with other weights decrypts other scores, which the check
    must flag."""
    features, applications = 4, 2
    weights = bench.synthetic_model(features).coef
    rows = bench.synthetic_rows(features, applications)
    expected = [math.fsum(row[f"x{i:03d}"] * w for i, w in enumerate(weights)) for row in rows]
    if pipeline != "honest":
        real = bench.synthetic_model
        monkeypatch.setattr(bench, "synthetic_model", lambda n: real(n, seed=1))
    seen = naive_scores(monkeypatch)
    result = bench.run_naive(features=features, applications=applications)
    assert result.applications == 2 and len(result.latencies_ms) == 2
    assert result.p50 > 0 and result.apps_per_s > 0
    assert result.bytes_per_app > 4 * 400  # 4 + 1 ciphertexts of ~512 bytes
    assert len(seen) == applications
    exact = all(abs(got - want) <= 1e-9 for got, want in zip(seen, expected, strict=True))
    assert exact == (pipeline == "honest"), (seen, expected)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("band_protocol", "stage"), [("circuit", "bank.circuit_finish"), ("dgk", "bank.round2")]
)
def test_online_json_line_over_three_processes(band_protocol: str, stage: str) -> None:
    naive = bench.run_naive(features=5, applications=2)
    result = bench.run_online(features=5, applications=4, warmup=1, settle_s=0, band_protocol=band_protocol)
    line = json.loads(json.dumps(bench.summary(result, naive)))
    assert set(line) >= REQUIRED
    assert line["workload"] == "online" and line["applications"] == 4 and line["features"] == 5
    assert line["p50_ms"] > 0 and line["p99_ms"] >= line["p50_ms"]
    # 5 feature ciphertexts plus the band protocol, all under 2048-bit keys.
    assert 5 * 512 < line["bytes_per_app"] < 64 * 1024
    assert {"platform.encrypt", "bureau.evaluate", stage} <= set(line["stage_ms_p50"])
    assert line["band_protocol"] == band_protocol and line["band_protocol_ms_p50"] > 0
    assert line["speedup_throughput"] > 0


@pytest.mark.parametrize("family", ["trees", "mlp"])
def test_circuit_workloads_run_over_three_processes(family: str) -> None:
    """The trees and mlp workloads (here small) through the nodes: every call accepted (the bench
    refuses to report otherwise), the circuit's public shape and the bank's stages reported."""
    model = bench.hist_trees(trees=4, depth=3, features=8) if family == "trees" else bench.synthetic_mlp(8, 4)
    result = bench.run_online(
        features=8, applications=2, warmup=1, settle_s=0.0, model=model, workload=family
    )
    assert result.workload == family and len(result.latencies_ms) == 2
    assert result.extra["circuit"]["family"] == family
    assert "bank.circuit_finish" in result.stage_ms and result.bytes_per_app > 0


def test_the_trees_batch_workload_streams_a_tree_model() -> None:
    """trees-batch (here 6 applications of a small ensemble) streams through the platform: every
    application accepted and scored by the circuit protocol, throughput reported."""
    model = bench.hist_trees(trees=3, depth=2, features=8)
    result = bench._run_stream("trees-batch", model, bench.synthetic_rows(8, 6), 2048, 8)
    assert result.workload == "trees-batch" and len(result.latencies_ms) == 6
    assert "bank.circuit_start" in result.stage_ms and result.wall_s > 0
    assert "comparison_bits" not in result.extra  # a linear model's fields only


@pytest.mark.parametrize("family", ["linear", "gbdt", "mlp"])
def test_model_rows_are_rows_the_model_accepts(family: str) -> None:
    """--model FILE benchmarks any model on rows drawn from its declared features: the German credit
    models (categorical and binned features, integer grids, declared ranges) accept every row,
    missing values only where the spec allows them."""
    from blindscore.data.german import demo_model

    model = demo_model(family)
    rows = bench.model_rows(model, 200, seed=3)
    assert len(rows) == 200 and set(rows[0]) == set(model.spec.input_names)
    for row in rows:
        model.spec.encode_row(row)  # raises on a value the platform would refuse
    if family == "gbdt":  # float-key features with grids: some missing values, all on the grid
        assert any(v is None for row in rows for v in row.values())
    assert bench.model_rows(model, 200, seed=3) == rows  # a fixed workload for a fixed seed
    assert bench.model_rows(model, 200, seed=4) != rows


def test_trees_grid_rows_lie_on_the_grid_and_narrow_the_circuit() -> None:
    model = bench.hist_trees(trees=3, depth=2, features=8, grid=bench.TREES_GRID)
    plain = bench.hist_trees(trees=3, depth=2, features=8)
    assert model.circuit_shape().value_bits == 14 and plain.circuit_shape().value_bits == 33
    for row in bench.synthetic_rows(8, 50, decimals=3):
        assert model.band_from_encoded(model.encode_row(row)) == plain.band_from_encoded(
            plain.encode_row(row)
        )


def test_bench_model_flag_online_over_three_processes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`blindscore bench online --model FILE`: the shipped gbdt model, through the nodes."""
    from blindscore.app.cli import main
    from blindscore.data.german import demo_model

    path = tmp_path / "gbdt.json"
    path.write_text(json.dumps(demo_model("gbdt").to_dict()))
    assert main(["bench", "online", "--model", str(path), "--applications", "3", "--json"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["workload"] == "online:german-credit-gbdt" and line["applications"] == 3
    assert line["features"] == 7 and line["circuit"]["family"] == "trees" and line["bytes_per_app"] > 0


def test_bench_refuses_workers_without_a_database(capsys: pytest.CaptureFixture[str]) -> None:
    from blindscore.app.cli import main

    assert main(["bench", "batch", "--workers", "2"]) == 2
    assert "--workers needs --database postgresql://" in capsys.readouterr().err
    assert main(["bench", "trees", "--model", "x.json"]) == 2
    assert "--model runs the online (one at a time) or batch (streamed) workload" in capsys.readouterr().err


def _xgboost_file(tmp_path: Path, objective: str) -> Path:
    xgb = pytest.importorskip("xgboost")
    import numpy as np

    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] + x[:, 1] > 0).astype(float)
    booster = xgb.train(
        {"objective": objective, "max_depth": 2, "nthread": 1, "seed": 1}, xgb.DMatrix(x, label=y), 3
    )
    path = tmp_path / f"{objective.replace(':', '-')}.json"
    booster.save_model(path)
    return path


@pytest.mark.parametrize(
    ("objective", "cutoffs", "flags", "output"),
    [
        ("binary:logistic", "0.3,0.7", [], "probability"),
        ("binary:logistic", "-0.5,0.5", ["--bands-on", "raw"], "raw"),
        ("reg:squarederror", "0.2,0.8", [], "raw"),
    ],
    ids=["classifier", "classifier-on-raw", "regression"],
)
def test_bench_model_takes_bands_on_as_score_does(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    objective: str,
    cutoffs: str,
    flags: list[str],
    output: str,
) -> None:
    """`bench --model FILE --bands-on raw` bands a classifier on its margin, and a regression model
    bands on its raw prediction by default; the model handed to the workload says so."""
    from blindscore.app.cli import main

    seen = []

    def fake_run(workload: str, **kwargs: object) -> dict[str, object]:
        seen.append(kwargs["model"])
        return {}

    monkeypatch.setattr(bench, "run", fake_run)
    monkeypatch.setattr(bench, "print_human", lambda s: None)
    path = _xgboost_file(tmp_path, objective)
    assert main(["bench", "online", "--model", str(path), f"--cutoffs={cutoffs}", *flags]) == 0
    (model,) = seen
    assert model.policy.output == output  # type: ignore[attr-defined]
    assert list(model.policy.cutoffs) == [float(c) for c in cutoffs.split(",")]  # type: ignore[attr-defined]


def test_bench_bands_on_needs_a_model(capsys: pytest.CaptureFixture[str]) -> None:
    from blindscore.app.cli import main

    assert main(["bench", "online", "--bands-on", "raw"]) == 2
    assert (
        "--cutoffs, --feature-range, --feature-grid and --bands-on apply with --model only"
        in capsys.readouterr().err
    )
