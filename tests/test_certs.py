"""The local PKI: layout, file modes, certificate contents, identity round trip and every refusal."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from blindscore.errors import (
    AlreadyExistsError,
    BlindscoreError,
    InvalidInputError,
    NotFoundError,
    PreconditionError,
)
from blindscore.infra import certs
from blindscore.infra.certs import (
    Identity,
    init_pki,
    issue_node_cert,
    load_identity,
    node_files,
    verify_node_cert,
)

NODES = {"bureau-1": "bureau", "bank-1": "bank", "platform-1": "platform"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default three-node PKI, made once; tests that change a PKI make their own."""
    directory = tmp_path_factory.mktemp("pki")
    init_pki(directory)
    return directory


@pytest.fixture(scope="module")
def foreign_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("foreign")
    init_pki(directory)
    return directory


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_layout_and_file_modes(pki: Path) -> None:
    expected = {"ca.pem", "ca.key"} | {f"{p}.{ext}" for p in NODES for ext in ("pem", "key")}
    assert {p.name for p in pki.iterdir()} == expected  # no temporary files left behind
    for path in pki.iterdir():
        assert _mode(path) == (0o600 if path.suffix == ".key" else 0o644), path.name


def test_file_modes_do_not_depend_on_umask(tmp_path: Path, umask: None) -> None:
    init_pki(tmp_path, [("bank", "b")])
    assert _mode(tmp_path / "ca.key") == 0o600
    assert _mode(tmp_path / "b.key") == 0o600
    assert _mode(tmp_path / "b.pem") == 0o644


def test_returned_node_files(pki: Path, tmp_path: Path) -> None:
    nodes = init_pki(tmp_path, [("bank", "bank-9"), ("bureau", "bu")])
    assert [n.identity for n in nodes] == [Identity("bank", "bank-9"), Identity("bureau", "bu")]
    assert nodes[0].cert == tmp_path / "bank-9.pem"
    assert nodes[0].key == tmp_path / "bank-9.key"
    assert nodes[0].ca == tmp_path / "ca.pem"
    assert node_files(pki, "bank-1").identity == Identity("bank", "bank-1")
    with pytest.raises(NotFoundError, match=r"^.*/bank-7\.pem: no certificate for party 'bank-7' in "):
        node_files(pki, "bank-7")


def test_ca_certificate(pki: Path) -> None:
    ca = _cert(pki / "ca.pem")
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is True and bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and not ku.value.digital_signature
    assert ca.subject == ca.issuer
    ca.verify_directly_issued_by(ca)
    key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert key.public_key() == ca.public_key()


@pytest.mark.parametrize("party_id", sorted(NODES))
def test_identity_round_trip(pki: Path, party_id: str) -> None:
    pem = (pki / f"{party_id}.pem").read_bytes()
    assert load_identity(pem) == Identity(NODES[party_id], party_id)
    assert load_identity(pem.decode()) == Identity(NODES[party_id], party_id)
    cert = _cert(pki / f"{party_id}.pem")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == party_id
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == NODES[party_id]


@pytest.mark.parametrize("party_id", sorted(NODES))
def test_node_certificate_contents(pki: Path, party_id: str) -> None:
    cert = _cert(pki / f"{party_id}.pem")
    role = NODES[party_id]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "localhost",
        f"{role}.blindscore.internal",
        f"{party_id}.{role}.blindscore.internal",
    ]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"blindscore://{role}/{party_id}"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=825) <= lifetime <= dt.timedelta(days=825, minutes=10)
    key = serialization.load_pem_private_key((pki / f"{party_id}.key").read_bytes(), password=None)
    assert key.public_key() == cert.public_key()


@pytest.mark.parametrize("party_id", sorted(NODES))
def test_node_certificates_verify_against_ca(pki: Path, party_id: str) -> None:
    ca_pem = (pki / "ca.pem").read_bytes()
    pem = (pki / f"{party_id}.pem").read_bytes()
    assert verify_node_cert(pem, ca_pem) == Identity(NODES[party_id], party_id)
    cert = _cert(pki / f"{party_id}.pem")
    cert.verify_directly_issued_by(_cert(pki / "ca.pem"))
    # As a TLS server under each host name it was issued for (checks chain, EKU and SAN together).
    store = x509.verification.Store([_cert(pki / "ca.pem")])
    for name in (
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ):
        verifier = x509.verification.PolicyBuilder().store(store).build_server_verifier(name)
        assert verifier.verify(cert, [])[0] == cert
    verifier = (
        x509.verification.PolicyBuilder().store(store).build_server_verifier(x509.DNSName("example.org"))
    )
    with pytest.raises(x509.verification.VerificationError, match="no matching subjectAltName"):
        verifier.verify(cert, [])


def test_certificate_from_foreign_ca_does_not_verify(pki: Path, foreign_pki: Path) -> None:
    foreign_leaf = (foreign_pki / "bank-1.pem").read_bytes()
    with pytest.raises(InvalidInputError, match="not valid"):
        verify_node_cert(foreign_leaf, (pki / "ca.pem").read_bytes())
    # Same subject names in both PKIs: only the signature tells them apart.
    assert _cert(foreign_pki / "bank-1.pem").issuer == _cert(pki / "bank-1.pem").issuer


def test_expired_certificate_does_not_verify(pki: Path) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=900)
    with pytest.raises(
        InvalidInputError,
        match=r"^certificate for CN=bank-1,OU=bank,O=blindscore not valid: validation failed: ",
    ):
        verify_node_cert((pki / "bank-1.pem").read_bytes(), (pki / "ca.pem").read_bytes(), at=later)


def test_existing_ca_is_never_overwritten(pki: Path) -> None:
    before = _snapshot(pki)
    with pytest.raises(AlreadyExistsError, match="force=True"):
        init_pki(pki)
    with pytest.raises(AlreadyExistsError, match=r"already holds a CA; pass force=True to replace it"):
        init_pki(pki, [("bank", "someone-new")])
    assert _snapshot(pki) == before


def test_existing_node_files_refused_without_ca(tmp_path: Path) -> None:
    (tmp_path / "bank-1.key").write_bytes(b"precious")
    with pytest.raises(
        AlreadyExistsError,
        match=r"bank-1\.key: party 'bank-1' already has a certificate or key; choose another",
    ):
        init_pki(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"bank-1.key"}
    assert (tmp_path / "bank-1.key").read_bytes() == b"precious"


def test_force_replaces_ca_and_warns_about_stale_certificates(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    init_pki(tmp_path)
    issue_node_cert(tmp_path, "bank", "bank-2")
    old_ca = (tmp_path / "ca.pem").read_bytes()
    with caplog.at_level(logging.WARNING, logger="blindscore.infra.certs"):
        init_pki(tmp_path, force=True)
    new_ca = (tmp_path / "ca.pem").read_bytes()
    assert new_ca != old_ca
    assert verify_node_cert((tmp_path / "bank-1.pem").read_bytes(), new_ca) == Identity("bank", "bank-1")
    with pytest.raises(
        InvalidInputError,
        match=r"^certificate for CN=bank-2,OU=bank,O=blindscore not valid: validation failed: ",
    ):
        verify_node_cert((tmp_path / "bank-2.pem").read_bytes(), new_ca)
    assert "bank-2.pem was issued by the replaced CA" in caplog.text


def test_issue_second_bank(tmp_path: Path) -> None:
    init_pki(tmp_path)
    files = issue_node_cert(tmp_path, "bank", "bank-2", ["10.0.0.7", "bank2.example"], days=30)
    assert files.identity == Identity("bank", "bank-2")
    assert _mode(files.key) == 0o600 and _mode(files.cert) == 0o644
    pem = files.cert.read_bytes()
    assert verify_node_cert(pem, (tmp_path / "ca.pem").read_bytes()) == Identity("bank", "bank-2")
    san = _cert(files.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]
    assert "bank2.example" in san.get_values_for_type(x509.DNSName)
    assert "localhost" not in san.get_values_for_type(x509.DNSName)


@pytest.mark.parametrize("party_id", ["bank-1", "BANK-1", "platform-1"])
def test_issue_refuses_existing_party_id(pki: Path, party_id: str) -> None:
    before = _snapshot(pki)
    with pytest.raises(AlreadyExistsError, match="already has a certificate"):
        issue_node_cert(pki, "bank", party_id)
    assert _snapshot(pki) == before


@pytest.mark.parametrize("role", ["admin", "Bank", "", "bank "])
def test_issue_refuses_bad_role(pki: Path, role: str) -> None:
    before = _snapshot(pki)
    with pytest.raises(InvalidInputError, match="role"):
        issue_node_cert(pki, role, "new-node")
    assert _snapshot(pki) == before


@pytest.mark.parametrize(
    "party_id", ["", "../x", "a/b", ".hidden", "ca", "CA", "a:b", "x" * 65, "bank 1", "*"]
)
def test_refuses_bad_party_id(pki: Path, tmp_path: Path, party_id: str) -> None:
    with pytest.raises(InvalidInputError, match="party id"):
        issue_node_cert(pki, "bank", party_id)
    with pytest.raises(InvalidInputError, match="party id"):
        init_pki(tmp_path, [("bank", party_id)])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "hosts", ["localhost", ["*.example.org"], ["bad host"], ["localhost", "localhost"], [b"localhost"]]
)
def test_refuses_bad_hosts(tmp_path: Path, hosts: object) -> None:
    with pytest.raises(InvalidInputError, match="host"):
        init_pki(tmp_path, hosts=hosts)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("nodes", [[], [("bank", "a"), ("bureau", "A")], [("bank",)], "bank"])
def test_refuses_bad_nodes(tmp_path: Path, nodes: object) -> None:
    with pytest.raises(
        InvalidInputError,
        match=r"^(nodes must be a non-empty|node \('bank',\) must be a|party id 'A' appears twice)",
    ):
        init_pki(tmp_path, nodes)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("days", [0, -1, 3651, True, 1.5])
def test_refuses_bad_days(tmp_path: Path, days: object) -> None:
    with pytest.raises(InvalidInputError, match="days"):
        init_pki(tmp_path, days=days)  # type: ignore[arg-type]


def test_issue_without_ca(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="init_pki"):
        issue_node_cert(tmp_path, "bank", "bank-2")
    assert list(tmp_path.iterdir()) == []


def test_issue_refuses_ca_key_readable_by_others(tmp_path: Path) -> None:
    init_pki(tmp_path, [("bank", "b")])
    (tmp_path / "ca.key").chmod(0o644)
    with pytest.raises(PreconditionError, match="chmod 600"):
        issue_node_cert(tmp_path, "bank", "bank-2")
    assert not (tmp_path / "bank-2.pem").exists() and not (tmp_path / "bank-2.key").exists()


def test_failed_init_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = certs._link_exclusive
    calls = {"n": 0}

    def flaky(tmp: str, path: Path) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError(28, "No space left on device")
        real(tmp, path)

    monkeypatch.setattr(certs, "_link_exclusive", flaky)
    with pytest.raises(BlindscoreError, match="nothing was written"):
        init_pki(tmp_path)
    assert calls["n"] == 4
    assert list(tmp_path.iterdir()) == []


def test_failed_forced_init_restores_old_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    init_pki(tmp_path)
    before = _snapshot(tmp_path)
    real = os.replace
    calls = {"n": 0}

    def flaky(src: str, dst: str | Path) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(certs.os, "replace", flaky)
    with pytest.raises(BlindscoreError, match="nothing was written"):
        init_pki(tmp_path, force=True)
    monkeypatch.undo()
    assert _snapshot(tmp_path) == before
    assert _mode(tmp_path / "ca.key") == 0o600 and _mode(tmp_path / "bank-1.key") == 0o600


def test_load_identity_refuses_certificates_without_identity(pki: Path) -> None:
    with pytest.raises(InvalidInputError, match="OU"):
        load_identity((pki / "ca.pem").read_bytes())
    with pytest.raises(InvalidInputError, match="PEM"):
        load_identity(b"not a certificate")


def _forge(pki: Path, subject: list[x509.NameAttribute], uris: list[str]) -> bytes:
    """A certificate signed by the real CA whose fields disagree; load_identity must refuse it."""
    ca = _cert(pki / "ca.pem")
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("ou", "cn", "uris", "match"),
    [
        ("bank", "bank-1", ["blindscore://bureau/bank-1"], "do not match"),
        ("bank", "bank-1", ["blindscore://bank/bank-2"], "do not match"),
        ("bank", "bank-1", ["blindscore://bank/bank-1", "blindscore://bureau/x"], "do not match"),
        ("bank", "bank-1", [], "no subject alternative names"),
        ("admin", "bank-1", ["blindscore://admin/bank-1"], "not a blindscore identity"),
        ("bank", "../bank", ["blindscore://bank/../bank"], "not a blindscore identity"),
    ],
)
def test_load_identity_refuses_inconsistent_certificates(
    pki: Path, ou: str, cn: str, uris: list[str], match: str
) -> None:
    subject = [
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ]
    with pytest.raises(InvalidInputError, match=match):
        load_identity(_forge(pki, subject, uris))


def test_identity_validation_and_names() -> None:
    ident = Identity("bank", "Bank_2")
    assert ident.uri == "blindscore://bank/Bank_2"
    assert ident.peer_name == "bank_2.bank.blindscore.internal"
    assert str(ident) == "bank/Bank_2"
    with pytest.raises(
        InvalidInputError,
        match=r"^role 'root' is not one of platform, bureau, bank, platform-client, bank-client$",
    ):
        Identity("root", "x")
    with pytest.raises(
        InvalidInputError,
        match=r"^party id 'a b' is not valid \(1-64 characters: letters, digits, \. _ -; starting with a",
    ):
        Identity("bank", "a b")


def test_ids_and_host_names_with_a_trailing_newline_are_refused() -> None:
    """``re.match`` with ``$`` accepts a trailing newline; the checks match the whole string."""
    from blindscore.infra.certs import _check_hosts, check_party_id

    assert check_party_id("bank-1") == "bank-1"
    with pytest.raises(InvalidInputError, match="party id 'bank-1\\\\n' is not valid"):
        check_party_id("bank-1\n")
    assert len(_check_hosts(["node.internal"])) == 1
    with pytest.raises(InvalidInputError, match="is neither an IP address nor a DNS name"):
        _check_hosts(["node.internal\n"])
