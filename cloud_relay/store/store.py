"""The relay's store: the one place that holds its SQL. Registry (units, users, keys,
assignments), sessions, the sealed stream (the archive: ciphertext and clear headers only),
enrolment codes, relay heartbeats and the audit log, on SQLite or PostgreSQL.

The stream's id is the delivery order and each scribe's resume cursor. Frames are written
in batches (`append_batch`, one transaction each, see `writer.py`); each batch locks the
`stream_head` row, so batches from several relays commit one after another and ids grow in
commit order. UNIQUE(session, kind, seq, digest) makes every insert idempotent, which is
where duplicate deliveries from the broker stop. The digest (SHA-256 of the frame) is in
the key because the relay cannot authenticate a frame: a corrupted copy must not shadow the
genuine one, so both go to the scribe, whose client keeps the one that opens.

Sealed frames (audio, events) live as rows only while they are recent: `pack` moves them,
ids and all, into per-session segments (`stream_segments`, laid out by `segments.py`)
once they are past the live window or their session has closed, keeping the clear
header's constant part once per session (`sessions.audio_header`, `event_header`). Every
read (`rows_after`, `sealed`) sees rows and segments in one statement, so a frame being
packed is never seen twice or missed, and gives back exactly the bytes that came in.
Duplicates of a packed frame (a replay later than the live window) are dropped when they
are packed in turn.

Concurrency: every method may be called from any thread (never from the event loop: the
API runs them in worker threads).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from cloud_relay.passwords import Hasher
from cloud_relay.store import segments as seg
from cloud_relay.store.accounts import AccountStore
from cloud_relay.store.certs import CertStore
from cloud_relay.store.clinic import ClinicStore
from cloud_relay.store.db import Db, connect
from cloud_relay.store.migrations import TYPES, migrate

# A scribe may work from a few places (the console in two browsers, a headless client):
# sessions are sealed to each of their most recent keys; older ones stop opening new ones.
MAX_KEYS_PER_USER = 4
NOTIFY_CHANNEL = "sl_stream"


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class User:
    id: str
    name: str
    role: str
    public_key: bytes | None


class StreamRow(NamedTuple):  # a tuple: built per frame on the hot path
    id: int
    unit_id: str
    session: str
    kind: str
    seq: int
    payload: bytes
    received_us: int


class Frame(NamedTuple):
    """One inbound item for the stream, before it has an id."""

    unit_id: str
    session: str
    kind: str
    seq: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Batch:
    """What one committed batch did: ids (prev_head, head] are exactly `rows`."""

    prev_head: int
    head: int
    rows: list[StreamRow]
    inserted: list[bool]  # per frame given, in order: False for a duplicate


_ROW = "id,unit_id,session,kind,seq,payload,received_us"
_INSERT = ("INSERT INTO stream(unit_id,session,kind,seq,payload,digest,received_us) "
           "VALUES(?,?,?,?,?,?,?) ON CONFLICT DO NOTHING")


_STREAM_COLS = "unit_id,session,kind,seq,payload,digest,received_us"
_PG_STAGE = ("CREATE TEMP TABLE IF NOT EXISTS stream_in (unit_id TEXT, session TEXT, "
             "kind TEXT, seq BIGINT, payload BYTEA, digest BYTEA, received_us BIGINT) "
             "ON COMMIT DELETE ROWS")
_PG_COPY = f"COPY stream_in ({_STREAM_COLS}) FROM STDIN (FORMAT BINARY)"
_PG_TYPES = ["text", "text", "text", "int8", "bytea", "bytea", "int8"]
_PG_FROM_STAGE = (f"INSERT INTO stream({_STREAM_COLS}) SELECT {_STREAM_COLS} FROM stream_in "
                  "ON CONFLICT DO NOTHING RETURNING id,session,kind,seq,digest")


def _ids_by_key(params: list[tuple], inserted: list[tuple]) -> list[int | None]:
    """Match inserted rows (id, session, kind, seq, digest) back to the frames given: the
    first frame with a key gets its id, a repeat of it in the same batch gets None."""
    got = {(s, k, q, bytes(d)): i for i, s, k, q, d in inserted}
    return [got.pop((p[1], p[2], p[3], p[5]), None) for p in params]


def _stream_row(r: Sequence) -> StreamRow:
    return StreamRow(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[6])


NO_BOUND = 1 << 62
_SEALED = tuple(seg.KINDS)
_SEALED_IN = "(" + ",".join(f"'{k}'" for k in _SEALED) + ")"
# a segment's header template: its own, or (NULL) its session's for that kind
_HEADER = ("COALESCE(s.header, CASE s.kind WHEN 'audio' THEN x.audio_header ELSE "
           "x.event_header END)")
_SEGMENTS = "stream_segments s LEFT JOIN sessions x ON x.session=s.session"
_SEGMENT = f"s.first_id, s.first_seq, s.received_us, {_HEADER}, s.body FROM {_SEGMENTS}"
MAX_CACHED = 20_000  # (session, kind) entries the packer remembers


def _unpack(r: Sequence) -> list[seg.Stored]:
    """A segment row (first_id, first_seq, received_us, header, body) -> its frames."""
    return seg.unpack(bytes(r[4]), None if r[3] is None else bytes(r[3]), first_id=r[0],
                      first_seq=r[1], received_us=r[2])


class Store:
    def __init__(self, db: Db, *, origin: str = "", passwords: Hasher | None = None) -> None:
        self.db = db
        self.origin = origin  # who commits: notifications say it (a relay skips its own)
        self.passwords = passwords or Hasher()
        self.schema_version = migrate(db)
        self._blob = TYPES[db.dialect]["BLOB"]
        # what the packer knows (this process): (session, kind) -> the session's header
        # template, and (unit, session, kind) -> the highest seq already in a segment
        self._templates: dict[tuple[str, str], bytes] = {}
        self._packed_seq: dict[tuple[str, str, str], int] = {}

    @classmethod
    def open(cls, store_url: str, data_dir: str, *, pool_size: int = 8,
             origin: str = "", passwords: Hasher | None = None) -> Store:
        return cls(connect(store_url, data_dir, pool_size=pool_size), origin=origin,
                   passwords=passwords)

    @property
    def dialect(self) -> str:
        return self.db.dialect

    def close(self, *, compact: bool = True) -> None:
        """`compact=False`: a reader done with a store others still use (SQLite: no VACUUM)."""
        self.db.close(compact=compact)

    def _q(self, sql: str, args: Sequence = ()) -> list[tuple]:
        return self.db.query(sql, args)

    def _one(self, sql: str, args: Sequence = ()) -> tuple | None:
        rows = self.db.query(sql, args)
        return rows[0] if rows else None

    # ------------------------------------------------------------------ audit

    def audit(self, actor: str, action: str, target: str | None = None,
              detail: dict | None = None) -> None:
        self.db.execute("INSERT INTO audit(at_us,actor,action,target,detail) VALUES(?,?,?,?,?)",
                        (now_us(), actor, action, target,
                         json.dumps(detail or {}, sort_keys=True)))

    def audit_log(self, limit: int = 200) -> list[dict]:
        rows = self._q("SELECT id,at_us,actor,action,target,detail FROM audit "
                       "ORDER BY id DESC LIMIT ?", (limit,))
        return [{"id": r[0], "at_us": r[1], "actor": r[2], "action": r[3], "target": r[4],
                 "detail": json.loads(r[5] or "{}")} for r in rows]

    # ------------------------------------------------------------------ users

    def add_user(self, user_id: str, name: str, role: str, password: str) -> None:
        """A new user with a password (tools and tests; the API goes through
        cloud_relay.accounts). UserExists if the id is taken."""
        self.accounts.create_user(user_id, name, role, self.passwords.hash(password))

    def user(self, user_id: str) -> User | None:
        r = self._one("SELECT id,name,role,public_key FROM users WHERE id=?", (user_id,))
        return None if r is None else User(r[0], r[1], r[2], _b(r[3]))

    def users(self, ids: Iterable[str] | None = None) -> list[User]:
        if ids is None:
            rows = self._q("SELECT id,name,role,public_key FROM users ORDER BY id")
        else:
            ids = list(ids)
            if not ids:
                return []
            rows = self._q(f"SELECT id,name,role,public_key FROM users WHERE id IN "
                           f"({','.join('?' * len(ids))}) ORDER BY id", ids)
        return [User(r[0], r[1], r[2], _b(r[3])) for r in rows]

    def user_for_token(self, token: str) -> User | None:
        """The enabled user a token signs in, if the token is still valid (no renewal:
        cloud_relay.accounts.Accounts.authenticate slides the deadline)."""
        got = self.accounts.token(token)
        if got is None or got[1] < now_us():
            return None
        return got[0]

    def set_public_key(self, user_id: str, raw: bytes) -> bool:
        """Register one of the user's keys (the newest becomes `public_key`). Returns True
        if the set of keys changed (so units must be told)."""
        from scribelink.envelope import key_id

        kid = key_id(raw)
        with self.db.transaction() as tx:
            tx.execute("UPDATE users SET public_key=? WHERE id=?", (raw, user_id))
            n = tx.execute("INSERT INTO user_keys(key_id,user_id,public_key,created_us) "
                           "VALUES(?,?,?,?) ON CONFLICT DO NOTHING",
                           (kid, user_id, raw, now_us()))
            if n == 0:
                tx.execute("UPDATE user_keys SET created_us=? WHERE key_id=?", (now_us(), kid))
                return False
            tx.execute("DELETE FROM user_keys WHERE user_id=? AND key_id NOT IN (SELECT key_id "
                       "FROM user_keys WHERE user_id=? ORDER BY created_us DESC LIMIT ?)",
                       (user_id, user_id, MAX_KEYS_PER_USER))
            return True

    def keys_for(self, user_id: str) -> list[bytes]:
        rows = self._q("SELECT public_key FROM user_keys WHERE user_id=? ORDER BY created_us",
                       (user_id,))
        return [bytes(r[0]) for r in rows]

    def keys_for_unit(self, unit_id: str) -> list[tuple[str, bytes]]:
        """(scribe id, key) for every key of every scribe assigned to the unit: one query."""
        rows = self._q("SELECT a.scribe_id, k.public_key FROM assignments a JOIN user_keys k "
                       "ON k.user_id=a.scribe_id WHERE a.unit_id=? "
                       "ORDER BY a.scribe_id, k.created_us", (unit_id,))
        return [(r[0], bytes(r[1])) for r in rows]

    # ------------------------------------------------------------------ units, assignments

    def ensure_unit(self, unit_id: str, room: str | None = None) -> bool:
        """Register a unit if new; returns True when it was created."""
        with self.db.transaction() as tx:
            n = tx.execute("INSERT INTO units(id,room,created_us) VALUES(?,?,?) "
                           "ON CONFLICT DO NOTHING", (unit_id, room, now_us()))
            if room is not None:
                tx.execute("UPDATE units SET room=? WHERE id=?", (room, unit_id))
        return n > 0

    def set_unit_broker(self, unit_id: str, broker: str) -> None:
        self.db.execute("UPDATE units SET broker=? WHERE id=?", (broker, unit_id))

    def set_status(self, unit_id: str, status: dict) -> None:
        self.set_statuses({unit_id: status})

    def set_statuses(self, statuses: dict[str, dict]) -> None:
        if not statuses:
            return
        at = now_us()
        with self.db.transaction() as tx:
            for unit_id, status in statuses.items():
                tx.execute("UPDATE units SET status_json=?, status_at_us=? WHERE id=?",
                           (json.dumps(status), at, unit_id))

    def units(self, ids: Iterable[str] | None = None) -> list[dict]:
        """Units with their status and assigned scribes: two queries, whatever the count."""
        where, args = "", []
        if ids is not None:
            args = list(ids)
            if not args:
                return []
            where = f" WHERE id IN ({','.join('?' * len(args))})"
        rows = self._q(f"SELECT id,room,status_json,status_at_us,broker FROM units{where} "
                       "ORDER BY id", args)
        scribes: dict[str, list[str]] = {}
        awhere = where.replace("id IN", "unit_id IN")
        for unit_id, scribe_id in self._q(f"SELECT unit_id, scribe_id FROM assignments{awhere} "
                                          "ORDER BY unit_id, scribe_id", args):
            scribes.setdefault(unit_id, []).append(scribe_id)
        return [{"id": r[0], "room": r[1], "status": json.loads(r[2]) if r[2] else None,
                 "status_at_us": r[3], "broker": r[4], "scribes": scribes.get(r[0], [])}
                for r in rows]

    def unit(self, unit_id: str) -> dict | None:
        found = self.units([unit_id])
        return found[0] if found else None

    def set_assignment(self, unit_id: str, scribe_ids: list[str]) -> None:
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM assignments WHERE unit_id=?", (unit_id,))
            for s in scribe_ids:
                tx.execute("INSERT INTO assignments(unit_id,scribe_id) VALUES(?,?)", (unit_id, s))

    def scribes_for(self, unit_id: str) -> list[str]:
        return [r[0] for r in self._q("SELECT scribe_id FROM assignments WHERE unit_id=? "
                                      "ORDER BY scribe_id", (unit_id,))]

    def units_for(self, scribe_id: str) -> list[str]:
        return [r[0] for r in self._q("SELECT unit_id FROM assignments WHERE scribe_id=? "
                                      "ORDER BY unit_id", (scribe_id,))]

    # ------------------------------------------------------------------ stream

    def append_batch(self, frames: Sequence[Frame],
                     statuses: dict[str, dict] | None = None) -> Batch:
        """Store frames (and unit statuses) in one transaction; duplicate frames are
        ignored. Returns the ids the batch took and the rows it stored. Session opens and
        closes update `sessions` in the same transaction."""
        at = now_us() // 1000 * 1000  # to the millisecond: what the archive keeps
        sha256 = hashlib.sha256
        params = [(f.unit_id, f.session, f.kind, f.seq, f.payload, sha256(f.payload).digest(),
                   at) for f in frames]
        with self.db.transaction() as tx:
            prev = int(tx.query("SELECT head FROM stream_head WHERE one=1" +
                                (" FOR UPDATE" if self.dialect == "postgres" else ""))[0][0])
            ids = self._insert_stream(tx, params) if params else []
            rows: list[StreamRow] = []
            for f, rid in zip(frames, ids, strict=False):
                if rid is None:
                    continue
                rows.append(StreamRow(rid, f.unit_id, f.session, f.kind, f.seq, f.payload, at))
                if f.kind == "session_open":
                    tx.execute("INSERT INTO sessions(session,unit_id,opened_us) VALUES(?,?,?) "
                               "ON CONFLICT DO NOTHING", (f.session, f.unit_id, at))
                    tx.execute("INSERT INTO audit(at_us,actor,action,target,detail) "
                               "VALUES(?,?,?,?,?)",
                               (at, f.unit_id, "session_open", f.session[:8],
                                _recipients_detail(f.payload)))
                elif f.kind == "recipients_added":
                    tx.execute("INSERT INTO audit(at_us,actor,action,target,detail) "
                               "VALUES(?,?,?,?,?)",
                               (at, f.unit_id, "recipients_added", f.session[:8],
                                _recipients_detail(f.payload)))
                elif f.kind == "session_close":
                    tx.execute("UPDATE sessions SET closed_us=? WHERE session=?", (at, f.session))
            head = prev
            if rows:
                head = max(prev, max(r.id for r in rows))
                tx.execute("UPDATE stream_head SET head=? WHERE one=1", (head,))
                if self.dialect == "postgres":  # delivered at commit, in commit order
                    tx.query("SELECT pg_notify(?, ?)",
                             (NOTIFY_CHANNEL, f"{head} {self.origin}"))
            for unit_id, status in (statuses or {}).items():
                tx.execute("UPDATE units SET status_json=?, status_at_us=? WHERE id=?",
                           (json.dumps(status), at, unit_id))
        return Batch(prev, head, rows, [rid is not None for rid in ids])

    def _insert_stream(self, tx, params: list[tuple]) -> list[int | None]:
        """Insert stream rows; the id each took, None for a duplicate."""
        if self.dialect == "postgres":
            # COPY the batch into a per-session staging table, then one INSERT … SELECT:
            # psycopg's binary COPY writes rows in C, where per-row statements or arrays
            # cost tens of microseconds of Python per frame
            tx.once_per_connection(_PG_STAGE)
            tx.copy_in(_PG_COPY, params, _PG_TYPES)
            return _ids_by_key(params, tx.query(_PG_FROM_STAGE))
        # SQLite: AUTOINCREMENT gives sqlite_sequence+1, +2, … to the rows this writer (it
        # holds the write lock) inserts, so one executemany tells every id unless some row
        # was a duplicate; then read back what this batch inserted.
        r = tx.query("SELECT seq FROM sqlite_sequence WHERE name='stream'")
        base = int(r[0][0]) if r else 0
        n = tx.executemany(_INSERT, params)
        if n == len(params):
            return list(range(base + 1, base + 1 + n))
        return _ids_by_key(params, tx.query(
            "SELECT id,session,kind,seq,digest FROM stream WHERE id>? ORDER BY id", (base,)))

    def append(self, unit_id: str, session: str, kind: str, seq: int, payload: bytes) -> bool:
        """One frame (tools and tests; the relay batches). False for a duplicate."""
        return self.append_batch([Frame(unit_id, session, kind, seq, payload)]).inserted[0]

    def head(self) -> int:
        """The highest stream id committed (every lower id is committed or never will be)."""
        return int(self._q("SELECT head FROM stream_head WHERE one=1")[0][0])

    def max_id(self) -> int:
        return self.head()

    def rows_after(self, cursor: int, unit_ids: Sequence[str], limit: int = 500,
                   upto: int | None = None) -> list[StreamRow]:
        """Rows of these units with cursor < id (<= upto), in id order: stored rows and
        packed frames, read in one statement (one snapshot), merged by id."""
        if not unit_ids:
            return []
        upto = NO_BOUND if upto is None else upto
        marks = ",".join("?" * len(unit_ids))
        # every segment reaching past the cursor comes before the first one that does not
        # fit the page: at most a few per (unit, session, kind) straddle the cursor
        seg_page = 16 + 4 * len(unit_ids)
        rows = self._q(
            f"SELECT * FROM (SELECT 0 AS src, {_ROW}, CAST(NULL AS {self._blob}) AS hdr "
            f"FROM stream WHERE id>? AND id<=? AND unit_id IN ({marks}) ORDER BY id LIMIT ?) "
            f"AS l UNION ALL SELECT * FROM (SELECT 1, s.first_id, s.unit_id, s.session, "
            f"s.kind, s.first_seq, s.body, s.received_us, {_HEADER} FROM {_SEGMENTS} "
            f"WHERE s.unit_id IN ({marks}) AND s.first_id>? AND s.first_id<=? "
            f"AND s.last_id>? ORDER BY s.first_id LIMIT ?) AS g",
            [cursor, upto, *unit_ids, limit, *unit_ids, cursor - seg.MAX_ID_SPAN, upto, cursor,
             seg_page])
        live = [_stream_row(r[1:8]) for r in rows if r[0] == 0]
        packed = [r for r in rows if r[0] == 1]
        bound = upto
        if len(live) == limit:
            bound = min(bound, live[-1].id)
        if len(packed) == seg_page:  # frames past the last segment's start may be in others
            bound = min(bound, packed[-1][1])
        out = [r for r in live if r.id <= bound]
        for p in packed:
            unit_id, session, kind = p[2], p[3], p[4]
            out += [StreamRow(f.id, unit_id, session, kind, f.seq, f.payload, f.received_us)
                    for f in _unpack((p[1], p[5], p[7], p[8], p[6]))
                    if cursor < f.id <= bound]
        out.sort(key=lambda r: r.id)
        return out[:limit]

    # ------------------------------------------------------------------ archive

    def sessions(self, unit_id: str) -> list[dict]:
        rows = self._q("SELECT session,opened_us,closed_us FROM sessions WHERE unit_id=? "
                       "ORDER BY opened_us", (unit_id,))
        return [{"session": r[0], "opened_us": r[1], "closed_us": r[2]} for r in rows]

    def open_sessions(self, unit_ids: Sequence[str]) -> dict[str, str]:
        """unit -> its newest open session, for these units: one query."""
        if not unit_ids:
            return {}
        rows = self._q(f"SELECT unit_id, session FROM sessions WHERE closed_us IS NULL AND "
                       f"unit_id IN ({','.join('?' * len(unit_ids))}) ORDER BY opened_us",
                       list(unit_ids))
        return {u: s for u, s in rows}

    def session_row(self, session: str) -> dict | None:
        r = self._one("SELECT session,unit_id,opened_us,closed_us FROM sessions WHERE session=?",
                      (session,))
        if r is None:
            return None
        return {"session": r[0], "unit": r[1], "opened_us": r[2], "closed_us": r[3]}

    def session_open(self, session: str) -> dict | None:
        r = self._one("SELECT payload FROM stream WHERE session=? AND kind='session_open' "
                      "ORDER BY id LIMIT 1", (session,))
        return json.loads(bytes(r[0])) if r else None

    def session_meta(self, session: str) -> list[dict]:
        """Clear lifecycle items of a session (close, gaps) in arrival order."""
        rows = self._q("SELECT id,kind,payload,received_us FROM stream WHERE session=? "
                       "AND kind NOT IN ('audio','event','session_open') ORDER BY id", (session,))
        out = []
        for rid, _kind, payload, rec in rows:
            item = json.loads(bytes(payload))
            item["cursor"], item["received_us"] = rid, rec
            out.append(item)
        return out

    def sealed(self, session: str, kind: str, from_seq: int, limit: int) -> list[tuple]:
        """(id, seq, payload, received_us) of one session's sealed frames, by seq: stored
        rows and packed frames, read in one statement."""
        seg_page = 8 + limit // 50
        rows = self._q(
            f"SELECT * FROM (SELECT 0 AS src, id, seq, received_us, "
            f"CAST(NULL AS {self._blob}) AS hdr, payload FROM stream WHERE session=? AND "
            f"kind=? AND seq>=? ORDER BY seq, id LIMIT ?) AS l UNION ALL SELECT * FROM "
            f"(SELECT 1, {_SEGMENT} WHERE s.session=? AND s.kind=? AND s.first_seq>? AND "
            f"s.last_seq>=? ORDER BY s.first_seq, s.first_id LIMIT ?) AS g",
            (session, kind, from_seq, limit, session, kind, from_seq - seg.MAX_SEQ_SPAN,
             from_seq, seg_page))
        live = [(r[1], r[2], bytes(r[5]), r[3]) for r in rows if r[0] == 0]
        packed = [r[1:] for r in rows if r[0] == 1]
        bound = NO_BOUND
        if len(live) == limit:
            bound = live[-1][1]
        if len(packed) == seg_page:
            bound = min(bound, max(packed[-1][1], from_seq))
        out = [x for x in live if x[1] <= bound]
        for p in packed:
            out += [(f.id, f.seq, f.payload, f.received_us) for f in _unpack(p)
                    if from_seq <= f.seq <= bound]
        out.sort(key=lambda x: (x[1], x[0]))
        return out[:limit]

    def session_counts(self, session: str) -> dict:
        rows = self._q("SELECT kind, COUNT(*), MAX(seq) FROM stream WHERE session=? "
                       "GROUP BY kind UNION ALL SELECT kind, SUM(frames), MAX(last_seq) FROM "
                       "stream_segments WHERE session=? GROUP BY kind", (session, session))
        out: dict = {}
        for k, n, m in rows:
            c = out.setdefault(k, {"count": 0, "max_seq": None})
            c["count"] += int(n)
            c["max_seq"] = m if c["max_seq"] is None else max(c["max_seq"], m)
        return out

    def archive_stats(self) -> dict:
        """Sessions, items (rows and packed frames) and the bytes they take (as stored)."""
        n_sessions = self._q("SELECT COUNT(*), MIN(opened_us) FROM sessions")[0]
        n_stream = self._q("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)),0) FROM stream")[0]
        n_packed = self._q("SELECT COALESCE(SUM(frames),0), COALESCE(SUM(LENGTH(body)),0) "
                           "FROM stream_segments")[0]
        return {"sessions": n_sessions[0], "oldest_opened_us": n_sessions[1],
                "items": int(n_stream[0]) + int(n_packed[0]),
                "bytes": int(n_stream[1]) + int(n_packed[1])}

    # ------------------------------------------------------------------ packing

    def pack_candidates(self, *, upto: int | None = None,
                        sessions: Sequence[str] = ()) -> list[tuple[str, str, str]]:
        """(unit, session, kind) of stored sealed frames to pack: those with id <= upto,
        or those of these sessions."""
        if sessions:
            marks = ",".join("?" * len(sessions))
            rows = self._q(f"SELECT DISTINCT unit_id, session, kind FROM stream WHERE session "
                           f"IN ({marks}) AND kind IN {_SEALED_IN}", list(sessions))
        else:
            rows = self._q(f"SELECT DISTINCT unit_id, session, kind FROM stream WHERE id<=? "
                           f"AND kind IN {_SEALED_IN}", (NO_BOUND if upto is None else upto,))
        return [(r[0], r[1], r[2]) for r in rows]

    def pack(self, groups: Sequence[tuple[str, str, str]], *, upto: int | None = None) -> int:
        """Move the stored sealed frames of these (unit, session, kind) groups (with id <=
        upto) into segments, in one transaction; a frame equal to one already packed is
        dropped. Returns how many frames were packed. Safe beside other relays doing the
        same: each frame is taken by one DELETE ... RETURNING."""
        upto = NO_BOUND if upto is None else upto
        moved = 0
        with self.db.transaction() as tx:
            for unit_id, session, kind in groups:
                taken = tx.query("DELETE FROM stream WHERE unit_id=? AND session=? AND kind=? "
                                 "AND id<=? RETURNING id, seq, payload, received_us",
                                 (unit_id, session, kind, upto))
                if not taken:
                    continue
                frames = [seg.Stored(r[0], r[1], bytes(r[2]), r[3]) for r in taken]
                frames = self._drop_packed(tx, unit_id, session, kind, frames)
                if not frames:
                    continue
                runs = seg.plan(frames)
                template = self._session_template(tx, session, kind, runs)
                rows = []
                for t, run in runs:
                    p = seg.pack(t, run)
                    rows.append((session, kind, p.first_seq, p.first_id, p.last_seq, p.last_id,
                                 unit_id, p.frames, p.received_us,
                                 None if t == template else t, p.body))
                tx.executemany("INSERT INTO stream_segments(session,kind,first_seq,first_id,"
                               "last_seq,last_id,unit_id,frames,received_us,header,body) "
                               "VALUES(?,?,?,?,?,?,?,?,?,?,?)", rows)
                key = (unit_id, session, kind)
                if len(self._packed_seq) >= MAX_CACHED:
                    self._packed_seq.clear()
                self._packed_seq[key] = max(self._packed_seq.get(key, -1),
                                            max(f.seq for f in frames))
                moved += len(frames)
        return moved

    def _drop_packed(self, tx, unit_id: str, session: str, kind: str,
                     frames: list[seg.Stored]) -> list[seg.Stored]:
        """The frames not already in a segment (byte for byte, at the same seq)."""
        lo = min(f.seq for f in frames)
        known = self._packed_seq.get((unit_id, session, kind))
        if known is not None and lo > known:
            return frames  # all newer than anything this relay packed: the usual case
        hi = max(f.seq for f in frames)
        have: set[tuple[int, bytes]] = set()
        for r in tx.query(f"SELECT {_SEGMENT} WHERE s.session=? AND s.kind=? AND "
                          "s.unit_id=? AND s.first_seq>? AND s.first_seq<=? AND "
                          "s.last_seq>=?", (session, kind, unit_id,
                                            lo - seg.MAX_SEQ_SPAN, hi, lo)):
            have.update((f.seq, f.payload) for f in _unpack(r))
        out = []
        for f in frames:
            if (f.seq, f.payload) not in have:
                have.add((f.seq, f.payload))
                out.append(f)
        return out

    def _session_template(self, tx, session: str, kind: str, runs: list) -> bytes | None:
        """The header template kept once for (session, kind) in its session row: the first
        one packed. None (every segment keeps its own) for a session without a row."""
        key = (session, kind)
        t = self._templates.get(key)
        if t is not None:
            return t
        col = "audio_header" if kind == "audio" else "event_header"
        r = tx.query(f"SELECT {col} FROM sessions WHERE session=?", (session,))
        if not r:
            return None
        if r[0][0] is None:
            first = next((t for t, _ in runs if t), None)
            if first is None:
                return None
            tx.execute(f"UPDATE sessions SET {col}=? WHERE session=? AND {col} IS NULL",
                       (first, session))
            r = tx.query(f"SELECT {col} FROM sessions WHERE session=?", (session,))
        t = bytes(r[0][0])
        if len(self._templates) >= MAX_CACHED:
            self._templates.clear()
        self._templates[key] = t
        return t

    def purge_before(self, cutoff_us: int, *, max_sessions: int = 100) -> int:
        """Retention: drop sessions (and their sealed stream) that ended before cutoff, a few
        sessions per transaction so the stream's writers never wait long. Returns how many."""
        total = 0
        while True:
            with self.db.transaction() as tx:
                old = [r[0] for r in tx.query(
                    "SELECT session FROM sessions WHERE COALESCE(closed_us, opened_us) < ? "
                    "LIMIT ?", (cutoff_us, max_sessions))]
                for s in old:
                    tx.execute("DELETE FROM stream WHERE session=?", (s,))
                    tx.execute("DELETE FROM key_shares WHERE session=?", (s,))
                    tx.execute("DELETE FROM stream_segments WHERE session=?", (s,))
                    tx.execute("DELETE FROM sessions WHERE session=?", (s,))
            total += len(old)
            if len(old) < max_sessions:
                return total

    # ------------------------------------------------------------------ enrolment codes

    def add_enroll_code(self, code_hash: str, unit_id: str, room: str, created_by: str,
                        expires_us: int) -> int:
        r = self._q("INSERT INTO enroll_codes(code_hash,unit_id,room,created_by,created_us,"
                    "expires_us) VALUES(?,?,?,?,?,?) RETURNING id",
                    (code_hash, unit_id, room, created_by, now_us(), expires_us))
        return int(r[0][0])

    def enroll_code(self, code_hash: str) -> tuple | None:
        """(id, unit_id, room, expires_us, used_us, cert_fingerprint, reserved_serial,
        reserved_until_us, cert_pem) of a code, by the hash of its proof."""
        return self._one("SELECT id,unit_id,room,expires_us,used_us,cert_fingerprint,"
                         "reserved_serial,reserved_until_us,cert_pem FROM enroll_codes "
                         "WHERE code_hash=?", (code_hash,))

    def reserve_enroll_code(self, code_id: int, serial: str, by: str, until_us: int,
                            fingerprint: str, cert_pem: str) -> bool:
        """Reserve an unspent code for one unit (serial), atomically: of two units racing
        for it, one gets True. The same serial may reserve again (a resumed enrolment)."""
        return self.db.execute(
            "UPDATE enroll_codes SET reserved_serial=?, reserved_by=?, reserved_until_us=?, "
            "cert_fingerprint=?, cert_pem=? WHERE id=? AND used_us IS NULL AND "
            "(reserved_serial IS NULL OR reserved_serial=? OR reserved_until_us<?)",
            (serial, by, until_us, fingerprint, cert_pem, code_id, serial, now_us())) == 1

    def spend_enroll_code(self, code_id: int, used_by: str, fingerprint: str) -> bool:
        """Spend a code whose certificate (by fingerprint) the unit committed, atomically:
        True once; False if it was spent already or issued another certificate."""
        return self.db.execute("UPDATE enroll_codes SET used_us=?, used_by=? WHERE id=? AND "
                               "used_us IS NULL AND cert_fingerprint=?",
                               (now_us(), used_by, code_id, fingerprint)) == 1

    def enroll_code_spent(self, code_id: int) -> tuple | None:
        """(used_us, cert_fingerprint) of a code."""
        return self._one("SELECT used_us, cert_fingerprint FROM enroll_codes WHERE id=?",
                         (code_id,))

    def enrolments(self, unit_id: str) -> list[dict]:
        """Every code made for a unit id, oldest first: {id, created_us, used_us,
        cert_fingerprint} (used_us set: the unit committed the certificate it issued)."""
        return [{"id": r[0], "created_us": r[1], "used_us": r[2], "cert_fingerprint": r[3]}
                for r in self._q("SELECT id, created_us, used_us, cert_fingerprint FROM "
                                 "enroll_codes WHERE unit_id=? ORDER BY id", (unit_id,))]

    # ------------------------------------------------------------------ per-unit audio

    def unit_audio(self, unit_id: str) -> dict | None:
        r = self._one("SELECT codec, bitrate FROM unit_audio WHERE unit_id=?", (unit_id,))
        return None if r is None else {"codec": r[0], "bitrate": r[1]}

    def set_unit_audio(self, unit_id: str, codec: str, bitrate: int) -> None:
        self.db.execute("INSERT INTO unit_audio(unit_id,codec,bitrate,updated_us) "
                        "VALUES(?,?,?,?) ON CONFLICT(unit_id) DO UPDATE SET "
                        "codec=excluded.codec, bitrate=excluded.bitrate, "
                        "updated_us=excluded.updated_us", (unit_id, codec, bitrate, now_us()))

    def units_audio(self) -> dict[str, dict]:
        return {r[0]: {"codec": r[1], "bitrate": r[2]}
                for r in self._q("SELECT unit_id, codec, bitrate FROM unit_audio")}

    # ------------------------------------------------------------------ accounts, clinic admin

    @property
    def accounts(self) -> AccountStore:
        return AccountStore(self)

    @property
    def clinic(self) -> ClinicStore:
        return ClinicStore(self)

    # ------------------------------------------------------------------ trust statements

    @property
    def trust(self) -> TrustStore:
        return TrustStore(self)

    # ------------------------------------------------------------------ transport certificates

    @property
    def certs(self) -> CertStore:
        return CertStore(self)

    # ------------------------------------------------------------------ the scribe's shift

    @property
    def shift(self) -> ShiftStore:
        return ShiftStore(self)

    # ------------------------------------------------------------------ fleet updates

    @property
    def fleet(self) -> FleetStore:
        return FleetStore(self)

    # ------------------------------------------------------------------ relays

    def heartbeat(self, client_id: str) -> None:
        self.db.execute("INSERT INTO relays(client_id,seen_us) VALUES(?,?) ON CONFLICT(client_id) "
                        "DO UPDATE SET seen_us=excluded.seen_us", (client_id, now_us()))

    def relay_seen_us(self, client_id: str) -> int | None:
        r = self._one("SELECT seen_us FROM relays WHERE client_id=?", (client_id,))
        return None if r is None else int(r[0])

    def claim_adoption(self, peer: str, me: str, stale_before_us: int, lease_us: int) -> bool:
        """Take (or renew) the lease on a dead peer's broker session. True if ours."""
        now = now_us()
        return self.db.execute(
            "UPDATE relays SET adopted_by=?, adopted_until_us=? WHERE client_id=? AND seen_us<? "
            "AND (adopted_by IS NULL OR adopted_by=? OR adopted_until_us<?)",
            (me, now + lease_us, peer, stale_before_us, me, now)) == 1

    def release_adoption(self, peer: str, me: str) -> None:
        self.db.execute("UPDATE relays SET adopted_by=NULL, adopted_until_us=NULL "
                        "WHERE client_id=? AND adopted_by=?", (peer, me))


def _recipients_detail(payload: bytes) -> str:
    """Who a session's key was wrapped to, as the unit said (signed; the relay only reads
    it): every session's recipients are in the audit log."""
    try:
        m = json.loads(payload)
        return json.dumps({"recipients": [
            {"kind": r.get("kind"), "scribe": r.get("id"), "device": r.get("device")}
            for r in m.get("recipients", [])[:64] if isinstance(r, dict)]}, sort_keys=True)
    except (ValueError, AttributeError):
        return "{}"


def _b(v) -> bytes | None:
    return None if v is None else bytes(v)


class FleetStore:
    """Releases, offers, what units report of them, and diagnostics requests
    (cloud_relay/api/fleet.py, docs/updates.md)."""

    def __init__(self, store: Store) -> None:
        self.store, self.db = store, store.db

    @staticmethod
    def _release(r: Sequence) -> dict:
        return {"id": r[0], "version": r[1], "hardware": json.loads(r[2]), "signer": r[3],
                "size": r[4], "uploaded_by": r[5], "uploaded_us": r[6]}

    def release(self, release_id: str) -> dict | None:
        r = self.store._one("SELECT id,version,hardware,signer,size,uploaded_by,uploaded_us "
                            "FROM releases WHERE id=?", (release_id,))
        return None if r is None else self._release(r)

    def releases(self) -> list[dict]:
        return [self._release(r) for r in self.store._q(
            "SELECT id,version,hardware,signer,size,uploaded_by,uploaded_us FROM releases "
            "ORDER BY uploaded_us DESC")]

    def add_release(self, release_id: str, version: str, hardware: list[str],
                    signer: str | None, size: int, by: str) -> None:
        self.db.execute("INSERT INTO releases(id,version,hardware,signer,size,uploaded_by,"
                        "uploaded_us) VALUES(?,?,?,?,?,?,?) ON CONFLICT(id) DO NOTHING",
                        (release_id, version, json.dumps(hardware), signer, size, by,
                         now_us()))

    def add_offer(self, offer_id: str, release_id: str, target: dict, permit: dict | None,
                  by: str, units: list[str]) -> int:
        now = now_us()
        with self.db.transaction() as tx:
            tx.execute("INSERT INTO offers(id,release_id,target,permit,created_by,created_us) "
                       "VALUES(?,?,?,?,?,?)", (offer_id, release_id, json.dumps(target),
                                               json.dumps(permit) if permit else None, by, now))
            for unit_id in units:
                tx.execute("INSERT INTO offer_units(offer_id,unit_id,state,updated_us) "
                           "VALUES(?,?,?,?)", (offer_id, unit_id, "offered", now))
        return now

    def offered(self, unit_id: str, release_id: str) -> bool:
        return self.store._one("SELECT 1 FROM offer_units ou JOIN offers o ON "
                               "o.id=ou.offer_id WHERE ou.unit_id=? AND o.release_id=?",
                               (unit_id, release_id)) is not None

    def offers(self, limit: int = 50) -> list[dict]:
        rows = self.store._q(
            "SELECT o.id,o.release_id,r.version,o.target,o.created_by,o.created_us,"
            "(SELECT COUNT(*) FROM offer_units WHERE offer_id=o.id) FROM offers o "
            "JOIN releases r ON r.id=o.release_id ORDER BY o.created_us DESC LIMIT ?",
            (limit,))
        return [{"id": r[0], "release": r[1], "version": r[2], "target": json.loads(r[3]),
                 "created_by": r[4], "created_us": r[5], "units": r[6]} for r in rows]

    def add_report(self, unit_id: str, offer_id: str | None, state: str,
                   version_from: str | None, version_to: str | None, code: str | None,
                   reason: str | None, detail: dict, at_us: int) -> None:
        now = now_us()
        with self.db.transaction() as tx:
            tx.execute("INSERT INTO update_reports(unit_id,offer_id,state,version_from,"
                       "version_to,code,reason,detail,at_us,received_us) "
                       "VALUES(?,?,?,?,?,?,?,?,?,?)",
                       (unit_id, offer_id, state, version_from, version_to, code, reason,
                        json.dumps(detail), at_us, now))
            if offer_id:
                tx.execute("UPDATE offer_units SET state=?, updated_us=? WHERE offer_id=? "
                           "AND unit_id=?", (state, now, offer_id, unit_id))

    def reports(self, unit_id: str | None = None, limit: int = 200) -> list[dict]:
        where, args = ("WHERE unit_id=?", (unit_id,)) if unit_id else ("", ())
        rows = self.store._q(
            f"SELECT id,unit_id,offer_id,state,version_from,version_to,code,reason,detail,"
            f"at_us,received_us FROM update_reports {where} ORDER BY id DESC LIMIT ?",
            (*args, limit))
        return [{"id": r[0], "unit": r[1], "offer_id": r[2], "state": r[3], "from": r[4],
                 "to": r[5], "code": r[6], "reason": r[7], "detail": json.loads(r[8] or "{}"),
                 "at_us": r[9], "received_us": r[10]} for r in rows]

    def add_diagnostics(self, request_id: str, unit_id: str, by: str, recipient: str,
                        at_us: int) -> None:
        self.db.execute("INSERT INTO diagnostics(id,unit_id,requested_by,recipient,"
                        "requested_us) VALUES(?,?,?,?,?)",
                        (request_id, unit_id, by, recipient, at_us))

    def diagnostics(self, request_id: str) -> dict | None:
        r = self.store._one("SELECT unit_id,uploaded_us,recipient FROM diagnostics WHERE id=?",
                            (request_id,))
        return None if r is None else {"unit": r[0], "uploaded_us": r[1], "recipient": r[2]}

    def diagnostics_uploaded(self, request_id: str, size: int) -> None:
        self.db.execute("UPDATE diagnostics SET uploaded_us=?, size=? WHERE id=?",
                        (now_us(), size, request_id))

    def diagnostics_list(self) -> list[dict]:
        rows = self.store._q("SELECT id,unit_id,requested_by,requested_us,uploaded_us,size "
                             "FROM diagnostics ORDER BY requested_us DESC LIMIT 50")
        return [{"id": r[0], "unit": r[1], "requested_by": r[2], "requested_us": r[3],
                 "uploaded_us": r[4], "size": r[5]} for r in rows]


class TrustStore:
    """What the clinic authority signed, kept and handed out as is (docs/trust.md): the
    authority's public key, scribe devices and their endorsements, each unit's signed
    assignment, the revocation list, enrolment grants, unit bindings, provisioning tokens.
    The relay checks these only to refuse junk early; units and receivers check them."""

    def __init__(self, store: Store) -> None:
        self.store, self.db = store, store.db

    def get(self, name: str) -> str | None:
        r = self.store._one("SELECT value FROM trust WHERE name=?", (name,))
        return None if r is None else r[0]

    def put(self, name: str, value: str) -> None:
        self.db.execute("INSERT INTO trust(name,value,updated_us) VALUES(?,?,?) ON "
                        "CONFLICT(name) DO UPDATE SET value=excluded.value, "
                        "updated_us=excluded.updated_us", (name, value, now_us()))

    # -- devices

    def add_device(self, device: str, user_id: str, enc_key: bytes, sign_key: bytes,
                   label: str, kind: str) -> bool:
        """Register a device (pending until endorsed). False if it exists (any user)."""
        return self.db.execute(
            "INSERT INTO devices(device,user_id,enc_key,sign_key,label,kind,created_us) "
            "VALUES(?,?,?,?,?,?,?) ON CONFLICT(device) DO NOTHING",
            (device, user_id, enc_key, sign_key, label, kind, now_us())) == 1

    @staticmethod
    def _device(r: Sequence) -> dict:
        return {"device": r[0], "user": r[1], "enc_key": bytes(r[2]), "sign_key": bytes(r[3]),
                "label": r[4], "kind": r[5], "created_us": r[6],
                "endorsement": json.loads(r[7]) if r[7] else None, "endorsed_by": r[8],
                "endorsed_us": r[9]}

    _DEVICE = ("SELECT device,user_id,enc_key,sign_key,label,kind,created_us,endorsement,"
               "endorsed_by,endorsed_us FROM devices")

    def device(self, device: str) -> dict | None:
        r = self.store._one(self._DEVICE + " WHERE device=?", (device,))
        return None if r is None else self._device(r)

    def devices(self, *, user_id: str | None = None, pending: bool | None = None,
                users: Sequence[str] | None = None) -> list[dict]:
        where, args = [], []
        if user_id is not None:
            where.append("user_id=?")
            args.append(user_id)
        if users is not None:
            if not users:
                return []
            where.append(f"user_id IN ({','.join('?' * len(users))})")
            args += list(users)
        if pending is not None:
            where.append("endorsement IS NULL" if pending else "endorsement IS NOT NULL")
        sql = self._DEVICE + (" WHERE " + " AND ".join(where) if where else "") + \
            " ORDER BY created_us"
        return [self._device(r) for r in self.store._q(sql, args)]

    def endorse(self, device: str, statement: dict, by: str) -> None:
        self.db.execute("UPDATE devices SET endorsement=?, endorsed_by=?, endorsed_us=? "
                        "WHERE device=?", (json.dumps(statement), by, now_us(), device))

    # -- assignments

    def assignment(self, unit_id: str) -> dict | None:
        r = self.store._one("SELECT statement FROM assignment_statements WHERE unit_id=?",
                            (unit_id,))
        return None if r is None else json.loads(r[0])

    def set_assignment(self, unit_id: str, statement: dict, issued_us: int,
                       scribes: list[str]) -> None:
        with self.db.transaction() as tx:
            tx.execute("INSERT INTO assignment_statements(unit_id,statement,issued_us) "
                       "VALUES(?,?,?) ON CONFLICT(unit_id) DO UPDATE SET "
                       "statement=excluded.statement, issued_us=excluded.issued_us",
                       (unit_id, json.dumps(statement), issued_us))
            tx.execute("DELETE FROM assignments WHERE unit_id=?", (unit_id,))
            for s in scribes:
                tx.execute("INSERT INTO assignments(unit_id,scribe_id) VALUES(?,?)",
                           (unit_id, s))

    # -- bindings, grants

    def add_binding(self, unit_id: str, key_id: str, binding: dict) -> None:
        self.db.execute("INSERT INTO unit_bindings(unit_id,key_id,binding,created_us) "
                        "VALUES(?,?,?,?)", (unit_id, key_id, json.dumps(binding), now_us()))

    def bindings(self, unit_id: str) -> list[dict]:
        return [{"key_id": r[0], "binding": json.loads(r[1]), "created_us": r[2]}
                for r in self.store._q("SELECT key_id,binding,created_us FROM unit_bindings "
                                       "WHERE unit_id=? ORDER BY id", (unit_id,))]

    def add_grant(self, proof_hash: str, unit_id: str, room: str, by: str, expires_us: int,
                  grant: dict) -> int:
        r = self.store._q("INSERT INTO enroll_codes(code_hash,unit_id,room,created_by,"
                          "created_us,expires_us,grant_json) VALUES(?,?,?,?,?,?,?) RETURNING id",
                          (proof_hash, unit_id, room, by, now_us(), expires_us,
                           json.dumps(grant)))
        return int(r[0][0])

    def grant(self, code_id: int) -> dict | None:
        r = self.store._one("SELECT grant_json FROM enroll_codes WHERE id=?", (code_id,))
        return json.loads(r[0]) if r and r[0] else None

    # -- provisioning tokens

    def add_token_request(self, request_id: str, unit_id: str, action: str, args: dict,
                          by: str) -> None:
        self.db.execute("INSERT INTO token_requests(id,unit_id,action,args,requested_by,"
                        "requested_us) VALUES(?,?,?,?,?,?)",
                        (request_id, unit_id, action, json.dumps(args), by, now_us()))

    @staticmethod
    def _request(r: Sequence) -> dict:
        return {"id": r[0], "unit": r[1], "action": r[2], "args": json.loads(r[3]),
                "requested_by": r[4], "requested_us": r[5],
                "statement": json.loads(r[6]) if r[6] else None, "signed_by": r[7],
                "signed_us": r[8]}

    _REQUEST = ("SELECT id,unit_id,action,args,requested_by,requested_us,statement,"
                "signed_by,signed_us FROM token_requests")

    def token_request(self, request_id: str) -> dict | None:
        r = self.store._one(self._REQUEST + " WHERE id=?", (request_id,))
        return None if r is None else self._request(r)

    def token_requests(self, pending: bool = True) -> list[dict]:
        sql = self._REQUEST + (" WHERE statement IS NULL" if pending else "") + \
            " ORDER BY requested_us DESC LIMIT 200"
        return [self._request(r) for r in self.store._q(sql)]

    def sign_token_request(self, request_id: str, statement: dict, by: str) -> bool:
        return self.db.execute("UPDATE token_requests SET statement=?, signed_by=?, "
                               "signed_us=? WHERE id=? AND statement IS NULL",
                               (json.dumps(statement), by, now_us(), request_id)) == 1


class ShiftStore:
    """What the console needs across a scribe's shift (cloud_relay/api/shift.py): key shares
    between a scribe's devices (opaque to the relay: sealed to the receiving device, signed
    by the sharing one) and the archive's sessions by room and time."""

    def __init__(self, store: Store) -> None:
        self.store, self.db = store, store.db

    def put_shares(self, rows: Sequence[tuple[str, str, str, str, str]]) -> int:
        """(session, to_device, from_device, unit, share JSON): the first share of a session
        to a device stays. Returns how many were new."""
        n = 0
        with self.db.transaction() as tx:
            for session, to_device, from_device, unit_id, share in rows:
                n += tx.execute("INSERT INTO key_shares(session,to_device,from_device,unit_id,"
                                "share,created_us) VALUES(?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                                (session, to_device, from_device, unit_id, share, now_us()))
        return n

    def shares_for(self, device: str, unit_ids: Sequence[str], limit: int = 1000) -> list[dict]:
        """Shares to `device` of sessions in these units, newest first."""
        if not unit_ids:
            return []
        marks = ",".join("?" * len(unit_ids))
        return [json.loads(r[0]) for r in self.store._q(
            f"SELECT share FROM key_shares WHERE to_device=? AND unit_id IN ({marks}) "
            "ORDER BY created_us DESC LIMIT ?", (device, *unit_ids, limit))]

    def shared_sessions(self, device: str, sessions: Sequence[str]) -> set[str]:
        if not sessions:
            return set()
        marks = ",".join("?" * len(sessions))
        return {r[0] for r in self.store._q(
            f"SELECT session FROM key_shares WHERE to_device=? AND session IN ({marks})",
            (device, *sessions))}

    def sessions(self, unit_ids: Sequence[str], *, from_us: int = 0, to_us: int = 2**62,
                 limit: int = 200) -> list[dict]:
        """Sessions of these units that opened in [from_us, to_us), newest first, with their
        session_open, the devices added to them since, and their counts."""
        if not unit_ids:
            return []
        marks = ",".join("?" * len(unit_ids))
        rows = self.store._q(
            f"SELECT s.session, s.unit_id, s.opened_us, s.closed_us, o.payload FROM sessions s "
            f"JOIN stream o ON o.session=s.session AND o.kind='session_open' "
            f"WHERE s.unit_id IN ({marks}) AND s.opened_us>=? AND s.opened_us<? "
            "ORDER BY s.opened_us DESC LIMIT ?", (*unit_ids, from_us, to_us, limit))
        out = {r[0]: {"session": r[0], "unit": r[1], "opened_us": r[2], "closed_us": r[3],
                      "session_open": json.loads(bytes(r[4])), "added": []} for r in rows}
        if not out:
            return []
        smarks = ",".join("?" * len(out))
        for session, payload in self.store._q(
                f"SELECT session, payload FROM stream WHERE kind='recipients_added' AND "
                f"session IN ({smarks}) ORDER BY id", list(out)):
            out[session]["added"].append(json.loads(bytes(payload)))
        # stored rows and packed frames alike (Store.pack moves closed sessions' frames)
        for session, kind, n, top in self.store._q(
                f"SELECT session, kind, COUNT(*), MAX(seq) FROM stream WHERE session IN "
                f"({smarks}) AND kind IN ('audio','event') GROUP BY session, kind "
                f"UNION ALL SELECT session, kind, SUM(frames), MAX(last_seq) FROM "
                f"stream_segments WHERE session IN ({smarks}) AND kind IN ('audio','event') "
                f"GROUP BY session, kind", [*out, *out]):
            o = out[session]
            o[f"{kind}_count"] = o.get(f"{kind}_count", 0) + int(n)
            prev = o.get(f"{kind}_max_seq")
            o[f"{kind}_max_seq"] = top if prev is None else max(prev, top)
        return list(out.values())
