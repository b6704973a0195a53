"""The bank node: holds the secret keys, answers the band protocol, stores the band it learns."""

from __future__ import annotations

from blindscore.bank_node.flow import BankNode
from blindscore.bank_node.keyring import BankKey, KeyRing
from blindscore.bank_node.store import BandRecord, ResultStore

__all__ = ["BandRecord", "BankKey", "BankNode", "KeyRing", "ResultStore"]
