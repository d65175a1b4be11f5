"""Dependencies shared by the routers, as named types (`CurrentUser`, `AdminUser`, …).

Sync dependencies and endpoints run in FastAPI's worker threads, so their database calls
stay off the event loop; the async WebSocket code uses `asyncio.to_thread` for its own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException
from starlette.requests import HTTPConnection

from cloud_relay.accounts import Accounts
from cloud_relay.bridge import Uplink
from cloud_relay.config import RelayConfig
from cloud_relay.hub import Hub
from cloud_relay.store import Store, User
from cloud_relay.store.writer import StreamWriter


@dataclass
class Services:
    """What the routers share: one per app (`app.state.services`)."""

    cfg: RelayConfig
    store: Store
    hub: Hub
    writer: StreamWriter
    uplink: Uplink | None
    accounts: Accounts = None  # type: ignore[assignment]  # made with the app
    loop: asyncio.AbstractEventLoop | None = None
    fleet_files: Any = None  # cloud_relay.api.fleet.Files, made on first use
    transport: Any = None  # cloud_relay.revocation.Transport

    def assignments_changed(self) -> None:
        """From a worker thread: tell the live scribes to re-read their assignments."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.hub.assignments_changed)


def get_services(conn: HTTPConnection) -> Services:
    return conn.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_store(svc: ServicesDep) -> Store:
    return svc.store


StoreDep = Annotated[Store, Depends(get_store)]


def get_config(svc: ServicesDep) -> RelayConfig:
    return svc.cfg


ConfigDep = Annotated[RelayConfig, Depends(get_config)]


def get_uplink(svc: ServicesDep) -> Uplink | None:
    return svc.uplink


UplinkDep = Annotated["Uplink | None", Depends(get_uplink)]


def bearer_token(authorization: Annotated[str, Header()] = "") -> str:
    return authorization.removeprefix("Bearer ").strip()


BearerToken = Annotated[str, Depends(bearer_token)]


def current_user(svc: ServicesDep, token: BearerToken) -> User:
    user = svc.accounts.authenticate(token) if token else None
    if user is None:
        raise HTTPException(401, "sign in first (missing or expired token)")
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def admin_user(user: CurrentUser) -> User:
    if user.role != "admin":
        raise HTTPException(403, "clinic admins only")
    return user


AdminUser = Annotated[User, Depends(admin_user)]


def refuse(status: int, code: str, message: str, **detail) -> HTTPException:
    """An error a client can act on: a stable code and a sentence saying what to do."""
    return HTTPException(status, {"error": code, "message": message, **detail})


def installer_user(user: CurrentUser) -> User:
    if user.role not in ("tech", "admin"):
        raise refuse(403, "not_installer", "only field techs and clinic admins enroll units")
    return user


InstallerUser = Annotated[User, Depends(installer_user)]


def origin_allowed(origin: str, conn: HTTPConnection, cfg: RelayConfig) -> bool:
    """May a page from `origin` use this connection? Its own origin (the scheme and Host it
    came in on), the configured public_url, or one of allowed_origins. Browsers always
    send Origin on a WebSocket; a page on another site cannot make it lie."""
    want = origin.strip().lower().rstrip("/")
    scheme = "https" if conn.url.scheme in ("https", "wss") else "http"
    host = conn.headers.get("host", "").lower()
    allowed = {f"{scheme}://{host}", *(o.lower().rstrip("/") for o in cfg.allowed_origins)}
    if cfg.public_url:
        allowed.add(cfg.public_url.lower().rstrip("/"))
    return want in allowed
