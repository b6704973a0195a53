"""The public Python API as a notebook calls it: score, verify, report, bench, through real node processes."""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import blindscore
from blindscore.app.plugins import MODEL_MODULES_ENV, import_model_modules, modules_for
from blindscore.app.tables import load_rows
from blindscore.data.german import load_german_credit
from blindscore.errors import InvalidInputError, KeySizeError

pd = pytest.importorskip("pandas")
NUMERIC = [
    "duration_in_month",
    "credit_amount",
    "age_in_years",
    "installment_rate_in_percentage_of_disposable_income",
]
ROWS = 24
CUTOFFS = [0.2, 0.3, 0.45]


@pytest.fixture(scope="module")
def german_frame() -> tuple[Any, np.ndarray]:
    rows, target = load_german_credit()
    frame = pd.DataFrame([{k: float(r[k]) for k in NUMERIC} for r in rows])
    frame.insert(0, "customer", [f"cust-{i}" for i in range(len(rows))])
    return frame, np.asarray(target)


@pytest.fixture(scope="module")
def estimator(german_frame: tuple[Any, np.ndarray]) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    frame, target = german_frame
    model = Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression(max_iter=1000))])
    return model.fit(frame[NUMERIC], target)


def test_score_a_dataframe_with_a_fitted_estimator(
    german_frame: tuple[Any, np.ndarray], estimator: Any
) -> None:
    frame = german_frame[0].head(ROWS)
    bands = blindscore.score(frame, estimator, cutoffs=CUTOFFS, id_column="customer")
    assert list(bands.columns) == ["application_id", "band", "band_label"]
    assert bands["application_id"].tolist() == frame["customer"].tolist()
    p = estimator.predict_proba(frame[NUMERIC])[:, 1]
    want = (p[:, None] >= np.asarray(CUTOFFS)[None, :]).sum(axis=1)
    far = np.min(np.abs(p[:, None] - np.asarray(CUTOFFS)[None, :]), axis=1) > 1e-6
    assert far.sum() >= ROWS - 1 and (bands["band"].to_numpy()[far] == want[far]).all()
    assert len(set(want.tolist())) >= 3  # the cutoffs split the sample: the comparison can fail
    assert bands["band_label"].tolist() == ["ABCD"[b] for b in bands["band"]]


def test_refusals_before_any_node_starts(german_frame: tuple[Any, np.ndarray], estimator: Any) -> None:
    frame = german_frame[0].head(3)
    with pytest.raises(InvalidInputError, match="a Pipeline carries no band cutoffs; pass cutoffs"):
        blindscore.score(frame, estimator)
    with pytest.raises(InvalidInputError, match=r"missing column.*age_in_years"):
        blindscore.score(frame.drop(columns=["age_in_years"]), estimator, cutoffs=CUTOFFS)
    bad = frame.copy()
    bad.loc[1, "credit_amount"] = math.inf
    with pytest.raises(InvalidInputError, match=r"data, row 2 \(row-2\): feature 'credit_amount'"):
        blindscore.score(bad, estimator, cutoffs=CUTOFFS)
    with pytest.raises(InvalidInputError, match="carries its own band policy"):
        blindscore.load_model(blindscore.load_model(estimator, cutoffs=CUTOFFS), cutoffs=CUTOFFS)
    with pytest.raises(InvalidInputError, match="not dict"):
        blindscore.load_model({"coef": [1]})
    with pytest.raises(
        KeySizeError, match=r"^1024-bit Paillier keys are refused: at least 2048 bits are required$"
    ):
        blindscore.score(frame, estimator, cutoffs=CUTOFFS, key_bits=1024)


def test_report_from_a_dataframe(
    german_frame: tuple[Any, np.ndarray], estimator: Any, tmp_path: Path
) -> None:
    frame, target = german_frame
    data = frame.assign(outcome=target)
    table = blindscore.report(data, estimator, "outcome", cutoffs=CUTOFFS, png=tmp_path / "bands.png")
    assert table.total == len(frame) and table.bads == int(target.sum())
    assert [r.label for r in table.rows] == ["A", "B", "C", "D"]
    assert sum(r.count for r in table.rows) == len(frame)
    assert 0.5 < table.auc <= 1.0 and (tmp_path / "bands.png").stat().st_size > 0
    with pytest.raises(InvalidInputError, match="target 'nope' is not a column"):
        blindscore.report(data, estimator, "nope", cutoffs=CUTOFFS)


PLUGIN = '''
    """A model type as a researcher writes it beside a notebook."""

    from blindscore.models import BandPolicy, FeatureSpec, LinearModel, NumericFeature, register_model_type


    @register_model_type
    class TwoWeights(LinearModel):
        type_name = "notebook-two-weights"

        @classmethod
        def make(cls):
            spec = FeatureSpec((NumericFeature("age_in_years", 18, 80, integer=True),
                                NumericFeature("duration_in_month", 1, 80, integer=True)))
            return cls("two-weights", spec, [-0.03, 0.04], 0.1, "identity",
                       BandPolicy((-0.3, 0.3, 0.9), (), "raw"), 1e-6)
'''


def test_a_model_type_from_a_module_beside_the_notebook_reaches_the_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, german_frame: tuple[Any, np.ndarray]
) -> None:
    (tmp_path / "notebook_models.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the node processes' path
    import notebook_models

    model = notebook_models.TwoWeights.make()
    assert modules_for(model) == ("notebook_models",)
    result = blindscore.verify(german_frame[0], model, limit=ROWS)
    assert result.ok and result.rows == ROWS and result.agree >= ROWS - len(result.allowed)
    bands = {model.band(r) for r in load_rows(german_frame[0].head(ROWS))}
    assert len(bands) >= 2  # the rows span bands: an agreement that could have failed

    sys.modules.pop("notebook_models", None)


def test_a_model_type_in_main_is_refused_with_the_way_out() -> None:
    from blindscore.models import LinearModel

    local = type("InNotebook", (LinearModel,), {"__module__": "__main__"})
    model = local.__new__(local)
    with pytest.raises(InvalidInputError, match=r"'InNotebook' is defined in __main__.*move the class"):
        modules_for(model)
    with pytest.raises(InvalidInputError, match=rf"\${MODEL_MODULES_ENV}: cannot import 'no_such_mod_x'"):
        import_model_modules({MODEL_MODULES_ENV: "json, no_such_mod_x"})
    assert import_model_modules({MODEL_MODULES_ENV: " json ,"}) == ["json"]


def test_bench_returns_its_summary() -> None:
    summary = blindscore.bench("naive", applications=2)
    assert summary["workload"] == "naive" and summary["applications"] == 2
    assert summary["p50_ms"] > 0 and summary["bytes_per_app"] > 50 * 400
    with pytest.raises(InvalidInputError, match="unknown workload 'fast'; choose one of online, batch"):
        blindscore.bench("fast")
    with pytest.raises(InvalidInputError, match="applications must be a positive integer, not 0"):
        blindscore.bench("naive", applications=0)


def test_rows_from_each_kind_of_input(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b\n1,x\n,y\n")
    assert load_rows(path) == [{"a": "1", "b": "x"}, {"a": None, "b": "y"}]
    frame = pd.DataFrame({"a": [1.5, np.nan], "b": ["x", None], "n": np.array([3, 4], dtype=np.int64)})
    rows = load_rows(frame)
    assert rows == [{"a": 1.5, "b": "x", "n": 3}, {"a": None, "b": None, "n": 4}]
    assert type(rows[0]["n"]) is int
    with pytest.raises(InvalidInputError, match=r"row 1, column 'flag': a boolean is ambiguous"):
        load_rows([{"flag": True}])
    with pytest.raises(InvalidInputError, match="expected a pandas DataFrame, a CSV or Parquet path"):
        load_rows({"a": 1})
    with pytest.raises(InvalidInputError, match="data: no rows"):
        load_rows([])
    with pytest.raises(InvalidInputError, match=r"nope\.csv: no such file"):
        load_rows(tmp_path / "nope.csv")
