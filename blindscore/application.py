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


@dataclass(frozen=True)
class Application:
    """What a platform operator hands the platform node: plaintext features of one applicant."""

    application_id: str
    bank_id: str
    model_id: str
    key_id: str
    consent_reference: str
    features: Mapping[str, FeatureValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_id("application id", self.application_id)
        check_id("bank id", self.bank_id)
        check_id("model id", self.model_id)
        check_id("key id", self.key_id)
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

    def __post_init__(self) -> None:
        check_id("application id", self.application_id)
        check_id("platform id", self.platform_id)
        check_id("bank id", self.bank_id)
        check_id("model id", self.model_id)
        check_id("key id", self.key_id)
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
