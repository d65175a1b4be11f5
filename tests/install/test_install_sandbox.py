"""The agent unit's restrictions, applied without systemd (tests/install/unit_sandbox.py):
first what a process under them can and cannot do, then the real agent capturing,
spooling and streaming under them (through scripts/demo, with the agent sandboxed).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from install_support import REPO, need

SANDBOX = Path(__file__).with_name("unit_sandbox.py")
MEMORY_MAX = 160 * 1024 * 1024  # MemoryMax= in scribelink-agent.service
NOBODY = 65534
AGENT_RSS_BUDGET = 80 * 1024 * 1024
# The seccomp part of the sandbox is written for x86-64 syscall numbers.
SECCOMP = platform.machine() == "x86_64"


def python_home() -> str:
    """Where this machine's Python really lives (the venv links into it)."""
    return str(Path(os.path.realpath(sys.executable)).parents[1])


def requirements() -> None:
    if os.geteuid() != 0:
        pytest.skip("building the mount namespace needs root")
    need("setpriv")
    need("prlimit")
    probe = subprocess.run(
        [sys.executable, str(SANDBOX), "--", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot build the sandbox here: {probe.stderr.strip()[-300:]}")


def memory_cgroup_parent() -> Path | None:
    """Our own memory cgroup (v1 `memory` or v2 unified), if we may create children in it."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            if (base / "memory.limit_in_bytes").exists() and os.access(base, os.W_OK):
                return base
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            base = Path("/sys/fs/cgroup") / line[3:].lstrip("/")
            if (
                (base / "cgroup.controllers").exists()
                and "memory" in (base / "cgroup.subtree_control").read_text()
                and os.access(base, os.W_OK)
            ):
                return base
    return None


class MemoryCgroup:
    """A child memory cgroup with MemoryMax=; removed again when its processes are gone."""

    def __init__(self, limit_bytes: int) -> None:
        parent = memory_cgroup_parent()
        if parent is None:
            pytest.skip("no writable memory cgroup to enforce MemoryMax= in")
        self.path = parent / f"scribelink-test-{os.getpid()}-{time.monotonic_ns()}"
        self.path.mkdir()
        if (self.path / "memory.limit_in_bytes").exists():  # cgroup v1
            (self.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            swap = self.path / "memory.memsw.limit_in_bytes"
            if swap.exists():
                swap.write_text(str(limit_bytes))
        else:
            (self.path / "memory.max").write_text(str(limit_bytes))
            (self.path / "memory.swap.max").write_text("0")

    def peak_bytes(self) -> int:
        for name in ("memory.max_usage_in_bytes", "memory.peak"):
            if (self.path / name).exists():
                return int((self.path / name).read_text())
        return -1

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def checkout_paths() -> list[str]:
    """The checkout and its venv, where the sandbox would hide them (a clone under /tmp,
    as CI may make): the sandboxed process must still reach its code, read-only."""
    hidden = ("/tmp", "/var/tmp", "/root", "/home")
    out: list[str] = []
    for p in (str(REPO), os.path.realpath(sys.prefix)):
        if any(p == h or p.startswith(h + "/") for h in hidden) and not any(
            p == o or p.startswith(o + "/") for o in out
        ):
            out.append(p)
    return out


def sandbox_argv(
    *command: str,
    writable=(),
    expose=(),
    cgroup: Path | None = None,
    uid: int = NOBODY,
    gid: int = NOBODY,
    groups=(),
    chdir=None,
    seccomp: bool = False,
) -> list[str]:
    argv = [sys.executable, str(SANDBOX), f"--uid={uid}", f"--gid={gid}"]
    if seccomp:
        argv.append("--seccomp")
    if groups:
        argv.append("--groups=" + ",".join(str(g) for g in groups))
    if chdir is not None:
        argv.append(f"--chdir={chdir}")
    for w in writable:
        argv.append(f"--writable={w}")
    for e in (python_home(), *checkout_paths(), *expose):
        argv.append(f"--expose={e}")
    if cgroup is not None:
        argv.append(f"--cgroup={cgroup}")
    return [*argv, "--", *command]


PROBE = textwrap.dedent(
    r"""
    import json, os, sys, uuid
    targets = json.loads(sys.argv[1])
    result = {}
    for name, directory in targets.items():
        path = os.path.join(directory, f"probe-{uuid.uuid4().hex}")
        try:
            with open(path, "w") as f:
                f.write("x")
            os.unlink(path)
            result[name] = "writable"
        except OSError as e:
            result[name] = e.strerror
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    result["uid"] = os.getuid()
    result["no_new_privs"] = status["NoNewPrivs"].strip()
    result["cap_eff"] = status["CapEff"].strip()
    result["cap_bnd"] = status["CapBnd"].strip()
    result["dev"] = sorted(os.listdir("/dev"))
    result["tmp"] = sorted(os.listdir("/tmp"))
    import resource
    result["core_limit"] = resource.getrlimit(resource.RLIMIT_CORE)[0]
    print(json.dumps(result))
    """
)


def probe(targets: dict, writable: list[Path], uid: int) -> dict:
    result = subprocess.run(
        sandbox_argv(
            sys.executable, "-c", PROBE, json.dumps(targets), writable=writable, uid=uid, gid=uid
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_sandboxed_process_writes_only_the_state_and_spool_dirs(tmp_path):
    requirements()
    state = tmp_path / "var-lib-scribelink"
    spool = state / "spool"
    spool.mkdir(parents=True)
    shutil.chown(state, NOBODY, NOBODY)
    shutil.chown(spool, NOBODY, NOBODY)
    system = {
        "etc": "/etc",
        "usr": "/usr",
        "var_lib": "/var/lib",
        "repo": str(REPO),
        "venv": str(REPO / ".venv"),
        "root_home": "/root",
        "sys": "/sys/kernel",
    }
    targets = {
        "state": str(state),
        "spool": str(spool),
        **system,
        "private_tmp": "/tmp",
        "dev_shm": "/dev/shm",
    }
    seen = probe(targets, [state, spool], NOBODY)
    writable = {k for k in targets if seen[k] == "writable"}
    # /tmp and /dev/shm are the unit's private tmpfs (PrivateTmp=, fresh /dev): writable,
    # but gone when the process ends and invisible to everything else.
    assert writable == {"state", "spool", "private_tmp", "dev_shm"}, seen
    assert {seen[k] for k in system} == {"Read-only file system"}, seen
    assert seen["uid"] == NOBODY
    assert seen["no_new_privs"] == "1"
    assert int(seen["cap_eff"], 16) == 0 and int(seen["cap_bnd"], 16) == 0
    assert seen["core_limit"] == 0
    assert set(seen["dev"]) == {
        "null",
        "zero",
        "full",
        "random",
        "urandom",
        "tty",
        "shm",
        "stdin",
        "stdout",
        "stderr",
        "fd",
    }
    assert not any(name.startswith("probe-") for name in seen["tmp"])
    # nothing leaked out of the private /tmp onto this machine
    assert not any(p.name.startswith("probe-") for p in Path("/tmp").iterdir())

    # The read-only mounts, not file permissions, are what protect the system: even uid 0
    # (which owns /etc and /usr, but has no capabilities here) cannot write there.
    as_root = probe(targets, [state, spool], 0)
    assert {as_root[k] for k in system} == {"Read-only file system"}, as_root
    assert int(as_root["cap_eff"], 16) == 0


SECCOMP_PROBE = textwrap.dedent(
    r"""
    import json, mmap, os, socket
    result = {}
    for family in ("AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"):
        try:
            socket.socket(getattr(socket, family), socket.SOCK_DGRAM).close()
            result[family] = "ok"
        except OSError as e:
            result[family] = e.strerror
    for name, prot in (("rw", mmap.PROT_READ | mmap.PROT_WRITE),
                       ("rwx", mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)):
        try:
            mmap.mmap(-1, 4096, prot=prot).close()
            result[name] = "ok"
        except OSError as e:
            result[name] = e.strerror
    for name, call in (("setpriority", lambda: os.setpriority(os.PRIO_PROCESS, 0, 5)),
                       ("sched_setaffinity", lambda: os.sched_setaffinity(0, {0})),
                       ("chown", lambda: os.chown("/dev/null", -1, -1))):
        try:
            call()
            result[name] = "ok"
        except OSError as e:
            result[name] = e.strerror
    print(json.dumps(result))
    """
)


def test_seccomp_part_restricts_families_wx_memory_and_privileged_calls():
    requirements()
    if not SECCOMP:
        pytest.skip("the sandbox's seccomp filter is written for x86-64")
    result = subprocess.run(
        sandbox_argv(sys.executable, "-c", SECCOMP_PROBE, seccomp=True),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen == {
        "AF_UNIX": "ok",
        "AF_INET": "ok",
        "AF_INET6": "ok",
        "AF_NETLINK": "Address family not supported by protocol",  # RestrictAddressFamilies=
        "rw": "ok",
        "rwx": "Operation not permitted",  # MemoryDenyWriteExecute=
        "setpriority": "Operation not permitted",  # ~@resources
        "sched_setaffinity": "Operation not permitted",
        "chown": "Operation not permitted",  # ~@privileged
    }


def test_memory_max_is_enforced(tmp_path):
    requirements()
    cgroup = MemoryCgroup(MEMORY_MAX)
    hog = "b = bytearray({} * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); print('alive')"
    try:
        small = subprocess.run(
            sandbox_argv(sys.executable, "-c", hog.format(60), cgroup=cgroup.path),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        large = subprocess.run(
            sandbox_argv(sys.executable, "-c", hog.format(400), cgroup=cgroup.path),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        cgroup.remove()
    assert small.returncode == 0 and "alive" in small.stdout, small.stderr
    assert large.returncode == -9 and "alive" not in large.stdout  # OOM-killed in its cgroup


STAND_IN_PYTHON = """#!/bin/bash
# Stand-in for the venv's python in front of scripts/demo: the agent goes into the unit
# sandbox, every other component runs as usual.
if [ "${1-}" = "-m" ] && [ "${2-}" = "edge_agent" ] && [ "${3-}" = "run" ]; then
  exec "@VENV_PYTHON@" "@LAUNCHER@" "$@"
fi
exec -a "$0" "@BASE_PYTHON@" "$@"
"""


def stand_in_venv(directory: Path) -> Path:
    """A venv whose python is STAND_IN_PYTHON; it shares the real venv's site-packages."""
    venv = REPO / ".venv"
    directory.mkdir()
    shutil.copyfile(venv / "pyvenv.cfg", directory / "pyvenv.cfg")
    (directory / "lib").symlink_to(venv / "lib")
    (directory / "bin").mkdir()
    python = directory / "bin" / "python"
    python.write_text(
        STAND_IN_PYTHON.replace("@VENV_PYTHON@", str(venv / "bin" / "python"))
        .replace("@LAUNCHER@", str(Path(__file__).with_name("agent_in_unit_sandbox.py")))
        .replace("@BASE_PYTHON@", os.path.realpath(venv / "bin" / "python"))
    )
    python.chmod(0o755)
    return python


def test_the_agent_captures_spools_and_streams_under_the_unit_restrictions(tmp_path):
    """scripts/demo end to end (mosquitto with mTLS, relay, scribe client), with the
    agent started inside the sandbox as the service user: the scribe must receive the
    whole encounter, and the agent must have stayed within MemoryMax=."""
    requirements()
    need("mosquitto")
    if memory_cgroup_parent() is None:
        pytest.skip("no writable memory cgroup to enforce MemoryMax= in")
    # A broken agent is not a sandbox problem: say so, and do not wait for the demo's timeout.
    imports = subprocess.run(
        [sys.executable, "-c", "import edge_agent.agent"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert imports.returncode == 0, "the agent does not even import:\n" + imports.stderr[-2000:]
    python = stand_in_venv(tmp_path / "venv")
    record = tmp_path / "record"
    report = tmp_path / "sandbox-report.jsonl"
    seconds = 6
    result = subprocess.run(
        [
            str(python),
            str(REPO / "scripts/demo"),
            "--headless",
            "--seconds",
            str(seconds),
            "--record-dir",
            str(record),
            "--timeout",
            "90",
        ],
        env=dict(os.environ, SCRIBELINK_SANDBOX_REPORT=str(report)),
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
        check=False,
    )
    agent_log = (record / "agent.log").read_text() if (record / "agent.log").exists() else ""
    assert result.returncode == 0, result.stdout[-3000:] + agent_log[-3000:]
    assert "the scribe has the whole encounter" in result.stdout
    runs = [json.loads(line) for line in report.read_text().splitlines()]
    assert runs, "the agent never ran through the sandbox"
    # One run, no crash-restarts. It exits 0 when done, or by the SIGTERM the demo sends
    # when the scribe already has everything (systemd also counts SIGTERM as clean).
    assert len(runs) == 1 and runs[0]["rc"] in (0, -signal.SIGTERM), (runs, agent_log[-3000:])
    run = runs[0]
    assert 0 < run["memory_peak_bytes"] <= MEMORY_MAX, run
    assert 0 < run["rss_peak_bytes"] <= AGENT_RSS_BUDGET, run  # ARCHITECTURE.md budget
    assert run["state"]["files"] > 0 and run["state"]["owners"] == [NOBODY], run
    # the scribe decrypted the whole recording: 16 kHz mono S16
    scribe_seconds = ((record / "scribe.wav").stat().st_size - 44) / 32000
    assert scribe_seconds >= seconds * 0.95, scribe_seconds
    (tmp_path / "agent-run.json").write_text(json.dumps(run, indent=2))
    print(json.dumps(run))
