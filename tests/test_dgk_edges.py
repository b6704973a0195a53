"""DGK (blindscore.crypto.dgk) at its edges: generated keys' structure, plaintext addition, the fork hook."""

from __future__ import annotations

import threading

import gmpy2
import pytest

from blindscore.crypto import dgk
from blindscore.crypto.dgk import DEFAULT_U, DGKKeyPair, generate_dgk_keypair
from blindscore.errors import KeySizeError


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


def test_the_dgk_randomness_filler_is_named_for_thread_listings(dgk_keypair: DGKKeyPair) -> None:
    pool = dgk_keypair.public_key._rand().pool
    assert pool.name == "dgk-randomness"


def test_structured_primes_have_the_documented_form() -> None:
    """p = 2 u v r + 1 prime, of exactly the bits asked for with the top two set, r coprime to
    ``avoid``; and r is drawn, not built: r = 0 and r != 0 mod 3 both come up (with u = 65537 and
    v = 65521, p is prime only for r = 0 or 1 mod 3, about half each; 40 draws miss one with
    probability about 2^-39)."""
    u, v, other = 65537, 65521, 65519
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
