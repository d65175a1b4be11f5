"""Backups of a relay made by `python -m cloud_relay init` (docs/deploy.md): one .tar.gz of
the relay's directory -- settings, the transport CA and certificates, the broker's
configuration -- with a consistent copy of the SQLite database taken while the relay
runs (SQLite's online backup), and `restore` into an empty directory.

The archive holds the CA's private key: it is written 0600, and belongs somewhere as safe
as the relay itself (encrypted, off the host). The relay's database holds sealed audio
only (it cannot be opened without the scribes' or the clinic's keys), accounts with
Argon2id password hashes, and what the clinic authority signed. With PostgreSQL
(store_url), back the database up with pg_dump; this backs up the rest.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import tarfile
import tempfile
import time
from pathlib import Path

from cloud_relay.config import RelayConfig

SKIP_DIRS = {"data"}  # the relay's live database (copied consistently) and mosquitto's queue
MANIFEST = "scribelink-backup.json"


class BackupError(Exception):
    pass


def backup(cfg: RelayConfig, config: Path, out: Path) -> str:
    root = config.resolve().parent
    data = Path(cfg.data_dir).resolve()
    outside = [k for k in ("tls_cert_file", "tls_key_file", "ca_cert_file", "ca_key_file",
                           "broker_ca_file", "broker_cert_file", "broker_key_file",
                           "broker_crl_file")
               if getattr(cfg, k) and not Path(getattr(cfg, k)).resolve().is_relative_to(root)]
    if outside:
        raise BackupError(f"{', '.join(outside)} point outside {root}: keep every file the "
                          "relay needs in its directory (as init makes it), or back them up "
                          "yourself")
    out = out.resolve()
    if out.is_relative_to(root):
        raise BackupError(f"write the backup outside {root} (it would contain itself)")
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    files = 0
    with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if any(part in SKIP_DIRS for part in rel.parts) or path.is_relative_to(data):
                continue
            if path.is_file() and not path.is_symlink():
                tar.add(path, arcname=f"relay/{rel}", recursive=False)
                files += 1
        db_note = "not included (store_url: use pg_dump)"
        if not cfg.store_url or cfg.store_url.startswith("sqlite:///"):
            db = Path(cfg.store_url.removeprefix("sqlite://")) if cfg.store_url \
                else data / "relay.db"
            if not db.resolve().is_relative_to(root):
                raise BackupError(f"the database {db} is outside {root}")
            with tempfile.TemporaryDirectory() as tmp:
                snap = Path(tmp) / "relay.db"
                src = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
                dst = sqlite3.connect(snap)
                try:
                    src.backup(dst)  # a consistent copy while the relay writes
                finally:
                    dst.close()
                    src.close()
                tar.add(snap, arcname=f"relay/{db.resolve().relative_to(root)}")
            db_note = "consistent SQLite copy"
        manifest = json.dumps({"kind": "scribelink-relay-backup", "v": 1,
                               "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "config": str(config.resolve().relative_to(root)),
                               "database": db_note}).encode()
        info = tarfile.TarInfo(f"relay/{MANIFEST}")
        info.size, info.mode, info.mtime = len(manifest), 0o600, int(time.time())
        tar.addfile(info, io.BytesIO(manifest))
    return (f"backup written: {out} ({files} files, database: {db_note}). It holds the "
            "transport CA's key: store it encrypted, off this host.")


def restore(source: Path, target: Path) -> str:
    """Unpack a backup into `target` (absent or empty): a relay directory again."""
    target = target.resolve()
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty: restore into a new directory (move the "
                          "old one aside first; stop the relay and broker before)")
    try:
        tar = tarfile.open(source, "r:gz")  # noqa: SIM115 (closed by `with tar` below)
    except (OSError, tarfile.TarError) as e:
        raise BackupError(f"cannot read {source}: {e}") from e
    with tar:
        names = tar.getnames()
        if f"relay/{MANIFEST}" not in names:
            raise BackupError(f"{source} is not a Scribelink relay backup")
        manifest = json.load(tar.extractfile(f"relay/{MANIFEST}"))  # type: ignore[arg-type]
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        for m in tar.getmembers():
            if not m.isfile() or not m.name.startswith("relay/") or m.name.endswith(MANIFEST):
                continue
            rel = Path(m.name).relative_to("relay")
            if ".." in rel.parts or rel.is_absolute():
                raise BackupError(f"{source} holds a path outside its directory: {m.name}")
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            data = tar.extractfile(m).read()  # type: ignore[union-attr]
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, m.mode & 0o644 or 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
    for d in ("data", "broker/data"):
        (target / d).mkdir(parents=True, exist_ok=True, mode=0o700)
    return (f"restored into {target} (backup of {manifest['made']}); start the relay with "
            f"--config {target / manifest['config']}")
