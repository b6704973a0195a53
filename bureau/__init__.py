"""The credit bureau node: holds the models, scores ciphertexts blind, runs the band protocol."""

from __future__ import annotations

from blindscore.bureau.flow import BureauNode
from blindscore.bureau.registry import BankRecord, BankRegistry, ModelStore

__all__ = ["BankRecord", "BankRegistry", "BureauNode", "ModelStore"]
