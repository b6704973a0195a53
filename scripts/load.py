"""Load test: N concurrent platform clients against three local node processes for a fixed time.

Each client thread keeps one channel to the platform node and submits German credit applications
one after another (unique ids) until the time is up, or (``--stream``) keeps one stream full so
that the platform scores them in packed batches. The run reports throughput, latency
percentiles, every error by status, and the resident memory of each node process sampled once a
second, so "no errors, memory flat" is a measured statement. Bounded in count and time, loopback
only.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import grpc
import numpy as np

from blindscore.app.client import _CODE_NAMES, PlatformClient
from blindscore.app.localnet import LocalNetwork
from blindscore.data.german import DEFAULT_MODEL_ID, load_german_credit
from blindscore.errors import InvalidInputError
from blindscore.infra.transport import open_channel
from blindscore.protocol.application import Application
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc
from blindscore.wire import serde

#: A client stops submitting after this many applications even if time remains (a safety bound).
MAX_PER_CLIENT = 1_000_000
#: Applications a streaming client keeps outstanding.
STREAM_IN_FLIGHT = 256


def rss_mib(pid: int) -> float:
    """Resident set size of a process in MiB, from /proc (Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except FileNotFoundError:
        pass
    return float("nan")


@dataclass(frozen=True)
class LoadReport:
    clients: int
    duration_s: float
    applications: int
    errors: dict[str, int]
    apps_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    rss_start_mib: dict[str, float]
    rss_end_mib: dict[str, float]
    rss_max_mib: dict[str, float]
    rss_growth_mib: dict[str, float]
    #: (seconds into the measured run, applications completed, RSS MiB per node), once a minute.
    rss_trend: list[tuple[float, int, dict[str, float]]]

    def format(self) -> str:
        lines = [
            f"{self.clients} clients for {self.duration_s:.0f} s: {self.applications} applications, "
            f"{self.apps_per_s:.1f}/s, errors {sum(self.errors.values())} {self.errors or ''}".rstrip(),
            f"latency ms: p50 {self.p50_ms:.1f}  p90 {self.p90_ms:.1f}  p99 {self.p99_ms:.1f}  "
            f"max {self.max_ms:.1f}",
        ]
        for role in self.rss_start_mib:
            lines.append(
                f"{role:>8} RSS MiB: start {self.rss_start_mib[role]:.1f}  end {self.rss_end_mib[role]:.1f}  "
                f"max {self.rss_max_mib[role]:.1f}  growth {self.rss_growth_mib[role]:+.1f}"
            )
        return "\n".join(lines)


def run_load(
    *,
    clients: int = 8,
    duration_s: float = 60.0,
    warmup_s: float = 5.0,
    key_bits: int = 2048,
    workdir: Path | None = None,
    stream: bool = False,
) -> LoadReport:
    """Start the three nodes, warm up, then load them with ``clients`` threads for ``duration_s``.

    ``stream``: each client keeps one ScoreApplications stream full instead of unary calls, so the
    platform scores in packed batches.
    """
    if not 1 <= clients <= 64:
        raise InvalidInputError("--clients must be between 1 and 64")
    if not 1.0 <= duration_s <= 3600.0:
        raise InvalidInputError("--duration must be between 1 and 3600 seconds")
    rows, _ = load_german_credit()
    with TemporaryDirectory(prefix="blindscore-load-") as tmp:
        net = LocalNetwork(workdir or Path(tmp), key_bits=key_bits)
        with net:
            pids = net.pids()
            latencies: list[float] = []
            errors: Counter[str] = Counter()
            lock = threading.Lock()
            stop = threading.Event()
            measuring = threading.Event()

            def application(c: int, i: int) -> Application:
                return Application(
                    application_id=f"load-{c}-{i}",
                    bank_id=net.bank_id,
                    model_id=DEFAULT_MODEL_ID,
                    key_id=net.key_id,
                    consent_reference=f"load-test-{c}",
                    features=rows[(c * 7919 + i) % len(rows)],
                )

            def client(c: int) -> None:
                """Unary calls, one application after another."""
                with PlatformClient(net.platform_address, security=net.client_security) as pc:
                    for i in range(MAX_PER_CLIENT):
                        if stop.is_set():
                            return
                        t0 = time.perf_counter()
                        try:
                            outcome = pc.score(application(c, i), timeout=60)
                            failure = "" if outcome.accepted else outcome.error.split(":", 1)[0]
                        except grpc.RpcError as exc:
                            failure = exc.code().name if exc.code() else "UNKNOWN"
                        record(failure, (time.perf_counter() - t0) * 1e3)

            def record(failure: str, elapsed: float) -> None:
                if measuring.is_set():
                    with lock:
                        if failure:
                            errors[failure] += 1
                        else:
                            latencies.append(elapsed)

            def stream_client(c: int) -> None:
                """One ScoreApplications stream per client: the platform packs what queues up."""
                sent: dict[str, float] = {}
                # A client keeps STREAM_IN_FLIGHT applications outstanding, as a real one would,
                # rather than filling gRPC's buffers (latency would then be queueing in them).
                window = threading.Semaphore(STREAM_IN_FLIGHT)

                def requests() -> Iterator[pb.ScoreRequest]:
                    for i in range(MAX_PER_CLIENT):
                        while not window.acquire(timeout=0.5):
                            if stop.is_set():
                                return
                        if stop.is_set():
                            return
                        app = application(c, i)
                        sent[app.application_id] = time.perf_counter()
                        yield serde.application_to_proto(app)

                with open_channel(net.platform_address, security=net.client_security) as channel:
                    stub: Any = pb_grpc.PlatformStub(channel)
                    try:
                        for receipt in stub.ScoreApplications(
                            requests(), timeout=duration_s + warmup_s + 600
                        ):
                            window.release()
                            started = sent.pop(receipt.application_id, None)
                            elapsed = (time.perf_counter() - started) * 1e3 if started else float("nan")
                            failure = (
                                "" if receipt.accepted else _CODE_NAMES.get(receipt.error_code, "UNKNOWN")
                            )
                            record(failure, elapsed)
                    except grpc.RpcError as exc:
                        record(exc.code().name if exc.code() else "UNKNOWN", float("nan"))

            target = stream_client if stream else client
            threads = [threading.Thread(target=target, args=(c,), daemon=True) for c in range(clients)]
            for t in threads:
                t.start()
            time.sleep(warmup_s)
            samples: dict[str, list[float]] = {role: [] for role in pids}
            trend: list[tuple[float, int, dict[str, float]]] = []
            measuring.set()
            t_start = time.perf_counter()
            while (elapsed_s := time.perf_counter() - t_start) < duration_s:
                for role, pid in pids.items():
                    samples[role].append(rss_mib(pid))
                if len(samples[next(iter(pids))]) % 60 == 1:
                    with lock:
                        done_now = len(latencies)
                    trend.append((round(elapsed_s, 1), done_now, {r: s[-1] for r, s in samples.items()}))
                time.sleep(min(1.0, max(0.0, duration_s - elapsed_s)))
            measuring.clear()
            stop.set()
            measured = time.perf_counter() - t_start
            for t in threads:
                t.join(timeout=120)
            for role, pid in pids.items():
                samples[role].append(rss_mib(pid))
    lat = np.array([x for x in latencies if x == x] or [float("nan")])
    return LoadReport(
        clients=clients,
        duration_s=measured,
        applications=len(latencies),
        errors=dict(errors),
        apps_per_s=len(latencies) / measured,
        p50_ms=float(np.percentile(lat, 50)),
        p90_ms=float(np.percentile(lat, 90)),
        p99_ms=float(np.percentile(lat, 99)),
        max_ms=float(np.max(lat)),
        rss_start_mib={r: s[0] for r, s in samples.items()},
        rss_end_mib={r: s[-1] for r, s in samples.items()},
        rss_max_mib={r: max(s) for r, s in samples.items()},
        rss_growth_mib={r: s[-1] - s[0] for r, s in samples.items()},
        rss_trend=trend,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/load.py", description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--duration", type=float, default=60.0, help="measured seconds (after warm-up)")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--key-bits", type=int, default=2048)
    p.add_argument("--stream", action="store_true", help="one stream per client (packed batches)")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    args = p.parse_args(argv)
    try:
        report = run_load(
            clients=args.clients,
            duration_s=args.duration,
            warmup_s=args.warmup,
            key_bits=args.key_bits,
            stream=args.stream,
        )
    except InvalidInputError as exc:
        print(f"load: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(report)) if args.json else report.format())
    return 1 if report.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
