"""Domain records of an application as it moves platform -> bureau -> bank."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blindscore.errors import InvalidInputError

# Matched with fullmatch: a "$" with match() would let one trailing newline through.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

FeatureValue = float | str


def _check_ids(record: object, *fields: str) -> None:
    """check_id on each named field of ``record``; the message names the field as prose."""
    for name in fields:
        check_id(name.replace("_", " "), getattr(record, name))


def _check_consent(reference: str) -> None:
    if not reference:
        raise InvalidInputError("a consent reference is required for every application")


def check_id(kind: str, value: str) -> str:
    """Identifiers are 1-128 printable characters from a small safe set; anything else is refused."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidInputError(
            f"{kind} {value!r} is not a valid identifier (1-128 characters: letters, digits, . _ : -)"
        )
    return value


_VERSION = re.compile(r"|latest|v?[1-9][0-9]{0,8}")


def check_model_version(value: str) -> str:
    """A model version is "" or "latest" (the newest) or a positive number, optionally "v"-prefixed."""
    if not isinstance(value, str) or not _VERSION.fullmatch(value):
        raise InvalidInputError(f"model version {value!r} must be a positive integer or 'latest'")
    return value


@dataclass(frozen=True)
class Application:
    """What a platform operator hands the platform node: plaintext features of one applicant."""

    application_id: str
    bank_id: str
    model_id: str
    key_id: str
    consent_reference: str
    #: None is a missing value (sent unset; the platform reads it as NaN, as it does an unset value).
    features: Mapping[str, FeatureValue | None] = field(default_factory=dict)
    #: "" or "latest" for the newest version at the bureau, or a version number.
    model_version: str = ""

    def __post_init__(self) -> None:
        _check_ids(self, "application_id", "bank_id", "model_id", "key_id")
        check_model_version(self.model_version)
        _check_consent(self.consent_reference)
        if len(self.consent_reference) > 256:
            raise InvalidInputError("consent reference longer than 256 characters")


@dataclass(frozen=True)
class EncryptedApplication:
    """What the platform submits to the bureau: ciphertexts of the encoded features, nothing else."""

    application_id: str
    platform_id: str
    bank_id: str
    model_id: str
    key_id: str
    consent_reference: str
    ciphertexts: tuple[Any, ...]
    #: The version the platform encoded for ("" means the latest at the bureau).
    model_version: str = ""

    def __post_init__(self) -> None:
        _check_ids(self, "application_id", "platform_id", "bank_id", "model_id", "key_id")
        check_model_version(self.model_version)
        _check_consent(self.consent_reference)


@dataclass(frozen=True)
class ModelSpec:
    """The public part of a model version, all a platform needs to encode features: never weights
    or points."""

    model_id: str
    #: The resolved version number, as text ("" or "latest" never appear here).
    version: str
    #: The feature spec (blindscore.models.features.FeatureSpec.to_dict()).
    feature_spec: dict[str, Any]
    #: Bits per slot of a packed batch and the most applications per batch; both 0 when the model
    #: is scored one application at a time.
    slot_bits: int = 0
    max_slots: int = 0


@dataclass(frozen=True)
class BandDelivery:
    """The bureau's hand-over of one application's band to the bank, still encrypted."""

    application_id: str
    key_id: str
    model_id: str
    band_labels: tuple[str, ...]
    band_ciphertext: Any
    #: The platform the application came from, as the bureau authenticated it.
    platform_id: str = ""


@dataclass(frozen=True)
class BatchMember:
    """One application of a packed batch: its id and consent reference (its features are in the slots)."""

    application_id: str
    consent_reference: str

    def __post_init__(self) -> None:
        check_id("application id", self.application_id)
        _check_consent(self.consent_reference)


@dataclass(frozen=True)
class EncryptedBatch:
    """A packed batch (:mod:`blindscore.protocol.packing`): one ciphertext per encoded column, slot a holding
    member a's features. One bank key and one resolved model version for every member."""

    batch_id: str
    platform_id: str
    bank_id: str
    model_id: str
    key_id: str
    model_version: str
    slot_bits: int
    members: tuple[BatchMember, ...]
    ciphertexts: tuple[Any, ...]

    def __post_init__(self) -> None:
        _check_ids(self, "batch_id", "platform_id", "bank_id", "model_id", "key_id")
        if not (self.model_version.isascii() and self.model_version.isdigit()):
            raise InvalidInputError(
                f"a packed batch needs a resolved model version, got {self.model_version!r}"
            )
        if not self.members:
            raise InvalidInputError("a packed batch needs at least one application")
        ids = [m.application_id for m in self.members]
        if len(set(ids)) != len(ids):
            raise InvalidInputError("a packed batch lists an application id twice")
        if not self.ciphertexts:
            raise InvalidInputError("a packed batch needs its encrypted columns")
