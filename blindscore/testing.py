"""Conformance checks every model type must pass, importable so a plug-in package can run them too.

    from blindscore.testing import check_model_type
    check_model_type(MyModel)            # raises AssertionError naming the first check that fails

The checks, each on the type's :meth:`~blindscore.models.PrivateModel.example` and on rows drawn
from its public feature spec (edges, missing values and unseen categories included):

* the JSON form round-trips losslessly and its ``kind`` is the type's name;
* the public spec carries no secret (no weights, points, intercepts, thresholds or leaves);
* the blind path's decision value is within ``max_abs_error`` of the exact one, and the band is the
  plaintext band wherever the exact value is farther than that from every cutoff;
* the garbled-circuit pipeline, both parties in one process with a real key and real oblivious
  transfer, gives the band the model computes in the clear (``band_from_encoded``).

A 2048-bit Paillier key is generated once per process when none is passed (a few seconds).
"""

from __future__ import annotations

import functools
import json
import math
import random
from collections.abc import Sequence

from blindscore.crypto import ot
from blindscore.crypto.paillier import KeyPair, generate_keypair
from blindscore.models import families
from blindscore.models.contract import PrivateModel
from blindscore.models.features import Feature
from blindscore.models.registry import load_model
from blindscore.protocol.circuit_band import CircuitBand, evaluate_band, open_request

__all__ = ["TwoParties", "check_model_type", "sample_rows", "sample_value"]

#: Keys of a serialised spec that would give a secret away.
SECRET_KEYS = ("coef", "weights", "points", "intercept", "base_points", "threshold", "leaf")


def sample_value(feature: Feature, rng: random.Random) -> object:
    """A valid raw value for any built-in feature kind, edges and extremes included."""
    kind = feature.kind
    if kind == "numeric":
        if rng.random() < 0.2:
            return rng.choice([feature.lo, feature.hi])  # type: ignore[union-attr]
        x = rng.uniform(feature.lo, feature.hi)  # type: ignore[union-attr]
        return float(round(x)) if feature.integer else x  # type: ignore[union-attr]
    if kind == "categorical":
        return rng.choice(feature.categories)  # type: ignore[union-attr]
    if kind == "binned":
        edges = feature.edges  # type: ignore[union-attr]
        choices: list[object] = [0.0, *edges, *(e - 1e-6 for e in edges)]
        if edges:
            choices += [edges[0] - 1.0, edges[-1] + 1.0]
        if feature.missing_bin:  # type: ignore[union-attr]
            choices += [None, math.nan, ""]
        for group in feature.special:  # type: ignore[union-attr]
            choices.extend(group)
        return rng.choice(choices)
    if kind == "float-key":  # tree ensembles: any float, zeros, tiny values and missing ones
        return rng.choice([None, math.nan, 0.0, -0.0, 1e-36, rng.uniform(-5, 5), rng.uniform(-1e6, 1e6)])
    if kind == "category-code":  # LightGBM categories: codes, fractions, out of range, missing
        n = feature.n_categories  # type: ignore[union-attr]
        return rng.choice([None, math.nan, -0.5, -1.0, 0.9, float(rng.randrange(n)), float(n), 2.7])
    if kind == "xgboost-category-code":  # XGBoost categories: as LightGBM's, and float32 rounding
        n = feature.n_categories  # type: ignore[union-attr]
        return rng.choice([None, math.nan, -0.5, -0.0, 0.9, float(rng.randrange(n)), float(n), 2.9999999999])
    if kind == "grouped":  # scorecard category groups
        values: list[object] = [c for g in feature.groups for c in g]  # type: ignore[union-attr]
        if feature.missing_bin:  # type: ignore[union-attr]
            values += [None, ""]
        if feature.other_bin:  # type: ignore[union-attr]
            values.append("never-seen-category")
        return rng.choice(values)
    raise AssertionError(f"the conformance checks cannot sample feature kind {kind!r}")


def sample_rows(model: PrivateModel, n: int, seed: int = 7) -> list[dict[str, object]]:
    """``n`` raw rows for ``model``, drawn from its public spec."""
    rng = random.Random(seed)
    return [{f.name: sample_value(f, rng) for f in model.spec.features} for _ in range(n)]


@functools.cache
def _require(ok: bool, message: str) -> None:
    """An AssertionError naming the failed check: an explicit raise, so that the checks also run
    under ``python -O``, which strips ``assert`` statements."""
    if not ok:
        raise AssertionError(message)


def _session_key() -> KeyPair:
    return generate_keypair(2048)


def check_round_trip(model: PrivateModel) -> None:
    d = model.to_dict()
    _require(d["kind"] == model.type_name, f"to_dict()['kind'] is {d['kind']!r}, not {model.type_name!r}")
    text = json.dumps(d, sort_keys=True, allow_nan=False)
    again = load_model(json.loads(text))
    _require(type(again) is type(model), f"load_model gives a {type(again).__name__}")
    _require(json.dumps(again.to_dict(), sort_keys=True) == text, "the JSON form does not round-trip")


def check_spec_is_public(model: PrivateModel) -> None:
    text = json.dumps(model.spec.to_dict())
    found = [k for k in SECRET_KEYS if f'"{k}' in text]
    _require(not found, f"the public spec has secret-looking keys: {found}")


def check_error_bound(model: PrivateModel, rows: Sequence[dict[str, object]]) -> None:
    cutoffs = model.decision_cutoffs
    _require(cutoffs == sorted(cutoffs) and len(cutoffs) == len(model.policy.cutoffs), "cutoffs")
    for row in rows:
        exact = model.decision_value(row)
        encoded = model.spec.encode_row(row)
        error = abs(model.encoded_decision_value(encoded) - exact)
        _require(error <= model.max_abs_error, f"error {error} above the proven bound {model.max_abs_error}")
        band = model.band(row)
        _require(0 <= band < model.policy.n_bands, f"band {band} out of range")
        if all(abs(exact - c) > model.max_abs_error for c in cutoffs):
            _require(band == model.band_from_encoded(encoded), f"plaintext band {band} differs")
        _require(math.isfinite(model.predict(row)), "predict() is not finite")


class TwoParties:
    """Bureau and bank in one process, with one real OT session: run the garbled-circuit pipeline
    of any model on encoded rows and return the band the bank decodes."""

    def __init__(self, keypair: KeyPair) -> None:
        self.keypair = keypair
        receiver_setup, offer = ot.ReceiverSetup.start()
        sender_setup, choice = ot.SenderSetup.start(offer)
        self._receiver, reply = receiver_setup.finish(choice)
        self._sender = sender_setup.finish(reply)

    def band(self, model: PrivateModel, encoded_row: Sequence[int]) -> int | None:
        pk = self.keypair.public_key
        family = families.family(model.circuit_shape().family)
        bureau = CircuitBand(pk, model, family, [pk.encrypt(x) for x in encoded_row])
        opened = open_request(self.keypair, bureau.request)
        _require(not opened.faulted, "a slot of an honest hand-over faulted")
        request = self._receiver.request(opened.choices)
        garbled = bureau.finish(request, self._sender)
        labels = self._receiver.receive_correlated(request.nonce, len(opened.choices))
        return evaluate_band(bureau.request.shape, family, garbled, labels, bureau.pad)


def check_blind_pipeline(model: PrivateModel, rows: Sequence[dict[str, object]], keypair: KeyPair) -> None:
    parties = TwoParties(keypair)
    for row in rows:
        encoded = model.spec.encode_row(row)
        band = parties.band(model, encoded)
        _require(band == model.band_from_encoded(encoded), f"blind band {band} differs from the clear one")


def check_model_type(cls: type[PrivateModel], *, keypair: KeyPair | None = None, rows: int = 200) -> None:
    """Run every conformance check on ``cls.example()``; AssertionError names the failing one."""
    model = cls.example()
    _require(isinstance(model, cls), f"{cls.__name__}.example() returned a {type(model).__name__}")
    sample = sample_rows(model, rows)
    check_round_trip(model)
    check_spec_is_public(model)
    check_error_bound(model, sample)
    check_blind_pipeline(model, sample[:3], keypair or _session_key())
