"""The public Python API for notebooks and scripts: score, verify, report, bench, load_model."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from blindscore.app.model_commands import Verification, compare_bands, fixed_point_check
from blindscore.app.rejects import Rejected, check_policy, header_of, reason_of, write_rejects
from blindscore.app.tables import Data, Row, load_rows
from blindscore.crypto.paillier import check_key_bits
from blindscore.errors import EncodingError, InvalidInputError
from blindscore.importers import AUTO, ImportOptions, read_model
from blindscore.models.contract import PrivateModel
from blindscore.protocol import limits
from blindscore.protocol.application import check_id

#: What the functions take as a model: a model object (any registered type), a model file that
#: ``blindscore model import`` reads, or a fitted scikit-learn estimator or Pipeline.
ModelLike = Any  # PrivateModel | str | Path | sklearn estimator


def load_model(
    model: ModelLike,
    *,
    cutoffs: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    format: str = AUTO,
    name: str | None = None,
    bands_on: str | None = None,
) -> PrivateModel:
    """``model`` as a blindscore model.

    A :class:`~blindscore.models.contract.PrivateModel` is returned as it is (it carries its own
    bands; ``cutoffs`` is refused). A path is read like ``blindscore model import`` reads it. A
    fitted scikit-learn estimator or Pipeline goes through the same vetted skops reader as a
    ``.skops`` file; it carries no bands, so ``cutoffs`` (on ``predict_proba[:, 1]`` for a
    classifier, ``predict`` for a regressor) are required, as they are for a skops file.
    ``bands_on`` ("probability" or "raw", as ``--bands-on``) says what the cutoffs apply to; by
    default a classifier's probability and a regression model's raw prediction.
    """
    if isinstance(model, PrivateModel):
        if cutoffs is not None or labels is not None or bands_on is not None:
            raise InvalidInputError(
                f"model {model.name!r} carries its own band policy; cutoffs, labels and bands_on apply to "
                "model files and estimators only"
            )
        return model
    if bands_on not in (None, "probability", "raw"):
        raise InvalidInputError(f"bands_on must be 'probability' or 'raw', not {bands_on!r}")
    options = ImportOptions(
        tuple(cutoffs) if cutoffs else None, tuple(labels) if labels else None, bands_on=bands_on
    )
    if isinstance(model, str | Path):
        path = Path(model)
        if not cutoffs and (format == "skops" or (format == AUTO and path.suffix.lower() == ".skops")):
            raise InvalidInputError(
                f"{path}: a scikit-learn model carries no band cutoffs; pass cutoffs=[...]"
            )
        return read_model(path, options, fmt=format, name=name or _model_name(path.stem))
    if not (hasattr(model, "fit") and hasattr(model, "get_params")):
        raise InvalidInputError(
            f"model must be a blindscore model, a model file path or a fitted scikit-learn estimator, "
            f"not {type(model).__name__}"
        )
    if not cutoffs:
        raise InvalidInputError(
            f"a {type(model).__name__} carries no band cutoffs; pass cutoffs=[...], ascending, on "
            "predict_proba[:, 1] for a classifier or predict for a regressor"
        )
    import skops.io as sio

    with tempfile.TemporaryDirectory(prefix="blindscore-model-") as tmp:
        path = Path(tmp) / "estimator.skops"
        sio.dump(model, path)
        return read_model(path, options, fmt="skops", name=name or _model_name(type(model).__name__))


def score(
    data: Data,
    model: ModelLike,
    *,
    cutoffs: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    bands_on: str | None = None,
    id_column: str | None = None,
    key_bits: int = 2048,
    format: str = AUTO,
    as_frame: bool = True,
    on_invalid: str = "stop",
    rejects: str | Path | None = None,
) -> Any:
    """Score every row of ``data`` through three local node processes over mutual TLS (platform,
    bureau, bank on loopback, stopped afterwards) and return the bands the bank learned.

    ``data``: a pandas DataFrame, a CSV or Parquet path, or a list of dicts; the model's features
    are matched by column name, other columns are ignored. ``model``, ``cutoffs``, ``labels`` and
    ``bands_on``: see :func:`load_model`.
    ``id_column`` names the application ids (default ``row-1``, ``row-2``, ...). Every row is
    checked before any node starts. Returns a DataFrame with columns ``application_id``, ``band``
    and ``band_label`` in input order (a list of dicts with ``as_frame=False``, needing no pandas).

    ``on_invalid="stop"`` (default) raises on the first row the model's public encoding refuses (an
    empty cell without an imputer, an unseen category, a value outside its range, not a number),
    naming the row and column, before any node starts. ``on_invalid="skip"`` with ``rejects=PATH``
    leaves such rows out of the result and writes them to that CSV: their cells and a ``reason``.
    """
    from blindscore.app.scoring import run_encrypted

    check_key_bits(key_bits)
    rejects_path = Path(rejects) if rejects is not None else None
    others = {"data": Path(data)} if isinstance(data, str | Path) else {}
    check_policy(on_invalid, rejects_path, flags=("on_invalid", "rejects"), others=others)
    chosen = load_model(model, cutoffs=cutoffs, labels=labels, bands_on=bands_on, format=format)
    rows = load_rows(data)
    rejected: list[Rejected] = []
    ids, features = _prepare(chosen, rows, id_column, rejected if on_invalid == "skip" else None)
    records = (
        run_encrypted(
            chosen,
            _model_name(chosen.name),
            ids,
            features,
            key_bits=key_bits,
            consent_reference="blindscore-api",
        )
        if ids
        else {}
    )
    if rejects_path is not None:
        write_rejects(rejects_path, header_of(rows), rejected)
    out = [{"application_id": i, "band": records[i].band, "band_label": records[i].band_label} for i in ids]
    return _frame(out) if as_frame else out


def verify(
    data: Data,
    model: ModelLike,
    *,
    cutoffs: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    bands_on: str | None = None,
    key_bits: int = 2048,
    format: str = AUTO,
    limit: int | None = None,
) -> Verification:
    """Score ``data`` through three local nodes as :func:`score` does and compare every band with
    the plaintext model's (``blindscore model verify``). ``result.ok`` is False when a band differs
    outside the model's proven error margin; ``result.disagreements`` names those rows."""
    from blindscore.app.scoring import run_encrypted

    check_key_bits(key_bits)
    chosen = load_model(model, cutoffs=cutoffs, labels=labels, bands_on=bands_on, format=format)
    rows = load_rows(data)
    if limit is not None:
        if type(limit) is not int or limit < 1:
            raise InvalidInputError(f"limit must be a positive integer, not {limit!r}")
        rows = rows[:limit]
    ids, features = _prepare(chosen, rows, None)
    fixed_point_check(chosen, features)
    records = run_encrypted(
        chosen, _model_name(chosen.name), ids, features, key_bits=key_bits, consent_reference="blindscore-api"
    )
    return compare_bands(chosen, ids, features, {k: r.band for k, r in records.items()})


def report(
    data: Data,
    model: ModelLike,
    target: str,
    *,
    bad: object = None,
    cutoffs: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    bands_on: str | None = None,
    format: str = AUTO,
    png: str | Path | None = None,
) -> Any:
    """The band table of ``model`` on ``data`` against the outcome column ``target`` (plaintext, no
    nodes; ``blindscore model report``): counts, bad rates, cumulative shares, KS, AUC. ``bad``: the
    value of ``target`` that marks a bad outcome (default 1/"bad"/True-like). With ``png``, also
    writes the chart there. Returns a :class:`blindscore.app.report.BandTable` (``.format()``
    prints it)."""
    from blindscore.app.report import band_table, write_png

    chosen = load_model(model, cutoffs=cutoffs, labels=labels, bands_on=bands_on, format=format)
    rows = load_rows(data)
    if any(target not in row for row in rows):
        raise InvalidInputError(f"target {target!r} is not a column of the data")
    outcomes = _outcomes([row[target] for row in rows], target, bad)
    _, features = _prepare(chosen, rows, None)
    try:
        table = band_table(chosen, features, outcomes)
    except EncodingError as exc:
        raise InvalidInputError(str(exc)) from None
    if png is not None:
        write_png(table, Path(png))
    return table


def bench(
    workload: str, *, key_bits: int = 2048, applications: int | None = None, band_protocol: str = "circuit"
) -> dict[str, Any]:
    """Run a benchmark workload (one of ``blindscore.app.bench.WORKLOADS``: ``online``, ``batch``,
    ``german``, ``naive``, ``trees``, ``trees-grid``, ``trees-batch``, ``mlp``; see
    docs/performance.md) over three local node processes beside the naive phe baseline, and return
    its summary: the fields ``blindscore bench --json`` prints (``p50_ms``, ``p99_ms``,
    ``apps_per_s``, ``bytes_per_app``, ``speedup_p50``, ``stage_ms_p50``, ...). ``band_protocol``:
    the bureau's for the ``online`` workload's linear model, ``circuit`` (default) or ``dgk``."""
    from blindscore.app import bench as harness

    return harness.run(workload, key_bits=key_bits, applications=applications, band_protocol=band_protocol)


# ---------------------------------------------------------------------- helpers


def _model_name(text: str) -> str:
    from blindscore.app.scoring import model_id_of

    return model_id_of(text)


def _prepare(
    model: PrivateModel, rows: Sequence[Row], id_column: str | None, rejected: list[Rejected] | None = None
) -> tuple[list[str], list[dict[str, Any]]]:
    """Application ids and the model's features per row, every row checked (ids, encoding). A row that
    fails its check raises, or with a ``rejected`` list is added there and left out."""
    names = model.spec.input_names
    missing = [n for n in names if n not in rows[0]]
    if missing:
        raise InvalidInputError(f"data: missing column(s) the model needs: {', '.join(missing)}")
    if id_column is not None and any(id_column not in row for row in rows):
        raise InvalidInputError(f"id_column {id_column!r} is not a column of the data")
    ids = [str(row[id_column]) if id_column else f"row-{i + 1}" for i, row in enumerate(rows)]
    if len(set(ids)) != len(ids):
        raise InvalidInputError(f"id_column {id_column!r} has duplicate values")
    kept: list[str] = []
    features = []
    for i, (app_id, row) in enumerate(zip(ids, rows, strict=True)):
        where = f"row {i + 1}"
        try:
            what = f"application id in column {id_column!r}" if id_column else "application id"
            check_id(what, limits.check_id(what, app_id))
            where = f"row {i + 1} ({app_id})"  # named by its id once the id is known to be sound
            feats = {k: row.get(k) for k in names}
            model.spec.encode_row(feats)
        except InvalidInputError as exc:
            if rejected is None:
                raise InvalidInputError(f"data, {where}: {exc}") from None
            rejected.append(Rejected(i + 1, row, reason_of(exc)))
            continue
        kept.append(app_id)
        features.append(feats)
    return kept, features


def _outcomes(values: Sequence[object], column: str, bad: object) -> list[bool]:
    distinct = sorted({str(v) for v in values})
    if len(distinct) != 2:
        raise InvalidInputError(f"target {column!r}: expected two outcome values, found {len(distinct)}")
    if bad is None:
        for candidate in ("bad", "1", "1.0", "True", "true", "yes"):
            if candidate in distinct:
                bad = candidate
                break
        else:
            raise InvalidInputError(f"target {column!r}: cannot tell which of {distinct} is bad; pass bad=")
    if str(bad) not in distinct:
        raise InvalidInputError(f"bad={bad!r} does not occur in column {column!r} (values: {distinct})")
    return [str(v) == str(bad) for v in values]


def _frame(records: list[dict[str, Any]]) -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise InvalidInputError(
            "a DataFrame needs pandas (pip install pandas), or pass as_frame=False"
        ) from None
    return pd.DataFrame.from_records(records, columns=["application_id", "band", "band_label"])
