"""Cryptographic primitives: Paillier and DGK keys, oblivious transfer, garbled circuits, randomness pools."""
