"""The scribe client's receive path: authentication, replay rejection, reordering, gaps."""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cloud_relay.scribe_client import Receiver
from edge_agent.session import Session
from scribelink import messages as msgs


def _setup(n_chunks=10):
    key = X25519PrivateKey.generate()
    s = Session(unit_id="unit-a", scribes=[("s1", key.public_key())], recovery=None,
                sample_rate=16000, chunk_ms=40, started_us=1_000_000)
    pcm = [np.full(640, i + 1, dtype=np.int16) for i in range(n_chunks)]
    frames = [s.seal_audio(p, 1_000_000 + i * 40_000)[1] for i, p in enumerate(pcm)]
    audio, records = [], []
    r = Receiver(key, on_audio=lambda st, h, b: audio.append((h.seq, b)),
                 on_record=records.append)
    return s, r, pcm, frames, audio, records


def test_in_order_stream_is_written_whole():
    s, r, pcm, frames, audio, _ = _setup()
    r.session_item(s.open_message())
    for f in frames:
        r.envelope(f)
    assert [seq for seq, _ in audio] == list(range(10))
    assert b"".join(b for _, b in audio) == b"".join(p.tobytes() for p in pcm)


def test_tampered_and_replayed_chunks_are_counted_and_the_stream_goes_on():
    s, r, pcm, frames, audio, records = _setup()
    r.session_item(s.open_message())
    bad = bytearray(frames[3])
    bad[-20] ^= 0x10
    r.envelope(frames[0])
    r.envelope(frames[1])
    r.envelope(frames[1])  # replay
    r.envelope(bytes(bad))  # tampered copy of seq 3
    r.envelope(frames[2])
    r.envelope(frames[0])  # replay of an old chunk
    for f in frames[3:]:
        r.envelope(f)
    assert r.counters["tampered"] == 1
    assert r.counters["replayed"] == 2
    assert [seq for seq, _ in audio] == list(range(10))
    errors = [x for x in records if x["type"] == "error"]
    assert {e["error"] for e in errors} == {"tampered", "replayed"}


def test_out_of_order_chunks_are_reordered_and_early_chunks_wait_for_the_session():
    s, r, pcm, frames, audio, _ = _setup()
    order = [5, 1, 0, 9, 3, 2, 8, 4, 7, 6]
    r.envelope(frames[order[0]])  # before the session_open: held, not rejected
    r.session_item(s.open_message())
    for i in order[1:]:
        r.envelope(frames[i])
    assert [seq for seq, _ in audio] == list(range(10))


def test_declared_gap_lets_the_stream_continue_and_is_reported():
    s, r, pcm, frames, audio, records = _setup()
    r.session_item(s.open_message())
    r.envelope(frames[0])
    for f in frames[4:]:
        r.envelope(f)
    assert [seq for seq, _ in audio] == [0]  # waits: 1..3 are missing, not declared
    r.session_item(msgs.gap(unit_id="unit-a", session_hex=s.hex, stream="audio", first_seq=1,
                            last_seq=3, reason="spool_full", at_us=2))
    assert [seq for seq, _ in audio] == [0, 4, 5, 6, 7, 8, 9]
    assert any(x["type"] == "gap" and x["first_seq"] == 1 for x in records)


def test_session_not_wrapped_for_this_scribe_is_refused():
    s, _, _, frames, _, _ = _setup()
    other = X25519PrivateKey.generate()
    audio, records = [], []
    r = Receiver(other, on_audio=lambda *a: audio.append(a), on_record=records.append)
    r.session_item(s.open_message())
    r.envelope(frames[0])
    assert audio == []
    assert r.counters["not_for_me"] == 1


def test_session_complete_after_close():
    s, r, pcm, frames, audio, records = _setup(3)
    r.session_item(s.open_message())
    for f in frames:
        r.envelope(f)
    r.session_item(s.close_message(5_000_000, "input_complete"))
    done = [x for x in records if x["type"] == "session_complete"]
    assert done and done[0]["samples"] == 3 * 640


def test_a_hole_that_stalls_the_stream_is_skipped_after_the_timeout():
    s, r, pcm, frames, audio, records = _setup(10)
    now = [0.0]
    r.clock = lambda: now[0]
    r.hole_timeout_s = 5.0
    r.session_item(s.open_message())
    r.envelope(frames[0])
    for f in frames[2:]:  # seq 1 is lost in transit, undeclared
        r.envelope(f)
    now[0] = 4.0
    r.tick()
    assert [seq for seq, _ in audio] == [0]  # still waiting: it may yet come
    now[0] = 6.0
    r.tick()
    assert [seq for seq, _ in audio] == [0, 2, 3, 4, 5, 6, 7, 8, 9]
    assert r.counters["missing"] == 1


def test_a_draining_backlog_never_trips_the_hole_timeout():
    s, r, pcm, frames, audio, records = _setup(10)
    now = [0.0]
    r.clock = lambda: now[0]
    r.hole_timeout_s = 5.0
    r.session_item(s.open_message())
    r.envelope(frames[9])  # live arrives first...
    for i in range(9):  # ...the backlog trickles in, slower than the timeout in total
        now[0] += 3.0
        r.tick()
        r.envelope(frames[i])
    assert [seq for seq, _ in audio] == list(range(10))
    assert r.counters["missing"] == 0
