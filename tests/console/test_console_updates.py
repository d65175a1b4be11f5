"""Fleet updates as clinic IT sees them, against the real system: the unit agent (this
checkout's, as a process) with a pinned release key, mosquitto, the relay with its mTLS
unit listener, and the admin view in Chromium. Bad releases -- downgrading, signed by
another key, unsigned, tampered -- are offered through the relay; the unit refuses each
with its reason, and the reasons show in the admin view. A diagnostics bundle asked for
in the admin view comes back sealed to the admin's key, opens only with it, and holds no
key material."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from console_support import open_console, poll
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from release_support import make_release, make_update_relay, rewrite
from support import wait_for
from trustkit import Clinic

import scribelink
from scribelink import diagnostics
from scribelink import envelope as env
from scribelink import release as rel

RUNNING = scribelink.__version__  # what the checkout's agent reports as its version


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    from support import make_broker

    tmp = tmp_path_factory.mktemp("updates-console")
    broker = make_broker(tmp, ["unit-a"])
    relay, unit_port = make_update_relay(tmp, broker)
    key = Ed25519PrivateKey.generate()
    pub = tmp / "release.pub"
    pub.write_text(rel.public_key_text(key))
    p = broker.pki
    # what enrolment leaves on the unit (its signing key, bound under the clinic's authority)
    clinic = Clinic()
    keys = clinic.unit("unit-a", "Exam 1").write(tmp / "keys", clinic.authority)
    conf = tmp / "agent.toml"
    conf.write_text(
        f'unit_id = "unit-a"\nstate_dir = "{tmp / "state"}"\n'
        '[capture]\ndevice = "null"\nchannels = 4\n[dsp]\nmode = "off"\n'
        f'[spool]\ndir = "{tmp / "spool"}"\n'
        f'[broker]\nurl = "{broker.url}"\nca_file = "{p["ca"]}"\n'
        f'cert_file = "{p["units"]["unit-a"].cert}"\nkey_file = "{p["units"]["unit-a"].key}"\n'
        f'[updates]\nrelay_url = "https://127.0.0.1:{unit_port}"\n'
        f'release_public_key_file = "{pub}"\ninstaller_state_dir = "{tmp / "installer"}"\n'
        "[keys]\n" + "".join(f'{k} = "{v}"\n' for k, v in keys.items()))
    log = open(tmp / "agent.log", "wb")  # noqa: SIM115 (the agent process writes it)
    agent = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(conf)],
                             stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    relay.api("POST", "/api/admin/units", json={"id": "unit-a", "room": "Exam 1"})
    wait_for(lambda: (relay.api("GET", "/api/admin/units").json()[0].get("status") or {})
             .get("version") == RUNNING, 30, "the unit's status with its version")

    class System:
        pass

    s = System()
    s.tmp, s.broker, s.relay, s.key, s.agent, s.unit_key = tmp, broker, relay, key, agent, \
        p["units"]["unit-a"].key
    yield s
    agent.terminate()
    agent.wait(15)
    relay.stop()
    broker.stop()


def upload_and_offer(s, tar) -> str:
    r = httpx.post(s.relay.url + "/api/admin/releases", content=tar.read_bytes(), timeout=30,
                   headers={"Authorization": f"Bearer {s.relay.token('admin')}"})
    assert r.status_code == 200, r.text
    r = s.relay.api("POST", "/api/admin/updates/offers",
                    json={"release": r.json()["id"], "units": ["unit-a"]})
    assert r.status_code == 200, r.text
    return r.json()["offer_id"]


def refusal(s, offer_id: str) -> dict:
    def got():
        reports = s.relay.api("GET", "/api/admin/updates").json()["reports"]
        return next((r for r in reports if r["offer_id"] == offer_id and r["state"] in (
            "refused", "failed")), None)

    return wait_for(got, 30, f"the unit's answer to offer {offer_id}")


def test_bad_releases_are_refused_with_their_reason_and_shown_to_the_admin(system, chromium,
                                                                            tmp_path):
    s = system
    good = make_release(tmp_path, s.key, version="9.0.0", name="good.tar")
    doc = rel.read_manifest_doc(good)
    cases = {
        "downgrade": make_release(tmp_path, s.key, version="0.0.1", name="old.tar"),
        "wrong_key": make_release(tmp_path, Ed25519PrivateKey.generate(), version="9.0.1",
                                  name="other-key.tar"),
        "unsigned": rewrite(good, tmp_path / "unsigned.tar",
                            doc={"manifest": doc["manifest"]}),
        "tampered": rewrite(good, tmp_path / "tampered.tar",
                            replace={"firmware/main.py": b"import os; os.system('evil')\n"}),
    }
    reasons = {}
    for code, tar in cases.items():
        got = refusal(s, upload_and_offer(s, tar))
        assert (got["state"], got["code"]) == ("refused", code), got
        reasons[code] = got["reason"]
    assert "older than" in reasons["downgrade"] and "permit" in reasons["downgrade"]
    assert "not by the release key this unit pinned" in reasons["wrong_key"]
    assert "not signed" in reasons["unsigned"]
    assert "firmware/main.py does not match the signed manifest" in reasons["tampered"]
    # nothing was handed to an installer, and the unit still runs what it ran
    assert not (s.tmp / "state/updates/request.json").exists()
    audit = s.relay.api("GET", "/api/admin/audit?limit=200").json()
    assert sum(a["action"] == "update_refused" for a in audit) >= 4

    ctx = chromium.new_context(viewport={"width": 1440, "height": 1200})
    try:
        page = open_console(ctx, s.relay.url, "admin", "admin-password")
        page.wait_for_selector('#updates-fleet tr[data-unit="unit-a"]')
        poll(page, "() => document.querySelectorAll('#updates-reports tr[data-report=\"refused\"]')"
                   ".length >= 4", 15)
        reports = page.inner_text("#updates-reports")
        for code, reason in reasons.items():
            assert f"[{code}]" in reports and reason[:40] in reports, (code, reports)
        row = page.inner_text('#updates-fleet tr[data-unit="unit-a"]')
        assert RUNNING in row and "[tampered]" in row  # the last refusal, with its code
    finally:
        ctx.close()


def test_diagnostics_come_back_sealed_to_the_admin_and_hold_no_keys(system, chromium):
    s = system
    admin_key = X25519PrivateKey.generate()
    public = base64.b64encode(env.public_key_raw(admin_key)).decode()
    ctx = chromium.new_context(viewport={"width": 1440, "height": 1200})
    try:
        page = open_console(ctx, s.relay.url, "admin", "admin-password")
        page.wait_for_selector('#updates-fleet button[data-diag="unit-a"]')
        page.fill("#diag-key", public)
        page.click('#updates-fleet button[data-diag="unit-a"]')
        req = wait_for(lambda: next((d for d in s.relay.api("GET", "/api/admin/updates").json()
                                     ["diagnostics"] if d["uploaded_us"]), None), 30,
                       "the sealed bundle from the unit")
    finally:
        ctx.close()
    doc = s.relay.api("GET", f"/api/admin/diagnostics/{req['id']}").json()
    sealed = base64.b64decode(doc["bundle_b64"])
    bundle = diagnostics.open_bundle(sealed, admin_key, unit_id="unit-a",
                                     request_id=req["id"])
    assert bundle["unit"] == "unit-a" and bundle["versions"]["scribelink"] == RUNNING
    assert bundle["status"]["version"] == RUNNING and bundle["spool"]["records"] >= 0
    assert any("event=agent_start" in line for line in bundle["logs"])
    # the relay cannot open it, nor pass it off as another request's
    with pytest.raises(diagnostics.BundleError):
        diagnostics.open_bundle(sealed, X25519PrivateKey.generate(), unit_id="unit-a",
                                request_id=req["id"])
    with pytest.raises(diagnostics.BundleError):
        diagnostics.open_bundle(sealed, admin_key, unit_id="unit-a", request_id="other")
    text = json.dumps(bundle)
    unit_key_b64 = "".join(Path(s.unit_key).read_text().splitlines()[1:-1])
    assert "PRIVATE KEY" not in text and unit_key_b64[:40] not in text
    assert "session" not in bundle["status"]  # no session ids: what a visit was is PHI-adjacent
    # and the admin's tool opens the file the view saves
    f = s.tmp / "bundle.json"
    f.write_text(json.dumps(doc))
    k = s.tmp / "admin.key"
    from cryptography.hazmat.primitives import serialization

    k.write_bytes(admin_key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    from support import ROOT

    out = subprocess.run([sys.executable, str(ROOT / "scripts/diagnostics"), "open", "--key",
                          str(k), str(f)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["unit"] == "unit-a"
