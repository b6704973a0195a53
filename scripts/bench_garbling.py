"""Benchmark the half-gates garbler on a circuit shaped like blind scoring of a boosted-tree model."""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from blindscore.crypto import halfgates
from blindscore.crypto.circuit import Bits, Circuit, CircuitBuilder, to_bits


@dataclass(frozen=True)
class TreeShape:
    """Public size parameters of the workload."""

    trees: int = 100
    depth: int = 4
    value_bits: int = 34
    leaf_bits: int = 24
    cutoffs: int = 4


def tree_circuit(shape: TreeShape) -> Circuit:
    """Comparisons -> path muxes -> sum of tree values -> cutoff comparisons -> band index.

    Evaluator inputs: per tree, one ``value_bits`` value per internal node (breadth-first order).
    Garbler inputs: per tree, the thresholds (internal nodes, breadth-first), then the leaf values
    (signed, left to right); then the cutoffs (signed, ascending). A node goes right when
    value >= threshold (XGBoost's "left when x < t"). Output: the band index, the number of
    cutoffs the score reaches, as ceil(log2(cutoffs + 1)) bits.
    """
    b = CircuitBuilder()
    internal = 2**shape.depth - 1
    values = [[b.evaluator_input(shape.value_bits) for _ in range(internal)] for _ in range(shape.trees)]
    tree_values: list[Bits] = []
    for t in range(shape.trees):
        thresholds = [b.garbler_input(shape.value_bits) for _ in range(internal)]
        leaves = [b.garbler_input(shape.leaf_bits) for _ in range(internal + 1)]
        right = [b.not_(b.less_than(values[t][k], thresholds[k], signed=False)) for k in range(internal)]
        # Bottom-up: the nodes of the last internal level pick between two leaves, each level
        # above picks between the words its children picked.
        level = leaves
        first = internal // 2  # index of the first node of the deepest internal level
        while len(level) > 1:
            level = [b.mux(right[first + i], level[2 * i + 1], level[2 * i]) for i in range(len(level) // 2)]
            first //= 2
        tree_values.append(level[0])
    score = b.sum(tree_values, signed=True)
    cuts = [b.garbler_input(len(score)) for _ in range(shape.cutoffs)]
    reached = [Bits([b.less_equal(c, score, signed=True)]) for c in cuts]
    b.output(b.sum(reached, signed=False) if len(reached) > 1 else reached[0])
    return b.build()


def tree_reference(
    shape: TreeShape,
    values: Sequence[Sequence[int]],
    thresholds: Sequence[Sequence[int]],
    leaves: Sequence[Sequence[int]],
    cutoffs: Sequence[int],
) -> int:
    """The band index in the clear."""
    score = 0
    for t in range(shape.trees):
        node = 0
        for _ in range(shape.depth):
            node = 2 * node + (2 if values[t][node] >= thresholds[t][node] else 1)
        score += leaves[t][node - (2**shape.depth - 1)]
    return sum(1 for c in cutoffs if c <= score)


def tree_inputs(
    shape: TreeShape, rng: random.Random
) -> tuple[list[list[int]], list[list[int]], list[list[int]], list[int]]:
    """Random values, thresholds, leaves and sorted cutoffs around the typical score."""
    internal = 2**shape.depth - 1
    top = 1 << shape.value_bits
    values = [[rng.randrange(top) for _ in range(internal)] for _ in range(shape.trees)]
    thresholds = [[rng.randrange(top) for _ in range(internal)] for _ in range(shape.trees)]
    half = 1 << (shape.leaf_bits - 1)
    leaves = [[rng.randrange(-half, half) for _ in range(internal + 1)] for _ in range(shape.trees)]
    spread = half * max(1, int(shape.trees**0.5)) // 2
    cutoffs = sorted(rng.randrange(-spread, spread + 1) for _ in range(shape.cutoffs))
    return values, thresholds, leaves, cutoffs


def tree_bits(
    shape: TreeShape,
    values: Sequence[Sequence[int]],
    thresholds: Sequence[Sequence[int]],
    leaves: Sequence[Sequence[int]],
    cutoffs: Sequence[int],
    score_bits: int,
) -> tuple[list[int], list[int]]:
    """(garbler bits, evaluator bits) in the circuit's input order."""
    ev = [bit for row in values for v in row for bit in to_bits(v, shape.value_bits)]
    gb: list[int] = []
    for t in range(shape.trees):
        gb += [bit for v in thresholds[t] for bit in to_bits(v, shape.value_bits)]
        gb += [bit for v in leaves[t] for bit in to_bits(v, shape.leaf_bits)]
    gb += [bit for c in cutoffs for bit in to_bits(c, score_bits)]
    return gb, ev


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    shape = TreeShape(trees=args.trees, depth=args.depth)
    t0 = time.perf_counter()
    circuit = tree_circuit(shape)
    build_ms = (time.perf_counter() - t0) * 1e3
    rng = random.Random(2026)
    inputs = tree_inputs(shape, rng)
    score_bits = (
        circuit.garbler_input_bits
        - shape.trees * (2**shape.depth - 1) * shape.value_bits
        - shape.trees * 2**shape.depth * shape.leaf_bits
    ) // shape.cutoffs
    gbits, ebits = tree_bits(shape, *inputs, score_bits=score_bits)
    expected = tree_reference(shape, *inputs)
    garble_ms: list[float] = []
    evaluate_ms: list[float] = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        garbled, pairs = halfgates.garble(circuit, gbits)
        t1 = time.perf_counter()
        labels = [pair[bit] for pair, bit in zip(pairs, ebits, strict=True)]  # what OT would deliver
        t2 = time.perf_counter()
        out = halfgates.evaluate(circuit, garbled, labels)
        t3 = time.perf_counter()
        band = sum(bit << i for i, bit in enumerate(out))
        if band != expected:
            raise SystemExit(f"wrong band: {band} != {expected}")
        garble_ms.append((t1 - t0) * 1e3)
        evaluate_ms.append((t3 - t2) * 1e3)
    report = {
        "shape": vars(shape) | {"score_bits": score_bits},
        "and_gates": circuit.and_gates,
        "xor_gates": circuit.xor_gates,
        "levels": circuit.levels,
        "batches": len(circuit.batches),
        "garbler_input_bits": circuit.garbler_input_bits,
        "evaluator_input_bits": circuit.evaluator_input_bits,
        "table_bytes": halfgates.table_bytes(circuit),
        "build_ms": round(build_ms, 1),
        "garble_ms_median": round(statistics.median(garble_ms), 2),
        "evaluate_ms_median": round(statistics.median(evaluate_ms), 2),
        "repeats": args.repeats,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
