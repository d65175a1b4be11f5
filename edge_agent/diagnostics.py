"""What a unit puts in a diagnostics bundle: logs, self-test table, versions, spool and
link stats, update state. Built from an allow-list of fields, never from whatever is at
hand: no audio, no PHI (no session ids, room names or scribe ids), no keys. Sealed by
scribelink.diagnostics to the requesting admin's key.
"""

from __future__ import annotations

import collections
import json
import logging
import platform
import re
import sys
import threading
import time
from pathlib import Path

LOG_LINES = 400
# long base64/hex runs (keys, wrapped keys, tokens) never leave the unit, even if a log
# line ever carried one
_SECRETISH = re.compile(r"[A-Za-z0-9+/=_-]{40,}")
STATUS_FIELDS = ("online", "link", "catching_up", "capture", "capture_error",
                 "capture_overruns", "spool", "inflight", "dsp", "last_error", "alarms",
                 "puck", "version", "update")


class LogRing(logging.Handler):
    """The agent's last log lines, in memory (key=value lines; the agent logs no PHI)."""

    def __init__(self, size: int = LOG_LINES) -> None:
        super().__init__(logging.INFO)
        self._lines: collections.deque[str] = collections.deque(maxlen=size)
        self._guard = threading.Lock()
        self.setFormatter(logging.Formatter("%(asctime)s level=%(levelname)s "
                                            "logger=%(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 (a bad log call must not break the agent)
            return
        with self._guard:
            self._lines.append(line)

    def lines(self) -> list[str]:
        with self._guard:
            return [_SECRETISH.sub("[redacted]", x) for x in self._lines]

    @classmethod
    def install(cls) -> LogRing:
        root = logging.getLogger()
        for h in root.handlers:
            if isinstance(h, cls):
                return h
        ring = cls()
        root.addHandler(ring)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        return ring


def read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _status(status: dict) -> dict:
    out = {k: status[k] for k in STATUS_FIELDS if k in status}
    if isinstance(out.get("last_error"), str):
        out["last_error"] = _SECRETISH.sub("[redacted]", out["last_error"])
    return out


def _installer(st: dict | None) -> dict | None:
    if not st:
        return None
    keep = ("state", "from", "to", "result", "reason", "refusal", "started_us", "finished_us",
            "failed_versions", "health")
    return {k: st[k] for k in keep if k in st}


def _selftest(doc: dict | None) -> list[dict] | None:
    """The provisioning self-test table: check, ok, problem, fix and the measurements."""
    if not doc:
        return None
    rows = doc.get("checks") if isinstance(doc.get("checks"), list) else doc.get("results")
    if not isinstance(rows, list):
        return None
    keep = ("check", "ok", "problem", "fix", "rms_dbfs", "peak_dbfs", "rtt_ms", "connect_ms",
            "skew_s", "channel")
    return [{k: r[k] for k in keep if k in r} for r in rows if isinstance(r, dict)]


def collect(*, unit_id: str, version: str, status: dict, spool: dict, link: dict,
            update: dict, installer: dict | None, selftest: dict | None,
            logs: list[str]) -> dict:
    return {
        "format": "scribelink-diagnostics/1",
        "unit": unit_id,
        "generated_us": time.time_ns() // 1000,
        "versions": {"scribelink": version, "python": sys.version.split()[0],
                     "platform": platform.platform(), "machine": platform.machine()},
        "status": _status(status or {}),
        "spool": spool,
        "link": {k: link.get(k) for k in ("connected", "inflight", "last_error")},
        "update": update,
        "installer": _installer(installer),
        "selftest": _selftest(selftest),
        "logs": logs[-LOG_LINES:],
    }
