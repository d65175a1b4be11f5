"""A lean MQTT 5 client for the relay's hot path: one TLS connection, persistent session,
subscribe, receive QoS 0/1 publishes, acknowledge them in batches, publish QoS 1.

Why not paho here (paho stays everywhere else): paho reads a packet with four socket
reads and builds a message object, properties and a topic match per publish, and writes
each PUBACK on its own; at a fleet's rate that was two thirds of the relay's CPU
(docs/scaling.md, "Where the relay's CPU goes"). This client reads the socket in large
chunks, slices publishes out of the buffer, and sends every PUBACK of a committed batch in
one write. It implements only what the relay uses (MQTT 5.0, OASIS standard, sections
3.1-3.14): CONNECT with session expiry and receive maximum, SUBSCRIBE, PUBLISH QoS 0/1 both
ways, PUBACK, PINGREQ, DISCONNECT. No QoS 2, no topic aliases, no auth exchange.

Concurrency: one I/O thread per connection does every socket read and write (an SSL
socket must not be read and written from two threads at once), reconnects and keeps the
connection alive. `publish`, `stop` and the ack callables may be called from any thread:
they queue bytes under a lock and wake the I/O thread through a pipe.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable

log = logging.getLogger("cloud_relay.mqtt5")

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, UNSUBSCRIBE, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 12, 13, 14
SESSION_TAKEN_OVER = 0x8E
_U16 = struct.Struct(">H")
PINGREQ_PACKET = b"\xc0\x00"


ASSIGNED_CLIENT_IDENTIFIER = 0x12

# MQTT 5 property ids by value type (section 2.2.2.2), to step over the ones not read
_PROP_BYTE = {0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A}
_PROP_U16 = {0x13, 0x21, 0x22, 0x23}
_PROP_U32 = {0x02, 0x11, 0x18, 0x27}
_PROP_STR = {0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F, 0x09, 0x16}  # UTF-8 or binary
_PROP_PAIR = {0x26}


class MqttError(ConnectionError):
    pass


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return _U16.pack(len(b)) + b


def packet(ptype: int, flags: int, body: bytes) -> bytes:
    return bytes([ptype << 4 | flags]) + varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, *, qos: int, retain: bool, pid: int = 0,
                   dup: bool = False) -> bytes:
    flags = (8 if dup else 0) | (qos << 1) | (1 if retain else 0)
    body = utf8(topic) + (_U16.pack(pid) if qos else b"") + b"\x00" + payload
    return packet(PUBLISH, flags, body)


def puback_packets(pids: list[int]) -> bytes:
    # 0x40 0x02 pid: reason "success" and no properties may be left out (3.4.2.1)
    return b"".join(b"\x40\x02" + _U16.pack(p) for p in pids)


def _read_varint(buf, i: int) -> tuple[int, int] | None:
    """(value, bytes used) of a variable byte integer at buf[i:], None if incomplete."""
    mult, val = 1, 0
    for k in range(4):
        if i + k >= len(buf):
            return None
        b = buf[i + k]
        val += (b & 0x7F) * mult
        if not b & 0x80:
            return val, k + 1
        mult <<= 7
    raise MqttError("malformed remaining length")


def connack_properties(body: bytes) -> dict[int, object]:
    """The properties of a CONNACK body (after flags and reason code): id -> value, strings
    and binaries as bytes (user properties, which may repeat, are left out)."""
    try:
        return _properties(body)
    except (struct.error, IndexError) as e:
        raise MqttError("malformed CONNACK properties") from e


def _properties(body: bytes) -> dict[int, object]:
    out: dict[int, object] = {}
    if len(body) <= 2:
        return out
    got = _read_varint(body, 2)
    if got is None:
        raise MqttError("malformed CONNACK properties")
    length, used = got
    i, end = 2 + used, 2 + used + length
    if end > len(body):
        raise MqttError("malformed CONNACK properties")
    while i < end:
        pid = body[i]
        i += 1
        if pid in _PROP_BYTE:
            out[pid], i = body[i], i + 1
        elif pid in _PROP_U16:
            out[pid], i = _U16.unpack_from(body, i)[0], i + 2
        elif pid in _PROP_U32:
            out[pid], i = struct.unpack_from(">I", body, i)[0], i + 4
        elif pid == 0x0B:
            v = _read_varint(body, i)
            if v is None:
                raise MqttError("malformed CONNACK properties")
            out[pid], i = v[0], i + v[1]
        elif pid in _PROP_STR:
            n = _U16.unpack_from(body, i)[0]
            out[pid], i = bytes(body[i + 2:i + 2 + n]), i + 2 + n
        elif pid in _PROP_PAIR:
            for _ in range(2):
                i += 2 + _U16.unpack_from(body, i)[0]
        else:
            raise MqttError(f"unknown CONNACK property 0x{pid:02x}")
    if i != end:
        raise MqttError("malformed CONNACK properties")
    return out


class _Tls:
    """TLS over a plain socket through memory BIOs: one recv syscall brings in every TLS
    record that has arrived (an SSLSocket reads each record with separate syscalls)."""

    def __init__(self, raw: socket.socket, ctx: ssl.SSLContext, host: str) -> None:
        self.raw = raw
        self.inb, self.outb = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inb, self.outb, server_hostname=host)
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._push()
                data = raw.recv(65536)
                if not data:
                    raise MqttError("connection closed during the TLS handshake") from None
                self.inb.write(data)
        self._push()

    def _push(self) -> None:
        out = self.outb.read()
        if out:
            self.raw.sendall(out)

    def fileno(self) -> int:
        return self.raw.fileno()

    def sendall(self, data: bytes) -> None:
        self.obj.write(data)
        self._push()

    def recv(self) -> bytes | None:
        """The plaintext of everything readable now (blocks for the first bytes; b"" when
        only part of a record came); None when the broker closed the connection."""
        data = self.raw.recv(262144)
        if not data:
            return None
        self.inb.write(data)
        parts = []
        while True:
            try:
                chunk = self.obj.read(262144)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                return None
            if not chunk:
                return None
            parts.append(chunk)
        self._push()  # post-handshake messages, if any
        return b"".join(parts)

    def close(self) -> None:
        try:
            self.raw.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.raw.close()


# (topic bytes, payload, packet id or 0 for QoS 0, acker) -> None
OnPublish = Callable[[bytes, bytes, int, "Acker"], None]


class Acker:
    """Acknowledges publishes received on one connection. After a reconnect the packet
    ids mean other messages, so a stale acker sends nothing (the broker redelivers)."""

    __slots__ = ("conn", "generation")

    def __init__(self, conn: Client, generation: int) -> None:
        self.conn, self.generation = conn, generation

    def __call__(self, pids: list[int]) -> None:
        self.conn._ack(pids, self.generation)


class Client:
    def __init__(self, *, host: str, port: int, ssl_context: ssl.SSLContext, client_id: str,
                 on_publish: OnPublish, subscriptions: list[tuple[str, int]],
                 keepalive_s: int = 15, session_expiry_s: int = 24 * 3600,
                 receive_maximum: int = 1000, reconnect: bool = True,
                 coalesce_ms: float = 2.0,
                 on_connect: Callable[[bool], None] | None = None,
                 on_disconnect: Callable[[str], None] | None = None) -> None:
        self.host, self.port = host, port
        self.ctx = ssl_context
        self.client_id = client_id
        self.on_publish = on_publish
        self.subscriptions = subscriptions
        self.keepalive_s = keepalive_s
        self.session_expiry_s = session_expiry_s
        self.receive_maximum = receive_maximum
        self.reconnect = reconnect
        # After a short read, wait this long before reading again, so one read and one
        # wake-up serve several publishes (a few ms against a 50 ms p99 budget).
        self.coalesce_s = coalesce_ms / 1000
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.connected = threading.Event()
        self.taken_over = threading.Event()
        self._stop = threading.Event()
        self._wlock = threading.Lock()
        self._sock: _Tls | None = None
        self._generation = 0
        self._acker = Acker(self, 0)
        self._next_pid = 0
        self._outbound: dict[int, bytes] = {}  # pid -> QoS 1 publish awaiting PUBACK
        self._last_sent = 0.0
        self._outq: list[bytes] = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ public

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"mqtt-{self.client_id}")
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect cleanly (the session stays with the broker) and end the thread."""
        with self._wlock:
            self._outq.append(packet(DISCONNECT, 0, b""))
        self._stop.set()
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._close()

    def unsubscribe(self, filters: list[str]) -> None:
        with self._wlock:
            body = _U16.pack(self._new_pid()) + b"\x00" + b"".join(utf8(f) for f in filters)
            self._send_locked(packet(UNSUBSCRIBE, 2, body))

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Queue a publish; QoS 1 ones are resent after a reconnect until acknowledged."""
        with self._wlock:
            if qos:
                pid = self._new_pid()
                data = publish_packet(topic, payload, qos=1, retain=retain, pid=pid)
                self._outbound[pid] = publish_packet(topic, payload, qos=1, retain=retain,
                                                     pid=pid, dup=True)
            else:
                data = publish_packet(topic, payload, qos=0, retain=retain)
            self._send_locked(data)

    # ------------------------------------------------------------------ internals

    def _new_pid(self) -> int:
        for _ in range(65535):
            self._next_pid = self._next_pid % 65535 + 1
            if self._next_pid not in self._outbound:
                return self._next_pid
        raise MqttError("65535 publishes unacknowledged")

    def _send_locked(self, data: bytes) -> None:
        """Queue bytes for the I/O thread (caller holds the write lock)."""
        if not self.connected.is_set():
            return  # QoS 1 is in _outbound and goes out on connect; QoS 0 is dropped
        self._outq.append(data)
        if threading.current_thread() is not self._thread:
            self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # already awake

    def _flush(self, sock) -> None:
        """I/O thread: write what is queued."""
        with self._wlock:
            if not self._outq:
                return
            data = b"".join(self._outq)
            self._outq.clear()
        sock.sendall(data)
        self._last_sent = time.monotonic()

    def _ack(self, pids: list[int], generation: int) -> None:
        with self._wlock:
            if generation == self._generation:
                self._send_locked(puback_packets(pids))

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        self.connected.clear()
        if sock is not None:
            sock.close()

    def _run(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            reason = "closed"
            try:
                self._session()
                delay = 1.0
            except (OSError, MqttError) as e:
                reason = repr(e)
            self._close()
            if self.on_disconnect is not None:
                self.on_disconnect(reason)
            if self._stop.is_set() or not self.reconnect or self.taken_over.is_set():
                return
            self._stop.wait(delay)
            delay = min(delay * 2, 8.0)

    def _connect_packet(self) -> bytes:
        props = (b"\x11" + struct.pack(">I", self.session_expiry_s) +
                 b"\x21" + _U16.pack(self.receive_maximum))
        body = (utf8("MQTT") + b"\x05" + b"\x00" +  # flags: clean start off, no credentials
                _U16.pack(self.keepalive_s) + varint(len(props)) + props + utf8(self.client_id))
        return packet(CONNECT, 0, body)

    def _session(self) -> None:
        raw = socket.create_connection((self.host, self.port), timeout=10)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle on small acks
        try:
            sock = _Tls(raw, self.ctx, self.host)
        except BaseException:
            raw.close()
            raise
        with self._wlock:
            self._generation += 1
            self._acker = Acker(self, self._generation)
            self._sock = sock
            self._outq.clear()  # acks of the last connection mean nothing now
        sock.sendall(self._connect_packet())
        buf = bytearray()
        ptype, _flags, body = self._read_packet(sock, buf)
        if ptype != CONNACK or len(body) < 2:
            raise MqttError(f"expected CONNACK, got packet type {ptype}")
        session_present, code = bool(body[0] & 1), body[1]
        if code >= 0x80:
            raise MqttError(f"broker refused the connection (reason 0x{code:02x})")
        assigned = connack_properties(body).get(ASSIGNED_CLIENT_IDENTIFIER)
        if isinstance(assigned, bytes) and assigned.decode("utf-8", "replace") != self.client_id:
            # The broker decides the client id (from the certificate: broker.py). Asking for
            # another one next time would be refused or taken as someone else's session.
            log.warning("event=mqtt_client_id_assigned asked=%s assigned=%s", self.client_id,
                        assigned.decode("utf-8", "replace"))
            self.client_id = assigned.decode("utf-8", "replace")
        sub = b"".join(utf8(t) + bytes([q]) for t, q in self.subscriptions)
        with self._wlock:
            self.connected.set()
            self._send_locked(packet(SUBSCRIBE, 2, _U16.pack(self._new_pid()) + b"\x00" + sub))
            for data in list(self._outbound.values()):  # unacked control messages again
                self._send_locked(data)
        log.info("event=mqtt_connected client_id=%s session_present=%s", self.client_id,
                 session_present)
        if self.on_connect is not None:
            self.on_connect(session_present)
        self._flush(sock)
        self._read_loop(sock, buf)

    def _read_packet(self, sock, buf: bytearray) -> tuple[int, int, bytes]:
        while True:
            if len(buf) >= 2:
                rl = _read_varint(buf, 1)
                if rl is not None and len(buf) >= 1 + rl[1] + rl[0]:
                    start = 1 + rl[1]
                    b1 = buf[0]
                    body = bytes(buf[start:start + rl[0]])
                    del buf[:start + rl[0]]
                    return b1 >> 4, b1 & 15, body
            data = sock.recv()
            if data is None:
                raise MqttError("connection closed by the broker")
            buf += data

    def _read_loop(self, sock, buf: bytearray) -> None:
        on_publish = self.on_publish
        acker = self._acker
        ka = self.keepalive_s
        last_rx = time.monotonic()
        short = False
        while not self._stop.is_set():
            # slice every complete packet out of the buffer, then read more
            pos, n = 0, len(buf)
            mv = memoryview(buf)
            try:
                while n - pos >= 2:
                    b1 = buf[pos]
                    rl = _read_varint(buf, pos + 1)
                    if rl is None:
                        break
                    start = pos + 1 + rl[1]
                    end = start + rl[0]
                    if end > n:
                        break
                    ptype = b1 >> 4
                    if ptype == PUBLISH:
                        tlen = buf[start] << 8 | buf[start + 1]
                        i = start + 2 + tlen
                        topic = bytes(mv[start + 2:i])
                        pid = 0
                        if b1 & 6:
                            pid = buf[i] << 8 | buf[i + 1]
                            i += 2
                        plen = _read_varint(buf, i)
                        if plen is None:
                            raise MqttError("malformed PUBLISH properties")
                        i += plen[1] + plen[0]
                        on_publish(topic, bytes(mv[i:end]), pid, acker)
                    else:
                        self._control(ptype, bytes(mv[start:end]))
                    pos = end
            finally:
                mv.release()
            if pos:
                del buf[:pos]
            if time.monotonic() - self._last_sent >= ka / 2:
                with self._wlock:
                    self._outq.append(PINGREQ_PACKET)
            self._flush(sock)
            if short and self.coalesce_s:
                time.sleep(self.coalesce_s)
            ready, _, _ = select.select([sock, self._wake_r], [], [], ka / 2)
            if self._wake_r in ready:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
            if sock not in ready:
                if time.monotonic() - last_rx > 1.5 * ka:
                    raise MqttError("broker silent past the keepalive")
                short = False
                continue
            data = sock.recv()
            if data is None:
                raise MqttError("connection closed by the broker")
            last_rx = time.monotonic()
            short = len(data) < 16384
            buf += data
        self._flush(sock)  # stopping: the DISCONNECT

    def _control(self, ptype: int, body: bytes) -> None:
        if ptype == PUBACK:
            pid = _U16.unpack_from(body)[0]
            with self._wlock:
                self._outbound.pop(pid, None)
        elif ptype == SUBACK:
            codes = body[3 + body[2]:] if len(body) > 2 else b""  # pid, props len 0..
            if any(c >= 0x80 for c in codes):
                log.error("event=mqtt_subscribe_refused client_id=%s codes=%s", self.client_id,
                          [hex(c) for c in codes])
        elif ptype == DISCONNECT:
            code = body[0] if body else 0
            if code == SESSION_TAKEN_OVER:
                self.taken_over.set()
            raise MqttError(f"broker disconnected us (reason 0x{code:02x})")
        # PINGRESP and anything else: nothing to do
