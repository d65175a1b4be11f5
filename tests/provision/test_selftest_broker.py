"""The self-test's broker check against the real mosquitto (mTLS, CN-keyed ACL): it passes
with a clinic-CA certificate and names the cause and the fix when it cannot."""

from __future__ import annotations

from cloud_relay import broker as broker_mod
from cloud_relay import pki
from edge_agent.selftest import check_broker
from scribelink import topics


def run(b, bundle, unit_id="unit-a", *, ca=None, port=None, probe=None, clock_ok=True):
    return check_broker("127.0.0.1", port or b.port, unit_id=unit_id,
                        ca_file=str(ca or b.pki["ca"]), cert_file=str(bundle.cert),
                        key_file=str(bundle.key),
                        probe_topic=probe or f"{topics.ROOT}/selftest/{unit_id}", timeout_s=5,
                        clock_ok=clock_ok)


def test_broker_check_passes_and_proves_the_acl(broker):
    r = run(broker, broker.pki["units"]["unit-a"])
    assert r["ok"] and r["status"] == "pass", r
    assert r["connack"] == "success" and r["acl"] == "confined", r


def test_broker_check_names_the_failure_and_the_fix(broker, tmp_path):
    # a broker without the ACL would let the probe through; the unit's own status topic
    # stands in for such a hole here (the ACL allows it), and the check must fail
    r = run(broker, broker.pki["units"]["unit-a"], probe="sl/v1/unit/unit-a/status")
    assert not r["ok"] and "outside its own topics" in r["problem"] and "ACL" in r["fix"], r

    # a certificate from another CA: the broker refuses it. The clock can only be to blame
    # when the clock row did not pass
    rogue = pki.make_ca("Rogue CA")
    bundle = pki.write_identity(rogue, tmp_path / "rogue", "unit-a")
    r = run(broker, bundle)
    assert r["status"] == "fail" and "clinic CA" in r["fix"] and "clock" not in r["fix"], r
    r = run(broker, bundle, clock_ok=False)
    assert "clock" in r["fix"], r

    # the unit trusts another CA than the broker's: verification fails on the unit, and
    # that is not the clock's doing either
    r = run(broker, broker.pki["units"]["unit-a"], ca=bundle.ca)
    assert not r["ok"] and "broker TLS failed" in r["problem"], r
    assert "does not trust" in r["fix"] and "clock" not in r["fix"], r

    # nothing listening: a connection refused is named as such, never blamed on the clock
    port = broker_mod.free_port()
    for clock_ok in (True, False):
        r = run(broker, broker.pki["units"]["unit-a"], port=port, clock_ok=clock_ok)
        assert not r["ok"] and "connection refused" in r["problem"], r
        assert f"127.0.0.1:{port}" in r["fix"] and "clock" not in r["fix"], r
