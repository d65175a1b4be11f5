"""The reverse-proxy alternative of docs/deploy.md, as written there: the relay's settings
block and nginx's site block (names, paths and ports substituted) in front of the real
relay and broker. The console and API answer over HTTPS through nginx, the sign-in
back-off counts against the real client's address (X-Forwarded-For from the proxy), the
scribe WebSocket works through the proxy with the page's own origin, and pages from
other sites are refused."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
import websockets
from support import make_broker, make_relay

from cloud_relay import broker as brk
from cloud_relay import pki

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "deploy.md").read_text()


def doc_block(kind: str) -> str:
    m = re.search(rf"<!-- deploy: {kind} -->\n```\w*\n(.*?)\n```", DOC, re.DOTALL)
    assert m, f"docs/deploy.md has no {kind} block"
    return m.group(1)


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    """The relay with the doc's settings, behind nginx with the doc's site, for this
    module's tests (each signs in as its own user or from its own address)."""
    if not shutil.which("nginx"):
        pytest.fail("nginx missing: run `make setup` (Debian's nginx)")
    tmp_path = tmp_path_factory.mktemp("proxied")
    broker = make_broker(tmp_path, ["unit-a"])
    nginx_port = brk.free_port()
    public = f"https://relay.test:{nginx_port}"
    relay = make_relay(tmp_path, broker, start=False)
    port = int(re.search(r"http_port = (\d+)", relay.config.read_text()).group(1))
    settings = doc_block("proxy-relay").replace("8080", str(port)).replace(
        "https://relay.clinic.example", public)
    relay.config.write_text(re.sub(r"http_port = \d+\n", "", relay.config.read_text())
                            + settings + "\n")
    relay.start()
    # the proxy's certificate for relay.test, from a CA the test client trusts
    ca = pki.CA.load(broker.pki["ca"], broker.pki["ca_key"])
    site_tls = pki.write_identity(ca, tmp_path / "nginx-tls", "relay", server_names=[
        "relay.test"], client=False)
    site = (doc_block("proxy-nginx")
            .replace("listen 443 ssl", f"listen 127.0.0.1:{nginx_port} ssl")
            .replace("relay.clinic.example", "relay.test")
            .replace("/etc/ssl/scribelink/relay.pem", str(site_tls.cert))
            .replace("/etc/ssl/scribelink/relay.key", str(site_tls.key))
            .replace("http://127.0.0.1:8080", f"http://127.0.0.1:{port}"))
    n = tmp_path / "nginx"
    n.mkdir()
    conf = n / "nginx.conf"
    temp = " ".join(f"{k}_temp_path {n / k};" for k in ("client_body", "proxy", "fastcgi",
                                                        "uwsgi", "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(f"{user}worker_processes 1;\ndaemon off;\npid {n / 'nginx.pid'};\n"
                    f"error_log {n / 'error.log'};\nevents {{ worker_connections 64; }}\n"
                    f"http {{\naccess_log off;\n{temp}\n{site}\n}}\n")
    proc = subprocess.Popen(["nginx", "-p", str(n), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=open(n / "stderr", "wb"))  # noqa: SIM115
    try:
        brk.wait_port(nginx_port, 10)
    except TimeoutError as e:
        proc.kill()
        raise AssertionError((n / "stderr").read_text() + (n / "error.log").read_text()) from e
    ctx = ssl.create_default_context(cafile=str(broker.pki["ca"]))
    yield relay, nginx_port, ctx, public
    proc.send_signal(signal.SIGQUIT)
    proc.wait(10)
    relay.stop()
    broker.stop()


def via_proxy(ctx, nginx_port: int, source: str = "127.0.0.1") -> httpx.Client:
    return httpx.Client(base_url=f"https://127.0.0.1:{nginx_port}", verify=ctx, timeout=10,
                        headers={"Host": f"relay.test:{nginx_port}"},
                        transport=httpx.HTTPTransport(verify=ctx, local_address=source))


SNI = {"sni_hostname": "relay.test"}


def test_the_console_and_api_answer_through_the_proxy(proxied):
    _relay, nginx_port, ctx, public = proxied
    with via_proxy(ctx, nginx_port) as c:
        r = c.get("/console/", extensions=SNI)
        assert r.status_code == 200 and "Scribelink console" in r.text
        assert r.headers["strict-transport-security"].startswith("max-age=")
        signed = c.post("/api/login", extensions=SNI, json={"user": "admin",
                                                             "password": "admin-password"})
        assert signed.status_code == 200
        info = c.get("/api/admin/relay", extensions=SNI, headers={
            "Authorization": f"Bearer {signed.json()['token']}"}).json()
        assert info["public_url"] == public  # what enrolment codes will carry


def test_the_back_off_counts_the_real_clients_address(proxied):
    relay, nginx_port, ctx, _ = proxied
    with via_proxy(ctx, nginx_port, source="127.0.0.7") as c:
        codes = [c.post("/api/login", extensions=SNI, json={
            "user": "admin", "password": f"wrong-{i}-password"}).status_code for i in range(8)]
    assert codes[:5] == [401] * 5 and 429 in codes
    failed = relay.api("GET", "/api/admin/audit", params={"action": "login_failed"}).json()
    assert {a["detail"]["address"] for a in failed} == {"127.0.0.7"}  # not the proxy's
    # the real admin, through the proxy from their own address, is not held back
    with via_proxy(ctx, nginx_port) as c:
        assert c.post("/api/login", extensions=SNI, json={
            "user": "admin", "password": "admin-password"}).status_code == 200


async def _ws(nginx_port: int, ctx, origin: str, token: str):
    try:
        # relay.test as the browser names it; the connection goes to this machine
        async with websockets.connect(f"wss://relay.test:{nginx_port}/ws", ssl=ctx,
                                      host="127.0.0.1", port=nginx_port, origin=origin) as ws:
            await ws.send(json.dumps({"type": "hello", "token": token, "cursor": 0}))
            return json.loads(await ws.recv())
    except websockets.InvalidStatus as e:
        return e.response.status_code


def test_the_scribe_websocket_works_through_the_proxy_for_its_own_pages_only(proxied):
    relay, nginx_port, ctx, public = proxied
    relay.add_user("s1", "scribe", "s1-password-1")
    token = relay.token("s1")
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        own = ex.submit(lambda: asyncio.run(_ws(nginx_port, ctx, public, token))).result(30)
        foreign = ex.submit(lambda: asyncio.run(_ws(nginx_port, ctx, "https://evil.example",
                                                    token))).result(30)
    assert own["type"] == "welcome" and own["user"] == "s1"
    assert foreign == 403
