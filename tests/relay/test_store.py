"""The store on SQLite and PostgreSQL: migrations, idempotent batches, commit-ordered
cursors under concurrent writers, O(1) queries for listings, retention purge."""

from __future__ import annotations

import sqlite3
import threading

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
