"""Audio chunk bodies (scribelink/codec.py) against tests/vectors/opus_chunks.json: the
layout, the sealed frames, and the reference decoder in order, across holes and when
joining mid-stream. Real libopus (Debian's libopus0) through the real binding."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from scribelink import codec as codecs
from scribelink import envelope as env

V = json.loads((Path(__file__).parents[1] / "vectors" / "opus_chunks.json").read_text())


def b(s: str) -> bytes:
    return base64.b64decode(s)


def pcm(s: str) -> np.ndarray:
    return np.frombuffer(b(s), "<i2").astype(float)


def snr_db(want: np.ndarray, got: np.ndarray) -> float:
    err = np.sum((want - got) ** 2)
    return float("inf") if err == 0 else 10 * np.log10(np.sum(want ** 2) / err)


def test_layout_vectors_pack_and_unpack_exactly():
    packets = [b(p) for p in V["layout"]["packets"]]
    assert codecs.pack_packets(packets) == b(V["layout"]["body"])
    assert codecs.unpack_packets(b(V["layout"]["body"])) == packets
    assert b(V["layout"]["body"])[4:6] == bytes((252, 12))  # 300 = 252 + 0 + 4 * 12
    for case in V["layout"]["malformed"]:
        with pytest.raises(codecs.CodecError):
            codecs.unpack_packets(b(case["body"]))
    with pytest.raises(codecs.CodecError):
        codecs.pack_packets([b""])


def test_sealed_vectors_open_to_their_bodies_with_the_opus_codec_id():
    key = bytes.fromhex(V["session_key"])
    for c in V["chunks"]:
        header, body = env.open_envelope(b(c["frame"]), key)
        assert header.codec == env.CODEC_OPUS and header.sample_count == c["sample_count"]
        assert body == b(c["body"])
        assert [b(p) for p in c["packets"]] == codecs.unpack_packets(body)
    assert V["chunks"][-1]["sample_count"] == 200 and len(V["chunks"][-1]["packets"]) == 1


@pytest.mark.parametrize("name", ["in_order", "holes", "join_mid_stream"])
def test_the_reference_decoder_reproduces_every_scenario(name):
    chunks = {c["seq"]: c for c in V["chunks"]}
    dec = codecs.OpusDecoder()
    want, got = [], []
    for item in V["scenarios"][name]:
        c = chunks[item["seq"]]
        d = dec.decode(b(c["body"]), c["sample_count"], c["seq"])
        assert len(d.pcm) == c["sample_count"]
        assert len(d.concealed) == item["concealed_samples"]
        want += [pcm(item["concealed"]), pcm(item["pcm"])]
        got += [d.concealed.astype(float), d.pcm.astype(float)]
    # libopus decodes bit-exactly within a version; across versions, within tolerance
    assert snr_db(np.concatenate(want), np.concatenate(got)) > 40
    if name == "holes":
        assert dec.concealed_frames == 2 and dec.resets == 1  # seq 6 concealed; 12..20 not


def test_a_decoder_joining_mid_stream_converges_on_the_continuous_one():
    order = {i["seq"]: pcm(i["pcm"]) for i in V["scenarios"]["in_order"]}
    joined = {i["seq"]: pcm(i["pcm"]) for i in V["scenarios"]["join_mid_stream"]}
    late = np.concatenate([order[q] for q in range(12, 20)])
    assert snr_db(late, np.concatenate([joined[q] for q in range(12, 20)])) > 15


def test_a_body_that_does_not_fit_its_sample_count_or_libopus_is_refused():
    dec = codecs.OpusDecoder()
    body = b(V["chunks"][0]["body"])
    with pytest.raises(codecs.CodecError):
        dec.decode(body, 320)  # two packets for one frame's worth of samples
    with pytest.raises(codecs.CodecError):
        dec.decode(codecs.pack_packets([b"\xff" * 40, b"\xff" * 3]), 640)
    assert len(dec.decode(body, 640, 0).pcm) == 640  # and it decodes on afterwards


def test_encoder_settings_are_checked_and_short_chunks_are_padded():
    with pytest.raises(ValueError):
        codecs.CodecSettings(codec="mp3")
    with pytest.raises(ValueError):
        codecs.CodecSettings(bitrate=1000)
    with pytest.raises(ValueError):
        codecs.CodecSettings().check_chunk_ms(50)
    codecs.CodecSettings(codec="pcm_s16le").check_chunk_ms(50)
    enc = codecs.OpusEncoder(codecs.CodecSettings(bitrate=16000))
    assert len(codecs.unpack_packets(enc.encode(np.zeros(200, np.int16)))) == 1
    assert len(codecs.unpack_packets(enc.encode(np.zeros(1600, np.int16)))) == 5


def test_the_clear_header_says_opus_and_is_checked():
    key = bytes(32)
    h = env.Header(env.TYPE_AUDIO, bytes(16), 0, 1, "u1", codec=env.CODEC_OPUS,
                   sample_count=640)
    assert env.parse_header(env.seal(h, b"\x03\x48\x00\x00", key))[0].codec == env.CODEC_OPUS
    empty = env.Header(env.TYPE_AUDIO, bytes(16), 0, 1, "u1", codec=env.CODEC_OPUS)
    with pytest.raises(env.EnvelopeError):
        env.parse_header(env.seal(empty, b"\x03\x48\x00\x00", key))  # no samples
    ev = env.Header(env.TYPE_EVENT, bytes(16), 0, 1, "u1", codec=env.CODEC_OPUS)
    with pytest.raises(env.EnvelopeError):
        env.parse_header(env.seal(ev, b"{}", key))
