"""Every certificate and key the local runs use, made in one place (python ``cryptography``).

- :class:`Authority`: a throw-away CA that issues server and client certificates;
- :func:`make_tls`: the harness's CA, gateway certificate (every public host) and a separate one
  for the Keycloak host;
- :func:`mesh_identities`: the mesh's CA (istiod's role) and the workloads' SPIFFE certificates;
- :func:`cluster_pki`: the local API server's CA, serving and admin client certificates, its
  service-account key pair, and a serving certificate for the engine's Keycloak;
- :func:`spki_hash`: a certificate's SPKI pin (Chromium's ``--ignore-certificate-errors-spki-list``);
- :func:`write_private`: a 0600 file (keys, secret-bearing configs).

Imports: the standard library and ``cryptography`` only.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def write_private(path: Path, data: bytes | str) -> None:
    """Write ``data`` to a file only its owner can read (created 0600, never wider)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def _pkcs8(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class Authority:
    """A throw-away CA (EC P-256, valid for two days) that writes what it issues into ``directory``."""

    name: str
    directory: Path
    key: ec.EllipticCurvePrivateKey = field(init=False)
    cert: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        now = dt.datetime.now(dt.UTC)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def ca_file(self) -> Path:
        """The CA certificate (PEM), written on first use."""
        path = self.directory / "ca.pem"
        if not path.exists():
            path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path

    def issue(self, stem: str, *, dns: Sequence[str] = (), ips: Sequence[str] = (),
              uris: Sequence[str] = (), common_name: str | None = None,
              organization: str | None = None, client: bool = False,
              both: bool = False) -> tuple[Path, Path]:
        """A leaf certificate (valid one day) for the names ``dns``, addresses ``ips`` and URIs
        ``uris`` (SPIFFE identities), as ``<stem>.pem`` and ``<stem>.key`` (PKCS#8, 0600);
        ``client`` makes it a client certificate (``organization`` is the Kubernetes group),
        ``both`` a client and server one (an Istio workload certificate). Returns (certificate
        file, key file)."""
        now = dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)] if organization else []
        cn = common_name or (list(dns) + list(ips) + list(uris))[0]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn[:64]))
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if both
                  else [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH])
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs)).issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        sans: list[x509.GeneralName] = [x509.DNSName(h) for h in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        sans += [x509.UniformResourceIdentifier(u) for u in uris]
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        cert_path, key_path = self.directory / f"{stem}.pem", self.directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_private(key_path, _pkcs8(key))
        return cert_path, key_path


@dataclass
class TlsFiles:
    ca_file: str
    cert_file: str
    key_file: str
    keycloak_cert_file: str = ""
    keycloak_key_file: str = ""


def make_tls(hosts: list[str], directory: Path, keycloak_host: str | None = None) -> TlsFiles:
    """A throw-away CA and a server certificate for ``hosts`` (SANs), written to ``directory``;
    with ``keycloak_host``, a second certificate for that host alone. Separate certificates keep
    browsers from coalescing Keycloak requests onto a gateway HTTP/2 connection (all names
    resolve to one address locally, which is not the case in a real deployment)."""
    ca = Authority("authproxy harness CA (throw-away)", directory)
    cert, key = ca.issue("server", dns=[h for h in hosts if h != keycloak_host])
    files = TlsFiles(str(ca.ca_file), str(cert), str(key))
    if keycloak_host:
        kc_cert, kc_key = ca.issue("keycloak", dns=[keycloak_host])
        files.keycloak_cert_file, files.keycloak_key_file = str(kc_cert), str(kc_key)
    return files


def spiffe_id(namespace: str, service_account: str, trust_domain: str = "cluster.local") -> str:
    """A workload's SPIFFE identity as Istio issues it."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def mesh_identities(directory: Path, identities: dict[str, str]) -> tuple[str, dict[str, tuple[str, str]]]:
    """A mesh CA (istiod's, for the run) and one workload certificate per identity (name ->
    SPIFFE URI), each usable as client and server, as istiod's CA issues them for SDS
    ``default``. Returns (CA file, name -> (certificate file, key file))."""
    ca = Authority("authproxy harness mesh CA (istiod's role, throw-away)", directory)
    out = {}
    for name, uri in identities.items():
        cert, key = ca.issue(f"workload-{name}", uris=[uri], common_name=name, both=True)
        out[name] = (str(cert), str(key))
    return str(ca.ca_file), out


def cluster_pki(directory: Path) -> dict[str, Path]:
    """The local API server's CA, serving certificate (localhost, 127.0.0.1), admin client
    certificate (group ``system:masters``) and service-account key pair, plus the engine
    Keycloak's serving certificate (the stack's keycloak.url must be a dotted host name, and no
    name other than ``localhost`` resolves here without touching /etc/hosts, so it is 127.0.0.1)."""
    ca = Authority("authproxy engine-test CA", directory)
    serving = ca.issue("apiserver", dns=["localhost"], ips=["127.0.0.1"], common_name="kube-apiserver")
    admin = ca.issue("admin", common_name="authproxy-engine-admin", organization="system:masters", client=True)
    keycloak = ca.issue("keycloak", ips=["127.0.0.1"], dns=["localhost"], common_name="127.0.0.1")
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_private(directory / "sa.key", _pkcs8(sa))
    (directory / "sa.pub").write_bytes(sa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return {
        "ca": ca.ca_file,
        "serving_cert": serving[0], "serving_key": serving[1],
        "admin_cert": admin[0], "admin_key": admin[1],
        "keycloak_cert": keycloak[0], "keycloak_key": keycloak[1],
        "sa_key": directory / "sa.key", "sa_pub": directory / "sa.pub",
    }


def spki_hash(cert_file: str) -> str:
    """base64(sha256(SubjectPublicKeyInfo)) of a PEM certificate (Chromium's
    --ignore-certificate-errors-spki-list)."""
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    der = cert.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()
