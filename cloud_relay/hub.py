"""Live delivery: pushes each committed stream row from memory to the scribes that follow
its unit, and hands a scribe over from catch-up (read from the store by cursor) to live
without a gap or a duplicate.

The hub keeps a *horizon*: every stream id at or below it is committed and has been
dispatched (or skipped because nobody followed its unit). Rows arrive in commit order from
this relay's writer (`committed`), and from other relays sharing the store through a
notification or a poll of the store's head (`remote_head`), which the hub fills in from the
store. A subscriber registered when the horizon was H gets every later row through its
queue; rows up to H it reads from the store (`Subscriber.needs_catchup`). The sender skips
any row at or below what it already sent, so the overlap is never sent twice.

Each subscriber's queue is bounded, and so are all of them together (`Budget`). A scribe
that cannot keep up (its WebSocket applies backpressure: uvicorn pauses the sender at the
transport's high-water mark) goes *lagging*: its queue is dropped (every row in it is in the
store) and it catches up from the store again. Memory stays bounded and nothing is lost.

Concurrency: everything here runs on the event loop, except `committed_threadsafe` and
`remote_head_threadsafe`, which other threads call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from dataclasses import dataclass, field

from cloud_relay.store import Batch, Store, StreamRow
from scribelink import logfmt, scribews

log = logging.getLogger("cloud_relay.hub")

FILL_PAGE = 5000


def wire(row: StreamRow) -> bytes | str:
    """A stream row as the scribe WebSocket frame (docs/protocol.md, "Scribe WebSocket")."""
    if row.kind in ("audio", "event"):
        return scribews.binary_frame(row.id, row.payload)
    item = json.loads(row.payload)
    item["cursor"] = row.id
    return json.dumps(item)


@dataclass
class Budget:
    """Bytes queued for all subscribers together: a bound on the hub's memory whatever
    the number of scribes."""

    max_bytes: int
    bytes: int = 0


@dataclass(eq=False)
class Subscriber:
    """One scribe WebSocket's place in the stream: `cursor` is the last id sent."""

    user: str
    units: frozenset[str]
    cursor: int
    max_frames: int
    max_bytes: int
    budget: Budget
    # (id, unit, frame); id -1 for frames without a cursor (unit_status)
    queue: deque = field(default_factory=deque)
    queued_bytes: int = 0
    needs_catchup: bool = True  # read the store from `cursor` before taking the queue
    lag_events: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    @property
    def state(self) -> str:
        return "catching_up" if self.needs_catchup else "live"

    def push(self, rid: int, unit_id: str, frame: bytes | str) -> None:
        if self.needs_catchup and rid >= 0:
            return  # it will read this row from the store
        size = len(frame)
        if rid >= 0 and (len(self.queue) >= self.max_frames or
                         self.queued_bytes + size > self.max_bytes or
                         self.budget.bytes + size > self.budget.max_bytes):
            self._lag()
            return
        self.queue.append((rid, unit_id, frame))
        self.queued_bytes += size
        self.budget.bytes += size
        self.wake.set()

    def _lag(self) -> None:
        """Slow consumer: drop the queue (all of it is in the store), catch up from there."""
        self.lag_events += 1
        log.warning("event=slow_consumer user=%s queued=%d bytes=%d cursor=%d", self.user,
                    len(self.queue), self.queued_bytes, self.cursor)
        self._keep(lambda f: f[0] < 0)  # status frames stay
        self.needs_catchup = True
        self.wake.set()

    def _keep(self, pred) -> None:
        self.queue = deque(f for f in self.queue if pred(f))
        self.budget.bytes -= self.queued_bytes
        self.queued_bytes = sum(len(f[2]) for f in self.queue)
        self.budget.bytes += self.queued_bytes

    def take(self) -> list[tuple[int, str, bytes | str]]:
        items = list(self.queue)
        self.queue.clear()
        self.budget.bytes -= self.queued_bytes
        self.queued_bytes = 0
        self.wake.clear()
        return items

    def begin_catchup(self) -> None:
        """Called on the loop before reading the store: rows dispatched from now on queue."""
        self.needs_catchup = False
        self._keep(lambda f: f[0] < 0)


class Hub:
    def __init__(self, store: Store, *, max_queue_frames: int = 2000,
                 max_queue_bytes: int = 4 << 20, max_total_bytes: int = 256 << 20,
                 poll_s: float = 0.5, fill_wait_s: float = 0.005) -> None:
        self.store = store
        self.fill_wait_s = fill_wait_s
        self.max_queue_frames = max_queue_frames
        self.max_queue_bytes = max_queue_bytes
        self.budget = Budget(max_total_bytes)
        self.poll_s = poll_s
        self.horizon = 0
        self.subs: set[Subscriber] = set()
        self.by_unit: dict[str, set[Subscriber]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._events: asyncio.Queue = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self.dispatched = 0
        self.filled = 0  # rows read back from the store (stored by other relays)
        self.fills = 0  # queries that read them
        self._assignments = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.horizon = await asyncio.to_thread(self.store.head)
        self._tasks = [asyncio.create_task(self._feed(), name="hub-feed"),
                       asyncio.create_task(self._poll(), name="hub-poll")]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def stats(self) -> dict:
        return {"horizon": self.horizon, "subscribers": len(self.subs),
                "queued_bytes": self.budget.bytes,
                "catching_up": sum(1 for s in self.subs if s.needs_catchup),
                "slow_consumer_events": sum(s.lag_events for s in self.subs),
                "dispatched": self.dispatched, "filled_from_store": self.filled,
                "fills": self.fills,
                "followers": [{"user": s.user, "units": sorted(s.units), "state": s.state,
                               "cursor": s.cursor, "queued": len(s.queue),
                               "slow_consumer_events": s.lag_events} for s in self.subs]}

    # ------------------------------------------------------------------ subscribers

    def subscribe(self, user: str, units: list[str], cursor: int) -> Subscriber:
        sub = Subscriber(user, frozenset(units), cursor, self.max_queue_frames,
                         self.max_queue_bytes, self.budget)
        self.subs.add(sub)
        for u in sub.units:
            self.by_unit.setdefault(u, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.closed = True
        sub._keep(lambda f: False)
        self.subs.discard(sub)
        for u in sub.units:
            s = self.by_unit.get(u)
            if s is not None:
                s.discard(sub)
                if not s:
                    del self.by_unit[u]
        sub.wake.set()

    def set_units(self, sub: Subscriber, units: list[str]) -> None:
        """Assignments changed: follow these units from now on. A unit newly added is
        read from the store from the subscriber's cursor."""
        new = frozenset(units)
        if new == sub.units:
            return
        added = new - sub.units
        for u in sub.units - new:
            s = self.by_unit.get(u)
            if s is not None:
                s.discard(sub)
                if not s:
                    del self.by_unit[u]
        for u in added:
            self.by_unit.setdefault(u, set()).add(sub)
        sub.units = new
        sub._keep(lambda f: f[1] in new)  # a revoked unit's frames stop here
        if added:
            sub.needs_catchup = True
        sub.wake.set()

    def assignments_changed(self) -> None:
        """Assignments changed somewhere: wake every follower to re-read its units."""
        ev, self._assignments = self._assignments, asyncio.Event()
        ev.set()

    async def assignments_wait(self, timeout_s: float) -> None:
        """Return when assignments change here, or after timeout_s (another relay may have
        changed them: followers re-read on that beat too)."""
        try:
            await asyncio.wait_for(self._assignments.wait(), timeout_s)
        except TimeoutError:
            pass

    # ------------------------------------------------------------------ inbound

    def committed_threadsafe(self, batch: Batch, statuses: dict[str, dict]) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._committed, batch, statuses)

    def remote_head_threadsafe(self, head: int) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._events.put_nowait, ("remote", head))

    def _committed(self, batch: Batch, statuses: dict[str, dict]) -> None:
        if batch.rows:
            self._events.put_nowait(("local", batch))
        for unit_id, st in statuses.items():
            subs = self.by_unit.get(unit_id)
            if subs:
                frame = json.dumps(scribews.UnitStatus(unit_id, st).to_dict())
                for sub in subs:
                    sub.push(-1, unit_id, frame)

    async def _feed(self) -> None:
        """Dispatch committed rows in id order. Everything queued is taken at once, and
        rows other relays stored are read with one query up to the highest head known,
        so a busy store costs a few fills a second, not one per batch."""
        events = self._events
        while True:
            pending = [await events.get()]
            if self.fill_wait_s and any(
                    (k == "remote" and v > self.horizon) or
                    (k == "local" and v.prev_head > self.horizon) for k, v in pending):
                await asyncio.sleep(self.fill_wait_s)  # let more heads arrive: one fill
            while not events.empty():
                pending.append(events.get_nowait())
            try:
                need = max((v.prev_head if k == "local" else v) for k, v in pending)
                if need > self.horizon:  # other relays committed below what we hold
                    await self._fill(need)
                for k, v in pending:
                    if k == "local":
                        self._dispatch([r for r in v.rows if r.id > self.horizon])
                        self.horizon = max(self.horizon, v.head)
            except Exception as e:  # noqa: BLE001 (the store is unreachable: the poll retries)
                log.error("event=hub_fill_failed error=%s", logfmt.q(str(e)[:200]))

    async def _fill(self, upto: int) -> None:
        """Dispatch rows (horizon, upto] that another relay stored."""
        cursor = self.horizon
        while self.by_unit:
            units = list(self.by_unit)
            rows = await asyncio.to_thread(self.store.rows_after, cursor, units, FILL_PAGE,
                                           upto)
            self.fills += 1
            self.filled += len(rows)
            self._dispatch([r for r in rows if r.id > self.horizon])
            if len(rows) < FILL_PAGE:
                break
            cursor = rows[-1].id
            self.horizon = max(self.horizon, cursor)
        self.horizon = max(self.horizon, upto)

    def _dispatch(self, rows: list[StreamRow]) -> None:
        by_unit = self.by_unit
        for row in rows:
            subs = by_unit.get(row.unit_id)
            if subs:
                frame = wire(row)
                for sub in subs:
                    sub.push(row.id, row.unit_id, frame)
        self.dispatched += len(rows)

    async def _poll(self) -> None:
        """Safety net (and the only path on a store without notifications): look at the
        store's head now and then while anyone is following."""
        while True:
            await asyncio.sleep(self.poll_s)
            if not self.subs:
                continue
            try:
                head = await asyncio.to_thread(self.store.head)
            except Exception as e:  # noqa: BLE001
                log.warning("event=hub_poll_failed error=%s", logfmt.q(str(e)[:200]))
                continue
            if head > self.horizon:
                self._events.put_nowait(("remote", head))
