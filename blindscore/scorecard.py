"""Scorecards as privately evaluable models (work in progress: the Scorecard type lands here shortly)."""
