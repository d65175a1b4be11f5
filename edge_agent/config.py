"""The unit's configuration (TOML; template in hardware/config/agent.toml)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from scribelink.topics import valid_unit_id


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class CaptureConfig:
    device: str = "scribelink_capture"
    sample_rate: int = 16000
    channels: int = 4
    period_frames: int = 320


@dataclass(frozen=True)
class FileInputConfig:
    """A recording played through ALSA's `file` plugin instead of microphones: the demo,
    the tests and the benchmarks. A real unit never has this section."""

    # the file plugin on a `null` slave has no clock: space reads to the sample clock
    pace_realtime: bool = False
    speed: float = 1.0
    # stop after this many input frames; 0 = run until stopped
    stop_after_frames: int = 0
    # after a restart, skip the input frames already sealed
    resume_input: bool = False
    # exit once stop_after_frames is sealed and sent
    exit_when_done: bool = False


@dataclass(frozen=True)
class DspConfig:
    mode: str = "on"
    array: str = "respeaker-4mic-pi"


@dataclass(frozen=True)
class SessionConfig:
    chunk_ms: int = 40
    auto_open: bool = True  # open a session as soon as a scribe is assigned
    # a privacy pause ends with the next hold, or after this many seconds (0: never)
    privacy_auto_resume_s: float = 0.0


@dataclass(frozen=True)
class SpoolConfig:
    dir: str = "/var/lib/scribelink/spool"
    max_bytes: int = 2_000_000_000
    max_age_s: float = 8 * 3600
    fsync_interval_s: float = 1.0
    ack_grace_s: float = 30.0
    segment_bytes: int = 4 << 20


@dataclass(frozen=True)
class BrokerConfig:
    url: str = "mqtts://localhost:8883"
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    inflight_max: int = 64
    keepalive_s: int = 15
    # backlog records per second while catching up (1000 = 40x real time at 40 ms chunks)
    backlog_rate: float = 1000.0

    @property
    def host_port(self) -> tuple[str, int]:
        u = urlparse(self.url)
        if u.scheme != "mqtts":
            raise ConfigError(f"broker url must be mqtts://HOST:PORT, got {self.url!r}")
        return u.hostname or "localhost", u.port or 8883


@dataclass(frozen=True)
class KeysConfig:
    recovery_public_key_file: str = ""


@dataclass(frozen=True)
class PuckConfig:
    port: str = ""  # empty: no puck


@dataclass(frozen=True)
class AgentConfig:
    unit_id: str
    state_dir: str = "/var/lib/scribelink"
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    file_input: FileInputConfig = field(default_factory=FileInputConfig)
    dsp: DspConfig = field(default_factory=DspConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    puck: PuckConfig = field(default_factory=PuckConfig)


_SECTIONS = {
    "capture": CaptureConfig,
    "file_input": FileInputConfig,
    "dsp": DspConfig,
    "session": SessionConfig,
    "spool": SpoolConfig,
    "broker": BrokerConfig,
    "keys": KeysConfig,
    "puck": PuckConfig,
}


def _build(cls, data: dict, where: str):
    known = set(cls.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"[{where}]: unknown key(s) {sorted(unknown)}")
    return cls(**data)


def load(*paths: str | Path) -> AgentConfig:
    """Load one or more TOML files; later files override earlier ones key by key
    (site defaults in /etc/scribelink/agent.toml, then what provisioning wrote)."""
    merged: dict = {}
    for path in paths:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError as e:
            raise ConfigError(f"config file {path} not found") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}") from e
        for k, v in raw.items():
            if isinstance(v, dict) and isinstance(merged.get(k), dict):
                merged[k] = {**merged[k], **v}
            else:
                merged[k] = v
    return from_dict(merged)


def from_dict(raw: dict) -> AgentConfig:
    raw = dict(raw)
    sections = {name: _build(cls, raw.pop(name, {}), name) for name, cls in _SECTIONS.items()}
    if "unit_id" not in raw:
        raise ConfigError("unit_id is required (provisioning sets it)")
    cfg = _build(AgentConfig, {**raw, **sections}, "top level")
    if not valid_unit_id(cfg.unit_id):
        raise ConfigError(f"unit_id {cfg.unit_id!r}: letters, digits, '.', '_', '-' only")
    if cfg.dsp.mode not in ("on", "off"):
        raise ConfigError("[dsp] mode must be 'on' or 'off'")
    cfg.broker.host_port  # validates the URL
    return cfg
