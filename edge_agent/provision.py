"""The unit's serial provisioning service (`python -m edge_agent provision-serve`): answers
the tech's tool (scripts/provision) over the service port with the protocol in
scribelink/provisioning.py.

Settings, keys, certificate, binding and self-test results live in the state dir. Every
enrolment goes through a fail-safe (`Unit`): staged in the state dir's `enrol-staging/`,
then committed together with `provisioned.toml` (an overlay on the site's agent.toml) and
the lock, or rolled back when the fail-safe runs out or the service restarts.

The unit's trust anchors (docs/trust.md) -- the clinic authority it pinned, the transport
CA, the broker URL and the clinic's recovery key -- live in `anchor/`, which factory reset
keeps: a blank unit takes them from its first enrolment (trust on first use, behind the
code the clinic admin made); after that, changing one takes a `set_trust` token and
clearing them a `release` token, each signed by the pinned authority. A locked unit
answers read-only commands only; unlock, factory reset, set_trust and release take the
puck's button held 5 s while the command waits and, once the unit is anchored, a one-time
token for this unit and action (each token id is remembered: it works once). Secrets (the
Wi-Fi passphrase, the unit's keys) are write-only: never returned, never logged.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import itertools
import json
import logging
import math
import os
import shutil
import sys
import time
import tomllib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from scribelink import __version__, tomlconf, topics, trust
from scribelink import provisioning as p
from scribelink.logfmt import q

log = logging.getLogger("edge_agent.provision")

SOFTWARE_VERSION = __version__  # the one version (pyproject.toml)
RESERVED_UNIT_IDS = {"relay", "broker", "admin"}  # also refused by cloud_relay.pki


PRESENCE_STAMP = "presence.stamp"
PUCK_CONNECT_S = 5.0


def record_presence_hold(state_dir: str | Path, now: Callable[[], float] = time.time) -> None:
    """For the agent: call from Puck(on_presence_hold=...). While the agent runs it owns the
    puck's port (opened exclusively), so a presence hold reaches this service as a stamp
    file in the shared state dir instead of over the puck link."""
    _write_atomic(Path(state_dir) / PRESENCE_STAMP, json.dumps({"at": now()}).encode(), 0o600)


class Presence(Protocol):
    """Physical presence at the unit (UnitPresence in production)."""

    def state(self) -> str: ...

    def ping(self, timeout_s: float) -> float | None: ...

    def wait_for_hold(self, seconds: float, timeout_s: float,
                      ready: Callable[[], None],
                      holding: Callable[[float, str], None]) -> bool: ...

    def identify(self, seconds: float, tick: Callable[[float], None]) -> bool: ...


class UnitPresence:
    """The cue puck, opened only while a command needs it (so the service never keeps the
    physician's button from the agent), or presence relayed by the running agent."""

    def __init__(self, port: str | None, state_dir: Path,
                 clock: Callable[[], float] = time.time) -> None:
        self.port = port
        self.stamp = state_dir / PRESENCE_STAMP
        self.clock = clock

    def state(self) -> str:
        """present: the puck's device node is there; absent: no puck configured or plugged."""
        return "present" if self.port and os.path.exists(self.port) else "absent"

    def _open(self):
        """-> a connected edge_agent.puck.Puck, or None (unplugged, or the agent has it)."""
        if not self.port:
            return None
        from edge_agent.puck import Puck

        puck = Puck(self.port, on_cue=lambda _cid: None, on_privacy_toggle=lambda: None)
        puck.start()
        deadline = time.monotonic() + PUCK_CONNECT_S
        while not puck.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        if not puck.connected:
            puck.stop()
            return None
        return puck

    def ping(self, timeout_s: float) -> float | None:
        puck = self._open()
        if puck is None:
            return None
        try:
            return puck.ping(timeout_s)
        finally:
            puck.stop()

    def identify(self, seconds: float, tick: Callable[[float], None]) -> bool:
        """Blink the puck's identify pattern for `seconds` (the link stays open meanwhile:
        a puck that loses its agent shows `connecting`, which outranks identify)."""
        puck = self._open()
        if puck is None:
            return False
        try:
            puck.identify(seconds)
            if not puck.flush(2.0):
                return False
            end = time.monotonic() + seconds
            while (left := end - time.monotonic()) > 0:
                tick(left)
                time.sleep(min(1.0, left))
            return True
        finally:
            puck.identify(0)
            puck.flush(1.0)
            puck.stop()

    def _stamped_since(self, start: float) -> bool:
        try:
            return float(json.loads(self.stamp.read_text())["at"]) >= start
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return False

    def wait_for_hold(self, seconds: float, timeout_s: float,
                      ready: Callable[[], None] = lambda: None,
                      holding: Callable[[float, str], None] = lambda _s, _phase: None) -> bool:
        """True once the button has been held `seconds` (a hold that started after the
        call). With the puck open here, its ring asks for the hold and fills while it is
        held, and `holding(held_s, phase)` reports it: phase "holding" each second held,
        "release" when the hold is complete, "let_go" when it ended too early."""
        import threading

        puck = self._open()
        start = self.clock()
        direct: dict = {}
        if puck is not None:
            puck.want_presence(timeout_s)
        ready()  # only now is a hold seen: tell the tech to press
        if puck is not None:
            threading.Thread(target=lambda: direct.update(
                ok=puck.wait_for_hold(seconds, timeout_s)), daemon=True).start()
        deadline = time.monotonic() + timeout_s
        held_since: float | None = None
        reported = 0
        try:
            while time.monotonic() < deadline:
                if direct.get("ok") or self._stamped_since(start):
                    holding(seconds, "release")
                    return True
                ring = puck.puck_state() if puck is not None else None
                if ring in ("presence_holding", "presence_release"):
                    held_since = held_since or time.monotonic()
                    held = int(time.monotonic() - held_since)
                    if held > reported:
                        reported = held
                        holding(float(held), "holding")
                elif held_since is not None:
                    holding(time.monotonic() - held_since, "let_go")
                    held_since, reported = None, 0
                time.sleep(0.05)
            return bool(direct.get("ok"))
        finally:
            if puck is not None:
                puck.want_presence(0)
                puck.flush(1.0)
                puck.stop()


@dataclass(frozen=True)
class ServeSettings:
    state_dir: Path
    port: str = ""
    baud: int = 115200
    alsa_device: str = "scribelink_capture"
    channels: int = 4
    sample_rate: int = 16000
    array: str = "respeaker-4mic-pi"  # hardware/arrays/<array>.json: the self-test's fixes
    puck_port: str = ""
    serial_number: str = ""
    hw_rev: str = ""
    site_config: str = ""
    spool_dir: str = ""
    selftest_seconds: float = 2.0
    pace_realtime: bool = False  # test knob: ALSA file plugin has no clock
    clock_offset_s: float = 0.0  # test knob: pretend the unit's clock is this far off
    broker_timeout_s: float = 10.0
    # where the unit's signing key is made: "" a file in the state dir (tls/sign.key), or
    # a pkcs11: URI without an id (a TPM, an ATECC608: edge_agent/unitkey.py)
    signing_key: str = ""
    signing_key_type: str = "auto"  # in a token: auto (Ed25519 if it can), ed25519, ecdsa-p256


# ---------------------------------------------------------------------- files


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _shred(path: Path) -> None:
    """Overwrite then unlink (best effort on flash: wear levelling may keep old blocks)."""
    try:
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.write(b"\0" * size)
            f.flush()
            os.fsync(f.fileno())
        path.unlink()
    except FileNotFoundError:
        pass


def default_serial_number() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("Serial"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        return Path("/etc/machine-id").read_text().strip()[:16]
    except OSError:
        return "unknown"


def fingerprint(cert) -> str:
    from cryptography.hazmat.primitives import hashes

    return cert.fingerprint(hashes.SHA256()).hex()


class Refused(Exception):
    def __init__(self, code: str, message: str, action: str | None = None, **detail) -> None:
        super().__init__(message)
        self.code, self.message, self.action, self.detail = code, message, action, detail


# ---------------------------------------------------------------------- validation


def _text(name: str, v, max_len: int = 128, min_len: int = 1) -> str:
    if not isinstance(v, str) or not min_len <= len(v) <= max_len:
        raise Refused(p.E_INVALID_CONFIG, f"{name} must be text of {min_len}-{max_len} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in v):
        raise Refused(p.E_INVALID_CONFIG, f"{name} must not contain control characters")
    return v


def validate_settings(args: dict) -> dict:
    """Check set_config's arguments; -> the accepted settings (secrets included)."""
    unknown = set(args) - set(p.SETTINGS)
    if unknown:
        raise Refused(p.E_INVALID_CONFIG, f"unknown setting(s) {sorted(unknown)}",
                      f"known settings: {', '.join(p.SETTINGS)}")
    out: dict = {}
    for k in ("clinic", "room"):
        if k in args:
            out[k] = _text(k, args[k])
    if "unit_id" in args:
        uid = args["unit_id"]
        if not isinstance(uid, str) or not topics.valid_unit_id(uid) or uid in RESERVED_UNIT_IDS:
            raise Refused(p.E_INVALID_CONFIG, "unit_id: 1-64 of letters, digits, '.', '_', '-' "
                          "(not relay/broker/admin)")
        out["unit_id"] = uid
    if "broker_url" in args:
        u = urlparse(_text("broker_url", args["broker_url"], 256))
        try:
            port = u.port
        except ValueError:
            port = None
        if u.scheme != "mqtts" or not u.hostname or not port:
            raise Refused(p.E_INVALID_CONFIG, "broker_url must be mqtts://HOST:PORT")
        out["broker_url"] = args["broker_url"]
    if "relay_url" in args:
        u = urlparse(_text("relay_url", args["relay_url"], 256))
        if u.scheme not in ("https", "http") or not u.hostname:
            raise Refused(p.E_INVALID_CONFIG, "relay_url must be https://HOST[:PORT]")
        out["relay_url"] = args["relay_url"]
    if "wifi_ssid" in args:
        ssid = _text("wifi_ssid", args["wifi_ssid"], 32)
        if len(ssid.encode()) > 32:
            raise Refused(p.E_INVALID_CONFIG, "wifi_ssid must be at most 32 bytes")
        if ssid != ssid.strip() or any(c in ssid for c in ";\\"):
            # a NetworkManager keyfile would store these differently from what was typed
            raise Refused(p.E_INVALID_CONFIG, "wifi_ssid: no leading/trailing spaces, ';' or "
                          "'\\' (set such networks up with nmcli on the unit)")
        out["wifi_ssid"] = ssid
    if "wifi_passphrase" in args:
        pw = args["wifi_passphrase"]
        if (not isinstance(pw, str) or not 8 <= len(pw) <= 63 or pw != pw.strip()
                or "\\" in pw or any(ord(c) < 32 or ord(c) > 126 for c in pw)):
            # the message names the rule, never the value; the rule is also what
            # hardware/libexec/scribelink-wifi-apply accepts
            raise Refused(p.E_INVALID_CONFIG, "wifi_passphrase must be 8-63 printable ASCII "
                          "characters (WPA2-PSK), no leading/trailing spaces or '\\'")
        out["wifi_passphrase"] = pw
    if "recovery_public_key" in args:
        from scribelink import envelope as env

        try:
            env.load_public_key(_text("recovery_public_key", args["recovery_public_key"], 100))
        except (ValueError, TypeError) as e:
            raise Refused(p.E_INVALID_CONFIG, "recovery_public_key must be the clinic's "
                          "base64 raw X25519 public key") from e
        out["recovery_public_key"] = args["recovery_public_key"]
    return out


def nm_keyfile(ssid: str, passphrase: str) -> str:
    """A NetworkManager keyfile (system-connections/*.nmconnection) for WPA2-PSK."""
    return (
        "[connection]\nid=scribelink-wifi\n"
        f"uuid={uuid.uuid5(uuid.NAMESPACE_OID, 'scribelink-wifi:' + ssid)}\n"
        "type=wifi\nautoconnect=true\n\n"
        f"[wifi]\nmode=infrastructure\nssid={ssid}\n\n"
        f"[wifi-security]\nkey-mgmt=wpa-psk\npsk={passphrase}\n\n"
        "[ipv4]\nmethod=auto\n\n[ipv6]\nmethod=auto\n"
    )


# ---------------------------------------------------------------------- the state dir


class Tree:
    """One copy of the provisioning files: the live state dir, or its staging area."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    @property
    def key(self) -> Path:
        return self.root / "tls" / "unit.key"

    @property
    def cert(self) -> Path:
        return self.root / "tls" / "unit.pem"

    @property
    def ca(self) -> Path:
        """The transport CA the unit pinned: a trust anchor."""
        return self.root / ANCHOR / "ca.pem"

    @property
    def sign_key(self) -> Path:
        """The unit's signing key, when it is a file (Ed25519, PKCS#8 PEM, 0600)."""
        return self.root / "tls" / "sign.key"

    @property
    def sign_uri(self) -> Path:
        """The unit's signing key, when it lives in a PKCS#11 token: its URI."""
        return self.root / "tls" / "sign.uri"

    @property
    def binding(self) -> Path:
        return self.root / "binding.json"

    def anchor(self, name: str) -> Path:
        return self.root / ANCHOR / name

    def anchors(self) -> Anchors | None:
        d = self.json(f"{ANCHOR}/{ANCHORS_FILE}")
        try:
            return None if d is None else Anchors.from_dict(d)
        except (KeyError, TypeError, ValueError):
            return None

    def signing_key_spec(self) -> str | None:
        """The signing key's file path or pkcs11: URI, if this tree has one."""
        if self.sign_uri.exists():
            return self.sign_uri.read_text().strip()
        if self.sign_key.exists():
            return str(self.sign_key.resolve())
        return None

    def signing_key(self):
        """-> an edge_agent.unitkey key, or None."""
        from edge_agent import unitkey

        spec = self.signing_key_spec()
        return None if spec is None else unitkey.load(spec)

    def json(self, name: str) -> dict | None:
        try:
            d = json.loads((self.root / name).read_text())
            return d if isinstance(d, dict) else None
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None

    def certificate(self):
        from cryptography import x509

        try:
            return x509.load_pem_x509_certificates(self.cert.read_bytes())[0]
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None

    def mkdir_private(self, sub: str = "") -> Path:
        d = self.root / sub if sub else self.root
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        return d


STAGING = "enrol-staging"  # the fail-safe's scratch space, inside the state dir
FAILSAFE_FILE = "failsafe.json"
COMMIT_MARKER = "COMMIT"  # its atomic appearance is the commit point
# what a commit moves from staging into the state dir, in this order: provisioned.toml
# last, because its appearance starts the agent (scribelink-agent.path)
PROMOTED = ("tls/unit.key", "tls/unit.pem", "tls/sign.key", "tls/sign.uri", "binding.json",
            "anchor/authority.pub", "anchor/ca.pem", "anchor/recovery.pub",
            "anchor/anchors.json", "settings.json", "wifi.nmconnection", "selftest.json",
            "locked.json", "provisioned.toml")
ANCHOR = "anchor"  # the trust anchors: factory reset keeps this directory
ANCHORS_FILE = "anchors.json"
USED_TOKENS = "used-tokens.json"  # in anchor/, never staged: token ids already used
MAX_USED_TOKENS = 4096


@dataclass(frozen=True)
class Anchors:
    """What the unit pinned at its first enrolment (the trust anchors: authority,
    broker_url, ca_sha256, recovery_public_key) and what it was enrolled as last (unit id,
    clinic, relay), which tokens and the tool need after a factory reset."""

    authority: str  # base64 raw Ed25519
    broker_url: str
    ca_sha256: str  # of the CA certificate's DER
    recovery_public_key: str | None  # base64 raw X25519
    unit_id: str
    clinic: str = ""
    relay_url: str = ""

    def to_dict(self) -> dict:
        return {"authority": self.authority, "broker_url": self.broker_url,
                "ca_sha256": self.ca_sha256, "recovery_public_key": self.recovery_public_key,
                "unit_id": self.unit_id, "clinic": self.clinic, "relay_url": self.relay_url}

    @classmethod
    def from_dict(cls, d: dict) -> Anchors:
        return cls(str(d["authority"]), str(d["broker_url"]), str(d["ca_sha256"]),
                   d.get("recovery_public_key"), str(d["unit_id"]), str(d.get("clinic", "")),
                   str(d.get("relay_url", "")))

    def pinned(self) -> dict:
        """The trust anchors alone (what only a set_trust token may change)."""
        return {k: getattr(self, k) for k in trust.TRUST_ANCHORS}

    def summary(self) -> dict:
        raw = trust.unb64(self.authority, what="authority", length=32)
        return {**self.to_dict(), "authority_fingerprint": trust.fingerprint(raw),
                "authority_key_id": trust.key_id(raw)}


def ca_sha256(cert) -> str:
    from cryptography.hazmat.primitives import serialization

    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Failsafe:
    """An armed fail-safe: the staged enrolment it guards, and when it rolls back."""

    enrolment_id: str
    deadline: float  # monotonic; arming again moves it...
    cap: float  # ...but never past this (FAILSAFE_MAX_CUMULATIVE_S after opening)


# ---------------------------------------------------------------------- the unit


@dataclass
class Unit:
    """The provisioning state machine over the state dir. Pure of serial I/O.

    Every change to the unit goes through the fail-safe: `arm_failsafe` opens a staging
    area (`STATE_DIR/staging`); `set_config`, `generate_key` and `install_cert` write there
    only; `commit` moves it all into place in one journaled step (the COMMIT marker is
    the commit point: once it exists, a restart finishes the move); anything else rolls
    the staging area back: the fail-safe expiring, `rollback`, or the service starting
    (a reboot) with an uncommitted enrolment staged. So the unit is either as it was or
    enrolled and locked, never in between."""

    s: ServeSettings
    presence: Presence | None = None
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    _mic_cache: tuple[float, dict] | None = field(default=None, repr=False)
    _failsafe: Failsafe | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.live = Tree(self.s.state_dir)
        self.staged = Tree(self.s.state_dir / STAGING)
        if (self.staged / COMMIT_MARKER).exists():
            self._promote()  # a commit was cut short: finish it
        elif self.staged.root.exists():
            self._rollback("the service started with an uncommitted enrolment staged")

    # -- paths (the live tree) --

    @property
    def dir(self) -> Path:
        return self.s.state_dir

    def _p(self, name: str) -> Path:
        return self.dir / name

    @property
    def key_path(self) -> Path:
        return self.live.key

    @property
    def cert_path(self) -> Path:
        return self.live.cert

    @property
    def ca_path(self) -> Path:
        return self.live.ca

    def now(self) -> float:
        return self.clock() + self.s.clock_offset_s

    # -- state --

    def settings(self) -> dict:
        """The committed settings."""
        return self.live.json("settings.json") or {}

    def staged_settings(self) -> dict:
        """What commit would make the settings: the staged ones, else the committed."""
        return self.staged.json("settings.json") or self.settings()

    def state(self) -> str:
        if self._p("locked.json").exists():
            return p.STATE_LOCKED
        st = self.settings()
        if not all(k in st for k in p.REQUIRED_SETTINGS):
            return p.STATE_BLANK if not st else p.STATE_CONFIGURED
        if self.key_path.exists() and self.cert_path.exists():
            return p.STATE_ENROLLED
        return p.STATE_CONFIGURED

    def _cert(self):
        return self.live.certificate()

    @staticmethod
    def _summary(cert) -> dict | None:
        if cert is None:
            return None
        return {"fingerprint_sha256": fingerprint(cert),
                "not_after": cert.not_valid_after_utc.isoformat(timespec="seconds")}

    def _cert_summary(self) -> dict | None:
        return self._summary(self._cert())

    def _selftest(self) -> dict | None:
        return self.live.json("selftest.json")

    def _locked_info(self) -> dict | None:
        return self.live.json("locked.json")

    def _mics(self) -> dict:
        t = time.monotonic()
        if self._mic_cache and t - self._mic_cache[0] < 2.0:
            return self._mic_cache[1]
        from edge_agent import selftest as stt

        array = stt.mic_array(self.s.array)
        info = {"device": self.s.alsa_device, "channels_configured": self.s.channels,
                "channels_detected": 0, "array": self.s.array, "part": array.part}
        try:
            import alsaaudio

            pcm = alsaaudio.PCM(alsaaudio.PCM_CAPTURE, alsaaudio.PCM_NONBLOCK,
                                device=self.s.alsa_device, channels=self.s.channels,
                                rate=self.s.sample_rate, format=alsaaudio.PCM_FORMAT_S16_LE,
                                periodsize=320)
            info["channels_detected"] = int(pcm.info().get("channels", self.s.channels))
            pcm.close()
        except Exception as e:  # noqa: BLE001 - no device, no alsa-lib: report, not fail
            info["error"] = type(e).__name__
        self._mic_cache = (t, info)
        return info

    def _puck_state(self) -> str:
        return "absent" if self.presence is None else self.presence.state()

    # -- the fail-safe --

    def tick(self) -> None:
        """Roll back a staged enrolment whose fail-safe has expired (called by the serve
        loop, and before every command)."""
        if self._failsafe is not None and self.monotonic() >= self._failsafe.deadline:
            self._rollback("the fail-safe expired before commit")

    def _failsafe_info(self) -> dict | None:
        fs = self._failsafe
        if fs is None:
            return None
        st = self.staged.json("settings.json") or {}
        return {"enrolment_id": fs.enrolment_id,
                "expires_in_s": max(0, round(fs.deadline - self.monotonic())),
                "unit_id": st.get("unit_id"), "room": st.get("room"),
                "staged": self._staged_summary()}

    def _staged_summary(self) -> dict:
        cert = self.staged.certificate()
        t = self.staged.json("selftest.json")
        return {"settings": (self.staged / "settings.json").exists(),
                "wifi": (self.staged / "wifi.nmconnection").exists(),
                "key": self.staged.key.exists(),
                "sign_key": self.staged.signing_key_spec() is not None,
                "binding": self.staged.binding.exists(),
                "cert": self._summary(cert),
                "selftest_passed": bool(t and t.get("passed") and cert is not None
                                        and t.get("cert_fingerprint_sha256") == fingerprint(cert))}

    def _rollback(self, reason: str) -> None:
        _shred(self.staged.key)
        _shred(self.staged.sign_key)
        _shred(self.staged / "wifi.nmconnection")
        shutil.rmtree(self.staged.root, ignore_errors=True)
        _fsync_dir(self.dir)
        self._drop_token_keys()  # a key made in the token for the staged enrolment
        was = self._failsafe
        self._failsafe = None
        log.warning("event=failsafe_rolled_back enrolment=%s reason=%s",
                    was.enrolment_id if was else "-", reason.replace(" ", "_"))

    def _drop_token_keys(self, *, all_keys: bool = False) -> None:
        """Destroy the token's signing keys but the committed one (all of them with
        `all_keys`): what a rollback, a commit that replaced the key, or a factory reset
        leaves behind. Keys are found by their label, so a key made just before a power
        cut (its URI never written) goes too."""
        if not self.s.signing_key:
            return
        from edge_agent import unitkey

        keep = None
        if not all_keys and self.live.sign_uri.exists():
            keep = unitkey.Pkcs11Uri.parse(self.live.sign_uri.read_text().strip()).id
        try:
            gone = unitkey.delete_pkcs11(unitkey.Pkcs11Uri.parse(self.s.signing_key),
                                         keep=keep)
        except unitkey.UnitKeyError as e:
            log.error("event=token_keys_not_deleted error=%s", json.dumps(str(e)))
            return
        if gone:
            log.info("event=token_keys_deleted objects=%d", gone)

    def _promote(self) -> None:
        """Move every staged file into place (idempotent: a restart after a crash half-way
        through runs it again), then drop the staging area."""
        tls = self.live.mkdir_private("tls")
        self.live.mkdir_private(ANCHOR)
        old_keys = {"tls/unit.key": tls / "unit.key.old", "tls/sign.key": tls / "sign.key.old"}
        for rel in PROMOTED:
            src = self.staged / rel
            if not src.exists():
                continue
            dst = self.dir / rel
            old = old_keys.get(rel)
            if old is not None and dst.exists() and not old.exists():
                os.link(dst, old)  # so the replaced key's bytes can be shredded after
            # the signing key is a file or a token's key, never both
            if rel == "tls/sign.key" and self.live.sign_uri.exists():
                self.live.sign_uri.unlink()
            if rel == "tls/sign.uri" and self.live.sign_key.exists():
                if not old_keys["tls/sign.key"].exists():
                    os.link(self.live.sign_key, old_keys["tls/sign.key"])
                self.live.sign_key.unlink()
            os.replace(src, dst)
        _fsync_dir(tls)
        _fsync_dir(self.live.root / ANCHOR)
        _fsync_dir(self.dir)
        for old in old_keys.values():
            _shred(old)
        shutil.rmtree(self.staged.root, ignore_errors=True)
        _fsync_dir(self.dir)
        self._failsafe = None
        self._drop_token_keys()  # the key this commit replaced, if it was in the token

    def _require_failsafe(self, cmd: str) -> None:
        if self._failsafe is None:
            raise Refused(p.E_FAILSAFE_NOT_ARMED, f"{cmd} needs an armed fail-safe: no "
                          "enrolment is staged (none was started, or the unit rolled it back: "
                          "its fail-safe expired, or the unit restarted)")

    def cmd_arm_failsafe(self, args: dict, progress) -> dict:
        expiry = args.get("expiry_s", p.FAILSAFE_DEFAULT_S)
        if (not isinstance(expiry, (int, float)) or isinstance(expiry, bool)
                or not p.FAILSAFE_MIN_S <= expiry <= p.FAILSAFE_MAX_S):
            raise Refused(p.E_BAD_REQUEST, f"expiry_s must be {p.FAILSAFE_MIN_S:g}-"
                          f"{p.FAILSAFE_MAX_S:g} seconds")
        eid = args.get("enrolment_id")
        if not isinstance(eid, str) or not 1 <= len(eid) <= 64 or not eid.isalnum():
            raise Refused(p.E_BAD_REQUEST, "enrolment_id must be 1-64 letters or digits")
        now, fs = self.monotonic(), self._failsafe
        if fs is not None and fs.enrolment_id != eid:
            info = self._failsafe_info() or {}
            raise Refused(p.E_FAILSAFE_BUSY, "another enrolment (another code"
                          + (f", unit {info['unit_id']}" if info.get("unit_id") else "")
                          + f") is staged on this unit, rolled back in "
                          f"{info.get('expires_in_s', 0)} s unless finished",
                          enrolment_id=fs.enrolment_id, expires_in_s=info.get("expires_in_s"))
        resumed = fs is not None
        if fs is None:
            if self.staged.root.exists():
                self._rollback("a staging area without an armed fail-safe")
            self.live.mkdir_private()
            self.staged.mkdir_private()
            fs = self._failsafe = Failsafe(eid, now, now + p.FAILSAFE_MAX_CUMULATIVE_S)
        fs.deadline = min(now + float(expiry), fs.cap)
        expires_at = dt.datetime.fromtimestamp(self.now() + fs.deadline - now, dt.UTC)
        _write_atomic(self.staged / FAILSAFE_FILE, json.dumps(
            {"enrolment_id": eid, "expires_at": expires_at.isoformat(timespec="seconds")})
            .encode(), 0o600)
        log.info("event=failsafe_armed enrolment=%s expires_in_s=%d resumed=%s", eid,
                 fs.deadline - now, resumed)
        return {**(self._failsafe_info() or {}), "resumed": resumed}

    def cmd_rollback(self, args: dict, progress) -> dict:
        if self._failsafe is None and not self.staged.root.exists():
            return {"rolled_back": False, "state": self.state()}
        self._rollback("the tool asked for it")
        return {"rolled_back": True, "state": self.state()}

    # -- commands --

    def handle(self, cmd: str, args: dict, progress: Callable[[dict], None]) -> dict:
        self.tick()
        handler = getattr(self, "cmd_" + cmd, None) if cmd in p.COMMANDS else None
        if handler is None:
            return p.error(p.E_UNKNOWN_COMMAND, f"the unit does not know command {cmd!r}",
                           known=list(p.COMMANDS))
        if (self.state() == p.STATE_LOCKED and cmd not in p.READ_ONLY
                and cmd not in p.PRESENCE_GATED):
            return p.error(p.E_LOCKED, f"the unit is locked: {cmd} is refused "
                           "(only hello, status, precheck, self-test and identify are answered)")
        try:
            if cmd in p.FAILSAFE_GUARDED:
                self._require_failsafe(cmd)
            return p.ok(handler(args, progress))
        except Refused as r:
            return p.error(r.code, r.message, r.action, **r.detail)

    def cmd_hello(self, args: dict, progress) -> dict:
        st = self.settings()
        return {
            "serial": self.s.serial_number or default_serial_number(),
            "hw_rev": self.s.hw_rev or "unknown",
            "software": {"scribelink": SOFTWARE_VERSION, "protocol": p.VERSION,
                         "provisioning": p.REVISION, "python": sys.version.split()[0]},
            "state": self.state(),
            "unit_id": st.get("unit_id"), "clinic": st.get("clinic"), "room": st.get("room"),
            "broker_url": st.get("broker_url"), "relay_url": st.get("relay_url"),
            "wifi_ssid": st.get("wifi_ssid"),
            "wifi_passphrase_set": self._p("wifi.nmconnection").exists(),
            "mics": self._mics(),
            "puck": self._puck_state(),
            "cert": self._cert_summary(),
            "failsafe": self._failsafe_info(),
            "unit_time_utc": dt.datetime.fromtimestamp(self.now(), dt.UTC)
            .isoformat(timespec="seconds"),
            "anchor": self._anchor_summary(),
            "signing_key": self._signing_key_summary(),
        }

    def _anchor_summary(self) -> dict | None:
        a = self.live.anchors()
        return None if a is None else {**a.summary(), "tokens_required": True}

    def _signing_key_summary(self) -> dict | None:
        spec = self.live.signing_key_spec()
        if spec is None:
            return None
        b = self.live.json("binding.json") or {}
        try:
            raw = trust.unb64((b.get("body") or {}).get("sign_key"), what="sign_key")
        except trust.TrustError:
            raw = b""
        return {"store": "pkcs11" if spec.startswith("pkcs11:") else "file",
                "key_id": trust.key_id(raw) if raw else None,
                "type": (b.get("body") or {}).get("key_type", trust.KEY_ED25519)}

    def cmd_status(self, args: dict, progress) -> dict:
        t = self._selftest()
        return {"state": self.state(), "locked": self._locked_info(),
                "cert": self._cert_summary(),
                "selftest": None if t is None else {"passed": t.get("passed"), "at": t.get("at")},
                "overlay": str(self._p("provisioned.toml"))
                if self._p("provisioned.toml").exists() else None,
                "failsafe": self._failsafe_info(), "anchor": self._anchor_summary()}

    def cmd_selftest_results(self, args: dict, progress) -> dict:
        t = self._selftest()
        if t is None:
            raise Refused(p.E_NOT_CONFIGURED, "no self-test has run on this unit yet",
                          "run `scripts/provision selftest`")
        return t

    def _check_anchored(self, new: dict) -> None:
        """Settings that are trust anchors cannot change by enrolment once pinned."""
        a = self.live.anchors()
        if a is None:
            return
        for k in ("broker_url", "recovery_public_key"):
            if k in new and new[k] != getattr(a, k):
                raise Refused(p.E_TRUST_ANCHOR, f"{k} is a trust anchor of this unit, pinned "
                              f"as {getattr(a, k) or 'none'}; changing it needs a set_trust "
                              "token signed by the clinic authority", name=k)

    def cmd_set_config(self, args: dict, progress) -> dict:
        new = validate_settings(args)
        live, staged = self.settings(), self.staged_settings()
        if live.get("unit_id") and new.get("unit_id", live["unit_id"]) != live["unit_id"]:
            raise Refused(p.E_WRONG_UNIT, f"this unit is {live['unit_id']!r}; it does not "
                          f"become {new['unit_id']!r} by enrolment")
        self._check_anchored(new)
        secret = new.pop("wifi_passphrase", None)
        merged = {**staged, **new}
        missing = [k for k in p.REQUIRED_SETTINGS if k not in merged]
        if missing:
            raise Refused(p.E_INVALID_CONFIG, f"missing required setting(s) {missing}")
        if secret is not None and "wifi_ssid" not in merged:
            raise Refused(p.E_INVALID_CONFIG, "wifi_passphrase needs wifi_ssid")
        has_wifi = (self.staged / "wifi.nmconnection").exists() or self._p(
            "wifi.nmconnection").exists()
        if (secret is None and has_wifi and "wifi_ssid" in new
                and new["wifi_ssid"] != staged.get("wifi_ssid")):
            raise Refused(p.E_INVALID_CONFIG, "changing wifi_ssid needs wifi_passphrase too")
        identity_changed = staged.get("unit_id") not in (None, merged["unit_id"])
        if identity_changed:  # a staged key, certificate and binding name the old unit id
            _shred(self.staged.key)
            self.staged.cert.unlink(missing_ok=True)
            self.staged.binding.unlink(missing_ok=True)
        if identity_changed or staged.get("broker_url") != merged["broker_url"]:
            (self.staged / "selftest.json").unlink(missing_ok=True)
        _write_atomic(self.staged / "settings.json", json.dumps(merged, indent=2).encode())
        if "recovery_public_key" in new:
            self.staged.mkdir_private(ANCHOR)
            _write_atomic(self.staged.anchor("recovery.pub"),
                          new["recovery_public_key"].encode() + b"\n")
        if secret is not None:
            _write_atomic(self.staged / "wifi.nmconnection",
                          nm_keyfile(merged["wifi_ssid"], secret).encode(), 0o600)
        saved = sorted(new) + (["wifi_passphrase"] if secret else [])
        log.info("event=config_staged keys=%s", ",".join(saved))
        return {"state": self.state(), "saved": saved, "staged": True}

    def cmd_generate_key(self, args: dict, progress) -> dict:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        st = self.staged_settings()
        if not all(k in st for k in p.REQUIRED_SETTINGS):
            raise Refused(p.E_NOT_CONFIGURED, "set the unit's configuration before its key")
        reused = self.staged.key.exists()
        if reused:  # a resumed enrolment keeps its key (and any certificate issued for it)
            key = serialization.load_pem_private_key(self.staged.key.read_bytes(), None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise Refused(p.E_NO_KEY, "the staged key is not an ECDSA key",
                              "run `scripts/provision cancel`, then enroll again")
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            self.staged.cert.unlink(missing_ok=True)
            (self.staged / "selftest.json").unlink(missing_ok=True)
            self.staged.mkdir_private("tls")
            _write_atomic(self.staged.key, key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()), 0o600)
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, st["unit_id"])]))
               .sign(key, hashes.SHA256()))
        log.info("event=key_%s type=ecdsa-p256", "reused" if reused else "generated")
        sign, sign_reused = self._staged_signing_key()
        return {"csr_pem": csr.public_bytes(serialization.Encoding.PEM).decode(),
                "unit_id": st["unit_id"], "key_type": "ecdsa-p256", "reused": reused,
                "sign_key": trust.b64(sign.public_raw), "sign_key_type": sign.key_type,
                "sign_key_id": trust.key_id(sign.public_raw),
                "sign_key_store": sign.describe()["store"], "sign_key_reused": sign_reused}

    def _staged_signing_key(self):
        """The staged enrolment's signing key, made now unless it has one: in the token the
        service was told of (a TPM, an ATECC608), else a file. -> (key, reused)."""
        from edge_agent import unitkey

        try:
            if self.staged.signing_key_spec() is not None:
                return self.staged.signing_key(), True
            self.staged.mkdir_private("tls")
            self.staged.binding.unlink(missing_ok=True)  # it bound another key, if any
            key: unitkey.UnitKey
            if self.s.signing_key:
                key = unitkey.generate_pkcs11(unitkey.Pkcs11Uri.parse(self.s.signing_key),
                                              self.s.signing_key_type)
                _write_atomic(self.staged.sign_uri, key.uri.text().encode() + b"\n", 0o600)
            else:
                key, pem = unitkey.FileKey.generate()
                _write_atomic(self.staged.sign_key, pem, 0o600)
        except unitkey.UnitKeyError as e:
            raise Refused(p.E_NO_KEY, f"the unit could not make its signing key: {e}",
                          "check the unit's key store (its PKCS#11 token) and try again; "
                          "the unit log has details") from e
        log.info("event=signing_key_generated store=%s type=%s key_id=%s",
                 key.describe()["store"], key.key_type, trust.key_id(key.public_raw))
        return key, False

    def cmd_install_cert(self, args: dict, progress) -> dict:
        from cryptography import x509
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.x509.oid import NameOID

        if not self.staged.key.exists() or self.staged.signing_key_spec() is None:
            raise Refused(p.E_NO_KEY, "the unit has no staged keys yet")
        chain_pem, ca_pem = args.get("cert_pem"), args.get("ca_pem")
        if not isinstance(chain_pem, str) or not isinstance(ca_pem, str):
            raise Refused(p.E_BAD_REQUEST, "install_cert needs cert_pem and ca_pem (PEM text)")
        binding = args.get("binding")
        if not isinstance(binding, dict):
            raise Refused(p.E_BAD_REQUEST, "install_cert needs the unit's key binding "
                          "(update scripts/provision)")
        authority_b64 = self._enrolment_authority(args.get("authority"))
        try:
            chain = x509.load_pem_x509_certificates(chain_pem.encode())
            ca = x509.load_pem_x509_certificate(ca_pem.encode())
        except ValueError as e:
            raise Refused(p.E_CERT_INVALID, "the certificate or CA is not valid PEM") from e
        leaf = chain[0]
        key = serialization.load_pem_private_key(self.staged.key.read_bytes(), password=None)
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if leaf.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
            raise Refused(p.E_CERT_KEY_MISMATCH, "the certificate is not for this unit's key")
        unit_id = self.staged_settings().get("unit_id")
        cns = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if len(cns) != 1 or cns[0].value != unit_id:
            raise Refused(p.E_CERT_WRONG_UNIT, f"the certificate names "
                          f"{cns[0].value if cns else None!r}, this unit is {unit_id!r}")
        try:
            bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            bc = None
        if bc is None or not bc.ca:
            raise Refused(p.E_CERT_UNTRUSTED, "the CA certificate given is not a CA")
        anchors = self.live.anchors()
        if anchors is not None and ca_sha256(ca) != anchors.ca_sha256:
            raise Refused(p.E_TRUST_ANCHOR, "the relay's clinic CA is not the one this unit "
                          "pinned (a trust anchor); changing it needs a set_trust token "
                          "signed by the clinic authority", name="ca")
        pinned = _site_value(self.s.site_config, "broker", "ca_file")
        if pinned and Path(pinned).is_file():
            # the unit's image already names the clinic CA: a laptop cannot swap in another
            try:
                trusted = x509.load_pem_x509_certificates(Path(pinned).read_bytes())
            except ValueError:
                trusted = []
            if ca not in trusted:
                raise Refused(p.E_CERT_UNTRUSTED, "the CA given is not the clinic CA this "
                              f"unit trusts ({pinned})", "enroll against this clinic's relay")
        # rebuild the path leaf -> intermediates (in the order given) -> CA
        path = [c for c in chain if c != ca] + [ca]
        try:
            for child, parent in itertools.pairwise(path):
                child.verify_directly_issued_by(parent)
            ca.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature) as e:
            raise Refused(p.E_CERT_UNTRUSTED, "the certificate does not chain to the given "
                          "clinic CA") from e
        now = dt.datetime.fromtimestamp(self.now(), dt.UTC)
        for c in path:
            if not c.not_valid_before_utc <= now <= c.not_valid_after_utc:
                raise Refused(p.E_CERT_NOT_VALID_NOW, "the certificate is not valid at the "
                              f"unit's time {now.isoformat(timespec='seconds')}")
        bound = self._check_binding(self.staged, binding, authority_b64, unit_id)
        pem = serialization.Encoding.PEM
        leaf_pem = b"".join(c.public_bytes(pem) for c in path[:-1])
        same = self.staged.cert.exists() and self.staged.cert.read_bytes() == leaf_pem
        if not same:  # a resumed enrolment re-installing the same certificate keeps its test
            self.staged.mkdir_private("tls")
            _write_atomic(self.staged.cert, leaf_pem)
            (self.staged / "selftest.json").unlink(missing_ok=True)
        self.staged.mkdir_private(ANCHOR)
        _write_atomic(self.staged.ca, ca.public_bytes(pem))
        _write_atomic(self.staged.anchor("authority.pub"), authority_b64.encode() + b"\n")
        _write_atomic(self.staged.binding, json.dumps(binding).encode())
        log.info("event=cert_staged fingerprint=%s sign_key=%s", fingerprint(leaf)[:16],
                 bound.key_id)
        return {"state": self.state(), "unit_id": unit_id, "fingerprint_sha256": fingerprint(leaf),
                "not_after": leaf.not_valid_after_utc.isoformat(timespec="seconds"),
                "staged": True, "already_installed": same, "sign_key_id": bound.key_id,
                "authority_fingerprint": trust.fingerprint(trust.unb64(authority_b64))}

    def _enrolment_authority(self, given) -> str:
        """The clinic authority this enrolment pins (base64): the one the unit pinned
        already, or, on a blank unit, the one the enrolment code names (trust on first
        use, behind the code) -- unless the unit's image pins one ([keys]
        authority_public_key_file in the site config), which then must be it."""
        if given is not None:
            try:
                trust.load_ed25519(trust.unb64(given, what="authority", length=32))
            except trust.TrustError as e:
                raise Refused(p.E_BAD_REQUEST, f"authority: {e}") from e
        anchors = self.live.anchors()
        pinned = anchors.authority if anchors is not None else None
        where = "at its first enrolment"
        image = _site_value(self.s.site_config, "keys", "authority_public_key_file")
        if pinned is None and image and Path(image).is_file():
            pinned, where = Path(image).read_text().strip(), f"in its image ({image})"
        if pinned is None:
            if given is None:
                raise Refused(p.E_BAD_REQUEST, "this unit pins its clinic authority now: "
                              "install_cert needs `authority` (update scripts/provision)")
            return given
        if given is not None and given != pinned:
            fp = trust.fingerprint(trust.unb64(pinned))
            raise Refused(p.E_OTHER_CLINIC, "this unit belongs to another clinic: it pinned "
                          f"the clinic authority {fp[:19]}... {where}, and the enrolment "
                          "names another; ask its clinic for a release token",
                          authority_fingerprint=fp)
        return pinned

    def _check_binding(self, tree: Tree, binding: dict, authority_b64: str, unit_id: str):
        """The binding must chain to the authority, name this unit and bind this unit's own
        signing key (the unit checks it itself: the laptop is not trusted)."""
        try:
            b = trust.verify_binding(trust.load_ed25519(trust.unb64(authority_b64)), binding)
        except (trust.TrustError, TypeError, ValueError) as e:
            raise Refused(p.E_BINDING_INVALID, f"the unit's key binding does not hold: {e}") \
                from e
        if b.unit != unit_id:
            raise Refused(p.E_BINDING_INVALID, f"the binding is for unit {b.unit!r}, this unit "
                          f"is {unit_id!r}")
        try:
            key = tree.signing_key()
        except ValueError as e:  # UnitKeyError
            raise Refused(p.E_NO_KEY, f"the unit's signing key cannot be used: {e}") from e
        if key is None or (key.key_type, key.public_raw) != (b.key_type, b.sign_key_raw):
            raise Refused(p.E_BINDING_INVALID, "the binding names another key than this "
                          "unit's signing key")
        return b

    def _check_time(self, args: dict) -> float | None:
        laptop = args.get("laptop_time_utc")
        if laptop is not None and (not isinstance(laptop, (int, float))
                                   or isinstance(laptop, bool) or not math.isfinite(laptop)):
            raise Refused(p.E_BAD_REQUEST, "laptop_time_utc must be Unix seconds")
        return laptop

    def cmd_precheck(self, args: dict, progress) -> dict:
        """What must hold before an enrolment changes anything: the mics capture and carry
        signal, the puck answers, the unit's clock agrees with the laptop's."""
        from edge_agent import selftest as stt

        laptop = self._check_time(args)
        asked_at = self.now()
        array = stt.mic_array(self.s.array)
        progress(p.progress("mics", f"listening on the {array.part}"))
        checks = stt.check_mics(self.s.alsa_device, self.s.channels,
                                min(0.5, self.s.selftest_seconds), self.s.sample_rate,
                                self.s.pace_realtime, array=array)
        progress(p.progress("puck", "pinging the cue puck"))
        checks.append(stt.check_puck(self.presence))
        checks.append(stt.check_clock(asked_at, laptop))
        return {"passed": stt.passed(checks), "checks": checks, "array": self.s.array}

    def cmd_selftest(self, args: dict, progress) -> dict:
        from edge_agent import selftest as stt

        laptop = self._check_time(args)
        asked_at = self.now()  # compared with the laptop's time sent in the same request
        # inside an armed fail-safe the staged enrolment is what gets tested
        tree = self.staged if self._failsafe is not None else self.live
        st = self.staged_settings() if self._failsafe is not None else self.settings()
        array = stt.mic_array(self.s.array)
        checks: list[dict] = []
        progress(p.progress("mics", f"listening on {self.s.channels} channels of the "
                            f"{array.part} for {self.s.selftest_seconds:g} s"))
        checks += stt.check_mics(self.s.alsa_device, self.s.channels, self.s.selftest_seconds,
                                 self.s.sample_rate, self.s.pace_realtime, array=array)
        progress(p.progress("puck", "pinging the cue puck"))
        checks.append(stt.check_puck(self.presence))
        cert = tree.certificate()
        have_identity = cert is not None and tree.key.exists() and "broker_url" in st
        progress(p.progress("clock", "checking the unit's clock"))
        clock = stt.check_clock(asked_at, laptop, cert.not_valid_before_utc if cert else None,
                                cert.not_valid_after_utc if cert else None)
        checks.append(clock)
        if not have_identity:
            checks.append(stt.not_yet("broker", "the unit's certificate: "
                                      "`scripts/provision enroll` installs it first"))
        else:
            progress(p.progress("broker", f"TLS connect to {st['broker_url']} with the "
                                "unit's certificate"))
            u = urlparse(st["broker_url"])
            checks.append(stt.check_broker(
                u.hostname or "", u.port or 8883, unit_id=st["unit_id"], ca_file=str(tree.ca),
                cert_file=str(tree.cert), key_file=str(tree.key),
                probe_topic=f"{topics.ROOT}/selftest/{st['unit_id']}",
                timeout_s=self.s.broker_timeout_s,
                clock_ok=clock["status"] == p.STATUS_PASS,
                # a running agent holds the unit's broker session: the probe must not
                # connect as the unit then (edge_agent/selftest.py)
                agent_link_file=self.s.state_dir / stt.AGENT_LINK_FILE))
        result = {"passed": stt.passed(checks), "checks": checks,
                  "at": dt.datetime.fromtimestamp(self.now(), dt.UTC)
                  .isoformat(timespec="seconds"),
                  "cert_fingerprint_sha256": None if cert is None else fingerprint(cert),
                  "staged": self._failsafe is not None}
        if self._failsafe is not None:
            _write_atomic(self.staged / "selftest.json", json.dumps(result, indent=2).encode())
        elif self.state() != p.STATE_LOCKED:  # a locked unit's stored state stays as committed
            _write_atomic(self._p("selftest.json"), json.dumps(result, indent=2).encode())
        log.info("event=selftest passed=%s failed=%s", result["passed"],
                 ",".join(c["check"] for c in checks if not c["ok"]) or "-")
        return result

    def cmd_identify(self, args: dict, progress) -> dict:
        seconds = args.get("seconds", p.IDENTIFY_DEFAULT_S)
        if (not isinstance(seconds, (int, float)) or isinstance(seconds, bool)
                or not 1 <= seconds <= p.IDENTIFY_MAX_S):
            raise Refused(p.E_BAD_REQUEST, f"seconds must be 1-{p.IDENTIFY_MAX_S:g}")
        if self.presence is None:
            raise Refused(p.E_NO_PUCK, "identify blinks the cue puck, and none is configured")

        def tick(left: float) -> None:
            progress(p.progress("identify", f"the puck is blinking: {left:.0f} s left",
                                left_s=round(left, 1)))

        if not self.presence.identify(float(seconds), tick):
            raise Refused(p.E_NO_PUCK, "the cue puck did not answer (unplugged, or the running "
                          "agent holds it)", "plug the puck in; if the agent runs, its ring "
                          "already shows the unit's state")
        return {"shown_s": seconds}

    def _merged(self, rel: str) -> Path | None:
        """A file as the next commit leaves it: staged, else the committed one."""
        for tree in (self.staged, self.live):
            if (tree / rel).exists():
                return tree / rel
        return None

    def overlay_toml(self, st: dict, signing_key: str) -> str:
        """The agent's overlay: what the committed files are, under their live paths
        (`signing_key`: the key file's path or the token key's pkcs11: URI)."""
        live = self.live
        # [keys] is the trust root (docs/trust.md): the pinned clinic authority, the unit's
        # signing key and its binding to this unit id
        keys = {"authority_public_key_file": str(live.anchor("authority.pub").resolve()),
                "signing_key_file": signing_key,
                "binding_file": str(live.binding.resolve())}
        if self._merged(f"{ANCHOR}/recovery.pub") is not None:
            keys["recovery_public_key_file"] = str(live.anchor("recovery.pub").resolve())
        doc: dict = {
            "unit_id": st["unit_id"],
            "broker": {"url": st["broker_url"], "ca_file": str(live.ca.resolve()),
                       "cert_file": str(live.cert.resolve()),
                       "key_file": str(live.key.resolve())},
            "keys": keys,
        }
        if self.s.puck_port:
            doc["puck"] = {"port": self.s.puck_port}
        return tomlconf.dumps(doc, header=[
            "Written by the unit's provisioning service (edge_agent/provision.py).",
            f"clinic: {json.dumps(st['clinic'])}  room: {json.dumps(st['room'])}",
            "Layered on the site config: python -m edge_agent run --config "
            "/etc/scribelink/agent.toml --config THIS",
        ])

    def _next_anchors(self, st: dict) -> Anchors:
        """The anchors a commit of the staged enrolment pins; on an anchored unit they must
        be the ones it has (their changes take a set_trust token, not an enrolment)."""
        from cryptography import x509

        ca_file = self._merged(f"{ANCHOR}/ca.pem")
        auth_file = self._merged(f"{ANCHOR}/authority.pub")
        if ca_file is None or auth_file is None:
            raise Refused(p.E_NOT_ENROLLED, "the staged enrolment has no pinned CA and "
                          "clinic authority yet (install_cert stages them)")
        recovery = self._merged(f"{ANCHOR}/recovery.pub")
        nxt = Anchors(authority=auth_file.read_text().strip(), broker_url=st["broker_url"],
                      ca_sha256=ca_sha256(x509.load_pem_x509_certificate(ca_file.read_bytes())),
                      recovery_public_key=recovery.read_text().strip() if recovery else None,
                      unit_id=st["unit_id"], clinic=st.get("clinic", ""),
                      relay_url=st.get("relay_url", ""))
        now = self.live.anchors()
        if now is not None:
            changed = [k for k, v in nxt.pinned().items() if now.pinned()[k] != v]
            if changed:
                raise Refused(p.E_TRUST_ANCHOR, f"the enrolment would change this unit's trust "
                              f"anchors ({', '.join(changed)}); that takes a set_trust token",
                              changed=changed)
        return nxt

    def cmd_commit(self, args: dict, progress) -> dict:
        from edge_agent import config as agent_config

        st = self.staged_settings()
        cert = self.staged.certificate()
        if (not all(k in st for k in p.REQUIRED_SETTINGS) or cert is None
                or not self.staged.key.exists() or self.staged.signing_key_spec() is None
                or not self.staged.binding.exists()):
            raise Refused(p.E_NOT_ENROLLED, "the staged enrolment has no settings, keys, "
                          "certificate and binding yet")
        t = self.staged.json("selftest.json")
        if not t or not t.get("passed") or t.get("cert_fingerprint_sha256") != fingerprint(cert):
            raise Refused(p.E_SELFTEST_NOT_PASSED, "the last self-test with this certificate "
                          "did not pass (or none ran)")
        anchors = self._next_anchors(st)
        # checked again here, against what this commit pins: the unit's own key, its unit id
        bound = self._check_binding(self.staged, self.staged.json("binding.json") or {},
                                    anchors.authority, st["unit_id"])
        spec = self.staged.signing_key_spec()
        assert spec is not None
        signing_key = spec if spec.startswith("pkcs11:") else str(self.live.sign_key.resolve())
        overlay = self.overlay_toml(st, signing_key)
        try:  # the agent must start with exactly what is written
            base = tomllib.loads(Path(self.s.site_config).read_text()) if self.s.site_config \
                else {}
            agent_config.from_dict(tomlconf.layered(base, tomllib.loads(overlay)))
        except (OSError, tomllib.TOMLDecodeError, agent_config.ConfigError, TypeError) as e:
            raise Refused(p.E_INVALID_CONFIG, f"the agent would not accept the configuration: "
                          f"{e}", "fix the site config (--site-config) or the settings") from e
        assert self._failsafe is not None
        locked = {"at": dt.datetime.fromtimestamp(self.now(), dt.UTC)
                  .isoformat(timespec="seconds"), "cert_fingerprint_sha256": fingerprint(cert),
                  "sign_key_id": bound.key_id, "tech": str(args.get("tech", ""))[:64],
                  "enrolment_id": self._failsafe.enrolment_id}
        self.staged.mkdir_private(ANCHOR)
        _write_atomic(self.staged.anchor(ANCHORS_FILE), json.dumps(anchors.to_dict()).encode())
        _write_atomic(self.staged / "provisioned.toml", overlay.encode())
        _write_atomic(self.staged / "locked.json", json.dumps(locked).encode())
        _write_atomic(self.staged / COMMIT_MARKER, b"commit\n")  # the commit point
        self._promote()
        log.info("event=committed_and_locked unit=%s sign_key=%s", st.get("unit_id"),
                 bound.key_id)
        return {"state": self.state(), "overlay": str(self._p("provisioned.toml")),
                "locked": locked, "anchor": self._anchor_summary()}

    def _require_presence(self, what: str, args: dict, progress) -> None:
        if self.presence is None:
            raise Refused(p.E_NO_PUCK, f"{what} needs the cue puck, and none is configured")
        timeout = args.get("timeout_s", 60)
        if (not isinstance(timeout, (int, float)) or isinstance(timeout, bool)
                or not p.PRESENCE_MIN_TIMEOUT_S <= timeout <= p.PRESENCE_MAX_TIMEOUT_S):
            raise Refused(p.E_BAD_REQUEST, f"timeout_s must be {p.PRESENCE_MIN_TIMEOUT_S:g}-"
                          f"{p.PRESENCE_MAX_TIMEOUT_S:g} seconds (the hold itself takes "
                          f"{p.PRESENCE_HOLD_S:g} s)")
        hold = p.PRESENCE_HOLD_S

        def ready() -> None:
            progress(p.progress("presence", f"{what}: hold the puck's button for {hold:g} s "
                                f"now (waiting {timeout:g} s)", hold_s=hold, timeout_s=timeout,
                                phase="waiting"))

        def holding(held_s: float, phase: str) -> None:
            message = {"holding": f"held {held_s:.0f} s of {hold:g}",
                       "release": f"{hold:g} s reached: release the button now",
                       "let_go": f"let go after {held_s:.1f} s: hold it for the full {hold:g} s"
                       }[phase]
            progress(p.progress("presence", message, hold_s=hold, held_s=round(held_s, 1),
                                phase=phase))

        if not self.presence.wait_for_hold(hold, float(timeout), ready, holding):
            log.warning("event=presence_not_shown for=%s", what.replace(" ", "_"))
            raise Refused(p.E_PRESENCE_NOT_SHOWN, f"the puck's button was not held for "
                          f"{hold:g} s within {timeout:g} s")

    # -- tokens: what a person in the room must not do alone (docs/trust.md)

    def _used_tokens(self) -> list[dict]:
        d = self.live.json(f"{ANCHOR}/{USED_TOKENS}") or {}
        used = d.get("used")
        return [u for u in used if isinstance(u, dict)] if isinstance(used, list) else []

    def _token(self, cmd: str, args: dict) -> dict | None:
        """The checked body of the token this command carries, or None if the unit has
        pinned no clinic authority yet (then there is nothing a token could protect).
        Checked before the puck's hold is asked for, and again after it."""
        anchors = self.live.anchors()
        if anchors is None:
            return None
        action = p.TOKEN_ACTION[cmd]
        tok = args.get("token")
        fp = trust.fingerprint(trust.unb64(anchors.authority))
        if tok is None:
            raise Refused(p.E_TOKEN_REQUIRED, f"{action} needs a one-time token signed by this "
                          f"unit's clinic authority ({fp[:19]}...), as well as the puck's "
                          "hold: the hold alone is not enough", unit=anchors.unit_id,
                          action=action)
        try:
            return trust.verify_token(trust.load_ed25519(trust.unb64(anchors.authority)), tok,
                                      unit=anchors.unit_id, action=action,
                                      now_us=int(self.now() * 1_000_000),
                                      used={str(u.get("id")) for u in self._used_tokens()})
        except (trust.TrustError, TypeError, ValueError, AttributeError) as e:
            log.warning("event=token_refused action=%s why=%s", action,
                        json.dumps(str(e)[:120]))
            raise Refused(p.E_TOKEN_INVALID, f"the {action} token was refused: {e}",
                          unit=anchors.unit_id, action=action) from e

    def _spend_token(self, cmd: str, args: dict) -> None:
        """Check the token again (it may have expired during the hold) and remember its id
        (durably, before the action: a token never works twice, even across a power cut)."""
        body = self._token(cmd, args)
        if body is None:
            return
        used = [*self._used_tokens(), {"id": body["token_id"], "expires_us": body["expires_us"],
                                        "action": body["action"]}]
        self.live.mkdir_private(ANCHOR)
        _write_atomic(self.live.anchor(USED_TOKENS), json.dumps(
            {"used": used[-MAX_USED_TOKENS:]}).encode(), 0o600)
        log.warning("event=token_used action=%s token=%s", body["action"], body["token_id"])

    def cmd_unlock(self, args: dict, progress) -> dict:
        if self.state() != p.STATE_LOCKED:
            return {"state": self.state(), "already_unlocked": True}
        self._token(p.CMD_UNLOCK, args)
        self._require_presence("unlock", args, progress)
        self._spend_token(p.CMD_UNLOCK, args)
        self._p("locked.json").unlink()
        log.warning("event=unlocked by=presence_and_token")
        return {"state": self.state(), "already_unlocked": False}

    def _erase(self) -> list[str]:
        """Everything but the trust anchors: keys (shredded, or destroyed in the token),
        settings, certificate, binding, overlay, lock, self-test, the agent's state, the
        spool."""
        if self._failsafe is not None or self.staged.root.exists():
            self._rollback("factory reset")
        _shred(self.key_path)
        _shred(self.live.sign_key)
        _shred(self._p("wifi.nmconnection"))
        self.live.sign_uri.unlink(missing_ok=True)
        self._drop_token_keys(all_keys=True)
        for name in ("locked.json", "provisioned.toml", "selftest.json", "settings.json",
                     "recovery.pub", "binding.json", PRESENCE_STAMP, "assignment.json",
                     "config.json"):
            self._p(name).unlink(missing_ok=True)
        shutil.rmtree(self.dir / "tls", ignore_errors=True)
        erased = ["keys", "config"]
        spool = self.s.spool_dir or _site_value(self.s.site_config, "spool", "dir")
        if spool and Path(spool).is_dir():
            shutil.rmtree(spool, ignore_errors=True)
            erased.append("spool")
        _fsync_dir(self.dir)
        return erased

    def cmd_factory_reset(self, args: dict, progress) -> dict:
        self._token(p.CMD_FACTORY_RESET, args)
        self._require_presence("factory reset", args, progress)
        self._spend_token(p.CMD_FACTORY_RESET, args)
        erased = self._erase()
        kept = ["trust anchors"] if self.live.anchors() is not None else []
        log.warning("event=factory_reset erased=%s kept=%s", ",".join(erased),
                    ",".join(kept).replace(" ", "_") or "-")
        return {"state": self.state(), "erased": erased, "kept": kept}

    def _trust_changes(self, anchors: Anchors, token_args, args: dict) -> dict:
        """The anchors a set_trust token changes (exactly what the authority signed), each
        checked; a new CA comes as `ca_pem` in the command and must be the one signed."""
        from cryptography import x509

        if not isinstance(token_args, dict) or not token_args or \
                not set(token_args) <= set(trust.TRUST_ANCHORS):
            raise Refused(p.E_TOKEN_INVALID, "the set_trust token names no trust anchor this "
                          f"unit knows (known: {', '.join(trust.TRUST_ANCHORS)})")
        out: dict = {}
        for k, v in token_args.items():
            if k == "authority":
                try:
                    trust.load_ed25519(trust.unb64(v, what="authority", length=32))
                except trust.TrustError as e:
                    raise Refused(p.E_TOKEN_INVALID, f"set_trust: {e}") from e
                out[k] = v
            elif k in ("broker_url", "recovery_public_key"):
                out[k] = validate_settings({k: v})[k]
            elif k == "ca_sha256":
                pem = args.get("ca_pem")
                try:
                    if not isinstance(pem, str):
                        raise ValueError("ca_pem is not text")
                    ca = x509.load_pem_x509_certificate(pem.encode())
                    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
                except (AttributeError, ValueError, x509.ExtensionNotFound) as e:
                    raise Refused(p.E_BAD_REQUEST, "set_trust of the CA needs the new CA "
                                  "certificate as ca_pem") from e
                if not bc.ca or ca_sha256(ca) != v:
                    raise Refused(p.E_TOKEN_INVALID, "ca_pem is not the CA certificate the "
                                  "token names (its SHA-256 differs), or not a CA")
                out[k] = (v, ca)
        return out

    def cmd_set_trust(self, args: dict, progress) -> dict:
        anchors = self.live.anchors()
        if anchors is None:
            raise Refused(p.E_NOT_ANCHORED, "this unit has pinned no trust anchors yet: there "
                          "is nothing to change")
        if self._failsafe is not None or self.staged.root.exists():
            raise Refused(p.E_FAILSAFE_BUSY, "an enrolment is staged on this unit: finish it "
                          "or roll it back before changing its trust anchors")
        body = self._token(p.CMD_SET_TRUST, args)
        assert body is not None
        changes = self._trust_changes(anchors, body.get("args"), args)
        self._require_presence("set_trust", args, progress)
        self._spend_token(p.CMD_SET_TRUST, args)
        # staged and committed like an enrolment: all of it or none of it, across power cuts
        from cryptography.hazmat.primitives import serialization

        new = anchors.to_dict()
        self.staged.mkdir_private(ANCHOR)
        for k, v in changes.items():
            if k == "ca_sha256":
                new[k] = v[0]
                _write_atomic(self.staged.ca, v[1].public_bytes(serialization.Encoding.PEM))
            else:
                new[k] = v
        if "authority" in changes:
            _write_atomic(self.staged.anchor("authority.pub"),
                          changes["authority"].encode() + b"\n")
        if "recovery_public_key" in changes:
            _write_atomic(self.staged.anchor("recovery.pub"),
                          changes["recovery_public_key"].encode() + b"\n")
        _write_atomic(self.staged.anchor(ANCHORS_FILE), json.dumps(new).encode())
        st = self.settings()
        if st:
            st = {**st, **{k: new[k] for k in ("broker_url", "recovery_public_key")
                           if k in changes}}
            _write_atomic(self.staged / "settings.json", json.dumps(st, indent=2).encode())
            spec = self.live.signing_key_spec()
            if self._p("provisioned.toml").exists() and spec is not None:
                _write_atomic(self.staged / "provisioned.toml",
                              self.overlay_toml(st, spec).encode())
        _write_atomic(self.staged / COMMIT_MARKER, b"set_trust\n")
        self._promote()
        log.warning("event=trust_anchors_changed changed=%s", ",".join(sorted(changes)))
        return {"state": self.state(), "changed": sorted(changes),
                "anchor": self._anchor_summary(),
                "reenrol": bool({"authority", "ca_sha256"} & set(changes)),
                "restart_agent": self._p("provisioned.toml").exists()}

    def cmd_release(self, args: dict, progress) -> dict:
        if self.live.anchors() is None:
            raise Refused(p.E_NOT_ANCHORED, "this unit is pinned to no clinic: there is nothing "
                          "to release (`scripts/provision factory-reset` erases it)")
        self._token(p.CMD_RELEASE, args)
        self._require_presence("release", args, progress)
        self._spend_token(p.CMD_RELEASE, args)
        erased = self._erase()
        # the used token ids stay: a token seen once never works again, whoever pins next
        for name in ("authority.pub", "ca.pem", "recovery.pub", ANCHORS_FILE):
            self.live.anchor(name).unlink(missing_ok=True)
        _fsync_dir(self.live.root / ANCHOR)
        log.warning("event=released erased=%s", ",".join(erased))
        return {"state": self.state(), "erased": [*erased, "trust anchors"]}


def _site_value(path: str, section: str, key: str):
    if not path:
        return None
    try:
        return tomllib.loads(Path(path).read_text()).get(section, {}).get(key)
    except (OSError, tomllib.TOMLDecodeError, AttributeError):
        return None


# ---------------------------------------------------------------------- framing + dispatch


class Server:
    """Bytes from the tech in, bytes to the tech out. The fuzzer drives this directly."""

    def __init__(self, unit: Unit) -> None:
        self.unit = unit
        self.decoder = p.Decoder()
        self.handled = 0
        # the last mutating request and its response, so a retransmitted request (the tool
        # timed out and resent the same id and body) is answered again, not re-executed
        self._last: tuple[int, bytes, bytes] | None = None

    def feed(self, data: bytes, now: float, write: Callable[[bytes], object]) -> None:
        for frame in self.decoder.feed(data, now):
            if frame.kind != p.KIND_REQUEST:
                continue
            write(self.respond(frame, write))

    def respond(self, frame: p.Frame, write: Callable[[bytes], object]) -> bytes:
        rid = frame.request_id
        body = p.dump_payload(frame.payload)
        if self._last is not None and self._last[0] == rid and self._last[1] == body:
            return self._last[2]
        try:
            cmd, args = p.parse_request(frame.payload)
        except p.ProtocolError as e:
            return p.encode(p.KIND_RESPONSE, rid, p.error(p.E_BAD_REQUEST, str(e)))

        def progress(msg: dict) -> None:
            try:
                write(p.encode(p.KIND_PROGRESS, rid, msg))
            except p.ProtocolError:
                pass

        t0 = time.monotonic()
        try:
            resp = self.unit.handle(cmd, args, progress)
        except Exception as e:  # noqa: BLE001 - one command never takes the service down
            log.error("event=command_failed cmd=%s error=%s", cmd[:32], type(e).__name__)
            resp = p.error(p.E_INTERNAL, f"the unit failed running {cmd[:32]!r} "
                           f"({type(e).__name__})")
        self.handled += 1
        log.info("event=request cmd=%s rid=%d ok=%s code=%s ms=%d", cmd[:32] if cmd in
                 p.COMMANDS else "unknown", rid, resp["ok"],
                 resp.get("error", {}).get("code", "-"), (time.monotonic() - t0) * 1000)
        try:
            out = p.encode(p.KIND_RESPONSE, rid, resp)
        except p.ProtocolError:
            out = p.encode(p.KIND_RESPONSE, rid, p.error(p.E_INTERNAL, "response too large"))
        if cmd not in p.READ_ONLY:
            self._last = (rid, body, out)
        return out


def serve_forever(server: Server, port: str, baud: int, stop: Callable[[], bool]) -> None:
    import serial  # pyserial: the unit extra

    ser = None
    while not stop():
        if ser is None:
            try:
                ser = serial.serial_for_url(port, baudrate=baud, timeout=0.05,
                                            write_timeout=5)
                log.info("event=port_open port=%s", port)
            except (OSError, ValueError) as e:
                log.debug("event=port_open_failed port=%s error=%s", port, q(e))
                time.sleep(0.5)
                continue
        try:
            data = ser.read(ser.in_waiting or 1)
            server.feed(data, time.monotonic(), ser.write)
            server.unit.tick()  # the fail-safe runs out even while nobody talks to the unit
        except (OSError, ValueError, TypeError) as e:  # SerialException is an OSError
            log.info("event=port_lost port=%s error=%s", port, type(e).__name__)
            try:
                ser.close()
            except OSError:
                pass
            ser = None
            time.sleep(0.2)
    if ser is not None:
        ser.close()


def parse_args(argv: list[str]) -> tuple[ServeSettings, bool]:
    ap = argparse.ArgumentParser(prog="python -m edge_agent provision-serve",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", required=True, help="the service serial port (pyserial URL)")
    ap.add_argument("--state-dir", required=True, help="where settings, keys, overlay live")
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--site-config", default="", help="the base /etc/scribelink/agent.toml")
    ap.add_argument("--alsa-device", help="capture device (default: the site config's)")
    ap.add_argument("--channels", type=int, help="mic channels (default: the site config's)")
    ap.add_argument("--array", help="the fitted mic array, a name in hardware/arrays/ "
                    "(default: the site config's [dsp] array)")
    ap.add_argument("--puck-port", help="the cue puck's port (default: the site config's)")
    ap.add_argument("--serial-number", default="")
    ap.add_argument("--hw-rev", default="")
    ap.add_argument("--spool-dir", default="", help="erased by factory reset "
                    "(default: the site config's [spool] dir)")
    ap.add_argument("--signing-key", help="make the unit's signing key in this PKCS#11 token "
                    "(a pkcs11: URI without an id; default: the site config's [keys] "
                    "signing_key_file if it is one, else a file in the state dir)")
    ap.add_argument("--signing-key-type", default="auto",
                    choices=("auto", "ed25519", "ecdsa-p256"),
                    help="in a token: auto picks Ed25519 where the token has it, else P-256")
    ap.add_argument("-v", "--verbose", action="store_true")
    test = ap.add_argument_group("test-only knobs")
    test.add_argument("--pace-realtime", action="store_true",
                      help="pace capture reads (ALSA file plugin has no clock)")
    test.add_argument("--selftest-seconds", type=float, default=2.0)
    test.add_argument("--clock-offset-s", type=float, default=0.0,
                      help="pretend the unit clock is off by this much")
    a = ap.parse_args(argv)
    site = a.site_config
    s = ServeSettings(
        state_dir=Path(a.state_dir), port=a.port, baud=a.baud,
        alsa_device=a.alsa_device or _site_value(site, "capture", "device")
        or "scribelink_capture",
        channels=a.channels or _site_value(site, "capture", "channels") or 4,
        sample_rate=_site_value(site, "capture", "sample_rate") or 16000,
        array=a.array or _site_value(site, "dsp", "array") or "respeaker-4mic-pi",
        puck_port=a.puck_port if a.puck_port is not None
        else (_site_value(site, "puck", "port") or ""),
        serial_number=a.serial_number, hw_rev=a.hw_rev, site_config=site,
        spool_dir=a.spool_dir, selftest_seconds=a.selftest_seconds,
        pace_realtime=a.pace_realtime, clock_offset_s=a.clock_offset_s,
        signing_key=a.signing_key if a.signing_key is not None else _token_uri(site),
        signing_key_type=a.signing_key_type,
    )
    return s, a.verbose


def _token_uri(site: str) -> str:
    """The site config's [keys] signing_key_file, if it names a PKCS#11 token (the unit's
    image says where its hardware keeps keys); else "" (a file in the state dir)."""
    v = _site_value(site, "keys", "signing_key_file")
    return v if isinstance(v, str) and v.startswith("pkcs11:") else ""


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    s, verbose = parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    s.state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(s.state_dir, 0o700)
    presence = UnitPresence(s.puck_port, s.state_dir) if s.puck_port else None
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    unit = Unit(s, presence)
    log.info("event=provision_serve port=%s state=%s puck=%s", s.port, unit.state(),
             "configured" if presence else "absent")
    serve_forever(Server(unit), s.port, s.baud, stopping.is_set)
    return 0
