"""`blindscore score` with scikit-learn models saved by skops, through three local node processes."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from blindscore.data.german import load_german_credit

pytestmark = pytest.mark.slow

NUMERIC = [
    "duration_in_month",
    "credit_amount",
    "installment_rate_in_percentage_of_disposable_income",
    "present_residence_since",
    "age_in_years",
    "number_of_existing_credits_at_this_bank",
    "number_of_people_being_liable_to_provide_maintenance_for",
]
ROWS = 80


def frame() -> tuple[object, np.ndarray]:
    import pandas as pd

    rows, target = load_german_credit()
    df = pd.DataFrame([{k: float(r[k]) for k in NUMERIC} for r in rows])
    return df, np.asarray(target)


def write_input(path: Path, n: int) -> None:
    rows, _ = load_german_credit()
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["customer", *NUMERIC, "unused_column"])
        for i, r in enumerate(rows[:n]):
            w.writerow([f"cust-{i}", *[r[k] for k in NUMERIC], "x"])


def run_score(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blindscore", "score", *args],
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )


def read_output(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def expected_bands(values: np.ndarray, cutoffs: list[float]) -> np.ndarray:
    return (values[:, None] >= np.asarray(cutoffs)[None, :]).sum(axis=1)


def far_from_cutoffs(values: np.ndarray, cutoffs: list[float]) -> np.ndarray:
    return np.min(np.abs(values[:, None] - np.asarray(cutoffs)[None, :]), axis=1) > 1e-6


@pytest.mark.parametrize("kind", ["pipeline-logistic", "ridge"])
def test_score_matches_sklearn(tmp_path: Path, kind: str) -> None:
    X, y = frame()
    if kind == "pipeline-logistic":
        model = Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression(max_iter=1000))]).fit(X, y)
        values = model.predict_proba(X)[:ROWS, 1]
        cutoffs = [0.15, 0.25, 0.4, 0.6]
    else:
        model = Ridge(alpha=1.0).fit(X, y)
        values = model.predict(X)[:ROWS]
        cutoffs = [0.2, 0.3, 0.4]
    model_file = tmp_path / f"{kind}.skops"
    sio.dump(model, model_file)
    write_input(tmp_path / "in.csv", ROWS)
    out = tmp_path / "out.csv"
    result = run_score(
        "--model",
        str(model_file),
        "--input",
        str(tmp_path / "in.csv"),
        "--output",
        str(out),
        "--cutoffs",
        ",".join(map(str, cutoffs)),
        "--id-column",
        "customer",
    )
    assert result.returncode == 0, result.stderr
    got = read_output(out)
    assert list(got[0]) == ["application_id", "band", "band_label"]
    assert [g["application_id"] for g in got] == [f"cust-{i}" for i in range(ROWS)]
    bands = np.array([int(g["band"]) for g in got])
    want = expected_bands(values, cutoffs)
    mask = far_from_cutoffs(values, cutoffs)
    assert mask.sum() >= ROWS - 2
    assert (bands[mask] == want[mask]).all()
    labels = "ABCDE"
    assert all(g["band_label"] == labels[int(g["band"])] for g in got)
    assert len(set(bands.tolist())) >= 3  # the cutoffs split the sample


def score_refused(tmp_path: Path, estimator: Any, input_csv: Path) -> str:
    """Fit ``estimator`` on German credit, save it as skops and score ``input_csv`` with cutoff 0.3;
    the run must fail as a usage error and write nothing. Returns its stderr."""
    X, y = frame()
    model_file = tmp_path / "model.skops"
    sio.dump(estimator.fit(X, y), model_file)
    out = tmp_path / "out.csv"
    args = ["--model", str(model_file), "--input", str(input_csv), "--output", str(out), "--cutoffs", "0.3"]
    result = run_score(*args)
    assert result.returncode == 2
    assert not out.exists()
    return result.stderr


def test_score_missing_column_named(tmp_path: Path) -> None:
    bad = tmp_path / "in.csv"
    bad.write_text("age_in_years,credit_amount\n30,1000\n")
    assert "duration_in_month" in score_refused(tmp_path, LogisticRegression(max_iter=1000), bad)


def test_score_refuses_other_model_types(tmp_path: Path) -> None:
    write_input(tmp_path / "in.csv", 3)
    err = score_refused(tmp_path, KNeighborsClassifier(n_neighbors=3), tmp_path / "in.csv")
    assert "KNeighborsClassifier" in err
    assert "LogisticRegression" in err  # the message lists what is supported


def test_score_refuses_a_forest_too_deep_for_the_circuit(tmp_path: Path) -> None:
    write_input(tmp_path / "in.csv", 3)
    forest = RandomForestClassifier(n_estimators=2, random_state=0)  # unbounded depth
    err = score_refused(tmp_path, forest, tmp_path / "in.csv")
    assert "supports depth <= 10: retrain with max_depth <= 10" in err


def test_score_bad_value_names_row_and_feature(tmp_path: Path) -> None:
    write_input(tmp_path / "in.csv", 3)
    text = (tmp_path / "in.csv").read_text().splitlines()
    cells = text[2].split(",")
    cells[1 + NUMERIC.index("age_in_years")] = "nan"
    text[2] = ",".join(cells)
    (tmp_path / "in.csv").write_text("\n".join(text) + "\n")
    err = score_refused(tmp_path, LogisticRegression(max_iter=1000), tmp_path / "in.csv")
    assert "row 2" in err and "age_in_years" in err


def test_score_takes_a_json_scorecard(tmp_path: Path) -> None:
    """`score` reads every format `model import` does; here the hand-written neutral scorecard."""
    from blindscore.models.registry import load_model_file
    from scripts.model_zoo import build_hand_card

    card = build_hand_card(tmp_path).path
    model = load_model_file(card)
    rows, _ = load_german_credit()
    n = 25
    with open(tmp_path / "in.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows[:n])
    out = tmp_path / "out.csv"
    result = run_score("--model", str(card), "--input", str(tmp_path / "in.csv"), "--output", str(out))
    assert result.returncode == 0, result.stderr
    got = read_output(out)
    assert [g["band_label"] for g in got] == [model.policy.labels[model.band(rows[i])] for i in range(n)]
    # A scorecard's bands can be re-cut from the command line (points here).
    recut = run_score(
        "--model", str(card), "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "x.csv"),
        "--cutoffs", "500", "--labels", "low,high",
    )  # fmt: skip
    assert recut.returncode == 0, recut.stderr
    points = [model.predict(rows[i]) for i in range(n)]
    want = ["high" if p >= 500 else "low" for p in points]
    assert [g["band_label"] for g in read_output(tmp_path / "x.csv")] == want
    # A linear-model JSON carries its own policy: cutoffs on the command line are refused.
    from blindscore.data.german import default_model

    lr = tmp_path / "lr.json"
    default_model().save(lr)
    refused = run_score(
        "--model", str(lr), "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "y.csv"),
        "--cutoffs", "0.5",
    )  # fmt: skip
    assert refused.returncode == 2 and "own band policy" in refused.stderr
    assert not (tmp_path / "y.csv").exists()
