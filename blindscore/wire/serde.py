"""Symmetric conversions between domain objects and blindscore.v1 protobuf messages."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from blindscore.crypto import garble, halfgates, ot
from blindscore.crypto.dgk import DGKPublicKey
from blindscore.crypto.paillier import PublicKey
from blindscore.errors import InvalidInputError
from blindscore.protocol import circuit_band, comparison, packing
from blindscore.protocol.application import (
    Application,
    BandDelivery,
    BatchMember,
    EncryptedApplication,
    EncryptedBatch,
    FeatureValue,
    ModelSpec,
)
from blindscore.protocol.slots import MaskedSlots, SlotLayout
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


# ---------------------------------------------------------------- model specs


def model_spec_to_proto(spec: ModelSpec) -> pb.ModelSpec:
    return pb.ModelSpec(
        model_id=spec.model_id,
        feature_spec=json.dumps(spec.feature_spec, sort_keys=True),
        model_version=spec.version,
        packing_slot_bits=spec.slot_bits,
        packing_max_slots=spec.max_slots,
    )


def model_spec_from_proto(msg: pb.ModelSpec) -> ModelSpec:
    """The bureau's answer to GetModelSpec; a feature spec that is not a JSON object is refused."""
    try:
        spec = json.loads(msg.feature_spec)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"bureau sent a malformed feature spec for {msg.model_id!r}") from exc
    if not isinstance(spec, dict):
        raise InvalidInputError(f"bureau sent a malformed feature spec for {msg.model_id!r}")
    return ModelSpec(
        model_id=msg.model_id,
        version=msg.model_version,
        feature_spec=spec,
        slot_bits=int(msg.packing_slot_bits),
        max_slots=int(msg.packing_max_slots),
    )


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
    application_id: str, key: PublicKey, req: comparison.MaskedRequest, platform_id: str = ""
) -> pb.MaskedRequest:
    return pb.MaskedRequest(
        application_id=application_id,
        platform_id=platform_id,
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
    application_id: str,
    key: PublicKey,
    dgk: DGKPublicKey,
    req: comparison.BlindedRequest,
    platform_id: str = "",
) -> pb.BlindedRequest:
    count = len(req.groups)
    width = len(req.groups[0]) if count else 0
    return pb.BlindedRequest(
        application_id=application_id,
        platform_id=platform_id,
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
        platform_id=delivery.platform_id,
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
        platform_id=msg.platform_id,
    )


def features_from_mapping(row: Mapping[str, Any]) -> dict[str, FeatureValue]:
    """Normalise a CSV/dict row into feature values: numbers stay numbers, the rest is text."""
    out: dict[str, FeatureValue] = {}
    for k, v in row.items():
        out[k] = v if isinstance(v, int | float) and not isinstance(v, bool) else str(v)
    return out


# ---------------------------------------------------------------- packed batches


def encrypted_batch_to_proto(batch: EncryptedBatch, key: PublicKey) -> pb.EncryptedBatch:
    return pb.EncryptedBatch(
        batch_id=batch.batch_id,
        platform_id=batch.platform_id,
        bank_id=batch.bank_id,
        model_id=batch.model_id,
        key_id=batch.key_id,
        model_version=batch.model_version,
        slot_bits=batch.slot_bits,
        members=[
            pb.BatchMember(application_id=m.application_id, consent_reference=m.consent_reference)
            for m in batch.members
        ],
        count=len(batch.ciphertexts),
        ciphertexts=key.pack(batch.ciphertexts),
    )


def encrypted_batch_from_proto(msg: pb.EncryptedBatch, key: PublicKey) -> EncryptedBatch:
    """Unpack and validate every ciphertext against ``key``; members and ids checked."""
    if len(msg.members) > packing.MAX_SLOTS:
        raise InvalidInputError(f"a packed batch holds at most {packing.MAX_SLOTS} applications")
    return EncryptedBatch(
        batch_id=msg.batch_id,
        platform_id=msg.platform_id,
        bank_id=msg.bank_id,
        model_id=msg.model_id,
        key_id=msg.key_id,
        model_version=msg.model_version,
        slot_bits=msg.slot_bits,
        members=tuple(BatchMember(m.application_id, m.consent_reference) for m in msg.members),
        ciphertexts=tuple(key.unpack(msg.ciphertexts, msg.count)),
    )


_GROUP_BYTES = 256  # RFC 3526 group 14 elements, big-endian


def _element(data: bytes, what: str) -> int:
    if len(data) != _GROUP_BYTES:
        raise InvalidInputError(
            f"{what}: expected a {_GROUP_BYTES}-byte group element, got {len(data)} bytes"
        )
    return int.from_bytes(data, "big")


def _block(data: bytes, what: str) -> int:
    if len(data) != 16:
        raise InvalidInputError(f"{what}: expected 16 bytes, got {len(data)}")
    return int.from_bytes(data, "big")


def ot_offer_to_proto(offer: ot.SetupOffer) -> pb.OtSetupOffer:
    return pb.OtSetupOffer(session_id=offer.session_id, c=int(offer.c).to_bytes(_GROUP_BYTES, "big"))


def ot_offer_from_proto(msg: pb.OtSetupOffer) -> ot.SetupOffer:
    return ot.SetupOffer(session_id=bytes(msg.session_id), c=_element(msg.c, "OT offer"))


def ot_choice_to_proto(choice: ot.SetupChoice) -> pb.OtSetupChoice:
    return pb.OtSetupChoice(
        session_id=choice.session_id, pk0=[int(x).to_bytes(_GROUP_BYTES, "big") for x in choice.pk0]
    )


def ot_choice_from_proto(msg: pb.OtSetupChoice) -> ot.SetupChoice:
    if len(msg.pk0) != ot.KAPPA:
        raise InvalidInputError(f"OT setup choice: expected {ot.KAPPA} keys, got {len(msg.pk0)}")
    return ot.SetupChoice(
        session_id=bytes(msg.session_id), pk0=tuple(_element(x, "OT setup key") for x in msg.pk0)
    )


def ot_reply_to_proto(reply: ot.SetupReply) -> pb.OtSetupReply:
    return pb.OtSetupReply(
        session_id=reply.session_id,
        gr=int(reply.gr).to_bytes(_GROUP_BYTES, "big"),
        e0=[int(x).to_bytes(16, "big") for x in reply.e0],
        e1=[int(x).to_bytes(16, "big") for x in reply.e1],
    )


def ot_reply_from_proto(msg: pb.OtSetupReply) -> ot.SetupReply:
    if len(msg.e0) != ot.KAPPA or len(msg.e1) != ot.KAPPA:
        raise InvalidInputError(f"OT setup reply: expected {ot.KAPPA} message pairs")
    return ot.SetupReply(
        session_id=bytes(msg.session_id),
        gr=_element(msg.gr, "OT setup reply"),
        e0=tuple(_block(x, "OT setup reply") for x in msg.e0),
        e1=tuple(_block(x, "OT setup reply") for x in msg.e1),
    )


def packed_start_to_proto(
    key: PublicKey,
    session_id: bytes,
    req: packing.PackedMasked,
    application_ids: Sequence[str],
    platform_id: str = "",
) -> pb.PackedStartRequest:
    return pb.PackedStartRequest(
        application_ids=list(application_ids),
        platform_id=platform_id,
        key_id=key.key_id,
        ot_session_id=session_id,
        ciphertext=key.pack([req.ciphertext]),
        count=req.count,
        slot_bits=req.slot_bits,
        cutoffs=req.cutoffs,
        bits=req.bits,
        truncate_bits=req.truncate_bits,
    )


def packed_start_from_proto(msg: pb.PackedStartRequest, key: PublicKey) -> packing.PackedMasked:
    (ciphertext,) = key.unpack(msg.ciphertext, 1)
    return packing.PackedMasked(
        ciphertext=int(ciphertext),
        count=msg.count,
        slot_bits=msg.slot_bits,
        cutoffs=msg.cutoffs,
        bits=msg.bits,
        truncate_bits=msg.truncate_bits,
    )


def packed_finish_to_proto(
    key_id: str,
    ticket: bytes,
    reply: ot.ExtensionReply,
    circuit: garble.GarbledComparisons,
    model_id: str,
    labels: tuple[str, ...],
    application_ids: tuple[str, ...],
    platform_id: str = "",
) -> pb.PackedFinishRequest:
    return pb.PackedFinishRequest(
        platform_id=platform_id,
        key_id=key_id,
        ticket=ticket,
        ot_y0=reply.y0,
        ot_y1=reply.y1,
        garbling_id=circuit.garbling_id,
        tables=circuit.tables,
        garbler_labels=circuit.garbler_labels,
        decode=circuit.decode,
        model_id=model_id,
        band_labels=list(labels),
        application_ids=list(application_ids),
        count=circuit.instances,
        cutoffs=circuit.count,
        width=circuit.width,
    )


def packed_finish_from_proto(
    msg: pb.PackedFinishRequest,
) -> tuple[ot.ExtensionReply, garble.GarbledComparisons]:
    """The OT reply and the garbled comparisons (the bank checks their shape against its ticket)."""
    reply = ot.ExtensionReply(y0=bytes(msg.ot_y0), y1=bytes(msg.ot_y1))
    circuit = garble.GarbledComparisons(
        garbling_id=bytes(msg.garbling_id),
        instances=msg.count,
        count=msg.cutoffs,
        width=msg.width,
        tables=bytes(msg.tables),
        garbler_labels=bytes(msg.garbler_labels),
        decode=bytes(msg.decode),
    )
    return reply, circuit


# -- the garbled-circuit band of one application (blindscore.protocol.circuit_band) -------------


def circuit_shape_to_proto(shape: circuit_band.CircuitShape) -> pb.CircuitShape:
    return pb.CircuitShape(
        family=shape.family,
        values=shape.values,
        value_bits=shape.value_bits,
        cutoffs=shape.cutoffs,
        params=dict(shape.params),
    )


def circuit_shape_from_proto(msg: pb.CircuitShape) -> circuit_band.CircuitShape:
    if not msg.family or len(msg.family) > 64:
        raise InvalidInputError("a circuit shape needs a family name of 1 to 64 characters")
    if len(msg.params) > 16:
        raise InvalidInputError("a circuit shape has at most 16 parameters")
    return circuit_band.CircuitShape(
        family=msg.family,
        values=msg.values,
        value_bits=msg.value_bits,
        cutoffs=msg.cutoffs,
        params=tuple(sorted((str(k), int(v)) for k, v in msg.params.items())),
    )


def circuit_start_to_proto(
    key: PublicKey,
    session_id: bytes,
    request: circuit_band.CircuitRequest,
    application_id: str,
    platform_id: str = "",
) -> pb.CircuitStartRequest:
    return pb.CircuitStartRequest(
        key_id=key.key_id,
        ot_session_id=session_id,
        shape=circuit_shape_to_proto(request.shape),
        ciphertexts=[key.pack([c]) for c in request.masked.ciphertexts],
        kappa=request.masked.layout.kappa,
        application_id=application_id,
        platform_id=platform_id,
    )


def circuit_start_from_proto(msg: pb.CircuitStartRequest, key: PublicKey) -> circuit_band.CircuitRequest:
    """The masked linear stage; its layout is checked against the shape and the key here."""
    shape = circuit_shape_from_proto(msg.shape)
    layout = SlotLayout(shape.values, shape.value_bits, msg.kappa)
    expected = layout.ciphertexts(key.bits)
    if len(msg.ciphertexts) != expected:
        raise InvalidInputError(f"the shape takes {expected} packed ciphertexts, got {len(msg.ciphertexts)}")
    cts = tuple(int(key.unpack(c, 1)[0]) for c in msg.ciphertexts)
    return circuit_band.CircuitRequest(shape, MaskedSlots(cts, layout))


def circuit_finish_to_proto(
    key_id: str,
    ticket: bytes,
    garbled: halfgates.GarbledCircuit,
    model_id: str,
    labels: tuple[str, ...],
    application_id: str,
    platform_id: str = "",
) -> pb.CircuitFinishRequest:
    return pb.CircuitFinishRequest(
        key_id=key_id,
        ticket=ticket,
        garbling_id=garbled.garbling_id,
        tables=garbled.tables,
        decode=garbled.decode,
        output_tags=garbled.output_tags,
        model_id=model_id,
        band_labels=list(labels),
        application_id=application_id,
        platform_id=platform_id,
    )


def circuit_finish_from_proto(msg: pb.CircuitFinishRequest) -> halfgates.GarbledCircuit:
    """The garbled circuit (the bank checks it against the circuit it rebuilds)."""
    return halfgates.GarbledCircuit(
        garbling_id=bytes(msg.garbling_id),
        tables=bytes(msg.tables),
        decode=bytes(msg.decode),
        output_tags=bytes(msg.output_tags),
    )
