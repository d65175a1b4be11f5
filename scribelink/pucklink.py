# The puck link protocol: framing, message types, reliable delivery, heartbeats.
# The single owner of the puck <-> agent contract (docs/protocol.md, section 9); the firmware
# and the agent import this same file, so it stays in the MicroPython/CPython subset.

import struct

try:
    import micropython
except ImportError:  # CPython: native code is a MicroPython thing; run as plain Python

    class micropython:  # type: ignore[no-redef]
        @staticmethod
        def native(f):
            return f


PROTO_VERSION = 1

# Message types. seq == 0 marks an unreliable frame; seq != 0 a reliable one.
MSG_HEARTBEAT = 0x01  # body: state u8, peer_nonce_seen u32
MSG_ACK = 0x02  # body: acked_nonce u32, acked_seq u16
MSG_PING = 0x03  # body: token u32
MSG_PONG = 0x04  # body: token u32
MSG_MAINTENANCE = 0x05  # agent -> puck, reliable: reboot into the REPL for flashing
MSG_CUE = 0x10  # puck -> agent, reliable; body: cue_no u16
MSG_PRIVACY_TOGGLE = 0x11  # puck -> agent, reliable; body: held_ms u32
MSG_PRESENCE_HOLD = 0x12  # puck -> agent, reliable; body: held_ms u32
MSG_HOLD_RELEASED = 0x13  # puck -> agent, reliable; body: held_ms u32 (after a presence hold)
MSG_CONSENT = 0x14  # puck -> agent, reliable; body: state u8 (1: the physician's double press)
# agent -> puck, reliable; body: puck_nonce u32, cue_no u16[, reply u8 (REPLIES; absent: seen)]
MSG_CUE_SEEN = 0x20
MSG_IDENTIFY = 0x21  # agent -> puck, reliable; body: duration_ms u32 (0 stops)
MSG_PRESENCE_WANTED = 0x22  # agent -> puck, reliable; body: timeout_ms u32 (0 ends)
# agent -> puck, reliable; body: wanted u8 (1: the session waits for consent; 0: no more)
MSG_CONSENT_WANTED = 0x23

MSG_NAMES = {
    MSG_HEARTBEAT: "heartbeat",
    MSG_ACK: "ack",
    MSG_PING: "ping",
    MSG_PONG: "pong",
    MSG_MAINTENANCE: "maintenance",
    MSG_CUE: "cue",
    MSG_PRIVACY_TOGGLE: "privacy_toggle",
    MSG_PRESENCE_HOLD: "presence_hold",
    MSG_HOLD_RELEASED: "hold_released",
    MSG_CONSENT: "consent",
    MSG_CUE_SEEN: "cue_seen",
    MSG_IDENTIFY: "identify",
    MSG_PRESENCE_WANTED: "presence_wanted",
    MSG_CONSENT_WANTED: "consent_wanted",
}

# A scribe's reply to a cue (scribelink.messages.CUE_REPLIES), by its code in MSG_CUE_SEEN,
# and the ring state that shows it.
REPLIES = ("seen", "got_it", "repeat", "see_me")
REPLY_STATES = ("cue_seen", "cue_got_it", "cue_repeat", "cue_see_me")
# The reply code for a press that reached no scribe (after a declined visit, the physician's
# press starts the next visit): the puck stops showing it as sent and shows no reply.
CUE_NOT_SENT = 0x80
CONSENT_GIVEN = 1

# LED states. The agent sets 0..4 (the session's truth); the puck adds 5.. itself (new
# states go at the end: the codes are on the wire).
STATE_NAMES = (
    "idle",
    "live",
    "paused",
    "offline_recording",
    "fault",
    "connecting",
    "cue_sent",
    "cue_seen",
    "hold_armed",
    "identify",
    "presence_wanted",
    "presence_holding",
    "presence_release",
    "cue_got_it",
    "cue_repeat",
    "cue_see_me",
    "consent_wanted",
)
AGENT_STATES = STATE_NAMES[:5]

HEADER_LEN = 8  # version u8, type u8, sender nonce u32, seq u16
CRC_LEN = 2
MAX_BODY_LEN = 32
MAX_PAYLOAD_LEN = HEADER_LEN + MAX_BODY_LEN + CRC_LEN
MAX_ENCODED_LEN = MAX_PAYLOAD_LEN + MAX_PAYLOAD_LEN // 254 + 2

HEARTBEAT_INTERVAL_MS = 500
PEER_TIMEOUT_MS = 2000
RTO_MS = 150
RTO_MAX_MS = 1000
MAX_QUEUE = 32

EV_MESSAGE = 0  # a message from the peer (reliable ones delivered exactly once)
EV_ACKED = 1  # the peer acknowledged one of our reliable messages
EV_PEER_RESET = 2  # a new peer nonce: the peer booted (or it is the first we hear of it)


@micropython.native  # Thumb code on the RP2040 (mpy-cross recognises this spelling)
def crc16(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF), as used by XMODEM-style links."""
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            if crc & 0x8000:
                crc = ((crc << 1) ^ 0x1021) & 0xFFFF
            else:
                crc = (crc << 1) & 0xFFFF
    return crc


def cobs_encode(data):
    out = bytearray()
    block = bytearray()
    for b in data:
        if b == 0:
            out.append(len(block) + 1)
            out.extend(block)
            block = bytearray()
        else:
            block.append(b)
            if len(block) == 254:
                out.append(255)
                out.extend(block)
                block = bytearray()
    out.append(len(block) + 1)
    out.extend(block)
    return bytes(out)


def cobs_decode(data):
    """Return the decoded bytes, or None if data is not valid COBS."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            return None
        end = i + code
        if end > n:
            return None
        for j in range(i + 1, end):
            if data[j] == 0:
                return None
            out.append(data[j])
        i = end
        if code < 255 and i < n:
            out.append(0)
    return bytes(out)


def encode_payload(mtype, nonce, seq, body=b""):
    head = struct.pack(">BBIH", PROTO_VERSION, mtype, nonce & 0xFFFFFFFF, seq & 0xFFFF)
    raw = head + bytes(body)
    return raw + struct.pack(">H", crc16(raw))


def encode_frame(mtype, nonce, seq, body=b""):
    """One frame on the wire: 0x00, COBS(payload), 0x00. The leading delimiter flushes
    whatever half frame or garbage the receiver may hold."""
    return b"\x00" + cobs_encode(encode_payload(mtype, nonce, seq, body)) + b"\x00"


def decode_payload(payload):
    """(mtype, nonce, seq, body) for a valid payload, else None."""
    if payload is None or len(payload) < HEADER_LEN + CRC_LEN:
        return None
    if len(payload) > MAX_PAYLOAD_LEN:
        return None
    raw = payload[:-CRC_LEN]
    (crc,) = struct.unpack(">H", payload[-CRC_LEN:])
    if crc16(raw) != crc:
        return None
    version, mtype, nonce, seq = struct.unpack(">BBIH", raw[:HEADER_LEN])
    if version != PROTO_VERSION:
        return None
    return (mtype, nonce, seq, bytes(raw[HEADER_LEN:]))


class FrameReader:
    """Splits a byte stream on 0x00 and yields the frames that decode and check out."""

    def __init__(self):
        self._buf = bytearray()
        self._overflow = False
        self.bad_frames = 0

    def feed(self, data):
        frames = []
        for b in data:
            if b == 0:
                if self._buf and not self._overflow:
                    frame = decode_payload(cobs_decode(bytes(self._buf)))
                    if frame is None:
                        self.bad_frames += 1
                    else:
                        frames.append(frame)
                elif self._overflow:
                    self.bad_frames += 1
                self._buf = bytearray()
                self._overflow = False
            elif not self._overflow:
                if len(self._buf) >= MAX_ENCODED_LEN:
                    self._overflow = True  # garbage: skip to the next delimiter
                else:
                    self._buf.append(b)
        return frames


def cue_id(puck_nonce, cue_no):
    """The agent-side cue id: stable across retransmissions, puck reconnects and agent
    restarts; distinct across puck reboots (the nonce changes)."""
    return ((puck_nonce & 0xFFFFFFFF) << 16) | (cue_no & 0xFFFF)


def split_cue_id(cid):
    return ((cid >> 16) & 0xFFFFFFFF, cid & 0xFFFF)


def _seq_after(seq):
    seq = (seq + 1) & 0xFFFF
    return seq if seq else 1


class Event:
    def __init__(self, kind, mtype, body, seq=0):
        self.kind = kind
        self.mtype = mtype
        self.body = body
        self.seq = seq

    def __repr__(self):
        return f"Event({self.kind}, {MSG_NAMES.get(self.mtype, self.mtype)}, {self.body})"


class Link:
    """One end of the link (puck or agent; the protocol is symmetric).

    Pure: bytes in via receive(), bytes out via poll(), time passed in as a
    non-wrapping millisecond count. Reliable messages are stop-and-wait: the head of the
    queue is retransmitted with backoff until the peer acks (its nonce, seq); the
    receiver delivers each (peer nonce, seq) once and acks every copy it sees.
    """

    def __init__(
        self,
        nonce,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        peer_timeout_ms=PEER_TIMEOUT_MS,
        rto_ms=RTO_MS,
        rto_max_ms=RTO_MAX_MS,
        max_queue=MAX_QUEUE,
    ):
        self.nonce = nonce & 0xFFFFFFFF
        if self.nonce == 0:
            self.nonce = 1  # 0 means "no peer seen" in heartbeats
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.peer_timeout_ms = peer_timeout_ms
        self.rto_ms = rto_ms
        self.rto_max_ms = rto_max_ms
        self.max_queue = max_queue
        self.state = 0
        self.peer_nonce = 0
        self.peer_state = None
        self._peer_last_ms = None
        self._peer_saw_us = False
        self._rx_last_seq = None
        self._tx_seq = 0
        self._queue = []  # [seq, mtype, body]
        self._next_tx_ms = None
        self._rto = rto_ms
        self._next_heartbeat_ms = None
        self._out = bytearray()
        self._reader = FrameReader()
        self._last_sent_seq = 0
        self.retransmits = 0
        self.duplicates = 0

    # -- sending ---------------------------------------------------------------------

    def send_reliable(self, mtype, body, now_ms):
        """Queue a message for exactly-once delivery; returns its seq, or 0 if full."""
        if len(self._queue) >= self.max_queue:
            return 0
        self._tx_seq = _seq_after(self._tx_seq)
        self._queue.append([self._tx_seq, mtype, bytes(body)])
        if len(self._queue) == 1:
            self._next_tx_ms = now_ms
            self._rto = self.rto_ms
        return self._tx_seq

    def send_unreliable(self, mtype, body):
        self._out.extend(encode_frame(mtype, self.nonce, 0, body))

    def set_state(self, state, now_ms):
        """The state this end advertises in heartbeats; a change goes out at once."""
        if state != self.state:
            self.state = state
            self._next_heartbeat_ms = now_ms

    def ping(self, token):
        self.send_unreliable(MSG_PING, struct.pack(">I", token & 0xFFFFFFFF))

    def pending(self):
        """Reliable messages not yet acked, oldest first, as (seq, mtype, body)."""
        return [tuple(m) for m in self._queue]

    def poll(self, now_ms):
        """Bytes to write now: due heartbeat, due (re)transmission, queued acks."""
        if self._queue and (self._next_tx_ms is None or now_ms - self._next_tx_ms >= 0):
            seq, mtype, body = self._queue[0]
            if seq == self._last_sent_seq:
                self.retransmits += 1
            self._last_sent_seq = seq
            self._out.extend(encode_frame(mtype, self.nonce, seq, body))
            self._next_tx_ms = now_ms + self._rto
            self._rto = min(self._rto * 2, self.rto_max_ms)
        if self._next_heartbeat_ms is None or now_ms - self._next_heartbeat_ms >= 0:
            # Echo the peer's nonce only while we hear it: a peer that sees its own nonce
            # knows both directions work, and stops believing so when we go deaf.
            seen = self.peer_nonce if self.peer_alive(now_ms) else 0
            self._out.extend(
                encode_frame(MSG_HEARTBEAT, self.nonce, 0, struct.pack(">BI", self.state, seen))
            )
            self._next_heartbeat_ms = now_ms + self.heartbeat_interval_ms
        out = bytes(self._out)
        self._out = bytearray()
        return out

    # -- receiving -------------------------------------------------------------------

    def peer_alive(self, now_ms):
        return self._peer_last_ms is not None and now_ms - self._peer_last_ms < self.peer_timeout_ms

    def connected(self, now_ms):
        """Both directions work: we hear the peer and the peer has heard us."""
        return self.peer_alive(now_ms) and self._peer_saw_us

    def receive(self, data, now_ms):
        events = []  # type: list[Event]
        for mtype, nonce, seq, body in self._reader.feed(data):
            self._on_frame(mtype, nonce, seq, body, now_ms, events)
        return events

    @property
    def bad_frames(self):
        return self._reader.bad_frames

    def _on_frame(self, mtype, nonce, seq, body, now_ms, events):
        was_alive = self.peer_alive(now_ms)
        new_peer = nonce != self.peer_nonce
        if new_peer:
            self.peer_nonce = nonce
            self.peer_state = None
            self._rx_last_seq = None
            self._peer_saw_us = False
            events.append(Event(EV_PEER_RESET, 0, b""))
        self._peer_last_ms = now_ms
        if new_peer or not was_alive:
            # The peer is back (or new): answer with a heartbeat so it learns we hear it,
            # and resend the head now rather than after a long backoff.
            self._next_heartbeat_ms = now_ms
            if self._queue:
                self._next_tx_ms = now_ms
                self._rto = self.rto_ms
        if seq != 0:
            self.send_unreliable(MSG_ACK, struct.pack(">IH", nonce, seq))
            last = self._rx_last_seq
            if last is not None and ((last - seq) & 0xFFFF) < 0x8000:
                self.duplicates += 1
                return
            self._rx_last_seq = seq
            events.append(Event(EV_MESSAGE, mtype, body, seq))
            return
        if mtype == MSG_HEARTBEAT and len(body) >= 5:
            state, seen = struct.unpack(">BI", body[:5])
            self.peer_state = state
            saw_us = seen == self.nonce
            if saw_us and not self._peer_saw_us and self._queue:
                self._next_tx_ms = now_ms
                self._rto = self.rto_ms
            self._peer_saw_us = saw_us
            events.append(Event(EV_MESSAGE, mtype, body))
        elif mtype == MSG_ACK and len(body) >= 6:
            acked_nonce, acked_seq = struct.unpack(">IH", body[:6])
            if acked_nonce == self.nonce and self._queue and self._queue[0][0] == acked_seq:
                seq0, mtype0, body0 = self._queue.pop(0)
                events.append(Event(EV_ACKED, mtype0, body0, seq0))
                self._rto = self.rto_ms
                self._next_tx_ms = now_ms if self._queue else None
        elif mtype == MSG_PING and len(body) >= 4:
            self.send_unreliable(MSG_PONG, body[:4])
        elif mtype == MSG_PONG and len(body) >= 4:
            events.append(Event(EV_MESSAGE, mtype, body))
