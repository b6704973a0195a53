"""Symmetric conversions between domain objects and blindscore.v1 protobuf messages."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from blindscore import comparison
from blindscore.application import Application, BandDelivery, EncryptedApplication, FeatureValue
from blindscore.dgk import DGKPublicKey
from blindscore.errors import InvalidInputError
from blindscore.paillier import PublicKey
from blindscore.v1 import blindscore_pb2 as pb

MAX_THRESHOLDS = 64
MAX_BITS = 256


# ---------------------------------------------------------------- keys


def paillier_key_to_json(key: PublicKey) -> str:
    return json.dumps(key.to_dict(), sort_keys=True)


def paillier_key_from_json(text: str) -> PublicKey:
    return PublicKey.from_dict(_json_object(text, "Paillier public key"))


def dgk_key_to_json(key: DGKPublicKey) -> str:
    return json.dumps(key.to_dict(), sort_keys=True)


def dgk_key_from_json(text: str) -> DGKPublicKey:
    return DGKPublicKey.from_dict(_json_object(text, "DGK public key"))


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise InvalidInputError(f"{what}: not valid JSON") from exc
    if not isinstance(obj, dict):
        raise InvalidInputError(f"{what}: expected a JSON object")
    return obj


# ---------------------------------------------------------------- applications


def feature_value_to_proto(value: FeatureValue | None) -> pb.FeatureValue:
    """A number or a text; None (a missing value) is sent as an unset value, never as "None"."""
    if value is None:
        return pb.FeatureValue()
    if isinstance(value, bool):
        raise InvalidInputError("boolean feature values are ambiguous; send 0/1 or a category")
    if isinstance(value, int | float):
        return pb.FeatureValue(number=float(value))
    return pb.FeatureValue(text=str(value))


def feature_value_from_proto(msg: pb.FeatureValue) -> FeatureValue:
    kind = msg.WhichOneof("kind")
    if kind == "number":
        return float(msg.number)
    if kind == "text":
        return str(msg.text)
    return math.nan  # unset: treated as missing by the encoder, which names the feature


def application_to_proto(app: Application) -> pb.ScoreRequest:
    return pb.ScoreRequest(
        application_id=app.application_id,
        bank_id=app.bank_id,
        model_id=app.model_id,
        key_id=app.key_id,
        consent_reference=app.consent_reference,
        features={k: feature_value_to_proto(v) for k, v in app.features.items()},
        model_version=app.model_version,
    )


def application_from_proto(msg: pb.ScoreRequest) -> Application:
    return Application(
        application_id=msg.application_id,
        bank_id=msg.bank_id,
        model_id=msg.model_id,
        key_id=msg.key_id,
        consent_reference=msg.consent_reference,
        features={k: feature_value_from_proto(v) for k, v in msg.features.items()},
        model_version=msg.model_version,
    )


def encrypted_application_to_proto(app: EncryptedApplication, key: PublicKey) -> pb.EncryptedApplication:
    return pb.EncryptedApplication(
        application_id=app.application_id,
        platform_id=app.platform_id,
        bank_id=app.bank_id,
        model_id=app.model_id,
        key_id=app.key_id,
        consent_reference=app.consent_reference,
        count=len(app.ciphertexts),
        ciphertexts=key.pack(app.ciphertexts),
        model_version=app.model_version,
    )


def encrypted_application_from_proto(msg: pb.EncryptedApplication, key: PublicKey) -> EncryptedApplication:
    """Unpack and validate every ciphertext against ``key`` (range and coprimality)."""
    return EncryptedApplication(
        application_id=msg.application_id,
        platform_id=msg.platform_id,
        bank_id=msg.bank_id,
        model_id=msg.model_id,
        key_id=msg.key_id,
        consent_reference=msg.consent_reference,
        ciphertexts=tuple(key.unpack(msg.ciphertexts, msg.count)),
        model_version=msg.model_version,
    )


# ---------------------------------------------------------------- band protocol


def _check_shape(count: int, bits: int) -> None:
    if not 1 <= count <= MAX_THRESHOLDS:
        raise InvalidInputError(f"threshold count {count} outside 1..{MAX_THRESHOLDS}")
    if not 1 <= bits <= MAX_BITS:
        raise InvalidInputError(f"comparison bit length {bits} outside 1..{MAX_BITS}")


def masked_request_to_proto(
    application_id: str, key: PublicKey, req: comparison.MaskedRequest
) -> pb.MaskedRequest:
    return pb.MaskedRequest(
        application_id=application_id,
        key_id=key.key_id,
        count=req.count,
        bits=req.bits,
        truncate_bits=req.truncate_bits,
        width_bits=req.width_bits,
        ciphertext=key.pack([req.ciphertext]),
    )


def masked_request_from_proto(msg: pb.MaskedRequest, key: PublicKey) -> comparison.MaskedRequest:
    _check_shape(msg.count, msg.bits)
    (ciphertext,) = key.unpack(msg.ciphertext, 1)
    return comparison.MaskedRequest(
        ciphertext=ciphertext,
        count=msg.count,
        bits=msg.bits,
        truncate_bits=msg.truncate_bits,
        width_bits=msg.width_bits,
    )


def bits_response_to_proto(
    resp: comparison.BitsResponse, key: PublicKey, dgk: DGKPublicKey
) -> pb.BitsResponse:
    return pb.BitsResponse(bit_ciphertexts=dgk.pack(resp.bit_ciphertexts), high=key.pack([resp.high]))


def bits_response_from_proto(
    msg: pb.BitsResponse, key: PublicKey, dgk: DGKPublicKey, bits: int
) -> comparison.BitsResponse:
    (high,) = key.unpack(msg.high, 1)
    return comparison.BitsResponse(bit_ciphertexts=tuple(dgk.unpack(msg.bit_ciphertexts, bits)), high=high)


def blinded_request_to_proto(
    application_id: str, key: PublicKey, dgk: DGKPublicKey, req: comparison.BlindedRequest
) -> pb.BlindedRequest:
    count = len(req.groups)
    width = len(req.groups[0]) if count else 0
    return pb.BlindedRequest(
        application_id=application_id,
        key_id=key.key_id,
        count=count,
        bits=width - 1,
        groups=dgk.pack([c for group in req.groups for c in group]),
    )


def blinded_request_from_proto(msg: pb.BlindedRequest, dgk: DGKPublicKey) -> comparison.BlindedRequest:
    _check_shape(msg.count, msg.bits)
    width = msg.bits + 1
    flat = dgk.unpack(msg.groups, msg.count * width)
    return comparison.BlindedRequest(
        groups=tuple(tuple(flat[k * width : (k + 1) * width]) for k in range(msg.count))
    )


def final_response_to_proto(resp: comparison.FinalResponse, key: PublicKey) -> pb.FinalResponse:
    return pb.FinalResponse(deltas=key.pack(resp.deltas))


def final_response_from_proto(msg: pb.FinalResponse, key: PublicKey, count: int) -> comparison.FinalResponse:
    return comparison.FinalResponse(deltas=tuple(key.unpack(msg.deltas, count)))


def band_delivery_to_proto(delivery: BandDelivery, key: PublicKey) -> pb.BandDelivery:
    return pb.BandDelivery(
        application_id=delivery.application_id,
        key_id=delivery.key_id,
        model_id=delivery.model_id,
        band_labels=list(delivery.band_labels),
        band_ciphertext=key.pack([delivery.band_ciphertext]),
    )


def band_delivery_from_proto(msg: pb.BandDelivery, key: PublicKey) -> BandDelivery:
    (ciphertext,) = key.unpack(msg.band_ciphertext, 1)
    return BandDelivery(
        application_id=msg.application_id,
        key_id=msg.key_id,
        model_id=msg.model_id,
        band_labels=tuple(msg.band_labels),
        band_ciphertext=ciphertext,
    )


def features_from_mapping(row: Mapping[str, Any]) -> dict[str, FeatureValue]:
    """Normalise a CSV/dict row into feature values: numbers stay numbers, the rest is text."""
    out: dict[str, FeatureValue] = {}
    for k, v in row.items():
        out[k] = v if isinstance(v, int | float) and not isinstance(v, bool) else str(v)
    return out
