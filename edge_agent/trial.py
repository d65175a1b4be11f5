"""A new release on trial: its health check, and the commit-or-roll-back decision. Pure.

After a switch the new release's agent checks itself (capture, puck, broker, spool,
self-test) and reports a verdict; the installer, still running from the old release,
commits on a pass and switches back on a failure, or on silence: a release that does not
start, crashes or hangs never reports, and the deadline rolls it back all the same.
"""

from __future__ import annotations

from dataclasses import dataclass

CHECKS = ("capture", "puck", "broker", "spool", "selftest")
PASS, FAIL, PENDING = "pass", "fail", "pending"
WAIT, COMMIT, ROLLBACK = "wait", "commit", "rollback"


@dataclass(frozen=True)
class Probe:
    """One check's latest result. ok None: not known yet. `final`: a failure that more
    time will not fix (the release's own files are wrong), so there is no point waiting."""

    ok: bool | None = None
    detail: str = ""
    final: bool = False


@dataclass(frozen=True)
class Verdict:
    state: str  # pass | fail | pending
    failed: tuple[tuple[str, str], ...] = ()  # (check, why) for fail; what is missing for pending

    @property
    def reason(self) -> str:
        return "; ".join(f"{c}: {why}" for c, why in self.failed)

    def to_dict(self) -> dict:
        return {"state": self.state, "reason": self.reason,
                "failed": [list(f) for f in self.failed]}


def verdict(probes: dict[str, Probe], *, elapsed_s: float, deadline_s: float) -> Verdict:
    """Pass once every check is ok; fail at once on a final failure; otherwise fail at the
    deadline with whatever is still not ok (a device that is slow to come back after the
    restart gets until then)."""
    missing = [c for c in CHECKS if c not in probes]
    if missing:
        raise ValueError(f"no probe for {missing}")
    final = tuple((c, probes[c].detail or "failed") for c in CHECKS
                  if probes[c].ok is False and probes[c].final)
    if final:
        return Verdict(FAIL, final)
    not_ok = tuple((c, probes[c].detail or ("not checked yet" if probes[c].ok is None
                                             else "failed")) for c in CHECKS
                   if probes[c].ok is not True)
    if not not_ok:
        return Verdict(PASS)
    if elapsed_s >= deadline_s:
        return Verdict(FAIL, tuple((c, f"{why} (after {deadline_s:.0f} s)") for c, why in not_ok))
    return Verdict(PENDING, not_ok)


@dataclass(frozen=True)
class Decision:
    action: str  # wait | commit | rollback
    reason: str = ""


def decide_trial(*, expected_version: str, report: dict | None, elapsed_s: float,
                 deadline_s: float) -> Decision:
    """The installer's rule. `report`: the new agent's health report ({"version", "state",
    "reason"}) or None. A report for another version (the old agent's, left over) counts
    as none."""
    if report is not None and report.get("version") == expected_version:
        state = report.get("state")
        if state == PASS:
            return Decision(COMMIT, "health check passed")
        if state == FAIL:
            return Decision(ROLLBACK, f"health check failed: {report.get('reason') or '?'}")
    if elapsed_s >= deadline_s:
        return Decision(ROLLBACK, f"no passing health report from {expected_version} within "
                        f"{deadline_s:.0f} s: it did not start, crashed or hung")
    return Decision(WAIT)
