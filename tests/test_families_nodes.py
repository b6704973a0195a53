"""The unseen-data family check of scripts/verify_families.py, small, over the real services.

Three families (HistGradientBoosting with its own NaN rule, GradientBoosting behind a
SimpleImputer folded into its trees, an MLP behind a SimpleImputer filled at the platform) are
trained on scikit-learn's bundled data sets with ~5 % missing cells, saved as skops files and
imported with ``blindscore model import``; held-out rows, missing cells as blank CSV strings, go
through platform, bureau and bank over mutual TLS. Each stored band equals the model's band, and
the library's own band wherever the decision value is farther than the proven margin from a cutoff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from blindscore.app.client import score_one
from blindscore.protocol.application import Application
from scripts.verify_families import Prepared, check, datasets, families, prepare

from support import Nodes, NodesFactory

ROWS = 8
CHOSEN = ("HistGradientBoostingClassifier", "GradientBoostingRegressor", "MLPClassifier")


@pytest.fixture(scope="module")
def nodes(module_nodes: NodesFactory) -> Nodes:
    return module_nodes("families", tls=True)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> list[Prepared]:
    workdir = tmp_path_factory.mktemp("families")
    data = datasets()
    return [prepare(f, data, workdir) for f in families() if f.name in CHOSEN]


@pytest.mark.parametrize("family", CHOSEN)
def test_a_family_on_unseen_data_gives_the_library_bands_through_the_nodes(
    family: str, prepared: list[Prepared], nodes: Nodes, tmp_path: Path
) -> None:
    (p,) = [p for p in prepared if p.family.name == family]
    model_id = family.lower()
    nodes.bureau_obj.models.put(model_id, p.model)
    rows = p.dataset.csv_rows(ROWS)
    assert any(v == "" for row in rows for v in row.values())  # missing cells go through
    bands: dict[str, int] = {}
    for i, row in enumerate(rows):
        app_id = f"{model_id}-{i}"
        features: dict[str, object] = {k: row[k] for k in p.model.spec.input_names}
        app = Application(app_id, "bank-a", model_id, nodes.key_id, "consent-f", features)
        outcome = score_one(nodes.platform, app, security=nodes.creds("platform-a").expecting("platform"))
        assert outcome.accepted and not outcome.pending, outcome.error
        stored = nodes.bank_node.store.get(app_id, "platform-a", "bureau-1")
        assert stored is not None
        bands[app_id] = stored.band
    outcome = check(p, ROWS, bands)
    assert outcome.verification.ok and outcome.verification.agree == ROWS
    assert outcome.far >= ROWS // 2 and outcome.library_agree == outcome.far
    assert len(set(bands.values())) >= 2  # the rows span more than one band
