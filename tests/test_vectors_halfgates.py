"""Half gates cross-checked against an independent garbler and evaluator, plus a pinned transcript vector."""

from __future__ import annotations

import ast
import json
import random
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blindscore.crypto import halfgates
from blindscore.crypto.circuit import Bits, Circuit, CircuitBuilder, to_bits
from blindscore.crypto.halfgates import GarbledCircuit
from blindscore.crypto.ot import LabelPairs
from blindscore.errors import CryptoError
from scripts.bench_garbling import TreeShape, tree_bits, tree_circuit, tree_inputs

import independent_gc as ref

HERE = Path(__file__).parent
VECTOR_FILE = HERE / "vectors" / "halfgates_small.json"
FIELDS = ("garbling_id", "tables", "decode", "output_tags")


# ---------------------------------------------------------------- glue (the circuit is public data)


def plain(circuit: Circuit) -> ref.PlainCircuit:
    """The library's scheduled circuit as the reference's gate list (same gate order)."""
    is_and = np.zeros(len(circuit.gate_a), dtype=bool)
    for flag, start, stop in circuit.batches.tolist():
        is_and[start:stop] = bool(flag)
    gates = tuple(
        ref.Gate(bool(f), int(a), int(b))
        for f, a, b in zip(is_and, circuit.gate_a.tolist(), circuit.gate_b.tolist(), strict=True)
    )
    return ref.PlainCircuit(
        circuit.garbler_input_bits, circuit.evaluator_input_bits, gates, tuple(circuit.output_wires.tolist())
    )


def as_transcript(garbled: GarbledCircuit) -> ref.Transcript:
    return ref.Transcript(garbled.garbling_id, garbled.tables, garbled.decode, garbled.output_tags)


def as_garbled(transcript: ref.Transcript) -> GarbledCircuit:
    return GarbledCircuit(
        transcript.garbling_id, transcript.tables, transcript.decode, transcript.output_tags
    )


def mismatches(library: GarbledCircuit, reference: ref.Transcript) -> list[str]:
    """The transcript fields that differ (empty when byte-for-byte identical)."""
    return [f for f in FIELDS if getattr(library, f) != getattr(reference, f)]


def chosen(zero: Sequence[int], delta: int, bits: Sequence[int]) -> list[int]:
    """The evaluator's active input labels, as an OT would deliver them."""
    return [z ^ (delta if b else 0) for z, b in zip(zero, bits, strict=True)]


def fixed_gid(monkeypatch: pytest.MonkeyPatch, gid: bytes) -> list[int]:
    """Make the library's one draw (the garbling id, when the labels are given) return ``gid``."""
    calls: list[int] = []

    def draw(n: int) -> bytes:
        calls.append(n)
        assert n == len(gid)
        return gid

    monkeypatch.setattr(halfgates, "_fresh_bytes", draw)
    return calls


def random_delta(rng: random.Random) -> int:
    return rng.getrandbits(128) | 1


def library_garble(
    circuit: Circuit, gbits: Sequence[int], delta: int, zero: Sequence[int], gid: bytes
) -> GarbledCircuit:
    """blindscore's garble with Delta and the evaluator's 0-labels given (the correlated-OT entry
    point) and the garbling id fixed by monkeypatching its randomness hook."""
    with pytest.MonkeyPatch.context() as mp:
        calls = fixed_gid(mp, gid)
        pairs = LabelPairs(b"".join(z.to_bytes(16, "big") for z in zero), delta.to_bytes(16, "big"))
        garbled, returned = halfgates.garble(circuit, list(gbits), pairs)
    assert calls == [16]
    assert returned.buffers() == pairs.buffers()
    return garbled


# ---------------------------------------------------------------- circuits


def comparator_circuit(width: int = 8) -> Circuit:
    """Ripple and log-depth comparators of an evaluator word against a garbler word."""
    b = CircuitBuilder()
    x, y = b.evaluator_input(width), b.garbler_input(width)
    b.output(b.less_than(x, y, signed=False))
    b.output(b.less_than(x, y, signed=True))
    b.output(b.greater_equal(x, y))
    return b.build()


def adder_circuit(width: int = 8) -> Circuit:
    """Sums of two evaluator words and of an evaluator and a garbler word, and a product of two
    garbler words (AND gates whose inputs the garbler knows both of: hard-wired, no table entry)."""
    b = CircuitBuilder()
    e1, e2 = b.evaluator_input(width), b.evaluator_input(width)
    g1, g2 = b.garbler_input(width), b.garbler_input(3)
    b.output(b.add_wide(e1, e2))
    b.output(b.add(e1, g1, signed=True))
    b.output(b.add(b.mul(g1[:3], g2, signed=False), e2[:6]))
    return b.build()


TREES = TreeShape(trees=2, depth=3, value_bits=8, leaf_bits=8, cutoffs=3)


def tree_case(rng: random.Random) -> tuple[list[int], list[int]]:
    inputs = tree_inputs(TREES, rng)
    return tree_bits(TREES, *inputs, score_bits=TREES.leaf_bits + 1)


CIRCUITS = {"comparator": comparator_circuit, "adder": adder_circuit, "tree": lambda: tree_circuit(TREES)}


@pytest.fixture(scope="module", params=sorted(CIRCUITS))
def named_circuit(request: pytest.FixtureRequest) -> Iterator[tuple[str, Circuit]]:
    yield request.param, CIRCUITS[request.param]()


def random_inputs(name: str, circuit: Circuit, rng: random.Random) -> tuple[list[int], list[int]]:
    if name == "tree":
        return tree_case(rng)
    return (
        [rng.getrandbits(1) for _ in range(circuit.garbler_input_bits)],
        [rng.getrandbits(1) for _ in range(circuit.evaluator_input_bits)],
    )


# ---------------------------------------------------------------- the independent code is independent


def test_the_reference_imports_nothing_from_blindscore() -> None:
    tree = ast.parse((HERE / "independent_gc.py").read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {m.split(".")[0] for m in modules} == {
        "__future__",
        "hashlib",
        "collections",
        "dataclasses",
        "cryptography",
    }


def test_the_circuits_cover_every_and_gate_kind() -> None:
    """Kinds 0-3 (garbler knows neither, a, b, both input(s)) all occur, so every table shape is checked."""
    kinds = set()
    for make in CIRCUITS.values():
        kinds |= set(make().and_kinds.tolist())
    assert kinds == {0, 1, 2, 3}


# ---------------------------------------------------------------- transcripts byte for byte


def test_transcripts_are_identical(named_circuit: tuple[str, Circuit]) -> None:
    name, circuit = named_circuit
    rng = random.Random(f"halfgates/{name}")
    pc = plain(circuit)
    for _ in range(3):
        gbits, _ = random_inputs(name, circuit, rng)
        delta, gid = random_delta(rng), rng.randbytes(16)
        zero = [rng.getrandbits(128) for _ in range(circuit.evaluator_input_bits)]
        garbled = library_garble(circuit, gbits, delta, zero, gid)
        mine = ref.garble(pc, gbits, delta, zero, gid)
        assert mismatches(garbled, mine) == []
        assert len(garbled.tables) == halfgates.table_bytes(circuit)


def test_transcripts_are_identical_when_the_library_draws_its_own_labels() -> None:
    """The default entry point (Delta and labels from the library's PRG): the returned pairs give
    Delta and the 0-labels, from which the reference garbles the same bytes."""
    circuit = adder_circuit()
    rng = random.Random(5)
    gbits = [rng.getrandbits(1) for _ in range(circuit.garbler_input_bits)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(halfgates, "_fresh_bytes", random.Random(6).randbytes)
        garbled, pairs = halfgates.garble(circuit, gbits)
    zero = [pairs[i][0] for i in range(len(pairs))]
    delta = pairs[0][0] ^ pairs[0][1]
    assert all(pairs[i][0] ^ pairs[i][1] == delta for i in range(len(pairs)))
    assert mismatches(garbled, ref.garble(plain(circuit), gbits, delta, zero, garbled.garbling_id)) == []


def test_each_evaluator_reads_the_others_tables(named_circuit: tuple[str, Circuit]) -> None:
    """The reference evaluates the library's garbling and the library the reference's (under
    another Delta and other labels), both giving the plaintext function of the circuit."""
    name, circuit = named_circuit
    rng = random.Random(f"cross/{name}")
    pc = plain(circuit)
    for _ in range(4):
        gbits, ebits = random_inputs(name, circuit, rng)
        expected = ref.plain_evaluate(pc, gbits, ebits)
        assert circuit.evaluate(gbits, ebits) == expected
        delta, zero = random_delta(rng), [rng.getrandbits(128) for _ in ebits]
        garbled = library_garble(circuit, gbits, delta, zero, rng.randbytes(16))
        assert ref.evaluate(pc, as_transcript(garbled), chosen(zero, delta, ebits)) == expected

        delta, zero = random_delta(rng), [rng.getrandbits(128) for _ in ebits]
        mine = ref.garble(pc, gbits, delta, zero, rng.randbytes(16))
        assert halfgates.evaluate(circuit, as_garbled(mine), chosen(zero, delta, ebits)) == expected


# ---------------------------------------------------------------- random circuits (Hypothesis)


@st.composite
def random_circuit(draw: st.DrawFn) -> tuple[Circuit, list[int], list[int]]:
    """Single gates over both parties' inputs and earlier gates, some word gadgets, random outputs."""
    b = CircuitBuilder()
    gw, ew = b.garbler_input(draw(st.integers(1, 6))), b.evaluator_input(draw(st.integers(1, 6)))
    wires = [*gw, *ew]
    for _ in range(draw(st.integers(1, 30))):
        op = draw(st.integers(0, 4))
        x, y = draw(st.sampled_from(wires)), draw(st.sampled_from(wires))
        if op == 0:
            wires.append(b.and_(x, y))
        elif op == 1:
            wires.append(b.xor(x, y))
        elif op == 2:
            wires.append(b.or_(b.not_(x), y))
        elif op == 3:
            wires.extend(b.add_wide(Bits([x, y]), gw[:2] if draw(st.booleans()) else ew[:2]))
        else:
            wires.extend(b.mux(x, Bits([y, x]), Bits([*ew[:1], *gw[:1]])))
    for _ in range(draw(st.integers(1, 6))):
        b.output(draw(st.sampled_from(wires)))
    circuit = b.build()
    bits = st.integers(0, 1)
    gbits = draw(st.lists(bits, min_size=circuit.garbler_input_bits, max_size=circuit.garbler_input_bits))
    ebits = draw(st.lists(bits, min_size=circuit.evaluator_input_bits, max_size=circuit.evaluator_input_bits))
    return circuit, gbits, ebits


@given(random_circuit(), st.randoms(use_true_random=False))
@settings(max_examples=60)
def test_random_circuits(case: tuple[Circuit, list[int], list[int]], rng: random.Random) -> None:
    circuit, gbits, ebits = case
    pc = plain(circuit)
    expected = ref.plain_evaluate(pc, gbits, ebits)
    assert circuit.evaluate(gbits, ebits) == expected
    delta, gid = random_delta(rng), rng.randbytes(16)
    zero = [rng.getrandbits(128) for _ in ebits]
    garbled = library_garble(circuit, gbits, delta, zero, gid)
    mine = ref.garble(pc, gbits, delta, zero, gid)
    assert mismatches(garbled, mine) == []
    labels = chosen(zero, delta, ebits)
    assert ref.evaluate(pc, as_transcript(garbled), labels) == expected
    assert halfgates.evaluate(circuit, as_garbled(mine), labels) == expected


# ---------------------------------------------------------------- negative controls


def _cross_check(circuit: Circuit, variant: ref.Variant = ref.CORRECT) -> tuple[list[str], bool]:
    """Garble one case with the library and with the reference ``variant``: the differing fields,
    and whether the library's evaluator got the plaintext result from the reference's tables."""
    rng = random.Random(99)
    pc = plain(circuit)
    gbits = [rng.getrandbits(1) for _ in range(circuit.garbler_input_bits)]
    ebits = [rng.getrandbits(1) for _ in range(circuit.evaluator_input_bits)]
    delta, gid = random_delta(rng), rng.randbytes(16)
    zero = [rng.getrandbits(128) for _ in ebits]
    garbled = library_garble(circuit, gbits, delta, zero, gid)
    mine = ref.garble(pc, gbits, delta, zero, gid, variant)
    labels = chosen(zero, delta, ebits)
    # The variant is consistent with itself: a round trip alone would not notice the break.
    assert ref.evaluate(pc, mine, labels, variant) == ref.plain_evaluate(pc, gbits, ebits)
    try:
        ok = halfgates.evaluate(circuit, as_garbled(mine), labels) == circuit.evaluate(gbits, ebits)
    except CryptoError:
        ok = False
    return mismatches(garbled, mine), ok


def test_the_cross_check_passes_the_correct_reference() -> None:
    assert _cross_check(adder_circuit()) == ([], True)


@pytest.mark.parametrize(
    ("variant", "fields"),
    [
        (ref.Variant(flip_permute=True), ["tables", "decode", "output_tags"]),
        (ref.Variant(tweak_shift=2), ["tables", "decode", "output_tags"]),
    ],
    ids=["flipped-permute-bit", "wrong-tweak"],
)
def test_a_broken_reference_fails_the_cross_check(variant: ref.Variant, fields: list[str]) -> None:
    assert _cross_check(adder_circuit(), variant) == (fields, False)


@pytest.mark.parametrize("break_", ["flipped-permute-bit", "wrong-tweak"])
def test_a_broken_library_fails_the_cross_check(break_: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The library with one convention broken still agrees with itself (its own round trip
    decodes correctly), but no longer with the reference."""
    if break_ == "wrong-tweak":
        original = halfgates.tweak_blocks
        monkeypatch.setattr(halfgates, "tweak_blocks", lambda t: original(t + np.uint64(1)))
    else:
        original_lsb = halfgates._lsb
        monkeypatch.setattr(halfgates, "_lsb", lambda x: original_lsb(x) ^ np.uint8(1))
    circuit = adder_circuit()
    rng = random.Random(3)
    gbits = [rng.getrandbits(1) for _ in range(circuit.garbler_input_bits)]
    ebits = [rng.getrandbits(1) for _ in range(circuit.evaluator_input_bits)]
    delta, gid, zero = random_delta(rng), rng.randbytes(16), [rng.getrandbits(128) for _ in ebits]
    garbled = library_garble(circuit, gbits, delta, zero, gid)
    labels = chosen(zero, delta, ebits)
    assert halfgates.evaluate(circuit, garbled, labels) == circuit.evaluate(gbits, ebits)
    pc = plain(circuit)
    assert mismatches(garbled, ref.garble(pc, gbits, delta, zero, gid)) != []
    with pytest.raises(
        ref.TagMismatch, match=r"^output \d+: the label does not hash to the tag of bit [01]$"
    ):
        ref.evaluate(pc, as_transcript(garbled), labels)


# ---------------------------------------------------------------- pinned vector


def vector_circuit() -> Circuit:
    """A small circuit with every AND kind: 4-bit sum and comparison against a garbler word, and an
    AND of two garbler bits."""
    b = CircuitBuilder()
    x, y = b.evaluator_input(4), b.garbler_input(4)
    b.output(b.add(x, y))
    b.output(b.less_than(x, y, signed=False))
    b.output(b.and_(y[0], y[1]))
    b.output(b.xor(b.and_(y[2], x[3]), b.and_(x[0], x[1])))
    return b.build()


def circuit_from_vector(data: dict[str, object]) -> Circuit:
    """The vector's circuit as arrays, so a change in the builder's scheduling does not move it."""
    c = data["circuit"]
    assert isinstance(c, dict)
    batches = np.array(c["batches"], dtype=np.int64).reshape(-1, 3)
    ands = [stop - start for flag, start, stop in batches.tolist() if flag]
    return Circuit(
        garbler_input_bits=c["garbler_input_bits"],
        evaluator_input_bits=c["evaluator_input_bits"],
        gate_a=np.array(c["gate_a"], dtype=np.int32),
        gate_b=np.array(c["gate_b"], dtype=np.int32),
        batches=batches,
        output_wires=np.array(c["output_wires"], dtype=np.int32),
        and_gates=sum(ands),
        xor_gates=len(c["gate_a"]) - sum(ands),
        levels=len(ands),
        and_offsets=tuple(int(v) for v in np.cumsum([0, *ands[:-1]])),
    )


def make_vector(circuit: Circuit) -> dict[str, object]:
    """The vector, computed by the reference (``python tests/test_vectors_halfgates.py`` rewrites it)."""
    rng = random.Random("blindscore/vectors/halfgates/v1")
    gbits = to_bits(11, 4)
    ebits = to_bits(6, 4)
    delta, gid = random_delta(rng), rng.randbytes(16)
    zero = [rng.getrandbits(128) for _ in ebits]
    pc = plain(circuit)
    t = ref.garble(pc, gbits, delta, zero, gid)
    return {
        "description": "blindscore half gates (halfgates.py): one garbling of a small circuit with fixed "
        "inputs; gate k computes wire gate_a[k] op wire gate_b[k] (op AND inside batches with flag 1) "
        "into wire 2 + garbler_input_bits + evaluator_input_bits + k; labels 16-byte big-endian hex",
        "circuit": {
            "garbler_input_bits": circuit.garbler_input_bits,
            "evaluator_input_bits": circuit.evaluator_input_bits,
            "gate_a": circuit.gate_a.tolist(),
            "gate_b": circuit.gate_b.tolist(),
            "batches": circuit.batches.tolist(),
            "output_wires": circuit.output_wires.tolist(),
        },
        "garbler_bits": gbits,
        "evaluator_bits": ebits,
        "delta": f"{delta:032x}",
        "evaluator_zero_labels": [f"{z:032x}" for z in zero],
        "garbling_id": gid.hex(),
        "tables": t.tables.hex(),
        "decode": t.decode.hex(),
        "output_tags": t.output_tags.hex(),
        "outputs": ref.evaluate(pc, t, chosen(zero, delta, ebits)),
    }


def test_the_pinned_vector() -> None:
    data = json.loads(VECTOR_FILE.read_text())
    circuit = circuit_from_vector(data)
    assert set(circuit.and_kinds.tolist()) == {0, 1, 2, 3}
    delta = int(str(data["delta"]), 16)
    zero = [int(z, 16) for z in data["evaluator_zero_labels"]]
    gid = bytes.fromhex(data["garbling_id"])
    gbits, ebits = data["garbler_bits"], data["evaluator_bits"]
    garbled = library_garble(circuit, gbits, delta, zero, gid)
    assert garbled.tables.hex() == data["tables"]
    assert garbled.decode.hex() == data["decode"]
    assert garbled.output_tags.hex() == data["output_tags"]
    assert halfgates.evaluate(circuit, garbled, chosen(zero, delta, ebits)) == data["outputs"]
    assert circuit.evaluate(gbits, ebits) == data["outputs"]
    # The reference reproduces the file too (it wrote it).
    assert make_vector(circuit) == data


if __name__ == "__main__":
    text = json.dumps(make_vector(vector_circuit()), indent=1)
    # Lists of numbers on one line each.
    text = re.sub(r"\[[\d,\s\[\]]*\]", lambda m: re.sub(r"\s+", "", m.group()).replace(",", ", "), text)
    VECTOR_FILE.parent.mkdir(exist_ok=True)
    VECTOR_FILE.write_text(text + "\n")
