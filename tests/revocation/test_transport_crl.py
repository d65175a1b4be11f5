"""cloud_relay.revocation against a real mosquitto, without the relay process: a CRL in
force only once the broker refuses a canary revoked in it; a reload that did not happen is
reported, not assumed; expired certificates leave the CRL; the periodic pass rewrites a
CRL that disagrees with the store."""

from __future__ import annotations

import datetime as dt

import pytest
from revocation_kit import handshake, mint

from cloud_relay import pki
from cloud_relay.config import RelayConfig
from cloud_relay.revocation import Transport
from cloud_relay.store import Store, now_us


@pytest.fixture
def transport(broker, tmp_path):
    def make(**over) -> Transport:
        settings = {"data_dir": str(tmp_path / "relay"), "broker_url": broker.url,
                    "broker_ca_file": str(broker.pki["ca"]),
                    "ca_cert_file": str(broker.pki["ca"]),
                    "ca_key_file": str(broker.pki["ca_key"]),
                    "broker_crl_file": str(broker.pki["crl"]),
                    "broker_pid_file": str(broker.pid_file)}
        cfg = RelayConfig(**{**settings, **over})
        (tmp_path / "relay").mkdir(exist_ok=True)
        t = Transport(cfg, Store.open("", cfg.data_dir))
        t.in_force_timeout_s = 2.0
        return t
    return make


def _record(t: Transport, bundle: pki.Bundle, cn: str) -> str:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(bundle.cert.read_bytes())
    t.issued(cert, cn, via="enrol")
    return pki.serial_hex(cert)


def test_a_crl_counts_as_in_force_only_when_the_broker_refuses_it(transport, broker, tmp_path):
    # a "reload" that does nothing: the CRL file changes, the broker does not re-read it
    idle = transport(broker_pid_file="", broker_reload_command=("true",))
    unit = mint(broker, "exam-1", tmp_path / "m")
    serial = _record(idle, unit, "exam-1")
    got = idle.revoke([serial], "admin", "test")
    assert got["broker"]["in_force"] is False and "still accepts" in got["broker"]["problem"]
    assert "ended" not in got  # no takeover while the unit could come straight back
    assert handshake(broker, unit, "exam-1") == "accepted"
    # no way to tell the broker at all: said so
    told = transport(broker_pid_file="")
    assert told.sync(prove=True)["problem"].startswith("the relay cannot tell the broker")
    # the broker's pid: SIGHUP, and the canary proves it took
    t = transport()
    got = t.sync(prove=True)
    assert got["in_force"] is True and got["reload"] == "sighup", got
    assert handshake(broker, unit, "exam-1").startswith("tls")


def test_expired_certificates_leave_the_crl_and_the_periodic_pass_follows_the_store(
        transport, broker, tmp_path):
    t = transport()
    live = _record(t, mint(broker, "exam-2", tmp_path / "a"), "exam-2")
    t.store.certs.add("ab12", "exam-3", "0" * 64, not_after_us=now_us() - 1, via="enrol")
    t.store.certs.revoke([live, "ab12"], "admin")
    t.periodic()  # the CRL file disagrees with the store: rewritten
    crl = pki.read_crl(broker.pki["crl"])
    assert {format(r.serial_number, "x") for r in crl} == {live}  # the expired one is gone
    assert crl.next_update_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=60)
    before = broker.pki["crl"].stat().st_mtime_ns
    t.periodic()  # agrees now: left alone
    assert broker.pki["crl"].stat().st_mtime_ns == before
