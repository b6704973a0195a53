"""Crash test: python scripts/crash.py [--applications 1000] [--database postgresql://...] [--json]."""

from __future__ import annotations

from blindscore.crashtest import main

if __name__ == "__main__":
    raise SystemExit(main())
