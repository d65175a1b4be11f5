"""Two relays share the units' traffic (MQTT 5 shared subscription, one store); one is
killed with SIGKILL mid-stream. Every chunk reaches the scribe exactly once: the scribe
resumes on the other relay by cursor, and the survivor drains the dead relay's broker
session (what the broker had in flight to it, and its share of what came after)."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest
from relay_streams import RawScribe, open_message, sealed_chunks, unit_session, wait_until
from support import UnitPublisher, make_relay, relay_clinic

RATE_HZ = 25


def publish_at_rate(unit: UnitPublisher, chunks: list[bytes], stop: threading.Event) -> None:
    t0 = time.monotonic()
    for i, c in enumerate(chunks):
        if stop.is_set():
            return
        time.sleep(max(0.0, t0 + i / RATE_HZ - time.monotonic()))
        unit.c.publish("sl/v1/unit/unit-a/audio", c, qos=1)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "stop"])
def test_one_relay_dying_or_stopping_loses_and_duplicates_nothing(broker, tmp_path,
                                                                   relay_store, sig):
    """SIGKILL: the survivor adopts the dead relay's broker session. SIGTERM (a planned
    stop while a peer is alive): the relay leaves the share group, commits and acks what
    it has, and stops; the peer carries on."""
    store_url = relay_store or f"sqlite:///{tmp_path / 'shared.db'}"
    peers = ('share_group = "relays"\nrelay_peers = ["relay-a", "relay-b"]\n'
             'peer_timeout_s = 2.0\n')
    a = make_relay(tmp_path, broker, store_url=store_url, name="relay-a", client_id="relay-a",
                   extra=peers)
    b = make_relay(tmp_path, broker, store_url=store_url, name="relay-b", client_id="relay-b",
                   extra=peers, add_admin=False)
    b.users = a.users
    try:
        a.add_user("s1", "scribe", "s1-password")
        assert a.api("POST", "/api/admin/units", json={"id": "unit-a", "room": "A"}).is_success
        assert relay_clinic(a).assign("unit-a", ["s1"]).is_success
        unit = UnitPublisher(broker, "unit-a")
        s = unit_session("unit-a")
        n = 300  # 12 s at 25 chunks/s
        chunks = sealed_chunks(s, n)
        scribe = RawScribe([a.url, b.url], a.token("s1")).start()  # lands on relay A
        wait_until(lambda: scribe.connects, 10, "the scribe to connect to relay A")
        unit.publish("session", open_message(s))
        stop = threading.Event()
        pub = threading.Thread(target=publish_at_rate, args=(unit, chunks, stop))
        pub.start()
        wait_until(lambda: len(scribe.audio_seqs()) >= 75, 20, "3 s of audio through A")
        a.stop(sig)  # mid-stream, with frames in flight to it
        pub.join(30)
        wait_until(lambda: len(set(scribe.audio_seqs())) >= n, 40,
                   "every chunk, through relay B")
        seqs = scribe.audio_seqs()
        assert sorted(seqs) == list(range(n))  # nothing lost
        assert len(seqs) == n  # nothing twice
        assert len(scribe.connects) >= 2 and scribe.connects[-1].startswith(
            b.url.replace("http", "ws", 1))
        audit = b.api("GET", "/api/admin/audit").json()
        assert any(e["action"] == "relay_adopted" and e["target"] == "relay-a" for e in audit)

        # relay A comes back (its supervisor restarts it): it takes its session back and
        # the stream goes on, still exactly once
        a.start()
        more = sealed_chunks(s, 50, first=n)
        stop.clear()
        publish_at_rate(unit, more, stop)
        wait_until(lambda: len(set(scribe.audio_seqs())) >= n + 50, 30, "50 more chunks")
        scribe.stop()
        seqs = scribe.audio_seqs()
        assert sorted(seqs) == list(range(n + 50)) and len(seqs) == n + 50
        unit.close()
    finally:
        a.stop()
        b.stop()


def test_after_a_broker_restart_a_sharing_relay_asks_units_to_replay(broker, tmp_path,
                                                                      relay_store):
    """mosquitto before 2.0.20 does not keep shared subscriptions over a restart, so what
    units publish before the relay subscribes again is dropped: the relay asks them to
    offer again what they published since it lost the broker (their spool keeps it)."""
    relay = make_relay(tmp_path, broker, store_url=relay_store, client_id="relay-a",
                       extra='share_group = "relays"\n')
    try:
        assert relay.api("POST", "/api/admin/units", json={"id": "unit-a"}).is_success
        unit = UnitPublisher(broker, "unit-a", session_expiry_s=3600)
        t_restart = time.time_ns() // 1000
        broker.restart()
        wait_until(lambda: any(json.loads(c).get("type") == "replay" for c in unit.control),
                   20, "a replay request on the unit's control topic")
        replay = [json.loads(c) for c in unit.control if json.loads(c)["type"] == "replay"][-1]
        assert replay["since_us"] <= t_restart  # covers everything since the relay lost it
        unit.close()
    finally:
        relay.stop()
