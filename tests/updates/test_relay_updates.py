"""The relay's side of fleet updates (cloud_relay.api.fleet, cloud_relay.unit_https) against
a real mosquitto and the relay as a process: releases uploaded by an admin, offered to a
unit on its control topic, fetched over mutual TLS with the unit's certificate (resumed
after a cut), reports shown in the fleet view."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time

import httpx
import pytest
from release_support import make_release, make_update_relay
from support import TcpProxy, UnitPublisher, wait_for

from cloud_relay.api.fleet import rollout_bucket, select_units
from edge_agent.relay_https import FetchError, RelayHttps
from scribelink import fleet
from scribelink import release as rel


@pytest.fixture
def relay(tmp_path, broker):
    r, unit_port = make_update_relay(tmp_path, broker)
    r.unit_port = unit_port
    yield r
    r.stop()


def unit_client(broker, unit_id: str, port: int) -> RelayHttps:
    ident = broker.pki["units"][unit_id]
    return RelayHttps(f"https://127.0.0.1:{port}", ca_file=str(broker.pki["ca"]),
                      cert_file=str(ident.cert), key_file=str(ident.key))


def upload(relay, tar) -> dict:
    r = httpx.post(relay.url + "/api/admin/releases", content=tar.read_bytes(), timeout=30,
                   headers={"Authorization": f"Bearer {relay.token('admin')}",
                            "Content-Type": "application/x-tar"})
    assert r.status_code == 200, r.text
    return r.json()


def test_unit_routes_need_a_units_client_certificate(relay, broker, tmp_path):
    base = f"https://127.0.0.1:{relay.unit_port}"
    ctx = ssl.create_default_context(cafile=str(broker.pki["ca"]))
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(base + "/unit/v1/releases/" + "0" * 64, verify=ctx, timeout=5)
    # the relay's own client certificate is a clinic certificate, but not a unit's
    ctx.load_cert_chain(str(broker.pki["relay"].cert), str(broker.pki["relay"].key))
    r = httpx.get(base + "/unit/v1/releases/" + "0" * 64, verify=ctx, timeout=5)
    assert r.status_code == 403 and "not a unit" in r.text
    # and the unit routes do not exist on the scribes' and admins' listener
    assert httpx.get(relay.url + "/unit/v1/releases/" + "0" * 64).status_code == 404


def test_offer_reaches_the_unit_which_fetches_over_mtls_and_resumes_a_cut(
        relay, broker, tmp_path, release_key):
    key = release_key[0]
    padded = make_padded_release(tmp_path, key)  # big enough to cut mid-download
    info = upload(relay, padded)
    assert info["version"] == "3.2.0" and info["signer"] == rel.key_id(key)
    unit = UnitPublisher(broker, "unit-a")
    try:
        relay.api("POST", "/api/admin/units", json={"id": "unit-a", "room": "Exam 1"})
        relay.api("POST", "/api/admin/units", json={"id": "unit-b", "room": "Exam 2"})
        r = relay.api("POST", "/api/admin/updates/offers",
                      json={"release": info["id"], "units": ["unit-a"]})
        assert r.status_code == 200 and r.json()["units"] == ["unit-a"], r.text
        offer = wait_for(lambda: next((fleet.parse_control(json.loads(m)) for m in unit.control
                                       if json.loads(m).get("type") == "release_offer"), None),
                         what="the offer on unit-a's control topic")
    finally:
        unit.close()
    assert offer.version == "3.2.0" and offer.release_id == info["id"]
    assert offer.size == padded.stat().st_size
    proxy = TcpProxy(relay.unit_port)
    try:
        client = unit_client(broker, "unit-a", proxy.port)
        dest = tmp_path / "got.tar"

        def cut_halfway(n: int) -> None:
            if n > offer.size // 2:
                proxy.cut()

        with pytest.raises(FetchError, match="resumes"):
            client.download(offer.path, dest, size=offer.size, sha256=offer.release_id,
                            progress=cut_halfway)
        part = dest.with_name(dest.name + ".part")
        assert offer.size // 2 < part.stat().st_size < offer.size
        proxy.restore()
        client.download(offer.path, dest, size=offer.size, sha256=offer.release_id)
    finally:
        proxy.close()
    assert dest.read_bytes() == padded.read_bytes()
    assert rel.verify_release(dest, key.public_key()).version == "3.2.0"
    audit = relay.api("GET", "/api/admin/audit?limit=100").json()
    resumed = [a for a in audit if a["action"] == "release_fetch_resumed"]
    assert resumed and resumed[0]["target"] == info["id"][:12]
    # unit-b was not offered it
    with pytest.raises(FetchError, match="404"):
        unit_client(broker, "unit-b", relay.unit_port).download(
            offer.path, tmp_path / "b.tar", size=offer.size, sha256=offer.release_id)


def make_padded_release(tmp_path, key):
    """A release with a 6 MB wheel, so a download takes many reads."""
    files = {}
    src = tmp_path / "padded"
    for name, data in (("wheels/scribelink-3.2.0-py3-none-any.whl", b"PK" + b"x" * 6_000_000),
                       ("config/agent.toml", b"")):
        p = src / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        files[name] = p
    body = rel.manifest_body(version="3.2.0", hardware=[rel.hardware_kind()],
                             files=[rel.file_entry(n, p) for n, p in files.items()],
                             requirement="scribelink[unit]==3.2.0",
                             created_us=time.time_ns() // 1000)
    out = tmp_path / "padded.tar"
    rel.write_release(out, rel.sign_manifest(body, key), files)
    return out


def test_a_units_refusal_reaches_the_fleet_view(relay, broker, tmp_path, release_key):
    info = upload(relay, make_release(tmp_path, release_key[0], version="4.0.0"))
    relay.api("POST", "/api/admin/units", json={"id": "unit-a", "room": "Exam 1"})
    offer = relay.api("POST", "/api/admin/updates/offers",
                      json={"release": info["id"], "rooms": ["Exam 1"]}).json()
    client = unit_client(broker, "unit-a", relay.unit_port)
    client.post_json("/unit/v1/update-reports", fleet.UpdateReport(
        state="refused", offer_id=offer["offer_id"], version_from="4.1.0", version_to="4.0.0",
        code="downgrade", reason="release 4.0.0 is older than the 4.1.0 this unit runs",
        at_us=1).to_dict())
    view = relay.api("GET", "/api/admin/updates").json()
    a = next(u for u in view["units"] if u["id"] == "unit-a")
    assert a["last_refusal"]["code"] == "downgrade"
    assert "older than" in a["last_refusal"]["reason"]
    assert view["offers"][0]["target"] == {"rooms": ["Exam 1"]}
    audit = relay.api("GET", "/api/admin/audit?limit=50").json()
    assert any(x["action"] == "update_refused" and x["actor"] == "unit-a" for x in audit)
    # a unit reports only as itself: the route takes the id from the certificate
    with pytest.raises(FetchError, match="400"):
        client.post_json("/unit/v1/update-reports", {"state": "hacked", "at_us": 1})


def test_uploads_that_are_not_releases_are_refused(relay, tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 64)
    r = httpx.post(relay.url + "/api/admin/releases", content=junk.read_bytes(),
                   headers={"Authorization": f"Bearer {relay.token('admin')}"})
    assert r.status_code == 400 and "not_a_release" in r.text


def test_staged_rollout_is_stable_and_only_grows():
    units = [{"id": f"unit-{i:03d}", "room": f"Exam {i % 7}"} for i in range(400)]
    rid = "ab" * 32
    ten = select_units(units, release_id=rid, percent=10)
    fifty = select_units(units, release_id=rid, percent=50)
    assert set(ten) < set(fifty) and set(fifty) < {u["id"] for u in units}
    assert 20 <= len(ten) <= 60 and 160 <= len(fifty) <= 240
    assert select_units(units, release_id=rid, percent=100) == sorted(u["id"] for u in units)
    other = select_units(units, release_id="cd" * 32, percent=10)
    assert other != ten  # each release picks its own first units
    assert select_units(units, release_id=rid, rooms=["Exam 3"]) == sorted(
        u["id"] for u in units if u["room"] == "Exam 3")
    assert select_units(units, release_id=rid, unit_ids=["unit-001", "nope"]) == ["unit-001"]
    assert all(0 <= rollout_bucket(rid, u["id"]) < 100 for u in units)


def test_scripts_release_upload_puts_a_release_on_the_relay(relay, tmp_path, release_key):
    from support import ROOT

    tar = make_release(tmp_path, release_key[0], version="5.0.0")
    pw = tmp_path / "admin.pw"
    pw.write_text("admin-password")
    r = subprocess.run([sys.executable, str(ROOT / "scripts/release"), "upload", str(tar),
                        "--relay", relay.url, "--user", "admin", "--password-file", str(pw)],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert "uploaded 5.0.0" in r.stdout
    assert [x["version"] for x in relay.api("GET", "/api/admin/releases").json()] == ["5.0.0"]
    pw.write_text("wrong-password")
    r = subprocess.run([sys.executable, str(ROOT / "scripts/release"), "upload", str(tar),
                        "--relay", relay.url, "--user", "admin", "--password-file", str(pw)],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 1 and "refused the sign-in" in r.stderr
