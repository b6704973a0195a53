"""Oblivious transfer: base-OT setup, IKNP extension end to end, refusals, fixed vectors, group, secrecy."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import pickle
import random
import secrets
from typing import Any

import gmpy2
import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from blindscore.crypto import ot
from blindscore.crypto.ot import (
    GROUP,
    KAPPA,
    MAX_COUNT,
    ExtensionReply,
    ExtensionRequest,
    OtReceiver,
    OtSender,
    ReceiverSetup,
    SenderSetup,
)
from blindscore.errors import CryptoError, InvalidInputError, PreconditionError

P = GROUP.p
NON_RESIDUE = P - 4  # -1 is a non-residue (p = 3 mod 4) and 4 a residue, so -4 is a non-residue
# The smallest non-residue by Euler's criterion (x^q != 1), independent of the module's Legendre test.
SMALL_NON_RESIDUE = next(x for x in range(2, 100) if gmpy2.powmod(x, GROUP.q, P) != 1)


def _setup() -> tuple[OtReceiver, OtSender]:
    receiver_setup, offer = ReceiverSetup.start()
    sender_setup, choice = SenderSetup.start(offer)
    receiver, reply = receiver_setup.finish(choice)
    return receiver, sender_setup.finish(reply)


@pytest.fixture(scope="module")
def session() -> tuple[OtReceiver, OtSender]:
    """One bank <-> bureau OT session shared by this module (the base OTs cost ~0.2 s)."""
    return _setup()


def _random_batch(rng: random.Random, count: int) -> tuple[list[int], list[tuple[int, int]]]:
    choices = [rng.getrandbits(1) for _ in range(count)]
    pairs = [(rng.getrandbits(128), rng.getrandbits(128)) for _ in range(count)]
    return choices, pairs


def _transfer(
    receiver: OtReceiver, sender: OtSender, choices: list[int], pairs: list[tuple[int, int]]
) -> list[int]:
    request = receiver.request(choices)
    reply = sender.reply(request, pairs)
    return receiver.receive(request.nonce, choices, reply)


# ---------------------------------------------------------------------- end to end


@pytest.mark.parametrize("count", [1, 7, 8, 9, 500])
def test_receiver_gets_exactly_the_chosen_messages(session: tuple[OtReceiver, OtSender], count: int) -> None:
    receiver, sender = session
    rng = random.Random(count)
    for _ in range(3):  # several batches in one session, each with a fresh nonce
        choices, pairs = _random_batch(rng, count)
        got = _transfer(receiver, sender, choices, pairs)
        assert got == [pair[r] for pair, r in zip(pairs, choices, strict=True)]
        assert all(x != pair[1 - r] for x, pair, r in zip(got, pairs, choices, strict=True))


def test_both_choice_values_and_extreme_messages(session: tuple[OtReceiver, OtSender]) -> None:
    receiver, sender = session
    top = (1 << 128) - 1
    pairs = [(0, top), (top, 0), (1, 2), (5, 5)]
    for choices in ([0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 1, 0]):
        assert _transfer(receiver, sender, choices, pairs) == [
            p[r] for p, r in zip(pairs, choices, strict=True)
        ]


def test_base_ot_gives_the_bureau_exactly_its_chosen_seeds(session: tuple[OtReceiver, OtSender]) -> None:
    receiver, sender = session
    s_bits = np.unpackbits(sender._s_row).tolist()
    assert 32 < sum(s_bits) < 96  # s is random: 128 fair bits
    for i, bit in enumerate(s_bits):
        pair = (receiver._seeds0[i], receiver._seeds1[i])
        assert sender._seeds[i] == pair[bit]
        assert sender._seeds[i] != pair[1 - bit]


def test_iknp_row_relation(session: tuple[OtReceiver, OtSender]) -> None:
    """q_j = t_j XOR r_j * s: the sender's rows differ from the receiver's by s exactly where r_j = 1."""
    receiver, sender = session
    choices, _ = _random_batch(random.Random(3), 37)
    request = receiver.request(choices)
    m = 37 + ot.PAD
    t = ot._rows(ot._columns(receiver._seeds0, request.nonce, m), m)
    u = np.frombuffer(request.u, dtype=np.uint8).reshape(KAPPA, (m + 7) // 8)
    q = ot._rows(ot._columns(sender._seeds, request.nonce, m) ^ (u & sender._s_mask), m)
    for j, r in enumerate(choices):
        assert (q[j] ^ t[j]).tobytes() == (sender._s_row.tobytes() if r else bytes(16))


def test_receive_needs_only_nonce_and_choices(session: tuple[OtReceiver, OtSender]) -> None:
    receiver, sender = session
    choices, pairs = _random_batch(random.Random(11), 20)
    nonce = bytes(range(100, 116))
    request = receiver.request(choices, nonce=nonce)
    assert request.nonce == nonce
    # Under the same nonce only the random padding rows differ (a nonce is never reused in a session).
    again = receiver.request(choices, nonce=nonce)
    assert again.u != request.u and again.nonce == request.nonce
    assert receiver.request(choices).u != request.u  # a fresh nonce by default
    reply = sender.reply(request, pairs)
    assert receiver.receive(nonce, choices, reply) == [p[r] for p, r in zip(pairs, choices, strict=True)]
    # Wrong nonce or wrong choices at receive time give garbage, not the chosen messages.
    assert receiver.receive(bytes(16), choices, reply) != [p[r] for p, r in zip(pairs, choices, strict=True)]
    flipped = [1 - r for r in choices]
    assert all(
        x != p[r] for x, p, r in zip(receiver.receive(nonce, flipped, reply), pairs, flipped, strict=True)
    )


def test_sessions_are_independent(session: tuple[OtReceiver, OtSender]) -> None:
    receiver, sender = session
    other_receiver, other_sender = _setup()
    assert other_receiver.session_id != receiver.session_id
    assert other_receiver.session_id == other_sender.session_id
    choices, pairs = _random_batch(random.Random(5), 9)
    assert _transfer(other_receiver, other_sender, choices, pairs) == [
        p[r] for p, r in zip(pairs, choices, strict=True)
    ]
    with pytest.raises(InvalidInputError, match="session id does not match"):
        sender.reply(other_receiver.request(choices), pairs)


@settings(max_examples=30, deadline=None)
@given(
    choices=st.lists(st.integers(0, 1), min_size=1, max_size=64),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_random_choice_vectors(
    session: tuple[OtReceiver, OtSender], choices: list[int], seed: int
) -> None:
    receiver, sender = session
    rng = random.Random(seed)
    pairs = [(rng.getrandbits(128), rng.getrandbits(128)) for _ in choices]
    got = _transfer(receiver, sender, choices, pairs)
    assert got == [p[r] for p, r in zip(pairs, choices, strict=True)]
    assert all(x != p[1 - r] for x, p, r in zip(got, pairs, choices, strict=True))


# ---------------------------------------------------------------------- what the sender sees


def test_u_is_balanced_whatever_the_choices(session: tuple[OtReceiver, OtSender]) -> None:
    """Smoke check of the sender's view: u looks uniform for all-zero, all-one and mixed choices."""
    receiver, _ = session
    count = 500 - ot.PAD  # with the padding rows, 500 OTs
    bits = KAPPA * 500  # 64000 bits; sd = sqrt(bits) / 2 ~ 126.5, bound ~ 8 sd
    views = []
    for choices in ([0] * count, [1] * count, [j % 2 for j in range(count)]):
        u = receiver.request(choices).u
        assert len(u) == KAPPA * ((500 + 7) // 8)
        ones = int(np.unpackbits(np.frombuffer(u, dtype=np.uint8)).sum())
        assert abs(ones - bits / 2) < 1000, ones
        views.append(u)
    assert len(set(views)) == 3


# ---------------------------------------------------------------------- extension refusals


def test_reply_refuses_a_wrong_session_id(session: tuple[OtReceiver, OtSender]) -> None:
    receiver, sender = session
    choices, pairs = _random_batch(random.Random(1), 8)
    request = receiver.request(choices)
    with pytest.raises(InvalidInputError, match="session id does not match"):
        sender.reply(dataclasses.replace(request, session_id=bytes(16)), pairs)
    with pytest.raises(InvalidInputError, match="session id must be 16 bytes"):
        sender.reply(dataclasses.replace(request, session_id=b"short"), pairs)


def test_reply_refuses_a_wrong_count(session: tuple[OtReceiver, OtSender]) -> None:
    receiver, sender = session
    choices, pairs = _random_batch(random.Random(2), 16)
    request = receiver.request(choices)
    with pytest.raises(InvalidInputError, match="got 15 message pairs for a request of 16 OTs"):
        sender.reply(request, pairs[:15])
    with pytest.raises(InvalidInputError, match="got 16 message pairs for a request of 15 OTs"):
        sender.reply(dataclasses.replace(request, count=15), pairs)
    bad_counts: list[Any] = [0, -1, MAX_COUNT + 1, True, 2.0]
    for count in bad_counts:
        with pytest.raises(InvalidInputError, match="OT count must be an integer from 1 to 1000000"):
            sender.reply(dataclasses.replace(request, count=count), pairs)


def test_reply_refuses_a_wrong_u_length(session: tuple[OtReceiver, OtSender]) -> None:
    receiver, sender = session
    choices, pairs = _random_batch(random.Random(3), 9)  # ceil((9 + 128) / 8) = 18 bytes per column
    request = receiver.request(choices)
    assert len(request.u) == 128 * 18
    for u in (request.u[:-1], request.u + b"\0", b""):
        with pytest.raises(
            InvalidInputError, match=r"u must be 128 \* ceil\(\(9 \+ 128\) / 8\) = 2304 bytes"
        ):
            sender.reply(dataclasses.replace(request, u=u), pairs)
    # Nine choices and the padding need 18 bytes per column; a request claiming eight needs 17.
    with pytest.raises(InvalidInputError, match="= 2176 bytes"):
        sender.reply(dataclasses.replace(request, count=8), pairs[:8])
    for check in (request.check[:-1], b""):
        with pytest.raises(
            InvalidInputError, match=rf"^OT extension request check must be {ot.CHECK_BYTES} bytes$"
        ):
            sender.reply(dataclasses.replace(request, check=check), pairs)


def test_reply_refuses_a_wrong_nonce(session: tuple[OtReceiver, OtSender]) -> None:
    receiver, sender = session
    choices, pairs = _random_batch(random.Random(4), 4)
    request = receiver.request(choices)
    with pytest.raises(InvalidInputError, match="nonce must be 16 bytes"):
        sender.reply(dataclasses.replace(request, nonce=request.nonce[:15]), pairs)
    with pytest.raises(InvalidInputError, match="nonce must be 16 bytes"):
        receiver.request(choices, nonce=b"x" * 17)


@pytest.mark.parametrize("pair", [(1 << 128, 0), (0, 1 << 128), (-1, 0), (0, 1.0), ("0", 0), (0,)], ids=repr)
def test_reply_refuses_bad_messages(session: tuple[OtReceiver, OtSender], pair: tuple) -> None:
    receiver, sender = session
    request = receiver.request([0, 1])
    with pytest.raises(InvalidInputError, match=r"pairs must be \(x0, x1\) pairs of ints in \[0, 2\^128\)"):
        sender.reply(request, [(3, 4), pair])


@pytest.mark.parametrize(
    ("choices", "message"),
    [
        ([0, 2], "choices must be 0 or 1"),
        ([-1], "choices must be 0 or 1"),
        ([0.0, 1.0], "dtype float64"),
        (["1"], "dtype <U1"),
        ([], "OT count must be an integer from 1"),
        ([[0, 1]], "flat sequence"),
    ],
)
def test_request_refuses_bad_choices(
    session: tuple[OtReceiver, OtSender], choices: list, message: str
) -> None:
    receiver, _ = session
    with pytest.raises(InvalidInputError, match=message):
        receiver.request(choices)


def test_request_refuses_too_many_choices(session: tuple[OtReceiver, OtSender]) -> None:
    receiver, _ = session
    with pytest.raises(InvalidInputError, match="from 1 to 1000000, got 1000001"):
        receiver.request([0] * (MAX_COUNT + 1))


def test_receive_refuses_a_reply_of_the_wrong_size(session: tuple[OtReceiver, OtSender]) -> None:
    receiver, sender = session
    choices, pairs = _random_batch(random.Random(6), 10)
    request = receiver.request(choices)
    reply = sender.reply(request, pairs)
    with pytest.raises(InvalidInputError, match="y0 must be 160 bytes for 10 OTs"):
        receiver.receive(request.nonce, choices, ExtensionReply(y0=reply.y0[:-16], y1=reply.y1))
    with pytest.raises(InvalidInputError, match="y1 must be 160 bytes for 10 OTs"):
        receiver.receive(request.nonce, choices, ExtensionReply(y0=reply.y0, y1=reply.y1 + b"\0"))
    with pytest.raises(InvalidInputError, match="y0 must be 144 bytes for 9 OTs"):
        receiver.receive(request.nonce, choices[:9], reply)


# ---------------------------------------------------------------------- setup refusals


BAD_ELEMENTS = [
    pytest.param(0, "out of range", id="0"),
    pytest.param(1, "out of range", id="1"),
    pytest.param(P - 1, "out of range", id="p-1"),
    pytest.param(P, "out of range", id="p"),
    pytest.param(-4, "out of range", id="negative"),
    pytest.param(NON_RESIDUE, "not in the prime-order subgroup", id="non-residue"),
    pytest.param(SMALL_NON_RESIDUE, "not in the prime-order subgroup", id="small-non-residue"),
    pytest.param("4", "not an integer", id="str"),
]


@pytest.mark.parametrize(("element", "message"), BAD_ELEMENTS)
def test_sender_refuses_a_bad_offer(element: Any, message: str) -> None:
    _, offer = ReceiverSetup.start()
    with pytest.raises(CryptoError, match=message):
        SenderSetup.start(dataclasses.replace(offer, c=element))


@pytest.mark.parametrize(("element", "message"), BAD_ELEMENTS)
def test_receiver_refuses_a_bad_choice_element(element: Any, message: str) -> None:
    receiver_setup, offer = ReceiverSetup.start()
    _, choice = SenderSetup.start(offer)
    pk0 = list(choice.pk0)
    pk0[77] = element
    with pytest.raises(CryptoError, match=rf"pk0\[77\] .*{message}"):
        receiver_setup.finish(dataclasses.replace(choice, pk0=tuple(pk0)))
    # The refusal leaves the setup usable with the genuine message.
    receiver, reply = receiver_setup.finish(choice)
    assert receiver.session_id == offer.session_id and reply.session_id == offer.session_id


@pytest.mark.parametrize(("element", "message"), BAD_ELEMENTS)
def test_bureau_refuses_a_bad_gr(element: Any, message: str) -> None:
    receiver_setup, offer = ReceiverSetup.start()
    sender_setup, choice = SenderSetup.start(offer)
    _, reply = receiver_setup.finish(choice)
    with pytest.raises(CryptoError, match=rf"g\^r .*{message}"):
        sender_setup.finish(dataclasses.replace(reply, gr=element))


def test_setup_refusals_of_shape_and_session() -> None:
    receiver_setup, offer = ReceiverSetup.start()
    with pytest.raises(InvalidInputError, match="session id must be 16 bytes"):
        SenderSetup.start(dataclasses.replace(offer, session_id=offer.session_id + b"!"))
    sender_setup, choice = SenderSetup.start(offer)
    assert len(choice.pk0) == KAPPA and choice.session_id == offer.session_id

    with pytest.raises(InvalidInputError, match="session id does not match"):
        receiver_setup.finish(dataclasses.replace(choice, session_id=bytes(16)))
    with pytest.raises(InvalidInputError, match="must carry 128 group elements"):
        receiver_setup.finish(dataclasses.replace(choice, pk0=choice.pk0[:127]))
    pk0 = list(choice.pk0)
    pk0[5] = offer.c  # then PK_{5,1} = C / pk0[5] = 1
    with pytest.raises(CryptoError, match=r"C / pk0\[5\] is out of range"):
        receiver_setup.finish(dataclasses.replace(choice, pk0=tuple(pk0)))

    receiver, reply = receiver_setup.finish(choice)
    with pytest.raises(PreconditionError, match="already finished"):
        receiver_setup.finish(choice)

    with pytest.raises(InvalidInputError, match="session id does not match"):
        sender_setup.finish(dataclasses.replace(reply, session_id=bytes(16)))
    with pytest.raises(InvalidInputError, match="e0 must be a tuple of 128 ints"):
        sender_setup.finish(dataclasses.replace(reply, e0=reply.e0[:-1]))
    with pytest.raises(InvalidInputError, match=r"e1\[3\] must be an int in \[0, 2\^128\)"):
        sender_setup.finish(dataclasses.replace(reply, e1=(*reply.e1[:3], 1 << 128, *reply.e1[4:])))
    sender = sender_setup.finish(reply)
    with pytest.raises(PreconditionError, match="already finished"):
        sender_setup.finish(reply)

    choices, pairs = _random_batch(random.Random(8), 8)
    assert _transfer(receiver, sender, choices, pairs) == [p[r] for p, r in zip(pairs, choices, strict=True)]


def test_a_tampered_seed_is_caught_by_the_consistency_check() -> None:
    """Flip one bit of every encrypted seed: the bureau's seeds no longer match the bank's, and the
    consistency check refuses the batch before a message is sent."""
    receiver_setup, offer = ReceiverSetup.start()
    sender_setup, choice = SenderSetup.start(offer)
    receiver, reply = receiver_setup.finish(choice)
    tampered = dataclasses.replace(
        reply, e0=tuple(e ^ 1 for e in reply.e0), e1=tuple(e ^ 1 for e in reply.e1)
    )
    sender = sender_setup.finish(tampered)
    choices, pairs = _random_batch(random.Random(9), 50)
    with pytest.raises(CryptoError, match="consistency check"):
        _transfer(receiver, sender, choices, pairs)


# ---------------------------------------------------------------------- fixed vectors and constants


SEED = bytes(range(16))
NONCE = bytes(range(16, 32))
SESSION = bytes(range(32, 48))


def test_prg_fixed_vector_and_definition() -> None:
    out = ot._prg(SEED, NONCE, 500)
    assert len(out) == 63
    assert out[:32].hex() == "ea665547457535c1942929717b939ef37aae7d19e48951d9af95c6e775f665bc"
    assert ot._prg(SEED, NONCE, 9).hex() == "26eb"
    expected = hashlib.shake_128(b"blindscore/ot/G/v1" + SEED + NONCE + (500).to_bytes(4, "big")).digest(63)
    assert out == expected
    # The count is bound in: a shorter batch under the same nonce is not a prefix of a longer one.
    assert ot._prg(SEED, NONCE, 16) != out[:2]
    assert ot._prg(SEED, NONCE, 499) != out


def test_row_hash_fixed_vector_and_definition() -> None:
    """H(session, nonce, j, row) = TCCR under AES key SHA-256(tag || session || nonce)[:16], checked
    against the definition written out block by block (sigma, the tweak j, one raw AES call)."""
    rows = np.arange(48, dtype=np.uint8).reshape(3, 16)
    out = ot._hash_rows(SESSION, NONCE, rows)
    assert out.shape == (3, 16)
    assert out.tobytes().hex() == (
        "93b874bfd38daf6a0c9b7cce1d7e048212e193ce5304e70ed008b8701d11ca24920436182c4339ad7ee6629b6e70dfa5"
    )
    key = hashlib.sha256(b"blindscore/ot/H/v2" + SESSION + NONCE).digest()[:16]
    for j in range(3):
        x = rows[j].tobytes()
        sigma = bytes(a ^ b for a, b in zip(x[:8], x[8:], strict=True)) + x[:8]
        block = bytes(a ^ b for a, b in zip(sigma, j.to_bytes(16, "big"), strict=True))
        pi = Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(block)
        assert out[j].tobytes() == bytes(a ^ b for a, b in zip(pi, block, strict=True))
    # The nonce is bound in: another batch of the same session hashes the same rows differently.
    assert ot._hash_rows(SESSION, bytes(16), rows).tobytes() != out.tobytes()


def test_base_kdf_fixed_vector() -> None:
    assert ot._base_kdf(SESSION, 5, 1, 4, 16, 64) == 0xCCF583436431EC684B15FC93A51BA26E
    assert ot._base_kdf(SESSION, 5, 0, 4, 16, 64) != ot._base_kdf(SESSION, 5, 1, 4, 16, 64)
    assert ot._base_kdf(SESSION, 4, 1, 4, 16, 64) != ot._base_kdf(SESSION, 5, 1, 4, 16, 64)


def test_rows_is_the_bit_transpose() -> None:
    rng = np.random.default_rng(7)
    count = 13
    columns = rng.integers(0, 256, size=(KAPPA, 2), dtype=np.uint8)
    rows = ot._rows(columns, count)
    assert rows.shape == (count, 16)
    for j in range(count):
        for i in range(KAPPA):
            column_bit = (columns[i, j // 8] >> (7 - j % 8)) & 1
            row_bit = (rows[j, i // 8] >> (7 - i % 8)) & 1
            assert column_bit == row_bit


def test_group_is_rfc3526_group_14() -> None:
    assert P.bit_length() == 2048
    assert gmpy2.is_prime(P, 50)
    assert GROUP.q == (P - 1) // 2 and gmpy2.is_prime(GROUP.q, 50)
    # RFC 3526 section 3: p = 2^2048 - 2^1984 - 1 + 2^64 * ( [2^1918 pi] + 124476 )
    with gmpy2.context(gmpy2.get_context(), precision=4000):
        pi_part = int(gmpy2.floor(gmpy2.const_pi() * gmpy2.mpfr(2) ** 1918))
    assert 2**2048 - 2**1984 - 1 + 2**64 * (pi_part + 124476) == P
    assert hex(P).startswith("0xffffffffffffffffc90fdaa22168c234c4c6628b80dc1cd1")
    assert hex(P).endswith("15728e5a8aacaa68ffffffffffffffff")
    assert GROUP.g == 4 and gmpy2.powmod(GROUP.g, GROUP.q, P) == 1
    assert GROUP.element_bytes == 256


def test_residue_check_matches_eulers_criterion() -> None:
    rng = random.Random(12)
    for _ in range(20):
        x = rng.randrange(2, P - 1)
        is_residue = gmpy2.powmod(x, GROUP.q, P) == 1
        if is_residue:
            assert GROUP.check_element(x, "x") == x
        else:
            with pytest.raises(CryptoError, match="not in the prime-order subgroup"):
                GROUP.check_element(x, "x")
        # -1 is a non-residue, so exactly one of x and p - x is a residue.
        assert (gmpy2.powmod(P - x, GROUP.q, P) == 1) != is_residue


def test_messages_have_the_documented_shapes(session: tuple[OtReceiver, OtSender]) -> None:
    _, offer = ReceiverSetup.start()
    assert len(offer.session_id) == 16 and GROUP.check_element(offer.c, "c") == offer.c
    receiver, sender = session
    request = receiver.request([1, 0, 1])
    assert isinstance(request, ExtensionRequest)
    assert request.count == 3 and len(request.nonce) == 16 and len(request.u) == 128 * 17
    assert len(request.check) == ot.CHECK_BYTES == 8 + 64 * 16
    reply = sender.reply(request, [(1, 2), (3, 4), (5, 6)])
    assert len(reply.y0) == len(reply.y1) == 48
    with pytest.raises(dataclasses.FrozenInstanceError, match=r"^cannot assign to field 'count'$"):
        request.count = 4  # type: ignore[misc]


# ---------------------------------------------------------------------- secrecy


def _secret_holders() -> list[object]:
    receiver_setup, offer = ReceiverSetup.start()
    sender_setup, choice = SenderSetup.start(offer)
    fresh_receiver_setup, _ = ReceiverSetup.start()
    receiver, reply = receiver_setup.finish(choice)
    fresh_sender_setup, _ = SenderSetup.start(offer)
    sender = sender_setup.finish(reply)
    return [fresh_receiver_setup, fresh_sender_setup, receiver, sender]


def test_secret_holders_cannot_be_pickled_copied_or_printed() -> None:
    holders = _secret_holders()
    receiver, sender = holders[2], holders[3]
    assert isinstance(receiver, OtReceiver) and isinstance(sender, OtSender)
    secrets_hex = [s.hex() for s in (*receiver._seeds0, *receiver._seeds1)] + [sender._s_row.tobytes().hex()]
    for holder in holders:
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(holder)
        with pytest.raises(TypeError, match="cannot be copied"):
            copy.copy(holder)
        with pytest.raises(TypeError, match="cannot be copied"):
            copy.deepcopy(holder)
        text = repr(holder)
        assert str(holder) == text
        assert text == f"{type(holder).__name__}(session_id={holder.session_id.hex()}, <secret>)"  # type: ignore[attr-defined]
        assert not any(s in text for s in secrets_hex)
        assert not hasattr(holder, "__dict__")


# ---------------------------------------------------------------------- a deviating receiver


def deviating_request(receiver: OtReceiver, choices: list[int], column: int) -> ExtensionRequest:
    """A bank whose column ``column`` of u encodes other choice bits (r XOR e, e != 0) than the
    rest; it computes the consistency check as well as it can, from its real r and t."""
    count = len(choices)
    m = count + ot.PAD
    nonce = secrets.token_bytes(16)
    r = np.concatenate((np.array(choices, dtype=np.uint8), np.zeros(ot.PAD, dtype=np.uint8)))
    t = ot._columns(receiver._seeds0, nonce, m)
    u = t ^ ot._columns(receiver._seeds1, nonce, m) ^ np.packbits(r)
    e = np.zeros(m, dtype=np.uint8)
    e[: count // 2] = 1
    u[column] ^= np.packbits(e)
    check = ot._check_values(
        ot._challenges(receiver.session_id, nonce, count, u.tobytes()), np.packbits(r), t
    )
    return ExtensionRequest(receiver.session_id, nonce, count, u.tobytes(), check)


def test_a_receiver_with_inconsistent_columns_is_refused(
    session: tuple[OtReceiver, OtSender], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inconsistent choice vectors are how a bank would learn s bit by bit, then both messages
    (Delta, for a garbled circuit). In a column where s_i = 1 the check refuses it before anything
    is sent; where s_i = 0 the column has no effect on what the bureau sends (what the bank can
    still learn is that selective-failure bit). Negative control: without the check the deviating
    request is answered."""
    receiver, sender = session
    choices, pairs = _random_batch(random.Random(21), 40)
    s_bits = np.unpackbits(sender._s_row)
    one, zero = int(np.flatnonzero(s_bits)[0]), int(np.flatnonzero(s_bits == 0)[0])
    with pytest.raises(CryptoError, match=r"^the OT extension request failed its consistency check"):
        sender.reply(deviating_request(receiver, choices, one), pairs)
    sender.reply(deviating_request(receiver, choices, zero), pairs)
    monkeypatch.setattr(ot, "_verify", lambda *args: None)
    reply = sender.reply(deviating_request(receiver, choices, one), pairs)
    assert len(reply.y0) == 16 * 40


def test_the_check_hides_the_choices(session: tuple[OtReceiver, OtSender]) -> None:
    """The check's parities x_k cover the random padding too: the same choices give other x."""
    receiver, _ = session
    choices = [1, 0] * 20
    xs = {receiver.request(choices).check[:8] for _ in range(20)}
    assert len(xs) == 20


def test_the_check_values_are_the_documented_sums() -> None:
    """x_k = XOR_j chi_kj r_j and t~_k = XOR_j chi_kj t_j, computed here row by row from the
    definition, against the word-parallel column form the parties use."""
    rng = np.random.default_rng(4)
    count = 77
    m = count + ot.PAD
    r = rng.integers(0, 2, m, dtype=np.uint8)
    t_columns = np.packbits(rng.integers(0, 2, (KAPPA, m), dtype=np.uint8), axis=1)
    chi = ot._challenges(SESSION, NONCE, count, b"u")
    check = ot._check_values(chi, np.packbits(r), t_columns)
    chi_bits = np.unpackbits(chi.view(np.uint8), axis=1)[:, :m].astype(bool)
    assert not np.unpackbits(chi.view(np.uint8), axis=1)[:, m:].any()  # no bits past the OTs
    rows = ot._rows(t_columns, m)
    x = [int(np.bitwise_xor.reduce(r[sel])) for sel in chi_bits]
    sums = [np.bitwise_xor.reduce(rows[sel], axis=0).tobytes() for sel in chi_bits]
    assert check == np.packbits(x).tobytes() + b"".join(sums)


# ---------------------------------------------------------------------- correlated OT


@pytest.mark.parametrize("count", [1, 9, 500])
def test_correlated_ot_gives_x0_or_x0_xor_delta(session: tuple[OtReceiver, OtSender], count: int) -> None:
    """Delta = s: the receiver's labels are the pairs' chosen halves, with nothing sent back."""
    receiver, sender = session
    rng = random.Random(count)
    choices = [rng.getrandbits(1) for _ in range(count)]
    request = receiver.request(choices)
    pairs = sender.correlated(request)
    got = receiver.receive_correlated(request.nonce, count)
    assert [int.from_bytes(got[j * 16 : (j + 1) * 16], "big") for j in range(count)] == [
        pairs[j][c] for j, c in enumerate(choices)
    ]
    delta = pairs.buffers()[1]
    assert delta[15] & 1  # the point-and-permute bit
    assert all(b ^ a == int.from_bytes(delta, "big") for a, b in (pairs[j] for j in range(count)))


def test_correlated_delta_is_the_sessions_and_labels_are_fresh_per_batch(
    session: tuple[OtReceiver, OtSender],
) -> None:
    """One Delta for every batch of a session (its s); 0-labels q_j differ batch to batch and row
    to row, even for the same choices."""
    receiver, sender = session
    choices = [0, 1] * 64
    first, delta1 = sender.correlated(receiver.request(choices)).buffers()
    second, delta2 = sender.correlated(receiver.request(choices)).buffers()
    assert delta1 == delta2
    assert first != second and len(set(first[i : i + 16] for i in range(0, len(first), 16))) == len(choices)


def test_a_setup_always_gives_s_its_lowest_bit() -> None:
    """s is the garbling's Delta, so SenderSetup sets lsb(s) whatever it drew (drawn 0x00 here)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ot.secrets, "token_bytes", lambda n: bytes(n))
        receiver_setup, offer = ReceiverSetup.start()
        sender_setup, choice = SenderSetup.start(offer)
    receiver, reply = receiver_setup.finish(choice)
    sender = sender_setup.finish(reply)
    pairs = sender.correlated(receiver.request([1, 0]))
    assert pairs.buffers()[1] == bytes(15) + b"\x01"


def test_a_session_whose_s_has_lsb_0_is_not_a_delta() -> None:
    """An OtSender built with lsb(s) = 0 (not through SenderSetup) refuses to hand it out as Delta."""
    s = bytes(range(1, 16)) + b"\x02"
    sender = OtSender(bytes(16), s, [bytes([i]) * 16 for i in range(128)])
    receiver = OtReceiver(
        bytes(16), [bytes([i]) * 16 for i in range(128)], [bytes([i]) * 16 for i in range(128)]
    )
    with pytest.raises(
        PreconditionError, match=r"^this OT session's s has lsb 0 and cannot be a garbling's Delta$"
    ):
        sender.correlated(receiver.request([1]))


def test_the_receivers_view_of_a_correlated_ot_hides_delta() -> None:
    """What the bank holds after a correlated OT is its labels t_j, which are all it gets: they
    are computed from its own seeds and nonce, so two bureaus with different s (Delta) over the
    same base-OT seeds give the bank the very same view, while each bureau's pairs hold that view
    as the chosen halves. No XOR of two of the bank's labels is Delta. Negative control: one
    0-label and one 1-label of a wire (what a bank must never hold) XOR to Delta."""
    rng = random.Random(5)
    seeds0 = [rng.randbytes(16) for _ in range(128)]
    seeds1 = [rng.randbytes(16) for _ in range(128)]
    receiver = OtReceiver(bytes(16), seeds0, seeds1)
    choices = [0, 1] * 32
    request = receiver.request(choices)
    labels = receiver.receive_correlated(request.nonce, len(choices))
    blocks = [labels[i : i + 16] for i in range(0, len(labels), 16)]
    deltas = set()
    for s in (rng.randbytes(15) + b"\x01", rng.randbytes(15) + b"\x81"):
        bits = np.unpackbits(np.frombuffer(s, dtype=np.uint8)).tolist()
        sender = OtSender(
            bytes(16), s, [k1 if b else k0 for k0, k1, b in zip(seeds0, seeds1, bits, strict=True)]
        )
        pairs = sender.correlated(request)
        assert [pairs[j][c].to_bytes(16, "big") for j, c in enumerate(choices)] == blocks
        delta = pairs.buffers()[1]
        deltas.add(delta)
        xors = {bytes(a ^ b for a, b in zip(x, y, strict=True)) for x in blocks for y in blocks}
        assert delta not in xors
        zero, one = pairs.arrays()
        assert bytes(zero[0] ^ one[0]) == delta  # the negative control
    assert len(deltas) == 2


def test_correlated_ot_runs_the_consistency_check(session: tuple[OtReceiver, OtSender]) -> None:
    """A request whose columns encode different choice vectors is refused before any label exists:
    with Delta = s and unhashed labels, the check is what keeps s, so Delta, from a deviating bank."""
    receiver, sender = session
    request = receiver.request([1, 0, 1] * 50)
    u = bytearray(request.u)
    u[0] ^= 0x80  # column 0's first choice bit only
    with pytest.raises(CryptoError, match="consistency check"):
        sender.correlated(dataclasses.replace(request, u=bytes(u)))


def test_correlated_ot_refusals(session: tuple[OtReceiver, OtSender]) -> None:
    receiver, _ = session
    request = receiver.request([1, 0, 1])
    with pytest.raises(InvalidInputError, match=r"^the extension nonce must be 16 bytes$"):
        receiver.receive_correlated(request.nonce[:-1], 3)
    with pytest.raises(
        InvalidInputError, match=r"^the OT count must be an integer from 1 to 1000000, got 0$"
    ):
        receiver.receive_correlated(request.nonce, 0)


def test_a_deviating_bank_learns_delta_bits_only_without_the_check(
    session: tuple[OtReceiver, OtSender], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack the check stops, played to the end now that Delta = s. The bank flips the first
    OT's choice bit in column i only; its label for that wire is then valid exactly when s_i = 0,
    so whether the garbled circuit evaluates (its output tags) tells it bit i of Delta. With the
    check, a column with s_i = 1 is refused before any label pair exists (and the link drops the
    session: a new s), so all the bank keeps is KOS's selective-failure bit "s_i = 0" of the
    columns that passed. Without the check (the broken variant) it reads the 1 bits too, with the
    session going on: all of Delta, one column at a time."""
    from blindscore.crypto import halfgates
    from blindscore.crypto.circuit import CircuitBuilder

    receiver, sender = session
    b = CircuitBuilder()
    x = b.evaluator_input(2)
    b.output(b.and_(x[0], x[1]))
    circuit = b.build()
    choices = [1, 1]
    columns = list(range(0, KAPPA, 9))
    s_bits = np.unpackbits(sender._s_row)

    def read_bit(column: int) -> int:
        request = deviating_request(receiver, choices, column)
        garbled, _ = halfgates.garble(circuit, [], sender.correlated(request))
        labels = receiver.receive_correlated(request.nonce, len(choices))
        try:
            assert halfgates.evaluate(circuit, garbled, labels) == [1]
        except CryptoError:
            return 1
        return 0

    for column in columns:
        if s_bits[column]:
            with pytest.raises(CryptoError, match=r"^the OT extension request failed its consistency check"):
                sender.correlated(deviating_request(receiver, choices, column))
        else:
            assert read_bit(column) == 0
    monkeypatch.setattr(ot, "_verify", lambda *args: None)
    learnt = [read_bit(column) for column in columns]
    assert learnt == [int(s_bits[c]) for c in columns] and 0 < sum(learnt) < len(columns)
