"""Leakage of packed batches: within a band, the bank's whole view of a batch does not depend on the scores.

A curious bank is instrumented as in tests/test_leakage.py: the batch's Paillier ciphertext is
decrypted with its key directly, and the bank's side of the oblivious transfer and of the
garbled circuit is run with the library's OT receiver and evaluator (not through
``bank_node.packed`` or ``open_packed``, which may change), recording everything it receives.
Every batch holds three scores of band 1 in turn (slot a of batch t gets score (a + t) mod 3),
so each score is seen in every slot position. What the bank sees, and the statistic over it,
per score:

1. "slot residues": the masked value of every slot, z_a = s_a + C + R_a: z_a mod 2^j is uniform
   on 2^j values for EVERY j = 1 .. m (m = 76, the width of R_a): jittered KS per j, and exact
   binomial tests of every XOR of the low 4 bits (see leakage_stats).
2. "oblivious transfer": the OT reply (y0, y1) for its choice bits b_a. Its chosen messages are
   its labels (item 3). Bits of y0 and y1 are fair (exact binomial). For the unchosen message it
   computes what its own pad gives, y^(1-r_j) XOR H(t_j) (``OtReceiver.receive`` with the choices
   flipped), and XORs its label: d_j = Delta XOR H(t_j XOR s) XOR H(t_j), pseudorandom when the
   pads work, Delta (lsb 1) in every OT when they do not. Tested: lsb(d_j) fair; no d_j repeated
   within a batch; and (white-box, against the bureau's label pairs) the unchosen label never
   decodes. The last two have honest probability 2^-128 per pair (``impossible_p``).
3. "garbled labels": point-and-permute makes the lsb of an active label the wire's value XOR a
   random permutation bit. The bank knows its own bits b_a, so lsb(label) XOR b_a, its wires'
   permutation bits, must be fair; and for the garbler's input wires it reads the lsbs as a
   would-be value a~_ak and forms X_ak = (b_a - a~_ak) mod 2^(l+1). When the lsbs are the
   garbler's bits a_ak (fixed permutation bits) X_ak = 2^l + sigma_a - gamma_k: the truncated
   score itself. Honest: X_ak uniform on 2^(l+1) values per score and cutoff (jittered KS) and
   alike between scores (two-sample KS). White-box, the lsbs agree with the true a_ak bits
   half the time (exact binomial).
4. "garbled tables": the bits of the garbled tables and the decode bits are fair (exact binomial).
5. The band of every slot: 1, read from the evaluated outputs (asserted).

Negative controls, each swapped in through a module-level hook and required to push the
statistic's smallest p-value below LEAK_P = 1e-12 (observed values in the comments): slot masks
no wider than the score range; kappa = 0 (no statistical margin); no slot mask; slot masks with
their low 20 bits cleared (the motivating bug, as in the per-application path); a fixed
point-and-permute bit (every 0-label with lsb 0, through ``garble._label_bytes``); and, beyond the
issue's list, an OT whose sender and receiver drop the hash pads (``ot._hash_rows`` returning
zeros).

Model: one integer feature x in [0, 2^20 - 1], weight 1, cutoffs 2^16 and 2^20 - 2^16 on the raw
score, precision 32: scale S = 15, T = 19 (T > 0: the bank compares z truncated by 19 bits),
l = 16, 78-bit slots, 26 slots per 2048-bit batch. Scores x = 2^16 + 2^7, 2^19 and
2^20 - 2^16 - 2^7, at least eight truncation steps from every cutoff. 150 batches (1300 slots per
score, about 3 s); the controls run 6 batches each (52 slots per score).

False alarms: this file's honest p-values form one Bonferroni family with FAMILY_ALPHA / 2.
"""

from __future__ import annotations

import itertools
import secrets
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from blindscore.crypto import garble, ot
from blindscore.crypto.paillier import KeyPair
from blindscore.models.features import FeatureSpec, NumericFeature
from blindscore.models.linear import LinearModel
from blindscore.models.policy import BandPolicy
from blindscore.protocol import packing
from blindscore.protocol.comparison import DEFAULT_KAPPA

from leakage_stats import (
    FAMILY_ALPHA,
    LEAK_P,
    Family,
    bits_p,
    impossible_p,
    residue_count,
    residue_pvalues,
    same_p,
    smallest,
    uniform_p,
)

SPEC = FeatureSpec((NumericFeature("x", 0, 2**20 - 1, integer=True),))
CUTOFFS = (2.0**16, 2.0**20 - 2**16)
MODEL = LinearModel("leakage", SPEC, [1.0], 0.0, "identity", BandPolicy(CUTOFFS, output="raw"), precision=32)
K = len(CUTOFFS)
TRUNCATE = 19
BITS = 16
WIDTH = BITS + 1  # the garbled comparisons' input width, l + 1
MASK_BITS = 35 + 1 + DEFAULT_KAPPA  # bitlen(s_max - s_min) + 1 + kappa = 76
SLOT_BITS = 78
SLOTS = 26
SCORES = (2**16 + 2**7, 2**19, 2**20 - 2**16 - 2**7)
BAND = 1
BATCHES = 150  # a multiple of 3: every score gets the same number of slots
CONTROL_BATCHES = 6
LABEL_BITS = 8 * garble.LABEL_BYTES
PAIRS = len(SCORES) * (len(SCORES) - 1) // 2
S = len(SCORES)
#: The honest p-values of each statistic: the Bonferroni family is their sum.
COUNTS = {
    "slot residues": S * residue_count(MASK_BITS),
    "oblivious transfer": S * 4,
    "garbled labels": S * (2 + K) + PAIRS * K,  # two-sample score estimates per pair of scores
    "garbled tables": S * 2,
}
FAMILY_SIZE = sum(COUNTS.values())


# ---------------------------------------------------------------- the instrumented bank


@dataclass
class PackedView:
    """Everything the bank receives or decrypts about the slots of one score, over many batches."""

    z: list[int] = field(default_factory=list)
    bands: list[int] = field(default_factory=list)
    permutation_bits: list[int] = field(default_factory=list)  # lsb(own label) XOR own bit
    estimates: list[list[int]] = field(default_factory=lambda: [[] for _ in CUTOFFS])  # X_ak per cutoff
    agreement: list[int] = field(default_factory=list)  # lsb(garbler label) XOR the garbler's bit
    decode: list[int] = field(default_factory=list)
    table_ones: int = 0
    table_bits: int = 0
    reply_ones: int = 0
    reply_bits: int = 0
    unchosen_lsb: list[int] = field(default_factory=list)  # lsb(d_j)
    unchosen_decoded: int = 0  # OTs whose unchosen label the bank's pad decodes (white-box)
    repeats: int = 0  # repeated d_j among this score's slots of one batch
    pairs: int = 0  # pairs of OTs compared for repeats


@pytest.fixture(scope="module")
def ot_session() -> tuple[ot.OtReceiver, ot.OtSender]:
    """One base-OT session, the bank's receiver and the bureau's sender."""
    bank, offer = ot.ReceiverSetup.start()
    bureau, choice = ot.SenderSetup.start(offer)
    receiver, reply = bank.finish(choice)
    return receiver, bureau.finish(reply)


def _block(data: bytes, index: int) -> int:
    size = garble.LABEL_BYTES
    return int.from_bytes(data[size * index : size * (index + 1)], "big")


def observe(kp: KeyPair, session: tuple[ot.OtReceiver, ot.OtSender], batches: int) -> dict[int, PackedView]:
    """Run ``batches`` full batches (platform, bureau, bank in process); the bank's view per score."""
    pk, sk = kp.public_key, kp.secret_key
    receiver, sender = session
    views = {s: PackedView() for s in SCORES}
    low = (1 << WIDTH) - 1
    for t in range(batches):
        # Slot a of batch t holds score (a + t) mod 3: every score in every slot position.
        scores = [SCORES[(a + t) % len(SCORES)] for a in range(SLOTS)]
        rows = [SPEC.encode_row({"x": x}) for x in scores]
        bureau = packing.PackedBand(
            pk, MODEL, packing.encrypt_packed(pk, SPEC, SLOT_BITS, rows), SLOTS, SLOT_BITS
        )
        masked = bureau.masked()
        plain = sk.decrypt(masked.ciphertext)
        assert plain >> (SLOT_BITS * SLOTS) == 0
        zs = [(plain >> (a * SLOT_BITS)) & ((1 << SLOT_BITS) - 1) for a in range(SLOTS)]
        inputs = [(z >> TRUNCATE) & low for z in zs]  # b_a
        choices = [(b >> i) & 1 for b in inputs for i in range(WIDTH)]
        request = receiver.request(choices)
        circuit, label_pairs = bureau.garble()
        reply = sender.reply(request, label_pairs)
        labels = receiver.receive(request.nonce, choices, reply)
        unchosen = receiver.receive(request.nonce, [1 - r for r in choices], reply)
        outputs = garble.evaluate_comparisons(circuit, labels)
        garbler_inputs = bureau.garbler_values()  # white-box: a_ak, for the agreement count only
        decode = int.from_bytes(circuit.decode, "big")
        decode_bits = 8 * len(circuit.decode)
        per_table = garble.ciphertexts(WIDTH) * garble.LABEL_BYTES
        unchosen_pads: dict[int, list[int]] = {x: [] for x in SCORES}  # d_j of this batch, by score
        for a, z in enumerate(zs):
            view = views[scores[a]]
            assert z >> (SLOT_BITS - 1) == 0  # the guard bit
            view.z.append(z)
            view.bands.append(sum(outputs[a]))
            assert outputs[a] == sorted(outputs[a], reverse=True)
            wires = range(a * WIDTH, (a + 1) * WIDTH)
            view.permutation_bits += [(labels[j] ^ choices[j]) & 1 for j in wires]
            d = [unchosen[j] ^ labels[j] for j in wires]
            unchosen_pads[scores[a]] += d
            view.unchosen_lsb += [x & 1 for x in d]
            view.unchosen_decoded += sum(unchosen[j] == label_pairs[j][1 - choices[j]] for j in wires)
            span = slice(garble.LABEL_BYTES * wires.start, garble.LABEL_BYTES * wires.stop)
            rows_a = reply.y0[span] + reply.y1[span]
            view.reply_ones += int.from_bytes(rows_a, "big").bit_count()
            view.reply_bits += 8 * len(rows_a)
            for k in range(K):
                q = a * K + k
                lsbs = [_block(circuit.garbler_labels, q * WIDTH + i) & 1 for i in range(WIDTH)]
                estimate = sum(bit << i for i, bit in enumerate(lsbs))
                view.estimates[k].append((inputs[a] - estimate) & low)
                view.agreement += [bit ^ ((garbler_inputs[a][k] >> i) & 1) for i, bit in enumerate(lsbs)]
                view.decode.append((decode >> (decode_bits - 1 - q)) & 1)
                table = circuit.tables[q * per_table : (q + 1) * per_table]
                view.table_ones += int.from_bytes(table, "big").bit_count()
                view.table_bits += 8 * len(table)
        for x, pads in unchosen_pads.items():
            views[x].repeats += len(pads) - len(set(pads))
            views[x].pairs += len(pads) * (len(pads) - 1) // 2
    return views


# ---------------------------------------------------------------- statistics over the views

Views = Mapping[int, PackedView]


def _rng(name: str) -> np.random.Generator:
    """A fixed jitter generator per statistic: the tests are deterministic given the data."""
    return np.random.default_rng(zlib.crc32(name.encode()))


def slot_residues(views: Views) -> dict[str, float]:
    rng = _rng("slot residues")
    out: dict[str, float] = {}
    for i, view in enumerate(views.values()):
        out.update(residue_pvalues(view.z, MASK_BITS, rng, f"score {i}"))
    return out


def oblivious_transfer(views: Views) -> dict[str, float]:
    out: dict[str, float] = {}
    for i, view in enumerate(views.values()):
        n = len(view.unchosen_lsb)
        out[f"score {i} OT reply bits fair"] = bits_p(view.reply_ones, view.reply_bits)
        out[f"score {i} unchosen pad lsb fair"] = bits_p(sum(view.unchosen_lsb), n)
        out[f"score {i} unchosen pads repeat"] = impossible_p(view.repeats, view.pairs, 2.0**-LABEL_BITS)
        out[f"score {i} unchosen label decodes"] = impossible_p(view.unchosen_decoded, n, 2.0**-LABEL_BITS)
    return out


def garbled_labels(views: Views) -> dict[str, float]:
    rng = _rng("garbled labels")
    out: dict[str, float] = {}
    for i, view in enumerate(views.values()):
        out[f"score {i} own permutation bits fair"] = bits_p(
            sum(view.permutation_bits), len(view.permutation_bits)
        )
        out[f"score {i} garbler lsbs vs garbler bits"] = bits_p(sum(view.agreement), len(view.agreement))
        for k in range(K):
            out[f"score {i} cutoff {k} score estimate uniform"] = uniform_p(
                view.estimates[k], 1 << WIDTH, rng
            )
    for (i, a), (j, b) in itertools.combinations(enumerate(views.values()), 2):
        for k in range(K):
            out[f"scores {i}/{j} cutoff {k} score estimates alike"] = same_p(
                a.estimates[k], b.estimates[k], 1 << WIDTH, rng
            )
    return out


def garbled_tables(views: Views) -> dict[str, float]:
    out: dict[str, float] = {}
    for i, view in enumerate(views.values()):
        out[f"score {i} table bits fair"] = bits_p(view.table_ones, view.table_bits)
        out[f"score {i} decode bits fair"] = bits_p(sum(view.decode), len(view.decode))
    return out


STATISTICS: dict[str, Callable[[Views], dict[str, float]]] = {
    "slot residues": slot_residues,
    "oblivious transfer": oblivious_transfer,
    "garbled labels": garbled_labels,
    "garbled tables": garbled_tables,
}


# ---------------------------------------------------------------- the honest protocol


@pytest.fixture(scope="module")
def honest(paillier_keypair: KeyPair, ot_session: tuple[ot.OtReceiver, ot.OtSender]) -> dict[int, PackedView]:
    return observe(paillier_keypair, ot_session, BATCHES)


@pytest.fixture(scope="module")
def family() -> Family:
    return Family(FAMILY_ALPHA / 2, FAMILY_SIZE)


def test_parameters(paillier_keypair: KeyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (MODEL.truncate_bits, MODEL.comparison_bits) == (TRUNCATE, BITS)
    assert packing.slot_bits_for(MODEL) == SLOT_BITS
    pk = paillier_keypair.public_key
    assert packing.slots_per_batch(SLOT_BITS, pk.bits, packing.max_slots_for(MODEL)) == SLOTS
    s_min, s_max = MODEL.encoded_score_bounds
    step = 1 << TRUNCATE
    for x in SCORES:
        row = SPEC.encode_row({"x": x})
        assert {MODEL.truncated_band_from_encoded(row, 0), MODEL.truncated_band_from_encoded(row, 1)} == {
            BAND
        }
        assert all(abs(MODEL.encoded_score(row) - c) >= 8 * step for c in MODEL.encoded_cutoffs)
    drawn: list[int] = []

    def draw(bits: int) -> int:
        drawn.append(bits)
        return 0

    monkeypatch.setattr(packing, "_draw_slot_mask", draw)
    row = SPEC.encode_row({"x": 0})
    packing.PackedBand(pk, MODEL, packing.encrypt_packed(pk, SPEC, SLOT_BITS, [row, row]), 2, SLOT_BITS)
    assert drawn == [MASK_BITS, MASK_BITS]  # the residue tests go up to the masks' real width
    assert (s_max - s_min).bit_length() + 1 + DEFAULT_KAPPA == MASK_BITS


def test_honest_view_structure(honest: dict[int, PackedView]) -> None:
    """What holds in every batch, not just in distribution."""
    for view in honest.values():
        assert len(view.z) == BATCHES * SLOTS // len(SCORES)
        assert set(view.bands) == {BAND}
        assert view.unchosen_decoded == 0 and view.repeats == 0


@pytest.mark.parametrize("statistic", list(STATISTICS))
def test_honest_view_is_independent_of_the_score(
    statistic: str, honest: dict[int, PackedView], family: Family
) -> None:
    pvalues = STATISTICS[statistic](honest)
    name, p = smallest(pvalues)
    print(f"honest {statistic}: {len(pvalues)} p-values, smallest {p:.3g} ({name})")
    assert len(pvalues) == COUNTS[statistic]
    family.check(pvalues)


# ---------------------------------------------------------------- deliberately broken bureaus


def _fixed_permutation_bits(size: int) -> bytes:
    """Random 0-labels with lsb 0: the permutation bit of every wire fixed."""
    labels = bytearray(secrets.token_bytes(size))
    last = slice(garble.LABEL_BYTES - 1, None, garble.LABEL_BYTES)  # labels are big-endian
    labels[last] = bytes(b & 0xFE for b in labels[last])
    return bytes(labels)


@dataclass(frozen=True)
class Variant:
    """A broken party: one module-level function replaced, and the statistic that must flag it."""

    name: str
    statistic: str
    module: Any
    hook: str
    replacement: Callable[..., Any]


VARIANTS = [
    # R_a of 35 bits: z_a mod 2^j for j >= 38 crowds into a quarter of its range or less (observed: p = 0).
    Variant(
        "slot masks as wide as the score range",
        "slot residues",
        packing,
        "_draw_slot_mask",
        lambda bits: secrets.randbits(bits - 1 - DEFAULT_KAPPA),
    ),
    # kappa = 0 (which PackedBand refuses as a parameter, so drawn through the hook in the usual
    # slots): R_a of 36 bits, no statistical margin; z_a mod 2^j for j >= 39 crowds into an eighth
    # of its range or less (observed: p = 0).
    Variant(
        "kappa = 0",
        "slot residues",
        packing,
        "_draw_slot_mask",
        lambda bits: secrets.randbits(bits - DEFAULT_KAPPA),
    ),
    # z_a = s_a + C, constant (observed: p = 0).
    Variant("no slot mask", "slot residues", packing, "_draw_slot_mask", lambda bits: 0),
    # z_a mod 2^20 = (s_a + C) mod 2^20, the score itself (observed: p ~ 1e-314).
    Variant(
        "slot masks with low 20 bits cleared",
        "slot residues",
        packing,
        "_draw_slot_mask",
        lambda bits: secrets.randbits(bits) & ~(2**20 - 1),
    ),
    # lsb(label) = the wire's value: the bank's permutation bits are all 0, its estimate X_ak is
    # 2^l + sigma_a - gamma_k (observed: p = 0).
    Variant("fixed permutation bit", "garbled labels", garble, "_label_bytes", _fixed_permutation_bits),
    # y^b = x^b in the clear: the unchosen label decodes, d_j = Delta (observed: p ~ 1e-266).
    Variant(
        "OT without hash pads",
        "oblivious transfer",
        ot,
        "_hash_rows",
        lambda session_id, nonce, rows: np.zeros((rows.shape[0], 16), dtype=np.uint8),
    ),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_broken_variant_is_detected(
    variant: Variant,
    paillier_keypair: KeyPair,
    ot_session: tuple[ot.OtReceiver, ot.OtSender],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert hasattr(variant.module, variant.hook), f"the hook {variant.hook} is gone"
    monkeypatch.setattr(variant.module, variant.hook, variant.replacement)
    views = observe(paillier_keypair, ot_session, CONTROL_BATCHES)
    for view in views.values():  # every variant still yields the right bands: only a statistic can tell
        assert set(view.bands) == {BAND}
    pvalues = STATISTICS[variant.statistic](views)
    name, p = smallest(pvalues)
    print(f"{variant.name}: {variant.statistic} smallest p = {p:.3g} ({name})")
    assert p < LEAK_P, f"{variant.name} not detected: smallest p = {p:.3g} ({name})"
