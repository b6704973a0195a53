"""An integrator's script: the platform's systems submit applicants to a running platform node with
a platform-client certificate, and the bank's systems read each band by application id with a
bank-client certificate.

The nodes are the ones docs/operations.md starts by hand (``blindscore certs init ...
--platform-client frontend-1 --bank-client loans-1``, then ``blindscore bureau|bank|platform
serve``). Only ``import blindscore`` and the names it documents. For example::

    python docs/examples/integrator.py --platform 127.0.0.1:50053 --bank 127.0.0.1:50052 \\
        --certs pki --bank-id bank-1 --key-id "$(blindscore bank key-id --data-dir bank)" \\
        --model-id german-credit-lr --input applicants.csv --consent consent-2026-01-17
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import blindscore

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--platform", required=True, help="the platform node, HOST:PORT")
parser.add_argument("--bank", required=True, help="the bank node, HOST:PORT")
parser.add_argument("--certs", required=True, type=Path, help="PKI directory with both client certificates")
parser.add_argument("--platform-client", default="frontend-1", help="the platform-client certificate's id")
parser.add_argument("--bank-client", default="loans-1", help="the bank-client certificate's id")
parser.add_argument("--bank-id", required=True)
parser.add_argument("--key-id", required=True, help="'blindscore bank key-id --data-dir BANK_DIR' prints it")
parser.add_argument("--model-id", required=True)
parser.add_argument("--input", required=True, type=Path, help="CSV: application_id and the model's features")
parser.add_argument("--consent", required=True, help="consent reference for every row")
parser.add_argument("--out", type=Path, help="write the outcomes and bands as JSON")
args = parser.parse_args()

# The platform's systems: send every row; the answer is an acknowledgement, never a band.
with blindscore.Client(
    args.platform,
    certs=args.certs,
    client_id=args.platform_client,
    bank_id=args.bank_id,
    key_id=args.key_id,
    model_id=args.model_id,
) as client:
    outcomes = client.submit(args.input, consent_reference=args.consent)
for o in outcomes:
    print(f"submitted {o.application_id}: {o.status} {o.model_version} {o.error}".rstrip())

# The bank's systems: each accepted application's band, by id.
bands: dict[str, dict[str, object]] = {}
with blindscore.BankClient(args.bank, certs=args.certs, client_id=args.bank_client) as bank:
    for o in outcomes:
        if o.status != "accepted":
            continue
        band = bank.band(o.application_id)
        bands[o.application_id] = {"band": band.band, "label": band.band_label, "platform": band.platform_id}
        print(f"band of {o.application_id}: {band.band_label} (index {band.band}, from {band.platform_id})")

if args.out:
    args.out.write_text(
        json.dumps({"outcomes": [[o.application_id, o.status, o.error] for o in outcomes], "bands": bands})
    )
sys.exit(0 if all(o.status == "accepted" for o in outcomes) else 1)
