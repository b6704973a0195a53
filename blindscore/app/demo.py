"""`blindscore demo`: three local nodes score the German credit applicants and print the band table."""

from __future__ import annotations

import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tqdm import tqdm

from blindscore.app.client import Outcome, score_applications
from blindscore.app.localnet import LocalNetwork
from blindscore.bank_node.store import BandRecord, ResultStore
from blindscore.bureau.registry import ModelStore
from blindscore.crypto.paillier import check_key_bits
from blindscore.data.german import DEMO_MODELS, demo_model, load_german_credit
from blindscore.errors import InvalidInputError
from blindscore.models.contract import PrivateModel
from blindscore.protocol.application import Application


def run_demo(
    *, applicants: int = 1000, key_bits: int = 2048, workdir: str | None = None, model: str = "linear"
) -> int:
    check_key_bits(key_bits)
    rows, labels = load_german_credit()
    if not 1 <= applicants <= len(rows):
        raise InvalidInputError(f"--applicants must be between 1 and {len(rows)}, not {applicants}")
    rows = rows[:applicants]
    target = [int(t) for t in labels[:applicants]]
    family = model
    scoring_model = demo_model(family)
    model_id = DEMO_MODELS[family][0]
    with tempfile.TemporaryDirectory(prefix="blindscore-demo-") as tmp:
        base = Path(workdir) if workdir else Path(tmp)
        print(
            f"blindscore demo: {applicants} German credit applicants, model {model_id}, "
            f"{key_bits}-bit Paillier keys"
        )
        print(
            "starting bureau, bank and platform as separate processes on 127.0.0.1, mutual TLS ...",
            flush=True,
        )
        t0 = time.perf_counter()
        with LocalNetwork(base, key_bits=key_bits) as net:
            t1 = time.perf_counter()
            print(
                f"  bureau {net.bureau_address}  bank {net.bank_address}  platform {net.platform_address}"
                f"  (key {net.key_id}, ready in {t1 - t0:.1f} s)"
            )
            if family != "linear":  # the bureau installs the linear one itself; this one hot-swaps in
                ModelStore(net.bureau_dir / "models").put(model_id, scoring_model)
            apps = [
                Application(
                    application_id=f"german-{i + 1:04d}",
                    bank_id=net.bank_id,
                    model_id=model_id,
                    key_id=net.key_id,
                    consent_reference=f"demo-consent-{i + 1:04d}",
                    features=row,
                )
                for i, row in enumerate(rows)
            ]
            with tqdm(total=len(apps), unit="app", desc="scoring", file=sys.stderr, leave=False) as bar:
                outcomes = score_applications(
                    net.platform_address,
                    apps,
                    on_outcome=lambda o: bar.update(),
                    security=net.client_security,
                )
            t2 = time.perf_counter()
            store = ResultStore(net.bank_dir / "results.sqlite3")
            records = {r.application_id: r for r in store.all()}
            store.close()
        print(
            f"scored {len(outcomes)} applications in {t2 - t1:.1f} s "
            f"({len(outcomes) / (t2 - t1):.1f} per second)"
        )
        return report(scoring_model, apps, rows, target, outcomes, records)


def report(
    model: PrivateModel,
    apps: Sequence[Application],
    rows: Sequence[Mapping[str, object]],
    target: Sequence[int],
    outcomes: Sequence[Outcome],
    records: dict[str, BandRecord],
) -> int:
    """Print the band table, agreement with plaintext scoring, and latencies; 0 when all agree."""
    labels = model.policy.labels
    failed = [o for o in outcomes if not o.accepted]
    counts = [0] * len(labels)
    bads = [0] * len(labels)
    agree = 0
    missing = 0
    for app, row, bad in zip(apps, rows, target, strict=True):
        rec = records.get(app.application_id)
        if rec is None:
            missing += 1
            continue
        counts[rec.band] += 1
        bads[rec.band] += bad
        agree += rec.band == model.band(row)
    total = sum(counts)
    print()
    unit = "probability of default" if model.policy.output == "probability" else "model output"
    print(f"{'band':<6}{'count':>7}{'share':>9}{'bad':>6}{'bad rate':>10}   {unit}")
    edges = list(model.policy.cutoffs)
    cut = [f"< {edges[0]:g}"]
    cut += [f"{lo:g} to < {hi:g}" for lo, hi in itertools.pairwise(edges)]
    cut += [f">= {edges[-1]:g}"]
    for i, label in enumerate(labels):
        rate = f"{bads[i] / counts[i]:.1%}" if counts[i] else "-"
        share = f"{counts[i] / total:.1%}" if total else "-"
        print(f"{label:<6}{counts[i]:>7}{share:>9}{bads[i]:>6}{rate:>10}   {cut[i]}")
    print(f"{'all':<6}{total:>7}{'':>9}{sum(bads):>6}{(sum(bads) / total if total else 0):>10.1%}")
    print()
    print(
        "band agreement with plaintext scoring of the same model: "
        f"{agree}/{total} ({agree / max(total, 1):.2%})"
    )
    lat = sorted(o.total_ms for o in outcomes if o.accepted)
    if lat:
        p50 = statistics.median(lat)
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
        enc = statistics.median(o.encrypt_ms for o in outcomes if o.accepted)
        print(
            f"latency per application (platform submit -> band stored at the bank): p50 {p50:.0f} ms, "
            f"p95 {p95:.0f} ms; platform encryption p50 {enc:.0f} ms"
        )
    if failed:
        print(f"{len(failed)} applications failed, first: {failed[0].application_id}: {failed[0].error}")
    if missing:
        print(f"{missing} applications have no band at the bank")
    return 0 if not failed and not missing and agree == total else 1
