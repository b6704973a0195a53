"""``serve --workers N``: N processes of one node on one port and one database, kept running.

Python's GIL keeps one process near one core. A node whose processes can share its store (the
replicas of :data:`blindscore.infra.lock.SHARING_ROLES`, on PostgreSQL) runs as N worker
processes instead: each is an ordinary ``serve`` process (its own replica id, its own claims), and
all bind the same port with ``SO_REUSEPORT``, so the kernel spreads incoming connections over
them. This process only supervises: it starts the workers (this command again, with ``--workers
1``, as separate ``python -m blindscore`` processes: gRPC must not be initialised before a fork),
writes the ready file once every worker serves, restarts a worker that dies (after a short pause,
so a worker that cannot start does not spin), and on SIGTERM or SIGINT stops them all.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from blindscore._files import write_json
from blindscore.errors import BlindscoreError
from blindscore.infra.db import parse_target

log = logging.getLogger("blindscore")

#: Largest --workers: more processes than this on one machine is a deployment mistake.
MAX_WORKERS = 64
#: How long every worker has to start serving before the start is given up.
START_TIMEOUT_S = 120.0
#: Pause before a dead worker is started again.
RESTART_DELAY_S = 1.0
#: How long a worker has to stop after SIGTERM before it is killed.
STOP_TIMEOUT_S = 10.0
#: prctl option: the signal a process gets when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


class WorkersError(BlindscoreError):
    """``--workers`` cannot be used as given (a role or store that cannot be shared, port 0)."""


def check_workers(args: argparse.Namespace, role: str) -> None:
    """Refuse ``--workers N`` (N > 1) where N processes could not safely share the node's state."""
    from blindscore.infra.lock import SHARING_ROLES

    n = args.workers
    if not isinstance(n, int) or not 1 <= n <= MAX_WORKERS:
        raise WorkersError(f"--workers must be 1..{MAX_WORKERS}, got {n!r}")
    if n == 1:
        return
    if role not in SHARING_ROLES:
        shared = ", ".join(sorted(SHARING_ROLES)) or "none"
        raise WorkersError(
            f"--workers {n}: the {role}'s processes cannot share one store yet "
            f"(roles with replicas: {shared})"
        )
    if not args.database or parse_target(args.database)[0] != "postgresql":
        raise WorkersError(
            f"--workers {n}: the {role}'s worker processes share its state through PostgreSQL; "
            "give --database postgresql://..."
        )
    port = args.listen.rpartition(":")[2]
    if not port.isdigit() or int(port) == 0:
        raise WorkersError(
            f"--workers {n} needs a fixed port to share (--listen HOST:PORT), not {args.listen!r}"
        )


def run_workers(args: argparse.Namespace, role: str) -> int:
    """Supervise ``args.workers`` processes, each this command again with ``--workers 1`` on the
    shared port (``args.argv``: the command line as given, set by the CLI); returns when stopped."""
    check_workers(args, role)
    argv = list(getattr(args, "argv", None) or sys.argv[1:])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with tempfile.TemporaryDirectory(prefix=f"blindscore-{role}-workers-") as tmp:

        def start(k: int) -> subprocess.Popen[bytes]:
            ready = Path(tmp) / f"worker-{k}.json"
            ready.unlink(missing_ok=True)
            extra = ["--workers", "1", "--reuse-port", "--ready-file", str(ready)]
            if args.metrics_port:  # one metrics endpoint per worker: PORT, PORT + 1, ...
                extra += ["--metrics-port", str(args.metrics_port + k)]
            cmd = [sys.executable, "-m", "blindscore", *argv, *extra]
            return subprocess.Popen(cmd, preexec_fn=_die_with_parent)

        procs = [start(k) for k in range(args.workers)]
        try:
            ready = _wait_ready(procs, Path(tmp), stop)
            if ready is None:
                return 0 if stop.is_set() else 2
            pids = [p.pid for p in procs]
            log.info("%s: %d workers serving on %s (pids %s)", role, len(procs), args.listen, pids)
            if args.ready_file:
                # The first worker's facts (address, the bank's key id ...) and every worker's pid.
                write_json(Path(args.ready_file), {**ready[0], "role": role, "workers": pids})
            while not stop.wait(0.5):
                for k, p in enumerate(procs):
                    if p.poll() is not None and not stop.is_set():
                        log.warning(
                            "%s worker %d (pid %d) exited with %s; restarting", role, k, p.pid, p.returncode
                        )
                        if stop.wait(RESTART_DELAY_S):
                            break
                        procs[k] = start(k)
            return 0
        finally:
            _stop_all(procs)


def _die_with_parent() -> None:
    """In a new worker, before it runs: SIGTERM when the supervisor dies, however it dies (kill -9
    included), so no orphaned worker keeps serving the port beside a restarted supervisor's."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_ready(
    procs: list[subprocess.Popen[bytes]], tmp: Path, stop: threading.Event
) -> list[dict[str, object]] | None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not stop.is_set() and time.monotonic() < deadline:
        dead = [k for k, p in enumerate(procs) if p.poll() is not None]
        if dead:
            code = procs[dead[0]].returncode
            log.error("worker %d exited before it served (exit code %s): see its log above", dead[0], code)
            return None
        files = [tmp / f"worker-{k}.json" for k in range(len(procs))]
        if all(f.exists() for f in files):
            return [json.loads(f.read_text()) for f in files]
        stop.wait(0.1)
    if not stop.is_set():
        log.error("the workers did not all serve within %.0f s", START_TIMEOUT_S)
    return None


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()  # SIGTERM: the worker stops its server and closes its stores
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
