"""`scripts/bench relay --units N --rate R --seconds S [--relays K]`: the relay under a
fleet's load, the real system on loopback.

mosquitto with mTLS and the project's ACL; K relay processes (`python -m cloud_relay
serve`) sharing one store and one MQTT 5 shared subscription; N units, each its own MQTT
connection with its own certificate (clean start off, QoS 1 sealed chunks, a QoS 0
retained status once a second, TCP_NODELAY); one scribe WebSocket per 10 units, spread
over the relays. Chunks are sealed for real (AES-256-GCM under a per-unit session key);
a chunk's capture time is the moment it is published, so "added latency" is publish ->
scribe WebSocket, through broker, relay and store.

The load generator is this one process: every unit's paho client on one asyncio loop
(paho's external-loop hooks), publishes scheduled round-robin, scribes on the same loop.
Its own CPU is printed beside the relay's and the broker's, so a reader can see what the
box spent where. `--ramp 25,50,100` runs several sizes in a row.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import psutil
import websockets
from bench_common import record_section
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_relay import broker, pki
from cloud_relay.config import RelayConfig
from edge_agent.session import Session, Signer
from scribelink import codec as codecs
from scribelink import envelope as env
from scribelink import messages as msgs
from scribelink import scribews, tomlconf, topics
from scribelink.authority import ClinicAuthority

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PY_SPY = str(Path(PY).parent / "py-spy")  # installed beside the interpreter (bench extra)
UNITS_PER_SCRIBE = 10
BUDGET_CORE_PCT_PER_1000 = 8.0  # docs/ARCHITECTURE budgets: 0.08 core-s per 1,000 messages
BUDGET_P99_MS = 50.0
OTHER_CPU_WARN = 10.0  # % of a core used by other jobs past which the figures are suspect


# ---------------------------------------------------------------------- the system


@dataclass
class System:
    tmp: Path
    broker_proc: subprocess.Popen
    relays: list[subprocess.Popen]
    urls: list[str]
    pki: dict
    broker_port: int
    pg: object | None = None
    store_url: str = ""

    def stop(self) -> None:
        for p in self.relays:
            if p.poll() is None:
                p.terminate()
        for p in self.relays:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        self.broker_proc.terminate()
        self.broker_proc.wait(10)
        if self.pg is not None:
            self.pg.stop()  # type: ignore[attr-defined]


def free_port() -> int:
    return broker.free_port()


def start_system(tmp: Path, units: list[str], k: int, store: str, batch_ms: float) -> System:
    ids = [f"relay-{i}" for i in range(k)]  # one certificate (broker identity) per relay
    p = pki.make_local_pki(tmp / "pki", units, relays=ids)
    bport = free_port()
    conf = broker.write_config(tmp / "broker", port=bport, ca=p["ca"], cert=p["broker"].cert,
                               key=p["broker"].key, crl=p["crl"], relay_identities=ids)
    bproc = broker.start(conf, bport, tmp / "mosquitto.log")
    pg = None
    if store == "postgres":
        from cloud_relay.store.pgtemp import PgCluster

        pg = PgCluster()
        store_url = pg.database()
    else:
        store_url = f"sqlite:///{tmp / 'relay.db'}"
    confs, urls = [], []
    for cid in ids:
        d = tmp / cid
        d.mkdir()
        port = free_port()
        c = d / "relay.toml"
        conf = {"data_dir": str(d), "http_port": port,
                "broker_url": f"mqtts://127.0.0.1:{bport}", "broker_ca_file": str(p["ca"]),
                "broker_cert_file": str(p["relays"][cid].cert),
                "broker_key_file": str(p["relays"][cid].key), "broker_client_id": cid,
                "store_url": store_url, "store_batch_ms": batch_ms, "relay_peers": list(ids)}
        if k > 1:
            conf["share_group"] = "relays"
        c.write_text(tomlconf.dumps(conf))
        confs.append(c)
        urls.append(f"http://127.0.0.1:{port}")
    pw = tmp / "admin.pw"
    pw.write_text("admin-password")
    subprocess.run([PY, "-m", "cloud_relay", "add-user", "--config", str(confs[0]), "--id",
                    "admin", "--name", "admin", "--role", "admin", "--password-file", str(pw)],
                   check=True, cwd=ROOT, capture_output=True)
    procs = []
    for c in confs:
        with open(c.parent / "relay.log", "ab") as log:  # the child keeps its own handle
            procs.append(subprocess.Popen([PY, "-m", "cloud_relay", "serve", "--config",
                                           str(c)], cwd=ROOT, stdout=log,
                                          stderr=subprocess.STDOUT))
    sysm = System(tmp, bproc, procs, urls, p, bport, pg, store_url)
    deadline = time.monotonic() + 30
    for url, proc in zip(urls, procs, strict=True):
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).json().get("broker"):
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                sysm.stop()
                raise RuntimeError(f"relay {url} did not start; see {tmp}")
            time.sleep(0.1)
    return sysm


def setup_registry(url: str, units: list[str]) -> dict[str, str]:
    """Units, one scribe per 10 units, assignments; returns scribe -> token."""
    h = {"Authorization": "Bearer " + httpx.post(url + "/api/login", json={
        "user": "admin", "password": "admin-password"}).json()["token"]}
    tokens = {}
    # the clinic authority signs the assignments (the relay cannot: docs/trust.md)
    authority = ClinicAuthority.create()
    with httpx.Client(base_url=url, headers=h, timeout=30) as c:
        c.put("/api/admin/authority",
              json={"public_key": authority.public_b64()}).raise_for_status()
        for j in range(0, len(units), UNITS_PER_SCRIBE):
            sid = f"scribe-{j // UNITS_PER_SCRIBE:04d}"
            c.post("/api/admin/users", json={"id": sid, "name": sid, "role": "scribe",
                                             "password": "scribe-password"}).raise_for_status()
            for u in units[j:j + UNITS_PER_SCRIBE]:
                c.post("/api/admin/units", json={"id": u, "room": u}).raise_for_status()
                st = authority.assign(unit=u, room=u, scribes=[sid],
                                      now_us=time.time_ns() // 1000)
                c.put("/api/admin/assignments",
                      json={"statement": st.to_dict()}).raise_for_status()
            tokens[sid] = httpx.post(url + "/api/login", json={
                "user": sid, "password": "scribe-password"}).json()["token"]
    return tokens


# ---------------------------------------------------------------------- load generator


class LoopClient:
    """A paho client driven by an asyncio loop (paho's external event-loop hooks)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: mqtt.Client) -> None:
        self.loop, self.client = loop, client
        self.misc: asyncio.Task | None = None
        client.on_socket_open = self._open
        client.on_socket_close = self._close
        client.on_socket_register_write = self._reg
        client.on_socket_unregister_write = self._unreg

    def _read(self) -> None:
        c = self.client
        c.loop_read(100)
        sock = c.socket()
        while sock is not None and isinstance(sock, ssl.SSLSocket) and sock.pending():
            c.loop_read(100)

    def _open(self, client, userdata, sock) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.loop.add_reader(sock, self._read)
        self.misc = self.loop.create_task(self._misc())

    def _close(self, client, userdata, sock) -> None:
        self.loop.remove_reader(sock)
        if self.misc:
            self.misc.cancel()

    def _reg(self, client, userdata, sock) -> None:
        self.loop.add_writer(sock, client.loop_write)

    def _unreg(self, client, userdata, sock) -> None:
        self.loop.remove_writer(sock)

    async def _misc(self) -> None:
        # paho's keepalive wants a call each second
        while self.client.loop_misc() == mqtt.MQTT_ERR_SUCCESS:  # noqa: ASYNC110
            await asyncio.sleep(1)


@dataclass
class Unit:
    uid: str
    client: mqtt.Client
    session: Session
    topic_audio: str
    topic_status: str
    connected: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Tally:
    """What the scribes received: first arrival latency per (session, seq), duplicates."""

    first: dict[bytes, int] = field(default_factory=dict)  # session+seq -> latency us
    dups: int = 0
    frames: int = 0


async def connect_units(loop, sysm: System, uids: list[str]) -> list[Unit]:
    scribe_key = X25519PrivateKey.generate().public_key()
    units = []
    for uid in uids:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=uid, protocol=mqtt.MQTTv5)
        ctx = ssl.create_default_context(cafile=str(sysm.pki["ca"]))
        ident = sysm.pki["units"][uid]
        ctx.load_cert_chain(str(ident.cert), str(ident.key))
        c.tls_set_context(ctx)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        # the relay routes on clear headers and checks no signature: any unit key will do
        s = Session(unit_id=uid, scribes=[("scribe", "dev", scribe_key)], recovery=None,
                    signer=Signer(Ed25519PrivateKey.generate(), None),
                    sample_rate=16000, chunk_ms=40, started_us=time.time_ns() // 1000)
        u = Unit(uid, c, s, topics.unit_topic(uid, topics.AUDIO),
                 topics.unit_topic(uid, topics.STATUS))
        c.on_connect = lambda cl, ud, fl, rc, pr, u=u: loop.call_soon(u.connected.set)
        LoopClient(loop, c)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 24 * 3600
        c.connect("127.0.0.1", sysm.broker_port, keepalive=30, clean_start=False,
                  properties=props)
        units.append(u)
    await asyncio.wait_for(asyncio.gather(*(u.connected.wait() for u in units)), 60)
    for u in units:
        u.client.publish(topics.unit_topic(u.uid, topics.SESSION),
                         msgs.dumps(u.session.open_message()), qos=1)
    return units


async def scribe(url: str, token: str, tally: Tally, ready: asyncio.Event,
                 stop: asyncio.Event, batch: bool) -> None:
    ws_url = url.replace("http", "ws", 1) + "/ws"
    async with websockets.connect(ws_url, max_size=2**21, compression=None) as sock:
        await sock.send(json.dumps(scribews.Hello(token=token, batch=batch).to_dict()))
        await sock.recv()
        ready.set()
        first, now_ns = tally.first, time.time_ns
        cap = struct.Struct(">Q")
        while not stop.is_set():
            try:
                msg = await asyncio.wait_for(sock.recv(), 0.5)
            except TimeoutError:
                continue
            if not isinstance(msg, bytes):
                continue
            at_us = now_ns() // 1000
            for _, envelope in scribews.parse_binary(msg):
                tally.frames += 1
                key = envelope[8:32]  # session id + seq
                if key in first:
                    tally.dups += 1
                    continue
                first[key] = at_us - cap.unpack_from(envelope, 32)[0]


@dataclass
class Result:
    units: int
    rate: float
    seconds: float
    relays: int
    store: str
    offered: float = 0.0
    delivered: float = 0.0
    lost: int = 0
    dups: int = 0
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    relay_cpu: float = 0.0
    relay_rss_mb: float = 0.0
    relay_sys: float = 0.0  # of relay_cpu, in the kernel
    broker_cpu: float = 0.0
    gen_cpu: float = 0.0
    gen_lag_ms: float = 0.0
    load1: float = 0.0  # the box's 1-minute load average at the end (other jobs included)
    store_cpu: float = 0.0  # the PostgreSQL server's processes (0 for SQLite: in the relay)
    slow_consumer_events: int = 0  # scribes that fell behind and caught up from the store
    p99_in: float = 0.0  # publish -> stored by the relay (generator, broker, relay in)
    p99_out: float = 0.0  # stored -> at the scribe (relay fan-out, WebSocket, generator)
    fills: int = 0  # queries a relay made for rows other relays stored
    codec: str = "opus"  # what the chunks carry: Opus at the default bitrate, or PCM
    # the box's CPU in the window outside the relays, broker, generator and PostgreSQL:
    # other jobs (and the kernel's work for them); they move the relay's figures
    other_cpu: float = 0.0

    @property
    def cost(self) -> float:
        return self.relay_cpu / max(self.delivered / 1000, 1e-9)


def pg_cpu(sysm: System) -> dict[int, float]:
    """CPU seconds of the PostgreSQL cluster's processes (postmaster and backends)."""
    if sysm.pg is None:
        return {}
    pidfile = sysm.pg.dir / "data" / "postmaster.pid"  # type: ignore[attr-defined]
    pid = int(pidfile.read_text().split()[0])
    out = {}
    try:
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            try:
                ct = p.cpu_times()
                out[p.pid] = ct.user + ct.system
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    return out


def stored_times(sysm: System) -> dict[bytes, int]:
    """session id + seq (as in the envelope header) -> when the relay stored the chunk: rows
    and packed segments alike (docs/archive.md), read through the relay's Store."""
    from cloud_relay.store import Store

    with tempfile.TemporaryDirectory() as d:
        st = Store.open(sysm.store_url, d, pool_size=1)
        try:
            out = {}
            for (session,) in st.db.query("SELECT session FROM sessions"):
                for _, seq, _, at in st.sealed(session, "audio", 0, 10**8):
                    out[bytes.fromhex(session) + seq.to_bytes(8, "big")] = at
            return out
        finally:
            st.close(compact=False)


def relay_hub_stats(urls: list[str]) -> list[dict]:
    """Each relay's hub counters (slow consumers, fills), from its admin health."""
    out = []
    for url in urls:
        try:
            tok = httpx.post(url + "/api/login", json={"user": "admin",
                                                       "password": "admin-password"}).json()
            h = httpx.get(url + "/api/admin/health", timeout=30,
                          headers={"Authorization": "Bearer " + tok["token"]}).json()
            out.append(h["relay"]["hub"])
        except (httpx.HTTPError, KeyError, ValueError):
            out.append({})
    return out


def box_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores, every process, the kernel)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def cpu_s(procs: list[psutil.Process], part: str = "") -> float:
    t = 0.0
    for p in procs:
        try:
            ct = p.cpu_times()
            t += getattr(ct, part) if part else ct.user + ct.system
        except psutil.NoSuchProcess:
            pass
    return t


def chunk_bodies(codec: str, samples: int) -> list[tuple[bytes, int]]:
    """What each chunk carries, encoded once before the run (encoding is the unit's cost,
    not the relay's or the generator's): 10 s of recorded speech as the production Opus
    encoder makes it, chunk by chunk, or silence as PCM (the relay cannot tell)."""
    if codec == "pcm":
        return [(bytes(2 * samples), samples)]
    from speech_material import recorded_speech

    enc = codecs.encoder_for(codecs.CodecSettings())
    speech = recorded_speech(10)
    return [(enc.encode(speech[i:i + samples]), samples)
            for i in range(0, len(speech) - samples + 1, samples)]


async def drive(sysm: System, uids: list[str], rate: float, seconds: float, warmup: float,
                profile: Path | None, codec: str, batch: bool) -> Result:
    loop = asyncio.get_running_loop()
    tokens = await asyncio.to_thread(setup_registry, sysm.urls[0], uids)
    units = await connect_units(loop, sysm, uids)
    tally, stop = Tally(), asyncio.Event()
    readies, tasks = [], []
    for j, (_sid, tok) in enumerate(sorted(tokens.items())):
        ev = asyncio.Event()
        readies.append(ev)
        tasks.append(asyncio.create_task(scribe(sysm.urls[j % len(sysm.urls)], tok, tally,
                                                ev, stop, batch)))
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in readies)), 30)

    bodies = chunk_bodies(codec, int(16000 / rate))
    body_codec = env.CODEC_OPUS if codec == "opus" else env.CODEC_PCM_S16LE
    n = len(units)
    relays = [psutil.Process(p.pid) for p in sysm.relays]
    brk = psutil.Process(sysm.broker_proc.pid)
    me = psutil.Process()
    window: dict[bytes, int] = {}  # session+seq of chunks published in the window
    marks: dict[str, float] = {}
    pg_marks: dict[int, float] = {}
    rss: list[float] = []
    lag: list[float] = []
    prof = None

    def begin_window() -> None:
        # the generator's own garbage collector would pause its loop (tens of ms with the
        # tallies it keeps) and show up as latency that is not the relay's
        gc.collect()
        gc.freeze()
        gc.disable()
        marks.update(relay=cpu_s(relays), broker=cpu_s([brk]), gen=cpu_s([me]),
                     relay_sys=cpu_s(relays, "system"), box=box_busy_s(), t=time.monotonic())
        pg_marks.update(pg_cpu(sysm))

    t0 = time.monotonic()
    t_measure, t_end = t0 + warmup, t0 + warmup + seconds
    j = 0  # publishes so far, round-robin over units: publish j is due at t0 + j/(n*rate)
    status_j = 0
    measuring = False
    next_rss = 0.0
    while True:
        now = time.monotonic()
        if not measuring and now >= t_measure:
            measuring = True
            begin_window()
            if profile is not None:
                # --gil: samples while Python holds the interpreter lock (its own CPU)
                cmd = [PY_SPY, "record", "-p", str(sysm.relays[0].pid), "-d",
                       str(int(seconds)), "-r", "200", "--gil", "-f", "speedscope", "-o",
                       str(profile), "--nonblocking"]
                prof = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,  # noqa: ASYNC220
                                        stderr=subprocess.DEVNULL)
        if now >= t_end:
            break
        due = int((now - t0) * n * rate)
        if due - j > 1:
            lag.append((due - j) / (n * rate) * 1000)
        while j < due:
            u = units[j % n]
            sess = u.session
            cap_us = time.time_ns() // 1000
            body, count = bodies[j // n % len(bodies)]
            frame = env.seal(env.Header(
                type=env.TYPE_AUDIO, session_id=sess.session_id, seq=sess.next_audio_seq,
                capture_us=cap_us, unit_id=u.uid, codec=body_codec, channels=1,
                sample_rate=16000, sample_count=count), body, sess.key)
            sess.next_audio_seq += 1
            u.client.publish(u.topic_audio, frame, qos=1)
            if measuring:
                window[frame[8:32]] = cap_us
            j += 1
        sdue = int((now - t0) * n)  # a status per unit per second
        while status_j < sdue:
            u = units[status_j % n]
            u.client.publish(u.topic_status, msgs.dumps(msgs.Status(
                unit=u.uid, online=True, at_us=time.time_ns() // 1000, capture="live",
                link="up")), qos=0, retain=True)
            status_j += 1
        if measuring and now >= next_rss:
            rss.append(sum(p.memory_info().rss for p in relays) / 2**20)
            next_rss = now + 1.0
        await asyncio.sleep(0.002)
    end = {"relay": cpu_s(relays), "broker": cpu_s([brk]), "gen": cpu_s([me]),
           "relay_sys": cpu_s(relays, "system"), "box": box_busy_s(), "t": time.monotonic()}
    pg_end = pg_cpu(sysm)
    # let the tail arrive (not counted in the rates)
    deadline = time.monotonic() + 15
    # polls a count the scribes' tasks update, with a deadline
    while time.monotonic() < deadline and sum(  # noqa: ASYNC110
            1 for k in window if k in tally.first) < len(window):
        await asyncio.sleep(0.1)
    gc.enable()
    hubs = await asyncio.to_thread(relay_hub_stats, sysm.urls)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for u in units:
        u.client.disconnect()
    if prof is not None:
        prof.wait(30)
    elapsed = end["t"] - marks["t"]
    lat = sorted(tally.first[k] / 1000 for k in window if k in tally.first)
    got = len(lat)
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [0] * 99
    # split at the moment the relay stored each chunk (its batch's received_us)
    stored = await asyncio.to_thread(stored_times, sysm)
    legs_in, legs_out = [], []
    for k, cap in window.items():
        st = stored.get(k)
        if st is not None and k in tally.first:
            legs_in.append((st - cap) / 1000)
            legs_out.append((cap + tally.first[k] - st) / 1000)

    def p99(xs: list[float]) -> float:
        return statistics.quantiles(sorted(xs), n=100, method="inclusive")[98] if len(
            xs) > 1 else 0.0

    ours = sum(end[k] - marks[k] for k in ("relay", "broker", "gen")) + sum(
        v - pg_marks.get(k, 0.0) for k, v in pg_end.items())
    return Result(
        other_cpu=max(0.0, end["box"] - marks["box"] - ours) / elapsed * 100,
        units=n, rate=rate, seconds=seconds, relays=len(relays), store="",
        offered=len(window) / elapsed, delivered=got / elapsed, lost=len(window) - got,
        dups=tally.dups, p50=q[49], p95=q[94], p99=q[98],
        p99_in=p99(legs_in), p99_out=p99(legs_out),
        relay_cpu=(end["relay"] - marks["relay"]) / elapsed * 100,
        relay_rss_mb=max(rss) if rss else 0.0,
        relay_sys=(end["relay_sys"] - marks["relay_sys"]) / elapsed * 100,
        broker_cpu=(end["broker"] - marks["broker"]) / elapsed * 100,
        gen_cpu=(end["gen"] - marks["gen"]) / elapsed * 100,
        gen_lag_ms=max(lag) if lag else 0.0, load1=os.getloadavg()[0],
        store_cpu=sum(v - pg_marks.get(k, 0.0) for k, v in pg_end.items()) / elapsed * 100,
        slow_consumer_events=sum(h.get("slow_consumer_events", 0) for h in hubs),
        fills=sum(h.get("fills", 0) for h in hubs))


def run_once(args, n_units: int) -> Result:
    uids = [f"room-{i:04d}" for i in range(n_units)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    sysm = start_system(tmp, uids, args.relays, args.store, args.batch_ms)
    try:
        profile = Path(args.profile) if args.profile else None
        r = asyncio.run(drive(sysm, uids, args.rate, args.seconds, args.warmup, profile,
                              args.codec, not args.no_batch))
        r.store, r.codec = args.store, args.codec
        return r
    finally:
        sysm.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def table(results: list[Result]) -> str:
    lines = [
        ("| rooms × chunks/s | relays, store, codec | offered → delivered msg/s | lost | dup | "
         "added latency p50 / p95 / p99 | relay CPU (per 1,000 msg/s) | relay RSS | "
         "broker CPU | PostgreSQL CPU | generator CPU (max lag) | box load |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.units} × {r.rate:g} | {r.relays}, {r.store}, {r.codec} | {r.offered:,.0f} → "
            f"{r.delivered:,.0f} | {r.lost} | {r.dups} | {r.p50:.1f} / {r.p95:.1f} / "
            f"{r.p99:.1f} ms | {r.relay_cpu:.0f} % ({r.cost:.1f} %) | {r.relay_rss_mb:.0f} MB | "
            f"{r.broker_cpu:.0f} % | {f'{r.store_cpu:.0f} %' if r.store == 'postgres' else '-'} | "
            f"{r.gen_cpu:.0f} % ({r.gen_lag_ms:.0f} ms) | "
            f"{r.load1:.1f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench relay", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=100, help="rooms (one MQTT connection each)")
    ap.add_argument("--rate", type=float, default=25.0, help="chunks per second per room")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured window")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--relays", type=int, default=1)
    ap.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--batch-ms", type=float, default=RelayConfig.store_batch_ms,
                    help="relay store_batch_ms (default: the relay's)")
    ap.add_argument("--no-batch", action="store_true",
                    help="scribes read one chunk per WebSocket message (no batch in hello)")
    ap.add_argument("--codec", choices=["opus", "pcm"], default="opus",
                    help="what the chunks carry: recorded speech as Opus at the production "
                         "default bitrate (about 110 bytes a chunk), or PCM (1,349 bytes)")
    ap.add_argument("--ramp", help="comma-separated room counts to run in turn")
    ap.add_argument("--profile", help="py-spy profile of relay 0 (speedscope JSON) here")
    ap.add_argument("--keep", action="store_true", help="keep the run directory (logs)")
    ap.add_argument("--record", action="store_true",
                    help="write the table to docs/benchmarks.md (bench:relay)")
    args = ap.parse_args(argv)
    if args.profile and not Path(PY_SPY).exists():
        print("bench relay: --profile needs py-spy (scripts/setup --bench)", file=sys.stderr)
        return 2
    sizes = [int(x) for x in args.ramp.split(",")] if args.ramp else [args.units]
    results = []
    for n in sizes:
        r = run_once(args, n)
        results.append(r)
        print(table([r]).splitlines()[-1], f"(p99 publish→stored {r.p99_in:.1f} ms, "
              f"stored→scribe {r.p99_out:.1f} ms; relay kernel time {r.relay_sys:.0f} %, "
              f"slow-consumer events {r.slow_consumer_events}, fills {r.fills}; "
              f"other jobs {r.other_cpu:.0f} % of a core)", flush=True)
        if r.other_cpu > OTHER_CPU_WARN:
            print(f"bench relay: warning: other jobs used {r.other_cpu:.0f} % of a core during "
                  "the window; they change the relay's batching and its cost per message "
                  "by points: measure on a quiet machine to compare runs", file=sys.stderr,
                  flush=True)
    print()
    print(table(results))
    ok = [r for r in results if r.lost == 0 and r.dups == 0 and r.p99 <= BUDGET_P99_MS
          and r.cost <= BUDGET_CORE_PCT_PER_1000]
    print(f"\nwithin budget (no loss, no duplicates, p99 ≤ {BUDGET_P99_MS:g} ms, relay ≤ "
          f"{BUDGET_CORE_PCT_PER_1000:g} % of a core per 1,000 msg/s): "
          f"{', '.join(str(r.units) for r in ok) or 'none'}")
    if args.record:
        record(results)
    return 0


def record(results: list[Result]) -> None:
    """Merge these rows into the bench:relay table: a row per (rooms × rate, relays, store),
    the newest run of each, so separate runs (ramp, two relays, PostgreSQL) add up."""
    import re

    from bench_common import DOC

    rows: dict[tuple[str, str], str] = {}
    old = DOC.read_text() if DOC.exists() else ""
    m = re.search(r"<!-- bench:relay -->.*?<!-- /bench:relay -->", old, re.DOTALL)
    if m:
        for line in m.group(0).splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("| ") and len(cells) >= 2 and cells[0][:1].isdigit():
                if cells[1].count(",") == 1:  # recorded before chunks could be Opus: PCM
                    line = line.replace(f"| {cells[1]} |", f"| {cells[1]}, pcm |", 1)
                    cells[1] += ", pcm"
                rows[(cells[0], cells[1])] = line
    for line in table(results).splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[(cells[0], cells[1])] = line

    def order(key):
        units, rate = key[0].split(" × ")
        relays, store, *codec = key[1].split(", ")
        return (store, codec[0] if codec else "pcm", int(relays), int(units), float(rate))

    head = table([]).splitlines()
    body = (f"`scripts/bench relay` on this machine ({os.cpu_count()} cores shared by the load "
            "generator, mosquitto and the relays, and by whatever else ran then; 40 ms sealed "
            "chunks, one MQTT connection and certificate per room, one scribe WebSocket per 10 "
            "rooms; CPU 100 % = one core; latency is publish → scribe WebSocket; 'lost' = "
            "not at the scribes 15 s after the window closed). Budget: no loss, no "
            "duplicates, p99 ≤ 50 ms, relay ≤ 8 % of a core per 1,000 msg/s. What "
            "breaks where, and why: docs/scaling.md.\n\n" +
            "\n".join(head + [rows[k] for k in sorted(rows, key=order)]))
    record_section("relay", "Relay under a fleet's load", body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
