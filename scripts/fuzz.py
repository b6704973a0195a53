"""Fuzz every RPC of the three nodes with Hypothesis: python scripts/fuzz.py --examples N."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = 6  # the fuzzing tests in tests/test_fuzz.py (submit, bank, platform, registry, batch, packed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=10_000, help="examples per RPC group (default 10000)")
    args = parser.parse_args()
    env = {**os.environ, "BLINDSCORE_FUZZ_EXAMPLES": str(args.examples)}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--hypothesis-show-statistics",
        str(ROOT / "tests" / "test_fuzz.py"),
    ]
    result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    tail = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    failed = "failed" in tail
    print(f"examples requested per test: {args.examples} x {TESTS} tests; pytest: {tail}")
    # Hypothesis's own count of the examples each test ran (it may stop early only if it exhausts
    # a strategy's values).
    test = ""
    for line in result.stdout.splitlines():
        if line.startswith("tests/test_fuzz.py::"):
            test = line.split("::", 1)[1].rstrip(":")
        elif "passing examples" in line:
            print(f"  {test}: {line.strip().lstrip('- ')}")
    print(f"crashes or hangs (INTERNAL, UNKNOWN, DEADLINE_EXCEEDED, stored rows): {'yes' if failed else 0}")
    if result.returncode:
        print(result.stdout[-4000:], result.stderr[-2000:], sep="\n")
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
