"""DGK (Damgard-Geisler-Kroigaard) keys and ciphertext recipes for the secure comparison protocol.

No maintained Python library offers DGK, so this module is hand-written on gmpy2 and ``secrets``.

The scheme (DGK, ACISP 2007, and its published correction). n = p q with

    p - 1 = 2 u v_p r_p,    q - 1 = 2 u v_q r_q,

u a small public prime (the plaintext space Z_u), v_p and v_q secret t-bit primes, and r_p, r_q
random cofactors coprime to u v_p v_q. g has order u v_p v_q and h has order v_p v_q. A plaintext
m in Z_u encrypts as

    c = g^m h^r mod n,    r uniform of 2.5 t bits.

2.5 t bits (rather than 2 t) make h^r statistically close to uniform in <h>, whose order
v_p v_q has 2 t bits: the distance is below 2^-(t/2). Hence a re-randomised
ciphertext is a fresh encryption even in the eyes of the key holder, which the comparison
protocol relies on.

Fresh randomness h^r is the one expensive step of encryption and re-randomisation (a 2.5 t-bit
exponent: about 70 multiplications with the fixed-base table). Each (n, h) keeps a pool of
precomputed values (:data:`POOL_CAPACITY`) that a daemon thread fills from idle CPU only, so on
the request path an encryption or re-randomisation is one multiplication; a dry pool falls back
to computing inline. :meth:`DGKPublicKey.warm` fills it synchronously. Pools and tables are
process-local caches: they are never pickled, and a forked child starts with empty pools (see
:class:`blindscore.crypto.pools.RandomnessPool`), so parent and child never share an h^r.

The secret key needs no full decryption: since h^(v_p) = 1 mod p and g^(v_p) has order u mod p,
c^(v_p) mod p = 1 exactly when m = 0 mod u. ``decrypt`` (a baby-step giant-step search in the
order-u group, about 2 sqrt(u) multiplications) exists for tests and audits.

Parameters: n of 2048 bits (less is refused without ``allow_insecure_for_tests``), u = 65537
(the comparison needs values up to 3 (l + 1) + 2 for l <= 256 to fit), t = 224 by default and
at least. Security caveat: h mod p has the t-bit prime order v_p, so a generic square-root search
for a multiple x of v_p (baby steps h^j, giant steps, collisions modulo the unknown p found with
polynomial evaluation and gcd(h^x - 1, n)) factors n in about 2^(t/2) work. t = 224 matches the
112-bit security of a 2048-bit modulus, so it is both the default and the floor: keys with a
smaller t (t = 160, about 80-bit security, is a common default elsewhere) are refused on
generation and on load.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import gmpy2

from blindscore.crypto._secret import KeyIdentity, Unexportable, fingerprint
from blindscore.crypto._wire import pack_fixed, split_fixed
from blindscore.crypto.keyfile import KeyPairFiles
from blindscore.crypto.paillier import FixedBaseTable
from blindscore.crypto.pools import RandomnessPool
from blindscore.errors import CryptoError, InvalidInputError, KeySizeError

MIN_KEY_BITS = 2048
ALLOWED_KEY_BITS = (2048, 3072, 4096)
# t = 224: square-root attacks on the v_p subgroup then cost 2^112, matching a 2048-bit modulus.
DEFAULT_T_BITS = 224
MIN_T_BITS = 224
MAX_T_BITS = 512
DEFAULT_U = 65537
FORMAT_VERSION = 1
_FP_DOMAIN = b"blindscore/dgk/public-key/v1"
_MR_ROUNDS = 30
_MPZ = type(gmpy2.mpz(0))
#: Precomputed h^r values kept per (n, h): 16384 of them are 4 MiB at 2048 bits, the randomness of
#: about 150 band computations (K = 4, l = 27) before the pool runs dry.
POOL_CAPACITY = 16384
_LOCK = threading.Lock()


class _Randomness:
    """h^r for fresh r of r_bits bits: a fixed-base table and a pool of precomputed values.

    Shared by every DGKPublicKey object with the same (n, h, r_bits), so a key loaded or
    unpickled twice does not build a second 4.6 MB table or start a second filling thread. The
    pool holds no reference to a key object.
    """

    __slots__ = ("pool", "r_bits", "table")

    def __init__(self, h: Any, n: Any, r_bits: int) -> None:
        self.table = FixedBaseTable(h, n, r_bits)
        self.r_bits = r_bits
        self.pool = RandomnessPool(self.fresh, POOL_CAPACITY, name="dgk-randomness")

    def fresh(self) -> Any:
        return self.table.pow(secrets.randbits(self.r_bits))


_RANDOMNESS: dict[tuple[int, int, int], _Randomness] = {}


_ZERO_TEST_THREADS = max(1, min(4, os.cpu_count() or 1))
_ZERO_POOL: ThreadPoolExecutor | None = None


def _zero_test_pool() -> ThreadPoolExecutor:
    global _ZERO_POOL
    if _ZERO_POOL is None:
        with _LOCK:
            if _ZERO_POOL is None:
                _ZERO_POOL = ThreadPoolExecutor(_ZERO_TEST_THREADS, thread_name_prefix="dgk-zero-test")
    return _ZERO_POOL


def _powmods(bases: list[Any], exponent: Any, modulus: Any) -> list[Any]:
    context = gmpy2.get_context()  # thread-local: allow this worker to release the GIL
    context.allow_release_gil = True
    return list(gmpy2.powmod_base_list(bases, exponent, modulus)) if bases else []


def _after_fork_in_child() -> None:
    # Only the forking thread survives a fork; the lock may have been held by another thread.
    # (The pools restart their own filling threads: see blindscore.crypto.pools.)
    global _LOCK, _ZERO_POOL
    _LOCK = threading.Lock()
    _ZERO_POOL = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def _randomness_for(n: Any, h: Any, r_bits: int) -> _Randomness:
    key = (int(n), int(h), r_bits)
    with _LOCK:
        found = _RANDOMNESS.get(key)
        if found is None:
            found = _RANDOMNESS[key] = _Randomness(h, n, r_bits)
        return found


def _randomness_bits(t: int) -> int:
    return (5 * t + 1) // 2  # ceil(2.5 t)


class DGKPublicKey(KeyIdentity):
    """A DGK public key (n, g, h, u, t) with its fingerprint; all DGK ciphertext recipes live here."""

    _key_id_prefix = "dgk-"

    def __init__(
        self,
        n: int,
        g: int,
        h: int,
        u: int,
        t: int,
        *,
        _min_bits: int = MIN_KEY_BITS,
        _min_t: int = MIN_T_BITS,
    ) -> None:
        self.n = gmpy2.mpz(n)
        self.g = gmpy2.mpz(g)
        self.h = gmpy2.mpz(h)
        self.u = int(u)
        self.t = int(t)
        self.bits = int(self.n.bit_length())
        if self.bits < _min_bits:
            raise KeySizeError(f"DGK modulus has {self.bits} bits; at least {MIN_KEY_BITS} required")
        if not _min_t <= self.t <= MAX_T_BITS:
            raise KeySizeError(_t_refusal(self.t))
        if not 3 <= self.u < 1 << 32 or not gmpy2.is_prime(self.u):
            raise InvalidInputError(f"DGK plaintext modulus u={self.u} is not a prime below 2^32")
        for name, x in (("g", self.g), ("h", self.h)):
            if not 1 < x < self.n or gmpy2.gcd(x, self.n) != 1:
                raise InvalidInputError(f"DGK public key: {name} is not a unit modulo n")
        self.ciphertext_bytes = (self.bits + 7) // 8
        self.r_bits = _randomness_bits(self.t)
        self._randomness: _Randomness | None = None
        self._g_table: FixedBaseTable | None = None
        self._bit_bases: tuple[Any, Any] | None = None
        self._fingerprint = fingerprint(_FP_DOMAIN, self.n, self.g, self.h, self.u, self.t)

    def __repr__(self) -> str:
        return f"DGKPublicKey(bits={self.bits}, u={self.u}, t={self.t}, key_id={self.key_id})"

    def __getstate__(self) -> dict[str, Any]:
        # Tables and the randomness pool are caches (and a pool owns a thread): never pickled.
        return {"n": int(self.n), "g": int(self.g), "h": int(self.h), "u": self.u, "t": self.t}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["n"], state["g"], state["h"], state["u"], state["t"], _min_bits=0, _min_t=1
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "kind": "dgk-public",
            "n": hex(self.n),
            "g": hex(self.g),
            "h": hex(self.h),
            "u": self.u,
            "t": self.t,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DGKPublicKey:
        if not isinstance(d, dict) or d.get("format") != FORMAT_VERSION or d.get("kind") != "dgk-public":
            raise InvalidInputError("not a blindscore DGK public key (format 1)")
        try:
            n, g, h = (int(d[k], 16) for k in ("n", "g", "h"))
            u, t = d["u"], d["t"]
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"DGK public key: malformed field ({exc})") from exc
        if type(u) is not int or type(t) is not int:
            raise InvalidInputError("DGK public key: u and t must be integers")
        return cls(n, g, h, u, t)

    # encryption ---------------------------------------------------------------------------
    def _rand(self) -> _Randomness:
        found = self._randomness
        if found is None:
            found = self._randomness = _randomness_for(self.n, self.h, self.r_bits)
        return found

    def _h_pow(self, r: int) -> Any:
        return self._rand().table.pow(r)

    def _fresh_h(self) -> Any:
        """h^r for a fresh uniform r of r_bits bits: one pool value, or computed now if the pool is dry."""
        return self._rand().pool.take()

    def warm(self, count: int | None = None) -> None:
        """Precompute ``count`` h^r values now (default: the pool's capacity, POOL_CAPACITY).

        For servers before they take traffic and for benchmarks; otherwise a daemon thread
        starts filling the pool on first use and tops it up after every draw.
        """
        self._rand().pool.warm(count)

    @property
    def pooled_randomness(self) -> int:
        """How many precomputed h^r values are ready (0 before the first use of this key)."""
        found = self._randomness or _RANDOMNESS.get((int(self.n), int(self.h), self.r_bits))
        return 0 if found is None else len(found.pool)

    def plaintext(self, m: int) -> int:
        """Map a signed integer with |m| < u into Z_u; anything larger would silently wrap."""
        if not -self.u < m < self.u:
            raise InvalidInputError(f"DGK plaintext {m} outside (-u, u) with u = {self.u}")
        return int(m) % self.u

    def encrypt_trivial(self, m: int) -> Any:
        """g^m: an encryption with randomness 0, only for terms folded into a random one."""
        if self._g_table is None:
            with _LOCK:
                if self._g_table is None:
                    self._g_table = FixedBaseTable(self.g, self.n, self.u.bit_length())
        return self._g_table.pow(self.plaintext(m))

    def _encrypt_with(self, m: int, r: int) -> Any:
        """g^m h^r for a given r; public only to pin regression vectors in tests."""
        return self.encrypt_trivial(m) * self._h_pow(r) % self.n

    def encrypt(self, m: int) -> Any:
        """Encrypt a signed integer m with |m| < u."""
        return self.encrypt_trivial(m) * self._fresh_h() % self.n

    def encrypt_bit(self, b: int) -> Any:
        """Encrypt a bit with the same sequence of operations for 0 and 1.

        0 is encoded as g^u (a non-trivial element of <h>, since g has order u v_p v_q) rather
        than 1, so both bits go through the same full-size operations (gmpy2 itself is not
        constant-time, so this narrows a timing channel rather than closing it). With a warm
        pool this is one multiplication.
        """
        if b not in (0, 1):
            raise InvalidInputError(f"encrypt_bit takes 0 or 1, not {b!r}")
        if self._bit_bases is None:
            self._bit_bases = (gmpy2.powmod(self.g, self.u, self.n), self.g)
        return self._bit_bases[b] * self._fresh_h() % self.n

    def rerandomize(self, c: Any) -> Any:
        """Fresh randomness on c; statistically hiding even against the key holder (r is 2.5 t bits)."""
        return c * self._fresh_h() % self.n

    # homomorphic operations ---------------------------------------------------------------
    def add(self, a: Any, b: Any) -> Any:
        return a * b % self.n

    def neg(self, c: Any) -> Any:
        return gmpy2.invert(c, self.n)

    def sub(self, a: Any, b: Any) -> Any:
        return a * gmpy2.invert(b, self.n) % self.n

    def add_plain(self, c: Any, m: int) -> Any:
        return c * self.encrypt_trivial(m) % self.n

    def mul_plain(self, c: Any, k: int) -> Any:
        """[k m] from [m]; k is reduced mod u, which leaves the plaintext product unchanged."""
        return gmpy2.powmod(c, int(k) % self.u, self.n)

    # wire ---------------------------------------------------------------------------------
    def validate(self, c: Any) -> Any:
        """Check that c is a unit modulo n: 0 < c < n and gcd(c, n) = 1."""
        if type(c) is not int and not isinstance(c, _MPZ):
            raise InvalidInputError(f"DGK ciphertext must be an integer, not {type(c).__name__}")
        c = gmpy2.mpz(c)
        if not 0 < c < self.n or gmpy2.gcd(c, self.n) != 1:
            raise InvalidInputError("DGK ciphertext is not a unit modulo n of this key")
        return c

    def validate_many(self, ciphertexts: Sequence[Any]) -> list[Any]:
        """:meth:`validate` for a batch, with one gcd for all of them.

        The product of the values modulo n is a unit exactly when every value is (a value
        divisible by p makes the product divisible by p), so a batch costs one multiplication
        per value and a single gcd. On failure the first offending value is named.
        """
        n = self.n
        out = []
        product = gmpy2.mpz(1)
        for i, c in enumerate(ciphertexts):
            if type(c) is not int and not isinstance(c, _MPZ):
                raise InvalidInputError(f"DGK ciphertext {i} must be an integer, not {type(c).__name__}")
            c = gmpy2.mpz(c)
            if not 0 < c < n:
                raise InvalidInputError(f"DGK ciphertext {i} is not a unit modulo n of this key")
            product = product * c % n
            out.append(c)
        if gmpy2.gcd(product, n) != 1:
            bad = next(i for i, c in enumerate(out) if gmpy2.gcd(c, n) != 1)
            raise InvalidInputError(f"DGK ciphertext {bad} is not a unit modulo n of this key")
        return out

    def pack(self, ciphertexts: Sequence[Any]) -> bytes:
        """Concatenate ciphertexts as fixed-width big-endian integers."""
        return pack_fixed(ciphertexts, self.ciphertext_bytes)

    def unpack(self, data: bytes, count: int | None = None) -> list[Any]:
        """Split and validate a packed DGK ciphertext array; count, when given, must match."""
        return self.validate_many(split_fixed(data, self.ciphertext_bytes, count, "DGK ciphertext"))


class DGKSecretKey(Unexportable):
    """The DGK secret key (p, q, v_p, v_q). It cannot be printed, logged, pickled or copied."""

    __slots__ = ("_bsgs", "_gvp", "_p", "_q", "_vp", "_vq", "public_key")
    _save_hint = "use save_dgk_keypair() to persist it"

    def __init__(self, public_key: DGKPublicKey, p: int, q: int, vp: int, vq: int) -> None:
        pk = public_key
        p, q, vp, vq = (gmpy2.mpz(x) for x in (p, q, vp, vq))
        u = pk.u
        # Check every property the zero test depends on, so a corrupted key file fails loudly
        # here instead of giving wrong comparison results later.
        if p * q != pk.n or p == q:
            raise CryptoError("DGK secret key does not match the public key")
        if (p - 1) % (u * vp) or (q - 1) % (u * vq):
            raise CryptoError("DGK secret key: u v_p does not divide p - 1 (or u v_q, q - 1)")
        if gmpy2.powmod(pk.h, vp, p) != 1 or gmpy2.powmod(pk.h, vq, q) != 1:
            raise CryptoError("DGK secret key: h is not in the order-v_p v_q subgroup")
        gvp = gmpy2.powmod(pk.g, vp, p)
        if gvp == 1 or gmpy2.powmod(gvp, u, p) != 1:
            raise CryptoError("DGK secret key: g^(v_p) does not have order u modulo p")
        self.public_key = pk
        self._p, self._q, self._vp, self._vq = p, q, vp, vq
        self._gvp = gvp
        self._bsgs: tuple[dict[Any, int], Any, int] | None = None

    def is_zero(self, c: Any) -> bool:
        """True when c encrypts 0 mod u: c^(v_p) = 1 mod p."""
        p = self._p
        return bool(gmpy2.powmod(gmpy2.mpz(c) % p, self._vp, p) == 1)

    def zero_flags(self, ciphertexts: Sequence[Any]) -> list[bool]:
        """:meth:`is_zero` for a batch, on every core.

        The zero tests are most of the bank's round 2. gmpy2's powmod_base_list releases the
        GIL when the thread's context allows it, so two threads really run on two cores.
        """
        p = self._p
        bases = [gmpy2.mpz(c) % p for c in ciphertexts]
        chunks = [bases[i::_ZERO_TEST_THREADS] for i in range(_ZERO_TEST_THREADS)]
        results = list(_zero_test_pool().map(lambda chunk: _powmods(chunk, self._vp, p), chunks))
        flags: list[bool] = [False] * len(bases)
        for i, chunk_result in enumerate(results):
            for j, value in enumerate(chunk_result):
                flags[i + j * _ZERO_TEST_THREADS] = value == 1
        return flags

    def decrypt(self, c: Any) -> int:
        """Full decryption to [0, u) by baby-step giant-step; the protocol itself only zero-tests."""
        p = self._p
        if self._bsgs is None:
            step = gmpy2.isqrt(self.public_key.u) + 1
            baby: dict[Any, int] = {}
            x = gmpy2.mpz(1)
            for k in range(int(step)):
                baby[x] = k
                x = x * self._gvp % p
            self._bsgs = (baby, gmpy2.invert(x, p), int(step))  # x = gvp^step
        baby, giant, step = self._bsgs
        y = gmpy2.powmod(gmpy2.mpz(c) % p, self._vp, p)
        for i in range(step + 1):
            found = baby.get(y)
            if found is not None:
                return (i * step + found) % self.public_key.u
            y = y * giant % p
        raise CryptoError("DGK ciphertext does not decrypt: not in the subgroup generated by g and h")

    def _export(self) -> dict[str, Any]:
        return DGK_KEY_FILES.document(self.public_key, (self._p, self._q, self._vp, self._vq))


@dataclass(frozen=True, repr=False)
class DGKKeyPair:
    public_key: DGKPublicKey
    secret_key: DGKSecretKey

    def __repr__(self) -> str:
        return f"DGKKeyPair(key_id={self.public_key.key_id})"


# key generation ---------------------------------------------------------------------------


def check_dgk_key_bits(bits: int, t_bits: int, *, allow_insecure_for_tests: bool = False) -> None:
    """Refuse key sizes below the 2048-bit floor (and t below 224) unless a test says otherwise."""
    if allow_insecure_for_tests:
        # Small keys are still required to have room for the random cofactor r_p.
        if bits < 128 or t_bits < 8 or bits // 2 - t_bits - DEFAULT_U.bit_length() - 1 < 16:
            raise KeySizeError(f"no room for a DGK key with {bits}-bit n and t = {t_bits}")
        return
    if bits < MIN_KEY_BITS:
        raise KeySizeError(f"{bits}-bit DGK keys are refused: at least {MIN_KEY_BITS} bits are required")
    if bits not in ALLOWED_KEY_BITS:
        raise KeySizeError(f"DGK key size must be one of {ALLOWED_KEY_BITS}, not {bits}")
    if not MIN_T_BITS <= t_bits <= MAX_T_BITS:
        raise KeySizeError(_t_refusal(t_bits))


def _t_refusal(t: int) -> str:
    if t < MIN_T_BITS:
        return (
            f"DGK subgroup order of t={t} bits is refused: at least t={MIN_T_BITS} bits are required "
            f"(a t-bit subgroup gives about t/2-bit security; {MIN_T_BITS} matches a 2048-bit modulus)"
        )
    return f"DGK subgroup order of t={t} bits is refused: at most t={MAX_T_BITS} bits are allowed"


def _random_prime(bits: int) -> Any:
    # Uniform candidates tested one by one (not next_prime, whose output favours primes after
    # long gaps).
    while True:
        c = gmpy2.mpz(secrets.randbits(bits) | (1 << (bits - 1)) | 1)
        if gmpy2.is_prime(c, _MR_ROUNDS):
            return c


def _structured_prime(bits: int, u: int, v: Any, avoid: Any) -> Any:
    """A prime p = 2 u v r + 1 of exactly ``bits`` bits with the top two bits set.

    The top two bits make n = p q exactly 2 * bits long. r is drawn coprime to ``avoid`` so that
    the subgroups of order u, v_p and v_q are the unique ones of those orders.
    """
    m = 2 * u * v
    lo = ((3 << (bits - 2)) - 1 + m - 1) // m  # smallest r with m r + 1 >= 3 * 2^(bits-2)
    hi = ((1 << bits) - 2) // m  # largest r with m r + 1 < 2^bits
    if hi <= lo:
        raise KeySizeError(f"no room for a {bits}-bit DGK prime with these subgroup sizes")
    while True:
        r = lo + gmpy2.mpz(secrets.randbelow(int(hi - lo + 1)))
        if gmpy2.gcd(r, avoid) != 1:
            continue
        p = m * r + 1
        if gmpy2.is_prime(p, _MR_ROUNDS):
            return p


def _element_of_order(p: Any, order: Any, prime_factors: Sequence[Any]) -> Any:
    """A uniformly random element of exact order ``order`` (a product of distinct primes) mod p."""
    cofactor = (p - 1) // order
    while True:
        y = gmpy2.powmod(gmpy2.mpz(secrets.randbelow(int(p) - 3) + 2), cofactor, p)
        if all(gmpy2.powmod(y, order // f, p) != 1 for f in prime_factors):
            return y


def _crt(ap: Any, p: Any, aq: Any, q: Any) -> Any:
    return ap + p * ((aq - ap) * gmpy2.invert(p, q) % q)


def generate_dgk_keypair(
    bits: int = 2048, *, t_bits: int = DEFAULT_T_BITS, allow_insecure_for_tests: bool = False
) -> DGKKeyPair:
    """Generate a DGK key pair with u = 65537; sizes below 2048 bits (or t < 224) are refused.

    Primes come from ``secrets`` candidates and gmpy2's BPSW + Miller-Rabin test; a 2048-bit key
    takes a fraction of a second. ``allow_insecure_for_tests`` admits small keys for tests that
    say so; nothing else may set it.
    """
    check_dgk_key_bits(bits, t_bits, allow_insecure_for_tests=allow_insecure_for_tests)
    u = DEFAULT_U
    half = bits // 2
    while True:
        vp = _random_prime(t_bits)
        vq = _random_prime(t_bits)
        if vp == vq:
            continue
        avoid = u * vp * vq
        p = _structured_prime(half, u, vp, avoid)
        q = _structured_prime(bits - half, u, vq, avoid)
        if p != q and (p * q).bit_length() == bits:
            break
    n = p * q
    g = _crt(_element_of_order(p, u * vp, (u, vp)), p, _element_of_order(q, u * vq, (u, vq)), q)
    h = _crt(_element_of_order(p, vp, (vp,)), p, _element_of_order(q, vq, (vq,)), q)
    public = DGKPublicKey(
        n,
        g,
        h,
        u,
        t_bits,
        _min_bits=0 if allow_insecure_for_tests else MIN_KEY_BITS,
        _min_t=1 if allow_insecure_for_tests else MIN_T_BITS,
    )
    return DGKKeyPair(public, DGKSecretKey(public, p, q, vp, vq))


# persistence ------------------------------------------------------------------------------

DGK_PUBLIC_FILE = "dgk_public.json"
DGK_SECRET_FILE = "dgk_secret.json"
DGK_KEY_FILES: KeyPairFiles[DGKPublicKey, DGKKeyPair] = KeyPairFiles(
    name="DGK",
    public_file=DGK_PUBLIC_FILE,
    secret_file=DGK_SECRET_FILE,
    kind="dgk-secret",
    fields=("p", "q", "vp", "vq"),
    public_from_dict=DGKPublicKey.from_dict,
    make_pair=lambda public, pqv: DGKKeyPair(public, DGKSecretKey(public, *pqv)),
    generate=generate_dgk_keypair,
    format=FORMAT_VERSION,
)
save_dgk_keypair = DGK_KEY_FILES.save
load_dgk_keypair = DGK_KEY_FILES.load
load_or_generate_dgk_keypair = DGK_KEY_FILES.load_or_generate
