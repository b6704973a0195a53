"""Paillier recipes at their edges: key checks and encodings pinned on toy keys, each refusal's message,
the recipes no other Paillier test calls directly (encrypt_bit, encrypt_many, pack_slots, reserve).

Keys are built inside each test (toy keys, or the session key's n and hs) so that what a test checks
runs in the test itself, not in a session fixture made before it.
"""

from __future__ import annotations

import pickle

import gmpy2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from phe import paillier as phe_paillier

from blindscore.crypto import paillier
from blindscore.crypto.paillier import (
    FixedBaseTable,
    KeyPair,
    PublicKey,
    SecretKey,
    check_key_bits,
    generate_keypair,
)
from blindscore.errors import CryptoError, InvalidInputError, KeySizeError

# Toy keys for fixed vectors only (hence _min_bits=0): n = 11 * 13 (n^2 has 15 bits) and
# n = 11 * 17 (n^2 has 16 bits), so a ciphertext's byte width is tested on both sides of a byte.
TOY_N, TOY_HS = 143, 7704
WIDE_N = 187
UNIT = "ciphertext is not a unit modulo n^2 of this key"


def toy(n: int = TOY_N, hs: int = TOY_HS) -> PublicKey:
    return PublicKey(n, hs, _min_bits=0)


def test_toy_keys_derive_their_sizes() -> None:
    small, wide = toy(), toy(WIDE_N, 2)
    assert (small.bits, small.r_bits, small.ciphertext_bytes, small.max_plaintext) == (8, 4, 2, 71)
    assert (wide.bits, wide.r_bits, wide.ciphertext_bytes, wide.max_plaintext) == (8, 4, 2, 93)


def test_a_real_key_has_512_byte_ciphertexts(paillier_keypair: KeyPair) -> None:
    pk = PublicKey(int(paillier_keypair.public_key.n), int(paillier_keypair.public_key.hs))
    assert pk.bits == 2048 and pk.ciphertext_bytes == 512 and pk.r_bits == 1024


def test_a_short_modulus_is_refused_with_its_size() -> None:
    with pytest.raises(KeySizeError) as info:
        PublicKey(TOY_N, TOY_HS)
    assert str(info.value) == "Paillier modulus has 8 bits; at least 2048 required"


@pytest.mark.parametrize("hs", [0, 1, 11, 13, TOY_N, TOY_N**2, TOY_N**2 + 1])
def test_hs_must_be_a_unit_below_n_squared(hs: int) -> None:
    with pytest.raises(InvalidInputError) as info:
        toy(TOY_N, hs)
    assert str(info.value) == "Paillier public key: hs is not a unit modulo n^2"


@pytest.mark.parametrize("hs", [2, 3, TOY_N**2 - 1])
def test_any_unit_between_1_and_n_squared_is_a_valid_hs(hs: int) -> None:
    assert toy(TOY_N, hs).hs == hs


def test_the_fingerprint_covers_n_and_hs() -> None:
    assert toy(TOY_N, 2).fingerprint != toy(TOY_N, 3).fingerprint
    assert toy(TOY_N, 2).fingerprint != toy(WIDE_N, 2).fingerprint
    assert toy(TOY_N, 2) == toy(TOY_N, 2)


def test_a_toy_key_survives_pickling_below_the_floor() -> None:
    key = toy()
    clone = pickle.loads(pickle.dumps(key))
    assert clone == key and clone.bits == 8


def test_from_dict_names_the_format_it_reads() -> None:
    with pytest.raises(InvalidInputError) as info:
        PublicKey.from_dict({"format": 2, "kind": "paillier-public", "n": "0x8f", "hs": "0x2"})
    assert str(info.value) == "not a blindscore Paillier public key (format 1)"


def test_plaintexts_keep_their_headroom() -> None:
    key = toy()
    assert [key.plaintext(m) for m in (71, 0, -70)] == [71, 0, 73]
    for m in (72, -71, 143):
        with pytest.raises(InvalidInputError) as info:
            key.plaintext(m)
        assert str(info.value) == "plaintext outside (-n/2, n/2]: it would wrap around"


def test_signed_decryption_splits_at_half_n() -> None:
    key = toy()
    sk = SecretKey(key, 11, 13)
    for m in (71, 60, 1, 0, -1, -60, -70):
        assert sk.decrypt_signed(key.encrypt(m, _r=3)) == m
    assert sk.decrypt_signed((1 + 72 * TOY_N) % TOY_N**2) == -71  # 72 = -71 mod 143


def test_a_secret_key_must_factor_the_modulus() -> None:
    with pytest.raises(CryptoError) as info:
        SecretKey(toy(), 11, 17)
    assert str(info.value) == "secret key does not match the public key"


def test_the_table_refuses_exponents_outside_its_range() -> None:
    table = FixedBaseTable(7704, TOY_N**2, exp_bits=8, window=3)
    assert table.pow(255) == pow(7704, 255, TOY_N**2)
    for bad in (256, -1):
        with pytest.raises(ValueError, match=r"^exponent outside the table's range$"):
            table.pow(bad)


# ---------------------------------------------------------------- wire


def test_the_public_encoding_is_n_then_hs_at_fixed_widths(paillier_keypair: KeyPair) -> None:
    """A small hs is written at full width, 2 x 256 bytes: the encoding never depends on the value."""
    n = int(paillier_keypair.public_key.n)
    key = PublicKey(n, 2)
    data = key.to_bytes()
    assert data == n.to_bytes(256, "big") + (2).to_bytes(512, "big")
    assert PublicKey.from_bytes(data) == key


def test_the_public_encoding_is_read_by_thirds(paillier_keypair: KeyPair) -> None:
    pk = paillier_keypair.public_key
    n, hs = int(pk.n).to_bytes(256, "big"), int(pk.hs).to_bytes(512, "big")
    assert PublicKey.from_bytes(bytes(1) + n + bytes(2) + hs) == pk  # 771 bytes: 257 + 514
    for bad in (n + hs + bytes(1), n + hs + bytes(2), (n + hs)[3:], (n + hs)[1:], b""):
        with pytest.raises(InvalidInputError) as info:
            PublicKey.from_bytes(bad)
        assert str(info.value) == "Paillier public key: malformed encoding"


def test_validate_keeps_units_and_names_the_rule(paillier_keypair: KeyPair) -> None:
    pk = PublicKey(int(paillier_keypair.public_key.n), int(paillier_keypair.public_key.hs))
    c = pk.encrypt(5)
    assert pk.validate(1) == 1 and pk.validate(int(c)) == c
    assert pk.validate(int(pk.nsquare) - 1) == pk.nsquare - 1
    for bad in (0, int(pk.n), int(pk.nsquare), int(pk.nsquare) + 1):
        with pytest.raises(InvalidInputError) as info:
            pk.validate(bad)
        assert str(info.value) == UNIT


def test_unpack_keeps_units_and_names_the_rule() -> None:
    key = toy()
    assert key.unpack(b"\x00\x01\x00\x02\x4f\xe0") == [1, 2, TOY_N**2 - 1]
    for bad in (b"\x00\x00", b"\xff\xff", TOY_N.to_bytes(2, "big"), b"\x00\x01" + (11).to_bytes(2, "big")):
        with pytest.raises(InvalidInputError) as info:
            key.unpack(bad)
        assert str(info.value) == UNIT


# ---------------------------------------------------------------- recipes


def test_dot_with_unit_zero_and_negative_weights(paillier_keypair: KeyPair) -> None:
    pk, sk = paillier_keypair.public_key, paillier_keypair.secret_key
    xs, ws = [7, 11, 13, 17, 19], [1, -1, 0, 2, -3]
    assert sk.decrypt_signed(pk.dot([pk.encrypt(x) for x in xs], ws)) == 7 - 11 + 34 - 57
    assert sk.decrypt_signed(pk.dot([pk.encrypt(5)], [1])) == 5
    assert sk.decrypt_signed(pk.dot([pk.encrypt(5)], [-1])) == -5
    assert sk.decrypt_signed(pk.dot([pk.encrypt(5)], [0])) == 0


def test_encrypt_bit_and_encrypt_many(paillier_keypair: KeyPair) -> None:
    pk, sk = paillier_keypair.public_key, paillier_keypair.secret_key
    bits = [pk.encrypt_bit(b) for b in (0, 1, 1, 0)]
    assert [sk.decrypt(c) for c in bits] == [0, 1, 1, 0]
    assert len(set(bits)) == 4 and all(0 < c < pk.nsquare for c in bits)
    with pytest.raises(InvalidInputError, match=r"^encrypt_bit takes 0 or 1, not 2$"):
        pk.encrypt_bit(2)
    many = pk.encrypt_many([3, -4, 5])
    assert [sk.decrypt_signed(c) for c in many] == [3, -4, 5]


def test_pack_slots_shifts_each_value_into_its_slot(paillier_keypair: KeyPair) -> None:
    pk, sk = paillier_keypair.public_key, paillier_keypair.secret_key
    chunks = [[pk.encrypt(1), pk.encrypt(2), pk.encrypt(3)], [pk.encrypt(5)]]
    packed = pk.pack_slots(chunks, 10)
    assert [sk.decrypt(c) for c in packed] == [1 + (2 << 10) + (3 << 20), 5]
    assert sk.decrypt(pk.pack_slots([[pk.encrypt(1), pk.encrypt(1)]], 1)[0]) == 3
    for slot_bits, bad in ((0, chunks), (-1, chunks), (10, [[pk.encrypt(1)], []])):
        with pytest.raises(InvalidInputError) as info:
            pk.pack_slots(bad, slot_bits)
        assert str(info.value) == "packing needs a positive slot width and non-empty chunks"


def test_reserve_only_ever_grows_the_named_pool(paillier_keypair: KeyPair) -> None:
    pk = PublicKey(int(paillier_keypair.public_key.n), int(paillier_keypair.public_key.hs))
    pool = pk._randomness()
    assert pool.name == "paillier-randomness" and pool.capacity == 1024
    pk.reserve(5000)
    assert pool.capacity == 5000
    pk.reserve(10)
    assert pool.capacity == 5000 and pk._randomness() is pool


# ---------------------------------------------------------------- key sizes for tests


def test_insecure_sizes_are_admitted_from_512_bits_for_tests_that_say_so() -> None:
    check_key_bits(512, allow_insecure_for_tests=True)
    with pytest.raises(KeySizeError) as info:
        check_key_bits(511, allow_insecure_for_tests=True)
    assert str(info.value) == "511-bit Paillier keys are refused: at least 2048 bits are required"
    kp = generate_keypair(512, allow_insecure_for_tests=True)
    assert kp.public_key.bits == 512
    assert kp.secret_key.decrypt_signed(kp.public_key.encrypt(-9)) == -9
    assert isinstance(kp.public_key.hs, type(gmpy2.mpz(1)))


def prime_3_mod_4(start: int) -> int:
    p = gmpy2.next_prime(start)
    while p % 4 != 3:
        p = gmpy2.next_prime(p)
    return int(p)


def test_hs_is_the_nth_power_of_minus_a_square(monkeypatch: pytest.MonkeyPatch) -> None:
    """h = -x^2 (DJN): with p = q = 3 mod 4, -1 is no square mod p, so h is none either.

    phe's primes are fixed here so the property is decided, not left to the primes' residues mod 4;
    h mod p is recovered from hs = h^n as hs^(n^-1 mod p-1).
    """
    p, q = prime_3_mod_4(3 * 2**254), prime_3_mod_4(3 * 2**254 + 2**200)
    public = phe_paillier.PaillierPublicKey(p * q)
    monkeypatch.setattr(
        paillier._phe,
        "generate_paillier_keypair",
        lambda n_length: (public, phe_paillier.PaillierPrivateKey(public, p, q)),
    )
    kp = generate_keypair(512, allow_insecure_for_tests=True)
    n, hs = int(kp.public_key.n), int(kp.public_key.hs)
    assert n == p * q and kp.secret_key.decrypt_signed(kp.public_key.encrypt(-9)) == -9
    for prime in (p, q):
        h = pow(hs % prime, pow(n, -1, prime - 1), prime)
        assert pow(hs, 1, prime) == pow(h, n, prime)
        assert gmpy2.legendre(h, prime) == -1  # a square's negative: never a square here


def test_multi_exp_fixed_vector() -> None:
    """2^10 * 3^5 * 5^0 * 7^3 * 11^1 mod 1000003 = 840322: one full group of four, one left over,
    a zero exponent."""
    terms = [(2, 10), (3, 5), (5, 0), (7, 3), (11, 1)]
    assert paillier._multi_exp(terms, gmpy2.mpz(1000003)) == 840322
    assert paillier._multi_exp([], gmpy2.mpz(1000003)) == 1
    assert paillier._multi_exp([(5, 0), (9, 0)], gmpy2.mpz(1000003)) == 1


@given(
    st.lists(st.tuples(st.integers(0, 2**128), st.integers(0, 2**40)), max_size=13),
    st.integers(3, 2**130).filter(lambda m: m % 2 == 1),
)
def test_multi_exp_is_the_product_of_powers(terms: list[tuple[int, int]], modulus: int) -> None:
    """Every group size the grouping can leave (lengths 0 to 13), bases above the modulus too."""
    expected = 1
    for base, exponent in terms:
        expected = expected * pow(base, exponent, modulus) % modulus
    assert paillier._multi_exp(terms, gmpy2.mpz(modulus)) == expected
