"""An Opus room in the console, end to end: the real agent encoding recorded speech with
Opus (the production codec) through mosquitto and the relay to headless Chromium, which
decodes it with WebCodecs. It plays live, a reload fills the session in from the sealed
archive, and a scripted Opus unit's cue, declared gap and late (backfilled) chunks behave
as they do with PCM. PCM's sample-exact checks are in test_console_live.py."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from console_support import open_console, poll
from speech_material import delay_removed, recorded_speech
from support import read_wav
from test_console_live import AGENT_SECONDS, REFERENCE, SCRIBE, System, js, wait_for
from unit_sim import SimSession

from scribelink import codec as codecs


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    speech = recorded_speech(AGENT_SECONDS)
    mics = np.stack([np.roll(speech, k) for k in (0, 3, 7, 11)], axis=1)
    s = System(tmp_path_factory.mktemp("console-opus"), codec="opus", bitrate=24000,
               input=mics)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def scribe_page(system, chromium):
    ctx = chromium.new_context(viewport={"width": 1440, "height": 900})
    page = open_console(ctx, system.relay.url, *SCRIBE)
    yield page
    ctx.close()


def test_an_opus_room_plays_live_and_fills_in_from_the_archive(system, scribe_page):
    from pesq import pesq

    page = scribe_page
    wait_for(lambda: system.devices(SCRIBE[0]), 10, "the browser's device endorsed")
    ref_dir = system.start_reference_client()
    wait_for(lambda: system.devices(REFERENCE[0]), 15, "the reference client's device")
    agent = system.start_agent()
    page.click('.room-item[data-unit="unit-a"]')
    sess = wait_for(lambda: [s for s in js(page, "window.__probe.sessions()")
                             if s["unit"] == "unit-a" and s["maxSeq"] >= 0], 30,
                    "the agent's session in the page")[0]
    page.click("#play")
    wait_for(lambda: js(page, "window.__probe.playback()")["level"]["peak"] > 0, 10,
             "Opus audio out of the worklet")
    time.sleep(1.0)
    js(page, "() => window.__probe.resetLatency()")
    time.sleep(4.0)
    lat = js(page, "window.__probe.audioLatency()")
    # a reload mid-session: what it missed comes from the archive, sealed, and is decoded
    page.reload()
    poll(page, "() => window.__probe && window.__probe.ready()", 15)
    # the whole session's decoded audio is read after its close (CI once found it evicted)
    js(page, "() => window.__probe.holdDecoded()")
    page.click('.room-item[data-unit="unit-a"]')
    page.click("#play")
    wait_for(lambda: agent.poll() is not None, AGENT_SECONDS + 60, "the agent to finish")
    assert agent.returncode == 0
    try:
        wait_for(lambda: js(page, "(s) => window.__probe.sessionHash(s)",
                            sess["session"])["contiguous"], 60, "every chunk in the page")
    except AssertionError:
        info = next(s for s in js(page, "window.__probe.sessions()")
                    if s["session"] == sess["session"])
        raise AssertionError(f"not every chunk in the page: {info}") from None
    got = np.frombuffer(base64.b64decode(
        js(page, "(s) => window.__probe.sessionPcm(s)", sess["session"])["b64"]), "<i2")
    ch0 = system.input[:, 0]
    assert len(got) == len(ch0)
    ref, dec, lag = delay_removed(ch0, got)
    assert lag == 104 + 7  # Opus' look-ahead, and the page's 48 -> 16 kHz filter
    score = pesq(16000, ref, dec, "wb")
    mix = next(s for s in js(page, "window.__probe.sessions()") if s["session"] == sess["session"])
    assert 0 < mix["live"] < mix["chunks"], mix  # part live, part from the archive
    counters = js(page, "window.__probe.counters()")
    assert counters["malformed"] == counters["tampered"] == 0
    # the reference client heard the same session
    wait_for(lambda: system.procs[0].poll() is not None, 30, "the reference client")
    ref_wav = read_wav(ref_dir / "scribe.wav")[:, 0]
    assert len(ref_wav) == len(ch0)
    print("opus console:", json.dumps({"pesq_page": round(score, 2), "latency": lat}))
    out = Path(os.environ.get("SCRIBELINK_BENCH_OUT") or system.tmp)  # scripts/bench codec
    (out / "opus_audio_latency.json").write_text(json.dumps(lat))
    assert score >= 3.5, score
    assert lat["n"] > 50 and lat["p95_ms"] < 500, lat  # the budget is for benchmarks


def test_cues_gaps_and_backfill_in_an_opus_session(system, scribe_page):
    page = scribe_page
    unit = system.make_sim_unit("unit-b")
    speech = recorded_speech(20)
    sim = SimSession(unit, speech, room="Exam 2",
                     codec=codecs.CodecSettings(codec="opus", bitrate=24000))
    page.click('.room-item[data-unit="unit-b"]')
    sim.status("live")
    sim.audio(2.0, pace=0)
    wait_for(lambda: any(s["session"] == sim.hex for s in js(page, "window.__probe.sessions()")),
             10, "the Opus sim session")
    page.click("#play")
    sim.audio(2.0)  # seqs 50..99, live
    cue_id, _ = sim.cue()
    key = f"{sim.hex}:{cue_id}"
    wait_for(lambda: next((c for c in js(page, "window.__probe.cues()") if c["key"] == key),
                          None), 5, "the cue in the page")
    # 100..109 lost and declared; 110..114 held back (a unit catching up) and sent late
    sim.audio(0.4, skip_publish=set(range(100, 110)))
    sim.gap(100, 109, "spool_full")
    held = sim.audio(0.2, skip_publish=set(range(110, 115)))
    sim.audio(3.5)  # 115.. live
    for seq in held:  # late: the page draws them as backfill
        sim.republish(seq)
    sim.close()
    info = wait_for(lambda: next((s for s in js(page, "window.__probe.sessions()")
                                  if s["session"] == sim.hex and s["closed"]
                                  and s["decoded"] == s["maxSeq"] + 1 - 10), None), 15,
                    "the Opus session whole but for its gap")
    assert info["lost"] == 10
    stored = js(page, """(s) => { const x = window.__probe.app.desk.receiver.sessions.get(s);
        return [...x.chunks.entries()].map(([q, c]) => [q, c.via, c.pcm.length]); }""", sim.hex)
    via = {q: v for q, v, _ in stored}
    assert all(n == 640 for _, _, n in stored)
    assert {via[q] for q in held} == {"backfill"}
    assert not any(100 <= q <= 109 for q in via)
    counters = js(page, "window.__probe.counters()")
    assert counters["malformed"] == 0
    unit.close()
