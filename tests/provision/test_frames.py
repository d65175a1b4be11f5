"""The provisioning frame codec: test vectors, resynchronisation, bounds, timeouts, and
property tests (hypothesis) that random and mutated input never crashes the decoder nor
yields a frame that was not sent."""

from __future__ import annotations

import binascii
import json
import struct
import zlib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from scribelink import provisioning as p

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" /
                      "provisioning_frames.json").read_text())


def test_encoder_matches_the_vectors_byte_for_byte():
    for v in VECTORS["frames"]:
        assert p.encode(v["kind"], v["request_id"], v["payload"]).hex() == v["hex"], v["name"]


def test_vectors_follow_the_written_layout():
    """Recompute every field from the spec with the standard library, not the codec."""
    for v in VECTORS["frames"]:
        raw = bytes.fromhex(v["hex"])
        assert raw[:2] == b"\xa5\x5c" and raw[2] == 1 and raw[3] == v["kind"]
        rid, length, hcrc = struct.unpack(">HHH", raw[4:10])
        assert rid == v["request_id"] and length == len(raw) - 14
        assert hcrc == binascii.crc_hqx(raw[2:8], 0)
        assert struct.unpack(">I", raw[-4:])[0] == zlib.crc32(raw[2:-4])
        body = raw[10:-4]
        assert max(body) < 0x80  # ASCII only, so the magic never occurs inside a payload
        assert json.loads(body) == v["payload"]


def test_decoder_stream_vectors():
    for s in VECTORS["streams"]:
        frames = p.Decoder().feed(bytes.fromhex(s["hex"]), 0.0)
        assert [f.request_id for f in frames] == s["request_ids"], s["name"]


def test_byte_at_a_time_delivery_and_resync_after_garbage():
    f1, f2 = p.encode(1, 10, p.request("hello")), p.encode(1, 11, p.request("status"))
    stream = b"\xa5" + b"garbage\xa5\x5c\x01\x01" + f1 + b"\xa5\x5c" * 3 + f2
    d = p.Decoder()
    got = []
    for i in range(len(stream)):
        got += d.feed(stream[i:i + 1], 0.0)
    assert [(f.request_id, f.payload["cmd"]) for f in got] == [(10, "hello"), (11, "status")]
    assert d.stats.dropped_bytes > 0 and d.pending == 0


def test_oversize_payload_is_refused_both_ways():
    try:
        p.encode(1, 1, {"cmd": "set_config", "args": {"room": "x" * p.MAX_PAYLOAD}})
    except p.ProtocolError as e:
        assert "exceeds" in str(e)
    else:
        raise AssertionError("an oversize payload was encoded")


def test_a_stalled_partial_frame_is_dropped_after_the_timeout():
    f1, f2 = p.encode(1, 1, p.request("hello")), p.encode(1, 2, p.request("hello"))
    d = p.Decoder(partial_timeout_s=1.0)
    assert d.feed(f1[:12], now=0.0) == []
    assert d.pending == 12
    # the rest of f1 never comes; 5 s later a whole new frame arrives
    got = d.feed(f2, now=5.0)
    assert [f.request_id for f in got] == [2]
    assert d.stats.timeouts == 1


def test_client_ignores_stale_responses_and_times_out():
    sent = []
    stale = p.encode(p.KIND_RESPONSE, 99, p.ok({"state": "old"}))
    good = p.encode(p.KIND_RESPONSE, 5, p.ok({"state": "blank"}))
    prog = p.encode(p.KIND_PROGRESS, 5, p.progress("x", "working"))
    incoming = [stale + prog, good]
    t = [0.0]

    def read(n):
        t[0] += 0.1
        return incoming.pop(0) if incoming else b""

    c = p.Client(sent.append, read, lambda: t[0], first_request_id=5)
    seen = []
    assert c.call("hello", on_progress=seen.append) == {"state": "blank"}
    assert seen == [{"step": "x", "message": "working"}]
    assert p.Decoder().feed(sent[0], 0)[0].payload == {"cmd": "hello", "args": {}}
    try:
        c.call("hello", timeout_s=1.0)
    except p.NoResponse as e:
        assert "cable" in str(e)
    else:
        raise AssertionError("no timeout")


def test_client_raises_the_units_error_with_its_action():
    err = p.encode(p.KIND_RESPONSE, 1, p.error(p.E_LOCKED, "the unit is locked"))
    c = p.Client(lambda b: None, lambda n: err, lambda: 0.0, first_request_id=1)
    try:
        c.call("set_config", {})
    except p.CommandFailed as e:
        assert e.code == "locked" and "unlock" in e.action
    else:
        raise AssertionError("error not raised")


GOOD = [p.encode(p.KIND_REQUEST, i, p.request(c, {"n": i}))
        for i, c in enumerate(("hello", "status", "selftest", "set_config"))]
GOOD_PAYLOADS = [p.Decoder().feed(g, 0.0)[0].payload for g in GOOD]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096), st.lists(st.integers(1, 64), max_size=20))
def test_random_bytes_never_crash_and_frames_after_them_still_arrive(junk, cuts):
    d = p.Decoder()
    got = []
    pos = 0
    for n in cuts:
        got += d.feed(junk[pos:pos + n], 0.0)
        pos += n
    got += d.feed(junk[pos:], 0.0)
    assert d.pending <= p.MAX_FRAME
    # junk may end inside a plausible header that waits for more bytes: the partial timeout
    # (a few idle polls) must free the line so good frames sent after it arrive
    got = d.feed(GOOD[0] + GOOD[1], 10.0)
    for t in (20.0, 30.0, 40.0):
        got += d.feed(b"", t)
    assert [f.payload["cmd"] for f in got if f.payload in (GOOD_PAYLOADS[0], GOOD_PAYLOADS[1])] \
        == ["hello", "status"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(GOOD), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                       min_size=1, max_size=8))
def test_mutated_frames_are_never_delivered_altered(frame, flips):
    bad = bytearray(frame)
    for pos, val in flips:
        bad[pos % len(bad)] = val
    bad = bytes(bad)
    d = p.Decoder()
    out = d.feed(bad, 0.0) + d.feed(GOOD[1], 0.0)
    original = p.Decoder().feed(frame, 0.0)[0]
    for f in out:
        # CRC-32 plus header CRC: anything delivered is a frame that was really sent
        assert f == original or f.payload == {"cmd": "status", "args": {"n": 1}}
    assert out and out[-1].payload["cmd"] == "status"
