"""Readers of model files from other libraries: scikit-learn (skops) and the Python scorecard libraries."""

from blindscore.importers.model_file import AUTO, FORMATS, ImportOptions, detect_format, read_model

__all__ = ["AUTO", "FORMATS", "ImportOptions", "detect_format", "read_model"]
