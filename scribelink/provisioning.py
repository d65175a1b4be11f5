"""The serial provisioning protocol (docs/protocol.md, section 10): the one owner of its
frames, commands, states and error codes. Imported by the unit's service
(edge_agent/provision.py) and the tech's tool (scripts/provision).

A frame:

    0   2  magic      A5 5C
    2   1  version    01
    3   1  kind       01 request, 02 response, 03 progress
    4   2  request id big-endian u16 (a response and its progress echo it)
    6   2  length     big-endian u16, payload bytes, <= MAX_PAYLOAD
    8   2  hcrc       CRC-16/XMODEM over bytes 2..7, big-endian
    10  n  payload    JSON object, ASCII only (non-ASCII as \\u escapes)
    10+n 4 crc        CRC-32 (zlib) over bytes 2..10+n-1, big-endian

The header has its own check so garbage cannot make the reader wait for a long bogus
payload; payloads are pure ASCII so the magic (two bytes >= 0x80) never occurs inside a
good frame, and a reader that loses sync finds the next frame at the next magic.

Pure: no I/O, no clock of its own (`now` is passed in), runs unchanged in tests and fuzzers.
"""

from __future__ import annotations

import binascii
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

MAGIC = b"\xa5\x5c"
VERSION = 1
HEADER = struct.Struct(">2sBBHHH")  # magic, version, kind, request id, length, hcrc
HEADER_LEN = HEADER.size  # 10
TRAILER_LEN = 4
MAX_PAYLOAD = 16 * 1024
MAX_FRAME = HEADER_LEN + MAX_PAYLOAD + TRAILER_LEN
# a frame whose bytes stop arriving for this long is dropped (the cable was pulled mid-frame)
PARTIAL_TIMEOUT_S = 2.0

KIND_REQUEST = 1
KIND_RESPONSE = 2
KIND_PROGRESS = 3
KINDS = (KIND_REQUEST, KIND_RESPONSE, KIND_PROGRESS)

# Revision of the command set (hello's software.provisioning). 2: the fail-safe enrolment
# (arm_failsafe, staged changes, commit), precheck, identify, self-test rows with a status.
# 3: the trust root (docs/trust.md): the unit's signing key and its binding, trust anchors
# pinned where factory reset cannot reach, one-time tokens signed by the clinic authority
# for unlock, factory reset, set_trust and release.
REVISION = 3

# unit provisioning states, derived from the committed files (a staged enrolment is not a
# state of its own: hello and status report it as `failsafe`)
STATE_BLANK = "blank"  # no configuration
STATE_CONFIGURED = "configured"  # clinic/room/unit id/broker set, no certificate
STATE_ENROLLED = "enrolled"  # own key and a CA certificate installed, not locked
STATE_LOCKED = "locked"  # committed: read-only until physical presence unlocks it
STATES = (STATE_BLANK, STATE_CONFIGURED, STATE_ENROLLED, STATE_LOCKED)

# commands; those a locked unit still answers are READ_ONLY
CMD_HELLO = "hello"
CMD_STATUS = "status"
CMD_SELFTEST_RESULTS = "selftest_results"
CMD_SELFTEST = "selftest"
CMD_SET_CONFIG = "set_config"
CMD_GENERATE_KEY = "generate_key"
CMD_INSTALL_CERT = "install_cert"
CMD_COMMIT = "commit"
CMD_UNLOCK = "unlock"
CMD_FACTORY_RESET = "factory_reset"
CMD_PRECHECK = "precheck"
CMD_IDENTIFY = "identify"
CMD_ARM_FAILSAFE = "arm_failsafe"
CMD_ROLLBACK = "rollback"
CMD_SET_TRUST = "set_trust"
CMD_RELEASE = "release"
COMMANDS = (CMD_HELLO, CMD_STATUS, CMD_SELFTEST_RESULTS, CMD_SELFTEST, CMD_SET_CONFIG,
            CMD_GENERATE_KEY, CMD_INSTALL_CERT, CMD_COMMIT, CMD_UNLOCK, CMD_FACTORY_RESET,
            CMD_PRECHECK, CMD_IDENTIFY, CMD_ARM_FAILSAFE, CMD_ROLLBACK, CMD_SET_TRUST,
            CMD_RELEASE)
# A self-test and a pre-check read levels, ping the puck and make a TLS connection; identify
# blinks the puck's ring. None of them changes an identity or a setting.
READ_ONLY = (CMD_HELLO, CMD_STATUS, CMD_SELFTEST_RESULTS, CMD_SELFTEST, CMD_PRECHECK,
             CMD_IDENTIFY)
# presence-gated: allowed on a locked unit, each needs the puck button held and, once the
# unit has pinned a clinic authority, a one-time token it signed for this unit and action
PRESENCE_GATED = (CMD_UNLOCK, CMD_FACTORY_RESET, CMD_SET_TRUST, CMD_RELEASE)
# the token action (scribelink.trust.TOKEN_ACTIONS) each presence-gated command needs
TOKEN_ACTION = {CMD_UNLOCK: "unlock", CMD_FACTORY_RESET: "factory_reset",
                CMD_SET_TRUST: "set_trust", CMD_RELEASE: "release"}
# these change the unit only inside an armed fail-safe: their effects are staged, and
# `commit` applies them all at once (or the fail-safe rolls them back)
FAILSAFE_GUARDED = (CMD_SET_CONFIG, CMD_GENERATE_KEY, CMD_INSTALL_CERT, CMD_COMMIT)

PRESENCE_HOLD_S = 5.0
# a presence wait shorter than this leaves no time to reach the button and hold it
PRESENCE_MIN_TIMEOUT_S = PRESENCE_HOLD_S + 2.0
PRESENCE_MAX_TIMEOUT_S = 85.0
IDENTIFY_DEFAULT_S = 10.0
IDENTIFY_MAX_S = 60.0

# The fail-safe (Matter's commissioning fail-safe is the model): arm_failsafe opens a staged
# enrolment that the unit rolls back by itself unless `commit` comes within `expiry_s`.
# Arming again extends it, but never past FAILSAFE_MAX_CUMULATIVE_S after it was opened.
FAILSAFE_DEFAULT_S = 600.0
FAILSAFE_MIN_S = 5.0
FAILSAFE_MAX_S = 900.0
FAILSAFE_MAX_CUMULATIVE_S = 1800.0

# self-test and pre-check rows: each check has one of these
STATUS_PASS = "pass"
STATUS_FAIL = "fail"
STATUS_NOT_YET = "not_yet"  # cannot run yet; `needs` says what must happen first

# how long the tool waits for a command's response (progress frames do not extend it)
TIMEOUTS_S = {CMD_SELFTEST: 60.0, CMD_UNLOCK: 90.0, CMD_FACTORY_RESET: 90.0,
              CMD_SET_TRUST: 90.0, CMD_RELEASE: 90.0,
              CMD_GENERATE_KEY: 20.0, CMD_PRECHECK: 30.0, CMD_COMMIT: 20.0,
              CMD_IDENTIFY: IDENTIFY_MAX_S + 15.0}
DEFAULT_TIMEOUT_S = 10.0

# settings set_config accepts; SECRET_SETTINGS are write-only (never echoed, logged or read)
SETTINGS = ("clinic", "room", "unit_id", "broker_url", "relay_url", "wifi_ssid",
            "wifi_passphrase", "recovery_public_key")
SECRET_SETTINGS = ("wifi_passphrase",)
REQUIRED_SETTINGS = ("clinic", "room", "unit_id", "broker_url")

# error codes: each response with ok=false carries one, a message and what to do
E_BAD_REQUEST = "bad_request"
E_UNKNOWN_COMMAND = "unknown_command"
E_LOCKED = "locked"
E_NOT_CONFIGURED = "not_configured"
E_INVALID_CONFIG = "invalid_config"
E_NO_KEY = "no_key"
E_CERT_INVALID = "cert_invalid"
E_CERT_KEY_MISMATCH = "cert_key_mismatch"
E_CERT_WRONG_UNIT = "cert_wrong_unit"
E_CERT_UNTRUSTED = "cert_untrusted"
E_CERT_NOT_VALID_NOW = "cert_not_valid_now"
E_NOT_ENROLLED = "not_enrolled"
E_SELFTEST_NOT_PASSED = "selftest_not_passed"
E_NO_PUCK = "no_puck"
E_PRESENCE_NOT_SHOWN = "presence_not_shown"
E_INTERNAL = "internal"
E_FAILSAFE_NOT_ARMED = "failsafe_not_armed"
E_FAILSAFE_BUSY = "failsafe_busy"
E_WRONG_UNIT = "wrong_unit"
E_TOKEN_REQUIRED = "token_required"
E_TOKEN_INVALID = "token_invalid"
E_TRUST_ANCHOR = "trust_anchor"
E_OTHER_CLINIC = "other_clinic"
E_BINDING_INVALID = "binding_invalid"
E_NOT_ANCHORED = "not_anchored"

ACTIONS = {
    E_BAD_REQUEST: "update scripts/provision to the unit's protocol version",
    E_UNKNOWN_COMMAND: "update scripts/provision or the unit's software",
    E_LOCKED: "run `scripts/provision unlock` (a clinic admin signs its token) and hold the "
              "puck's button for 5 s",
    E_NOT_CONFIGURED: "run the full `scripts/provision enroll` wizard",
    E_INVALID_CONFIG: "fix the named setting and run enroll again",
    E_NO_KEY: "run `scripts/provision enroll` (it generates the key first)",
    E_CERT_INVALID: "ask the relay for a new certificate (rerun enroll)",
    E_CERT_KEY_MISMATCH: "rerun enroll: the certificate was issued for another key",
    E_CERT_WRONG_UNIT: "check the enrollment code was created for this unit id",
    E_CERT_UNTRUSTED: "check the relay and the unit use the same clinic CA",
    E_CERT_NOT_VALID_NOW: "check the unit's clock (it must be within minutes of real time)",
    E_NOT_ENROLLED: "run `scripts/provision enroll` to get a certificate first",
    E_SELFTEST_NOT_PASSED: "fix what the self-test reported and run it again",
    E_NO_PUCK: "plug the cue puck into the unit (USB) and try again",
    E_PRESENCE_NOT_SHOWN: "hold the puck's button for 5 s while the command waits",
    E_INTERNAL: "note the unit serial and report it; the unit log has details",
    E_FAILSAFE_NOT_ARMED: "run the same `scripts/provision enroll` command again: nothing "
                          "was half-applied, and it starts the enrolment afresh",
    E_FAILSAFE_BUSY: "finish that enrolment with its own code, or roll it back with "
                     "`scripts/provision cancel`",
    E_WRONG_UNIT: "check you are at the right unit (`scripts/provision identify` blinks its "
                  "puck); to give this unit another identity, factory-reset it first",
    E_TOKEN_REQUIRED: "use scripts/provision (it asks the clinic for a one-time token, which "
                      "a clinic admin signs), then hold the puck's button 5 s",
    E_TOKEN_INVALID: "ask the clinic for a new token for this unit and this action (tokens "
                     "work once, for one unit, until they expire)",
    E_TRUST_ANCHOR: "a clinic admin must approve the change: `scripts/provision set-trust` "
                    "asks for a token, then hold the puck's button 5 s",
    E_OTHER_CLINIC: "this unit belongs to another clinic: ask its clinic for a release token "
                    "(`scripts/provision release` on their behalf), or use a code of that "
                    "clinic",
    E_BINDING_INVALID: "rerun enroll with the code the clinic admin made for this unit",
    E_NOT_ANCHORED: "enrol the unit first (`scripts/provision enroll --code ...`): the code "
                    "pins its trust anchors",
}


class ProtocolError(ValueError):
    pass


def crc16_xmodem(data: bytes) -> int:
    return binascii.crc_hqx(data, 0)


@dataclass(frozen=True)
class Frame:
    kind: int
    request_id: int
    payload: dict

    def encode(self) -> bytes:
        return encode(self.kind, self.request_id, self.payload)


def dump_payload(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode()


def encode(kind: int, request_id: int, payload: dict) -> bytes:
    if kind not in KINDS:
        raise ProtocolError(f"unknown frame kind {kind}")
    if not 0 <= request_id <= 0xFFFF:
        raise ProtocolError("request id must fit in 16 bits")
    body = dump_payload(payload)
    if len(body) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(body)} bytes exceeds {MAX_PAYLOAD}")
    head = struct.pack(">BBHH", VERSION, kind, request_id, len(body))
    hcrc = crc16_xmodem(head)
    framed = head + struct.pack(">H", hcrc) + body
    return MAGIC + framed + struct.pack(">I", zlib.crc32(framed))


@dataclass
class DecoderStats:
    frames: int = 0
    dropped_bytes: int = 0
    header_errors: int = 0
    crc_errors: int = 0
    payload_errors: int = 0
    timeouts: int = 0


@dataclass
class Decoder:
    """Bytes in, frames out. Never raises on input; bounded memory (one frame)."""

    partial_timeout_s: float = PARTIAL_TIMEOUT_S
    stats: DecoderStats = field(default_factory=DecoderStats)
    _buf: bytearray = field(default_factory=bytearray)
    _last_byte_at: float = 0.0

    def feed(self, data: bytes, now: float) -> list[Frame]:
        if self._buf and now - self._last_byte_at > self.partial_timeout_s:
            self.stats.timeouts += 1
            self._drop(1)  # the stale partial; anything after its magic is re-scanned
        if data:
            self._last_byte_at = now
            self._buf += data
        out: list[Frame] = []
        while True:
            frame, progressed = self._step()
            if frame is not None:
                out.append(frame)
            if not progressed:
                break
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)

    def _drop(self, n: int) -> None:
        """Drop n bytes, then everything up to the next possible magic."""
        del self._buf[:n]
        self.stats.dropped_bytes += n
        self._sync()

    def _sync(self) -> None:
        i = self._buf.find(MAGIC)
        if i < 0:
            # keep a trailing first magic byte: the second may be in the next read
            keep = 1 if self._buf[-1:] == MAGIC[:1] else 0
            i = len(self._buf) - keep
        if i:
            del self._buf[:i]
            self.stats.dropped_bytes += i

    def _step(self) -> tuple[Frame | None, bool]:
        self._sync()
        if len(self._buf) < HEADER_LEN:
            return None, False
        _magic, version, kind, rid, length, hcrc = HEADER.unpack_from(self._buf)
        if (crc16_xmodem(bytes(self._buf[2:8])) != hcrc or version != VERSION
                or kind not in KINDS or length > MAX_PAYLOAD):
            self.stats.header_errors += 1
            self._drop(1)
            return None, True
        total = HEADER_LEN + length + TRAILER_LEN
        if len(self._buf) < total:
            return None, False
        (crc,) = struct.unpack_from(">I", self._buf, total - TRAILER_LEN)
        if zlib.crc32(bytes(self._buf[2:total - TRAILER_LEN])) != crc:
            self.stats.crc_errors += 1
            self._drop(1)
            return None, True
        body = bytes(self._buf[HEADER_LEN:total - TRAILER_LEN])
        del self._buf[:total]
        try:
            payload = json.loads(body.decode("ascii"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            payload = None
        if not isinstance(payload, dict):
            self.stats.payload_errors += 1
            return None, True
        self.stats.frames += 1
        return Frame(kind, rid, payload), True


# ---------------------------------------------------------------------- payloads


def request(cmd: str, args: dict | None = None) -> dict:
    return {"cmd": cmd, "args": args or {}}


def ok(result: dict) -> dict:
    return {"ok": True, "result": result}


def error(code: str, message: str, action: str | None = None, **detail) -> dict:
    err: dict = {"code": code, "message": message, "action": action or ACTIONS.get(code, "")}
    if detail:
        err["detail"] = detail
    return {"ok": False, "error": err}


def progress(step: str, message: str, **detail) -> dict:
    return {"step": step, "message": message, **detail}


def parse_request(payload: dict) -> tuple[str, dict]:
    """-> (cmd, args); raises ProtocolError with a message the tech can act on."""
    cmd = payload.get("cmd")
    args = payload.get("args", {})
    if not isinstance(cmd, str) or not isinstance(args, dict):
        raise ProtocolError("a request is {\"cmd\": NAME, \"args\": {...}}")
    return cmd, args


class CommandFailed(RuntimeError):
    """The unit answered with an error: code, message, action (what the tech should do)."""

    def __init__(self, code: str, message: str, action: str = "", detail: dict | None = None):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.action = code, message, action
        self.detail = detail or {}


class NoResponse(TimeoutError):
    pass


class Client:
    """The tech's side over any byte pipe: write(bytes), read(max) -> bytes (may be empty
    after a short timeout), clock() -> seconds. Matches responses by request id and
    ignores stale ones from earlier, timed-out requests."""

    def __init__(self, write: Callable[[bytes], object], read: Callable[[int], bytes],
                 clock: Callable[[], float], first_request_id: int = 1) -> None:
        self._write, self._read, self._clock = write, read, clock
        self._decoder = Decoder()
        self._next_id = first_request_id & 0xFFFF

    def call(self, cmd: str, args: dict | None = None, *, timeout_s: float | None = None,
             on_progress: Callable[[dict], None] | None = None) -> dict:
        rid = self._next_id
        self._next_id = (self._next_id + 1) & 0xFFFF
        self._write(encode(KIND_REQUEST, rid, request(cmd, args)))
        deadline = self._clock() + (timeout_s or TIMEOUTS_S.get(cmd, DEFAULT_TIMEOUT_S))
        last_look = False
        while not last_look:
            # one more read after the deadline: an answer that came while this process was
            # not running (a laptop asleep) still counts
            last_look = self._clock() >= deadline
            data = self._read(4096)
            for f in self._decoder.feed(data, self._clock()):
                if f.request_id != rid:
                    continue
                if f.kind == KIND_PROGRESS:
                    if on_progress is not None:
                        on_progress(f.payload)
                elif f.kind == KIND_RESPONSE:
                    if f.payload.get("ok") is True and isinstance(f.payload.get("result"), dict):
                        return f.payload["result"]
                    err = f.payload.get("error")
                    if not isinstance(err, dict):
                        raise CommandFailed(E_BAD_REQUEST, "malformed response from the unit")
                    raise CommandFailed(str(err.get("code", E_INTERNAL)),
                                        str(err.get("message", "")), str(err.get("action", "")),
                                        err.get("detail") if isinstance(err.get("detail"), dict)
                                        else None)
        raise NoResponse(f"no answer to {cmd!r} within the timeout: check the cable, the "
                         "port name and that the unit's provisioning service is running")
