"""The service's byte path under random and mutated input: in-process with hypothesis
(modest example counts for CI; scripts/fuzz-provision runs 100,000+), and over a real pty
against the real service process, after which the real CLI's `info` must answer right."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import random
import time

from hypothesis import given, settings
from hypothesis import strategies as st
from provision_support import ROOT, Service, cli

from edge_agent.provision import Server, ServeSettings, Unit
from scribelink import provisioning as p


def load_fuzzer():
    loader = importlib.machinery.SourceFileLoader("fuzz_provision",
                                                  str(ROOT / "scripts" / "fuzz-provision"))
    spec = importlib.util.spec_from_loader("fuzz_provision", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=12)
requests = st.fixed_dictionaries(
    {"cmd": st.sampled_from([*p.COMMANDS, "nope", ""]) | st.text(max_size=10)},
    optional={"args": st.dictionaries(st.sampled_from([*p.SETTINGS, "timeout_s", "x"]),
                                      json_values, max_size=4) | json_values})


def make_server(tmp_path) -> Server:
    return Server(Unit(ServeSettings(state_dir=tmp_path / "unit", alsa_device="sl_none",
                                     serial_number="SN-HYP", selftest_seconds=0.05)))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=300) | requests, max_size=12), st.randoms())
def test_service_survives_any_byte_stream_and_still_answers_hello(tmp_path_factory, items, rnd):
    server = make_server(tmp_path_factory.mktemp("s"))
    out = bytearray()
    for item in items:
        data = item if isinstance(item, bytes) else p.encode(
            p.KIND_REQUEST, rnd.randint(0, 0xFFFF), item)
        if isinstance(item, bytes) and rnd.random() < 0.5:
            # a corrupted copy of a real request
            good = bytearray(p.encode(p.KIND_REQUEST, 1, p.request("status")))
            good[rnd.randrange(len(good))] ^= 0xFF
            data += bytes(good)
        server.feed(data, 0.0, out.extend)
    decoder = p.Decoder()
    answers = decoder.feed(bytes(out), 0.0)
    assert decoder.pending == 0  # everything the service wrote is a whole, valid frame
    assert all(f.kind in (p.KIND_RESPONSE, p.KIND_PROGRESS) for f in answers)
    out.clear()
    server.feed(p.encode(p.KIND_REQUEST, 777, p.request("hello")), 100.0, out.extend)
    hello = [f for f in p.Decoder().feed(bytes(out), 0.0) if f.request_id == 777]
    assert hello and hello[-1].payload["result"]["serial"] == "SN-HYP"


def test_fuzzer_generator_in_process(tmp_path):
    """The same generator scripts/fuzz-provision uses, 5,000 inputs in CI."""
    fz = load_fuzzer()
    summary = fz.fuzz_in_process(5000, seed=11, state_dir=tmp_path / "unit")
    assert summary["hello_after"] == "ok"
    assert summary["frames_accepted"] > 500 and summary["crc_errors"] > 100


def test_fuzzing_over_a_real_pty_then_info_answers(tmp_path, cable, alsa_conf):
    fz = load_fuzzer()
    svc = Service(cable, tmp_path / "unit", alsa_conf, extra=["--selftest-seconds", "0.1"])
    try:
        svc.wait_ready()
        rng = random.Random(5)
        seeds = fz._seed_frames(rng)
        for _ in range(3000):
            cable.inject(fz.make_input(rng, seeds))
        time.sleep(p.PARTIAL_TIMEOUT_S + 1.0)
        t0 = time.monotonic()
        r = cli(cable, "info", "--json", timeout=60)
        assert r.returncode == 0, r.stderr
        hello = json.loads(r.stdout)
        assert hello["serial"] == "SN-TEST-0001" and hello["state"] in ("blank", "configured")
        assert time.monotonic() - t0 < 10
        assert svc.alive()
        assert svc.log.read_text().count("event=request ") > 300  # the fuzz really got in
    finally:
        svc.stop()
