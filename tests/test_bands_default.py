"""What a tree model's cutoffs apply to by default: a classifier's probability, a regression's prediction."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import xgboost as xgb
from sklearn.linear_model import LogisticRegression, Ridge

import blindscore
from blindscore.app import scoring
from blindscore.app.cli import main
from blindscore.errors import InvalidInputError, ModelFormatError
from blindscore.importers import ImportOptions, read_model
from blindscore.models.contract import PrivateModel
from blindscore.models.policy import default_bands_on

NAMES = ["a", "b", "c"]
CUTOFFS = (-2.0, 0.0, 2.0)


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 3))
    return x, 2.0 * x[:, 0] + x[:, 1] + 0.1 * rng.normal(size=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bands-default")
    x, y = _data()
    out = {
        name: d / name
        for name in ("xgb_reg.json", "xgb_reg.ubj", "xgb_clf.json", "lgb_reg.txt", "lgb_clf.txt")
    }
    for objective, names in (
        ("reg:squarederror", ("xgb_reg.json", "xgb_reg.ubj")),
        ("binary:logistic", ("xgb_clf.json",)),
    ):
        label = y if objective.startswith("reg") else (y > 0).astype(float)
        booster = xgb.train(
            {"objective": objective, "max_depth": 2}, xgb.DMatrix(x, label, feature_names=NAMES), 5
        )
        for name in names:
            booster.save_model(str(out[name]))
    for objective, name in (("regression", "lgb_reg.txt"), ("binary", "lgb_clf.txt")):
        label = y if objective == "regression" else (y > 0).astype(float)
        params = {"objective": objective, "num_leaves": 4, "learning_rate": 0.5, "verbose": -1}
        lgb.train(params, lgb.Dataset(x, label, feature_name=NAMES), 5).save_model(str(out[name]))
    out["input.csv"] = d / "input.csv"
    with open(out["input.csv"], "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(NAMES)
        w.writerows(x[:40].tolist())
    frame = pd.DataFrame(x, columns=NAMES)
    out["ridge.skops"] = d / "ridge.skops"
    sio.dump(Ridge().fit(frame, y), out["ridge.skops"])
    out["lr.skops"] = d / "lr.skops"
    sio.dump(LogisticRegression().fit(frame, y > 0), out["lr.skops"])
    return out


def _plain_bands(
    model: PrivateModel, ids: Sequence[str], rows: Sequence[Mapping[str, Any]], **_: object
) -> dict:
    """run_encrypted's result in plaintext: these tests are about choosing the bands, not the protocol."""
    bands = [model.band({k: float(v) for k, v in row.items()}) for row in rows]
    return {
        i: SimpleNamespace(band=b, band_label=model.policy.labels[b]) for i, b in zip(ids, bands, strict=True)
    }


@pytest.fixture
def plaintext(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        scoring, "run_encrypted", lambda model, _id, ids, rows, **kw: _plain_bands(model, ids, rows)
    )


def test_default_bands_on_follows_the_link() -> None:
    assert default_bands_on("logit") == "probability"
    assert default_bands_on("identity") == "raw"
    with pytest.raises(ModelFormatError, match="link must be one of"):
        default_bands_on("log")


@pytest.mark.parametrize("name", ["xgb_reg.json", "xgb_reg.ubj", "lgb_reg.txt"])
def test_regression_trees_band_on_the_raw_prediction_by_default(files: dict[str, Path], name: str) -> None:
    model = read_model(files[name], ImportOptions(cutoffs=CUTOFFS))
    assert model.policy.output == "raw"
    assert model.policy.cutoffs == CUTOFFS
    x, _ = _data()
    if name.startswith("xgb"):
        pred = xgb.Booster(model_file=str(files[name])).predict(xgb.DMatrix(x, feature_names=NAMES))
    else:
        pred = lgb.Booster(model_file=str(files[name])).predict(x)
    far = np.min(np.abs(pred[:, None] - np.asarray(CUTOFFS)[None, :]), axis=1) > 1e-4
    want = (pred[:, None] >= np.asarray(CUTOFFS)[None, :]).sum(axis=1)
    got = np.array([model.band(dict(zip(NAMES, row, strict=True))) for row in x.tolist()])
    assert (got[far] == want[far]).all()
    assert len(set(got.tolist())) >= 3
    # Saying so explicitly gives the same model.
    assert read_model(files[name], ImportOptions(cutoffs=CUTOFFS, bands_on="raw")) == model


@pytest.mark.parametrize("name", ["xgb_clf.json", "lgb_clf.txt"])
def test_classifier_trees_still_band_on_the_probability(files: dict[str, Path], name: str) -> None:
    assert read_model(files[name], ImportOptions(cutoffs=(0.3, 0.5))).policy.output == "probability"
    assert read_model(files[name], ImportOptions(cutoffs=CUTOFFS, bands_on="raw")).policy.output == "raw"
    with pytest.raises(ModelFormatError, match="strictly between 0 and 1"):
        read_model(files[name], ImportOptions(cutoffs=CUTOFFS))


@pytest.mark.parametrize("name", ["xgb_reg.json", "lgb_reg.txt"])
def test_probability_bands_on_a_regression_tree_are_refused_in_one_sentence(
    files: dict[str, Path], name: str
) -> None:
    with pytest.raises(InvalidInputError) as info:
        read_model(files[name], ImportOptions(cutoffs=(0.3, 0.5), bands_on="probability"))
    message = str(info.value)
    assert "regression model predicts a raw value, not a probability" in message
    assert "--bands-on raw" in message and message.count(". ") == 0


def test_model_import_takes_regression_cutoffs_without_a_flag(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "model",
        "import",
        str(files["xgb_reg.json"]),
        "--name",
        "r",
        "--data-dir",
        str(tmp_path / "bureau"),
    ]
    assert main([*argv, "--cutoffs=-2,0,2"]) == 0
    assert "bands on raw" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["xgb_reg.json", "lgb_reg.txt"])
@pytest.mark.parametrize("flag", [[], ["--bands-on", "raw"]])
def test_score_cli_bands_a_regression_tree_on_its_prediction(
    files: dict[str, Path], tmp_path: Path, plaintext: None, name: str, flag: list[str]
) -> None:
    out = tmp_path / "out.csv"
    argv = ["score", "--model", str(files[name]), "--cutoffs=-2,0,2", "--input", str(files["input.csv"])]
    assert main([*argv, "--output", str(out), *flag]) == 0
    with open(out, newline="") as fh:
        got = list(csv.DictReader(fh))
    model = read_model(files[name], ImportOptions(cutoffs=CUTOFFS))
    x, _ = _data()
    assert [int(g["band"]) for g in got] == [
        model.band(dict(zip(NAMES, r, strict=True))) for r in x[:40].tolist()
    ]


def test_score_cli_bands_on_probability_is_refused_for_a_regression_tree(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "score",
        "--model",
        str(files["lgb_reg.txt"]),
        "--cutoffs",
        "0.2,0.4",
        "--bands-on",
        "probability",
    ]
    assert main([*argv, "--input", str(files["input.csv"]), "--output", str(tmp_path / "o.csv")]) == 2
    assert "a LightGBM regression model predicts a raw value" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


def test_score_help_has_the_bands_on_flag_of_model_import(capsys: pytest.CaptureFixture[str]) -> None:
    from blindscore.app.model_commands import BANDS_ON_HELP

    with pytest.raises(SystemExit, match=r"^0$"):
        main(["score", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--bands-on {probability,raw}" in text
    assert " ".join(BANDS_ON_HELP.split()) in text


def test_api_scores_a_regression_tree(files: dict[str, Path], plaintext: None) -> None:
    got = blindscore.score(
        files["input.csv"], str(files["lgb_reg.txt"]), cutoffs=list(CUTOFFS), as_frame=False
    )
    model = blindscore.load_model(str(files["lgb_reg.txt"]), cutoffs=list(CUTOFFS), bands_on="raw")
    assert model.policy.output == "raw"
    x, _ = _data()
    assert [g["band"] for g in got] == [model.band(dict(zip(NAMES, r, strict=True))) for r in x[:40].tolist()]
    with pytest.raises(InvalidInputError, match="bands_on must be 'probability' or 'raw'"):
        blindscore.load_model(str(files["lgb_reg.txt"]), cutoffs=list(CUTOFFS), bands_on="points")
    with pytest.raises(InvalidInputError, match="cutoffs, labels and bands_on apply"):
        blindscore.load_model(model, bands_on="raw")


def test_sklearn_bands_on_may_confirm_the_output_but_not_change_it(files: dict[str, Path]) -> None:
    ridge = read_model(files["ridge.skops"], ImportOptions(cutoffs=CUTOFFS, bands_on="raw"))
    assert ridge.policy.output == "raw"
    assert read_model(
        files["lr.skops"], ImportOptions(cutoffs=(0.5,), bands_on="probability")
    ).policy.output == ("probability")
    with pytest.raises(
        InvalidInputError, match="banded on its raw output, not on 'probability'; drop --bands-on"
    ):
        read_model(files["ridge.skops"], ImportOptions(cutoffs=(0.3,), bands_on="probability"))


@pytest.mark.slow
def test_score_cli_bands_a_regression_tree_through_the_three_nodes(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """The same through the encrypted path: raw-prediction cutoffs on the margin, no stub."""
    out = tmp_path / "out.csv"
    argv = ["--model", str(files["xgb_reg.json"]), "--cutoffs=-2,0,2", "--input", str(files["input.csv"])]
    result = subprocess.run(
        [sys.executable, "-m", "blindscore", "score", *argv, "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    with open(out, newline="") as fh:
        got = np.array([int(g["band"]) for g in csv.DictReader(fh)])
    x, _ = _data()
    pred = xgb.Booster(model_file=str(files["xgb_reg.json"])).predict(
        xgb.DMatrix(x[:40], feature_names=NAMES)
    )
    want = (pred[:, None] >= np.asarray(CUTOFFS)[None, :]).sum(axis=1)
    far = np.min(np.abs(pred[:, None] - np.asarray(CUTOFFS)[None, :]), axis=1) > 1e-4
    assert far.sum() >= 38 and (got[far] == want[far]).all()
    assert len(set(got.tolist())) >= 3
