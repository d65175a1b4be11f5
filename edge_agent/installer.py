"""The A/B installer: puts a verified release beside the running one, switches to it, and
switches back by itself if the new release does not prove healthy.

    /opt/scribelink/releases/<version>/   venv/ (built offline from wheels/), firmware/,
                                          config/, release.json
    /opt/scribelink/current -> releases/<version>    what the services run

`python -m edge_agent update run` (scribelink-update.service, root; started by
scribelink-update.path when the agent asks, and at boot) first finishes what a power cut
interrupted -- a switch that never proved healthy is switched back --, then installs the
release the agent asked for in <agent state>/updates/request.json: it copies the release
into its own directory, verifies the signature and every hash against the pinned release
key (it trusts nothing the unprivileged agent says), unpacks it, builds the venv with pip
from the release's own wheels and nothing else, switches `current`, restarts the agent
and waits for the new agent's health report (<agent state>/updates/health.json). A pass
commits; a failure or no report within the deadline switches back and restarts the agent
on the old release. Its state (installer state dir, state.json) is what the agent reads to
know it is on trial and what happened, and what it reports to the relay.

This runs from the release that is current when it starts, pinned by its real path
(edge_agent.__main__), so switching `current` under it changes nothing it runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edge_agent import trial
from scribelink import release as rel

log = logging.getLogger("edge_agent.installer")

DEFAULT_LAYOUT = Path("/opt/scribelink")
DEFAULT_STATE_DIR = Path("/var/lib/scribelink-update")
DEFAULT_AGENT_STATE = Path("/var/lib/scribelink")
DEFAULT_PUBLIC_KEY = Path("/etc/scribelink/release.pub")
DEFAULT_DEADLINE_S = 120.0
KEEP_RELEASES = 2  # the current one and the one before it

# installer states (state.json "state")
IDLE, INSTALLING, SWITCHING, TRIAL = "idle", "installing", "switching", "trial"
APPLIED, ROLLED_BACK, FAILED, REFUSED = "applied", "rolled_back", "failed", "refused"
FINISHED = (APPLIED, ROLLED_BACK, FAILED, REFUSED)


class InstallError(RuntimeError):
    pass


def now_us() -> int:
    return time.time_ns() // 1000


def write_json(path: Path, doc: dict, mode: int = 0o644) -> None:
    """Atomically, durably: a power cut leaves the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- the layout


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def current(self) -> Path:
        return self.root / "current"

    def release_dir(self, version: str) -> Path:
        rel.parse_version(version)  # a version names a directory: nothing else may
        return self.releases / version

    def current_version(self) -> str | None:
        try:
            target = os.readlink(self.current)
        except OSError:
            return None
        return Path(target).name

    def python(self, version: str | None = None) -> Path:
        base = self.current if version is None else self.release_dir(version)
        return base / "venv" / "bin" / "python"

    def switch(self, version: str) -> None:
        """Point `current` at releases/<version> in one rename."""
        target = self.release_dir(version)
        if not (target / "venv" / "bin" / "python").exists():
            raise InstallError(f"{target} holds no built release")
        tmp = self.root / ".current.tmp"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(Path("releases") / version)
        os.replace(tmp, self.current)
        _fsync_dir(self.root)

    def installed(self) -> list[str]:
        if not self.releases.is_dir():
            return []
        out = []
        for p in self.releases.iterdir():
            try:
                rel.parse_version(p.name)
            except rel.ReleaseError:
                continue
            out.append(p.name)
        return sorted(out, key=rel.parse_version)


def build_venv(release_dir: Path, requirement: str, *, base_python: str | None = None,
               pip_python: str | None = None) -> None:
    """A venv at release_dir/venv with `requirement` (and pip) from release_dir/wheels only:
    no index, no other link, no config file, no environment (PIP_* variables), no cache."""
    venv = release_dir / "venv"
    base = base_python or str(getattr(sys, "_base_executable", None) or sys.executable)
    r = subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], capture_output=True,
                       text=True, check=False)
    if r.returncode != 0:
        raise InstallError(f"python -m venv failed: {r.stderr.strip()[-500:]}")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PIP_CONFIG_FILE": os.devnull,
           "HOME": str(release_dir), "LC_ALL": "C.UTF-8"}
    # the running release's pip installs into the new venv; the new venv gets the
    # release's own pip, which the next update then uses
    r = subprocess.run([pip_python or sys.executable, "-m", "pip", "--python",
                        str(venv / "bin" / "python"), "install", "--no-index", "--find-links",
                        str(release_dir / "wheels"), "--no-cache-dir",
                        "--disable-pip-version-check", "--quiet", requirement, "pip"],
                       capture_output=True, text=True, check=False, env=env)
    if r.returncode != 0:
        raise InstallError(f"installing the release's wheels failed: "
                           f"{(r.stderr or r.stdout).strip()[-1500:]}")


# ---------------------------------------------------------------------------- restarting services


class Services(Protocol):
    def restart_agent(self) -> None: ...


class Systemd:
    """On a unit: the agent is scribelink-agent.service."""

    def restart_agent(self) -> None:
        subprocess.run(["systemctl", "restart", "scribelink-agent.service"], check=True,
                       timeout=120)
        # the provisioning service runs from `current` too; only if it is running
        subprocess.run(["systemctl", "try-restart", "scribelink-provision.service"],
                       check=False, timeout=60)


class AgentNotStarted:
    """At boot, ordered before the agent (scribelink-update-boot.service): the agent starts
    after, onto whatever `current` is then; restarting it from here would deadlock."""

    def restart_agent(self) -> None:
        pass


class FileRequests:
    """For a supervisor that plays systemd's role (scripts/demo): a request file it acts on
    and removes once the agent has been restarted."""

    def __init__(self, directory: Path, timeout_s: float = 60.0) -> None:
        self.dir = directory
        self.timeout_s = timeout_s

    def restart_agent(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        req = self.dir / f"restart-agent.{uuid.uuid4().hex[:8]}.request"
        req.write_text(str(now_us()))
        deadline = time.monotonic() + self.timeout_s
        while req.exists():
            if time.monotonic() > deadline:
                raise InstallError(f"nobody restarted the agent ({req} still there)")
            time.sleep(0.05)


def service_manager(spec: str) -> Services:
    if spec == "systemd":
        return Systemd()
    if spec.startswith("file:"):
        return FileRequests(Path(spec[5:]))
    raise SystemExit(f"--service-manager: systemd or file:DIR, not {spec!r}")


# ---------------------------------------------------------------------------- the installer


@dataclass
class Installer:
    layout: Layout
    state_dir: Path  # the installer's own (root; readable by the agent)
    agent_updates: Path  # the agent's updates directory (its request, its health report)
    public_key_file: Path
    services: Services
    deadline_s: float = DEFAULT_DEADLINE_S
    unit_id: str = ""
    hardware: str = ""
    poll_s: float = 0.1

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    def state(self) -> dict:
        return read_json(self.state_file) or {"state": IDLE, "failed_versions": []}

    def _save(self, **changes) -> dict:
        st = {**self.state(), **changes}
        write_json(self.state_file, st)
        log.info("event=update_state %s", " ".join(
            f"{k}={json.dumps(st.get(k))}" for k in ("state", "from", "to", "result", "reason")
            if st.get(k) is not None))
        return st

    # -- entry point

    def run(self) -> int:
        """Finish what was interrupted, then install what was asked for (if anything)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.recover()
        request = read_json(self.agent_updates / "request.json")
        if request is None:
            return 0
        st = self.state()
        if st.get("request_id") == request.get("request_id") and st.get("state") in FINISHED:
            return 0  # already done (a re-trigger of the path unit)
        return self.install(request)

    def recover(self) -> None:
        st = self.state()
        if st.get("state") in (SWITCHING, TRIAL):
            # the new release never proved healthy (power cut, crash of this process)
            self._rollback(st, "the update was interrupted (power loss or crash) before the "
                               "new release proved healthy")
        elif st.get("state") == INSTALLING:
            to = st.get("to")
            if to and self.layout.current_version() != to:
                shutil.rmtree(self._staging(to), ignore_errors=True)
            self._save(state=FAILED, result=FAILED, finished_us=now_us(),
                       reason="the install was interrupted before the switch; the old "
                              "release kept running")

    def _staging(self, version: str) -> Path:
        return self.layout.releases / f".{version}.staging"

    def install(self, request: dict) -> int:
        from_version = self.layout.current_version()
        request_id = str(request.get("request_id") or uuid.uuid4().hex)
        version = str(request.get("version", ""))
        base = {"request_id": request_id, "offer_id": request.get("offer_id"),
                "from": from_version, "to": version, "result": None, "reason": None,
                "started_us": now_us(), "finished_us": None, "trial_id": None}
        self._save(state=INSTALLING, **base)
        try:
            manifest = self._verify_and_unpack(request, from_version)
        except rel.ReleaseError as e:
            self._refuse(e)
            return 1
        except (InstallError, OSError) as e:
            self._save(state=FAILED, result=FAILED, reason=f"install failed: {e}",
                       finished_us=now_us())
            return 1
        return self._switch_and_try(manifest.version, from_version)

    def _refuse(self, e: rel.ReleaseError) -> None:
        self._save(state=REFUSED, result=REFUSED, refusal=e.code, reason=str(e),
                   finished_us=now_us())

    def _verify_and_unpack(self, request: dict, from_version: str | None) -> rel.Manifest:
        """Copy the agent's download into our own directory first: what we verify is what
        we unpack, whatever the agent's directory holds meanwhile."""
        src = (self.agent_updates / str(request.get("release", ""))).resolve()
        if self.agent_updates.resolve() not in src.parents or not src.is_file():
            raise InstallError(f"the requested release {request.get('release')!r} is not a "
                               "file in the agent's updates directory")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        own = self.state_dir / "release.tar"
        shutil.copyfile(src, own)
        if request.get("sha256") and rel.sha256_file(own) != request["sha256"]:
            raise rel.ReleaseError("tampered", "the release changed after the agent verified it")
        key = rel.load_public_key(self.public_key_file)
        doc = rel.read_manifest_doc(own)
        manifest = rel.verify_manifest(doc, key)
        if manifest.version != request.get("version"):
            raise rel.ReleaseError("tampered", f"asked for {request.get('version')}, the "
                                   f"release is {manifest.version}")
        permitted = False
        if request.get("permit") is not None:
            rel.verify_permit(request["permit"], key, version=manifest.version,
                              unit_id=self.unit_id, now_us=now_us())
            permitted = True
        failed = frozenset(self.state().get("failed_versions") or [])
        rel.check_applicable(manifest, running=from_version or "0.0",
                             hardware=self.hardware or rel.hardware_kind(),
                             downgrade_permitted=permitted, failed_versions=failed)
        staging = self._staging(manifest.version)
        shutil.rmtree(staging, ignore_errors=True)
        target = self.layout.release_dir(manifest.version)
        if target.exists():
            if self.layout.current_version() == manifest.version:
                raise rel.ReleaseError("same_version", f"already running {manifest.version}")
            shutil.rmtree(target)  # a leftover of an earlier attempt; rebuilt from scratch
        self.layout.releases.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        rel.unpack_release(own, key, staging)  # verifies every hash as it writes
        try:
            build_venv(staging, manifest.requirement)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            own.unlink(missing_ok=True)
        log.info("event=release_built version=%s seconds=%.1f", manifest.version,
                 time.monotonic() - started)
        return manifest

    def _switch_and_try(self, version: str, from_version: str | None) -> int:
        trial_id = uuid.uuid4().hex[:12]
        self._save(state=SWITCHING, trial_id=trial_id, deadline_s=self.deadline_s)
        self.layout.switch(version)
        st = self._save(state=TRIAL, switched_us=now_us())
        self.services.restart_agent()
        started = time.monotonic()
        while True:
            report = read_json(self.agent_updates / "health.json")
            if report is not None and report.get("trial_id") != trial_id:
                report = None
            d = trial.decide_trial(expected_version=version, report=report,
                                   elapsed_s=time.monotonic() - started,
                                   deadline_s=self.deadline_s)
            if d.action == trial.COMMIT:
                self._save(state=APPLIED, result=APPLIED, reason=d.reason, finished_us=now_us(),
                           health=report)
                self.prune(keep={version, from_version})
                return 0
            if d.action == trial.ROLLBACK:
                self._rollback({**st, "health": report}, d.reason)
                return 1
            time.sleep(self.poll_s)

    def _rollback(self, st: dict, reason: str) -> None:
        back = st.get("from")
        if back and self.layout.current_version() != back:
            self.layout.switch(back)
        failed = sorted({*(self.state().get("failed_versions") or []), str(st.get("to"))}
                        - {"None"})
        self._save(state=ROLLED_BACK, result=ROLLED_BACK, reason=reason, finished_us=now_us(),
                   failed_versions=failed, health=st.get("health"))
        self.services.restart_agent()

    def prune(self, keep: set[str | None]) -> None:
        kept = {v for v in keep if v}
        for version in self.layout.installed():
            if version not in kept and len(self.layout.installed()) > KEEP_RELEASES:
                shutil.rmtree(self.layout.release_dir(version), ignore_errors=True)


def install_first(layout: Layout, release_tar: Path, public_key_file: Path) -> str:
    """A unit's first release (or a demo's): verify, unpack, build, point `current` at it.
    No trial: nothing ran before it."""
    key = rel.load_public_key(public_key_file)
    manifest = rel.verify_release(release_tar, key)
    target = layout.release_dir(manifest.version)
    staging = layout.releases / f".{manifest.version}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    layout.releases.mkdir(parents=True, exist_ok=True)
    rel.unpack_release(release_tar, key, staging)
    build_venv(staging, manifest.requirement)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    layout.switch(manifest.version)
    return manifest.version


# ---------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge_agent update", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="recover an interrupted update, then install a request")
    recover = sub.add_parser("recover", help="at boot: switch back an update that a power "
                             "cut interrupted before it proved healthy")
    first = sub.add_parser("install-first", help="lay down a first release (no trial)")
    for sp in (run, first, recover):
        sp.add_argument("--layout", type=Path, default=DEFAULT_LAYOUT)
        sp.add_argument("--public-key", type=Path, default=DEFAULT_PUBLIC_KEY)
    for sp in (run, recover):
        sp.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    run.add_argument("--agent-state", type=Path, default=DEFAULT_AGENT_STATE)
    run.add_argument("--deadline", type=float, default=DEFAULT_DEADLINE_S,
                     help="seconds the new release has to report healthy")
    run.add_argument("--unit-id", default="", help="for downgrade permits that name units")
    run.add_argument("--service-manager", default="systemd", help="systemd or file:DIR")
    first.add_argument("--release", type=Path, required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    layout = Layout(args.layout)
    if args.cmd == "install-first":
        try:
            version = install_first(layout, args.release, args.public_key)
        except (rel.ReleaseError, InstallError) as e:
            print(f"update: {e}", file=sys.stderr)
            return 1
        print(f"update: installed {version} at {layout.release_dir(version)}")
        return 0
    if args.cmd == "recover":
        inst = Installer(layout=layout, state_dir=args.state_dir,
                         agent_updates=Path("/nonexistent"), public_key_file=args.public_key,
                         services=AgentNotStarted())
        inst.state_dir.mkdir(parents=True, exist_ok=True)
        inst.recover()
        return 0
    unit_id = args.unit_id or _unit_id_from(args.agent_state)
    inst = Installer(layout=layout, state_dir=args.state_dir,
                     agent_updates=args.agent_state / "updates",
                     public_key_file=args.public_key,
                     services=service_manager(args.service_manager), deadline_s=args.deadline,
                     unit_id=unit_id)
    return inst.run()


def _unit_id_from(agent_state: Path) -> str:
    import tomllib

    try:
        return str(tomllib.loads((agent_state / "provisioned.toml").read_text()).get("unit_id", ""))
    except (OSError, ValueError):
        return ""
