"""Durable outbox of sealed messages: written before publish, removed only after PUBACK.

SQLite in WAL mode (docs/spool.md says why). Holds ciphertext and clear metadata only.
Every `put` is durable against a process crash at once (it is in the WAL before
`put` returns); fsync to the medium is batched to `fsync_interval_s` so an SD card
sees few, large writes, which bounds what a power cut can take to that window.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL DEFAULT 0,
    kind TEXT NOT NULL,          -- audio | event | session | status
    session TEXT,                -- hex session id, NULL for non-session records
    seq INTEGER,                 -- envelope sequence number (audio/event)
    audio_ms INTEGER NOT NULL DEFAULT 0,
    created_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_created ON outbox(created_us);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Record:
    id: int
    topic: str
    payload: bytes
    retain: bool
    kind: str
    session: str | None
    seq: int | None
    audio_ms: int
    created_us: int


@dataclass(frozen=True)
class Evicted:
    """What an eviction removed from one (session, kind) stream: declared, never silent."""

    session: str
    kind: str
    first_seq: int
    last_seq: int
    count: int
    reason: str


class SpoolFullError(RuntimeError):
    pass


class Spool:
    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = 2_000_000_000,
        max_age_s: float = 8 * 3600,
        fsync_interval_s: float = 1.0,
        clock=time.time,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.fsync_interval_s = fsync_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit is in the WAL (safe from a process crash) without an fsync;
        # checkpoint() below fsyncs the WAL on our schedule.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA wal_autocheckpoint=4096")
        self._db.executescript(SCHEMA)
        self._last_sync = self._clock()
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)),0), COALESCE(SUM(audio_ms),0) "
            "FROM outbox"
        ).fetchone()
        self._count, self._bytes, self._audio_ms = int(row[0]), int(row[1]), int(row[2])
        self.evictions: list[Evicted] = []

    # ------------------------------------------------------------------ writes

    def put(
        self,
        topic: str,
        payload: bytes,
        *,
        kind: str,
        session: str | None = None,
        seq: int | None = None,
        retain: bool = False,
        audio_ms: int = 0,
    ) -> int:
        now_us = int(self._clock() * 1e6)
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO outbox(topic,payload,retain,kind,session,seq,audio_ms,created_us) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (topic, payload, int(retain), kind, session, seq, audio_ms, now_us),
            )
            self._count += 1
            self._bytes += len(payload)
            self._audio_ms += audio_ms
            self._maybe_sync()
            return int(cur.lastrowid or 0)

    def put_many(self, records: list[dict], state: dict[str, str] | None = None) -> list[int]:
        """Several records and state updates in one transaction: all or none survive."""
        now_us = int(self._clock() * 1e6)
        ids = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for r in records:
                    cur = self._db.execute(
                        "INSERT INTO outbox(topic,payload,retain,kind,session,seq,audio_ms,"
                        "created_us) VALUES (?,?,?,?,?,?,?,?)",
                        (r["topic"], r["payload"], int(r.get("retain", False)), r["kind"],
                         r.get("session"), r.get("seq"), r.get("audio_ms", 0), now_us),
                    )
                    ids.append(int(cur.lastrowid or 0))
                for k, v in (state or {}).items():
                    self._db.execute(
                        "INSERT INTO state(key,value) VALUES(?,?) "
                        "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (k, v))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            for r in records:
                self._count += 1
                self._bytes += len(r["payload"])
                self._audio_ms += r.get("audio_ms", 0)
            self._maybe_sync()
        return ids

    def get_state(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key=?", (key,)).fetchone()
        return default if row is None else row[0]

    def ack(self, record_id: int) -> None:
        with self._lock:
            row = self._db.execute(
                "SELECT LENGTH(payload), audio_ms FROM outbox WHERE id=?", (record_id,)
            ).fetchone()
            if row is None:
                return
            self._db.execute("DELETE FROM outbox WHERE id=?", (record_id,))
            self._count -= 1
            self._bytes -= int(row[0])
            self._audio_ms -= int(row[1])

    def sync(self) -> None:
        """Force what is spooled onto the medium (fsync of the WAL)."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._last_sync = self._clock()

    def _maybe_sync(self) -> None:
        if self._clock() - self._last_sync >= self.fsync_interval_s:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._last_sync = self._clock()

    # ------------------------------------------------------------------ reads

    def pending(self, limit: int, *, after_id: int = 0, newest_first: bool = False) -> list[Record]:
        order = "DESC" if newest_first else "ASC"
        with self._lock:
            rows = self._db.execute(
                "SELECT id,topic,payload,retain,kind,session,seq,audio_ms,created_us "
                f"FROM outbox WHERE id>? ORDER BY id {order} LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [Record(r[0], r[1], bytes(r[2]), bool(r[3]), r[4], r[5], r[6], r[7], r[8])
                for r in rows]

    def stats(self) -> dict:
        with self._lock:
            oldest = self._db.execute("SELECT MIN(created_us) FROM outbox").fetchone()[0]
            count, nbytes, audio_ms = self._count, self._bytes, self._audio_ms
        age = 0.0 if oldest is None else max(0.0, self._clock() - oldest / 1e6)
        return {
            "records": count,
            "bytes": nbytes,
            "seconds": round(audio_ms / 1000.0, 2),
            "oldest_unsent_age_s": round(age, 2),
        }

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._db.close()
