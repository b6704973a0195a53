"""A small local PKI for mutual TLS between the nodes: one CA, one certificate per node.

Layout of a PKI directory::

    ca.pem  ca.key                  the CA (key 0600); signs node certificates, nothing else
    <party_id>.pem  <party_id>.key  one node (key 0600, certificate 0644)

Every node certificate names its party in the subject CN and its role twice, in forms that are
checked against each other when the certificate is read (:func:`load_identity`). A client
certificate (roles ``platform-client`` and ``bank-client``: the platform's and the bank's own
systems) also names the one party it serves, in the subject's dnQualifier and its URI SAN
``blindscore://<role>/<serves>/<party_id>``; it carries no host names and cannot serve TLS.

* subject ``OU=<role>``, ``CN=<party_id>``
* SAN ``URI:blindscore://<role>/<party_id>``

It also carries the hosts it answers on (DNS and IP SANs) and two names that no resolver ever
answers, ``<role>.blindscore.internal`` and ``<party_id>.<role>.blindscore.internal``. A client
that must talk to one particular role or party checks the server certificate against those names
(see ``TransportSecurity.expecting``) instead of the host name, because every node of a local
setup answers on the same ``127.0.0.1``.

Keys are ECDSA P-256 and are stored unencrypted (gRPC loads PEM keys without a passphrase); the
file mode is the protection, so keep the CA key off the nodes once their certificates exist.
There is no revocation list: to withdraw a certificate, make a new PKI (``force=True``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import ipaddress
import logging
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from blindscore._files import stage
from blindscore.errors import (
    AlreadyExistsError,
    BlindscoreError,
    InvalidInputError,
    NotFoundError,
    PreconditionError,
)

log = logging.getLogger(__name__)

#: The three nodes' roles: each runs a gRPC server and calls the others.
NODE_ROLES: tuple[str, ...] = ("platform", "bureau", "bank")
#: Client roles, by the node role they serve: a client certificate never serves, and it names the
#: one party it may call (its ``serves``). ``platform-client``: the platform's own systems, which
#: submit applications to their platform node; ``bank-client``: the bank's own systems, which read
#: bands from their bank node. Neither may call anything else.
CLIENT_ROLES: dict[str, str] = {"platform-client": "platform", "bank-client": "bank"}
ROLES: tuple[str, ...] = (*NODE_ROLES, *CLIENT_ROLES)
DEFAULT_NODES: tuple[tuple[str, str], ...] = (
    ("bureau", "bureau-1"),
    ("bank", "bank-1"),
    ("platform", "platform-1"),
)
DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
DEFAULT_DAYS = 825  # the longest TLS server certificate lifetime mainstream clients still accept
CA_DAYS = 3650
CA_CERT = "ca.pem"
CA_KEY = "ca.key"
URI_SCHEME = "blindscore"
PEER_NAME_SUFFIX = "blindscore.internal"

# Party ids become file names and the subject CN (at most 64 characters by RFC 5280), so they are
# a strict subset of the ids application.check_id accepts: no ':' and at most 64 characters.
_PARTY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DNS_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
_RESERVED_IDS = frozenset({"ca"})
# Issued certificates start a little in the past so a peer whose clock runs slow accepts them.
_CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Identity:
    """Who a certificate speaks for: a role and a party id; for a client role also the party it
    serves (``serves``: the platform or bank whose node it may call; empty for a node)."""

    role: str
    party_id: str
    serves: str = ""

    def __post_init__(self) -> None:
        check_role(self.role)
        check_party_id(self.party_id)
        if self.role in CLIENT_ROLES:
            if not self.serves:
                raise InvalidInputError(
                    f"a {self.role} certificate must name the {CLIENT_ROLES[self.role]} it serves"
                )
            check_party_id(self.serves)
        elif self.serves:
            raise InvalidInputError(f"a {self.role} certificate serves no other party (got {self.serves!r})")

    @property
    def is_client(self) -> bool:
        """A client certificate: it calls one node and never serves."""
        return self.role in CLIENT_ROLES

    @property
    def uri(self) -> str:
        """The URI SAN that records this identity in a certificate
        (``blindscore://<role>/<party>``, for a client ``blindscore://<role>/<serves>/<party>``)."""
        if self.serves:
            return f"{URI_SCHEME}://{self.role}/{self.serves}/{self.party_id}"
        return f"{URI_SCHEME}://{self.role}/{self.party_id}"

    @property
    def peer_name(self) -> str:
        """The DNS name only this party's certificate carries (lower case: DNS ignores case)."""
        return f"{self.party_id}.{self.role}.{PEER_NAME_SUFFIX}".lower()

    def __str__(self) -> str:
        if self.serves:
            return f"{self.role}/{self.party_id} of {self.serves}"
        return f"{self.role}/{self.party_id}"


@dataclass(frozen=True)
class NodeFiles:
    """Where one node's TLS material lives: its identity, certificate, key and the CA certificate."""

    identity: Identity
    cert: Path
    key: Path
    ca: Path


def role_peer_name(role: str) -> str:
    """The DNS name every certificate of ``role`` carries, for clients that pin a role only."""
    return f"{check_role(role)}.{PEER_NAME_SUFFIX}"


def check_role(role: str) -> str:
    """Return ``role`` if it is one of :data:`ROLES`, else raise InvalidInputError."""
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidInputError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role


def check_party_id(party_id: str) -> str:
    """Return ``party_id`` if it can name a node certificate, else raise InvalidInputError."""
    if not isinstance(party_id, str) or not _PARTY_ID.fullmatch(party_id):
        raise InvalidInputError(
            f"party id {party_id!r} is not valid (1-64 characters: letters, digits, . _ -; "
            "starting with a letter or digit)"
        )
    if party_id.lower() in _RESERVED_IDS:
        raise InvalidInputError(f"party id {party_id!r} is reserved for the CA files")
    return party_id


def node_files(directory: Path | str, party_id: str) -> NodeFiles:
    """The files of node ``party_id`` in a PKI directory; the identity is read from its certificate."""
    directory = Path(directory)
    cert = directory / f"{check_party_id(party_id)}.pem"
    try:
        pem = cert.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"{cert}: no certificate for party {party_id!r} in {directory}") from None
    identity = load_identity(pem)
    if identity.party_id != party_id:
        raise InvalidInputError(f"{cert}: certificate names party {identity.party_id!r}, not {party_id!r}")
    return NodeFiles(identity, cert, directory / f"{party_id}.key", directory / CA_CERT)


def parties(directory: Path | str, role: str | None = None) -> list[Identity]:
    """The identities of the certificates in a PKI directory (of ``role`` only, if given), by party id.

    Reads, does not verify (as :func:`load_identity`); a file that names no identity is skipped.
    """
    if role is not None:
        check_role(role)
    found = []
    for cert in sorted(Path(directory).glob("*.pem")):
        if cert.name == CA_CERT:
            continue
        try:
            identity = load_identity(cert.read_bytes())
        except InvalidInputError:
            continue
        if role is None or identity.role == role:
            found.append(identity)
    return found


def load_identity(cert_pem: bytes | str) -> Identity:
    """Read the role and party id from a node certificate (PEM).

    The subject (OU, CN) and the URI SAN must agree; a certificate that does not name exactly one
    blindscore identity is refused with InvalidInputError. This reads, it does not verify: only
    call it on certificates the TLS stack or :func:`verify_node_cert` has checked against the CA.
    """
    return _read_identity(cert_pem.encode() if isinstance(cert_pem, str) else bytes(cert_pem))


@functools.lru_cache(maxsize=256)
def _read_identity(data: bytes) -> Identity:
    """:func:`load_identity` of PEM bytes, remembered: every call a node serves names its peer's
    certificate, and parsing it each time cost ~0.03 ms a call. Only identities are kept (a
    refused certificate raises again each time); the key is the whole PEM, so a different
    certificate is read afresh."""
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise InvalidInputError(f"not a PEM certificate ({exc})") from None
    return _identity_of(cert)


def verify_node_cert(cert_pem: bytes, ca_pem: bytes, *, at: dt.datetime | None = None) -> Identity:
    """Check that ``cert_pem`` is a node certificate signed by the CA and valid now; return its identity.

    Uses the cryptography path validator with the TLS client profile, so the same rules apply as
    in a handshake (signature, validity dates, CA constraints, extended key usage).
    """
    cert = x509.load_pem_x509_certificate(cert_pem)
    ca = x509.load_pem_x509_certificate(ca_pem)
    store = x509.verification.Store([ca])
    builder = x509.verification.PolicyBuilder().store(store).time(at or _now())
    try:
        builder.build_client_verifier().verify(cert, [])
    except x509.verification.VerificationError as exc:
        raise InvalidInputError(f"certificate for {cert.subject.rfc4514_string()} not valid: {exc}") from None
    return _identity_of(cert)


def init_pki(
    directory: Path | str,
    nodes: Sequence[tuple[str, ...]] = DEFAULT_NODES,
    *,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    days: int = DEFAULT_DAYS,
    force: bool = False,
) -> list[NodeFiles]:
    """Create a CA and one certificate per ``(role, party_id)`` in ``directory``; a client
    certificate is a ``(client role, party_id, serves)`` triple (see :data:`CLIENT_ROLES`).

    An existing CA or node file is never replaced unless ``force`` is true; with ``force`` the
    old CA goes away and every certificate it issued stops verifying. Either every file is
    written or, on failure, the directory is left as it was.
    """
    directory = Path(directory)
    if isinstance(nodes, str | bytes) or not nodes:
        raise InvalidInputError("nodes must be a non-empty sequence of (role, party_id) pairs")
    identities = [Identity(*_entry(node)) for node in nodes]
    seen: set[str] = set()
    for ident in identities:
        if ident.party_id.lower() in seen:
            raise InvalidInputError(f"party id {ident.party_id!r} appears twice in nodes")
        seen.add(ident.party_id.lower())
    host_names = _check_hosts(hosts)
    _check_days(days)

    directory.mkdir(parents=True, exist_ok=True)
    if not force:
        if (directory / CA_CERT).exists() or (directory / CA_KEY).exists():
            raise AlreadyExistsError(
                f"{directory} already holds a CA; pass force=True to replace it "
                "(every node certificate it issued stops working)"
            )
        for ident in identities:
            _refuse_existing(directory, ident.party_id)

    now = _now()
    ca_path = directory / CA_CERT
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _make_ca(ca_key, now)
    files: dict[Path, tuple[bytes, bool]] = {}
    result: list[NodeFiles] = []
    for ident in identities:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _make_leaf(ident, key, ca_cert, ca_key, host_names, now, days)
        node = NodeFiles(
            ident, directory / f"{ident.party_id}.pem", directory / f"{ident.party_id}.key", ca_path
        )
        files[node.key] = (_key_pem(key), True)
        files[node.cert] = (cert.public_bytes(serialization.Encoding.PEM), False)
        result.append(node)
    # The CA files go last: their presence marks a finished PKI.
    files[directory / CA_KEY] = (_key_pem(ca_key), True)
    files[ca_path] = (ca_cert.public_bytes(serialization.Encoding.PEM), False)
    _install(files, overwrite=force)
    if force:
        _warn_stale(directory, ca_cert, {i.party_id for i in identities})
    log.info("PKI created in %s for %s", directory, ", ".join(str(i) for i in identities))
    return result


def issue_node_cert(
    directory: Path | str,
    role: str,
    party_id: str,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    *,
    days: int = DEFAULT_DAYS,
    serves: str = "",
) -> NodeFiles:
    """Add a certificate for one more node (say a second bank) or client to an existing PKI.

    A client role (:data:`CLIENT_ROLES`) names the party it ``serves``. Refuses an invalid role or
    party id (InvalidInputError) and a party id that already has a certificate or key, compared
    without regard to case (AlreadyExistsError).
    """
    directory = Path(directory)
    ident = Identity(role, party_id, serves)
    host_names = _check_hosts(hosts)
    _check_days(days)
    _refuse_existing(directory, party_id)
    ca_cert, ca_key = _load_ca(directory)
    now = _now()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _make_leaf(ident, key, ca_cert, ca_key, host_names, now, days)
    cert_path, key_path = directory / f"{party_id}.pem", directory / f"{party_id}.key"
    _install(
        {key_path: (_key_pem(key), True), cert_path: (cert.public_bytes(serialization.Encoding.PEM), False)},
        overwrite=False,
    )
    log.info("issued %s certificate in %s", ident, directory)
    return NodeFiles(ident, cert_path, key_path, directory / CA_CERT)


def check_secret_file(path: Path) -> None:
    """Refuse a private key file that users other than the owner can access."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PreconditionError(
            f"{path}: private key is accessible by other users (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod 600 {path}"
        )


# --- certificate construction -----------------------------------------------------------------


def _make_ca(key: ec.EllipticCurvePrivateKey, now: dt.datetime) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "blindscore"),
            x509.NameAttribute(NameOID.COMMON_NAME, "blindscore local CA"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        # pathlen 0: the CA signs node certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs only; a node key signs TLS handshakes only."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _make_leaf(
    ident: Identity,
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    hosts: list[x509.GeneralName],
    now: dt.datetime,
    days: int,
) -> x509.Certificate:
    not_after = now + dt.timedelta(days=days)
    if not_after > ca_cert.not_valid_after_utc:
        log.warning("certificate for %s ends with the CA on %s", ident, ca_cert.not_valid_after_utc.date())
        not_after = ca_cert.not_valid_after_utc
    attributes = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "blindscore"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ident.role),
        x509.NameAttribute(NameOID.COMMON_NAME, ident.party_id),
    ]
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(ident.uri)]
    if ident.is_client:
        # A client certificate names the party it serves and can never act as a server.
        attributes.append(x509.NameAttribute(NameOID.DN_QUALIFIER, ident.serves))
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    else:
        sans = [*hosts, x509.DNSName(role_peer_name(ident.role)), x509.DNSName(ident.peer_name), *sans]
    subject = x509.Name(attributes)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(usages),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def _identity_of(cert: x509.Certificate) -> Identity:
    def single(oid: x509.ObjectIdentifier, label: str) -> str:
        attrs = cert.subject.get_attributes_for_oid(oid)
        if len(attrs) != 1 or not isinstance(attrs[0].value, str):
            raise InvalidInputError(f"certificate subject must hold exactly one {label}")
        return attrs[0].value

    role = single(NameOID.ORGANIZATIONAL_UNIT_NAME, "OU (role)")
    party_id = single(NameOID.COMMON_NAME, "CN (party id)")
    serves = single(NameOID.DN_QUALIFIER, "dnQualifier (served party)") if role in CLIENT_ROLES else ""
    if role not in CLIENT_ROLES and cert.subject.get_attributes_for_oid(NameOID.DN_QUALIFIER):
        raise InvalidInputError("a node certificate's subject holds no dnQualifier")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise InvalidInputError("certificate has no subject alternative names") from None
    prefix = f"{URI_SCHEME}://"
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith(prefix)]
    try:
        ident = Identity(role, party_id, serves)
    except InvalidInputError as exc:
        raise InvalidInputError(f"certificate subject is not a blindscore identity: {exc}") from None
    if uris != [ident.uri]:
        raise InvalidInputError(f"certificate URI SANs {uris} do not match the subject (want {ident.uri})")
    return ident


def _check_hosts(hosts: Sequence[str]) -> list[x509.GeneralName]:
    if isinstance(hosts, str | bytes):
        raise InvalidInputError("hosts must be a sequence of host names or IP addresses, not one string")
    names: list[x509.GeneralName] = []
    for host in hosts:
        if not isinstance(host, str):
            raise InvalidInputError(f"host {host!r} is not a string")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
            continue
        except ValueError:
            pass
        if not _DNS_NAME.fullmatch(host):
            # Wildcards are refused on purpose: a node certificate names the hosts it runs on.
            raise InvalidInputError(f"host {host!r} is neither an IP address nor a DNS name")
        names.append(x509.DNSName(host))
    if len(set(names)) != len(names):
        raise InvalidInputError(f"hosts {list(hosts)} name a host twice")
    return names


def _check_days(days: int) -> None:
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= CA_DAYS:
        raise InvalidInputError(f"days must be an integer from 1 to {CA_DAYS}, not {days!r}")


def _entry(node: object) -> tuple[str, ...]:
    if not isinstance(node, tuple | list) or len(node) not in (2, 3):
        raise InvalidInputError(
            f"node {node!r} must be a (role, party_id) pair or a (client role, party_id, serves) triple"
        )
    return tuple(node)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    try:
        check_secret_file(key_path)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise NotFoundError(f"{exc.filename}: no CA in {directory}; create one with init_pki first") from None
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"{directory}: CA files cannot be read ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise InvalidInputError(f"{key_path} is not the private key of {cert_path}")
    if cert.not_valid_after_utc <= _now():
        raise PreconditionError(f"{cert_path}: the CA expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    return cert, key


def _refuse_existing(directory: Path, party_id: str) -> None:
    """Refuse a party id whose files exist; case-insensitive, as DNS names and some file systems are."""
    check_party_id(party_id)
    wanted = {f"{party_id}.pem".lower(), f"{party_id}.key".lower()}
    with contextlib.suppress(FileNotFoundError):
        for entry in os.listdir(directory):
            if entry.lower() in wanted:
                raise AlreadyExistsError(
                    f"{directory / entry}: party {party_id!r} already has a certificate or key; "
                    "choose another party id or delete both of its files first"
                )


def _warn_stale(directory: Path, ca_cert: x509.Certificate, fresh: set[str]) -> None:
    for path in sorted(directory.glob("*.pem")):
        if path.name == CA_CERT or path.stem in fresh:
            continue
        with contextlib.suppress(ValueError, OSError):
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            try:
                cert.verify_directly_issued_by(ca_cert)
            except (InvalidSignature, ValueError, TypeError):
                log.warning(
                    "%s was issued by the replaced CA and no longer verifies; reissue or remove it", path
                )


# --- all-or-nothing file installation ---------------------------------------------------------


def _install(files: dict[Path, tuple[bytes, bool]], *, overwrite: bool) -> None:
    """Write every ``path: (data, secret)`` or none of them.

    All data is written and synced to temporary files first; only then are they moved into
    place. Without ``overwrite`` each move is a hard link, which fails if the name exists, so a
    concurrent writer cannot be overwritten either. On any failure the files already moved are
    removed (or, with ``overwrite``, their previous contents restored).
    """
    staged: dict[Path, str] = {}
    done: list[Path] = []
    backups: dict[Path, tuple[bytes, int]] = {}
    try:
        for path, (data, secret) in files.items():
            staged[path] = stage(path, data, secret=secret)
        for path, tmp in staged.items():
            if overwrite:
                with contextlib.suppress(FileNotFoundError):
                    backups[path] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
                os.replace(tmp, path)
            else:
                _link_exclusive(tmp, path)
            done.append(path)
        _fsync_dir(next(iter(files)).parent)
    except BaseException as exc:
        for path in reversed(done):
            with contextlib.suppress(OSError):
                if path in backups:
                    data, mode = backups[path]
                    _restore(path, data, mode)
                else:
                    path.unlink()
        if isinstance(exc, FileExistsError):
            raise AlreadyExistsError(f"{exc.filename or exc}: exists already; nothing was written") from None
        if isinstance(exc, OSError) and not isinstance(exc, BlindscoreError):
            raise BlindscoreError(f"cannot write PKI files: {exc}; nothing was written") from exc
        raise
    finally:
        for tmp in staged.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _link_exclusive(tmp: str, path: Path) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError as exc:
        raise FileExistsError(exc.errno, exc.strerror, str(path)) from None
    except OSError:
        # A file system without hard links: check, then rename (a narrow race, on such systems only).
        if path.exists():
            raise FileExistsError(17, "File exists", str(path)) from None
        os.rename(tmp, path)


def _restore(path: Path, data: bytes, mode: int) -> None:
    tmp = stage(path, data, secret=True)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
