"""Domain records of an application as it moves platform -> bureau -> bank."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blindscore.errors import InvalidInputError

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")

FeatureValue = float | str


def check_id(kind: str, value: str) -> str:
    """Identifiers are 1-128 printable characters from a small safe set; anything else is refused."""
    if not isinstance(value, str) or not _ID.match(value):
        raise InvalidInputError(
            f"{kind} {value!r} is not a valid identifier (1-128 characters: letters, digits, . _ : -)"
        )
    return value


_VERSION = re.compile(r"^(|latest|v?[1-9][0-9]{0,8})$")


def check_model_version(value: str) -> str:
    """A model version is "" or "latest" (the newest) or a positive number, optionally "v"-prefixed."""
    if not isinstance(value, str) or not _VERSION.match(value):
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
    features: Mapping[str, FeatureValue] = field(default_factory=dict)
    #: "" or "latest" for the newest version at the bureau, or a version number.
    model_version: str = ""

    def __post_init__(self) -> None:
        check_id("application id", self.application_id)
        check_id("bank id", self.bank_id)
        check_id("model id", self.model_id)
        check_id("key id", self.key_id)
        check_model_version(self.model_version)
        if not self.consent_reference:
            raise InvalidInputError("a consent reference is required for every application")
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
        check_id("application id", self.application_id)
        check_id("platform id", self.platform_id)
        check_id("bank id", self.bank_id)
        check_id("model id", self.model_id)
        check_id("key id", self.key_id)
        check_model_version(self.model_version)
        if not self.consent_reference:
            raise InvalidInputError("a consent reference is required for every application")


@dataclass(frozen=True)
class BandDelivery:
    """The bureau's hand-over of one application's band to the bank, still encrypted."""

    application_id: str
    key_id: str
    model_id: str
    band_labels: tuple[str, ...]
    band_ciphertext: Any
