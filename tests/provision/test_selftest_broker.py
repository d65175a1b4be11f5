"""The self-test's broker check against the real mosquitto (mTLS, CN-keyed ACL): it passes
with a clinic-CA certificate and names the cause and the fix when it cannot."""

from __future__ import annotations

from cloud_relay import broker as broker_mod
from cloud_relay import pki
from edge_agent.selftest import check_broker
from scribelink import topics


def run(b, bundle, unit_id="unit-a", *, ca=None, port=None, probe=None):
    return check_broker("127.0.0.1", port or b.port, unit_id=unit_id,
                        ca_file=str(ca or b.pki["ca"]), cert_file=str(bundle.cert),
                        key_file=str(bundle.key),
                        probe_topic=probe or f"{topics.ROOT}/selftest/{unit_id}", timeout_s=5)


def test_broker_check_passes_and_proves_the_acl(broker):
    r = run(broker, broker.pki["units"]["unit-a"])
    assert r["ok"] and r["connack"] == "success" and r["acl"] == "confined", r


def test_broker_check_names_the_failure_and_the_fix(broker, tmp_path):
    # a broker without the ACL would let the probe through; the unit's own status topic
    # stands in for such a hole here (the ACL allows it), and the check must fail
    r = run(broker, broker.pki["units"]["unit-a"], probe="sl/v1/unit/unit-a/status")
    assert not r["ok"] and "outside its own topics" in r["problem"] and "ACL" in r["fix"], r

    # a certificate from another CA: the broker refuses the handshake
    rogue = pki.make_ca("Rogue CA")
    bundle = pki.write_identity(rogue, tmp_path / "rogue", "unit-a")
    r = run(broker, bundle)
    assert not r["ok"] and "clock" in r["fix"], r

    # the unit trusts another CA than the broker's: verification fails on the unit
    r = run(broker, broker.pki["units"]["unit-a"], ca=bundle.ca)
    assert not r["ok"] and "broker TLS failed" in r["problem"] and "clock" in r["fix"], r

    # nothing listening
    r = run(broker, broker.pki["units"]["unit-a"], port=broker_mod.free_port())
    assert not r["ok"] and "network" in r["fix"], r
