"""Load test: python scripts/load.py [--clients 8] [--duration 60] [--json] (three local node processes)."""

from __future__ import annotations

from blindscore.loadtest import main

if __name__ == "__main__":
    raise SystemExit(main())
