"""The unit's configuration (TOML; template in hardware/config/agent.toml)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from scribelink import codec as codecs
from scribelink import tomlconf
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
class CodecConfig:
    """How sessions are encoded. The relay's `config` message (the clinic's choice per
    unit) overrides codec and bitrate; the unit keeps the last one it was sent."""

    codec: str = "opus"
    bitrate: int = codecs.DEFAULT_BITRATE
    complexity: int = codecs.DEFAULT_COMPLEXITY
    fec: bool = False
    dtx: bool = False

    def settings(self) -> codecs.CodecSettings:
        return codecs.CodecSettings(codec=self.codec, bitrate=self.bitrate,
                                    complexity=self.complexity, fec=self.fec, dtx=self.dtx)


@dataclass(frozen=True)
class SessionConfig:
    chunk_ms: int = 40
    auto_open: bool = True  # open a session as soon as a scribe is assigned
    # a privacy pause ends with the next hold, or after this many seconds (0: never)
    privacy_auto_resume_s: float = 0.0
    # the clinic's option: a session captures nothing until consent is recorded (the
    # physician's double press, or a scribe confirming the read-back)
    consent_required: bool = False


@dataclass(frozen=True)
class SpoolConfig:
    dir: str = "/var/lib/scribelink/spool"
    max_bytes: int = 2_000_000_000
    max_age_s: float = 8 * 3600
    # unsent audio kept, in seconds (0: no limit): a clinic day whatever the codec
    max_audio_s: float = 8 * 3600
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
    """The unit's trust anchors and identity (docs/trust.md). Provisioning writes them."""

    recovery_public_key_file: str = ""
    # the clinic authority pinned at provisioning (base64 raw Ed25519): without it the unit
    # accepts no assignment, so it wraps audio to nobody
    authority_public_key_file: str = ""
    # the unit's signing key -- an Ed25519 key file (PKCS#8 PEM, 0600), or the pkcs11: URI
    # (RFC 7512) of a key in the unit's TPM or ATECC608 (edge_agent/unitkey.py) -- and the
    # authority-rooted binding of it to the unit id (a unit_binding statement, JSON)
    signing_key_file: str = ""
    binding_file: str = ""


@dataclass(frozen=True)
class PuckConfig:
    port: str = ""  # empty: no puck


@dataclass(frozen=True)
class UpdatesConfig:
    """Fleet updates (docs/updates.md)."""

    # the relay's unit endpoint (mutual TLS with the broker certificate); empty: the
    # broker's host on port 8443
    relay_url: str = ""
    # the release key pinned at install (scripts/install-unit --release-key); a unit
    # without one refuses every release
    release_public_key_file: str = "/etc/scribelink/release.pub"
    # install only in this local-time window, e.g. "22:00-05:30"; empty: at any session end
    window: str = ""
    # hold the next session at most this long for a release, then record anyway
    hold_max_s: float = 120.0
    # a release on trial must pass its health check within this long
    health_deadline_s: float = 60.0
    # the installer's state (root-owned, readable): are we on trial, what happened
    installer_state_dir: str = "/var/lib/scribelink-update"

    def relay_url_for(self, broker: BrokerConfig) -> str:
        if self.relay_url:
            return self.relay_url
        return f"https://{broker.host_port[0]}:8443"


@dataclass(frozen=True)
class AgentConfig:
    unit_id: str
    state_dir: str = "/var/lib/scribelink"
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    file_input: FileInputConfig = field(default_factory=FileInputConfig)
    dsp: DspConfig = field(default_factory=DspConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    puck: PuckConfig = field(default_factory=PuckConfig)
    updates: UpdatesConfig = field(default_factory=UpdatesConfig)


_SECTIONS = {
    "capture": CaptureConfig,
    "file_input": FileInputConfig,
    "dsp": DspConfig,
    "codec": CodecConfig,
    "session": SessionConfig,
    "spool": SpoolConfig,
    "broker": BrokerConfig,
    "keys": KeysConfig,
    "puck": PuckConfig,
    "updates": UpdatesConfig,
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
    layers = []
    for path in paths:
        try:
            layers.append(tomllib.loads(Path(path).read_text()))
        except FileNotFoundError as e:
            raise ConfigError(f"config file {path} not found") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}") from e
    return from_dict(tomlconf.layered(*layers))


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
    _ = cfg.broker.host_port  # validates the URL
    try:
        cfg.codec.settings().check_chunk_ms(cfg.session.chunk_ms)
    except ValueError as e:
        raise ConfigError(f"[codec]: {e}") from e
    if cfg.capture.sample_rate != codecs.SAMPLE_RATE:
        # the DSP, the chunks and Opus wideband are all 16 kHz
        raise ConfigError(f"[capture] sample_rate must be {codecs.SAMPLE_RATE}")
    from edge_agent.update_gate import WindowError, parse_window

    try:
        parse_window(cfg.updates.window)
    except WindowError as e:
        raise ConfigError(f"[updates] {e}") from e
    return cfg
