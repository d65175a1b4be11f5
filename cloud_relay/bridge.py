"""The relay's MQTT side: takes what units publish into the stream writer, publishes what
units are told. One `Bridge` is one MQTT 5 connection to one broker (a shard); `Uplink`
holds one per shard and knows which shard a unit is on.

Several relays share the units' traffic through a shared subscription
(`$share/<group>/…`): the broker gives each message to one of them. Acks are manual: a
message is PUBACKed only after the batch that holds it is committed (`StreamWriter`), so a
relay killed mid-stream leaves every unstored message with the broker, which redelivers it
to this relay's session (to this relay when it restarts, or to a peer that adopts the
session: `adopt.py`). Status is not shared: every relay follows every unit's status to push
it to its own scribes.

It parses only clear headers and clear session metadata; it holds no key that opens a
body. A frame whose header names another unit than its topic is refused.

The MQTT side is `mqtt5.py` (a lean client: one read per many publishes, one write per
batch of acks), not paho, for the relay's CPU budget (docs/scaling.md).

Concurrency: each connection's I/O thread runs the callbacks; `publish_*` may be called
from any thread.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from urllib.parse import urlparse

from cloud_relay import mqtt5
from cloud_relay.store import Frame, Store, now_us
from cloud_relay.store.writer import StreamWriter
from scribelink import envelope as env
from scribelink import logfmt, topics
from scribelink import messages as msgs

log = logging.getLogger("cloud_relay.bridge")

SESSION_EXPIRY_S = 24 * 3600
REPLAY_MARGIN_US = 10_000_000  # the broker may have lost what it acked this long before
# Unacked messages the broker may have in flight to one relay connection: enough for a few
# batch windows at the fleet's rate, small enough that a killed relay strands little.
RECEIVE_MAXIMUM = 1000
MAX_TOPICS_CACHED = 200_000
_SEALED = {topics.AUDIO: env.TYPE_AUDIO, topics.EVENT: env.TYPE_EVENT}


def explain_failure(reason: str, url: str) -> str:
    """What a failed broker connection most likely means, and what to check."""
    host, port = host_port(url)
    r = reason.lower()
    if "refused the connection" in r:
        return ("the broker refused the relay's session: check the ACL gives the relay's "
                "certificate name its topics")
    if "connectionrefused" in r:
        return f"nothing listens at {host}:{port}: is the broker running?"
    if "gaierror" in r or "name or service not known" in r:
        return f"{host} does not resolve: check broker_url"
    if "certificate verify failed" in r or "certificateverify" in r:
        return ("the broker's certificate does not verify against broker_ca_file, or does "
                f"not name {host}")
    if "alert" in r or "certificate" in r:
        return ("the broker refused the relay's TLS identity: broker_cert_file must come "
                "from the broker's CA")
    if "timeout" in r or "timed out" in r:
        return f"no answer from {host}:{port}: a firewall, or the wrong address"
    return "see the reason; the relay keeps retrying"


def host_port(url: str) -> tuple[str, int]:
    u = urlparse(url)
    return u.hostname or "127.0.0.1", u.port or 8883


class Bridge:
    def __init__(self, store: Store, writer: StreamWriter, *, url: str, ca_file: str,
                 cert_file: str, key_file: str, client_id: str = "relay",
                 share_group: str = "", on_unit: Callable[[str, Bridge], None] | None = None,
                 on_connect: Callable[[Bridge, bool], None] | None = None,
                 reconnect: bool = True, ssl_context: ssl.SSLContext | None = None) -> None:
        self.store = store
        self.writer = writer
        self.url = url
        self.host, self.port = host_port(url)
        self.client_id = client_id
        self.share_group = share_group
        self.on_unit = on_unit
        self.on_connect_cb = on_connect
        self.rejected = 0
        self.lost_at: int | None = None
        self._up_since_loss = False
        self.first_attempt = threading.Event()  # connected, or failed with its reason
        self._known: set[str] = set()  # unit ids already registered from this connection
        self._consent: dict[str, tuple[str | None, str | None]] = {}  # unit -> (session, state)
        self._topics: dict[bytes, tuple[str, str] | None] = {}
        ctx = ssl_context
        if ctx is None:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
            ctx.load_cert_chain(cert_file, key_file)
        self.client = mqtt5.Client(
            host=self.host, port=self.port, ssl_context=ctx, client_id=client_id,
            on_publish=self._on_publish,
            subscriptions=[(t, 1) for t in topics.relay_subscriptions(share_group)],
            keepalive_s=15, session_expiry_s=SESSION_EXPIRY_S,
            receive_maximum=RECEIVE_MAXIMUM, reconnect=reconnect,
            on_connect=self._on_connect, on_disconnect=self._on_disconnect)

    @property
    def connected(self) -> threading.Event:
        return self.client.connected

    @property
    def taken_over(self) -> threading.Event:
        return self.client.taken_over

    def start(self) -> None:
        log.info("event=broker_connecting broker=%s client_id=%s", self.url, self.client_id)
        self.client.start()

    def stop(self) -> None:
        self.client.stop()

    def leave_share_group(self) -> None:
        """Unsubscribe the shared filters (a planned stop while peers carry the traffic):
        the broker stops giving this session new messages. It keeps reading until stopped,
        so what is in flight is still stored and acked."""
        shared = [t for t in topics.relay_subscriptions(self.share_group) if t.startswith("$")]
        if shared and self.share_group:
            log.info("event=share_group_left broker=%s client_id=%s group=%s", self.url,
                     self.client_id, self.share_group)
            self.client.unsubscribe(shared)

    def _on_connect(self, session_present: bool) -> None:
        self._up_since_loss = True
        self.first_attempt.set()
        log.info("event=broker_connected broker=%s client_id=%s session_present=%s", self.url,
                 self.client_id, session_present)
        if self.on_connect_cb is not None:
            self.on_connect_cb(self, session_present)

    def _on_disconnect(self, reason: str) -> None:
        was_up = self._up_since_loss  # else this attempt never got through (start included)
        self.lost_at = now_us()
        self._up_since_loss = False
        log.warning("event=%s broker=%s client_id=%s reason=%s what=%s retrying=true",
                    "broker_disconnected" if was_up else "broker_connect_failed", self.url,
                    self.client_id, reason.replace(" ", "_")[:200],
                    json.dumps(explain_failure(reason, self.url)))
        self.first_attempt.set()

    # ------------------------------------------------------------------ inbound

    def _on_publish(self, topic: bytes, payload: bytes, pid: int, acker: mqtt5.Acker) -> None:
        """The MQTT thread's whole per-message work: check, then queue for the writer."""
        if topic in self._topics:
            parsed = self._topics[topic]
        else:
            parsed = topics.parse(topic.decode("utf-8", "replace"))
            if len(self._topics) < MAX_TOPICS_CACHED:
                self._topics[topic] = parsed
        ack = (acker, pid) if pid else None
        frame = None
        if parsed is not None:
            unit_id, leaf = parsed
            try:
                frame = self.frame(unit_id, leaf, payload)
            except (env.EnvelopeError, msgs.MessageError, ValueError) as e:
                self.rejected += 1
                log.warning("event=rejected unit=%s topic=%s error=%s", unit_id, leaf, logfmt.q(e))
        if frame is None:
            if ack is not None:  # nothing to store (refused, or status): ack with the batch
                self.writer.put_ack(ack)
            return
        self.writer.put(frame, ack)

    def _seen(self, unit_id: str) -> None:
        """Register a unit the broker let in (its certificate is the clinic CA's), once per
        connection: not a database write per audio chunk."""
        if unit_id in self._known:
            return
        if self.on_unit is not None:
            self.on_unit(unit_id, self)
        self._known.add(unit_id)

    def frame(self, unit_id: str, leaf: str, payload: bytes) -> Frame | None:
        """What to store for one inbound message (None: nothing to store)."""
        want = _SEALED.get(leaf)
        if want is not None:
            header, _ = env.parse_header(payload)
            if header.unit_id != unit_id:
                raise ValueError(f"header names unit {header.unit_id!r} on {unit_id!r}'s topic")
            if header.type != want:
                raise ValueError(f"{header.type_name} envelope on the {leaf} topic")
            self._seen(unit_id)
            return Frame(unit_id, header.session_hex, leaf, header.seq, payload)
        if leaf == topics.SESSION:
            # parsed to route it; stored as the unit wrote it (its signature covers that)
            m = msgs.session_message(msgs.loads(payload, what="session message"))
            if m.unit != unit_id:
                raise ValueError("session message names another unit")
            self._seen(unit_id)
            kind, seq = m.TYPE, 0
            # consent in the unit's signed clear metadata: asked for at the open, declined at
            # the close (the status below says it too, but a status can be overtaken)
            if isinstance(m, msgs.SessionOpen) and m.consent == "pending":
                self._audit_consent(unit_id, {"consent": "pending", "session": m.session})
            elif isinstance(m, msgs.SessionClose) and m.reason == "consent_declined":
                self._audit_consent(unit_id, {"consent": "declined", "session": m.session})
            if isinstance(m, msgs.Gap):
                kind, seq = f"gap_{m.stream}", m.first_seq
            elif isinstance(m, msgs.RecipientsAdded):
                seq = m.at_us  # several per session: each its own row
            return Frame(unit_id, m.session, kind, seq, bytes(payload))
        if leaf == topics.STATUS:
            status = msgs.loads(payload, what="status")
            if status.get("unit") != unit_id:
                raise ValueError("status names another unit")
            self._seen(unit_id)
            self._audit_consent(unit_id, status)
            self.writer.put_status(unit_id, status)
            return None
        return None

    def _audit_consent(self, unit_id: str, status: dict) -> None:
        """Where the clinic requires consent, its state (pending, given, declined) goes to
        the audit log as it changes: the unit's coarse status says it in clear; the signed,
        sealed consent event in the session is the record the scribe sees."""
        state, session = status.get("consent"), status.get("session")
        if state not in ("pending", "given", "declined"):
            return
        # a declined visit's session is closed: the status names none, it is the last one's
        session = session or (self._consent.get(unit_id) or (None, None))[0]
        if self._consent.get(unit_id) == (session, state):
            return
        self._consent[unit_id] = (session, state)
        self.store.audit(unit_id, f"consent_{state}", (session or "")[:8])

    # ------------------------------------------------------------------ outbound

    def publish_control(self, unit_id: str, msg: dict, *, retain: bool = False) -> None:
        self.client.publish(topics.control_topic(unit_id), msgs.dumps(msg), qos=1,
                            retain=retain)


def check_identity(cert_file: str, client_id: str) -> None:
    """The broker takes a client's id from its certificate's CN (broker.py), so a relay whose
    configured client id is another name would carry a session it does not know it has."""
    from cloud_relay.config import ConfigError
    from cloud_relay.pki import cert_file_cn

    cn = cert_file_cn(cert_file)
    if cn != client_id:
        raise ConfigError(
            f"broker_client_id {client_id!r} is not the identity of broker_cert_file "
            f"({cn!r}): the broker names each connection after its certificate, so each relay "
            f"needs a certificate of its own: set broker_client_id = {cn!r}, or issue this "
            f"relay a certificate for {client_id!r} and add it to the broker's ACL")


class Uplink:
    """The relay's connections to its brokers: one per shard, each a `Bridge`. A unit's
    control messages go to the shard it was last seen on (or to every shard before that)."""

    def __init__(self, store: Store, writer: StreamWriter, *, urls: list[str], ca_file: str,
                 cert_file: str, key_file: str, client_id: str, share_group: str) -> None:
        check_identity(cert_file, client_id)
        self.store = store
        self.tls = (ca_file, cert_file, key_file)
        self.share_group = share_group
        self.writer = writer
        self._unit_shard: dict[str, Bridge] = {}
        self._lock = threading.Lock()
        self.bridges = [self._bridge(url, client_id, reconnect=True) for url in urls]

    def _bridge(self, url: str, client_id: str, *, reconnect: bool,
                ssl_context: ssl.SSLContext | None = None) -> Bridge:
        ca, cert, key = self.tls
        return Bridge(self.store, self.writer, url=url, ca_file=ca, cert_file=cert,
                      key_file=key, client_id=client_id, share_group=self.share_group,
                      on_unit=self._unit_seen, on_connect=self._connected, reconnect=reconnect,
                      ssl_context=ssl_context)

    @property
    def connected(self) -> bool:
        return all(b.connected.is_set() for b in self.bridges)

    def start(self) -> None:
        for b in self.bridges:
            b.start()

    def wait_first_attempt(self, timeout_s: float) -> None:
        """Until each broker connection has connected or failed once (at most timeout_s):
        so the relay's first /healthz already tells whether the broker is there."""
        deadline = time.monotonic() + timeout_s
        for b in self.bridges:
            b.first_attempt.wait(max(0.0, deadline - time.monotonic()))

    def stop(self) -> None:
        for b in self.bridges:
            b.stop()

    def leave_share_group(self, settle_s: float = 0.5) -> None:
        for b in self.bridges:
            b.leave_share_group()
        time.sleep(settle_s)  # let the UNSUBACK and what was already in flight arrive

    def _unit_seen(self, unit_id: str, bridge: Bridge) -> None:
        with self._lock:
            before = self._unit_shard.get(unit_id)
            self._unit_shard[unit_id] = bridge
        if self.store.ensure_unit(unit_id):
            self.store.audit("broker", "unit_seen", unit_id)
        if before is not bridge:
            self.store.set_unit_broker(unit_id, bridge.url)

    def _connected(self, bridge: Bridge, session_present: bool) -> None:
        units = [u for u in self.store.units() if self._on_shard(u, bridge)]
        audio = self.store.units_audio()
        for u in units:
            if u["scribes"]:
                self.publish_assignment(u["id"], bridges=[bridge], unit=u)
            if u["id"] in audio:  # retained: a broker that lost it hears it again
                a = audio[u["id"]]
                bridge.publish_control(u["id"], msgs.Config(
                    unit=u["id"], audio={"codec": a["codec"], "bitrate": a["bitrate"]},
                    issued_us=now_us()).to_dict(), retain=True)
        if not session_present or (self.share_group and bridge.lost_at is not None):
            # The broker has no session for us: it restarted and lost it (or we are new).
            # Or we share a subscription, and mosquitto before 2.0.20 does not keep shared
            # subscriptions over its restart (persist_write.c saves plain ones only): the
            # session comes back without them. Either way, what units published before we
            # subscribed again was acked and dropped; ask every unit to offer again what it
            # had acked recently (docs/spool.md). The store drops what it already has.
            since = (bridge.lost_at or now_us()) - REPLAY_MARGIN_US
            for u in units:
                bridge.publish_control(u["id"], msgs.Replay(unit=u["id"],
                                                            since_us=since).to_dict())

    def _on_shard(self, unit: dict, bridge: Bridge) -> bool:
        return len(self.bridges) == 1 or unit.get("broker") in (None, bridge.url)

    def _targets(self, unit_id: str) -> list[Bridge]:
        with self._lock:
            b = self._unit_shard.get(unit_id)
        if b is not None or len(self.bridges) == 1:
            return [b or self.bridges[0]]
        unit = self.store.unit(unit_id) or {}
        known = [x for x in self.bridges if x.url == unit.get("broker")]
        return known or self.bridges

    def publish_control(self, unit_id: str, msg: dict, *, retain: bool = False) -> None:
        for b in self._targets(unit_id):
            b.publish_control(unit_id, msg, retain=retain)

    def publish_assignment(self, unit_id: str, *, bridges: list[Bridge] | None = None,
                           unit: dict | None = None) -> None:
        """The unit's signed assignment with its scribes' endorsed devices and the
        revocations (cloud_relay.api.trust), retained on its control topic."""
        from cloud_relay.api.trust import assignment_message

        msg = assignment_message(self.store, unit_id)
        if msg is None:
            return  # no assignment the clinic authority signed: the unit keeps waiting
        for b in bridges if bridges is not None else self._targets(unit_id):
            b.publish_control(unit_id, msg.to_dict(), retain=True)
