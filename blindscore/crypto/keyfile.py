"""Secret key files at rest: 0600 JSON, optionally sealed with a passphrase (scrypt + AES-256-GCM)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from blindscore._files import read_json, write_json
from blindscore.crypto._secret import Unexportable
from blindscore.errors import CryptoError, InvalidInputError, PreconditionError

log = logging.getLogger(__name__)

PASSPHRASE_ENV = "BLINDSCORE_KEY_PASSPHRASE"
ENVELOPE_FORMAT = "blindscore-sealed-secret"
ENVELOPE_VERSION = 1
AEAD = "AES-256-GCM"
# scrypt cost for new files (about 0.1 s and 32 MiB per file); loading accepts a bounded range so
# that a hand-edited header cannot ask for gigabytes of memory.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
_SCRYPT_N_RANGE = (2**14, 2**20)
_SALT_BYTES = 16
_NONCE_BYTES = 12
_KEY_BYTES = 32
MISSING_PASSPHRASE_HINT = f"give --passphrase-file or set {PASSPHRASE_ENV}"


class Passphrase(Unexportable):
    """The passphrase that seals secret key files. It cannot be printed, logged, pickled or copied."""

    __slots__ = ("_value",)
    _save_hint = "it is never persisted"

    def __init__(self, value: str | bytes) -> None:
        raw = value.encode() if isinstance(value, str) else bytes(value)
        if not raw:
            raise InvalidInputError("the key passphrase must not be empty")
        self._value = raw

    def __repr__(self) -> str:
        return "Passphrase(<secret>)"

    def _derive(self, salt: bytes, n: int, r: int, p: int) -> bytes:
        return Scrypt(salt=salt, length=_KEY_BYTES, n=n, r=r, p=p).derive(self._value)


def read_passphrase_file(path: Path) -> Passphrase:
    """Read a passphrase file: refused when group or others may read it; one trailing newline is dropped."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InvalidInputError(f"passphrase file {path}: no such file") from None
    if not stat.S_ISREG(mode):
        raise InvalidInputError(f"passphrase file {path}: not a regular file")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PreconditionError(
            f"passphrase file {path} is accessible by other users (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod 600 {path}"
        )
    data = path.read_bytes()
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise InvalidInputError(f"passphrase file {path} is empty")
    return Passphrase(data)


def passphrase_from(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Passphrase | None:
    """The passphrase from ``path`` when given, else from $BLINDSCORE_KEY_PASSPHRASE, else None."""
    if path:
        return read_passphrase_file(Path(path))
    value = (os.environ if environ is None else environ).get(PASSPHRASE_ENV)
    if value is None:
        return None
    if not value:
        raise InvalidInputError(f"{PASSPHRASE_ENV} is set but empty")
    return Passphrase(value)


# envelope ---------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(path: Path, name: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise InvalidInputError(f"{path}: sealed key file field {name!r} is missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(f"{path}: sealed key file field {name!r} is not base64") from None


def _associated_data(header: Mapping[str, Any]) -> bytes:
    """Everything in the envelope but nonce and ciphertext, canonically: GCM authenticates it."""
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def is_sealed(document: object) -> bool:
    """True when a parsed key file is a passphrase-sealed envelope."""
    return isinstance(document, dict) and document.get("format") == ENVELOPE_FORMAT


def seal(secret: Mapping[str, Any], passphrase: Passphrase, *, kind: str, key_id: str) -> dict[str, Any]:
    """Seal a secret key document; the file kind and the public key id are bound as associated data."""
    salt = secrets.token_bytes(_SALT_BYTES)
    nonce = secrets.token_bytes(_NONCE_BYTES)
    header: dict[str, Any] = {
        "format": ENVELOPE_FORMAT,
        "version": ENVELOPE_VERSION,
        "kind": kind,
        "key_id": key_id,
        "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(salt)},
        "aead": AEAD,
    }
    key = passphrase._derive(salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    plaintext = json.dumps(dict(secret), sort_keys=True).encode()
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, _associated_data(header))
    return {**header, "nonce": _b64(nonce), "ciphertext": _b64(ciphertext)}


def _kdf_params(path: Path, kdf: object) -> tuple[bytes, int, int, int]:
    if not isinstance(kdf, dict) or kdf.get("name") != "scrypt":
        raise InvalidInputError(f"{path}: sealed key file names an unsupported KDF (scrypt expected)")
    n, r, p = kdf.get("n"), kdf.get("r"), kdf.get("p")
    if not (
        isinstance(n, int)
        and _SCRYPT_N_RANGE[0] <= n <= _SCRYPT_N_RANGE[1]
        and n & (n - 1) == 0
        and isinstance(r, int)
        and 1 <= r <= 32
        and isinstance(p, int)
        and 1 <= p <= 16
    ):
        raise InvalidInputError(f"{path}: sealed key file has scrypt parameters outside the accepted range")
    salt = _unb64(path, "kdf.salt", kdf.get("salt"))
    if len(salt) < _SALT_BYTES:
        raise InvalidInputError(f"{path}: sealed key file has a salt shorter than {_SALT_BYTES} bytes")
    return salt, n, r, p


def unseal(
    path: Path, envelope: Mapping[str, Any], passphrase: Passphrase | None, *, kind: str
) -> dict[str, Any]:
    """Open a sealed secret key document. A wrong passphrase and a modified file look the same."""
    if envelope.get("version") != ENVELOPE_VERSION:
        raise InvalidInputError(
            f"{path}: sealed key file version {envelope.get('version')!r} is not supported "
            f"(this blindscore reads version {ENVELOPE_VERSION})"
        )
    if envelope.get("kind") != kind:
        raise InvalidInputError(f"{path}: sealed key file holds a {envelope.get('kind')!r}, not a {kind!r}")
    if envelope.get("aead") != AEAD or not isinstance(envelope.get("key_id"), str):
        raise InvalidInputError(f"{path}: malformed sealed key file header")
    if passphrase is None:
        raise PreconditionError(f"key file {path} is encrypted; {MISSING_PASSPHRASE_HINT}")
    salt, n, r, p = _kdf_params(path, envelope.get("kdf"))
    nonce = _unb64(path, "nonce", envelope.get("nonce"))
    ciphertext = _unb64(path, "ciphertext", envelope.get("ciphertext"))
    if len(nonce) != _NONCE_BYTES:
        raise InvalidInputError(f"{path}: sealed key file nonce must be {_NONCE_BYTES} bytes")
    header = {k: v for k, v in envelope.items() if k not in ("nonce", "ciphertext")}
    try:
        plaintext = AESGCM(passphrase._derive(salt, n, r, p)).decrypt(
            nonce, ciphertext, _associated_data(header)
        )
    except InvalidTag:
        raise CryptoError(
            f"cannot decrypt key file {path}: wrong passphrase, or the file was modified"
        ) from None
    try:
        document = json.loads(plaintext)
    except (UnicodeDecodeError, json.JSONDecodeError):
        # Authenticated but not JSON: written by something else with this passphrase. No details:
        # they would quote secret material.
        raise InvalidInputError(f"{path}: sealed key file does not hold a JSON key document") from None
    if not isinstance(document, dict):
        raise InvalidInputError(f"{path}: sealed key file does not hold a JSON key document")
    return document


# files ------------------------------------------------------------------------------------


def write_secret(
    path: Path, secret: Mapping[str, Any], *, kind: str, key_id: str, passphrase: Passphrase | None = None
) -> None:
    """Write a secret key document atomically, 0600; sealed when a passphrase is given."""
    document = dict(secret) if passphrase is None else seal(secret, passphrase, kind=kind, key_id=key_id)
    write_json(path, document, secret=True)


def read_secret(
    path: Path,
    *,
    kind: str,
    key_id_of: Callable[[dict[str, Any]], str],
    passphrase: Passphrase | None = None,
) -> dict[str, Any]:
    """Read a secret key document written by :func:`write_secret`, sealed or not.

    ``key_id_of`` computes the public key id of the opened document; a sealed file must hold the
    key its header names, so a sealed file moved under another key's name is refused.
    """
    document = read_json(path, secret=True)
    if not isinstance(document, dict):
        raise InvalidInputError(f"{path}: not a blindscore secret key file")
    if not is_sealed(document):
        if passphrase is not None:
            log.warning(
                "key file %s is not encrypted although a passphrase was given; "
                "run 'blindscore bank encrypt-keys' to encrypt it",
                path,
            )
        return document
    opened = unseal(path, document, passphrase, kind=kind)
    try:
        inner_key_id = key_id_of(opened)
    except (KeyError, TypeError, ValueError, AttributeError):
        # No exception text: it could quote a malformed secret value.
        raise InvalidInputError(f"{path}: malformed secret key document") from None
    if inner_key_id != document["key_id"]:
        raise CryptoError(f"key file {path} holds a different key than its header names")
    return opened


def secret_is_sealed(path: Path) -> bool:
    """True when the secret key file at ``path`` is passphrase-sealed (reads no secret)."""
    return is_sealed(read_json(path, secret=True))


# key pairs ----------------------------------------------------------------------------------


class _PublicKey(Protocol):
    @property
    def key_id(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


class _SecretKey(Protocol):
    def _export(self) -> dict[str, Any]: ...


class _KeyPair(Protocol):
    @property
    def public_key(self) -> _PublicKey: ...

    @property
    def secret_key(self) -> _SecretKey: ...


PublicT = TypeVar("PublicT", bound=_PublicKey)
PairT = TypeVar("PairT", bound=_KeyPair)


@dataclass(frozen=True)
class KeyPairFiles(Generic[PublicT, PairT]):
    """How one kind of key pair lies in a directory: a public file (0644) and a secret file (0600,
    sealed when a passphrase is given) holding the public key and the secret integers in hex."""

    name: str  # for messages: "Paillier", "DGK"
    public_file: str
    secret_file: str
    kind: str  # the secret document's kind, also bound into a sealed envelope
    fields: tuple[str, ...]  # the secret integers, in the order ``make_pair`` takes them
    public_from_dict: Callable[[Any], PublicT]
    make_pair: Callable[[PublicT, list[int]], PairT]
    generate: Callable[[int], PairT]  # a new key pair of the given bits
    format: int = 1

    def document(self, public: _PublicKey, values: Sequence[int]) -> dict[str, Any]:
        """The secret key document: format, kind, the public key and each secret integer in hex."""
        fields = dict(zip(self.fields, (hex(v) for v in values), strict=True))
        return {"format": self.format, "kind": self.kind, "public": public.to_dict(), **fields}

    def save(self, directory: Path, keypair: PairT, *, passphrase: Passphrase | None = None) -> None:
        """Persist a key pair: the secret file is created 0600 (sealed with ``passphrase`` if given),
        the public file 0644."""
        directory = Path(directory)
        write_secret(
            directory / self.secret_file,
            keypair.secret_key._export(),
            kind=self.kind,
            key_id=keypair.public_key.key_id,
            passphrase=passphrase,
        )
        write_json(directory / self.public_file, keypair.public_key.to_dict())

    def load(self, directory: Path, *, passphrase: Passphrase | None = None) -> PairT:
        """Load the key pair in ``directory``; a secret readable by others is refused, and so is a
        sealed one without its passphrase."""
        path = Path(directory) / self.secret_file
        d = read_secret(
            path,
            kind=self.kind,
            passphrase=passphrase,
            key_id_of=lambda doc: self.public_from_dict(doc["public"]).key_id,
        )
        if d.get("format") != self.format or d.get("kind") != self.kind:
            raise InvalidInputError(f"{path}: not a blindscore {self.name} secret key (format {self.format})")
        try:
            public = self.public_from_dict(d["public"])
            values = [int(d[k], 16) for k in self.fields]
        except (KeyError, TypeError, ValueError, AttributeError):
            # No exception text: it would quote the malformed secret value.
            raise InvalidInputError(f"{path}: malformed {self.name} secret key") from None
        return self.make_pair(public, values)

    def load_or_generate(
        self, directory: Path, bits: int = 2048, *, passphrase: Passphrase | None = None
    ) -> tuple[PairT, bool]:
        """Load the key pair in ``directory`` or make and save one. Returns (keypair, created)."""
        if (Path(directory) / self.secret_file).exists():
            return self.load(directory, passphrase=passphrase), False
        keypair = self.generate(bits)
        self.save(directory, keypair, passphrase=passphrase)
        return keypair, True
