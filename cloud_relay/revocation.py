"""Transport revocation: the CRL the broker reads, telling the broker to re-read it, and
ending a revoked certificate's live connection (docs/trust.md, "Revocation").

A CRL guards new TLS handshakes only: mosquitto re-reads it on SIGHUP (cloud_relay/broker.py)
and keeps the connections it has. So a revocation goes:
 1. recorded in the store (`transport_certs`), then the CRL is written from every revoked,
    unexpired serial and the broker told to re-read it (SIGHUP to `broker_pid_file`, or
    `broker_reload_command`);
 2. the relay waits until every broker refuses a canary: a certificate minted for the
    purpose and revoked in that same CRL, so a refused canary proves this CRL is in force
    (a reload is asynchronous, and one that failed must not pass for one that worked);
 3. the revoked unit's live connection is taken over: the broker takes the client id from
    the certificate's CN (`use_username_as_clientid`), so a connection with a certificate
    for the unit's CN, minted from the transport CA the relay holds (valid KICK_CERT_S,
    recorded revoked at once), replaces the unit's, with a clean start (the broker sends
    the unit's will: offline), and disconnects. The unit's reconnection meets the CRL.

What triggers one: the clinic authority's revocation list (a unit's signing key revoked:
its transport certificates go too, `apply_authority`), an admin revoking a unit's
transport certificates, a re-enrolment of the unit id (the old certificates,
`enrolled`), and a renewal the unit confirmed (the certificate it replaced: no takeover,
the unit already moved to the new one).

Concurrency: `Transport` methods run in worker threads (API handlers, the periodic pass);
one lock serialises CRL writes, reloads and takeovers.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from cloud_relay import broker, mqtt5, pki
from cloud_relay.bridge import host_port
from cloud_relay.store import Store, now_us
from cloud_relay.store.certs import ACTIVE, REVOKED
from scribelink.logfmt import q

if TYPE_CHECKING:
    from cloud_relay.api.deps import Services
    from cloud_relay.config import RelayConfig
    from scribelink import trust

log = logging.getLogger("cloud_relay.revocation")

KICK_CERT_S = 600  # the takeover certificate's life; it is recorded revoked at once anyway
CANARY_CN = "crl-canary"
IN_FORCE_TIMEOUT_S = 20.0  # a reload takes effect within mosquitto's next loop (~1 s)
PASS_INTERVAL_S = 30.0  # the periodic pass: future-dated revocations, a fresh CRL
CRL_REFRESH_S = 30 * 86400  # rewrite a CRL whose nextUpdate is closer than this

REASONS = {
    "key_compromise": x509.ReasonFlags.key_compromise,
    "superseded": x509.ReasonFlags.superseded,
    "relay_use": x509.ReasonFlags.cessation_of_operation,
    "admin": x509.ReasonFlags.unspecified,
}


class NotConfigured(RuntimeError):
    pass


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _us(t: dt.datetime) -> int:
    return int(t.timestamp() * 1_000_000)


def _connect_once(host: str, port: int, ctx: ssl.SSLContext, client_id: str,
                  timeout_s: float = 5.0) -> tuple[str, str]:
    """One MQTT 5 CONNECT (clean start, no session kept) and, if accepted, a DISCONNECT.
    -> ("accepted", ""), ("refused", CONNACK reason), ("tls", why the TLS connection
    failed: the broker refused the certificate) or ("unreachable", why)."""
    body = (mqtt5.utf8("MQTT") + b"\x05" + b"\x02" + struct.pack(">H", 10) + mqtt5.varint(0)
            + mqtt5.utf8(client_id))
    try:
        raw = socket.create_connection((host, port), timeout_s)
    except OSError as e:
        return "unreachable", str(e)
    try:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            # TLS 1.3: the broker judges the client certificate after the client's side of
            # the handshake is done, so a refusal comes on the first read: an alert, or
            # (when the CONNECT crossed the broker's close) just the end of the stream
            tls.sendall(mqtt5.packet(mqtt5.CONNECT, 0, body))
            head = tls.recv(4)
            if len(head) < 4 or head[0] >> 4 != mqtt5.CONNACK:
                return "tls", "closed before a CONNACK"
            if head[3] >= 0x80:
                return "refused", f"0x{head[3]:02x}"
            tls.sendall(mqtt5.packet(mqtt5.DISCONNECT, 0, b""))
            return "accepted", ""
    except ssl.SSLError as e:
        return "tls", str(e.reason or e)
    except OSError as e:  # reset by the broker's close
        return "tls", str(e) or type(e).__name__
    finally:
        raw.close()


class Transport:
    """The transport CA's revocations for one relay process (`transport(svc)`)."""

    def __init__(self, cfg: RelayConfig, store: Store) -> None:
        self.cfg, self.store = cfg, store
        self.in_force_timeout_s = IN_FORCE_TIMEOUT_S
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ pieces

    def ca(self) -> pki.CA:
        if not self.cfg.ca_cert_file or not self.cfg.ca_key_file:
            raise NotConfigured("this relay has no transport CA (ca_cert_file, ca_key_file)")
        return pki.CA.load(Path(self.cfg.ca_cert_file), Path(self.cfg.ca_key_file))

    def _mint(self, ca: pki.CA, cn: str, via: str) -> ssl.SSLContext:
        """A certificate for `cn` for the relay's own use, recorded revoked at once (the
        next CRL names it; its short life ends it anyway)."""
        key = pki.new_key()
        cert = pki.issue(ca, key.public_key(), cn, days=KICK_CERT_S / 86400)
        self.store.certs.add(pki.serial_hex(cert), cn, fingerprint(cert),
                             not_after_us=_us(cert.not_valid_after_utc), via=via,
                             state=REVOKED)
        return pki.ssl_client_context(self.cfg.broker_ca_file, cert, key)

    def _reload(self) -> str:
        cfg = self.cfg
        if cfg.broker_reload_command:
            subprocess.run(list(cfg.broker_reload_command), check=True, timeout=30,
                           capture_output=True)
            return "command"
        if cfg.broker_pid_file:
            broker.reload(Path(cfg.broker_pid_file))
            return "sighup"
        raise NotConfigured("the relay cannot tell the broker to re-read its CRL: set "
                            "broker_pid_file or broker_reload_command")

    def _brokers(self) -> list[tuple[str, int]]:
        return [host_port(u) for u in self.cfg.brokers]

    def _wait_refused(self, ctx: ssl.SSLContext) -> float | None:
        """Seconds until every broker refuses the canary; None past IN_FORCE_TIMEOUT_S."""
        t0 = time.monotonic()
        pending = self._brokers()
        while pending:
            pending = [(h, p) for h, p in pending
                       if _connect_once(h, p, ctx, CANARY_CN)[0] != "tls"]
            if not pending:
                break
            if time.monotonic() - t0 > self.in_force_timeout_s:
                return None
            time.sleep(0.1)
        return round(time.monotonic() - t0, 3)

    # ------------------------------------------------------------------ the CRL

    def sync(self, *, prove: bool) -> dict:
        """Write the CRL from the store and have the broker re-read it; with `prove`, wait
        until it is in force (a canary refused by every broker)."""
        if not self.cfg.broker_crl_file:
            return {"crl": None, "in_force": False, "problem": "no broker_crl_file: the "
                    "revocation is recorded, but the broker is not told"}
        with self._lock:
            try:
                ca = self.ca()
            except NotConfigured as e:
                return {"crl": None, "in_force": False, "problem": str(e)}
            canary = self._mint(ca, CANARY_CN, "canary") if prove else None
            entries = self.store.certs.crl_entries(now_us())
            pki.write_crl(ca, Path(self.cfg.broker_crl_file), [
                pki.Revoked(int(s, 16), dt.datetime.fromtimestamp(us / 1e6, dt.UTC),
                            REASONS.get(reason, x509.ReasonFlags.unspecified))
                for s, us, reason in entries])
            out: dict[str, Any] = {"crl": self.cfg.broker_crl_file, "entries": len(entries)}
            try:
                out["reload"] = self._reload()
            except (NotConfigured, OSError, RuntimeError, subprocess.SubprocessError) as e:
                log.error("event=broker_reload_failed error=%s", q(e))
                return {**out, "in_force": False, "problem": str(e)}
            if canary is None:
                return {**out, "in_force": None}
            took = self._wait_refused(canary)
            if took is None:
                log.error("event=crl_not_in_force timeout_s=%s", self.in_force_timeout_s)
                return {**out, "in_force": False, "problem": "the broker still accepts a "
                        f"revoked certificate {self.in_force_timeout_s:g} s after the reload: "
                        "check the broker's crlfile is broker_crl_file and its log"}
            log.info("event=crl_in_force entries=%d after_s=%.3f", len(entries), took)
            return {**out, "in_force": True, "in_force_after_s": took}

    def end_connection(self, cn: str) -> dict:
        """Take over `cn`'s connection on every broker (see the module doc)."""
        with self._lock:
            ctx = self._mint(self.ca(), cn, "takeover")
            got = {f"{h}:{p}": _connect_once(h, p, ctx, cn) for h, p in self._brokers()}
        ended = all(kind == "accepted" for kind, _ in got.values())
        log.info("event=connection_taken_over cn=%s ended=%s", cn, ended)
        return {"ended": ended, "brokers": {k: v[0] if not v[1] else f"{v[0]}: {v[1]}"
                                            for k, v in got.items()}}

    # ------------------------------------------------------------------ revocations

    def revoke(self, serials: list[str], reason: str, actor: str, *,
               take_over: bool = True) -> dict:
        """Revoke, publish the CRL, and (take_over) end the revoked identities' live
        connections once the CRL is in force."""
        with self._lock:
            newly = self.store.certs.revoke(serials, reason)
            if not newly:
                return {"revoked": []}
            cns = sorted({(self.store.certs.get(s) or {}).get("cn", "") for s in newly} - {""})
            for cn in cns:
                self.store.audit(actor, "transport_revoked", cn, {
                    "serials": [s for s in newly if (self.store.certs.get(s) or {})
                                .get("cn") == cn], "reason": reason})
            log.warning("event=transport_revoked cns=%s count=%d reason=%s", ",".join(cns),
                        len(newly), q(reason))
            out: dict[str, Any] = {"revoked": newly, "broker": self.sync(prove=take_over)}
            if take_over and out["broker"].get("in_force"):
                # (in force means the CA is configured: the takeover can mint)
                out["ended"] = {cn: self.end_connection(cn) for cn in cns}
            return out

    def import_enrolled(self, unit_id: str) -> None:
        """Record the certificates enrolment issued for this unit before this relay kept
        transport certificates (enroll_codes keeps each code's certificate)."""
        for text in self.store.certs.enrolled_pems(unit_id):
            try:
                cert = x509.load_pem_x509_certificate(text.encode())
            except ValueError:
                continue
            self.store.certs.add(pki.serial_hex(cert), unit_id, fingerprint(cert),
                                 not_after_us=_us(cert.not_valid_after_utc), via="enrol",
                                 state=ACTIVE, issued_us=_us(cert.not_valid_before_utc))

    def apply_authority(self, rv: trust.Revocations, issued_us: int, actor: str) -> dict:
        """The authority revoked unit signing keys: revoke the transport certificates issued
        with them (and those of the unit bound to no key, issued before the list), for every
        entry whose `after_us` has come."""
        now = now_us()
        serials: list[str] = []
        for unit, key_id, after_us in rv.units:
            if after_us > now:
                continue  # the periodic pass takes it when its time comes
            self.import_enrolled(unit)
            for c in self.store.certs.of(unit):
                if c["state"] == REVOKED:
                    continue
                if c["sign_key_id"] == key_id or (c["sign_key_id"] is None
                                                   and c["issued_us"] <= issued_us):
                    serials.append(c["serial"])
        if not serials:
            return {"revoked": []}
        return self.revoke(serials, "key_compromise", actor)

    def issued(self, cert: x509.Certificate, unit_id: str, *, via: str,
               sign_key_id: str | None = None, renews: str | None = None) -> None:
        self.store.certs.add(pki.serial_hex(cert), unit_id, fingerprint(cert),
                             not_after_us=_us(cert.not_valid_after_utc), via=via,
                             sign_key_id=sign_key_id, renews=renews)

    def enrolled(self, unit_id: str, cert_fingerprint: str, actor: str) -> dict:
        """A unit committed the certificate enrolment issued it: that one is in use, and
        every other certificate of the unit id is revoked (a re-enrolment)."""
        with self._lock:
            self.import_enrolled(unit_id)
            current = self.store.certs.by_fingerprint(cert_fingerprint)
            if current is not None:
                self.store.certs.activate(current["serial"])
            old = [c["serial"] for c in self.store.certs.of(unit_id)
                   if c["state"] != REVOKED and (current is None
                                                 or c["serial"] != current["serial"])]
            return self.revoke(old, "superseded", actor) if old else {"revoked": []}

    # ------------------------------------------------------------------ the periodic pass

    def periodic(self) -> None:
        """Apply authority revocations whose time came; keep the CRL file as the store
        says (another relay may have revoked) and fresh."""
        from cloud_relay.api import trust as trust_api

        try:
            rv = trust_api.revocations(self.store)
        except Exception:  # noqa: BLE001 (no authority yet, or nothing signed)
            rv = None
        if rv is not None and rv.units:
            self.apply_authority(rv, _statement_issued_us(self.store), "relay")
        if not self.cfg.broker_crl_file:
            return
        want = {int(s, 16) for s, _us, _r in self.store.certs.crl_entries(now_us())}
        try:
            crl = pki.read_crl(Path(self.cfg.broker_crl_file))
            have = {r.serial_number for r in crl}
            fresh = crl.next_update_utc is not None and (
                crl.next_update_utc - dt.datetime.now(dt.UTC)).total_seconds() > CRL_REFRESH_S
        except (OSError, ValueError):
            have, fresh = set(), False
        if have != want or not fresh:
            self.sync(prove=False)


def _statement_issued_us(store: Store) -> int:
    import json

    from cloud_relay.api.trust import REVOCATIONS

    doc = store.trust.get(REVOCATIONS)
    return int(json.loads(doc)["body"].get("issued_us", 0)) if doc else 0


def transport(svc: Services) -> Transport:
    """The relay process's one Transport (cloud_relay.app makes it)."""
    if svc.transport is None:
        svc.transport = Transport(svc.cfg, svc.store)
    return svc.transport
