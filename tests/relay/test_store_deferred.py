"""A new SQLite store is made without the tables of features it may never use (fleet
updates, diagnostics, enrolment codes, ...): a read answers as the empty table would and
makes nothing; the first write makes the table exactly as the migration steps define it;
a later step that changes such a table still finds it. (SQLite only: PostgreSQL makes
every table.)"""

from __future__ import annotations

import sqlite3
import time

import pytest

from cloud_relay.store import Store, migrations
from cloud_relay.store.migrations import DEFERRED, STEPS, deferred_schema


def _tables(path) -> set[str]:
    with sqlite3.connect(path) as c:
        return {r[0] for r in c.execute("SELECT name FROM sqlite_schema WHERE type='table'")}


def _schema_of(path, tables) -> set[tuple]:
    with sqlite3.connect(path) as c:
        return {tuple(r) for r in c.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_schema WHERE tbl_name IN "
            f"({','.join('?' * len(tables))})", sorted(tables))}


def _eager_store(tmp_path) -> Store:
    """A store whose file existed before the relay first opened it (as one made by an
    older relay did): every step's table is kept."""
    d = tmp_path / "eager"
    d.mkdir()
    with sqlite3.connect(d / "relay.db") as c:
        c.execute("PRAGMA page_size=512")  # as a new store's
        c.execute("CREATE TABLE scratch (x)")
        c.execute("DROP TABLE scratch")
    return Store.open("", str(d))


@pytest.fixture
def store(tmp_path):
    s = Store.open("", str(tmp_path))
    yield s
    s.close()


def test_a_new_store_lacks_them_and_reads_make_none(store, tmp_path):
    path = tmp_path / "relay.db"
    assert not _tables(path) & DEFERRED
    assert set(deferred_schema(STEPS[-1][0])) == DEFERRED  # each a table the steps make

    now = time.time_ns() // 1000
    assert store.clinic.setting("retention_days") is None
    assert store.accounts.counters(["a:1", "u:x"]) == {}
    store.accounts.clear_counter("a:1")
    assert store.accounts.forget_counters(now) == 0
    assert store.certs.crl_entries(now) == []
    assert store.certs.get("01") is None and store.certs.of("unit-1") == []
    assert store.fleet.releases() == [] and store.fleet.offers() == []  # offers joins releases
    assert store.fleet.reports() == [] and store.fleet.diagnostics_list() == []
    assert store.clinic.enrolments() == {} and store.clinic.open_codes() == {}
    assert store.accounts.open_invites() == {}
    store.fleet.diagnostics_uploaded("nope", 10)  # an UPDATE of nothing
    assert not _tables(path) & DEFERRED, "a read made a table"


def test_the_new_store_is_smaller_by_their_pages(store, tmp_path):
    eager = _eager_store(tmp_path)
    try:
        eager.db.execute("VACUUM")
        store.db.execute("VACUUM")
        pages = [s.db.query("PRAGMA page_count")[0][0] for s in (store, eager)]
    finally:
        eager.close()
    assert pages[0] + 2 * len(DEFERRED) <= pages[1], pages  # a table and its schema row


def test_the_first_write_makes_the_table_as_the_steps_define_it(store, tmp_path):
    store.clinic.put_setting("retention_days", "30")
    assert store.clinic.setting("retention_days") == "30"
    assert _tables(tmp_path / "relay.db") & DEFERRED == {"settings"}

    store.fleet.add_release("r1", "1.2.0", ["pi4"], None, 10, "admin")  # inside a transaction:
    store.fleet.add_offer("o1", "r1", {"all": True}, None, "admin", ["unit-1", "unit-2"])
    offers = [(o["id"], o["version"], o["units"]) for o in store.fleet.offers()]
    assert offers == [("o1", "1.2.0", 2)]
    with pytest.raises(sqlite3.IntegrityError):  # the foreign key holds on a made table
        store.fleet.add_offer("o2", "no-such-release", {}, None, "admin", [])

    for table in sorted(DEFERRED):  # the rest, as a first write would make them
        store.db.make_table(table)
    eager = _eager_store(tmp_path)
    try:
        assert _schema_of(tmp_path / "relay.db", DEFERRED) == \
            _schema_of(tmp_path / "eager" / "relay.db", DEFERRED)
    finally:
        eager.close()


def test_a_statement_that_also_reads_a_table_the_file_has_is_answered_right(store, tmp_path):
    store.db.execute("INSERT INTO units(id, room, created_us) VALUES('unit-1', 'Exam 1', 1)")
    rows = store.db.query("SELECT u.id, ou.state FROM units u LEFT JOIN offer_units ou ON "
                          "ou.unit_id=u.id")
    assert rows == [("unit-1", None)]  # not [] : the missing table reads as empty
    assert store.db.query("SELECT COUNT(*), MAX(size) FROM releases") == [(0, None)]
    assert store.db.execute("UPDATE units SET room='X' WHERE id IN (SELECT unit_id FROM "
                            "offer_units)") == 0
    assert store.clinic.revoked_cert_pems() == []  # enroll_codes JOIN units
    assert store.db.query("SELECT room FROM units") == [("Exam 1",)]
    with pytest.raises(sqlite3.OperationalError, match="no such table: nonesuch"):
        store.db.query("SELECT * FROM nonesuch")  # not deferred: the error as ever


def test_a_second_relay_on_the_file_sees_what_the_first_made(store, tmp_path):
    other = Store.open("", str(tmp_path))
    try:
        assert other.clinic.setting("k") is None  # answered from its empty tables
        store.clinic.put_setting("k", "v")
        assert other.clinic.setting("k") == "v"
        other.clinic.put_setting("k", "w")  # the table is there now: no second make
        assert store.clinic.setting("k") == "w"
    finally:
        other.close()


def test_a_later_step_that_changes_a_missing_table_finds_it(tmp_path, monkeypatch):
    Store.open("", str(tmp_path)).close()  # a store at the current version, without offers
    assert "offers" not in _tables(tmp_path / "relay.db")
    later = (STEPS[-1][0] + 1, "offers get a note", ["ALTER TABLE offers ADD COLUMN note TEXT"])
    monkeypatch.setattr(migrations, "STEPS", [*STEPS, later])
    deferred_schema.cache_clear()
    try:
        s = Store.open("", str(tmp_path))
        try:
            assert s.schema_version == later[0]
            cols = [r[1] for r in s.db.query("PRAGMA table_info(offers)")]
            assert cols[-1] == "note"
        finally:
            s.close()
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        s = Store.open("", str(fresh))  # a new store makes offers with the note too
        try:
            s.fleet.add_release("r1", "1.0", ["pi4"], None, 1, "admin")
            s.fleet.add_offer("o1", "r1", {}, None, "admin", [])
            assert [r[1] for r in s.db.query("PRAGMA table_info(offers)")][-1] == "note"
        finally:
            s.close()
    finally:
        deferred_schema.cache_clear()
