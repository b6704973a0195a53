"""DGK ciphertext validation, one value and a batch, at the edges of the rule: 0 < c < n, gcd(c, n) = 1.

No test called DGKPublicKey.validate in its own body (a partial mutation run of dgk.py left all 20
of its mutants alive); validate_many's range edges and the bit refusal's message likewise.
"""

from __future__ import annotations

import gmpy2
import pytest

from blindscore.crypto.dgk import DGKKeyPair, generate_dgk_keypair
from blindscore.errors import InvalidInputError

NOT_A_UNIT = "DGK ciphertext is not a unit modulo n of this key"


@pytest.fixture(scope="module")
def small() -> DGKKeyPair:
    """A 256-bit key (t = 16): the rule does not depend on the size."""
    return generate_dgk_keypair(256, t_bits=16, allow_insecure_for_tests=True)


def test_units_from_1_to_n_minus_1_are_kept(small: DGKKeyPair) -> None:
    pk = small.public_key
    n = int(pk.n)
    c = pk.encrypt(5)
    for good in (1, n - 1, int(c), gmpy2.mpz(c)):
        kept = pk.validate(good)
        assert kept == good and isinstance(kept, type(gmpy2.mpz(1)))
    assert pk.validate_many([1, n - 1, c]) == [1, n - 1, c]


def test_values_outside_or_sharing_a_factor_are_refused(small: DGKKeyPair) -> None:
    pk = small.public_key
    n = int(pk.n)
    p = int(small.secret_key._export()["p"], 16)
    for bad in (0, -1, n, n + 1, p, 3 * p):
        with pytest.raises(InvalidInputError) as info:
            pk.validate(bad)
        assert str(info.value) == NOT_A_UNIT
    for batch, at in (([1, 0], 1), ([n, 1], 0), ([1, 2, n + 1], 2), ([1, p, 2], 1)):
        with pytest.raises(InvalidInputError) as info:
            pk.validate_many(batch)
        assert str(info.value) == f"DGK ciphertext {at} is not a unit modulo n of this key"


@pytest.mark.parametrize(
    ("bad", "kind"), [("5", "str"), (5.0, "float"), (b"\x05", "bytes"), (None, "NoneType")]
)
def test_a_value_that_is_no_integer_is_named(small: DGKKeyPair, bad: object, kind: str) -> None:
    pk = small.public_key
    with pytest.raises(InvalidInputError) as info:
        pk.validate(bad)
    assert str(info.value) == f"DGK ciphertext must be an integer, not {kind}"
    with pytest.raises(InvalidInputError) as info:
        pk.validate_many([1, bad])
    assert str(info.value) == f"DGK ciphertext 1 must be an integer, not {kind}"


def test_encrypt_bit_names_what_it_refuses(small: DGKKeyPair) -> None:
    with pytest.raises(InvalidInputError) as info:
        small.public_key.encrypt_bit(2)
    assert str(info.value) == "encrypt_bit takes 0 or 1, not 2"
