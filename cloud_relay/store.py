"""The relay's SQLite store: registry (units, users, assignments), sessions, the sealed
stream (the archive: ciphertext and clear headers only) and the audit log.

The stream table's autoincrement id is the delivery order and each scribe's resume
cursor; UNIQUE(session, kind, seq, digest) makes every insert idempotent, which is
where duplicate deliveries from the broker stop. The digest (SHA-256 of the frame) is
in the key because the relay cannot authenticate a frame: a corrupted copy must not
shadow the genuine one, so both go to the scribe, whose client keeps the one that opens.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS units (
    id TEXT PRIMARY KEY,
    room TEXT,
    created_us INTEGER NOT NULL,
    status_json TEXT,
    status_at_us INTEGER
);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('scribe','admin','tech')),
    pw_hash TEXT NOT NULL,
    public_key BLOB,
    created_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS user_keys (
    key_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    public_key BLOB NOT NULL,
    created_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    expires_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS assignments (
    unit_id TEXT NOT NULL,
    scribe_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (unit_id, scribe_id)
);
CREATE TABLE IF NOT EXISTS sessions (
    session TEXT PRIMARY KEY,
    unit_id TEXT NOT NULL,
    opened_us INTEGER,
    closed_us INTEGER,
    close_reason TEXT
);
CREATE TABLE IF NOT EXISTS stream (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    unit_id TEXT NOT NULL,
    session TEXT NOT NULL,
    kind TEXT NOT NULL,
    seq INTEGER NOT NULL,
    payload BLOB NOT NULL,
    digest BLOB NOT NULL,
    received_us INTEGER NOT NULL,
    UNIQUE (session, kind, seq, digest)
);
CREATE INDEX IF NOT EXISTS stream_unit ON stream(unit_id, id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_us INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT
);
"""

TOKEN_TTL_S = 12 * 3600
# A scribe may work from a few places (the console in two browsers, a headless client):
# sessions are sealed to each of their most recent keys; older ones stop opening new ones.
MAX_KEYS_PER_USER = 4


def now_us() -> int:
    return time.time_ns() // 1000


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    dk = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return f"scrypt${salt.hex()}${dk.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        _, salt_hex, dk_hex = stored.split("$")
    except ValueError:
        return False
    return secrets.compare_digest(hash_password(password, bytes.fromhex(salt_hex)), stored)


@dataclass(frozen=True)
class User:
    id: str
    name: str
    role: str
    public_key: bytes | None


@dataclass(frozen=True)
class StreamRow:
    id: int
    unit_id: str
    session: str
    kind: str
    seq: int
    payload: bytes
    received_us: int


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self.listeners: list[Callable[[], None]] = []

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _x(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    # ------------------------------------------------------------------ audit

    def audit(self, actor: str, action: str, target: str | None = None,
              detail: dict | None = None) -> None:
        self._x("INSERT INTO audit(at_us,actor,action,target,detail) VALUES(?,?,?,?,?)",
                (now_us(), actor, action, target, json.dumps(detail or {}, sort_keys=True)))

    def audit_log(self, limit: int = 200) -> list[dict]:
        rows = self._x("SELECT id,at_us,actor,action,target,detail FROM audit "
                       "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [{"id": r[0], "at_us": r[1], "actor": r[2], "action": r[3], "target": r[4],
                 "detail": json.loads(r[5] or "{}")} for r in rows]

    # ------------------------------------------------------------------ users

    def add_user(self, user_id: str, name: str, role: str, password: str) -> None:
        self._x("INSERT INTO users(id,name,role,pw_hash,created_us) VALUES(?,?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET name=excluded.name, role=excluded.role, "
                "pw_hash=excluded.pw_hash",
                (user_id, name, role, hash_password(password), now_us()))

    def user(self, user_id: str) -> User | None:
        r = self._x("SELECT id,name,role,public_key FROM users WHERE id=?", (user_id,)).fetchone()
        return None if r is None else User(r[0], r[1], r[2], r[3])

    def users(self) -> list[User]:
        rows = self._x("SELECT id,name,role,public_key FROM users ORDER BY id").fetchall()
        return [User(*r) for r in rows]

    def login(self, user_id: str, password: str) -> str | None:
        r = self._x("SELECT pw_hash FROM users WHERE id=?", (user_id,)).fetchone()
        if r is None or not check_password(password, r[0]):
            return None
        token = secrets.token_urlsafe(32)
        self._x("INSERT INTO tokens(token_hash,user_id,expires_us) VALUES(?,?,?)",
                (hashlib.sha256(token.encode()).hexdigest(), user_id,
                 now_us() + TOKEN_TTL_S * 1_000_000))
        return token

    def user_for_token(self, token: str) -> User | None:
        r = self._x("SELECT user_id, expires_us FROM tokens WHERE token_hash=?",
                    (hashlib.sha256(token.encode()).hexdigest(),)).fetchone()
        if r is None or r[1] < now_us():
            return None
        return self.user(r[0])

    def set_public_key(self, user_id: str, raw: bytes) -> bool:
        """Register one of the user's keys (the newest becomes `public_key`). Returns True
        if the set of keys changed (so units must be told)."""
        from scribelink.envelope import key_id

        kid = key_id(raw)
        with self._lock:
            self._db.execute("UPDATE users SET public_key=? WHERE id=?", (raw, user_id))
            cur = self._db.execute(
                "INSERT OR IGNORE INTO user_keys(key_id,user_id,public_key,created_us) "
                "VALUES(?,?,?,?)", (kid, user_id, raw, now_us()))
            if cur.rowcount == 0:
                self._db.execute("UPDATE user_keys SET created_us=? WHERE key_id=?",
                                 (now_us(), kid))
                return False
            self._db.execute(
                "DELETE FROM user_keys WHERE user_id=? AND key_id NOT IN (SELECT key_id FROM "
                "user_keys WHERE user_id=? ORDER BY created_us DESC LIMIT ?)",
                (user_id, user_id, MAX_KEYS_PER_USER))
            return True

    def keys_for(self, user_id: str) -> list[bytes]:
        rows = self._x("SELECT public_key FROM user_keys WHERE user_id=? ORDER BY created_us",
                       (user_id,)).fetchall()
        return [bytes(r[0]) for r in rows]

    # ------------------------------------------------------------------ units, assignments

    def ensure_unit(self, unit_id: str, room: str | None = None) -> bool:
        """Register a unit if new; returns True when it was created."""
        cur = self._x("INSERT OR IGNORE INTO units(id,room,created_us) VALUES(?,?,?)",
                      (unit_id, room, now_us()))
        if room is not None:
            self._x("UPDATE units SET room=? WHERE id=?", (room, unit_id))
        return cur.rowcount > 0

    def set_status(self, unit_id: str, status: dict) -> None:
        self._x("UPDATE units SET status_json=?, status_at_us=? WHERE id=?",
                (json.dumps(status), now_us(), unit_id))

    def units(self) -> list[dict]:
        rows = self._x("SELECT id,room,status_json,status_at_us FROM units ORDER BY id").fetchall()
        return [{"id": r[0], "room": r[1], "status": json.loads(r[2]) if r[2] else None,
                 "status_at_us": r[3], "scribes": self.scribes_for(r[0])} for r in rows]

    def unit(self, unit_id: str) -> dict | None:
        for u in self.units():
            if u["id"] == unit_id:
                return u
        return None

    def set_assignment(self, unit_id: str, scribe_ids: list[str]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute("DELETE FROM assignments WHERE unit_id=?", (unit_id,))
                for s in scribe_ids:
                    self._db.execute("INSERT INTO assignments(unit_id,scribe_id) VALUES(?,?)",
                                     (unit_id, s))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def scribes_for(self, unit_id: str) -> list[str]:
        return [r[0] for r in self._x("SELECT scribe_id FROM assignments WHERE unit_id=? "
                                      "ORDER BY scribe_id", (unit_id,)).fetchall()]

    def units_for(self, scribe_id: str) -> list[str]:
        return [r[0] for r in self._x("SELECT unit_id FROM assignments WHERE scribe_id=? "
                                      "ORDER BY unit_id", (scribe_id,)).fetchall()]

    # ------------------------------------------------------------------ stream

    def append(self, unit_id: str, session: str, kind: str, seq: int, payload: bytes) -> bool:
        """Idempotent: returns False for a duplicate (session, kind, seq, same bytes)."""
        digest = hashlib.sha256(payload).digest()
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO stream(unit_id,session,kind,seq,payload,digest,"
                "received_us) VALUES(?,?,?,?,?,?,?)",
                (unit_id, session, kind, seq, payload, digest, now_us()))
            inserted = cur.rowcount > 0
            if inserted and kind == "session_open":
                self._db.execute("INSERT OR IGNORE INTO sessions(session,unit_id,opened_us) "
                                 "VALUES(?,?,?)", (session, unit_id, now_us()))
            if inserted and kind == "session_close":
                self._db.execute("UPDATE sessions SET closed_us=? WHERE session=?",
                                 (now_us(), session))
        if inserted:
            for fn in list(self.listeners):
                fn()
        return inserted

    def rows_after(self, cursor: int, unit_ids: list[str], limit: int = 500) -> list[StreamRow]:
        if not unit_ids:
            return []
        marks = ",".join("?" * len(unit_ids))
        rows = self._x(
            f"SELECT id,unit_id,session,kind,seq,payload,received_us FROM stream "
            f"WHERE id>? AND unit_id IN ({marks}) ORDER BY id LIMIT ?",
            (cursor, *unit_ids, limit)).fetchall()
        return [StreamRow(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[6]) for r in rows]

    def max_id(self) -> int:
        return int(self._x("SELECT COALESCE(MAX(id),0) FROM stream").fetchone()[0])

    def sessions(self, unit_id: str) -> list[dict]:
        rows = self._x("SELECT session,opened_us,closed_us FROM sessions WHERE unit_id=? "
                       "ORDER BY opened_us", (unit_id,)).fetchall()
        return [{"session": r[0], "opened_us": r[1], "closed_us": r[2]} for r in rows]

    def purge_before(self, cutoff_us: int) -> int:
        """Retention: drop sessions (and their sealed stream) that ended before cutoff."""
        with self._lock:
            old = [r[0] for r in self._db.execute(
                "SELECT session FROM sessions WHERE COALESCE(closed_us, opened_us) < ?",
                (cutoff_us,)).fetchall()]
            for s in old:
                self._db.execute("DELETE FROM stream WHERE session=?", (s,))
                self._db.execute("DELETE FROM sessions WHERE session=?", (s,))
        return len(old)
