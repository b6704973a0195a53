"""Tree ensembles scored blind over the real services: bureau, bank and platform over mutual TLS.

An XGBoost model file and a LightGBM model file are imported as a user would (``read_model``, the
bureau's model store), applications with missing values go through the platform, and the band the
bank stores equals the model's own band for every row (the library's band wherever the margin is
farther than the proven error from a cutoff). The bank's side runs CircuitStart / CircuitFinish;
a second finish of the same application is refused, and a bureau garbling a circuit that does not
fit the public shape leaves a fault at the bank, never a band.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import grpc
import lightgbm as lgb
import numpy as np
import pytest
import xgboost as xgb

from blindscore.app.client import score_one
from blindscore.crypto import ot
from blindscore.data.german import NUMERIC_RANGES, load_german_credit
from blindscore.importers import ImportOptions, read_model
from blindscore.models import families
from blindscore.models.trees import TreeEnsemble
from blindscore.protocol.application import Application
from blindscore.protocol.circuit_band import CircuitBand, Family
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.wire import serde

from attackers import ot_sender
from support import Nodes, NodesFactory
from waiting import wait_for

COLUMNS = tuple(sorted(NUMERIC_RANGES))


def german(rows: int = 300) -> tuple[np.ndarray, np.ndarray, list[dict[str, object]]]:
    data, target = load_german_credit()
    x = np.array([[float(r[c]) for c in COLUMNS] for r in data[:rows]])
    rng = np.random.default_rng(5)
    x[rng.random(x.shape) < 0.08] = np.nan
    records = [
        {c: (None if math.isnan(v) else float(v)) for c, v in zip(COLUMNS, row, strict=True)} for row in x
    ]
    return x, np.asarray(target[:rows]), records


@pytest.fixture(scope="module")
def nodes(module_nodes: NodesFactory) -> Nodes:
    return module_nodes("trees", tls=True)


def score(nodes: Nodes, model_id: str, app_id: str, record: dict[str, object]) -> int:
    app = Application(app_id, "bank-a", model_id, nodes.key_id, "consent-t", record)
    outcome = score_one(nodes.platform, app, security=nodes.creds("platform-a").expecting("platform"))
    assert outcome.accepted and not outcome.pending, outcome.error
    stored = nodes.bank_node.store.get(app_id, "platform-a", "bureau-1")
    assert stored is not None
    return stored.band


def check(
    nodes: Nodes, model: TreeEnsemble, model_id: str, records: list[dict[str, object]], margins: np.ndarray
) -> None:
    nodes.bureau_obj.models.put(model_id, model)
    far = 0
    for i, (record, m) in enumerate(zip(records, margins, strict=True)):
        band = score(nodes, model_id, f"{model_id}-{i}", record)
        assert band == model.band_from_encoded(model.spec.encode_row(record))
        if all(abs(m - c) > model.max_abs_error + 1e-6 * abs(m) for c in model.decision_cutoffs):
            far += 1
            assert band == model.band_of_margin(float(m))
    assert far >= len(records) // 2


def test_an_xgboost_file_scored_through_the_nodes(nodes: Nodes, tmp_path: Path) -> None:
    x, y, records = german()
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1, "seed": 0},
        xgb.DMatrix(x, label=y, feature_names=list(COLUMNS)),
        5,
    )
    booster.save_model(tmp_path / "gbdt.ubj")
    model = read_model(tmp_path / "gbdt.ubj", ImportOptions(cutoffs=(0.2, 0.5, 0.8)))
    assert isinstance(model, TreeEnsemble)
    margins = booster.predict(xgb.DMatrix(x[:10], feature_names=list(COLUMNS)), output_margin=True)
    check(nodes, model, "gbdt", records[:10], margins)


def test_a_lightgbm_file_scored_through_the_nodes(nodes: Nodes, tmp_path: Path) -> None:
    x, y, records = german()
    params = {"objective": "binary", "num_leaves": 6, "verbose": -1, "min_data_in_leaf": 5, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(x, y, feature_name=list(COLUMNS)), 4)
    booster.save_model(tmp_path / "lgb.txt")
    model = read_model(tmp_path / "lgb.txt", ImportOptions(cutoffs=(0.3, 0.6)))
    margins = booster.predict(x[10:18], raw_score=True)
    check(nodes, model, "lgb", records[10:18], margins)


def test_a_tree_file_without_cutoffs_is_refused(tmp_path: Path) -> None:
    x, y, _ = german(60)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 2, "nthread": 1}, xgb.DMatrix(x, label=y), 2
    )
    booster.save_model(tmp_path / "m.json")
    with pytest.raises(Exception, match="carries no bands: give the cutoffs"):
        read_model(tmp_path / "m.json")


# ---------------------------------------------------------------------- a deviating bureau


def circuit_round(nodes: Nodes, model: TreeEnsemble, app_id: str, family: Family) -> tuple[Any, Any, Any]:
    """Round 1 of an application's circuit band at the real bank, as the bureau (over mTLS); returns
    the stub, the finish request and the reveal request that follows it (the round's pad)."""
    stub = nodes.stub("bank", "bureau-1")
    sender = ot_sender(stub)
    pk = nodes.bank_node.keypair.public_key
    _, _, records = german(1)
    ciphertexts = [pk.encrypt(v) for v in model.spec.encode_row(records[0])]
    bureau = CircuitBand(pk, model, family, ciphertexts)
    start = serde.circuit_start_to_proto(pk, sender.session_id, bureau.request, app_id, "platform-a")
    resp = stub.CircuitStart(start, timeout=10)
    ext = ot.ExtensionRequest(
        sender.session_id, bytes(resp.ot_nonce), resp.ot_count, bytes(resp.ot_u), bytes(resp.ot_check)
    )
    garbled = bureau.finish(ext, sender)
    finish = serde.circuit_finish_to_proto(
        pk.key_id, bytes(resp.ticket), garbled, "gbdt", ("A", "B", "C", "D"), app_id, "platform-a",
    )  # fmt: skip
    reveal = pb.CircuitRevealRequest(
        key_id=pk.key_id, application_id=app_id, platform_id="platform-a",
        garbling_id=garbled.garbling_id, pad=bureau.pad,
    )  # fmt: skip
    return stub, finish, reveal


def small_model(tmp_path: Path) -> TreeEnsemble:
    x, y, _ = german(120)
    params = {"objective": "binary:logistic", "max_depth": 2, "nthread": 1, "seed": 1}
    booster = xgb.train(params, xgb.DMatrix(x, label=y, feature_names=list(COLUMNS)), 3)
    booster.save_model(tmp_path / "small.json")
    model = read_model(tmp_path / "small.json", ImportOptions(cutoffs=(0.2, 0.5, 0.8)))
    assert isinstance(model, TreeEnsemble)
    return model


def test_a_finish_is_taken_once(nodes: Nodes, tmp_path: Path) -> None:
    model = small_model(tmp_path)
    stub, finish, reveal = circuit_round(nodes, model, "once-1", families.family("trees"))
    assert stub.CircuitFinish(finish, timeout=10).stored == 1
    with pytest.raises(grpc.RpcError) as again:
        stub.CircuitFinish(finish, timeout=10)
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "batch ticket not valid here" in (again.value.details() or "")
    # Before the pad, the bank holds no band; with it, one; the same reveal again changes nothing.
    assert nodes.bank_node.store.get("once-1", "platform-a", "bureau-1") is None
    assert stub.CircuitReveal(reveal, timeout=10).stored == 1
    assert stub.CircuitReveal(reveal, timeout=10).stored == 0
    assert nodes.bank_node.store.get("once-1", "platform-a", "bureau-1") is not None


def test_a_reveal_of_an_unknown_round_or_a_wrong_size_pad_is_refused_by_ids_and_sizes(
    nodes: Nodes, tmp_path: Path
) -> None:
    model = small_model(tmp_path)
    stub, finish, reveal = circuit_round(nodes, model, "reveal-1", families.family("trees"))
    stub.CircuitFinish(finish, timeout=10)
    other = pb.CircuitRevealRequest()
    other.CopyFrom(reveal)
    other.garbling_id = b"\x00" * 16
    with pytest.raises(grpc.RpcError) as unknown:
        stub.CircuitReveal(other, timeout=10)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    other.CopyFrom(reveal)
    other.pad = reveal.pad + b"\x00"
    with pytest.raises(grpc.RpcError) as wide:
        stub.CircuitReveal(other, timeout=10)
    assert wide.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert nodes.bank_node.store.get("reveal-1", "platform-a", "bureau-1") is None


def test_a_circuit_that_does_not_fit_the_shape_leaves_a_fault_not_a_band(
    nodes: Nodes, tmp_path: Path
) -> None:
    """The bureau garbles a circuit whose first output is a node's comparison instead of the first
    cutoff; the bank evaluates the circuit it rebuilt from the public shape, which the tables do not
    fit: the application is stored as faulted, the bureau's fault count grows, no band is learned."""
    model = small_model(tmp_path)
    honest = families.family("trees")

    def revealing(shape: Any, b: Any, values: list[Any], secrets_: list[Any]) -> list[int]:
        outputs = honest.build(shape, b, values, secrets_)
        return [b.less_than(values[0], secrets_[0], signed=False), *outputs[1:]]

    before = len(nodes.bank_node.store.faults("bureau-1"))
    stub, finish, reveal = circuit_round(nodes, model, "deviate-1", Family(revealing, honest.secret_widths))
    assert stub.CircuitFinish(finish, timeout=10).stored == 1  # the receipt never depends on a fault
    assert stub.CircuitReveal(reveal, timeout=10).stored == 1  # nor does the reveal's
    record = nodes.bank_node.store.get("deviate-1", "platform-a", "bureau-1")
    assert record is None or record.band == 0
    runs = nodes.bank_node.store.runs("bureau-1", "deviate-1", platform_id="platform-a")
    assert runs is not None and runs[1], "the application is not recorded as faulted"
    faults = nodes.bank_node.store.faults("bureau-1")
    assert len(faults) == before + 1 and faults[-1].reason == "circuit_output"


def test_a_bank_with_inconsistent_ot_columns_is_refused_and_its_session_dropped(
    nodes: Nodes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deviating bank builds its OT request with a choice vector that differs between columns (how
    it would learn the bureau's s, then Delta and every garbler input). The bureau's consistency
    check refuses the round before it sends a garbled table or a label: no band is stored, and the
    OT session is dropped, so the next application (an honest bank again) runs on a new one."""
    model = small_model(tmp_path)
    nodes.bureau_obj.models.put("ot-check", model)
    honest_request = ot.OtReceiver.request

    def deviating(self: ot.OtReceiver, choices: Any, nonce: bytes | None = None) -> ot.ExtensionRequest:
        request = honest_request(self, choices, nonce)
        u = bytearray(request.u)
        width = len(u) // ot.KAPPA
        for column in range(0, ot.KAPPA, 2):  # every other column: some has s_i = 1 (1 - 2^-64)
            u[column * width] ^= 0x80  # the first OT's choice bit, in that column only
        return dataclasses.replace(request, u=bytes(u))

    monkeypatch.setattr(ot.OtReceiver, "request", deviating)
    _, _, records = german(12)
    app = Application("ot-dev-1", "bank-a", "ot-check", nodes.key_id, "consent-t", records[0])
    outcome = score_one(nodes.platform, app, security=nodes.creds("platform-a").expecting("platform"))
    assert outcome.accepted and outcome.pending  # left to the retry worker, like any bank failure
    assert nodes.bank_node.store.get("ot-dev-1", "platform-a", "bureau-1") is None
    monkeypatch.undo()
    expected = [model.band_from_encoded(model.spec.encode_row(r)) for r in records[:2]]
    assert score(nodes, "ot-check", "ot-dev-2", records[1]) == expected[1]
    first = wait_for(lambda: nodes.bank_node.store.get("ot-dev-1", "platform-a", "bureau-1"), timeout=30)
    assert first.band == expected[0]
