"""Readers of model files from other libraries: scikit-learn (skops) and the Python scorecard libraries."""
