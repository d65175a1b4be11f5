"""The relay's HTTPS listener for units: mutual TLS with the clinic CA, the unit identified
by its certificate, as the broker identifies it.

Units fetch releases and upload reports and diagnostics here, never on the scribes' and
admins' listener: this one serves only the unit routes (`app.state.unit_app`), requires a
client certificate issued by the clinic CA (`ssl.CERT_REQUIRED`: a connection without one
never completes its handshake), and every route takes the unit id from that certificate's
CN (`UnitId`), so a unit can act only as itself.

uvicorn does not yet put the client certificate into the ASGI scope (the ASGI TLS
extension; Kludex/uvicorn#3043, #3133), so `H11ClientCertProtocol` adds
scope["extensions"]["tls"]["client_cert_chain"] to uvicorn's HTTP/1.1 protocol: the routes
read only the standard extension and need no change when uvicorn fills it itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Annotated

import uvicorn
from cryptography import x509
from cryptography.x509.oid import NameOID
from fastapi import Depends, HTTPException, Request
from uvicorn.protocols.http.h11_impl import H11Protocol

from cloud_relay.pki import reserved_cn
from scribelink.topics import valid_unit_id


class H11ClientCertProtocol(H11Protocol):
    """uvicorn's h11 protocol plus the ASGI TLS extension's client_cert_chain (leaf only:
    Python before 3.13 cannot read the rest of a peer's chain)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return
        tls = {"server_cert": None, "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)],
               "client_cert_name": None, "client_cert_error": None,
               "tls_version": None, "cipher_suite": None}
        app = self.app

        async def with_client_cert(scope, receive, send):
            scope.setdefault("extensions", {})["tls"] = tls
            await app(scope, receive, send)

        self.app = with_client_cert


def unit_id_from_scope(scope) -> str:
    chain = ((scope.get("extensions") or {}).get("tls") or {}).get("client_cert_chain") or []
    if not chain:
        raise HTTPException(401, "unit endpoints need the unit's client certificate: use the "
                            "relay's unit HTTPS port (unit_https_port)")
    cert = x509.load_pem_x509_certificate(chain[0].encode())
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(cns[0].value) if len(cns) == 1 else ""
    if not valid_unit_id(cn) or reserved_cn(cn):
        raise HTTPException(403, f"certificate {cn!r} is not a unit's")
    return cn


def unit_id(request: Request) -> str:
    """The unit the client certificate names, unless the relay revoked that certificate
    (the listener's TLS checks the CA, not the relay's revocations)."""
    unit = unit_id_from_scope(request.scope)
    chain = request.scope["extensions"]["tls"]["client_cert_chain"]
    serial = format(x509.load_pem_x509_certificate(chain[0].encode()).serial_number, "x")
    if request.app.state.services.store.certs.revoked(serial):
        raise HTTPException(403, "this unit certificate is revoked: enrol the unit again")
    return unit


UnitId = Annotated[str, Depends(unit_id)]


def config(app, *, host: str, port: int, cert_file: str, key_file: str, ca_file: str
           ) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, ssl_certfile=cert_file,
                          ssl_keyfile=key_file, ssl_ca_certs=ca_file,
                          ssl_cert_reqs=ssl.CERT_REQUIRED, http=H11ClientCertProtocol,
                          lifespan="off", log_level="warning", access_log=False)


class _Server(uvicorn.Server):
    """Started beside the main server in one event loop: the main server owns the signal
    handlers and this one stops when it does."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


async def serve_beside(main: uvicorn.Server, unit_config: uvicorn.Config) -> None:
    unit_server = _Server(unit_config)
    task = asyncio.create_task(unit_server.serve())
    try:
        await main.serve()
    finally:
        unit_server.should_exit = True
        await task
