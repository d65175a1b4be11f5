"""The relay's configuration (TOML)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class RelayConfig:
    data_dir: str
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    broker_url: str = "mqtts://127.0.0.1:8883"
    broker_ca_file: str = ""
    broker_cert_file: str = ""
    broker_key_file: str = ""
    broker_client_id: str = "relay"
    retention_days: float = 7.0
    purge_interval_s: float = 3600.0
    # enrollment CA (issues unit certificates); empty = enrollment disabled
    ca_cert_file: str = ""
    ca_key_file: str = ""
    # units' HTTPS listener (mTLS: releases, update reports, diagnostics); 0 = off.
    # Its server certificate comes from the clinic CA; client certificates are checked
    # against unit_https_ca_file (default: ca_cert_file, else broker_ca_file).
    unit_https_port: int = 0
    unit_https_cert_file: str = ""
    unit_https_key_file: str = ""
    unit_https_ca_file: str = ""

    @property
    def broker_host_port(self) -> tuple[str, int]:
        u = urlparse(self.broker_url)
        if u.scheme != "mqtts":
            raise ConfigError(f"broker_url must be mqtts://HOST:PORT, got {self.broker_url!r}")
        return u.hostname or "127.0.0.1", u.port or 8883


def load(path: str | Path) -> RelayConfig:
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"config file {path} not found") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from e
    unknown = set(raw) - set(RelayConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)}")
    if "data_dir" not in raw:
        raise ConfigError("data_dir is required")
    cfg = RelayConfig(**raw)
    cfg.broker_host_port
    return cfg
