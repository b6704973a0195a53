"""scripts/bench_circuits.py runs the whole tree pipeline and checks every band it times."""

from __future__ import annotations

from scripts import bench_circuits


def test_a_small_trees_workload_runs_and_agrees_with_the_model() -> None:
    result = bench_circuits.run(trees=3, depth=2, features=4, applications=2)
    assert result["values"] == 3 * 3 and result["packed_ciphertexts"] == 1
    steps = result["ms_p50"]
    assert isinstance(steps, dict) and set(steps) == {*bench_circuits.STEPS, "total"}
    assert isinstance(result["wire_bytes_per_app"], int) and result["wire_bytes_per_app"] > 0


def test_the_synthetic_ensemble_has_the_requested_shape() -> None:
    model = bench_circuits.hist_trees(trees=5, depth=3, features=7)
    assert (model.n_trees, model.depth, model.n_features) == (5, 3, 7)
    assert all(t.feature[i] >= 0 for t in model.trees for i in range(7))
