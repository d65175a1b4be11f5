"""The update lock: when a unit may install a release it has fetched and verified. Pure.

A release goes in only between encounters: never while a session is open, never while the
spool holds audio the broker has not acknowledged, and, where the clinic set a maintenance
window, only inside it. Once a release is coming, the unit holds off opening the next
session until it is in, but never for longer than `hold_max_s`: if it cannot install by
then (the link is down and the spool will not drain, the download is slow), recording goes
on and the release waits for the next boundary. An update never costs a room a visit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NONE = "none"  # nothing offered, or what was offered was refused or is done
FETCHING = "fetching"  # offered and accepted so far: downloading or verifying
READY = "ready"  # downloaded and verified: waiting for the gate
PHASES = (NONE, FETCHING, READY)

DEFAULT_HOLD_MAX_S = 120.0


class WindowError(ValueError):
    pass


def parse_window(text: str) -> tuple[int, int] | None:
    """"22:00-05:30" -> (1320, 330): minutes since local midnight, [start, end); it may wrap
    past midnight. An empty string means no window (install at any session boundary)."""
    text = (text or "").strip()
    if not text:
        return None
    m = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)", text)
    if not m:
        raise WindowError(f"maintenance window {text!r}: write it as HH:MM-HH:MM, e.g. "
                          "22:00-05:30 (local time)")
    start = int(m[1]) * 60 + int(m[2])
    end = int(m[3]) * 60 + int(m[4])
    if start == end:
        raise WindowError(f"maintenance window {text!r} is empty")
    return start, end


def in_window(window: tuple[int, int], minute_of_day: int) -> bool:
    start, end = window
    if start < end:
        return start <= minute_of_day < end
    return minute_of_day >= start or minute_of_day < end  # wraps past midnight


def window_text(window: tuple[int, int]) -> str:
    return "-".join(f"{m // 60:02d}:{m % 60:02d}" for m in window)


@dataclass(frozen=True)
class Policy:
    window: tuple[int, int] | None = None
    hold_max_s: float = DEFAULT_HOLD_MAX_S


@dataclass(frozen=True)
class Gate:
    install: bool  # hand the release to the installer now
    hold_next_session: bool  # do not open the next session yet
    reason: str  # why (for the status line and the admin view)


def decide(*, phase: str, session_open: bool, unacked_records: int, minute_of_day: int,
           held_s: float | None, policy: Policy) -> Gate:
    """`held_s`: how long the next session has been held for this release (None: not held)."""
    if phase not in PHASES:
        raise ValueError(f"unknown update phase {phase!r}")
    if phase == NONE:
        return Gate(False, False, "no update")
    if policy.window is not None and not in_window(policy.window, minute_of_day):
        return Gate(False, False, f"outside the maintenance window {window_text(policy.window)}")
    if session_open:
        return Gate(False, False, "a session is open: the release waits for it to end")
    if held_s is not None and held_s >= policy.hold_max_s:
        return Gate(False, False, f"held the next session {policy.hold_max_s:.0f} s; recording "
                    "goes on and the release waits for the next boundary")
    if phase == FETCHING:
        return Gate(False, True, "fetching and verifying the release")
    if unacked_records > 0:
        return Gate(False, True, f"{unacked_records} spooled records not yet acknowledged")
    return Gate(True, True, "between sessions with nothing unsent: installing")
