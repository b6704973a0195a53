"""The tweakable circular correlation-robust hash from fixed-key AES, over whole arrays of blocks.

Guo, Katz, Wang, Yu, "Efficient and Secure Multiparty Computation from Fixed-Key Block Ciphers",
IEEE S&P 2020 (the construction EMP uses for garbling and OT extension)::

    H(x, i) = pi(sigma(x) ^ i) ^ sigma(x) ^ i,   sigma(x_L || x_R) = (x_L ^ x_R) || x_L,

pi = AES-128 under a key fixed per use (public: the model is an ideal permutation with a known key).
Blocks and tweaks are 128 bits, written big-endian (x_L = bytes 0..7); the tweak i is the integer i
as a 16-byte big-endian block. Why hand-written: no maintained Python library offers it, and one
``Cipher(AES(key), ECB()).encryptor().update`` call over a whole array of blocks is what makes it
fast (a hash call per block from Python costs about a microsecond; this costs nanoseconds).
Callers: :mod:`blindscore.crypto.halfgates` (garbled gates) and :mod:`blindscore.crypto.ot` (the
IKNP row hash, which needs correlation robustness: H(q_j ^ s, j) for a secret s).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

#: Blocks as rows of two uint64 whose memory is the 16-byte big-endian block (XOR is bytewise, so
#: the host's endianness never matters for XOR; tweaks go through explicit byte views).
Blocks = npt.NDArray[np.uint64]


class Tccr:
    """H(x, i) over arrays of blocks, one AES call per array."""

    __slots__ = ("_encrypt",)

    def __init__(self, key: bytes) -> None:
        # ECB is exactly the block permutation applied to each 16-byte block independently;
        # the encryptor is stateless in ECB mode, so one serves every call.
        self._encrypt = Cipher(algorithms.AES(key), modes.ECB()).encryptor().update

    def __call__(self, x: Blocks, tweaks: Blocks) -> Blocks:
        s = np.empty_like(x)
        s[:, 0] = x[:, 0] ^ x[:, 1]
        s[:, 1] = x[:, 0]
        s ^= tweaks
        out = np.frombuffer(self._encrypt(s.tobytes()), dtype=np.uint64).reshape(-1, 2)
        return out ^ s


def tweak_blocks(tweaks: npt.NDArray[np.uint64]) -> Blocks:
    """Each tweak i as the 16-byte big-endian block of the integer i."""
    out = np.zeros((len(tweaks), 2), dtype=np.uint64)
    out[:, 1] = tweaks.astype(">u8").view(np.uint64)
    return out


def as_blocks(data: bytes | npt.NDArray[np.uint8]) -> Blocks:
    """16-byte blocks (bytes, or an n x 16 uint8 matrix) as the n x 2 uint64 view the hash takes."""
    raw = data if isinstance(data, bytes) else np.ascontiguousarray(data).tobytes()
    return np.frombuffer(raw, dtype=np.uint64).reshape(-1, 2)
