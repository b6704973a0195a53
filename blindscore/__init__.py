"""blindscore: privacy-preserving credit scoring between a platform, a credit bureau and a bank."""

from __future__ import annotations

from blindscore.errors import BlindscoreError

__all__ = ["BlindscoreError", "__version__"]
__version__ = "0.1.0"
