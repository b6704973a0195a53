"""Hot swap at a running bureau: new versions go live without restart, in-flight applications keep theirs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from blindscore.app.client import score_one
from blindscore.bank_node.flow import BankNode
from blindscore.bank_node.server import register_with_bureau, start_bank_server
from blindscore.bank_node.store import ResultStore
from blindscore.bureau.flow import Bureau
from blindscore.bureau.registry import ModelStore
from blindscore.bureau.server import start_bureau_server
from blindscore.crypto.dgk import DGKKeyPair
from blindscore.crypto.paillier import KeyPair
from blindscore.data.german import DEFAULT_MODEL_ID, default_model, load_german_credit
from blindscore.errors import InvalidInputError
from blindscore.infra.transport import open_channel
from blindscore.models.linear import LinearModel
from blindscore.models.policy import sigmoid
from blindscore.platform_node import flow as platform_flow
from blindscore.platform_node.bureau_link import GrpcBureauLink
from blindscore.platform_node.flow import PlatformNode
from blindscore.platform_node.server import start_platform_server
from blindscore.protocol.application import Application
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc

V2_CUTOFFS = (0.01, 0.02, 0.03, 0.04)  # almost everyone lands in E
V3_CUTOFFS = (0.96, 0.97, 0.98, 0.99)  # almost everyone lands in A


@dataclass
class Net:
    platform: str
    bureau: str
    bank: BankNode
    models_dir: Path
    key_id: str


@pytest.fixture(scope="module")
def net(
    tmp_path_factory: pytest.TempPathFactory, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("swap")
    bureau = Bureau.open(tmp / "bureau")
    bureau_server, bureau_port, channels = start_bureau_server(bureau, "127.0.0.1:0")
    bureau_addr = f"127.0.0.1:{bureau_port}"
    bank = BankNode("bank-s", paillier_keypair, dgk_keypair, ResultStore(tmp / "bank" / "results.sqlite3"))
    bank_server, bank_port = start_bank_server(bank, "127.0.0.1:0")
    key_id = register_with_bureau(bank, bureau_addr, f"127.0.0.1:{bank_port}")
    channel = open_channel(bureau_addr)
    platform = PlatformNode("platform-s", GrpcBureauLink(channel))
    platform_server, platform_port = start_platform_server(platform, "127.0.0.1:0")
    yield Net(f"127.0.0.1:{platform_port}", bureau_addr, bank, tmp / "bureau" / "models", key_id)
    for server in (platform_server, bank_server, bureau_server):
        server.stop(None)
    channel.close()
    channels.close()


def variant(cutoffs: tuple[float, ...]) -> LinearModel:
    d = default_model().to_dict()
    d["policy"]["cutoffs"] = list(cutoffs)
    d.pop("encoded")
    return LinearModel.from_dict(d)


def middle_rows() -> list[int]:
    """Rows whose probability is far from every cutoff used here, so their bands are certain."""
    rows, _ = load_german_credit()
    model = default_model()
    cuts = (*model.policy.cutoffs, *V2_CUTOFFS, *V3_CUTOFFS)
    keep = []
    for i, row in enumerate(rows):
        p = sigmoid(model.linear_score(row))
        if 0.05 < p < 0.95 and all(abs(p - c) > 1e-4 for c in cuts):
            keep.append(i)
    return keep


def app(net: Net, i: int, app_id: str, version: str = "") -> Application:
    rows, _ = load_german_credit()
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
    record = net.bank.store.get(app_id)
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

    # v3 arrives while an application on v2 is between its protocol rounds: it finishes on v2.
    original = net.bank.compare_masked
    imported: list[int] = []

    def import_mid_flight(*args: Any, **kwargs: Any) -> Any:
        if not imported:
            imported.append(ModelStore(net.models_dir).put(DEFAULT_MODEL_ID, variant(V3_CUTOFFS)).version)
        return original(*args, **kwargs)

    monkeypatch.setattr(net.bank, "compare_masked", import_mid_flight)
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
    assert net.bank.store.get("swap-missing") is None
