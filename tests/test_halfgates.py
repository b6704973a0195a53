"""Half gates: the AES hash pinned, garbled == plain == integers, corruption detected, nothing leaks."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import pickle
import random
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blindscore.crypto import halfgates, tccr
from blindscore.crypto.circuit import Bits, Circuit, CircuitBuilder, from_bits, to_bits
from blindscore.crypto.halfgates import (
    TAG_BYTES,
    GarbledCircuit,
    aes_encrypt_blocks,
    aes_key,
    evaluate,
    garble,
    table_bytes,
    tccr_hash,
)
from blindscore.crypto.ot import LabelPairs
from blindscore.errors import CryptoError, InvalidInputError
from scripts.bench_garbling import TreeShape, tree_bits, tree_circuit, tree_inputs, tree_reference

MASK64 = (1 << 64) - 1


def chosen(pairs: Sequence[tuple[int, int]], bits: Sequence[int]) -> list[int]:
    """What the evaluator receives by OT: the label of its true bit for every input wire."""
    return [pair[bit] for pair, bit in zip(pairs, bits, strict=True)]


def run(circuit: Circuit, gbits: Sequence[int], ebits: Sequence[int]) -> list[int]:
    garbled, pairs = garble(circuit, gbits)
    return evaluate(circuit, garbled, chosen(pairs, ebits))


def reference_tccr(garbling_id: bytes, x: int, tweak: int) -> int:
    """H(x, i) = pi(sigma(x) ^ i) ^ sigma(x) ^ i written from the paper, on Python ints."""
    left, right = x >> 64, x & MASK64
    s = (((left ^ right) << 64) | left) ^ tweak
    key = hashlib.sha256(b"blindscore/halfgates/v1" + garbling_id).digest()[:16]
    return int.from_bytes(aes_encrypt_blocks(key, s.to_bytes(16, "big")), "big") ^ s


@pytest.fixture
def seeded(monkeypatch: pytest.MonkeyPatch) -> Iterator[random.Random]:
    """Fix the garbler's randomness (ids, label PRG key) so statistical tests are deterministic."""
    rng = random.Random(20261206)
    monkeypatch.setattr(halfgates, "_fresh_bytes", rng.randbytes)
    yield rng


def comparison_circuit(width: int = 16) -> Circuit:
    builder = CircuitBuilder()
    x, y = builder.evaluator_input(width), builder.garbler_input(width)
    builder.output(builder.less_than(x, y, signed=False))
    builder.output(builder.add(x, y))
    return builder.build()


# ---------------------------------------------------------------- the hash: AES, pinned


def test_aes_call_path_matches_fips197() -> None:
    """FIPS-197 appendix C.1, through the same ``cryptography`` call the hash makes."""
    key = bytes(range(16))
    plain = bytes.fromhex("00112233445566778899aabbccddeeff")
    assert aes_encrypt_blocks(key, plain).hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"


def test_bulk_hash_is_aes_of_sigma() -> None:
    """Feed the vectorised hash the label whose sigma is the FIPS-197 plaintext: out = AES(P) ^ P."""
    p = 0x00112233445566778899AABBCCDDEEFF
    pl, pr = p >> 64, p & MASK64
    x = (pr << 64) | (pl ^ pr)  # sigma(x) = (xL ^ xR) || xL = P
    blocks = halfgates._from_ints([x, x])
    tweaks = tccr.tweak_blocks(np.array([0, 5], dtype=np.uint64))
    out = halfgates._to_ints(tccr.Tccr(bytes(range(16)))(blocks, tweaks))
    assert out[0] == 0x69C4E0D86A7B0430D8CDB78070B4C55A ^ p
    assert out[1] != out[0]  # the tweak enters the permutation


def test_tccr_pinned_vector() -> None:
    gid = bytes(range(16))
    label = 0x00112233445566778899AABBCCDDEEFF
    assert aes_key(gid).hex() == "313414f6c13eadd848ad7e7a9ceb88e3"
    assert tccr_hash(gid, label, 7) == 0x17CBC9184E8894878BA3BDE984A4313E
    assert tccr_hash(gid, label, 7) == reference_tccr(gid, label, 7)
    assert tccr_hash(bytes(16), 0, 0) == 0x0F9E43B998C65E2F4485DB88DD626A6F


@given(st.binary(min_size=16, max_size=16), st.integers(0, (1 << 128) - 1), st.integers(0, (1 << 63) - 1))
@settings(max_examples=50)
def test_tccr_matches_the_paper_formula(gid: bytes, label: int, tweak: int) -> None:
    assert tccr_hash(gid, label, tweak) == reference_tccr(gid, label, tweak)


# ---------------------------------------------------------------- correctness


@st.composite
def random_circuit_and_inputs(draw: st.DrawFn) -> tuple[Circuit, list[int], list[int]]:
    """A random circuit from single gates and word gadgets, with random inputs."""
    builder = CircuitBuilder()
    words: list[Bits] = []
    for _ in range(draw(st.integers(1, 3))):
        words.append(builder.garbler_input(draw(st.integers(1, 12))))
        words.append(builder.evaluator_input(draw(st.integers(1, 12))))
    wires = [w for word in words for w in word]
    for _ in range(draw(st.integers(1, 20))):
        op = draw(st.integers(0, 6))
        x, y = draw(st.sampled_from(words)), draw(st.sampled_from(words))
        signed = draw(st.booleans())
        if op == 0:
            wires.append(builder.and_(draw(st.sampled_from(wires)), draw(st.sampled_from(wires))))
        elif op == 1:
            wires.append(
                builder.or_(draw(st.sampled_from(wires)), builder.not_(draw(st.sampled_from(wires))))
            )
        elif op == 2:
            words.append(builder.add_wide(x, y, signed=signed))
        elif op == 3:
            words.append(builder.sub(x, y, signed=signed))
        elif op == 4:
            wires.append(builder.less_than(x, y, signed=signed))
        elif op == 5:
            width = max(len(x), len(y))
            words.append(
                builder.mux(
                    draw(st.sampled_from(wires)), builder.zero_extend(x, width), builder.zero_extend(y, width)
                )
            )
        else:
            words.append(
                builder.sum([x, y, *draw(st.lists(st.sampled_from(words), max_size=3))], signed=signed)
            )
        if op >= 2 and op != 4:
            wires.extend(words[-1])
    for _ in range(draw(st.integers(1, 8))):
        builder.output(draw(st.sampled_from(wires)))
    if draw(st.booleans()):
        builder.output(words[-1])
    circuit = builder.build()
    gbits = draw(
        st.lists(st.integers(0, 1), min_size=circuit.garbler_input_bits, max_size=circuit.garbler_input_bits)
    )
    ebits = draw(
        st.lists(
            st.integers(0, 1), min_size=circuit.evaluator_input_bits, max_size=circuit.evaluator_input_bits
        )
    )
    return circuit, gbits, ebits


@given(random_circuit_and_inputs())
@settings(max_examples=80)
def test_garbled_equals_plain_on_random_circuits(case: tuple[Circuit, list[int], list[int]]) -> None:
    circuit, gbits, ebits = case
    assert run(circuit, gbits, ebits) == circuit.evaluate(gbits, ebits)


@given(
    st.integers(1, 64).flatmap(
        lambda w: st.tuples(st.just(w), st.integers(0, (1 << w) - 1), st.integers(0, (1 << w) - 1))
    )
)
@settings(max_examples=60)
def test_garbled_gadgets_against_integers(case: tuple[int, int, int]) -> None:
    width, a, b = case
    circuit = comparison_circuit(width)
    out = run(circuit, to_bits(b, width), to_bits(a, width))
    assert out[0] == int(a < b)
    assert from_bits(out[1:], signed=False) == (a + b) % (1 << width)


SMALL_TREES = TreeShape(trees=5, depth=3, value_bits=12, leaf_bits=10, cutoffs=4)


@pytest.fixture(scope="module")
def small_tree_circuit() -> Circuit:
    return tree_circuit(SMALL_TREES)


@given(st.randoms(use_true_random=False))
@settings(max_examples=40)
def test_tree_like_circuit(small_tree_circuit: Circuit, rnd: random.Random) -> None:
    """Comparisons -> path muxes -> sum -> cutoff comparisons: garbled == plain == Python."""
    shape = SMALL_TREES
    inputs = tree_inputs(shape, rnd)
    score_bits = shape.leaf_bits + 3  # ceil(log2(5 trees))
    gbits, ebits = tree_bits(shape, *inputs, score_bits=score_bits)
    expected = tree_reference(shape, *inputs)
    plain = small_tree_circuit.evaluate(gbits, ebits)
    assert from_bits(plain, signed=False) == expected
    assert run(small_tree_circuit, gbits, ebits) == plain


def test_tree_circuit_public_sizes(small_tree_circuit: Circuit) -> None:
    """What the evaluator's circuit reveals are sizes: inputs, gates; checked against the shape."""
    shape = SMALL_TREES
    internal = 2**shape.depth - 1
    assert small_tree_circuit.evaluator_input_bits == shape.trees * internal * shape.value_bits
    comparisons = shape.trees * internal * shape.value_bits
    muxes = shape.trees * internal * shape.leaf_bits
    assert comparisons + muxes < small_tree_circuit.and_gates < comparisons + muxes + 200
    kinds = np.bincount(small_tree_circuit.and_kinds, minlength=4)
    assert (
        table_bytes(small_tree_circuit)
        == 24 * kinds[0] + 16 * (kinds[1] + kinds[2]) + (5 * kinds[0] + 7) // 8
    )
    # The bottom level of every tree's mux chooses between two leaves the garbler knows: those
    # AND gates are garbler half-gates (one entry each).
    assert kinds[1] + kinds[2] >= shape.trees * 2 ** (shape.depth - 1) * shape.leaf_bits


# ---------------------------------------------------------------- layout and freshness


def test_layout_and_delta(seeded: random.Random) -> None:
    circuit = comparison_circuit(16)
    garbled, pairs = garble(circuit, to_bits(1234, 16))
    assert len(garbled.garbling_id) == 16
    kinds = np.bincount(circuit.and_kinds, minlength=4)
    assert len(garbled.tables) == table_bytes(circuit) == 24 * kinds[0] + 16 * (kinds[1] + kinds[2]) + 19
    assert kinds[1] + kinds[2] == 2  # the first carry of the comparison and of the sum: x_0 AND y_0
    # The garbler's 16 input bits are hard-wired: nothing per garbler bit travels.
    assert [f.name for f in dataclasses.fields(garbled)] == ["garbling_id", "tables", "decode", "output_tags"]
    assert len(garbled.decode) == (circuit.outputs + 7) // 8
    assert len(garbled.output_tags) == 2 * TAG_BYTES * circuit.outputs
    deltas = {x0 ^ x1 for x0, x1 in pairs}
    assert len(pairs) == 16 and len(deltas) == 1
    (delta,) = deltas
    assert delta & 1 == 1  # point-and-permute
    again, pairs2 = garble(circuit, to_bits(1234, 16))
    assert again.garbling_id != garbled.garbling_id
    assert pairs2[0][0] ^ pairs2[0][1] != delta
    assert again.tables != garbled.tables


def test_output_decodes_only_through_decode(seeded: random.Random) -> None:
    """Output = lsb(active label) XOR decode bit; without decode, the lsbs are coin flips."""
    builder = CircuitBuilder()
    x, y = builder.evaluator_input(8), builder.garbler_input(8)
    builder.output(builder.less_than(x, y, signed=False))
    circuit = builder.build()
    lsbs = []
    for _ in range(400):
        garbled, pairs = garble(circuit, to_bits(200, 8))
        # The output is always 1 (5 < 200); its decode bit must carry all of it.
        assert evaluate(circuit, garbled, chosen(pairs, to_bits(5, 8))) == [1]
        flipped = dataclasses.replace(garbled, decode=bytes([garbled.decode[0] ^ 0x80]))
        with pytest.raises(
            CryptoError,
            match=r"^garbled circuit: an output label does not match its tag \(corrupted garbling\)$",
        ):
            evaluate(circuit, flipped, chosen(pairs, to_bits(5, 8)))
        lsbs.append(garbled.decode[0] >> 7 ^ 1)  # lsb of the active output label
    ones = sum(lsbs)
    assert 150 < ones < 250  # binomial(400, 1/2): ~5 sigma either side


def test_tables_look_uniform_and_do_not_depend_on_the_garbler_input(seeded: random.Random) -> None:
    """Two garblings of one circuit with different garbler inputs: same sizes, balanced bits,
    and a byte histogram that passes a chi-square test."""
    builder = CircuitBuilder()
    x, y = builder.evaluator_input(64), builder.garbler_input(64)
    for k in range(16):
        builder.output(builder.less_than(x, builder.add(y, builder.constant(k, 64)), signed=True))
    circuit = builder.build()
    zeros, _ = garble(circuit, [0] * 64)
    ones, _ = garble(circuit, [1] * 64)
    for field in ("tables", "decode", "output_tags"):
        assert len(getattr(zeros, field)) == len(getattr(ones, field))
    for garbled in (zeros, ones):
        data = np.frombuffer(garbled.tables, dtype=np.uint8)
        bits = np.unpackbits(data)
        n = bits.size
        assert abs(bits.mean() - 0.5) < 5 * 0.5 / np.sqrt(n)
        counts = np.bincount(data, minlength=256)
        expected = data.size / 256
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 340  # 255 degrees of freedom: p ~ 0.0003 above 340
    assert zeros.tables[:32] != ones.tables[:32]


def test_garbler_inputs_are_hard_wired(seeded: random.Random) -> None:
    """A garbler bit g gets the 0-label g Delta, so its active label is 0 for either value: the
    garbling carries no label for it, yet every gate that reads it evaluates correctly (AND with an
    evaluator bit, with another garbler bit, XOR, NOT, in both orders)."""
    builder = CircuitBuilder()
    g, e = builder.garbler_input(2), builder.evaluator_input(1)
    builder.output(builder.and_(g[0], e[0]))
    builder.output(builder.and_(e[0], g[1]))
    builder.output(builder.and_(g[0], g[1]))
    builder.output(builder.xor(g[0], e[0]))
    builder.output(builder.not_(g[1]))
    circuit = builder.build()
    sizes = set()
    for g0, g1, x in itertools.product((0, 1), repeat=3):
        garbled, pairs = garble(circuit, [g0, g1])
        assert evaluate(circuit, garbled, [pairs[0][x]]) == [g0 & x, x & g1, g0 & g1, g0 ^ x, 1 - g1]
        sizes.add(len(garbled.tables) + len(garbled.decode) + len(garbled.output_tags))
    # Two half gates (a garbler bit with an evaluator bit) of one entry each; the AND of two
    # garbler bits is hard-wired like they are (no entry).
    assert sizes == {16 * 2 + 1 + 16 * circuit.outputs}


# ---------------------------------------------------------------- corruption and refusals


def test_flipped_table_bit_is_detected(seeded: random.Random) -> None:
    circuit = comparison_circuit(24)
    garbled, pairs = garble(circuit, to_bits(777, 24))
    labels = chosen(pairs, to_bits(555, 24))
    assert evaluate(circuit, garbled, labels)[0] == 1
    rng = random.Random(5)
    for position in [0, 1, len(garbled.tables) * 8 - 1, *rng.sample(range(len(garbled.tables) * 8), 20)]:
        tables = bytearray(garbled.tables)
        tables[position // 8] ^= 1 << (position % 8)
        bad = dataclasses.replace(garbled, tables=bytes(tables))
        try:
            out = evaluate(circuit, bad, labels)
        except CryptoError:
            continue
        # A flip can only pass unnoticed if it is in an unused row half (lsb-selected away).
        assert out == evaluate(circuit, garbled, labels)


def test_flipped_table_bits_are_mostly_caught(seeded: random.Random) -> None:
    """The evaluator reads G0 of a three-halves gate when lsb(A) = 1 and G1 when lsb(B) = 1, so
    flipping a bit of each corrupts its output label in about 3 gates out of 4 (a half gate's entry
    when lsb(X) = 1: 1 in 2). Every corrupted label reaches an output through the AND chains and
    fails its tag; the others leave the result intact."""
    circuit = comparison_circuit(24)
    garbled, pairs = garble(circuit, to_bits(777, 24))
    labels = chosen(pairs, to_bits(555, 24))
    good = evaluate(circuit, garbled, labels)
    caught = 0
    offsets, kinds = circuit.table_offsets, circuit.and_kinds
    for gate in range(circuit.and_gates):
        tables = bytearray(garbled.tables)
        tables[8 * offsets[gate] + 3] ^= 0x10  # G0 (a half gate's only entry)
        if kinds[gate] == 0:
            tables[8 * offsets[gate] + 8 + 5] ^= 0x04  # G1, another bit: both flips must not cancel
        try:
            out = evaluate(circuit, dataclasses.replace(garbled, tables=bytes(tables)), labels)
        except CryptoError:
            caught += 1
            continue
        assert out == good
    assert 0.6 * circuit.and_gates < caught < circuit.and_gates


def test_wrong_evaluator_label_is_detected(seeded: random.Random) -> None:
    circuit = comparison_circuit(16)
    garbled, pairs = garble(circuit, to_bits(9, 16))
    labels = chosen(pairs, to_bits(3, 16))
    labels[4] ^= 1 << 100  # neither the 0-label nor the 1-label
    with pytest.raises(
        CryptoError, match=r"^garbled circuit: an output label does not match its tag \(corrupted garbling\)$"
    ):
        evaluate(circuit, garbled, labels)


def test_refusals() -> None:
    circuit = comparison_circuit(8)
    garbled, pairs = garble(circuit, to_bits(9, 8))
    labels = chosen(pairs, to_bits(3, 8))
    with pytest.raises(InvalidInputError, match="8 evaluator input bits, got 7"):
        evaluate(circuit, garbled, labels[:7])
    with pytest.raises(InvalidInputError, match="got 9"):
        evaluate(circuit, garbled, [*labels, 0])
    with pytest.raises(InvalidInputError, match="evaluator label 2"):
        evaluate(circuit, garbled, [*labels[:2], -1, *labels[3:]])
    with pytest.raises(InvalidInputError, match="evaluator label 0"):
        evaluate(circuit, garbled, [1 << 128, *labels[1:]])
    with pytest.raises(InvalidInputError, match="evaluator label 1"):
        evaluate(circuit, garbled, [labels[0], 1.5, *labels[2:]])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="takes 8 bits, got 7"):
        garble(circuit, [0] * 7)
    with pytest.raises(InvalidInputError, match="0 or 1"):
        garble(circuit, [0, 1, 2, 0, 0, 0, 0, 0])
    with pytest.raises(InvalidInputError, match="0/1 integers"):
        garble(circuit, [0.5] * 8)  # type: ignore[list-item]
    for field, value in (
        ("tables", garbled.tables[:-1]),
        ("garbling_id", b"short"),
        ("output_tags", b""),
        ("decode", b""),
    ):
        with pytest.raises(InvalidInputError, match=field):
            evaluate(circuit, dataclasses.replace(garbled, **{field: value}), labels)
    with pytest.raises(InvalidInputError, match="padding"):
        evaluate(circuit, dataclasses.replace(garbled, decode=garbled.decode[:-1] + b"\x01"), labels)
    other = comparison_circuit(9)
    with pytest.raises(InvalidInputError, match=r"^tables: expected 402 bytes for this circuit, got 353$"):
        evaluate(other, garbled, [*labels, 0])


def test_garbled_circuit_is_not_printable_or_picklable() -> None:
    circuit = comparison_circuit(8)
    garbled, _ = garble(circuit, to_bits(9, 8))
    text = repr(garbled)
    assert garbled.tables.hex()[:16] not in text
    assert garbled.garbling_id.hex() not in text
    assert "tables=" in text and "bytes" in text
    assert str(garbled) == text
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(garbled)
    assert isinstance(garbled, GarbledCircuit)


def test_bench_script_runs_and_checks_its_band(capsys: pytest.CaptureFixture[str]) -> None:
    from scripts.bench_garbling import main

    main(["--trees", "2", "--depth", "2", "--repeats", "1"])
    report = json.loads(capsys.readouterr().out)
    assert report["and_gates"] > 0
    assert 16 * report["and_gates"] <= report["table_bytes"] < 25 * report["and_gates"]
    assert report["evaluator_input_bits"] == 2 * 3 * 34


# ---------------------------------------------------------------- labels chosen by a correlated OT


def test_garbling_with_labels_a_correlated_ot_chose() -> None:
    """The OT fixes Delta and the evaluator's 0-labels; the garbling uses exactly those, and the
    evaluator's labels from the OT evaluate to the plain result."""
    circuit = comparison_circuit()
    rng = random.Random(7)
    for _ in range(20):
        x, y = rng.getrandbits(16), rng.getrandbits(16)
        delta = halfgates.fresh_delta()
        zero = rng.randbytes(16 * circuit.evaluator_input_bits)
        given = LabelPairs(zero, delta)
        garbled, pairs = garble(circuit, to_bits(y, 16), given)
        assert pairs.buffers() == (zero, delta)
        assert evaluate(circuit, garbled, chosen(pairs, to_bits(x, 16))) == circuit.evaluate(
            to_bits(y, 16), to_bits(x, 16)
        )


def test_fresh_delta_has_its_permute_bit_set() -> None:
    assert all(halfgates.fresh_delta()[15] & 1 for _ in range(64))
    assert len({halfgates.fresh_delta() for _ in range(64)}) == 64


def test_given_labels_are_checked() -> None:
    circuit = comparison_circuit()
    n = circuit.evaluator_input_bits
    even = bytes(15) + b"\x02"
    with pytest.raises(InvalidInputError, match="lowest bit set"):
        garble(circuit, [0] * 16, LabelPairs(bytes(16 * n), even))
    with pytest.raises(InvalidInputError, match=f"{n} evaluator input bits, got {n - 1} label pairs"):
        garble(circuit, [0] * 16, LabelPairs(bytes(16 * (n - 1)), halfgates.fresh_delta()))


# ---------------------------------------------------------------- what the garbler knows


def test_and_gates_cost_by_what_the_garbler_knows() -> None:
    """An AND of two evaluator wires is three 8-byte halves and 5 control bits, of an evaluator
    wire and a wire the garbler knows (its input, a constant, or gates of those) one 16-byte entry,
    of two known wires nothing; every combination of input bits still evaluates to the plain result."""
    b = CircuitBuilder()
    (e0, e1), (g0, g1) = b.evaluator_input(2), b.garbler_input(2)
    known = b.xor(g0, b.not_(g1))  # still known to the garbler
    b.output(b.and_(e0, e1))  # kind 0
    b.output(b.and_(known, e1))  # kind 1: a known
    b.output(b.and_(e0, g1))  # kind 2: b known
    both = b.and_(g0, known)  # kind 3, and its output stays known
    b.output(b.and_(e1, both))  # kind 2 again
    circuit = b.build()
    kinds = np.bincount(circuit.and_kinds, minlength=4)
    assert (kinds[0], kinds[1] + kinds[2], kinds[3]) == (1, 3, 1)
    assert table_bytes(circuit) == 24 + 16 * (1 + 1 + 1) + 1
    for ebits in itertools.product((0, 1), repeat=2):
        for gbits in itertools.product((0, 1), repeat=2):
            assert run(circuit, gbits, ebits) == circuit.evaluate(gbits, ebits), (gbits, ebits)


def test_a_half_gate_entry_is_fresh_whatever_the_known_bit(seeded: random.Random) -> None:
    """The one entry of a half gate, T = H(X0) ^ H(X1) ^ v Delta, looks the same for v = 0 and
    v = 1 to an evaluator holding one label of X: every entry is distinct and about half its bits
    are set, and the evaluator's output label decodes right. Negative control: with the second
    hash left out (T = H(X0) ^ v Delta), an evaluator holding X0 reads v off T."""
    b = CircuitBuilder()
    (x,), (v,) = b.evaluator_input(1), b.garbler_input(1)
    b.output(b.and_(x, v))
    circuit = b.build()
    entries = []
    for bit in (0, 1) * 200:
        garbled, pairs = garble(circuit, [bit])
        assert evaluate(circuit, garbled, [pairs[0][1]]) == [bit]
        entries.append(int.from_bytes(garbled.tables, "big"))
    assert len(set(entries)) == len(entries)
    ones = sum(bin(e).count("1") for e in entries) / len(entries)
    assert 60 < ones < 68
    # The evaluator's distinguisher: holding X0 (x = 0) it computes T ^ H(X0, tweak 0), which is
    # H(X1) ^ v Delta for the real entry, but v Delta (0 for v = 0) without the second hash.
    for bit in (0, 1):
        garbled, pairs = garble(circuit, [bit])
        x0, delta = pairs[0][0], pairs[0][0] ^ pairs[0][1]
        seen = int.from_bytes(garbled.tables, "big") ^ tccr_hash(garbled.garbling_id, x0, 0)
        assert seen not in (0, delta)
        broken = tccr_hash(garbled.garbling_id, x0, 0) ^ (bit * delta)
        assert (broken ^ tccr_hash(garbled.garbling_id, x0, 0) == 0) == (bit == 0)
