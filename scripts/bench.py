"""Run a blindscore benchmark workload: python scripts/bench.py {online,batch,german,naive,plots} [--json]."""

from __future__ import annotations

from blindscore.app.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
