"""The relay process: builds the store, the stream writer, the hub and the broker
connections, runs their background work, and serves the routers of `api/`.

Background work (lifespan): the stream writer thread, one MQTT thread per broker
connection, on PostgreSQL a LISTEN thread (rows other relays stored), and on the event
loop the hub, a heartbeat (so peers know this relay is alive), peer adoption and the
archive's retention purge (in a worker thread, a few sessions per transaction).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from cloud_relay.accounts import Accounts
from cloud_relay.adopt import PeerAdopter
from cloud_relay.api import fleet
from cloud_relay.api.deps import Services
from cloud_relay.api.main import api_router
from cloud_relay.bridge import Uplink
from cloud_relay.config import RelayConfig
from cloud_relay.hub import Hub
from cloud_relay.passwords import Hasher
from cloud_relay.revocation import PASS_INTERVAL_S as REVOCATION_PASS_S
from cloud_relay.revocation import Transport
from cloud_relay.store import Store, now_us
from cloud_relay.store.store import NOTIFY_CHANNEL
from cloud_relay.store.writer import StreamWriter
from scribelink import messages as msgs
from scribelink.logfmt import q

log = logging.getLogger("cloud_relay")

CONSOLE_DIR = Path(__file__).resolve().parent / "console"
HEARTBEAT_S = 1.0
FIRST_BROKER_ATTEMPT_S = 5.0  # the relay serves after this even if the broker is silent
HSTS = "max-age=31536000"

# The page holds the scribe's key: it runs only its own scripts and talks only to its relay.
CONSOLE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class ConsoleFiles(StaticFiles):
    async def get_response(self, path, scope):
        response = await super().get_response(path, scope)
        response.headers.update(CONSOLE_HEADERS)
        return response


def create_app(cfg: RelayConfig, *, start_bridge: bool = True) -> FastAPI:
    hasher = Hasher(weak_for_tests=cfg.test_only_weak_password_hash)
    if hasher.weak_for_tests:
        log.warning("event=weak_password_hash what=\"test_only_weak_password_hash is on: "
                    "for the test suite only\"")
    store = Store.open(cfg.store_url, cfg.data_dir, pool_size=cfg.store_pool_size,
                       origin=cfg.broker_client_id, passwords=hasher)
    hub = Hub(store, max_queue_frames=cfg.ws_queue_frames, max_queue_bytes=cfg.ws_queue_bytes,
              max_total_bytes=cfg.ws_queue_total_bytes, poll_s=cfg.stream_poll_s)
    writer = StreamWriter(store, on_commit=hub.committed_threadsafe,
                          batch_ms=cfg.store_batch_ms)
    uplink = None
    if start_bridge:
        uplink = Uplink(store, writer, urls=cfg.brokers, ca_file=cfg.broker_ca_file,
                        cert_file=cfg.broker_cert_file, key_file=cfg.broker_key_file,
                        client_id=cfg.broker_client_id, share_group=cfg.share_group)
    svc = Services(cfg=cfg, store=store, hub=hub, writer=writer, uplink=uplink,
                   transport=Transport(cfg, store),
                   accounts=Accounts(store, hasher=hasher, token_idle_s=cfg.token_idle_s,
                                     token_max_s=cfg.token_max_s,
                                     invite_ttl_s=cfg.invite_ttl_s))
    adopter = PeerAdopter(svc) if uplink is not None and cfg.relay_peers else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc.loop = asyncio.get_running_loop()
        # asyncio.to_thread's pool: the WebSocket side's store reads (catch-up, fills)
        svc.loop.set_default_executor(ThreadPoolExecutor(cfg.store_pool_size + 4,
                                                         thread_name_prefix="store-read"))
        await hub.start()
        writer.start()
        stop = threading.Event()
        if store.dialect == "postgres":
            threading.Thread(target=_listen, args=(store, hub, stop), name="store-listen",
                             daemon=True).start()
        if uplink is not None:
            uplink.start()
            # serve once the broker answered or failed (a refused connection fails at once;
            # a silent one no longer than this)
            await asyncio.to_thread(uplink.wait_first_attempt, FIRST_BROKER_ATTEMPT_S)
        tasks = [asyncio.create_task(_purge_loop(svc)),
                 asyncio.create_task(_heartbeat_loop(svc)),
                 asyncio.create_task(_revocation_loop(svc))]
        if adopter is not None:
            tasks.append(asyncio.create_task(adopter.run()))
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            stop.set()
            if adopter is not None:
                await asyncio.to_thread(adopter.stop)
            if uplink is not None and await asyncio.to_thread(_peers_alive, svc):
                # a planned stop with live peers: leave the share group first, so the broker
                # stops queueing this relay's share for it while it is down
                await asyncio.to_thread(uplink.leave_share_group)
            await asyncio.to_thread(writer.stop)  # commit and ack what was received
            if uplink is not None:
                await asyncio.to_thread(uplink.stop)
            await hub.stop()
            store.close()

    # No public /docs (its assets come from a CDN, and it would describe the API to
    # anyone): admins read GET /api/admin/openapi.json, which the admin view shows.
    app = FastAPI(title="Scribelink relay", lifespan=lifespan, openapi_url=None,
                  docs_url=None, redoc_url=None)
    app.state.services = svc
    app.include_router(api_router)
    if cfg.tls or cfg.behind_proxy:
        @app.middleware("http")
        async def _hsts(request, call_next):
            response = await call_next(request)
            # browsers that saw the relay over HTTPS never try plain HTTP for it again
            response.headers["Strict-Transport-Security"] = HSTS
            return response

    @app.get("/", include_in_schema=False)
    def _root():
        return RedirectResponse("/console/")
    # the unit routes (release downloads, update reports, diagnostics uploads) are served
    # only by the mTLS listener (cloud_relay.unit_https), from their own app
    app.state.unit_app = fleet.unit_app(svc)
    app.mount("/console", ConsoleFiles(directory=CONSOLE_DIR, html=True), name="console")

    @app.exception_handler(msgs.MessageError)
    async def _bad_message(request, exc):  # pragma: no cover - defensive
        return JSONResponse({"detail": str(exc)}, status_code=400)

    return app


async def _purge_loop(svc: Services) -> None:
    from cloud_relay.api.admin import retention_days

    cfg = svc.cfg
    while True:
        try:
            days = await asyncio.to_thread(retention_days, svc)
            cutoff = now_us() - int(days * 86400 * 1e6)
            n = await asyncio.to_thread(svc.store.purge_before, cutoff)
            await asyncio.to_thread(svc.store.accounts.forget_counters,
                                    now_us() - int(86400 * 1e6))
            if n:
                await asyncio.to_thread(svc.store.audit, "relay", "archive_purged", None,
                                        {"sessions": n})
                log.info("event=archive_purged sessions=%d", n)
        except Exception as e:  # noqa: BLE001 (store down: the writer says so; next time)
            log.warning("event=archive_purge_failed error=%s", q(str(e)[:200]))
        await asyncio.sleep(cfg.purge_interval_s)


async def _revocation_loop(svc: Services) -> None:
    """Authority revocations whose time came, and the broker's CRL kept as the store says
    (cloud_relay/revocation.py)."""
    while True:
        try:
            await asyncio.to_thread(svc.transport.periodic)
        except Exception as e:  # noqa: BLE001 (store or CA unreadable: said, tried again)
            log.warning("event=revocation_pass_failed error=%s", q(str(e)[:200]))
        await asyncio.sleep(REVOCATION_PASS_S)


async def _heartbeat_loop(svc: Services) -> None:
    while True:
        try:
            await asyncio.to_thread(svc.store.heartbeat, svc.cfg.broker_client_id)
        except Exception as e:  # noqa: BLE001
            log.warning("event=heartbeat_failed error=%s", q(str(e)[:200]))
        await asyncio.sleep(HEARTBEAT_S)


def _peers_alive(svc: Services) -> bool:
    """Does a peer relay share the traffic right now (heartbeat within its timeout)?"""
    cfg = svc.cfg
    fresh = now_us() - int(cfg.peer_timeout_s * 1e6)
    for peer in cfg.relay_peers:
        if peer != cfg.broker_client_id:
            try:
                seen = svc.store.relay_seen_us(peer)
            except Exception:  # noqa: BLE001
                return False
            if seen is not None and seen > fresh:
                return True
    return False


def _listen(store: Store, hub: Hub, stop: threading.Event) -> None:
    """PostgreSQL: wake the hub when any relay commits frames (NOTIFY at commit)."""
    db = store.db
    while not stop.is_set():
        try:
            for payload in db.listen(NOTIFY_CHANNEL, stop):  # type: ignore[attr-defined]
                head, _, origin = payload.partition(" ")
                if origin != store.origin:  # our own batches reach the hub directly
                    hub.remote_head_threadsafe(int(head))
        except Exception as e:  # noqa: BLE001 (the hub's poll covers the gap until we are back)
            log.warning("event=store_listen_failed error=%s", q(str(e)[:200]))
            stop.wait(1.0)
