"""The core's update rules (edge_agent.core with edge_agent.update_gate): a release goes in
between encounters, never during one, the next encounter waits for it only so long, and a
release on trial records only once it is healthy. No process, no sleep."""

from __future__ import annotations

import itertools

import numpy as np
from trustkit import Clinic

from edge_agent import core as c
from edge_agent import update_gate as g

RATE = 16000


class Unit:
    def __init__(self, **settings) -> None:
        counter = itertools.count(1)
        self.clinic = Clinic()
        self.core = c.UnitCore(
            c.CoreSettings(unit_id="unit-t", channels=1, dsp_mode="off", version="1.0.0",
                           **settings),
            signer=self.clinic.unit("unit-t").signer, authority=self.clinic.public,
            rng=lambda n: next(counter).to_bytes(n, "big"))
        self.wall_us = 1_700_000_000_000_000
        self.mono = 1000.0
        self.effects: list = []

    def now(self) -> c.Now:
        return c.Now(self.wall_us, self.mono)

    def feed(self, event) -> list:
        out = self.core.handle(event, self.now())
        self.effects.extend(out)
        return out

    def tick(self, seconds: float = 0.1, *, spool_records: int = 0, minute: int = 720) -> list:
        self.wall_us += int(seconds * 1e6)
        self.mono += seconds
        return self.feed(c.Tick(c.Health(link_up=True, spool_empty=spool_records == 0,
                                         spool={"records": spool_records},
                                         minute_of_day=minute)))

    def assign(self) -> None:
        self.feed(c.AssignmentReceived(self.clinic.assignment(
            "unit-t", [self.clinic.device("s1")], room="Exam 9")))

    def audio(self, seconds: float) -> None:
        pcm = np.zeros((320, 1), np.int16)
        for _ in range(int(seconds * RATE / 320)):
            self.feed(c.AudioCaptured(pcm))

    def installs(self) -> int:
        return sum(isinstance(e, c.InstallUpdate) for e in self.effects)


def in_session(**settings) -> Unit:
    u = Unit(**settings)
    u.feed(c.Start())
    u.assign()
    u.tick()
    assert u.core.session is not None
    u.feed(c.CaptureOpened())
    u.audio(1.0)
    return u


def test_a_ready_release_waits_for_the_encounter_to_end_then_installs_before_the_next():
    u = in_session()
    u.feed(c.UpdatePhase(g.READY))
    for _ in range(50):
        u.tick()
    assert u.installs() == 0 and u.core.session is not None  # the visit goes on
    u.feed(c.SessionControlReceived("close"))  # the physician ends the encounter
    out = u.tick()
    assert any(isinstance(e, c.InstallUpdate) for e in out)
    assert any(isinstance(e, c.CloseCapture) for e in out)  # device freed for the new release
    for _ in range(100):
        u.tick()
    assert u.core.session is None and u.installs() == 1  # held, asked once


def test_unacked_audio_holds_the_install_and_the_next_session():
    u = in_session()
    u.feed(c.UpdatePhase(g.READY))
    u.feed(c.SessionControlReceived("close"))
    u.tick(spool_records=12)
    assert u.installs() == 0 and u.core.session is None
    assert "12 spooled records" in u.core.gate.reason
    u.tick(spool_records=0)
    assert u.installs() == 1


def test_the_hold_gives_up_and_recording_goes_on_then_retries_at_the_next_boundary():
    u = in_session(update_policy=g.Policy(hold_max_s=30))
    u.feed(c.UpdatePhase(g.FETCHING))  # slow download
    u.feed(c.SessionControlReceived("close"))
    u.tick()
    first = u.core.session
    assert first is None
    for _ in range(29):
        u.tick(1.0)
    assert u.core.session is None
    u.tick(1.5)
    assert u.core.session is not None  # 30 s later the next encounter records anyway
    u.feed(c.UpdatePhase(g.READY))
    u.tick()
    assert u.installs() == 0  # not during it
    u.feed(c.SessionControlReceived("close"))
    u.tick()
    assert u.installs() == 1 and u.core.session is None


def test_outside_the_maintenance_window_nothing_waits():
    u = in_session(update_policy=g.Policy(window=g.parse_window("22:00-05:00")))
    u.feed(c.UpdatePhase(g.READY))
    u.feed(c.SessionControlReceived("close"))
    u.tick(minute=14 * 60)
    assert u.installs() == 0 and u.core.session is not None
    u.feed(c.SessionControlReceived("close"))
    u.tick(minute=23 * 60)
    assert u.installs() == 1 and u.core.session is None


def test_a_refused_release_releases_the_hold_at_once():
    u = in_session()
    u.feed(c.UpdatePhase(g.FETCHING))
    u.feed(c.SessionControlReceived("close"))
    u.tick()
    assert u.core.session is None
    u.feed(c.UpdatePhase(g.NONE))  # verification refused it
    u.tick()
    assert u.core.session is not None and u.installs() == 0


def test_a_release_on_trial_records_only_once_healthy():
    u = Unit()
    u.feed(c.Start(trial=True))
    u.assign()
    for _ in range(20):
        u.tick()
    assert u.core.session is None
    assert u.core.status(u.now()).to_dict()["update"]["trial"] == "pending"
    u.feed(c.TrialVerdict("pass"))
    u.tick()
    assert u.core.session is not None


def test_a_failed_trial_keeps_holding_for_the_rollback_but_not_forever():
    u = Unit(trial_hold_max_s=60)
    u.feed(c.Start(trial=True))
    u.assign()
    u.feed(c.TrialVerdict("fail", "capture: no device"))
    for _ in range(59):
        u.tick(1.0)
    assert u.core.session is None  # the installer switches back meanwhile
    u.tick(1.5)
    assert u.core.session is not None  # it did not: record on this release rather than not
    assert u.core.trial_state == "expired"


def test_status_carries_version_and_update_state():
    u = in_session()
    u.feed(c.UpdatePhase(g.READY))
    u.feed(c.Tick(c.Health(update={"phase": "ready", "to": "1.1.0"})))
    st = u.core.status(u.now()).to_dict()
    assert st["version"] == "1.0.0"
    assert st["update"]["to"] == "1.1.0" and "session is open" in st["update"]["gate"]
