"""Peer adoption: when a relay sharing the traffic dies, its broker session still holds
what the broker had in flight to it, and mosquitto keeps giving it its share of new
messages while the session lives. A peer that stops heartbeating in the store for
`peer_timeout_s` has its session drained by a surviving relay, which connects under the
dead relay's client id (taking one lease in the store, so two survivors do not fight)
until the dead relay comes back: its own connection takes the session over, and the
adopter lets go without reconnecting.

The broker takes a client id from the certificate's CN (broker.py), so acting as the peer
takes a certificate for the peer's identity: the survivor mints one from the transport CA
(`ca_cert_file`, `ca_key_file`), valid for ADOPTION_CERT_DAYS and held in memory only.

Concurrency: `run` is a task on the event loop; the store calls and the MQTT connects
run in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cloud_relay.bridge import Bridge
from cloud_relay.store import now_us
from scribelink.logfmt import q

if TYPE_CHECKING:
    from cloud_relay.api.deps import Services

log = logging.getLogger("cloud_relay.adopt")

CHECK_S = 1.0
ADOPTION_CERT_DAYS = 1.0  # the adoption reconnects never; the next one mints again


class PeerAdopter:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.adopted: dict[str, tuple[list[Bridge], float]] = {}  # peer -> bridges, since

    async def run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_S)
            for peer in self.svc.cfg.relay_peers:
                if peer == self.svc.cfg.broker_client_id:
                    continue
                try:
                    await asyncio.to_thread(self._check, peer)
                except Exception as e:  # noqa: BLE001
                    log.warning("event=adoption_check_failed peer=%s error=%s", peer,
                                q(str(e)[:200]))

    def _check(self, peer: str) -> None:
        cfg, store = self.svc.cfg, self.svc.store
        me = cfg.broker_client_id
        timeout_us = int(cfg.peer_timeout_s * 1e6)
        seen = store.relay_seen_us(peer)
        held = self.adopted.get(peer)
        if held is not None:
            bridges, since = held
            back = seen is not None and seen > now_us() - timeout_us
            taken = any(b.taken_over.is_set() for b in bridges)
            dropped = time.monotonic() - since > 10 and not any(
                b.connected.is_set() for b in bridges)
            if back or taken or dropped:
                self._release(peer, "peer_back" if back or taken else "connection_lost")
                return
            store.claim_adoption(peer, me, now_us() - timeout_us, 3 * timeout_us)  # renew
            return
        if seen is None or seen > now_us() - timeout_us:
            return  # alive, or never ran (no session of its own to drain)
        if not store.claim_adoption(peer, me, now_us() - timeout_us, 3 * timeout_us):
            return  # another survivor holds it
        uplink = self.svc.uplink
        assert uplink is not None
        try:
            ctx = self._peer_identity(peer)
        except (OSError, ValueError) as e:
            store.release_adoption(peer, me)
            raise RuntimeError(f"cannot act as {peer} at the broker: {e} (adoption needs the "
                               "transport CA: ca_cert_file and ca_key_file)") from e
        bridges = [uplink._bridge(b.url, peer, reconnect=False, ssl_context=ctx)
                   for b in uplink.bridges]
        for b in bridges:
            b.start()
        self.adopted[peer] = (bridges, time.monotonic())
        store.audit(me, "relay_adopted", peer, {"silent_s": round((now_us() - seen) / 1e6, 1)})
        log.warning("event=relay_adopted peer=%s silent_s=%.1f", peer, (now_us() - seen) / 1e6)

    def _peer_identity(self, peer: str):
        """A TLS context with a fresh certificate for the peer's identity (its CN)."""
        from cloud_relay import pki

        cfg = self.svc.cfg
        if not pki.is_relay_identity(peer):
            raise ValueError(f"{peer!r} is not a relay identity")
        ca = pki.CA.load(Path(cfg.ca_cert_file), Path(cfg.ca_key_file))
        key = pki.new_key()
        cert = pki.issue(ca, key.public_key(), peer, days=ADOPTION_CERT_DAYS)
        return pki.ssl_client_context(cfg.broker_ca_file, cert, key)

    def _release(self, peer: str, why: str) -> None:
        bridges, _ = self.adopted.pop(peer)
        for b in bridges:
            b.stop()
        self.svc.store.release_adoption(peer, self.svc.cfg.broker_client_id)
        log.info("event=relay_released peer=%s reason=%s", peer, q(why))

    def stop(self) -> None:
        for peer in list(self.adopted):
            self._release(peer, "shutdown")
