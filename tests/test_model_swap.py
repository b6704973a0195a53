"""Hot swap at a running bureau: new versions go live without restart, in-flight applications keep theirs."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from blindscore.app.client import score_one
from blindscore.bureau.registry import ModelStore
from blindscore.data.german import DEFAULT_MODEL_ID, default_model, load_german_credit
from blindscore.errors import InvalidInputError
from blindscore.infra.transport import open_channel
from blindscore.models.linear import LinearModel
from blindscore.models.policy import sigmoid
from blindscore.platform_node import flow as platform_flow
from blindscore.protocol.application import Application
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc

from support import Nodes as Net
from support import NodesFactory, german_credit, german_model

V2_CUTOFFS = (0.01, 0.02, 0.03, 0.04)  # almost everyone lands in E
V3_CUTOFFS = (0.96, 0.97, 0.98, 0.99)  # almost everyone lands in A


@pytest.fixture(scope="module")
def net(module_nodes: NodesFactory) -> Net:
    return module_nodes("swap", bank_id="bank-s", platform_id="platform-s")


def variant(cutoffs: tuple[float, ...]) -> LinearModel:
    d = german_model().to_dict()
    d["policy"]["cutoffs"] = list(cutoffs)
    d.pop("encoded")
    return LinearModel.from_dict(d)


def middle_rows() -> list[int]:
    """Rows whose probability is far from every cutoff used here, so their bands are certain."""
    rows, _ = german_credit()
    model = german_model()
    cuts = (*model.policy.cutoffs, *V2_CUTOFFS, *V3_CUTOFFS)
    keep = []
    for i, row in enumerate(rows):
        p = sigmoid(model.linear_score(row))
        if 0.05 < p < 0.95 and all(abs(p - c) > 1e-4 for c in cuts):
            keep.append(i)
    return keep


def app(net: Net, i: int, app_id: str, version: str = "") -> Application:
    rows, _ = german_credit()
    return Application(
        application_id=app_id,
        bank_id="bank-s",
        model_id=DEFAULT_MODEL_ID,
        key_id=net.key_id,
        consent_reference=f"consent-{app_id}",
        features=rows[i],
        model_version=version,
    )


def band_of(net: Net, app_id: str) -> str:
    record = net.bank_node.store.get(app_id)
    assert record is not None
    return record.band_label


def test_versions_swap_without_restart_and_in_flight_work_keeps_its_version(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(platform_flow, "LATEST_TTL_S", 0.0)
    rows, _ = load_german_credit()
    i, j, k = middle_rows()[:3]
    v1 = default_model()

    out = score_one(net.platform, app(net, i, "swap-1"))
    assert out.accepted and out.model_version == "1"
    assert band_of(net, "swap-1") == v1.policy.labels[v1.band(rows[i])]

    # `blindscore model import` writes the bureau's store from another process; a separate
    # ModelStore object stands for it. The running bureau serves v2 from the next application on.
    assert ModelStore(net.models_dir).put(DEFAULT_MODEL_ID, variant(V2_CUTOFFS)).version == 2
    out = score_one(net.platform, app(net, j, "swap-2"))
    assert out.accepted and out.model_version == "2" and band_of(net, "swap-2") == "E"

    # A platform may pin a version explicitly.
    out = score_one(net.platform, app(net, j, "swap-pinned", version="1"))
    assert out.model_version == "1"
    assert band_of(net, "swap-pinned") == v1.policy.labels[v1.band(rows[j])]

    # v3 arrives while an application on v2 is between its protocol rounds (the circuit band's
    # first bank call): it finishes on v2.
    original = net.bank_node.circuit_start
    imported: list[int] = []

    def import_mid_flight(*args: Any, **kwargs: Any) -> Any:
        if not imported:
            imported.append(ModelStore(net.models_dir).put(DEFAULT_MODEL_ID, variant(V3_CUTOFFS)).version)
        return original(*args, **kwargs)

    monkeypatch.setattr(net.bank_node, "circuit_start", import_mid_flight)
    out = score_one(net.platform, app(net, k, "swap-inflight"))
    assert imported == [3]
    assert out.accepted and out.model_version == "2" and band_of(net, "swap-inflight") == "E"
    out = score_one(net.platform, app(net, k, "swap-3"))
    assert out.model_version == "3" and band_of(net, "swap-3") == "A"


def test_unknown_or_malformed_versions_get_precise_statuses(net: Net) -> None:
    with open_channel(net.bureau) as channel:
        stub: Any = pb_grpc.BureauStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.GetModelSpec(pb.GetModelSpecRequest(model_id=DEFAULT_MODEL_ID, model_version="99"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert "no version 99" in (info.value.details() or "")
        with pytest.raises(grpc.RpcError) as info:
            stub.GetModelSpec(pb.GetModelSpecRequest(model_id=DEFAULT_MODEL_ID, model_version="newest"))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        spec = stub.GetModelSpec(pb.GetModelSpecRequest(model_id=DEFAULT_MODEL_ID, model_version="1"))
        assert spec.model_version == "1"
    with pytest.raises(InvalidInputError, match="model version"):
        app(net, 0, "bad-version", version="1.0")
    with pytest.raises(grpc.RpcError) as info:
        score_one(net.platform, app(net, 0, "swap-missing", version="42"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "no version 42" in (info.value.details() or "")
    assert net.bank_node.store.get("swap-missing") is None
