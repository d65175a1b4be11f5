"""Live first: how much of the spool the uplink may hand to the broker right now. Pure.

Records sealed since the link came up are *live* and always go at once, into whatever
room the in-flight window has. What piled up before (an outage, a restart) is *backlog*:
it may use only a share of the window -- a reserve is always kept for live audio -- and
only at a bounded rate (a token bucket with a quarter second of burst), so an hour of
catch-up never makes the live stream queue behind it. docs/spool.md has the measurements.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LiveFirst:
    window: int  # records the MQTT client may have in flight
    backlog_rate: float  # backlog records per second
    live_reserve: int = 0  # window slots the backlog never takes (0: window // 8, >= 2)
    _tokens: float = 0.0
    _tokens_at: float | None = None

    def __post_init__(self) -> None:
        if self.live_reserve <= 0:
            self.live_reserve = max(2, self.window // 8)

    def live_budget(self, inflight: int) -> int:
        """Live records that may go now: all the room there is."""
        return max(0, self.window - inflight)

    def backlog_budget(self, inflight: int, backlog_inflight: int, now_s: float) -> int:
        """Backlog records that may go now, given what is in flight (all of it, and the
        backlog's part) at monotonic time `now_s`."""
        if self._tokens_at is None:
            self._tokens_at = now_s
        burst = self.backlog_rate / 4
        self._tokens = min(burst, self._tokens + (now_s - self._tokens_at) * self.backlog_rate)
        self._tokens_at = now_s
        room = self.window - inflight
        share = self.window - self.live_reserve - backlog_inflight
        return max(0, int(min(room, share, self._tokens)))

    def spent(self, n: int) -> None:
        """`n` backlog records were handed over."""
        self._tokens -= n
