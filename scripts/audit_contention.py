"""Audit-chain append contention: N processes (bureau replicas) append to one chain on PostgreSQL.

Each process appends one record per transaction, as fast as it can, for ``--seconds``; the
report gives appends per second in all, latency percentiles per append, and whether the chain
verifies afterwards. Without ``--database`` a private PostgreSQL cluster is started
(tests/pg_cluster.py). Example: ``python scripts/audit_contention.py --replicas 1 2 3``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
import uuid
from pathlib import Path

from blindscore.bureau.audit import AuditLog


def _append_for(url: str, seconds: float, worker: int, out: multiprocessing.Queue[list[float]]) -> None:
    latencies = []
    with AuditLog(url) as trail:
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            t0 = time.perf_counter()
            trail.append(
                platform_id="bench", bank_id="bank", application_id=f"w{worker}-{n}", consent_reference="c",
                model_id="m", model_version="v1", outcome="OK", duration_ms=1.0,
            )  # fmt: skip
            latencies.append((time.perf_counter() - t0) * 1e3)
            n += 1
    out.put(latencies)


def measure(url: str, replicas: int, seconds: float) -> dict[str, float]:
    """One run with ``replicas`` appending processes on a fresh schema of ``url``."""
    import psycopg

    schema = f"contention_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    scoped = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    AuditLog(scoped).close()  # the tables, before the processes race for them
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[list[float]] = ctx.Queue()
    procs = [ctx.Process(target=_append_for, args=(scoped, seconds, w, out)) for w in range(replicas)]
    for p in procs:
        p.start()
    latencies = [x for _ in procs for x in out.get()]
    for p in procs:
        p.join()
    with AuditLog(scoped) as trail:
        report = trail.verify()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
    q = statistics.quantiles(latencies, n=100)
    return {
        "replicas": replicas,
        "appends": len(latencies),
        "per_s": len(latencies) / seconds,
        "p50_ms": q[49],
        "p99_ms": q[98],
        "chain_ok": float(report.ok and report.records == len(latencies)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database", help="postgresql:// URL (default: a private cluster)")
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args(argv)
    cluster = None
    url = args.database
    if not url:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        import pg_cluster

        cluster = pg_cluster.start()
        url = cluster.url
    try:
        print("replicas  appends  appends/s  p50 ms  p99 ms  chain")
        for n in args.replicas:
            r = measure(url, n, args.seconds)
            print(
                f"{n:8d}  {r['appends']:7.0f}  {r['per_s']:9.1f}  {r['p50_ms']:6.2f}  {r['p99_ms']:6.2f}  "
                f"{'ok' if r['chain_ok'] else 'BROKEN'}"
            )
    finally:
        if cluster is not None:
            cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
