"""The store on SQLite and PostgreSQL: migrations, idempotent batches, commit-ordered
cursors under concurrent writers, O(1) queries for listings, retention purge."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from cloud_relay.store import Frame, Store
from cloud_relay.store.migrations import STEPS


@pytest.fixture
def store_url(relay_store, tmp_path):
    return relay_store or f"sqlite:///{tmp_path / 'relay.db'}"


@pytest.fixture
def store(store_url, tmp_path):
    s = Store.open(store_url, str(tmp_path))
    yield s
    s.close()


def frames(unit: str, session: str, n: int, first: int = 0) -> list[Frame]:
    return [Frame(unit, session, "audio", i, f"{unit}/{session}/{i}".encode() * 20)
            for i in range(first, first + n)]


def test_migrations_record_each_step_once_and_rerun_is_a_no_op(store, store_url, tmp_path):
    versions = [r[0] for r in store.db.query("SELECT version FROM schema_version ORDER BY 1")]
    assert versions == [v for v, _, _ in STEPS]
    again = Store.open(store_url, str(tmp_path))  # a second relay starting on the same store
    assert again.schema_version == STEPS[-1][0]
    assert len(again.db.query("SELECT version FROM schema_version")) == len(STEPS)
    again.close()


def test_a_pre_migration_sqlite_file_is_upgraded_in_place(tmp_path):
    db = sqlite3.connect(tmp_path / "relay.db")  # the schema before migrations existed
    db.executescript("""
        CREATE TABLE stream (id INTEGER PRIMARY KEY AUTOINCREMENT, unit_id TEXT NOT NULL,
            session TEXT NOT NULL, kind TEXT NOT NULL, seq INTEGER NOT NULL,
            payload BLOB NOT NULL, digest BLOB NOT NULL, received_us INTEGER NOT NULL,
            UNIQUE (session, kind, seq, digest));
        CREATE TABLE units (id TEXT PRIMARY KEY, room TEXT, created_us INTEGER NOT NULL,
            status_json TEXT, status_at_us INTEGER);
        INSERT INTO stream VALUES (41, 'u1', 's', 'audio', 0, x'00', x'01', 1);
        INSERT INTO units VALUES ('u1', 'Exam 1', 1, NULL, NULL);
    """)
    db.commit()
    db.close()
    s = Store.open("", str(tmp_path))
    assert s.head() == 41  # cursors already handed out stay valid
    assert s.unit("u1")["room"] == "Exam 1"
    b = s.append_batch(frames("u1", "s", 2, first=1))
    assert [r.id for r in b.rows] == [42, 43] and b.prev_head == 41
    s.close()


def test_batches_are_idempotent_and_say_which_ids_they_took(store):
    b1 = store.append_batch(frames("u1", "s1", 5))
    assert b1.prev_head == 0 and b1.head == b1.rows[-1].id and len(b1.rows) == 5
    b2 = store.append_batch(frames("u1", "s1", 3, first=3))  # 3, 4 are redeliveries
    assert b2.inserted == [False, False, True]
    assert b2.prev_head == b1.head and [r.seq for r in b2.rows] == [5]
    b3 = store.append_batch(frames("u1", "s1", 2))  # all duplicates: nothing moves
    assert b3.rows == [] and b3.head == b3.prev_head == b2.head
    twice = frames("u1", "s1", 1, first=9) * 2  # one redelivery inside the same batch
    b4 = store.append_batch(twice)
    assert b4.inserted == [True, False] and [r.seq for r in b4.rows] == [9]
    corrupt = Frame("u1", "s1", "audio", 0, b"another body for the same seq")
    assert store.append_batch([corrupt]).inserted == [True]  # both copies go to the scribe
    assert [r.seq for r in store.rows_after(0, ["u1"], 100)] == [0, 1, 2, 3, 4, 5, 9, 0]


def test_a_cursor_never_skips_a_row_under_concurrent_writers(store, store_url, tmp_path):
    """Two writers (two relays: two store handles) commit batches while a reader follows
    by cursor; every row is seen exactly once, though ids are taken concurrently."""
    other = Store.open(store_url, str(tmp_path))
    per_writer, batch = 400, 8
    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def write(s: Store, unit: str) -> None:
        try:
            for i in range(0, per_writer, batch):
                s.append_batch(frames(unit, "s-" + unit, batch, first=i))
        except BaseException as e:  # noqa: BLE001 (surfaced below)
            errors.append(e)

    def follow() -> None:
        cursor = 0
        while True:
            done = stop.is_set()  # read before the query: one more pass after the writers
            rows = store.rows_after(cursor, ["ua", "ub"], 50, upto=store.head())
            for r in rows:
                seen.append(r.id)
                cursor = r.id
            if done and not rows:
                return

    writers = [threading.Thread(target=write, args=(s, u)) for s, u in ((store, "ua"),
                                                                        (other, "ub"))]
    reader = threading.Thread(target=follow)
    reader.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    reader.join(60)
    other.close()
    assert not errors
    assert len(seen) == len(set(seen)) == 2 * per_writer
    assert seen == sorted(seen)


def test_listings_take_a_fixed_number_of_queries(store):
    for i in range(60):
        store.ensure_unit(f"unit-{i:02d}", f"Exam {i}")
    store.add_user("s1", "S1", "scribe", "password-1")
    for i in range(60):
        store.set_assignment(f"unit-{i:02d}", ["s1"])
    calls = []
    real = store.db.query
    store.db.query = lambda sql, args=(): (calls.append(sql), real(sql, args))[1]
    units = store.units()
    assert len(units) == 60 and all(u["scribes"] == ["s1"] for u in units)
    assert len(calls) == 2
    calls.clear()
    assert store.unit("unit-07")["room"] == "Exam 7"
    assert len(calls) == 2
    calls.clear()
    assert [u.id for u in store.users(["s1", "nobody"])] == ["s1"]
    assert len(calls) == 1


def test_retention_purge_drops_old_closed_sessions_in_small_transactions(store):
    for n in range(7):
        sid = f"{n:032x}"
        store.append_batch([Frame("u1", sid, "session_open", 0, b'{"type":"session_open"}'),
                            *frames("u1", sid, 3)])
        store.append_batch([Frame("u1", sid, "session_close", 0, b'{"type":"x"}')])
    keep = f"{99:032x}"
    store.append_batch([Frame("u1", keep, "session_open", 0, b'{"type":"session_open"}')])
    cutoff = store.db.query("SELECT MAX(closed_us) FROM sessions")[0][0] + 1
    store.db.execute("UPDATE sessions SET opened_us=? WHERE session=?", (cutoff + 10, keep))
    assert store.purge_before(cutoff, max_sessions=3) == 7
    assert [s["session"] for s in store.sessions("u1")] == [keep]
    assert {r.session for r in store.rows_after(0, ["u1"], 1000)} == {keep}


def _sealed_frames(n: int) -> tuple[str, list[bytes], bytes]:
    """n real sealed Opus chunks of one session (the unit's own code) and one event."""
    import numpy as np
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from edge_agent.session import Session, Signer
    from scribelink import codec as codecs

    s = Session(unit_id="unit-exam-1",
                scribes=[("s", "dev", X25519PrivateKey.generate().public_key())],
                recovery=None, signer=Signer(Ed25519PrivateKey.generate(), None),
                sample_rate=16000, chunk_ms=40, started_us=1_700_000_000_000_000,
                codec=codecs.CodecSettings(codec="opus", bitrate=16000))
    rng = np.random.default_rng(3)
    pcm = (rng.normal(0, 2000, 640 * n)).astype(np.int16)
    out = [s.seal_audio(pcm[i * 640:(i + 1) * 640], s.started_us + i * 40_000 + (i % 3))[1]
           for i in range(n)]
    return s.hex, out, s.seal_event("cue", s.started_us + 10**6, cue_id=1)[1]


def test_packing_keeps_every_frame_byte_for_byte_and_every_cursor(store):
    """Sealed frames move from rows into per-session segments (the archive's packed form,
    cloud_relay/store/segments.py): every read gives back the same rows -- ids (the scribes'
    cursors), seqs, exact bytes, arrival times -- before and after, and a redelivery of
    a packed frame is dropped when it is packed in turn."""
    sid, audio, event = _sealed_frames(120)
    store.append_batch([Frame("unit-exam-1", sid, "session_open", 0, b'{"type":"x"}')])
    for i in range(0, 120, 7):  # batches interleaved with another unit's raw frames
        store.append_batch([Frame("unit-exam-1", sid, "audio", q, audio[q])
                            for q in range(i, min(i + 7, 120))]
                           + frames("u2", "s2", 2, first=i))
    store.append_batch([Frame("unit-exam-1", sid, "event", 0, event)])
    units = ["unit-exam-1", "u2"]
    before = store.rows_after(0, units, 10_000)
    sealed_before = store.sealed(sid, "audio", 0, 1000)
    head = store.head()
    assert store.pack(store.pack_candidates(upto=head)) == 120 + 1 + 2 * 18
    assert store.db.query("SELECT COUNT(*) FROM stream WHERE kind IN ('audio','event')"
                          )[0][0] == 0
    assert store.rows_after(0, units, 10_000) == before
    for cursor in (0, before[5].id, before[77].id, before[-2].id):  # a scribe resuming
        page = store.rows_after(cursor, units, 25)
        assert page == [r for r in before if r.id > cursor][:25]
    assert store.rows_after(before[3].id, units, 10, upto=before[9].id) == before[4:10]
    assert store.sealed(sid, "audio", 0, 1000) == sealed_before
    assert store.sealed(sid, "audio", 50, 7) == sealed_before[50:57]
    assert [x[2] for x in store.sealed(sid, "event", 0, 10)] == [event]
    assert store.session_counts(sid)["audio"] == {"count": 120, "max_seq": 119}
    # a late redelivery of packed frames: stored once more, then dropped by the packer
    again = store.append_batch([Frame("unit-exam-1", sid, "audio", q, audio[q])
                                for q in (3, 4)])
    assert len(again.rows) == 2
    assert store.pack(store.pack_candidates(upto=store.head())) == 0
    assert store.sealed(sid, "audio", 0, 1000) == sealed_before
    packed = store.db.query("SELECT COALESCE(SUM(LENGTH(body)),0) FROM stream_segments "
                            "WHERE kind='audio' AND session=?", (sid,))[0][0]
    bodies = sum(len(f) - 60 for f in audio)  # ciphertext and tag
    assert packed < bodies + 6 * len(audio), (packed, bodies)  # the header is kept once


def test_closing_a_session_packs_it_through_the_writer(store):
    """The relay's writer packs a session's frames when its close is committed."""
    from cloud_relay.store.writer import StreamWriter

    sid, audio, _ = _sealed_frames(30)
    w = StreamWriter(store, on_commit=lambda batch, statuses: None)
    w.start()
    try:
        for q, f in enumerate(audio):
            w.put(Frame("unit-exam-1", sid, "audio", q, f), None)
        w.put(Frame("unit-exam-1", sid, "session_close", 0, b'{"type":"session_close"}'),
              None)
        deadline = time.monotonic() + 20
        while store.db.query("SELECT COUNT(*) FROM stream WHERE kind='audio'")[0][0]:
            assert time.monotonic() < deadline, "the closed session was not packed"
            time.sleep(0.05)
    finally:
        w.stop()
    assert [x[2] for x in store.sealed(sid, "audio", 0, 100)] == audio


def test_the_writer_stores_a_new_status_at_once_and_a_repeated_one_now_and_then(store):
    """Units repeat their status every second: the writer stores what changed at once and an
    unchanged status at most every status_write_s; every status still reaches on_commit."""
    from cloud_relay.store.writer import StreamWriter

    store.ensure_unit("unit-exam-1")
    pushed: list[dict] = []
    w = StreamWriter(store, on_commit=lambda batch, st: pushed.extend(st.values()),
                     status_write_s=3600.0)
    w.start()

    def stored() -> dict:
        return store.units(["unit-exam-1"])[0]["status"]

    def put_and_wait(status: dict) -> None:
        n = len(pushed)
        w.put_status("unit-exam-1", status)
        deadline = time.monotonic() + 10
        while len(pushed) == n:
            assert time.monotonic() < deadline, "the status never reached on_commit"
            time.sleep(0.01)

    try:
        live = {"unit": "unit-exam-1", "online": True, "capture": "live", "at_us": 1}
        put_and_wait(live)
        assert stored() == live  # the first one is new
        put_and_wait({**live, "at_us": 2})
        assert stored() == live  # only the time changed: not stored again within the hour
        paused = {**live, "capture": "paused", "at_us": 3}
        put_and_wait(paused)
        assert stored() == paused  # a change is stored at once
        assert [p["at_us"] for p in pushed] == [1, 2, 3]  # the scribes got every one
    finally:
        w.stop()


def test_closing_a_sqlite_store_stops_its_checkpointer_before_its_connections(tmp_path):
    """close() waits for the WAL checkpointer: closing the connection it was checkpointing
    on, from another thread, crashed the process (a segfault in a CI run's worker). Stores
    are opened and closed while the checkpointer is kept busy, and each close returns with
    the thread gone and nothing of the store left open."""
    import threading

    from cloud_relay.store import db as store_db

    for k in range(20):
        db = store_db.SqliteDb(tmp_path / f"relay-{k}.db")
        db.execute("CREATE TABLE t (x INTEGER)")
        db.execute("INSERT INTO t VALUES (1)")
        # (its first wake-up, 0.25 s after the store opened, checkpoints: close during it
        # or before it)
        db._checkpointer.join(0.25 if k % 2 else 0.0)
        db.close(compact=False)
        assert not db._checkpointer.is_alive()
        with pytest.raises(sqlite3.Error):
            db.query("SELECT x FROM t")
    assert not [t for t in threading.enumerate() if t.name == "sqlite-checkpoint"]
