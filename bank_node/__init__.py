"""The bank node: holds the secret keys, answers the band protocol, stores the band it learns."""

from __future__ import annotations

from bank_node.flow import BankNode
from bank_node.store import BandRecord, ResultStore

__all__ = ["BandRecord", "BankNode", "ResultStore"]
