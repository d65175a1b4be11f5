"""The stream writer: stores inbound frames in batches, one transaction per few
milliseconds, and only then acknowledges them to the broker and hands them to the hub.

Concurrency: one thread of its own. `put` and `put_status` are called from the MQTT
client threads; `on_commit` and the acks run in the writer thread, after the commit, so a
relay killed at any moment has acked only what is stored (the broker redelivers the rest).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from cloud_relay.store.store import Batch, Frame, Store
from scribelink import logfmt

log = logging.getLogger("cloud_relay.writer")

# (acker, packet id): the acker sends the PUBACKs of one connection, several at once
Ack = tuple[Callable[[list[int]], None], int]
_STOP = object()


class StreamWriter:
    def __init__(self, store: Store, *, on_commit: Callable[[Batch, dict[str, dict]], None],
                 batch_ms: float = 8.0, max_batch: int = 2000,
                 status_write_s: float = 0.0) -> None:
        self.store = store
        self.on_commit = on_commit
        self.batch_s = batch_ms / 1000
        self.max_batch = max_batch
        self.status_write_s = status_write_s
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._status_written: dict[str, float] = {}
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
        q, stopping = self._q, False
        while not stopping:
            try:
                first = q.get(timeout=1.0)
            except queue.Empty:
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

    def _commit(self, frames: list[Frame], acks: list[Ack],
                statuses: dict[str, dict]) -> None:
        batch = Batch(0, 0, [], [])
        if statuses and self.status_write_s > 0:
            now = time.monotonic()
            statuses_due = {u: st for u, st in statuses.items()
                            if now - self._status_written.get(u, 0.0) >= self.status_write_s}
            self._status_written.update(dict.fromkeys(statuses_due, now))
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
        if batch.rows or statuses:
            self.on_commit(batch, statuses)
