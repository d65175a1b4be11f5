"""The relay's sealed archive: pages of a session for replay and seeking, only for the
scribes it was sealed for, and gone once retention runs out (the lifespan purge loop)."""

from __future__ import annotations

import base64
import sqlite3
import time

import httpx
from clinic_admin import RelayClinic
from support import random_multichannel
from unit_sim import MqttUnit, SimSession

from cloud_relay.console_api import room_state
from scribelink import envelope as env
from scribelink import trust


def scribe_device(relay, clinic: RelayClinic, uid: str):
    """A scribe with one device the clinic endorsed: (its X25519 key, auth headers)."""
    relay.add_user(uid, "scribe", f"{uid}-password")
    dev = clinic.clinic.device(uid)
    h = {"Authorization": f"Bearer {relay.token(uid)}"}
    httpx.put(relay.url + "/api/me/device", headers=h, timeout=10,
              json={"enc_key": trust.b64(env.public_key_raw(dev.enc)),
                    "sign_key": trust.b64(trust.ed25519_raw(dev.sign)), "label": "test",
                    "kind": "person"}).raise_for_status()
    clinic.endorse(next(d for d in clinic.devices(pending=True) if d["user"] == uid))
    return dev.enc, h


def restart_with(relay, **settings) -> None:
    relay.stop()
    with open(relay.config, "a") as f:
        f.writelines(f"{k} = {v}\n" for k, v in settings.items())
    relay.start()


def test_archive_pages_open_with_the_scribes_key_and_retention_purges(relay, broker):
    # retention of 5 s, checked every 0.5 s: long enough to read a session, short to test
    restart_with(relay, retention_days=5 / 86400, purge_interval_s=0.5)
    clinic = RelayClinic(relay, auto_endorse=set())
    key, h = scribe_device(relay, clinic, "scribe-arc")
    clinic.call("POST", "/api/admin/units", json={"id": "unit-a", "room": "Exam 1"})
    clinic.assign("unit-a", ["scribe-arc"], "Exam 1")
    unit = MqttUnit(broker, "unit-a", clinic.clinic)
    pcm = random_multichannel(3, channels=1, seed=3)[:, 0]
    sim = SimSession(unit, pcm, room="Exam 1")
    sim.audio(2.0, pace=0)
    sim.cue()
    sim.close()
    try:
        deadline = time.monotonic() + 10
        page = None
        while time.monotonic() < deadline:
            r = httpx.get(f"{relay.url}/api/sessions/{sim.hex}/items?from_seq=10&limit=20",
                          headers=h, timeout=10)
            if r.status_code == 200 and len(r.json()["audio"]) == 20 and r.json()["closed_us"]:
                page = r.json()
                break
            time.sleep(0.1)
        assert page is not None, "the session never reached the archive"
        assert [a["seq"] for a in page["audio"]] == list(range(10, 30))
        assert page["next_seq"] == 30
        wrapped = next(x for x in page["session_open"]["recipients"]
                       if x["key_id"] == env.key_id(env.public_key_raw(key)))
        session_key = env.unwrap_session_key(base64.b64decode(wrapped["wrapped_key"]), key,
                                             "unit-a", bytes.fromhex(sim.hex))
        for a in page["audio"]:
            hdr, body = env.open_envelope(base64.b64decode(a["frame"]), session_key)
            assert body == pcm[hdr.seq * 640:(hdr.seq + 1) * 640].tobytes()
        kinds = [env.parse_header(base64.b64decode(e["frame"]))[0].type for e in page["events"]]
        assert kinds == [env.TYPE_EVENT] * 3  # session_start, cue, session_end
        assert [m["type"] for m in page["meta"]] == ["session_close"]
        listed = httpx.get(f"{relay.url}/api/console/units/unit-a/sessions", headers=h).json()
        assert [s["session"] for s in listed] == [sim.hex]
        assert listed[0]["audio_chunks"] == 50 and listed[0]["events"] == 3
        # the shift's list says the same, and which devices the unit sealed it to
        shift = httpx.get(f"{relay.url}/api/console/sessions?unit=unit-a", headers=h).json()
        assert [(x["session"], x["audio_chunks"], x["events"]) for x in shift] == [
            (sim.hex, 50, 3)]
        assert shift[0]["devices"] == sorted(sim.session.devices)

        # retention: the closed session goes, stream rows and all, and the purge is audited
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if httpx.get(f"{relay.url}/api/sessions/{sim.hex}/items", headers=h).status_code == 404:
                break
            time.sleep(0.25)
        else:
            raise AssertionError("retention did not purge the session")
        assert httpx.get(f"{relay.url}/api/console/units/unit-a/sessions", headers=h).json() == []
        db = sqlite3.connect(str(relay.dir / "data" / "relay.db"))
        assert db.execute("SELECT COUNT(*) FROM stream WHERE session=?", (sim.hex,)
                          ).fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM stream_segments WHERE session=?", (sim.hex,)
                          ).fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0
        db.close()
        audit = relay.api("GET", "/api/admin/audit?limit=500").json()
        assert any(a["action"] == "archive_purged" for a in audit)
        health = relay.api("GET", "/api/admin/health").json()
        assert health["archive"]["retention_days"] == 5 / 86400
    finally:
        unit.close()
        clinic.stop()


def test_console_is_served_with_a_strict_policy(relay):
    r = httpx.get(relay.url + "/console", follow_redirects=True, timeout=10)
    assert r.status_code == 200 and "Scribelink" in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    js = httpx.get(relay.url + "/console/js/crypto.js", timeout=10)
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]


def test_room_state_from_unit_status():
    st = {"online": True, "link": "up", "capture": "live", "spool": {"seconds": 0.2}}
    assert room_state(st, 1.0)["state"] == "live"
    assert room_state({**st, "capture": "paused"}, 1.0)["state"] == "paused"
    assert room_state({**st, "spool": {"seconds": 30}}, 1.0) == {"state": "catching_up",
                                                                 "buffered_s": 30.0}
    off = room_state({**st, "online": False, "link": "lost", "spool": {"seconds": 12}}, 1.0)
    assert off["state"] == "offline" and off["buffered_s"] == 12
    assert room_state(st, 60.0)["state"] == "offline"  # silent for a minute
    assert room_state({**st, "capture": "idle"}, 1.0)["state"] == "idle"
    assert room_state(None, None)["state"] == "offline"
