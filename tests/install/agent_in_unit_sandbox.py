"""Start `python -m edge_agent run --config X` the way the unit's systemd service would:
state and spool the only writable places, TLS material and keys inside the state dir
(as provisioning leaves them), the service user's identity, MemoryMax=160M.

Called, as root, by the stand-in `python` that test_install_sandbox.py puts in front of
scripts/demo, with the demo's agent command line. It stays in the foreground (the demo
supervises it and sends SIGTERM to stop it), and appends one JSON line per run to
$SCRIBELINK_SANDBOX_REPORT: exit code, memory peak, what the state and spool dirs hold.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent

from test_install_sandbox import (
    MEMORY_MAX,
    NOBODY,
    SECCOMP,
    MemoryCgroup,
    sandbox_argv,
)

VENV_PYTHON = HERE.parents[1] / ".venv" / "bin" / "python"


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def dump_toml(doc: dict) -> str:
    top = [f"{k} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    sections = [
        f"[{name}]\n" + "\n".join(f"{k} = {toml_value(v)}" for k, v in table.items())
        for name, table in doc.items()
        if isinstance(table, dict)
    ]
    return "\n".join(top) + "\n\n" + "\n\n".join(sections) + "\n"


def prepare(config_path: Path) -> tuple[Path, list[Path], list[Path]]:
    """Lay the state dir out as on a provisioned unit; return (config, writable, exposed)."""
    doc = tomllib.loads(config_path.read_text())
    state = Path(doc["state_dir"])
    spool = Path(doc["spool"]["dir"])
    tls = state / "tls"
    for d in (state, spool, tls):
        d.mkdir(parents=True, exist_ok=True)
    for key, name in (("ca_file", "ca.pem"), ("cert_file", "unit.pem"), ("key_file", "unit.key")):
        src = Path(doc["broker"][key])
        if src.parent != tls:
            shutil.copyfile(src, tls / name)
            doc["broker"][key] = str(tls / name)
    # what provisioning leaves in the state dir: the recovery key, the pinned authority,
    # the unit's signing key and its binding (docs/trust.md)
    for key, name in (("recovery_public_key_file", "recovery.pub"),
                      ("authority_public_key_file", "authority.pub"),
                      ("signing_key_file", "tls/sign.key"), ("binding_file", "binding.json")):
        src = doc.get("keys", {}).get(key)
        if src and Path(src).parent != state:
            shutil.copyfile(src, state / name)
            doc["keys"][key] = str(state / name)
    for path in [state, *state.rglob("*"), spool, *spool.rglob("*")]:
        os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
    (tls / "unit.key").chmod(0o600)
    if (tls / "sign.key").exists():
        (tls / "sign.key").chmod(0o600)

    etc = config_path.parent / "etc-scribelink"  # /etc/scribelink: read-only to the agent
    etc.mkdir(exist_ok=True)
    unit_config = etc / "agent.toml"
    unit_config.write_text(dump_toml(doc))
    unit_config.chmod(0o644)

    exposed = [unit_config]
    alsa_conf = os.environ.get("ALSA_CONFIG_PATH")
    if alsa_conf:  # the demo's file-backed PCM and the recording it replays
        exposed.append(Path(alsa_conf))
        exposed += [Path(p) for p in re.findall(r'infile\s+"([^"]+)"', Path(alsa_conf).read_text())]
    # StateDirectory=scribelink scribelink/spool
    return unit_config, [state, spool], exposed


def inventory(directory: Path) -> dict:
    files = [p for p in directory.rglob("*") if p.is_file()]
    return {
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "owners": sorted({p.stat().st_uid for p in files}),
    }


def main(argv: list[str]) -> int:
    # argv: -m edge_agent run --config X [more]
    config_path = Path(argv[argv.index("--config") + 1])
    unit_config, writable, exposed = prepare(config_path)
    agent_argv = [str(VENV_PYTHON), *argv]
    agent_argv[agent_argv.index("--config") + 1] = str(unit_config)
    cgroup = MemoryCgroup(MEMORY_MAX)
    command = sandbox_argv(
        *agent_argv,
        writable=writable,
        expose=exposed,
        cgroup=cgroup.path,
        groups=audio_dialout_gids(),
        chdir=writable[0],
        seccomp=SECCOMP,
    )
    proc = subprocess.Popen(command)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, _f: proc.send_signal(s))
    # The sandbox stages exec into each other, so the agent keeps this pid: sample its
    # peak RSS (VmHWM) while it runs. The cgroup's peak does not count shared library
    # pages that another cgroup loaded first, so it understates the footprint.
    rss_peak = 0
    while True:
        try:
            rc = proc.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            rss_peak = max(rss_peak, vm_hwm_bytes(proc.pid))
    peak = cgroup.peak_bytes()
    cgroup.remove()
    report = os.environ.get("SCRIBELINK_SANDBOX_REPORT")
    if report:
        doc = tomllib.loads(unit_config.read_text())
        line = {
            "rc": rc,
            "memory_peak_bytes": peak,
            "rss_peak_bytes": rss_peak,
            "writable": [str(w) for w in writable],
            "state": inventory(Path(doc["state_dir"])),
            "spool": inventory(Path(doc["spool"]["dir"])),
        }
        with open(report, "a") as f:
            f.write(json.dumps(line) + "\n")
    return rc


def vm_hwm_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def audio_dialout_gids() -> list[int]:
    import grp

    gids = []
    for name in ("audio", "dialout"):
        try:
            gids.append(grp.getgrnam(name).gr_gid)
        except KeyError:
            pass
    return gids


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
