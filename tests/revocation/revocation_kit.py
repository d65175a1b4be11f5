"""What the revocation and broker-adversary tests share: enrolling a unit through the real
relay's API as the tech's tool does (a grant from the clinic authority, a CSR, the unit's
signing key bound with the code's key), and a real MQTT 5 client with a unit's certificate
that records when it was connected, dropped and refused."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion
from support import Broker, Relay, relay_clinic
from trustkit import UnitKeys, now_us

from cloud_relay import pki
from scribelink import enrolcode, trust
from scribelink.authority import bind_unit
from scribelink.authority_cli import grant_request


def csr_for(cn: str, key: ec.EllipticCurvePrivateKey | None = None
            ) -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class Enrolled:
    unit: str
    tls: pki.Bundle  # the transport key and certificate the relay issued
    keys: UnitKeys  # the signing key bound to the unit id under the authority's grant
    serial: str

    @property
    def sign_key_id(self) -> str:
        return trust.key_id(trust.ed25519_raw(self.keys.key))


def enrol(relay: Relay, broker: Broker, unit: str, directory: Path, *,
          serial: str = "SN-1") -> Enrolled:
    """Enrol `unit` as scripts/provision does: code (grant), CSR and binding, confirm."""
    clinic = relay_clinic(relay)
    request, secret = grant_request(clinic.authority, unit, "Exam", "Test Clinic", 600)
    relay.api("POST", "/api/admin/enrolment-grants", json=request).raise_for_status()
    proof = enrolcode.proof_of(secret)
    sign = Ed25519PrivateKey.generate()
    binding = bind_unit(trust.Statement.from_dict(request["grant"]), secret,
                        trust.ed25519_raw(sign), now_us()).to_dict()
    key, csr = csr_for(unit)
    r = relay.api("POST", "/api/enroll", json={"proof": proof, "serial": serial,
                                               "csr_pem": csr, "binding": binding})
    r.raise_for_status()
    issued = r.json()
    relay.api("POST", "/api/enroll/confirm", json={
        "proof": proof, "fingerprint_sha256": issued["fingerprint_sha256"]}).raise_for_status()
    directory.mkdir(parents=True, exist_ok=True)
    pki.write_private(directory / f"{unit}.key", pki.key_pem(key))
    (directory / f"{unit}.pem").write_text(issued["cert_pem"])
    cert = x509.load_pem_x509_certificate(issued["cert_pem"].encode())
    return Enrolled(unit, pki.Bundle(broker.pki["ca"], directory / f"{unit}.pem",
                                     directory / f"{unit}.key"),
                    UnitKeys(unit, sign, binding), pki.serial_hex(cert))


def revoke_unit_key(relay: Relay, e: Enrolled, *, serial: int = 1) -> dict:
    """The clinic's admin revokes the unit's signing key (from now), signed by the
    authority, as `python -m scribelink.authority revoke` does."""
    clinic = relay_clinic(relay)
    st = clinic.authority.revocations(serial=serial, units=[{
        "unit": e.unit, "sign_key_id": e.sign_key_id, "after_us": now_us()}], devices=[],
        now_us=now_us())
    r = relay.api("PUT", "/api/admin/revocations", json={"statement": st.to_dict()})
    r.raise_for_status()
    return r.json()


class UnitClient:
    """A paho MQTT 5 client with a unit's certificate, as the agent connects (client id =
    the unit id, persistent session, its control topic subscribed), recording the times it
    was connected and dropped. It does not reconnect by itself: `try_connect` does."""

    def __init__(self, broker: Broker, bundle: pki.Bundle, client_id: str) -> None:
        self.broker, self.bundle, self.client_id = broker, bundle, client_id
        self.connected = threading.Event()
        self.dropped = threading.Event()
        self.dropped_at: float | None = None
        self.control: list[dict] = []
        self.c = self._client()

    def _client(self) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        protocol=mqtt.MQTTv5, reconnect_on_failure=False)
        c.tls_set_context(tls_context(self.broker, self.bundle))

        def on_connect(cl, u, flags, rc, props):
            if not rc.is_failure:
                cl.subscribe(f"sl/v1/unit/{self.client_id}/control", 1)
                self.connected.set()

        def on_disconnect(cl, u, flags, rc, props):
            if self.connected.is_set() and not self.dropped.is_set():
                self.dropped_at = time.monotonic()
                self.dropped.set()

        c.on_connect, c.on_disconnect = on_connect, on_disconnect
        c.on_message = lambda cl, u, m: self.control.append(json.loads(m.payload))
        return c

    def connect(self, timeout: float = 5.0) -> UnitClient:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.c.connect("127.0.0.1", self.broker.port, clean_start=False, properties=props)
        self.c.loop_start()
        assert self.connected.wait(timeout), f"{self.client_id} did not connect"
        return self

    def publish(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        try:
            self.c.disconnect()
        finally:
            self.c.loop_stop()


def tls_context(broker: Broker, bundle: pki.Bundle) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(broker.pki["ca"]))
    ctx.load_cert_chain(str(bundle.cert), str(bundle.key))
    return ctx


def handshake(broker: Broker, bundle: pki.Bundle, client_id: str) -> str:
    """A fresh connection with this certificate: "accepted" (CONNACK success), or why not
    ("tls: SSLV3_ALERT_CERTIFICATE_REVOKED", ...). It disconnects at once."""
    from cloud_relay.revocation import _connect_once

    kind, why = _connect_once("127.0.0.1", broker.port, tls_context(broker, bundle),
                              client_id)
    return kind if not why else f"{kind}: {why}"


def tls_verdict(broker: Broker, bundle: pki.Bundle, wait_s: float = 1.0) -> str:
    """The broker's word on this certificate at the TLS layer alone, no MQTT CONNECT sent:
    "tls: <why>" if it refuses it (TLS 1.3: an alert on the first read), "accepted" if it
    waits for a CONNECT instead. Unlike `handshake` it can never take over the session of
    the certificate's CN (the broker takes the client id from it)."""
    raw = socket.create_connection(("127.0.0.1", broker.port), 5.0)
    try:
        with tls_context(broker, bundle).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.settimeout(wait_s)
            try:
                got = tls.recv(1)
            except TimeoutError:
                return "accepted"
            return "tls: closed" if not got else "accepted"
    except ssl.SSLError as e:
        return f"tls: {e.reason or e}"
    except OSError as e:  # reset by the broker's close
        return f"tls: {e or type(e).__name__}"
    finally:
        raw.close()


def mint(broker: Broker, cn: str, directory: Path, days: float = 1.0) -> pki.Bundle:
    """What a holder of the transport CA key can do: a valid certificate for any CN."""
    ca = pki.CA.load(broker.pki["ca"], broker.pki["ca_key"])
    key = pki.new_key()
    cert = pki.issue(ca, key.public_key(), cn, days=days)
    directory.mkdir(parents=True, exist_ok=True)
    pki.write_private(directory / f"{cn}.key", pki.key_pem(key))
    (directory / f"{cn}.pem").write_bytes(pki.cert_pem(cert))
    return pki.Bundle(broker.pki["ca"], directory / f"{cn}.pem", directory / f"{cn}.key")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
