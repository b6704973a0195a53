"""Harnesses and maintenance scripts: load and crash tests, the model zoo; never imported by blindscore."""
