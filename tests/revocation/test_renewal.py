"""Certificate renewal over the unit's mTLS link, against the real relay (its unit HTTPS
listener), the real mosquitto and the unit's real MQTT uplink (edge_agent/uplink.py): the
unit renews with a new key, installs the certificate, reconnects with it and confirms;
the relay then revokes the old certificate, which the broker refuses from then on. The
relay signs only for the unit id of the certificate that asks, and never for a revoked
one."""

from __future__ import annotations

import json
import shutil

import pytest
from revocation_kit import csr_for, enrol, handshake, tls_verdict
from support import make_relay, wait_for

from cloud_relay import broker as brk
from cloud_relay import pki
from edge_agent.config import BrokerConfig
from edge_agent.relay_https import FetchError, RelayHttps
from edge_agent.renew import STATE_FILE, Renewer
from edge_agent.spool import Spool
from edge_agent.uplink import LINK_FILE, Uplink


@pytest.fixture
def relay(tmp_path, broker):
    """The relay with its unit HTTPS listener (server certificate from the clinic CA)."""
    ca = pki.CA.load(broker.pki["ca"], broker.pki["ca_key"])
    server = pki.write_identity(ca, tmp_path / "https", "relay-https",
                                server_names=["127.0.0.1"], client=False)
    port = brk.free_port()
    r = make_relay(tmp_path, broker, extra=f'unit_https_port = {port}\n'
                   f'unit_https_cert_file = "{server.cert}"\n'
                   f'unit_https_key_file = "{server.key}"\n')
    r.unit_url = f"https://127.0.0.1:{port}"
    yield r
    r.stop()


def test_a_unit_renews_reconnects_confirms_and_its_old_certificate_is_revoked(
        broker, relay, tmp_path):
    e = enrol(relay, broker, "exam-5", tmp_path / "enrolled")
    tls = tmp_path / "unit" / "tls"
    tls.mkdir(parents=True)
    cert, key = tls / "unit.pem", tls / "unit.key"
    shutil.copy(e.tls.cert, cert)
    shutil.copy(e.tls.key, key)
    old = pki.Bundle(broker.pki["ca"], tmp_path / "old.pem", tmp_path / "old.key")
    shutil.copy(cert, old.cert)
    shutil.copy(key, old.key)
    state = tmp_path / "unit" / "state"
    state.mkdir()
    uplink = Uplink(BrokerConfig(url=broker.url, ca_file=str(broker.pki["ca"]),
                                 cert_file=str(cert), key_file=str(key)), "exam-5",
                    Spool(tmp_path / "unit" / "spool"), on_control=lambda m: None,
                    link_file=state / LINK_FILE)
    uplink.start()
    client = RelayHttps(relay.unit_url, ca_file=str(broker.pki["ca"]), cert_file=str(cert),
                        key_file=str(key))
    try:
        wait_for(lambda: uplink.connected, 10, "the unit's link")
        first_link = json.loads((state / LINK_FILE).read_text())
        assert tls_verdict(broker, old) == "accepted"  # (the probe below can tell)

        def reload() -> None:
            client.reload_identity()
            uplink.reload_identity()

        nb, na = (x.timestamp() for x in (pki.x509.load_pem_x509_certificate(
            cert.read_bytes()).not_valid_before_utc, pki.x509.load_pem_x509_certificate(
            cert.read_bytes()).not_valid_after_utc))
        renewer = Renewer(unit_id="exam-5", cert_file=str(cert), key_file=str(key),
                          ca_file=str(broker.pki["ca"]), relay=client, state_dir=state,
                          link_up=lambda: uplink.connected, reload_identity=reload,
                          clock=lambda: nb + 0.9 * (na - nb))  # well into its renewal time
        d = renewer.step()
        assert d.action == "confirm", (d, (state / STATE_FILE).read_text())
        assert json.loads((state / STATE_FILE).read_text())["confirm_pending"] is False

        new_cert = pki.x509.load_pem_x509_certificate(cert.read_bytes())
        new_serial = pki.serial_hex(new_cert)
        assert new_serial != e.serial and pki.common_name(new_cert) == "exam-5"
        assert key.read_bytes() != old.key.read_bytes()
        assert not list(tls.glob("*.prev")) and not list(tls.glob("*.new"))
        # the link came back with the new certificate
        wait_for(lambda: uplink.connected, 10, "the link with the new certificate")
        link = json.loads((state / LINK_FILE).read_text())
        assert link["connected"] and link["cert_sha256"] != first_link["cert_sha256"]
        # the relay revoked the old one once confirmed; the broker refuses it
        certs = {c["serial"]: c for c in relay.api(
            "GET", "/api/admin/units/exam-5/certificates").json()}
        assert certs[e.serial]["state"] == "revoked" and certs[e.serial]["reason"] == \
            "superseded"
        assert certs[new_serial]["state"] == "active" and certs[new_serial]["renews"] == \
            e.serial
        assert certs[new_serial]["sign_key_id"] == e.sign_key_id  # same unit signing key
        # the broker applies the revocation within moments: waited for at the TLS layer
        # alone (an MQTT CONNECT with the old certificate let in before then would take
        # the unit's session over: the broker takes the client id from the CN)
        wait_for(lambda: tls_verdict(broker, old).startswith("tls"), 10,
                 "the old certificate refused")
        assert uplink.connected  # no takeover: the unit had moved to its new certificate
        assert handshake(broker, old, "exam-5").startswith("tls")  # and a CONNECT is refused
        # the link really presents the new certificate: after a broker restart it is let
        # in again, which the old one no longer would be
        broker.restart()
        wait_for(lambda: not uplink.connected, 10, "the link to drop with the broker")
        wait_for(lambda: uplink.connected, 20, "the link back, with the new certificate")

        # the old certificate cannot renew (it is revoked)...
        stale = RelayHttps(relay.unit_url, ca_file=str(broker.pki["ca"]),
                           cert_file=str(old.cert), key_file=str(old.key))
        with pytest.raises(FetchError) as refused:
            stale.post_json("/unit/v1/certificate/renew", {"csr_pem": csr_for("exam-5")[1]})
        assert refused.value.status == 403 and "revoked" in str(refused.value)
        # ...and the current one gets a certificate only for its own unit id
        with pytest.raises(FetchError) as other:
            client.post_json("/unit/v1/certificate/renew", {"csr_pem": csr_for("exam-6")[1]})
        assert other.value.status == 400 and "exam-5" in str(other.value)
        # asking again before confirming replaces the outstanding renewal: one at a time
        a = client.post_json("/unit/v1/certificate/renew", {"csr_pem": csr_for("exam-5")[1]})
        b = client.post_json("/unit/v1/certificate/renew", {"csr_pem": csr_for("exam-5")[1]})
        certs = {c["serial"]: c for c in relay.api(
            "GET", "/api/admin/units/exam-5/certificates").json()}
        assert certs[a["serial"]]["state"] == "revoked"
        assert certs[b["serial"]]["state"] == "issued" and certs[new_serial]["state"] == "active"
    finally:
        uplink.stop()
