"""Run the blindscore command line: python -m blindscore."""

from __future__ import annotations

from blindscore.app.cli import main

raise SystemExit(main())
