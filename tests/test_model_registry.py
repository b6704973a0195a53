"""Model types: one conformance suite over every registered type, the registry, and the versioned store."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from blindscore import testing
from blindscore.bureau.registry import ModelStore, parse_version
from blindscore.crypto.paillier import KeyPair
from blindscore.data.german import DEFAULT_MODEL_ID, default_model
from blindscore.errors import InvalidInputError, ModelFormatError, NotFoundError
from blindscore.models.contract import AdditiveModel, PrivateModel, register_model_type
from blindscore.models.linear import LinearModel
from blindscore.models.policy import BandPolicy
from blindscore.models.registry import load_model, model_types
from blindscore.testing import sample_rows

TYPES = sorted(model_types())


# ---------------------------------------------------------------------------------------------
# Conformance: every registered type


@pytest.fixture(params=TYPES)
def example(request: pytest.FixtureRequest) -> PrivateModel:
    cls = model_types()[request.param]
    model = cls.example()
    assert isinstance(model, cls) and model.type_name == request.param
    return model


def test_builtin_types_registered() -> None:
    assert "blindscore-linear-model" in TYPES
    assert "blindscore-scorecard" in TYPES
    assert "blindscore-tree-ensemble" in TYPES


def test_round_trip_is_lossless(example: PrivateModel) -> None:
    testing.check_round_trip(example)


def test_spec_is_public_only(example: PrivateModel) -> None:
    testing.check_spec_is_public(example)


ADDITIVE = [name for name in TYPES if issubclass(model_types()[name], AdditiveModel)]


@pytest.fixture(params=ADDITIVE)
def additive(request: pytest.FixtureRequest) -> AdditiveModel:
    model = model_types()[request.param].example()
    assert isinstance(model, AdditiveModel)
    return model


def test_encrypted_evaluation_matches_integer_path(
    additive: AdditiveModel, paillier_keypair: KeyPair
) -> None:
    pk, sk = paillier_keypair.public_key, paillier_keypair.secret_key
    for row in sample_rows(additive, 4):
        encoded = additive.spec.encode_row(row)
        ct = additive.evaluate_encrypted(pk, [pk.encrypt(x) for x in encoded])
        assert sk.decrypt_signed(ct) == additive.encoded_score(encoded)


def test_wrong_ciphertext_count_refused(additive: AdditiveModel, paillier_keypair: KeyPair) -> None:
    pk = paillier_keypair.public_key
    with pytest.raises(InvalidInputError, match="encrypted features"):
        additive.evaluate_encrypted(pk, [pk.encrypt(0)] * (additive.spec.encoded_width + 1))


def test_fixed_point_error_within_bound_and_bands_agree(example: PrivateModel) -> None:
    testing.check_error_bound(example, sample_rows(example, 300))


def test_the_blind_pipeline_gives_the_integer_band(example: PrivateModel, paillier_keypair: KeyPair) -> None:
    """Both parties in one process (the garbled-circuit pipeline every type runs on): the band the
    bank decodes is the model's own band_from_encoded."""
    testing.check_blind_pipeline(example, sample_rows(example, 3, seed=11), paillier_keypair)


def test_the_checks_catch_a_broken_type(paillier_keypair: KeyPair) -> None:
    """Negative controls: a model whose blind band is off by one, and one whose spec leaks its
    weights, are caught by the importable checks."""

    class OffByOne(LinearModel):
        def band_from_encoded(self, encoded_row: Sequence[int]) -> int:
            return super().band_from_encoded(encoded_row) + 1

    model = default_model()
    broken = OffByOne(model.name, model.spec, model.coef, model.intercept, model.link, model.policy)
    rows = sample_rows(broken, 3, seed=11)
    with pytest.raises(AssertionError, match="blind band"):
        testing.check_blind_pipeline(broken, rows, paillier_keypair)

    leaky = SimpleNamespace(spec=SimpleNamespace(to_dict=lambda: {**model.spec.to_dict(), "coef": [1.0]}))
    with pytest.raises(AssertionError, match="secret-looking keys"):
        testing.check_spec_is_public(leaky)  # type: ignore[arg-type]


def test_describe_shows_no_weights(example: PrivateModel) -> None:
    text = example.describe()
    assert example.name in text
    if isinstance(example, LinearModel):
        public = {repr(c) for c in example.policy.cutoffs} | {"0.0", "1.0"}
        for w in example.coef:
            if repr(abs(w)) not in public:
                assert repr(abs(w)) not in text


# ---------------------------------------------------------------------------------------------
# Registry


def test_registry_refuses_a_second_type_under_a_taken_name() -> None:
    with pytest.raises(ModelFormatError, match="already registered"):

        @register_model_type
        class Impostor(LinearModel):  # same type_name as LinearModel
            pass


def test_registry_refuses_non_models_and_unknown_kinds() -> None:
    with pytest.raises(ModelFormatError, match=r"^<class 'dict'> is not a PrivateModel subclass$"):
        register_model_type(dict)  # type: ignore[type-var]
    with pytest.raises(ModelFormatError, match="unknown model type 'no-such-type'"):
        load_model({"kind": "no-such-type"})
    with pytest.raises(ModelFormatError, match="kind"):
        load_model({"name": "x"})


def docs_example_module() -> str:
    """The worked example of docs/models.md, verbatim: the test keeps the documentation true."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    start = text.index('```python\n"""acme_models') + len("```python\n")
    return text[start : text.index("```", start)]


def test_third_party_type_plugs_in_through_entry_points(tmp_path: Path) -> None:
    """docs/models.md's PointsTable, installed as a real distribution with a `blindscore.models`
    entry point: the CLI lists it, the registry loads its JSON, and it passes the conformance checks."""
    (tmp_path / "acme_models.py").write_text(docs_example_module())
    dist = tmp_path / "acme_models-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-models\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[blindscore.models]\npoints-table = acme_models:PointsTable\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run(
        [sys.executable, "-m", "blindscore", "model", "types"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "acme-points-table" in out.stdout and "acme_models.PointsTable" in out.stdout
    # The conformance suite itself, run over every registered type with the plug-in installed.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            __file__,
            "-k",
            "acme-points-table and not entry_points",
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stdout[-3000:]
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed is not None and int(passed.group(1)) >= 6 and "failed" not in result.stdout
    model_dir = tmp_path / "bureau"
    script = (
        "import json; from pathlib import Path; from blindscore.models.registry import model_type;"
        "from blindscore.bureau.registry import ModelStore;"
        f"m = model_type('acme-points-table').example(); s = ModelStore(Path({str(model_dir)!r}));"
        "v = s.put('acme', m).version;"
        f"print(v, type(ModelStore(Path({str(model_dir)!r})).get('acme')).__name__,"
        "m.band({'housing': 'own'}), m.band({'housing': 'free'}))"
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "PointsTable", "2", "0"]


# ---------------------------------------------------------------------------------------------
# Versioned store


def variant(cutoffs: tuple[float, ...]) -> LinearModel:
    d = default_model().to_dict()
    d["policy"]["cutoffs"] = list(cutoffs)
    d.pop("encoded")
    return LinearModel.from_dict(d)


def test_versions_are_numbered_immutable_and_survive_reopen(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    first = store.put("m", default_model())
    assert (first.version, first.model) == (1, default_model())
    again = store.put("m", default_model())  # identical content: nothing new
    assert (again.version, again.digest) == (1, first.digest)
    second = store.put("m", variant((0.1, 0.2, 0.4, 0.6)))
    assert second.version == 2 and second.digest != first.digest
    # The version put returns is the one a lookup finds, digest included.
    assert ModelStore(tmp_path / "models").resolve("m", 2).digest == second.digest
    assert store.resolve("m").version == 2
    assert store.resolve("m", "1").model == default_model()
    assert store.resolve("m", "v2").version == 2
    reopened = ModelStore(tmp_path / "models")
    assert [v.version for v in reopened.versions("m")] == [1, 2]
    assert reopened.get("m", 2).policy.cutoffs == (0.1, 0.2, 0.4, 0.6)
    assert reopened.version("m", 1).startswith("v1 sha256:")
    assert sorted(p.name for p in (tmp_path / "models" / "m").iterdir()) == ["v1.json", "v2.json"]


def test_lookups_refuse_unknown_names_and_versions(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    store.put("m", default_model())
    with pytest.raises(NotFoundError, match="unknown model 'x'"):
        store.resolve("x")
    with pytest.raises(NotFoundError, match="no version 3"):
        store.resolve("m", 3)
    for bad in ("0", "-1", "1.5", "newest", "v"):
        with pytest.raises(
            InvalidInputError, match=rf"^model version '{bad}' must be a positive integer or 'latest'$"
        ):
            parse_version(bad)
    with pytest.raises(
        InvalidInputError,
        match=r"^model id '\.\./etc' is not a valid identifier \(1-128 characters: letters, digits, \. _ :",
    ):
        store.resolve("../etc")
    with pytest.raises(
        InvalidInputError,
        match=r"^model name 'bad name' is not a valid identifier \(1-128 characters: letters, digits, \. _",
    ):
        store.put("bad name", default_model())


def test_racing_importers_get_distinct_versions(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    models = [variant((0.05 + 0.01 * i, 0.3, 0.5, 0.7)) for i in range(6)]
    got: list[int] = []
    lock = threading.Lock()

    def put(m: LinearModel) -> None:
        # Separate store objects, like separate processes.
        v = ModelStore(tmp_path / "models").put("m", m).version
        with lock:
            got.append(v)

    threads = [threading.Thread(target=put, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    stored = {json.dumps(v.model.to_dict(), sort_keys=True) for v in store.versions("m")}
    assert stored == {json.dumps(m.to_dict(), sort_keys=True) for m in models}


def test_flat_layout_of_earlier_releases_becomes_version_1(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    default_model().save(folder / f"{DEFAULT_MODEL_ID}.json")
    store = ModelStore(folder)
    assert store.names() == [DEFAULT_MODEL_ID]
    assert store.resolve(DEFAULT_MODEL_ID).version == 1
    assert not (folder / f"{DEFAULT_MODEL_ID}.json").exists()


def test_hand_written_model_without_encoded_section_loads(tmp_path: Path) -> None:
    d: Mapping[str, Any] = {k: v for k, v in default_model().to_dict().items() if k != "encoded"}
    assert load_model(dict(d)) == default_model()
    edited = default_model().to_dict()
    edited["encoded"]["intercept"] += 1
    with pytest.raises(ModelFormatError, match="differ"):
        load_model(edited)


def test_band_policy_cutoffs_on_raw_output() -> None:
    m = variant((0.1, 0.2, 0.4, 0.6))
    d = m.to_dict()
    d["link"] = "identity"
    d["policy"] = BandPolicy((-1.0, 0.0, 1.5), output="raw").to_dict()
    d.pop("encoded")
    raw = load_model(d)
    assert raw.policy.output == "raw" and raw.policy.n_bands == 4
