"""TOML configuration files: the one writer and the one layered merge.

Scribelink's configs (the unit's agent.toml and its provisioned.toml overlay, the relay's
relay.toml) are read with tomllib and written only through `dumps`, which uses tomli_w, so
every string is quoted and escaped as TOML wants whatever it holds (a path with a quote,
a Windows-style backslash). `layered` is how a later file overrides an earlier one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import tomli_w


def layered(*docs: Mapping[str, Any]) -> dict[str, Any]:
    """Merge parsed TOML documents, later ones winning key by key: a table present in
    both is merged one level deep (the overlay's keys replace the base's), anything else
    is replaced whole. The unit runs with `--config site.toml --config provisioned.toml`."""
    merged: dict[str, Any] = {}
    for doc in docs:
        for k, v in doc.items():
            if isinstance(v, dict) and isinstance(merged.get(k), dict):
                merged[k] = {**merged[k], **v}
            else:
                merged[k] = v
    return merged


def dumps(doc: Mapping[str, Any], *, header: Iterable[str] = ()) -> str:
    """`doc` as TOML, after `header` lines written as comments (who wrote the file, how
    it is used); tables come after the top-level keys, as TOML requires."""
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header)
    return comments + tomli_w.dumps(doc)
