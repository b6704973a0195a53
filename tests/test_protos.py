"""The committed gRPC stubs are exactly what protoc generates from protos/ today."""

from __future__ import annotations

import ast
import importlib.util
import re
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ["blindscore_pb2.py", "blindscore_pb2.pyi", "blindscore_pb2_grpc.py"]
V1 = ROOT / "blindscore" / "v1"


def _gen_protos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _without_json_names(fd: object) -> object:
    """protoc's descriptor sets carry json_name; the gencode's embedded descriptor does not."""
    stack = list(fd.message_type)  # type: ignore[attr-defined]
    while stack:
        message = stack.pop()
        for f in message.field:
            f.ClearField("json_name")
        stack.extend(message.nested_type)
    return fd


def test_stubs_describe_todays_proto(tmp_path: Path) -> None:
    """The descriptor inside the committed blindscore_pb2.py is the one protoc makes from protos/ now
    (with any grpcio-tools: the descriptor does not depend on the generator's version), and the grpc
    stub has a route for every method."""
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    source = (V1 / "blindscore_pb2.py").read_text()
    blob = next(
        n.args[0].value
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "AddSerializedFile"
    )
    committed = descriptor_pb2.FileDescriptorProto.FromString(blob)
    out = tmp_path / "set.pb"
    args = ["protoc", f"-I{ROOT / 'protos'}", f"--descriptor_set_out={out}", "blindscore/v1/blindscore.proto"]
    assert protoc.main(args) == 0
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    assert _without_json_names(committed) == _without_json_names(fresh), (
        "blindscore/v1 is stale: run python scripts/gen_protos.py"
    )
    grpc_stub = (V1 / "blindscore_pb2_grpc.py").read_text()
    for service in fresh.service:
        for method in service.method:
            assert f"'/blindscore.v1.{service.name}/{method.name}'" in grpc_stub


def test_stubs_come_from_the_pinned_generator_and_match_the_declared_range() -> None:
    """The gencode version the stubs check at import is the declared protobuf floor; grpcio's floor
    covers the grpc stub's own check; nothing builds stubs at install time."""
    gen = _gen_protos()
    source = (V1 / "blindscore_pb2.py").read_text()
    assert f"# Protobuf Python Version: {gen.GENCODE}\n" in source
    call = re.search(r"ValidateProtobufRuntimeVersion\(\s*\S+PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),", source)
    assert call is not None and ".".join(call.groups()) == gen.GENCODE
    assert f"GRPC_GENERATED_VERSION = '{gen.GRPCIO_TOOLS}'" in (V1 / "blindscore_pb2_grpc.py").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = pyproject["project"]["dependencies"]
    major = int(gen.GENCODE.split(".")[0])
    # protobuf runs gencode of its own major version and the one before: 6.x gencode, runtimes 6 and 7.
    assert f"protobuf>={gen.GENCODE},<{major + 2}" in deps
    grpcio = next(d for d in deps if d.startswith("grpcio>="))
    floor = tuple(int(x) for x in grpcio.split(">=")[1].split(",")[0].split("."))
    assert floor >= tuple(int(x) for x in gen.GRPCIO_TOOLS.split("."))
    assert not any("grpcio-tools" in r for r in pyproject["build-system"]["requires"])


def test_stubs_are_exactly_what_the_pinned_generator_writes(tmp_path: Path) -> None:
    """Byte for byte, when the pinned grpcio-tools is at hand (this interpreter's, or the venv
    ``python scripts/gen_protos.py`` caches); the descriptor test above runs everywhere."""
    gen = _gen_protos()
    python = gen.generator_python(create=False)
    if python is None:
        pytest.skip(f"grpcio-tools=={gen.GRPCIO_TOOLS} not at hand: run python scripts/gen_protos.py once")
    gen.generate(tmp_path, python)
    for name in GENERATED:
        fresh = (tmp_path / "blindscore" / "v1" / name).read_text()
        committed = (V1 / name).read_text()
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
            "CircuitReveal",
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
