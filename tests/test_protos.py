"""The committed gRPC stubs are exactly what protoc generates from protos/ today."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ["blindscore_pb2.py", "blindscore_pb2.pyi", "blindscore_pb2_grpc.py"]


def _generate(tmp: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(tmp)


def test_stubs_are_fresh(tmp_path: Path) -> None:
    _generate(tmp_path)
    for name in GENERATED:
        fresh = (tmp_path / "blindscore" / "v1" / name).read_text()
        committed = (ROOT / "blindscore" / "v1" / name).read_text()
        assert fresh == committed, f"blindscore/v1/{name} is stale: run python scripts/gen_protos.py"


def test_services_are_the_three_parties() -> None:
    from blindscore.v1 import blindscore_pb2 as pb

    services = {s.name: [m.name for m in s.methods] for s in pb.DESCRIPTOR.services_by_name.values()}
    assert services == {
        "Platform": ["ScoreApplication", "ScoreApplications"],
        "Bureau": ["RegisterBank", "GetBankKey", "GetModelSpec", "SubmitApplication", "SubmitBatch"],
        "Bank": [
            "CompareMasked",
            "CompareBlinded",
            "DeliverBand",
            "OtSetupStart",
            "OtSetupFinish",
            "PackedStart",
            "PackedFinish",
            "CircuitStart",
            "CircuitFinish",
            "GetBand",
            "WatchBands",
        ],
    }


def test_the_proto_ships_in_the_package() -> None:
    """Clients in other languages find the .proto inside the installed package, identical to protos/."""
    import tomllib
    from importlib.resources import files

    shipped = files("blindscore.v1") / "blindscore.proto"
    assert shipped.read_text() == (ROOT / "protos" / "blindscore" / "v1" / "blindscore.proto").read_text()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "*.proto" in package_data["blindscore.v1"]
