"""Check every non-linear model family on unseen data: python scripts/verify_families.py [--rows N].

One model of each family is trained on data the project has never used, scikit-learn's bundled
offline sets: ``load_breast_cancer`` (classifiers), ``load_diabetes`` (regressors) and
``make_classification`` (seed 11, for XGBoost and LightGBM), with about 5 % of the cells set to
NaN (models without native missing values get a ``SimpleImputer`` in their pipeline). The
families: XGBoost JSON and UBJSON, LightGBM text, each scikit-learn tree estimator (classifier and
regressor) and MLPClassifier / MLPRegressor, saved in their own formats (skops for
scikit-learn). Each is imported with ``blindscore model import`` into a fresh bureau directory;
then one bureau, bank and platform start as three processes over mutual TLS and the first N
held-out rows of every model go through them, compared as ``blindscore model verify`` compares
(:func:`blindscore.app.model_commands.compare_bands`). Per family it prints the rows, the rows
farther than the proven margin from a cutoff, the agreement of the bank's bands with the
plaintext model and with the library's own ``predict_proba`` / ``predict`` bands on those far rows.
Exits 1 on any disagreement outside the margin.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import io
import math
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from blindscore.app.cli import main as blindscore_main
from blindscore.app.client import score_applications
from blindscore.app.localnet import LocalNetwork
from blindscore.app.model_commands import Verification, compare_bands
from blindscore.bank_node.store import ResultStore
from blindscore.errors import BlindscoreError
from blindscore.models.contract import PrivateModel
from blindscore.protocol.application import Application

SEED = 11
MISSING_SHARE = 0.05
CLASS_CUTOFFS = (0.2, 0.5, 0.8)
#: Regression cutoffs at the 25th, 50th and 75th percentile of the training targets.
QUANTILES = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class Dataset:
    """A train/test split as float frames with ~5 % NaN cells, the target and its kind."""

    name: str
    columns: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    classification: bool

    def frame(self, x: np.ndarray) -> Any:
        import pandas as pd

        return pd.DataFrame(x, columns=list(self.columns))

    def ranges(self) -> list[str]:
        """``--feature-range`` flags covering every value of the set."""
        both = np.vstack([self.x_train, self.x_test])
        lo, hi = np.nanmin(both, axis=0), np.nanmax(both, axis=0)
        return [
            f"--feature-range={c}={float(a):.17g}:{float(b):.17g}"
            for c, a, b in zip(self.columns, lo, hi, strict=True)
        ]

    def csv_rows(self, n: int) -> list[dict[str, str]]:
        """The first ``n`` test rows as a CSV reader gives them: a blank cell for a missing value."""
        return [
            {c: ("" if math.isnan(v) else repr(float(v))) for c, v in zip(self.columns, row, strict=True)}
            for row in self.x_test[:n]
        ]


def _with_holes(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = np.array(x, dtype=np.float64)
    x[rng.random(x.shape) < MISSING_SHARE] = np.nan
    return x


def _split(name: str, columns: Sequence[str], x: np.ndarray, y: np.ndarray, classification: bool) -> Dataset:
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(y))
    x, y = _with_holes(x[order], rng), np.asarray(y)[order]
    cut = int(len(y) * 0.7)
    clean = tuple(c.replace(" ", "_") for c in columns)
    return Dataset(name, clean, x[:cut], y[:cut], x[cut:], classification)


def datasets() -> dict[str, Dataset]:
    """The three unseen data sets, each split 70/30 with a fixed seed."""
    from sklearn.datasets import load_breast_cancer, load_diabetes, make_classification

    cancer = load_breast_cancer()
    diabetes = load_diabetes()
    x, y = make_classification(n_samples=1500, n_features=12, n_informative=6, random_state=SEED)
    return {
        "breast_cancer": _split("breast_cancer", cancer.feature_names, cancer.data, cancer.target, True),
        "diabetes": _split("diabetes", diabetes.feature_names, diabetes.data, diabetes.target, False),
        "synthetic": _split("synthetic", [f"f{i}" for i in range(12)], x, y, True),
    }


@dataclass(frozen=True)
class Family:
    """One model family: how to train it and save it, and on which data."""

    name: str
    data: str
    suffix: str
    train: Callable[[Dataset, Path], Callable[[np.ndarray], np.ndarray]]
    mlp: bool = False


def _quiet_fit(estimator: Any, ds: Dataset) -> Any:
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(ds.frame(ds.x_train), ds.y_train)


def _skops(make: Callable[[], Any]) -> Callable[[Dataset, Path], Callable[[np.ndarray], np.ndarray]]:
    def train(ds: Dataset, path: Path) -> Callable[[np.ndarray], np.ndarray]:
        import skops.io as sio

        estimator = _quiet_fit(make(), ds)
        sio.dump(estimator, path)
        if ds.classification:
            return lambda x: np.asarray(estimator.predict_proba(ds.frame(x))[:, 1])
        return lambda x: np.asarray(estimator.predict(ds.frame(x)))

    return train


def _xgboost(path: Path, ds: Dataset) -> Callable[[np.ndarray], np.ndarray]:
    import xgboost as xgb

    train = xgb.DMatrix(ds.x_train, label=ds.y_train, feature_names=list(ds.columns))
    params = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.3, "seed": SEED}
    booster = xgb.train(params, train, num_boost_round=20)
    booster.save_model(str(path))
    return lambda x: np.asarray(booster.predict(xgb.DMatrix(x, feature_names=list(ds.columns))))


def _lightgbm(path: Path, ds: Dataset) -> Callable[[np.ndarray], np.ndarray]:
    import lightgbm as lgb

    params = {"objective": "binary", "num_leaves": 15, "max_depth": 4, "verbose": -1, "seed": SEED}
    booster = lgb.train(params, lgb.Dataset(ds.x_train, ds.y_train, feature_name=list(ds.columns)), 20)
    booster.save_model(str(path))
    return lambda x: np.asarray(booster.predict(x))


def families() -> list[Family]:
    """Every listed family, one model each."""
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.impute import SimpleImputer
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    def imputed(est: Any) -> Any:
        return make_pipeline(SimpleImputer(strategy="median"), est)

    def mlp(est: Any) -> Any:
        return make_pipeline(SimpleImputer(), StandardScaler(), est)

    out = [
        Family("xgboost-json", "synthetic", ".json", lambda ds, p: _xgboost(p, ds)),
        Family("xgboost-ubjson", "synthetic", ".ubj", lambda ds, p: _xgboost(p, ds)),
        Family("lightgbm-text", "synthetic", ".txt", lambda ds, p: _lightgbm(p, ds)),
    ]
    sklearn: list[tuple[str, str, Callable[[], Any]]] = [
        (
            "DecisionTreeClassifier",
            "breast_cancer",
            lambda: DecisionTreeClassifier(max_depth=5, random_state=SEED),
        ),
        ("DecisionTreeRegressor", "diabetes", lambda: DecisionTreeRegressor(max_depth=5, random_state=SEED)),
        (
            "RandomForestClassifier",
            "breast_cancer",
            lambda: RandomForestClassifier(20, max_depth=4, random_state=SEED),
        ),
        (
            "RandomForestRegressor",
            "diabetes",
            lambda: RandomForestRegressor(20, max_depth=4, random_state=SEED),
        ),
        (
            "ExtraTreesClassifier",
            "breast_cancer",
            lambda: ExtraTreesClassifier(20, max_depth=4, random_state=SEED),
        ),
        ("ExtraTreesRegressor", "diabetes", lambda: ExtraTreesRegressor(20, max_depth=4, random_state=SEED)),
        (
            "GradientBoostingClassifier",
            "breast_cancer",
            lambda: imputed(GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=SEED)),
        ),
        (
            "GradientBoostingRegressor",
            "diabetes",
            lambda: imputed(GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=SEED)),
        ),
        (
            "HistGradientBoostingClassifier",
            "breast_cancer",
            lambda: HistGradientBoostingClassifier(max_iter=20, max_depth=4, random_state=SEED),
        ),
        (
            "HistGradientBoostingRegressor",
            "diabetes",
            lambda: HistGradientBoostingRegressor(max_iter=20, max_depth=4, random_state=SEED),
        ),
    ]
    out += [Family(name, data, ".skops", _skops(make)) for name, data, make in sklearn]
    out += [
        Family(
            "MLPClassifier",
            "breast_cancer",
            ".skops",
            _skops(lambda: mlp(MLPClassifier((16,), max_iter=500, random_state=SEED))),
            mlp=True,
        ),
        Family(
            "MLPRegressor",
            "diabetes",
            ".skops",
            _skops(lambda: mlp(MLPRegressor(hidden_layer_sizes=(16,), max_iter=2000, random_state=SEED))),
            mlp=True,
        ),
    ]
    return out


@dataclass(frozen=True)
class Prepared:
    """A family trained, saved and imported: the stored model and the library's own output."""

    family: Family
    dataset: Dataset
    model: PrivateModel
    library: Callable[[np.ndarray], np.ndarray]
    cutoffs: tuple[float, ...]


def cutoffs_for(ds: Dataset) -> tuple[float, ...]:
    if ds.classification:
        return CLASS_CUTOFFS
    return tuple(float(np.quantile(ds.y_train, q)) for q in QUANTILES)


def import_with_cli(path: Path, name: str, data_dir: Path, extra: Sequence[str]) -> PrivateModel:
    """``blindscore model import PATH --name NAME ... --data-dir DIR`` in this process; the stored model."""
    from blindscore.bureau.registry import ModelStore

    argv = ["model", "import", str(path), "--name", name, *extra, "--data-dir", str(data_dir)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = blindscore_main(argv)
    if code != 0:
        raise BlindscoreError(f"blindscore {' '.join(argv[:5])} ... exited {code}: {err.getvalue().strip()}")
    return ModelStore(data_dir / "models").get(name, 1)


def prepare(family: Family, data: dict[str, Dataset], workdir: Path) -> Prepared:
    ds = data[family.data]
    path = workdir / f"{family.name}{family.suffix}"
    library = family.train(ds, path)
    cuts = cutoffs_for(ds)
    extra = ["--cutoffs", ",".join(repr(c) for c in cuts)]
    if family.mlp:
        extra += ds.ranges()
    if family.suffix != ".skops" and not ds.classification:
        extra += ["--bands-on", "raw"]
    model = import_with_cli(path, _model_id(family.name), workdir / "bureau", extra)
    return Prepared(family, ds, model, library, cuts)


def _model_id(name: str) -> str:
    return name.lower().replace("_", "-")


@dataclass(frozen=True)
class Outcome:
    """A family's result: the verification and the comparison with the library on far rows."""

    name: str
    type_name: str
    verification: Verification
    far: int
    library_agree: int


def score_all(
    prepared: Sequence[Prepared], rows: int, key_bits: int, workdir: Path
) -> dict[str, dict[str, int]]:
    """Every model's first ``rows`` test rows through one bureau, bank and platform (three processes)."""
    models = {_model_id(p.family.name): p.model for p in prepared}
    bands: dict[str, dict[str, int]] = {}
    with LocalNetwork(workdir / "net", key_bits=key_bits, models=models) as net:
        apps = []
        for p in prepared:
            model_id = _model_id(p.family.name)
            for i, row in enumerate(p.dataset.csv_rows(rows)):
                features = {k: row[k] for k in p.model.spec.input_names}
                apps.append(
                    Application(
                        f"{model_id}-{i}", net.bank_id, model_id, net.key_id, "verify-families", features
                    )
                )
        outcomes = score_applications(net.platform_address, apps, security=net.client_security)
        failed = [o for o in outcomes if not o.accepted]
        if failed:
            raise BlindscoreError(
                f"{len(failed)} applications failed; first {failed[0].application_id}: {failed[0].error}"
            )
        store = ResultStore(net.bank_dir / "results.sqlite3")
        for record in store.all():
            model_id, _, _ = record.application_id.rpartition("-")
            bands.setdefault(model_id, {})[record.application_id] = record.band
        store.close()
    return bands


def check(p: Prepared, rows: int, encrypted: dict[str, int]) -> Outcome:
    model_id = _model_id(p.family.name)
    csv_rows = p.dataset.csv_rows(rows)
    features = [{k: row[k] for k in p.model.spec.input_names} for row in csv_rows]
    ids = [f"{model_id}-{i}" for i in range(len(features))]
    v = compare_bands(p.model, ids, features, encrypted)
    # The library's own band wherever the exact decision value is farther than the margin from a cutoff.
    theirs = p.library(p.dataset.x_test[: len(features)])
    far = agree = 0
    for app_id, row, value in zip(ids, features, theirs, strict=True):
        exact = p.model.decision_value(row)
        if all(abs(exact - c) > p.model.max_abs_error for c in p.model.decision_cutoffs):
            far += 1
            agree += int(encrypted[app_id] == bisect.bisect_right(p.cutoffs, float(value)))
    return Outcome(p.family.name, p.model.type_name, v, far, agree)


def print_table(outcomes: Sequence[Outcome]) -> None:
    print(f"{'family':<32} {'type':<24} {'rows':>5} {'far':>5} {'plaintext':>10} {'library (far rows)':>19}")
    for o in outcomes:
        v = o.verification
        print(
            f"{o.name:<32} {o.type_name:<24} {v.rows:>5} {o.far:>5} {v.agree:>5}/{v.rows:<4} "
            f"{o.library_agree:>9}/{o.far:<9}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=100, help="held-out rows per family (default 100)")
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a temporary directory)")
    parser.add_argument("--key-bits", type=int, default=2048, choices=[2048, 3072])
    parser.add_argument("--only", nargs="*", help="only these families (names as printed)")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    with tempfile.TemporaryDirectory(prefix="verify-families-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        data = datasets()
        chosen = [f for f in families() if not args.only or f.name in args.only]
        prepared = [prepare(f, data, workdir) for f in chosen]
        bands = score_all(prepared, args.rows, args.key_bits, workdir)
        outcomes = [check(p, args.rows, bands.get(_model_id(p.family.name), {})) for p in prepared]
        print_table(outcomes)
        bad = [o for o in outcomes if not o.verification.ok or o.library_agree != o.far]
        for o in bad:
            print(
                f"FAILED {o.name}: {', '.join(o.verification.disagreements[:10]) or 'library bands differ'}"
            )
        print(f"total {time.perf_counter() - t0:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
