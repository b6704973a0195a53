"""DGK (blindscore.crypto.dgk) at its edges: generated keys' structure, plaintext addition, the fork hook."""

from __future__ import annotations

import threading

import gmpy2
import pytest

from blindscore.crypto import dgk
from blindscore.crypto.dgk import DEFAULT_U, DGKKeyPair, generate_dgk_keypair
from blindscore.errors import CryptoError, InvalidInputError, KeySizeError


def check_structure(pair: DGKKeyPair, bits: int, t: int) -> None:
    """Everything the module docstring promises of a key: n = p q of ``bits`` bits, p - 1 = 2 u v_p r_p
    with the top two bits of p set, t-bit primes v_p != v_q, r_p coprime to u v_p v_q, g of order
    u v_p mod p and h of order v_p mod p (the same for q)."""
    pk = pair.public_key
    secret = pair.secret_key._export()
    p, q, vp, vq = (gmpy2.mpz(int(secret[k], 16)) for k in ("p", "q", "vp", "vq"))
    u = pk.u
    assert u == DEFAULT_U == 65537
    assert (pk.bits, pk.t) == (bits, t)
    assert p * q == pk.n and pk.n.bit_length() == bits
    assert vp != vq
    for prime, v, size in ((p, vp, bits // 2), (q, vq, bits - bits // 2)):
        assert gmpy2.is_prime(prime) and gmpy2.is_prime(v)
        assert v.bit_length() == t
        assert prime.bit_length() == size and prime >> (size - 2) == 3
        assert (prime - 1) % (2 * u * v) == 0
        assert gmpy2.gcd((prime - 1) // (2 * u * v), u * vp * vq) == 1
        g, h = pk.g % prime, pk.h % prime
        assert gmpy2.powmod(g, u * v, prime) == 1
        assert gmpy2.powmod(g, u, prime) != 1 and gmpy2.powmod(g, v, prime) != 1
        assert gmpy2.powmod(h, v, prime) == 1 and h != 1


def test_the_session_key_has_the_documented_structure(dgk_keypair: DGKKeyPair) -> None:
    check_structure(dgk_keypair, 2048, 224)


@pytest.mark.parametrize(("bits", "t"), [(256, 16), (257, 16), (300, 24), (384, 40)])
def test_small_keys_have_the_documented_structure(bits: int, t: int) -> None:
    for _ in range(3):
        check_structure(generate_dgk_keypair(bits, t_bits=t, allow_insecure_for_tests=True), bits, t)


@pytest.mark.parametrize(
    ("m", "k", "total"), [(5, 7, 12), (300, -45, 255), (0, 65536, 65536), (2, -3, 65536)]
)
def test_adding_a_plaintext_adds_modulo_u(dgk_keypair: DGKKeyPair, m: int, k: int, total: int) -> None:
    pk, sk = dgk_keypair.public_key, dgk_keypair.secret_key
    c = pk.add_plain(pk.encrypt(m), k)
    assert isinstance(c, type(gmpy2.mpz(0))) and 0 < c < pk.n
    assert sk.decrypt(c) == total


def test_the_fork_hook_gives_the_child_a_free_lock_and_no_zero_test_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the at-fork hook does in a child, run here: a lock some other thread held at the fork
    (no such thread in the child) is replaced, and the zero tests start a pool of their own."""
    held = threading.Lock()
    held.acquire()
    monkeypatch.setattr(dgk, "_LOCK", held)
    monkeypatch.setattr(dgk, "_ZERO_POOL", object())
    dgk._after_fork_in_child()
    assert dgk._ZERO_POOL is None
    assert dgk._LOCK is not held and dgk._LOCK.acquire(blocking=False)
    dgk._LOCK.release()


def test_random_primes_have_the_bits_asked_for_and_both_residues_mod_4() -> None:
    """v_p and v_q are drawn uniformly from the t-bit primes: each has exactly t bits, and primes
    1 and 3 mod 4 both come up (a fixed low bit would halve the choice; 64 draws miss one residue
    with probability 2^-63)."""
    primes = [dgk._random_prime(24) for _ in range(64)]
    assert all(gmpy2.is_prime(v) and v.bit_length() == 24 for v in primes)
    assert {int(v) % 4 for v in primes} == {1, 3}


def test_the_dgk_randomness_filler_is_named_for_thread_listings() -> None:
    """A key of its own: the randomness of a key (n, h) is made once per process and then shared."""
    pair = generate_dgk_keypair(256, t_bits=16, allow_insecure_for_tests=True)
    assert pair.public_key._rand().pool.name == "dgk-randomness"


def test_structured_primes_have_the_documented_form() -> None:
    """p = 2 u v r + 1 prime, of exactly the bits asked for with the top two set, r coprime to
    ``avoid`` (here with the factor 5, which a fifth of the candidates share, so they are drawn
    again); and r is drawn, not built: r = 0 and r != 0 mod 3 both come up (with u = 65537 and
    v = 65521, p is prime only for r = 0 or 1 mod 3, about half each; 40 draws miss one with
    probability about 2^-39)."""
    u, v, other = 65537, 65521, 5
    avoid = u * v * other
    cofactors = []
    for _ in range(40):
        p = dgk._structured_prime(64, u, v, avoid)
        assert gmpy2.is_prime(p) and p.bit_length() == 64 and p >> 62 == 3
        assert (p - 1) % (2 * u * v) == 0
        r = (p - 1) // (2 * u * v)
        assert gmpy2.gcd(r, avoid) == 1
        cofactors.append(int(r))
    assert {r % 3 == 0 for r in cofactors} == {True, False}


def test_a_size_without_room_for_the_top_two_bits_is_refused() -> None:
    """26 bits, u = 65537, v = 313: 2 u v + 1 = 41026163 is prime but below 3 * 2^24, and 2 u v 2 + 1
    is above 2^26, so no r gives a 26-bit prime with its top two bits set."""
    with pytest.raises(KeySizeError) as caught:
        dgk._structured_prime(26, 65537, 313, 65537 * 313)
    assert str(caught.value) == "no room for a 26-bit DGK prime with these subgroup sizes"


def test_elements_have_exactly_the_order_asked_for() -> None:
    """Modulo 7, the elements of order 3 are 2 and 4 (1 has order 1): 1 is never returned, and
    both come up (200 draws miss one with probability about 2^-199)."""
    drawn = {int(dgk._element_of_order(gmpy2.mpz(7), 3, (3,))) for _ in range(200)}
    assert drawn == {2, 4}


def test_equal_subgroup_primes_are_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = iter([65521, 65521, 65521, 65519])
    monkeypatch.setattr(dgk, "_random_prime", lambda bits: gmpy2.mpz(next(drawn)))
    pair = generate_dgk_keypair(256, t_bits=16, allow_insecure_for_tests=True)
    secret = pair.secret_key._export()
    assert (int(secret["vp"], 16), int(secret["vq"], 16)) == (65521, 65519)
    check_structure(pair, 256, 16)


def test_the_default_key_is_2048_bits_with_t_224() -> None:
    pk = generate_dgk_keypair().public_key
    assert (pk.bits, pk.t, pk.u) == (2048, 224, 65537)


# ---------------------------------------------------------------- sizes and refusals, whole texts


@pytest.mark.parametrize(
    ("bits", "t", "message"),
    [
        (127, 8, "no room for a DGK key with 127-bit n and t = 8"),
        (256, 7, "no room for a DGK key with 256-bit n and t = 7"),
        (256, 95, "no room for a DGK key with 256-bit n and t = 95"),  # 128 - 95 - 18 = 15 bits for r
    ],
)
def test_insecure_sizes_without_room_are_refused(bits: int, t: int, message: str) -> None:
    with pytest.raises(KeySizeError) as caught:
        dgk.check_dgk_key_bits(bits, t, allow_insecure_for_tests=True)
    assert str(caught.value) == message


@pytest.mark.parametrize(("bits", "t"), [(128, 8), (256, 94), (2048, 224)])
def test_insecure_sizes_at_the_edge_are_accepted(bits: int, t: int) -> None:
    dgk.check_dgk_key_bits(bits, t, allow_insecure_for_tests=True)  # 256 - 94: exactly 16 bits for r


@pytest.mark.parametrize(
    ("bits", "t", "message"),
    [
        (1024, 224, "1024-bit DGK keys are refused: at least 2048 bits are required"),
        (2560, 224, "DGK key size must be one of (2048, 3072, 4096), not 2560"),
        (2048, 513, "DGK subgroup order of t=513 bits is refused: at most t=512 bits are allowed"),
    ],
)
def test_key_sizes_are_refused_with_the_whole_text(bits: int, t: int, message: str) -> None:
    with pytest.raises(KeySizeError) as caught:
        dgk.check_dgk_key_bits(bits, t)
    assert str(caught.value) == message


def test_the_largest_t_is_accepted(dgk_keypair: DGKKeyPair) -> None:
    dgk.check_dgk_key_bits(4096, 512)
    pk = dgk_keypair.public_key
    assert dgk.DGKPublicKey(pk.n, pk.g, pk.h, pk.u, 512).t == 512


def test_a_public_key_made_anew_has_256_byte_ciphertexts(dgk_keypair: DGKKeyPair) -> None:
    pk = dgk.DGKPublicKey.from_dict(dgk_keypair.public_key.to_dict())
    assert pk.ciphertext_bytes == 256


def test_public_key_refusals_name_what_is_wrong(dgk_keypair: DGKKeyPair) -> None:
    pk = dgk_keypair.public_key
    n, g, h = int(pk.n), int(pk.g), int(pk.h)
    cases = [
        (
            (n >> 1, g >> 1, h >> 1, 65537, 224),
            KeySizeError,
            "DGK modulus has 2047 bits; at least 2048 required",
        ),
        (
            (n, g, h, 4294967311, 224),
            InvalidInputError,
            "DGK plaintext modulus u=4294967311 is not a prime below 2^32",
        ),
        ((n, 1, h, 65537, 224), InvalidInputError, "DGK public key: g is not a unit modulo n"),
        ((n, g, 1, 65537, 224), InvalidInputError, "DGK public key: h is not a unit modulo n"),
    ]
    for args, kind, message in cases:
        with pytest.raises(kind) as caught:
            dgk.DGKPublicKey(*args)
        assert str(caught.value) == message
    # The edges that are allowed: u = 3 and the largest prime below 2^32, g = 2.
    assert dgk.DGKPublicKey(n, g, h, 3, 224).u == 3
    assert dgk.DGKPublicKey(n, g, h, 4294967291, 224).u == 4294967291
    assert dgk.DGKPublicKey(n, 2, h, 65537, 224).g == 2


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"format": 2, "kind": "dgk-public"}, "not a blindscore DGK public key (format 1)"),
        ({"format": 1, "kind": "dgk-public", "g": "0x2"}, "DGK public key: malformed field ('n')"),
        (
            {"format": 1, "kind": "dgk-public", "n": "0x7", "g": "0x2", "h": "0x3", "u": "3", "t": 8},
            "DGK public key: u and t must be integers",
        ),
    ],
)
def test_public_key_documents_are_refused_with_the_whole_text(
    document: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        dgk.DGKPublicKey.from_dict(document)
    assert str(caught.value) == message


def test_secret_key_refusals_name_the_broken_property(dgk_keypair: DGKKeyPair) -> None:
    """Each check of a secret key against its public key, broken alone, with its whole text: a wrong
    factor; a v_p that does not divide p - 1 (q still fine); h of the wrong order modulo p only
    (h = g there); g with g^(v_p) = 1 modulo p (g = h there)."""
    pk = dgk_keypair.public_key
    secret = dgk_keypair.secret_key._export()
    p, q, vp, vq = (gmpy2.mpz(int(secret[k], 16)) for k in ("p", "q", "vp", "vq"))

    def crt(at_p: object, at_q: object) -> object:
        return dgk._crt(gmpy2.mpz(at_p) % p, p, gmpy2.mpz(at_q) % q, q)

    cases = [
        (pk, (p, q + 2, vp, vq), "DGK secret key does not match the public key"),
        (pk, (p, q, vq, vq), "DGK secret key: u v_p does not divide p - 1 (or u v_q, q - 1)"),
        (
            dgk.DGKPublicKey(pk.n, pk.g, crt(pk.g, pk.h), pk.u, pk.t),
            (p, q, vp, vq),
            "DGK secret key: h is not in the order-v_p v_q subgroup",
        ),
        (
            dgk.DGKPublicKey(pk.n, crt(pk.h, pk.g), pk.h, pk.u, pk.t),
            (p, q, vp, vq),
            "DGK secret key: g^(v_p) does not have order u modulo p",
        ),
    ]
    for public, factors, message in cases:
        with pytest.raises(CryptoError) as caught:
            dgk.DGKSecretKey(public, *factors)
        assert str(caught.value) == message
