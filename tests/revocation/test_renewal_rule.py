"""The unit's certificate renewal rule and file handling (edge_agent/renew.py), pure and
fast: when to renew, how failures back off, when the clinic hears of it, and a crash at
any point of an install leaving a key and certificate that match."""

from __future__ import annotations

import pytest

from cloud_relay import pki
from edge_agent import renew as r

DAY = 86400.0
NB, NA = 1_000_000.0, 1_000_000.0 + 90 * DAY  # a 90-day certificate
P = r.Policy()


def test_it_waits_until_two_thirds_of_the_life_spread_by_the_units_jitter():
    d = r.decide(NB + DAY, NB, NA, r.State(), P, jitter=0.0)
    assert d.action == "wait" and d.until == pytest.approx(NB + 60 * DAY) and d.alarm is None
    late = r.decide(NB + DAY, NB, NA, r.State(), P, jitter=0.99)
    assert late.until == pytest.approx(NB + 60 * DAY + 0.99 * 0.05 * 90 * DAY)
    assert r.decide(NB + 60 * DAY, NB, NA, r.State(), P).action == "renew"


def test_failures_back_off_doubling_to_a_cap():
    st = r.State()
    now = NB + 61 * DAY
    waits = []
    for _ in range(10):
        st = r.failed(st, now, "relay unreachable")
        d = r.decide(now, NB, NA, st, P)
        assert d.action == "wait"
        waits.append(d.until - now)
        assert r.decide(d.until, NB, NA, st, P).action == "renew"  # and then it tries
    assert waits[:4] == [60, 120, 240, 480] and max(waits) == P.retry_max_s


def test_the_clinic_hears_when_expiry_is_near_and_renewal_keeps_failing():
    st = r.failed(r.State(), NA - 20 * DAY, "HTTP 503")
    assert r.decide(NA - 20 * DAY, NB, NA, st, P).alarm is None
    d = r.decide(NA - 13 * DAY, NB, NA, st, P)
    assert d.action == "renew" and "not renewed" in d.alarm and "HTTP 503" in d.alarm


def test_an_expired_or_refused_certificate_stops_renewing_and_says_enrol_again():
    d = r.decide(NA, NB, NA, r.State(), P)
    assert d.action == "stop" and "enrol it again" in d.alarm
    d = r.decide(NB + 61 * DAY, NB, NA, r.State(refused="refused: HTTP 403"), P)
    assert d.action == "stop" and "403" in d.alarm


def test_an_installed_certificate_is_confirmed_before_anything_else():
    st = r.State(confirm_pending=True)
    assert r.decide(NB + DAY, NB, NA, st, P).action == "confirm"
    st = r.failed(st, NB + DAY, "relay unreachable")
    assert r.decide(NB + DAY + 1, NB, NA, st, P).action == "wait"
    assert r.decide(NB + DAY + 60, NB, NA, st, P).action == "confirm"


def _pair(ca, name):
    key = pki.new_key()
    return pki.cert_pem(pki.issue(ca, key.public_key(), name, days=1)), pki.key_pem(key)


@pytest.mark.parametrize("crash_after", ["new_files", "key_replaced", "done"])
def test_a_crash_anywhere_in_an_install_leaves_a_matching_pair(tmp_path, crash_after):
    ca = pki.make_ca()
    cert, key = tmp_path / "unit.pem", tmp_path / "unit.key"
    old_c, old_k = _pair(ca, "exam-1")
    new_c, new_k = _pair(ca, "exam-1")
    cert.write_bytes(old_c)
    key.write_bytes(old_k)
    # the install's steps, stopped where a power cut would stop them
    (tmp_path / "unit.key.new").write_bytes(new_k)
    (tmp_path / "unit.pem.new").write_bytes(new_c)
    if crash_after in ("key_replaced", "done"):
        (tmp_path / "unit.key.new").replace(key)
    if crash_after == "done":
        (tmp_path / "unit.pem.new").replace(cert)
    r.recover(cert, key)
    assert r._matches(key.read_bytes(), cert.read_bytes())
    assert (cert.read_bytes(), key.read_bytes()) == (
        (old_c, old_k) if crash_after == "new_files" else (new_c, new_k))
    assert not list(tmp_path.glob("*.new"))


def test_install_keeps_the_old_pair_for_a_roll_back(tmp_path):
    ca = pki.make_ca()
    cert, key = tmp_path / "unit.pem", tmp_path / "unit.key"
    old_c, old_k = _pair(ca, "exam-1")
    new_c, new_k = _pair(ca, "exam-1")
    cert.write_bytes(old_c)
    key.write_bytes(old_k)
    r.install(cert, key, new_c, new_k)
    assert (cert.read_bytes(), key.read_bytes()) == (new_c, new_k)
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert r.roll_back(cert, key)
    assert (cert.read_bytes(), key.read_bytes()) == (old_c, old_k)
