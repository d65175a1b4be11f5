"""The relay's configuration (TOML), checked whole at start-up: a missing or wrong setting
is refused with its name, the file, and what to do (`ConfigError`), never later as a
bare traceback. `python -m cloud_relay check --config FILE` runs the same checks.

Paths may be relative: they are taken from the config file's directory.

HTTPS is the default: the relay serves plain HTTP only on a loopback address (the demo,
or behind a TLS-terminating reverse proxy on the same host, `behind_proxy`).
"""

from __future__ import annotations

import difflib
import ssl
import tomllib
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlparse

from scribelink.relayurl import is_loopback


class ConfigError(ValueError):
    """A setting the relay cannot start with: `setting`, the `file`, and what to do."""

    def __init__(self, problem: str, *, setting: str | None = None, file: str | Path | None = None,
                 fix: str = "") -> None:
        where = f"{file}: " if file else ""
        what = f"{setting}: " if setting else ""
        super().__init__(f"{where}{what}{problem}" + (f". {fix}" if fix else ""))
        self.setting, self.file, self.problem, self.fix = setting, file, problem, fix


@dataclass(frozen=True)
class RelayConfig:
    data_dir: str
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # HTTPS for the console and the API (and WSS for /ws): required unless http_host is
    # loopback. `python -m cloud_relay init` makes them from the clinic's CA.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # how browsers and tools reach this relay, e.g. https://relay.clinic.example (the
    # enrolment codes carry it; the WebSocket accepts pages from it). Empty: the address
    # each request came in on.
    public_url: str = ""
    # pages served from other origins that may open the scribe WebSocket (rarely needed)
    allowed_origins: tuple[str, ...] = ()
    # plain HTTP on loopback behind a reverse proxy that terminates TLS (docs/deploy.md):
    # believe its X-Forwarded-For / -Proto from these addresses
    behind_proxy: bool = False
    proxy_addresses: tuple[str, ...] = ("127.0.0.1", "::1")
    # the broker; `broker_urls` lists every shard instead when units are spread over several
    broker_url: str = "mqtts://127.0.0.1:8883"
    broker_urls: tuple[str, ...] = ()
    # the broker address units are told in their enrolment codes (default: broker_url)
    units_broker_url: str = ""
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
    # the writer's window: one transaction (and one WebSocket message per scribe) per window;
    # longer costs latency, shorter costs CPU per chunk (docs/scaling.md has both measured)
    store_batch_ms: float = 12.0
    stream_poll_s: float = 0.5
    # per-scribe live queue; past either bound the scribe catches up from the store
    ws_queue_frames: int = 2000
    ws_queue_bytes: int = 4 << 20
    ws_queue_total_bytes: int = 256 << 20  # all scribes' live queues together
    # the sealed archive's default retention (an admin may change it in the admin view)
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
    # sign-ins: a token unused this long ends; every token ends this long after sign-in
    token_idle_s: float = 1800.0
    token_max_s: float = 12 * 3600.0
    # how long an invitation or password-reset link works
    invite_ttl_s: float = 72 * 3600.0
    # the API's description for admins (GET /api/admin/openapi.json, shown in the admin
    # view); false turns it off
    api_docs: bool = True
    # TESTS ONLY: a cheap password hash (the suite signs in thousands of times). Refused
    # unless http_host is loopback.
    test_only_weak_password_hash: bool = False

    @property
    def brokers(self) -> list[str]:
        return list(self.broker_urls) or [self.broker_url]

    @property
    def broker_host_port(self) -> tuple[str, int]:
        return _host_port(self.broker_url)

    @property
    def unit_broker_url(self) -> str:
        """The broker address a new unit is given (its enrolment code)."""
        return self.units_broker_url or self.broker_url

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)


def _host_port(url: str) -> tuple[str, int]:
    u = urlparse(url)
    if u.scheme != "mqtts":
        raise ConfigError(f"broker url must be mqtts://HOST:PORT, got {url!r}")
    return u.hostname or "127.0.0.1", u.port or 8883


_FILES = ("tls_cert_file", "tls_key_file", "broker_ca_file", "broker_cert_file",
          "broker_key_file", "ca_cert_file", "ca_key_file", "unit_https_cert_file",
          "unit_https_key_file", "unit_https_ca_file")
_PAIRS = (("tls_cert_file", "tls_key_file"), ("ca_cert_file", "ca_key_file"),
          ("unit_https_cert_file", "unit_https_key_file"))


def _kind(tp) -> type:
    """The TOML type a field takes (str, int, float, bool or tuple)."""
    return tuple if typing.get_origin(tp) is tuple else tp


def load(path: str | Path, *, check_files: bool = True) -> RelayConfig:
    """The relay's settings from `path`, checked (ConfigError says what is wrong)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError("config file not found", file=path,
                          fix="give the path of relay.toml (python -m cloud_relay init DIR "
                          "makes DIR/relay.toml)") from e
    except OSError as e:
        raise ConfigError(f"cannot read the config file: {e.strerror}", file=path,
                          fix="check the path and that this user may read it") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML ({e})", file=path,
                          fix="fix the line it names (strings need quotes)") from e
    known = {f.name: f for f in fields(RelayConfig)}
    hints = typing.get_type_hints(RelayConfig)
    for key in raw:
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1)
            raise ConfigError("unknown setting", setting=key, file=path,
                              fix=f"did you mean {near[0]}?" if near else
                              "remove it (docs/deploy.md lists the settings)")
    if "data_dir" not in raw:
        raise ConfigError("missing", setting="data_dir", file=path,
                          fix='set data_dir = "/var/lib/scribelink/relay" (where the relay '
                          "keeps its database)")
    for key, value in raw.items():
        want = _kind(hints[key])
        if want is tuple:
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise ConfigError("must be a list of strings", setting=key, file=path,
                                  fix=f'write it as {key} = ["a", "b"]')
            raw[key] = tuple(value)
        elif want is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"must be a number, got {value!r}", setting=key, file=path)
            raw[key] = float(value)
        elif want is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"must be a whole number, got {value!r}", setting=key,
                                  file=path)
        elif want is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"must be true or false, got {value!r}", setting=key,
                                  file=path)
        elif not isinstance(value, want):
            raise ConfigError(f"must be text in quotes, got {value!r}", setting=key, file=path)
    base = path.resolve().parent
    for key in (*_FILES, "broker_crl_file", "broker_pid_file", "data_dir"):
        if raw.get(key):
            raw[key] = str((base / raw[key]).resolve()) if not Path(raw[key]).is_absolute() \
                else raw[key]
    cfg = RelayConfig(**raw)
    check(cfg, path, check_files=check_files)
    return cfg


def check(cfg: RelayConfig, path: str | Path | None = None, *, check_files: bool = True
          ) -> None:
    """Everything the relay needs from its settings, before it starts anything."""

    def bad(setting: str, problem: str, fix: str = "") -> ConfigError:
        return ConfigError(problem, setting=setting, file=path, fix=fix)

    for key in ("http_port", "unit_https_port"):
        port = getattr(cfg, key)
        if not 0 <= port <= 65535 or (key == "http_port" and port == 0):
            raise bad(key, f"{port} is not a TCP port", "use 1..65535")
    for a, b in _PAIRS:
        if bool(getattr(cfg, a)) != bool(getattr(cfg, b)):
            missing = b if getattr(cfg, a) else a
            raise bad(missing, f"missing while {a if missing == b else b} is set",
                      "set both (a certificate needs its key), or neither")
    loopback = is_loopback(cfg.http_host)
    if not cfg.tls and not loopback:
        raise bad("tls_cert_file", f"not set, and http_host = {cfg.http_host!r} is not a "
                  "loopback address: plain HTTP there would show passwords and tokens to "
                  "the network",
                  "set tls_cert_file and tls_key_file (python -m cloud_relay init makes "
                  "them), or set http_host = \"127.0.0.1\" behind a TLS reverse proxy "
                  "(behind_proxy = true; docs/deploy.md)")
    if cfg.behind_proxy and not loopback:
        raise bad("behind_proxy", f"needs http_host on loopback (it is {cfg.http_host!r})",
                  "the reverse proxy on this host reaches the relay at 127.0.0.1")
    if cfg.behind_proxy and not cfg.public_url:
        raise bad("public_url", "missing while behind_proxy = true",
                  'set the address browsers use, e.g. public_url = "https://relay.clinic.example"')
    if cfg.public_url:
        u = urlparse(cfg.public_url)
        if u.scheme not in ("https", "http") or not u.hostname or u.path not in ("", "/"):
            raise bad("public_url", f"{cfg.public_url!r} is not a base URL",
                      'write it as "https://HOST[:PORT]"')
        if u.scheme == "http" and not is_loopback(u.hostname):
            raise bad("public_url", f"{cfg.public_url!r} is plain http to another machine",
                      "use https://")
    for origin in cfg.allowed_origins:
        u = urlparse(origin)
        if u.scheme not in ("https", "http") or not u.hostname or u.path not in ("", "/"):
            raise bad("allowed_origins", f"{origin!r} is not an origin",
                      'write each as "https://HOST[:PORT]"')
    if cfg.test_only_weak_password_hash and not loopback:
        raise bad("test_only_weak_password_hash", "is for the test suite only (a cheap "
                  "password hash)", "remove it from a relay others can reach")
    urls = [("broker_url", cfg.broker_url), ("units_broker_url", cfg.units_broker_url),
            *(("broker_urls", u) for u in cfg.broker_urls)]
    for key, url in urls:
        u = urlparse(url)
        if url and (u.scheme != "mqtts" or not u.hostname):
            raise bad(key, f"{url!r} is not an mqtts:// URL",
                      'write it as "mqtts://HOST:8883" (the broker takes TLS only)')
    if cfg.store_url and not cfg.store_url.startswith(("sqlite:///", "postgresql://",
                                                       "postgres://")):
        raise bad("store_url", "must be postgresql://... or sqlite:///path",
                  "or leave it empty for SQLite in data_dir")
    for key in ("token_idle_s", "token_max_s", "invite_ttl_s", "retention_days",
                "purge_interval_s"):
        if getattr(cfg, key) <= 0:
            raise bad(key, "must be more than 0")
    if cfg.token_idle_s > cfg.token_max_s:
        raise bad("token_idle_s", "is longer than token_max_s", "make it shorter")
    if not check_files:
        return
    for key in _FILES:
        value = getattr(cfg, key)
        if not value:
            continue
        p = Path(value)
        if not p.is_file():
            raise bad(key, f"{value} does not exist" if not p.exists() else
                      f"{value} is not a file",
                      "check the path (python -m cloud_relay init DIR writes the files under "
                      "DIR)")
        try:
            p.open("rb").close()
        except OSError as e:
            raise bad(key, f"cannot read {value}: {e.strerror}",
                      "the relay's service user must be able to read it") from e
    if cfg.tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
        except ssl.SSLError as e:
            raise bad("tls_key_file", f"does not go with tls_cert_file ({e.reason or e})",
                      "give the key the certificate was made for") from e
    data = Path(cfg.data_dir)
    parent = data if data.exists() else data.parent
    if not parent.exists():
        raise bad("data_dir", f"{data.parent} does not exist",
                  "create it, or point data_dir somewhere that exists")


def broker_settings_missing(cfg: RelayConfig) -> list[str]:
    """Settings the relay's broker connection needs that are empty."""
    return [k for k in ("broker_ca_file", "broker_cert_file", "broker_key_file")
            if not getattr(cfg, k)]
