"""The provisioning self-test's broker probe cannot evict the running agent (the broker
takes the client id from the certificate, so a probe with the unit's certificate IS the
unit's connection). Against the real mosquitto, with the agent's real MQTT uplink
(edge_agent/uplink.py) in a process of its own: while it runs, the probe checks the
certificate over TLS only and reports the agent's link, which stays up; with no agent
running, the probe connects as the unit without taking what the broker holds for it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from support import ROOT, wait_for

from edge_agent import selftest, uplink
from scribelink import topics

AGENT_LINK = """
import signal, sys, threading
from pathlib import Path
from edge_agent.config import BrokerConfig
from edge_agent.spool import Spool
from edge_agent.uplink import LINK_FILE, Uplink
url, ca, cert, key, state = sys.argv[1:6]
got = Path(state) / "control.jsonl"
def on_control(m):
    with open(got, "a") as f:
        f.write(type(m).__name__ + "\\n")
u = Uplink(BrokerConfig(url=url, ca_file=ca, cert_file=cert, key_file=key), "unit-a",
           Spool(Path(state) / "spool"), on_control=on_control,
           link_file=Path(state) / LINK_FILE)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
u.start()
stop.wait()
u.stop()
"""


def start_agent_link(broker, state: Path) -> subprocess.Popen:
    """The agent's MQTT side as its own process (named edge_agent, as the agent is)."""
    b = broker.pki["units"]["unit-a"]
    return subprocess.Popen([sys.executable, "-c", AGENT_LINK, broker.url, str(broker.pki["ca"]),
                             str(b.cert), str(b.key), str(state)], cwd=ROOT)


def probe(broker, state: Path) -> dict:
    b = broker.pki["units"]["unit-a"]
    return selftest.check_broker("127.0.0.1", broker.port, unit_id="unit-a",
                                 ca_file=str(broker.pki["ca"]), cert_file=str(b.cert),
                                 key_file=str(b.key),
                                 probe_topic=f"{topics.ROOT}/selftest/unit-a", timeout_s=5,
                                 clock_ok=True,
                                 agent_link_file=state / selftest.AGENT_LINK_FILE)


def relay_publish(broker, payload: bytes) -> None:
    """The relay's identity queues a control message for unit-a (QoS 1)."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="relay", protocol=mqtt.MQTTv5)
    import ssl

    ctx = ssl.create_default_context(cafile=str(broker.pki["ca"]))
    ctx.load_cert_chain(str(broker.pki["relay"].cert), str(broker.pki["relay"].key))
    c.tls_set_context(ctx)
    done = threading.Event()
    c.on_connect = lambda cl, *a: cl.publish(topics.control_topic("unit-a"), payload, qos=1)
    c.on_publish = lambda *a: done.set()
    c.connect("127.0.0.1", broker.port, clean_start=False)
    c.loop_start()
    assert done.wait(5)
    c.disconnect()
    c.loop_stop()


def test_the_probe_never_evicts_the_agent_nor_takes_its_queued_messages(broker, tmp_path):
    assert selftest.AGENT_LINK_FILE == uplink.LINK_FILE
    state = tmp_path / "state"
    state.mkdir()
    link = state / uplink.LINK_FILE
    agent = start_agent_link(broker, state)
    try:
        wait_for(lambda: link.exists() and json.loads(link.read_text())["connected"], 10,
                 "the agent's link up")
        up_since = json.loads(link.read_text())["at"]
        for _ in range(3):
            r = probe(broker, state)
            assert r["ok"] and r["probe"] == "tls" and r["agent_link"] == "connected", r
        # the agent's connection was never replaced: its link file has not moved
        assert json.loads(link.read_text()) == {**json.loads(link.read_text()),
                                                "connected": True, "at": up_since}
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(10) == 0

    # no agent now: while it is away a control message is queued in its session; the full
    # probe (a real MQTT connection as the unit, the ACL proved) leaves it queued
    assert json.loads(link.read_text())["reason"] == "stopped"
    relay_publish(broker, json.dumps({"type": "replay", "unit": "unit-a",
                                      "since_us": 1}).encode())
    r = probe(broker, state)
    assert r["ok"] and r["acl"] == "confined" and "probe" not in r, r
    agent = start_agent_link(broker, state)
    try:
        wait_for(lambda: (state / "control.jsonl").exists()
                 and "Replay" in (state / "control.jsonl").read_text(), 10,
                 "the queued control message, delivered to the agent")
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(10)
    broker.stop()  # its log is block-buffered until then
    log = (broker.dir / "mosquitto.log").read_text()
    # one takeover at most: none while the agent ran (the probe's own connection is the
    # only other unit-a connection, and it came when the agent was gone)
    assert "Client unit-a already connected" not in log
