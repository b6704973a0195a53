"""Read a model file of any supported format: one detector, one read of the file, one parse."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from blindscore.errors import InvalidInputError, ModelFormatError
from blindscore.importers._common import CardBands, read_bytes, refuse_pickle
from blindscore.importers.lightgbm import ensemble_from_lightgbm_text
from blindscore.importers.scorecardpy import from_rows, rows_from_csv
from blindscore.importers.toad import TOAD_BUNDLE_KIND, from_bundle
from blindscore.importers.xgboost import ensemble_from_xgboost, load_ubjson
from blindscore.models.contract import PrivateModel
from blindscore.models.policy import BandPolicy, default_bands_on
from blindscore.models.registry import load_model, model_types
from blindscore.models.scorecard import DEFAULT_PRECISION, SCORECARD_KIND, PdoScaling, Scorecard

__all__ = ["AUTO", "FORMATS", "ImportOptions", "detect_format", "read_model"]

#: The formats :func:`read_model` reads. ``optbinning`` is the neutral scorecard JSON that
#: :func:`~blindscore.importers.optbinning.save_optbinning_scorecard` writes; ``blindscore`` is any
#: registered model type's JSON (a scorecard among them).
FORMATS = ("blindscore", "skops", "scorecardpy", "toad", "optbinning", "xgboost", "lightgbm")
#: Tell the format from the file name and contents.
AUTO = "auto"
#: The default bound on a tree ensemble's fixed-point margin error (margin units).
TREE_PRECISION = 1e-6


@dataclass(frozen=True)
class ImportOptions:
    """Band policy and scaling options of `model import`; None leaves the file's own."""

    cutoffs: tuple[float, ...] | None = None
    labels: tuple[str, ...] | None = None
    bands_on: str | None = None  # probability, points or raw
    scaling: PdoScaling | None = None
    unmatched_points: float | None = None
    precision: float | None = None
    #: Declared (lo, hi) per numeric feature of a scikit-learn model (an MLP needs one per input).
    feature_ranges: tuple[tuple[str, float, float], ...] | None = None
    #: Declared grids (name, "LO:STEP:HI") of a tree ensemble's features: narrower, exact keys.
    feature_grids: tuple[tuple[str, str], ...] | None = None

    @property
    def given(self) -> bool:
        return any(v is not None for v in vars(self).values())

    @property
    def scorecard_on(self) -> str:
        """What a scorecard's cutoffs apply to (its raw output is its points); checks they are given."""
        if self.cutoffs is None and (self.labels is not None or self.bands_on is not None):
            raise InvalidInputError("band labels or 'on' need the cutoffs too")
        return "points" if self.bands_on in (None, "raw") else self.bands_on

    def card_bands(self, name: str, fmt: str) -> CardBands:
        """The bands of a scorecard whose file carries none (scorecardpy, toad)."""
        on = self.scorecard_on
        if self.cutoffs is None:
            raise InvalidInputError(f"a {fmt} scorecard file carries no bands: give the cutoffs")
        precision = DEFAULT_PRECISION if self.precision is None else self.precision
        return CardBands(name, self.cutoffs, self.labels or (), on, precision)


@dataclass(frozen=True)
class _Source:
    """A model file as read once: its format and, for JSON and CSV, its contents."""

    path: Path
    format: str
    document: Any = None  # the parsed JSON
    data: bytes = b""  # the CSV bytes


def _json(path: Path, data: bytes) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: not valid JSON ({exc})") from None


def _kind(document: object) -> object:
    return document.get("kind") if isinstance(document, Mapping) else None


#: Formats a file name tells; any other file is told by its contents (the ``kind`` of its JSON,
#: XGBoost's ``learner`` section, LightGBM's text header).
_BY_SUFFIX = {".skops": "skops", ".csv": "scorecardpy", ".ubj": "xgboost"}


def _is_lightgbm_text(data: bytes) -> bool:
    head = data[:4096]
    return head.startswith(b"tree\n") and b"\nversion=v" in head


def detect_format(path: Path, document: object = None) -> str:
    """The format of a model file: by suffix, else by the ``kind`` of its JSON ``document``.

    A pickle (``.pkl``, ``.pickle``, ``.joblib``) is refused by name: it is never read as a model.
    """
    refuse_pickle(path)
    by_suffix = _BY_SUFFIX.get(path.suffix.lower())
    if by_suffix is not None:
        return by_suffix
    kind = _kind(document)
    if kind == TOAD_BUNDLE_KIND:
        return "toad"
    if isinstance(document, Mapping) and "learner" in document and "version" in document:
        return "xgboost"
    if isinstance(kind, str) and kind in model_types():
        return "blindscore"
    raise ModelFormatError(
        f"{path}: cannot tell the model format from the file (kind {kind!r}); expected a .skops file, "
        f"a scorecardpy points .csv, a {TOAD_BUNDLE_KIND!r} JSON, an XGBoost JSON or UBJSON model, "
        f"a LightGBM text model or a model JSON of a registered kind; pass --format "
        f"(one of {', '.join(FORMATS)})"
    )


def _read(path: Path, fmt: str) -> _Source:
    """Read the file once and settle its format (``fmt``, or detected when :data:`AUTO`)."""
    refuse_pickle(path)  # whatever the format, by its name; then by its first bytes below
    if fmt == AUTO:
        fmt = _BY_SUFFIX.get(path.suffix.lower(), AUTO)
    if fmt == "skops":
        return _Source(path, fmt)  # the skops loader vets and loads the bytes it reads itself
    data = read_bytes(path)
    refuse_pickle(path, data[:2])
    if fmt in ("scorecardpy", "lightgbm") or (fmt == AUTO and _is_lightgbm_text(data)):
        return _Source(path, "lightgbm" if fmt == AUTO else fmt, data=data)
    if fmt == "xgboost" and not data.lstrip().startswith(b'{"'):
        return _Source(path, fmt, data=data)  # UBJSON
    try:
        document = _json(path, data)
    except ModelFormatError:
        if fmt != AUTO or path.suffix.lower() == ".json":
            raise
        document = None  # neither JSON nor a known suffix: the detector says what it expected
    return _Source(path, detect_format(path, document) if fmt == AUTO else fmt, document=document)


def _sklearn(source: _Source, name: str | None, opts: ImportOptions) -> PrivateModel:
    if opts.bands_on not in (None, "probability", "raw") or opts.scaling or opts.unmatched_points is not None:
        raise InvalidInputError(
            "for a scikit-learn model only --cutoffs, --labels, --precision "
            "and --bands-on probability|raw apply"
        )
    from blindscore.importers.sklearn import load_sklearn_file  # scikit-learn and skops load only here

    ranges = {feature: (lo, hi) for feature, lo, hi in opts.feature_ranges or ()}
    if len(ranges) != len(opts.feature_ranges or ()):
        raise InvalidInputError("a feature is given more than one --feature-range")
    model = load_sklearn_file(
        source.path,
        cutoffs=opts.cutoffs,
        labels=opts.labels,
        feature_ranges=ranges or None,
        name=name,
        precision=opts.precision,
    )
    if opts.bands_on is not None and opts.bands_on != model.policy.output:
        # A scikit-learn model's bands are on what it predicts: --bands-on may confirm it, not change it.
        raise InvalidInputError(
            f"{source.path}: this scikit-learn model is banded on its {model.policy.output} output, "
            f"not on {opts.bands_on!r}; drop --bands-on"
        )
    return model


def _trees(source: _Source, name: str | None, opts: ImportOptions) -> PrivateModel:
    """An XGBoost (JSON or UBJSON) or LightGBM (text) model file: the library is not needed."""
    library = {"xgboost": "an XGBoost", "lightgbm": "a LightGBM"}[source.format]
    if opts.cutoffs is None:
        raise InvalidInputError(f"{library} model file carries no bands: give the cutoffs")
    if opts.bands_on not in (None, "probability", "raw") or opts.scaling or opts.unmatched_points is not None:
        raise InvalidInputError(
            f"for {library} model only --cutoffs, --labels, --precision and --bands-on probability|raw apply"
        )
    cutoffs, labels, on = opts.cutoffs, opts.labels or (), opts.bands_on

    def policy(link: str) -> BandPolicy:
        """Bands on what ``bands_on`` says, else on the probability (logit) or the prediction (identity)."""
        if on == "probability" and link == "identity":
            raise InvalidInputError(
                f"{library} regression model predicts a raw value, not a probability: band it with "
                "--bands-on raw (its default)"
            )
        return BandPolicy(
            cutoffs, labels, "raw" if (on or default_bands_on(link)) == "raw" else "probability"
        )

    precision = TREE_PRECISION if opts.precision is None else opts.precision
    label = name or source.path.stem
    if source.format == "lightgbm":
        try:
            text = source.data.decode("utf-8")
        except UnicodeDecodeError:
            raise ModelFormatError(f"{source.path}: not a LightGBM text model (not UTF-8)") from None
        return ensemble_from_lightgbm_text(text, policy=policy, name=label, precision=precision)
    document = source.document if source.document is not None else load_ubjson(source.data)
    return ensemble_from_xgboost(document, policy=policy, name=label, precision=precision)


def _model_json(source: _Source, name: str | None, opts: ImportOptions) -> PrivateModel:
    """A registered model type's JSON; a neutral scorecard takes the options, others carry their own."""
    document = source.document
    if _kind(document) != SCORECARD_KIND:
        if source.format == "optbinning":
            raise ModelFormatError(f"{source.path}: not a neutral scorecard JSON (kind {SCORECARD_KIND!r})")
        if opts.given:
            raise InvalidInputError(
                "this model file carries its own band policy; "
                "drop --cutoffs/--labels/--bands-on and the scaling flags"
            )
        return load_model(document)
    on = opts.scorecard_on
    d = dict(document)
    if name is not None:
        d["name"] = name
    if opts.cutoffs is not None:
        d["bands"] = {"on": on, "cutoffs": list(opts.cutoffs), "labels": list(opts.labels or [])}
    if opts.scaling is not None:
        d["scaling"] = opts.scaling.to_dict()
    if opts.precision is not None:
        d["precision"] = opts.precision
    return Scorecard.from_dict(d)


def read_model(
    path: str | Path, options: ImportOptions | None = None, *, fmt: str = AUTO, name: str | None = None
) -> PrivateModel:
    """Read a model file in one of :data:`FORMATS` (or :data:`AUTO`) as a registered model type.

    ``name`` names the model (None: the file's own name, else the file's stem); a model JSON
    that is not a scorecard keeps its own name and band policy. scorecardpy and toad files carry
    no bands, so ``options.cutoffs`` is required for them.
    """
    path = Path(path)
    opts = options or ImportOptions()
    if fmt != AUTO and fmt not in FORMATS:
        raise InvalidInputError(f"unknown model format {fmt!r}; expected one of {AUTO}, {', '.join(FORMATS)}")
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such file")
    source = _read(path, fmt)
    if opts.feature_ranges and source.format != "skops":
        raise InvalidInputError("--feature-range applies only to a scikit-learn model (a .skops file)")
    if opts.feature_grids:
        model = _read_model(source, path, name, replace(opts, feature_grids=None))
        return _with_grids(model, opts.feature_grids)
    return _read_model(source, path, name, opts)


def _with_grids(model: PrivateModel, grids: tuple[tuple[str, str], ...]) -> PrivateModel:
    from blindscore.models.floatkeys import Grid
    from blindscore.models.trees import TreeEnsemble

    if not isinstance(model, TreeEnsemble):
        raise InvalidInputError(
            f"--feature-grid applies to tree ensembles (XGBoost, LightGBM, scikit-learn trees), "
            f"not to a {model.type_name} model"
        )
    parsed = {name: Grid.parse(text) for name, text in grids}
    if len(parsed) != len(grids):
        raise InvalidInputError("a feature is given more than one --feature-grid")
    return model.with_grids(parsed)


def _read_model(source: _Source, path: Path, name: str | None, opts: ImportOptions) -> PrivateModel:
    if source.format == "skops":
        return _sklearn(source, name, opts)
    if source.format in ("blindscore", "optbinning"):
        return _model_json(source, name, opts)
    if source.format in ("xgboost", "lightgbm"):
        return _trees(source, name, opts)
    bands = opts.card_bands(name or path.stem, source.format)
    if source.format == "scorecardpy":
        rows = rows_from_csv(source.data, str(path))
        return from_rows(rows, bands, scaling=opts.scaling, unmatched_points=opts.unmatched_points)
    return from_bundle(source.document, bands, scaling=opts.scaling, where=f"{path}: toad bundle")
