"""CPU floor of one tree-ensemble application: the bank's decryptions, the bureau's packing, the circuit.

The throughput a stream of ``trees`` applications can reach on a machine is bounded by the CPU its
unavoidable operations take, whatever overlaps them. This measures each with ``time.process_time``
on the library's own primitives, in process, for the ``trees`` workload's model (or a smaller one):

* the bank's packed decryptions: two exponentiations with (p - 1) and (q - 1) modulo p^2 and q^2
  per packed ciphertext (``SecretKey.decrypt_many``), times the ciphertexts of one application;
* the bureau's packing: one squaring modulo n^2 per slot bit of every value (Horner's rule in
  ``PublicKey.pack_slots``);
* garbling and evaluating the application's circuit (``blindscore.crypto.halfgates``).

    python scripts/cost_floor.py            # the 100-tree, depth-4, 50-feature ensemble
    python scripts/cost_floor.py --trees 10

It prints one JSON object: the per-application CPU of each part, their sum and the applications
per second that sum allows on ``--cores`` cores (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

import gmpy2
import numpy as np

from blindscore.app.bench import hist_trees
from blindscore.crypto import halfgates
from blindscore.crypto.paillier import KeyPair, generate_keypair
from blindscore.models.families import family
from blindscore.protocol.circuit_band import band_circuit
from blindscore.protocol.slots import SlotLayout


def _cpu(run: Any, repeats: int) -> float:
    """Median CPU seconds of ``run()`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        run()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def measure(
    keypair: KeyPair, *, trees: int = 100, depth: int = 4, cores: int = 2, repeats: int = 5
) -> dict[str, Any]:
    """The floor for a ``trees``-workload ensemble of this size under ``keypair``."""
    model = hist_trees(trees=trees, depth=depth)
    shape = model.circuit_shape()
    bits = keypair.public_key.n.bit_length()
    layout = SlotLayout(shape.values, shape.value_bits, 40)
    ciphertexts = layout.ciphertexts(bits)
    sk = keypair.secret_key._sk  # the CRT halves, as decrypt_many runs them
    c = gmpy2.mpz(int(keypair.public_key.encrypt(12345)))
    decrypt = _cpu(
        lambda: (gmpy2.powmod(c, sk.p - 1, sk.psquare), gmpy2.powmod(c, sk.q - 1, sk.qsquare)), 20 * repeats
    )
    n2 = gmpy2.mpz(keypair.public_key.n) ** 2

    def squarings() -> None:
        x = c
        for _ in range(1000):
            x = x * x % n2

    squaring = _cpu(squarings, repeats) / 1000
    circuit = band_circuit(shape, family(shape.family))
    rng = np.random.default_rng(1)
    garbler = rng.integers(0, 2, circuit.garbler_input_bits).astype(np.uint8)
    chosen = rng.integers(0, 2, circuit.evaluator_input_bits)
    garbled, pairs = halfgates.garble(circuit, garbler)
    labels = b"".join(pairs[k][int(v)].to_bytes(16, "big") for k, v in enumerate(chosen))
    garble = _cpu(lambda: halfgates.garble(circuit, garbler), repeats)
    evaluate = _cpu(lambda: halfgates.evaluate(circuit, garbled, labels), repeats)
    parts = {
        "decryptions_ms": decrypt * ciphertexts * 1e3,
        "packing_ms": squaring * shape.values * layout.slot_bits * 1e3,
        "garbling_ms": garble * 1e3,
        "evaluation_ms": evaluate * 1e3,
    }
    total = sum(parts.values())
    return {
        "trees": trees,
        "depth": depth,
        "key_bits": bits,
        "slot_bits": layout.slot_bits,
        "packed_ciphertexts": ciphertexts,
        "decryption_ms": round(decrypt * 1e3, 3),
        "squaring_us": round(squaring * 1e6, 3),
        "and_gates": circuit.and_gates,
        **{k: round(v, 1) for k, v in parts.items()},
        "total_ms": round(total, 1),
        "cores": cores,
        "max_apps_per_s": round(cores * 1e3 / total, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trees", type=int, default=100, help="trees in the ensemble (default 100)")
    parser.add_argument("--depth", type=int, default=4, help="depth of each tree (default 4)")
    parser.add_argument("--cores", type=int, default=2, help="cores the sum is divided over (default 2)")
    args = parser.parse_args(argv)
    if args.trees < 1 or not 1 <= args.depth <= 8 or args.cores < 1:
        parser.error("--trees and --cores must be at least 1 and --depth from 1 to 8")
    print(json.dumps(measure(generate_keypair(2048), trees=args.trees, depth=args.depth, cores=args.cores)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
