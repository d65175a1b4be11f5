"""Live first (edge_agent.schedule): live audio always gets the window's room; the backlog
gets a bounded share at a bounded rate. Pure: the clock is handed in."""

from edge_agent.schedule import LiveFirst


def test_live_takes_all_the_room_there_is():
    s = LiveFirst(window=64, backlog_rate=1000)
    assert s.live_budget(0) == 64
    assert s.live_budget(60) == 4
    assert s.live_budget(64) == 0


def test_the_backlog_never_takes_the_live_reserve():
    s = LiveFirst(window=64, backlog_rate=1e9)  # rate no limit here
    assert s.live_reserve == 8
    s.backlog_budget(0, 0, 0.0)
    budget = s.backlog_budget(0, 0, 1.0)
    assert budget == 64 - 8
    s.spent(budget)
    assert s.backlog_budget(budget, budget, 1.0) == 0  # the reserve stays free for live


def test_the_backlog_drains_at_its_rate_with_a_quarter_second_burst():
    s = LiveFirst(window=10_000, backlog_rate=1000)
    handed, t = 0, 0.0
    for _ in range(1000):  # 10 s of pump wake-ups every 10 ms, nothing ever acked
        n = s.backlog_budget(0, 0, t)
        s.spent(n)
        handed += n
        t += 0.01
    assert 9_500 <= handed <= 10_250  # 1000/s, plus at most the 250-record burst
    fresh = LiveFirst(window=10_000, backlog_rate=1000)
    fresh.backlog_budget(0, 0, 0.0)
    assert fresh.backlog_budget(0, 0, 60.0) == 250  # idle time does not bank a flood


def test_a_full_window_gives_the_backlog_nothing():
    s = LiveFirst(window=16, backlog_rate=1000)
    s.backlog_budget(0, 0, 0.0)
    assert s.backlog_budget(16, 0, 5.0) == 0
