"""Run a blindscore benchmark workload: python scripts/bench.py WORKLOAD [--json] (--help lists them all)."""

from __future__ import annotations

from blindscore.app.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
