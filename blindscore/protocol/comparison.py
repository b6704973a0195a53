"""Secure band protocol: the bank learns how many cutoffs an encrypted score reaches, and nothing else.

Transport-free: the bureau side is :class:`BandComparison`, the bank side is the two stateless
functions :func:`answer_masked` and :func:`answer_blinded`; messages are frozen dataclasses of
integers that a gRPC layer maps to protobuf. :func:`comparison_bits` and :func:`truncated_band`
are the parameter rules; :mod:`blindscore.models.linear` calls them, so a model and the protocol cannot
disagree on l or on the band.

Protocol
--------
Veugen's improved DGK comparison ("Improving the DGK comparison protocol", WIFS 2012), in the
"comparison with encrypted inputs" arrangement of Bost, Popa, Tu and Goldwasser (NDSS 2015),
run for K cutoffs with one mask and a truncated score. Notation: [.] Paillier under the bank's
key, [[.]] DGK under the bank's DGK key, kappa the statistical masking parameter.

The bureau holds [s] with the public promise s_min <= s <= s_max, integer cutoffs c_k (k < K) at
the same scale, and a truncation T >= 0. Parameters, all computed by :func:`_plan` at the bureau
(the bank is told only K, l, T and width_bits; cutoffs and score bounds are part of the model):

- v = s - s_min in [0, W], W = s_max - s_min; H = ceil(W / 2^T).
- gamma_k = ceil((c_k - s_min) / 2^T), clamped to [0, H + 1]. A clamped cutoff lies below
  (or above) every value sigma can take, so clamping changes no comparison; it only keeps
  cutoffs far outside the score range from inflating l.
- l (``bits``) = the smallest l >= 1 with |sigma - gamma_k| < 2^l for every sigma in [0, H] and
  every k; refused above 256.
- C = 2^(l+T) - s_min, which makes every quantity below nonnegative.
- R uniform of m = bitlen(W) + 1 + kappa bits; ``width_bits`` = bitlen(C + s_max + 2^m - 1).

1. Bureau -> bank, :class:`MaskedRequest`: [z] = [s + C + R], re-randomised, with K, l, T and
   width_bits.
2. Bank -> bureau, :class:`BitsResponse`. The bank decrypts z (a z >= 2^width_bits is a fault:
   see "Security model"),
   truncates z' = floor(z / 2^T) and sends [[beta_i]] for the l bits of beta = z' mod 2^l (least
   significant first) and one fresh [z_h], z_h = floor(z' / 2^l). With R' = floor(R / 2^T),

       z' = R' + 2^l + sigma,   sigma = floor(v / 2^T) + e,   e = [v mod 2^T + R mod 2^T >= 2^T].

   For cutoff k let x_k = sigma - gamma_k + 2^l, in (0, 2^(l+1)) by the choice of l, so
   bit_k = [sigma >= gamma_k] = floor(x_k / 2^l). Then z' = x_k + A_k with A_k = R' + gamma_k >= 0,
   and splitting x_k and A_k into their high parts and low l bits gives

       bit_k = z_h - floor(A_k / 2^l) - t_k,   t_k = [beta < alpha_k],   alpha_k = A_k mod 2^l

   (the low parts sum to beta + 2^l t_k). One z, one set of l bits: nothing is per cutoff yet.
3. Bureau -> bank, :class:`BlindedRequest`. To get t_k blind, draw a sign s_k in {+1, -1} and
   form, for i = l-1 .. 0, with w_i = sum_{j > i} (alpha_kj XOR beta_j),

       [[e_i]] = [[s_k + alpha_ki - beta_i + 3 w_i]],   and   [[e_-1]] = [[(1 - s_k)/2 + 3 w_-1]].

   Some e is 0 iff beta > alpha_k (s_k = +1), alpha_k > beta (s_k = -1), or alpha_k = beta
   (s_k = +1 only), so delta_k = [beta >= alpha_k] XOR [s_k = -1]. At most one e of a group is 0
   and |e| <= 3 l + 2 < u, so no value wraps to 0 mod u. Every value is raised to a fresh uniform
   element of Z_u^*, re-randomised, and each group of l + 1 is shuffled.
4. Bank -> bureau, :class:`FinalResponse`: delta_k = 1 iff group k holds an encryption of 0
   (every value is tested: no early exit, so the response time does not depend on delta_k);
   K fresh [delta_k].
5. Bureau: t_k = delta_k if s_k = -1 else 1 - delta_k, and
   [band] = K [z_h] - sum_k floor(A_k / 2^l) - sum_k [t_k] = [sum_k bit_k], re-randomised with
   a smudging exponent (below) and handed to the bank, which decrypts band in [0, K].

Why the truncated comparisons are right. The carry e needs v mod 2^T > 0, so sigma is
floor(v / 2^T) or ceil(v / 2^T). With d_k = c_k - s_min and gamma_k = ceil(d_k / 2^T):

- if s - c_k >= 2^T: sigma >= floor(v / 2^T) >= floor(d_k / 2^T + 1) >= ceil(d_k / 2^T), so bit_k = 1;
- if c_k - s >= 2^T: sigma <= ceil(v / 2^T) <= ceil(d_k / 2^T - 1) < gamma_k, so bit_k = 0.

So bit_k = [s >= c_k] whenever |s - c_k| >= 2^T, and exactly when T = 0 (then e = 0). Clamping
gamma_k to [0, H + 1] keeps every bit, since sigma is in [0, H]. At score scale 2^S the window
is one ulp 2^(T-S); :class:`~blindscore.models.linear.LinearModel` adds its computational error to it
(``max_abs_error``) and picks T so the sum stays within its precision. Inside the window the
band is that of the dithered score floor((v + R mod 2^T) / 2^T): see "What each party sees".

What each party sees
--------------------
- Bank: K, l, T and width_bits (public parameters); z = s + C + R, within statistical distance
  2^-(kappa+1) of z for any other admissible s (R is 2^(kappa+1) times wider than the range of
  s); beta and its bits, which are functions of z; per group the multiset {0 or nothing} +
  uniform values of Z_u^* in random order, so only delta_k, which is a uniform bit independent
  of s and of the other groups because s_k is; and the band. Every ciphertext it receives is
  re-randomised: [z] with the DJN short exponent (its other randomness comes from the platform
  and the bureau, none of it known to the bank); DGK values with fresh 2.5 t-bit exponents
  (statistically hiding in <h> even for the key holder, which matters because all K groups are
  built from the same [[beta_i]]); [band] with hs^R, R uniform of r_bits + log2(2K) + 80 bits,
  which drowns the bank's own encryption exponents of [z_h] (used K times) and [delta_k] (all
  below 2^r_bits) whatever the signs s_k were, so even a computationally unbounded bank learns
  nothing about the s_k (and so about t_k) from the randomness of [band]. Plain DJN
  re-randomisation would hide them only under a 1024-bit discrete-logarithm assumption against
  a party that knows the factorisation.
  The one thing beyond the exact band is the carry: the bank knows z mod 2^T = (v + R) mod 2^T,
  and e = [z mod 2^T < v mod 2^T]. For a score less than one ulp below a truncated cutoff
  (floor(v / 2^T) = gamma_k - 1), the band tells the bank whether v mod 2^T exceeds the
  uniformly random point z mod 2^T: information about s finer than one ulp (so within the
  model's precision), and only for scores that close to a cutoff. Scoring the same
  application repeatedly would narrow down where in that ulp it lies. With T = 0 there is none.
- Bureau: Paillier and DGK ciphertexts under the bank's keys only (semantic security of both).
  It never sees z, beta, delta_k, t_k or the band.

Security model: semi-honest, bureau and bank not colluding, and on top of that a deviating
party learns nothing more than an honest one. The bank's side never lets a decision the bureau
can observe depend on a value it decrypted: z is decrypted in full (never m mod p, which would
compare the bureau's plaintext with the secret prime), a z wider than width_bits is answered as
a random z of that width and reported through ``on_fault``, and the band node stores such an
application as faulted instead of a band, answering exactly as for any other. What a deviating
bureau can still do is spoil the bands of its own applications (detected at the bank), and
observe the count-based limits the bank node puts on re-runs and faults (bank_node/store.py).
A deviating bank can substitute its own input (the bits of beta), which shifts the score it is
compared on: the bureau hands it at most one [band] per application, so it learns one band-wide
interval at most. Side channels: the bank's work is data-independent where it is cheap (no
early exit, ``encrypt_bit`` for both DGK and Paillier bits, a decoy drawn on every call), but
gmpy2's powmod and phe's decryption are not constant-time.

Parameters and sizes
--------------------
kappa = 40 by default (refused below 40), l <= 256, K <= 64, width_bits <= n_bits - 2 so z stays
below n/4 and nothing wraps modulo n. Messages (2048-bit Paillier, 512-byte ciphertexts; 2048-bit
DGK, 256-byte ciphertexts): MaskedRequest 512 B; BitsResponse (l + 2) x 256 B; BlindedRequest
K (l + 1) x 256 B; FinalResponse K x 512 B; [band] 512 B. For K = 4 that is 1280 l + 4608 bytes:
39,168 B at l = 27 (the German model), against 98,816 B for the previous version of this module
(a mask and l bits per cutoff, no truncation: l = 46).

Cost, measured on one core of a 2-core Xeon (Python 3.11, gmpy2; 2048-bit Paillier, 2048-bit DGK
with t = 224; K = 4, l = 27, T = 24: the German model), median CPU per application over 40 runs:
with warm randomness pools the bureau spends 5.8 ms (the K (l + 1) 17-bit blinding
exponentiations) and the bank 19-21 ms (12-13 ms for the K (l + 1) zero tests, each a 224-bit
exponentiation modulo the 1024-bit p, and 3 ms for each of the two Paillier decryptions, of z and
of [band]); with cold pools 30 ms and 28 ms. The pools do not remove the cost of fresh randomness
(0.16 ms per h^r, l + K (l + 1) of them per application, and 0.8 ms for each of seven hs^r:
about 19 ms at the bureau and 8 ms at the bank), they move it to idle time. The previous version
of this module took 48 ms and 63 ms (l = 46, no pools).
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import gmpy2

from blindscore.crypto.dgk import DGKKeyPair, DGKPublicKey, DGKSecretKey
from blindscore.crypto.paillier import FixedBaseTable, KeyPair, PublicKey
from blindscore.errors import InvalidInputError, PreconditionError

DEFAULT_KAPPA = 40
MIN_KAPPA = 40
MAX_KAPPA = 128
MAX_BITS = 256
MAX_COUNT = 64
#: Far beyond any useful truncation; it only keeps absurd values from building huge integers.
MAX_TRUNCATE_BITS = 1024
SMUDGE_BITS = 80  # statistical distance 2^-80 for the randomness of [band]
#: Largest smudging high part: log2(2 MAX_COUNT) + SMUDGE_BITS bits.
_SMUDGE_HIGH_BITS = (2 * MAX_COUNT).bit_length() + SMUDGE_BITS
_MPZ = type(gmpy2.mpz(0))
log = logging.getLogger(__name__)
_KEY_MASK = (1 << 128) - 1


# messages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskedRequest:
    """Round 1, bureau -> bank: one Paillier [z] = [s + C + R] and the public parameters."""

    ciphertext: int
    count: int
    bits: int
    truncate_bits: int
    width_bits: int


@dataclass(frozen=True)
class BitsResponse:
    """Round 1, bank -> bureau: ``bits`` DGK bit ciphertexts of beta (LSB first), Paillier [z_h]."""

    bit_ciphertexts: tuple[int, ...]
    high: int


@dataclass(frozen=True)
class BlindedRequest:
    """Round 2, bureau -> bank: count groups of bits + 1 blinded, shuffled DGK ciphertexts."""

    groups: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class FinalResponse:
    """Round 2, bank -> bureau: one fresh Paillier [delta_k] per cutoff."""

    deltas: tuple[int, ...]


# shared parameter rules -------------------------------------------------------------------


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if type(value) is not int:
        raise InvalidInputError(f"{name} must be an integer, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise InvalidInputError(f"{name} = {value} outside {lo}..{hi}")
    return value


@dataclass(frozen=True)
class _Plan:
    """The public parameters of one band computation (see the module docstring)."""

    score_min: int
    score_max: int
    truncate_bits: int
    bits: int
    offset: int  # C = 2^(l+T) - s_min
    thresholds: tuple[int, ...]  # gamma_k, clamped to [0, H + 1]


def _plan(score_min: object, score_max: object, cutoffs: object, truncate_bits: object) -> _Plan:
    if type(score_min) is not int or type(score_max) is not int:
        raise InvalidInputError(
            f"score bounds must be integers, not {type(score_min).__name__} and {type(score_max).__name__}"
        )
    if score_min > score_max:
        raise InvalidInputError(f"score bounds {score_min} > {score_max}")
    if not isinstance(cutoffs, Sequence) or isinstance(cutoffs, str | bytes):
        raise InvalidInputError(f"cutoffs must be a sequence of integers, not {type(cutoffs).__name__}")
    if not 1 <= len(cutoffs) <= MAX_COUNT:
        raise InvalidInputError(f"number of cutoffs {len(cutoffs)} outside 1..{MAX_COUNT}")
    for i, c in enumerate(cutoffs):
        if type(c) is not int:
            raise InvalidInputError(f"cutoffs[{i}] must be an integer, not {type(c).__name__}")
    t = _check_int("truncate_bits", truncate_bits, 0, MAX_TRUNCATE_BITS)
    top = -(-(score_max - score_min) >> t)  # H = ceil(W / 2^T), the largest sigma
    # gamma_k = ceil((c_k - s_min) / 2^T) = -floor((s_min - c_k) / 2^T), then clamped.
    gammas = tuple(min(max(-((score_min - c) >> t), 0), top + 1) for c in cutoffs)
    reach = max(max(g, top - g) for g in gammas)  # the largest |sigma - gamma_k|
    bits = max(1, reach.bit_length())
    if bits > MAX_BITS:
        raise InvalidInputError(
            f"the score range and cutoffs need l = {bits} comparison bits; at most {MAX_BITS} are supported "
            "(narrow the declared ranges, coarsen the precision or truncate more)"
        )
    return _Plan(score_min, score_max, t, bits, (1 << (bits + t)) - score_min, gammas)


def comparison_bits(score_min: int, score_max: int, cutoffs: Sequence[int], truncate_bits: int) -> int:
    """l: the smallest l with |sigma - gamma_k| < 2^l for every admissible score and cutoff.

    Raises InvalidInputError for malformed parameters or when l would exceed 256.
    """
    return _plan(score_min, score_max, cutoffs, truncate_bits).bits


def truncated_band(
    score: int,
    cutoffs: Sequence[int],
    score_min: int,
    score_max: int,
    truncate_bits: int,
    carry: int = 0,
) -> int:
    """The band the protocol yields for ``score`` when the truncation carry is ``carry``.

    That is the number of k with floor((score - s_min) / 2^T) + carry >= gamma_k. The protocol's
    carry is random and can be 1 only when 2^T does not divide score - s_min; the two values
    differ only for a score within one 2^T step below a truncated cutoff, and both equal the
    exact band #{k: score >= c_k} whenever every |score - c_k| >= 2^T.
    """
    plan = _plan(score_min, score_max, cutoffs, truncate_bits)
    _check_int("score", score, score_min, score_max)
    _check_int("carry", carry, 0, 1)
    sigma = ((score - score_min) >> plan.truncate_bits) + carry
    return sum(1 for g in plan.thresholds if sigma >= g)


def _mask_bits(plan: _Plan, kappa: int) -> int:
    return (plan.score_max - plan.score_min).bit_length() + 1 + kappa


def _width_bits(plan: _Plan, mask_bits: int) -> int:
    return (plan.offset + plan.score_max + (1 << mask_bits) - 1).bit_length()


def _check_dgk_room(bits: int, dgk: DGKPublicKey) -> None:
    # The largest value in a group is 3 l + 2 in absolute value; it must not reach u, or a
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


def _dgk_cts(dgk: DGKPublicKey, name: str, values: object, expected: int) -> list[Any]:
    seq = _sequence(name, values)
    if len(seq) != expected:
        raise InvalidInputError(f"{name}: expected {expected} DGK ciphertexts, got {len(seq)}")
    try:
        return dgk.validate_many(seq)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{name}: {exc}") from None


# randomness hooks (module level so that the leakage tests can swap in deliberately broken ones)


def _draw_mask(bits: int) -> int:
    """The mask R, uniform of ``bits`` bits (a hook so that the leakage tests can break it)."""
    return secrets.randbits(bits)


def _random_sign() -> int:
    return 1 if secrets.randbits(1) else -1


def _shuffle(values: list[Any]) -> None:
    """A uniformly random permutation in place: sort by independent 128-bit keys from one draw.

    Keys tie with probability below len^2 / 2^129; one CSPRNG call instead of one per element.
    """
    keys = secrets.randbits(128 * len(values))
    order = sorted(range(len(values)), key=lambda i: (keys >> (128 * i)) & _KEY_MASK)
    values[:] = [values[i] for i in order]


def _random_units(count: int, u: int) -> list[int]:
    """``count`` independent uniform elements of Z_u^* = {1, ..., u - 1} from one CSPRNG draw.

    For u = 2^k + 1 (65537) that is 1 + k random bits, exactly; otherwise each value takes 64
    spare bits and a reduction, off uniform by less than 2^-64.
    """
    span = u - 1
    exact = span & (span - 1) == 0
    width = span.bit_length() - 1 if exact else span.bit_length() + 64
    draw = secrets.randbits(width * count)
    mask = (1 << width) - 1
    if exact:
        return [1 + ((draw >> (width * i)) & mask) for i in range(count)]
    return [1 + ((draw >> (width * i)) & mask) % span for i in range(count)]


@functools.lru_cache(maxsize=16)
def _smudge_table(nsquare: int, hs: int, r_bits: int) -> FixedBaseTable:
    """Fixed-base table of hs^(2^r_bits) mod n^2: the high part of a smudging exponent.

    6-bit windows: 15 rows of 64 values (0.5 MB at 2048 bits), so a high part costs about 15
    multiplications instead of an 87-bit exponentiation modulo n^2.
    """
    high = gmpy2.powmod(gmpy2.mpz(hs), gmpy2.mpz(1) << r_bits, gmpy2.mpz(nsquare))
    return FixedBaseTable(high, nsquare, _SMUDGE_HIGH_BITS, window=6)


def _rerandomize_smudged(pk: PublicKey, c: Any, count: int) -> Any:
    """Re-randomise with hs^R, R uniform of r_bits + log2(2K) + SMUDGE_BITS bits.

    The bank knows the exponents (each below 2^r_bits) of the ciphertexts it sent; the bureau
    combined them (K [z_h] and K [delta_k] with secret signs). A wide R makes the exponent of
    [band] statistically independent of those signs. R = R1 + 2^r_bits R2, where R1 is the fresh
    exponent pk.rerandomize draws and R2 the short high part.
    """
    extra = (2 * count).bit_length() + SMUDGE_BITS
    table = _smudge_table(int(pk.nsquare), int(pk.hs), pk.r_bits)
    c = pk.rerandomize(c)
    return c * table.pow(secrets.randbits(extra)) % pk.nsquare


def _batch_invert(values: Sequence[Any], modulus: Any) -> list[Any]:
    """Inverses of units modulo m with one modular inversion (Montgomery's trick)."""
    prefix = [gmpy2.mpz(1)]
    for v in values:
        prefix.append(prefix[-1] * v % modulus)
    inv = gmpy2.invert(prefix[-1], modulus)
    out = [gmpy2.mpz(0)] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = inv * prefix[i] % modulus
        inv = inv * values[i] % modulus
    return out


# bureau side ------------------------------------------------------------------------------


class BandComparison:
    """The bureau's side of one band computation: [band] = [#{k: s >= c_k}], up to truncation.

    ``score_ciphertext`` is [s] under the bank's key with the promise score_min <= s <= score_max;
    ``cutoffs`` are integers at the score's scale; ``truncate_bits`` is T (see the module
    docstring for how the band relates to the exact one). One object per application, used
    once: ``masked_request()``, then ``blinded_request(bits_response)``, then
    ``band_ciphertext(final_response)``. The mask and signs it draws never leave it.
    """

    def __init__(
        self,
        public_key: PublicKey,
        dgk_public: DGKPublicKey,
        score_ciphertext: Any,
        cutoffs: Sequence[int],
        score_min: int,
        score_max: int,
        truncate_bits: int,
        kappa: int = DEFAULT_KAPPA,
        *,
        _allow_weak_mask_for_tests: bool = False,
    ) -> None:
        if _allow_weak_mask_for_tests:
            _check_int("kappa", kappa, 0, MAX_KAPPA)
        elif type(kappa) is int and kappa < MIN_KAPPA:
            raise InvalidInputError(
                f"kappa = {kappa} is refused: the mask needs at least {MIN_KAPPA} bits of statistical hiding"
            )
        else:
            _check_int("kappa", kappa, MIN_KAPPA, MAX_KAPPA)
        plan = _plan(score_min, score_max, cutoffs, truncate_bits)
        _check_dgk_room(plan.bits, dgk_public)
        mask_bits = _mask_bits(plan, kappa)
        width = _width_bits(plan, mask_bits)
        if width > public_key.bits - 2:
            raise InvalidInputError(
                f"a {width}-bit masked score (l = {plan.bits}, T = {plan.truncate_bits}, kappa = {kappa}) "
                f"does not fit below n/4 of a {public_key.bits}-bit Paillier key"
            )
        self.public_key = public_key
        self.dgk_public = dgk_public
        self.count = len(plan.thresholds)
        self.kappa = kappa
        self.width_bits = width
        self._plan = plan
        self._score = _paillier_ct(public_key, "score_ciphertext", score_ciphertext)
        self._mask = _draw_mask(mask_bits)
        self._signs: list[int] = []
        self._high_const = 0  # sum_k floor(A_k / 2^l)
        self._high: Any = None
        self._stage = 0

    def __repr__(self) -> str:
        return f"BandComparison(count={len(self._plan.thresholds)}, bits={self._plan.bits}, <masks>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a BandComparison holds its masks and signs and cannot be pickled or copied")

    @property
    def bits(self) -> int:
        """l: the comparison bit length (the bank sends l DGK bits, each group holds l + 1 values)."""
        return self._plan.bits

    @property
    def truncate_bits(self) -> int:
        """T: the low bits the bank drops from z before comparing."""
        return self._plan.truncate_bits

    def _require_stage(self, expected: int, what: str) -> None:
        if self._stage != expected:
            raise PreconditionError(f"{what} called out of order (a BandComparison is used once, in order)")

    def masked_request(self) -> MaskedRequest:
        """Round 1: [z] = [s + C + R], re-randomised."""
        self._require_stage(0, "masked_request()")
        self._stage = 1
        pk = self.public_key
        c = pk.rerandomize(pk.add_plain(self._score, self._plan.offset + self._mask))
        return MaskedRequest(
            ciphertext=int(c),
            count=self.count,
            bits=self.bits,
            truncate_bits=self.truncate_bits,
            width_bits=self.width_bits,
        )

    def blinded_request(self, response: BitsResponse) -> BlindedRequest:
        """Round 2: K groups of l + 1 blinded, re-randomised, shuffled DGK comparison values."""
        if not isinstance(response, BitsResponse):
            raise InvalidInputError(f"expected a BitsResponse, not {type(response).__name__}")
        self._require_stage(1, "blinded_request()")
        l_bits = self.bits
        dgk = self.dgk_public
        enc_bits = _dgk_cts(dgk, "bit_ciphertexts", response.bit_ciphertexts, l_bits)
        high = _paillier_ct(self.public_key, "high", response.high)
        self._stage = 2
        self._high = high
        n = dgk.n
        u = dgk.u
        g = {m: dgk.encrypt_trivial(m) for m in (-1, 0, 1, 2)}  # s_k + alpha_i, and (1 - s_k) / 2
        # Everything that depends only on the bank's bits is shared by the K groups: the
        # inverses [[-b_i]] (one modular inversion for all), and the cubes of [[a XOR b_i]]
        # for a = 0 ([[b_i]]) and a = 1 ([[1 - b_i]] = g [[-b_i]]), which step 3 w_i.
        inv = _batch_invert(enc_bits, n)
        cubes = []
        for b, b_inv in zip(enc_bits, inv, strict=True):
            nb = g[1] * b_inv % n
            cubes.append((b * b % n * b % n, nb * nb % n * nb % n))
        r_trunc = self._mask >> self.truncate_bits  # R'
        low_mask = (1 << l_bits) - 1
        groups: list[tuple[int, ...]] = []
        for gamma in self._plan.thresholds:
            a_k = r_trunc + gamma  # A_k >= 0
            self._high_const += a_k >> l_bits
            alpha = a_k & low_mask
            s = _random_sign()
            self._signs.append(s)
            w3 = gmpy2.mpz(1)  # [[3 w_i]]: starts as [[0]]
            values = []
            for i in range(l_bits - 1, -1, -1):
                a = (alpha >> i) & 1
                values.append(g[s + a] * inv[i] % n * w3 % n)  # [[s + a_i - b_i + 3 w_i]]
                w3 = w3 * cubes[i][a] % n  # += 3 [[a_i XOR b_i]]
            values.append(g[(1 - s) // 2] * w3 % n)  # zero iff s = +1 and alpha = beta
            # Blinding exponents are uniform in Z_u^* (17 bits for u = 65537: about 20
            # multiplications); with a warm pool the re-randomisation is one more.
            rhos = _random_units(len(values), u)
            blinded = [
                int(dgk.rerandomize(gmpy2.powmod(v, rho, n))) for v, rho in zip(values, rhos, strict=True)
            ]
            _shuffle(blinded)
            groups.append(tuple(blinded))
        return BlindedRequest(groups=tuple(groups))

    def band_ciphertext(self, response: FinalResponse) -> int:
        """The re-randomised [band] for the bank: band = #{k: sigma >= gamma_k}."""
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
        c = gmpy2.powmod(self._high, self.count, ns) * plus % ns * gmpy2.invert(minus, ns) % ns
        c = pk.add_plain(c, -self._high_const - n_plus)
        return int(_rerandomize_smudged(pk, c, self.count))


# bank side --------------------------------------------------------------------------------


#: Called with the name of the failed check when the bank finds a deviation.
FaultReport = Callable[[str], None]
#: The checks: z wider than width_bits; a blinded group holding more than one zero.
FAULT_MASKED_RANGE = "masked_range"
FAULT_GROUP_ZEROS = "group_zeros"


def _log_fault(check: str) -> None:
    log.error("band protocol fault: %s", check)


def answer_masked(
    keypair: KeyPair,
    dgk_public: DGKPublicKey,
    request: MaskedRequest,
    *,
    on_fault: FaultReport = _log_fault,
) -> BitsResponse:
    """Round 1 at the bank: decrypt and truncate z, return its low l bits under DGK and [z_h].

    A z wider than ``width_bits`` breaks the bureau's promise. It is never refused: a refusal
    would be a range oracle on whatever the bureau encrypted (with a partial decryption, on the
    bank's secret prime). The bank reports the fault through ``on_fault`` and answers, in the
    normal form, for a uniformly random z of the declared width, so the answer carries no
    information about the decrypted value and nothing the bureau sees depends on the check.
    """
    if not isinstance(request, MaskedRequest):
        raise InvalidInputError(f"expected a MaskedRequest, not {type(request).__name__}")
    pk = keypair.public_key
    _check_int("count", request.count, 1, MAX_COUNT)
    bits = _check_int("bits", request.bits, 1, MAX_BITS)
    _check_dgk_room(bits, dgk_public)
    t = _check_int("truncate_bits", request.truncate_bits, 0, MAX_TRUNCATE_BITS)
    # z' must have room for its l low bits, and z must stay below n/4 so it cannot have wrapped.
    width = _check_int("width_bits", request.width_bits, bits + t + 1, pk.bits - 2)
    ct = _paillier_ct(pk, "ciphertext", request.ciphertext)
    # Always the full decryption: half of CRT (m mod p) would make the range check a test of
    # the bureau's plaintext against the secret prime p.
    z = keypair.secret_key.decrypt(ct)
    decoy = secrets.randbits(width)  # drawn every time: the same work whether or not it is used
    faulted = z >> width != 0
    z = decoy if faulted else z
    if faulted:
        on_fault(FAULT_MASKED_RANGE)
    zt = z >> t
    beta = zt & ((1 << bits) - 1)
    bit_cts = tuple(int(dgk_public.encrypt_bit((beta >> i) & 1)) for i in range(bits))
    return BitsResponse(bit_ciphertexts=bit_cts, high=int(pk.encrypt(zt >> bits)))


def answer_blinded(
    public_key: PublicKey,
    dgk_secret: DGKSecretKey,
    request: BlindedRequest,
    *,
    on_fault: FaultReport = _log_fault,
) -> FinalResponse:
    """Round 2 at the bank: delta_k = 1 iff group k holds an encryption of 0; fresh [delta_k] back.

    An honest bureau's group holds at most one zero; more is reported through ``on_fault``, and
    the answer is formed exactly as usual (the delta ciphertexts are fresh encryptions under the
    bank's own key, so the bureau learns nothing from them either way).
    """
    if not isinstance(request, BlindedRequest):
        raise InvalidInputError(f"expected a BlindedRequest, not {type(request).__name__}")
    seq = _sequence("groups", request.groups)
    count = len(seq)
    if not 1 <= count <= MAX_COUNT:
        raise InvalidInputError(f"groups: {count} groups outside 1..{MAX_COUNT}")
    width = _check_int("group size", len(_sequence("groups[0]", seq[0])), 2, MAX_BITS + 1)
    dgk = dgk_secret.public_key
    _check_dgk_room(width - 1, dgk)
    groups = [_dgk_cts(dgk, f"groups[{k}]", group, width) for k, group in enumerate(seq)]
    # Every value is tested, in one batch: an early exit would time delta_k for the bureau.
    flags = dgk_secret.zero_flags([c for group in groups for c in group])
    zeros = [sum(flags[k * width : (k + 1) * width]) for k in range(count)]
    # encrypt_bit costs the same for 0 and 1 (encrypt(0) skips a multiplication by n).
    deltas = tuple(int(public_key.encrypt_bit(int(z > 0))) for z in zeros)
    if max(zeros) > 1:
        on_fault(FAULT_GROUP_ZEROS)
    return FinalResponse(deltas=deltas)


def run_band_protocol(
    keypair: KeyPair,
    dgk_keypair: DGKKeyPair,
    score_ciphertext: Any,
    cutoffs: Sequence[int],
    score_min: int,
    score_max: int,
    truncate_bits: int,
    kappa: int = DEFAULT_KAPPA,
) -> int:
    """Both sides in one process (tests, benchmarks): returns the [band] ciphertext."""
    bureau = BandComparison(
        keypair.public_key,
        dgk_keypair.public_key,
        score_ciphertext,
        cutoffs,
        score_min,
        score_max,
        truncate_bits,
        kappa,
    )
    bits_resp = answer_masked(keypair, dgk_keypair.public_key, bureau.masked_request())
    final = answer_blinded(keypair.public_key, dgk_keypair.secret_key, bureau.blinded_request(bits_resp))
    return bureau.band_ciphertext(final)
