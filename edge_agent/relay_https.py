"""The unit's HTTPS client for the relay's unit endpoint: mutual TLS with the unit's own
certificate (the one it uses for the broker), the relay checked against the clinic CA the
unit pinned. Downloads resume where an interrupted one stopped (HTTP Range) and end only
with the size and SHA-256 the offer named; anything else is thrown away.

Standard library only (http.client, ssl): nothing more to install on a unit.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

CHUNK = 1 << 16


class FetchError(RuntimeError):
    """The relay could not be reached or answered with an error; what was downloaded so
    far is kept for the next attempt unless it is known to be wrong."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the relay's HTTP status, if it answered


class RelayHttps:
    def __init__(self, base_url: str, *, ca_file: str, cert_file: str, key_file: str,
                 timeout_s: float = 30.0) -> None:
        u = urlparse(base_url)
        if u.scheme != "https" or not u.hostname:
            raise ValueError(f"relay url must be https://HOST:PORT, got {base_url!r}")
        self.host, self.port = u.hostname, u.port or 443
        self.timeout_s = timeout_s
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
        ctx.load_cert_chain(cert_file, key_file)
        self.ctx = ctx
        self.cert_file, self.key_file = cert_file, key_file

    def reload_identity(self) -> None:
        """The unit's certificate and key were renewed in place: present the new ones on the
        next connection."""
        self.ctx.load_cert_chain(self.cert_file, self.key_file)

    def _connection(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx,
                                           timeout=self.timeout_s)

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict | None = None) -> tuple[int, bytes]:
        conn = self._connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException, ssl.SSLError) as e:
            raise FetchError(f"relay {self.host}:{self.port} unreachable: {e}") from e
        finally:
            conn.close()

    def post_json(self, path: str, doc: dict) -> dict:
        status, data = self._request("POST", path, json.dumps(doc).encode(),
                                     {"Content-Type": "application/json"})
        if status >= 300:
            raise FetchError(f"POST {path}: HTTP {status} {data[:200]!r}", status)
        return json.loads(data or b"{}")

    def post_bytes(self, path: str, data: bytes) -> dict:
        status, body = self._request("POST", path, data,
                                     {"Content-Type": "application/octet-stream"})
        if status >= 300:
            raise FetchError(f"POST {path}: HTTP {status} {body[:200]!r}")
        return json.loads(body or b"{}")

    def download(self, path: str, dest: Path, *, size: int, sha256: str,
                 progress: Callable[[int], None] | None = None,
                 stop: threading.Event | None = None) -> Path:
        """GET `path` into `dest`, resuming from dest.part. Returns dest once it holds
        exactly `size` bytes with SHA-256 `sha256`."""
        part = dest.with_name(dest.name + ".part")
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        if have < size:
            self._get_range(path, part, have, size, progress, stop)
        if part.stat().st_size != size or _sha256(part) != sha256:
            part.unlink(missing_ok=True)
            raise FetchError("the download does not match the offer (size or SHA-256); "
                             "it was discarded and will be fetched again")
        os.replace(part, dest)
        return dest

    def _get_range(self, path: str, part: Path, have: int, size: int,
                   progress: Callable[[int], None] | None,
                   stop: threading.Event | None) -> None:
        conn = self._connection()
        try:
            conn.request("GET", path, headers={"Range": f"bytes={have}-"} if have else {})
            resp = conn.getresponse()
            if resp.status == 200:
                have, mode = 0, "wb"  # the server sent it all: start over
            elif resp.status == 206:
                start = _range_start(resp.getheader("Content-Range", ""))
                if start != have:
                    raise FetchError(f"relay resumed at byte {start}, not {have}")
                mode = "ab"
            else:
                raise FetchError(f"GET {path}: HTTP {resp.status} {resp.read(200)!r}")
            with open(part, mode) as f:
                while have < size:
                    if stop is not None and stop.is_set():
                        raise FetchError("download stopped")
                    block = resp.read(min(CHUNK, size - have))
                    if not block:
                        raise FetchError(f"the relay closed the download at {have} of "
                                         f"{size} bytes; it resumes from there")
                    f.write(block)
                    have += len(block)
                    if progress is not None:
                        progress(have)
                f.flush()
                os.fsync(f.fileno())
        except (OSError, http.client.HTTPException, ssl.SSLError) as e:
            got = part.stat().st_size if part.exists() else 0
            raise FetchError(f"download interrupted at {got}"
                             f" of {size} bytes ({e}); it resumes from there") from e
        finally:
            conn.close()


def _range_start(content_range: str) -> int:
    # "bytes 1000-1999/5000"
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError) as e:
        raise FetchError(f"bad Content-Range {content_range!r}") from e


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()
