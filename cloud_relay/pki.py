"""The clinic's enrollment CA: make the CA, sign the broker's, relay's and units' certificates.

ECDSA P-256 throughout. A unit's certificate CN is its unit id, which mosquitto takes as
the MQTT username (`use_identity_as_username`) and the ACL confines to its own topics.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

RESERVED_CNS = {"relay", "broker", "admin"}


@dataclass
class CA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def load(cls, cert_pem: Path, key_pem: Path) -> CA:
        key = serialization.load_pem_private_key(key_pem.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(key, x509.load_pem_x509_certificate(cert_pem.read_bytes()))

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def make_ca(name: str = "Scribelink Clinic CA", days: int = 3650) -> CA:
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return CA(key, cert)


def issue(
    ca: CA,
    public_key: ec.EllipticCurvePublicKey,
    common_name: str,
    *,
    server_names: list[str] | None = None,
    client: bool = True,
    days: int = 825,
) -> x509.Certificate:
    now = _now()
    eku = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False
        )
    )
    if server_names:
        eku.append(ExtendedKeyUsageOID.SERVER_AUTH)
        sans: list[x509.GeneralName] = []
        for n in server_names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


class CSRError(ValueError):
    pass


def sign_csr(ca: CA, csr_pem: bytes, expected_cn: str, days: int = 825) -> x509.Certificate:
    """Sign a unit's CSR. The CN must be the unit id the enrollment code was issued for."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as e:
        raise CSRError("CSR is not valid PEM") from e
    if not csr.is_signature_valid:
        raise CSRError("CSR signature does not verify (key does not match)")
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1 or cns[0].value != expected_cn:
        raise CSRError(f"CSR common name must be the unit id {expected_cn!r}")
    if expected_cn in RESERVED_CNS:
        raise CSRError(f"{expected_cn!r} is reserved")
    pub = csr.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp256r1":
        raise CSRError("unit keys must be ECDSA P-256")
    return issue(ca, pub, expected_cn, days=days)


def write_private(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


@dataclass
class Bundle:
    """Paths of one party's TLS material."""

    ca: Path
    cert: Path
    key: Path


def write_identity(ca: CA, out_dir: Path, name: str, *, server_names: list[str] | None = None,
                   client: bool = True) -> Bundle:
    key = new_key()
    cert = issue(ca, key.public_key(), name, server_names=server_names, client=client)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_private(out_dir / f"{name}.key", key_pem(key))
    (out_dir / f"{name}.pem").write_bytes(cert_pem(cert))
    ca_path = out_dir / "ca.pem"
    if not ca_path.exists():
        ca_path.write_bytes(ca.cert_pem())
    return Bundle(ca_path, out_dir / f"{name}.pem", out_dir / f"{name}.key")


def make_local_pki(out_dir: Path, units: list[str], hosts: list[str] | None = None) -> dict:
    """A clinic CA plus certificates for the broker, the relay and the given units."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ca = make_ca()
    write_private(out_dir / "ca.key", key_pem(ca.key))
    (out_dir / "ca.pem").write_bytes(ca.cert_pem())
    hosts = hosts or ["127.0.0.1", "localhost", "::1"]
    result = {
        "ca": out_dir / "ca.pem",
        "ca_key": out_dir / "ca.key",
        "broker": write_identity(ca, out_dir, "broker", server_names=hosts, client=False),
        "relay": write_identity(ca, out_dir, "relay"),
        "units": {u: write_identity(ca, out_dir, u) for u in units},
    }
    return result


def make_crl(ca: CA, serials: list[int], *, days: int = 30) -> x509.CertificateRevocationList:
    """The CA's revocation list naming `serials` (the broker refuses those certificates).
    Renewed whenever it changes; `days` bounds how stale a copy may be."""
    now = _now()
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(ca.cert.subject)
               .last_update(now - dt.timedelta(minutes=5))
               .next_update(now + dt.timedelta(days=days)))
    for serial in sorted(set(serials)):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
    return builder.sign(ca.key, hashes.SHA256())


def write_crl(ca: CA, path: Path, serials: list[int]) -> None:
    """Write the revocation list atomically (a reader never sees half a file)."""
    data = make_crl(ca, serials).public_bytes(serialization.Encoding.PEM)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    os.replace(tmp, path)
