"""Base OT and IKNP transcripts checked by an independent decoder, plus a pinned transcript vector.

The library's randomness is fixed by replacing the ``secrets`` module that ``blindscore.crypto.ot``
imported with :class:`ScriptedSecrets`, which hands out given values in order: the session id, s
and the padding choice bits (``token_bytes``), the exponents c, a_0..a_127 and r (``randbelow``,
the library drawing an exponent as 1 + randbelow(2^256 - 1)), and the seeds k_i^0 then k_i^1
(``randbits``). The decoder is told the same secrets, never the library's intermediate values.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from blindscore.crypto import ot
from blindscore.crypto.ot import (
    ExtensionReply,
    ExtensionRequest,
    OtReceiver,
    OtSender,
    ReceiverSetup,
    SenderSetup,
    SetupChoice,
    SetupOffer,
    SetupReply,
)

import independent_ot as ref

HERE = Path(__file__).parent
VECTOR_FILE = HERE / "vectors" / "ot_small.json"
EXPONENT_BOUND = (1 << 256) - 1


class ScriptedSecrets:
    """Stands in for the ``secrets`` module inside blindscore.crypto.ot: scripted values, in order."""

    def __init__(self, tokens: list[bytes], exponents: list[int], seeds: list[int]) -> None:
        self.tokens, self.exponents, self.seeds = list(tokens), list(exponents), list(seeds)

    def token_bytes(self, n: int) -> bytes:
        value = self.tokens.pop(0)
        assert len(value) == n
        return value

    def randbelow(self, n: int) -> int:
        assert n == EXPONENT_BOUND
        return self.exponents.pop(0) - 1

    def randbits(self, k: int) -> int:
        assert k == ref.KAPPA
        return self.seeds.pop(0)

    compare_digest = staticmethod(hmac.compare_digest)

    def spent(self) -> bool:
        return not (self.tokens or self.exponents or self.seeds)


@dataclass(frozen=True)
class Secrets:
    """Everything both parties draw, and the batch's inputs."""

    session: bytes
    c: int
    s: bytes
    a: list[int]
    r: int
    seeds0: list[int]
    seeds1: list[int]
    nonce: bytes
    choices: list[int]
    pad_bits: list[int]
    pairs: list[tuple[int, int]]

    @property
    def bureau_s(self) -> bytes:
        """The s the bureau uses: the drawn one with its lowest bit set (it is also Delta)."""
        return ref.bureau_s(self.s)

    @property
    def sender_seeds(self) -> list[int]:
        """k_i^{s_i}: the seeds the bureau must end the base OT with."""
        return [
            k1 if bit else k0
            for k0, k1, bit in zip(self.seeds0, self.seeds1, ref.bits_of(self.bureau_s), strict=True)
        ]


def make_secrets(label: str, count: int) -> Secrets:
    rng = random.Random(label)

    def exponent() -> int:
        return 1 + rng.randrange(EXPONENT_BOUND)

    return Secrets(
        session=rng.randbytes(16),
        c=exponent(),
        s=rng.randbytes(16),
        a=[exponent() for _ in range(ref.KAPPA)],
        r=exponent(),
        seeds0=[rng.getrandbits(128) for _ in range(ref.KAPPA)],
        seeds1=[rng.getrandbits(128) for _ in range(ref.KAPPA)],
        nonce=rng.randbytes(16),
        choices=[rng.getrandbits(1) for _ in range(count)],
        pad_bits=[rng.getrandbits(1) for _ in range(ref.PAD)],
        pairs=[(rng.getrandbits(128), rng.getrandbits(128)) for _ in range(count)],
    )


@dataclass(frozen=True)
class LibrarySetup:
    """The base OT as the library ran it."""

    offer: SetupOffer
    choice: SetupChoice
    reply: SetupReply
    receiver: OtReceiver
    sender: OtSender


@dataclass(frozen=True)
class LibraryRun:
    """What the library sent and output with :class:`Secrets` as its randomness."""

    setup: LibrarySetup
    request: ExtensionRequest
    ext_reply: ExtensionReply
    received: list[int]
    zero_labels: bytes
    delta: bytes
    received_correlated: bytes


def run_setup(sec: Secrets) -> LibrarySetup:
    fake = ScriptedSecrets(
        tokens=[sec.session, sec.s], exponents=[sec.c, *sec.a, sec.r], seeds=[*sec.seeds0, *sec.seeds1]
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ot, "secrets", fake)
        bank_setup, offer = ReceiverSetup.start()
        bureau_setup, choice = SenderSetup.start(offer)
        receiver, reply = bank_setup.finish(choice)
        sender = bureau_setup.finish(reply)
    assert fake.spent()
    return LibrarySetup(offer, choice, reply, receiver, sender)


def run_batch(sec: Secrets, setup: LibrarySetup) -> LibraryRun:
    """One IKNP batch, plain then correlated, on the session ``setup`` made."""
    fake = ScriptedSecrets(tokens=[ref.pack(sec.pad_bits)], exponents=[], seeds=[])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ot, "secrets", fake)
        request = setup.receiver.request(sec.choices, sec.nonce)
    assert fake.spent()
    ext_reply = setup.sender.reply(request, sec.pairs)
    pairs = setup.sender.correlated(request)
    receiver = setup.receiver
    return LibraryRun(
        setup=setup,
        request=request,
        ext_reply=ext_reply,
        received=receiver.receive(sec.nonce, sec.choices, ext_reply),
        zero_labels=pairs.buffers()[0],
        delta=pairs.buffers()[1],
        received_correlated=receiver.receive_correlated(sec.nonce, len(sec.choices)),
    )


@dataclass(frozen=True)
class DecodedSetup:
    """What the decoder says the base-OT messages and the bureau's seeds must be."""

    c: int
    pk0: list[int]
    gr: int
    e0: list[int]
    e1: list[int]
    bureau_seeds: list[int]


@dataclass(frozen=True)
class Decoded:
    """What the decoder says each message and output must be."""

    setup: DecodedSetup
    request: ref.Request
    y0: bytes
    y1: bytes
    received: list[int]
    zero_labels: bytes
    delta: bytes
    received_correlated: bytes


def decode_setup(sec: Secrets) -> DecodedSetup:
    """Each base-OT message recomputed from its sender's secrets and what it received."""
    c = ref.bank_offer(sec.c)
    pk0 = ref.bureau_choice(c, sec.bureau_s, sec.a)
    gr, e0, e1 = ref.bank_reply(sec.session, c, pk0, sec.r, sec.seeds0, sec.seeds1)
    return DecodedSetup(c, pk0, gr, e0, e1, ref.bureau_seeds(sec.session, sec.bureau_s, sec.a, gr, e0, e1))


def decode(sec: Secrets, setup: DecodedSetup, variant: ref.Variant = ref.CORRECT) -> Decoded:
    """The batch's messages and outputs, from the secrets and the decoded setup."""
    count = len(sec.choices)
    request = ref.receiver_request(sec.session, sec.seeds0, sec.seeds1, sec.nonce, sec.choices, sec.pad_bits)
    s = sec.bureau_s
    q = ref.sender_rows(sec.session, s, setup.bureau_seeds, sec.nonce, count, request, variant)
    h0, h1 = ref.sender_pads(sec.session, s, q, sec.nonce, variant)
    y0, y1 = ref.sender_reply(h0, h1, sec.pairs)
    t = ref.receiver_rows(sec.seeds0, sec.nonce, count, variant)
    pads = ref.receiver_pads(sec.session, t, sec.nonce, variant)
    return Decoded(
        setup=setup,
        request=request,
        y0=y0,
        y1=y1,
        received=ref.receiver_output(pads, sec.choices, y0, y1),
        zero_labels=ref.correlated_zero_labels(q),
        delta=s,
        received_correlated=ref.receiver_correlated(t),
    )


def mismatches(lib: LibraryRun, dec: Decoded) -> list[str]:
    """The messages and outputs where the library and the decoder differ."""
    ls, ds = lib.setup, dec.setup
    pairs: dict[str, tuple[object, object]] = {
        "C": (ls.offer.c, ds.c),
        "pk0": (list(ls.choice.pk0), ds.pk0),
        "g^r": (ls.reply.gr, ds.gr),
        "e0": (list(ls.reply.e0), ds.e0),
        "e1": (list(ls.reply.e1), ds.e1),
        "u": (lib.request.u, dec.request.u),
        "check": (lib.request.check, dec.request.check),
        "y0": (lib.ext_reply.y0, dec.y0),
        "y1": (lib.ext_reply.y1, dec.y1),
        "received": (lib.received, dec.received),
        "zero_labels": (lib.zero_labels, dec.zero_labels),
        "delta": (lib.delta, dec.delta),
        "received_correlated": (lib.received_correlated, dec.received_correlated),
    }
    return [name for name, (a, b) in pairs.items() if a != b]


def chosen_messages(sec: Secrets) -> list[int]:
    return [pair[r] for pair, r in zip(sec.pairs, sec.choices, strict=True)]


SECRETS = make_secrets("blindscore/vectors/ot/v1", count=5)


@pytest.fixture(scope="module")
def library() -> LibraryRun:
    return run_batch(SECRETS, run_setup(SECRETS))


@pytest.fixture(scope="module")
def decoded() -> Decoded:
    return decode(SECRETS, decode_setup(SECRETS))


# ---------------------------------------------------------------------- the decoder is independent


def test_the_decoder_imports_nothing_from_blindscore() -> None:
    tree = ast.parse((HERE / "independent_ot.py").read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {m.split(".")[0] for m in modules} == {
        "__future__",
        "hashlib",
        "collections",
        "dataclasses",
        "cryptography",
        "gmpy2",
    }


def test_the_decoder_is_a_working_ot(decoded: Decoded) -> None:
    """Sanity of the decoder alone: the bureau ends with k_i^{s_i}, the receiver learns x_{r_j},
    and the correlated labels are x0_j or x0_j ^ Delta, Delta = s with its lowest bit set."""
    assert decoded.setup.bureau_seeds == SECRETS.sender_seeds
    assert decoded.received == chosen_messages(SECRETS)
    assert decoded.delta == SECRETS.bureau_s and decoded.delta[15] & 1
    delta = int.from_bytes(decoded.delta, "big")
    count = len(SECRETS.choices)
    zero = [int.from_bytes(decoded.zero_labels[16 * j : 16 * j + 16], "big") for j in range(count)]
    got = [int.from_bytes(decoded.received_correlated[16 * j : 16 * j + 16], "big") for j in range(count)]
    assert got == [z ^ (delta if r else 0) for z, r in zip(zero, SECRETS.choices, strict=True)]


# ---------------------------------------------------------------------- library == decoder


def test_every_message_and_output_matches_the_decoder(library: LibraryRun, decoded: Decoded) -> None:
    assert mismatches(library, decoded) == []
    assert library.received == chosen_messages(SECRETS)


def test_the_setup_leaves_each_side_with_the_decoded_seeds(library: LibraryRun, decoded: Decoded) -> None:
    """The sender and receiver that the base OT produced behave exactly like ones built from the
    decoder's seeds through the public constructors (same request, same reply bytes)."""
    sec = SECRETS
    bureau_seeds = decoded.setup.bureau_seeds
    sender = OtSender(sec.session, sec.bureau_s, [k.to_bytes(16, "big") for k in bureau_seeds])
    receiver = OtReceiver(
        sec.session, [k.to_bytes(16, "big") for k in sec.seeds0], [k.to_bytes(16, "big") for k in sec.seeds1]
    )
    assert sender.reply(library.request, sec.pairs) == library.ext_reply
    assert receiver.receive(sec.nonce, sec.choices, library.ext_reply) == library.received


@pytest.mark.parametrize("count", [13, 8])
def test_another_batch_size_matches(library: LibraryRun, count: int) -> None:
    """Other counts on the same session: 13 + PAD bits per column (a partial last byte) and 8 + PAD
    (whole bytes: the challenges' last byte is not masked)."""
    sec, setup = SECRETS, library.setup
    rng = random.Random(11 * count)
    choices = [rng.getrandbits(1) for _ in range(count)]
    pad = [rng.getrandbits(1) for _ in range(ref.PAD)]
    pairs = [(rng.getrandbits(128), rng.getrandbits(128)) for _ in choices]
    nonce = rng.randbytes(16)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ot, "secrets", ScriptedSecrets([ref.pack(pad)], [], []))
        request = setup.receiver.request(choices, nonce)
    expected = ref.receiver_request(sec.session, sec.seeds0, sec.seeds1, nonce, choices, pad)
    assert (request.u, request.check) == (expected.u, expected.check)
    q = ref.sender_rows(sec.session, sec.bureau_s, sec.sender_seeds, nonce, len(choices), expected)
    h0, h1 = ref.sender_pads(sec.session, sec.bureau_s, q, nonce)
    reply = setup.sender.reply(request, pairs)
    assert (reply.y0, reply.y1) == ref.sender_reply(h0, h1, pairs)
    t = ref.receiver_rows(sec.seeds0, nonce, len(choices))
    assert setup.sender.correlated(request).buffers() == (ref.correlated_zero_labels(q), sec.bureau_s)
    assert setup.receiver.receive_correlated(nonce, len(choices)) == ref.receiver_correlated(t)
    pads = ref.receiver_pads(sec.session, t, nonce)
    received = setup.receiver.receive(nonce, choices, reply)
    assert received == ref.receiver_output(pads, choices, reply.y0, reply.y1)
    assert received == [pair[r] for pair, r in zip(pairs, choices, strict=True)]


# ---------------------------------------------------------------------- negative controls

BATCH = ["y0", "y1", "received", "zero_labels", "received_correlated"]


@pytest.mark.parametrize(
    ("variant", "fields"),
    [
        (ref.Variant(little_endian_rows=True), BATCH),
        # Consistent with itself: its receiver still unmasks its own sender's y0 / y1. The
        # correlated OT hashes nothing, so its labels stay right.
        (ref.Variant(tweak_shift=1), ["y0", "y1"]),
    ],
    ids=["little-endian-transpose", "wrong-tweak"],
)
def test_a_broken_decoder_fails_the_cross_check(
    library: LibraryRun, decoded: Decoded, variant: ref.Variant, fields: list[str]
) -> None:
    """A decoder with one convention broken disagrees with the library on the sender's messages."""
    assert mismatches(library, decode(SECRETS, decoded.setup, variant)) == fields


@pytest.mark.parametrize(
    ("name", "value", "fields"),
    [
        ("_HASH_TAG", b"blindscore/ot/H/v1", ["y0", "y1"]),
        ("_PRG_TAG", b"blindscore/ot/G/v0", ["u", "check", "y0", "y1", "zero_labels", "received_correlated"]),
        ("_KDF_TAG", b"blindscore/ot/base-kdf/v0", ["e0", "e1"]),
    ],
    ids=["row-hash-domain", "prg-domain", "base-kdf-domain"],
)
def test_a_broken_library_fails_the_cross_check(
    library: LibraryRun,
    decoded: Decoded,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: bytes,
    fields: list[str],
) -> None:
    """The library with one definition changed still works with itself (the receiver gets its
    chosen messages, the same seeds on both sides), but its transcript no longer matches the decoder."""
    monkeypatch.setattr(ot, name, value)
    setup = run_setup(SECRETS) if name == "_KDF_TAG" else library.setup
    lib = run_batch(SECRETS, setup)
    assert lib.received == chosen_messages(SECRETS)
    assert mismatches(lib, decoded) == fields


# ---------------------------------------------------------------------- pinned vector


def _hex_ints(values: list[int], width: int) -> list[str]:
    return [f"{v:0{2 * width}x}" for v in values]


def vector_of(sec: Secrets, dec: Decoded) -> dict[str, Any]:
    """The vector, computed by the decoder (``python tests/test_vectors_ot.py`` rewrites the file)."""
    ds = dec.setup
    return {
        "description": "blindscore OT (ot.py): one base-OT setup and one IKNP batch of 5 OTs (plain and "
        "correlated with Delta = s) from the given secrets; s as drawn (the bureau sets its lowest bit); "
        "ints as big-endian hex, pk0 as SHA-256 of its 128 256-byte big-endian elements",
        "secrets": {
            "session_id": sec.session.hex(),
            "c": f"{sec.c:064x}",
            "s": sec.s.hex(),
            "a": _hex_ints(sec.a, 32),
            "r": f"{sec.r:064x}",
            "seeds0": _hex_ints(sec.seeds0, 16),
            "seeds1": _hex_ints(sec.seeds1, 16),
            "nonce": sec.nonce.hex(),
            "choices": sec.choices,
            "pad_choices": ref.pack(sec.pad_bits).hex(),
            "pairs": [_hex_ints(list(p), 16) for p in sec.pairs],
        },
        "transcript": {
            "C": f"{ds.c:0512x}",
            "pk0_sha256": hashlib.sha256(b"".join(ref.element_bytes(x) for x in ds.pk0)).hexdigest(),
            "gr": f"{ds.gr:0512x}",
            "e0": _hex_ints(ds.e0, 16),
            "e1": _hex_ints(ds.e1, 16),
            "u": dec.request.u.hex(),
            "check": dec.request.check.hex(),
            "y0": dec.y0.hex(),
            "y1": dec.y1.hex(),
            "correlated_zero_labels": dec.zero_labels.hex(),
            "correlated_delta": dec.delta.hex(),
        },
        "outputs": {
            "received": _hex_ints(dec.received, 16),
            "received_correlated": dec.received_correlated.hex(),
        },
    }


def secrets_from_vector(data: dict[str, Any]) -> Secrets:
    s = data["secrets"]
    pad = bytes.fromhex(s["pad_choices"])
    return Secrets(
        session=bytes.fromhex(s["session_id"]),
        c=int(s["c"], 16),
        s=bytes.fromhex(s["s"]),
        a=[int(v, 16) for v in s["a"]],
        r=int(s["r"], 16),
        seeds0=[int(v, 16) for v in s["seeds0"]],
        seeds1=[int(v, 16) for v in s["seeds1"]],
        nonce=bytes.fromhex(s["nonce"]),
        choices=s["choices"],
        pad_bits=ref.bits_of(pad),
        pairs=[(int(x0, 16), int(x1, 16)) for x0, x1 in s["pairs"]],
    )


def test_the_pinned_vector(library: LibraryRun, decoded: Decoded) -> None:
    """The library, fed the vector's secrets, sends and outputs exactly the vector's bytes; so does
    the decoder."""
    data = json.loads(VECTOR_FILE.read_text())
    assert secrets_from_vector(data) == SECRETS  # the file holds the secrets the fixtures ran with
    setup, lib = library.setup, library
    t, out = data["transcript"], data["outputs"]
    assert f"{setup.offer.c:0512x}" == t["C"]
    assert (
        hashlib.sha256(b"".join(x.to_bytes(256, "big") for x in setup.choice.pk0)).hexdigest()
        == t["pk0_sha256"]
    )
    assert f"{setup.reply.gr:0512x}" == t["gr"]
    assert _hex_ints(list(setup.reply.e0), 16) == t["e0"]
    assert _hex_ints(list(setup.reply.e1), 16) == t["e1"]
    assert lib.request.u.hex() == t["u"]
    assert lib.request.check.hex() == t["check"]
    assert lib.ext_reply.y0.hex() == t["y0"]
    assert lib.ext_reply.y1.hex() == t["y1"]
    assert lib.zero_labels.hex() == t["correlated_zero_labels"]
    assert lib.delta.hex() == t["correlated_delta"]
    assert _hex_ints(lib.received, 16) == out["received"]
    assert lib.received_correlated.hex() == out["received_correlated"]
    assert vector_of(SECRETS, decoded) == data


if __name__ == "__main__":
    text = json.dumps(vector_of(SECRETS, decode(SECRETS, decode_setup(SECRETS))), indent=1)
    text = re.sub(r"\[[\d,\s]*\]", lambda m: re.sub(r"\s+", "", m.group()).replace(",", ", "), text)
    VECTOR_FILE.write_text(text + "\n")
