"""Map blindscore errors to gRPC status codes on servers, and gRPC errors back to ours on clients."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from blindscore.crypto.pools import request_scope
from blindscore.errors import (
    AlreadyExistsError,
    BlindscoreError,
    CryptoError,
    InvalidInputError,
    NotFoundError,
    PeerError,
    PermissionDeniedError,
    PreconditionError,
    UnavailableError,
)

log = logging.getLogger(__name__)

#: The most UTF-8 bytes of a status message sent to a peer. gRPC sends the message as
#: percent-encoded metadata (up to three bytes per byte) and refuses metadata past 8-16 KiB, so an
#: error echoing a long input used to become a metadata-size error instead of the real status.
MAX_STATUS_BYTES = 1000

_CODES: list[tuple[type[BlindscoreError], grpc.StatusCode]] = [
    (InvalidInputError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (PreconditionError, grpc.StatusCode.FAILED_PRECONDITION),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (CryptoError, grpc.StatusCode.INVALID_ARGUMENT),
]


def capped(message: str) -> str:
    """``message`` cut to at most MAX_STATUS_BYTES UTF-8 bytes (ending in "…" when cut), as every
    status message to a peer is."""
    data = message.encode("utf-8", "backslashreplace")  # a lone surrogate cannot go on the wire
    if len(data) <= MAX_STATUS_BYTES:
        return data.decode("utf-8")
    cut = data[: MAX_STATUS_BYTES - len("…".encode())].decode("utf-8", "ignore")
    return cut + "…"


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and the message a peer may see for ``exc`` (capped: :func:`capped`)."""
    if isinstance(exc, PeerError):
        return getattr(grpc.StatusCode, exc.code, grpc.StatusCode.UNKNOWN), capped(str(exc))
    if isinstance(exc, CryptoError):
        # Fernet-style: one vague answer at the trust boundary, the detail in our own log only.
        log.warning("cryptographic check failed: %s", exc)
        return grpc.StatusCode.INVALID_ARGUMENT, "cryptographic check failed"
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code, capped(str(exc))
    return grpc.StatusCode.INTERNAL, "internal error; see the node's log"


F = TypeVar("F", bound=Callable[..., Any])


def grpc_errors(method: F) -> F:
    """Decorate a unary servicer method: BlindscoreError -> precise status, anything else INTERNAL."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            with request_scope():
                return method(self, request, context)
        except BlindscoreError as exc:
            code, message = status_of(exc)
            context.abort(code, message)
        except Exception:
            if getattr(context, "code", lambda: None)() is not None:
                raise  # context.abort() already chose the status (e.g. require_role)
            log.exception("unexpected error in %s", method.__qualname__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error; see the node's log")

    return wrapper  # type: ignore[return-value]


def call(peer: str, method: Callable[..., Any], request: Any, *, timeout: float) -> Any:
    """Call a unary stub method; gRPC failures become UnavailableError or PeerError."""
    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        details = exc.details() if hasattr(exc, "details") else str(exc)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise UnavailableError(f"{peer} unavailable: {details}") from None
        raise PeerError(peer, code.name, details or code.name) from None


_ERRORS: dict[grpc.StatusCode, type[BlindscoreError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInputError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: PreconditionError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: PermissionDeniedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: UnavailableError,
}


def error_of(peer: str, exc: grpc.RpcError) -> BlindscoreError:
    """The blindscore error a client raises for a failed call: the class of the status
    (NOT_FOUND -> NotFoundError, ...; the inverse of :func:`status_of`), else a PeerError."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else "") or code.name
    cls = _ERRORS.get(code)
    if cls is None:
        return PeerError(peer, code.name, details)
    return cls(f"{peer}: {details}")
