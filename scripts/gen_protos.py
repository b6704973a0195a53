"""Regenerate blindscore/v1/*_pb2*.py from protos/ with grpcio-tools (pinned in pyproject.toml)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = "blindscore/v1/blindscore.proto"


def generate(out_dir: Path) -> None:
    """Run protoc from grpcio-tools; output lands in out_dir/blindscore/v1/."""
    from grpc_tools import protoc  # a test/dev dependency, not a runtime one

    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{ROOT / 'protos'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--pyi_out={out_dir}",
        str(ROOT / "protos" / PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
    print("generated blindscore/v1 from protos/")
