"""The SQL behind accounts and the admin view, on SQLite and PostgreSQL: users created
once, tokens that slide and end, failed sign-in counters, invitations spent once, rooms,
the audit log's filters, settings, unit revocation; and migration 7 on a relay database
from before it (its rooms come along)."""

from __future__ import annotations

import sqlite3

import pytest

from cloud_relay.loginguard import Counter
from cloud_relay.passwords import Hasher
from cloud_relay.store import RoomExists, Store, UserExists, now_us
from cloud_relay.store.migrations import STEPS, TYPES


@pytest.fixture
def store(relay_store, tmp_path):
    s = Store.open(relay_store or f"sqlite:///{tmp_path / 'relay.db'}", str(tmp_path),
                   passwords=Hasher(weak_for_tests=True))
    yield s
    s.close()


def test_a_user_id_is_created_once(store):
    store.add_user("s1", "Scribe One", "scribe", "password-one")
    with pytest.raises(UserExists):
        store.add_user("s1", "Someone Else", "admin", "password-two")
    u = store.user("s1")
    assert (u.name, u.role) == ("Scribe One", "scribe")  # the first one stands
    assert [p["id"] for p in store.accounts.people()] == ["s1"]


def test_tokens_are_found_by_hash_slide_and_end(store):
    a = store.accounts
    store.add_user("s1", "S1", "scribe", "password-one")
    now = now_us()
    a.add_token("tok-1", "s1", expires_us=now + 10_000_000, max_us=now + 100_000_000)
    a.add_token("tok-2", "s1", expires_us=now + 10_000_000, max_us=now + 100_000_000)
    assert store.db.query("SELECT COUNT(*) FROM tokens WHERE token_hash='tok-1'")[0][0] == 0
    user, _expires, max_us = a.token("tok-1")
    assert user.id == "s1" and max_us == now + 100_000_000
    a.extend_token("tok-1", now + 50_000_000)
    assert a.token("tok-1")[1] == now + 50_000_000
    assert a.revoke_tokens("s1", keep="tok-2") == 1
    assert a.token("tok-1") is None and a.token("tok-2") is not None
    a.set_disabled("s1", True)
    assert a.token("tok-2") is None  # a disabled user's tokens sign nobody in
    assert store.user_for_token("tok-2") is None


def test_failed_sign_in_counters_and_trusted_addresses(store):
    a = store.accounts
    store.add_user("s1", "S1", "scribe", "password-one")
    a.put_counters({"a:x": Counter(3, 10), "u:y": Counter(1, 20)})
    a.put_counters({"a:x": Counter(4, 30)})
    assert a.counters(["a:x", "u:y", "nope"]) == {"a:x": Counter(4, 30), "u:y": Counter(1, 20)}
    a.clear_counter("a:x")
    assert a.forget_counters(25) == 1 and a.counters(["a:x", "u:y"]) == {}
    assert not a.trusted("s1", "10.0.0.1")
    a.trust_address("s1", "10.0.0.1")
    a.trust_address("s1", "10.0.0.1")
    assert a.trusted("s1", "10.0.0.1") and not a.trusted("s1", "10.0.0.2")


def test_an_invitation_sets_a_password_once_and_ends_sign_ins(store):
    a = store.accounts
    store.add_user("s1", "S1", "scribe", "password-one")
    a.add_token("tok", "s1", expires_us=now_us() + 10**7, max_us=now_us() + 10**8)
    a.add_invite("code-old", "s1", "reset", "admin", now_us() + 10**8)
    a.add_invite("code-new", "s1", "reset", "admin", now_us() + 10**8)  # replaces the old
    assert a.invite("code-old") is None
    assert a.open_invites() == {"s1": {"kind": "reset", "expires_us": pytest.approx(
        now_us() + 10**8, abs=10**7)}}
    assert a.use_invite("code-new", "s1", "new-hash")
    assert not a.use_invite("code-new", "s1", "other-hash")  # once
    assert a.pw_hash("s1") == ("new-hash", False) and a.token("tok") is None
    a.add_invite("code-late", "s1", "reset", "admin", now_us() - 1)
    assert not a.use_invite("code-late", "s1", "x")  # expired


def test_rooms_are_named_once_and_follow_their_units(store):
    c = store.clinic
    c.add_room("Exam 1")
    with pytest.raises(RoomExists):
        c.add_room("Exam 1")
    store.ensure_unit("u1", "Exam 1")
    store.ensure_unit("u2", "Lab")  # a room only named on a unit still shows
    assert [(r["name"], r["units"]) for r in c.rooms()] == [("Exam 1", ["u1"]), ("Lab", ["u2"])]
    assert c.rename_room("Exam 1", "Exam 1A") and store.unit("u1")["room"] == "Exam 1A"
    assert c.rename_room("Lab", "Lab 2")  # gets a row of its own now
    with pytest.raises(RoomExists):
        c.rename_room("Lab 2", "Exam 1A")
    assert c.delete_room("Exam 1A") == ["u1"]  # not while a unit is in it
    c.set_unit_room("u1", None)
    assert c.delete_room("Exam 1A") == [] and not c.room_exists("Exam 1A")


def test_the_audit_log_filters(store):
    for actor, action, target in [("admin", "user_created", "s1"), ("admin", "unit_revoked", "u1"),
                                  ("s1", "login", None), ("x", "user_role_changed", "s1"),
                                  ("admin", "userXcreated", "s9")]:
        store.audit(actor, action, target, {"k": 1})
    c = store.clinic
    assert [r["action"] for r in c.audit(actor="admin")] == ["userXcreated", "unit_revoked",
                                                              "user_created"]
    # "_" in a prefix is a literal underscore, not LIKE's any-character
    assert [r["action"] for r in c.audit(action="user_*")] == ["user_role_changed",
                                                                "user_created"]
    assert [r["actor"] for r in c.audit(target="s1")] == ["x", "admin"]
    rows = c.audit()
    assert [r["id"] for r in c.audit(before_id=rows[1]["id"], limit=2)] == \
        [rows[2]["id"], rows[3]["id"]]
    assert c.audit(since_us=now_us() + 10**9) == []
    assert len(c.audit(until_us=now_us() + 10**9)) == 5
    assert "unit_revoked" in c.audit_actions()


def test_settings_revocation_and_declined_requests(store):
    c = store.clinic
    assert c.setting("retention_days") is None
    c.put_setting("retention_days", "3.0")
    c.put_setting("retention_days", "5.0")
    assert c.setting("retention_days") == "5.0"
    store.ensure_unit("u1", "Exam 1")
    assert c.set_revoked("u1", "admin") and set(c.revocations()) == {"u1"}
    store.trust.add_token_request("r1", "u1", "unlock", {}, "tech1")
    assert c.decline_token_request("r1") and not c.decline_token_request("r1")


def test_migration_7_brings_an_older_relays_rooms(tmp_path):
    db = sqlite3.connect(tmp_path / "relay.db")
    db.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
               "applied_us BIGINT NOT NULL)")
    for version, name, statements in STEPS:
        if version >= 7:
            continue
        for sql in statements:
            db.execute(sql.format(**TYPES["sqlite"]))
        db.execute("INSERT INTO schema_version VALUES(?,?,0)", (version, name))
    db.execute("INSERT INTO units(id,room,created_us) VALUES('u1','Exam 1',5),('u2','Exam 1',3),"
               "('u3',NULL,1)")
    db.execute("INSERT INTO users(id,name,role,pw_hash,created_us) VALUES('a','A','admin','x',1)")
    db.commit()
    db.close()
    s = Store.open("", str(tmp_path))
    assert s.clinic.rooms() == [{"name": "Exam 1", "created_us": 3, "units": ["u1", "u2"]}]
    assert s.accounts.people()[0]["disabled"] is False
    s.close()
