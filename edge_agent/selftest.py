"""The unit's installation self-test: mic levels per channel, puck round trip, a real
mTLS MQTT 5 CONNECT to the broker with the unit's own certificate, and the clock.

Each check returns a dict {"check", "ok", ...measurements, "problem", "fix"}; `fix` is
what the tech should do about a failure. The level analysis is pure (array in, verdict
out); the checks that touch hardware or the network are thin wrappers around it.
"""

from __future__ import annotations

import datetime as dt
import math
import ssl
import threading
import time
from dataclasses import dataclass

import numpy as np

FULL_SCALE = 32768.0


@dataclass(frozen=True)
class MicThresholds:
    # below this (AC RMS, dBFS) a channel is dead: a MEMS mic in a quiet room reads
    # about -60 dBFS, an unconnected I2S line reads digital zero or a stuck value
    silent_dbfs: float = -75.0
    # a channel with more than this fraction of samples at full scale is clipping
    clip_fraction: float = 0.001
    # |mean| above this fraction of full scale: a DC offset the DSP would not remove
    dc_fraction: float = 0.05


def analyze_channels(samples: np.ndarray, th: MicThresholds = MicThresholds()) -> list[dict]:
    """samples: (frames, channels) int16. One result per channel, 1-based channel numbers."""
    x = np.asarray(samples)
    if x.ndim != 2 or x.shape[0] == 0:
        return []
    results = []
    for c in range(x.shape[1]):
        ch = x[:, c].astype(np.float64)
        mean = float(ch.mean())
        ac_rms = float(np.sqrt(np.mean((ch - mean) ** 2)))
        rms_dbfs = 20 * math.log10(max(ac_rms, 1e-3) / FULL_SCALE)
        peak = float(np.max(np.abs(ch)))
        clipped = float(np.mean((ch >= 32767) | (ch <= -32768)))
        dc = abs(mean) / FULL_SCALE
        problem, fix = None, None
        if rms_dbfs < th.silent_dbfs:
            problem = f"mic channel {c + 1} silent ({rms_dbfs:.1f} dBFS)"
            fix = (f"reseat the mic array's ribbon cable (channel {c + 1} reads no signal); "
                   "if it persists, replace the mic board")
        elif clipped > th.clip_fraction:
            problem = f"mic channel {c + 1} clipping ({100 * clipped:.2f}% of samples)"
            fix = ("lower the capture gain in the unit's asound.conf or move the unit away "
                   "from the noise source")
        elif dc > th.dc_fraction:
            problem = f"mic channel {c + 1} DC offset ({100 * dc:.1f}% of full scale)"
            fix = "check the mic board's supply and ground; replace the mic board if it stays"
        results.append({
            "check": f"mic{c + 1}", "ok": problem is None, "channel": c + 1,
            "rms_dbfs": round(rms_dbfs, 1),
            "peak_dbfs": round(20 * math.log10(max(peak, 1e-3) / FULL_SCALE), 1),
            "clip_fraction": round(clipped, 5), "dc_fraction": round(dc, 4),
            "problem": problem, "fix": fix,
        })
    return results


def check_mics(device: str, channels: int, seconds: float = 2.0, sample_rate: int = 16000,
               pace_realtime: bool = False, th: MicThresholds = MicThresholds()) -> list[dict]:
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
        return [{"check": "mics", "ok": False, "problem": f"cannot capture: {e}",
                 "fix": "check the mic array is seated on the header and the ALSA device "
                        f"{device!r} exists (`arecord -L`)"}]
    finally:
        cap.close()
    if got < need:
        return [{"check": "mics", "ok": False,
                 "problem": f"capture stalled ({got} of {need} frames in {seconds + 5:.0f} s)",
                 "fix": "reseat the mic array; check `dmesg` for I2S errors"}]
    return analyze_channels(np.concatenate(blocks)[:need], th)


def check_puck(presence, timeout_s: float = 2.0) -> dict:
    """presence: edge_agent.provision.UnitPresence (opens the puck for the ping only)."""
    if presence is None:
        return {"check": "puck", "ok": False, "present": False,
                "problem": "no cue puck configured",
                "fix": "set [puck] port in the site config and plug the cue puck in"}
    if presence.state() != "present":
        return {"check": "puck", "ok": False, "present": False,
                "problem": "the cue puck is not plugged in",
                "fix": "plug the cue puck's USB cable into the unit"}
    rtt = presence.ping(timeout_s)
    if rtt is None:
        return {"check": "puck", "ok": False, "present": True,
                "problem": "the cue puck did not answer a ping",
                "fix": "replug the puck's USB cable; if its ring stays dark, reflash it "
                       "(scripts/flash-puck). A running agent holds the puck: stop it first"}
    return {"check": "puck", "ok": True, "present": True, "rtt_ms": round(rtt * 1000, 1),
            "problem": None, "fix": None}


def check_broker(url_host: str, port: int, *, unit_id: str, ca_file: str, cert_file: str,
                 key_file: str, probe_topic: str, timeout_s: float = 10.0) -> dict:
    """A real MQTT 5 CONNECT over mTLS with the unit's new certificate, then a QoS 1
    PUBLISH to `probe_topic`, a topic outside the unit's own that the broker's ACL must
    refuse (PUBACK "Not authorized"): the broker confines this unit. (Probing a topic the
    unit may write would put a bogus message in front of the relay.)"""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    base = {"check": "broker", "broker": f"{url_host}:{port}"}
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

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"selftest-{unit_id}",
                    protocol=mqtt.MQTTv5)
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as e:
        return {**base, "ok": False, "problem": f"cannot load the unit's TLS files: {e}",
                "fix": "rerun enroll to install the certificate"}
    c.tls_set_context(ctx)
    c.on_connect, c.on_publish, c.on_connect_fail = on_connect, on_publish, on_connect_fail
    t0 = time.monotonic()
    try:
        c.connect(url_host, port, keepalive=10, clean_start=True)
    except ssl.SSLCertVerificationError as e:
        return {**base, "ok": False, "problem": f"broker TLS failed: {e.verify_message}",
                "fix": "check the unit's clock (certificates are only valid within their "
                       "window) and that the broker's certificate is from the clinic CA"}
    except (ssl.SSLError, OSError) as e:
        return {**base, "ok": False, "problem": f"broker TLS/connect failed: {e}",
                "fix": "check the unit's clock and network (Wi-Fi, DNS, firewall to "
                       f"{url_host}:{port})"}
    c.loop_start()
    try:
        done.wait(timeout_s)
    finally:
        c.disconnect()
        c.loop_stop()
    rtt_ms = round((time.monotonic() - t0) * 1000, 1)
    rc = got.get("connack")
    if rc is None:
        return {**base, "ok": False, "problem": "no CONNACK from the broker "
                f"({got.get('fail', 'timeout')}); the TLS handshake may have been refused",
                "fix": "check the unit's clock and network; check the broker log for this "
                       "unit's certificate"}
    if rc.is_failure:
        return {**base, "ok": False, "problem": f"broker refused the unit: {rc}",
                "fix": "check the certificate was issued by the clinic CA the broker trusts"}
    puback = got.get("puback")
    if puback is None or not puback.is_failure:
        return {**base, "ok": False, "connack": "success",
                "problem": "the broker let this unit publish outside its own topics"
                if puback is not None else "no PUBACK from the broker for the ACL probe",
                "fix": "install the broker's ACL (scribelink.topics.mosquitto_acl) with "
                       "use_identity_as_username, then rerun the self-test"}
    return {**base, "ok": True, "connack": "success", "acl": "confined", "connect_ms": rtt_ms,
            "problem": None, "fix": None}


def check_clock(unit_now_s: float, laptop_now_s: float | None, cert_not_before: dt.datetime,
                cert_not_after: dt.datetime, max_skew_s: float = 120.0) -> dict:
    skew = None if laptop_now_s is None else unit_now_s - laptop_now_s
    now = dt.datetime.fromtimestamp(unit_now_s, dt.UTC)
    res = {"check": "clock", "unit_utc": now.isoformat(timespec="seconds"),
           "skew_s": None if skew is None else round(skew, 1),
           "cert_valid_until": cert_not_after.isoformat(timespec="seconds")}
    fix = ("set the unit's clock: enable NTP (`timedatectl set-ntp true`) and check the "
           "network reaches an NTP server")
    if skew is not None and abs(skew) > max_skew_s:
        return {**res, "ok": False, "fix": fix,
                "problem": f"unit clock is {skew:+.0f} s off the laptop's"}
    if not cert_not_before <= now <= cert_not_after:
        return {**res, "ok": False, "fix": fix,
                "problem": "unit clock is outside the certificate's validity window"}
    return {**res, "ok": True, "problem": None, "fix": None}
