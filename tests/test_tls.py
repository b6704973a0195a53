"""Mutual TLS over real in-process gRPC servers: who gets in, who is refused, what the server sees."""

from __future__ import annotations

import datetime as dt
import logging
import pickle
import socket
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blindscore.errors import InvalidInputError, NotFoundError, PreconditionError
from blindscore.infra.certs import Identity, init_pki, issue_node_cert
from blindscore.infra.transport import (
    INSECURE,
    TransportSecurity,
    create_server,
    open_channel,
    peer_identity,
    require_role,
)

TIMEOUT = 5.0
SERVICE = "blindscore.test.Probe"


class _Probe(grpc.GenericRpcHandler):
    """Raw-bytes methods that report what the transport helpers see on the server side."""

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        methods: dict[str, Callable[[bytes, grpc.ServicerContext], bytes]] = {
            f"/{SERVICE}/WhoAmI": lambda _req, ctx: _describe(peer_identity(ctx)),
            f"/{SERVICE}/BankOnly": lambda _req, ctx: _describe(require_role(ctx, "bank")),
            f"/{SERVICE}/BureauOrPlatform": lambda _req, ctx: _describe(
                require_role(ctx, "bureau", "platform")
            ),
        }
        method = methods.get(details.method)
        return grpc.unary_unary_rpc_method_handler(method) if method else None


def _describe(identity: Identity | None) -> bytes:
    return b"none" if identity is None else str(identity).encode()


def _register(server: grpc.Server) -> None:
    server.add_generic_rpc_handlers((_Probe(),))


def _method(channel: grpc.Channel, name: str) -> grpc.UnaryUnaryMultiCallable:
    return channel.unary_unary(f"/{SERVICE}/{name}", request_serializer=None, response_deserializer=None)


def _call(address: str, method: str, security: TransportSecurity) -> bytes:
    with open_channel(address, security=security) as channel:
        result: bytes = _method(channel, method)(b"", timeout=TIMEOUT)
        return result


def _code(address: str, method: str, security: TransportSecurity) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        _call(address, method, security)
    code: grpc.StatusCode = info.value.code()
    return code


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    init_pki(directory)
    issue_node_cert(directory, "bank", "bank_2")
    # Serves only under a LAN name: a client dialling 127.0.0.1 must refuse it.
    issue_node_cert(directory, "bureau", "bureau-lan", ["bureau.example"])
    return directory


@pytest.fixture(scope="module")
def foreign_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("foreign")
    init_pki(directory)
    return directory


def _serve(security: TransportSecurity, host: str = "127.0.0.1") -> Iterator[str]:
    server, port = create_server(f"{host}:0", [_register], security=security)
    try:
        yield f"{host}:{port}"
    finally:
        server.stop(None)


@pytest.fixture(scope="module")
def bureau(pki: Path) -> Iterator[str]:
    """A bureau node's server with mutual TLS on 127.0.0.1; yields its address."""
    yield from _serve(TransportSecurity.from_pki(pki, "bureau-1"))


@pytest.fixture(scope="module")
def plaintext() -> Iterator[str]:
    yield from _serve(INSECURE)


@pytest.fixture(scope="module")
def creds(pki: Path) -> Callable[[str], TransportSecurity]:
    return lambda party_id: TransportSecurity.from_pki(pki, party_id)


# --- (a) the right CA and a node certificate get in, and the server sees who is calling --------


@pytest.mark.parametrize(
    ("party_id", "seen"),
    [("bank-1", b"bank/bank-1"), ("bank_2", b"bank/bank_2"), ("platform-1", b"platform/platform-1")],
)
def test_server_sees_client_identity(
    bureau: str, creds: Callable[[str], TransportSecurity], party_id: str, seen: bytes
) -> None:
    assert _call(bureau, "WhoAmI", creds(party_id)) == seen


def test_health_service_over_mutual_tls(bureau: str, creds: Callable[[str], TransportSecurity]) -> None:
    with open_channel(bureau, security=creds("bank-1")) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_localhost_checks_dns_san(pki: Path, creds: Callable[[str], TransportSecurity]) -> None:
    for address in _serve(TransportSecurity.from_pki(pki, "bureau-1"), host="localhost"):
        assert _call(address, "WhoAmI", creds("bank-1")) == b"bank/bank-1"


def test_ipv6_loopback_checks_ip_san(pki: Path, creds: Callable[[str], TransportSecurity]) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    for address in _serve(TransportSecurity.from_pki(pki, "bureau-1"), host="[::1]"):
        assert address.startswith("[::1]:")
        assert _call(address, "WhoAmI", creds("bank-1")) == b"bank/bank-1"


# --- (b) no client certificate, (c) a foreign CA: the handshake fails --------------------------


def test_client_without_certificate_refused(pki: Path, bureau: str) -> None:
    channel = grpc.secure_channel(bureau, grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes()))
    with channel, pytest.raises(grpc.RpcError) as info:
        _method(channel, "WhoAmI")(b"", timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_plaintext_client_refused(bureau: str) -> None:
    assert _code(bureau, "WhoAmI", INSECURE) == grpc.StatusCode.UNAVAILABLE


def test_client_from_foreign_ca_refused(foreign_pki: Path, bureau: str) -> None:
    # Same subject names as ours: only the CA signature tells the two PKIs apart.
    assert (
        _code(bureau, "WhoAmI", TransportSecurity.from_pki(foreign_pki, "bank-1"))
        == grpc.StatusCode.UNAVAILABLE
    )


def test_client_refuses_server_from_foreign_ca(
    foreign_pki: Path, creds: Callable[[str], TransportSecurity]
) -> None:
    for address in _serve(TransportSecurity.from_pki(foreign_pki, "bureau-1")):
        assert _code(address, "WhoAmI", creds("bank-1")) == grpc.StatusCode.UNAVAILABLE


# --- (d) require_role -------------------------------------------------------------------------


def test_require_role_admits_listed_roles(bureau: str, creds: Callable[[str], TransportSecurity]) -> None:
    assert _call(bureau, "BankOnly", creds("bank-1")) == b"bank/bank-1"
    assert _call(bureau, "BureauOrPlatform", creds("platform-1")) == b"platform/platform-1"
    assert _call(bureau, "BureauOrPlatform", creds("bureau-1")) == b"bureau/bureau-1"


def test_require_role_wrong_role_permission_denied(
    bureau: str, creds: Callable[[str], TransportSecurity]
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _call(bureau, "BankOnly", creds("platform-1"))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "platform 'platform-1' may not call" in (info.value.details() or "")
    assert _code(bureau, "BureauOrPlatform", creds("bank-1")) == grpc.StatusCode.PERMISSION_DENIED


def test_require_role_is_noop_on_plaintext(plaintext: str) -> None:
    assert _call(plaintext, "BankOnly", INSECURE) == b"none"
    assert _call(plaintext, "WhoAmI", INSECURE) == b"none"


def test_tls_without_client_certificate_unauthenticated(pki: Path) -> None:
    """A TLS server that does not demand client certificates still gets no pass from require_role."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    _register(server)
    server_creds = grpc.ssl_server_credentials(
        [((pki / "bureau-1.key").read_bytes(), (pki / "bureau-1.pem").read_bytes())]
    )
    port = server.add_secure_port("127.0.0.1:0", server_creds)
    server.start()
    try:
        channel = grpc.secure_channel(
            f"127.0.0.1:{port}", grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes())
        )
        with channel, pytest.raises(grpc.RpcError) as info:
            _method(channel, "BankOnly")(b"", timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        server.stop(None)


def test_other_transports_get_no_plaintext_pass() -> None:
    """Only the exact plaintext transport is exempt: gRPC local credentials are refused."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    _register(server)
    port = server.add_secure_port(
        "127.0.0.1:0", grpc.local_server_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    )
    server.start()
    try:
        creds = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
        with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
            assert _method(channel, "WhoAmI")(b"", timeout=TIMEOUT) == b"none"
            with pytest.raises(grpc.RpcError) as info:
                _method(channel, "BankOnly")(b"", timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        server.stop(None)


def test_ca_signed_certificate_without_identity_unauthenticated(
    pki: Path, bureau: str, tmp_path: Path
) -> None:
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    creds = grpc.ssl_channel_credentials(
        (pki / "ca.pem").read_bytes(), key_pem, cert.public_bytes(serialization.Encoding.PEM)
    )
    with grpc.secure_channel(bureau, creds) as channel:
        assert _method(channel, "WhoAmI")(b"", timeout=TIMEOUT) == b"none"
        with pytest.raises(grpc.RpcError) as info:
            _method(channel, "BankOnly")(b"", timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_require_role_rejects_unknown_roles() -> None:
    with pytest.raises(
        InvalidInputError,
        match=r"^role 'admin' is not one of platform, bureau, bank, platform-client, bank-client$",
    ):
        require_role(None, "admin")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"^require_role needs at least one role$"):
        require_role(None)  # type: ignore[arg-type]


# --- (e) the client checks the server: host SANs, and role/party pinning -----------------------


def test_server_cert_without_ip_san_refused(pki: Path, creds: Callable[[str], TransportSecurity]) -> None:
    """gRPC checks an IP literal target against the IP SANs; a certificate without it fails."""
    for address in _serve(TransportSecurity.from_pki(pki, "bureau-lan")):
        assert _code(address, "WhoAmI", creds("bank-1")) == grpc.StatusCode.UNAVAILABLE
        # Pinning the role replaces the host check by a check of the role name the cert carries.
        assert _call(address, "WhoAmI", creds("bank-1").expecting("bureau")) == b"bank/bank-1"


def test_pinning_accepts_the_right_server(bureau: str, creds: Callable[[str], TransportSecurity]) -> None:
    assert _call(bureau, "WhoAmI", creds("bank-1").expecting("bureau")) == b"bank/bank-1"
    assert _call(bureau, "WhoAmI", creds("bank-1").expecting("bureau", "bureau-1")) == b"bank/bank-1"


@pytest.mark.parametrize(
    ("role", "party_id"), [("bank", None), ("platform", None), ("bureau", "bureau-2"), ("bank", "bureau-1")]
)
def test_pinning_refuses_a_server_of_another_role_or_party(
    bureau: str, creds: Callable[[str], TransportSecurity], role: str, party_id: str | None
) -> None:
    security = creds("platform-1").expecting(role, party_id)
    assert _code(bureau, "WhoAmI", security) == grpc.StatusCode.UNAVAILABLE


def test_pinning_distinguishes_parties_of_one_role(
    pki: Path, creds: Callable[[str], TransportSecurity]
) -> None:
    """A bank server answering where the bureau expects another bank is refused."""
    for address in _serve(TransportSecurity.from_pki(pki, "bank_2")):
        bureau = creds("bureau-1")
        assert _call(address, "WhoAmI", bureau.expecting("bank", "bank_2")) == b"bureau/bureau-1"
        assert _code(address, "WhoAmI", bureau.expecting("bank", "bank-1")) == grpc.StatusCode.UNAVAILABLE


# --- TransportSecurity itself -----------------------------------------------------------------


def test_security_object(pki: Path) -> None:
    security = TransportSecurity.from_pki(pki, "bank-1")
    assert security.insecure is False
    assert security.identity == Identity("bank", "bank-1")
    assert security.server_credentials() is not None and security.channel_credentials() is not None
    assert ("grpc.ssl_target_name_override", "bureau.blindscore.internal") in security.expecting(
        "bureau"
    ).channel_options()
    assert all(k != "grpc.ssl_target_name_override" for k, _ in security.channel_options())
    assert INSECURE.expecting("bureau") is INSECURE
    assert INSECURE.server_credentials() is None and INSECURE.channel_credentials() is None
    with pytest.raises(
        InvalidInputError,
        match=r"^role 'admin' is not one of platform, bureau, bank, platform-client, bank-client$",
    ):
        security.expecting("admin")


def test_private_key_not_in_repr_and_not_pickled(pki: Path) -> None:
    security = TransportSecurity.from_pki(pki, "bank-1")
    key_pem = (pki / "bank-1.key").read_bytes()
    body = b"".join(key_pem.splitlines()[1:-1]).decode()
    text = repr(security)
    assert "bank/bank-1" in text or "bank-1" in text
    assert body[:20] not in text and "PRIVATE" not in text
    with pytest.raises(TypeError, match="private key"):
        pickle.dumps(security)
    assert pickle.loads(pickle.dumps(INSECURE)) == INSECURE


def test_mutual_tls_refuses_bad_material(pki: Path, foreign_pki: Path, tmp_path: Path) -> None:
    ca, cert, key = pki / "ca.pem", pki / "bank-1.pem", pki / "bank-1.key"
    with pytest.raises(NotFoundError, match=r"/missing\.key: TLS file not found$"):
        TransportSecurity.mutual_tls(ca, cert, tmp_path / "missing.key")
    with pytest.raises(NotFoundError, match=r"/bank-7\.pem: no certificate for party 'bank-7' in "):
        TransportSecurity.from_pki(pki, "bank-7")
    with pytest.raises(InvalidInputError, match="not the private key"):
        TransportSecurity.mutual_tls(ca, cert, pki / "bureau-1.key")
    with pytest.raises(InvalidInputError, match="not valid"):
        TransportSecurity.mutual_tls(foreign_pki / "ca.pem", cert, key)
    loose = tmp_path / "loose.key"
    loose.write_bytes(key.read_bytes())
    loose.chmod(0o644)
    with pytest.raises(PreconditionError, match="chmod 600"):
        TransportSecurity.mutual_tls(ca, cert, loose)
    with pytest.raises(
        InvalidInputError,
        match=r"^mutual TLS needs a CA, a certificate and a key: use TransportSecurity\.from_pki\(\)$",
    ):
        TransportSecurity(insecure=False)
    with pytest.raises(InvalidInputError, match=r"^a plaintext TransportSecurity cannot carry TLS material$"):
        TransportSecurity(insecure=True, server_name="bureau.blindscore.internal")


def test_plaintext_server_logs_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="blindscore.infra.transport"):
        for _address in _serve(INSECURE):
            pass
    assert "plaintext transport: only for local development" in caplog.text


def test_tls_server_logs_no_plaintext_warning(pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="blindscore.infra.transport"):
        for _address in _serve(TransportSecurity.from_pki(pki, "bureau-1")):
            pass
    assert "plaintext" not in caplog.text
    assert "mutual TLS as bureau/bureau-1" in caplog.text
