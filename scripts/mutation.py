"""Mutation testing of one module or layer with mutmut: mutants, kill rate, survivors.

Usage (mutmut comes with the dev extra, ``pip install -e '.[dev]'``)::

    python scripts/mutation.py blindscore/protocol/slots.py tests/test_slots.py
    python scripts/mutation.py 'blindscore/crypto/*' tests/test_paillier.py tests/test_dgk.py --jobs 2

The first argument is the module (or a glob of modules) to mutate, the rest the test files that
cover it. The tree is copied to a scratch directory (the worktree is never touched), mutmut runs
there with the covering tests only, and the script prints the number of mutants, how many the
tests killed, the kill rate, and every surviving mutant with its diff, to be killed by a new test
or listed with the reason it is equivalent in docs/testing.md. ``--keep`` keeps the scratch
directory (then ``mutmut browse`` there shows the mutants one by one); ``--deselect NODEID`` leaves
out a test that fails on the unmutated tree for a reason of its own (mutmut refuses to start then).
``--hypothesis-profile NAME`` runs the tests under that Hypothesis profile of tests/conftest.py
(through $BLINDSCORE_HYPOTHESIS_PROFILE; the normal suite's is "ci"): "mutation" draws the same
examples but does not shrink a failing one, for modules whose mutants make property tests fail
slowly (crypto/circuit.py: every mutant of the builder fails the random circuits).
``$BLINDSCORE_CRYPTO_WORKERS`` is 1 unless set: a worker pool cannot start inside mutmut's forked
child, and a test failing for that reason would count as a kill (docs/testing.md, bank_node/flow.py).
Exit status 1 when the kill rate is below ``--target`` (percent, 0 by default).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Copied beside the mutated package: the nodes (also copied into it), the tests and the harnesses.
ALSO_COPY = ("tests", "scripts", "bureau", "bank_node", "platform_node", "protos", "pyproject.toml")
#: blindscore.crypto.parallel's worker count, 1 for mutation runs unless set (see main).
WORKERS_ENV = "BLINDSCORE_CRYPTO_WORKERS"
#: Names the Hypothesis profile tests/conftest.py loads (--hypothesis-profile).
HYPOTHESIS_PROFILE_ENV = "BLINDSCORE_HYPOTHESIS_PROFILE"
SKIP = shutil.ignore_patterns(".git", "mutants", "__pycache__", ".mypy_cache", ".ruff_cache", "*.egg-info")


def mutmut_command() -> list[str]:
    """The ``mutmut`` console script of this interpreter's environment (mutmut 3 wants the script,
    not ``python -m``)."""
    beside = Path(sys.executable).parent / "mutmut"
    found = str(beside) if beside.exists() else shutil.which("mutmut")
    if found is None:
        raise SystemExit("mutmut is not installed: pip install -e '.[dev]'")
    return [found]


def setup_cfg(module: str, tests: list[str], deselect: list[str] | None = None) -> str:
    """mutmut's settings. A list setting is one item a line: each pytest argument on its own line
    (a single line would reach pytest as one argument)."""
    lines = ["[mutmut]", "paths_to_mutate=blindscore/", f"only_mutate={module}"]
    lines.append("tests_dir=" + "\n    ".join(tests))
    lines.append("also_copy=" + "\n    ".join(ALSO_COPY))
    pytest_args = ["-p", "no:cacheprovider", "-q", *(f"--deselect={node}" for node in deselect or ())]
    lines.append("pytest_add_cli_args=\n    " + "\n    ".join(pytest_args))
    return "\n".join(lines) + "\n"


def summarise(work: Path, mutmut: list[str]) -> tuple[dict[str, int], list[str], list[str]]:
    """(mutmut's counts, the names of the surviving mutants, those no test reached)."""
    env = {**os.environ, "PYTHONPATH": str(work)}
    subprocess.run([*mutmut, "export-cicd-stats"], cwd=work, env=env, check=True, capture_output=True)
    counts = json.loads((work / "mutants" / "mutmut-cicd-stats.json").read_text())
    listing = subprocess.run(
        [*mutmut, "results"], cwd=work, env=env, check=True, capture_output=True, text=True
    )
    rows = [line.rsplit(":", 1) for line in listing.stdout.splitlines() if ":" in line]
    survivors = [name.strip() for name, status in rows if status.strip() == "survived"]
    unreached = [name.strip() for name, status in rows if status.strip() == "no tests"]
    return counts, survivors, unreached


def check_imports_from(work: Path, env: dict[str, str]) -> None:
    """Stop unless the package and its node subpackages import from the scratch tree."""
    names = ("blindscore", "blindscore.bank_node", "blindscore.bureau", "blindscore.platform_node")
    code = "import importlib, sys\nfor name in sys.argv[1:]: print(importlib.import_module(name).__file__)"
    found = subprocess.run(
        [sys.executable, "-c", code, *names], cwd=work, env=env, check=True, capture_output=True, text=True
    ).stdout.split()
    outside = [f for f in found if not Path(f).resolve().is_relative_to(work.resolve())]
    if outside:
        raise SystemExit(f"the scratch tree imports code from elsewhere: {', '.join(outside)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "module", help="module path or glob under blindscore/, e.g. blindscore/protocol/slots.py"
    )
    parser.add_argument("tests", nargs="+", help="the test files that cover it")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run in parallel (default 1)")
    parser.add_argument("--target", type=float, default=0.0, help="fail below this kill rate (percent)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--deselect",
        action="append",
        default=[],
        metavar="NODEID",
        help="leave out a test (pytest node id prefix) that fails on the unmutated tree for reasons "
        "of its own; repeatable. mutmut stops when a test fails before any mutation.",
    )
    parser.add_argument(
        "--hypothesis-profile",
        metavar="NAME",
        help="the Hypothesis profile of tests/conftest.py to run the tests under (default: the "
        "suite's own, ci); 'mutation' does not shrink failing examples",
    )
    args = parser.parse_args(argv)
    if not args.module.startswith("blindscore/"):
        parser.error("the module must be a path under blindscore/")
    mutmut = mutmut_command()
    scratch = Path(tempfile.mkdtemp(prefix="blindscore-mutation-"))
    work = scratch / "tree"
    try:
        # The node packages are symlinked into blindscore/; copy them as directories. mutmut walks
        # the package without following links, so a link would be missing from its mutants/ tree,
        # and blindscore.bank_node & co. would then be imported from wherever the interpreter's
        # installed blindscore lives (an editable install of another checkout) instead of this tree.
        shutil.copytree(ROOT / "blindscore", work / "blindscore", symlinks=False, ignore=SKIP)
        for name in ALSO_COPY:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, work / name, symlinks=True, ignore=SKIP)
            elif source.exists():
                shutil.copy2(source, work / name)
        text = (work / "pyproject.toml").read_text()
        assert "[tool.mutmut]" not in text, "the mutmut settings are written to setup.cfg by this script"
        (work / "setup.cfg").write_text(setup_cfg(args.module, args.tests, args.deselect))
        env = {**os.environ, "PYTHONPATH": str(work)}
        # Paillier work in the calling process: a worker pool started inside mutmut's forked child
        # fails (ChildProcessError), which would count every mutant a node test reaches as killed.
        env.setdefault(WORKERS_ENV, "1")
        if args.hypothesis_profile:
            env[HYPOTHESIS_PROFILE_ENV] = args.hypothesis_profile
        check_imports_from(work, env)
        print(f"mutating {args.module} against {' '.join(args.tests)} in {work}", flush=True)
        subprocess.run([*mutmut, "run", "--max-children", str(args.jobs)], cwd=work, env=env, check=False)
        counts, survivors, unreached = summarise(work, mutmut)
        total = counts.get("total", 0)
        killed = counts.get("killed", 0)
        rate = 100.0 * killed / total if total else 0.0
        print(f"\n{args.module}: {total} mutants, {killed} killed, kill rate {rate:.1f} %")
        print("counts: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        for name in unreached:
            print(f"no test reached: {name}")
        for name in survivors:
            diff = subprocess.run([*mutmut, "show", name], cwd=work, env=env, capture_output=True, text=True)
            print(f"\nsurvived: {name}\n{diff.stdout.strip()}")
        return 1 if rate < args.target else 0
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
