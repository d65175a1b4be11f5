"""Identity at the broker: mosquitto (real, mTLS) takes each client's identity (username and
client id) from its certificate, confines each unit to its own topics, and speaks TLS 1.3
only."""

from __future__ import annotations

import socket
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
        self.disconnected = threading.Event()
        self.disconnect_rc = None
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
        c.on_disconnect = self._on_disconnect
        self.c = c

    def _on_disconnect(self, c, u, flags, rc, props):
        self.disconnect_rc = rc
        self.disconnected.set()

    def _on_connect(self, c, u, flags, rc, props):
        self.connect_rc = rc
        self.connack.set()

    def _on_subscribe(self, c, u, mid, codes, props):
        self.sub_codes = codes
        self.suback.set()

    def _on_publish(self, c, u, mid, rc, props):
        self.pub_rc = rc
        self.puback.set()

    def connect(self, port: int, clean_start: bool = True, reconnect: bool = True) -> None:
        if not reconnect:  # a probe that was taken over stays off for the test
            self.c.reconnect_delay_set(30, 60)
        self.c.connect("127.0.0.1", port, clean_start=clean_start)
        self.c.loop_start()
        assert self.connack.wait(5), "no CONNACK"
        assert not self.connect_rc.is_failure, self.connect_rc

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def unit_a(broker):
    p = Probe(broker, "unit-a", "unit-a")
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
    unit_b = Probe(broker, "unit-b", "unit-b")
    relay = Probe(broker, "relay", "relay")
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
    relay = Probe(broker, "relay", "relay")
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
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="unit-b", protocol=mqtt.MQTTv5)
    ctx = ssl.create_default_context(cafile=str(broker.pki["ca"]))
    b = broker.pki["units"]["unit-b"]
    ctx.load_cert_chain(str(b.cert), str(b.key))
    c.tls_set_context(ctx)
    c._test_port = broker.port
    assert not _refused(c)
    c.disconnect()


def test_a_client_id_asked_for_is_ignored_the_certificate_decides(broker, unit_a):
    """unit-b's certificate asking for unit-a's client id (and for the relay's) evicts
    nobody: the broker names the connection after the certificate. The proof that it does:
    two unit-b connections asking for different ids still share one id, unit-b, so the
    second takes the first over."""
    relay = Probe(broker, "relay", "relay")
    relay.connect(broker.port, clean_start=False)
    as_unit_a = Probe(broker, "unit-b", "unit-a")
    as_unit_a.connect(broker.port, reconnect=False)  # clean start: it would wipe unit-a's
    as_relay = Probe(broker, "unit-b", "relay")
    try:
        assert as_unit_a.disconnected.wait(0.0) is False
        as_relay.connect(broker.port, reconnect=False)
        # the second unit-b connection took the first over: both were "unit-b"
        assert as_unit_a.disconnected.wait(5), "the first unit-b connection was not replaced"
        # ...while unit-a and the relay, whose ids were asked for, were never touched
        assert not unit_a.disconnected.is_set() and not relay.disconnected.is_set()
        # and each still works as itself: the relay hears unit-a
        relay.c.subscribe(topics.unit_topic("unit-a", topics.STATUS), qos=1)
        assert relay.suback.wait(5)
        unit_a.c.publish(topics.unit_topic("unit-a", topics.STATUS), b"still me", qos=1)
        for _ in range(50):
            if any(m.payload == b"still me" for m in relay.messages):
                break
            threading.Event().wait(0.1)
        assert any(m.payload == b"still me" for m in relay.messages)
        # the impostor is unit-b, with unit-b's topics and nothing else (mosquitto 2.0
        # answers a refused publish with "not authorized" and then closes the connection)
        as_relay.c.publish(topics.control_topic("unit-a"), b"x", qos=1)
        assert as_relay.puback.wait(5) and as_relay.pub_rc.value == 0x87
        assert not unit_a.disconnected.is_set() and not relay.disconnected.is_set()
    finally:
        for p in (as_relay, as_unit_a, relay):
            p.close()
    broker.stop()  # its log is block-buffered until then
    log = (broker.dir / "mosquitto.log").read_text()  # mosquitto's own account
    assert "Client unit-b already connected, closing old connection." in log
    assert "Client unit-a already connected" not in log and "Client relay already" not in log


def test_tls_1_2_is_refused_and_1_3_uses_an_aead_suite(broker):
    """A client that can speak at most TLS 1.2 never gets a handshake; the one that
    connects negotiates TLS 1.3 (whose suites are all AEAD)."""
    b = broker.pki["units"]["unit-b"]
    old = ssl.create_default_context(cafile=str(broker.pki["ca"]))
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    old.load_cert_chain(str(b.cert), str(b.key))

    with socket.create_connection(("127.0.0.1", broker.port), 5) as raw, \
            pytest.raises(ssl.SSLError) as e:
        old.wrap_socket(raw, server_hostname="127.0.0.1")
    assert "VERSION" in e.value.reason.upper(), e.value.reason  # a protocol version alert

    new = ssl.create_default_context(cafile=str(broker.pki["ca"]))
    new.load_cert_chain(str(b.cert), str(b.key))
    with socket.create_connection(("127.0.0.1", broker.port), 5) as raw, \
            new.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        name, version, _bits = tls.cipher()
    assert version == "TLSv1.3" and ("GCM" in name or "CHACHA20_POLY1305" in name), name
