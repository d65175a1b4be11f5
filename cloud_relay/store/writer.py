"""The stream writer: stores inbound frames in batches, one transaction per few
milliseconds, and only then acknowledges them to the broker and hands them to the hub.
Between batches it packs sealed frames into the archive's segments (`Packer`).

Concurrency: one thread of its own. `put` and `put_status` are called from the MQTT
client threads; `on_commit` and the acks run in the writer thread, after the commit, so a
relay killed at any moment has acked only what is stored (the broker redelivers the rest).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

from cloud_relay.store.store import Batch, Frame, Store
from scribelink import logfmt

log = logging.getLogger("cloud_relay.writer")

# (acker, packet id): the acker sends the PUBACKs of one connection, several at once
Ack = tuple[Callable[[list[int]], None], int]
_STOP = object()

# Sealed frames stay rows this long: longer than a unit's ack grace (30 s, docs/spool.md)
# plus the relay's replay margin (10 s, bridge.py), so what a unit offers again after a
# broker restart still meets its original at the unique key and stops there.
PACK_AFTER_S = 40.0
PACK_EVERY_S = 8.0  # one round per this long: ~200 chunks of a room per segment
PACK_GROUPS_PER_STEP = 8  # (unit, session, kind) per transaction: a few ms between batches
PACK_AT_STOP_S = 3.0


class Packer:
    """When to pack what (store.pack does the moving): a closed session's frames at once,
    and every PACK_EVERY_S what has been stored for PACK_AFTER_S, in small steps so the
    writer's batches never wait long. Runs in the writer thread; `clock` is monotonic."""

    def __init__(self, store: Store, *, after_s: float = PACK_AFTER_S,
                 every_s: float = PACK_EVERY_S, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.store = store
        self.after_s, self.every_s = after_s, every_s
        self.clock = clock
        self._heads: deque[tuple[float, int]] = deque()  # (when, head) after commits
        self._closed: set[str] = set()
        self._todo: deque[tuple[tuple[str, str, str], int | None]] = deque()
        self._next_round = clock() + every_s
        self._round_upto: int | None = None
        self.packed = 0
        self.failures = 0

    @property
    def busy(self) -> bool:
        return bool(self._todo or self._closed)

    def committed(self, batch: Batch) -> None:
        now = self.clock()
        if batch.head and (not self._heads or now - self._heads[-1][0] >= 0.5):
            self._heads.append((now, batch.head))
        for r in batch.rows:
            if r.kind == "session_close":
                self._closed.add(r.session)

    def _due_upto(self, now: float) -> int | None:
        """The head as it was PACK_AFTER_S ago (None: nothing that old)."""
        upto = None
        while self._heads and now - self._heads[0][0] >= self.after_s:
            upto = self._heads.popleft()[1]
        if upto is not None:  # keep it: the next round starts from there at least
            self._heads.appendleft((now - self.after_s, upto))
        return upto

    def step(self, *, stopping: bool = False) -> None:
        """Do one bounded piece of packing work, if any is due."""
        now = self.clock()
        try:
            if self._closed:
                sessions, self._closed = sorted(self._closed), set()
                self._todo.extendleft((g, None) for g in
                                      self.store.pack_candidates(sessions=sessions))
            elif not self._todo and now >= self._next_round and not stopping:
                self._next_round = now + self.every_s
                upto = self._due_upto(now)
                if upto is not None:
                    self._todo.extend((g, upto) for g in
                                      self.store.pack_candidates(upto=upto))
                    self._round_upto = upto
            if not self._todo:
                return
            by_upto: dict[int | None, list] = {}
            for _ in range(min(PACK_GROUPS_PER_STEP, len(self._todo))):
                g, upto = self._todo.popleft()
                by_upto.setdefault(upto, []).append(g)
            for upto, groups in by_upto.items():
                self.packed += self.store.pack(groups, upto=upto)
        except Exception as e:  # noqa: BLE001 (store down or refusing: the rows stay rows)
            self.failures += 1
            self._todo.clear()
            log.error("event=pack_failed error=%r", str(e)[:200])

    def finish(self) -> None:
        """At stop: pack what closed sessions left (bounded in time; the rest waits for
        the next start)."""
        deadline = self.clock() + PACK_AT_STOP_S
        self._todo = deque((g, u) for g, u in self._todo if u is None)
        while self.busy and self.clock() < deadline:
            self.step(stopping=True)


# A unit's unchanged status is stored at most this often (it is "stale" after 10 s: api/archive)
STATUS_WRITE_S = 3.0


class StreamWriter:
    def __init__(self, store: Store, *, on_commit: Callable[[Batch, dict[str, dict]], None],
                 batch_ms: float = 8.0, max_batch: int = 2000,
                 status_write_s: float = STATUS_WRITE_S, packer: Packer | None = None) -> None:
        self.store = store
        self.packer = packer if packer is not None else Packer(store)
        self.on_commit = on_commit
        self.batch_s = batch_ms / 1000
        self.max_batch = max_batch
        self.status_write_s = status_write_s
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._status_written: dict[str, tuple[float, dict]] = {}  # unit -> (when, what)
        self._thread = threading.Thread(target=self._run, name="stream-writer", daemon=True)
        self.batches = 0
        self.frames = 0
        self.failing = False  # the store refused the last attempt (health shows it)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Store what is queued, then end the thread."""
        if self._thread.is_alive():
            self._q.put(_STOP)
            self._thread.join(timeout)

    def put(self, frame: Frame, ack: Ack | None) -> None:
        self._q.put((frame, ack))

    def put_status(self, unit_id: str, status: dict) -> None:
        self._q.put((unit_id, status))

    def put_ack(self, ack: Ack) -> None:
        """A message with nothing to store: ack it with the next batch (one write)."""
        self._q.put((None, ack))

    # ------------------------------------------------------------------ thread

    def _run(self) -> None:
        q, stopping, packer = self._q, False, self.packer
        while not stopping:
            try:  # packing work waits only for an empty queue
                first = q.get_nowait() if packer.busy else q.get(timeout=1.0)
            except queue.Empty:
                packer.step()
                continue
            items = [first]
            if first is not _STOP and self.batch_s > 0:
                time.sleep(self.batch_s)  # let the batch fill: one transaction per window
            while len(items) < self.max_batch:
                try:
                    items.append(q.get_nowait())
                except queue.Empty:
                    break
            frames: list[Frame] = []
            acks: list[Ack] = []
            statuses: dict[str, dict] = {}
            for it in items:
                if it is _STOP:
                    stopping = True
                elif isinstance(it[0], Frame):
                    frames.append(it[0])
                    if it[1] is not None:
                        acks.append(it[1])
                elif it[0] is None:
                    acks.append(it[1])
                else:
                    statuses[it[0]] = it[1]
            self._commit(frames, acks, statuses)
            if not stopping:
                packer.step()
        packer.finish()

    def _statuses_due(self, statuses: dict[str, dict]) -> dict[str, dict]:
        """The statuses to store: a unit's status when it says something new, else at most
        every status_write_s (units repeat theirs every second; the scribes get each one
        live from on_commit, the store keeps the latest for the admin view and restarts)."""
        now, due = time.monotonic(), {}
        for u, st in statuses.items():
            what = {k: v for k, v in st.items() if k != "at_us"}
            when, last = self._status_written.get(u, (-1e9, None))
            if what != last or now - when >= self.status_write_s:
                due[u] = st
                self._status_written[u] = (now, what)
        return due

    def _commit(self, frames: list[Frame], acks: list[Ack],
                statuses: dict[str, dict]) -> None:
        batch = Batch(0, 0, [], [])
        if statuses and self.status_write_s > 0:
            statuses_due = self._statuses_due(statuses)
        else:
            statuses_due = statuses
        delay = 0.1
        while frames or statuses_due:
            try:  # statuses ride in the same transaction: one commit per batch
                batch = self.store.append_batch(frames, statuses_due)
                break
            except Exception as e:  # noqa: BLE001 (database down or refusing: keep them)
                self.failing = True
                log.error("event=store_write_failed frames=%d error=%s retry_s=%.1f",
                          len(frames), logfmt.q(str(e)[:200]), delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.failing = False
        by_conn: dict = {}
        for acker, pid in acks:  # only now may the broker forget them
            by_conn.setdefault(acker, []).append(pid)
        for acker, pids in by_conn.items():
            acker(pids)
        self.batches += 1
        self.frames += len(frames)
        self.packer.committed(batch)
        if batch.rows or statuses:
            self.on_commit(batch, statuses)
