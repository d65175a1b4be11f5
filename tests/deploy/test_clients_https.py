"""The tools reach the relay over HTTPS and WSS, trusting the clinic's ca.pem, and refuse
plain http:// to anything but this machine: the reference scribe client, scripts/provision
and the authority tool."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess

import httpx
import pytest
from deploykit import PASSWORD, PY, ROOT
from support import wait_for

from scribelink import relayurl


@pytest.mark.parametrize("url,ok", [
    ("https://relay.clinic.example", True), ("https://10.0.0.5:8443/", True),
    ("http://127.0.0.1:8080", True), ("http://localhost:8080", True), ("http://[::1]:80", True),
    ("http://relay.clinic.example", False), ("http://10.0.0.5:8080", False),
    ("ftp://relay", False), ("relay.clinic.example", False)])
def test_plain_http_only_to_this_machine(url, ok):
    if ok:
        assert relayurl.check(url) == url.rstrip("/")
    else:
        with pytest.raises(relayurl.InsecureRelayUrl):
            relayurl.check(url)


def test_the_tools_refuse_plain_http_to_another_machine(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("whatever-password")
    r = subprocess.run([PY, "-m", "cloud_relay.scribe_client", "--relay",
                        "http://relay.clinic.example:8080", "--user", "s1", "--password-file",
                        str(pw), "--key", str(tmp_path / "key.pem")], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "refusing plain http:// to relay.clinic.example" in r.stderr
    assert not (tmp_path / "key.pem").exists()  # it stopped before anything else
    r = subprocess.run([PY, str(ROOT / "scripts" / "provision"), "login", "--relay",
                        "http://relay.clinic.example", "--user", "tech1", "--password-file",
                        str(pw)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "refusing plain http:// to relay.clinic.example" in r.stdout + r.stderr
    # a name that merely starts like this machine's is another machine
    r = subprocess.run([PY, "-m", "scribelink.authority", "register", "--key",
                        str(tmp_path / "none.json"), "--relay", "http://localhost.evil.example",
                        "--user", "admin", "--password-file", str(pw)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "refusing plain http:// to localhost.evil.example" in r.stderr


def test_the_reference_client_signs_in_and_streams_over_https_and_wss(clinic_relay_for,
                                                                       tmp_path):
    d, port, *_ = clinic_relay_for("localhost")
    url = f"https://localhost:{port}"
    # the admin registers the clinic authority with its tool, over HTTPS through ca.pem
    admin_pw = tmp_path / "admin.pw"
    admin_pw.write_text(PASSWORD)
    tool_env = {**os.environ, "SCRIBELINK_CA_FILE": str(d / "ca.pem"),
                "SCRIBELINK_AUTHORITY_PASSPHRASE": "the authority's passphrase"}
    key = str(tmp_path / "authority.json")
    for args in (["create", "--key", key],
                 ["register", "--key", key, "--relay", url, "--user", "admin",
                  "--password-file", str(admin_pw)]):
        r = subprocess.run([PY, "-m", "scribelink.authority", *args], cwd=ROOT, env=tool_env,
                           capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
    pw = tmp_path / "s1.pw"
    pw.write_text("scribe one's password")
    subprocess.run([PY, "-m", "cloud_relay", "add-user", "--config", str(d / "relay.toml"),
                    "--id", "s1", "--name", "Scribe One", "--role", "scribe",
                    "--password-file", str(pw)], cwd=ROOT, check=True, capture_output=True)
    log = tmp_path / "client.log"
    client = subprocess.Popen(
        [PY, "-m", "cloud_relay.scribe_client", "--relay", f"https://localhost:{port}",
         "--ca-file", str(d / "ca.pem"), "--user", "s1", "--password-file", str(pw),
         "--key", str(tmp_path / "key.pem")], cwd=ROOT, stdout=open(log, "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT)
    try:
        with httpx.Client(verify=ssl.create_default_context(cafile=str(d / "ca.pem")),
                          timeout=10) as c:
            token = c.post(url + "/api/login", json={"user": "admin", "password": PASSWORD}
                           ).json()["token"]
            h = {"Authorization": f"Bearer {token}"}
            # its device registered over HTTPS, and its stream opened over WSS
            wait_for(lambda: [dev for dev in c.get(url + "/api/admin/devices", headers=h
                                                   ).json() if dev["user"] == "s1"], 30,
                     "the client's device")
            wait_for(lambda: c.get(url + "/api/admin/audit", headers=h, params={
                "action": "ws_connected", "actor": "s1"}).json(), 30, "its WSS stream")
        assert "relay_unreachable" not in log.read_text()
    finally:
        client.send_signal(signal.SIGTERM)
        client.wait(15)
    assert (tmp_path / "key.pem").exists()
