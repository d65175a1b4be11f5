"""Durable outbox of sealed messages: a segment log with a CRC per record.

Written before publish, released only after PUBACK (and a short grace period, so a
broker that crashes before it passed a message on can be given it again). Holds
ciphertext and clear metadata only. docs/spool.md explains the design and why it is a
segment log and not SQLite (SD-card write amplification, measured), and the format.

Segment file `seg-<first id>.sl2`, format 2 (what this code writes):

    "SLS2" | first_id u64 | base_ms u64 | crc32 u32 (of the 20 bytes before) | record*
    record = length uv | crc32 u32 (of body) | body
    body   = ctrl u8 | context | [created zz] | [seq zz] | [audio_ms uv] | [input_end zz]
             | [flags uv | envelope seq zz | capture zz | sample_count zz] | payload

A record's id is the segment's first id plus its index. `context` is either the index of
a context the segment defined earlier (uv) or, with CTRL_NEW_CONTEXT, a new one: topic,
session and (for a sealed envelope) the constant part of its clear header
(`envelope.header_split`), each as `uv length | bytes`; the record that defines a context
is its base. Every number is kept relative to the context's base and to what the base
predicts (seq + n, capture time + n chunks, created + n x audio_ms), so a chunk of live
audio costs about 15 bytes beside its ciphertext, where format 1 spent about 110 (the
topic, the session id and the 60-byte clear header, every time). Decoding a record needs
only its segment's contexts (kept in memory), never the records before it: reads stay
random access. The envelope is rebuilt byte for byte (`header_join`).

Format 1 segments (`seg-<first id>.log`: "SLR1" records with the meta spelled out,
`_encode_v1`) are still read, so a unit updated with unsent audio in its spool sends
all of it; new records always go to a format-2 segment.

Kinds: audio, event, session, status (published) and state, ack (internal).

Concurrency: the capture thread appends, the uplink's pump thread reads, marks in
flight and acks; every public method takes the spool's one lock, and nothing blocks on
the network while holding it.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import threading
import time
import zlib
from array import array
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from scribelink import envelope as env
from scribelink.varint import VarintError, put_uv, put_zz, read_uv, read_zz

MAGIC = b"SLR1"  # format 1 records
_HEAD = struct.Struct("<4sII")
_META = struct.Struct("<QQqQHBBHB")
FILE_MAGIC = b"SLS2"  # format 2 segment files
_FILE_HEAD = struct.Struct("<4sQQI")
_CRC = struct.Struct("<I")
KINDS = ("audio", "event", "session", "status", "state", "ack")
PUBLISHED = {"audio", "event", "session", "status"}
# session open/close/gap: tiny, and a session is unreadable without its open
NEVER_EVICTED = {"session"}
MAX_RECORD = 2 << 20
SEGMENT_BYTES = 4 << 20
ACK_GRACE_S = 30.0


@dataclass(frozen=True)
class Record:
    id: int
    topic: str
    payload: bytes
    retain: bool
    kind: str
    session: str | None
    seq: int | None
    audio_ms: int
    created_us: int
    input_end: int = 0


@dataclass(frozen=True)
class Evicted:
    """What an eviction removed from one (session, stream): declared, never silent."""

    session: str
    kind: str
    first_seq: int
    last_seq: int
    count: int
    reason: str


def seq_ranges(seqs: list[int]) -> list[tuple[int, int]]:
    """[3, 1, 2, 7, 8] -> [(1, 3), (7, 8)]: sequence numbers as inclusive runs."""
    out: list[tuple[int, int]] = []
    for q in sorted(set(seqs)):
        if out and q == out[-1][1] + 1:
            out[-1] = (out[-1][0], q)
        else:
            out.append((q, q))
    return out


class SpoolFullError(OSError):
    """Nothing left to evict and the medium refuses the write."""


class InFlight:
    """The records handed to the MQTT client and not yet acknowledged: where the spool and
    the uplink meet. The spool reserves records here as it hands them out and its eviction
    never declares them lost (they may still arrive: a PUBACK lost with the link), carrying
    them forward under new ids instead; the uplink releases them on PUBACK and follows
    those moves with `resolve`.

    Thread-safe: the uplink's pump thread and the capture thread (through the spool's
    eviction) both use it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: set[int] = set()
        self._moved: dict[int, int] = {}

    def reserve(self, rid: int) -> None:
        with self._lock:
            self._ids.add(rid)

    def release(self, rid: int) -> None:
        with self._lock:
            self._ids.discard(rid)

    def __contains__(self, rid: int) -> bool:
        with self._lock:
            return rid in self._ids

    def snapshot(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._ids)

    def carried_forward(self, mapping: dict[int, int]) -> None:
        """The spool rewrote these in-flight records under new ids (old -> new)."""
        with self._lock:
            for old, new in mapping.items():
                self._ids.discard(old)
                self._ids.add(new)
                self._moved[old] = new

    def resolve(self, rid: int) -> int:
        """The id a record handed out as `rid` has now (after any carry-forward)."""
        with self._lock:
            while rid in self._moved:
                rid = self._moved.pop(rid)
            return rid


def _encode_v1(rid: int, r: dict, created_us: int) -> bytes:
    """A format-1 record (what units wrote before format 2; kept so the reader stays
    tested against real old files)."""
    topic = r.get("topic", "").encode()
    session = (r.get("session") or "").encode()
    seq = r.get("seq")
    meta = _META.pack(rid, created_us, -1 if seq is None else seq, r.get("input_end", 0),
                      r.get("audio_ms", 0), KINDS.index(r["kind"]), int(r.get("retain", False)),
                      len(topic), len(session)) + topic + session
    body = meta + r["payload"]
    return _HEAD.pack(MAGIC, len(body), zlib.crc32(body)) + body


def _decode_v1(buf: bytes | memoryview, off: int) -> tuple[Record, int] | None:
    """The format-1 record at `off` and the offset after it, or None if absent/torn/corrupt."""
    if off + _HEAD.size > len(buf):
        return None
    magic, length, crc = _HEAD.unpack_from(buf, off)
    end = off + _HEAD.size + length
    if magic != MAGIC or length < _META.size or length > MAX_RECORD or end > len(buf):
        return None
    body = bytes(buf[off + _HEAD.size:end])
    if zlib.crc32(body) != crc:
        return None
    rid, created, seq, input_end, audio_ms, kind, retain, tlen, slen = _META.unpack_from(body)
    p = _META.size
    if kind >= len(KINDS) or p + tlen + slen > len(body):
        return None
    topic = body[p:p + tlen].decode(errors="replace")
    session = body[p + tlen:p + tlen + slen].decode(errors="replace") or None
    payload = body[p + tlen + slen:]
    return Record(rid, topic, payload, bool(retain), KINDS[kind], session,
                  None if seq < 0 else seq, audio_ms, created, input_end), end


# ------------------------------------------------------------------ format 2

# ctrl: kind in the low 3 bits, then what the body holds
_KIND_MASK = 0x07
CTRL_RETAIN, CTRL_SEQ, CTRL_NEW_CONTEXT, CTRL_ENVELOPE, CTRL_INPUT_END = (
    0x08, 0x10, 0x20, 0x40, 0x80)


class _Corrupt(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class _Context:
    """What the records of one (topic, session, clear-header template) in a segment share;
    the values of the record that defined it are the base the others are coded against."""

    topic: str
    session: str | None
    template: bytes  # b"": the payloads are not envelopes (kept whole)
    created_ms: int
    seq: int
    input_end: int
    capture_us: int
    sample_count: int
    sample_rate: int

    def predict_capture(self, seq: int) -> int:
        if not self.sample_rate:
            return self.capture_us
        return self.capture_us + (seq - self.seq) * self.sample_count * 1_000_000 // \
            self.sample_rate

    def predict_created(self, seq: int, audio_ms: int) -> int:
        return self.created_ms + (seq - self.seq) * audio_ms

    def predict_input_end(self, seq: int) -> int:
        return self.input_end + (seq - self.seq) * self.sample_count


class Segment:
    """One file of the log and its in-memory index (offsets, kinds, audio ms, created
    times; for format 2 also its contexts)."""

    def __init__(self, path: Path, first_id: int, *, fmt: int = 2, base_ms: int = 0) -> None:
        self.path = path
        self.first_id = first_id
        self.fmt = fmt
        self.base_ms = base_ms
        self.offsets = array("Q")
        self.audio_ms = array("H")
        self.kinds = array("B")
        self.created_us = array("Q")
        self.size = 0
        self.last_ack_s = 0.0
        self.contexts: list[_Context] = []
        self._context_at: dict[tuple[str, str | None, bytes], int] = {}

    @property
    def last_id(self) -> int:
        return self.first_id + len(self.offsets) - 1

    def add(self, rec: Record, off: int, size: int) -> None:
        self.offsets.append(off)
        self.audio_ms.append(min(rec.audio_ms, 65535))
        self.kinds.append(KINDS.index(rec.kind))
        self.created_us.append(rec.created_us)
        self.size = off + size

    # -------------------------------------------------------------- format 2 codec

    def file_head(self) -> bytes:
        head = _FILE_HEAD.pack(FILE_MAGIC, self.first_id, self.base_ms, 0)[:-4]
        return head + _CRC.pack(zlib.crc32(head))

    @staticmethod
    def read_file_head(data: bytes) -> tuple[int, int] | None:
        """(first_id, base_ms) of a format-2 file, or None if its head is torn or wrong."""
        if len(data) < _FILE_HEAD.size:
            return None
        magic, first_id, base_ms, crc = _FILE_HEAD.unpack_from(data)
        if magic != FILE_MAGIC or zlib.crc32(data[:_FILE_HEAD.size - 4]) != crc:
            return None
        return first_id, base_ms

    def encode(self, r: dict, created_us: int, new: list[_Context]) -> bytes:
        """Record `r` in this segment's format 2; contexts it defines are appended to `new`
        (the caller adopts them once the bytes are written: a refused write must leave
        the in-memory contexts as the file has them)."""
        topic, session = r.get("topic", ""), r.get("session") or None
        payload, seq = r["payload"], r.get("seq")
        audio_ms, input_end = r.get("audio_ms", 0), r.get("input_end", 0)
        created_ms = created_us // 1000
        parts = env.header_split(payload)
        template = parts.template if parts is not None else b""
        key = (topic, session, template)
        index = self._context_at.get(key)
        if index is None:
            index = next((len(self.contexts) + i for i, c in enumerate(new)
                          if (c.topic, c.session, c.template) == key), None)
        ctrl = KINDS.index(r["kind"]) | (CTRL_RETAIN if r.get("retain") else 0)
        out = bytearray(1)
        s = seq or 0
        if index is None:  # this record is the context's base: its numbers as they are
            ctrl |= CTRL_NEW_CONTEXT
            new.append(_Context(topic, session, template, created_ms, s, input_end,
                                parts.capture_us if parts else 0,
                                parts.sample_count if parts else 0,
                                parts.sample_rate if parts else 0))
            for field in (topic.encode(), (session or "").encode(), template):
                put_uv(out, len(field))
                out += field
            pred_created, pred_seq, pred_input, pred_count = self.base_ms, 0, 0, 0
            pred_capture = 0
        else:
            ctx = (self.contexts[index] if index < len(self.contexts)
                   else new[index - len(self.contexts)])
            put_uv(out, index)
            if seq is None:
                s = ctx.seq
            pred_created = ctx.predict_created(s, audio_ms)
            pred_seq, pred_input, pred_count = ctx.seq, ctx.predict_input_end(s), \
                ctx.sample_count
            pred_capture = ctx.predict_capture(parts.seq) if parts else 0
        put_zz(out, created_ms - pred_created)
        if seq is not None:
            ctrl |= CTRL_SEQ
            put_zz(out, seq - pred_seq)
        put_uv(out, audio_ms)
        if input_end:
            ctrl |= CTRL_INPUT_END
            put_zz(out, input_end - pred_input)
        if parts is not None:
            ctrl |= CTRL_ENVELOPE
            put_uv(out, parts.flags)
            put_zz(out, parts.seq - s)
            put_zz(out, parts.capture_us - pred_capture)
            put_zz(out, parts.sample_count - pred_count)
            out += memoryview(payload)[parts.body_at:]
        else:
            out += payload
        out[0] = ctrl
        head = bytearray()
        put_uv(head, len(out))
        return bytes(head) + _CRC.pack(zlib.crc32(out)) + out

    def adopt(self, new: list[_Context]) -> None:
        for c in new:
            self._context_at[(c.topic, c.session, c.template)] = len(self.contexts)
            self.contexts.append(c)

    def decode(self, buf: bytes | memoryview, off: int, rid: int | None = None, *,
               learn: bool = False) -> tuple[Record, int] | None:
        """The record at `off` of `buf` and the offset after it, or None if absent, torn or
        corrupt. `learn`: the record is read for the first time, in file order (`_load`),
        so a context it defines becomes the segment's."""
        if self.fmt == 1:
            return _decode_v1(buf, off)
        try:
            length, i = read_uv(buf, off)
        except VarintError:
            return None
        end = i + 4 + length
        if length < 2 or length > MAX_RECORD or end > len(buf):
            return None
        crc = _CRC.unpack_from(buf, i)[0]
        body = bytes(buf[i + 4:end])
        if zlib.crc32(body) != crc:
            return None
        try:
            rec, new = self._decode_body(body, rid)
        except (_Corrupt, IndexError, UnicodeDecodeError, ValueError):
            return None
        if learn and new is not None:
            self.adopt([new])
        return rec, end

    def _decode_body(self, b: bytes, rid: int | None) -> tuple[Record, _Context | None]:
        ctrl = b[0]
        kind = ctrl & _KIND_MASK
        if kind >= len(KINDS):
            raise _Corrupt("kind")
        i = 1
        ctx: _Context | None = None
        if ctrl & CTRL_NEW_CONTEXT:
            fields = []
            for _ in range(3):
                n, i = read_uv(b, i)
                if i + n > len(b):
                    raise _Corrupt("context")
                fields.append(b[i:i + n])
                i += n
        else:
            index, i = read_uv(b, i)
            ctx = self.contexts[index]
        created_d, i = read_zz(b, i)
        seq_d = 0
        if ctrl & CTRL_SEQ:
            seq_d, i = read_zz(b, i)
        audio_ms, i = read_uv(b, i)
        input_d = 0
        if ctrl & CTRL_INPUT_END:
            input_d, i = read_zz(b, i)
        hdr = None
        if ctrl & CTRL_ENVELOPE:
            flags, i = read_uv(b, i)
            eseq_d, i = read_zz(b, i)
            cap_d, i = read_zz(b, i)
            count_d, i = read_zz(b, i)
            hdr = (flags, eseq_d, cap_d, count_d)
        new = None
        if ctx is None:  # the context's base: its numbers are its own
            template = fields[2]
            rate = 0
            if hdr is not None:
                if len(template) < env.FIXED_LEN:
                    raise _Corrupt("template")
                rate = struct.unpack_from(">I", template, 40)[0]
            s = seq_d
            ctx = new = _Context(fields[0].decode(), fields[1].decode() or None, template,
                                 self.base_ms + created_d, s, input_d,
                                 hdr[2] if hdr else 0, hdr[3] if hdr else 0, rate)
            created_ms, input_end = ctx.created_ms, input_d
            envelope = None if hdr is None else (hdr[0], s + hdr[1], hdr[2], hdr[3])
        else:
            s = ctx.seq + seq_d if ctrl & CTRL_SEQ else ctx.seq
            created_ms = ctx.predict_created(s, audio_ms) + created_d
            input_end = ctx.predict_input_end(s) + input_d
            envelope = None
            if hdr is not None:
                eseq = s + hdr[1]
                envelope = (hdr[0], eseq, ctx.predict_capture(eseq) + hdr[2],
                            ctx.sample_count + hdr[3])
        if envelope is None:
            payload = b[i:]
        else:
            if not ctx.template:
                raise _Corrupt("an envelope in a context without a header")
            payload = env.header_join(ctx.template, *envelope) + b[i:]
        return Record(-1 if rid is None else rid, ctx.topic, payload, bool(ctrl & CTRL_RETAIN),
                      KINDS[kind], ctx.session, s if ctrl & CTRL_SEQ else None, audio_ms,
                      created_ms * 1000, input_end if ctrl & CTRL_INPUT_END else 0), new


class Spool:
    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 2_000_000_000,
        max_age_s: float = 8 * 3600,
        max_audio_s: float = 0.0,
        fsync_interval_s: float = 1.0,
        segment_bytes: int = SEGMENT_BYTES,
        ack_grace_s: float = ACK_GRACE_S,
        clock=time.time,
        in_flight: InFlight | None = None,
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        # unsent audio held, in seconds of audio (0: no limit): the same day whatever the
        # codec, where max_bytes is the medium's limit
        self.max_audio_s = max_audio_s
        self.fsync_interval_s = fsync_interval_s
        self.segment_bytes = segment_bytes
        self.ack_grace_s = ack_grace_s
        self._clock = clock
        self._lock = threading.RLock()
        self.segments: list[Segment] = []
        self.state: dict[str, str] = {}
        self.watermark = 0  # every id <= watermark is acked
        self._acked_above: set[int] = set()
        self._recent_acks: deque[tuple[float, int]] = deque()
        self._evictions: list[Evicted] = []
        self.corrupt_records_cut = 0
        self.bytes_written = 0
        self.next_id = 1
        self._fd: int | None = None
        self._dirty = False
        self._synced_mark = 0
        self._last_sync = self._clock()
        self._pending_audio_ms = 0
        self._unacked = 0
        self.last_seq: dict[tuple[str, str], int] = {}  # (session, kind) -> highest seq spooled
        # ids handed to the MQTT client and not yet acked: eviction carries them forward
        # instead of declaring them lost, since they may still arrive
        self.in_flight = in_flight or InFlight()
        self._load()

    # ------------------------------------------------------------------ load and recover

    def _load(self) -> None:
        # format-1 files end in .log, format-2 ones in .sl2: an agent rolled back to a
        # release that knows only format 1 leaves the newer files alone (it would take
        # them for torn ones and cut them), and ids sort them into one log either way
        files = sorted([*self.dir.glob("seg-*.log"), *self.dir.glob("seg-*.sl2")])
        ack_mark = 0
        for path in files:
            data = path.read_bytes()
            seg, off = self._open_file(path, data)
            state: dict[str, str] = {}
            acks, seqs = 0, []
            while seg is not None and off < len(data):
                got = seg.decode(data, off, seg.last_id + 1, learn=True)
                if got is None:
                    # torn or corrupt: cut the segment back to its last good record
                    self.corrupt_records_cut += 1
                    with open(path, "r+b") as f:
                        f.truncate(off)
                        os.fsync(f.fileno())
                    break
                rec, end = got
                if seg.fmt == 1 and not len(seg.offsets):
                    seg.first_id = rec.id
                elif seg.fmt == 1 and rec.id != seg.last_id + 1:
                    break  # not the log we wrote: stop trusting this segment here
                seg.add(rec, off, end - off)
                if rec.kind == "state":
                    state.update(json.loads(rec.payload))
                elif rec.kind == "audio" and rec.input_end:
                    state["input_frames"] = str(rec.input_end)
                elif rec.kind == "ack":
                    acks = max(acks, int(rec.payload))
                seqs.append((rec.session, rec.kind, rec.seq))
                off = end
            if seg is None or not len(seg.offsets) or (
                    self.segments and seg.first_id <= self.segments[-1].last_id):
                # nothing in it, or ids the log already has (a release rolled back and
                # forth wrote both): what it says must not count (its acks least of all)
                path.unlink()
                continue
            self.state.update(state)
            ack_mark = max(ack_mark, acks)
            for q in seqs:
                self._note_seq(*q)
            self.segments.append(seg)
        if self.segments:
            self.next_id = self.segments[-1].last_id + 1
            first = self.segments[0].first_id
            self.watermark = max(ack_mark, first - 1)
        # internal records above the watermark are acked by definition
        for seg in self.segments:
            for i, k in enumerate(seg.kinds):
                rid = seg.first_id + i
                if rid > self.watermark:
                    if KINDS[k] not in PUBLISHED:
                        self._acked_above.add(rid)
                        continue
                    self._unacked += 1
                    if KINDS[k] == "audio":
                        self._pending_audio_ms += seg.audio_ms[i]
        self._advance_watermark()
        self._open_segment()

    @staticmethod
    def _open_file(path: Path, data: bytes) -> tuple[Segment | None, int]:
        """The segment a file holds (records not read yet) and where its records start;
        None for a file without a readable head (torn at its creation: it held nothing)."""
        if data[:4] == MAGIC:
            return Segment(path, 0, fmt=1), 0
        head = Segment.read_file_head(data)
        if head is None:
            return None, 0
        return Segment(path, head[0], base_ms=head[1]), _FILE_HEAD.size

    def _open_segment(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
        path = self.dir / f"seg-{self.next_id:016d}.sl2"
        # a file of this name holds no record the log knows (_load removed it, or it is
        # a head torn at creation): start it afresh
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        # the file's head goes out with its first record (one write: a full medium
        # refuses both, and a file that is still empty holds nothing)
        seg = Segment(path, self.next_id, base_ms=int(self._clock() * 1000))
        self.segments.append(seg)
        if self.state:
            # every segment starts with the whole state, so collecting the older ones (all
            # acked) never loses it: what a restart resumes from (input_frames, the open
            # session, the cues seen) survives any number of restarts
            self._write_internal({"payload": json.dumps(self.state).encode(), "kind": "state"})
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _write_internal(self, r: dict) -> None:
        """Append one internal record (state, ack) to the newest segment."""
        assert self._fd is not None
        seg = self.segments[-1]
        now_us = int(self._clock() * 1e6)
        new: list = []
        head = seg.file_head() if seg.size == 0 else b""
        blob = seg.encode(r, now_us, new)
        start = seg.size
        try:
            if os.write(self._fd, head + blob) != len(head) + len(blob):
                raise OSError(errno.ENOSPC, "short write")
        except OSError:
            os.ftruncate(self._fd, start)
            raise
        seg.adopt(new)
        seg.add(Record(self.next_id, "", b"", False, r["kind"], None, None, 0,
                       now_us // 1000 * 1000), start + len(head), len(blob))
        self.bytes_written += len(head)
        self._acked_above.add(self.next_id)
        self.next_id += 1
        self.bytes_written += len(blob)

    # ------------------------------------------------------------------ writes

    def put(self, topic: str, payload: bytes, *, kind: str, session: str | None = None,
            seq: int | None = None, retain: bool = False, audio_ms: int = 0) -> int:
        return self.put_many([{"topic": topic, "payload": payload, "kind": kind,
                               "session": session, "seq": seq, "retain": retain,
                               "audio_ms": audio_ms}])[0]

    def put_many(self, records: list[dict], state: dict[str, str] | None = None) -> list[int]:
        """Append records (and a state update) in one write: all of them, or on a torn
        write none of them, survive. Durable against a process crash on return."""
        with self._lock:
            recs = list(records)
            if state:
                self.state.update(state)
                recs.append({"payload": json.dumps(state).encode(), "kind": "state"})
            need = sum(len(r["payload"]) + 96 for r in recs)
            self._make_room(need)
            try:
                return self._append(recs)
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                # the medium is full before our budget is: evict and try once more
                if not self._evict_oldest("spool_full"):
                    raise SpoolFullError(errno.ENOSPC, "spool medium full, nothing to evict") from e
                return self._append(recs)

    def _append(self, recs: list[dict]) -> list[int]:
        assert self._fd is not None
        seg = self.segments[-1]
        if seg.size >= self.segment_bytes and len(seg.offsets):
            self._open_segment()
            seg = self.segments[-1]
        now_us = int(self._clock() * 1e6)
        ids: list[int] = []
        blobs: list[bytes] = []
        contexts: list[_Context] = []
        for i, r in enumerate(recs):
            blobs.append(seg.encode(r, now_us, contexts))
            ids.append(self.next_id + i)
        head = seg.file_head() if seg.size == 0 else b""
        buf = head + b"".join(blobs)
        start = seg.size
        try:
            written = os.write(self._fd, buf)
            if written != len(buf):
                raise OSError(errno.ENOSPC, "short write")
        except OSError:
            os.ftruncate(self._fd, start)  # never leave a torn record behind
            raise
        seg.adopt(contexts)
        now_us = now_us // 1000 * 1000  # what the segment keeps
        off = start + len(head)
        for rid, r, blob in zip(ids, recs, blobs, strict=True):
            self._note_seq(r.get("session"), r["kind"], r.get("seq"))
            if r["kind"] == "audio" and r.get("input_end"):
                self.state["input_frames"] = str(r["input_end"])
            rec = Record(rid, r.get("topic", ""), b"", False, r["kind"], r.get("session"),
                         r.get("seq"), r.get("audio_ms", 0), now_us)
            seg.add(rec, off, len(blob))
            off += len(blob)
            if r["kind"] not in PUBLISHED:
                self._acked_above.add(rid)
                continue
            self._unacked += 1
            if r["kind"] == "audio":
                self._pending_audio_ms += r.get("audio_ms", 0)
        self.next_id += len(recs)
        self.bytes_written += len(buf)
        self._dirty = True
        self._advance_watermark()
        self._maybe_sync()
        return [rid for rid, r in zip(ids, recs, strict=True) if r["kind"] != "state"]

    def _note_seq(self, session: str | None, kind: str, seq: int | None) -> None:
        if session and seq is not None and kind in ("audio", "event"):
            key = (session, kind)
            if seq > self.last_seq.get(key, -1):
                self.last_seq[key] = seq
                if len(self.last_seq) > 16:  # only recent sessions matter
                    self.last_seq.pop(next(iter(self.last_seq)))

    def _maybe_sync(self) -> None:
        if self._dirty and self._clock() - self._last_sync >= self.fsync_interval_s:
            self.sync()

    def sync(self) -> None:
        """fsync: what is spooled is now on the medium. Also persists the ack mark."""
        with self._lock:
            if self._fd is None:
                return
            if self.watermark and self.watermark != self._synced_mark:
                self._write_internal({"payload": str(self.watermark).encode(),
                                      "kind": "ack"})
                self._synced_mark = self.watermark
            os.fsync(self._fd)
            self._dirty = False
            self._last_sync = self._clock()
            self._collect()

    # ------------------------------------------------------------------ acks

    def ack(self, rid: int) -> None:
        with self._lock:
            if rid <= self.watermark or rid in self._acked_above:
                return
            kind, audio_ms = self._kind_of(rid)
            if not kind:
                return
            if kind == "audio":
                self._pending_audio_ms -= audio_ms
            self._unacked -= 1
            self._acked_above.add(rid)
            self._recent_acks.append((self._clock(), rid))
            self._advance_watermark()

    def _advance_watermark(self) -> None:
        while (self.watermark + 1) in self._acked_above:
            self.watermark += 1
            self._acked_above.discard(self.watermark)
        cutoff = self._clock() - self.ack_grace_s
        while self._recent_acks and self._recent_acks[0][0] < cutoff:
            self._recent_acks.popleft()

    def recently_acked(self, since_s: float) -> list[int]:
        """Ids acked at or after `since_s` that are still on disk (for a broker that lost
        them: see docs/spool.md)."""
        with self._lock:
            first = self.segments[0].first_id if self.segments else self.next_id
            return [rid for t, rid in self._recent_acks if t >= since_s and rid >= first]

    def _kind_of(self, rid: int) -> tuple[str, int]:
        for seg in reversed(self.segments):
            if seg.first_id <= rid <= seg.last_id:
                i = rid - seg.first_id
                return KINDS[seg.kinds[i]], seg.audio_ms[i]
        return "", 0

    def _collect(self) -> None:
        """Delete segments whose records are all acked and past the grace period."""
        now = self._clock()
        while len(self.segments) > 1:
            seg = self.segments[0]
            if seg.last_id > self.watermark:
                break
            newest_ack = max((t for t, rid in self._recent_acks if rid <= seg.last_id),
                             default=0.0)
            if now - newest_ack < self.ack_grace_s:
                break
            seg.path.unlink(missing_ok=True)
            self.segments.pop(0)

    # ------------------------------------------------------------------ eviction

    def _make_room(self, need: int) -> None:
        while self.total_bytes + need > self.max_bytes and self._evict_oldest("spool_full"):
            pass
        while self.max_audio_s and self._pending_audio_ms > self.max_audio_s * 1000 and \
                self._evict_oldest("spool_full"):
            pass
        if self.max_age_s and len(self.segments) > 1:
            horizon = int((self._clock() - self.max_age_s) * 1e6)
            while len(self.segments) > 1 and self._unacked_published(self.segments[0]) and \
                    self.segments[0].created_us[-1] < horizon:
                if not self._evict_oldest("spool_age"):
                    break

    def _unacked_published(self, seg: Segment) -> bool:
        return seg.last_id > self.watermark

    def _evict_oldest(self, reason: str) -> bool:
        """Drop the oldest segment. Unsent audio and events in it become declared gaps;
        unsent session records are carried forward. Returns False if nothing can go."""
        if len(self.segments) <= 1:
            return False
        # Oldest first, but skip a segment holding records the MQTT client has in flight:
        # they may well arrive (a PUBACK lost with the link), so they are neither dropped
        # nor declared. Only if every candidate holds some are they carried forward.
        busy = self.in_flight.snapshot()
        index = next((i for i, sg in enumerate(self.segments[:-1])
                      if not any(sg.first_id <= b <= sg.last_id for b in busy)), 0)
        seg = self.segments[index]
        data = seg.path.read_bytes()
        carry: list[dict] = []
        lost: dict[tuple[str, str], list[int]] = {}
        for i, off in enumerate(seg.offsets):
            rid = seg.first_id + i
            if rid <= self.watermark or rid in self._acked_above:
                continue
            got = seg.decode(data, off, rid)
            if got is None:
                continue
            rec = got[0]
            if rec.kind in NEVER_EVICTED or rid in busy:
                carry.append({"topic": rec.topic, "payload": rec.payload, "kind": rec.kind,
                              "session": rec.session, "seq": rec.seq, "retain": rec.retain,
                              "audio_ms": rec.audio_ms, "_old_id": rid})
                if rec.kind == "audio":
                    self._pending_audio_ms -= rec.audio_ms
            elif rec.kind in ("audio", "event") and rec.session and rec.seq is not None:
                lost.setdefault((rec.session, rec.kind), []).append(rec.seq)
                if rec.kind == "audio":
                    self._pending_audio_ms -= rec.audio_ms
            if rec.kind in PUBLISHED:
                self._unacked -= 1
            self._acked_above.add(rid)
        self._advance_watermark()
        seg.path.unlink(missing_ok=True)
        self.segments.pop(index)
        for (session, kind), seqs in lost.items():
            for first, last in seq_ranges(seqs):
                self._evictions.append(Evicted(session, kind, first, last, last - first + 1,
                                               reason))
        if carry:
            new_ids = self._append(carry)
            old_ids = [c["_old_id"] for c in carry]
            self.in_flight.carried_forward(
                {o: n for o, n in zip(old_ids, new_ids, strict=True) if o in busy})
        return True

    def take_evictions(self) -> list[Evicted]:
        with self._lock:
            out, self._evictions = self._evictions, []
            return out

    # ------------------------------------------------------------------ reads

    def _read_span(self, seg: Segment, i0: int, i1: int) -> tuple[bytes, int]:
        """Bytes of records i0..i1 (inclusive) of a segment, and the file offset of i0."""
        start = seg.offsets[i0]
        end = seg.offsets[i1 + 1] if i1 + 1 < len(seg.offsets) else seg.size
        rfd = os.open(seg.path, os.O_RDONLY)
        try:
            return os.pread(rfd, end - start, start), start
        finally:
            os.close(rfd)

    def take(self, limit: int, *, after_id: int = 0, before_id: int | None = None
             ) -> list[Record]:
        """Like `pending`, for handing out: the records come back reserved in `in_flight`
        (atomically with the read, so an eviction in between cannot declare them lost),
        skipping any already there. Release what you do not hand over."""
        with self._lock:
            got = [r for r in self.pending(limit, after_id=after_id, before_id=before_id)
                   if r.id not in self.in_flight]
            for r in got:
                self.in_flight.reserve(r.id)
            return got

    def take_ids(self, ids: list[int]) -> list[Record]:
        """`read` for handing out (replays): reserved like `take`."""
        with self._lock:
            got = [r for r in self.read(ids) if r.id not in self.in_flight]
            for r in got:
                self.in_flight.reserve(r.id)
            return got

    def pending(self, limit: int, *, after_id: int = 0, before_id: int | None = None
                ) -> list[Record]:
        """Unacked published records with after_id < id (< before_id), oldest first."""
        out: list[Record] = []
        with self._lock:
            lo = max(after_id, self.watermark) + 1
            for seg in self.segments:
                if seg.last_id < lo or not len(seg.offsets):
                    continue
                if before_id is not None and seg.first_id >= before_id:
                    break
                wanted = []
                for i in range(max(0, lo - seg.first_id), len(seg.offsets)):
                    rid = seg.first_id + i
                    if before_id is not None and rid >= before_id:
                        break
                    if rid in self._acked_above or KINDS[seg.kinds[i]] not in PUBLISHED:
                        continue
                    wanted.append(i)
                    if len(out) + len(wanted) >= limit:
                        break
                if wanted:
                    data, base = self._read_span(seg, wanted[0], wanted[-1])
                    for i in wanted:
                        got = seg.decode(data, seg.offsets[i] - base, seg.first_id + i)
                        if got is not None:
                            out.append(got[0])
                if len(out) >= limit or (before_id is not None and seg.last_id >= before_id - 1):
                    return out
        return out

    def read(self, ids: list[int]) -> list[Record]:
        out = []
        with self._lock:
            for seg in self.segments:
                want = [r for r in ids if seg.first_id <= r <= seg.last_id]
                if not want:
                    continue
                with open(seg.path, "rb") as f:
                    data = f.read()
                for rid in want:
                    got = seg.decode(data, seg.offsets[rid - seg.first_id], rid)
                    if got is not None and got[0].kind in PUBLISHED:
                        out.append(got[0])
        return out

    def get_state(self, key: str, default: str | None = None) -> str | None:
        return self.state.get(key, default)

    # ------------------------------------------------------------------ accounting

    @property
    def total_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    def unacked_count(self) -> int:
        return self._unacked

    def __len__(self) -> int:
        return self.unacked_count()

    def oldest_unacked_us(self) -> int | None:
        rid = self.watermark + 1
        for seg in self.segments:
            if seg.first_id <= rid <= seg.last_id:
                for i in range(rid - seg.first_id, len(seg.offsets)):
                    if (seg.first_id + i) not in self._acked_above:
                        return seg.created_us[i]
        return None

    def stats(self) -> dict:
        with self._lock:
            oldest = self.oldest_unacked_us()
            records = self.unacked_count()
            return {
                "records": records,
                "bytes": self.total_bytes,
                "seconds": round(max(0, self._pending_audio_ms) / 1000.0, 2),
                "oldest_unsent_age_s": 0.0 if oldest is None else
                round(max(0.0, self._clock() - oldest / 1e6), 2),
            }

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                self.sync()
                os.close(self._fd)
                self._fd = None
