"""Regenerate blindscore/v1/*_pb2*.py from protos/ with the pinned grpcio-tools (in a cached venv if need be).

Why a pinned, older generator: protobuf's Python runtime accepts generated code of its own major
version and of the major version before it (https://protobuf.dev/support/cross-version-runtime-guarantee;
``google.protobuf.runtime_version.ValidateProtobufRuntimeVersion`` refuses only a runtime older than
the gencode). Code generated as protobuf 6.31.0 therefore runs on every runtime from 6.31.0 to the
last 7.x, which is the range pyproject.toml declares; libraries that pin protobuf 6 (ortools, so
optbinning) install beside blindscore. grpcio-tools 1.73.1 emits that gencode, and its service stubs
ask for grpcio >= 1.73.1.

    python scripts/gen_protos.py          # writes blindscore/v1/ in this checkout
    python scripts/gen_protos.py OUT_DIR  # writes OUT_DIR/blindscore/v1/

When the running interpreter has another grpcio-tools (or none), the generator runs from a virtual
environment made once under $XDG_CACHE_HOME (default ~/.cache)/blindscore/grpcio-tools-VERSION.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = "blindscore/v1/blindscore.proto"
#: The generator every committed stub comes from, and the protobuf gencode version it emits.
GRPCIO_TOOLS = "1.73.1"
GENCODE = "6.31.0"


def installed_tools() -> str | None:
    """The grpcio-tools version of this interpreter, or None."""
    try:
        return metadata.version("grpcio-tools")
    except metadata.PackageNotFoundError:
        return None


def cached_venv() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "blindscore" / f"grpcio-tools-{GRPCIO_TOOLS}"


def generator_python(*, create: bool = True) -> str | None:
    """An interpreter with grpcio-tools == GRPCIO_TOOLS: this one, else the cached venv (made now
    when ``create``; None when it is missing and not ``create``)."""
    if installed_tools() == GRPCIO_TOOLS:
        return sys.executable
    env = cached_venv()
    python = env / "bin" / "python"
    if not python.exists():
        if not create:
            return None
        print(f"making {env} with grpcio-tools=={GRPCIO_TOOLS} (once)", file=sys.stderr)
        venv.create(env, with_pip=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", f"grpcio-tools=={GRPCIO_TOOLS}"],
            check=True,
            env=_own_path(),
        )
    return str(python)


def _own_path() -> dict[str, str]:
    """This environment without PYTHONPATH, so the generator's interpreter sees only its own packages."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def generate(out_dir: Path, python: str | None = None) -> None:
    """Run the pinned protoc; output lands in out_dir/blindscore/v1/."""
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        python or generator_python() or sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{ROOT / 'protos'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--pyi_out={out_dir}",
        str(ROOT / "protos" / PROTO),
    ]
    result = subprocess.run(args, capture_output=True, text=True, env=_own_path())
    if result.returncode != 0:
        raise SystemExit(f"protoc failed: {result.stderr.strip()}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
    print(f"generated blindscore/v1 from protos/ (grpcio-tools {GRPCIO_TOOLS}, gencode {GENCODE})")
