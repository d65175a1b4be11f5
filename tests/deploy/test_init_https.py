"""`cloud_relay init DIR --host relay.test --port P`, then `serve --config DIR/relay.toml`:
the console answers over HTTPS with the certificate init made, trusted through DIR/ca.pem
(the test maps relay.test to this machine: SNI and Host for httpx, --host-resolver-rules
and an NSS database trusting ca.pem for Chromium); plain HTTP on that port does not serve
it; the admin signs in with the password given at init. A second init changes nothing
and says so. The password, asked for on a terminal, is never echoed. A console opened
over plain http:// by a name that is not this machine's says exactly what to fix."""

from __future__ import annotations

import os
import pty
import select
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from console_support import CHROMIUM, CHROMIUM_ARGS, poll, screenshot
from deploykit import PASSWORD, clinic_relay_running, init

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


@pytest.fixture(scope="module")
def clinic_relay(tmp_path_factory):
    """One init'd relay host for this module's tests: they read it, and the one that
    re-runs init leaves it as init would (same CA, same settings)."""
    with clinic_relay_running(tmp_path_factory.mktemp("clinic"), "relay.test") as r:
        yield r


def snapshot(d: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(d.rglob("*"))
            if p.is_file() and "data" not in p.relative_to(d).parts}


def https(d: Path, port: int) -> httpx.Client:
    """A client that trusts DIR/ca.pem and reaches relay.test on this machine."""
    ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
    return httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ctx, timeout=10,
                        headers={"Host": f"relay.test:{port}"})


SNI = {"sni_hostname": "relay.test"}


def test_init_then_serve_answers_over_https_and_the_admin_signs_in(clinic_relay):
    d, port, _bp, first = clinic_relay
    with https(d, port) as c:
        r = c.get("/console/", extensions=SNI)
        assert r.status_code == 200 and "Scribelink console" in r.text
        assert r.headers["strict-transport-security"].startswith("max-age=")
        deadline = time.monotonic() + 20
        while not c.get("/healthz", extensions=SNI).json()["broker"]:
            assert time.monotonic() < deadline, "the relay did not reach init's broker"
            time.sleep(0.2)
        signed = c.post("/api/login", extensions=SNI, json={"user": "admin",
                                                             "password": PASSWORD})
        assert signed.status_code == 200 and signed.json()["role"] == "admin"
        me = c.get("/api/me", extensions=SNI,
                   headers={"Authorization": f"Bearer {signed.json()['token']}"})
        assert me.json()["user"] == "admin"
    # the certificate names relay.test, not the address: by address it does not verify
    with https(d, port) as c, pytest.raises(httpx.ConnectError,
                                            match="CERTIFICATE_VERIFY_FAILED"):
        c.get("/healthz")
    # and nothing else vouches for it (the system's trust store does not know it)
    with httpx.Client(timeout=10) as c, pytest.raises(httpx.ConnectError,
                                                      match="CERTIFICATE_VERIFY_FAILED"):
        c.get(f"https://127.0.0.1:{port}/healthz", extensions=SNI)
    # plain HTTP on that port does not serve the console
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/console/", timeout=5)
    except httpx.HTTPError:
        pass
    else:
        assert "Scribelink console" not in r.text
    # the next steps name the authority, on the admin's machine, never here
    assert "python -m scribelink.authority create" in first.stdout
    assert "never on this relay host" in first.stdout
    assert not list(d.rglob("*authority*"))


def test_a_second_init_changes_nothing_and_says_so(clinic_relay):
    d, port, bp, _ = clinic_relay
    before = snapshot(d)
    again = init(d, port, bp, {"SCRIBELINK_ADMIN_PASSWORD": "another password entirely"})
    assert again.returncode == 0, again.stderr
    assert "nothing to change" in again.stdout
    assert snapshot(d) == before
    other = init(d, port, bp + 1)
    assert other.returncode == 1 and "broker_port" in other.stderr
    # a missing file is made again from the same CA; the rest stays
    (d / "tls" / "relay-https.key").unlink()
    (d / "tls" / "relay-https.pem").unlink()
    fixed = init(d, port, bp)
    assert fixed.returncode == 0 and "made  tls/relay-https.pem" in fixed.stdout
    assert (d / "ca.key").read_bytes() == before[d / "ca.key"][1]


def test_keys_and_database_are_the_service_users_own(clinic_relay):
    d, *_ = clinic_relay
    for key in [d / "ca.key", *d.glob("tls/*.key")]:
        assert key.stat().st_mode & 0o777 == 0o600, key
    assert (d / "data").stat().st_mode & 0o777 == 0o700
    for f in (d / "data").glob("relay.db*"):
        assert f.stat().st_mode & 0o777 == 0o600, f
    assert (d / "ca.pem").stat().st_mode & 0o777 == 0o644
    units = (d / "systemd" / "scribelink-relay.service").read_text()
    assert "NoNewPrivileges=yes" in units and "ProtectSystem=strict" in units
    assert f"ExecStart={PY} -m cloud_relay serve --config {d}/relay.toml" in units


def test_the_password_asked_for_on_a_terminal_is_not_echoed(tmp_path):
    pid, fd = pty.fork()
    if pid == 0:  # the child: init on a terminal, no password in its environment
        env = {k: v for k, v in os.environ.items() if k != "SCRIBELINK_ADMIN_PASSWORD"}
        os.chdir(ROOT)
        os.execve(PY, [PY, "-m", "cloud_relay", "init", str(tmp_path / "relay"), "--host",
                       "relay.test", "--port", "18443"], env)
    seen = b""

    def read_until(token: bytes, timeout: float = 60) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while token not in seen:
            assert time.monotonic() < deadline, seen.decode(errors="replace")
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    break

    read_until(b"password for the first admin (admin): ")
    os.write(fd, PASSWORD.encode() + b"\n")
    read_until(b"again: ")
    os.write(fd, PASSWORD.encode() + b"\n")
    read_until(b"Next:")
    read_until(b"docs/deploy.md")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, seen.decode(errors="replace")
    assert PASSWORD.encode() not in seen
    assert b"made  admin admin" in seen


@pytest.fixture
def chromium_trusting(tmp_path, playwright_driver):
    """Chromium with relay.test mapped to this machine and a HOME whose NSS database
    trusts the given CA (as a clinic installs ca.pem on its machines)."""
    if not shutil.which("certutil"):
        pytest.fail("certutil missing: run `make setup` (Debian's libnss3-tools)")
    home = tmp_path / "home"
    nss = home / ".pki" / "nssdb"
    nss.mkdir(parents=True)
    subprocess.run(["certutil", "-d", f"sql:{nss}", "-N", "--empty-password"], check=True)

    def launch(ca: Path | None):
        if ca is not None:
            subprocess.run(["certutil", "-d", f"sql:{nss}", "-A", "-t", "C,,", "-n",
                            "clinic", "-i", str(ca)], check=True)
        return playwright_driver.chromium.launch(
            executable_path=CHROMIUM, env={**os.environ, "HOME": str(home)},
            args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP relay.test 127.0.0.1"])
    return launch


def test_chromium_opens_the_console_over_https_through_the_clinic_ca(clinic_relay,
                                                                     chromium_trusting):
    d, port, *_ = clinic_relay
    browser = chromium_trusting(d / "ca.pem")
    try:
        page = browser.new_page()
        page.goto(f"https://relay.test:{port}/console/")  # no certificate error: ca.pem
        assert page.evaluate("() => window.isSecureContext") is True
        page.fill("#signin-user", "admin")
        page.fill("#signin-password", PASSWORD)
        page.click("#signin-submit")
        page.wait_for_selector("#admin-tabs")
        assert page.query_selector("#insecure") is None
    finally:
        browser.close()


def test_a_console_on_plain_http_by_another_name_says_what_to_fix(relay, chromium_trusting):
    """The demo relay (plain HTTP on loopback), opened as http://relay.test: the browser
    calls that insecure, and the page says so -- visibly, with the address to use."""
    browser = chromium_trusting(None)
    port = relay.url.rsplit(":", 1)[1]
    try:
        page = browser.new_page()
        page.goto(f"http://relay.test:{port}/console/")
        poll(page, "() => document.getElementById('insecure')")
        assert page.is_visible("#insecure") and not page.is_visible("#signin")
        text = page.inner_text("#insecure")
        assert f"https://relay.test:{port}/console/" in text
        assert "ca.pem" in text and f"http://localhost:{port}/console/" in text
        assert page.get_attribute("#insecure-https", "href") == \
            f"https://relay.test:{port}/console/"
        page.set_viewport_size({"width": 1100, "height": 560})
        screenshot(page, "console-insecure.png")
    finally:
        browser.close()
