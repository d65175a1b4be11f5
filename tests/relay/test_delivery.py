"""Live delivery through the real relay process: resume by cursor without gaps or
duplicates, a slow consumer falling back to the store, assignment changes, unit status."""

from __future__ import annotations

import json

from relay_streams import RawScribe, open_message, sealed_chunks, unit_session, wait_until
from support import UnitPublisher, make_relay, relay_clinic


def assign(relay, unit: str, scribe: str) -> None:
    if scribe not in relay.users:
        relay.add_user(scribe, "scribe", f"{scribe}-password")
    assert relay.api("POST", "/api/admin/units", json={"id": unit, "room": unit}).is_success
    assert relay_clinic(relay).assign(unit, [scribe]).is_success


def test_resume_by_cursor_gets_the_rest_exactly_once(broker, relay):
    assign(relay, "unit-a", "s1")
    unit = UnitPublisher(broker, "unit-a")
    s = unit_session("unit-a")
    chunks = sealed_chunks(s, 120)
    unit.publish("session", open_message(s))
    first = RawScribe([relay.url], relay.token("s1")).start()
    for c in chunks[:60]:
        unit.publish("audio", c)
    wait_until(lambda: len(first.audio_seqs()) >= 30, 15, "first half to start arriving")
    first.stop()  # disconnects somewhere in the middle
    cursor = first.cursor
    got_before = first.audio_seqs()
    for c in chunks[60:]:
        unit.publish("audio", c)
    second = RawScribe([relay.url], relay.token("s1"), cursor=cursor).start()
    wait_until(lambda: len(got_before) + len(second.audio_seqs()) >= 120, 20, "the rest")
    second.stop()
    assert got_before + second.audio_seqs() == list(range(120))  # the store keeps arrival order
    unit.close()


def test_batched_and_single_frame_scribes_get_the_same_stream(broker, relay):
    """A scribe that reads batches (the console, the reference client) gets every chunk a
    commit brought in one message, and exactly what a frame-at-a-time scribe gets."""
    assign(relay, "unit-a", "s1")
    unit = UnitPublisher(broker, "unit-a")
    s = unit_session("unit-a")
    batched = RawScribe([relay.url], relay.token("s1")).start()
    single = RawScribe([relay.url], relay.token("s1"), batch=False).start()
    wait_until(lambda: batched.connects and single.connects, 10, "both scribes to connect")
    unit.publish("session", open_message(s))
    for c in sealed_chunks(s, 300):
        unit.c.publish("sl/v1/unit/unit-a/audio", c, qos=1)  # as fast as paho goes
    wait_until(lambda: len(batched.audio_seqs()) >= 300 and len(single.audio_seqs()) >= 300,
               30, "all 300 chunks at both scribes")
    batched.stop()
    single.stop()
    assert batched.frames == single.frames  # same items, same cursors, same order
    assert batched.audio_seqs() == list(range(300))
    assert single.binary_messages == 300
    assert batched.binary_messages < 300  # chunks committed together went out together
    unit.close()


def test_a_slow_scribe_falls_back_to_the_store_and_loses_nothing(broker, tmp_path,
                                                                   relay_store):
    # a live queue of 10 frames and 60 ms batches: every batch overflows the queue
    relay = make_relay(tmp_path, broker, store_url=relay_store,
                       extra="ws_queue_frames = 10\nstore_batch_ms = 60.0\n")
    try:
        assign(relay, "unit-a", "s1")
        unit = UnitPublisher(broker, "unit-a")
        s = unit_session("unit-a")
        scribe = RawScribe([relay.url], relay.token("s1")).start()
        wait_until(lambda: scribe.connects, 10, "the scribe to connect")
        unit.publish("session", open_message(s))
        for c in sealed_chunks(s, 400):
            unit.c.publish("sl/v1/unit/unit-a/audio", c, qos=1)  # as fast as paho goes
        wait_until(lambda: len(scribe.audio_seqs()) >= 400, 30, "all 400 chunks")
        health = relay.api("GET", "/api/admin/health").json()["relay"]["hub"]
        assert health["slow_consumer_events"] >= 1  # it did fall behind, and recovered
        scribe.stop()
        assert sorted(scribe.audio_seqs()) == list(range(400))
        assert len(scribe.audio_seqs()) == 400  # no duplicates
        unit.close()
    finally:
        relay.stop()


def test_a_new_assignment_reaches_a_connected_scribe_and_a_revoked_one_stops(broker, relay):
    assign(relay, "unit-a", "s1")
    assign(relay, "unit-b", "s2")
    ua, ub = UnitPublisher(broker, "unit-a"), UnitPublisher(broker, "unit-b")
    sa, sb = unit_session("unit-a"), unit_session("unit-b")
    scribe = RawScribe([relay.url], relay.token("s1")).start()
    wait_until(lambda: scribe.connects, 10, "the scribe to connect")
    ua.publish("session", open_message(sa))
    ub.publish("session", open_message(sb))
    for c in sealed_chunks(sb, 5):
        ub.publish("audio", c)
    wait_until(lambda: "session_open" in scribe.kinds(), 10, "unit-a's session")
    assert {f[1] for f in scribe.frames} == {sa.session_id.hex()}  # not unit-b's
    assert relay_clinic(relay).assign("unit-b", ["s1"]).is_success
    # unit-b's stream after the scribe's cursor now reaches it, from the store
    wait_until(lambda: sum(1 for f in scribe.frames if f[1] == sb.session_id.hex()) >= 6, 10,
               "unit-b's frames after the assignment")
    assert relay_clinic(relay).assign("unit-a", []).is_success
    def followed():
        hub = relay.api("GET", "/api/admin/health").json()["relay"]["hub"]
        return [f["units"] for f in hub["followers"] if f["user"] == "s1"]

    wait_until(lambda: followed() == [["unit-b"]], 10, "the relay to apply the revocation")
    n_before = len(scribe.frames)
    ua.publish("audio", sealed_chunks(sa, 1)[0])
    ub.publish("audio", sealed_chunks(sb, 1, first=5)[0])  # a marker after unit-a's chunk
    wait_until(lambda: len(scribe.frames) > n_before, 10, "the marker")
    scribe.stop()
    assert [f[1] for f in scribe.frames[n_before:]] == [sb.session_id.hex()]
    ua.close()
    ub.close()


def test_unit_status_is_pushed_live(broker, relay):
    assign(relay, "unit-a", "s1")
    unit = UnitPublisher(broker, "unit-a")
    scribe = RawScribe([relay.url], relay.token("s1")).start()
    wait_until(lambda: scribe.connects, 10, "the scribe to connect")
    unit.publish("status", json.dumps({"v": 1, "type": "status", "unit": "unit-a",
                                       "online": True, "capture": "paused"}).encode())
    wait_until(lambda: scribe.statuses, 10, "a unit_status frame")
    assert scribe.statuses[0]["unit"] == "unit-a"
    assert scribe.statuses[0]["status"]["capture"] == "paused"
    scribe.stop()
    unit.close()
