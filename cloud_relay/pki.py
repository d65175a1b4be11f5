"""The clinic's transport CA: make the CA, sign the broker's, relays' and units'
certificates, and revoke them (a CRL the broker reads).

ECDSA P-256 throughout. A certificate's CN is its holder's identity at the broker: the
MQTT username (`use_identity_as_username`) and the client id (`use_username_as_clientid`),
so one identity cannot take over another's connection. A unit's CN is its unit id, which
the ACL confines to its own topics; a relay's is `relay` or `relay-<name>` (one per relay
process), which the ACL lets read every unit's uplink.

Lifetimes: a unit's certificate lasts UNIT_CERT_DAYS and the unit renews it over its mTLS
link (edge_agent/renew.py); the broker's and relays' are the operator's to rotate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import ssl
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

RESERVED_CNS = {"relay", "broker", "admin"}
# relay identities: `relay`, or `relay-<name>` for each of several relays sharing the units'
# traffic. No unit may hold one (sign_csr refuses it), since the ACL lets them read all.
_RELAY_CN = re.compile(r"^relay(-[A-Za-z0-9._-]{1,58})?$")

UNIT_CERT_DAYS = 90  # a unit renews at two thirds of this (edge_agent/renew.py)
SERVER_CERT_DAYS = 825  # the broker's and the relays' (the operator's to rotate)
CRL_DAYS = 90  # a CRL's nextUpdate; the relay writes a fresh one long before (revocation.py)


def is_relay_identity(cn: str) -> bool:
    return bool(_RELAY_CN.match(cn))


def reserved_cn(cn: str) -> bool:
    """True for names no unit may have: the broker's, an admin's, and every relay identity."""
    return cn in RESERVED_CNS or is_relay_identity(cn)


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
    return dt.datetime.now(dt.UTC)


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
    days: float = SERVER_CERT_DAYS,
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


def sign_csr(ca: CA, csr_pem: bytes, expected_cn: str,
             days: float = UNIT_CERT_DAYS) -> x509.Certificate:
    """Sign a unit's CSR. The CN must be the unit id the enrolment code was issued for (or,
    on renewal, the CN of the certificate that asked)."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as e:
        raise CSRError("CSR is not valid PEM") from e
    if not csr.is_signature_valid:
        raise CSRError("CSR signature does not verify (key does not match)")
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1 or cns[0].value != expected_cn:
        raise CSRError(f"CSR common name must be the unit id {expected_cn!r}")
    if reserved_cn(expected_cn):
        raise CSRError(f"{expected_cn!r} is reserved (broker, admin and relay identities)")
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


def common_name(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if len(cns) == 1 else ""


def cert_file_cn(path: str | Path) -> str:
    return common_name(x509.load_pem_x509_certificate(Path(path).read_bytes()))


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


# ---------------------------------------------------------------------------- revocation


@dataclass(frozen=True)
class Revoked:
    """One CRL entry."""

    serial: int
    revoked_at: dt.datetime
    reason: x509.ReasonFlags = x509.ReasonFlags.unspecified


def build_crl(ca: CA, revoked: Iterable[Revoked], *, days: float = CRL_DAYS,
              now: dt.datetime | None = None) -> x509.CertificateRevocationList:
    now = now or _now()
    b = (x509.CertificateRevocationListBuilder()
         .issuer_name(ca.cert.subject)
         .last_update(now - dt.timedelta(minutes=5))
         .next_update(now + dt.timedelta(days=days)))
    for r in revoked:
        entry = (x509.RevokedCertificateBuilder().serial_number(r.serial)
                 .revocation_date(r.revoked_at))
        if r.reason != x509.ReasonFlags.unspecified:
            entry = entry.add_extension(x509.CRLReason(r.reason), critical=False)
        b = b.add_revoked_certificate(entry.build())
    return b.sign(ca.key, hashes.SHA256())


def write_crl(ca: CA, path: Path, revoked: Iterable[Revoked] = (), *,
              days: float = CRL_DAYS) -> x509.CertificateRevocationList:
    """Write the CRL (PEM) atomically: the broker re-reads it on SIGHUP and must never see
    half a file. World-readable: a CRL is public, and the broker runs as its own user."""
    crl = build_crl(ca, revoked, days=days)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(crl.public_bytes(serialization.Encoding.PEM))
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return crl


def read_crl(path: Path) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(path.read_bytes())


def ssl_client_context(ca_file: str | Path, cert: x509.Certificate,
                       key: ec.EllipticCurvePrivateKey) -> ssl.SSLContext:
    """A TLS client context for a certificate held in memory (one the relay just minted):
    Python's ssl loads key material from files only, so they live in a private temporary
    directory for the instant of loading."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    with tempfile.TemporaryDirectory(prefix="scribelink-tls-") as d:
        write_private(Path(d) / "id.key", key_pem(key))
        (Path(d) / "id.pem").write_bytes(cert_pem(cert))
        ctx.load_cert_chain(str(Path(d) / "id.pem"), str(Path(d) / "id.key"))
    return ctx


@dataclass
class Bundle:
    """Paths of one party's TLS material."""

    ca: Path
    cert: Path
    key: Path


def write_identity(ca: CA, out_dir: Path, name: str, *, server_names: list[str] | None = None,
                   client: bool = True, days: float = SERVER_CERT_DAYS) -> Bundle:
    key = new_key()
    cert = issue(ca, key.public_key(), name, server_names=server_names, client=client,
                 days=days)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_private(out_dir / f"{name}.key", key_pem(key))
    (out_dir / f"{name}.pem").write_bytes(cert_pem(cert))
    ca_path = out_dir / "ca.pem"
    if not ca_path.exists():
        ca_path.write_bytes(ca.cert_pem())
    return Bundle(ca_path, out_dir / f"{name}.pem", out_dir / f"{name}.key")


def make_local_pki(out_dir: Path, units: list[str], hosts: list[str] | None = None,
                   relays: Iterable[str] = ("relay",)) -> dict:
    """A clinic CA, an empty CRL, and certificates for the broker, each relay identity and
    the given units. `result["relay"]` is the first relay's."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ca = make_ca()
    write_private(out_dir / "ca.key", key_pem(ca.key))
    (out_dir / "ca.pem").write_bytes(ca.cert_pem())
    write_crl(ca, out_dir / "crl.pem")
    hosts = hosts or ["127.0.0.1", "localhost", "::1"]
    relay_ids = list(relays)
    for r in relay_ids:
        if not is_relay_identity(r):
            raise ValueError(f"relay identity {r!r}: relay or relay-<name>")
    relay_bundles = {r: write_identity(ca, out_dir, r) for r in relay_ids}
    result = {
        "ca": out_dir / "ca.pem",
        "ca_key": out_dir / "ca.key",
        "crl": out_dir / "crl.pem",
        "broker": write_identity(ca, out_dir, "broker", server_names=hosts, client=False),
        "relay": relay_bundles[relay_ids[0]],
        "relays": relay_bundles,
        "units": {u: write_identity(ca, out_dir, u, days=UNIT_CERT_DAYS) for u in units},
    }
    return result
