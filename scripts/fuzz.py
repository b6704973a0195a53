"""Fuzz every RPC of the three nodes with Hypothesis: python scripts/fuzz.py --examples N [--seed S].

Runs tests/test_fuzz.py (or the test files named) with N examples per test and prints, per test,
the number of examples Hypothesis ran and how they ended. The counts come from Hypothesis's own
statistics (``hypothesis.statistics.collector``, the raw data behind --hypothesis-show-statistics),
not from its printed report, whose wording changes between releases.

CI runs the fuzz tests derandomized (the same examples each time); this script explores instead:
it passes a seed to Hypothesis (a fresh one unless --seed repeats an earlier run) and prints it.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TARGET = ROOT / "tests" / "test_fuzz.py"
#: Hypothesis's phases in the order it runs them; "generate" is where the requested examples run.
PHASES = ("explicit", "reuse", "generate", "target", "shrink", "explain")


class StatisticsCollector:
    """A pytest plugin that keeps Hypothesis's statistics of every test it runs, by node id.

    Hypothesis hands its statistics to whatever callback ``hypothesis.statistics.collector`` holds
    while a test runs; its own pytest plugin sets one (to print --hypothesis-show-statistics). This
    plugin's hook runs inside that one (trylast), records the raw dictionary and passes it on.
    """

    def __init__(self) -> None:
        self.statistics: dict[str, dict[str, Any]] = {}

    @pytest.hookimpl(hookwrapper=True, trylast=True)
    def pytest_runtest_call(self, item: Any) -> Iterator[None]:
        from hypothesis import statistics

        collector: Any = statistics.collector  # typed for its default, None
        outer = collector.value

        def note(stats: dict[str, Any]) -> None:
            self.statistics[item.nodeid] = dict(stats)
            if outer is not None:
                outer(stats)

        with collector.with_value(note):
            yield


def summarize(statistics: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per test: the examples of the generate phase by outcome, its time, why Hypothesis
    stopped, and how many test cases other phases (reuse, shrink, ...) ran."""
    lines = []
    for nodeid, stats in statistics.items():
        name = nodeid.split("::", 1)[-1]
        generate = stats.get("generate-phase") or {}
        status = Counter(case.get("status") for case in generate.get("test-cases", []))
        # An example counts towards max_examples when it is valid: passing or failing.
        passing, failing = status["valid"], status["interesting"]
        invalid = status["invalid"] + status["overrun"]
        line = (
            f"{name}: {passing + failing} examples "
            f"({passing} passing, {failing} failing, {invalid} invalid) "
            f"in {generate.get('duration-seconds', 0.0):.1f} s, "
            f"stopped because {stats.get('stopped-because', 'unknown')}"
        )
        others = [
            f"{phase} {len(cases)}"
            for phase in PHASES
            if phase != "generate" and (cases := (stats.get(f"{phase}-phase") or {}).get("test-cases"))
        ]
        if others:
            line += "; other phases: " + ", ".join(others)
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000, help="examples per test (default 10000)")
    parser.add_argument("--seed", type=int, help="Hypothesis seed, to repeat a run (default: a fresh one)")
    parser.add_argument("targets", nargs="*", help=f"test files (default {DEFAULT_TARGET.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    if args.examples < 1:
        parser.error("--examples must be at least 1")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    # Read by tests/test_fuzz.py when it is imported, below.
    os.environ["BLINDSCORE_FUZZ_EXAMPLES"] = str(args.examples)
    os.environ["BLINDSCORE_FUZZ_EXPLORE"] = "1"
    targets = [str(Path(t).resolve()) for t in args.targets] or [str(DEFAULT_TARGET)]

    plugin = StatisticsCollector()
    print(f"fuzzing with {args.examples} examples per test, seed {seed} (repeat with --seed {seed})")
    t0 = time.monotonic()
    code = pytest.main(
        ["-q", "-p", "no:cacheprovider", f"--hypothesis-seed={seed}", "--rootdir", str(ROOT), *targets],
        plugins=[plugin],
    )
    print(f"\nexamples Hypothesis ran per test ({time.monotonic() - t0:.0f} s in all):")
    for line in summarize(plugin.statistics):
        print(f"  {line}")
    if not plugin.statistics:
        print("  none: no Hypothesis test ran")
    print(f"failures (refusals that were not precise, crashes, hangs, stored rows): {'yes' if code else 0}")
    return int(code)


if __name__ == "__main__":
    raise SystemExit(main())
