"""Key identity and the unexportable guard, on toy keys: equality, hashing, the refusals' messages."""

from __future__ import annotations

import copy
import pickle

import pytest

from blindscore.crypto._secret import fingerprint
from blindscore.crypto.paillier import PublicKey, SecretKey

# The toy key of tests/test_paillier.py (p=11, q=13, hs = 291^143 mod 143^2) and a second toy key
# (p=11, q=17, hs = 2^187 mod 187^2): fixed vectors only, hence _min_bits=0.
TOY_N, TOY_HS = 143, 7704
OTHER_N, OTHER_HS = 187, pow(2, 187, 187 * 187)


def toy_key() -> PublicKey:
    return PublicKey(TOY_N, TOY_HS, _min_bits=0)


def test_keys_are_equal_by_fingerprint_only() -> None:
    a, b, other = toy_key(), toy_key(), PublicKey(OTHER_N, OTHER_HS, _min_bits=0)
    assert a is not b and a == b and hash(a) == hash(b)
    assert a != other and other != a
    assert hash(a) != hash(other)  # distinct SHA-256 fingerprints: a set of keys never collides
    assert len({a, b, other}) == 2


@pytest.mark.parametrize("stranger", [None, "pk-", 143, object()])
def test_a_key_equals_nothing_but_a_key_of_its_own_type(stranger: object) -> None:
    assert toy_key() != stranger
    assert stranger != toy_key()


def test_fingerprints_are_domain_separated_and_unambiguous() -> None:
    assert fingerprint(b"a", 1) != fingerprint(b"b", 1)
    # length prefixes: the integers 1, 2 are not the integer 0x0102, nor 0 the empty list
    assert fingerprint(b"a", 1, 2) != fingerprint(b"a", 0x0102)
    assert fingerprint(b"a", 0) != fingerprint(b"a")
    # SHA-256 of b"d" || 00000001 01 || 00000002 0102, and of b"d" || 00000001 00 (zero is one byte)
    assert fingerprint(b"d", 1, 258) == "4743fcb1640bcbf2265945e7328da5cdbc283cdb36d4193ccda8880edcae9fbe"
    assert fingerprint(b"d", 0) == "cc381770178791af53fa2a00f3e475ee084287133283a475003fa25ad79402f1"


def test_a_secret_key_names_its_class_and_key_id_only() -> None:
    pk = toy_key()
    sk = SecretKey(pk, 11, 13)
    assert repr(sk) == f"SecretKey(key_id={pk.key_id}, <secret>)"
    assert str(sk) == repr(sk)


def test_the_refusals_name_the_class_and_the_way_to_save() -> None:
    sk = SecretKey(toy_key(), 11, 13)
    with pytest.raises(TypeError, match=r"^a blindscore SecretKey cannot be pickled; use save_keypair\(\)"):
        pickle.dumps(sk)
    with pytest.raises(TypeError, match=r"^a blindscore SecretKey cannot be pickled; use save_keypair\(\)"):
        sk.__getstate__()
    with pytest.raises(TypeError, match=r"^a blindscore SecretKey cannot be copied$"):
        copy.copy(sk)
    with pytest.raises(TypeError, match=r"^a blindscore SecretKey cannot be copied$"):
        copy.deepcopy(sk)
