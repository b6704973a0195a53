"""`blindscore bureau ...`: run the bureau, and verify or list its audit trail offline."""

from __future__ import annotations

import argparse
import csv
import logging
import os
import socket
import sys
from pathlib import Path

from blindscore.bureau.audit import AuditLog
from blindscore.bureau.claims import DEFAULT_LEASE_S, MAX_LEASE_S, MIN_LEASE_S
from blindscore.bureau.flow import BAND_PROTOCOLS, BureauNode
from blindscore.bureau.server import start_bureau_server
from blindscore.errors import PreconditionError
from blindscore.infra import command
from blindscore.infra.transport import host_port
from blindscore.infra.workers import run_workers

log = logging.getLogger("blindscore")

DATA_DIR = "blindscore-data/bureau"


def cmd_serve(args: argparse.Namespace) -> int:
    if args.workers > 1:
        return run_workers(args, "bureau")
    serving = command.ServeCommand(args, "bureau", args.bureau_id)
    metrics = serving.open()
    replica_id = args.replica_id or f"{socket.gethostname()}:{os.getpid()}"
    bureau = BureauNode.open(
        Path(args.data_dir),
        args.database,
        band_protocol=args.band_protocol,
        replica_id=replica_id,
        lease_s=args.lease_seconds,
    )
    server, port, channels = start_bureau_server(
        bureau, args.listen, security=serving.security, metrics=metrics, share_timings=args.share_timings
    )
    address = host_port(args.listen, port)
    log.info(
        "bureau replica %s listening on %s (models: %s)", replica_id, address, ", ".join(bureau.models.ids())
    )

    def stop() -> None:
        server.stop(grace=2).wait()
        bureau.close()
        channels.close()

    return serving.run(address, stop)


def _audit_log(data_dir: str, database: str | None = None) -> AuditLog:
    if database:
        return AuditLog(database)
    try:
        return AuditLog.in_data_dir(Path(data_dir))
    except PreconditionError as exc:
        raise command.CliError(str(exc)) from None


def cmd_audit_verify(args: argparse.Namespace) -> int:
    expected = None
    if args.expected_head:
        seq, _, digest = args.expected_head.partition(":")
        if not seq.isdigit() or len(digest) != 64:
            raise command.CliError(
                "--expected-head must look like SEQ:HASH (as printed by a previous verify)"
            )
        expected = (int(seq), digest)
    with _audit_log(args.data_dir, args.database) as trail:
        report = trail.verify(expected_head=expected)
        seq, digest = trail.head()
    if report.ok:
        print(f"audit trail intact: {report.records} records; head {seq}:{digest}")
        return 0
    print(f"audit trail BROKEN at record {report.first_bad_seq}: {report.reason}")
    return 1


def cmd_audit_list(args: argparse.Namespace) -> int:
    with _audit_log(args.data_dir, args.database) as trail:
        out = csv.writer(sys.stdout)
        out.writerow(
            ["seq", "at", "platform_id", "bank_id", "application_id", "consent_reference", "model_id",
             "model_version", "outcome", "duration_ms"]
        )  # fmt: skip
        for r in trail.records():
            out.writerow(
                [r.seq, r.at, r.platform_id, r.bank_id, r.application_id, r.consent_reference, r.model_id,
                 r.model_version, r.outcome, f"{r.duration_ms:.3f}"]
            )  # fmt: skip
    return 0


def _lease(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not MIN_LEASE_S <= value <= MAX_LEASE_S:
        raise argparse.ArgumentTypeError(f"must be between {MIN_LEASE_S} and {MAX_LEASE_S:.0f} seconds")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bureau serve`` and ``bureau audit verify|list`` to the top-level subparsers ``sub``."""
    bureau = command.command_group(sub, "bureau", "the credit bureau node")
    sp = command.serve_parser(bureau, "run the bureau's gRPC server", command.DEFAULT_BUREAU)
    sp.add_argument("--data-dir", default=DATA_DIR, help="models and bank registrations")
    sp.add_argument("--database", help=command.database_help("bureau", "applications.sqlite3"))
    sp.add_argument("--bureau-id", default="bureau-1", help="this bureau's party id (its certificate's name)")
    sp.add_argument(
        "--band-protocol",
        choices=BAND_PROTOCOLS,
        default="circuit",
        help="how a unary application of a linear model or scorecard gets its band: a garbled cutoff "
        "circuit (default, as every other model family) or the DGK comparison rounds",
    )
    sp.add_argument(
        "--replica-id",
        default="",
        help="this process's name among bureau replicas on one PostgreSQL database, recorded with "
        "each claim (default: host:pid)",
    )
    sp.add_argument(
        "--lease-seconds",
        type=_lease,
        default=DEFAULT_LEASE_S,
        help="how long a replica's claim on an application lasts unless renewed (every third of it); "
        f"a dead replica's work is taken over after it (default {DEFAULT_LEASE_S:.0f})",
    )
    command.share_timings_flag(sp, "bureau")
    sp.set_defaults(func=cmd_serve, role="bureau")
    audit = bureau.add_parser("audit", help="the bureau's hash-chained audit trail").add_subparsers(
        dest="audit_action", required=True, metavar="ACTION", help="verify or list"
    )
    sp = audit.add_parser("verify", help="check the hash chain: exit 0 if intact, 1 if not")
    command.store_flags(sp, "bureau", DATA_DIR, "applications.sqlite3 (or audit.sqlite3 from before 2026-12)")
    sp.add_argument("--expected-head", help="SEQ:HASH published earlier, to detect truncation")
    sp.set_defaults(func=cmd_audit_verify, role="bureau")
    sp = audit.add_parser("list", help="print the audit records as CSV")
    command.store_flags(sp, "bureau", DATA_DIR, "applications.sqlite3 (or audit.sqlite3 from before 2026-12)")
    sp.set_defaults(func=cmd_audit_list, role="bureau")
