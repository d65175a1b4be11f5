"""The relay's address as tools take it: https:// (plain http:// only to this machine, the
demo), and the CA bundle that vouches for it. One rule for the reference scribe client,
scripts/provision and the authority tool, so none of them sends a password or a token
where the network could read it."""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlparse

CA_FILE_ENV = "SCRIBELINK_CA_FILE"  # the clinic's ca.pem, when the relay's CA is private


class InsecureRelayUrl(ValueError):
    """A relay address a tool must not use: the message says why and what to use."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check(url: str) -> str:
    """`url` without a trailing slash, if it is https://, or http:// to this machine."""
    u = urlparse(url.strip())
    if u.scheme not in ("https", "http") or not u.hostname:
        raise InsecureRelayUrl(f"{url!r} is not a relay address: use https://HOST[:PORT]")
    if u.scheme == "http" and not is_loopback(u.hostname):
        raise InsecureRelayUrl(
            f"refusing plain http:// to {u.hostname}: passwords and tokens would cross the "
            f"network readable. Use https://{u.netloc} (the relay serves HTTPS; trust the "
            f"clinic's ca.pem with --ca-file or ${CA_FILE_ENV})")
    return url.strip().rstrip("/")


def verify(ca_file: str | None = None) -> str | bool:
    """What httpx's `verify` takes: the given CA file, else $SCRIBELINK_CA_FILE, else the
    system's trust store."""
    return ca_file or os.environ.get(CA_FILE_ENV) or True
