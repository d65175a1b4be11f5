"""The relay's configuration (TOML)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlparse


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class RelayConfig:
    data_dir: str
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # the broker; `broker_urls` lists every shard instead when units are spread over several
    broker_url: str = "mqtts://127.0.0.1:8883"
    broker_urls: tuple[str, ...] = ()
    broker_ca_file: str = ""
    broker_cert_file: str = ""
    broker_key_file: str = ""
    # one per relay process (its broker session); relays sharing the traffic differ here
    broker_client_id: str = "relay"
    # relays with the same group split the units' stream (MQTT 5 shared subscription);
    # empty: this relay takes the whole stream (one relay, or relays that each store all)
    share_group: str = ""
    # peers' client ids: if one stops heartbeating, this relay drains its broker session
    relay_peers: tuple[str, ...] = ()
    peer_timeout_s: float = 5.0
    # empty: SQLite in data_dir; postgresql://user@host:port/db for several relays
    store_url: str = ""
    store_pool_size: int = 8
    store_batch_ms: float = 8.0
    stream_poll_s: float = 0.5
    # per-scribe live queue; past either bound the scribe catches up from the store
    ws_queue_frames: int = 2000
    ws_queue_bytes: int = 4 << 20
    ws_queue_total_bytes: int = 256 << 20  # all scribes' live queues together
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
    # Transport revocation (docs/trust.md, "Revocation"): the relay writes the CA's CRL
    # here (the broker's `crlfile`) and tells the broker to re-read it, by SIGHUP to the
    # pid in broker_pid_file (one box, same user) or by running broker_reload_command
    # (e.g. ["sudo", "systemctl", "reload", "mosquitto"], or a script that copies the CRL
    # to every shard and reloads each). Empty crl file: revocations are recorded only.
    broker_crl_file: str = ""
    broker_pid_file: str = ""
    broker_reload_command: tuple[str, ...] = ()

    @property
    def brokers(self) -> list[str]:
        return list(self.broker_urls) or [self.broker_url]

    @property
    def broker_host_port(self) -> tuple[str, int]:
        return _host_port(self.broker_url)


def _host_port(url: str) -> tuple[str, int]:
    u = urlparse(url)
    if u.scheme != "mqtts":
        raise ConfigError(f"broker url must be mqtts://HOST:PORT, got {url!r}")
    return u.hostname or "127.0.0.1", u.port or 8883


def load(path: str | Path) -> RelayConfig:
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"config file {path} not found") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from e
    known = {f.name: f for f in fields(RelayConfig)}
    unknown = set(raw) - set(known)
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)}")
    if "data_dir" not in raw:
        raise ConfigError("data_dir is required")
    for key in ("broker_urls", "relay_peers", "broker_reload_command"):
        if key in raw:
            if not isinstance(raw[key], list) or not all(isinstance(x, str) for x in raw[key]):
                raise ConfigError(f"{key} must be a list of strings")
            raw[key] = tuple(raw[key])
    cfg = RelayConfig(**raw)
    for url in cfg.brokers:
        _host_port(url)
    return cfg
