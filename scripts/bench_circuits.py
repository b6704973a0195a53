"""Time the garbled-circuit band pipeline for a tree ensemble, both parties in one process.

    python scripts/bench_circuits.py [--trees 100] [--depth 4] [--features 50] [--applications 5] [--json]

The model is the `trees` workload of issue 13: an XGBoost-format ensemble (float32 keys, "x < t",
NaN to the default side) of complete trees whose split thresholds are drawn from 255 quantile bin
edges per feature, as XGBoost's `hist` method places them, over standard-normal features; 4 cutoffs.
Each application runs every step of docs/circuits.md: platform encryption, the bureau's Paillier
stage, the bank's decryptions, the IKNP OT of the bank's input labels, garbling and evaluation.
Transport is not included (no gRPC yet): this measures the computation the nodes will do.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence

import numpy as np

from blindscore.crypto import ot
from blindscore.crypto.paillier import generate_keypair
from blindscore.models import families
from blindscore.models.policy import BandPolicy
from blindscore.models.trees import Tree, TreeEnsemble
from blindscore.protocol.circuit_band import CircuitBand, band_circuit, evaluate_band, open_request

STEPS = (
    "encrypt",
    "bureau_round1",
    "bank_open",
    "ot_request",
    "garble",
    "ot_reply",
    "ot_receive",
    "evaluate",
)


def hist_ensemble(trees: int, depth: int, features: int, seed: int = 2026) -> TreeEnsemble:
    """Complete trees of ``depth`` with random features and thresholds on 255 quantile edges."""
    rng = np.random.default_rng(seed)
    sample = rng.normal(size=(4096, features))
    edges = np.quantile(sample, np.linspace(0, 1, 257)[1:-1], axis=0).astype(np.float32)
    internal, leaves = 2**depth - 1, 2**depth
    out = []
    for _ in range(trees):
        n = internal + leaves
        feature = [int(rng.integers(features)) for _ in range(internal)] + [-1] * leaves
        threshold = [float(edges[rng.integers(255), f]) for f in feature[:internal]] + [0.0] * leaves
        left = [2 * i + 1 for i in range(internal)] + [-1] * leaves
        right = [2 * i + 2 for i in range(internal)] + [-1] * leaves
        value = [0.0] * internal + [float(v) for v in rng.normal(scale=0.1, size=leaves)]
        default_left = [bool(rng.integers(2)) for _ in range(n)]
        out.append(Tree(tuple(feature), tuple(threshold), tuple(left), tuple(right), tuple(default_left),
                        tuple(["nan"] * n), tuple(value)))  # fmt: skip
    return TreeEnsemble(
        "bench-trees",
        [f"x{i}" for i in range(features)],
        out,
        base_score=0.0,
        link="logit",
        output="probability",
        domain="float32",
        strict=True,
        policy=BandPolicy((0.1, 0.3, 0.6, 0.85)),
    )


def run(trees: int, depth: int, features: int, applications: int) -> dict[str, object]:
    circuit_model = hist_ensemble(trees, depth, features)
    family = families.family("trees")
    keypair = generate_keypair(2048)
    pk = keypair.public_key
    receiver_setup, offer = ot.ReceiverSetup.start()
    sender_setup, choice = ot.SenderSetup.start(offer)
    receiver, reply = receiver_setup.finish(choice)
    sender = sender_setup.finish(reply)
    t0 = time.perf_counter()
    circuit = band_circuit(circuit_model.circuit_shape(), family)
    build_ms = (time.perf_counter() - t0) * 1e3
    rng = np.random.default_rng(7)
    times: dict[str, list[float]] = {s: [] for s in (*STEPS, "total")}
    wire = 0
    for _ in range(applications):
        row = [float(v) for v in rng.normal(size=features)]
        row[int(rng.integers(features))] = float("nan")
        marks = [time.perf_counter()]
        ciphertexts = [pk.encrypt(v) for v in circuit_model.encode_row(row)]
        marks.append(time.perf_counter())
        bureau = CircuitBand(pk, circuit_model, family, ciphertexts)
        marks.append(time.perf_counter())
        opened = open_request(keypair, bureau.request)
        marks.append(time.perf_counter())
        request = receiver.request(opened.choices)
        marks.append(time.perf_counter())
        garbled, pairs = bureau.garble()
        marks.append(time.perf_counter())
        answer = sender.reply(request, pairs)
        marks.append(time.perf_counter())
        labels = receiver.receive(request.nonce, opened.choices, answer)
        marks.append(time.perf_counter())
        band = evaluate_band(bureau.request.shape, family, garbled, labels)
        marks.append(time.perf_counter())
        if band != circuit_model.band_from_encoded(circuit_model.encode_row(row)):
            raise SystemExit("the pipeline's band differs from the model's integer band")
        for step, a, b in zip(STEPS, marks, marks[1:], strict=False):
            times[step].append((b - a) * 1e3)
        times["total"].append((marks[-1] - marks[0]) * 1e3)
        cipher_bytes = pk.ciphertext_bytes
        wire = (
            len(ciphertexts) * cipher_bytes
            + len(bureau.request.masked.ciphertexts) * cipher_bytes
            + len(request.u)
            + len(garbled.tables)
            + len(garbled.garbler_labels)
            + len(garbled.decode)
            + len(garbled.output_tags)
            + len(answer.y0)
            + len(answer.y1)
        )
    return {
        "workload": "trees-in-process",
        "trees": trees,
        "depth": depth,
        "features": features,
        "applications": applications,
        "and_gates": circuit.and_gates,
        "circuit_build_ms": round(build_ms, 1),
        "values": bureau.request.shape.values,
        "packed_ciphertexts": len(bureau.request.masked.ciphertexts),
        "wire_bytes_per_app": wire,
        "ms_p50": {k: round(statistics.median(v), 1) for k, v in times.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=100, help="trees in the ensemble")
    parser.add_argument("--depth", type=int, default=4, help="depth of every (complete) tree")
    parser.add_argument("--features", type=int, default=50, help="numeric features")
    parser.add_argument("--applications", type=int, default=5, help="applications timed")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of a table")
    args = parser.parse_args(argv)
    result = run(args.trees, args.depth, args.features, args.applications)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        for key, value in result.items():
            print(f"{key:22} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
