"""Signing in to the real relay (its own process, a real broker): an existing id is
refused with 409 and a role change is its own audited action; thirty wrong passwords
slow the attacker down while the real user still signs in; a reset password ends every
old token and the live stream; sign-out, renewal, invitations; the WebSocket refuses
pages from other sites; API docs only for admins; the database is the relay user's own."""

from __future__ import annotations

import asyncio
import json
import stat
import time

import httpx
import pytest
import websockets
from support import wait_for


def login(relay, user, password, *, source="127.0.0.1"):
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=10) as c:
        return c.post(relay.url + "/api/login", json={"user": user, "password": password})


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def audit(relay, **q):
    return relay.api("GET", "/api/admin/audit", params={"limit": 500, **q}).json()


def test_an_existing_user_is_refused_with_409_and_a_role_change_is_its_own_action(relay):
    assert relay.api("POST", "/api/admin/users", json={
        "id": "s1", "name": "Scribe One", "role": "scribe", "password": "s1-password-1"}
    ).status_code == 200
    # the old bug: this turned the scribe into an admin with a new password
    r = relay.api("POST", "/api/admin/users", json={
        "id": "s1", "name": "Mallory", "role": "admin", "password": "mallory-password"})
    assert r.status_code == 409 and r.json()["detail"]["error"] == "user_exists"
    assert login(relay, "s1", "mallory-password").status_code == 401
    s1 = login(relay, "s1", "s1-password-1")
    assert s1.json()["role"] == "scribe"
    r = relay.api("PUT", "/api/admin/users/s1/role", json={"role": "tech"})
    assert r.json() == {"ok": True, "changed": True}
    changed = audit(relay, action="user_role_changed")
    assert [(a["target"], a["detail"]) for a in changed] == [("s1", {"from": "scribe",
                                                                     "to": "tech"})]
    # the role is in the next sign-in: the old token ended with the change
    assert httpx.get(relay.url + "/api/me", headers=bearer(s1.json()["token"])).status_code == 401
    # the only admin cannot be demoted (nobody could run the clinic)
    r = relay.api("PUT", "/api/admin/users/admin/role", json={"role": "scribe"})
    assert r.status_code == 409 and r.json()["detail"]["error"] == "last_admin"


def test_thirty_wrong_passwords_slow_the_attacker_and_the_real_user_still_signs_in(relay):
    relay.add_user("s1", "scribe", "s1-password-1")
    assert login(relay, "s1", "s1-password-1").status_code == 200  # the user's own place
    codes, checked, t0 = [], 0, time.monotonic()
    for i in range(30):
        r = login(relay, "s1", f"guess-{i:02d}-password", source="127.0.0.2")
        codes.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
            assert "try again in" in r.json()["detail"]["message"]
        else:
            checked += 1
    assert codes[:5] == [401] * 5  # an honest typo or five costs nothing
    assert codes.count(429) >= 20, codes  # then the attacker mostly waits...
    assert checked <= 8, codes  # ...and few guesses are even looked at
    assert time.monotonic() - t0 < 30
    # the real user, at their usual address, signs in at once
    assert login(relay, "s1", "s1-password-1").status_code == 200
    # at the attacked address the right password works once the back-off has passed
    wait = int(login(relay, "s1", "s1-password-1", source="127.0.0.2").headers.get(
        "Retry-After", "0"))
    assert wait <= 8
    time.sleep(wait + 0.2)
    assert login(relay, "s1", "s1-password-1", source="127.0.0.2").status_code == 200
    throttled = audit(relay, action="login_throttled")
    assert throttled and all(a["detail"]["address"] == "127.0.0.2" for a in throttled)


def test_throttled_answers_look_the_same_for_unknown_users(relay):
    for i in range(6):
        login(relay, "nobody-here", f"guess-{i}-password", source="127.0.0.3")
    r = login(relay, "nobody-here", "another-guess", source="127.0.0.3")
    assert r.status_code == 429  # an unknown name gets the same back-off: nothing to learn


async def _ws_until_closed(url, token):
    async with websockets.connect(url.replace("http", "ws", 1) + "/ws") as ws:
        await ws.send(json.dumps({"type": "hello", "token": token, "cursor": 0}))
        assert json.loads(await ws.recv())["type"] == "welcome"
        try:
            while True:
                msg = await asyncio.wait_for(ws.recv(), 20)
                if isinstance(msg, str) and json.loads(msg).get("type") == "error":
                    await ws.recv()
        except websockets.ConnectionClosed as e:
            return e.rcvd.code if e.rcvd else None


def test_a_reset_password_ends_every_old_token_and_the_live_stream(relay):
    import concurrent.futures

    relay.add_user("s1", "scribe", "s1-password-1")
    old = [login(relay, "s1", "s1-password-1").json()["token"] for _ in range(2)]
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        live = ex.submit(lambda: asyncio.run(_ws_until_closed(relay.url, old[0])))
        wait_for(lambda: audit(relay, action="ws_connected", actor="s1"), what="stream open")
        r = relay.api("POST", "/api/admin/users/s1/reset")
        assert r.status_code == 200 and r.json()["invite_path"].startswith("/console/invite.html#")
        for t in old:
            assert httpx.get(relay.url + "/api/me", headers=bearer(t)).status_code == 401
        assert live.result(30) == 4401  # the open stream ended too, within seconds
    assert login(relay, "s1", "s1-password-1").status_code == 401  # the old password is gone
    code = r.json()["invite_code"]
    info = httpx.post(relay.url + "/api/invitation", json={"code": code}).json()
    assert (info["user"], info["kind"]) == ("s1", "reset")
    r = httpx.post(relay.url + "/api/invitation/accept", json={"code": code,
                                                                "password": "short"})
    assert r.status_code == 400 and r.json()["detail"]["error"] == "weak_password"
    assert httpx.post(relay.url + "/api/invitation/accept", json={
        "code": code, "password": "a brand new password"}).status_code == 200
    assert httpx.post(relay.url + "/api/invitation/accept", json={
        "code": code, "password": "another new password"}).status_code == 404  # once
    assert login(relay, "s1", "a brand new password").status_code == 200


def test_an_invited_user_chooses_their_own_password(relay):
    r = relay.api("POST", "/api/admin/users", json={"id": "tech1", "name": "Field Tech",
                                                    "role": "tech"})
    code = r.json()["invite_code"]
    assert login(relay, "tech1", "").status_code == 401  # no password until they choose one
    assert httpx.post(relay.url + "/api/invitation/accept", json={
        "code": code, "password": "tech one's own password"}).status_code == 200
    assert login(relay, "tech1", "tech one's own password").json()["role"] == "tech"
    assert audit(relay, action="password_set", actor="tech1")


def test_own_password_change_ends_other_sign_ins_and_logout_ends_the_token(relay):
    relay.add_user("s1", "scribe", "s1-password-1")
    a, b = (login(relay, "s1", "s1-password-1").json()["token"] for _ in range(2))
    r = httpx.post(relay.url + "/api/me/password", headers=bearer(a), json={
        "old_password": "wrong-password", "new_password": "s1-password-2"})
    assert r.status_code == 403
    r = httpx.post(relay.url + "/api/me/password", headers=bearer(a), json={
        "old_password": "s1-password-1", "new_password": "s1-password-2"})
    assert r.status_code == 200
    assert httpx.get(relay.url + "/api/me", headers=bearer(b)).status_code == 401
    assert httpx.get(relay.url + "/api/me", headers=bearer(a)).status_code == 200
    renewed = httpx.post(relay.url + "/api/token/renew", headers=bearer(a)).json()["token"]
    assert httpx.get(relay.url + "/api/me", headers=bearer(a)).status_code == 401
    assert httpx.post(relay.url + "/api/logout", headers=bearer(renewed)).status_code == 200
    assert httpx.get(relay.url + "/api/me", headers=bearer(renewed)).status_code == 401


def test_tokens_end_when_unused(broker, tmp_path):
    from support import make_relay

    r = make_relay(tmp_path, broker, extra="token_idle_s = 2.0\ntoken_max_s = 3600.0\n")
    try:
        t = r.token("admin")
        got = login(r, "admin", "admin-password").json()
        assert got["expires_us"] - time.time() * 1e6 < 3e6
        assert httpx.get(r.url + "/api/me", headers=bearer(t)).status_code == 200
        time.sleep(2.5)
        assert httpx.get(r.url + "/api/me", headers=bearer(t)).status_code == 401
    finally:
        r.stop()


async def _ws_with_origin(url, origin):
    try:
        async with websockets.connect(url.replace("http", "ws", 1) + "/ws",
                                      origin=origin) as ws:
            await ws.send(json.dumps({"type": "hello", "token": "x", "cursor": 0}))
            return json.loads(await ws.recv())
    except websockets.InvalidStatus as e:
        return e.response.status_code


def test_the_websocket_refuses_pages_from_other_sites(relay):
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        foreign = ex.submit(lambda: asyncio.run(_ws_with_origin(
            relay.url, "https://evil.example"))).result(20)
        own = ex.submit(lambda: asyncio.run(_ws_with_origin(relay.url, relay.url))).result(20)
    assert foreign == 403
    assert own == {"type": "error", "error": "unauthorized"}  # let in; the token decides
    assert audit(relay, action="ws_origin_refused")[0]["detail"] == {
        "origin": "https://evil.example"}


def test_api_docs_are_for_admins_only_and_need_no_internet(relay):
    relay.add_user("s1", "scribe", "s1-password-1")
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(relay.url + path).status_code == 404
    assert httpx.get(relay.url + "/api/admin/openapi.json").status_code == 401
    assert relay.api("GET", "/api/admin/openapi.json", uid="s1").status_code == 403
    doc = relay.api("GET", "/api/admin/openapi.json").json()
    assert "/api/admin/users" in doc["paths"] and "/api/login" in doc["paths"]


def test_the_database_is_readable_by_the_relay_user_only(relay):
    data = relay.dir / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for f in data.glob("relay.db*"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


@pytest.mark.parametrize("value", ["=cmd|' /C calc'!A0", "+1", "@SUM(1)", "-2"])
def test_the_audit_csv_keeps_spreadsheet_formulas_inert(relay, value):
    login(relay, value, "whatever-password", source="127.0.0.4")  # the actor is what was typed
    r = relay.api("GET", "/api/admin/audit.csv", params={"action": "login_failed"})
    assert r.headers["content-type"].startswith("text/csv")
    assert 'attachment; filename="scribelink-audit-' in r.headers["content-disposition"]
    import csv
    import io

    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["id", "time_utc", "actor", "action", "target", "detail"]
    assert rows[1][2] == "'" + value and rows[1][3] == "login_failed"
