"""`blindscore bench plots`: latency against feature count and key size, and time per stage per node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from blindscore.app.bench import run_online

FEATURE_COUNTS = (10, 25, 50, 100)
KEY_SIZES = (2048, 3072)
APPS_PER_POINT = 50


def make_plots(out: Path) -> dict[str, Any]:
    """Measure, then write three PNGs and the measurements as JSON into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    by_features = {f: run_online(features=f, applications=APPS_PER_POINT, warmup=10) for f in FEATURE_COUNTS}
    by_keys = {k: run_online(key_bits=k, applications=APPS_PER_POINT, warmup=10) for k in KEY_SIZES}
    data = {
        "features": {
            f: {"p50_ms": r.p50, "p99_ms": r.p99, "stage_ms": r.stage_ms} for f, r in by_features.items()
        },
        "key_bits": {
            k: {"p50_ms": r.p50, "p99_ms": r.p99, "stage_ms": r.stage_ms} for k, r in by_keys.items()
        },
    }

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = list(FEATURE_COUNTS)
    ax.plot(xs, [by_features[f].p50 for f in xs], marker="o", label="p50")
    ax.plot(xs, [by_features[f].p99 for f in xs], marker="s", label="p99")
    ax.set(xlabel="features", ylabel="latency (ms)", title="online latency vs feature count (2048-bit)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency_vs_features.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ks = list(KEY_SIZES)
    ax.bar([str(k) for k in ks], [by_keys[k].p50 for k in ks], color=["#4C72B0", "#DD8452"])
    ax.set(
        xlabel="Paillier modulus (bits)",
        ylabel="p50 latency (ms)",
        title="online latency vs key size (50 features)",
    )
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "latency_vs_key_bits.png", dpi=120)
    plt.close(fig)

    stages = by_features[50].stage_ms
    fig, ax = plt.subplots(figsize=(7, 4))
    names = sorted(stages, key=lambda k: stages[k])
    ax.barh(names, [stages[k] for k in names], color="#55A868")
    ax.set(
        xlabel="median ms per application", title="online: time per stage and node (50 features, 2048-bit)"
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "stages.png", dpi=120)
    plt.close(fig)

    (out / "bench_plots.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data
