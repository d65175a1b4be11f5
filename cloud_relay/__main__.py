"""The relay's command line (docs/deploy.md):

    python -m cloud_relay init DIR --host HOST --port P   a clinic's relay and broker, once
    python -m cloud_relay serve --config DIR/relay.toml   run the relay (HTTPS on P)
    python -m cloud_relay check --config FILE             check the settings, change nothing
    python -m cloud_relay add-user --config FILE --id ID --name N --role R [--password-file F]
    python -m cloud_relay set-password --config FILE --id ID --password-file F
    python -m cloud_relay backup --config FILE --out FILE.tar.gz
    python -m cloud_relay restore --from FILE.tar.gz --to DIR    (DIR absent or empty)

Exit status: 0 done, 1 refused (the message says why and what to do), 2 bad settings.
"""

from __future__ import annotations

import argparse
import logging
import os
import ssl
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cloud_relay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the relay")
    s.add_argument("--config", required=True)
    c = sub.add_parser("check", help="check the relay's settings and exit")
    c.add_argument("--config", required=True)
    i = sub.add_parser("init", help="make a clinic's relay: CA, certificates, broker and "
                       "relay settings, systemd units, the first admin")
    from cloud_relay import init as init_cmd

    init_cmd.add_arguments(i)
    u = sub.add_parser("add-user", help="create a user (admin, scribe, tech)")
    u.add_argument("--config", required=True)
    u.add_argument("--id", required=True)
    u.add_argument("--name", required=True)
    u.add_argument("--role", choices=["admin", "scribe", "tech"], required=True)
    u.add_argument("--password-file", help="file holding the password; without it the user "
                   "is invited (a one-time link is printed)")
    pw = sub.add_parser("set-password", help="set a user's password (ends their sign-ins)")
    pw.add_argument("--config", required=True)
    pw.add_argument("--id", required=True)
    pw.add_argument("--password-file", required=True)
    b = sub.add_parser("backup", help="a consistent copy of the relay's database and "
                       "settings, keys included (keep it safe)")
    b.add_argument("--config", required=True)
    b.add_argument("--out", required=True)
    r = sub.add_parser("restore", help="unpack a backup into an empty directory (the "
                       "relay's own path, moved aside first; relay and broker stopped)")
    r.add_argument("--from", dest="source", required=True)
    r.add_argument("--to", dest="target", required=True)
    args = p.parse_args(argv)
    os.umask(0o077)  # whatever the relay writes is its own: keys, database, releases

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    if args.cmd == "init":
        logging.getLogger("cloud_relay.store").setLevel(logging.WARNING)
        return init_cmd.run(args)
    if args.cmd == "restore":
        from cloud_relay import backup

        try:
            print(backup.restore(Path(args.source), Path(args.target)))
        except backup.BackupError as e:
            print(f"cloud_relay restore: {e}", file=sys.stderr)
            return 1
        return 0

    from cloud_relay.config import ConfigError, broker_settings_missing, load

    try:
        cfg = load(args.config)
        if args.cmd in ("serve", "check"):
            missing = broker_settings_missing(cfg)
            if missing:
                raise ConfigError("not set: the relay connects to the broker with its own "
                                  "certificate", setting=", ".join(missing), file=args.config,
                                  fix="python -m cloud_relay init DIR writes them "
                                  "(DIR/tls/relay.pem, relay.key, ca.pem)")
    except ConfigError as e:
        print(f"cloud_relay: cannot start: {e}", file=sys.stderr)
        return 2
    if args.cmd == "check":
        print(f"{args.config}: settings OK; HTTPS {'on' if cfg.tls else 'off (loopback)'} at "
              f"{cfg.http_host}:{cfg.http_port}, broker {', '.join(cfg.brokers)}")
        return 0
    if args.cmd in ("add-user", "set-password"):
        return _accounts(args, cfg)
    if args.cmd == "backup":
        from cloud_relay import backup

        try:
            print(backup.backup(cfg, Path(args.config), Path(args.out)))
        except backup.BackupError as e:
            print(f"cloud_relay {args.cmd}: {e}", file=sys.stderr)
            return 1
        return 0
    return _serve(cfg)


def _accounts(args, cfg) -> int:
    from cloud_relay.accounts import Accounts
    from cloud_relay.passwords import Hasher, PasswordError
    from cloud_relay.store import Store, UserExists

    hasher = Hasher(weak_for_tests=cfg.test_only_weak_password_hash)
    store = Store.open(cfg.store_url, cfg.data_dir, passwords=hasher)
    accounts = Accounts(store, hasher=hasher, token_idle_s=cfg.token_idle_s,
                        token_max_s=cfg.token_max_s, invite_ttl_s=cfg.invite_ttl_s)
    try:
        password = Path(args.password_file).read_text().strip() if args.password_file \
            else None
        if args.cmd == "add-user":
            code = accounts.create(args.id, args.name, args.role, by="cli", password=password)
            store.audit("cli", "user_created", args.id, {"role": args.role,
                                                         "invited": code is not None})
            if code is not None:
                base = (cfg.public_url or f"https://{cfg.http_host}:{cfg.http_port}").rstrip("/")
                print(f"{args.id} invited: send them {base}/console/invite.html#{code} "
                      f"(works once, for {cfg.invite_ttl_s / 3600:.0f} h)")
        else:
            assert password is not None
            if not accounts.set_password(args.id, password):
                print(f"cloud_relay: no user {args.id}", file=sys.stderr)
                return 1
            store.audit("cli", "password_changed", args.id, {"by": "cli"})
    except UserExists:
        print(f"cloud_relay: a user {args.id} exists already (to change a password: "
              "set-password; a role: the admin view)", file=sys.stderr)
        return 1
    except (PasswordError, OSError) as e:
        print(f"cloud_relay: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


def _serve(cfg) -> int:
    import uvicorn

    from cloud_relay.app import create_app
    from cloud_relay.config import ConfigError

    try:
        app = create_app(cfg)
    except ConfigError as e:  # e.g. a client id that is not the certificate's identity
        print(f"cloud_relay: bad config: {e}", file=sys.stderr)
        return 2
    # Sealed frames do not compress: permessage-deflate would only burn CPU and add latency.
    # X-Forwarded-* are believed only behind a configured proxy (else anyone could pick the
    # address the sign-in back-off counts against).
    config = uvicorn.Config(app, host=cfg.http_host, port=cfg.http_port, log_level="warning",
                            access_log=False, ws_per_message_deflate=False, server_header=False,
                            ssl_certfile=cfg.tls_cert_file or None,
                            ssl_keyfile=cfg.tls_key_file or None,
                            proxy_headers=cfg.behind_proxy,
                            forwarded_allow_ips=",".join(cfg.proxy_addresses)
                            if cfg.behind_proxy else None)
    config.load()
    if config.ssl is not None:
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
    logging.getLogger("cloud_relay").info(
        "event=serving url=%s://%s:%d tls=%s behind_proxy=%s",
        "https" if cfg.tls else "http", cfg.http_host, cfg.http_port, cfg.tls, cfg.behind_proxy)
    server = uvicorn.Server(config)
    if not cfg.unit_https_port:
        server.run()
        return 0
    import asyncio

    from cloud_relay import unit_https

    unit_config = unit_https.config(
        app.state.unit_app, host=cfg.http_host, port=cfg.unit_https_port,
        cert_file=cfg.unit_https_cert_file, key_file=cfg.unit_https_key_file,
        ca_file=cfg.unit_https_ca_file or cfg.ca_cert_file or cfg.broker_ca_file)
    asyncio.run(unit_https.serve_beside(server, unit_config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
