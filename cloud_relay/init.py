"""`python -m cloud_relay init DIR --host HOST --port P`: everything a clinic's relay host
needs, in one directory (docs/deploy.md):

    DIR/ca.pem, ca.key          the clinic's transport CA (browsers and units trust ca.pem)
    DIR/tls/relay-https.*       the relay's HTTPS certificate, for HOST
    DIR/tls/broker.*            the broker's certificate, for HOST (and this host's loopback)
    DIR/tls/relay.*             the relay's identity towards the broker
    DIR/broker/                 mosquitto's configuration (cloud_relay.broker: mTLS, the
                                generated ACL, the revocation list crl.pem) and its data
    DIR/relay.toml              the relay's settings (paths relative to DIR)
    DIR/data/                   the relay's database
    DIR/systemd/*.service       units for the broker and the relay
    DIR/init.json               what it was made for (a second run checks it)

and the first admin account (password from $SCRIBELINK_ADMIN_PASSWORD, else asked for
twice; never echoed or logged). Run again, it changes nothing and says so; a file that
is missing is made again. It never makes the clinic authority: that key belongs on the
admin's own machine, never on the relay (docs/trust.md); init says what to run there.
"""

from __future__ import annotations

import argparse
import getpass
import grp
import json
import os
import pwd
import shutil
import sys
from pathlib import Path

from cloud_relay import broker, pki
from scribelink import tomlconf

VERSION = 1
ADMIN_PASSWORD_ENV = "SCRIBELINK_ADMIN_PASSWORD"


class InitError(Exception):
    pass


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="where the relay's settings, keys and database go")
    p.add_argument("--host", required=True,
                   help="the name browsers, tools and units use for this relay (its DNS name)")
    p.add_argument("--port", type=int, default=443, help="HTTPS port (default 443)")
    p.add_argument("--broker-port", type=int, default=8883, help="MQTT TLS port for units")
    p.add_argument("--bind", default="0.0.0.0", help="address the relay and broker listen on")
    p.add_argument("--alt-name", action="append", default=[],
                   help="another name or IP address the certificates should carry")
    p.add_argument("--admin", default="admin", help="the first admin's user id")
    p.add_argument("--admin-name", default="Clinic admin")


def base_url(host: str, port: int) -> str:
    h = f"[{host}]" if ":" in host else host
    return f"https://{h}" + ("" if port == 443 else f":{port}")


def run(args: argparse.Namespace) -> int:
    try:
        return Init(args).run()
    except InitError as e:
        print(f"cloud_relay init: {e}", file=sys.stderr)
        return 1


class Init:
    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.dir = Path(args.dir).resolve()
        self.made: list[str] = []
        self.kept: list[str] = []

    def note(self, made: bool, what: str) -> None:
        (self.made if made else self.kept).append(what)
        if made:
            print(f"  made  {what}")

    def run(self) -> int:
        a = self.a
        for name, port in (("--port", a.port), ("--broker-port", a.broker_port)):
            if not 0 < port < 65536:
                raise InitError(f"{name} {port} is not a TCP port")
        if a.port == a.broker_port:
            raise InitError("--port and --broker-port must differ")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(self.dir.stat().st_mode & 0o755)  # never group/world-writable
        self.check_same()
        print(f"cloud_relay init: {self.dir} for {base_url(a.host, a.port)}")
        ca = self.ca()
        names = [a.host, *a.alt_name]
        self.identity(ca, "relay-https", server_names=names, client=False)
        self.identity(ca, "broker", server_names=[*names, "127.0.0.1", "localhost"],
                      client=False)
        self.identity(ca, "relay")
        self.broker_config(ca)
        self.relay_config()
        self.systemd()
        self.record()
        self.first_admin()
        if self.made:
            print(f"cloud_relay init: done ({len(self.made)} made, {len(self.kept)} already "
                  "there)")
        else:
            print(f"cloud_relay init: nothing to change: {self.dir} is already set up for "
                  f"{base_url(a.host, a.port)}")
        self.next_steps()
        return 0

    # ------------------------------------------------------------------ what it was made for

    def wanted(self) -> dict:
        a = self.a
        return {"version": VERSION, "host": a.host, "port": a.port,
                "broker_port": a.broker_port, "bind": a.bind,
                "alt_names": sorted(set(a.alt_name))}

    def check_same(self) -> None:
        path = self.dir / "init.json"
        if not path.exists():
            return
        try:
            had = json.loads(path.read_text())
        except ValueError as e:
            raise InitError(f"{path} is damaged ({e}): remove it only if you know the "
                            "directory's certificates match --host") from e
        want = self.wanted()
        diff = [k for k in ("host", "port", "broker_port", "bind", "alt_names")
                if had.get(k) != want[k]]
        if diff:
            raise InitError(
                f"{self.dir} was set up with " + ", ".join(f"{k} {had.get(k)!r}" for k in diff)
                + "; this run asks for " + ", ".join(f"{k} {want[k]!r}" for k in diff)
                + ". The certificates and settings name those: use another directory, or "
                "run init with the same options")

    def record(self) -> None:
        path = self.dir / "init.json"
        made = not path.exists()
        if made:
            path.write_text(json.dumps(self.wanted(), indent=1) + "\n")
            path.chmod(0o644)
        self.note(made, "init.json")

    # ------------------------------------------------------------------ keys and certificates

    def ca(self) -> pki.CA:
        cert, key = self.dir / "ca.pem", self.dir / "ca.key"
        if cert.exists() and key.exists():
            self.note(False, "ca.pem")
            return pki.CA.load(cert, key)
        if cert.exists() or key.exists():
            raise InitError(f"{cert if cert.exists() else key} exists without its pair: "
                            "restore the other from a backup (a new CA would strand every "
                            "enrolled unit)")
        ca = pki.make_ca(f"Scribelink transport CA ({self.a.host})")
        pki.write_private(key, pki.key_pem(ca.key))
        cert.write_bytes(ca.cert_pem())
        cert.chmod(0o644)
        self.note(True, "ca.pem, ca.key (the clinic's transport CA)")
        return ca

    def identity(self, ca: pki.CA, name: str, *, server_names: list[str] | None = None,
                 client: bool = True) -> None:
        tls = self.dir / "tls"
        if (tls / f"{name}.pem").exists() and (tls / f"{name}.key").exists():
            self.note(False, f"tls/{name}.pem")
            return
        pki.write_identity(ca, tls, name, server_names=server_names, client=client)
        (tls / f"{name}.pem").chmod(0o644)
        (tls / "ca.pem").chmod(0o644)
        self.note(True, f"tls/{name}.pem, tls/{name}.key")

    # ------------------------------------------------------------------ broker and relay

    def broker_config(self, ca: pki.CA) -> None:
        d = self.dir / "broker"
        crl = d / "crl.pem"
        if not crl.exists():
            pki.write_crl(ca, crl, [])
            self.note(True, "broker/crl.pem (the revocation list, empty)")
        else:
            self.note(False, "broker/crl.pem")
        if (d / "mosquitto.conf").exists():
            self.note(False, "broker/mosquitto.conf")
            return
        tls = self.dir / "tls"
        broker.write_config(d, port=self.a.broker_port, ca=self.dir / "ca.pem",
                            cert=tls / "broker.pem", key=tls / "broker.key", bind=self.a.bind,
                            crl=crl)
        for f in ("mosquitto.conf", "acl"):
            (d / f).chmod(0o644)
        self.note(True, "broker/mosquitto.conf, broker/acl (mTLS, the units' ACL)")

    def relay_config(self) -> None:
        path = self.dir / "relay.toml"
        if path.exists():
            self.note(False, "relay.toml")
            return
        a = self.a
        (self.dir / "data").mkdir(mode=0o700, exist_ok=True)
        host = f"[{a.host}]" if ":" in a.host else a.host
        doc = {
            "data_dir": "data",
            "http_host": a.bind,
            "http_port": a.port,
            "tls_cert_file": "tls/relay-https.pem",
            "tls_key_file": "tls/relay-https.key",
            "public_url": base_url(a.host, a.port),
            "broker_url": f"mqtts://127.0.0.1:{a.broker_port}",
            "units_broker_url": f"mqtts://{host}:{a.broker_port}",
            "broker_ca_file": "ca.pem",
            "broker_cert_file": "tls/relay.pem",
            "broker_key_file": "tls/relay.key",
            "ca_cert_file": "ca.pem",
            "ca_key_file": "ca.key",
            "broker_crl_file": "broker/crl.pem",
            "broker_pid_file": "broker/mosquitto.pid",
        }
        path.write_text(tomlconf.dumps(doc, header=[
            f"The Scribelink relay for {a.host} (made by `python -m cloud_relay init`;",
            "settings: docs/deploy.md). Paths are relative to this file's directory.",
            "broker_url is this relay's own connection to the broker on this host;",
            "units_broker_url is what units are told. The transport CA (ca_*) issues",
            "enrolled units' certificates; revoked ones go in the broker's CRL, which the",
            "broker re-reads when the relay signals it (same user, its pid file).",
        ]))
        path.chmod(0o640)
        self.note(True, "relay.toml")

    # ------------------------------------------------------------------ systemd

    def systemd(self) -> None:
        d = self.dir / "systemd"
        d.mkdir(exist_ok=True)
        user = pwd.getpwuid(os.getuid()).pw_name
        group = grp.getgrgid(os.getgid()).gr_name
        home_ro = "read-only" if any(str(p).startswith("/home/") or str(p).startswith("/root/")
                                     for p in (self.dir, Path(sys.executable))) else "yes"
        common = f"""User={user}
Group={group}
UMask=0077
Restart=on-failure
RestartSec=2
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome={home_ro}
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
"""

        def caps(port: int) -> str:
            if port < 1024:  # a low port without running as root
                return ("AmbientCapabilities=CAP_NET_BIND_SERVICE\n"
                        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n")
            return "CapabilityBoundingSet=\n"

        units = {
            "scribelink-broker.service": f"""[Unit]
Description=Scribelink MQTT broker (mosquitto, mTLS) for {self.a.host}
Documentation=file://{self.dir}/broker/mosquitto.conf
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={_which_mosquitto()} -c {self.dir}/broker/mosquitto.conf
ExecReload=/bin/kill -HUP $MAINPID
ReadWritePaths={self.dir}/broker
{caps(self.a.broker_port)}{common}
[Install]
WantedBy=multi-user.target
""",
            "scribelink-relay.service": f"""[Unit]
Description=Scribelink relay (HTTPS console and API, broker bridge) for {self.a.host}
After=network-online.target scribelink-broker.service
Wants=network-online.target scribelink-broker.service

[Service]
Type=simple
ExecStart={sys.executable} -m cloud_relay serve --config {self.dir}/relay.toml
ReadWritePaths={self.dir}/data {self.dir}/broker
Environment=PYTHONUNBUFFERED=1
{caps(self.a.port)}{common}
[Install]
WantedBy=multi-user.target
""",
        }
        for name, text in units.items():
            path = d / name
            if path.exists():
                self.note(False, f"systemd/{name}")
                continue
            path.write_text(text)
            path.chmod(0o644)
            self.note(True, f"systemd/{name}")

    # ------------------------------------------------------------------ the first admin

    def first_admin(self) -> None:
        from cloud_relay.accounts import Accounts
        from cloud_relay.config import ConfigError, load
        from cloud_relay.passwords import Hasher, PasswordError
        from cloud_relay.store import Store

        try:
            cfg = load(self.dir / "relay.toml")
        except ConfigError as e:
            raise InitError(f"the relay's settings do not load: {e}") from e
        hasher = Hasher(weak_for_tests=cfg.test_only_weak_password_hash)
        store = Store.open(cfg.store_url, cfg.data_dir, passwords=hasher)
        try:
            if store.user(self.a.admin) is not None:
                self.note(False, f"admin {self.a.admin}")
                return
            password = admin_password(self.a.admin)
            accounts = Accounts(store, hasher=hasher, token_idle_s=cfg.token_idle_s,
                                token_max_s=cfg.token_max_s)
            try:
                accounts.create(self.a.admin, self.a.admin_name, "admin", by="init",
                                password=password)
            except PasswordError as e:
                raise InitError(f"the admin password: {e}") from e
            store.audit("init", "user_created", self.a.admin, {"role": "admin",
                                                               "invited": False})
            self.note(True, f"admin {self.a.admin} (the first clinic admin)")
        finally:
            store.close()

    def next_steps(self) -> None:
        a, d = self.a, self.dir
        url = base_url(a.host, a.port)
        print(f"""
Next:
  1. Start the broker and the relay (as root), then check them:
       install -m 0644 {d}/systemd/scribelink-broker.service \\
           {d}/systemd/scribelink-relay.service /etc/systemd/system/
       systemctl daemon-reload && systemctl enable --now scribelink-broker scribelink-relay
       curl --cacert {d}/ca.pem {url}/healthz
  2. Browsers, tools and units trust {d}/ca.pem: install it on the clinic's admin and
     scribe machines (it holds no secret). Keep {d}/ca.key and the backups safe.
  3. On the clinic admin's own machine -- never on this relay host -- make the clinic
     authority and tell the relay its public key:
       python -m scribelink.authority create --key clinic-authority.json
       SCRIBELINK_CA_FILE=ca.pem python -m scribelink.authority register \\
           --key clinic-authority.json --relay {url} --user {a.admin}
  4. Sign in at {url}/console/ as {a.admin}: add rooms, units and people (docs/deploy.md).""")


def _which_mosquitto() -> str:
    try:
        return broker.mosquitto_binary()
    except RuntimeError:
        return shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def admin_password(user: str) -> str:
    """From $SCRIBELINK_ADMIN_PASSWORD, else asked for twice on the terminal (not echoed)."""
    env = os.environ.get(ADMIN_PASSWORD_ENV)
    if env:
        return env
    if not sys.stdin.isatty():
        raise InitError(f"the first admin needs a password: set {ADMIN_PASSWORD_ENV}, or run "
                        "init in a terminal to be asked for it")
    for _ in range(3):
        p = getpass.getpass(f"password for the first admin ({user}): ")
        if getpass.getpass("again: ") == p:
            return p
        print("the two passwords differ; again", file=sys.stderr)
    raise InitError("the passwords did not match")
