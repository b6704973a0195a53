"""Oblivious transfer at its edges: what mutation testing found untested (docs/testing.md).

The group check at 2 and p - 2, the largest batch, seed values 0 and non-ints, LabelPairs (indexing
from the end, replies from pairs given as buffers, the pickling refusal), and each refusal's whole
text. Sessions and setups are made inside each test, so that what a test checks runs in its body.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import random
import re
from typing import Any

import numpy as np
import pytest

from blindscore.crypto import ot
from blindscore.crypto.ot import (
    GROUP,
    KAPPA,
    MAX_COUNT,
    LabelPairs,
    OtReceiver,
    OtSender,
    ReceiverSetup,
    SenderSetup,
)
from blindscore.errors import CryptoError, InvalidInputError, PreconditionError

SESSION = bytes(range(16))
SEEDS0 = [bytes([i]) * 16 for i in range(KAPPA)]
SEEDS1 = [bytes([255 - i]) * 16 for i in range(KAPPA)]
S = bytes(range(100, 116))
RANGE = "is out of range: a group element must satisfy 1 < x < p - 1"


def exactly(text: str) -> str:
    """A ``pytest.raises(match=...)`` pattern for this whole message and nothing else."""
    return f"^{re.escape(text)}$"


def session() -> tuple[OtReceiver, OtSender]:
    """A consistent pair built from fixed seeds through the public constructors (no base OT)."""
    bits = [(S[i // 8] >> (7 - i % 8)) & 1 for i in range(KAPPA)]
    chosen = [k1 if bit else k0 for k0, k1, bit in zip(SEEDS0, SEEDS1, bits, strict=True)]
    return OtReceiver(SESSION, SEEDS0, SEEDS1), OtSender(SESSION, S, chosen)


def test_the_group_check_at_the_edges_of_its_range() -> None:
    """2 is a quadratic residue (p = 7 mod 8) and so a group element; p - 2 is not (-1 is a
    non-residue), which the residue test, not the range test, must say."""
    assert GROUP.p % 8 == 7
    assert pow(2, GROUP.q, GROUP.p) == 1 and pow(GROUP.p - 2, GROUP.q, GROUP.p) != 1
    assert GROUP.check_element(2, "x") == 2
    with pytest.raises(
        CryptoError, match=exactly("x is not in the prime-order subgroup (not a quadratic residue mod p)")
    ):
        GROUP.check_element(GROUP.p - 2, "x")


def test_the_largest_batch_count_is_allowed() -> None:
    assert ot._check_count(MAX_COUNT) == MAX_COUNT
    with pytest.raises(
        InvalidInputError,
        match=exactly(f"the OT count must be an integer from 1 to {MAX_COUNT}, got 1000001"),
    ):
        ot._check_count(MAX_COUNT + 1)


def test_choice_refusals_have_their_whole_text() -> None:
    receiver, _ = session()
    with pytest.raises(InvalidInputError, match=r"^choices must be a sequence of 0/1 ints: .+"):
        receiver.request([[0], [0, 1]])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match=exactly("choices must be a flat sequence of 0/1 ints")):
        receiver.request([[0, 1]])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match=exactly("choices must be 0 or 1")):
        receiver.request([0, 2])


def test_session_holders_refuse_bad_shapes_with_their_whole_text() -> None:
    with pytest.raises(InvalidInputError, match=exactly("OT receiver: the session id must be 16 bytes")):
        OtReceiver(b"short", SEEDS0, SEEDS1)
    for seeds0, seeds1 in ((SEEDS0[:-1], SEEDS1), (SEEDS0, SEEDS1[:-1])):
        with pytest.raises(InvalidInputError, match=exactly("an OT receiver needs 128 seed pairs")):
            OtReceiver(SESSION, seeds0, seeds1)
    with pytest.raises(InvalidInputError, match=exactly("OT sender: the session id must be 16 bytes")):
        OtSender(b"short", S, SEEDS0)
    for s, seeds in ((S[:-1], SEEDS0), (S, SEEDS0[:-1])):
        with pytest.raises(InvalidInputError, match=exactly("an OT sender needs a 128-bit s and 128 seeds")):
            OtSender(SESSION, s, seeds)
    receiver, sender = session()
    request = receiver.request([0, 1, 1])
    with pytest.raises(
        InvalidInputError, match=exactly("OT extension request: the session id must be 16 bytes")
    ):
        sender.reply(dataclasses.replace(request, session_id=b"short"), [(1, 2)] * 3)
    with pytest.raises(
        InvalidInputError,
        match=exactly("OT extension request: the session id does not match this OT session"),
    ):
        sender.reply(dataclasses.replace(request, session_id=bytes(16)), [(1, 2)] * 3)


def test_setup_refusals_have_their_whole_text() -> None:
    """One base OT, each message refused once with its full text; a seed value 0 is accepted."""
    with pytest.raises(InvalidInputError, match=exactly("OT setup: the session id must be 16 bytes")):
        ReceiverSetup(b"short", 4)
    bank, offer = ReceiverSetup.start()
    with pytest.raises(InvalidInputError, match=exactly("OT setup offer: the session id must be 16 bytes")):
        SenderSetup.start(dataclasses.replace(offer, session_id=b"short"))
    with pytest.raises(CryptoError, match=exactly(f"OT setup offer C {RANGE}")):
        SenderSetup.start(dataclasses.replace(offer, c=1))
    bureau, choice = SenderSetup.start(offer)
    with pytest.raises(InvalidInputError, match=exactly("OT setup choice: the session id must be 16 bytes")):
        bank.finish(dataclasses.replace(choice, session_id=b"short"))
    _, reply = bank.finish(choice)
    finished = "this OT setup has already finished; start a new one"
    with pytest.raises(PreconditionError, match=exactly(finished)):
        bank.finish(choice)
    with pytest.raises(InvalidInputError, match=exactly("OT setup reply: the session id must be 16 bytes")):
        bureau.finish(dataclasses.replace(reply, session_id=b"short"))
    with pytest.raises(InvalidInputError, match=exactly("OT setup reply e0 must be a tuple of 128 ints")):
        bureau.finish(dataclasses.replace(reply, e0=reply.e0[:-1]))
    seed_message = exactly("OT setup reply e1[3] must be an int in [0, 2^128)")
    bad_seeds: list[Any] = [True, 1.5, "7", -1, 1 << 128]
    for bad in bad_seeds:
        with pytest.raises(InvalidInputError, match=seed_message):
            bureau.finish(dataclasses.replace(reply, e1=(*reply.e1[:3], bad, *reply.e1[4:])))
    with pytest.raises(CryptoError, match=exactly(f"OT setup reply g^r {RANGE}")):
        bureau.finish(dataclasses.replace(reply, gr=1))
    # 0 and 2^128 - 1 are values an encrypted seed can take: accepted (that seed is then wrong).
    edge = dataclasses.replace(reply, e0=(0, *reply.e0[1:]), e1=(*reply.e1[:-1], (1 << 128) - 1))
    assert isinstance(bureau.finish(edge), OtSender)
    with pytest.raises(PreconditionError, match=exactly(finished)):
        bureau.finish(reply)


def test_label_pairs_index_from_both_ends() -> None:
    rng = random.Random(3)
    zero, delta = rng.randbytes(16 * 5), rng.randbytes(16)
    pairs = LabelPairs(zero, delta)
    d = int.from_bytes(delta, "big")
    first = int.from_bytes(zero[:16], "big")
    assert pairs[0] == pairs[-5] == (first, first ^ d)
    assert pairs[4] == pairs[-1]
    for j in (5, -6):
        with pytest.raises(IndexError, match=exactly("label pair index out of range")):
            pairs[j]
    for z, dl in ((zero[:-1], delta), (zero, delta[:-1]), (zero, delta + b"\0")):
        with pytest.raises(
            InvalidInputError, match=exactly("label pairs are 16-byte blocks and one 16-byte Delta")
        ):
            LabelPairs(z, dl)


def test_label_pairs_refuse_pickling_and_copying() -> None:
    pairs = LabelPairs(bytes(32), bytes(16))
    message = exactly("LabelPairs reveal Delta and cannot be pickled or copied")
    for action in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(TypeError, match=message):
            action(pairs)


def test_a_reply_from_label_pairs_equals_one_from_int_pairs() -> None:
    """The garbler hands the OT sender LabelPairs (buffers); the reply must be the one for the same
    pairs given as ints, and the receiver must get x0 or x0 ^ Delta."""
    receiver, sender = session()
    rng = random.Random(5)
    count = 21
    zero, delta = rng.randbytes(16 * count), rng.randbytes(16)
    pairs = LabelPairs(zero, delta)
    choices = [rng.getrandbits(1) for _ in range(count)]
    request = receiver.request(choices)
    as_ints = [pairs[j] for j in range(count)]
    reply = sender.reply(request, pairs)
    assert reply == sender.reply(request, as_ints)
    assert receiver.receive(request.nonce, choices, reply) == [
        p[r] for p, r in zip(as_ints, choices, strict=True)
    ]
    x0, x1 = pairs.arrays()
    assert x0.shape == x1.shape == (count, 16)
    assert x0.tobytes() == zero
    assert x1.tobytes() == b"".join(p[1].to_bytes(16, "big") for p in as_ints)


@pytest.mark.parametrize(("words", "vectors"), [(1, 1), (3, 128), (63, 2), (64, 128), (65, 3), (200, 1)])
def test_check_parities_equal_a_bit_by_bit_reference_on_either_loop(words: int, vectors: int) -> None:
    """``_parities`` loops over words when there are fewer than the checks, else over the checks:
    both must give parity(chi_k AND v_i) bit by bit, at the edge (63, 64, 65 words) and away."""
    rng = random.Random(words * 1000 + vectors)
    checks = 64
    chi_ints = [[rng.getrandbits(64) for _ in range(words)] for _ in range(checks)]
    vec_ints = [[rng.getrandbits(64) for _ in range(words)] for _ in range(vectors)]
    expected = [
        [sum(bin(c & v).count("1") for c, v in zip(chi, vec, strict=True)) & 1 for vec in vec_ints]
        for chi in chi_ints
    ]
    got = ot._parities(
        np.array(chi_ints, dtype=np.uint64).reshape(checks, words),
        np.array(vec_ints, dtype=np.uint64).reshape(vectors, words),
    )
    assert got.dtype == np.uint8 and got.shape == (checks, vectors)
    assert got.tolist() == expected
