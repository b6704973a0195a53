"""Check every import format end to end: python scripts/verify_importers.py [--rows N] [--workdir DIR].

For each of the five formats (skops, optbinning, toad, scorecardpy, hand-written JSON) the model
of scripts.model_zoo is built on German credit, imported with `blindscore model import` into a
fresh bureau data directory and verified like `blindscore model verify`: the first N rows go
through bureau, bank and platform as three processes over mutual TLS, and each band the bank
stored is compared with the plaintext model's. Then one network is started and the five are
imported, one after the other, as new versions of one model name into the running bureau; each is
scored at once (pinned to its version) and, after the platform's "latest" cache expired, without a
version; no node is restarted. Exits 1 on a disagreement outside the error margin, an imported
model that does not reproduce its library, or a failed swap.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from blindscore.app.localnet import LocalNetwork
from blindscore.app.model_commands import Verification, compare_bands
from blindscore.app.scoring import run_encrypted
from blindscore.models.contract import PrivateModel

if __package__ in (None, ""):
    # Run as `python scripts/verify_importers.py`: the model zoo is imported as scripts.model_zoo,
    # as the tests import it, so the checkout's root goes on the path.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.model_zoo import (
    BUILDERS,
    Artifact,
    build,
    german_csv_rows,
    import_artifact,
    swap_in,
)

#: |imported model's predict - the library's own output| allowed (PD for skops, points otherwise).
LIBRARY_TOLERANCE = 1e-9
SWAP_MODEL = "zoo"
SWAP_ROWS = 5


@dataclass(frozen=True)
class Result:
    format: str
    type_name: str
    verification: Verification
    library_gap: float | None
    build_s: float
    verify_s: float

    @property
    def faithful(self) -> bool:
        return self.library_gap is None or self.library_gap <= LIBRARY_TOLERANCE


def library_gap(artifact: Artifact, model: PrivateModel, rows: list[dict[str, str]]) -> float | None:
    """Largest |imported predict - library output| over the rows; None when there is no library."""
    if not artifact.reference:
        return None
    return max(abs(model.predict(row) - ref) for row, ref in zip(rows, artifact.reference, strict=False))


def verify_one(fmt: str, workdir: Path, rows: list[dict[str, str]], key_bits: int) -> Result:
    t0 = time.perf_counter()
    artifact = build(fmt, workdir / "artifacts")
    built = time.perf_counter() - t0
    data_dir = workdir / "verify" / fmt / "bureau"
    data_dir.mkdir(parents=True, exist_ok=True)
    name = f"german-{fmt}"
    _, model, output = import_artifact(artifact, name=name, data_dir=data_dir)
    print(output.splitlines()[0], flush=True)
    features = [{k: row[k] for k in model.spec.input_names} for row in rows]
    ids = [f"row-{i + 1}" for i in range(len(rows))]
    t1 = time.perf_counter()
    records = run_encrypted(
        model, name, ids, features, key_bits=key_bits, consent_reference=f"verify-importers:{fmt}"
    )
    seconds = time.perf_counter() - t1
    v = compare_bands(model, ids, features, {k: r.band for k, r in records.items()})
    return Result(fmt, model.type_name, v, library_gap(artifact, model, rows), built, seconds)


def print_table(results: list[Result]) -> None:
    header = (
        f"{'format':<12} {'type':<24} {'rows':>5}  {'agreement':>16}  {'max fixed-pt err':>16}  "
        f"{'bound':>8}  {'near cutoff':>11}  {'vs library':>10}  {'build s':>7}  {'verify s':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        v = r.verification
        agreement = f"{v.agree}/{v.rows} {v.agree / v.rows:.2%}"
        gap = "-" if r.library_gap is None else f"{r.library_gap:.1e}"
        print(
            f"{r.format:<12} {r.type_name:<24} {v.rows:>5}  {agreement:>16}  "
            f"{v.worst_fixed_point_error:>16.2e}  {v.margin:>8.1e}  {v.near_cutoff:>11}  {gap:>10}  "
            f"{r.build_s:>7.2f}  {r.verify_s:>8.1f}"
        )


def swap_check(workdir: Path, rows: list[dict[str, str]], key_bits: int) -> bool:
    artifacts = [build(fmt, workdir / "artifacts") for fmt in BUILDERS]
    ok = True
    with LocalNetwork(workdir / "swap", key_bits=key_bits) as net:
        pids = net.pids()
        print(f"\nswap: one network (pids {pids}); {SWAP_MODEL!r} gets a new version per format")
        for k, artifact in enumerate(artifacts):
            base = 37 * k  # different rows for each version
            pinned = [(f"swap-{k + 1}-{i}", rows[base + i]) for i in range(SWAP_ROWS)]
            latest = (f"swap-{k + 1}-latest", rows[base + SWAP_ROWS])
            t0 = time.perf_counter()
            check = swap_in(net, artifact, name=SWAP_MODEL, rows=pinned, latest_row=latest)
            seconds = time.perf_counter() - t0
            agree = sum(b == s for b, s, _ in check.pinned.values())
            versions = sorted({v for _, _, v in check.pinned.values()})
            _, want, got, latest_version = check.latest
            print(
                f"  v{check.version} {check.format:<12} pinned: {agree}/{len(check.pinned)} bands equal, "
                f"receipts v{','.join(versions)}; latest: receipt v{latest_version}, band "
                f"{'equal' if want == got else f'{got} != {want}'}; {seconds:.1f} s "
                f"{'ok' if check.ok else 'FAILED'}"
            )
            for error in check.errors:
                print(f"    {error}")
            ok = ok and check.ok
        alive = all(node.process.poll() is None for node in net.nodes.values())
        same = net.pids() == pids
        print(f"  nodes still running with the same pids: {'yes' if alive and same else 'NO'}")
        ok = ok and alive and same
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1000, help="first N German rows to verify (default 1000)")
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a temporary directory)")
    parser.add_argument("--key-bits", type=int, default=2048, choices=[2048, 3072])
    args = parser.parse_args(argv)
    all_rows = german_csv_rows()
    if not 1 <= args.rows <= len(all_rows):
        parser.error(f"--rows must be between 1 and {len(all_rows)}")
    rows = all_rows[: args.rows]
    with tempfile.TemporaryDirectory(prefix="verify-importers-") as tmp:
        workdir = args.workdir or Path(tmp)
        t0 = time.perf_counter()
        results = [verify_one(fmt, workdir, rows, args.key_bits) for fmt in BUILDERS]
        print()
        print_table(results)
        failed = [r for r in results if not r.verification.ok]
        drifted = [r for r in results if not r.faithful]
        for r in failed:
            shown = ", ".join(r.verification.disagreements[:10])
            print(f"FAILED {r.format}: disagreements outside the margin: {shown}")
        for r in drifted:
            print(f"FAILED {r.format}: the imported model differs from its library by {r.library_gap:.3g}")
        swapped = swap_check(workdir, all_rows, args.key_bits)
        print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return 0 if not failed and not drifted and swapped else 1


if __name__ == "__main__":
    sys.exit(main())
