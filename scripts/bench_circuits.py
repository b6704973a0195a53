"""Time the garbled-circuit band pipeline for a tree ensemble, both parties in one process.

    python scripts/bench_circuits.py [--trees 100] [--depth 4] [--features 50] [--applications 5] [--json]

The model is the `trees` workload's (blindscore.app.bench.hist_trees). Each application runs every
step of docs/circuits.md in one process: platform encryption, the bureau's Paillier stage, the
bank's decryptions, the IKNP OT of the bank's input labels, garbling and evaluation, timed apart
(`python scripts/bench.py trees` measures the same over the three nodes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence

import numpy as np

from blindscore.app.bench import hist_trees
from blindscore.crypto import ot
from blindscore.crypto.paillier import generate_keypair
from blindscore.models import families
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


def run(trees: int, depth: int, features: int, applications: int) -> dict[str, object]:
    circuit_model = hist_trees(trees, depth, features)
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
        band = evaluate_band(bureau.request.shape, family, garbled, labels, bureau.pad)
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
