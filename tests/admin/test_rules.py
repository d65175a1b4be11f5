"""The pure rules behind running the clinic: the sign-in back-off, the password hashes
(and their constant cost for unknown users), and the alerts clinic IT sees. No process,
no socket, no sleep: the clock is passed in."""

from __future__ import annotations

import time

import pytest

from cloud_relay import alerts, loginguard, passwords
from cloud_relay.loginguard import Counter, Policy

S = 1_000_000
NOW = 1_800_000_000 * S


def test_the_back_off_starts_after_the_allowance_and_doubles_to_a_cap():
    p = Policy()
    assert [loginguard.delay_s(n, 5, p) for n in range(4, 9)] == [0, 1, 2, 4, 8]
    assert loginguard.delay_s(40, 5, p) == p.max_delay_s


def test_one_address_guessing_one_user_waits_and_only_checked_failures_count():
    p = Policy()
    c = None
    for i in range(p.free_per_user_address):
        c = loginguard.after_failure(c, NOW + i, p)
    counters = {"user_address": c, "address": None, "user": None}
    assert loginguard.wait_s(counters, trusted=False, now_us=NOW + 10, policy=p) == \
        pytest.approx(1.0, abs=1e-4)
    # the wait runs from the last checked failure; past it, the next attempt is checked
    assert loginguard.wait_s(counters, trusted=False, now_us=c.last_us + S, policy=p) == 0
    assert loginguard.after_failure(c, NOW + 20, p).failures == p.free_per_user_address + 1


def test_many_addresses_against_one_user_do_not_lock_out_the_users_own_address():
    p = Policy()
    user = Counter(p.free_per_user + 3, NOW)  # a distributed guess at one account
    counters = {"user_address": None, "address": None, "user": user}
    assert loginguard.wait_s(counters, trusted=False, now_us=NOW + 1, policy=p) > 7
    assert loginguard.wait_s(counters, trusted=True, now_us=NOW + 1, policy=p) == 0


def test_counters_are_forgotten_after_a_day():
    p = Policy()
    old = Counter(50, NOW)
    later = NOW + int(p.forget_after_s * S) + 1
    assert loginguard.wait_s({"address": old}, trusted=False, now_us=later, policy=p) == 0
    assert loginguard.after_failure(old, later, p).failures == 1


def test_counter_keys_hide_what_was_typed_and_keep_kinds_apart():
    k = loginguard.keys("admin\x00'; DROP", "10.0.0.7")
    assert all(v.split(":")[0] in ("ua", "a", "u") and len(v) < 40 for v in k.values())
    assert len(set(k.values())) == 3
    assert loginguard.keys("admin", "10.0.0.7")["address"] == \
        loginguard.keys("other", "10.0.0.7")["address"]


def test_passwords_verify_only_themselves_and_old_scrypt_hashes_still_work():
    h = passwords.Hasher(weak_for_tests=True)
    stored = h.hash("long enough password")
    assert stored.startswith("$argon2id$")
    assert h.verify(stored, "long enough password")
    assert not h.verify(stored, "long enough passwore")
    assert not h.verify(None, "long enough password")
    assert not h.verify(passwords.NO_PASSWORD, "")
    import hashlib

    salt = bytes(16)
    legacy = "scrypt$" + salt.hex() + "$" + hashlib.scrypt(b"old-password", salt=salt, n=2**14,
                                                          r=8, p=1, dklen=32).hex()
    assert h.verify(legacy, "old-password") and not h.verify(legacy, "old-passwore")
    assert h.needs_rehash(legacy)


def test_the_real_hash_is_argon2id_at_rfc9106_strength():
    stored = passwords.Hasher().hash("long enough password")
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


def test_an_unknown_user_costs_what_a_wrong_password_costs():
    """The timing oracle (68 ms vs 4 ms before): an unknown user runs the same Argon2id
    check against a dummy hash. Medians of several runs, generous bounds (a loaded
    machine), against a ratio that was 17x."""
    h = passwords.Hasher()
    stored = h.hash("the real password")
    h.verify(None, "warm up")  # the dummy is made on first use

    def median(fn) -> float:
        runs = []
        for _ in range(5):
            t = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t)
        return sorted(runs)[2]

    wrong = median(lambda: h.verify(stored, "a wrong password"))
    unknown = median(lambda: h.verify(None, "a wrong password"))
    assert 0.5 < unknown / wrong < 2.0, (unknown, wrong)


def test_new_passwords_have_a_minimum_length():
    with pytest.raises(passwords.PasswordError, match="at least 10"):
        passwords.check_new("short")
    assert passwords.check_new("ten chars!") == "ten chars!"


def unit(**kw):
    return {"id": "u1", "room": "Exam 1", "state": "live", "status": {}, "status_at_us": NOW,
            **kw}


def test_alerts_name_what_clinic_it_must_look_at():
    day = 86400 * S
    got = alerts.fleet_alerts([
        unit(id="off", state="offline", status={"online": False}),
        unit(id="spool", status={"spool": {"seconds": 900}}),
        unit(id="mic", status={"mics": {"dead": [2, 3]}}),
        unit(id="cert", cert_not_after_us=NOW + 5 * day),
        unit(id="cert-ok", cert_not_after_us=NOW + 300 * day),
        unit(id="disk", status={"alarms": ["spool_disk_full", "unknown_thing"]}),
        unit(id="gone", state="offline", revoked_us=NOW),  # revoked: nobody expects it
        unit(id="new", state="offline", status=None),  # pre-registered, never enrolled
        unit(id="lost", state="offline", status=None, enrolled_us=NOW - day),
    ], NOW)
    by = {(a.unit, a.kind): a for a in got}
    assert set(by) == {("off", "unit_offline"), ("spool", "spool_filling"),
                       ("mic", "mic_dead"), ("cert", "cert_expiring"),
                       ("disk", "unit_alarm"), ("lost", "unit_offline")}
    assert by[("cert", "cert_expiring")].severity == "critical"
    assert "5 days" in by[("cert", "cert_expiring")].message
    assert "2, 3" in by[("mic", "mic_dead")].message
    assert by[("lost", "unit_offline")].message == "enrolled but has never connected"
    assert [a.severity for a in got] == sorted(a.severity for a in got)  # critical first
