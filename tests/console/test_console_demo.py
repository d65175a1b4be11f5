"""`scripts/demo` prints where the console is and how to sign in, and the demo room is live
in the console once the demo scribe signs in there."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

from console_support import open_console, poll
from support import PY, ROOT, random_multichannel, write_wav


def test_demo_prints_the_console_and_its_room_is_live(tmp_path, context):
    wav = tmp_path / "in.wav"
    write_wav(wav, random_multichannel(40, channels=4, seed=5))
    proc = subprocess.Popen(
        [PY, str(ROOT / "scripts" / "demo"), "--headless", "--seconds", "40", "--dsp", "off",
         "--input", str(wav), "--record-dir", str(tmp_path / "rec"), "--timeout", "30"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    lines: list[str] = []
    try:
        url = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and url is None:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"scribe console: (http://\S+/console/)\s+sign in as scribe-demo / "
                          r"demo-scribe-pass\s+\(clinic admin: admin / demo-admin-pass\)", line)
            if m:
                url = m.group(1)
        assert url, "".join(lines)
        page = open_console(context, url.removesuffix("/console/"), "scribe-demo",
                            "demo-scribe-pass")
        page.click('.room-item[data-unit="unit-exam-1"]')
        # signing in here registered this browser as a device; the demo's clinic admin approves
        # it, and the unit adds it to the running session (no new session)
        poll(page, """() => window.__probe.sessions().some(
            s => s.unit === 'unit-exam-1' && s.chunks > 25)""", 30)
        page.click("#play")
        poll(page, "() => window.__probe.playback().mode === 'live'")
        page.wait_for_selector('.room-item[data-unit="unit-exam-1"][data-state="live"]',
                               timeout=10000)
        assert page.inner_text("#room-state") == "Live"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
