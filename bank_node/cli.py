"""`blindscore bank ...`: run the bank, manage its key ring, read its results and its trust in bureaus."""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import time
from contextlib import closing
from pathlib import Path

from blindscore.bank_node.client import Band, BankClient
from blindscore.bank_node.flow import BankNode
from blindscore.bank_node.keyring import KEYS_DIR, BankKey, KeyRing
from blindscore.bank_node.server import KeyWatcher, register_keys, register_with_bureau, start_bank_server
from blindscore.bank_node.store import DEFAULT_MAX_FAULTS, DEFAULT_MAX_RUNS, ResultStore, RunLimits
from blindscore.crypto.keyfile import Passphrase, passphrase_from
from blindscore.errors import InvalidInputError
from blindscore.infra import command
from blindscore.infra.transport import host_port
from blindscore.infra.workers import run_workers

log = logging.getLogger("blindscore")

DATA_DIR = "blindscore-data/bank"
DATA_DIR_HELP = f"the bank's data directory, holding its key ring (default {DATA_DIR})"
PASSPHRASE_HELP = (
    "file holding the passphrase that encrypts the secret key files (mode 0600; "
    "default: $BLINDSCORE_KEY_PASSPHRASE, else unencrypted)"
)


def cmd_serve(args: argparse.Namespace) -> int:
    if args.workers > 1:
        return run_workers(args, "bank")
    serving = command.ServeCommand(args, "bank", args.bank_id)
    passphrase = passphrase_from(args.passphrase_file)
    try:  # before open(), so a refused limit leaves no data directory behind
        limits = RunLimits(max_runs=args.max_runs, max_faults=args.max_faults)
    except InvalidInputError as exc:
        raise command.CliError(f"--max-runs / --max-faults: {exc}") from None
    metrics = serving.open()
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
        node, args.listen, security=serving.security, metrics=metrics, share_timings=args.share_timings
    )
    address = args.advertise or host_port(args.listen, port)
    log.info("bank %s listening on %s with key %s", node.bank_id, address, node.key_id)
    if args.bureau:
        register_with_bureau(node, args.bureau, address, security=serving.security)

    def register(key: BankKey) -> object:
        return register_keys(node, [key], args.bureau, address, security=serving.security, attempts=1)

    # Picks up 'blindscore bank rotate-key' / 'retire-key' while serving; registers new keys.
    watcher = KeyWatcher(node, register=register if args.bureau else None)
    watcher.start()

    def stop() -> None:
        watcher.stop()
        server.stop(grace=2).wait()
        node.store.close()

    return serving.run(address, stop, key_id=node.key_id, bank_id=node.bank_id)


def _result_store(args: argparse.Namespace) -> ResultStore:
    """The bank's existing result store: --database when given, else results.sqlite3 under --data-dir."""
    path = Path(args.data_dir) / "results.sqlite3"
    if not args.database and not path.exists():
        raise command.CliError(f"no results database at {path}: is --data-dir the bank's data directory?")
    return ResultStore.open(args.database or path)


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))


def cmd_results(args: argparse.Namespace) -> int:
    with closing(_result_store(args)) as store:
        records = store.all()
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
                _utc(r.received_at),
                r.bureau_id,
            ]
        )
    return 0


_BAND_HEADER = ["platform_id", "application_id", "model_id", "band", "band_label", "received_at", "bureau_id"]


def _band_row(b: Band) -> list[object]:
    return [
        b.platform_id,
        b.application_id,
        b.model_id,
        b.band,
        b.band_label,
        _utc(b.received_at),
        b.bureau_id,
    ]


def _bank_client(args: argparse.Namespace) -> BankClient:
    if args.insecure and args.certs:
        raise command.CliError("give either --certs or --insecure, not both")
    if not args.insecure and not args.certs:
        raise command.CliError("--certs DIR is required: the PKI directory holding a bank-client certificate")
    return BankClient(
        args.bank,
        certs=args.certs,
        client_id=args.client_id,
        insecure=args.insecure,
        timeout=args.timeout or 30.0,
    )


def cmd_band(args: argparse.Namespace) -> int:
    with _bank_client(args) as client:
        band = client.band(args.id, args.platform_id)
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(_BAND_HEADER)
    out.writerow(_band_row(band))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise command.CliError("--count must be at least 1")
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(_BAND_HEADER)
    sys.stdout.flush()
    seen = 0
    with _bank_client(args) as client:
        for band in client.watch(args.since, timeout=args.timeout):
            out.writerow(_band_row(band))
            sys.stdout.flush()  # a reader downstream sees each band as it arrives
            seen += 1
            if args.count is not None and seen >= args.count:
                break
    return 0


def cmd_trust_show(args: argparse.Namespace) -> int:
    with closing(_result_store(args)) as store:
        out = csv.writer(sys.stdout)
        if args.faults:
            out.writerow(["bureau_id", "platform_id", "application_id", "check", "at"])
            for f in store.faults():
                out.writerow([f.bureau_id, f.platform_id, f.application_id, f.reason, _utc(f.at)])
        else:
            out.writerow(["bureau_id", "faults", "suspended", "updated_at"])
            for b in store.standing():
                out.writerow([b.bureau_id, b.faults, "yes" if b.suspended else "no", _utc(b.updated_at)])
    return 0


def cmd_trust_reset(args: argparse.Namespace) -> int:
    with closing(_result_store(args)) as store:
        if not store.reset_standing(args.bureau_id):
            raise command.CliError(f"the bank has no record of bureau {args.bureau_id!r}")
    log.warning("bureau %r: faults cleared, suspension lifted", args.bureau_id)
    print(f"bureau {args.bureau_id}: faults cleared; it may run the band protocol again")
    return 0


def _key_ring(args: argparse.Namespace, passphrase: Passphrase | None = None) -> KeyRing:
    return KeyRing(Path(args.data_dir) / KEYS_DIR, passphrase=passphrase)


def cmd_key_id(args: argparse.Namespace) -> int:
    ring = _key_ring(args)
    current = ring.current_id()
    if current is None:
        raise command.CliError(
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


def cmd_rotate_key(args: argparse.Namespace) -> int:
    ring = _key_ring(args, passphrase_from(args.passphrase_file))
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


def cmd_retire_key(args: argparse.Namespace) -> int:
    _key_ring(args).retire(args.key_id)
    print(f"retired {args.key_id}: the bank no longer answers applications under it")
    return 0


def cmd_encrypt_keys(args: argparse.Namespace) -> int:
    passphrase = passphrase_from(args.passphrase_file)
    if passphrase is None:
        raise command.CliError(
            "encrypt-keys needs a passphrase: give --passphrase-file or set BLINDSCORE_KEY_PASSPHRASE"
        )
    ring = _key_ring(args, passphrase)
    if not ring.ids():
        raise command.CliError(f"no keys in {ring.directory}")
    converted = ring.encrypt_all()
    for path in converted:
        print(f"encrypted {path}")
    if not converted:
        print("every key file was already encrypted with this passphrase")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bank serve``, ``bank trust ...``, ``bank results`` and the key commands to ``sub``."""
    bank = command.command_group(sub, "bank", "the bank node")
    sp = command.serve_parser(
        bank, "run the bank's gRPC server (creates keys on first start)", command.DEFAULT_BANK
    )
    sp.add_argument("--data-dir", default=DATA_DIR, help="keys and results")
    sp.add_argument("--database", help=command.database_help("bank", "results.sqlite3"))
    sp.add_argument("--bank-id", default="bank-1", help="this bank's party id (its certificate's name)")
    sp.add_argument(
        "--bureau", default=command.DEFAULT_BUREAU, help="bureau address to register with ('' to skip)"
    )
    sp.add_argument(
        "--advertise",
        help="address the bureau should call back on (default: the bound one); a comma-separated list "
        "names several bank replicas, which the bureau uses one at a time, failing over in order",
    )
    sp.add_argument(
        "--key-bits", type=int, default=2048, help="Paillier key size for a new key: 2048 or 3072"
    )
    sp.add_argument("--passphrase-file", help=PASSPHRASE_HELP)
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
    command.share_timings_flag(sp, "bank")
    sp.set_defaults(func=cmd_serve, role="bank")
    trust = bank.add_parser(
        "trust", help="bureaus' protocol faults and suspensions at this bank"
    ).add_subparsers(dest="trust_action", required=True, metavar="ACTION", help="show or reset")
    sp = trust.add_parser("show", help="print each bureau's fault count and whether it is suspended, as CSV")
    command.store_flags(sp, "bank", DATA_DIR, "results.sqlite3")
    sp.add_argument("--faults", action="store_true", help="print the fault records instead")
    sp.set_defaults(func=cmd_trust_show, role="bank")
    sp = trust.add_parser(
        "reset", help="clear a bureau's faults and lift its suspension (after investigating)"
    )
    sp.add_argument(
        "bureau_id", metavar="BUREAU_ID", help="the bureau's party id, as 'bank trust show' prints"
    )
    command.store_flags(sp, "bank", DATA_DIR, "results.sqlite3")
    sp.set_defaults(func=cmd_trust_reset, role="bank")
    sp = bank.add_parser("results", help="print the bands the bank has learned, as CSV")
    command.store_flags(sp, "bank", DATA_DIR, "results.sqlite3")
    sp.set_defaults(func=cmd_results, role="bank")

    def client_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--bank",
            default=command.DEFAULT_BANK,
            metavar="HOST:PORT",
            help="the running bank node's address",
        )
        sp.add_argument("--certs", metavar="DIR", help="PKI directory holding the bank-client certificate")
        sp.add_argument("--client-id", help="the certificate's id (default: DIR's only bank-client)")
        sp.add_argument(
            "--insecure", action="store_true", help="plaintext, to a node started with --insecure"
        )

    sp = bank.add_parser(
        "band", help="print the band of one application, asked of the running bank as a bank-client"
    )
    client_flags(sp)
    sp.add_argument("--id", required=True, help="the application id")
    sp.add_argument("--platform-id", default="", help="the platform it came from (when several used the id)")
    sp.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer (default 30)")
    sp.set_defaults(func=cmd_band, role="bank")
    sp = bank.add_parser(
        "watch", help="print bands as CSV as the running bank learns them (from --since on), until stopped"
    )
    client_flags(sp)
    sp.add_argument(
        "--since",
        type=float,
        default=0.0,
        help="epoch seconds: start with the bands received from then on (default 0: every band)",
    )
    sp.add_argument("--count", type=int, help="stop after this many bands (default: never)")
    sp.add_argument(
        "--timeout", type=float, help="stop with an error after this many seconds (default never)"
    )
    sp.set_defaults(func=cmd_watch, role="bank")
    sp = bank.add_parser("key-id", help="print the bank's current key id (platforms name it in applications)")
    sp.add_argument("--data-dir", default=DATA_DIR, help=DATA_DIR_HELP)
    sp.add_argument("--all", action="store_true", help="list every key in the ring, marking the current one")
    sp.set_defaults(func=cmd_key_id, role="bank")
    sp = bank.add_parser("rotate-key", help="make a new current key; older keys stay until retired")
    sp.add_argument("--data-dir", default=DATA_DIR, help=DATA_DIR_HELP)
    sp.add_argument("--key-bits", type=int, default=2048, help="Paillier key size: 2048 (default) or 3072")
    sp.add_argument("--passphrase-file", help=PASSPHRASE_HELP)
    sp.set_defaults(func=cmd_rotate_key, role="bank")
    sp = bank.add_parser("retire-key", help="delete an old (not the current) key from the ring")
    sp.add_argument("key_id", metavar="KEY_ID", help="the key to delete, as 'bank key-id --all' prints")
    sp.add_argument("--data-dir", default=DATA_DIR, help=DATA_DIR_HELP)
    sp.set_defaults(func=cmd_retire_key, role="bank")
    sp = bank.add_parser("encrypt-keys", help="encrypt plaintext secret key files in place with a passphrase")
    sp.add_argument("--data-dir", default=DATA_DIR, help=DATA_DIR_HELP)
    sp.add_argument("--passphrase-file", help=PASSPHRASE_HELP)
    sp.set_defaults(func=cmd_encrypt_keys, role="bank")
