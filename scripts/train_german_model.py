"""Regenerate the shipped German credit demo models: logistic regression, gradient-boosted trees, MLP.

    python scripts/train_german_model.py [--family linear|gbdt|mlp] [--check]

The tree and network models are trained on the seven numeric columns (XGBoost and scikit-learn are
needed here, not by the nodes) and stored in blindscore's own JSON formats, which the bureau reads
without either library.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from blindscore.data.german import (
    GERMAN_GBDT_FILE,
    GERMAN_GBDT_NAME,
    GERMAN_MLP_FILE,
    GERMAN_MLP_NAME,
    GERMAN_PD_CUTOFFS,
    NUMERIC_RANGES,
    design_matrix,
    load_german_credit,
    train_german_model,
)
from blindscore.importers.sklearn_mlp import mlp_from_sklearn
from blindscore.importers.xgboost import ensemble_from_xgboost
from blindscore.models.contract import PrivateModel
from blindscore.models.floatkeys import Grid
from blindscore.models.linear import LinearModel
from blindscore.models.mlp import MLPModel
from blindscore.models.policy import BandPolicy
from blindscore.models.registry import load_model_file
from blindscore.models.trees import TreeEnsemble

DATA = Path(__file__).resolve().parent.parent / "blindscore" / "data"
DEFAULT_OUTPUT = DATA / "german_credit_lr.json"


def numeric_matrix() -> tuple[list[str], np.ndarray, np.ndarray]:
    rows, y = load_german_credit()
    columns = sorted(NUMERIC_RANGES)
    return columns, np.array([[float(r[c]) for c in columns] for r in rows]), np.asarray(y)


def train_gbdt() -> TreeEnsemble:
    """XGBoost, 40 trees of depth 3 on the numeric columns, declared on integer grids; bands on the
    probability of default."""
    import xgboost as xgb

    columns, x, y = numeric_matrix()
    params = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.1, "nthread": 1, "seed": 0}
    booster = xgb.train(params, xgb.DMatrix(x, label=y, feature_names=columns), 40)
    document = json.loads(bytes(booster.save_raw("json")))
    policy = BandPolicy(GERMAN_PD_CUTOFFS, ("A", "B", "C", "D", "E"))
    model = ensemble_from_xgboost(document, policy=policy, name=GERMAN_GBDT_NAME)
    # The columns are whole numbers in their declared ranges: integer grids make every comparison
    # in the circuit 20 bits wide (credit_amount) instead of 32, with the same bands.
    return model.with_grids({c: Grid(str(lo), "1", str(hi)) for c, (lo, hi) in NUMERIC_RANGES.items()})


def train_mlp() -> MLPModel:
    """scikit-learn MLPClassifier 7 -> 8 (relu) -> 1 behind a StandardScaler, on the numeric columns."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    columns, x, y = numeric_matrix()
    net = MLPClassifier(hidden_layer_sizes=(8,), activation="relu", max_iter=3000, random_state=0)
    pipeline = make_pipeline(StandardScaler(), net).fit(x, y)
    policy = BandPolicy(GERMAN_PD_CUTOFFS, ("A", "B", "C", "D", "E"))
    return mlp_from_sklearn(
        pipeline,
        ranges={c: NUMERIC_RANGES[c] for c in columns},
        policy=policy,
        feature_names=columns,
        integer=columns,
        name=GERMAN_MLP_NAME,
    )


def write_model(model: PrivateModel, path: Path) -> None:
    path.write_text(json.dumps(model.to_dict(), indent=1, sort_keys=True) + "\n")
    path.chmod(0o644)


def report(model: LinearModel) -> str:
    """The integer parameters and a band table (count, bad rate) over the 1000 rows."""
    rows, y = load_german_credit()
    bands = np.asarray([model.band(r) for r in rows])
    encoded = np.asarray([model.truncated_band_from_encoded(model.spec.encode_row(r)) for r in rows])
    x = design_matrix(model.spec, rows)
    assert x.shape == (len(rows), model.spec.encoded_width)
    lines = [
        model.describe(),
        f"  in-sample AUC {model.metadata.get('auc_in_sample')}, "
        f"PD quintiles {model.metadata.get('pd_quintiles_in_sample')}",
        f"  plaintext and integer bands differ on {int(np.sum(bands != encoded))} of {len(rows)} rows",
        "  band  count  bad rate",
    ]
    for k, label in enumerate(model.policy.labels):
        sel = bands == k
        rate = float(y[sel].mean()) if sel.any() else float("nan")
        lines.append(f"  {label:>4}  {int(sel.sum()):5d}  {rate:8.3f}")
    return "\n".join(lines)


def main_other(family: str, check: bool) -> int:
    model: PrivateModel = train_gbdt() if family == "gbdt" else train_mlp()
    path = DATA / (GERMAN_GBDT_FILE if family == "gbdt" else GERMAN_MLP_FILE)
    rows, y = load_german_credit()
    bands = np.asarray([model.band(r) for r in rows])
    print(model.describe())
    for k, label in enumerate(model.policy.labels):
        sel = bands == k
        print(
            f"  {label:>4}  {int(sel.sum()):5d}  {float(y[sel].mean()) if sel.any() else float('nan'):8.3f}"
        )
    if check:
        same = load_model_file(path).to_dict() == model.to_dict()
        print(f"{path}: {'up to date' if same else 'differs from a fresh fit'}")
        return 0 if same else 1
    write_model(model, path)
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("linear", "gbdt", "mlp"), default="linear", help="which model")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the linear model")
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if the file differs from a fresh fit"
    )
    args = parser.parse_args(argv)
    if args.family != "linear":
        return main_other(args.family, args.check)
    model = train_german_model()
    print(report(model))
    if args.check:
        shipped = LinearModel.load(args.output)
        same = shipped == model
        print(f"{args.output}: {'up to date' if same else 'differs from a fresh fit'}")
        return 0 if same else 1
    model.save(args.output)
    args.output.chmod(0o644)  # package data: the demo weights are public (save() writes 0600)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
