"""Regenerate blindscore/data/german_credit_lr.json, the shipped German credit demo model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from blindscore.data.german import design_matrix, load_german_credit, train_german_model
from blindscore.models.linear import LinearModel

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "blindscore" / "data" / "german_credit_lr.json"


def report(model: LinearModel) -> str:
    """The integer parameters and a band table (count, bad rate) over the 1000 rows."""
    rows, y = load_german_credit()
    bands = np.asarray([model.band(r) for r in rows])
    encoded = np.asarray([model.truncated_band_from_encoded(model.spec.encode_row(r)) for r in rows])
    x = design_matrix(model.spec, rows)
    assert x.shape == (len(rows), model.spec.encoded_width)
    lines = [
        model.describe(),
        f"  in-sample AUC {model.metadata.get('auc_in_sample')}, "
        f"PD quintiles {model.metadata.get('pd_quintiles_in_sample')}",
        f"  plaintext and integer bands differ on {int(np.sum(bands != encoded))} of {len(rows)} rows",
        "  band  count  bad rate",
    ]
    for k, label in enumerate(model.policy.labels):
        sel = bands == k
        rate = float(y[sel].mean()) if sel.any() else float("nan")
        lines.append(f"  {label:>4}  {int(sel.sum()):5d}  {rate:8.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the model JSON")
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if the file differs from a fresh fit"
    )
    args = parser.parse_args(argv)
    model = train_german_model()
    print(report(model))
    if args.check:
        shipped = LinearModel.load(args.output)
        same = shipped == model
        print(f"{args.output}: {'up to date' if same else 'differs from a fresh fit'}")
        return 0 if same else 1
    model.save(args.output)
    args.output.chmod(0o644)  # package data: the demo weights are public (save() writes 0600)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
