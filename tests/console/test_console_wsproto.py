"""The scribe WebSocket frames (tests/vectors/scribe_ws.json), held from both ends:
the console's one owner of them (js/wsproto.js) builds and checks exactly the vectors, in
headless Chromium with no relay; and the real relay speaks them (its frames have the
vectors' shapes, its refusals are the vectors' frames and close codes)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets
from clinic_admin import RelayClinic
from console_support import in_module
from unit_sim import MqttUnit, SimSession, now_us

from scribelink import envelope as env
from scribelink import trust

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "scribe_ws.json").read_text())
BUILDERS = {"hello": "hello", "cue_ack": "cueAck"}


def server(name: str) -> dict:
    return next(c["frame"] for c in VECTORS["server"] if c["name"].startswith(name))


def client(name: str) -> dict:
    return next(c for c in VECTORS["client"] if c["name"].startswith(name))


# ---------------------------------------------------------------------- the console's half


def test_builders_make_exactly_the_client_frames(module_page):
    cases = [{"fn": BUILDERS[c["build"]], "args": c["args"]} for c in VECTORS["client"]]
    got = in_module(module_page, "wsproto.js", """
        return arg.map((c) => JSON.parse(m.encode(m[c.fn](c.args))));""", cases)
    assert got == [c["frame"] for c in VECTORS["client"]]


def test_builders_refuse_bad_arguments(module_page):
    cases = [{"fn": BUILDERS[c["build"]], "args": c["args"]} for c in VECTORS["client_invalid"]]
    got = in_module(module_page, "wsproto.js", """
        return arg.map((c) => {
          try { return {built: m[c.fn](c.args)}; }
          catch (e) { return {error: e.constructor.name, message: e.message}; }
        });""", cases)
    for case, r in zip(VECTORS["client_invalid"], got, strict=True):
        assert r.get("error") == "WsProtoError", (case["name"], r)
        assert case["build"] in r["message"], (case["name"], r)  # says which frame


def test_checker_accepts_every_relay_frame_unchanged(module_page):
    texts = [json.dumps(c["frame"]) for c in VECTORS["server"]]
    got = in_module(module_page, "wsproto.js", "return arg.map((t) => m.parseText(t));", texts)
    assert got == [c["frame"] for c in VECTORS["server"]]


def test_checker_refuses_malformed_relay_frames(module_page):
    texts = [c["text"] for c in VECTORS["server_invalid"]]
    got = in_module(module_page, "wsproto.js", """
        return arg.map((t) => {
          try { return {parsed: m.parseText(t)}; }
          catch (e) { return {error: e.constructor.name, message: e.message}; }
        });""", texts)
    for case, r in zip(VECTORS["server_invalid"], got, strict=True):
        assert r.get("error") == "WsProtoError", (case["name"], r)
        assert r["message"], case["name"]


def test_binary_messages_split_into_cursors_and_envelopes(module_page):
    got = in_module(module_page, "wsproto.js", """
        const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, "0")).join("");
        const bytes = (h) => new Uint8Array(h.match(/../g).map((x) => parseInt(x, 16)));
        const ok = arg.ok.map((h) => m.parseBinary(bytes(h).buffer).map(
            (f) => ({cursor: f.cursor, envelope_hex: hex(f.envelope)})));
        const bad = arg.bad.map((h) => { try { m.parseBinary(bytes(h).buffer); return null; }
                                         catch (e) { return e.constructor.name; } });
        return {ok, bad};""", {"ok": [c["hex"] for c in VECTORS["binary"]],
                               "bad": [c["hex"] for c in VECTORS["binary_invalid"]]})
    assert got["ok"] == [c["frames"] for c in VECTORS["binary"]]
    assert got["bad"] == ["WsProtoError"] * len(VECTORS["binary_invalid"])


def test_close_codes_match(module_page):
    got = in_module(module_page, "wsproto.js", "return m.CLOSE;")
    codes = VECTORS["close_codes"]
    assert got == {"BAD_HELLO": codes["bad_hello"], "UNAUTHORIZED": codes["unauthorized"],
                   "FORBIDDEN": codes["forbidden"]}


# ---------------------------------------------------------------------- the relay's half


def shape(v):
    """A JSON value's shape: the same keys and value types, values aside."""
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [shape(v[0])] if v else []
    if isinstance(v, bool) or v is None:
        return type(v).__name__
    return "number" if isinstance(v, int | float) else type(v).__name__


def _in_thread(coro_fn):
    """Playwright's sync API may own this thread's event loop: run the client in another."""
    out: list = []

    def run():
        try:
            out.append(asyncio.run(coro_fn()))
        except BaseException as e:  # noqa: BLE001 - handed back to the test thread
            out.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    assert out, "the WebSocket client did not finish in 60 s"
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def test_the_relay_speaks_the_vectors(relay, broker):
    relay.add_user("scribe-ws", "scribe", "scribe-ws-password")
    clinic = RelayClinic(relay, auto_endorse=set())
    token = relay.token("scribe-ws")
    # a device of the scribe's, registered and endorsed by the clinic
    dev = clinic.clinic.device("scribe-ws")
    httpx.put(relay.url + "/api/me/device", headers={"Authorization": f"Bearer {token}"},
              timeout=10, json={"enc_key": trust.b64(env.public_key_raw(dev.enc)),
                                "sign_key": trust.b64(trust.ed25519_raw(dev.sign)),
                                "label": "test device", "kind": "person"}).raise_for_status()
    clinic.endorse(clinic.devices(pending=True)[0])
    for unit in ("unit-a", "unit-b"):
        clinic.call("POST", "/api/admin/units", json={"id": unit, "room": unit}).raise_for_status()
    clinic.assign("unit-a", ["scribe-ws"], "unit-a")
    unit = MqttUnit(broker, "unit-a", clinic.clinic)
    url = relay.url.replace("http", "ws", 1) + "/ws"
    codes = VECTORS["close_codes"]
    try:
        sim = SimSession(unit, np.zeros(16000, "<i2"), room="unit-a")
        sim.audio(0.2, pace=0)
        sealed = trust.seal_reply(sim.key, unit="unit-a", session_hex=sim.hex, cue_id=3,
                                  reply="got_it", at_us=now_us(), device_key=dev.sign)

        async def talk() -> dict:
            got: dict = {"binary": []}
            hello = {**client("hello from the stream start")["frame"], "token": token}
            async with websockets.connect(url) as ws:
                await ws.send(json.dumps(hello))
                got["welcome"] = json.loads(await ws.recv())
                await asyncio.to_thread(sim.status, "live")  # statuses are live, not replayed
                while not ({"unit_status", "session_open"} <= got.keys() and got["binary"]):
                    m = await asyncio.wait_for(ws.recv(), 10)
                    if isinstance(m, bytes):
                        got["binary"].append(m)
                    else:
                        f = json.loads(m)
                        got.setdefault(f["type"], f)
                ack = {**client("cue_ack")["frame"], "unit": "unit-a", "session": sim.hex,
                       "sealed": sealed}
                await ws.send(json.dumps(ack))
                # the reply comes back in the room's stream, for every device on the room
                while "cue_ack" not in got:
                    m = await asyncio.wait_for(ws.recv(), 10)
                    if isinstance(m, str):
                        f = json.loads(m)
                        got.setdefault(f["type"], f)
            for name, h in (("unauthorized", {**hello, "token": "forged"}),
                            ("forbidden", {**client("hello resuming")["frame"], "token": token,
                                           "units": ["unit-b"]})):
                async with websockets.connect(url) as ws:
                    await ws.send(json.dumps(h))
                    got[name] = json.loads(await ws.recv())
                    with pytest.raises(websockets.ConnectionClosed) as e:
                        await asyncio.wait_for(ws.recv(), 5)
                    got[name + "_code"] = e.value.rcvd.code
            async with websockets.connect(url) as ws:
                await ws.send("this is not a hello")
                with pytest.raises(websockets.ConnectionClosed) as e:
                    await asyncio.wait_for(ws.recv(), 5)
                got["bad_hello_code"] = e.value.rcvd.code
            return got

        got = _in_thread(talk)
        assert shape(got["welcome"]) == shape(server("welcome"))
        assert got["welcome"]["cursor"] == 0 and got["welcome"]["units"] == ["unit-a"]
        status = server("unit_status")
        assert got["unit_status"].keys() == status.keys() and got["unit_status"]["unit"] == "unit-a"
        assert isinstance(got["unit_status"]["status"], dict)
        assert shape(got["session_open"]) == shape(server("session_open"))
        assert shape(got["cue_ack"]) == shape(server("cue_ack"))
        assert got["cue_ack"]["sealed"] == sealed  # carried, unread
        for frame in got["binary"]:
            cursor = int.from_bytes(frame[:8], "big")
            assert cursor > 0
            env.parse_header(frame[8:])  # the rest is the sealed envelope, as stored
        assert got["unauthorized"] == server("error: unauthorized")
        assert got["unauthorized_code"] == codes["unauthorized"]
        assert got["forbidden"] == server("error: forbidden")  # its units: ["unit-b"]
        assert got["forbidden_code"] == codes["forbidden"]
        assert got["bad_hello_code"] == codes["bad_hello"]
        # the reply reaches the unit, which opens it and checks the device that signed it
        deadline = time.monotonic() + 10
        while not sim.replies() and time.monotonic() < deadline:
            time.sleep(0.05)
        (r,) = sim.replies()
        assert (r["cue_id"], r["reply"], r["scribe"], r["kind"]) == (3, "got_it", "scribe-ws",
                                                                      "person")
    finally:
        unit.close()
        clinic.stop()
