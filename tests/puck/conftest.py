"""Fixtures: the real firmware on the MicroPython unix port behind a real pty
(scripts/puck-sim), and the real agent-side edge_agent.puck.Puck opening it."""


import pytest
from puck_harness import Puck, PuckSim, Recorder, wait_until


@pytest.fixture
def sim(tmp_path):
    s = PuckSim(tmp_path / "scribelink-puck")
    yield s
    s.close()


@pytest.fixture
def agent(sim):
    rec = Recorder()
    puck = Puck(
        str(sim.link),
        on_cue=rec.on_cue,
        on_privacy_toggle=rec.on_privacy_toggle,
        on_presence_hold=rec.on_presence_hold,
        on_connection=rec.on_connection,
        on_consent=rec.on_consent,
    )
    puck.start()
    wait_until(lambda: puck.connected, 10, "agent connected to the puck")
    puck.show("live")
    sim.wait_for(lambda m: m.get("led") == "live", 5, "led live")
    yield puck, rec
    puck.stop()
