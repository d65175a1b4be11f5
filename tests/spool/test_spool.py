"""The spool: durable segment log, torn tails, acks, eviction that speaks, a full disk."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.spool import Spool, SpoolFullError

ROOT = Path(__file__).resolve().parents[2]


def _audio(seq: int, session: str = "aa" * 16, size: int = 1300) -> dict:
    return {"topic": "sl/v1/unit/u/audio", "payload": bytes([seq % 251]) * size,
            "kind": "audio", "session": session, "seq": seq, "audio_ms": 40}


def test_records_come_back_in_order_and_leave_only_when_acked(tmp_path):
    sp = Spool(tmp_path)
    ids = [sp.put_many([_audio(i)])[0] for i in range(10)]
    assert ids == list(range(ids[0], ids[0] + 10))
    got = sp.pending(100)
    assert [r.seq for r in got] == list(range(10))
    assert got[3].payload == bytes([3]) * 1300
    for rid in ids[:4]:
        sp.ack(rid)
    sp.ack(ids[6])
    assert [r.seq for r in sp.pending(100)] == [4, 5, 7, 8, 9]
    assert sp.stats()["records"] == 5
    assert sp.stats()["seconds"] == pytest.approx(0.2)


def test_unacked_records_replay_after_restart_and_acked_ones_do_not(tmp_path):
    sp = Spool(tmp_path)
    ids = [sp.put_many([_audio(i)], {"open_session": "s1"})[0] for i in range(20)]
    for rid in ids[:12]:
        sp.ack(rid)
    sp.close()
    sp2 = Spool(tmp_path)
    assert [r.seq for r in sp2.pending(100)] == list(range(12, 20))
    assert sp2.get_state("open_session") == "s1"
    assert sp2.last_seq[("aa" * 16, "audio")] == 19
    new = sp2.put_many([_audio(20)])[0]
    assert new > ids[-1]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_torn_or_corrupt_tail_is_cut_back_to_the_last_good_record(tmp_path, damage):
    sp = Spool(tmp_path)
    for i in range(10):
        sp.put_many([_audio(i)])
    sp.close()
    seg = max(tmp_path.glob("seg-*"), key=lambda p: p.stat().st_size)
    data = bytearray(seg.read_bytes())
    if damage == "truncate":
        seg.write_bytes(bytes(data[:-700]))  # a power cut in the middle of the last write
    else:
        data[-100] ^= 0xFF
        seg.write_bytes(bytes(data))
    sp2 = Spool(tmp_path)
    assert sp2.corrupt_records_cut >= 1
    seqs = [r.seq for r in sp2.pending(100)]
    assert seqs == list(range(9))  # the last record is gone, all before it survive
    sp2.put_many([_audio(9)])
    sp2.close()
    assert [r.seq for r in Spool(tmp_path).pending(100)] == list(range(10))


WRITER = r"""
import sys
from pathlib import Path
from edge_agent.spool import Spool
sp = Spool(Path(sys.argv[2]), fsync_interval_s=10)
i = 0
while True:
    sp.put_many([{"topic": "t", "payload": bytes([i % 251]) * 1300, "kind": "audio",
                  "session": "ab" * 16, "seq": i, "audio_ms": 40}])
    print(i, flush=True)
    i += 1
"""


def test_kill_9_loses_nothing_that_was_spooled(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(ROOT), str(tmp_path)],
                         stdout=subprocess.PIPE, text=True)
    confirmed = -1
    for line in p.stdout:
        confirmed = int(line)
        if confirmed >= 3000:
            break
    p.send_signal(signal.SIGKILL)
    p.wait()
    seqs = [r.seq for r in Spool(tmp_path).pending(10**6)]
    assert seqs[: confirmed + 1] == list(range(confirmed + 1))
    assert all(b == a + 1 for a, b in itertools.pairwise(seqs))


def test_full_spool_evicts_oldest_first_and_declares_exactly_what_it_dropped(tmp_path):
    sp = Spool(tmp_path, max_bytes=60_000, segment_bytes=15_000)
    sp.put_many([{"topic": "s", "payload": b'{"type":"session_open"}', "kind": "session",
                  "session": "aa" * 16}])
    for i in range(120):
        sp.put_many([_audio(i)])
    ev = sp.take_evictions()
    assert ev, "nothing was evicted"
    assert all(e.reason == "spool_full" and e.kind == "audio" for e in ev)
    dropped = sorted(s for e in ev for s in range(e.first_seq, e.last_seq + 1))
    assert dropped == list(range(len(dropped)))  # oldest first, contiguous
    assert sum(e.count for e in ev) == len(dropped)
    left = sp.pending(1000)
    kept = [r.seq for r in left if r.kind == "audio"]
    assert sorted(dropped + kept) == list(range(120))  # every seq is sent or declared
    assert any(r.kind == "session" for r in left)  # the session open was carried forward
    assert sp.total_bytes <= 60_000 + 15_000


def test_age_limit_evicts_and_declares(tmp_path):
    now = [1_000_000.0]
    sp = Spool(tmp_path, max_age_s=10, segment_bytes=5_000, clock=lambda: now[0])
    for i in range(20):
        sp.put_many([_audio(i)])
        now[0] += 1.0
    now[0] += 20
    sp.put_many([_audio(20)])
    ev = sp.take_evictions()
    assert ev and all(e.reason == "spool_age" for e in ev)
    kept = [r.seq for r in sp.pending(100)]
    dropped = [s for e in ev for s in range(e.first_seq, e.last_seq + 1)]
    assert sorted(dropped + kept) == list(range(21))


def test_acked_records_stay_for_the_grace_period_then_go(tmp_path):
    now = [1000.0]
    sp = Spool(tmp_path, segment_bytes=4_000, ack_grace_s=30, clock=lambda: now[0])
    ids = [sp.put_many([_audio(i)])[0] for i in range(10)]
    for rid in ids:
        sp.ack(rid)
    assert sorted(sp.recently_acked(now[0] - 5)) == ids
    assert [r.seq for r in sp.read(ids[:2])] == [0, 1]  # still readable for a replay
    now[0] += 31
    sp.put_many([_audio(10)])
    sp.sync()
    assert sp.recently_acked(0) == []
    assert len(list(tmp_path.glob("seg-*"))) <= 2


@pytest.fixture
def tiny_fs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"tests need to mount a small tmpfs (run as root): {r.stderr}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_a_real_full_disk_evicts_oldest_and_declares_it(tiny_fs):
    sp = Spool(tiny_fs, max_bytes=10**9, segment_bytes=32_000)
    for i in range(2000):  # 2 MB through a 256 kB filesystem: the budget is not the limit
        sp.put_many([_audio(i, size=1000)])
    ev = sp.take_evictions()
    assert ev and ev[0].first_seq == 0 and all(e.reason == "spool_full" for e in ev)
    dropped = [s for e in ev for s in range(e.first_seq, e.last_seq + 1)]
    kept = [r.seq for r in sp.pending(10**5)]
    assert kept and kept[-1] == 1999  # the newest audio is what survives
    assert sorted(dropped + kept) == list(range(2000))
    sp.close()
    again = Spool(tiny_fs)
    assert again.corrupt_records_cut == 0  # no refused write left a torn record behind
    assert [r.seq for r in again.pending(10**5)] == kept


def test_nothing_left_to_evict_raises_and_leaves_no_torn_record(tiny_fs):
    sp = Spool(tiny_fs, max_bytes=10**9)
    free = os.statvfs(tiny_fs).f_bavail * os.statvfs(tiny_fs).f_frsize
    (tiny_fs / "filler").write_bytes(b"\0" * (free - 3000))
    with pytest.raises(SpoolFullError):
        for i in range(10):
            sp.put_many([_audio(i, size=1000)])
    n = len(sp.pending(100))
    sp.close()
    again = Spool(tiny_fs)
    assert again.corrupt_records_cut == 0
    assert len(again.pending(100)) == n


def test_records_in_flight_are_never_declared_lost(tmp_path):
    """A record handed to the MQTT client may still arrive (its PUBACK lost with the link):
    eviction skips its segment, or if it must take it, carries it forward under a new id
    and says so, and never declares it."""
    sp = Spool(tmp_path, max_bytes=40_000, segment_bytes=10_000)
    ids = [sp.put_many([_audio(i)])[0] for i in range(8)]  # ~1 segment
    handed = sp.take_ids([ids[1], ids[6]])  # what the uplink gave the MQTT client
    assert [r.seq for r in handed] == [1, 6]
    for i in range(8, 60):
        sp.put_many([_audio(i)])
    declared = {s for e in sp.take_evictions() for s in range(e.first_seq, e.last_seq + 1)}
    assert declared, "the budget forced evictions"
    assert 1 not in declared and 6 not in declared
    kept = [r.seq for r in sp.pending(1000)]
    assert 1 in kept and 6 in kept
    assert sorted(declared | set(kept)) == list(range(60))
    # their PUBACKs release the copies they were carried forward as
    for r in handed:
        new_id = sp.in_flight.resolve(r.id)
        assert new_id in sp.in_flight
        sp.ack(new_id)
        sp.in_flight.release(new_id)
    assert sorted(r.seq for r in sp.pending(1000)) == sorted(set(kept) - {1, 6})


def test_in_flight_records_carried_forward_are_released_by_their_puback(tmp_path):
    """Every old segment holds a record the MQTT client has: eviction must carry those
    forward under new ids, and the PUBACK for the old id releases the new copy."""
    sp = Spool(tmp_path, max_bytes=30_000, segment_bytes=6_000)
    handed = []
    for i in range(60):
        rid = sp.put_many([_audio(i)])[0]
        if i % 4 == 0:
            handed += sp.take_ids([rid])
    declared = {s for e in sp.take_evictions() for s in range(e.first_seq, e.last_seq + 1)}
    assert declared and not declared & {r.seq for r in handed}
    moved = [r for r in handed if r.id not in sp.in_flight]  # now under new ids
    assert moved, "the budget forced a carry-forward"
    for r in handed:
        rid = sp.in_flight.resolve(r.id)
        sp.ack(rid)
        sp.in_flight.release(rid)
    assert not sp.in_flight.snapshot()
    left = {r.seq for r in sp.pending(1000)}
    assert not left & {r.seq for r in handed}
    assert sorted(declared | left | {r.seq for r in handed}) == list(range(60))


def test_audio_time_limit_evicts_the_oldest_and_declares_it(tmp_path):
    """[spool] max_audio_s: the spool holds at most that much unsent audio, whatever the
    codec makes of it in bytes; past it, the oldest goes and is declared."""
    sp = Spool(tmp_path, max_audio_s=2.0, segment_bytes=2_000)
    for i in range(100):  # 4 s of 40 ms chunks
        sp.put_many([{**_audio(i), "audio_ms": 40}])
    ev = sp.take_evictions()
    assert ev and all(e.reason == "spool_full" and e.kind == "audio" for e in ev)
    dropped = sorted(s for e in ev for s in range(e.first_seq, e.last_seq + 1))
    kept = [r.seq for r in sp.pending(1000) if r.kind == "audio"]
    assert dropped == list(range(len(dropped))) and sorted(dropped + kept) == list(range(100))
    assert 1.5 <= sp.stats()["seconds"] <= 2.0 + 0.04


def test_state_survives_restarts_after_its_segments_are_collected(tmp_path):
    """A restarted agent resumes from the spool's state (input_frames, the open session,
    cues seen). Each restart opens a new segment and collects the acked old ones: the
    state they carried must not go with them (a unit restarted twice in a row -- an update
    and its rollback -- resumed its input from frame 0 before this was fixed)."""
    sp = Spool(tmp_path, ack_grace_s=0.0)
    rec = {**_audio(0), "input_end": 64000}
    rid = sp.put_many([rec], {"open_session": "", "cues_seen": "7"})[0]
    sp.ack(rid)
    sp.close()
    for _ in range(3):  # restart, write nothing of the kind, sync (collects), stop
        sp = Spool(tmp_path, ack_grace_s=0.0)
        sp.put_many([], {"health_probe": "x"})
        sp.sync()
        sp.close()
    assert len(list(tmp_path.glob("seg-*"))) == 1  # the old segments were collected
    sp = Spool(tmp_path)
    assert sp.get_state("input_frames") == "64000"
    assert sp.get_state("cues_seen") == "7"


# ---------------------------------------------------------------------- the compact format


def _sealed_session(codec: str = "opus", bitrate: int = 16000):
    import numpy as np
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from edge_agent.session import Session, Signer
    from scribelink import codec as codecs

    s = Session(unit_id="unit-exam-1", scribes=[("s", "dev", X25519PrivateKey.generate()
                                                   .public_key())],
                recovery=None, signer=Signer(Ed25519PrivateKey.generate(), None),
                sample_rate=16000, chunk_ms=40, started_us=1_700_000_000_000_000,
                codec=codecs.CodecSettings(codec=codec, bitrate=bitrate))
    t = np.arange(640 * 250) / 16000  # 10 s of a gliding tone with some noise
    rng = np.random.default_rng(7)
    x = (8000 * np.sin(2 * np.pi * (200 + 150 * np.sin(t)) * t) + rng.normal(0, 300, len(t)))
    return s, x.astype(np.int16)


def test_sealed_chunks_come_back_byte_for_byte_and_cost_little_beside_their_ciphertext(
        tmp_path):
    """Format 2 keeps a session's constant clear header once per segment: each chunk costs
    its ciphertext and tag plus ~18 bytes (the 8-hour day in <= 100 MB at Opus 16 kb/s),
    and the exact sealed frame (the AEAD's associated data included) comes back."""
    from scribelink import envelope as env

    s, x = _sealed_session()
    frames = [s.seal_audio(x[i:i + 640], s.started_us + i * 62)[1]  # capture jitter
              for i in range(0, len(x), 640)]
    frames.append(s.seal_audio(x[:320], s.started_us + 10**7, final=True)[1])  # odd size
    _, event = s.seal_event("cue", s.started_us + 5 * 10**6, cue_id=1)
    sp = Spool(tmp_path, fsync_interval_s=3600)
    topic = "scribelink/v1/units/unit-exam-1/audio"
    for q, f in enumerate(frames):
        sp.put_many([{"topic": topic, "payload": f, "kind": "audio", "session": s.hex,
                      "seq": q, "audio_ms": 40, "input_end": 640 * (q + 1)}])
        if q == 100:
            sp.put_many([{"topic": topic[:-5] + "event", "payload": event, "kind": "event",
                          "session": s.hex, "seq": 0}], {"open_session": s.hex})
    sp.close()
    size = sum(p.stat().st_size for p in tmp_path.iterdir())
    ciphertext = sum(len(f) - env.parse_header(f)[1] for f in frames) + len(event)
    assert (size - ciphertext) / (len(frames) + 1) < 24, size
    again = Spool(tmp_path)
    got = again.pending(10**5)
    audio = [r for r in got if r.kind == "audio"]
    assert [r.payload for r in audio] == frames
    assert [r.input_end for r in audio] == [640 * (q + 1) for q in range(len(frames))]
    assert [r.seq for r in audio] == list(range(len(frames)))
    assert {r.topic for r in audio} == {topic} and {r.session for r in got} == {s.hex}
    assert [r.payload for r in got if r.kind == "event"] == [event]
    assert again.get_state("open_session") == s.hex
    assert again.get_state("input_frames") == str(640 * len(frames))
    assert again.read([audio[37].id])[0].payload == frames[37]  # random access


def test_old_format_spools_are_read_and_new_records_go_to_the_new_format(tmp_path):
    """A unit updated with unsent audio in its spool sends all of it: format-1 segments
    (written here by the old writer, kept for this) are read beside format-2 ones."""
    import time

    from edge_agent import spool as sp_mod

    now_us = int(time.time() * 1e6)
    with open(tmp_path / f"seg-{1:016d}.log", "wb") as f:
        f.write(sp_mod._encode_v1(1, {"payload": b'{"open_session": "s1"}', "kind": "state"},
                                  now_us))
        f.writelines(sp_mod._encode_v1(2 + i, {**_audio(i), "input_end": 640 * (i + 1)},
                                       now_us + i) for i in range(5))
        f.write(sp_mod._encode_v1(7, {"payload": b"3", "kind": "ack"}, now_us + 9))
    sp = Spool(tmp_path)
    assert sp.get_state("open_session") == "s1"
    assert sp.get_state("input_frames") == str(640 * 5)
    assert [r.seq for r in sp.pending(100)] == [2, 3, 4]  # ids 2..3 were acked
    rid = sp.put_many([_audio(5)])[0]
    assert rid > 7  # ids go on (the new segment starts with the state)
    sp.close()
    files = sorted(tmp_path.glob("seg-*"))
    assert [(p.suffix, p.read_bytes()[:4]) for p in files] == [(".log", b"SLR1"),
                                                              (".sl2", b"SLS2")]
    again = Spool(tmp_path)
    got = again.pending(100)
    assert [r.seq for r in got] == [2, 3, 4, 5]
    assert got[0].payload == _audio(2)["payload"] and got[-1].payload == _audio(5)["payload"]


def test_a_segment_torn_at_its_creation_holds_nothing_and_the_log_goes_on(tmp_path):
    sp = Spool(tmp_path, segment_bytes=3_000)
    for i in range(6):
        sp.put_many([_audio(i)])
    sp.close()
    newest = max(tmp_path.glob("seg-*"))
    newest.write_bytes(newest.read_bytes()[:10])  # power cut inside the file's head
    again = Spool(tmp_path)
    seqs = [r.seq for r in again.pending(100)]
    assert seqs == list(range(len(seqs))) and len(seqs) >= 2
    again.put_many([_audio(len(seqs))])
    again.close()
    assert [r.seq for r in Spool(tmp_path).pending(100)] == list(range(len(seqs) + 1))


def test_files_of_a_release_rolled_back_and_forth_never_ack_what_was_not_sent(tmp_path):
    """An update's trial writes format 2 (`.sl2`); rolled back, the old release ignores
    those files and goes on in format 1 (`.log`) from the ids it knows. Updated again, the
    log keeps the old release's records and drops the trial's overlapping file, whose ack
    mark must not count: it would mark the old release's unsent audio as sent."""
    import time

    from edge_agent import spool as sp_mod

    now_us = int(time.time() * 1e6)
    with open(tmp_path / f"seg-{1:016d}.log", "wb") as f:  # before the update
        f.writelines(sp_mod._encode_v1(1 + i, _audio(i), now_us) for i in range(3))
    trial = sp_mod.Segment(tmp_path / f"seg-{4:016d}.sl2", 4, base_ms=now_us // 1000)
    trial.path.write_bytes(trial.file_head() + trial.encode(
        {"payload": b"99", "kind": "ack"}, now_us, []))
    with open(tmp_path / f"seg-{4:016d}.log", "wb") as f:  # after the rollback
        f.writelines(sp_mod._encode_v1(4 + i, _audio(3 + i), now_us) for i in range(3))
    sp = Spool(tmp_path)
    assert [r.seq for r in sp.pending(100)] == list(range(6))
    assert not (tmp_path / f"seg-{4:016d}.sl2").exists()
