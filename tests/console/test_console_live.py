"""The console end to end: a real mosquitto (mTLS), the relay, the unit agent capturing
through ALSA's file plugin, the Python reference scribe client, and headless Chromium.

One system per module, its tests in order: live PCM, seek, cues (latency and the ack
reaching the unit), replay before a cue, access control over HTTP and WebSocket, a blind
archive, and screenshots of the room and admin views.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets
from clinic_admin import RelayClinic
from console_support import open_console, poll, screenshot
from support import (
    PY,
    ROOT,
    archived_frames,
    make_broker,
    make_relay,
    random_multichannel,
    read_wav,
    write_wav,
)
from unit_sim import MqttUnit, SimSession, now_us

from scribelink import envelope as env
from scribelink import trust

AGENT_SECONDS = 16.0
CUES = 20  # cues raised and acknowledged in the live cue test (fewer on a slow machine)
SCRIBE = ("scribe-alex", "scribe-alex-pass-1")  # the browser
REFERENCE = ("scribe-ref", "scribe-ref-pass-1")  # the Python reference client
OTHER = ("scribe-bo", "scribe-bo-pass-1")  # assigned to nothing at first


def wait_for(fn, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _run(coro_fn):
    try:
        return asyncio.run(coro_fn())
    except BaseException as e:  # noqa: BLE001 - handed back to the test thread
        return e


class System:
    """Broker, relay and the clinic's admin (its authority registered, assignments signed,
    devices endorsed as they register), two units, three scribes."""

    def __init__(self, tmp: Path, agent_seconds: float = AGENT_SECONDS, *,
                 codec: str = "pcm_s16le", bitrate: int = 24000, input=None,
                 auto_endorse: set[str] | None = None) -> None:
        self.tmp = tmp
        self.codec, self.bitrate = codec, bitrate  # PCM here: the page must equal the input
        self.broker = make_broker(tmp, ["unit-a", "unit-b"])
        self.relay = make_relay(tmp, self.broker)
        self.procs: list[subprocess.Popen] = []
        for uid, pw in (SCRIBE, REFERENCE, OTHER):
            self.relay.add_user(uid, "scribe", pw)
        self.clinic = RelayClinic(self.relay, auto_endorse=auto_endorse)
        self.rooms = {"unit-a": "Exam 1", "unit-b": "Exam 2"}
        for unit, room in self.rooms.items():
            self.clinic.call("POST", "/api/admin/units", json={"id": unit, "room": room}
                             ).raise_for_status()
        self.assign("unit-a", [SCRIBE[0], REFERENCE[0]])
        self.assign("unit-b", [SCRIBE[0]])
        self.input = random_multichannel(agent_seconds, channels=4, seed=7) if input is None \
            else input
        self.sim_pcm = random_multichannel(40, channels=1, seed=11)[:, 0]
        self.agent_session: str | None = None
        self.sim: SimSession | None = None
        self.cue_report: dict = {}

    def assign(self, unit: str, scribes: list[str]) -> None:
        self.clinic.assign(unit, scribes, self.rooms.get(unit))

    def devices(self, user: str) -> list[dict]:
        """The user's devices the clinic has endorsed."""
        return self.clinic.endorsed_devices_of(user)

    def make_sim_unit(self, unit: str) -> MqttUnit:
        return MqttUnit(self.broker, unit, self.clinic.clinic, room=self.rooms[unit])

    def start_reference_client(self, *extra: str) -> Path:
        d = self.tmp / "ref"
        d.mkdir(exist_ok=True)
        (d / "pw").write_text(REFERENCE[1])
        (d / "authority.pub").write_text(self.clinic.public_b64 + "\n")
        log = open(d / "client.log", "ab")  # noqa: SIM115 - the child writes it
        self.procs.append(subprocess.Popen(
            [PY, "-m", "cloud_relay.scribe_client", "--relay", self.relay.url, "--user",
             REFERENCE[0], "--password-file", str(d / "pw"), "--key", str(d / "scribe.key"),
             "--authority", str(d / "authority.pub"), "--robot", "--label", "reference client",
             "--wav", str(d / "scribe.wav"), "--events", str(d / "events.jsonl"),
             "--exit-when-complete", *extra], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT))
        return d

    def start_agent(self, puck_link: Path | None = None, *, consent_required: bool = False,
                    name: str = "unit-a") -> subprocess.Popen:
        d = self.tmp / name
        d.mkdir(exist_ok=True)
        wav = d / "input.wav"
        write_wav(wav, self.input)
        raw = d / "input.raw"
        raw.write_bytes(self.input.astype("<i2").tobytes())
        alsa = d / "asound.conf"
        system = Path("/usr/share/alsa/alsa.conf")
        alsa.write_text((f"<{system}>\n" if system.exists() else "")
                        + "pcm.scribelink_test {\n  type file\n  slave.pcm \"null\"\n"
                        f"  file \"/dev/null\"\n  infile \"{raw}\"\n  format \"raw\"\n}}\n")
        p = self.broker.pki
        # what enrolment leaves on the unit: the pinned authority, its signing key, the binding
        keys = self.clinic.clinic.unit("unit-a", self.rooms["unit-a"]).write(
            d / "keys", self.clinic.clinic.authority)
        conf = d / "agent.toml"
        conf.write_text(
            f'unit_id = "unit-a"\nstate_dir = "{d / "state"}"\n'
            f'[capture]\ndevice = "scribelink_test"\nchannels = 4\nperiod_frames = 320\n'
            f'[file_input]\npace_realtime = true\nspeed = 1.0\n'
            f'stop_after_frames = {len(self.input)}\nresume_input = true\nexit_when_done = true\n'
            f'[dsp]\nmode = "off"\n[session]\nchunk_ms = 40\n'
            + ("consent_required = true\n" if consent_required else "")
            + f'[codec]\ncodec = "{self.codec}"\nbitrate = {self.bitrate}\n'
            f'[spool]\ndir = "{d / "spool"}"\n'
            f'[broker]\nurl = "{self.broker.url}"\nca_file = "{p["ca"]}"\n'
            f'cert_file = "{p["units"]["unit-a"].cert}"\nkey_file = "{p["units"]["unit-a"].key}"\n'
            "[keys]\n" + "".join(f'{k} = "{v}"\n' for k, v in keys.items())
            + (f'[puck]\nport = "{puck_link}"\n' if puck_link else ""))
        log = open(d / "agent.log", "ab")  # noqa: SIM115 - the child writes it
        proc = subprocess.Popen([PY, "-m", "edge_agent", "run", "--config", str(conf)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "ALSA_CONFIG_PATH": str(alsa)})
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        self.clinic.stop()
        self.relay.stop()
        self.broker.stop()


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    # 20 s: after the reload and the relay restart (slow on a loaded machine) enough live
    # audio is left for the steady-state latency sample
    s = System(tmp_path_factory.mktemp("console"), agent_seconds=20.0)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def scribe_page(system, chromium):
    ctx = chromium.new_context(viewport={"width": 1440, "height": 900})
    page = open_console(ctx, system.relay.url, *SCRIBE)
    yield page
    ctx.close()


def js(page, expr: str, arg=None):
    return page.evaluate(expr, arg)


def played(page, n: int) -> dict | None:
    """The hash of the first n samples the last replay fed the worklet, once it has n."""
    r = js(page, "(n) => window.__probe.playbackHash(n)", n)
    return r if r and r["samples"] >= n else None


# ---------------------------------------------------------------------- live audio


def test_live_audio_in_the_page_equals_what_the_unit_sealed(system, scribe_page):
    page = scribe_page
    # the browser registered its device on sign-in and the clinic endorsed it; the reference
    # client (a recorder) registers its own
    wait_for(lambda: system.devices(SCRIBE[0]), 10, "the browser's device endorsed")
    ref_dir = system.start_reference_client()
    wait_for(lambda: system.devices(REFERENCE[0]), 15, "the reference client's device")
    agent = system.start_agent()

    # one click on the room, one on play: audio starts
    page.click('.room-item[data-unit="unit-a"]')
    def agent_session():
        if agent.poll() not in (None, 0):
            log = (system.tmp / "unit-a" / "agent.log").read_text()[-3000:]
            raise AssertionError(f"the agent exited with {agent.returncode}:\n{log}")
        return [s for s in js(page, "window.__probe.sessions()")
                if s["unit"] == "unit-a" and s["maxSeq"] >= 0]

    sess = wait_for(agent_session, 30, "the agent's session in the page")[0]
    system.agent_session = sess["session"]
    page.click("#play")
    wait_for(lambda: js(page, "window.__probe.playback()")["mode"] == "live", 5, "live")
    played = wait_for(lambda: (js(page, "window.__probe.playback()")["level"]["peak"] > 0
                               and js(page, "window.__probe.playback()")), 10,
                      "audio out of the worklet")
    assert played["stats"]["buffered"] < 16000 * 0.5  # live, not a growing backlog
    # latency is measured in steady state: here, before the reload, and after the outage
    js(page, "() => window.__probe.resetLatency()")

    # a reload mid-session (same browser, same key): the page backfills what it missed
    # from the sealed archive and follows live from the stream head
    time.sleep(3)
    lat_first = js(page, "window.__probe.audioLatency()")  # the reload clears the probe
    page.reload()
    poll(page, "() => window.__probe && window.__probe.ready()", 15)
    # the whole session's decoded audio is read after its close (CI once found it evicted)
    js(page, "() => window.__probe.holdDecoded()")
    page.click('.room-item[data-unit="unit-a"]')
    page.click("#play")

    # the relay restarts mid-session: the page reconnects and resumes from its cursor
    time.sleep(1.5)
    system.relay.stop()
    poll(page, "() => !window.__probe.linkUp()", 5)
    system.relay.start()
    poll(page, "() => window.__probe.linkUp()", 15)
    # latency is measured once the outage has drained: what the unit held through it arrives
    # late by design (a fixed second was too short on a loaded machine: p95 505 ms, from
    # the last of the held chunks), so wait for ten fresh live chunks in a row
    js(page, "() => window.__probe.resetLatency()")

    def drained() -> bool:
        tail = js(page, "(k) => window.__probe.latencyTail(k)", 10)
        return agent.poll() is not None or (len(tail) == 10 and max(tail) < 300)

    wait_for(drained, AGENT_SECONDS, "the outage drained")
    js(page, "() => window.__probe.resetLatency()")
    t_reset = time.monotonic()

    wait_for(lambda: agent.poll() is not None, AGENT_SECONDS + 64, "the agent to finish")
    live_after_s = time.monotonic() - t_reset  # how long the unit still streamed
    assert agent.returncode == 0
    info = wait_for(lambda: [s for s in js(page, "window.__probe.sessions()")
                             if s["session"] == system.agent_session and s["closed"]], 20,
                    "session_close in the page")[0]
    wait_for(lambda: js(page, "(s) => window.__probe.sessionHash(s)",
                        system.agent_session)["contiguous"], 20, "every chunk in the page")
    page_pcm = js(page, "(s) => window.__probe.sessionPcm(s)", system.agent_session)
    got = np.frombuffer(base64.b64decode(page_pcm["b64"]), "<i2")

    # the reference receiver wrote the same samples
    wait_for(lambda: system.procs[0].poll() is not None, 30, "the reference client to finish")
    ref = read_wav(ref_dir / "scribe.wav")[:, 0]
    assert hashlib.sha256(got.tobytes()).hexdigest() == hashlib.sha256(ref.tobytes()).hexdigest()
    # ... which is the input's reference channel, sample for sample (dsp off)
    ch0 = system.input[:, 0]
    assert len(got) == len(ch0), (len(got), len(ch0), info)
    assert np.array_equal(got, ch0)
    mix = next(s for s in js(page, "window.__probe.sessions()")
               if s["session"] == system.agent_session)
    assert 0 < mix["live"] < mix["chunks"], mix  # part backfilled, part live
    counters = js(page, "window.__probe.counters()")
    assert counters["tampered"] == counters["malformed"] == 0
    lat = js(page, "window.__probe.audioLatency()")
    print("audio capture->decoded in page, before the reload:", json.dumps(lat_first),
          f"after the relay's restart ({live_after_s:.1f} s of stream left):", json.dumps(lat))
    (system.tmp / "audio_latency.json").write_text(json.dumps([lat_first, lat]))
    # 3 s of 40 ms chunks is 75; the budget (120 ms) is for benchmarks
    assert lat_first["n"] > 50 and lat_first["p95_ms"] < 500, lat_first
    # on a slow machine the unit's 16 s can be nearly over when the relay is back (the CI
    # once read none): live audio after the restart is asked for when it streamed 4 s more
    if live_after_s > 4.0:
        assert lat["n"] > 0 and lat["p95_ms"] < 500, (lat, live_after_s)


def test_seeking_plays_the_requested_stretch(system, scribe_page):
    page = scribe_page
    ch0 = system.input[:, 0]
    for t in (3.0, 7.52, 0.0):
        js(page, "(t) => window.__probe.seekTo(t)", t)
        n = 3 * 16000 if t < 8 else int((AGENT_SECONDS - 8) * 16000)
        out = wait_for(lambda n=n: played(page, n), 15, f"seek to {t}")
        start = out["startSample"]
        assert start == (round(t * 1000) // 40) * 640  # chunk-aligned, at the requested time
        want = hashlib.sha256(ch0[start:start + n].tobytes()).hexdigest()
        assert out["sha256"] == want, f"seek to {t}s played the wrong stretch"


# ---------------------------------------------------------------------- cues


def sim_script(system: System, sim: SimSession, marks: dict) -> None:
    """8 s of audio, a 2 s privacy pause, then 16 s of audio with 10 chunks lost (declared)."""
    sim.status("live")
    sim.audio(8.0)
    marks["pause_seq"], marks["pause_us"] = sim.event("privacy_pause", audio_seq=200)
    sim.status("paused")
    time.sleep(2.0)
    marks["resume_seq"], marks["resume_us"] = sim.event("privacy_resume", audio_seq=200)
    sim.status("live")
    resume_clock = now_us()
    sim.audio(7.0, clock_us=resume_clock, skip_publish=set(range(300, 310)))
    sim.gap(300, 309, "spool_full")
    sim.status("live", spool_seconds=0.0)
    sim.audio(9.0)
    marks["audio_done"] = time.time()


def test_cues_reach_the_page_within_budget_and_acks_reach_the_unit(system, scribe_page):
    page = scribe_page
    unit = system.make_sim_unit("unit-b")
    sim = SimSession(unit, system.sim_pcm, room="Exam 2")
    system.sim = sim
    marks: dict = {}
    runner = threading.Thread(target=sim_script, args=(system, sim, marks), daemon=True)
    runner.start()
    page.click('.room-item[data-unit="unit-b"]')
    wait_for(lambda: any(s["session"] == sim.hex for s in
                         js(page, "window.__probe.sessions()")), 10, "sim session")
    page.click("#play")

    time.sleep(10.6)  # into the second stretch of audio, after the pause
    cues = []
    # up to 20 cues, but none sent after 19.5 s of session time: the one left open (below)
    # must come before 23 s, so that its replay starts before the pause. A slow machine
    # takes 0.7 s a cue (page round trips), a quiet one 0.2 s
    while len(cues) < CUES and (now_us() - sim.started_us) / 1e6 < 19.5:
        cue_id, _seq = sim.cue()
        key = f"{sim.hex}:{cue_id}"
        cue = wait_for(lambda k=key: next((c for c in js(page, "window.__probe.cues()")
                                           if c["key"] == k and c["shown_ms"]), None),
                       5, f"cue {cue_id} in the page")
        # the banner shows it until acknowledged
        assert page.is_visible("#cue-banner")
        assert "Cue from Exam 2" in page.inner_text("#cue-banner")
        assert js(page, "window.__probe.lastChime") > 0
        page.keyboard.press("a")
        cues.append(cue)
        time.sleep(0.1)
    # the one left open is replayed later through the privacy pause (at 8-10 s): its 15 s
    # before must start after 0 s and before the pause, however fast the loop above ran
    wait_for(lambda: (now_us() - sim.started_us) / 1e6 >= 15.5 or None, 10,
             "session time 15.5 s", interval=0.05)
    last_id, _ = sim.cue()  # left open: it stays on screen (and in the screenshot)
    last_key = f"{sim.hex}:{last_id}"
    wait_for(lambda: any(c["key"] == last_key for c in js(page, "window.__probe.cues()")),
             5, "the last cue")

    # replies reach the unit's control topic (what lights "seen" on the puck), sealed under
    # the session key and signed by the browser's device: the unit opens and checks them
    assert len(cues) >= 8, f"only {len(cues)} cues before 19.5 s of session time"
    system.cues_sent = len(cues)
    wait_for(lambda: len(sim.replies()) >= len(cues), 10, "replies")
    replies = sim.replies()
    assert sorted(r["cue_id"] for r in replies) == list(range(1, len(cues) + 1))
    assert all(r["reply"] == "seen" and r["scribe"] == SCRIBE[0] and r["kind"] == "person"
               for r in replies)
    audit = system.relay.api("GET", "/api/admin/audit?limit=500").json()
    acks = sum(1 for a in audit if a["action"] == "cue_ack" and a["target"] == "unit-b")
    assert acks >= len(cues)

    # latency: the relay's receive time of each cue's event vs the alert on screen
    items = system.relay.api("GET", f"/api/sessions/{sim.hex}/items?limit=1",
                             uid=SCRIBE[0]).json()
    received = {e["seq"]: e["received_us"] for e in items["events"]}
    lat_ms = sorted(c["shown_ms"] - received[c["seq"]] / 1000 for c in cues)
    paint_ms = sorted(c["paint_ms"] - received[c["seq"]] / 1000 for c in cues if c["paint_ms"])
    p95 = lat_ms[int(0.95 * (len(lat_ms) - 1))]
    acked_ms = {c["cue_id"]: c["acked_ms"] for c in js(page, "window.__probe.cues()")
                if c.get("acked_ms")}
    arrived = {trust.open_reply(sim.key, unit="unit-b", session_hex=sim.hex,
                                sealed=m["sealed"])["cue_id"]: at
               for m, at in zip(unit.control, unit.control_at, strict=True)
               if m.get("type") == "cue_ack"}
    ack_ms = sorted(at * 1000 - acked_ms[c] for c, at in arrived.items() if c in acked_ms)
    system.cue_report = {"n": len(lat_ms), "p50_ms": lat_ms[len(lat_ms) // 2], "p95_ms": p95,
                         "max_ms": lat_ms[-1],
                         "paint_p95_ms": paint_ms[int(0.95 * (len(paint_ms) - 1))]
                         if paint_ms else None,
                         "ack_to_unit_p95_ms": ack_ms[int(0.95 * (len(ack_ms) - 1))]}
    print("cue latency relay->alert:", json.dumps(system.cue_report))
    (system.tmp / "cue_latency.json").write_text(json.dumps(system.cue_report))

    # the room view, live, with a cue waiting: the screenshot
    page.wait_for_timeout(600)
    screenshot(page, "room.png")
    page.keyboard.press("t")  # the light palette, for bright rooms
    page.wait_for_timeout(150)
    screenshot(page, "room-light.png")
    page.keyboard.press("t")
    wait_for(lambda: marks.get("audio_done") or None, 40, "the scripted audio", interval=0.2)
    system.sim_marks = marks
    system.sim_unit = unit
    system.last_cue_key = last_key
    # last, so that the tests after this one (which go on with this session) still run.
    # The budget (p95 <= 100 ms, ARCHITECTURE.md) is a benchmark target, not a timed test:
    # this file run alone measures it for docs/benchmarks.md (bench:console; p95 6 ms).
    # In the full suite, three workers on two cores starve the page now and then (p50 6 ms,
    # p95 345 ms seen once), so here every cue must show within a second: a cue nobody can
    # miss, and far under any fallback to polling.
    assert lat_ms[-1] <= 1000, system.cue_report
    assert min(lat_ms) > -5  # same clock: an alert cannot precede the relay's receipt


def test_replay_before_a_cue_plays_that_stretch(system, scribe_page):
    page = scribe_page
    sim = system.sim
    cue = next(c for c in js(page, "window.__probe.cues()")
               if c["key"] == system.last_cue_key)
    # memory is bounded: drop the decoded audio, so the replay must fetch it, still sealed,
    # from the relay's archive and open it again here
    dropped = js(page, "window.__probe.evict({liveS: 0, behindS: 0, aheadS: 0})")
    info = next(s for s in js(page, "window.__probe.sessions()")
                if s["session"] == sim.hex)
    assert dropped > 400 and info["decoded"] <= 2, (dropped, info)
    page.click("#banner-replay")  # "replay the 15 s before this cue"
    n = 15 * 16000
    out = wait_for(lambda: played(page, n), 30, "15 s replayed")
    # where the page should start: 15 s of session time before the cue, through the pause
    t0 = cue["t_s"] - 15
    pause_t = (system.sim_marks["pause_us"] - sim.started_us) / 1e6
    assert t0 < pause_t, "the script puts the replay start before the privacy pause"
    start_seq = int(t0 / 0.04)
    assert out["startSample"] == start_seq * 640
    lost = set(range(300, 310))
    chunks = [sim.pcm[q * 640:(q + 1) * 640] for q in range(start_seq, start_seq + 400)
              if q not in lost]
    want = np.concatenate(chunks)[:n]
    assert out["sha256"] == hashlib.sha256(want.tobytes()).hexdigest()
    page.keyboard.press("a")  # acknowledge the last one too
    wait_for(lambda: page.is_hidden("#cue-banner"), 5, "the banner to clear")
    wait_for(lambda: len(system.sim.replies()) >= system.cues_sent + 1, 10, "the last reply")
    system.sim.close()


def test_room_states_follow_the_unit(system, scribe_page):
    page = scribe_page
    sim = SimSession(system.sim_unit, system.sim_pcm, room="Exam 2")
    row = '.room-item[data-unit="unit-b"]'
    try:
        for status, state, text in (
            ({"capture": "live"}, "live", "Live"),
            ({"capture": "paused"}, "paused", "Privacy pause"),
            ({"capture": "live", "spool_seconds": 42.0}, "catching_up", "Catching up · 42 s to go"),
            ({"capture": "live", "online": False, "link": "lost", "spool_seconds": 3.0}, "offline",
             "Offline"),
            ({"capture": "idle"}, "idle", "Idle"),
        ):
            sim.status(**status)
            page.wait_for_selector(f'{row}[data-state="{state}"]', timeout=5000)
            assert text in page.inner_text(row)
    finally:
        sim.status("idle")
        sim.close()


# ---------------------------------------------------------------------- access control


def test_a_scribe_cannot_list_or_open_rooms_not_assigned(system):
    r = system.relay
    sess = system.agent_session
    assert sess
    other = {"Authorization": f"Bearer {r.token(OTHER[0])}"}

    def g(path):
        return httpx.get(r.url + path, headers=other, timeout=10)

    assert g("/api/console/rooms").json()["units"] == []
    assert g("/api/me/units").json() == []
    assert g("/api/console/units/unit-a/sessions").status_code == 403
    assert g("/api/units/unit-a/sessions").status_code == 403
    assert g(f"/api/sessions/{sess}/items").status_code == 403
    assert g(f"/api/sessions/{sess}/items?from_seq=10&events=false").status_code == 403
    # admins run the clinic; they do not get sealed audio either
    assert r.api("GET", f"/api/sessions/{sess}/items").status_code == 403
    # assigned now, but the session was sealed before: still not theirs
    system.assign("unit-a", [SCRIBE[0], REFERENCE[0], OTHER[0]])
    try:
        assert g("/api/console/units/unit-a/sessions").json() == []
        resp = g(f"/api/sessions/{sess}/items")
        assert resp.status_code == 403 and "not sealed for you" in resp.text
    finally:
        system.assign("unit-a", [SCRIBE[0], REFERENCE[0]])

    async def ws_checks():
        url = r.url.replace("http", "ws", 1) + "/ws"
        tok = r.token(OTHER[0])
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"type": "hello", "token": tok, "cursor": 0,
                                      "units": ["unit-a"]}))
            msg = json.loads(await ws.recv())
            assert msg["type"] == "error" and msg["error"] == "forbidden"
            with pytest.raises(websockets.ConnectionClosed) as e:
                await asyncio.wait_for(ws.recv(), 5)
            assert e.value.rcvd.code == 4403
        async with websockets.connect(url) as ws:  # whole history from cursor 0: nothing
            await ws.send(json.dumps({"type": "hello", "token": tok, "cursor": 0}))
            welcome = json.loads(await ws.recv())
            assert welcome["type"] == "welcome" and welcome["units"] == []
            got = []
            try:
                while True:
                    got.append(await asyncio.wait_for(ws.recv(), 1.5))
            except TimeoutError:
                pass
            assert not [m for m in got if isinstance(m, bytes)]
            assert not [m for m in got if json.loads(m).get("type") != "unit_status"]
            # a reply for someone else's room goes nowhere (it could not open anyway)
            await ws.send(json.dumps({"type": "cue_ack", "unit": "unit-b", "session": "00" * 16,
                                      "sealed": base64.b64encode(os.urandom(60)).decode()}))
            await asyncio.sleep(0.5)
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"type": "hello", "token": "forged", "cursor": 0}))
            assert json.loads(await ws.recv())["error"] == "unauthorized"

    # Playwright's sync API owns this thread's event loop: run the client in another
    result: list = []
    t = threading.Thread(target=lambda: result.append(_run(ws_checks)))
    t.start()
    t.join(60)
    if result and isinstance(result[0], BaseException):
        raise result[0]
    assert result == [None]
    audit = r.api("GET", "/api/admin/audit?limit=500").json()
    acts = {(a["actor"], a["action"]) for a in audit}
    assert (OTHER[0], "ws_denied") in acts and (OTHER[0], "archive_denied") in acts
    assert (OTHER[0], "cue_ack_denied") in acts
    # the other scribe's reply never reached unit-b: only the loop's and the last cue's
    assert len(system.sim_unit.acks()) == system.cues_sent + 1


# ---------------------------------------------------------------------- a blind archive


def test_the_relay_holds_no_plaintext_and_no_key(system):
    data = Path(system.relay.dir / "data")
    blobs = b"".join(p.read_bytes() for p in data.iterdir() if p.is_file())
    assert len(blobs) > 500_000  # the sealed archive really is there
    pcm_a = system.input[:, 0].astype("<i2").tobytes()
    pcm_b = system.sim_pcm.astype("<i2").tobytes()
    for pcm in (pcm_a, pcm_b):
        for off in range(0, len(pcm) - 64, len(pcm) // 50):
            window = pcm[off:off + 32]
            if len(set(window)) > 8:  # skip near-silence, which could match by chance
                assert window not in blobs, "plaintext audio in the relay's files"
    # sealed event bodies ({"v":1,"kind":...}); cue ids in clear acks are routing metadata
    for marker in (b'"kind":"cue"', b'"kind":"privacy_pause"', b'"kind":"session_start"',
                   b'"kind":"session_end"'):
        assert marker not in blobs, f"plaintext event {marker!r} in the relay's files"
    key = system.sim.key
    for form in (key, key.hex().encode(), base64.b64encode(key)):
        assert form not in blobs, "a session key in the relay's files"
    from cryptography.hazmat.primitives import serialization

    ref_key = serialization.load_pem_private_key(
        (system.tmp / "ref" / "scribe.key").read_bytes(), password=None)
    raw = ref_key.private_bytes_raw()
    assert raw not in blobs and base64.b64encode(raw) not in blobs
    # the database has sealed envelopes, each of which opens only with the session key
    rows = archived_frames(data, session=system.sim.hex)[:5]
    assert rows
    for _, _, payload, _ in rows:
        env.parse_header(bytes(payload))
        env.open_envelope(bytes(payload), key)  # authentic ...
        with pytest.raises(env.OpenError):
            env.open_envelope(bytes(payload), b"\x00" * 32)  # ... and useless without it


# ---------------------------------------------------------------------- admin view


def test_admin_view_shows_health_and_audit(system, chromium):
    """Clinic IT's view, as far as the scribe's shift touches it: health and the audit of the
    replies. (Assignments are signed by the clinic authority in the admin's browser: the
    admin view's own tests hold that.)"""
    ctx = chromium.new_context(viewport={"width": 1440, "height": 900})
    # a room in session while clinic IT looks (unit-a's agent has finished and said so)
    sim = SimSession(system.sim_unit, system.sim_pcm, room="Exam 2")
    sim.status("live", spool_seconds=0.3)
    try:
        page = open_console(ctx, system.relay.url, "admin", "admin-password")
        page.click('#admin-tabs button[data-tab="audit"]')
        page.wait_for_selector("#audit tbody tr")
        assert "cue ack" in page.inner_text("#admin")
        page.click('#admin-tabs button[data-tab="units"]')
        page.wait_for_selector('#units tr[data-unit="unit-b"]')
        assert "Exam 2" in page.inner_text("#admin")
        row = page.inner_text('#units tr[data-unit="unit-b"]')
        assert "unit-b" in row
        wait_for(lambda: "Live" in page.inner_text('#units tr[data-unit="unit-b"]'), 10,
                 "the room live in the admin view")
        page.wait_for_timeout(500)
        screenshot(page, "admin.png")
    finally:
        ctx.close()
        sim.close()
