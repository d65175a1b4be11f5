"""Connections to the relay's database, SQLite or PostgreSQL, behind one small interface.

The store writes its SQL once, with `?` placeholders; the PostgreSQL adapter rewrites them
to psycopg's `%s`. Concurrency: every method may be called from any thread. SQLite gets one
connection per thread (WAL lets readers run beside the one writer); PostgreSQL gets a
connection pool (psycopg_pool), one connection per call or transaction.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("cloud_relay.store")

Row = tuple[Any, ...]
WAL_CHECKPOINT_BYTES = 32 << 20
CHECKPOINT_S = 30.0
# A new SQLite store is made with the smallest page: every table and index costs one page
# however empty (~35 of them), and the archive's rows are packed blobs that page size does
# not matter to (docs/archive.md has the numbers). An existing file keeps its pages.
NEW_PAGE_SIZE = 512
# Freed pages (rows packed into segments, sessions purged) are reused by the next rows; a
# store this small is also rebuilt tight when the relay stops (VACUUM: milliseconds to a
# second), so a small relay's file is what it holds. A bigger one keeps its free pages for
# reuse: `python -m cloud_relay vacuum` with the relay stopped gives them back.
VACUUM_AT_CLOSE_MAX_BYTES = 64 << 20


class StoreUnavailable(RuntimeError):
    """The database cannot be reached or opened; the message says which and what to do."""


class Tx(Protocol):
    """One open transaction (SQL with `?` placeholders)."""

    def query(self, sql: str, args: Sequence = ()) -> list[Row]: ...

    def execute(self, sql: str, args: Sequence = ()) -> int: ...

    def executemany(self, sql: str, rows: Sequence[Sequence]) -> int: ...


class Db(Protocol):
    dialect: str  # "sqlite" | "postgres"

    def query(self, sql: str, args: Sequence = ()) -> list[Row]: ...

    def execute(self, sql: str, args: Sequence = ()) -> int: ...

    def transaction(self, *, lock: str | None = None) -> Any: ...

    def close(self, *, compact: bool = True) -> None: ...


# ---------------------------------------------------------------------- SQLite


# The table SQLite names when a statement needs one the file does not have ("main." when a
# foreign key's parent is missing).
_MISSING_TABLE = re.compile(r"^no such table: (?:main\.)?(\w+)$")
# Statements that, on tables that are empty, can only read or change nothing.
_READS_OR_CHANGES = re.compile(r"\s*(SELECT|UPDATE|DELETE)\b", re.I)


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection, owner: SqliteDb | None = None) -> None:
        self.conn = conn
        self.owner = owner

    def _run(self, sql: str, run: Any) -> Any:
        if self.owner is None:
            return run(self.conn)
        return self.owner.run(self.conn, sql, run)

    def query(self, sql: str, args: Sequence = ()) -> list[Row]:
        return self._run(sql, lambda c: c.execute(sql, args).fetchall())

    def execute(self, sql: str, args: Sequence = ()) -> int:
        return self._run(sql, lambda c: c.execute(sql, args).rowcount)

    def executemany(self, sql: str, rows: Sequence[Sequence]) -> int:
        """Run sql for each row; how many rows it changed in all."""
        def run(c: sqlite3.Connection) -> int:
            before = c.total_changes
            c.executemany(sql, rows)
            return c.total_changes - before

        return self._run(sql, run)


class SqliteDb:
    """SQLite in WAL mode, one connection per thread, writers serialised by SQLite's own
    write lock (BEGIN IMMEDIATE), so ids are assigned in commit order."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        _private(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()  # (set at close; wakes the checkpointer)
        self.created = False  # this process made the file (migrate() compacts it after)
        # tables made on first use: name -> its CREATE statements (migrations.DEFERRED)
        self._deferred: dict[str, tuple[str, ...]] = {}
        self._conn()  # fail now, not on the first frame
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, daemon=True,
                                              name="sqlite-checkpoint")
        self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        """Copy the WAL into the database in the background, every CHECKPOINT_S or sooner
        when it passes WAL_CHECKPOINT_BYTES (PASSIVE: never blocks readers or the writer).
        Rare checkpoints also copy the pages every batch rewrites (index leaves, the stream
        head) fewer times: measured relay CPU per 1,000 msg/s 7.2-7.5 % against 7.9-8.4 %
        with SQLite's default of one per 1,000 pages, and no commit stalls in the p99."""
        wal = Path(str(self.path) + "-wal")
        last = 0.0
        while not self._closed.wait(0.25):
            try:
                size = wal.stat().st_size
            except OSError:
                continue
            if size < WAL_CHECKPOINT_BYTES and time.monotonic() - last < CHECKPOINT_S:
                continue
            last = time.monotonic()
            try:
                self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)")
            except (sqlite3.Error, StoreUnavailable):
                pass  # closed, or busy: the next round

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed.is_set():
                raise StoreUnavailable("the store is closed")
            try:
                conn = sqlite3.connect(str(self.path), check_same_thread=False,
                                       isolation_level=None, timeout=30)
                if conn.execute("PRAGMA page_count").fetchone()[0] == 0:  # a new file
                    conn.execute(f"PRAGMA page_size={NEW_PAGE_SIZE}")
                    self.created = True
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
                # No checkpoint on commit: the checkpointer thread does it (below), so a
                # commit never waits for a checkpoint's copy and fsync.
                conn.execute("PRAGMA wal_autocheckpoint=0")
                conn.execute(f"PRAGMA journal_size_limit={64 << 20}")
            except sqlite3.Error as e:
                raise StoreUnavailable(f"cannot open SQLite store {self.path}: {e}; check the "
                                       "relay's data_dir exists and is writable") from e
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def query(self, sql: str, args: Sequence = ()) -> list[Row]:
        return _SqliteTx(self._conn(), self).query(sql, args)

    def execute(self, sql: str, args: Sequence = ()) -> int:
        return _SqliteTx(self._conn(), self).execute(sql, args)

    # ------------------------------------------------------ tables made on first use

    def defer(self, schema: dict[str, tuple[str, ...]]) -> None:
        """Name the tables this file may lack until they are first written, with the
        statements that make each (table, then its indexes). A statement that needs one
        the file lacks is answered as the table is, empty, when it can only read or change
        rows (SELECT, UPDATE, DELETE touching no table the file has); any other makes the
        table (and its indexes) in the file and runs again. Either way the caller sees what
        it would with the table there and empty."""
        self._deferred = dict(schema)

    def run(self, conn: sqlite3.Connection, sql: str, run: Any) -> Any:
        """run(conn), with the deferred tables it needs answered or made (see defer)."""
        for _ in range(len(self._deferred) + 1):
            try:
                return run(conn)
            except sqlite3.OperationalError as e:
                m = _MISSING_TABLE.match(str(e))
                if m is None or m.group(1) not in self._deferred:
                    raise
                table = m.group(1)
            if _READS_OR_CHANGES.match(sql):
                scratch = self._empty_tables(conn)
                try:
                    return run(scratch)
                except sqlite3.Error:
                    pass  # it needs a table the file has too: make the missing one
            self.make_table(table, conn)
        raise sqlite3.OperationalError(f"deferred tables still missing after making them: {sql}")

    def missing_deferred(self, conn: sqlite3.Connection | None = None) -> set[str]:
        """The deferred tables the file does not have now."""
        conn = conn or self._conn()
        have = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
        return set(self._deferred) - have

    def _empty_tables(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        """An in-memory database (this thread's) holding, empty, exactly the deferred
        tables the file lacks: a statement it can run sees what the file would give."""
        missing = frozenset(self.missing_deferred(conn))
        held = getattr(self._local, "empty", None)
        if held is not None and held[0] == missing:
            return held[1]
        if held is not None:
            held[1].close()
        mem = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        for table in sorted(missing):
            for stmt in self._deferred[table]:
                mem.execute(stmt)
        self._local.empty = (missing, mem)
        return mem

    def make_table(self, table: str, conn: sqlite3.Connection | None = None) -> None:
        """Make a deferred table and its indexes in the file (a no-op if another relay just
        did), inside the caller's transaction if one is open."""
        conn = conn or self._conn()
        stmts = [re.sub(r"^CREATE (TABLE|INDEX) ", r"CREATE \1 IF NOT EXISTS ", s)
                 for s in self._deferred[table]]
        own = not conn.in_transaction
        if own:
            conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in stmts:
                conn.execute(stmt)
        except BaseException:
            if own:
                conn.execute("ROLLBACK")
            raise
        if own:
            conn.execute("COMMIT")
        log.info("event=table_made table=%s", table)

    @contextmanager
    def transaction(self, *, lock: str | None = None) -> Iterator[_SqliteTx]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")  # take the write lock now: one writer at a time
        try:
            yield _SqliteTx(conn, self)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def vacuum(self, *, max_bytes: int | None = None, timeout_s: float = 2.0) -> bool:
        """Rebuild the file tight (free pages given back), if it has free pages and is no
        bigger than max_bytes. Needs every other connection to the file idle."""
        conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=timeout_s)
        try:
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            size = self.path.stat().st_size
            if not free or (max_bytes is not None and size > max_bytes):
                return False
            conn.execute("VACUUM")
            return True
        finally:
            conn.close()

    def close(self, *, compact: bool = True) -> None:
        if self._closed.is_set():
            return
        # the checkpointer stopped first: a connection closed under its checkpoint (another
        # thread's close during its execute) crashed the process
        self._closed.set()
        if self._checkpointer is not threading.current_thread():
            self._checkpointer.join()
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            try:
                c.close()
            except sqlite3.Error:
                pass
        if not compact:
            return
        try:  # a stopped relay with a small store leaves a file of what it holds
            self.vacuum(max_bytes=VACUUM_AT_CLOSE_MAX_BYTES)
        except (sqlite3.Error, OSError) as e:
            log.warning("event=vacuum_skipped path=%s error=%r", self.path, str(e)[:200])


def _private(path: Path) -> None:
    """The database readable by the relay's user only: created 0600 (SQLite gives its WAL
    and shared-memory files the same mode), and an older world-readable one tightened."""
    import os

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError as e:
        raise StoreUnavailable(f"cannot create SQLite store {path}: {e.strerror}; check the "
                               "relay's data_dir exists and is writable") from e
    os.close(fd)
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            if p.stat().st_mode & 0o077:
                p.chmod(0o600)
        except OSError:
            pass


# ---------------------------------------------------------------------- PostgreSQL


# connection -> one-time statements already run on it (gone with the connection)
_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@lru_cache(maxsize=512)
def _pg(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class _PgTx:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def query(self, sql: str, args: Sequence = ()) -> list[Row]:
        return self.conn.execute(_pg(sql), args).fetchall()

    def execute(self, sql: str, args: Sequence = ()) -> int:
        return self.conn.execute(_pg(sql), args).rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence]) -> int:
        """Run sql for each row (psycopg pipelines them); how many rows it changed."""
        if not rows:
            return 0
        with self.conn.cursor() as cur:
            cur.executemany(_pg(sql), rows)
            return cur.rowcount

    def once_per_connection(self, sql: str) -> None:
        """Run sql the first time this pooled connection is used for it (temp tables)."""
        done = _PREPARED.setdefault(self.conn, set())
        if sql not in done:
            self.conn.execute(_pg(sql))
            done.add(sql)

    def copy_in(self, copy_sql: str, rows: Sequence[Sequence], types: Sequence[str]) -> None:
        """COPY rows in (binary; psycopg's C row writer): the cheapest way to send a batch."""
        with self.conn.cursor() as cur, cur.copy(copy_sql) as cp:
            cp.set_types(types)
            for r in rows:
                cp.write_row(r)


class PostgresDb:
    """PostgreSQL through a psycopg connection pool. Several relays share one database."""

    dialect = "postgres"

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError as e:  # pragma: no cover - the relay extra installs it
            raise StoreUnavailable("store_url names PostgreSQL but psycopg is not installed: "
                                   "pip install 'psycopg[binary,pool]'") from e
        self._psycopg = psycopg
        self.url = url
        self.pool = ConnectionPool(url, min_size=1, max_size=max(2, pool_size),
                                   kwargs={"autocommit": True}, open=False,
                                   name="relay-store")
        try:
            self.pool.open(wait=True, timeout=15)
        except Exception as e:  # psycopg_pool.PoolTimeout and connection errors
            raise StoreUnavailable(f"cannot reach the PostgreSQL store ({_redact(url)}): {e}; "
                                   "check store_url and that the server is up") from e

    def query(self, sql: str, args: Sequence = ()) -> list[Row]:
        with self.pool.connection() as conn:
            return conn.execute(_pg(sql), args).fetchall()

    def execute(self, sql: str, args: Sequence = ()) -> int:
        with self.pool.connection() as conn:
            return conn.execute(_pg(sql), args).rowcount

    @contextmanager
    def transaction(self, *, lock: str | None = None) -> Iterator[_PgTx]:
        with self.pool.connection() as conn, conn.transaction():
            tx = _PgTx(conn)
            if lock is not None:  # a named lock for the whole transaction
                tx.query("SELECT pg_advisory_xact_lock(hashtext(?))", (lock,))
            yield tx

    def listen(self, channel: str, stop: threading.Event):
        """Yield notification payloads on `channel` until `stop` is set (own connection)."""
        psycopg = self._psycopg
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"LISTEN {channel}")
            while not stop.is_set():
                for n in conn.notifies(timeout=0.5):
                    yield n.payload
                    if stop.is_set():
                        return

    def close(self, *, compact: bool = True) -> None:
        """(`compact` is SQLite's: PostgreSQL compacts by itself.)"""
        self.pool.close()


def _redact(url: str) -> str:
    """A URL without its password, for error messages and logs."""
    from urllib.parse import urlsplit, urlunsplit

    u = urlsplit(url)
    if u.password:
        netloc = u.netloc.replace(f":{u.password}@", ":***@")
        return urlunsplit(u._replace(netloc=netloc))
    return url


def connect(store_url: str, data_dir: str, *, pool_size: int = 8) -> Db:
    """`store_url` empty or `sqlite:///path` -> SQLite; `postgresql://…` -> PostgreSQL."""
    if not store_url:
        return SqliteDb(Path(data_dir) / "relay.db")
    if store_url.startswith("sqlite:///"):
        return SqliteDb(Path(store_url.removeprefix("sqlite://")))
    if store_url.startswith(("postgresql://", "postgres://")):
        return PostgresDb(store_url, pool_size=pool_size)
    raise StoreUnavailable(f"store_url {_redact(store_url)!r}: use postgresql://… or "
                           "sqlite:///path, or leave it empty for SQLite in data_dir")
