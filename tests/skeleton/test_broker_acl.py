"""Identity at the broker: mosquitto (real, mTLS) confines each unit to its own topics."""

from __future__ import annotations

import ssl
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from scribelink import topics


class Probe:
    """A paho MQTT 5 client that records CONNACK, SUBACK and PUBACK reason codes."""

    def __init__(self, broker, cert_name: str | None, client_id: str) -> None:
        self.connack = threading.Event()
        self.connect_rc = None
        self.suback = threading.Event()
        self.sub_codes = None
        self.puback = threading.Event()
        self.pub_rc = None
        self.messages: list = []
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        ctx = ssl.create_default_context(cafile=str(broker.pki["ca"]))
        if cert_name is not None:
            b = broker.pki["units"].get(cert_name) or broker.pki[cert_name]
            ctx.load_cert_chain(str(b.cert), str(b.key))
        c.tls_set_context(ctx)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_publish = self._on_publish
        c.on_message = lambda cl, u, m: self.messages.append(m)
        self.c = c

    def _on_connect(self, c, u, flags, rc, props):
        self.connect_rc = rc
        self.connack.set()

    def _on_subscribe(self, c, u, mid, codes, props):
        self.sub_codes = codes
        self.suback.set()

    def _on_publish(self, c, u, mid, rc, props):
        self.pub_rc = rc
        self.puback.set()

    def connect(self, port: int) -> None:
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.connack.wait(5), "no CONNACK"
        assert not self.connect_rc.is_failure, self.connect_rc

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def unit_a(broker):
    p = Probe(broker, "unit-a", "unit-unit-a")
    p.connect(broker.port)
    yield p
    p.close()


def test_unit_publishes_to_its_own_topics(unit_a):
    unit_a.c.publish(topics.unit_topic("unit-a", topics.STATUS), b"{}", qos=1)
    assert unit_a.puback.wait(5)
    assert not unit_a.pub_rc.is_failure


def test_unit_cannot_publish_to_another_units_topics(unit_a):
    for leaf in (topics.AUDIO, topics.SESSION, topics.STATUS, topics.CONTROL):
        unit_a.puback.clear()
        unit_a.c.publish(topics.unit_topic("unit-b", leaf), b"x", qos=1)
        assert unit_a.puback.wait(5)
        assert unit_a.pub_rc.is_failure, f"publish to unit-b/{leaf} was accepted"
        assert unit_a.pub_rc.value == 0x87  # Not authorized


def test_unit_cannot_receive_another_units_topics(broker, unit_a):
    """mosquitto grants the SUBSCRIBE but its ACL filters every message at delivery:
    unit-a, subscribed to everything, receives only its own control messages."""
    unit_a.c.subscribe([(topics.control_topic("unit-b"), 1),
                        (topics.unit_topic("unit-b", topics.AUDIO), 1),
                        ("sl/v1/unit/+/audio", 1), ("#", 1)])
    assert unit_a.suback.wait(5)
    unit_b = Probe(broker, "unit-b", "unit-unit-b")
    relay = Probe(broker, "relay", "relay-probe")
    unit_b.connect(broker.port)
    relay.connect(broker.port)
    try:
        unit_b.c.publish(topics.unit_topic("unit-b", topics.AUDIO), b"b-audio", qos=1)
        assert unit_b.puback.wait(5) and not unit_b.pub_rc.is_failure
        relay.c.publish(topics.control_topic("unit-b"), b"b-control", qos=1)
        relay.c.publish(topics.control_topic("unit-a"), b"a-control", qos=1)
        for _ in range(50):
            if any(m.payload == b"a-control" for m in unit_a.messages):
                break
            threading.Event().wait(0.1)
        payloads = [m.payload for m in unit_a.messages]
        assert b"a-control" in payloads  # the positive control: delivery works
        assert b"b-audio" not in payloads and b"b-control" not in payloads
    finally:
        unit_b.close()
        relay.close()


def test_unit_may_subscribe_to_its_own_control(unit_a):
    unit_a.c.subscribe(topics.control_topic("unit-a"), qos=1)
    assert unit_a.suback.wait(5)
    assert not unit_a.sub_codes[0].is_failure


def test_relay_hears_unit_a_but_not_unit_a_posing_as_unit_b(broker, unit_a):
    relay = Probe(broker, "relay", "relay-probe")
    relay.connect(broker.port)
    try:
        relay.c.subscribe("sl/v1/unit/+/status", qos=1)
        assert relay.suback.wait(5)
        unit_a.c.publish(topics.unit_topic("unit-b", topics.STATUS), b"forged", qos=1)
        unit_a.puback.wait(5)
        unit_a.puback.clear()
        unit_a.c.publish(topics.unit_topic("unit-a", topics.STATUS), b"genuine", qos=1)
        assert unit_a.puback.wait(5)
        deadline = threading.Event()
        for _ in range(50):
            if relay.messages:
                break
            deadline.wait(0.1)
        payloads = [m.payload for m in relay.messages]
        assert b"genuine" in payloads and b"forged" not in payloads
    finally:
        relay.close()


def _refused(c) -> bool:
    """True if the broker never completes an MQTT connection for this client."""
    connected = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p: (not rc.is_failure) and connected.set()
    try:
        c.connect("127.0.0.1", c._test_port)
        c.loop_start()
        return not connected.wait(3)
    except (ssl.SSLError, OSError, ConnectionError):
        return True
    finally:
        c.loop_stop()


def test_connection_without_client_certificate_is_refused(broker):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="anonymous", protocol=mqtt.MQTTv5)
    c.tls_set_context(ssl.create_default_context(cafile=str(broker.pki["ca"])))
    c._test_port = broker.port
    assert _refused(c), "broker accepted a client without a certificate"


def test_certificate_from_another_ca_is_refused(broker, tmp_path):
    from cloud_relay import pki

    rogue = pki.make_local_pki(tmp_path / "rogue", ["unit-b"])
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="rogue", protocol=mqtt.MQTTv5)
    ctx = ssl.create_default_context(cafile=str(broker.pki["ca"]))
    ctx.load_cert_chain(str(rogue["units"]["unit-b"].cert), str(rogue["units"]["unit-b"].key))
    c.tls_set_context(ctx)
    c._test_port = broker.port
    assert _refused(c), "broker accepted a certificate from another CA"


def test_valid_certificate_is_accepted_by_the_same_check(broker):
    """The refusal checks above can fail: a proper unit certificate connects."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="unit-unit-b", protocol=mqtt.MQTTv5)
    ctx = ssl.create_default_context(cafile=str(broker.pki["ca"]))
    b = broker.pki["units"]["unit-b"]
    ctx.load_cert_chain(str(b.cert), str(b.key))
    c.tls_set_context(ctx)
    c._test_port = broker.port
    assert not _refused(c)
    c.disconnect()
