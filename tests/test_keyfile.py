"""Sealed key files at their edges: a pinned envelope, the header and KDF bounds, passphrase files, and
load-or-generate, on stub keys (no key generation). The key types' own files are in tests/test_keys.py."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from blindscore.crypto import keyfile
from blindscore.crypto.keyfile import KeyPairFiles, Passphrase, read_passphrase_file, seal, unseal
from blindscore.errors import CryptoError, InvalidInputError, PreconditionError

# A sealed envelope written from the format's description with `cryptography` alone (not with this
# module): passphrase "pw", salt bytes 0..15, nonce bytes 100..111, scrypt n=2^15 r=8 p=1, AES-256-GCM
# over the sorted JSON {"a": "0x1", "b": "0x2"}, the header (everything but nonce and ciphertext) as
# compact sorted JSON for associated data. A file sealed by this release must keep opening.
PINNED_SALT = bytes(range(16))
PINNED_NONCE = bytes(range(100, 112))
PINNED: dict[str, Any] = {
    "format": "blindscore-sealed-secret",
    "version": 1,
    "kind": "test-secret",
    "key_id": "pk-0",
    "kdf": {"name": "scrypt", "n": 2**15, "r": 8, "p": 1, "salt": "AAECAwQFBgcICQoLDA0ODw=="},
    "aead": "AES-256-GCM",
    "nonce": "ZGVmZ2hpamtsbW5v",
    "ciphertext": "Lg6m3vV7Jl+2ba5RvJXVmU9iFAWUQgcjM7pLmJM8z0H1580mZ+xXMg==",
}
PATH = Path("/keys/secret.json")


def envelope(**changes: Any) -> dict[str, Any]:
    return {**PINNED, **changes}


def kdf(**changes: Any) -> dict[str, Any]:
    return {**PINNED["kdf"], **changes}


def test_the_pinned_envelope_opens() -> None:
    assert unseal(PATH, PINNED, Passphrase("pw"), kind="test-secret") == {"a": "0x1", "b": "0x2"}


def test_sealing_with_fixed_randomness_gives_the_pinned_envelope(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = iter([PINNED_SALT, PINNED_NONCE])
    monkeypatch.setattr(keyfile.secrets, "token_bytes", lambda size: next(drawn))
    sealed = seal({"b": "0x2", "a": "0x1"}, Passphrase("pw"), kind="test-secret", key_id="pk-0")
    assert sealed == PINNED


def test_a_header_changed_anywhere_fails_authentication() -> None:
    # Authenticated as compact sorted JSON: an edit to any header field is an edit to the file.
    for changed in (envelope(key_id="pk-1"), envelope(extra="x")):
        with pytest.raises(CryptoError, match="wrong passphrase, or the file was modified"):
            unseal(PATH, changed, Passphrase("pw"), kind="test-secret")


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"version": 2}, "sealed key file version 2 is not supported (this blindscore reads version 1)"),
        ({"kind": "other"}, "sealed key file holds a 'other', not a 'test-secret'"),
        ({"aead": "AES-128-GCM"}, "malformed sealed key file header"),
        ({"key_id": None}, "malformed sealed key file header"),
        ({"kdf": "scrypt"}, "sealed key file names an unsupported KDF (scrypt expected)"),
        ({"kdf": kdf(name="pbkdf2")}, "sealed key file names an unsupported KDF (scrypt expected)"),
        ({"kdf": kdf(salt=None)}, "sealed key file field 'kdf.salt' is missing or not a string"),
        ({"kdf": kdf(salt="%%")}, "sealed key file field 'kdf.salt' is not base64"),
        ({"kdf": kdf(salt="AAECAwQFBgcICQoLDA0O")}, "sealed key file has a salt shorter than 16 bytes"),
        ({"nonce": 12}, "sealed key file field 'nonce' is missing or not a string"),
        ({"nonce": "not base64!"}, "sealed key file field 'nonce' is not base64"),
        ({"nonce": "AAAA"}, "sealed key file nonce must be 12 bytes"),
        ({"ciphertext": None}, "sealed key file field 'ciphertext' is missing or not a string"),
        ({"ciphertext": "a"}, "sealed key file field 'ciphertext' is not base64"),
    ],
)
def test_a_malformed_envelope_is_refused_naming_file_and_field(change: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        unseal(PATH, envelope(**change), Passphrase("pw"), kind="test-secret")
    assert str(info.value) == f"{PATH}: {says}"


def test_no_passphrase_for_a_sealed_file_says_how_to_give_one() -> None:
    with pytest.raises(PreconditionError) as info:
        unseal(PATH, PINNED, None, kind="test-secret")
    assert str(info.value) == (
        f"key file {PATH} is encrypted; give --passphrase-file or set BLINDSCORE_KEY_PASSPHRASE"
    )


@pytest.mark.parametrize(
    ("n", "r", "p"),
    [(2**14, 8, 1), (2**20, 8, 1), (2**15, 1, 1), (2**15, 32, 1), (2**15, 8, 16)],
)
def test_scrypt_parameters_at_the_edges_of_the_range_are_accepted(n: int, r: int, p: int) -> None:
    # Checked without deriving (2^20 x r = 32 costs a GiB): the range check alone.
    assert keyfile._kdf_params(PATH, kdf(n=n, r=r, p=p)) == (PINNED_SALT, n, r, p)


@pytest.mark.parametrize(
    ("n", "r", "p"),
    [
        (2**13, 8, 1),
        (2**21, 8, 1),
        (3 * 2**14, 8, 1),
        (2**15 + 1, 8, 1),
        (2**15, 0, 1),
        (2**15, 33, 1),
        (2**15, 8, 0),
        (2**15, 8, 17),
        (float(2**15), 8, 1),
        (2**15, "8", 1),
        (2**15, 8, None),
    ],
)
def test_scrypt_parameters_outside_the_range_are_refused(n: Any, r: Any, p: Any) -> None:
    with pytest.raises(InvalidInputError) as info:
        keyfile._kdf_params(PATH, kdf(n=n, r=r, p=p))
    assert str(info.value) == f"{PATH}: sealed key file has scrypt parameters outside the accepted range"


def test_a_salt_of_exactly_16_bytes_is_enough_and_longer_is_fine() -> None:
    salt = base64.b64encode(bytes(32)).decode()
    assert keyfile._kdf_params(PATH, kdf(salt=salt))[0] == bytes(32)


def test_an_authenticated_document_that_is_no_json_object_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for plaintext in (b"\xff\xfe", b"not json", b"[1, 2]"):
        monkeypatch.setattr(keyfile.AESGCM, "decrypt", lambda self, nonce, data, ad, pt=plaintext: pt)
        with pytest.raises(InvalidInputError) as info:
            unseal(PATH, PINNED, Passphrase("pw"), kind="test-secret")
        assert str(info.value) == f"{PATH}: sealed key file does not hold a JSON key document"


# ---------------------------------------------------------------- passphrases


def test_passphrase_shows_nothing_and_refuses_empty() -> None:
    assert repr(Passphrase("secret")) == str(Passphrase("secret")) == "Passphrase(<secret>)"
    with pytest.raises(InvalidInputError) as info:
        Passphrase("")
    assert str(info.value) == "the key passphrase must not be empty"


def write_private(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    os.chmod(path, 0o600)
    return path


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"secret", b"secret"),
        (b"secret\n", b"secret"),
        (b"secret\r\n", b"secret"),
        (b"secret\n\n", b"secret\n"),  # one newline only
        (b"secret\r\n\r\n", b"secret\r\n"),
        (b"secret\r", b"secret\r"),
    ],
)
def test_a_passphrase_file_loses_one_line_ending(tmp_path: Path, data: bytes, value: bytes) -> None:
    assert read_passphrase_file(write_private(tmp_path / "pw", data))._value == value


@pytest.mark.parametrize("data", [b"", b"\n", b"\r\n"])
def test_a_passphrase_file_with_nothing_but_a_line_ending_is_refused(tmp_path: Path, data: bytes) -> None:
    path = write_private(tmp_path / "pw", data)
    with pytest.raises(InvalidInputError) as info:
        read_passphrase_file(path)
    assert str(info.value) == f"passphrase file {path} is empty"


def test_a_passphrase_path_that_is_no_file_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(InvalidInputError) as info:
        read_passphrase_file(directory)
    assert str(info.value) == f"passphrase file {directory}: not a regular file"


# ---------------------------------------------------------------- load or generate, on stub keys


@dataclass(frozen=True)
class StubPublic:
    value: int

    @property
    def key_id(self) -> str:
        return f"stub-{self.value}"

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StubPublic:
        return cls(int(d["value"]))


@dataclass(frozen=True)
class StubSecret:
    public: StubPublic
    secret: int

    def _export(self) -> dict[str, Any]:
        return STUB_FILES.document(self.public, (self.secret,))


@dataclass(frozen=True)
class StubPair:
    public_key: StubPublic
    secret_key: StubSecret


GENERATED: list[int] = []


def generate_stub(bits: int) -> StubPair:
    GENERATED.append(bits)
    public = StubPublic(bits + 1)
    return StubPair(public, StubSecret(public, bits * 3))


STUB_FILES: KeyPairFiles[StubPublic, StubPair] = KeyPairFiles(
    name="Stub",
    public_file="stub_public.json",
    secret_file="stub_secret.json",
    kind="stub-secret",
    fields=("secret",),
    public_from_dict=StubPublic.from_dict,
    make_pair=lambda public, values: StubPair(public, StubSecret(public, *values)),
    generate=generate_stub,
)


@pytest.fixture
def generated() -> Iterator[list[int]]:
    GENERATED.clear()
    yield GENERATED
    GENERATED.clear()


def test_load_or_generate_makes_a_2048_bit_pair_by_default_and_saves_it(
    tmp_path: Path, generated: list[int]
) -> None:
    pair, created = STUB_FILES.load_or_generate(tmp_path)
    assert created is True and generated == [2048]
    assert pair == StubPair(StubPublic(2049), StubSecret(StubPublic(2049), 6144))
    assert json.loads((tmp_path / "stub_public.json").read_text()) == {"value": 2049}
    again, created = STUB_FILES.load_or_generate(tmp_path)
    assert (again, created) == (pair, False) and generated == [2048]


def test_load_or_generate_seals_with_the_passphrase_and_opens_with_it(
    tmp_path: Path, generated: list[int]
) -> None:
    passphrase = Passphrase("pw")
    pair, created = STUB_FILES.load_or_generate(tmp_path, 3072, passphrase=passphrase)
    assert created is True and generated == [3072]
    assert keyfile.secret_is_sealed(tmp_path / "stub_secret.json")
    with pytest.raises(PreconditionError, match="is encrypted"):
        STUB_FILES.load(tmp_path)
    assert STUB_FILES.load_or_generate(tmp_path, passphrase=passphrase) == (pair, False)
    with pytest.raises(PreconditionError, match="is encrypted"):
        STUB_FILES.load_or_generate(tmp_path)
