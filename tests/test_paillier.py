"""Paillier recipes: fixed vectors, properties against phe, key size policy, persistence, secrecy."""

from __future__ import annotations

import copy
import os
import pickle
import random
import stat
from pathlib import Path

import gmpy2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from phe import paillier as phe_paillier

from blindscore.crypto.paillier import (
    PUBLIC_FILE,
    SECRET_FILE,
    FixedBaseTable,
    KeyPair,
    PublicKey,
    SecretKey,
    check_key_bits,
    generate_keypair,
    load_keypair,
    load_or_generate_keypair,
    save_keypair,
)
from blindscore.errors import InvalidInputError, KeySizeError, PreconditionError

from waiting import wait_for

# A toy key (p=11, q=13) for fixed vectors only: this test says so, and passes _min_bits=0.
TOY_N = 143
TOY_HS = 7704  # 291^143 mod 143^2


def toy_key() -> PublicKey:
    return PublicKey(TOY_N, TOY_HS, _min_bits=0)


def test_fixed_vectors_toy_key() -> None:
    pk = toy_key()
    assert pk.encrypt(7, _r=5) == 14191
    assert pk.encrypt(-3, _r=9) == 47
    sk = SecretKey(pk, 11, 13)
    assert sk.decrypt(14191) == 7
    assert sk.decrypt_signed(47) == -3


def test_fixed_base_table_matches_powmod() -> None:
    table = FixedBaseTable(7704, 143**2, exp_bits=20, window=4)
    for e in (0, 1, 2, 15, 16, 255, 256, 2**20 - 1, 123457):
        assert table.pow(e) == pow(7704, e, 143**2)
    with pytest.raises(ValueError, match=r"^exponent outside the table's range$"):
        table.pow(2**20)


@given(base=st.integers(2, 10**6), exp=st.integers(0, 2**64 - 1), window=st.sampled_from([1, 3, 8]))
def test_fixed_base_table_property(base: int, exp: int, window: int) -> None:
    modulus = 2**127 - 1
    assert FixedBaseTable(base, modulus, 64, window).pow(exp) == pow(base, exp, modulus)


@given(m=st.integers(-(2**200), 2**200))
def test_phe_decrypts_our_ciphertexts(paillier_keypair: KeyPair, m: int) -> None:
    pk, sk = paillier_keypair.public_key, paillier_keypair.secret_key
    c = pk.encrypt(m)
    phe_sk = sk._sk
    n = int(pk.n)
    assert phe_sk.raw_decrypt(int(c)) == m % n
    assert sk.decrypt_signed(c) == m


@given(
    xs=st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=8),
    data=st.data(),
)
def test_homomorphic_dot_add_mul(paillier_keypair: KeyPair, xs: list[int], data: st.DataObject) -> None:
    pk, sk = paillier_keypair.public_key, paillier_keypair.secret_key
    ws = data.draw(st.lists(st.integers(-(2**30), 2**30), min_size=len(xs), max_size=len(xs)))
    cs = [pk.encrypt(x) for x in xs]
    assert sk.decrypt_signed(pk.dot(cs, ws)) == sum(x * w for x, w in zip(xs, ws, strict=True))
    assert sk.decrypt_signed(pk.add(cs[0], cs[-1])) == xs[0] + xs[-1]
    assert sk.decrypt_signed(pk.sub(cs[0], cs[-1])) == xs[0] - xs[-1]
    assert sk.decrypt_signed(pk.mul_plain(cs[0], ws[0])) == xs[0] * ws[0]
    assert sk.decrypt_signed(pk.add_plain(cs[0], -17)) == xs[0] - 17
    assert sk.decrypt_signed(pk.neg(cs[0])) == -xs[0]
    rr = pk.rerandomize(cs[0])
    assert rr != cs[0] and sk.decrypt_signed(rr) == xs[0]


def test_encryption_is_randomised(paillier_keypair: KeyPair) -> None:
    pk = paillier_keypair.public_key
    assert pk.encrypt(5) != pk.encrypt(5)


def test_plaintext_without_headroom_refused(paillier_keypair: KeyPair) -> None:
    pk = paillier_keypair.public_key
    with pytest.raises(InvalidInputError, match="wrap"):
        pk.encrypt(int(pk.n))
    with pytest.raises(InvalidInputError, match="wrap"):
        pk.encrypt(-(int(pk.n) // 2))


def test_dot_length_mismatch(paillier_keypair: KeyPair) -> None:
    pk = paillier_keypair.public_key
    with pytest.raises(InvalidInputError, match="2 ciphertexts with 3 weights"):
        pk.dot([pk.encrypt(1), pk.encrypt(2)], [1, 2, 3])


def test_validate_and_unpack(paillier_keypair: KeyPair) -> None:
    pk = paillier_keypair.public_key
    cs = [pk.encrypt(i) for i in range(3)]
    packed = pk.pack(cs)
    assert len(packed) == 3 * pk.ciphertext_bytes == 3 * 512
    assert pk.unpack(packed, 3) == cs
    with pytest.raises(InvalidInputError, match="expected 2 ciphertexts, got 3"):
        pk.unpack(packed, 2)
    with pytest.raises(InvalidInputError, match="multiple"):
        pk.unpack(packed[:-1])
    for bad in (0, int(pk.nsquare), int(pk.nsquare) + 5, int(pk.n), 3 * int(pk.n)):
        with pytest.raises(InvalidInputError, match="not a unit"):
            pk.validate(bad)
    zero = (0).to_bytes(pk.ciphertext_bytes, "big")
    with pytest.raises(InvalidInputError, match=r"^ciphertext is not a unit modulo n\^2 of this key$"):
        pk.unpack(zero, 1)


@pytest.mark.parametrize("bits", [512, 1024, 2047, 1536])
def test_small_keys_refused(bits: int) -> None:
    with pytest.raises(KeySizeError, match="2048"):
        check_key_bits(bits)
    with pytest.raises(
        KeySizeError, match=rf"^{bits}-bit Paillier keys are refused: at least 2048 bits are required$"
    ):
        generate_keypair(bits)


def test_allowed_sizes() -> None:
    for bits in (2048, 3072, 4096):
        check_key_bits(bits)
    with pytest.raises(KeySizeError, match="one of"):
        check_key_bits(2500)


def test_public_key_below_floor_refused() -> None:
    with pytest.raises(KeySizeError, match=r"^Paillier modulus has 8 bits; at least 2048 required$"):
        PublicKey(TOY_N, TOY_HS)


def test_secret_key_not_printable_or_picklable(paillier_keypair: KeyPair) -> None:
    sk = paillier_keypair.secret_key
    p, q = sk._sk.p, sk._sk.q
    for text in (repr(sk), str(sk), f"{sk}", repr(paillier_keypair)):
        assert str(p) not in text and str(q) not in text and hex(p)[2:] not in text
        assert paillier_keypair.public_key.key_id in text
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(sk)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(paillier_keypair)
    with pytest.raises(TypeError, match="cannot be copied"):
        copy.deepcopy(sk)
    with pytest.raises(TypeError, match="cannot be copied"):
        copy.copy(sk)
    assert not hasattr(sk, "__dict__")


def test_public_key_round_trips(paillier_keypair: KeyPair) -> None:
    pk = paillier_keypair.public_key
    assert PublicKey.from_dict(pk.to_dict()) == pk
    assert PublicKey.from_bytes(pk.to_bytes()) == pk
    assert pickle.loads(pickle.dumps(pk)) == pk
    assert pk.key_id.startswith("pk-") and len(pk.key_id) == 35
    assert pk.fingerprint.startswith(pk.key_id[3:])
    assert pk.matches_key_id(pk.key_id) and not pk.matches_key_id("pk-" + "0" * 32)
    with pytest.raises(InvalidInputError, match=r"^not a blindscore Paillier public key \(format 1\)$"):
        PublicKey.from_dict({**pk.to_dict(), "format": 2})


def test_persistence_and_modes(tmp_path: Path, paillier_keypair: KeyPair) -> None:
    save_keypair(tmp_path, paillier_keypair)
    secret = tmp_path / SECRET_FILE
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / PUBLIC_FILE).stat().st_mode) & 0o077 != 0o077
    loaded = load_keypair(tmp_path)
    assert loaded.public_key == paillier_keypair.public_key
    c = paillier_keypair.public_key.encrypt(424242)
    assert loaded.secret_key.decrypt(c) == 424242
    # load_or_generate keeps the existing key: it survives restarts.
    again, created = load_or_generate_keypair(tmp_path)
    assert not created and again.public_key == paillier_keypair.public_key
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


def test_group_readable_secret_refused(tmp_path: Path, paillier_keypair: KeyPair) -> None:
    save_keypair(tmp_path, paillier_keypair)
    os.chmod(tmp_path / SECRET_FILE, 0o644)
    with pytest.raises(PreconditionError, match="chmod 600"):
        load_keypair(tmp_path)


def test_generated_key_is_2048_and_uses_gmpy2() -> None:
    kp = generate_keypair()
    assert kp.public_key.bits == 2048
    assert isinstance(kp.public_key.encrypt(1), type(gmpy2.mpz(1)))
    # phe was built on gmpy2 (its fast path), as the design requires.
    from phe import util

    assert util.HAVE_GMP
    assert isinstance(phe_paillier.PaillierPublicKey(int(kp.public_key.n)), phe_paillier.PaillierPublicKey)


@given(m=st.integers(0, 2**1000))
def test_decrypt_small_matches_full_decryption(paillier_keypair: KeyPair, m: int) -> None:
    pk, sk = paillier_keypair.public_key, paillier_keypair.secret_key
    c = pk.encrypt(m)
    assert sk.decrypt_small(c) == sk.decrypt(c) == m


def test_randomness_pool_drains_and_refills(paillier_keypair: KeyPair) -> None:

    pk = PublicKey(int(paillier_keypair.public_key.n), int(paillier_keypair.public_key.hs))
    pk.warm(16)
    assert pk._pool is not None and len(pk._pool) == 16
    cs = [pk.encrypt(i) for i in range(40)]  # more than the pool holds: falls back inline
    assert [paillier_keypair.secret_key.decrypt(c) for c in cs] == list(range(40))
    assert len(set(cs)) == 40  # no randomness handed out twice
    pool = pk._pool
    wait_for(lambda: len(pool) >= 8, what="the background thread to refill the pool")
    # The pool is not part of the key's identity or its pickled form.
    clone = pickle.loads(pickle.dumps(pk))
    assert clone == pk and clone._pool is None


def test_decrypt_many_matches_phe_one_by_one(paillier_keypair: KeyPair) -> None:
    """The two-thread CRT decryption (also behind ``decrypt``) gives each plaintext in [0, n), as
    phe's own decryption does, including both ends and a value above p (so both halves matter),
    for lists of every length the code branches on."""
    pk, sk = paillier_keypair.public_key, paillier_keypair.secret_key
    n = int(pk.n)
    rng = random.Random(11)
    plain = [0, 1, n - 1, n // 2, *(rng.randrange(n) for _ in range(9))]
    cts = [pk.encrypt(m - n if m > n // 2 else m) for m in plain]  # signed: m - n is m mod n
    assert sk.decrypt_many(cts) == [sk._sk.raw_decrypt(int(c)) for c in cts] == plain
    assert [sk.decrypt(c) for c in cts] == plain
    assert sk.decrypt_many(cts[:1]) == plain[:1]
    assert sk.decrypt_many([]) == []
