"""The clinic admin runs the fleet from the admin view, in headless Chromium against the real
relay (its own process) and broker: unlocks the clinic authority's key file in the page
and registers it; adds a room, a unit and a scribe (who sets their own password from the
invitation link); approves the scribe's new device; makes an enrolment code (with its QR)
that a tech then really enrols the unit with; assigns the scribe; revokes the unit; and
finds each step in the audit log, filters it and exports it as CSV. Everything the clinic
authority must sign is signed in the page: the test checks each statement against the
authority's public key. Screenshots: admin-*.png (docs/screenshots via scripts/screenshots).
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import httpx
import pytest
from adminkit import enrol_with_secret
from console_support import open_console, poll, screenshot
from support import make_relay

from cloud_relay.store import Store
from scribelink import enrolcode, trust
from scribelink.authority import ClinicAuthority

PASSPHRASE = "the clinic's long passphrase"


@pytest.fixture
def clinic(tmp_path, broker):
    crl = tmp_path / "crl.pem"
    relay = make_relay(tmp_path, broker, extra=f'broker_crl_file = "{crl}"\n')
    relay.add_user("tech1", "tech", "tech-password-1")
    auth = ClinicAuthority.create()
    key_file = tmp_path / "clinic-authority.json"
    auth.save(key_file, PASSPHRASE)
    yield relay, auth, key_file, crl
    relay.stop()


def tab(page, name):
    page.click(f'#admin-tabs button[data-tab="{name}"]')


def confirm(page):
    page.click('#admin-dialog button[data-value="true"]')


def close_dialog(page, dialog_id):
    page.click(f'#{dialog_id} button[data-value="cancel"]')
    poll(page, f"() => !document.getElementById('{dialog_id}')")


def relay_db(relay) -> Store:
    """A reader on the relay's own database: what the page signed, as the relay stored it."""
    return Store.open("", str(relay.dir / "data"))


def test_the_admin_runs_the_fleet_and_every_step_is_audited(clinic, context):
    relay, auth, key_file, crl = clinic
    page = open_console(context, relay.url, "admin", "admin-password")
    page.wait_for_selector("#kpis .kpi")

    # the authority: unlocked in this page, registered with the relay (public key only)
    assert "locked" in page.inner_text("#authority-state")
    page.set_input_files("#authority-file", str(key_file))
    page.fill("#authority-passphrase", PASSPHRASE)
    page.click("#authority-unlock-button")
    page.wait_for_selector("#authority-register")
    assert auth.key_id in page.inner_text("#authority-state")
    page.click("#authority-register")
    poll(page, "() => document.getElementById('authority-fingerprint')")
    assert page.inner_text("#authority-fingerprint") == auth.fingerprint
    assert relay.api("GET", "/api/trust").json()["authority"] == auth.public_b64()
    screenshot(page, "admin-overview.png")

    # a room, and a unit pre-registered in it
    tab(page, "rooms")
    page.fill("#room-new-name", "Exam 3")
    page.click("#room-add-button")
    page.wait_for_selector('#rooms tr[data-room="Exam 3"]')
    tab(page, "units")
    page.fill("#unit-new-id", "exam-3-unit")
    page.select_option("#unit-new-room", "Exam 3")
    page.click("#unit-add-button")
    row = page.wait_for_selector('#units tr[data-unit="exam-3-unit"]')
    assert "not enrolled" in row.inner_text() and "Exam 3" in row.inner_text()

    # a scribe, invited: they choose their own password from the link
    tab(page, "people")
    page.fill("#person-new-id", "scribe3")
    page.fill("#person-new-name", "Sam Scribe")
    page.select_option("#person-new-role", "scribe")
    page.click("#person-add-button")
    link = page.wait_for_selector("#invite-link").inner_text()
    assert link.startswith(relay.url + "/console/invite.html#")
    close_dialog(page, "invite-dialog")
    invited = context.new_page()
    invited.goto(link)
    invited.wait_for_selector("#invite-submit:not([disabled])")
    assert "Sam Scribe" in invited.inner_text("#invite-who")
    assert "#" not in invited.url  # the code left the address bar
    invited.fill("#invite-password", "sam's own long password")
    invited.fill("#invite-again", "sam's own long password")
    invited.click("#invite-submit")
    invited.wait_for_selector("#invite-done:not([hidden])")
    invited.close()
    token = httpx.post(relay.url + "/api/login", json={
        "user": "scribe3", "password": "sam's own long password"}).json()["token"]

    # the scribe's browser registers a device; the admin approves it (signed in the page)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from scribelink import envelope as env

    dev = httpx.put(relay.url + "/api/me/device", headers={"Authorization": f"Bearer {token}"},
                    json={"enc_key": trust.b64(env.public_key_raw(X25519PrivateKey.generate())),
                          "sign_key": trust.b64(trust.ed25519_raw(
                              Ed25519PrivateKey.generate())),
                          "label": "Sam's laptop"}).json()["device"]
    page.wait_for_selector(f'#pending-devices tr[data-device="{dev}"] button[data-action="approve"]'
                           ).click()
    page.wait_for_selector(f'#people tr[data-user="scribe3"] li[data-device="{dev}"]')
    poll(page, f"""() => (document.querySelector('#people li[data-device="{dev}"]') || {{}})
                         .textContent?.includes('endorsed')""")
    endorsed = next(d for d in relay.api("GET", "/api/admin/devices").json()
                    if d["device"] == dev)
    assert endorsed["endorsed_by"] == "authority"
    screenshot(page, "admin-people.png")

    # an enrolment code for the unit, made in the page, and its QR
    tab(page, "units")
    page.click('#units tr[data-unit="exam-3-unit"] button[data-action="code"]')
    text = page.wait_for_selector("#enrol-code-text").inner_text()
    assert page.query_selector("#enrol-qr svg path") is not None
    screenshot(page, "admin-enrolment-code.png")
    close_dialog(page, "enrol-dialog")
    code = enrolcode.parse(text)
    assert (code.unit_id, code.room, code.authority) == ("exam-3-unit", "Exam 3",
                                                         auth.public_raw)
    assert code.relay_url == relay.url and code.broker_url == broker_url(relay)
    # the tech enrols the unit with it, through the relay's enrolment API
    db = relay_db(relay)
    code_id = relay.api("GET", "/api/admin/fleet").json()[0]["codes"][0]["code_id"]
    grant = db.trust.grant(code_id)
    trust.Statement.from_dict(grant).verify(auth.key.public_key(), t=trust.GRANT)
    enrolled = enrol_with_secret(relay.url, relay.token("tech1"), grant, code.secret,
                                 "exam-3-unit")
    poll(page, """() => (document.querySelector('#units tr[data-unit="exam-3-unit"] td.enrolment')
                         || {}).textContent?.includes('enrolled')""")

    # the scribe assigned to the unit: a signed assignment
    tab(page, "assign")
    page.check('#assign tr[data-unit="exam-3-unit"] input[data-scribe="scribe3"]')
    page.click('#assign button[data-save="exam-3-unit"]')
    poll(page, "() => document.getElementById('admin-note').textContent.includes('assigned')")
    st = db.trust.assignment("exam-3-unit")
    assert trust.verify_assignment(auth.key.public_key(), st, "exam-3-unit")["scribes"] == [
        "scribe3"]

    # the unit revoked: its signing key in the authority's list, its certificate in the CRL
    tab(page, "units")
    page.click('#units tr[data-unit="exam-3-unit"] button[data-action="revoke"]')
    confirm(page)
    page.wait_for_selector('#units tr.revoked[data-unit="exam-3-unit"]')
    rv = trust.verify_revocations(auth.key.public_key(),
                                  relay.api("GET", "/api/trust").json()["revocations"])
    assert rv.unit_revoked("exam-3-unit", enrolled["key_id"], trust_now())
    from cryptography import x509

    assert x509.load_pem_x509_crl(crl.read_bytes()).get_revoked_certificate_by_serial_number(
        enrolled["cert"].serial_number) is not None
    screenshot(page, "admin-units.png")
    db.close()

    # every step in the audit log, filtered, and exported
    tab(page, "audit")
    steps = ["authority_registered", "room_created", "unit_registered", "user_created",
             "password_set", "device_endorsed", "enroll_code_created", "unit_enrolled",
             "assignment_set", "unit_revoked"]
    poll(page, f"""() => {steps!r}.every((a) =>
                     document.querySelector(`#audit tr[data-action="${{a}}"]`))""", 15)
    screenshot(page, "admin-audit.png")
    page.select_option("#audit-action", "unit_revoked")
    page.click("#audit-apply")
    poll(page, """() => [...document.querySelectorAll('#audit tbody tr')].every(
                     (r) => r.dataset.action === 'unit_revoked')""")
    assert page.inner_text("#audit tbody").count("exam-3-unit") == 1
    with page.expect_download() as dl:
        page.click("#audit-csv")
    rows = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text())))
    assert [r["action"] for r in rows] == ["unit_revoked"]
    assert rows[0]["target"] == "exam-3-unit" and rows[0]["actor"] == "admin"


def broker_url(relay) -> str:
    return next(line.split('"')[1] for line in relay.config.read_text().splitlines()
                if line.startswith("broker_url"))


def trust_now() -> int:
    return time.time_ns() // 1000


def test_a_wrong_passphrase_says_so_and_unlocks_nothing(clinic, context):
    relay, _auth, key_file, _ = clinic
    page = open_console(context, relay.url, "admin", "admin-password")
    page.set_input_files("#authority-file", str(key_file))
    page.fill("#authority-passphrase", "not the passphrase")
    page.click("#authority-unlock-button")
    # PBKDF2 at 600,000 iterations takes a moment, longer on a loaded machine
    poll(page, "() => document.getElementById('admin-error').textContent", 30)
    assert "wrong passphrase" in page.inner_text("#admin-error")
    assert "locked" in page.inner_text("#authority-state")
    # and nothing that needs the authority can be done while it is locked
    tab(page, "rooms")
    page.fill("#room-new-name", "Exam 1")
    page.click("#room-add-button")
    tab(page, "units")
    page.fill("#unit-new-id", "exam-1-unit")
    page.click("#unit-add-button")
    page.wait_for_selector('#units tr[data-unit="exam-1-unit"]')
    page.click('#units tr[data-unit="exam-1-unit"] button[data-action="code"]')
    page.wait_for_selector("#code-room")  # which room: the unit has none yet
    confirm(page)
    poll(page, "() => document.getElementById('admin-error').textContent.includes('Unlock')")
    assert relay.api("GET", "/api/admin/fleet").json()[0]["codes"] == []


def test_the_api_description_is_in_the_admin_view(clinic, context):
    relay, *_ = clinic
    page = open_console(context, relay.url, "admin", "admin-password")
    tab(page, "api")
    page.wait_for_selector('#apidocs tr[data-path="/api/admin/users"][data-method="post"]')
    assert "A new account" in page.inner_text(
        '#apidocs tr[data-path="/api/admin/users"][data-method="post"]')
    assert page.query_selector('#apidocs tr[data-path="/api/login"]') is not None


def test_the_login_page_explains_a_throttled_sign_in(clinic, context):
    relay, *_ = clinic
    page = open_console(context, relay.url)
    for i in range(6):
        page.fill("#signin-user", "admin")
        page.fill("#signin-password", f"wrong-password-{i}")
        page.click("#signin-submit")
        poll(page, "() => document.getElementById('signin-error').textContent")
        page.evaluate("() => { document.getElementById('signin-error').textContent = ''; }")
    page.fill("#signin-password", "wrong-password-x")
    page.click("#signin-submit")
    poll(page, "() => document.getElementById('signin-error').textContent")
    assert "too many failed sign-ins" in page.inner_text("#signin-error")
