"""docs/deploy.md, run as written: every command block in order, in bash with `set -e`,
against a temporary directory and free ports. The variables of its "Names used below"
block get test values (the block must set exactly those). Blocks marked root run with
stand-ins for the root-only commands first on PATH (tests/deploy/shims: apt-get checks
the packages are Debian's, useradd checks the service user, install and systemctl work
on a fake root and run the units' own ExecStart lines, runuser runs as the test's
user); blocks marked admin run in another directory (the admin's machine); blocks marked
by hand are not run, and must say why. Afterwards: the relay answers over HTTPS with the
certificate init made, the admin signs in, the authority is registered, the enrolment
code the admin made names the unit and pins the authority, the tech was invited, the
backup restored into place, and the init password never appeared in any output."""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cloud_relay.broker import free_port
from scribelink import enrolcode

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "deploy.md"
SHIMS = Path(__file__).resolve().parent / "shims"
ENV_NAMES = {"SCRIBELINK", "RELAY_DIR", "RELAY_HOST", "RELAY_PORT", "BROKER_PORT",
             "BACKUP_DIR"}
ADMIN_PASSWORD = "first admin's password, long"
PASSPHRASE = "the clinic authority's passphrase"
BLOCK = re.compile(r"<!-- deploy: (?P<kind>[^>]*?) -->\n```(?P<lang>\w*)\n(?P<body>.*?)\n```",
                   re.DOTALL)


def blocks() -> list[tuple[str, str, str]]:
    return [(m["kind"].strip(), m["lang"], m["body"]) for m in BLOCK.finditer(DOC.read_text())]


def test_every_command_block_is_marked_and_hand_steps_say_why():
    marked = len(blocks())
    fenced = len(re.findall(r"^```\w+$", DOC.read_text(), re.MULTILINE))
    assert marked == fenced, "a code block in docs/deploy.md has no <!-- deploy: ... --> marker"
    kinds = [k for k, _, _ in blocks()]
    for k in kinds:
        assert k in ("root", "run", "admin", "env", "proxy-relay", "proxy-nginx") or \
            re.fullmatch(r"by hand \(.{10,}\)", k), k
    assert sum(k.startswith("by hand") for k in kinds) <= 3  # the rest is run


@pytest.fixture
def machine(tmp_path):
    state, fake_root = tmp_path / "shim-state", tmp_path / "fake-root"
    state.mkdir()
    (fake_root / "etc/systemd/system").mkdir(parents=True)  # as on any Debian host
    env = {**os.environ,
           "SCRIBELINK": sys.executable,
           "RELAY_DIR": str(tmp_path / "var/lib/scribelink/relay"),
           "RELAY_HOST": "localhost", "RELAY_PORT": str(free_port()),
           "BROKER_PORT": str(free_port()), "BACKUP_DIR": str(tmp_path / "backups"),
           "SCRIBELINK_ADMIN_PASSWORD": ADMIN_PASSWORD,
           "SCRIBELINK_AUTHORITY_PASSPHRASE": PASSPHRASE,
           "TEST_ROOT": str(tmp_path), "FAKE_ROOT": str(fake_root),
           "SHIM_STATE": str(state), "SHIM_LOG": str(tmp_path / "shim.log"),
           "PYTHONUNBUFFERED": "1"}
    env.pop("SCRIBELINK_CA_FILE", None)
    yield tmp_path, env
    for pid in state.glob("*.pid"):  # what the systemctl stand-in started
        try:
            os.kill(int(pid.read_text()), signal.SIGTERM)
        except ProcessLookupError:
            pass


def run_block(kind: str, body: str, env: dict, cwd: Path, stdin: str = "") -> str:
    """Run a block in bash as written, in the shell session of its machine: what earlier
    blocks there exported (export -p, but PATH) is still set, as in a terminal."""
    if kind == "root":
        env = {**env, "PATH": f"{SHIMS}{os.pathsep}{env['PATH']}"}
    elif kind == "admin":
        # the admin's machine: only scp is a stand-in (the relay host is this machine)
        shim = cwd / ".scp-only"
        shim.mkdir(exist_ok=True)
        for name in ("scp", "_shim.py"):
            if not (shim / name).exists():
                (shim / name).symlink_to(SHIMS / name)
        env = {**env, "PATH": f"{shim}{os.pathsep}{env['PATH']}"}
    state = cwd / ".exported"
    script = (f'if [ -f "{state}" ]; then source "{state}"; fi\n{body}\n'
              f'export -p | grep -v "^declare -x PATH=" > "{state}"\n')
    # a new session: no controlling terminal, so password prompts read the given stdin
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, cwd=cwd,
                       input=stdin, capture_output=True, text=True, timeout=240,
                       start_new_session=True, check=False)
    out = r.stdout + r.stderr
    if r.returncode != 0:
        units = "".join(f"\n--- {log.name}\n{log.read_text(errors='replace')[-2000:]}"
                        for log in sorted(Path(env["SHIM_STATE"]).glob("*.log")))
        pytest.fail(f"docs/deploy.md {kind} block failed ({r.returncode}):\n{body}\n"
                    f"---\n{out[-3000:]}{units}")
    return out


def test_the_deploy_guide_runs_as_written(machine):
    tmp, env = machine
    admin_machine = tmp / "admin-laptop"
    admin_machine.mkdir()
    outputs = []
    for kind, _lang, body in blocks():
        if kind == "env":
            names = set(re.findall(r"(\w+)=", body))
            assert names == ENV_NAMES, names  # the test gives each of them a value
            continue
        if kind.startswith(("by hand", "proxy-")):
            continue  # by hand: not run (the marker says why); proxy: test_reverse_proxy.py
        cwd = admin_machine if kind == "admin" else tmp
        # the admin's relay password, once per command that signs in to the relay
        stdin = f"{ADMIN_PASSWORD}\n" * body.count("--user admin")
        outputs.append(run_block(kind, body, env, cwd, stdin))

    everything = "\n".join(outputs)
    assert ADMIN_PASSWORD not in everything and PASSPHRASE not in everything
    relay_dir = Path(env["RELAY_DIR"])
    url = f"https://localhost:{env['RELAY_PORT']}"
    ctx = ssl.create_default_context(cafile=str(relay_dir / "ca.pem"))
    with httpx.Client(verify=ctx, timeout=10) as c:
        assert c.get(url + "/healthz").json() == {"ok": True, "broker": True, "store": "sqlite"}
        token = c.post(url + "/api/login", json={"user": "admin", "password": ADMIN_PASSWORD}
                       ).json()["token"]
        h = {"Authorization": f"Bearer {token}"}
        people = {p["id"]: p for p in c.get(url + "/api/admin/people", headers=h).json()}
        assert people["tech1"]["role"] == "tech" and people["tech1"]["invite"]["kind"] == "invite"
        pub = c.get(url + "/api/trust", headers=h).json()["authority"]
        actions = {a["action"] for a in c.get(url + "/api/admin/audit", headers=h,
                                              params={"limit": 500}).json()}
    # the restored database is the one the relay runs on: it kept everything
    assert {"authority_registered", "enroll_code_created", "user_created"} <= actions
    assert list(tmp.glob("var/lib/scribelink/relay.broken-*"))
    code = enrolcode.parse((admin_machine / "enrolment-code.txt").read_text().splitlines()[-1])
    assert (code.unit_id, code.room, code.clinic) == ("exam-1-unit", "Exam 1", "Example Clinic")
    import base64

    assert code.authority == base64.b64decode(pub)
    assert code.relay_url == url and code.broker_url == f"mqtts://localhost:{env['BROKER_PORT']}"
    # the root commands were what a Debian host needs
    calls = [json.loads(line) for line in (tmp / "shim.log").read_text().splitlines()]
    assert ["systemctl", "enable", "--now", "scribelink-broker", "scribelink-relay"] in calls
    assert any(c[0] == "apt-get" and "mosquitto" in c for c in calls)
    assert (tmp / "fake-root/etc/systemd/system/scribelink-relay.service").exists()
    assert list((tmp / "backups").glob("relay-*.tar.gz"))
