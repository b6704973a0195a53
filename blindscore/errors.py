"""The one exception hierarchy every blindscore component raises."""

from __future__ import annotations


class BlindscoreError(Exception):
    """Base class of every error blindscore raises on purpose."""


class InvalidInputError(BlindscoreError):
    """Input that can never be valid: wrong shape, out of range, malformed (INVALID_ARGUMENT)."""


class EncodingError(InvalidInputError):
    """A feature value that cannot be encoded: NaN, infinite, out of range or of the wrong type."""

    def __init__(self, feature: str, message: str) -> None:
        super().__init__(f"feature {feature!r}: {message}")
        self.feature = feature


class KeySizeError(InvalidInputError):
    """A key size below the 2048-bit floor or otherwise not allowed."""


class ModelFormatError(InvalidInputError):
    """A model file or model description that cannot be loaded safely."""


class NotFoundError(BlindscoreError):
    """An unknown key id, model, bank or application (NOT_FOUND)."""


class AlreadyExistsError(BlindscoreError):
    """Something registered twice in a way that conflicts (ALREADY_EXISTS)."""


class PreconditionError(BlindscoreError):
    """The system is not in a state where the request can run (FAILED_PRECONDITION)."""


class PermissionDeniedError(BlindscoreError):
    """An authenticated peer that may not make this call now, e.g. a bureau the bank suspended
    after protocol faults (PERMISSION_DENIED)."""


class CryptoError(BlindscoreError):
    """A cryptographic check failed. Details stay in local logs; peers get one vague status."""


class UnavailableError(BlindscoreError):
    """A peer node could not be reached (UNAVAILABLE); the request may be retried."""


class PeerError(BlindscoreError):
    """A peer node refused a call; carries the peer's gRPC status code name and message."""

    def __init__(self, peer: str, code: str, message: str) -> None:
        super().__init__(f"{peer}: {message}")
        self.peer = peer
        self.code = code


class LeaseLostError(BlindscoreError):
    """This replica's claim on a row (a bureau's application or batch, a platform's outbox entry) was
    taken over by another replica (its lease expired): it must stop working on it and write nothing
    more about it."""
