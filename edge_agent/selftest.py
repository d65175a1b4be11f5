"""The unit's installation self-test and pre-check: mic levels per channel, puck round
trip, the clock, and a real mTLS MQTT 5 CONNECT to the broker with the unit's own
certificate.

Each check returns a row {"check", "status", "ok", ...measurements, "problem", "fix"}:
status is PASS, FAIL, or NOT YET (with `needs`: what must happen first, e.g. a
certificate before the broker can be tried). `fix` names the part and the action for the
array this unit has (hardware/arrays/<array>.json, its "service" block). The level
analysis is pure (array in, verdict out); the checks that touch hardware or the network
are thin wrappers around it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scribelink import provisioning as p

FULL_SCALE = 32768.0


def row(check: str, status: str, problem: str | None = None, fix: str | None = None,
        **measured) -> dict:
    return {"check": check, "status": status, "ok": status == p.STATUS_PASS,
            "problem": problem, "fix": fix, **measured}


def not_yet(check: str, needs: str, **measured) -> dict:
    return row(check, p.STATUS_NOT_YET, needs=needs, **measured)


def passed(rows: list[dict]) -> bool:
    return bool(rows) and all(r["status"] == p.STATUS_PASS for r in rows)


# ---------------------------------------------------------------------- the fitted array


@dataclass(frozen=True)
class MicArray:
    """What the tech needs to know about the fitted array: its name, which capture
    channels are microphones (and their labels), and how to reseat or replace it."""

    name: str
    part: str
    capture_channels: int
    mic_labels: dict[int, str]  # capture channel index -> label, mics only
    reseat: str
    replace: str
    driver: str


GENERIC = MicArray("unknown", "microphone array", 0, {}, "power the unit off and reseat the "
                   "microphone array (hardware/assembly.md, step 4)",
                   "replace the microphone array", "check `arecord -l` lists the array")


def mic_array(name: str | None) -> MicArray:
    """hardware/arrays/<name>.json, or generic wording if the array is not known."""
    from edge_agent.dsp.arrays import ARRAYS_DIR

    try:
        spec = json.loads((ARRAYS_DIR / f"{name}.json").read_text())
    except (OSError, ValueError, TypeError):
        return GENERIC
    svc = spec.get("service", {})
    channels = int(spec.get("capture_channels", len(spec.get("mics_m", []))))
    labels = {int(c["index"]): str(c.get("label", f"MIC{int(c['index']) + 1}"))
              for c in spec.get("channels", []) if c.get("kind", "mic") == "mic"}
    if not labels:
        labels = {i: f"MIC{i + 1}" for i in range(channels)}
    return MicArray(str(name), svc.get("part", spec.get("name", str(name))), channels, labels,
                    svc.get("reseat", GENERIC.reseat), svc.get("replace", GENERIC.replace),
                    svc.get("driver", GENERIC.driver))


# ---------------------------------------------------------------------- mics


@dataclass(frozen=True)
class MicThresholds:
    # below this (AC RMS, dBFS) a channel is dead: a MEMS mic in a quiet room reads
    # about -60 dBFS, an unconnected I2S line reads digital zero or a stuck value
    silent_dbfs: float = -75.0
    # a channel with more than this fraction of samples at full scale is clipping
    clip_fraction: float = 0.001
    # |mean| above this fraction of full scale: a DC offset the DSP would not remove
    dc_fraction: float = 0.05


def analyze_channels(samples: np.ndarray, th: MicThresholds = MicThresholds(),
                     array: MicArray = GENERIC) -> list[dict]:
    """samples: (frames, channels) int16. One row per microphone channel (loopback and
    processed channels of the array are not microphones and are not judged)."""
    x = np.asarray(samples)
    if x.ndim != 2 or x.shape[0] == 0:
        return []
    labels = array.mic_labels or {c: f"MIC{c + 1}" for c in range(x.shape[1])}
    results = []
    for c in range(x.shape[1]):
        if c not in labels:
            continue
        label = labels[c]
        ch = x[:, c].astype(np.float64)
        mean = float(ch.mean())
        ac_rms = float(np.sqrt(np.mean((ch - mean) ** 2)))
        rms_dbfs = 20 * math.log10(max(ac_rms, 1e-3) / FULL_SCALE)
        peak = float(np.max(np.abs(ch)))
        clipped = float(np.mean((ch >= 32767) | (ch <= -32768)))
        dc = abs(mean) / FULL_SCALE
        problem, fix = None, None
        if rms_dbfs < th.silent_dbfs:
            problem = f"mic channel {c + 1} ({label}) silent ({rms_dbfs:.1f} dBFS)"
            fix = (f"{array.reseat}; if {label} stays silent, {array.replace}")
        elif clipped > th.clip_fraction:
            problem = f"mic channel {c + 1} ({label}) clipping ({100 * clipped:.2f}% of samples)"
            fix = ("lower the capture gain in the unit's asound.conf or move the unit away "
                   "from the noise source")
        elif dc > th.dc_fraction:
            problem = f"mic channel {c + 1} ({label}) DC offset ({100 * dc:.1f}% of full scale)"
            fix = f"{array.reseat}; if the offset stays, {array.replace}"
        results.append(row(
            label.lower(), p.STATUS_FAIL if problem else p.STATUS_PASS, problem, fix,
            channel=c + 1, label=label, rms_dbfs=round(rms_dbfs, 1),
            peak_dbfs=round(20 * math.log10(max(peak, 1e-3) / FULL_SCALE), 1),
            clip_fraction=round(clipped, 5), dc_fraction=round(dc, 4)))
    return results


def check_mics(device: str, channels: int, seconds: float = 2.0, sample_rate: int = 16000,
               pace_realtime: bool = False, th: MicThresholds = MicThresholds(),
               array: MicArray = GENERIC) -> list[dict]:
    from edge_agent.capture import AlsaCapture, CaptureError

    cap = AlsaCapture(device, sample_rate=sample_rate, channels=channels, period_frames=320,
                      pace_realtime=pace_realtime)
    try:
        cap.open()
        need = int(seconds * sample_rate)
        blocks, got = [], 0
        deadline = time.monotonic() + seconds + 5.0
        while got < need and time.monotonic() < deadline:
            b = cap.read()
            blocks.append(b)
            got += len(b)
    except (CaptureError, OSError, ImportError) as e:
        return [row("mics", p.STATUS_FAIL, f"the {array.part} cannot capture ({device!r}: "
                    f"{type(e).__name__})", f"{array.reseat}; then {array.driver}")]
    finally:
        cap.close()
    if got < need:
        return [row("mics", p.STATUS_FAIL,
                    f"capture stalled ({got} of {need} frames in {seconds + 5:.0f} s)",
                    f"{array.reseat}; check `dmesg` for I2S or USB errors")]
    return analyze_channels(np.concatenate(blocks)[:need], th, array)


# ---------------------------------------------------------------------- puck


def check_puck(presence, timeout_s: float = 2.0) -> dict:
    """presence: edge_agent.provision.UnitPresence (opens the puck for the ping only)."""
    if presence is None:
        return row("puck", p.STATUS_FAIL, "no cue puck configured on this unit",
                   "set [puck] port in /etc/scribelink/agent.toml (normally "
                   "/dev/scribelink-puck) and plug the cue puck in", present=False)
    if presence.state() != "present":
        return row("puck", p.STATUS_FAIL, "the cue puck is not plugged in",
                   "plug the cue puck's micro-USB cable into a USB-A port of the unit (a "
                   "data cable, not a charge-only one)", present=False)
    rtt = presence.ping(timeout_s)
    if rtt is None:
        return row("puck", p.STATUS_FAIL, "the cue puck did not answer a ping",
                   "unplug the puck's USB cable and plug it back in; if its ring stays dark, "
                   "reflash it (scripts/flash-puck). A running agent holds the puck: stop it "
                   "first (sudo systemctl stop scribelink-agent)", present=True)
    return row("puck", p.STATUS_PASS, present=True, rtt_ms=round(rtt * 1000, 1))


# ---------------------------------------------------------------------- clock

CLOCK_FIX = ("set the unit's clock: enable NTP (`timedatectl set-ntp true`) and check the "
             "unit's network reaches an NTP server")


def check_clock(unit_now_s: float, laptop_now_s: float | None,
                cert_not_before: dt.datetime | None = None,
                cert_not_after: dt.datetime | None = None, max_skew_s: float = 120.0) -> dict:
    """The unit's clock against the laptop's (sent with the request) and, once the unit
    has a certificate, against the certificate's validity window."""
    now = dt.datetime.fromtimestamp(unit_now_s, dt.UTC)
    measured: dict = {"unit_utc": now.isoformat(timespec="seconds")}
    if cert_not_after is not None:
        measured["cert_valid_until"] = cert_not_after.isoformat(timespec="seconds")
    if laptop_now_s is None:
        return not_yet("clock", "the laptop's time: run the self-test from scripts/provision, "
                       "which sends it", skew_s=None, **measured)
    skew = unit_now_s - laptop_now_s
    measured["skew_s"] = round(skew, 1)
    if abs(skew) > max_skew_s:
        return row("clock", p.STATUS_FAIL, f"unit clock is {skew:+.0f} s off the laptop's",
                   CLOCK_FIX, **measured)
    if cert_not_before is not None and cert_not_after is not None and not (
            cert_not_before <= now <= cert_not_after):
        return row("clock", p.STATUS_FAIL, "unit clock is outside the certificate's validity "
                   "window", CLOCK_FIX, **measured)
    return row("clock", p.STATUS_PASS, **measured)


# ---------------------------------------------------------------------- broker

# the agent's MQTT session lifetime and link file (edge_agent/uplink.py SESSION_EXPIRY_S,
# LINK_FILE, in the state dir the agent and the provisioning service share)
AGENT_SESSION_EXPIRY_S = 24 * 3600
AGENT_LINK_FILE = "link.json"

# X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED: the only verification
# failures a wrong clock explains
_CLOCK_VERIFY_CODES = (9, 10)


def running_agent(link_file: Path | None) -> dict | None:
    """The running agent's MQTT link state (edge_agent/uplink.py writes it: pid, connected,
    certificate), or None when no agent process is running."""
    if link_file is None:
        return None
    try:
        doc = json.loads(Path(link_file).read_text())
        pid = int(doc["pid"])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no link file, or its process is gone
    return doc if b"edge_agent" in cmdline else None  # a reused pid is not the agent


def tls_probe(host: str, port: int, ctx: ssl.SSLContext, timeout_s: float) -> str | None:
    """Does the broker accept this certificate, without an MQTT session? TLS, then a CONNECT
    of an MQTT protocol level no broker speaks: the broker must answer "unsupported
    protocol version" (MQTT 5.0, 3.1.2.2) and close, before it looks at any client id, so
    no session is touched. None: accepted; else why not."""
    body = (b"\x00\x04MQTT" + b"\x7f" + b"\x02" + b"\x00\x0a" + b"\x00" + b"\x00\x00")
    with socket.create_connection((host, port), timeout_s) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        try:
            tls.sendall(bytes([0x10, len(body)]) + body)
            head = tls.recv(4)
        except ssl.SSLError as e:  # TLS 1.3: a refused certificate is an alert on the read
            return f"the broker refused the certificate ({e.reason or e})"
        except OSError as e:
            return f"the broker closed the connection ({e.strerror or type(e).__name__})"
        if len(head) >= 4 and head[0] == 0x20 and head[3] in (0x01, 0x84):
            return None
        return "the broker closed the connection (the certificate was refused)" if not head \
            else f"unexpected answer from the broker ({head.hex()})"


def check_broker(url_host: str, port: int, *, unit_id: str, ca_file: str, cert_file: str,
                 key_file: str, probe_topic: str, timeout_s: float = 10.0,
                 clock_ok: bool | None = None, agent_link_file: Path | None = None) -> dict:
    """A real MQTT 5 CONNECT over mTLS with the unit's new certificate, then a QoS 1
    PUBLISH to `probe_topic`, a topic outside the unit's own that the broker's ACL must
    refuse (PUBACK "Not authorized"): the broker confines this unit. (Probing a topic the
    unit may write would put a bogus message in front of the relay.)

    The broker takes the client id from the certificate (the unit id), so a CONNECT with
    the unit's certificate IS the unit's connection: while the agent runs (its link file,
    `agent_link_file`, names a live agent process), the probe never connects as the unit.
    It checks over TLS that the broker accepts this certificate (`tls_probe`) and reports
    the agent's live link instead; the ACL was proved when the unit was first tested. With
    no agent running the probe resumes the unit's session without consuming it (no clean
    start, the agent's session expiry, nothing acknowledged): messages queued for the
    agent stay queued.

    clock_ok: the clock row's verdict. A failure is blamed on the clock only where a clock
    can cause it (a certificate outside its window) and the clock did not pass."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    where = f"{url_host}:{port}"
    base = {"broker": where}
    clock_hint = "" if clock_ok else "check the unit's clock first (the clock row), then "

    def fail(problem: str, fix: str, **extra) -> dict:
        return row("broker", p.STATUS_FAIL, problem, fix, **base, **extra)

    done = threading.Event()
    got: dict = {}

    def on_connect(client, userdata, flags, rc, props):
        got["connack"] = rc
        if rc.is_failure:
            done.set()
            return
        client.publish(probe_topic, b"selftest", qos=1)

    def on_publish(client, userdata, mid, rc, props):
        got["puback"] = rc
        done.set()

    def on_connect_fail(client, userdata):
        got.setdefault("fail", "connection failed")
        done.set()

    def on_disconnect(client, *_args):  # closed before the CONNACK: do not wait it out
        got.setdefault("fail", "the broker closed the connection")
        done.set()

    # client id = the unit id: the broker would use it anyway (the certificate's CN);
    # manual_ack: what the broker holds for the agent's session is not taken from it
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unit_id, protocol=mqtt.MQTTv5,
                    manual_ack=True, reconnect_on_failure=False)
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as e:
        return fail(f"cannot load the unit's TLS files ({type(e).__name__})",
                    "run `scripts/provision enroll` again to install the certificate")
    agent = running_agent(agent_link_file)
    c.tls_set_context(ctx)
    c.on_connect, c.on_publish, c.on_connect_fail = on_connect, on_publish, on_connect_fail
    c.on_disconnect = on_disconnect
    t0 = time.monotonic()
    try:
        if agent is not None:
            refused = tls_probe(url_host, port, ctx, timeout_s)
            if refused is not None:
                return fail(refused, f"{clock_hint}check the certificate was issued by the "
                            "clinic CA the broker trusts and is not revoked (the broker log "
                            "for this unit)")
            return row("broker", p.STATUS_PASS, **base, probe="tls", acl="not probed: the "
                       "running agent holds the unit's broker session",
                       agent_link="connected" if agent.get("connected") else
                       f"down ({agent.get('reason') or 'reconnecting'})",
                       connect_ms=round((time.monotonic() - t0) * 1000, 1))
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = AGENT_SESSION_EXPIRY_S
        c.connect(url_host, port, keepalive=10, clean_start=False, properties=props)
    except ssl.SSLCertVerificationError as e:
        if e.verify_code in _CLOCK_VERIFY_CODES and not clock_ok:
            fix = ("check the unit's clock (the clock row): the broker's certificate is "
                   "outside its validity window at the unit's time")
        else:
            fix = (f"the broker at {where} presents a certificate the unit does not trust "
                   f"({e.verify_message}): check broker_url names the clinic's broker and that "
                   "its certificate is from the clinic CA the relay enrols with")
        return fail(f"broker TLS failed: {e.verify_message}", fix)
    except ConnectionRefusedError:
        return fail(f"connection refused by {where}: nothing listens there",
                    f"check the broker runs and listens on {where} (the broker URL in the "
                    "enrolment code), and that no firewall rejects the unit")
    except socket.gaierror:
        return fail(f"cannot resolve {url_host!r}",
                    "check the unit's DNS and network (Wi-Fi/Ethernet) and the broker's host "
                    "name in the enrolment code")
    except TimeoutError:
        return fail(f"no answer from {where} (timed out)",
                    "check the unit's network (Wi-Fi/Ethernet) reaches the broker and that "
                    "no firewall drops the connection")
    except ssl.SSLError as e:
        return fail(f"broker TLS handshake failed ({e.reason or type(e).__name__})",
                    f"{clock_hint}check the broker accepts certificates from the clinic CA "
                    "(its cafile) and the broker log for this unit")
    except OSError as e:
        return fail(f"cannot reach {where} ({e.strerror or type(e).__name__})",
                    "check the unit's network (Wi-Fi/Ethernet, routes, firewall) to the broker")
    c.loop_start()
    try:
        done.wait(timeout_s)
    finally:
        c.disconnect()
        c.loop_stop()
    rtt_ms = round((time.monotonic() - t0) * 1000, 1)
    rc = got.get("connack")
    if rc is None:
        return fail(f"the broker closed the connection without a CONNACK "
                    f"({got.get('fail', 'timeout')}): it did not accept the unit's certificate",
                    f"{clock_hint}check the broker trusts the clinic CA that issued the "
                    "unit's certificate (its cafile) and the broker log for this unit")
    if rc.is_failure:
        return fail(f"broker refused the unit: {rc}",
                    "check the certificate was issued by the clinic CA the broker trusts")
    puback = got.get("puback")
    if puback is None or not puback.is_failure:
        return fail("the broker let this unit publish outside its own topics"
                    if puback is not None else "no PUBACK from the broker for the ACL probe",
                    "install the broker's ACL (scribelink.topics.mosquitto_acl) with "
                    "use_identity_as_username, then rerun the self-test", connack="success")
    return row("broker", p.STATUS_PASS, **base, connack="success", acl="confined",
               connect_ms=rtt_ms)
