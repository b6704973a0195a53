from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeatureValue(_message.Message):
    __slots__ = ("number", "text")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    number: float
    text: str
    def __init__(self, number: _Optional[float] = ..., text: _Optional[str] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("application_id", "bank_id", "model_id", "key_id", "consent_reference", "features", "model_version")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FeatureValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FeatureValue, _Mapping]] = ...) -> None: ...
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    BANK_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CONSENT_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    application_id: str
    bank_id: str
    model_id: str
    key_id: str
    consent_reference: str
    features: _containers.MessageMap[str, FeatureValue]
    model_version: str
    def __init__(self, application_id: _Optional[str] = ..., bank_id: _Optional[str] = ..., model_id: _Optional[str] = ..., key_id: _Optional[str] = ..., consent_reference: _Optional[str] = ..., features: _Optional[_Mapping[str, FeatureValue]] = ..., model_version: _Optional[str] = ...) -> None: ...

class ScoreReceipt(_message.Message):
    __slots__ = ("application_id", "accepted", "encrypt_ms", "total_ms", "error_code", "error_message", "stage_ms", "wire_bytes", "model_version", "pending")
    class StageMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ENCRYPT_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STAGE_MS_FIELD_NUMBER: _ClassVar[int]
    WIRE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    application_id: str
    accepted: bool
    encrypt_ms: float
    total_ms: float
    error_code: int
    error_message: str
    stage_ms: _containers.ScalarMap[str, float]
    wire_bytes: int
    model_version: str
    pending: bool
    def __init__(self, application_id: _Optional[str] = ..., accepted: bool = ..., encrypt_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., error_code: _Optional[int] = ..., error_message: _Optional[str] = ..., stage_ms: _Optional[_Mapping[str, float]] = ..., wire_bytes: _Optional[int] = ..., model_version: _Optional[str] = ..., pending: bool = ...) -> None: ...

class RegisterBankRequest(_message.Message):
    __slots__ = ("bank_id", "address", "paillier_public_key", "dgk_public_key", "active_key_ids")
    BANK_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PAILLIER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    DGK_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_KEY_IDS_FIELD_NUMBER: _ClassVar[int]
    bank_id: str
    address: str
    paillier_public_key: str
    dgk_public_key: str
    active_key_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, bank_id: _Optional[str] = ..., address: _Optional[str] = ..., paillier_public_key: _Optional[str] = ..., dgk_public_key: _Optional[str] = ..., active_key_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RegisterBankResponse(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class GetBankKeyRequest(_message.Message):
    __slots__ = ("bank_id", "key_id")
    BANK_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    bank_id: str
    key_id: str
    def __init__(self, bank_id: _Optional[str] = ..., key_id: _Optional[str] = ...) -> None: ...

class BankKey(_message.Message):
    __slots__ = ("bank_id", "key_id", "paillier_public_key")
    BANK_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PAILLIER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    bank_id: str
    key_id: str
    paillier_public_key: str
    def __init__(self, bank_id: _Optional[str] = ..., key_id: _Optional[str] = ..., paillier_public_key: _Optional[str] = ...) -> None: ...

class GetModelSpecRequest(_message.Message):
    __slots__ = ("model_id", "model_version")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model_version: str
    def __init__(self, model_id: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class ModelSpec(_message.Message):
    __slots__ = ("model_id", "feature_spec", "model_version", "packing_slot_bits", "packing_max_slots")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SPEC_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PACKING_SLOT_BITS_FIELD_NUMBER: _ClassVar[int]
    PACKING_MAX_SLOTS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    feature_spec: str
    model_version: str
    packing_slot_bits: int
    packing_max_slots: int
    def __init__(self, model_id: _Optional[str] = ..., feature_spec: _Optional[str] = ..., model_version: _Optional[str] = ..., packing_slot_bits: _Optional[int] = ..., packing_max_slots: _Optional[int] = ...) -> None: ...

class EncryptedApplication(_message.Message):
    __slots__ = ("application_id", "platform_id", "bank_id", "model_id", "key_id", "consent_reference", "count", "ciphertexts", "model_version")
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    BANK_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CONSENT_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    application_id: str
    platform_id: str
    bank_id: str
    model_id: str
    key_id: str
    consent_reference: str
    count: int
    ciphertexts: bytes
    model_version: str
    def __init__(self, application_id: _Optional[str] = ..., platform_id: _Optional[str] = ..., bank_id: _Optional[str] = ..., model_id: _Optional[str] = ..., key_id: _Optional[str] = ..., consent_reference: _Optional[str] = ..., count: _Optional[int] = ..., ciphertexts: _Optional[bytes] = ..., model_version: _Optional[str] = ...) -> None: ...

class SubmitReceipt(_message.Message):
    __slots__ = ("application_id", "accepted", "stage_ms", "wire_bytes", "model_version", "pending")
    class StageMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    STAGE_MS_FIELD_NUMBER: _ClassVar[int]
    WIRE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    application_id: str
    accepted: bool
    stage_ms: _containers.ScalarMap[str, float]
    wire_bytes: int
    model_version: str
    pending: bool
    def __init__(self, application_id: _Optional[str] = ..., accepted: bool = ..., stage_ms: _Optional[_Mapping[str, float]] = ..., wire_bytes: _Optional[int] = ..., model_version: _Optional[str] = ..., pending: bool = ...) -> None: ...

class BatchMember(_message.Message):
    __slots__ = ("application_id", "consent_reference")
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    CONSENT_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    application_id: str
    consent_reference: str
    def __init__(self, application_id: _Optional[str] = ..., consent_reference: _Optional[str] = ...) -> None: ...

class EncryptedBatch(_message.Message):
    __slots__ = ("batch_id", "platform_id", "bank_id", "model_id", "key_id", "model_version", "slot_bits", "members", "count", "ciphertexts")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    BANK_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SLOT_BITS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    platform_id: str
    bank_id: str
    model_id: str
    key_id: str
    model_version: str
    slot_bits: int
    members: _containers.RepeatedCompositeFieldContainer[BatchMember]
    count: int
    ciphertexts: bytes
    def __init__(self, batch_id: _Optional[str] = ..., platform_id: _Optional[str] = ..., bank_id: _Optional[str] = ..., model_id: _Optional[str] = ..., key_id: _Optional[str] = ..., model_version: _Optional[str] = ..., slot_bits: _Optional[int] = ..., members: _Optional[_Iterable[_Union[BatchMember, _Mapping]]] = ..., count: _Optional[int] = ..., ciphertexts: _Optional[bytes] = ...) -> None: ...

class BatchReceipt(_message.Message):
    __slots__ = ("batch_id", "model_version", "pending", "stage_ms", "wire_bytes")
    class StageMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    STAGE_MS_FIELD_NUMBER: _ClassVar[int]
    WIRE_BYTES_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    model_version: str
    pending: bool
    stage_ms: _containers.ScalarMap[str, float]
    wire_bytes: int
    def __init__(self, batch_id: _Optional[str] = ..., model_version: _Optional[str] = ..., pending: bool = ..., stage_ms: _Optional[_Mapping[str, float]] = ..., wire_bytes: _Optional[int] = ...) -> None: ...

class GetBandRequest(_message.Message):
    __slots__ = ("application_id", "platform_id")
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    application_id: str
    platform_id: str
    def __init__(self, application_id: _Optional[str] = ..., platform_id: _Optional[str] = ...) -> None: ...

class WatchBandsRequest(_message.Message):
    __slots__ = ("since",)
    SINCE_FIELD_NUMBER: _ClassVar[int]
    since: float
    def __init__(self, since: _Optional[float] = ...) -> None: ...

class BandResult(_message.Message):
    __slots__ = ("application_id", "platform_id", "model_id", "band", "band_label", "received_at", "bureau_id", "key_id")
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    BAND_FIELD_NUMBER: _ClassVar[int]
    BAND_LABEL_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    BUREAU_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    application_id: str
    platform_id: str
    model_id: str
    band: int
    band_label: str
    received_at: float
    bureau_id: str
    key_id: str
    def __init__(self, application_id: _Optional[str] = ..., platform_id: _Optional[str] = ..., model_id: _Optional[str] = ..., band: _Optional[int] = ..., band_label: _Optional[str] = ..., received_at: _Optional[float] = ..., bureau_id: _Optional[str] = ..., key_id: _Optional[str] = ...) -> None: ...

class OtSetupStartRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OtSetupOffer(_message.Message):
    __slots__ = ("session_id", "c", "server_ms")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    C_FIELD_NUMBER: _ClassVar[int]
    SERVER_MS_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    c: bytes
    server_ms: float
    def __init__(self, session_id: _Optional[bytes] = ..., c: _Optional[bytes] = ..., server_ms: _Optional[float] = ...) -> None: ...

class OtSetupChoice(_message.Message):
    __slots__ = ("session_id", "pk0")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PK0_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    pk0: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, session_id: _Optional[bytes] = ..., pk0: _Optional[_Iterable[bytes]] = ...) -> None: ...

class OtSetupReply(_message.Message):
    __slots__ = ("session_id", "gr", "e0", "e1", "server_ms")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    GR_FIELD_NUMBER: _ClassVar[int]
    E0_FIELD_NUMBER: _ClassVar[int]
    E1_FIELD_NUMBER: _ClassVar[int]
    SERVER_MS_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    gr: bytes
    e0: _containers.RepeatedScalarFieldContainer[bytes]
    e1: _containers.RepeatedScalarFieldContainer[bytes]
    server_ms: float
    def __init__(self, session_id: _Optional[bytes] = ..., gr: _Optional[bytes] = ..., e0: _Optional[_Iterable[bytes]] = ..., e1: _Optional[_Iterable[bytes]] = ..., server_ms: _Optional[float] = ...) -> None: ...

class PackedStartRequest(_message.Message):
    __slots__ = ("key_id", "ot_session_id", "ciphertext", "count", "slot_bits", "cutoffs", "bits", "truncate_bits", "application_ids", "platform_id")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    OT_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SLOT_BITS_FIELD_NUMBER: _ClassVar[int]
    CUTOFFS_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_BITS_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_IDS_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    ot_session_id: bytes
    ciphertext: bytes
    count: int
    slot_bits: int
    cutoffs: int
    bits: int
    truncate_bits: int
    application_ids: _containers.RepeatedScalarFieldContainer[str]
    platform_id: str
    def __init__(self, key_id: _Optional[str] = ..., ot_session_id: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ..., count: _Optional[int] = ..., slot_bits: _Optional[int] = ..., cutoffs: _Optional[int] = ..., bits: _Optional[int] = ..., truncate_bits: _Optional[int] = ..., application_ids: _Optional[_Iterable[str]] = ..., platform_id: _Optional[str] = ...) -> None: ...

class PackedStartResponse(_message.Message):
    __slots__ = ("ticket", "ot_nonce", "ot_count", "ot_u", "server_ms", "ot_check")
    TICKET_FIELD_NUMBER: _ClassVar[int]
    OT_NONCE_FIELD_NUMBER: _ClassVar[int]
    OT_COUNT_FIELD_NUMBER: _ClassVar[int]
    OT_U_FIELD_NUMBER: _ClassVar[int]
    SERVER_MS_FIELD_NUMBER: _ClassVar[int]
    OT_CHECK_FIELD_NUMBER: _ClassVar[int]
    ticket: bytes
    ot_nonce: bytes
    ot_count: int
    ot_u: bytes
    server_ms: float
    ot_check: bytes
    def __init__(self, ticket: _Optional[bytes] = ..., ot_nonce: _Optional[bytes] = ..., ot_count: _Optional[int] = ..., ot_u: _Optional[bytes] = ..., server_ms: _Optional[float] = ..., ot_check: _Optional[bytes] = ...) -> None: ...

class PackedFinishRequest(_message.Message):
    __slots__ = ("key_id", "ticket", "ot_y0", "ot_y1", "garbling_id", "tables", "garbler_labels", "decode", "model_id", "band_labels", "application_ids", "count", "cutoffs", "width", "platform_id")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    OT_Y0_FIELD_NUMBER: _ClassVar[int]
    OT_Y1_FIELD_NUMBER: _ClassVar[int]
    GARBLING_ID_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    GARBLER_LABELS_FIELD_NUMBER: _ClassVar[int]
    DECODE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    BAND_LABELS_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_IDS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    CUTOFFS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    ticket: bytes
    ot_y0: bytes
    ot_y1: bytes
    garbling_id: bytes
    tables: bytes
    garbler_labels: bytes
    decode: bytes
    model_id: str
    band_labels: _containers.RepeatedScalarFieldContainer[str]
    application_ids: _containers.RepeatedScalarFieldContainer[str]
    count: int
    cutoffs: int
    width: int
    platform_id: str
    def __init__(self, key_id: _Optional[str] = ..., ticket: _Optional[bytes] = ..., ot_y0: _Optional[bytes] = ..., ot_y1: _Optional[bytes] = ..., garbling_id: _Optional[bytes] = ..., tables: _Optional[bytes] = ..., garbler_labels: _Optional[bytes] = ..., decode: _Optional[bytes] = ..., model_id: _Optional[str] = ..., band_labels: _Optional[_Iterable[str]] = ..., application_ids: _Optional[_Iterable[str]] = ..., count: _Optional[int] = ..., cutoffs: _Optional[int] = ..., width: _Optional[int] = ..., platform_id: _Optional[str] = ...) -> None: ...

class PackedFinishResponse(_message.Message):
    __slots__ = ("stored", "server_ms")
    STORED_FIELD_NUMBER: _ClassVar[int]
    SERVER_MS_FIELD_NUMBER: _ClassVar[int]
    stored: int
    server_ms: float
    def __init__(self, stored: _Optional[int] = ..., server_ms: _Optional[float] = ...) -> None: ...

class MaskedRequest(_message.Message):
    __slots__ = ("application_id", "key_id", "count", "bits", "truncate_bits", "width_bits", "ciphertext", "platform_id")
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_BITS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_BITS_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    application_id: str
    key_id: str
    count: int
    bits: int
    truncate_bits: int
    width_bits: int
    ciphertext: bytes
    platform_id: str
    def __init__(self, application_id: _Optional[str] = ..., key_id: _Optional[str] = ..., count: _Optional[int] = ..., bits: _Optional[int] = ..., truncate_bits: _Optional[int] = ..., width_bits: _Optional[int] = ..., ciphertext: _Optional[bytes] = ..., platform_id: _Optional[str] = ...) -> None: ...

class BitsResponse(_message.Message):
    __slots__ = ("bit_ciphertexts", "high", "server_ms")
    BIT_CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    SERVER_MS_FIELD_NUMBER: _ClassVar[int]
    bit_ciphertexts: bytes
    high: bytes
    server_ms: float
    def __init__(self, bit_ciphertexts: _Optional[bytes] = ..., high: _Optional[bytes] = ..., server_ms: _Optional[float] = ...) -> None: ...

class BlindedRequest(_message.Message):
    __slots__ = ("application_id", "key_id", "count", "bits", "groups", "platform_id")
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    application_id: str
    key_id: str
    count: int
    bits: int
    groups: bytes
    platform_id: str
    def __init__(self, application_id: _Optional[str] = ..., key_id: _Optional[str] = ..., count: _Optional[int] = ..., bits: _Optional[int] = ..., groups: _Optional[bytes] = ..., platform_id: _Optional[str] = ...) -> None: ...

class FinalResponse(_message.Message):
    __slots__ = ("deltas", "server_ms")
    DELTAS_FIELD_NUMBER: _ClassVar[int]
    SERVER_MS_FIELD_NUMBER: _ClassVar[int]
    deltas: bytes
    server_ms: float
    def __init__(self, deltas: _Optional[bytes] = ..., server_ms: _Optional[float] = ...) -> None: ...

class BandDelivery(_message.Message):
    __slots__ = ("application_id", "key_id", "model_id", "band_labels", "band_ciphertext", "platform_id")
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    BAND_LABELS_FIELD_NUMBER: _ClassVar[int]
    BAND_CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    application_id: str
    key_id: str
    model_id: str
    band_labels: _containers.RepeatedScalarFieldContainer[str]
    band_ciphertext: bytes
    platform_id: str
    def __init__(self, application_id: _Optional[str] = ..., key_id: _Optional[str] = ..., model_id: _Optional[str] = ..., band_labels: _Optional[_Iterable[str]] = ..., band_ciphertext: _Optional[bytes] = ..., platform_id: _Optional[str] = ...) -> None: ...

class BandReceipt(_message.Message):
    __slots__ = ("application_id", "stored", "server_ms")
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    SERVER_MS_FIELD_NUMBER: _ClassVar[int]
    application_id: str
    stored: bool
    server_ms: float
    def __init__(self, application_id: _Optional[str] = ..., stored: bool = ..., server_ms: _Optional[float] = ...) -> None: ...

class CircuitShape(_message.Message):
    __slots__ = ("family", "values", "value_bits", "cutoffs", "params")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    VALUE_BITS_FIELD_NUMBER: _ClassVar[int]
    CUTOFFS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    family: str
    values: int
    value_bits: int
    cutoffs: int
    params: _containers.ScalarMap[str, int]
    def __init__(self, family: _Optional[str] = ..., values: _Optional[int] = ..., value_bits: _Optional[int] = ..., cutoffs: _Optional[int] = ..., params: _Optional[_Mapping[str, int]] = ...) -> None: ...

class CircuitStartRequest(_message.Message):
    __slots__ = ("key_id", "ot_session_id", "shape", "ciphertexts", "kappa", "application_id", "platform_id")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    OT_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    KAPPA_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    ot_session_id: bytes
    shape: CircuitShape
    ciphertexts: _containers.RepeatedScalarFieldContainer[bytes]
    kappa: int
    application_id: str
    platform_id: str
    def __init__(self, key_id: _Optional[str] = ..., ot_session_id: _Optional[bytes] = ..., shape: _Optional[_Union[CircuitShape, _Mapping]] = ..., ciphertexts: _Optional[_Iterable[bytes]] = ..., kappa: _Optional[int] = ..., application_id: _Optional[str] = ..., platform_id: _Optional[str] = ...) -> None: ...

class CircuitStartResponse(_message.Message):
    __slots__ = ("ticket", "ot_nonce", "ot_count", "ot_u", "server_ms", "ot_check")
    TICKET_FIELD_NUMBER: _ClassVar[int]
    OT_NONCE_FIELD_NUMBER: _ClassVar[int]
    OT_COUNT_FIELD_NUMBER: _ClassVar[int]
    OT_U_FIELD_NUMBER: _ClassVar[int]
    SERVER_MS_FIELD_NUMBER: _ClassVar[int]
    OT_CHECK_FIELD_NUMBER: _ClassVar[int]
    ticket: bytes
    ot_nonce: bytes
    ot_count: int
    ot_u: bytes
    server_ms: float
    ot_check: bytes
    def __init__(self, ticket: _Optional[bytes] = ..., ot_nonce: _Optional[bytes] = ..., ot_count: _Optional[int] = ..., ot_u: _Optional[bytes] = ..., server_ms: _Optional[float] = ..., ot_check: _Optional[bytes] = ...) -> None: ...

class CircuitFinishRequest(_message.Message):
    __slots__ = ("key_id", "ticket", "garbling_id", "tables", "decode", "output_tags", "model_id", "band_labels", "application_id", "platform_id")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    GARBLING_ID_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    DECODE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TAGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    BAND_LABELS_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    ticket: bytes
    garbling_id: bytes
    tables: bytes
    decode: bytes
    output_tags: bytes
    model_id: str
    band_labels: _containers.RepeatedScalarFieldContainer[str]
    application_id: str
    platform_id: str
    def __init__(self, key_id: _Optional[str] = ..., ticket: _Optional[bytes] = ..., garbling_id: _Optional[bytes] = ..., tables: _Optional[bytes] = ..., decode: _Optional[bytes] = ..., output_tags: _Optional[bytes] = ..., model_id: _Optional[str] = ..., band_labels: _Optional[_Iterable[str]] = ..., application_id: _Optional[str] = ..., platform_id: _Optional[str] = ...) -> None: ...

class CircuitFinishResponse(_message.Message):
    __slots__ = ("stored", "server_ms")
    STORED_FIELD_NUMBER: _ClassVar[int]
    SERVER_MS_FIELD_NUMBER: _ClassVar[int]
    stored: int
    server_ms: float
    def __init__(self, stored: _Optional[int] = ..., server_ms: _Optional[float] = ...) -> None: ...

class CircuitRevealRequest(_message.Message):
    __slots__ = ("key_id", "application_id", "platform_id", "garbling_id", "pad")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    GARBLING_ID_FIELD_NUMBER: _ClassVar[int]
    PAD_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    application_id: str
    platform_id: str
    garbling_id: bytes
    pad: bytes
    def __init__(self, key_id: _Optional[str] = ..., application_id: _Optional[str] = ..., platform_id: _Optional[str] = ..., garbling_id: _Optional[bytes] = ..., pad: _Optional[bytes] = ...) -> None: ...

class CircuitRevealResponse(_message.Message):
    __slots__ = ("stored", "server_ms")
    STORED_FIELD_NUMBER: _ClassVar[int]
    SERVER_MS_FIELD_NUMBER: _ClassVar[int]
    stored: int
    server_ms: float
    def __init__(self, stored: _Optional[int] = ..., server_ms: _Optional[float] = ...) -> None: ...
