"""MQTT 5 uplink (paho-mqtt over mTLS): publishes the spool, removes a record only on PUBACK.

paho keeps its own in-flight messages across reconnects and resends them, so the pump
hands each spool record to paho once per process; after a restart the spool replays.
"""

from __future__ import annotations

import json
import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.config import BrokerConfig
from edge_agent.spool import Spool
from scribelink import messages as msgs
from scribelink import topics

log = logging.getLogger("edge_agent.uplink")

SESSION_EXPIRY_S = 24 * 3600


class Uplink:
    def __init__(
        self,
        cfg: BrokerConfig,
        unit_id: str,
        spool: Spool,
        *,
        on_control: Callable[[dict], None],
    ) -> None:
        self.cfg = cfg
        self.unit_id = unit_id
        self.spool = spool
        self.on_control = on_control
        self.connected = False
        self.last_error: str | None = None
        self.published = 0
        self.acked = 0
        self._acks: queue.Queue[tuple[int, bool, str]] = queue.Queue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._inflight: dict[int, int] = {}  # paho mid -> spool id
        self._cursor = 0  # highest spool id handed to paho in this process
        self._retry: list[int] = []
        self._status: dict | None = None
        self._thread: threading.Thread | None = None
        self._client = self._make_client()

    # ------------------------------------------------------------------ paho

    def _make_client(self) -> mqtt.Client:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"unit-{self.unit_id}",
            protocol=mqtt.MQTTv5,
        )
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.cfg.ca_file)
        ctx.load_cert_chain(self.cfg.cert_file, self.cfg.key_file)
        c.tls_set_context(ctx)
        c.max_inflight_messages_set(self.cfg.inflight_max)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(min_delay=1, max_delay=16)
        c.will_set(
            topics.unit_topic(self.unit_id, topics.STATUS),
            msgs.dumps(msgs.offline_will(self.unit_id)),
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
            log.error("event=connect_refused reason=%s", reason_code)
            return
        self.connected = True
        log.info("event=connected session_present=%s", flags.session_present)
        client.subscribe(topics.control_topic(self.unit_id), qos=1)
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected:
            log.warning("event=disconnected reason=%s", reason_code)
        self.connected = False

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # runs in paho's thread with paho's locks held: hand over, never block here
        self._acks.put((mid, not reason_code.is_failure, str(reason_code)))
        self._wake.set()

    def _on_message(self, client, userdata, message) -> None:
        try:
            ctl = msgs.check_control(msgs.loads(message.payload, what="control message"))
        except (msgs.MessageError, ValueError) as e:
            log.warning("event=control_rejected error=%s", e)
            return
        try:
            self.on_control(ctl)
        except Exception:
            log.exception("event=control_handler_failed type=%s", ctl.get("type"))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        host, port = self.cfg.host_port
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self._client.connect_async(
            host, port, keepalive=self.cfg.keepalive_s, clean_start=False, properties=props
        )
        self._client.loop_start()
        self._thread = threading.Thread(target=self._pump, name="uplink-pump", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def set_status(self, status: dict) -> None:
        self._status = status
        self._wake.set()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout_s)
        try:
            if self.connected:
                # a clean stop is not "lost": the will is not sent, so say offline ourselves
                info = self._client.publish(
                    topics.unit_topic(self.unit_id, topics.STATUS),
                    msgs.dumps({**(self._status or {}), **msgs.offline_will(self.unit_id),
                                "link": "stopped"}),
                    qos=1, retain=True,
                )
                info.wait_for_publish(1.0)
            self._client.disconnect()
        except Exception:
            pass
        self._client.loop_stop()

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
            if self._status is not None and self._status is not last_status_sent:
                last_status_sent = self._status
                self._client.publish(
                    topics.unit_topic(self.unit_id, topics.STATUS),
                    msgs.dumps(self._status), qos=0, retain=True)
            self._fill_window()

    def _drain_acks(self) -> None:
        while True:
            try:
                mid, ok, reason = self._acks.get_nowait()
            except queue.Empty:
                return
            rid = self._inflight.pop(mid, None)
            if rid is None:
                continue
            if ok:
                self.spool.ack(rid)
                self.acked += 1
            else:
                # the broker refused this message (e.g. not authorised): keep it, say so
                self.last_error = f"broker refused publish: {reason}"
                log.error("event=publish_refused spool_id=%s reason=%s", rid, reason)
                self._retry.append(rid)

    def _fill_window(self) -> None:
        room = self.cfg.inflight_max - len(self._inflight)
        if room <= 0:
            return
        for rec in self.spool.pending(room, after_id=self._cursor):
            info = self._client.publish(rec.topic, rec.payload, qos=1, retain=rec.retain)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                return  # not taken; this record is tried again on the next fill
            # NO_CONN: paho keeps the message and sends it once reconnected
            self._inflight[info.mid] = rec.id
            self._cursor = rec.id
            self.published += 1
            if info.rc == mqtt.MQTT_ERR_NO_CONN:
                return


def describe(status: dict) -> str:
    return json.dumps(status, sort_keys=True)
