"""Key identity (fingerprints, key ids) and the guard that keeps secret keys unprintable."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any, ClassVar, NoReturn


def fingerprint(domain: bytes, *values: Any) -> str:
    """SHA-256 (hex) over a domain tag and length-prefixed big-endian integers: unambiguous."""
    h = hashlib.sha256(domain)
    for value in values:
        x = int(value)
        body = x.to_bytes(max(1, (x.bit_length() + 7) // 8), "big")
        h.update(len(body).to_bytes(4, "big") + body)
    return h.hexdigest()


class KeyIdentity:
    """Public keys inherit this: a fingerprint, a self-certifying key id, equality by fingerprint."""

    _fingerprint: str
    _key_id_prefix: ClassVar[str] = "key-"

    @property
    def fingerprint(self) -> str:
        """SHA-256 over the canonical encoding of the public key, hex."""
        return self._fingerprint

    @property
    def key_id(self) -> str:
        """Self-certifying key id: a prefix and the first 128 bits of the fingerprint."""
        return self._key_id_prefix + self._fingerprint[:32]

    def matches_key_id(self, key_id: str) -> bool:
        return secrets.compare_digest(self.key_id, key_id)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._fingerprint == other._fingerprint

    def __hash__(self) -> int:
        return hash(self._fingerprint)


class Unexportable:
    """Secret keys inherit this: repr shows only the public key id; pickle and copy raise.

    Persisting a secret key is an explicit act (the module's save function, which writes a 0600
    file), never a side effect of logging, pickling or copying an object that holds it.
    """

    __slots__ = ()
    _save_hint: ClassVar[str] = "use the module's save function"

    public_key: Any

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key_id={self.public_key.key_id}, <secret>)"

    def __str__(self) -> str:
        return self.__repr__()

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"a blindscore {type(self).__name__} cannot be pickled; {self._save_hint}")

    def __getstate__(self) -> NoReturn:
        raise TypeError(f"a blindscore {type(self).__name__} cannot be pickled; {self._save_hint}")

    def __copy__(self) -> NoReturn:
        raise TypeError(f"a blindscore {type(self).__name__} cannot be copied")

    def __deepcopy__(self, memo: object) -> NoReturn:
        raise TypeError(f"a blindscore {type(self).__name__} cannot be copied")
