"""Cluster harness: 3 bureau, 2 bank and 2 platform processes on one PostgreSQL, replicas killed -9.

    python scripts/cluster.py --applications 3000 [--database postgresql://...] [--seed N] [--json]

The crash test (scripts/crash.py) run as a cluster: every role is several processes on one
PostgreSQL database over loopback (the bureau's replicas claim applications with leases, the
banks share one key ring and result store, the platforms one outbox), and the clients, half of them
unary and half streaming, name the platforms as one address list. Kills hit a replica of a role
drawn from the seed (``--kill``, default each role twice), which is restarted on its port with its
data. The report counts lost, duplicated (by the bank's delivery count) and wrong results, and the
audit chain must verify; see scripts/crash.py for what each line means.

Without ``--database`` a private PostgreSQL cluster is started for the run from the installed server
binaries (tests/pg_cluster.py, as the test suite does) and removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

from blindscore.errors import InvalidInputError

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    # Run as `python scripts/cluster.py`: the crash harness is imported as scripts.crash, as the
    # tests import it, so the checkout's root goes on the path.
    sys.path.insert(0, str(ROOT))
from scripts.crash import run_crash  # noqa: E402

DEFAULT_KILLS = "bureau,bank,platform,bureau,bank,platform"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/cluster.py", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--applications", type=int, default=3000)
    p.add_argument("--clients", type=int, default=6, help="half unary, half streaming")
    p.add_argument("--database", help="postgresql:// URL (default: a private cluster for this run)")
    p.add_argument("--bureaus", type=int, default=3)
    p.add_argument("--banks", type=int, default=2)
    p.add_argument("--platforms", type=int, default=2)
    p.add_argument("--kill", default=DEFAULT_KILLS, help="roles whose replicas are killed -9, in order")
    p.add_argument("--seed", type=int)
    p.add_argument("--key-bits", type=int, default=2048)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with ExitStack() as stack:
        database = args.database
        if not database:
            sys.path.insert(0, str(ROOT / "tests"))
            import pg_cluster

            try:
                cluster = pg_cluster.start()
            except pg_cluster.NoPostgres as exc:
                print(f"cluster: error: {exc}; or give --database", file=sys.stderr)
                return 2
            stack.callback(cluster.stop)
            database = cluster.url
        try:
            report = run_crash(
                applications=args.applications,
                clients=args.clients,
                database=database,
                kill_order=tuple(x for x in args.kill.split(",") if x),
                seed=args.seed,
                key_bits=args.key_bits,
                path="mixed",
                replicas={"bureau": args.bureaus, "bank": args.banks, "platform": args.platforms},
            )
        except InvalidInputError as exc:
            print(f"cluster: error: {exc}", file=sys.stderr)
            return 2
    print(json.dumps({**asdict(report), "ok": report.ok}) if args.json else report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
