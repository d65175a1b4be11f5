"""MQTT 5 uplink (paho-mqtt over mTLS): publishes the spool, releases a record on PUBACK.

Live first: records sealed since the link came up go out at once; the backlog (what
piled up while the link was down, or before a restart) fills the rest of a bounded
in-flight window at a bounded rate, so live audio never queues behind an hour of
catch-up. paho keeps its own in-flight messages across reconnects and resends them, so
the pump hands each spool record to paho once per process; after a restart the spool
replays. After every reconnect the records acked in the last grace period are offered
again: a broker that crashed may have acked them without passing them on (receivers
drop the duplicates). The live/backlog choice is `edge_agent.schedule.LiveFirst`; the
spool hands records out reserved in its `InFlight` registry, which this releases on
PUBACK.

Topic aliases (MQTT 5, 3.3.2.3.4): when the broker allows them (its CONNACK's Topic
Alias Maximum; mosquitto's default is 10), a spool record's topic goes out in full once
per connection and after that as a two-byte alias: 40 ms chunks spend ~30 bytes less
each, about 6 kb/s of a room's upload (bench:sizes); the unit's status (on change, at
least every 4 s) too. An alias lives as long as its connection, and paho would resend an
unacknowledged alias-only PUBLISH on the next one, where the broker does not know it; so at each
connect the messages paho still holds are taken back (`drop_out_messages`, paho's
documented way) and offered again with their full topics.

Concurrency: paho's network thread runs the callbacks and only hands over (queues, an
event); the pump thread (`_pump`) owns the in-flight bookkeeping and the scheduler. Other
threads call only `wake`, `set_status`, `send_direct`, `replay_since` and `stop`.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.config import BrokerConfig
from edge_agent.schedule import LiveFirst
from edge_agent.spool import Spool
from scribelink import fleet, topics
from scribelink import messages as msgs
from scribelink.logfmt import q

log = logging.getLogger("edge_agent.uplink")

# what the control topic carries: the unit<->relay messages and fleet's offers and requests
Control = msgs.Message | fleet.ReleaseOffer | fleet.DiagnosticsRequest

SESSION_EXPIRY_S = 24 * 3600
LINK_FILE = "link.json"  # in the agent's state dir: the link's state (selftest.py reads it)


def _file_fingerprint(path: str) -> str | None:
    """SHA-256 of a PEM certificate's DER (as provisioning's fingerprints), None if unreadable."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes()).fingerprint(
            hashes.SHA256()).hex()
    except (OSError, ValueError):
        return None


class Uplink:
    def __init__(
        self,
        cfg: BrokerConfig,
        unit_id: str,
        spool: Spool,
        *,
        on_control: Callable[[Control], None],
        link_file: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.link_file = link_file
        self._relink = threading.Lock()
        self.unit_id = unit_id
        self.spool = spool
        self.on_control = on_control
        self.connected = False
        self.last_error: str | None = None
        self._acks: queue.Queue[tuple[int, bool, str]] = queue.Queue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._inflight: dict[int, int] = {}  # paho mid -> spool id
        self._live_from = spool.next_id  # ids from here were sealed while the link was up
        self._live_cursor = self._live_from - 1
        self._backlog_cursor = 0
        self._backlog_ids: set[int] = set()
        self._replay: list[int] = []
        self._replay_in: queue.Queue[list[int]] = queue.Queue()
        self._disconnected_at: float | None = None
        self.scheduler = LiveFirst(window=cfg.inflight_max, backlog_rate=cfg.backlog_rate)
        self._status: dict | None = None
        self._reconnected = False  # set by paho's thread, consumed by the pump
        self._direct: list[tuple[str, bytes]] = []
        self._thread: threading.Thread | None = None
        # topic aliases of the current connection (both threads: under _alias_lock)
        self._alias_lock = threading.Lock()
        self._alias_max = 0
        self._aliases: dict[str, int] = {}
        self._taken_back: queue.Queue[list] = queue.Queue()  # paho's thread -> the pump
        self._client = self._make_client()

    # ------------------------------------------------------------------ paho

    def _make_client(self) -> mqtt.Client:
        # The broker takes the client id from the certificate's CN, the unit id (whatever
        # is asked here: cloud_relay/broker.py); asking for the same keeps logs plain.
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.unit_id,
            protocol=mqtt.MQTTv5,
        )
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.cfg.ca_file)
        ctx.load_cert_chain(self.cfg.cert_file, self.cfg.key_file)
        self._ssl_context = ctx
        self._cert_sha256 = _file_fingerprint(self.cfg.cert_file)  # what the link presents
        c.tls_set_context(ctx)
        c.max_inflight_messages_set(self.cfg.inflight_max)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(min_delay=1, max_delay=16)
        c.will_set(
            topics.unit_topic(self.unit_id, topics.STATUS),
            msgs.dumps(msgs.Status.offline_will(self.unit_id)),
            qos=1,
            retain=True,
        )
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        return c

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker refused connection: {reason_code}"
            log.error("event=connect_refused reason=%s", q(reason_code))
            self._write_link(False, self.last_error)
            return
        assigned = getattr(properties, "AssignedClientIdentifier", None)
        if assigned and assigned != self.unit_id:
            log.warning("event=client_id_assigned assigned=%s", assigned)
        with self._alias_lock:
            # before paho resends what it holds (it does so when this returns)
            taken = self._client.drop_out_messages() if self._aliases else []
            self._aliases = {}
            try:
                self._alias_max = int(properties.TopicAliasMaximum or 0)
            except AttributeError:
                self._alias_max = 0
        if taken:
            self._taken_back.put(taken)
        self._reconnected = True
        # the link file first: whoever sees `connected` finds the file saying so
        self._write_link(True)
        self.connected = True
        self.last_error = None
        log.info("event=connected session_present=%s topic_aliases=%d",
                 flags.session_present, self._alias_max)
        client.subscribe(topics.control_topic(self.unit_id), qos=1)
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected:
            log.warning("event=disconnected reason=%s", q(reason_code))
            self._disconnected_at = time.time()
            self.connected = False
            self._write_link(False, str(reason_code))
        self.connected = False
        # jitter, so a clinic's units do not all come back in the same instant
        client.reconnect_delay_set(min_delay=random.uniform(0.5, 1.5),
                                   max_delay=random.uniform(5.0, 10.0))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # runs in paho's thread with paho's locks held: hand over, never block here
        self._acks.put((mid, not reason_code.is_failure, str(reason_code)))
        self._wake.set()

    def _on_message(self, client, userdata, message) -> None:
        try:
            raw = msgs.loads(message.payload, what="control message")
            ctl: Control | None
            if raw.get("type") in fleet.CONTROL_KINDS:
                # offers, diagnostics requests (scribelink/fleet.py)
                ctl = fleet.parse_control(raw)
            else:
                ctl = msgs.control_message(raw)
        except (msgs.MessageError, ValueError) as e:
            log.warning("event=control_rejected error=%s", q(e))
            return
        if ctl is None:  # not reached: CONTROL_KINDS are the kinds parse_control parses
            return
        try:
            self.on_control(ctl)
        except Exception:
            log.exception("event=control_handler_failed type=%s", type(ctl).__name__)

    # ------------------------------------------------------------------ lifecycle

    def _connect_async(self) -> None:
        host, port = self.cfg.host_port
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self._client.connect_async(
            host, port, keepalive=self.cfg.keepalive_s, clean_start=False, properties=props
        )
        self._client.loop_start()

    def start(self) -> None:
        self._connect_async()
        self._thread = threading.Thread(target=self._pump, name="uplink-pump", daemon=True)
        self._thread.start()

    def reload_identity(self) -> None:
        """A renewal replaced the certificate and key at the configured paths: load them and
        reconnect with them (the broker keeps the session: same CN, so same client id, and
        no clean start; paho resends what was unacked). From any thread but paho's."""
        with self._relink:
            if self._stop.is_set():
                return
            self._ssl_context.load_cert_chain(self.cfg.cert_file, self.cfg.key_file)
            self._cert_sha256 = _file_fingerprint(self.cfg.cert_file)
            log.info("event=identity_reloaded")
            self._client.disconnect()
            self._client.loop_stop()
            self._connect_async()

    def _write_link(self, connected: bool, reason: str | None = None) -> None:
        """The link's state for the provisioning self-test, which must not connect as this
        unit while the agent holds its connection (edge_agent/selftest.py)."""
        if self.link_file is None:
            return
        doc = {"pid": os.getpid(), "connected": connected, "at": time.time(),
               "reason": reason, "cert_sha256": self._cert_sha256}
        try:
            tmp = self.link_file.with_name(self.link_file.name + ".tmp")
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, self.link_file)
        except OSError as e:
            log.warning("event=link_file_unwritable error=%s", q(e.strerror))

    def wake(self) -> None:
        self._wake.set()

    def set_status(self, status: dict) -> None:
        self._status = status
        self._wake.set()

    def stop(self, timeout_s: float = 2.0) -> None:
        with self._relink:
            self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout_s)
        try:
            if self.connected:
                # a clean stop is not "lost": the will is not sent, so say offline ourselves
                info = self._client.publish(
                    topics.unit_topic(self.unit_id, topics.STATUS),
                    msgs.dumps({**(self._status or
                                   msgs.Status.offline_will(self.unit_id).to_dict()),
                                "online": False, "link": "stopped"}),
                    qos=1, retain=True,
                )
                info.wait_for_publish(1.0)
            self._client.disconnect()
        except Exception:  # noqa: BLE001 (stopping: a broken link must not stop the stop)
            pass
        self._client.loop_stop()
        self._write_link(False, "stopped")

    def send_direct(self, topic: str, payload: bytes) -> None:
        """Publish from memory (only for a gap record the full spool could not take)."""
        self._direct.append((topic, payload))
        self._wake.set()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    # ------------------------------------------------------------------ pump

    def _pump(self) -> None:
        last_status_sent = None
        while not self._stop.is_set():
            self._wake.wait(0.2)
            self._wake.clear()
            self._drain_acks()
            if not self.connected:
                continue
            if self._reconnected:
                self._reconnected = False
                self._on_link_up()
            if self._status is not None and self._status is not last_status_sent:
                last_status_sent = self._status
                self._publish_aliased(topics.unit_topic(self.unit_id, topics.STATUS),
                                      msgs.dumps(self._status), True, qos=0)
            while self._direct:
                topic, payload = self._direct.pop(0)
                self._client.publish(topic, payload, qos=1)
            self._fill_window()

    def _drain_acks(self) -> None:
        while True:
            try:
                mid, ok, reason = self._acks.get_nowait()
            except queue.Empty:
                return
            handed = self._inflight.pop(mid, None)
            if handed is None:
                continue
            rid = self.spool.in_flight.resolve(handed)  # it may have been carried forward
            if ok:
                # acked in the spool before it stops counting as in flight: an eviction in
                # between must see it as one or the other, never as lost
                self.spool.ack(rid)
            else:
                # the broker refused this message (e.g. not authorised): keep it, say so
                self.last_error = f"broker refused publish: {reason}"
                log.error("event=publish_refused spool_id=%s reason=%s", rid, q(reason))
            self.spool.in_flight.release(rid)
            self._backlog_ids.discard(handed)
            self._backlog_ids.discard(rid)

    def _on_link_up(self) -> None:
        """What was sealed while the link was down is backlog from now on."""
        self._live_from = self.spool.next_id
        self._live_cursor = max(self._live_cursor, self._live_from - 1)
        again: list[int] = []
        while not self._taken_back.empty():
            for m in self._taken_back.get_nowait():
                handed = self._inflight.pop(m.mid, None)
                if handed is not None:  # a spool record: offered again, first of all
                    rid = self.spool.in_flight.resolve(handed)
                    self.spool.in_flight.release(rid)
                    self._backlog_ids.discard(handed)
                    self._backlog_ids.discard(rid)
                    again.append(rid)
                elif m.qos and m.topic:  # a gap sent from memory
                    self._direct.append((m.topic, m.payload))
        if again:
            self._replay[:0] = sorted(again)
            log.info("event=resend_after_reconnect count=%d", len(again))
        if self._disconnected_at is not None:
            since = self._disconnected_at - self.spool.ack_grace_s
            again = self.spool.recently_acked(since)
            self._replay.extend(again)
            if again:
                log.info("event=replay_recent count=%d", len(again))

    def replay_since(self, since_s: float) -> int:
        """The relay says the broker lost state: offer again what was acked since then."""
        ids = self.spool.recently_acked(since_s)
        self._replay_in.put(ids)  # handed to the pump thread, which owns _replay
        self._wake.set()
        return len(ids)

    @property
    def backlog(self) -> bool:
        """True while older records than the live stream are still waiting."""
        return self.spool.watermark + 1 < self._live_from and len(self.spool) > 0

    def _hand(self, rec) -> bool:
        """Give one reserved record to paho. False: not taken (reservation released)."""
        info = self._publish_aliased(rec.topic, rec.payload, rec.retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            self.spool.in_flight.release(rec.id)
            return False  # tried again on the next fill
        # NO_CONN: paho keeps the message and sends it once reconnected
        self._inflight[info.mid] = rec.id
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def _publish_aliased(self, topic: str, payload: bytes, retain: bool, qos: int = 1
                         ) -> mqtt.MQTTMessageInfo:
        """Publish with the topic as an alias when this connection has one for it (the
        first publish of a topic on a connection sets it up)."""
        with self._alias_lock:
            alias = self._aliases.get(topic)
            if alias is None and self.connected and len(self._aliases) < self._alias_max:
                alias = len(self._aliases) + 1
                props = Properties(PacketTypes.PUBLISH)
                props.TopicAlias = alias
                info = self._client.publish(topic, payload, qos=qos, retain=retain,
                                            properties=props)
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    self._aliases[topic] = alias
                return info
            if alias is None:
                return self._client.publish(topic, payload, qos=qos, retain=retain)
            props = Properties(PacketTypes.PUBLISH)
            props.TopicAlias = alias
            return self._client.publish("", payload, qos=qos, retain=retain, properties=props)

    def _hand_all(self, records: list) -> int:
        """Hand records in order until paho stops taking them; release the rest."""
        for i, rec in enumerate(records):
            if not self._hand(rec):
                for rest in records[i + 1:]:
                    self.spool.in_flight.release(rest.id)
                return i
        return len(records)

    def _fill_window(self) -> None:
        # 1. live: everything sealed since the link came up, at once
        budget = self.scheduler.live_budget(len(self._inflight))
        if budget <= 0:
            return
        live = self.spool.take(budget, after_id=self._live_cursor)
        handed = self._hand_all(live)
        if handed:
            self._live_cursor = live[handed - 1].id
        if handed < len(live):
            return
        # 2. backlog: a bounded share of the window, at a bounded rate
        budget = self.scheduler.backlog_budget(len(self._inflight), len(self._backlog_ids),
                                               time.monotonic())
        if budget <= 0:
            return
        while not self._replay_in.empty():
            self._replay.extend(self._replay_in.get_nowait())
        if self._replay:
            batch, self._replay = self._replay[:budget], self._replay[budget:]
            records = self.spool.take_ids(batch)
            n = self._hand_all(records)
            self._backlog_ids.update(r.id for r in records[:n])
            self.scheduler.spent(n)
            budget -= n
            if n < len(records) or budget <= 0:
                return
        records = self.spool.take(budget, after_id=self._backlog_cursor,
                                  before_id=self._live_from)
        n = self._hand_all(records)
        if n:
            self._backlog_cursor = records[n - 1].id
        self._backlog_ids.update(r.id for r in records[:n])
        self.scheduler.spent(n)
