"""Benchmarks with fixed workloads (:data:`WORKLOADS`), each next to the naive phe baseline; plots.

Workloads (names and definitions are fixed so that figures stay comparable across versions):

- ``online``: one application at a time; 50 numeric features in [-4, 4]; a linear model with
  weights uniform in [-1, 1]; 4 cutoffs (5 bands); 2048-bit Paillier; bureau, bank and platform
  as separate processes over gRPC on loopback. Latency = platform submit until the bank has
  stored the band, measured by the client. 200 applications after 20 warm-up ones.
- ``batch``: 2000 applications of the same model over one streaming call; applications/second.
  The platform packs applications that queue up into batches of k per Paillier plaintext and
  the band comes from a garbled-circuit comparison (:mod:`blindscore.protocol.packing`).
- ``german``: the default German credit model on all 1000 rows, streamed.
- ``naive``: what a competent user writes with phe in an afternoon: one phe ciphertext per float
  feature, an EncryptedNumber dot product, the bank decrypting the exact score. In-process, no
  network, no band protocol. Every workload runs it in the same invocation for the ratio.
- ``trees``: a 100-tree, depth-4 XGBoost-format ensemble on 50 float features, one application at
  a time through the garbled-circuit pipeline; 30 applications after 3 warm-up ones.
- ``trees-grid``: the same trees with every feature declared on the grid ``-4:0.001:4`` (narrower
  keys, same bands), rows on that grid.
- ``trees-batch``: the ``trees`` model, 2000 applications streamed, many in flight.
- ``mlp``: a 50-32-1 network (relu, sigmoid), one application at a time; 100 after 5 warm-up ones.

``plots`` is no workload: it draws the docs' latency charts from the recorded figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as pyplatform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blindscore.app.client import Outcome, PlatformClient, score_applications
from blindscore.app.localnet import LocalNetwork
from blindscore.crypto.paillier import check_key_bits
from blindscore.errors import InvalidInputError
from blindscore.importers.sklearn_mlp import mlp_from_sklearn
from blindscore.models.contract import PrivateModel
from blindscore.models.features import (
    BinnedFeature,
    CategoricalFeature,
    CategoryCodeFeature,
    FeatureSpec,
    FloatKeyFeature,
    GroupedCategoricalFeature,
    NumericFeature,
)
from blindscore.models.floatkeys import Grid
from blindscore.models.linear import LinearModel
from blindscore.models.mlp import MLPModel
from blindscore.models.policy import BandPolicy
from blindscore.models.trees import Tree, TreeEnsemble
from blindscore.protocol.application import Application

WORKLOADS = ("online", "batch", "german", "naive", "trees", "trees-grid", "trees-batch", "mlp")
#: The ``trees-grid`` workload's declared grid on every feature: 8001 points, 13-bit keys.
TREES_GRID = "-4:0.001:4"
BENCH_MODEL_ID = "bench-linear"
FEATURE_RANGE = 4.0
CUTOFFS = (-2.0, -0.5, 0.5, 2.0)
PRECISION = 1e-5
POOL_SETTLE_S = 20.0


def cpu_description() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = pyplatform.processor()
    return f"{os.cpu_count()} x {model or 'unknown CPU'}"


@dataclass(frozen=True)
class Deployment:
    """How the benchmark's nodes run: their database (None: SQLite files) and ``serve --workers``
    for the roles that can share a store (PostgreSQL only)."""

    database: str | None = None
    workers: int = 1

    def network(self, tmp: Path, key_bits: int, model: PrivateModel, **more: Any) -> LocalNetwork:
        return LocalNetwork(
            tmp,
            key_bits=key_bits,
            models={BENCH_MODEL_ID: model},
            share_timings=True,
            database=self.database,
            workers=self.workers,
            **more,
        )


LOCAL = Deployment()


def synthetic_model(features: int = 50, seed: int = 20261127) -> LinearModel:
    """The benchmark model: weights uniform in [-1, 1], features declared in [-4, 4]."""
    rng = np.random.default_rng(seed)
    spec = FeatureSpec(
        tuple(
            NumericFeature(f"x{i:03d}", -FEATURE_RANGE, FEATURE_RANGE, frac_bits=24) for i in range(features)
        )
    )
    weights = rng.uniform(-1.0, 1.0, size=features)
    return LinearModel(
        name=f"bench-{features}",
        spec=spec,
        coef=tuple(float(w) for w in weights),
        intercept=0.0,
        link="identity",
        policy=BandPolicy(CUTOFFS, output="raw"),
        precision=PRECISION,
    )


def synthetic_rows(features: int, count: int, seed: int = 7, decimals: int = 6) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    values = np.clip(rng.normal(0.0, 1.0, size=(count, features)), -FEATURE_RANGE, FEATURE_RANGE)
    values = values.round(decimals)
    return [{f"x{i:03d}": float(v) for i, v in enumerate(row)} for row in values]


@dataclass
class Result:
    workload: str
    key_bits: int
    features: int
    applications: int
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    bytes_per_app: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")

    @property
    def p99(self) -> float:
        if not self.latencies_ms:
            return float("nan")
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, round(0.99 * (len(xs) - 1)))]

    @property
    def apps_per_s(self) -> float:
        return self.applications / self.wall_s if self.wall_s else float("nan")


def _rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc (Linux); -1 where unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


def _stage_medians(outcomes: Sequence[Outcome]) -> dict[str, float]:
    keys = sorted({k for o in outcomes for k in o.stage_ms})
    return {k: round(statistics.median(o.stage_ms.get(k, 0.0) for o in outcomes), 3) for k in keys}


def _apps(
    rows: Sequence[dict[str, Any]], key_id: str, bank_id: str, model_id: str, prefix: str
) -> list[Application]:
    return [
        Application(f"{prefix}-{i:06d}", bank_id, model_id, key_id, f"bench-consent-{i}", row)
        for i, row in enumerate(rows)
    ]


def _check(outcomes: Sequence[Outcome]) -> None:
    failed = [o for o in outcomes if not o.accepted]
    if failed:
        raise RuntimeError(f"{len(failed)} applications failed; first: {failed[0].error}")


def run_online(
    *,
    features: int = 50,
    applications: int = 200,
    warmup: int = 20,
    key_bits: int = 2048,
    settle_s: float = POOL_SETTLE_S,
    model: PrivateModel | None = None,
    workload: str = "online",
    band_protocol: str = "circuit",
    rows: Sequence[dict[str, Any]] | None = None,
    deployment: Deployment = LOCAL,
) -> Result:
    """Sequential unary calls; ``model`` defaults to the synthetic linear model of ``features``;
    ``band_protocol`` is the bureau's for a linear model (circuit or dgk); ``rows`` (at least
    ``applications + warmup``) default to synthetic rows of ``features`` features."""
    model = model or synthetic_model(features)
    rows = list(rows) if rows is not None else synthetic_rows(features, applications + warmup)
    if len(rows) < applications + warmup:
        raise InvalidInputError(f"{applications + warmup} rows needed, {len(rows)} given")
    with (
        tempfile.TemporaryDirectory(prefix="blindscore-bench-") as tmp,
        deployment.network(Path(tmp), key_bits, model, band_protocol=band_protocol) as net,
        PlatformClient(net.platform_address, security=net.client_security) as client,
    ):
        apps = _apps(rows, net.key_id, net.bank_id, BENCH_MODEL_ID, "online")
        for app in apps[:warmup]:
            client.score(app)
        # The nodes precompute randomness while idle; give them the idle time a deployment has
        # between bursts, so that the figure is the online cost (docs/performance.md says so).
        time.sleep(settle_s)
        outcomes: list[Outcome] = []
        latencies: list[float] = []
        t0 = time.perf_counter()
        for app in apps[warmup:]:
            t = time.perf_counter()
            outcomes.append(client.score(app))
            latencies.append((time.perf_counter() - t) * 1e3)
        wall = time.perf_counter() - t0
    _check(outcomes)
    result = Result(workload, key_bits, features, applications, latencies, wall)
    result.bytes_per_app = statistics.mean(o.wire_bytes for o in outcomes)
    result.stage_ms = _stage_medians(outcomes)
    if isinstance(model, LinearModel):
        result.extra = {
            "band_protocol": band_protocol,
            "comparison_bits": model.comparison_bits,
            "precision": model.precision,
        }
    else:
        shape = model.circuit_shape()
        result.extra = {"circuit": {"family": shape.family, "values": shape.values, **dict(shape.params)}}
    return result


def hist_trees(
    trees: int = 100, depth: int = 4, features: int = 50, seed: int = 2026, grid: str | None = None
) -> TreeEnsemble:
    """The ``trees`` workload's model: an XGBoost-format ensemble (float32, "x < t", NaN to the
    default side) of complete trees whose thresholds are drawn from 255 quantile bin edges per
    feature, as XGBoost's ``hist`` method places them; 4 cutoffs on the probability. With ``grid``
    (``trees-grid``) every feature is declared on that grid (LO:STEP:HI): same trees, narrower keys."""
    rng = np.random.default_rng(seed)
    sample = np.clip(rng.normal(size=(4096, features)), -FEATURE_RANGE, FEATURE_RANGE)
    edges = np.quantile(sample, np.linspace(0, 1, 257)[1:-1], axis=0).astype(np.float32)
    internal, leaves = 2**depth - 1, 2**depth
    n = internal + leaves
    out = []
    for _ in range(trees):
        feature = [int(rng.integers(features)) for _ in range(internal)] + [-1] * leaves
        threshold = [float(edges[rng.integers(255), f]) for f in feature[:internal]] + [0.0] * leaves
        out.append(
            Tree(
                feature=tuple(feature),
                threshold=tuple(threshold),
                left=tuple([2 * i + 1 for i in range(internal)] + [-1] * leaves),
                right=tuple([2 * i + 2 for i in range(internal)] + [-1] * leaves),
                default_left=tuple(bool(rng.integers(2)) for _ in range(n)),
                missing=tuple(["nan"] * n),
                value=tuple([0.0] * internal + [float(v) for v in rng.normal(scale=0.1, size=leaves)]),
            )
        )
    names = [f"x{i:03d}" for i in range(features)]
    grids = {n: Grid.parse(grid) for n in names} if grid else None
    return TreeEnsemble(
        f"bench-trees-{trees}x{depth}",
        names,
        out,
        base_score=0.0,
        link="logit",
        output="probability",
        domain="float32",
        strict=True,
        policy=BandPolicy((0.1, 0.3, 0.6, 0.85)),
        grids=grids,
    )


def model_rows(model: PrivateModel, count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Synthetic rows for any model, drawn from what its public feature spec declares: a numeric
    feature uniformly in its range (integers for an integer feature), a float-key feature (trees)
    on its grid if it has one, else around the model's own split thresholds for that feature, a
    category-code feature (LightGBM or XGBoost) over its codes and two beyond them, a categorical or binned
    feature over its categories or bins; 5 % missing where the spec allows
    it. Only the benchmark reads thresholds; they never leave this process."""
    rng = np.random.default_rng(seed)
    thresholds: dict[int, list[float]] = {}
    if isinstance(model, TreeEnsemble):
        for tree in model.trees:
            for f, t in zip(tree.feature, tree.threshold, strict=True):
                if f >= 0 and np.isfinite(t):
                    thresholds.setdefault(f, []).append(t)
    rows: list[dict[str, Any]] = [{} for _ in range(count)]
    for j, feature in enumerate(model.spec.features):
        values: list[Any]
        missing_ok = False
        if isinstance(feature, NumericFeature):
            if feature.integer:
                values = [float(v) for v in rng.integers(int(feature.lo), int(feature.hi) + 1, size=count)]
            else:
                values = [float(v) for v in rng.uniform(feature.lo, feature.hi, size=count).round(6)]
            missing_ok = feature.impute is not None
        elif isinstance(feature, FloatKeyFeature):
            missing_ok = True
            if feature.grid is not None:
                values = [feature.grid.point(int(k)) for k in rng.integers(0, feature.grid.count, size=count)]
            else:
                ts = thresholds.get(j) or [0.0]
                lo, hi = min(ts), max(ts)
                pad = max(1.0, 0.1 * (hi - lo))
                values = [float(v) for v in rng.uniform(lo - pad, hi + pad, size=count)]
        elif isinstance(feature, CategoryCodeFeature):
            # LightGBM or XGBoost category codes: mostly codes a node lists, some beyond them.
            missing_ok = True
            values = [float(v) for v in rng.integers(0, feature.n_categories + 2, size=count)]
        elif isinstance(feature, CategoricalFeature):
            values = [
                feature.categories[int(k)] for k in rng.integers(0, len(feature.categories), size=count)
            ]
        elif isinstance(feature, GroupedCategoricalFeature):
            cats = [c for g in feature.groups for c in g]
            values = [cats[int(k)] for k in rng.integers(0, len(cats), size=count)]
            missing_ok = feature.missing_bin
        elif isinstance(feature, BinnedFeature):
            edges = feature.edges
            lo, hi = (edges[0] - 1.0, edges[-1] + 1.0) if edges else (-1.0, 1.0)
            values = [float(v) for v in rng.uniform(lo, hi, size=count).round(6)]
            missing_ok = feature.missing_bin
        else:
            raise InvalidInputError(
                f"bench cannot draw rows for feature {feature.name!r} of kind {feature.kind!r}"
            )
        gaps = rng.random(count) < 0.05 if missing_ok else np.zeros(count, dtype=bool)
        for row, v, gap in zip(rows, values, gaps, strict=True):
            row[feature.name] = None if gap else v
    return rows


def synthetic_mlp(features: int = 50, hidden: int = 32, seed: int = 2026) -> MLPModel:
    """The ``mlp`` workload's model: features -> hidden (relu) -> 1 (sigmoid), trained by
    scikit-learn on synthetic rows, features declared in [-4, 4]."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(seed)
    x = np.clip(rng.normal(size=(2000, features)), -FEATURE_RANGE, FEATURE_RANGE)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(int)
    with warnings.catch_warnings():  # a benchmark model need not converge, only be a fixed network
        warnings.simplefilter("ignore", ConvergenceWarning)
        net = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=300, random_state=0).fit(x, y)
    names = [f"x{i:03d}" for i in range(features)]
    return mlp_from_sklearn(
        net,
        ranges={n: (-FEATURE_RANGE, FEATURE_RANGE) for n in names},
        policy=BandPolicy((0.1, 0.3, 0.6, 0.85)),
        feature_names=names,
        name=f"bench-mlp-{features}x{hidden}",
        frac_bits=20,
    )


def _run_stream(
    workload: str,
    model: PrivateModel,
    rows: Sequence[dict[str, Any]],
    key_bits: int,
    features: int,
    deployment: Deployment = LOCAL,
) -> Result:
    with (
        tempfile.TemporaryDirectory(prefix="blindscore-bench-") as tmp,
        deployment.network(Path(tmp), key_bits, model) as net,
    ):
        apps = _apps(rows, net.key_id, net.bank_id, BENCH_MODEL_ID, workload)
        with PlatformClient(net.platform_address, security=net.client_security) as client:
            for app in _apps(rows[:5], net.key_id, net.bank_id, BENCH_MODEL_ID, "warmup"):
                client.score(app)  # warm caches, channels and randomness pools
        bureau_pid = net.pids()["bureau"]
        rss_before = _rss_kib(bureau_pid)
        t0 = time.perf_counter()
        outcomes = score_applications(net.platform_address, apps, security=net.client_security)
        wall = time.perf_counter() - t0
        rss_after = _rss_kib(bureau_pid)
    _check(outcomes)
    result = Result(workload, key_bits, features, len(rows), [o.total_ms for o in outcomes], wall)
    result.bytes_per_app = statistics.mean(o.wire_bytes for o in outcomes)
    result.stage_ms = _stage_medians(outcomes)
    result.extra = {"bureau_rss_kib_before": rss_before, "bureau_rss_kib_after": rss_after}
    if isinstance(model, LinearModel):
        result.extra.update(comparison_bits=model.comparison_bits, precision=model.precision)
    return result


def run_batch(
    *, features: int = 50, applications: int = 2000, key_bits: int = 2048, deployment: Deployment = LOCAL
) -> Result:
    model, rows = synthetic_model(features), synthetic_rows(features, applications)
    return _run_stream("batch", model, rows, key_bits, features, deployment)


def run_german(*, key_bits: int = 2048) -> Result:
    from blindscore.data.german import default_model, load_german_credit

    rows, _ = load_german_credit()
    model = default_model()
    return _run_stream("german", model, rows, key_bits, model.spec.encoded_width)


def run_naive(*, features: int = 50, applications: int = 10, key_bits: int = 2048) -> Result:
    """The afternoon phe pipeline: encrypt floats, EncryptedNumber dot product, decrypt the exact score."""
    from phe import paillier

    public, private = paillier.generate_paillier_keypair(n_length=key_bits)
    weights = [float(w) for w in synthetic_model(features).coef]
    rows = synthetic_rows(features, applications)
    latencies = []
    nbytes = 0
    t0 = time.perf_counter()
    for row in rows:
        t = time.perf_counter()
        encrypted = [public.encrypt(row[f"x{i:03d}"]) for i in range(features)]
        score = sum(x * w for x, w in zip(encrypted, weights, strict=True))
        private.decrypt(score)
        latencies.append((time.perf_counter() - t) * 1e3)
        nbytes += sum((x.ciphertext(be_secure=False).bit_length() + 7) // 8 for x in encrypted)
        nbytes += (score.ciphertext(be_secure=False).bit_length() + 7) // 8
    wall = time.perf_counter() - t0
    result = Result("naive", key_bits, features, applications, latencies, wall)
    result.bytes_per_app = nbytes / applications
    return result


def _band_stage(name: str) -> bool:
    """Stages of the band protocol: DGK rounds one by one, the circuit path's two bank calls and
    garbling, or the packed path's OT and garbling."""
    parts = ("round", "packed_", "circuit_", "garble", "ot_setup")
    return any(part in name for part in parts) or name == "bureau.compare"


def summary(result: Result, naive: Result) -> dict[str, Any]:
    out: dict[str, Any] = {
        "workload": result.workload,
        "key_bits": result.key_bits,
        "features": result.features,
        "applications": result.applications,
        "p50_ms": round(result.p50, 2),
        "p99_ms": round(result.p99, 2),
        "apps_per_s": round(result.apps_per_s, 2),
        "bytes_per_app": round(result.bytes_per_app),
        "naive_p50_ms": round(naive.p50, 2),
        "naive_apps_per_s": round(naive.apps_per_s, 3),
        "speedup_p50": round(naive.p50 / result.p50, 2) if result.p50 else None,
        "speedup_throughput": round(result.apps_per_s / naive.apps_per_s, 2) if naive.apps_per_s else None,
        "cpu": cpu_description(),
        "python": pyplatform.python_version(),
        "stage_ms_p50": result.stage_ms,
    }
    if result.stage_ms:
        band = sum(v for k, v in result.stage_ms.items() if _band_stage(k))
        out["band_protocol_ms_p50"] = round(band, 2)
    out.update(result.extra)
    return out


def run(
    workload: str,
    *,
    key_bits: int = 2048,
    applications: int | None = None,
    band_protocol: str = "circuit",
    model: PrivateModel | None = None,
    deployment: Deployment = LOCAL,
) -> dict[str, Any]:
    """Run ``workload`` (one of :data:`WORKLOADS`) beside the naive phe baseline; returns the summary
    (the fields of ``blindscore bench --json``). ``applications`` overrides the workload's count.
    With ``model`` (any importable model, ``--model FILE``) the ``online`` workload scores it one
    application at a time and ``batch`` streams it, on rows drawn by :func:`model_rows`.
    ``deployment``: the nodes' database and worker processes (default: SQLite, one process each)."""
    if workload not in WORKLOADS:
        raise InvalidInputError(f"unknown workload {workload!r}; choose one of {', '.join(WORKLOADS)}")
    if applications is not None and (type(applications) is not int or applications < 1):
        raise InvalidInputError(f"applications must be a positive integer, not {applications!r}")
    if model is not None and workload not in ("online", "batch"):
        raise InvalidInputError(
            f"--model runs the online (one at a time) or batch (streamed) workload, not {workload!r}"
        )
    check_key_bits(key_bits)
    naive_count = applications if workload == "naive" and applications else 10
    naive = run_naive(key_bits=key_bits, applications=naive_count)
    if model is not None:
        n = applications or (30 if workload == "online" else 500)
        rows = model_rows(model, n + 5)
        width = len(model.spec.features)
        if workload == "online":
            result = run_online(
                key_bits=key_bits,
                applications=n,
                warmup=5,
                model=model,
                workload=f"online:{model.name}",
                band_protocol=band_protocol,
                rows=rows,
                deployment=deployment,
            )
        else:
            result = _run_stream(f"batch:{model.name}", model, rows[:n], key_bits, width, deployment)
        result.features = width
    elif workload == "online":
        result = run_online(
            key_bits=key_bits,
            applications=applications or 200,
            band_protocol=band_protocol,
            deployment=deployment,
        )
    elif workload == "batch":
        result = run_batch(key_bits=key_bits, applications=applications or 2000, deployment=deployment)
    elif workload == "german":
        result = run_german(key_bits=key_bits)
    elif workload == "trees":
        n = applications or 30
        result = run_online(key_bits=key_bits, applications=n, warmup=3, model=hist_trees(), workload="trees")
    elif workload == "trees-grid":
        n = applications or 30
        rows = synthetic_rows(50, n + 3, decimals=3)  # on the grid -4:0.001:4
        model = hist_trees(grid=TREES_GRID)
        result = run_online(
            key_bits=key_bits, applications=n, warmup=3, model=model, workload=workload, rows=rows
        )
    elif workload == "trees-batch":
        # The trees model, applications streamed: each runs the circuit protocol, many in flight.
        rows = synthetic_rows(50, applications or 2000)
        result = _run_stream("trees-batch", hist_trees(), rows, key_bits, 50)
    elif workload == "mlp":
        result = run_online(
            key_bits=key_bits,
            applications=applications or 100,
            warmup=5,
            model=synthetic_mlp(),
            workload="mlp",
        )
    else:
        result = naive
    out = summary(result, naive)
    if deployment != LOCAL:
        out["database"] = "postgresql" if deployment.database else "sqlite"
        out["workers"] = deployment.workers
    return out


def print_human(s: dict[str, Any]) -> None:
    print(
        f"workload {s['workload']}: {s['applications']} applications, "
        f"{s['features']} features, {s['key_bits']}-bit keys"
    )
    print(f"  latency p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms; {s['apps_per_s']} applications/s")
    print(f"  {s['bytes_per_app']} bytes on the wire per application")
    print(
        f"  naive phe baseline: p50 {s['naive_p50_ms']} ms, {s['naive_apps_per_s']} applications/s "
        f"-> speedup {s['speedup_p50']}x latency, {s['speedup_throughput']}x throughput"
    )
    for k, v in s.get("stage_ms_p50", {}).items():
        print(f"    {k:<28} {v:8.2f} ms")
    print(f"  cpu: {s['cpu']}")


# plots ------------------------------------------------------------------------------------

FEATURE_COUNTS = (10, 25, 50, 100)
KEY_SIZES = (2048, 3072)
APPS_PER_POINT = 50


def make_plots(out: Path) -> dict[str, Any]:
    """Measure, then write three PNGs and the measurements as JSON into ``out``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InvalidInputError("bench plots needs matplotlib: pip install 'blindscore[bench]'") from None

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


#: What `blindscore bench` and `scripts/bench.py` take: every workload, and ``plots``.
COMMANDS = (*WORKLOADS, "plots")
#: The `blindscore bench` description, naming every workload.
DESCRIPTION = (
    f"Benchmarks with fixed workloads ({', '.join(WORKLOADS)}), each next to the naive phe baseline; "
    "plots draws the docs' latency charts."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's arguments, on `blindscore bench` and on `scripts/bench.py` alike."""
    parser.add_argument(
        "workload",
        choices=COMMANDS,
        help="online: one application at a time; batch: 2000 streamed and packed; german: the German "
        "credit model on 1000 rows; naive: the phe baseline alone; trees / mlp: a 100-tree ensemble "
        "or a 50-32-1 network, one application at a time; trees-grid: the trees model with every "
        "feature declared on a grid (narrower keys); trees-batch: the trees model, 2000 streamed; "
        "plots: the docs' latency charts",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument(
        "--key-bits", type=int, default=2048, help="Paillier key size: 2048 (default) or 3072"
    )
    parser.add_argument("--applications", type=int, help="override the workload's application count")
    parser.add_argument(
        "--band-protocol",
        choices=("circuit", "dgk"),
        default="circuit",
        help="online: the bureau's band protocol for the linear model (default circuit)",
    )
    parser.add_argument("--out", default="docs/img", help="where `plots` writes its PNGs (default docs/img)")
    parser.add_argument(
        "--model",
        metavar="FILE",
        help="benchmark this model file instead (any format `blindscore model import` reads) with the "
        "online or batch workload, on synthetic rows drawn from its declared features",
    )
    parser.add_argument(
        "--database",
        help="postgresql:// URL the nodes keep their state in (default: SQLite files, temporary)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="online / batch: `serve --workers N` for every node that can run several processes "
        "(needs --database)",
    )
    parser.add_argument("--cutoffs", help="with --model: band cutoffs, for a file that carries none")
    parser.add_argument(
        "--bands-on",
        choices=("probability", "raw"),
        help="with --model: what the cutoffs apply to, as for `blindscore score --bands-on` (default: "
        "the probability of a classifier, the raw prediction of a regression model)",
    )
    parser.add_argument(
        "--feature-range", action="append", metavar="NAME=LO:HI", help="with --model: as for `model import`"
    )
    parser.add_argument(
        "--feature-grid",
        action="append",
        metavar="NAME=LO:STEP:HI",
        help="with --model: as for `model import`",
    )


def run_command(args: argparse.Namespace) -> int:
    """Run the workload ``args`` name and print its summary (JSON with ``--json``)."""
    if args.workload == "plots":
        make_plots(Path(args.out))
        return 0
    model = None
    if args.model and args.workload not in ("online", "batch"):
        raise InvalidInputError(
            f"--model runs the online (one at a time) or batch (streamed) workload, not {args.workload!r}"
        )
    if args.model:
        from blindscore.app.model_commands import parse_feature_grids, parse_feature_ranges
        from blindscore.importers.model_file import ImportOptions, read_model

        cutoffs = tuple(float(c) for c in args.cutoffs.split(",")) if args.cutoffs else None
        options = ImportOptions(
            cutoffs=cutoffs,
            feature_ranges=parse_feature_ranges(args.feature_range),
            feature_grids=parse_feature_grids(args.feature_grid),
            bands_on=args.bands_on,
        )
        model = read_model(Path(args.model), options)
    elif args.cutoffs or args.feature_range or args.feature_grid or args.bands_on:
        raise InvalidInputError(
            "--cutoffs, --feature-range, --feature-grid and --bands-on apply with --model only"
        )
    if args.workers != 1 and not args.database:
        raise InvalidInputError("--workers needs --database postgresql://... (worker processes share it)")
    if (args.workers != 1 or args.database) and args.workload not in ("online", "batch"):
        raise InvalidInputError("--database and --workers apply to the online and batch workloads")
    s = run(
        args.workload,
        key_bits=args.key_bits,
        applications=args.applications,
        band_protocol=args.band_protocol,
        model=model,
        deployment=Deployment(args.database, args.workers),
    )
    if args.json:
        print(json.dumps(s, sort_keys=True))
    else:
        print_human(s)
    sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="blindscore bench", description=DESCRIPTION)
    add_arguments(parser)
    return run_command(parser.parse_args(argv))
