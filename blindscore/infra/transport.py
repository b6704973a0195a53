"""gRPC plumbing shared by the three nodes: servers, channels, limits and credentials in one place."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.protobuf.runtime_version import VersionError

from blindscore.errors import InvalidInputError, NotFoundError
from blindscore.infra.certs import (
    CLIENT_ROLES,
    Identity,
    check_role,
    check_secret_file,
    load_identity,
    node_files,
    parties,
    role_peer_name,
    verify_node_cert,
)

if TYPE_CHECKING:
    from blindscore.infra.metrics import NodeMetrics

log = logging.getLogger(__name__)

# Largest message any node accepts. A 4096-bit key and a few hundred features stay far below it;
# anything bigger is refused by gRPC with RESOURCE_EXHAUSTED before our code sees it.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: The bank's limit for its bureau-facing service, and the bureau's toward banks: a garbled circuit
#: of a 100-tree model is several megabytes (docs/circuits.md). Only mutually authenticated
#: bureaus reach it, and it stays bounded.
MAX_CIRCUIT_MESSAGE_BYTES = 64 * 1024 * 1024

#: RPCs a server admits per worker thread (running or queued); beyond, RESOURCE_EXHAUSTED.
MAX_QUEUED_PER_WORKER = 8


#: Whether this process's servers share their port with other processes (``serve --workers``).
#: Off by default, so a second node started on a taken port is refused instead of splitting it.
_REUSE_PORT = False


def share_listen_port() -> None:
    """Let this process's servers bind a port other processes of the same node listen on
    (``SO_REUSEPORT``: the kernel spreads connections over them). Only ``--workers`` workers."""
    global _REUSE_PORT
    _REUSE_PORT = True


def _options(max_message_bytes: int) -> list[tuple[str, object]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", int(_REUSE_PORT)),
    ]


def _channel_options(max_message_bytes: int) -> list[tuple[str, object]]:
    # A node that restarts is back within seconds; gRPC's default reconnect backoff grows to two
    # minutes, which would leave its peers failing long after it is up again.
    return [
        *_options(max_message_bytes),
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.min_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]


# Keys of the per-call auth context that gRPC fills in from the TLS handshake.
_SECURITY_TYPE = "transport_security_type"
_PEM_CERT = "x509_pem_cert"


@dataclass(frozen=True)
class TransportSecurity:
    """How a node protects its links: plaintext (the default) or mutual TLS under one local CA.

    Every server and channel is built from this one object. With mutual TLS a server accepts
    only clients whose certificate the CA signed (require_client_auth), and a channel presents
    the node's own certificate and checks the server's against the CA and the target host.
    Build one with :meth:`mutual_tls` or :meth:`from_pki`; the fields are not meant to be set
    by hand. The private key is kept out of ``repr`` and refuses to be pickled.

    Server name check: gRPC compares the server certificate with the host in the channel target,
    and does so for IP literals against the IP SANs (``127.0.0.1:port`` checks ``IP:127.0.0.1``,
    ``[::1]:port`` checks ``IP:::1``), so no override is needed to reach a node on loopback. But
    every node of a local PKI carries the same host SANs, so the host check proves only "some
    node of our PKI". :meth:`expecting` pins the role (and party) the server must hold instead:
    it sets ``grpc.ssl_target_name_override`` to a name only such certificates carry (see
    ``blindscore.infra.certs``). The override changes the name checked and sent as SNI/authority,
    never the address dialled, and the certificate chain is still verified against the CA.
    """

    insecure: bool = True
    ca_pem: bytes | None = field(default=None, repr=False)
    cert_pem: bytes | None = field(default=None, repr=False)
    key_pem: bytes | None = field(default=None, repr=False, compare=False)
    identity: Identity | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        material = (self.ca_pem, self.cert_pem, self.key_pem, self.identity)
        if self.insecure and any(m is not None for m in (*material, self.server_name)):
            raise InvalidInputError("a plaintext TransportSecurity cannot carry TLS material")
        if not self.insecure and any(m is None for m in material):
            raise InvalidInputError(
                "mutual TLS needs a CA, a certificate and a key: use TransportSecurity.from_pki()"
            )

    @classmethod
    def mutual_tls(
        cls, ca_file: Path | str, cert_file: Path | str, key_file: Path | str
    ) -> TransportSecurity:
        """Mutual TLS with this node's certificate and key, trusting only the CA in ``ca_file``.

        Checked here rather than at the first handshake: the key file must be owner-only
        (PreconditionError), the certificate must be a current node certificate signed by the CA
        and the key must belong to it (InvalidInputError).
        """
        key_path = Path(key_file)
        try:
            ca_pem, cert_pem = Path(ca_file).read_bytes(), Path(cert_file).read_bytes()
            check_secret_file(key_path)
            key_pem = key_path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"{exc.filename}: TLS file not found") from None
        identity = verify_node_cert(cert_pem, ca_pem)
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(f"{key_path}: not an unencrypted PEM private key ({exc})") from None
        cert = x509.load_pem_x509_certificate(cert_pem)
        if key.public_key() != cert.public_key():
            raise InvalidInputError(f"{key_path} is not the private key of {cert_file}")
        return cls(insecure=False, ca_pem=ca_pem, cert_pem=cert_pem, key_pem=key_pem, identity=identity)

    @classmethod
    def from_pki(cls, directory: Path | str, party_id: str) -> TransportSecurity:
        """Mutual TLS as node ``party_id`` of the PKI in ``directory`` (made by certs.init_pki)."""
        files = node_files(directory, party_id)
        return cls.mutual_tls(files.ca, files.cert, files.key)

    def expecting(self, role: str, party_id: str | None = None) -> TransportSecurity:
        """The same credentials, but channels accept only a server of ``role`` (and ``party_id``).

        Plaintext cannot check anyone, so on an insecure object this returns it unchanged.
        """
        name = role_peer_name(role) if party_id is None else Identity(role, party_id).peer_name
        return self if self.insecure else replace(self, server_name=name)

    def server_credentials(self) -> grpc.ServerCredentials | None:
        if self.insecure:
            return None
        assert self.key_pem is not None and self.cert_pem is not None
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)], root_certificates=self.ca_pem, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        if self.insecure:
            return None
        return grpc.ssl_channel_credentials(self.ca_pem, self.key_pem, self.cert_pem)

    def channel_options(self, max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, object]]:
        """gRPC channel options: the message limits and reconnect backoff, plus the pinned server name."""
        options = _channel_options(max_message_bytes)
        if self.server_name is None:
            return options
        return [*options, ("grpc.ssl_target_name_override", self.server_name)]

    def __getstate__(self) -> object:
        if self.key_pem is not None:
            raise TypeError("TransportSecurity holds a private key and cannot be pickled")
        return self.__dict__


INSECURE = TransportSecurity(insecure=True)


def peer_identity(context: grpc.ServicerContext) -> Identity | None:
    """The role and party id of the client on this call, from its verified TLS certificate.

    None when the call carries no client certificate (a plaintext server) or one that names no
    blindscore identity. The certificate is trusted as gRPC hands it over: servers made by
    :func:`create_server` with mutual TLS verify it against the CA during the handshake and
    refuse the connection otherwise, so only use this with such servers.
    """
    pems = _auth_context(context).get(_PEM_CERT)
    if not pems:
        return None
    try:
        return load_identity(pems[0])
    except InvalidInputError as exc:
        log.warning("client %s: certificate names no blindscore identity (%s)", context.peer(), exc)
        return None


def require_role(context: grpc.ServicerContext, *roles: str) -> Identity | None:
    """Let the call go on only if the client holds one of ``roles``; return its identity.

    Meant to open every servicer method, unconditionally:

    * plaintext connection (a server built with INSECURE, which logged a warning at start):
      nothing can be checked, so this is a no-op and returns None;
    * TLS connection without a usable client certificate: aborts with UNAUTHENTICATED;
    * client certificate of another role: aborts with PERMISSION_DENIED.

    The plaintext exemption is decided per call from the transport gRPC reports for the
    connection, not from configuration, and only for the exact ``insecure`` transport type: a
    connection over anything else (TLS, ALTS, local credentials) without a blindscore client
    certificate is refused. A port opened with TLS never carries a plaintext call, so a mutual
    TLS node cannot be talked into skipping the check.
    """
    if not roles:
        raise InvalidInputError("require_role needs at least one role")
    for role in roles:
        check_role(role)
    if _auth_context(context).get(_SECURITY_TYPE) == [b"insecure"]:
        return None
    identity = peer_identity(context)
    if identity is None:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "a client certificate from the node CA is required")
    if identity.role not in roles:
        log.warning("refused %s from %s: needs role %s", identity, context.peer(), " or ".join(roles))
        context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{identity.role} {identity.party_id!r} may not call this method (allowed: {', '.join(roles)})",
        )
    return identity


def _auth_context(context: grpc.ServicerContext) -> Mapping[str, Sequence[bytes]]:
    # grpc-stubs types the values as bytes; gRPC returns a list of bytes per property.
    return cast("Mapping[str, Sequence[bytes]]", context.auth_context())


def _add_health_and_reflection(server: grpc.Server, service_names: tuple[str, ...]) -> None:
    """A health service reporting SERVING for ``service_names``, and server reflection.

    Their packages carry their own generated code: after ``pip install`` of a library that moves
    protobuf below it (optbinning's ortools pins protobuf 6; grpcio-health-checking 1.82 on is
    protobuf 7 gencode), importing them fails. The node then serves without them and says how to
    put back versions that fit, instead of not starting at all."""
    try:
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        from grpc_reflection.v1alpha import reflection
    except (ImportError, VersionError) as exc:
        log.warning(
            "serving without gRPC health checks and reflection: %s (reinstall them to fit the protobuf "
            "installed: pip install --force-reinstall 'grpcio-health-checking<1.82' 'grpcio-reflection<1.82' "
            "for protobuf 6)",
            exc,
        )
        return
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *service_names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    # Reflection lets grpcurl and similar tools list and call the services without the .proto.
    reflection.enable_server_reflection(
        (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )


def create_server(
    address: str,
    register: list[object],
    *,
    security: TransportSecurity = INSECURE,
    max_workers: int = 16,
    service_names: tuple[str, ...] = (),
    metrics: NodeMetrics | None = None,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> tuple[grpc.Server, int]:
    """Build and start a server on ``address`` (port 0 picks a free port); returns (server, port).

    ``register`` holds callables taking the server (the generated add_*_to_server partials).
    A gRPC health service reports SERVING for every name in ``service_names``. With ``metrics``,
    every call of a blindscore service is counted and timed there (see blindscore.infra.metrics).
    """
    interceptors = [metrics.interceptor()] if metrics is not None else []
    # Calls beyond a bounded queue are refused at once with RESOURCE_EXHAUSTED (which clients
    # retry) instead of piling up in memory behind a stalled peer.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        interceptors=interceptors,
        options=_options(max_message_bytes),
        maximum_concurrent_rpcs=max_workers * MAX_QUEUED_PER_WORKER,
    )
    for add in register:
        add(server)  # type: ignore[operator]
    _add_health_and_reflection(server, service_names)
    creds = security.server_credentials()
    port = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
    if port == 0:
        raise InvalidInputError(f"cannot listen on {address!r}: address in use or invalid")
    server.start()
    if creds is None:
        log.warning("plaintext transport: only for local development (server on %s)", address)
    else:
        log.info("mutual TLS as %s on %s", security.identity, address)
    return server, port


#: How a channel spreads calls over a peer's replicas: each call to the next one that is up
#: (stateless peers), or all calls to the first one that is up, the next only when it is gone (a
#: bank: its OT sessions and circuit tickets live in the replica's memory between calls).
Balancing = Literal["round_robin", "pick_first"]

#: gRPC retries a call that failed UNAVAILABLE (a replica down or restarting) on the next replica,
#: up to 4 attempts in about 2 s; only for peers whose calls are safe to repeat.
_RETRY_UNAVAILABLE = {
    "name": [{}],
    "retryPolicy": {
        "maxAttempts": 4,
        "initialBackoff": "0.1s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    },
}


def channel_target(address: str) -> tuple[str, str]:
    """The gRPC target and the authority for ``address``: ``host:port``, a comma-separated list of
    them (the replicas of one peer), or ``dns:///name:port``. A name in a list is resolved here to
    all its addresses; a single name is resolved by gRPC, every record of it a replica."""
    parts = [a.strip() for a in address.split(",")] if address else []
    if not parts or any(not p or ":" not in p for p in parts):
        raise InvalidInputError(
            f"node address {address!r} must look like host:port, or a comma-separated list of them"
        )
    if len(parts) == 1:
        return parts[0], ""
    v4: list[str] = []
    v6: list[str] = []
    for part in parts:
        host, _, port = part.rpartition(":")
        host = host.strip("[]")
        if not port.isdigit() or not 0 < int(port) < 65536 or not host:
            raise InvalidInputError(f"node address {part!r} in {address!r} must look like host:port")
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except OSError as exc:
            raise InvalidInputError(f"node address {part!r}: cannot resolve {host!r} ({exc})") from None
        for family, _, _, _, sockaddr in infos:
            ip = str(sockaddr[0])
            if family == socket.AF_INET and f"{ip}:{port}" not in v4:
                v4.append(f"{ip}:{port}")
            elif family == socket.AF_INET6 and f"[{ip}]:{port}" not in v6:
                v6.append(f"[{ip}]:{port}")
    if v4 and v6:
        raise InvalidInputError(f"node addresses {address!r} mix IPv4 and IPv6; list one family")
    target = f"ipv4:{','.join(v4)}" if v4 else f"ipv6:{','.join(v6)}"
    return target, parts[0]


def open_channel(
    address: str,
    *,
    security: TransportSecurity = INSECURE,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    balancing: Balancing = "round_robin",
    retry_unavailable: bool = False,
) -> grpc.Channel:
    """A channel to ``address`` (one node or its replicas, :func:`channel_target`) with the project's
    message limits and credentials. ``balancing`` spreads the calls over the replicas (see
    :data:`Balancing`); ``retry_unavailable`` retries a call refused UNAVAILABLE on another replica,
    for peers whose calls are idempotent."""
    if balancing not in ("round_robin", "pick_first"):
        raise InvalidInputError(f"balancing must be round_robin or pick_first, got {balancing!r}")
    target, authority = channel_target(address)
    config: dict[str, object] = {"loadBalancingConfig": [{balancing: {}}]}
    if retry_unavailable:
        config["methodConfig"] = [_RETRY_UNAVAILABLE]
    extra: list[tuple[str, object]] = [("grpc.service_config", json.dumps(config))]
    if authority:
        extra.append(("grpc.default_authority", authority))
    creds = security.channel_credentials()
    if creds is not None:
        options = [*security.channel_options(max_message_bytes), *extra]
        return grpc.secure_channel(target, creds, options=options)
    return grpc.insecure_channel(target, options=[*_channel_options(max_message_bytes), *extra])


def wait_ready(channel: grpc.Channel, timeout: float) -> None:
    """Block until the channel connects or ``timeout`` seconds pass (grpc.FutureTimeoutError)."""
    grpc.channel_ready_future(channel).result(timeout=timeout)


def host_port(address: str, port: int) -> str:
    """Replace the port in a listen address with the bound one (for port 0)."""
    host = address.rsplit(":", 1)[0]
    if host in ("", "0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def client_security(directory: Path | str, role: str, client_id: str | None = None) -> TransportSecurity:
    """Mutual TLS as a client certificate of ``role`` (platform-client or bank-client) from a PKI
    directory, accepting only the server of the party the certificate serves.

    ``client_id`` None: the directory's only certificate of that role (InvalidInputError when it
    holds none or several).
    """
    if role not in CLIENT_ROLES:
        raise InvalidInputError(f"{role!r} is not a client role ({', '.join(CLIENT_ROLES)})")
    if client_id is None:
        found = parties(directory, role)
        if not found:
            raise InvalidInputError(
                f"{directory} holds no {role} certificate; make one with "
                f"'blindscore certs add {directory} --role {role} --id ID --serves PARTY'"
            )
        if len(found) > 1:
            held = ", ".join(i.party_id for i in found)
            raise InvalidInputError(f"{directory} holds several {role} certificates ({held}): name one")
        client_id = found[0].party_id
    security = TransportSecurity.from_pki(directory, client_id)
    identity = security.identity
    assert identity is not None
    if identity.role != role:
        raise InvalidInputError(
            f"{client_id!r} in {directory} is a {identity.role} certificate, not a {role}"
        )
    return security.expecting(CLIENT_ROLES[role], identity.serves)


def client_credentials(
    role: str, certs: Path | str | None, client_id: str | None = None, *, insecure: bool = False
) -> TransportSecurity:
    """A client's credentials: its ``role`` certificate from the PKI directory ``certs``
    (:func:`client_security`), or plaintext when ``insecure`` (a node started with --insecure)."""
    if insecure:
        if certs is not None or client_id is not None:
            raise InvalidInputError("a plaintext (insecure) client takes no certificate directory or id")
        return INSECURE
    if certs is None:
        raise InvalidInputError(
            f"give the PKI directory holding a {role} certificate, or insecure for a node started "
            "with --insecure"
        )
    return client_security(certs, role, client_id)
