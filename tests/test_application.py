"""The domain records' own checks: id and model-version rules at their bounds, messages naming the field."""

from __future__ import annotations

import re
from typing import Any

import pytest

from blindscore.errors import InvalidInputError
from blindscore.protocol.application import (
    Application,
    BatchMember,
    EncryptedApplication,
    EncryptedBatch,
    check_id,
    check_model_version,
)

ID_MESSAGE = "is not a valid identifier (1-128 characters: letters, digits, . _ : -)"
IDS: dict[str, Any] = dict(application_id="app-1", bank_id="bank", model_id="m", key_id="pk-1")


@pytest.mark.parametrize("value", ["a", "Z", "7", "a" * 128, "a.b_c:d-e", "0-._:", "A" + "9" * 127])
def test_ids_within_the_rule_are_kept(value: str) -> None:
    assert check_id("application id", value) == value


@pytest.mark.parametrize(
    "value",
    ["", "a" * 129, "-a", ".a", "_a", ":a", "a b", "a/b", "a\n", "é", "a\u200b", "a" * 128 + "\n"],
)
def test_ids_outside_the_rule_are_refused_naming_the_kind(value: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        check_id("bank id", value)
    assert str(info.value) == f"bank id {value!r} {ID_MESSAGE}"


def test_an_id_that_is_no_string_is_refused() -> None:
    with pytest.raises(InvalidInputError, match=re.escape(f"key id 7 {ID_MESSAGE}")):
        check_id("key id", 7)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["", "latest", "1", "v1", "9", "10", "v123456789", "123456789"])
def test_model_versions_within_the_rule_are_kept(value: str) -> None:
    assert check_model_version(value) == value


@pytest.mark.parametrize(
    "value", ["0", "v0", "01", "V1", "vv1", "1234567890", "latest1", "Latest", " 1", "1\n", "-1", "1.0", "١"]
)
def test_model_versions_outside_the_rule_are_refused(value: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        check_model_version(value)
    assert str(info.value) == f"model version {value!r} must be a positive integer or 'latest'"


def test_a_model_version_that_is_no_string_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="model version 3 must be"):
        check_model_version(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["application_id", "bank_id", "model_id", "key_id"])
def test_an_application_names_its_bad_field_in_prose(field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        Application(**{**IDS, field: "a b"}, consent_reference="c")
    assert str(info.value) == f"{field.replace('_', ' ')} 'a b' {ID_MESSAGE}"


def test_an_application_needs_a_consent_of_at_most_256_characters() -> None:
    assert Application(**IDS, consent_reference="c" * 256).consent_reference == "c" * 256
    with pytest.raises(InvalidInputError, match=r"^consent reference longer than 256 characters$"):
        Application(**IDS, consent_reference="c" * 257)
    with pytest.raises(InvalidInputError, match=r"^a consent reference is required for every application$"):
        Application(**IDS, consent_reference="")


def test_an_application_checks_its_model_version() -> None:
    assert Application(**IDS, consent_reference="c", model_version="v2").model_version == "v2"
    with pytest.raises(InvalidInputError, match="model version '0' must be"):
        Application(**IDS, consent_reference="c", model_version="0")


@pytest.mark.parametrize("field", ["application_id", "platform_id", "bank_id", "model_id", "key_id"])
def test_an_encrypted_application_names_its_bad_field(field: str) -> None:
    good: dict[str, Any] = {**IDS, "platform_id": "plat", "consent_reference": "c", "ciphertexts": (1,)}
    assert EncryptedApplication(**good).platform_id == "plat"
    with pytest.raises(InvalidInputError) as info:
        EncryptedApplication(**{**good, field: ""})
    assert str(info.value) == f"{field.replace('_', ' ')} '' {ID_MESSAGE}"


def test_an_encrypted_application_checks_consent_and_version() -> None:
    good: dict[str, Any] = {**IDS, "platform_id": "plat", "consent_reference": "c", "ciphertexts": (1,)}
    with pytest.raises(InvalidInputError, match=r"^a consent reference is required"):
        EncryptedApplication(**{**good, "consent_reference": ""})
    with pytest.raises(InvalidInputError, match="model version 'x' must be"):
        EncryptedApplication(**{**good, "model_version": "x"})


def test_a_batch_member_names_a_bad_id() -> None:
    with pytest.raises(InvalidInputError, match=re.escape(f"application id 'a b' {ID_MESSAGE}")):
        BatchMember("a b", "consent")


BATCH: dict[str, Any] = dict(
    batch_id="b", platform_id="p", bank_id="bank", model_id="m", key_id="k", model_version="12",
    slot_bits=94, members=(BatchMember("a", "c"), BatchMember("b", "c")), ciphertexts=(1,),
)  # fmt: skip


@pytest.mark.parametrize("field", ["batch_id", "platform_id", "bank_id", "model_id", "key_id"])
def test_a_batch_names_its_bad_field(field: str) -> None:
    assert EncryptedBatch(**BATCH).model_version == "12"
    with pytest.raises(InvalidInputError) as info:
        EncryptedBatch(**{**BATCH, field: "-x"})
    assert str(info.value) == f"{field.replace('_', ' ')} '-x' {ID_MESSAGE}"


@pytest.mark.parametrize("version", ["", "latest", "v1", "١٢", "1.5", "-1"])
def test_a_batch_needs_a_resolved_version_in_ascii_digits(version: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        EncryptedBatch(**{**BATCH, "model_version": version})
    assert str(info.value) == f"a packed batch needs a resolved model version, got {version!r}"


def test_a_batch_refuses_no_members_a_repeated_member_and_no_columns() -> None:
    with pytest.raises(InvalidInputError, match=r"^a packed batch needs at least one application$"):
        EncryptedBatch(**{**BATCH, "members": ()})
    twice = (BatchMember("a", "c"), BatchMember("b", "c"), BatchMember("a", "d"))
    with pytest.raises(InvalidInputError, match=r"^a packed batch lists an application id twice$"):
        EncryptedBatch(**{**BATCH, "members": twice})
    with pytest.raises(InvalidInputError, match=r"^a packed batch needs its encrypted columns$"):
        EncryptedBatch(**{**BATCH, "ciphertexts": ()})
