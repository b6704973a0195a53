"""1-out-of-2 oblivious transfer for the garbled-circuit comparison: base OT and IKNP extension, semi-honest.

No maintained Python library provides OT extension, so this module is hand-written on gmpy2 (base OT),
``hashlib`` (PRG and hashes), numpy (bit-matrix transposition) and ``secrets`` (all randomness).

Roles are named by the *extension*. The **OT sender** (the bureau, garbler) holds pairs of 128-bit
messages (x0_j, x1_j); the **OT receiver** (the bank, evaluator) holds choice bits r_j, learns x_{r_j}
and nothing about x_{1-r_j}; the sender learns nothing about r. Each message is transport-free: a
frozen dataclass of ints and bytes that the gRPC layer maps to protobuf.

Security model: semi-honest (honest-but-curious) parties; the hashes (base-OT key derivation, the IKNP
row hash H) are modelled as random oracles, and H needs at least correlation robustness. Nothing here
authenticates messages or resists a party that deviates from the protocol: that is for the transport
(mutual TLS) and the surrounding protocol.

Base OT (once per bureau <-> bank session, public-key)
------------------------------------------------------
128 (:data:`KAPPA`) base OTs in the Bellare-Micali (CRYPTO '89) / Naor-Pinkas (SODA 2001, "Efficient
oblivious transfer protocols", the random-oracle variant with one sender exponent r shared by all
OTs and the index hashed in) style, in the prime-order subgroup of quadratic residues of the RFC 3526
2048-bit MODP group (group 14): p a safe prime, q = (p - 1) / 2 prime, generator g = 4 = 2^2.
As in IKNP the roles flip: the bank is the base-OT *sender* of 128 random seed pairs (k_i^0, k_i^1);
the bureau picks a random s in {0,1}^128 and is the base-OT *receiver* with choice bits s_i.

1. :meth:`ReceiverSetup.start` (bank): a 16-byte random session id and C = g^c for a secret c the
   bureau does not know (:class:`SetupOffer`).
2. :meth:`SenderSetup.start` (bureau): for each i a secret a_i, PK_{i,s_i} = g^(a_i) and
   PK_{i,1-s_i} = C / g^(a_i); it sends PK_{i,0} (:class:`SetupChoice`). PK_{i,0} hides s_i, and the
   bureau knows the discrete log of PK_{i,s_i} only (knowing both would give log C).
3. :meth:`ReceiverSetup.finish` (bank): PK_{i,1} = C / PK_{i,0}, one secret r, and
   e_i^b = k_i^b XOR KDF(session, i, b, PK_{i,b}, g^r, PK_{i,b}^r) (:class:`SetupReply`).
4. :meth:`SenderSetup.finish` (bureau): (g^r)^(a_i) = PK_{i,s_i}^r gives k_i^{s_i}; computing
   PK_{i,1-s_i}^r would solve computational Diffie-Hellman.

Exponents (c, a_i, r) are uniform 256-bit values from ``secrets``, not full 2047-bit ones: the short
exponents of DH practice (RFC 3526 section 8 pairs this group with 220- to 320-bit exponents),
about 7x faster than full ones here. Their discrete logs cost about 2^128 work (Pollard kangaroo),
and g^a for a short a is assumed indistinguishable from a uniform subgroup element (the
discrete-log-with-short-exponents assumption, Patel-Sundaram 1998, Gennaro 2000), which is what hides
s_i in PK_{i,0}. The group itself gives about 112-bit security, the same level as the project's
2048-bit Paillier and DGK keys.

Every received group element is validated (:meth:`ModpGroup.check_element`): 1 < x < p - 1 and x a
quadratic residue, i.e. x^q = 1 mod p. Euler's criterion makes the Legendre symbol (x | p) = 1 the
same test; gmpy2 computes it in about 20 microseconds instead of a 3 ms 2047-bit exponentiation.
A failure raises :class:`~blindscore.errors.CryptoError`.

IKNP extension (per batch, symmetric crypto only)
--------------------------------------------------
Ishai, Kilian, Nissim, Petrank, "Extending oblivious transfers efficiently", CRYPTO 2003, semi-honest
version. For a batch of m = ``count`` OTs with a fresh 16-byte nonce, write r for the m choice bits:

1. :meth:`OtReceiver.request` (bank): columns t_i = G(k_i^0, nonce, m) and
   u_i = t_i XOR G(k_i^1, nonce, m) XOR r, i = 0..127 (:class:`ExtensionRequest`).
2. :meth:`OtSender.reply` (bureau): q_i = G(k_i^{s_i}, nonce, m) XOR s_i * u_i, which equals
   t_i XOR s_i * r. Read as rows, the m x 128 matrix Q has q_j = t_j XOR r_j * s. The bureau sends
   y_j^b = x_j^b XOR H(session, nonce, j, q_j XOR b * s) (:class:`ExtensionReply`).
3. :meth:`OtReceiver.receive` (bank): q_j XOR r_j * s = t_j, so x_{r_j} = y_j^{r_j} XOR
   H(session, nonce, j, t_j); the other pad is H(t_j XOR s) with s unknown to the bank.
   The u_i are one-time-padded by G(k_i^{1-s_i}), which the bureau cannot compute, so u hides r.

Definitions and layouts:

* G(seed, nonce, m) = SHAKE128("blindscore/ot/G/v1" || seed (16) || nonce (16) || m (4 bytes, big
  endian)), first ceil(m / 8) bytes. One fresh SHAKE per seed costs about a microsecond, where a
  fresh AES-128-CTR key schedule through pyca/cryptography costs about twelve.
* H(session, nonce, j, row) = TCCR_k(row, j), the tweakable circular correlation-robust hash from
  fixed-key AES (:mod:`blindscore.crypto.tccr`, the hash EMP's IKNP uses) with the AES key
  k = SHA-256("blindscore/ot/H/v2" || session (16) || nonce (16))[:16]: fresh per batch, so no
  (key, tweak) pair repeats within a session. One AES call hashes a whole batch of rows.
* Bit columns and rows are packed big-endian within each byte (numpy ``packbits``): bit j of a column
  is bit 7 - j % 8 of byte j // 8; bit i of a 128-bit row (the column index) likewise. Padding bits
  of a column past m carry no meaning.
* ``ExtensionRequest.u`` is the 128 columns u_0 .. u_127 concatenated, ceil(m / 8) bytes each:
  128 * ceil(m / 8) bytes. ``ExtensionReply.y0`` / ``y1`` are the m pads-XOR-messages of 16 bytes
  each, messages as 16-byte big-endian integers.

Correlated OT with Delta = s (the correlation IKNP already computes: Keller-Orsini-Scholl's COTe,
as EMP's garbler uses it). A garbler's label pairs are correlated, x1_j = x0_j XOR Delta, and it does
not care what x0_j is, only that it is random. The rows themselves are such pairs: q_j and
q_j XOR s, of which the bank holds t_j = q_j XOR r_j s. So :meth:`OtSender.correlated` hands the
garbler the pairs (q_j, q_j XOR s) with Delta = s, and :meth:`OtReceiver.receive_correlated` gives
the bank t_j: no message at all after the request. The garbler garbles with s as its free-XOR
offset for every circuit of the session; :class:`SenderSetup` draws s with lsb(s) = 1 (the low bit
of byte 15, column 127) for point-and-permute, so s has 127 random bits. The unchosen label is
t_j XOR s, unknown without s, which is exactly what protected the earlier hashed form
(x0_j = H(q_j), one 16-byte correction per OT, Asharov-Lindell-Schneider-Zohner's C-OT): learning s
gave Delta there as well. What the check below lets a deviating bank learn about s (a selective-
failure bit per cheated column, each paid with a detected failure with probability 1/2 and a new s
after any failure) is now learnt about Delta, which KOS's COTe allows for and which costs the
garbling that many of Delta's 127 bits. The hashes of the garbling (:mod:`blindscore.crypto.halfgates`)
are keyed per garbling, the OT's per batch, so a session's many garblings under one Delta never
query one (key, tweak) pair twice.

Consistency check against a deviating receiver (Keller-Orsini-Scholl, CRYPTO 2015, with GF(2)
challenges). Plain IKNP is secure against a semi-honest bank only: a bank whose columns u_i encode
*different* choice vectors makes q_j depend on single bits of s, can learn s bit by bit from the
outcome (a selective-failure attack), and with s both messages of every later OT: for a garbled
circuit that is Delta, and with it every garbler input (masks, thresholds, leaves). So:

* the bank extends m' = m + :data:`PAD` OTs, the last PAD with fresh random choice bits;
* challenges chi_k in {0,1}^m', k < :data:`CHECKS`, come from SHAKE128("blindscore/ot/chi/v1" ||
  session || nonce || m (4 bytes) || u) (Fiat-Shamir: fixed once u is, so a bank that wants a
  lucky chi must grind about 2^CHECKS hashes);
* the bank sends x_k = XOR_j chi_kj r_j (one bit each) and t~_k = XOR_j chi_kj t_j (16 bytes each)
  with u (``ExtensionRequest.check``: the CHECKS bits packed, then the CHECKS rows);
* the bureau computes q~_k = XOR_j chi_kj q_j and refuses the batch unless q~_k = t~_k XOR x_k s
  for every k, before it sends anything (:class:`~blindscore.errors.CryptoError`; its link then
  drops the session, so the next batch starts from a new base OT and a new s).

An honest bank passes always (q_j = t_j XOR r_j s is linear). A column i with s_i = 1 whose choice
vector differs from the others by e != 0 fails each check with probability 1/2, independently:
it passes with probability 2^-CHECKS. Columns with s_i = 0 do not influence q at all. What the bank
can still learn is the selective-failure bit "the check passed, so s_i = 0 wherever I cheated",
at the price of a detected failure with probability 1/2 per cheated column and a new s after any
failure. The checks show the bureau CHECKS parities of the choice bits, which the PAD random rows
make uniform (the chi restricted to them has full rank except with probability about 2^-64); t~
shows nothing more, since t_j = q_j XOR r_j s.

A nonce must never be reused within a session: a second request under the same nonce with other
choices shows the bureau r XOR r' (u XOR u'), and under any choices lets the bank XOR two replies to
learn relations between unchosen messages. ``request(choices)`` (nonce None) draws a fresh random
nonce; a caller that passes its own must make it unique. This module does not track used nonces
(memory growing with the session); the bureau's link does (``bureau.bank_link.OtSessions``) and
refuses a repeat. ``receive`` recomputes t from the seeds, the nonce and
the choices, so between the two messages the bank needs to keep only (nonce, choices).

:class:`OtReceiver` and :class:`OtSender` are immutable after setup, so one session object serves
concurrent batches from several threads. They, and the setup objects, cannot be printed (repr shows
the session id only), pickled or copied; a session lives in memory and is never persisted.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

import gmpy2
import numpy as np
import numpy.typing as npt

from blindscore.crypto._secret import Unexportable
from blindscore.crypto.tccr import Tccr, as_blocks, tweak_blocks
from blindscore.errors import CryptoError, InvalidInputError, PreconditionError

KAPPA = 128
"""Computational security parameter: base OTs per session, bits per seed, row and message."""

MAX_COUNT = 1_000_000
"""Largest number of OTs in one extension batch."""

SESSION_ID_BYTES = 16
NONCE_BYTES = 16
MESSAGE_BYTES = KAPPA // 8
EXPONENT_BITS = 256

#: Consistency checks per extension batch (statistical security and grinding cost, in bits).
CHECKS = 64
#: Extra OTs with random choice bits that hide the checks' parities of the real choices.
PAD = 128
#: Length of ``ExtensionRequest.check``: the CHECKS bits x_k, then the CHECKS 16-byte rows t~_k.
CHECK_BYTES = CHECKS // 8 + CHECKS * (KAPPA // 8)
#: What a request carries beyond its OTs' own bits: the padding rows' columns and the check.
REQUEST_OVERHEAD_BYTES = KAPPA * PAD // 8 + CHECK_BYTES

_ROW_BYTES = KAPPA // 8
_CHI_TAG = b"blindscore/ot/chi/v1"
_PRG_TAG = b"blindscore/ot/G/v1"
_HASH_TAG = b"blindscore/ot/H/v2"
_KDF_TAG = b"blindscore/ot/base-kdf/v1"

_U8 = npt.NDArray[np.uint8]
_MPZ = type(gmpy2.mpz(0))

# RFC 3526 section 3, the 2048-bit MODP group (id 14):
# p = 2^2048 - 2^1984 - 1 + 2^64 * ( [2^1918 pi] + 124476 ).
_RFC3526_P2048 = int(
    "FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1"
    "29024E08 8A67CC74 020BBEA6 3B139B22 514A0879 8E3404DD"
    "EF9519B3 CD3A431B 302B0A6D F25F1437 4FE1356D 6D51C245"
    "E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED"
    "EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D"
    "C2007CB8 A163BF05 98DA4836 1C55D39A 69163FA8 FD24CF5F"
    "83655D23 DCA3AD96 1C62F356 208552BB 9ED52907 7096966D"
    "670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B"
    "E39E772C 180E8603 9B2783A2 EC07A28F B5C55DF0 6F4C52C9"
    "DE2BCBF6 95581718 3995497C EA956AE5 15D22618 98FA0510"
    "15728E5A 8AACAA68 FFFFFFFF FFFFFFFF".replace(" ", ""),
    16,
)


@dataclass(frozen=True)
class ModpGroup:
    """A safe-prime group used in its prime-order subgroup of quadratic residues."""

    name: str
    p: int
    q: int
    g: int

    @property
    def element_bytes(self) -> int:
        return (self.p.bit_length() + 7) // 8

    def check_element(self, x: object, what: str) -> Any:
        """Return x as an mpz if 1 < x < p - 1 and x is a quadratic residue mod p, else raise CryptoError."""
        if not isinstance(x, (int, _MPZ)) or isinstance(x, bool):
            raise CryptoError(f"{what} is not an integer group element")
        if not 1 < x < self.p - 1:
            raise CryptoError(f"{what} is out of range: a group element must satisfy 1 < x < p - 1")
        v = gmpy2.mpz(x)
        # Euler's criterion: x^q = 1 mod p exactly when the Legendre symbol (x | p) is 1.
        if gmpy2.legendre(v, self.p) != 1:
            raise CryptoError(f"{what} is not in the prime-order subgroup (not a quadratic residue mod p)")
        return v

    def encode(self, x: Any) -> bytes:
        return int(x).to_bytes(self.element_bytes, "big")


GROUP = ModpGroup(
    name="RFC 3526 MODP group 14 (2048-bit)", p=_RFC3526_P2048, q=(_RFC3526_P2048 - 1) // 2, g=4
)
"""The base-OT group: RFC 3526 group 14, subgroup of quadratic residues (order q), generator 4."""

_P = gmpy2.mpz(GROUP.p)
_G = gmpy2.mpz(GROUP.g)


# ---------------------------------------------------------------------- messages


@dataclass(frozen=True)
class SetupOffer:
    """Bank -> bureau: the session id and C, whose discrete log the bureau does not know."""

    session_id: bytes
    c: int


@dataclass(frozen=True)
class SetupChoice:
    """Bureau -> bank: PK_{i,0} for each of the 128 base OTs."""

    session_id: bytes
    pk0: tuple[int, ...]


@dataclass(frozen=True)
class SetupReply:
    """Bank -> bureau: g^r and the 128 encrypted seed pairs (128-bit ints)."""

    session_id: bytes
    gr: int
    e0: tuple[int, ...]
    e1: tuple[int, ...]


@dataclass(frozen=True)
class ExtensionRequest:
    """Bank -> bureau: one extension batch of ``count`` OTs; u is 128 columns of
    ceil((count + PAD) / 8) bytes each, ``check`` the consistency check (module docstring)."""

    session_id: bytes
    nonce: bytes
    count: int
    u: bytes
    check: bytes = b""


@dataclass(frozen=True)
class ExtensionReply:
    """Bureau -> bank: y0 and y1, 16 * count bytes each (one 16-byte block per OT)."""

    y0: bytes
    y1: bytes


# ---------------------------------------------------------------------- primitives


def _prg(seed: bytes, nonce: bytes, count: int) -> bytes:
    """G(seed, nonce, count): ceil(count / 8) pseudorandom bytes (SHAKE128, all inputs fixed-length)."""
    return hashlib.shake_128(_PRG_TAG + seed + nonce + count.to_bytes(4, "big")).digest((count + 7) // 8)


def _columns(seeds: Sequence[bytes], nonce: bytes, count: int) -> _U8:
    """G over each seed: a KAPPA x ceil(count / 8) byte matrix, one bit column per row."""
    data = b"".join([_prg(seed, nonce, count) for seed in seeds])
    return np.frombuffer(data, dtype=np.uint8).reshape(len(seeds), (count + 7) // 8)


def _hash_rows(session_id: bytes, nonce: bytes, rows: _U8) -> _U8:
    """H(session, nonce, j, row_j) for every row j of a count x 16 byte matrix: a count x 16 matrix."""
    count = rows.shape[0]
    key = hashlib.sha256(_HASH_TAG + session_id + nonce).digest()[:16]
    out = Tccr(key)(as_blocks(rows), tweak_blocks(np.arange(count, dtype=np.uint64)))
    return out.view(np.uint8).reshape(count, _ROW_BYTES)


def _rows(columns: _U8, count: int) -> _U8:
    """Transpose KAPPA bit columns of length count into count rows of KAPPA bits (count x 16 bytes)."""
    bits = np.unpackbits(columns, axis=1, count=count)
    return np.packbits(bits.T, axis=1)


def _words(packed: _U8) -> npt.NDArray[np.uint64]:
    """Rows of packed bits as uint64 words (zero padding to whole words; only XOR, AND and
    popcount follow, so the byte order inside a word never matters)."""
    rows, width = packed.shape
    out = np.zeros((rows, -(-width // 8) * 8), dtype=np.uint8)
    out[:, :width] = packed
    return out.view(np.uint64)


def _challenges(session_id: bytes, nonce: bytes, count: int, u: bytes) -> npt.NDArray[np.uint64]:
    """chi: CHECKS rows of count + PAD bits from a hash of the request (Fiat-Shamir), packed like
    a column (bits past count + PAD zero), as words."""
    m = count + PAD
    width = (m + 7) // 8
    digest = hashlib.shake_128(_CHI_TAG + session_id + nonce + count.to_bytes(4, "big") + u)
    raw = np.frombuffer(digest.digest(CHECKS * width), dtype=np.uint8).reshape(CHECKS, width).copy()
    if m % 8:
        raw[:, -1] &= np.uint8((0xFF << (8 - m % 8)) & 0xFF)
    return _words(raw)


def _parities(chi: npt.NDArray[np.uint64], vectors: npt.NDArray[np.uint64]) -> _U8:
    """parity(chi_k AND vector_i) for every check k and vector i: a CHECKS x len(vectors) 0/1 matrix.
    With the 128 columns of T (or Q) as the vectors, row k is XOR_j chi_kj t_j as a bit row.

    The parity of a row of words is the parity of their XOR, so the loop runs over the shorter
    axis: over the words when they are fewer than the checks (an online application's few hundred
    OTs: 3 words, 0.05 instead of 0.4 ms), else over the checks (a tree ensemble's 54,000 OTs).
    """
    if vectors.shape[1] < len(chi):
        folded = np.zeros((len(chi), len(vectors)), dtype=np.uint64)
        for w in range(vectors.shape[1]):
            folded ^= np.bitwise_and.outer(chi[:, w], vectors[:, w])
        return (np.bitwise_count(folded) & 1).astype(np.uint8)
    out = np.empty((len(chi), len(vectors)), dtype=np.uint8)
    for k, c in enumerate(chi):
        out[k] = np.bitwise_count(np.bitwise_xor.reduce(vectors & c, axis=1)) & 1
    return out


def _check_values(chi: npt.NDArray[np.uint64], r_packed: _U8, t_columns: _U8) -> bytes:
    """The receiver's check from its packed choice bits and its columns: the bits x_k (packed),
    then the rows XOR_j chi_kj t_j (16 bytes each)."""
    x = _parities(chi, _words(r_packed[None, :]))[:, 0]
    return np.packbits(x).tobytes() + np.packbits(_parities(chi, _words(t_columns)), axis=1).tobytes()


def _base_kdf(session_id: bytes, i: int, b: int, pk: Any, gr: Any, shared: Any) -> int:
    """Base-OT pad for seed k_i^b: BLAKE2b-128 over the session, index, bit and group elements."""
    h = hashlib.blake2b(_KDF_TAG + session_id + i.to_bytes(2, "big") + bytes([b]), digest_size=_ROW_BYTES)
    h.update(GROUP.encode(pk) + GROUP.encode(gr) + GROUP.encode(shared))
    return int.from_bytes(h.digest(), "big")


def _exponent() -> Any:
    """A secret short exponent, uniform in [1, 2^256)."""
    return gmpy2.mpz(1 + secrets.randbelow((1 << EXPONENT_BITS) - 1))


def _powmod_exp_list(base: Any, exponents: list[Any]) -> list[Any]:
    context = gmpy2.get_context()  # thread-local: let gmpy2 release the GIL for the batch
    context.allow_release_gil = True
    return list(gmpy2.powmod_exp_list(base, exponents, _P))


def _powmod_base_list(bases: list[Any], exponent: Any) -> list[Any]:
    context = gmpy2.get_context()
    context.allow_release_gil = True
    return list(gmpy2.powmod_base_list(bases, exponent, _P))


# ---------------------------------------------------------------------- input checks


def _check_session_id(session_id: object, what: str) -> bytes:
    if not isinstance(session_id, bytes) or len(session_id) != SESSION_ID_BYTES:
        raise InvalidInputError(f"{what}: the session id must be {SESSION_ID_BYTES} bytes")
    return session_id


def _check_same_session(expected: bytes, got: object, what: str) -> None:
    if not secrets.compare_digest(expected, _check_session_id(got, what)):
        raise InvalidInputError(f"{what}: the session id does not match this OT session")


def _check_nonce(nonce: object) -> bytes:
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise InvalidInputError(f"the extension nonce must be {NONCE_BYTES} bytes")
    return nonce


def _check_count(count: object) -> int:
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_COUNT:
        raise InvalidInputError(f"the OT count must be an integer from 1 to {MAX_COUNT}, got {count!r}")
    return count


def _choice_bits(choices: Sequence[int]) -> _U8:
    """Choices as a uint8 vector of 0/1, or InvalidInputError."""
    try:
        arr = np.asarray(choices)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"choices must be a sequence of 0/1 ints: {exc}") from None
    if arr.ndim != 1:
        raise InvalidInputError("choices must be a flat sequence of 0/1 ints")
    _check_count(arr.shape[0])
    if arr.dtype.kind not in "biu":
        raise InvalidInputError(f"choices must be 0/1 ints, got values of dtype {arr.dtype}")
    if not ((arr == 0) | (arr == 1)).all():
        raise InvalidInputError("choices must be 0 or 1")
    return arr.astype(np.uint8)


def _check_seed_ints(values: object, what: str) -> tuple[int, ...]:
    if not isinstance(values, tuple) or len(values) != KAPPA:
        raise InvalidInputError(f"{what} must be a tuple of {KAPPA} ints")
    for i, v in enumerate(values):
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << KAPPA:
            raise InvalidInputError(f"{what}[{i}] must be an int in [0, 2^{KAPPA})")
    return values


class LabelPairs:
    """Correlated message pairs (x0_j, x0_j XOR Delta) as one byte buffer and Delta: what a garbler
    hands the OT sender for the evaluator's input wires (free XOR). Kept as bytes end to end, since
    turning tens of thousands of labels into Python ints and back costs more than the OT itself.
    Indexing gives (x0_j, x1_j) as ints. Holds Delta: never printed, pickled or sent."""

    __slots__ = ("_delta", "_zero")

    def __init__(self, zero: bytes, delta: bytes) -> None:
        if len(zero) % MESSAGE_BYTES or len(delta) != MESSAGE_BYTES:
            raise InvalidInputError(
                f"label pairs are {MESSAGE_BYTES}-byte blocks and one {MESSAGE_BYTES}-byte Delta"
            )
        self._zero = zero
        self._delta = delta

    def __len__(self) -> int:
        return len(self._zero) // MESSAGE_BYTES

    def __getitem__(self, j: int) -> tuple[int, int]:
        if not -len(self) <= j < len(self):
            raise IndexError("label pair index out of range")
        j %= len(self)
        x0 = int.from_bytes(self._zero[j * MESSAGE_BYTES : (j + 1) * MESSAGE_BYTES], "big")
        return x0, x0 ^ int.from_bytes(self._delta, "big")

    def buffers(self) -> tuple[bytes, bytes]:
        """Every x0 as one buffer of 16-byte blocks, and Delta (the garbler's, to garble with)."""
        return self._zero, self._delta

    def arrays(self) -> tuple[_U8, _U8]:
        """x0 and x1 of every pair as count x 16 byte matrices."""
        x0 = np.frombuffer(self._zero, dtype=np.uint8).reshape(-1, MESSAGE_BYTES)
        return x0, x0 ^ np.frombuffer(self._delta, dtype=np.uint8)

    def __repr__(self) -> str:
        return f"LabelPairs(count={len(self)}, <secret>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("LabelPairs reveal Delta and cannot be pickled or copied")


def _messages(pairs: Sequence[tuple[int, int]] | LabelPairs, count: int) -> tuple[_U8, _U8]:
    """The x0 and x1 of each pair as count x 16 byte matrices (16-byte big-endian), or InvalidInputError."""
    if len(pairs) != count:
        raise InvalidInputError(f"got {len(pairs)} message pairs for a request of {count} OTs")
    if isinstance(pairs, LabelPairs):
        return pairs.arrays()
    try:
        x0 = b"".join([a.to_bytes(MESSAGE_BYTES, "big") for a, _ in pairs])
        x1 = b"".join([b.to_bytes(MESSAGE_BYTES, "big") for _, b in pairs])
    except (AttributeError, OverflowError, TypeError, ValueError):
        raise InvalidInputError(f"pairs must be (x0, x1) pairs of ints in [0, 2^{KAPPA})") from None
    return (
        np.frombuffer(x0, dtype=np.uint8).reshape(count, MESSAGE_BYTES),
        np.frombuffer(x1, dtype=np.uint8).reshape(count, MESSAGE_BYTES),
    )


def _verify(s_row: _U8, chi: npt.NDArray[np.uint64], q_columns: _U8, check: bytes) -> None:
    """The sender's consistency check: q~_k = t~_k XOR x_k s for every k, or CryptoError."""
    x = np.unpackbits(np.frombuffer(check[: CHECKS // 8], dtype=np.uint8)).astype(np.uint8)
    t = np.frombuffer(check[CHECKS // 8 :], dtype=np.uint8).reshape(CHECKS, _ROW_BYTES)
    expected = t ^ (x[:, None] * s_row)
    if not np.array_equal(np.packbits(_parities(chi, _words(q_columns)), axis=1), expected):
        raise CryptoError("the OT extension request failed its consistency check (a deviating receiver)")


# ---------------------------------------------------------------------- secret holders


class _SessionSecret(Unexportable):
    """Unexportable with a repr that shows the (public) session id instead of a key id."""

    __slots__ = ("session_id",)
    _save_hint: ClassVar[str] = "an OT session lives in memory only; run a new setup instead"

    session_id: bytes

    def __repr__(self) -> str:
        return f"{type(self).__name__}(session_id={self.session_id.hex()}, <secret>)"


class OtReceiver(_SessionSecret):
    """The bank's side of a ready OT session: the 128 seed pairs (k_i^0, k_i^1)."""

    __slots__ = ("_seeds0", "_seeds1")

    def __init__(self, session_id: bytes, seeds0: Sequence[bytes], seeds1: Sequence[bytes]) -> None:
        if len(seeds0) != KAPPA or len(seeds1) != KAPPA:
            raise InvalidInputError(f"an OT receiver needs {KAPPA} seed pairs")
        self.session_id = _check_session_id(session_id, "OT receiver")
        self._seeds0 = tuple(seeds0)
        self._seeds1 = tuple(seeds1)

    def request(self, choices: Sequence[int], nonce: bytes | None = None) -> ExtensionRequest:
        """Start a batch of len(choices) OTs. Leave nonce None (a fresh random one); a given nonce must
        never have been used before in this session."""
        real = _choice_bits(choices)
        nonce = secrets.token_bytes(NONCE_BYTES) if nonce is None else _check_nonce(nonce)
        count = real.shape[0]
        m = count + PAD
        pad = np.unpackbits(np.frombuffer(secrets.token_bytes(PAD // 8), dtype=np.uint8))
        r = np.concatenate((real, pad))
        t = _columns(self._seeds0, nonce, m)
        r_packed = np.packbits(r)
        u = (t ^ _columns(self._seeds1, nonce, m) ^ r_packed).tobytes()
        check = _check_values(_challenges(self.session_id, nonce, count, u), r_packed, t)
        return ExtensionRequest(session_id=self.session_id, nonce=nonce, count=count, u=u, check=check)

    def receive(self, nonce: bytes, choices: Sequence[int], reply: ExtensionReply) -> list[int]:
        """x_{r_j} for each j, from the request's nonce and choices and the bureau's reply."""
        data = self.receive_bytes(nonce, choices, reply)
        size = len(data)
        return [int.from_bytes(data[j : j + MESSAGE_BYTES], "big") for j in range(0, size, MESSAGE_BYTES)]

    def receive_bytes(self, nonce: bytes, choices: Sequence[int], reply: ExtensionReply) -> bytes:
        """:meth:`receive`'s messages as one buffer of 16-byte big-endian blocks (no ints)."""
        r = _choice_bits(choices)
        nonce = _check_nonce(nonce)
        count = r.shape[0]
        size = count * MESSAGE_BYTES
        for name, y in (("y0", reply.y0), ("y1", reply.y1)):
            if not isinstance(y, bytes) or len(y) != size:
                raise InvalidInputError(f"OT reply {name} must be {size} bytes for {count} OTs")
        y0 = np.frombuffer(reply.y0, dtype=np.uint8).reshape(count, MESSAGE_BYTES)
        y1 = np.frombuffer(reply.y1, dtype=np.uint8).reshape(count, MESSAGE_BYTES)
        x = np.where(r[:, None].astype(bool), y1, y0) ^ self._pads(nonce, count)
        return x.tobytes()

    def receive_correlated(self, nonce: bytes, count: int) -> bytes:
        """Correlated OT (:meth:`OtSender.correlated`): the bank's labels t_j = q_j XOR r_j s of the
        first ``count`` OTs of the batch under ``nonce`` (16-byte blocks); nothing from the bureau
        is needed beyond the request the bank sent itself."""
        nonce = _check_nonce(nonce)
        count = _check_count(count)
        return self._t_rows(nonce, count).tobytes()

    def _pads(self, nonce: bytes, count: int) -> _U8:
        """H(session, nonce, j, t_j) for the first ``count`` rows t_j of T."""
        return _hash_rows(self.session_id, nonce, self._t_rows(nonce, count))

    def _t_rows(self, nonce: bytes, count: int) -> _U8:
        """The first ``count`` rows t_j of T (count x 16 bytes)."""
        return _rows(_columns(self._seeds0, nonce, count + PAD), count + PAD)[:count]


class OtSender(_SessionSecret):
    """The bureau's side of a ready OT session: s and the 128 seeds k_i^{s_i}."""

    __slots__ = ("_s_mask", "_s_row", "_seeds")

    def __init__(self, session_id: bytes, s: bytes, seeds: Sequence[bytes]) -> None:
        if len(s) != KAPPA // 8 or len(seeds) != KAPPA:
            raise InvalidInputError(f"an OT sender needs a {KAPPA}-bit s and {KAPPA} seeds")
        self.session_id = _check_session_id(session_id, "OT sender")
        self._s_row = np.frombuffer(s, dtype=np.uint8).copy()
        # 0xFF where s_i = 1, so that (u_i & mask_i) is s_i * u_i byte-wise.
        self._s_mask = (np.unpackbits(self._s_row) * np.uint8(0xFF))[:, None]
        self._seeds = tuple(seeds)

    def reply(
        self, request: ExtensionRequest, pairs: Sequence[tuple[int, int]] | LabelPairs
    ) -> ExtensionReply:
        """Answer one batch: y_j^b = x_j^b XOR H(q_j XOR b s) for each pair (x_j^0, x_j^1)."""
        x0, x1 = _messages(pairs, _check_count(request.count))
        h0, h1 = self._pads(request)
        return ExtensionReply(y0=(x0 ^ h0).tobytes(), y1=(x1 ^ h1).tobytes())

    def correlated(self, request: ExtensionRequest) -> LabelPairs:
        """Answer one batch by correlated OT with Delta = s: the pairs (q_j, q_j XOR s) for the garbler
        to use as the evaluator's input labels, with s its free-XOR offset. Nothing goes back to
        the bank (it holds t_j = q_j XOR r_j s already). The consistency check runs first."""
        if not self._s_row[-1] & 1:
            raise PreconditionError("this OT session's s has lsb 0 and cannot be a garbling's Delta")
        return LabelPairs(self._q_rows(request).tobytes(), self._s_row.tobytes())

    def _pads(self, request: ExtensionRequest) -> tuple[_U8, _U8]:
        """H(q_j) and H(q_j XOR s) for every OT of a checked request (count x 16 bytes each)."""
        q = self._q_rows(request)
        nonce = request.nonce
        return _hash_rows(self.session_id, nonce, q), _hash_rows(self.session_id, nonce, q ^ self._s_row)

    def _q_rows(self, request: ExtensionRequest) -> _U8:
        """The rows q_j of a checked request (count x 16 bytes); the consistency check runs first,
        so nothing is derived from a deviating request."""
        _check_same_session(self.session_id, request.session_id, "OT extension request")
        nonce = _check_nonce(request.nonce)
        count = _check_count(request.count)
        m = count + PAD
        width = (m + 7) // 8
        if not isinstance(request.u, bytes) or len(request.u) != KAPPA * width:
            raise InvalidInputError(
                f"OT extension request u must be {KAPPA} * ceil(({count} + {PAD}) / 8) = "
                f"{KAPPA * width} bytes"
            )
        if not isinstance(request.check, bytes) or len(request.check) != CHECK_BYTES:
            raise InvalidInputError(f"OT extension request check must be {CHECK_BYTES} bytes")
        u = np.frombuffer(request.u, dtype=np.uint8).reshape(KAPPA, width)
        q_columns = _columns(self._seeds, nonce, m) ^ (u & self._s_mask)
        _verify(self._s_row, _challenges(self.session_id, nonce, count, request.u), q_columns, request.check)
        return _rows(q_columns, m)[:count]


class ReceiverSetup(_SessionSecret):
    """The bank's side of the base-OT setup (the bank is the base-OT sender of the seed pairs)."""

    __slots__ = ("_c", "_finished")

    def __init__(self, session_id: bytes, c: Any) -> None:
        self.session_id = _check_session_id(session_id, "OT setup")
        self._c = gmpy2.mpz(c)
        self._finished = False

    @classmethod
    def start(cls) -> tuple[ReceiverSetup, SetupOffer]:
        """A fresh session id and C = g^c (c is discarded: nobody needs it again)."""
        setup = cls(secrets.token_bytes(SESSION_ID_BYTES), gmpy2.powmod(_G, _exponent(), _P))
        return setup, SetupOffer(session_id=setup.session_id, c=int(setup._c))

    def finish(self, choice: SetupChoice) -> tuple[OtReceiver, SetupReply]:
        """Encrypt 128 fresh seed pairs under the bureau's PK_{i,0} and PK_{i,1} = C / PK_{i,0}."""
        if self._finished:
            raise PreconditionError("this OT setup has already finished; start a new one")
        _check_same_session(self.session_id, choice.session_id, "OT setup choice")
        if not isinstance(choice.pk0, tuple) or len(choice.pk0) != KAPPA:
            raise InvalidInputError(f"OT setup choice must carry {KAPPA} group elements")
        pk0 = [GROUP.check_element(x, f"OT setup choice pk0[{i}]") for i, x in enumerate(choice.pk0)]
        pk1 = [self._c * gmpy2.invert(x, _P) % _P for x in pk0]
        for i, x in enumerate(pk1):  # PK_{i,1} = 1 would be pk0[i] = C
            GROUP.check_element(x, f"OT setup choice C / pk0[{i}]")
        self._finished = True
        r = _exponent()
        gr = gmpy2.powmod(_G, r, _P)
        shared = _powmod_base_list(pk0 + pk1, r)
        seeds0 = [secrets.randbits(KAPPA) for _ in range(KAPPA)]
        seeds1 = [secrets.randbits(KAPPA) for _ in range(KAPPA)]
        e0 = tuple(seeds0[i] ^ _base_kdf(self.session_id, i, 0, pk0[i], gr, shared[i]) for i in range(KAPPA))
        e1 = tuple(
            seeds1[i] ^ _base_kdf(self.session_id, i, 1, pk1[i], gr, shared[KAPPA + i]) for i in range(KAPPA)
        )
        receiver = OtReceiver(
            self.session_id,
            [k.to_bytes(_ROW_BYTES, "big") for k in seeds0],
            [k.to_bytes(_ROW_BYTES, "big") for k in seeds1],
        )
        return receiver, SetupReply(session_id=self.session_id, gr=int(gr), e0=e0, e1=e1)


class SenderSetup(_SessionSecret):
    """The bureau's side of the base-OT setup (the bureau is the base-OT receiver, choice bits s)."""

    __slots__ = ("_exponents", "_finished", "_pk_chosen", "_s")

    def __init__(self, session_id: bytes, s: bytes, exponents: list[Any], pk_chosen: list[Any]) -> None:
        self.session_id = session_id
        self._s = s
        self._exponents = exponents
        self._pk_chosen = pk_chosen
        self._finished = False

    @classmethod
    def start(cls, offer: SetupOffer) -> tuple[SenderSetup, SetupChoice]:
        """Pick s, and for each i publish PK_{i,0} with the discrete log of PK_{i,s_i} known."""
        session_id = _check_session_id(offer.session_id, "OT setup offer")
        c = GROUP.check_element(offer.c, "OT setup offer C")
        # lsb(s) = 1: s is the free-XOR Delta of the session's garblings (correlated OT above).
        drawn = secrets.token_bytes(KAPPA // 8)
        s = drawn[:-1] + bytes([drawn[-1] | 1])
        bits = np.unpackbits(np.frombuffer(s, dtype=np.uint8)).tolist()
        exponents = [_exponent() for _ in range(KAPPA)]
        chosen = _powmod_exp_list(_G, exponents)
        pk0 = tuple(
            int(c * gmpy2.invert(x, _P) % _P) if bit else int(x) for x, bit in zip(chosen, bits, strict=True)
        )
        return cls(session_id, s, exponents, chosen), SetupChoice(session_id=session_id, pk0=pk0)

    def finish(self, reply: SetupReply) -> OtSender:
        """Decrypt k_i^{s_i} with (g^r)^(a_i) = PK_{i,s_i}^r."""
        if self._finished:
            raise PreconditionError("this OT setup has already finished; start a new one")
        _check_same_session(self.session_id, reply.session_id, "OT setup reply")
        e0 = _check_seed_ints(reply.e0, "OT setup reply e0")
        e1 = _check_seed_ints(reply.e1, "OT setup reply e1")
        gr = GROUP.check_element(reply.gr, "OT setup reply g^r")
        self._finished = True
        bits = np.unpackbits(np.frombuffer(self._s, dtype=np.uint8)).tolist()
        shared = _powmod_exp_list(gr, self._exponents)
        seeds = []
        for i, bit in enumerate(bits):
            e = e1[i] if bit else e0[i]
            seeds.append(e ^ _base_kdf(self.session_id, i, bit, self._pk_chosen[i], gr, shared[i]))
        sender = OtSender(self.session_id, self._s, [k.to_bytes(_ROW_BYTES, "big") for k in seeds])
        self._exponents = []  # the a_i are no longer needed
        return sender
