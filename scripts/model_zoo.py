"""Five German credit models, one per import format, written as the files `blindscore model import` takes.

Each builder trains (or, for the hand-written card, writes) one model on the vendored German
credit data and returns an :class:`Artifact`: the file, the format, the import options to give
``blindscore model import`` and, for the trained ones, the library's own output on the 1000 rows
(so a caller can check the imported model against the library, not only against itself):

=================  ==========================================================================
``skops``          ``Pipeline(ColumnTransformer(StandardScaler, OneHotEncoder), LogisticRegression)``
                   on all 20 attributes, saved with ``skops.io.dump``; bands on the PD at
                   0.07/0.16/0.32/0.54
``optbinning``     ``BinningProcess`` + ``Scorecard`` (PDO 20 at 600 points, odds 50:1) on eight
                   attributes, saved with :func:`~blindscore.importers.optbinning.save_optbinning_scorecard`;
                   the file carries its bands (PD at 0.07/0.16/0.32/0.54)
``toad``           ``Combiner`` (chi-merge) + ``WOETransformer`` + ``ScoreCard`` on the same eight,
                   saved with :func:`~blindscore.importers.toad.save_toad_bundle`; bands on points
``scorecardpy``    ``woebin`` + ``LogisticRegression`` + ``sc.scorecard`` points table as CSV; bands
                   on the PD through ``--pdo 50 --base-score 600 --base-odds 1/19 --odds bad:good``
``blindscore``     a hand-written neutral JSON scorecard over five attributes (numeric edges,
                   category groups, a missing bin, an other bin); bands on points
=================  ==========================================================================

The checks that scripts/verify_importers.py and tests/test_importers_e2e.py share are here too:
:func:`import_artifact` runs ``blindscore model import`` in process, :func:`swap_in` imports an
artifact as a new version into a *running* bureau and scores applications pinned to it and, once
the platform's "latest" cache expired, naming no version; :func:`rows_covering_bands` picks rows
that show every band.

Everything is deterministic (lbfgs from zero, fixed data, no random splits, the variable order
fixed where a library's depends on string hashing) and in-sample: these are fixtures for checking
the importers end to end, not credit policies. pandas, scikit-learn's
``ColumnTransformer``, skops, optbinning, toad and scorecardpy are imported inside the builders,
so importing this module needs none of them (``pip install 'blindscore[scorecards]'`` installs them).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import math
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blindscore._files import write_atomic
from blindscore.data.german import (
    FEATURE_ORDER,
    GERMAN_PD_CUTOFFS,
    NUMERIC_RANGES,
    TARGET,
    load_german_credit,
)
from blindscore.errors import BlindscoreError, InvalidInputError, PreconditionError
from blindscore.importers import ImportOptions
from blindscore.models.contract import PrivateModel
from blindscore.models.scorecard import PdoScaling

if TYPE_CHECKING:
    from blindscore.app.localnet import LocalNetwork

__all__ = [
    "BUILDERS",
    "LIBRARY_VARIABLES",
    "PD_LABELS",
    "POINTS_LABELS",
    "Artifact",
    "SwapCheck",
    "build",
    "build_hand_card",
    "build_optbinning",
    "build_scorecardpy",
    "build_skops",
    "build_toad",
    "german_csv_rows",
    "hand_card",
    "import_artifact",
    "rows_covering_bands",
    "swap_in",
]

#: Band A is the best risk: the lowest PD, or (bands on points) the highest points.
PD_LABELS = ("A", "B", "C", "D", "E")
POINTS_LABELS = ("E", "D", "C", "B", "A")
#: The attributes the three scorecard libraries bin (as in tests/test_scorecard.py).
LIBRARY_VARIABLES = (
    "status_of_existing_checking_account",
    "duration_in_month",
    "credit_history",
    "credit_amount",
    "savings_account_and_bonds",
    "age_in_years",
    "purpose",
    "housing",
)
_LIBRARY_NUMERIC = ("duration_in_month", "credit_amount", "age_in_years")
#: scorecardpy 0.1.9.7's automatic numeric binning fails on pandas 3: its numeric breaks are given.
_SCORECARDPY_BREAKS = {
    "duration_in_month": [12, 24, 36],
    "credit_amount": [1500, 4000, 8000],
    "age_in_years": [26, 35, 50],
}
#: scorecardpy's own defaults: 600 points at odds 1:19 (bad:good), 50 points to double them.
SCORECARDPY_SCALING = PdoScaling(50.0, 600.0, 1 / 19, "bad:good")
_OPTBINNING_PDO = {"pdo": 20, "odds": 50, "scorecard_points": 600}


@dataclass(frozen=True)
class Artifact:
    """A model file for ``blindscore model import`` and how to import it."""

    format: str  # the --format value: skops, optbinning, toad, scorecardpy, blindscore
    path: Path
    options: ImportOptions
    description: str
    #: The library's own output per German row (PD for skops, points for the scorecards), in the
    #: unit of the imported model's ``predict``; empty for the hand-written card.
    reference: tuple[float, ...] = field(default=(), repr=False)

    def cli_args(self) -> list[str]:
        """The `blindscore model import` arguments after the file name (name and data dir excluded)."""
        o = self.options
        args = ["--format", self.format]
        if o.cutoffs is not None:
            args += ["--cutoffs", ",".join(repr(c) for c in o.cutoffs)]
        if o.labels is not None:
            args += ["--labels", ",".join(o.labels)]
        if o.bands_on is not None:
            args += ["--bands-on", o.bands_on]
        if o.scaling is not None:
            s = o.scaling
            args += ["--pdo", repr(s.pdo), "--base-score", repr(s.base_score)]
            args += ["--base-odds", repr(s.base_odds), "--odds", s.odds]
        if o.unmatched_points is not None:
            args += ["--unmatched-points", repr(o.unmatched_points)]
        if o.precision is not None:
            args += ["--precision", repr(o.precision)]
        return args


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The libraries warn about pandas/setuptools deprecations and some print progress: none of it is ours."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _need(*modules: str) -> None:
    """Import the optional libraries a builder needs, or say how to install them."""
    for module in modules:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # scorecardpy imports the deprecated pkg_resources
                importlib.import_module(module)
        except ImportError:
            raise PreconditionError(
                f"this model-zoo builder needs {module}: pip install 'blindscore[scorecards]'"
            ) from None


def _frame(columns: Sequence[str] = FEATURE_ORDER) -> tuple[Any, Any]:
    """German credit as a pandas DataFrame (numerics as int64) and the target (1 = bad)."""
    import pandas as pd

    rows, y = load_german_credit()
    return pd.DataFrame([{c: r[c] for c in columns} for r in rows], columns=list(columns)), y


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _points_cutoffs(points: Sequence[float]) -> tuple[float, ...]:
    """Points quintiles of the training rows, moved to the nearest half point that no row scores."""
    import numpy as np

    cuts = []
    for q in np.quantile(np.asarray(points), [0.2, 0.4, 0.6, 0.8]):
        c = math.floor(float(q)) + 0.5
        while any(abs(p - c) < 1e-3 for p in points):
            c += 1.0
        cuts.append(c)
    return tuple(cuts)


# ---------------------------------------------------------------------------------------------
# The builders


def build_skops(workdir: Path) -> Artifact:
    """A scikit-learn pipeline on all 20 attributes, dumped with skops."""
    _need("pandas")
    import skops.io as sio
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    x, y = _frame()
    numeric = [c for c in FEATURE_ORDER if c in NUMERIC_RANGES]
    categorical = [c for c in FEATURE_ORDER if c not in NUMERIC_RANGES]
    pipeline = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("num", StandardScaler(), numeric), ("cat", OneHotEncoder(), categorical)],
                    remainder="drop",
                ),
            ),
            ("lr", LogisticRegression(C=1.0, solver="lbfgs", max_iter=10_000, tol=1e-10)),
        ]
    )
    with _quiet():
        pipeline.fit(x, y)
        pd_ = pipeline.predict_proba(x)[:, 1]
    path = workdir / "german_lr.skops"
    path.parent.mkdir(parents=True, exist_ok=True)
    sio.dump(pipeline, path)
    return Artifact(
        "skops",
        path,
        ImportOptions(cutoffs=GERMAN_PD_CUTOFFS, labels=PD_LABELS, bands_on="probability"),
        "ColumnTransformer(StandardScaler, OneHotEncoder) -> LogisticRegression, skops",
        _floats(pd_),
    )


def build_optbinning(workdir: Path) -> Artifact:
    """An optbinning Scorecard over a BinningProcess; the neutral JSON carries its PD bands."""
    _need("pandas", "optbinning")
    from optbinning import BinningProcess
    from optbinning import Scorecard as OptbScorecard
    from sklearn.linear_model import LogisticRegression

    from blindscore.importers.optbinning import save_optbinning_scorecard

    x, y = _frame(LIBRARY_VARIABLES)
    categorical = [c for c in LIBRARY_VARIABLES if c not in _LIBRARY_NUMERIC]
    process = BinningProcess(list(LIBRARY_VARIABLES), categorical_variables=categorical)
    card = OptbScorecard(
        process,
        LogisticRegression(max_iter=10_000),
        scaling_method="pdo_odds",
        scaling_method_params=_OPTBINNING_PDO,
    )
    with _quiet():
        card.fit(x, y)
        points = card.score(x)
    path = workdir / "german_optbinning.json"
    save_optbinning_scorecard(card, path, cutoffs=GERMAN_PD_CUTOFFS, labels=PD_LABELS, on="probability")
    return Artifact(
        "optbinning",
        path,
        ImportOptions(),  # the file carries its bands
        "optbinning BinningProcess + Scorecard (PDO 20, 600 at 50:1), bands on PD",
        _floats(points),
    )


def build_toad(workdir: Path) -> Artifact:
    """A toad ScoreCard with its chi-merge Combiner, as a bundle; bands on points."""
    _need("pandas", "toad")
    import toad
    from toad.scorecard import ScoreCard

    from blindscore.importers.toad import save_toad_bundle

    x, y = _frame(LIBRARY_VARIABLES)
    with _quiet():
        combiner = toad.transform.Combiner()
        combiner.fit(x, y, method="chi", min_samples=0.05, empty_separate=True)
        woe = toad.transform.WOETransformer()
        x_woe = woe.fit_transform(combiner.transform(x), y)
        card = ScoreCard(combiner=combiner, transer=woe, pdo=20, rate=2, base_odds=35, base_score=600)
        card.fit(x_woe, y)
        points = card.predict(x)
    path = workdir / "german_toad.json"
    save_toad_bundle(card, combiner, path)
    return Artifact(
        "toad",
        path,
        ImportOptions(cutoffs=_points_cutoffs(_floats(points)), labels=POINTS_LABELS, bands_on="points"),
        "toad Combiner (chi) + WOETransformer + ScoreCard (PDO 20, 600 at 35:1), bands on points",
        _floats(points),
    )


def build_scorecardpy(workdir: Path) -> Artifact:
    """A scorecardpy points table as CSV; bands on the PD through scorecardpy's default scaling."""
    _need("pandas", "scorecardpy")
    import pandas as pd
    import scorecardpy as sc
    from sklearn.linear_model import LogisticRegression

    x, y = _frame(LIBRARY_VARIABLES)
    dt = x.copy()
    dt[TARGET] = y
    # scorecardpy 0.1.9.7 predates pandas 3: its blank-string and datetime checks fail there,
    # so they are off (the German data has neither).
    options = {"replace_blank": False, "print_info": False}
    with _quiet():
        bins = sc.woebin(dt, y=TARGET, breaks_list=_SCORECARDPY_BREAKS, ignore_datetime_cols=False, **options)
        dt_woe = sc.woebin_ply(dt, bins, **options)
        target = dt_woe.pop(TARGET)
        # woebin orders the variables by string hash, which differs between processes: fix the order.
        dt_woe = dt_woe[[f"{v}_woe" for v in LIBRARY_VARIABLES]]
        lr = LogisticRegression(max_iter=10_000).fit(dt_woe, target)
        s = SCORECARDPY_SCALING
        card = sc.scorecard(bins, lr, dt_woe.columns, points0=s.base_score, odds0=s.base_odds, pdo=s.pdo)
        points = sc.scorecard_ply(x, card, replace_blank_na=False)["score"]
    path = workdir / "german_scorecardpy.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    tables = [card["basepoints"], *(card[v] for v in LIBRARY_VARIABLES)]
    pd.concat(tables, ignore_index=True).to_csv(path, index=False)
    return Artifact(
        "scorecardpy",
        path,
        ImportOptions(
            cutoffs=GERMAN_PD_CUTOFFS, labels=PD_LABELS, bands_on="probability", scaling=SCORECARDPY_SCALING
        ),
        "scorecardpy woebin + LogisticRegression + scorecard points (PDO 50, 600 at 1:19), bands on PD",
        _floats(points),
    )


def hand_card() -> dict[str, Any]:
    """A small expert scorecard over five German attributes, in the neutral JSON format."""
    return {
        "kind": "blindscore-scorecard",
        "format": 1,
        "name": "german-expert",
        "base_points": 500,
        "features": [
            {
                "name": "status_of_existing_checking_account",
                "type": "categorical",
                "bins": [
                    {"categories": ["... < 0 DM"], "points": -20},
                    {"categories": ["0 <= ... < 200 DM"], "points": -5},
                    {
                        "categories": [
                            "... >= 200 DM / salary assignments for at least 1 year",
                            "no checking account",
                        ],
                        "points": 25,
                    },
                ],
                "missing_points": -10,
                "other_points": -10,
            },
            {
                "name": "duration_in_month",
                "type": "numeric",
                "edges": [12, 24, 36],
                "points": [15, 5, -5, -20],
                "missing_points": -5,
            },
            {
                "name": "credit_history",
                "type": "categorical",
                "bins": [
                    {
                        "categories": ["critical account/ other credits existing (not at this bank)"],
                        "points": 15,
                    },
                    {
                        "categories": [
                            "existing credits paid back duly till now",
                            "delay in paying off in the past",
                        ],
                        "points": 0,
                    },
                    {
                        "categories": [
                            "no credits taken/ all credits paid back duly",
                            "all credits at this bank paid back duly",
                        ],
                        "points": -15,
                    },
                ],
                "other_points": -15,
            },
            {
                "name": "savings_account_and_bonds",
                "type": "categorical",
                "bins": [
                    {"categories": ["... < 100 DM"], "points": -5},
                    {"categories": ["100 <= ... < 500 DM"], "points": 0},
                    {"categories": ["500 <= ... < 1000 DM", "... >= 1000 DM"], "points": 10},
                    {"categories": ["unknown/ no savings account"], "points": 7.5},
                ],
                "missing_points": -5,
                "other_points": -5,
            },
            {
                "name": "age_in_years",
                "type": "numeric",
                "edges": [25, 35, 50],
                "points": [-10, 0, 5, 10],
                "missing_points": 0,
                "special": [{"values": [0], "points": -10}],
            },
        ],
        "bands": {"on": "points", "cutoffs": [478.75, 498.75, 518.75, 536.25], "labels": list(POINTS_LABELS)},
        "precision": 1e-6,
        "metadata": {"source": "hand-written", "note": "an expert card for the importer checks"},
    }


def build_hand_card(workdir: Path) -> Artifact:
    """The hand-written neutral JSON scorecard; it carries its bands (on points)."""
    path = workdir / "german_expert.json"
    write_atomic(path, (json.dumps(hand_card(), indent=2) + "\n").encode())
    return Artifact(
        "blindscore",
        path,
        ImportOptions(),
        "hand-written neutral JSON scorecard (5 attributes), bands on points",
    )


#: Format name -> builder, in the order the checks run them.
BUILDERS: dict[str, Callable[[Path], Artifact]] = {
    "skops": build_skops,
    "optbinning": build_optbinning,
    "toad": build_toad,
    "scorecardpy": build_scorecardpy,
    "blindscore": build_hand_card,
}


def build(fmt: str, workdir: Path) -> Artifact:
    """Build the artifact of one format (a key of :data:`BUILDERS`) under ``workdir``."""
    try:
        builder = BUILDERS[fmt]
    except KeyError:
        raise InvalidInputError(f"no model-zoo builder for {fmt!r}; known: {', '.join(BUILDERS)}") from None
    workdir.mkdir(parents=True, exist_ok=True)
    return builder(workdir)


# ---------------------------------------------------------------------------------------------
# End-to-end checks shared by scripts/verify_importers.py and tests/test_importers_e2e.py

_IMPORTED = re.compile(r"^imported .* as model (?P<name>\S+) v(?P<version>\d+) \(")


def german_csv_rows() -> list[dict[str, str]]:
    """The German rows as ``blindscore model verify --data`` reads them: every value a string."""
    from blindscore.app.scoring import read_rows

    with resources.as_file(resources.files("blindscore").joinpath("data", "germancredit.csv")) as path:
        _, rows = read_rows(path)
    return rows


def import_artifact(artifact: Artifact, *, name: str, data_dir: Path) -> tuple[int, PrivateModel, str]:
    """Run ``blindscore model import FILE --name NAME ... --data-dir DIR`` in this process.

    Returns the version it stored, that version as the bureau's store loads it, and the
    command's output. A non-zero exit raises with the command's error message.
    """
    from blindscore.app.cli import main
    from blindscore.bureau.registry import ModelStore

    argv = ["model", "import", str(artifact.path), "--name", name, *artifact.cli_args()]
    argv += ["--data-dir", str(data_dir)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    if code != 0:
        raise BlindscoreError(f"blindscore {' '.join(argv)} exited {code}: {err.getvalue().strip()}")
    first = out.getvalue().splitlines()[0] if out.getvalue() else ""
    match = _IMPORTED.match(first)
    if match is None or match["name"] != name:
        raise BlindscoreError(f"unexpected output of blindscore model import: {first!r}")
    version = int(match["version"])
    return version, ModelStore(data_dir / "models").get(name, version), out.getvalue()


def rows_covering_bands(
    models: Sequence[PrivateModel], rows: Sequence[Mapping[str, str]], n: int
) -> list[int]:
    """``n`` row indices (at least one per band of every model that has rows in it), ascending.

    The first row of each band of each model, then the first rows in order until there are ``n``.
    """
    chosen: set[int] = set()
    for model in models:
        first: dict[int, int] = {}
        for i, row in enumerate(rows):
            first.setdefault(model.band(row), i)
        chosen.update(first.values())
    if len(chosen) > n:
        raise InvalidInputError(f"{len(chosen)} rows are needed to show every band; asked for {n}")
    for i in range(len(rows)):
        if len(chosen) >= n:
            break
        chosen.add(i)
    return sorted(chosen)


@dataclass(frozen=True)
class SwapCheck:
    """One model imported as a new version into a running bureau and scored at once."""

    format: str
    version: int
    model: PrivateModel
    #: Application id -> (plaintext band, band the bank stored, version on the receipt).
    pinned: dict[str, tuple[int, int | None, str]]
    #: The application scored with "latest" after the platform's cache expired: same triple.
    latest: tuple[str, int, int | None, str]
    errors: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Every band the bank stored is the plaintext band and every receipt names this version."""
        want = str(self.version)
        triples = [*self.pinned.values(), self.latest[1:]]
        return not self.errors and all(b == s and v == want for b, s, v in triples)


def swap_in(
    net: LocalNetwork,
    artifact: Artifact,
    *,
    name: str,
    rows: Sequence[tuple[str, Mapping[str, str]]],
    latest_row: tuple[str, Mapping[str, str]],
    wait_s: float | None = None,
) -> SwapCheck:
    """Import ``artifact`` as the next version of ``name`` into the running bureau's data directory,
    score ``rows`` pinned to that version, wait until the platform's "latest" cache has expired
    (``wait_s``, default LATEST_TTL_S + 0.5 s) and score ``latest_row`` naming no version.

    Nothing is restarted: the nodes keep running across imports.
    """
    from blindscore.app.client import PlatformClient, score_applications
    from blindscore.bank_node.store import ResultStore
    from blindscore.platform_node.flow import LATEST_TTL_S
    from blindscore.protocol.application import Application

    version, model, _ = import_artifact(artifact, name=name, data_dir=net.bureau_dir)

    def application(app_id: str, row: Mapping[str, str], pinned: str) -> Application:
        return Application(
            application_id=app_id,
            bank_id=net.bank_id,
            model_id=name,
            key_id=net.key_id,
            consent_reference=f"model-zoo:{artifact.format}",
            features=dict(row),
            model_version=pinned,
        )

    outcomes = score_applications(
        net.platform_address,
        [application(app_id, row, str(version)) for app_id, row in rows],
        security=net.client_security,
    )
    time.sleep(LATEST_TTL_S + 0.5 if wait_s is None else wait_s)
    with PlatformClient(net.platform_address, security=net.client_security) as client:
        outcomes.append(client.score(application(*latest_row, "")))
    errors = tuple(f"{o.application_id}: {o.error}" for o in outcomes if not o.accepted)
    receipts = {o.application_id: o.model_version for o in outcomes}
    store = ResultStore(net.bank_dir / "results.sqlite3")
    try:
        stored = {app_id: store.get(app_id) for app_id, _ in [*rows, latest_row]}
    finally:
        store.close()

    def triple(app_id: str, row: Mapping[str, str]) -> tuple[int, int | None, str]:
        record = stored[app_id]
        return model.band(row), None if record is None else record.band, receipts.get(app_id, "")

    return SwapCheck(
        artifact.format,
        version,
        model,
        {app_id: triple(app_id, row) for app_id, row in rows},
        (latest_row[0], *triple(*latest_row)),
        errors,
    )
