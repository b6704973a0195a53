"""A researcher's notebook as a script: fit a scikit-learn pipeline, score a DataFrame through the
three nodes, check every band against the plaintext model, read the band table and run a benchmark.

Only ``import blindscore`` and the names it documents (``blindscore.__all__``); no internal module.
Each ``score``/``verify``/``bench`` call starts three local node processes over mutual TLS and stops
them afterwards. Run it from a source checkout::

    python docs/examples/notebook.py blindscore/data/germancredit.csv --rows 12 --out result.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import blindscore

NUMERIC = ["duration_in_month", "credit_amount", "age_in_years"]
CATEGORICAL = ["status_of_existing_checking_account", "credit_history"]
CUTOFFS = [0.15, 0.3, 0.5]  # on predict_proba[:, 1]: bands A (lowest risk) to D

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("csv", type=Path, help="German credit CSV (target column 'creditability')")
parser.add_argument("--rows", type=int, default=12, help="applicants to score and verify")
parser.add_argument("--applications", type=int, default=3, help="applications of the benchmark")
parser.add_argument("--out", type=Path, help="write what the cells computed here as JSON")
args = parser.parse_args()

# Cell 1: data and a fitted estimator, as in any notebook.
frame = pd.read_csv(args.csv)
frame.insert(0, "customer", [f"cust-{i:04d}" for i in range(len(frame))])
target = (frame["creditability"] == "bad").astype(int)
estimator = Pipeline(
    [
        (
            "prep",
            ColumnTransformer(
                [
                    ("num", StandardScaler(), NUMERIC),
                    ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
                ]
            ),
        ),
        ("lr", LogisticRegression(max_iter=1000)),
    ]
).fit(frame[NUMERIC + CATEGORICAL], target)

# Cell 2: bands through the three nodes; the bank learns them, nobody sees the features in clear.
sample = frame.head(args.rows)
bands = blindscore.score(sample, estimator, cutoffs=CUTOFFS, id_column="customer")
print(bands.to_string(index=False))

# Cell 3: every encrypted band against the plaintext model's.
check = blindscore.verify(sample, estimator, cutoffs=CUTOFFS)
print(f"verify: {check.agree}/{check.rows} bands agree, ok={check.ok}")

# Cell 4: the band table on the whole portfolio (plaintext, at the model owner's side).
table = blindscore.report(frame, estimator, "creditability", cutoffs=CUTOFFS)
print(table.format())

# Cell 5: a benchmark workload, its summary as a value.
summary = blindscore.bench("online", applications=args.applications)
print(f"bench online: p50 {summary['p50_ms']} ms, {summary['bytes_per_app']} bytes per application")

if args.out:
    args.out.write_text(
        json.dumps(
            {
                "version": blindscore.__version__,
                "bands": bands.to_dict(orient="records"),
                "probability": estimator.predict_proba(sample[NUMERIC + CATEGORICAL])[:, 1].tolist(),
                "verify": {"ok": check.ok, "rows": check.rows, "agree": check.agree},
                "report": {"total": table.total, "bads": table.bads, "auc": table.auc},
                "bench": summary,
            }
        )
    )
