"""The bank's room check on DGK groups, against keys whose plaintext space u is just wide enough.

The largest comparison value in a group of l + 1 ciphertexts is 3 l + 2 in absolute value; at or
above u a nonzero value could wrap to zero. The shipped keys have u = 65537, far above any group
the protocol allows, so the boundary can only be seen with test keys of a small u: made here the
way ``generate_dgk_keypair`` makes its keys (p = 2 u v_p r + 1, q likewise), at toy sizes.
"""

from __future__ import annotations

import pytest

from blindscore.crypto import dgk
from blindscore.crypto.dgk import DGKKeyPair, DGKPublicKey, DGKSecretKey
from blindscore.crypto.paillier import KeyPair
from blindscore.errors import InvalidInputError
from blindscore.protocol.comparison import BlindedRequest, answer_blinded

#: Group size l + 1 = 12 (l = 11): the check refuses every u <= 3 (l + 1) + 2 = 38.
GROUP = 12


def toy_dgk_keypair(u: int, bits: int = 384, t_bits: int = 24) -> DGKKeyPair:
    """A DGK key pair with plaintext space ``u``: INSECURE sizes, for this test only."""
    half = bits // 2
    while True:
        vp, vq = dgk._random_prime(t_bits), dgk._random_prime(t_bits)
        if vp == vq:
            continue
        avoid = u * vp * vq
        p = dgk._structured_prime(half, u, vp, avoid)
        q = dgk._structured_prime(bits - half, u, vq, avoid)
        if p != q and (p * q).bit_length() == bits:
            break
    n = p * q
    g = dgk._crt(dgk._element_of_order(p, u * vp, (u, vp)), p, dgk._element_of_order(q, u * vq, (u, vq)), q)
    h = dgk._crt(dgk._element_of_order(p, vp, (vp,)), p, dgk._element_of_order(q, vq, (vq,)), q)
    public = DGKPublicKey(n, g, h, u, t_bits, _min_bits=0, _min_t=1)
    return DGKKeyPair(public, DGKSecretKey(public, p, q, vp, vq))


def request(keys: DGKKeyPair, zero_at: int) -> BlindedRequest:
    """Two groups of GROUP ciphertexts: the first holds one zero, the second none."""
    pk = keys.public_key
    first = tuple(int(pk.encrypt(0 if i == zero_at else 1 + i)) for i in range(GROUP))
    second = tuple(int(pk.encrypt(1 + i)) for i in range(GROUP))
    return BlindedRequest(groups=(first, second))


def test_a_plaintext_space_just_wide_enough_is_accepted(paillier_keypair: KeyPair) -> None:
    keys = toy_dgk_keypair(3 * GROUP + 5)  # 41, the smallest prime above the bound 38
    final = answer_blinded(paillier_keypair.public_key, keys.secret_key, request(keys, zero_at=5))
    assert [paillier_keypair.secret_key.decrypt(d) for d in final.deltas] == [1, 0]


@pytest.mark.parametrize("u", [3 * GROUP + 1, 3 * GROUP - 5])  # 37, the largest prime below 38; 31
def test_a_plaintext_space_a_group_could_wrap_in_is_refused(paillier_keypair: KeyPair, u: int) -> None:
    keys = toy_dgk_keypair(u)
    with pytest.raises(
        InvalidInputError, match=rf"^l = 11 bits is too long for DGK plaintext space u = {u}$"
    ):
        answer_blinded(paillier_keypair.public_key, keys.secret_key, request(keys, zero_at=0))
