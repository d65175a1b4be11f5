"""The update lock (edge_agent.update_gate) and the trial rules (edge_agent.trial): pure,
no process, no clock."""

from __future__ import annotations

import pytest

from edge_agent import trial
from edge_agent import update_gate as g

P = g.Policy(hold_max_s=120)
NIGHT = g.Policy(window=g.parse_window("22:00-05:30"), hold_max_s=120)


def decide(**kw):
    args = {"phase": g.READY, "session_open": False, "unacked_records": 0,
            "minute_of_day": 12 * 60, "held_s": 0.0, "policy": P}
    args.update(kw)
    return g.decide(**args)


def test_never_while_a_session_is_open():
    gate = decide(session_open=True)
    assert not gate.install and not gate.hold_next_session  # the visit goes on untouched
    assert "session is open" in gate.reason


def test_never_while_the_spool_holds_unacked_audio_but_the_next_session_waits():
    gate = decide(unacked_records=37)
    assert not gate.install and gate.hold_next_session and "37" in gate.reason


def test_between_sessions_with_nothing_unsent_it_installs():
    gate = decide()
    assert gate.install and gate.hold_next_session


def test_while_fetching_the_next_session_waits_without_installing():
    gate = decide(phase=g.FETCHING)
    assert not gate.install and gate.hold_next_session


def test_the_hold_is_bounded_recording_goes_on():
    for phase in (g.FETCHING, g.READY):
        gate = decide(phase=phase, unacked_records=5, held_s=120.0)
        assert not gate.install and not gate.hold_next_session
        assert "recording goes on" in gate.reason


def test_no_update_no_hold():
    assert decide(phase=g.NONE) == g.Gate(False, False, "no update")


def test_maintenance_window_wraps_midnight():
    assert NIGHT.window == (22 * 60, 5 * 60 + 30)
    assert decide(policy=NIGHT, minute_of_day=23 * 60).install
    assert decide(policy=NIGHT, minute_of_day=3 * 60).install
    day = decide(policy=NIGHT, minute_of_day=14 * 60)
    assert not day.install and not day.hold_next_session and "22:00-05:30" in day.reason
    assert not decide(policy=NIGHT, minute_of_day=5 * 60 + 30).install  # end is exclusive
    assert decide(policy=g.Policy(window=(60, 120)), minute_of_day=61).install


@pytest.mark.parametrize("bad", ["22-05", "25:00-01:00", "10:00-10:00", "22:00 - 05:00"])
def test_bad_windows_say_how_to_write_one(bad):
    with pytest.raises(g.WindowError):
        g.parse_window(bad)
    assert g.parse_window("") is None


# ---------------------------------------------------------------------- the trial


def probes(**kw) -> dict:
    base = {c: trial.Probe(True) for c in trial.CHECKS}
    base.update(kw)
    return base


def test_all_checks_pass():
    assert trial.verdict(probes(), elapsed_s=1, deadline_s=60).state == trial.PASS


def test_a_slow_device_gets_until_the_deadline_then_fails_with_what_is_missing():
    p = probes(puck=trial.Probe(False, "not connected"), broker=trial.Probe(None))
    v = trial.verdict(p, elapsed_s=10, deadline_s=60)
    assert v.state == trial.PENDING
    v = trial.verdict(p, elapsed_s=60, deadline_s=60)
    assert v.state == trial.FAIL
    assert v.reason == ("puck: not connected (after 60 s); broker: not checked yet "
                        "(after 60 s)")


def test_a_final_failure_fails_at_once():
    p = probes(selftest=trial.Probe(False, "edge_agent.dsp does not import", final=True),
               puck=trial.Probe(None))
    v = trial.verdict(p, elapsed_s=0.5, deadline_s=60)
    assert v.state == trial.FAIL and v.failed == (("selftest", "edge_agent.dsp does not import"),)


def test_every_check_is_required():
    with pytest.raises(ValueError):
        trial.verdict({"capture": trial.Probe(True)}, elapsed_s=0, deadline_s=1)


def test_installer_commits_on_a_pass_rolls_back_on_a_fail_or_silence():
    d = trial.decide_trial
    assert d(expected_version="2.0.0", report=None, elapsed_s=5, deadline_s=90).action == \
        trial.WAIT
    ok = {"version": "2.0.0", "state": "pass"}
    assert d(expected_version="2.0.0", report=ok, elapsed_s=5, deadline_s=90).action == \
        trial.COMMIT
    bad = {"version": "2.0.0", "state": "fail", "reason": "capture: no device"}
    r = d(expected_version="2.0.0", report=bad, elapsed_s=5, deadline_s=90)
    assert r.action == trial.ROLLBACK and r.reason == "health check failed: capture: no device"
    silent = d(expected_version="2.0.0", report=None, elapsed_s=90, deadline_s=90)
    assert silent.action == trial.ROLLBACK and "did not start" in silent.reason
    pending = {"version": "2.0.0", "state": "pending"}
    assert d(expected_version="2.0.0", report=pending, elapsed_s=91, deadline_s=90).action == \
        trial.ROLLBACK


def test_a_report_from_the_old_release_does_not_commit_the_new_one():
    old = {"version": "1.0.0", "state": "pass"}
    assert trial.decide_trial(expected_version="2.0.0", report=old, elapsed_s=5,
                              deadline_s=90).action == trial.WAIT
