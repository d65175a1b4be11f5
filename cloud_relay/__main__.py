"""`python -m cloud_relay serve|add-user --config FILE`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cloud_relay")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the relay")
    s.add_argument("--config", required=True)
    u = sub.add_parser("add-user", help="create or update a user (admin, scribe, tech)")
    u.add_argument("--config", required=True)
    u.add_argument("--id", required=True)
    u.add_argument("--name", required=True)
    u.add_argument("--role", choices=["admin", "scribe", "tech"], required=True)
    u.add_argument("--password-file", required=True, help="file holding the password")
    args = p.parse_args(argv)

    from cloud_relay.config import ConfigError, load

    try:
        cfg = load(args.config)
    except ConfigError as e:
        print(f"cloud_relay: bad config: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    if args.cmd == "add-user":
        from cloud_relay.store import Store

        store = Store.open(cfg.store_url, cfg.data_dir)
        store.add_user(args.id, args.name, args.role,
                       Path(args.password_file).read_text().strip())
        store.audit("cli", "user_saved", args.id, {"role": args.role})
        store.close()
        return 0

    import uvicorn

    from cloud_relay.app import create_app

    try:
        app = create_app(cfg)
    except ConfigError as e:  # e.g. a client id that is not the certificate's identity
        print(f"cloud_relay: bad config: {e}", file=sys.stderr)
        return 2
    # Sealed frames do not compress: permessage-deflate would only burn CPU and add latency.
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.http_host, port=cfg.http_port,
                                           log_level="warning", access_log=False,
                                           ws_per_message_deflate=False))
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
