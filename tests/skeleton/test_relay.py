"""The relay (real process) between a real mosquitto and the real scribe client."""

from __future__ import annotations

import asyncio
import json
import signal

import numpy as np
import pytest
import websockets
from support import (
    UnitPublisher,
    client_device,
    jsonl,
    read_wav,
    relay_clinic,
    start_scribe_client,
    unit_session,
    wait_for,
)

from scribelink import messages as msgs
from scribelink import trust

# the same tests on both stores (tests/conftest.py `relay_store`)
pytestmark = pytest.mark.parametrize("relay_store", ["sqlite", "postgres"], indirect=True)


def run_async(coro_fn):
    """asyncio.run in a thread of its own: other tests (Playwright's sync API) may have
    left an event loop running in this one."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(lambda: asyncio.run(coro_fn())).result(60)


@pytest.fixture
def assigned(relay, tmp_path):
    """unit-a assigned to scribe s1; s1's real client is running and registered."""
    relay.add_user("s1", "scribe", "s1-password")
    relay.add_user("s2", "scribe", "s2-password")
    assert relay.api("POST", "/api/admin/units", json={"id": "unit-a", "room": "Exam A"}).is_success
    clinic = relay_clinic(relay)
    proc, d = start_scribe_client(tmp_path, relay, "s1", "--ack-cues")
    clinic.endorse("s1")
    assert clinic.assign("unit-a", ["s1"]).is_success
    yield proc, d
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)


def test_tampered_chunk_is_rejected_counted_and_the_stream_goes_on(broker, relay, assigned):
    proc, d = assigned
    unit = UnitPublisher(broker, "unit-a")
    # the relay hands the unit the authority's assignment and the endorsement of s1's device
    wait_for(lambda: any(json.loads(c)["type"] == "assignment" for c in unit.control),
             what="assignment on the unit's control topic")
    a = msgs.Assignment.from_dict([json.loads(c) for c in unit.control
                                   if json.loads(c)["type"] == "assignment"][-1])
    pub = relay_clinic(relay).clinic.public
    assert trust.verify_assignment(pub, a.assignment, "unit-a")["scribes"] == ["s1"]
    device = client_device(d, "s1")
    assert list(trust.endorsed_devices(pub, list(a.devices))) == [device[1]]
    s = unit_session(relay, "unit-a", [device])
    pcm = [np.full(640, i * 100, dtype=np.int16) for i in range(10)]
    frames = [s.seal_audio(p, 1 + i * 40_000)[1] for i, p in enumerate(pcm)]
    unit.publish("session", msgs.dumps(s.open_message()))
    bad = bytearray(frames[3])
    bad[-30] ^= 0x01
    for i, f in enumerate(frames):
        if i == 3:
            unit.publish("audio", bytes(bad))  # corrupted copy first...
        unit.publish("audio", f)  # ...then the genuine chunk
    unit.publish("audio", frames[5])  # a redelivery: the relay drops it (same bytes)
    unit.publish("session", msgs.dumps(s.close_message(999, "input_complete")))
    wait_for(lambda: (d / "events.jsonl").exists() and any(
        e["type"] == "session_complete" for e in jsonl(d / "events.jsonl")), what="complete")
    errors = [e for e in jsonl(d / "events.jsonl") if e["type"] == "error"]
    assert [e["error"] for e in errors] == ["tampered"]
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    assert np.array_equal(read_wav(d / "out.wav")[:, 0], np.concatenate(pcm))
    unit.close()


def test_relay_refuses_a_frame_naming_another_unit(broker, relay, assigned):
    proc, d = assigned
    unit = UnitPublisher(broker, "unit-a")
    s = unit_session(relay, "unit-b", [client_device(d, "s1")])
    _, frame = s.seal_audio(np.zeros(640, dtype=np.int16), 1)
    unit.publish("audio", frame)  # unit-b's header on unit-a's topic
    unit.publish("audio", b"garbage that is not an envelope, long enough to parse" * 2)
    log = relay.dir / "relay.log"
    # the two frames are handled in order, but each is only known handled once its log
    # line is there: wait for both before looking at the store
    wait_for(lambda: "header names unit" in log.read_text()
             and "not a Scribelink envelope" in log.read_text(), what="both rejections logged")
    # nothing stored, on whichever store the relay runs
    assert relay.api("GET", "/api/admin/health").json()["archive"]["items"] == 0
    unit.close()


def test_second_scribe_cannot_list_or_open_a_room_not_assigned(relay, assigned):
    r = relay.api("GET", "/api/units/unit-a/sessions", uid="s2")
    assert r.status_code == 403
    assert relay.api("GET", "/api/me/units", uid="s2").json() == []
    assert [u["id"] for u in relay.api("GET", "/api/me/units", uid="s1").json()] == ["unit-a"]
    assert relay.api("GET", "/api/admin/units", uid="s2").status_code == 403
    token = relay.token("s2")

    async def ws_try():
        url = relay.url.replace("http", "ws") + "/ws"
        async with websockets.connect(url) as sock:
            await sock.send(json.dumps({"type": "hello", "token": token, "cursor": 0,
                                        "units": ["unit-a"]}))
            first = json.loads(await sock.recv())
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await sock.recv()
            return first, closed.value.rcvd.code

    first, code = run_async(ws_try)
    assert first == {"type": "error", "error": "forbidden", "units": ["unit-a"]}
    assert code == 4403

    async def ws_bad_token():
        url = relay.url.replace("http", "ws") + "/ws"
        async with websockets.connect(url) as sock:
            await sock.send(json.dumps({"type": "hello", "token": "forged", "cursor": 0}))
            first = json.loads(await sock.recv())
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await sock.recv()
            return first, closed.value.rcvd.code

    assert run_async(ws_bad_token) == ({"type": "error", "error": "unauthorized"}, 4401)
    audit = relay.api("GET", "/api/admin/audit").json()
    assert any(e["action"] == "ws_denied" and e["actor"] == "s2" for e in audit)
