"""The scribe WebSocket (docs/protocol.md, "Scribe WebSocket"): after a hello with a token
and a resume cursor, the relay sends the scribe's assigned units' stream in stream order:
JSON items as text frames with their `cursor`, sealed envelopes as binary frames prefixed
by their 8-byte cursor. It never sees what the envelopes hold.

Rows older than the scribe's cursor come from the store (catch-up), newer ones from the
hub's in-memory push (live); `hub.py` says how the hand-over keeps every row exactly once.

Concurrency: runs on the event loop; every database call goes through asyncio.to_thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
from asyncio import to_thread

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from cloud_relay.api.deps import Services, ServicesDep, origin_allowed
from cloud_relay.hub import Subscriber, wire
from cloud_relay.store import Frame, User, now_us
from scribelink import messages as msgs
from scribelink import scribews
from scribelink.logfmt import q

log = logging.getLogger("cloud_relay.scribe")

router = APIRouter(tags=["scribe"])

WS_BATCH = 500  # rows per catch-up read
ASSIGNMENT_RECHECK_S = 5.0


@router.websocket("/ws")
async def ws(sock: WebSocket, svc: ServicesDep) -> None:
    store, hub = svc.store, svc.hub
    origin = sock.headers.get("origin")
    if origin is not None and not origin_allowed(origin, sock, svc.cfg):
        # a page on another site trying to use a scribe's browser: refuse the handshake
        await to_thread(store.audit, "ws", "ws_origin_refused", None, {"origin": origin[:100]})
        await sock.close(code=scribews.CLOSE_FORBIDDEN)
        return
    await sock.accept()
    try:
        hello = json.loads(await asyncio.wait_for(sock.receive_text(), 10))
        cursor = int(hello.get("cursor", 0) or 0) if isinstance(hello, dict) else 0
        only = hello.get("units") if isinstance(hello, dict) else None
        batch = isinstance(hello, dict) and hello.get("batch") is True
        if only is not None and not (isinstance(only, list) and
                                     all(isinstance(u, str) for u in only)):
            raise ValueError("units must be a list of unit ids")
    except (TimeoutError, ValueError, TypeError, AttributeError, WebSocketDisconnect):
        await sock.close(code=scribews.CLOSE_BAD_HELLO)
        return
    token = str(hello.get("token", "")) if isinstance(hello, dict) else ""
    user = await to_thread(svc.accounts.authenticate, token) if token else None
    if user is None:
        await sock.send_text(json.dumps(scribews.Error("unauthorized").to_dict()))
        await sock.close(code=scribews.CLOSE_UNAUTHORIZED)
        return
    units = await to_thread(store.units_for, user.id)
    if only is not None:
        denied = [u for u in only if u not in units]
        if denied:
            await to_thread(store.audit, user.id, "ws_denied", ",".join(denied))
            await sock.send_text(json.dumps(scribews.Error("forbidden", tuple(denied)).to_dict()))
            await sock.close(code=scribews.CLOSE_FORBIDDEN)
            return
        units = list(only)
    head = await to_thread(store.head)
    welcome = scribews.Welcome(user=user.id, units=tuple(units), cursor=cursor, head=head)
    await sock.send_text(json.dumps(welcome.to_dict()))
    await to_thread(store.audit, user.id, "ws_connected", None, {"cursor": cursor})
    sub = hub.subscribe(user.id, units, cursor)
    tasks = [asyncio.create_task(_pump(sock, sub, svc, batch), name="ws-pump"),
             asyncio.create_task(_read(sock, user, svc), name="ws-read"),
             asyncio.create_task(_follow_assignments(sock, sub, user, token, only, svc),
                                 name="ws-assign")]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if not t.cancelled() and t.exception() is not None and not isinstance(
                    t.exception(), (WebSocketDisconnect, RuntimeError, OSError)):
                log.error("event=ws_failed user=%s error=%s", user.id, q(t.exception()))
    finally:
        hub.unsubscribe(sub)
        for t in tasks:
            t.cancel()


async def _pump(sock: WebSocket, sub: Subscriber, svc: Services, batch: bool) -> None:
    """Send the stream: catch up from the store while behind, then what the hub pushes.
    For a client that reads batches, the binary frames between two text frames go out as
    one message (scribelink.scribews.batch_message), in order."""
    send = sock.send
    run: list[bytes] = []  # binary frames not sent yet (batching clients)
    run_bytes = 0

    async def flush() -> None:
        nonlocal run, run_bytes
        if run:
            frames, run, run_bytes = run, [], 0
            await send({"type": "websocket.send", "bytes": scribews.batch_message(frames)})

    async def out(frame: bytes | str) -> None:
        nonlocal run_bytes
        if isinstance(frame, bytes):
            if not batch:
                await send({"type": "websocket.send", "bytes": frame})
                return
            run.append(frame)
            run_bytes += len(frame)
            if run_bytes >= scribews.BATCH_MAX_BYTES:
                await flush()
            return
        await flush()  # a text frame keeps its place in the stream
        await send({"type": "websocket.send", "text": frame})

    while not sub.closed:
        if sub.needs_catchup:
            sub.begin_catchup()  # from here on, new rows also queue: the overlap is skipped
            while True:
                units = sub.units
                rows = await to_thread(svc.store.rows_after, sub.cursor, list(units), WS_BATCH)
                for row in rows:
                    if row.id <= sub.cursor:
                        continue
                    if row.unit_id in sub.units:
                        await out(wire(row))
                    sub.cursor = row.id
                await flush()
                if len(rows) < WS_BATCH:
                    break
            continue
        items = sub.take()
        if not items:
            await sub.wake.wait()
            continue
        for rid, _unit, frame in items:
            if rid >= 0:
                if rid <= sub.cursor:
                    continue  # already sent from the store during catch-up
                sub.cursor = rid
            await out(frame)
        await flush()


async def _follow_assignments(sock: WebSocket, sub: Subscriber, user: User, token: str,
                              only: list[str] | None, svc: Services) -> None:
    """Keep the subscriber's units equal to the scribe's assignments (∩ its filter), and
    end the stream when the sign-in ends (signed out, password reset, disabled)."""
    while not sub.closed:
        await svc.hub.assignments_wait(ASSIGNMENT_RECHECK_S)
        if await to_thread(svc.accounts.authenticate, token) is None:
            await to_thread(svc.store.audit, user.id, "ws_sign_in_ended")
            await sock.send_text(json.dumps(scribews.Error("unauthorized").to_dict()))
            await sock.close(code=scribews.CLOSE_UNAUTHORIZED)
            return
        units = await to_thread(svc.store.units_for, user.id)
        if only is not None:
            units = [u for u in only if u in units]
        svc.hub.set_units(sub, units)


async def _read(sock: WebSocket, user: User, svc: Services) -> None:
    while True:
        try:
            text = await sock.receive_text()
        except (WebSocketDisconnect, RuntimeError, KeyError):
            return
        try:
            m = json.loads(text)
        except ValueError:
            continue
        if not isinstance(m, dict):
            continue
        if m.get("type") == "cue_ack":
            await to_thread(_cue_ack, m, user, svc)


def _cue_ack(m: dict, user: User, svc: Services) -> None:
    """A scribe's reply to a cue, sealed end to end (scribelink.trust.seal_reply): the relay
    checks the room is the scribe's, hands it to the unit, and keeps it in the room's
    stream, so the scribe's other devices and any other scribe on the room see it too
    (they can open it; the relay cannot, and cannot make one)."""
    store = svc.store
    try:
        ack = msgs.CueAck.from_dict({k: v for k, v in m.items() if k != "cursor"})
    except msgs.MessageError as e:
        store.audit(user.id, "cue_ack_refused", None, {"why": str(e)[:100]})
        return
    if ack.unit not in store.units_for(user.id):
        store.audit(user.id, "cue_ack_denied", ack.unit)
        return
    if svc.uplink is not None:
        svc.uplink.publish_control(ack.unit, ack.to_dict())
    svc.writer.put(Frame(ack.unit, ack.session, "cue_ack", now_us(), msgs.dumps(ack)), None)
    store.audit(user.id, "cue_ack", ack.unit, {"session": ack.session[:8]})
