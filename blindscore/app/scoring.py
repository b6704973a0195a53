"""`blindscore score`: run every row of a CSV through the three-node protocol and write the bands."""

from __future__ import annotations

import csv
import io
import re
import sys
import tempfile
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path

from tqdm import tqdm

from blindscore._files import write_atomic
from blindscore.app.client import score_applications
from blindscore.app.localnet import LocalNetwork
from blindscore.app.plugins import modules_for
from blindscore.app.rejects import Rejected, check_policy, reason_of, write_rejects
from blindscore.app.tables import read_rows
from blindscore.bank_node.store import BandRecord, ResultStore
from blindscore.crypto.paillier import check_key_bits
from blindscore.errors import BlindscoreError, InvalidInputError
from blindscore.importers import AUTO, ImportOptions, read_model
from blindscore.models.contract import PrivateModel
from blindscore.protocol import limits
from blindscore.protocol.application import Application, FeatureValue, check_id


def model_id_of(text: str) -> str:
    """A model id made from a name or a file stem: the characters ids allow, at most 100."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"
    return stem[:100]


def _model_id(path: Path) -> str:
    return model_id_of(path.stem)


def _consent_reference(input_path: Path) -> str:
    """The consent reference of every row: the input file's name, cut to the input limits."""
    name = "".join(c for c in input_path.name if unicodedata.category(c) not in limits.REFUSED_CATEGORIES)
    return f"blindscore-score:{name}"[: limits.MAX_CONSENT_CHARS]


def run_encrypted(
    model: PrivateModel,
    model_id: str,
    ids: Sequence[str],
    rows: Sequence[Mapping[str, FeatureValue | None]],
    *,
    key_bits: int = 2048,
    consent_reference: str = "blindscore",
    desc: str = "scoring",
) -> dict[str, BandRecord]:
    """Score ``rows`` through bureau, bank and platform as three local processes over mTLS.

    Returns the bank's stored band record per application id; raises if any row failed.
    """
    with (
        tempfile.TemporaryDirectory(prefix="blindscore-score-") as tmp,
        LocalNetwork(
            Path(tmp), key_bits=key_bits, models={model_id: model}, model_modules=modules_for(model)
        ) as net,
    ):
        apps = [
            Application(
                application_id=app_id,
                bank_id=net.bank_id,
                model_id=model_id,
                key_id=net.key_id,
                consent_reference=consent_reference,
                features=dict(row),
            )
            for app_id, row in zip(ids, rows, strict=True)
        ]
        with tqdm(total=len(apps), unit="row", desc=desc, file=sys.stderr, leave=False) as bar:
            outcomes = score_applications(
                net.platform_address, apps, on_outcome=lambda o: bar.update(), security=net.client_security
            )
        store = ResultStore(net.bank_dir / "results.sqlite3")
        records = {r.application_id: r for r in store.all()}
        store.close()
    failed = [o for o in outcomes if not o.accepted]
    if failed:
        raise BlindscoreError(
            f"{len(failed)} rows failed; first {failed[0].application_id}: {failed[0].error}"
        )
    return records


def score_csv(
    *,
    model_path: Path,
    input_path: Path,
    output_path: Path,
    cutoffs: tuple[float, ...] | None,
    labels: tuple[str, ...] | None,
    id_column: str | None,
    key_bits: int = 2048,
    fmt: str = AUTO,
    feature_ranges: tuple[tuple[str, float, float], ...] | None = None,
    feature_grids: tuple[tuple[str, str], ...] | None = None,
    on_invalid: str = "stop",
    rejects_path: Path | None = None,
    bands_on: str | None = None,
) -> int:
    """Score ``input_path`` into ``output_path``; returns the exit status.

    ``on_invalid="stop"``: the first row the model's encoding refuses ends the run, nothing written.
    ``"skip"``: such rows go to ``rejects_path`` (their cells and a reason) and the others are scored;
    0 when every valid row got its band, 1 when no row was valid (both files are written then too).
    """
    check_key_bits(key_bits)
    check_policy(on_invalid, rejects_path, others={"--input": input_path, "--output": output_path})
    model_id = _model_id(model_path)
    if not cutoffs and (fmt == "skops" or (fmt == AUTO and model_path.suffix.lower() == ".skops")):
        # The importer's fallback (one cutoff at 0.5) is no band policy anyone chose.
        raise InvalidInputError(
            f"--model {model_path}: a scikit-learn model carries no band cutoffs; pass --cutoffs, "
            "ascending, on predict_proba[:,1] for a classifier or predict for a regressor "
            "(e.g. --cutoffs 0.1,0.2,0.4)"
        )
    # Every format `blindscore model import` reads: skops, our JSON models, scorecard exports.
    options = ImportOptions(
        cutoffs or None,
        labels or None,
        bands_on=bands_on,
        feature_ranges=feature_ranges,
        feature_grids=feature_grids,
    )
    model = read_model(model_path, options, fmt=fmt, name=model_id)
    header, cells = read_rows(input_path)
    # An empty cell is a missing value, as in a DataFrame read from the same file (blindscore.score).
    rows = [{k: (v if v != "" else None) for k, v in row.items()} for row in cells]
    missing = [name for name in model.spec.input_names if name not in header]
    if missing:
        raise InvalidInputError(
            f"--input {input_path}: missing column(s) the model needs: {', '.join(missing)}"
        )
    if id_column is not None and id_column not in header:
        raise InvalidInputError(f"--id-column {id_column!r} is not a column of {input_path}")
    ids = [(row[id_column] or "") if id_column else f"row-{i + 1}" for i, row in enumerate(rows)]
    if len(set(ids)) != len(ids):
        raise InvalidInputError(f"--id-column {id_column!r} has duplicate values")
    # Check every row before any node starts, so a bad row costs nothing and writes nothing. The
    # check is the platform's own: the model's public encoding of the row.
    valid: list[int] = []
    rejected: list[Rejected] = []
    for i, app_id in enumerate(ids):
        where = f"row {i + 1}"
        try:
            # the input limits, then the nodes' narrower id rule
            check_id("application id", limits.check_id(f"application id in column {id_column!r}", app_id))
            where = f"row {i + 1} ({app_id})"  # named by its id once the id is known to be sound
            model.spec.encode_row({k: rows[i][k] for k in model.spec.input_names})
        except InvalidInputError as exc:
            if on_invalid == "stop":
                raise InvalidInputError(f"--input {input_path}, {where}: {exc}") from None
            rejected.append(Rejected(i + 1, rows[i], reason_of(exc)))
        else:
            valid.append(i)
    records = (
        run_encrypted(
            model,
            model_id,
            [ids[i] for i in valid],
            [{k: rows[i][k] for k in model.spec.input_names} for i in valid],
            key_bits=key_bits,
            consent_reference=_consent_reference(input_path),
        )
        if valid
        else {}
    )
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["application_id", "band", "band_label"])
    for app_id in (ids[i] for i in valid):
        rec = records.get(app_id)
        if rec is None:
            raise BlindscoreError(f"no band was stored for {app_id}; nothing written")
        out.writerow([app_id, rec.band, rec.band_label])
    if rejects_path is not None:
        write_rejects(rejects_path, header, rejected)
    write_atomic(output_path, buf.getvalue().encode())
    print(f"wrote {len(valid)} bands to {output_path}", file=sys.stderr)
    if rejects_path is not None:
        print(f"skipped {len(rejected)} invalid rows, written to {rejects_path}", file=sys.stderr)
    if not valid:
        print("no row was valid: nothing was scored", file=sys.stderr)
        return 1
    return 0
