"""An independent decoder of blindscore's base-OT and IKNP transcripts, from the protocols' definitions.

Sources: Naor-Pinkas / Bellare-Micali base OT in RFC 3526 group 14 (the random-oracle variant with one
sender exponent r), Ishai-Kilian-Nissim-Petrank (CRYPTO 2003) OT extension, the correlated OT with Delta
= s of Keller-Orsini-Scholl (CRYPTO 2015, COTe) and their consistency check, and the definitions and
byte layouts in the docstring of ``blindscore/crypto/ot.py``. Nothing here imports blindscore
(``tests/test_vectors_ot.py`` checks that): bit columns and rows are Python ints handled bit by bit,
where the library packs and transposes numpy matrices; the group arithmetic is gmpy2's ``powmod`` and
``invert`` one element at a time (Python's ``pow`` gives the same results, seven times slower).

Given a party's secrets and the messages it received, each function returns what that party must
send or output; the test compares those with what the library sent and output.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import gmpy2
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KAPPA = 128
PAD = 128
CHECKS = 64
MASK64 = (1 << 64) - 1

# RFC 3526 section 3 (2048-bit MODP group, id 14), copied from the RFC.
P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
    "15728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)
G = 4


@dataclass(frozen=True)
class Variant:
    """Deliberate breaks for negative controls; the default breaks nothing."""

    #: Transpose with the bits of each byte in little-endian order (a classic packing slip).
    little_endian_rows: bool = False
    #: Added to every row-hash tweak j.
    tweak_shift: int = 0


CORRECT = Variant()


# ---------------------------------------------------------------------- base OT


def element_bytes(x: int) -> bytes:
    return x.to_bytes(256, "big")


def base_kdf(session: bytes, i: int, b: int, pk: int, gr: int, shared: int) -> int:
    """BLAKE2b-128("blindscore/ot/base-kdf/v1" || session || i (2) || b (1) || PK || g^r || PK^r)."""
    data = b"blindscore/ot/base-kdf/v1" + session + i.to_bytes(2, "big") + bytes([b])
    data += element_bytes(pk) + element_bytes(gr) + element_bytes(shared)
    return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "big")


def bits_of(block: bytes) -> list[int]:
    """Bit i of a packed string: bit 7 - i % 8 of byte i // 8."""
    return [(block[i // 8] >> (7 - i % 8)) & 1 for i in range(8 * len(block))]


def _pow(base: int, exponent: int) -> int:
    return int(gmpy2.powmod(base, exponent, P))


def _inv(x: int) -> int:
    return int(gmpy2.invert(x, P))


def bank_offer(c: int) -> int:
    """C = g^c."""
    return _pow(G, c)


def bureau_choice(big_c: int, s: bytes, exponents: Sequence[int]) -> list[int]:
    """PK_{i,0}: g^(a_i) where s_i = 0, C / g^(a_i) where s_i = 1."""
    out = []
    for bit, a in zip(bits_of(s), exponents, strict=True):
        chosen = _pow(G, a)
        out.append(big_c * _inv(chosen) % P if bit else chosen)
    return out


def bank_reply(
    session: bytes, big_c: int, pk0: Sequence[int], r: int, seeds0: Sequence[int], seeds1: Sequence[int]
) -> tuple[int, list[int], list[int]]:
    """g^r and e_i^b = k_i^b XOR KDF(session, i, b, PK_{i,b}, g^r, PK_{i,b}^r), PK_{i,1} = C / PK_{i,0}."""
    gr = _pow(G, r)
    e0, e1 = [], []
    for i, pk in enumerate(pk0):
        pk1 = big_c * _inv(pk) % P
        e0.append(seeds0[i] ^ base_kdf(session, i, 0, pk, gr, _pow(pk, r)))
        e1.append(seeds1[i] ^ base_kdf(session, i, 1, pk1, gr, _pow(pk1, r)))
    return gr, e0, e1


def bureau_seeds(
    session: bytes, s: bytes, exponents: Sequence[int], gr: int, e0: Sequence[int], e1: Sequence[int]
) -> list[int]:
    """k_i^{s_i} = e_i^{s_i} XOR KDF(session, i, s_i, g^(a_i), g^r, (g^r)^(a_i))."""
    out = []
    for i, (bit, a) in enumerate(zip(bits_of(s), exponents, strict=True)):
        e = e1[i] if bit else e0[i]
        out.append(e ^ base_kdf(session, i, bit, _pow(G, a), gr, _pow(gr, a)))
    return out


# ---------------------------------------------------------------------- IKNP


def prg(seed: int, nonce: bytes, m: int) -> bytes:
    """G(seed, nonce, m) = SHAKE128("blindscore/ot/G/v1" || seed || nonce || m (4)), ceil(m / 8) bytes."""
    data = b"blindscore/ot/G/v1" + seed.to_bytes(16, "big") + nonce + m.to_bytes(4, "big")
    return hashlib.shake_128(data).digest((m + 7) // 8)


def _xor(*parts: bytes) -> bytes:
    out = bytearray(parts[0])
    for p in parts[1:]:
        for k, v in enumerate(p):
            out[k] ^= v
    return bytes(out)


def pack(bits: Sequence[int]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for k, bit in enumerate(bits):
        out[k // 8] |= bit << (7 - k % 8)
    return bytes(out)


def rows(columns: Sequence[bytes], count: int, variant: Variant = CORRECT) -> list[bytes]:
    """Row j (16 bytes): bit i is bit j of column i."""
    out = []
    for j in range(count):
        shift = j % 8 if variant.little_endian_rows else 7 - j % 8
        out.append(pack([(col[j // 8] >> shift) & 1 for col in columns]))
    return out


def row_hash(session: bytes, nonce: bytes, j: int, row: bytes, variant: Variant = CORRECT) -> bytes:
    """H(session, nonce, j, row) = TCCR: pi(sigma(x) ^ j) ^ sigma(x) ^ j with pi = AES-128 under
    SHA-256("blindscore/ot/H/v2" || session || nonce)[:16], sigma(xL || xR) = (xL ^ xR) || xL."""
    key = hashlib.sha256(b"blindscore/ot/H/v2" + session + nonce).digest()[:16]
    x = int.from_bytes(row, "big")
    left, right = x >> 64, x & MASK64
    s = (((left ^ right) << 64) | left) ^ (j + variant.tweak_shift)
    out = Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(s.to_bytes(16, "big"))
    return (int.from_bytes(out, "big") ^ s).to_bytes(16, "big")


def _challenges(session: bytes, nonce: bytes, count: int, u: bytes) -> list[int]:
    """chi_k (Fiat-Shamir over the request) as column ints (see :func:`column_int`), bits past
    count + PAD cleared."""
    m = count + PAD
    width = (m + 7) // 8
    digest = hashlib.shake_128(b"blindscore/ot/chi/v1" + session + nonce + count.to_bytes(4, "big") + u)
    raw = digest.digest(CHECKS * width)
    keep = ((1 << m) - 1) << (8 * width - m)
    return [int.from_bytes(raw[k * width : (k + 1) * width], "big") & keep for k in range(CHECKS)]


def column_int(column: bytes) -> int:
    """A packed bit column as an int: bit j of the column is int bit 8 len(column) - 1 - j."""
    return int.from_bytes(column, "big")


def _sums(chi: Sequence[int], columns: Sequence[int]) -> list[bytes]:
    """Per check k the 16-byte row whose bit i is XOR_j chi_kj c_ij = parity(chi_k AND c_i)."""
    return [pack([(c & col).bit_count() & 1 for col in columns]) for c in chi]


@dataclass(frozen=True)
class Request:
    u: bytes
    check: bytes


def receiver_request(
    session: bytes,
    seeds0: Sequence[int],
    seeds1: Sequence[int],
    nonce: bytes,
    choices: Sequence[int],
    pad_bits: Sequence[int],
) -> Request:
    """u_i = G(k_i^0) ^ G(k_i^1) ^ r over count + PAD OTs, then the check: x_k = XOR_j chi_kj r_j
    (packed) and t~_k = XOR_j chi_kj t_j (16-byte rows)."""
    count = len(choices)
    m = count + PAD
    r_packed = pack([*choices, *pad_bits])
    t = [prg(k, nonce, m) for k in seeds0]
    u = b"".join(_xor(ti, prg(k, nonce, m), r_packed) for ti, k in zip(t, seeds1, strict=True))
    chi = _challenges(session, nonce, count, u)
    x = [(c & column_int(r_packed)).bit_count() & 1 for c in chi]
    return Request(u=u, check=pack(x) + b"".join(_sums(chi, [column_int(ti) for ti in t])))


def bureau_s(drawn: bytes) -> bytes:
    """The bureau's s: its 16 drawn bytes with the low bit of byte 15 set (s is also the garbling's
    Delta, whose lsb is the point-and-permute bit)."""
    return drawn[:15] + bytes([drawn[15] | 1])


def sender_rows(
    session: bytes,
    s: bytes,
    seeds: Sequence[int],
    nonce: bytes,
    count: int,
    request: Request,
    variant: Variant = CORRECT,
) -> list[bytes]:
    """q_i = G(k_i^{s_i}) ^ s_i u_i; the check q~_k = t~_k ^ x_k s (ValueError if it fails); then
    the first ``count`` rows q_j."""
    m = count + PAD
    width = (m + 7) // 8
    q = []
    for i, (bit, k) in enumerate(zip(bits_of(s), seeds, strict=True)):
        g = prg(k, nonce, m)
        q.append(_xor(g, request.u[i * width : (i + 1) * width]) if bit else g)
    chi = _challenges(session, nonce, count, request.u)
    x = bits_of(request.check[: CHECKS // 8])
    for k, q_tilde in enumerate(_sums(chi, [column_int(qi) for qi in q])):
        t_tilde = request.check[CHECKS // 8 + 16 * k : CHECKS // 8 + 16 * (k + 1)]
        if q_tilde != (_xor(t_tilde, s) if x[k] else t_tilde):
            raise ValueError(f"consistency check {k} fails")
    return rows(q, count, variant)


def sender_pads(
    session: bytes, s: bytes, q_rows: Sequence[bytes], nonce: bytes, variant: Variant = CORRECT
) -> tuple[list[bytes], list[bytes]]:
    """H(q_j) and H(q_j ^ s) for the checked rows q_j."""
    h0 = [row_hash(session, nonce, j, row, variant) for j, row in enumerate(q_rows)]
    h1 = [row_hash(session, nonce, j, _xor(row, s), variant) for j, row in enumerate(q_rows)]
    return h0, h1


def sender_reply(
    h0: Sequence[bytes], h1: Sequence[bytes], pairs: Sequence[tuple[int, int]]
) -> tuple[bytes, bytes]:
    """y_j^b = x_j^b ^ H(q_j ^ b s), concatenated (16-byte big-endian blocks)."""
    y0 = b"".join(_xor(h, x0.to_bytes(16, "big")) for h, (x0, _) in zip(h0, pairs, strict=True))
    y1 = b"".join(_xor(h, x1.to_bytes(16, "big")) for h, (_, x1) in zip(h1, pairs, strict=True))
    return y0, y1


def correlated_zero_labels(q_rows: Sequence[bytes]) -> bytes:
    """The correlated OT with Delta = s: the garbler's 0-labels are the rows q_j themselves."""
    return b"".join(q_rows)


def receiver_rows(seeds0: Sequence[int], nonce: bytes, count: int, variant: Variant = CORRECT) -> list[bytes]:
    """The first ``count`` rows t_j of T (columns t_i = G(k_i^0))."""
    return rows([prg(k, nonce, count + PAD) for k in seeds0], count, variant)


def receiver_pads(
    session: bytes, t_rows: Sequence[bytes], nonce: bytes, variant: Variant = CORRECT
) -> list[bytes]:
    """H(t_j) for the rows t_j."""
    return [row_hash(session, nonce, j, row, variant) for j, row in enumerate(t_rows)]


def receiver_output(pads: Sequence[bytes], choices: Sequence[int], y0: bytes, y1: bytes) -> list[int]:
    """x_{r_j} = y_j^{r_j} ^ H(t_j)."""
    out = []
    for j, (pad, r) in enumerate(zip(pads, choices, strict=True)):
        y = (y1 if r else y0)[16 * j : 16 * (j + 1)]
        out.append(int.from_bytes(_xor(y, pad), "big"))
    return out


def receiver_correlated(t_rows: Sequence[bytes]) -> bytes:
    """The correlated OT's labels at the receiver: t_j = q_j ^ r_j s, i.e. x0_j or x0_j ^ Delta."""
    return b"".join(t_rows)
