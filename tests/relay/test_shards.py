"""Units sharded over two brokers: one relay subscribes to both, stores and delivers both
shards' streams, learns which broker each unit is on, and sends each unit's control
messages (the retained assignment) to that unit's broker."""

from __future__ import annotations

import json

from relay_streams import RawScribe, open_message, sealed_chunks, unit_session, wait_until
from support import Broker, UnitPublisher, make_relay, relay_clinic

from cloud_relay import broker as broker_mod


def second_broker(tmp_path, first: Broker) -> Broker:
    port = broker_mod.free_port()
    conf = broker_mod.write_config(tmp_path / "broker2", port=port, ca=first.pki["ca"],
                                   cert=first.pki["broker"].cert, key=first.pki["broker"].key)
    b = Broker(tmp_path / "broker2", port, conf, first.pki)
    b.start()
    return b


def test_a_relay_serves_units_on_two_broker_shards(broker, tmp_path, relay_store):
    b2 = second_broker(tmp_path, broker)
    relay = make_relay(tmp_path, broker, store_url=relay_store,
                       extra=f'broker_urls = ["{broker.url}", "{b2.url}"]\n')
    try:
        relay.add_user("s1", "scribe", "s1-password")
        for u in ("unit-a", "unit-b"):
            assert relay.api("POST", "/api/admin/units", json={"id": u, "room": u}).is_success
        ua, ub = UnitPublisher(broker, "unit-a"), UnitPublisher(b2, "unit-b")
        sa, sb = unit_session("unit-a"), unit_session("unit-b")
        scribe = RawScribe([relay.url], relay.token("s1")).start()
        # the relay learns each unit's shard from its traffic
        ua.publish("session", open_message(sa))
        ub.publish("session", open_message(sb))
        wait_until(lambda: {u["id"]: u["broker"] for u in relay.api(
            "GET", "/api/admin/units").json()} == {"unit-a": broker.url, "unit-b": b2.url},
            10, "both units' brokers recorded")
        for u in ("unit-a", "unit-b"):
            assert relay_clinic(relay).assign(u, ["s1"]).is_success
        for c in sealed_chunks(sa, 20):
            ua.publish("audio", c)
        for c in sealed_chunks(sb, 20):
            ub.publish("audio", c)
        wait_until(lambda: len(scribe.audio_seqs()) >= 40, 15, "both shards' audio")
        scribe.stop()
        by_session: dict[str, list[int]] = {}
        for kind, session, seq, _ in scribe.frames:
            if kind == "audio":
                by_session.setdefault(session, []).append(seq)
        assert by_session == {sa.session_id.hex(): list(range(20)),
                              sb.session_id.hex(): list(range(20))}
        # each unit's assignment reached it on its own broker
        for unit in (ua, ub):
            wait_until(lambda unit=unit: any(json.loads(c)["type"] == "assignment"
                                             for c in unit.control), 10, "the assignment")
        ua.close()
        ub.close()
    finally:
        relay.stop()
        b2.stop()
