"""The relay's MQTT side: stores what units publish, publishes what units are told.

It parses only clear headers and clear session metadata; it holds no key that opens
a body. A frame whose header names another unit than its topic is refused.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_relay.store import Store, now_us
from scribelink import envelope as env
from scribelink import messages as msgs
from scribelink import topics

log = logging.getLogger("cloud_relay.bridge")

SESSION_EXPIRY_S = 24 * 3600
REPLAY_MARGIN_US = 10_000_000  # the broker may have lost what it acked this long before


class Bridge:
    def __init__(self, store: Store, *, host: str, port: int, ca_file: str, cert_file: str,
                 key_file: str, client_id: str = "relay",
                 on_status: Callable[[str, dict], None] | None = None) -> None:
        self.store = store
        self.host, self.port = host, port
        self.on_status = on_status
        self.connected = threading.Event()
        self.rejected = 0
        self._lost_at: int | None = None
        self._known: set[str] = set()  # unit ids already in the registry
        self.on_connected: list[Callable[[], None]] = []  # retained state to publish again
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
        ctx.load_cert_chain(cert_file, key_file)
        c.tls_set_context(ctx)
        c.max_inflight_messages_set(100)
        c.reconnect_delay_set(min_delay=1, max_delay=8)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.client = c

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self.client.connect_async(self.host, self.port, keepalive=15, clean_start=False,
                                  properties=props)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("event=broker_refused reason=%s", reason_code)
            return
        client.subscribe([(t, 1) for t in topics.relay_subscriptions()])
        self.connected.set()
        log.info("event=broker_connected session_present=%s", flags.session_present)
        self.publish_all_assignments()
        for fn in list(self.on_connected):
            fn()
        if not flags.session_present:
            # The broker has no session for us: it restarted and lost it (or we are new).
            # What units published before we subscribed again was acked and dropped; ask
            # every unit to offer again what it had acked recently (docs/spool.md).
            since = (self._lost_at or now_us()) - REPLAY_MARGIN_US
            for u in self.store.units():
                self.publish_control(u["id"], msgs.replay(unit_id=u["id"], since_us=since))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected.is_set():
            self._lost_at = now_us()
        self.connected.clear()
        log.warning("event=broker_disconnected reason=%s", reason_code)

    # ------------------------------------------------------------------ inbound

    def _on_message(self, client, userdata, message) -> None:
        parsed = topics.parse(message.topic)
        if parsed is None:
            return
        unit_id, leaf = parsed
        try:
            self.handle(unit_id, leaf, bytes(message.payload))
        except (env.EnvelopeError, msgs.MessageError, ValueError) as e:
            self.rejected += 1
            log.warning("event=rejected unit=%s topic=%s error=%s", unit_id, leaf, e)

    def _seen(self, unit_id: str) -> None:
        """Register a unit the broker let in (its certificate is the clinic CA's), once:
        not a database write per audio chunk."""
        if unit_id in self._known:
            return
        if self.store.ensure_unit(unit_id):
            self.store.audit("broker", "unit_seen", unit_id)
        self._known.add(unit_id)

    def handle(self, unit_id: str, leaf: str, payload: bytes) -> bool:
        """Store one inbound message. Returns True if it was new."""
        if leaf in (topics.AUDIO, topics.EVENT):
            header, _ = env.parse_header(payload)
            if header.unit_id != unit_id:
                raise ValueError(f"header names unit {header.unit_id!r} on {unit_id!r}'s topic")
            want = env.TYPE_AUDIO if leaf == topics.AUDIO else env.TYPE_EVENT
            if header.type != want:
                raise ValueError(f"{header.type_name} envelope on the {leaf} topic")
            self._seen(unit_id)
            return self.store.append(unit_id, header.session_hex, leaf, header.seq, payload)
        if leaf == topics.SESSION:
            m = msgs.check_session_message(msgs.loads(payload, what="session message"))
            if m["unit"] != unit_id:
                raise ValueError("session message names another unit")
            self._seen(unit_id)
            kind = m["type"]
            seq = 0
            if kind == "gap":
                kind = f"gap_{m.get('stream', 'audio')}"
                seq = m["first_seq"]
            new = self.store.append(unit_id, m["session"], kind, seq, msgs.dumps(m))
            if new and m["type"] == "session_open":
                self.store.audit(unit_id, "session_open", m["session"][:8])
            return new
        if leaf == topics.STATUS:
            m = msgs.loads(payload, what="status")
            if m.get("unit") != unit_id:
                raise ValueError("status names another unit")
            self._seen(unit_id)
            self.store.set_status(unit_id, m)
            if self.on_status:
                self.on_status(unit_id, m)
            return True
        return False

    # ------------------------------------------------------------------ outbound

    def publish_control(self, unit_id: str, msg: dict, *, retain: bool = False) -> None:
        self.client.publish(topics.control_topic(unit_id), msgs.dumps(msg), qos=1, retain=retain)

    def publish_assignment(self, unit_id: str) -> None:
        scribes = []
        for sid in self.store.scribes_for(unit_id):
            for raw in self.store.keys_for(sid):  # every device the scribe works from
                scribes.append((sid, raw))
        unit = self.store.unit(unit_id) or {}
        msg = msgs.assignment(unit_id=unit_id, room=unit.get("room"), scribes=scribes,
                              issued_us=now_us())
        self.publish_control(unit_id, msg, retain=True)

    def publish_all_assignments(self) -> None:
        for u in self.store.units():
            if u["scribes"]:
                self.publish_assignment(u["id"])

