"""Secure band protocol: the bank learns how many cutoffs an encrypted score reaches, and nothing else.

Transport-free: the bureau side is :class:`BandComparison`, the bank side is the two stateless
functions :func:`answer_masked` and :func:`answer_blinded`; messages are frozen dataclasses of
integers that a gRPC layer maps to protobuf.

Protocol
--------
Veugen's improved DGK comparison ("Improving the DGK comparison protocol", WIFS 2012), in the
"comparison with encrypted inputs" arrangement of Bost, Popa, Tu and Goldwasser (NDSS 2015), run
for K cutoffs at once. Notation: [.] Paillier under the bank's key, [[.]] DGK under the bank's
DGK key, l = ``bits``, kappa the statistical masking parameter.

The bureau holds [d_k] = [s - c_k] for k < K with the promise |d_k| < 2^l. Then
x_k = d_k + 2^l lies in [1, 2^(l+1)) and s >= c_k exactly when bit l of x_k is set.

1. Bureau -> bank, :class:`MaskedRequest`. Draw r_k uniform of l + 1 + kappa bits and form
   z_k = x_k + r_k < 2^slot with slot = l + 2 + kappa. Pack as many z_k as fit below n/4 into one
   plaintext, sum_k z_k 2^(k slot) (Horner: one squaring chain per ciphertext), re-randomise.
2. Bank -> bureau, :class:`BitsResponse`. Decrypt, unpack, check every value's width, and send
   [[bit i of beta_k]] for beta_k = z_k mod 2^l (least significant bit first), plus one
   Paillier [sum_k floor(z_k / 2^l)]: the bureau only ever needs the sum.
3. Bureau -> bank, :class:`BlindedRequest`. With alpha_k = r_k mod 2^l, the carry out of the
   low l bits of x_k + r_k is t_k = [beta_k < alpha_k], and floor(x_k / 2^l) =
   floor(z_k / 2^l) - floor(r_k / 2^l) - t_k. To compute t_k blind, draw a sign s_k in {+1, -1}
   and form, for i = l-1 .. 0, with w_i = sum_{j > i} (alpha_kj XOR beta_kj),

       [[e_i]] = [[s_k + alpha_ki - beta_ki + 3 w_i]]

   and the equality term [[e_-1]] = [[(1 - s_k)/2 + w_-1]] (w_-1 counts every differing bit).
   Then some e is 0 iff beta_k > alpha_k (s_k = +1), alpha_k > beta_k (s_k = -1), or
   alpha_k = beta_k (s_k = +1 only): delta_k = [beta_k >= alpha_k] XOR [s_k = -1].
   At most one e in a group is 0, and |e| <= 3 (l + 1) + 2 < u, so no value wraps to 0 mod u.
   Every value is multiplied by a fresh uniform element of Z_u^*, re-randomised, and each group
   of l + 1 is shuffled.
4. Bank -> bureau, :class:`FinalResponse`. delta_k = 1 iff group k holds an encryption of 0
   (every value is tested: no early exit, so the response time does not depend on delta_k).
   The bank returns K fresh [delta_k].
5. Bureau: t_k = delta_k if s_k = -1 else 1 - delta_k, and
   [band] = [sum floor(z_k/2^l)] - sum floor(r_k/2^l) - sum_k [t_k], re-randomised with a
   smudging exponent (below) and handed to the bank, which decrypts band in [0, K].

What each party sees
--------------------
- Bank: K and l (public parameters); z_k = x_k + r_k, which is within statistical distance
  2^-kappa of z_k for any other x_k (r_k is 2^kappa times wider than x_k); per group the
  multiset {0 or nothing} + uniform values of Z_u^* in random order, so only delta_k, which is a
  uniform bit independent of s because s_k is; and the band. Every ciphertext the bank receives
  is re-randomised: the packed [z] with the DJN short exponent (its other randomness comes from
  the platform and the bureau, none of it known to the bank); DGK values with 2.5 t-bit
  exponents (statistically hiding in <h> even for the key holder); [band] with
  hs^R, R uniform of r_bits + log2(2K) + 80 bits, which drowns the bank's own encryption
  exponents of [high_sum] and [delta_k] (all below 2^r_bits) whatever the signs s_k were, so
  even a computationally unbounded bank learns nothing about the s_k (and so about t_k) from
  the randomness of [band]. The plain DJN re-randomisation would only hide them under a 1024-bit
  discrete-logarithm assumption against a party that knows the factorisation.
- Bureau: Paillier and DGK ciphertexts under the bank's keys only (semantic security of both).
  It never sees delta_k, t_k, beta_k or the band.

Security model: semi-honest, bureau and bank not colluding. A malicious bank could answer
wrongly, and a malicious bureau could feed the stateless bank crafted ciphertexts; in particular
the bank's refusal of a packed plaintext wider than announced (which keeps wrapped values from
producing a wrong band) is a one-bit range oracle on whatever the bureau encrypted. Neither is
covered; a deployment facing a deviating bureau needs per-application rate limits and audit logs
at the bank.
Side channels: the bank's work is made data-independent where it is cheap (no early exit,
``encrypt_bit``), but gmpy2's powmod and phe's decryption are not constant-time.

Parameters
----------
kappa = 40 by default (statistical distance 2^-40 per value; refused below 40), l <= 256,
K <= 64, slot = l + 2 + kappa bits, floor((n_bits - 2) / slot) values per Paillier ciphertext,
so a packed plaintext stays below n/4 and nothing can wrap modulo n.

Message sizes (2048-bit Paillier, 512-byte ciphertexts; 2048-bit DGK, 256-byte ciphertexts):
MaskedRequest ceil(K / floor(2046 / slot)) x 512 B; BitsResponse K l x 256 B + 512 B;
BlindedRequest K (l + 1) x 256 B; FinalResponse K x 512 B. For K = 4, l = 48: 512 B, 49,664 B,
50,176 B and 2,048 B, about 102 KB in all, plus 512 B for [band].

Cost, measured on one core of a 2-core Xeon with gmpy2 (2048-bit Paillier, DGK t = 160): K = 4,
l = 48 takes a median 88 ms of CPU per band (bureau 41 ms, bank 47 ms; the 2.5 t-bit DGK
exponentiations dominate); K = 4, l = 32 takes 63 ms and 70 KB.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gmpy2

from blindscore.dgk import DGKKeyPair, DGKPublicKey, DGKSecretKey
from blindscore.errors import InvalidInputError, PreconditionError
from blindscore.paillier import KeyPair, PublicKey

DEFAULT_KAPPA = 40
MIN_KAPPA = 40
MAX_KAPPA = 128
MAX_BITS = 256
MAX_COUNT = 64
SMUDGE_BITS = 80  # statistical distance 2^-80 for the randomness of [band]
_MPZ = type(gmpy2.mpz(0))
_SYSRANDOM = secrets.SystemRandom()


# messages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskedRequest:
    """Round 1, bureau -> bank: packed [z_k] Paillier ciphertexts and the public parameters."""

    ciphertexts: tuple[int, ...]
    count: int
    bits: int
    slot_bits: int


@dataclass(frozen=True)
class BitsResponse:
    """Round 1, bank -> bureau: count x bits DGK bit ciphertexts (LSB first), Paillier [sum of highs]."""

    bit_ciphertexts: tuple[tuple[int, ...], ...]
    high_sum: int


@dataclass(frozen=True)
class BlindedRequest:
    """Round 2, bureau -> bank: count groups of bits + 1 blinded, shuffled DGK ciphertexts."""

    groups: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class FinalResponse:
    """Round 2, bank -> bureau: one fresh Paillier [delta_k] per cutoff."""

    deltas: tuple[int, ...]


# shared parameter rules -------------------------------------------------------------------


def values_per_ciphertext(key_bits: int, slot_bits: int) -> int:
    """How many slot_bits-wide values one Paillier plaintext holds while staying below n/4."""
    return (key_bits - 2) // slot_bits


def ciphertext_count(count: int, key_bits: int, slot_bits: int) -> int:
    """Number of Paillier ciphertexts a MaskedRequest of ``count`` values needs."""
    per = values_per_ciphertext(key_bits, slot_bits)
    return -(-count // per)


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if type(value) is not int:
        raise InvalidInputError(f"{name} must be an integer, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise InvalidInputError(f"{name} = {value} outside {lo}..{hi}")
    return value


def _check_dgk_room(bits: int, dgk: DGKPublicKey) -> None:
    # The largest value in a group is 3 (l + 1) + 2 in absolute value; it must not reach u, or a
    # nonzero comparison value could wrap to 0 modulo u.
    if 3 * (bits + 1) + 2 >= dgk.u:
        raise InvalidInputError(f"l = {bits} bits is too long for DGK plaintext space u = {dgk.u}")


def _sequence(name: str, value: object) -> Sequence[Any]:
    if not isinstance(value, tuple | list):
        raise InvalidInputError(f"{name} must be a sequence of ciphertexts, not {type(value).__name__}")
    return value


def _paillier_cts(pk: PublicKey, name: str, values: object, expected: int) -> list[Any]:
    seq = _sequence(name, values)
    if len(seq) != expected:
        raise InvalidInputError(f"{name}: expected {expected} Paillier ciphertexts, got {len(seq)}")
    return [_paillier_ct(pk, f"{name}[{i}]", c) for i, c in enumerate(seq)]


def _paillier_ct(pk: PublicKey, name: str, c: object) -> Any:
    if type(c) is not int and not isinstance(c, _MPZ):
        raise InvalidInputError(f"{name} must be an integer ciphertext, not {type(c).__name__}")
    try:
        return pk.validate(int(c))
    except InvalidInputError as exc:
        raise InvalidInputError(f"{name}: {exc}") from None


def _dgk_groups(dgk: DGKPublicKey, name: str, groups: object, count: int, width: int) -> list[list[Any]]:
    seq = _sequence(name, groups)
    if len(seq) != count:
        raise InvalidInputError(f"{name}: expected {count} groups, got {len(seq)}")
    out = []
    for k, group in enumerate(seq):
        g = _sequence(f"{name}[{k}]", group)
        if len(g) != width:
            raise InvalidInputError(f"{name}[{k}]: expected {width} DGK ciphertexts, got {len(g)}")
        try:
            out.append([dgk.validate(c) for c in g])
        except InvalidInputError as exc:
            raise InvalidInputError(f"{name}[{k}]: {exc}") from None
    return out


# randomness hooks (module level so that the leakage tests can swap in deliberately broken ones)


def _random_sign() -> int:
    return 1 if secrets.randbits(1) else -1


def _shuffle(values: list[Any]) -> None:
    _SYSRANDOM.shuffle(values)


@functools.lru_cache(maxsize=16)
def _hs_high(nsquare: int, hs: int, r_bits: int) -> Any:
    """hs^(2^r_bits) mod n^2: the base for the high part of a smudging exponent."""
    return gmpy2.powmod(gmpy2.mpz(hs), gmpy2.mpz(1) << r_bits, gmpy2.mpz(nsquare))


def _rerandomize_smudged(pk: PublicKey, c: Any, count: int) -> Any:
    """Re-randomise with hs^R, R uniform of r_bits + log2(2K) + SMUDGE_BITS bits.

    The bank knows the exponents (each below 2^r_bits) of the ciphertexts it sent; the bureau
    combined K of them with secret signs. A wide R makes the exponent of [band] statistically
    independent of those signs. R = R1 + 2^r_bits R2, where R1 is the fresh exponent that
    pk.rerandomize draws with its fixed-base table and R2 the short high part.
    """
    extra = (2 * count).bit_length() + SMUDGE_BITS
    high = _hs_high(int(pk.nsquare), int(pk.hs), pk.r_bits)
    c = pk.rerandomize(c)
    return c * gmpy2.powmod(high, secrets.randbits(extra), pk.nsquare) % pk.nsquare


# bureau side ------------------------------------------------------------------------------


class BandComparison:
    """The bureau's side of one band computation: [band] = [number of k with d_k >= 0].

    One object per application, used once: ``masked_request()``, then
    ``blinded_request(bits_response)``, then ``band_ciphertext(final_response)``.
    The masks and signs it draws never leave it.
    """

    def __init__(
        self,
        public_key: PublicKey,
        dgk_public: DGKPublicKey,
        diffs: Sequence[Any],
        bits: int,
        kappa: int = DEFAULT_KAPPA,
        *,
        _allow_weak_mask_for_tests: bool = False,
    ) -> None:
        _check_int("bits", bits, 1, MAX_BITS)
        if _allow_weak_mask_for_tests:
            _check_int("kappa", kappa, 0, MAX_KAPPA)
        elif type(kappa) is int and kappa < MIN_KAPPA:
            raise InvalidInputError(
                f"kappa = {kappa} is refused: masks need at least {MIN_KAPPA} bits of statistical hiding"
            )
        else:
            _check_int("kappa", kappa, MIN_KAPPA, MAX_KAPPA)
        _check_dgk_room(bits, dgk_public)
        seq = _sequence("diffs", diffs)
        count = len(seq)
        if not 1 <= count <= MAX_COUNT:
            raise InvalidInputError(f"number of cutoffs {count} outside 1..{MAX_COUNT}")
        self.slot_bits = bits + 2 + kappa
        self._per = values_per_ciphertext(public_key.bits, self.slot_bits)
        if self._per < 1:
            raise InvalidInputError(
                f"a {self.slot_bits}-bit masked value (l = {bits}, kappa = {kappa}) does not fit "
                f"below n/4 of a {public_key.bits}-bit Paillier key"
            )
        self.public_key = public_key
        self.dgk_public = dgk_public
        self.count = count
        self.bits = bits
        self.kappa = kappa
        self._diffs = [_paillier_ct(public_key, f"diffs[{i}]", c) for i, c in enumerate(seq)]
        self._masks = [secrets.randbits(bits + 1 + kappa) for _ in range(count)]
        self._signs: list[int] = []
        self._high_sum: Any = None
        self._stage = 0
        # g^m for every constant the comparison values use: s + alpha_i in -1..2.
        self._g = {m: dgk_public.encrypt_trivial(m) for m in (-1, 0, 1, 2)}

    def _require_stage(self, expected: int, what: str) -> None:
        if self._stage != expected:
            raise PreconditionError(f"{what} called out of order (a BandComparison is used once, in order)")

    def masked_request(self) -> MaskedRequest:
        """Round 1: the packed, masked differences."""
        self._require_stage(0, "masked_request()")
        self._stage = 1
        pk = self.public_key
        ns = pk.nsquare
        slot = self.slot_bits
        shift = gmpy2.mpz(1) << slot
        offset = 1 << self.bits
        cts: list[int] = []
        for j0 in range(0, self.count, self._per):
            j1 = min(j0 + self._per, self.count)
            # Horner over the slots: each [d_k] is raised to 2^(slot (k - j0)) by one shared chain
            # of squarings instead of one exponentiation per slot.
            acc = self._diffs[j1 - 1]
            plain = offset + self._masks[j1 - 1]
            for k in range(j1 - 2, j0 - 1, -1):
                acc = gmpy2.powmod(acc, shift, ns) * self._diffs[k] % ns
                plain = (plain << slot) + offset + self._masks[k]
            # add_plain refuses anything at or above n/2; the layout keeps it below 2^(n_bits-2).
            acc = pk.add_plain(acc, plain)
            cts.append(int(pk.rerandomize(acc)))
        return MaskedRequest(ciphertexts=tuple(cts), count=self.count, bits=self.bits, slot_bits=slot)

    def blinded_request(self, response: BitsResponse) -> BlindedRequest:
        """Round 2: K groups of l + 1 blinded, re-randomised, shuffled DGK comparison values."""
        if not isinstance(response, BitsResponse):
            raise InvalidInputError(f"expected a BitsResponse, not {type(response).__name__}")
        self._require_stage(1, "blinded_request()")
        groups_in = _dgk_groups(
            self.dgk_public, "bit_ciphertexts", response.bit_ciphertexts, self.count, self.bits
        )
        high_sum = _paillier_ct(self.public_key, "high_sum", response.high_sum)
        self._stage = 2
        self._high_sum = high_sum
        dgk = self.dgk_public
        n = dgk.n
        u = dgk.u
        g = self._g
        low_mask = (1 << self.bits) - 1
        groups: list[tuple[int, ...]] = []
        for k, enc_bits in enumerate(groups_in):
            alpha = self._masks[k] & low_mask
            s = _random_sign()
            self._signs.append(s)
            w = gmpy2.mpz(1)  # [[w_i]], running XOR count of the bits above i; starts as [[0]]
            values = []
            for i in range(self.bits - 1, -1, -1):
                b = enc_bits[i]
                b_inv = gmpy2.invert(b, n)
                a = (alpha >> i) & 1
                w3 = w * w % n * w % n
                values.append(g[s + a] * b_inv % n * w3 % n)  # [[s + a_i - b_i + 3 w_i]]
                w = w * (b if a == 0 else g[1] * b_inv % n) % n  # += [[a_i XOR b_i]]
            values.append(g[(1 - s) // 2] * w % n)  # zero iff s = +1 and alpha = beta
            blinded = [int(dgk.rerandomize(gmpy2.powmod(v, 1 + secrets.randbelow(u - 1), n))) for v in values]
            _shuffle(blinded)
            groups.append(tuple(blinded))
        return BlindedRequest(groups=tuple(groups))

    def band_ciphertext(self, response: FinalResponse) -> int:
        """The re-randomised [band] for the bank: band = number of cutoffs with s >= c_k."""
        if not isinstance(response, FinalResponse):
            raise InvalidInputError(f"expected a FinalResponse, not {type(response).__name__}")
        self._require_stage(2, "band_ciphertext()")
        deltas = _paillier_cts(self.public_key, "deltas", response.deltas, self.count)
        self._stage = 3
        pk = self.public_key
        ns = pk.nsquare
        # sum t_k = #{s_k = +1} + sum_{s_k=-1} delta_k - sum_{s_k=+1} delta_k
        plus = gmpy2.mpz(1)
        minus = gmpy2.mpz(1)
        n_plus = 0
        for s, c in zip(self._signs, deltas, strict=True):
            if s > 0:
                plus = plus * c % ns
                n_plus += 1
            else:
                minus = minus * c % ns
        const = -sum(r >> self.bits for r in self._masks) - n_plus
        c = self._high_sum * plus % ns * gmpy2.invert(minus, ns) % ns
        c = pk.add_plain(c, const)
        return int(_rerandomize_smudged(pk, c, self.count))


# bank side --------------------------------------------------------------------------------


def answer_masked(keypair: KeyPair, dgk_public: DGKPublicKey, request: MaskedRequest) -> BitsResponse:
    """Round 1 at the bank: decrypt the masked values, return their low bits under DGK."""
    if not isinstance(request, MaskedRequest):
        raise InvalidInputError(f"expected a MaskedRequest, not {type(request).__name__}")
    pk = keypair.public_key
    count = _check_int("count", request.count, 1, MAX_COUNT)
    bits = _check_int("bits", request.bits, 1, MAX_BITS)
    _check_dgk_room(bits, dgk_public)
    slot = _check_int("slot_bits", request.slot_bits, bits + 2, bits + 2 + MAX_KAPPA)
    per = values_per_ciphertext(pk.bits, slot)
    if per < 1:
        raise InvalidInputError(f"slot_bits = {slot} does not fit below n/4 of a {pk.bits}-bit Paillier key")
    cts = _paillier_cts(pk, "ciphertexts", request.ciphertexts, ciphertext_count(count, pk.bits, slot))
    sk = keypair.secret_key
    slot_mask = (1 << slot) - 1
    zs: list[int] = []
    for idx, c in enumerate(cts):
        m = min(per, count - idx * per)
        v = sk.decrypt(c)
        if v >> (m * slot):
            raise InvalidInputError(
                f"ciphertexts[{idx}] holds more than {m} x {slot} bits: a difference broke |d| < 2^{bits}"
            )
        zs.extend((v >> (j * slot)) & slot_mask for j in range(m))
    bit_cts = tuple(tuple(int(dgk_public.encrypt_bit((z >> i) & 1)) for i in range(bits)) for z in zs)
    high_sum = int(pk.encrypt(sum(z >> bits for z in zs)))
    return BitsResponse(bit_ciphertexts=bit_cts, high_sum=high_sum)


def answer_blinded(public_key: PublicKey, dgk_secret: DGKSecretKey, request: BlindedRequest) -> FinalResponse:
    """Round 2 at the bank: delta_k = 1 iff group k holds an encryption of 0; fresh [delta_k] back."""
    if not isinstance(request, BlindedRequest):
        raise InvalidInputError(f"expected a BlindedRequest, not {type(request).__name__}")
    seq = _sequence("groups", request.groups)
    count = len(seq)
    if not 1 <= count <= MAX_COUNT:
        raise InvalidInputError(f"groups: {count} groups outside 1..{MAX_COUNT}")
    first = _sequence("groups[0]", seq[0])
    width = _check_int("group size", len(first), 2, MAX_BITS + 1)
    _check_dgk_room(width - 1, dgk_secret.public_key)
    groups = _dgk_groups(dgk_secret.public_key, "groups", seq, count, width)
    deltas = []
    for group in groups:
        hit = 0
        for c in group:  # every value is tested: an early exit would time delta_k for the bureau
            hit |= dgk_secret.is_zero(c)
        deltas.append(int(public_key.encrypt(hit)))
    return FinalResponse(deltas=tuple(deltas))


def run_band_protocol(
    keypair: KeyPair, dgk_keypair: DGKKeyPair, diffs: Sequence[Any], bits: int, kappa: int = DEFAULT_KAPPA
) -> int:
    """Both sides in one process (tests, benchmarks): returns the [band] ciphertext."""
    bureau = BandComparison(keypair.public_key, dgk_keypair.public_key, diffs, bits, kappa)
    bits_resp = answer_masked(keypair, dgk_keypair.public_key, bureau.masked_request())
    final = answer_blinded(keypair.public_key, dgk_keypair.secret_key, bureau.blinded_request(bits_resp))
    return bureau.band_ciphertext(final)
