"""The uplink's MQTT 5 topic aliases against real mosquitto (TLS, the unit's certificate),
through a TCP proxy that counts the unit's upload and can cut the link."""

from __future__ import annotations

import ssl
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from support import TcpProxy, make_broker, wait_for

from edge_agent.config import BrokerConfig
from edge_agent.spool import Spool
from edge_agent.uplink import Uplink
from scribelink import topics

UNIT = "unit-exam-1"
BODY = 150  # about a sealed 40 ms Opus chunk at 16 kb/s


class Relay:
    """Subscribes as the relay and keeps (topic, seq) of every audio message."""

    def __init__(self, b) -> None:
        self.got: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        ready = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="relay-test",
                        protocol=mqtt.MQTTv5)
        ctx = ssl.create_default_context(cafile=str(b.pki["ca"]))
        ctx.load_cert_chain(str(b.pki["relay"].cert), str(b.pki["relay"].key))
        c.tls_set_context(ctx)
        c.on_connect = lambda cl, *a: cl.subscribe(topics.unit_topic(UNIT, topics.AUDIO), 1)
        c.on_subscribe = lambda *a: ready.set()
        c.on_message = self._on_message
        c.connect("127.0.0.1", b.port)
        c.loop_start()
        assert ready.wait(10)
        self.c = c

    def _on_message(self, client, userdata, m) -> None:
        with self.lock:
            self.got.append((m.topic, m.payload[0] | m.payload[1] << 8))

    def seqs(self) -> set[int]:
        with self.lock:
            return {q for _, q in self.got}


def test_each_chunk_names_its_topic_by_alias_and_a_cut_loses_nothing(tmp_path):
    """After its first publish on a connection, a topic costs two bytes: a chunk's PUBLISH
    and TLS record add ~33 bytes, not ~70. A cut with alias-only PUBLISHes still in paho's
    hands (it would resend them where the alias means nothing) loses nothing: they are
    taken back at the reconnect and sent again, topic and all."""
    b = make_broker(tmp_path, [UNIT])
    relay = Relay(b)
    proxy = TcpProxy(b.port)
    ident = b.pki["units"][UNIT]
    spool = Spool(tmp_path / "spool")
    up = Uplink(BrokerConfig(url=f"mqtts://127.0.0.1:{proxy.port}", ca_file=str(b.pki["ca"]),
                             cert_file=str(ident.cert), key_file=str(ident.key)),
                UNIT, spool, on_control=lambda m: None)
    topic = topics.unit_topic(UNIT, topics.AUDIO)
    seq = 0

    def put(n: int) -> None:
        nonlocal seq
        for _ in range(n):
            spool.put_many([{"topic": topic, "payload": seq.to_bytes(2, "little") * (BODY // 2),
                             "kind": "audio", "session": "ab" * 16, "seq": seq,
                             "audio_ms": 40}])
            seq += 1
            up.wake()

    def all_acked() -> bool:
        return spool.unacked_count() == 0

    up.start()
    try:
        wait_for(lambda: up.connected, 15, "the uplink to connect")
        put(10)
        wait_for(all_acked, 15, "the first records to be acked")
        before = proxy.upstream_bytes
        put(200)
        wait_for(all_acked, 15, "200 records to be acked")
        per_chunk = (proxy.upstream_bytes - before) / 200 - BODY
        assert per_chunk < 40, per_chunk  # topic spelled out: 2 + 36 bytes more
        put(40)  # in flight, some of them, when the link goes
        proxy.cut()
        put(40)
        wait_for(lambda: not up.connected, 15, "the uplink to see the cut")
        put(20)
        proxy.restore()
        wait_for(all_acked, 30, "everything to be acked after the cut")
        wait_for(lambda: relay.seqs() == set(range(seq)), 15, "the relay to have every seq")
        assert {t for t, _ in relay.got} == {topic}
    finally:
        up.stop()
        relay.c.disconnect()
        relay.c.loop_stop()
        proxy.close()
        b.stop()
