"""The unit agent: a thin runner around `edge_agent.core.UnitCore`.

It owns the adapters -- ALSA capture, the spool, the MQTT uplink, the puck -- feeds the
core what they report (typed inputs) and applies what the core decides (typed effects).
Every clinic rule lives in the core; nothing here decides anything about a session.
Each adapter is built in a `_make_*` method, so a test can swap one for a fake.

Concurrency: the capture loop (the thread that calls `run`) is the only one that calls
the core. The uplink's threads (paho, pump) and the puck's thread never touch it: they
put core inputs on `self.inbox`, which the loop drains between capture reads.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

import edge_agent
from edge_agent import core as c
from edge_agent import diagnostics, update_gate
from edge_agent import sdnotify as sd
from edge_agent.capture import AlsaCapture, CaptureError
from edge_agent.config import AgentConfig, ConfigError
from edge_agent.selfcheck import SelfCheck
from edge_agent.session import Signer
from edge_agent.spool import Spool
from edge_agent.updater import Updater
from edge_agent.uplink import Uplink
from scribelink import envelope as env
from scribelink import fleet, topics, trust
from scribelink import messages as msgs

log = logging.getLogger("edge_agent")

TICK_S = 0.1  # how often the core hears the clock and the adapters' health
IDLE_WAIT_S = 0.05  # with no capture open, how long the loop waits for an input
WATCHDOG_PING_S = 1.0  # systemd's watchdog (WatchdogSec=20) hears from the main loop this often
SELFCHECK_S = 0.5  # on trial: how often the release checks itself


def now() -> c.Now:
    return c.Now(time.time_ns() // 1000, time.monotonic())


def log_event(level: str, event: str, fields: dict) -> None:
    """One key=value line; values with spaces or quotes are quoted so lines parse."""
    parts = [f"event={event}"]
    for k, v in fields.items():
        text = str(v)
        if not text or any(ch in text for ch in ' "=\\'):
            text = json.dumps(text)
        parts.append(f"{k}={text}")
    log.log(logging.getLevelName(level.upper()), " ".join(parts))


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.state_dir = Path(cfg.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.inbox: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.spool = self._make_spool()
        self.uplink = self._make_uplink()
        self.puck = self._make_puck()
        self.capture: AlsaCapture | None = None
        self._overruns_seen = 0
        self._spool_failing = False
        self._done = False
        self.version = edge_agent.__version__
        self.log_ring = diagnostics.LogRing.install()
        self._last_status: dict = {}
        self.updater = self._make_updater()
        self.renewer = self._make_renewer()
        self._trial = self.updater.trial()  # the installer's state, if this release is on trial
        self._selfcheck: SelfCheck | None = None
        self._puck_firmware_problem: str | None = None
        self.core = c.UnitCore(
            c.CoreSettings(
                unit_id=cfg.unit_id,
                sample_rate=cfg.capture.sample_rate,
                channels=cfg.capture.channels,
                chunk_ms=cfg.session.chunk_ms,
                dsp_mode=cfg.dsp.mode,
                dsp_array=cfg.dsp.array,
                codec=cfg.codec.settings(),
                auto_open=cfg.session.auto_open,
                privacy_auto_resume_s=cfg.session.privacy_auto_resume_s,
                consent_required=cfg.session.consent_required,
                stop_after_frames=cfg.file_input.stop_after_frames,
                resume_input=cfg.file_input.resume_input,
                exit_when_done=cfg.file_input.exit_when_done,
                version=self.version,
                update_policy=update_gate.Policy(
                    window=update_gate.parse_window(cfg.updates.window),
                    hold_max_s=cfg.updates.hold_max_s),
                trial_hold_max_s=float((self._trial or {}).get("deadline_s", 120)) + 60,
            ),
            signer=self._load_signer(),
            authority=self._load_authority(),
            recovery=self._load_recovery_key(),
            config=self._load_config(),
            input_frames=int(self.spool.get_state("input_frames", "0") or 0),
            cues_seen=[int(x) for x in (self.spool.get_state("cues_seen", "") or "").split(",")
                       if x],
        )

    # ------------------------------------------------------------------ adapters

    def _make_spool(self) -> Spool:
        s = self.cfg.spool
        return Spool(Path(s.dir), max_bytes=s.max_bytes, max_age_s=s.max_age_s,
                     max_audio_s=s.max_audio_s,
                     fsync_interval_s=s.fsync_interval_s, ack_grace_s=s.ack_grace_s,
                     segment_bytes=s.segment_bytes)

    def _make_uplink(self) -> Uplink:
        from edge_agent.uplink import LINK_FILE

        return Uplink(self.cfg.broker, self.cfg.unit_id, self.spool, on_control=self._on_control,
                      link_file=self.state_dir / LINK_FILE)

    def _make_capture(self) -> AlsaCapture:
        cap, f = self.cfg.capture, self.cfg.file_input
        return AlsaCapture(cap.device, sample_rate=cap.sample_rate, channels=cap.channels,
                           period_frames=cap.period_frames, pace_realtime=f.pace_realtime,
                           speed=f.speed)

    def _make_puck(self):
        if not self.cfg.puck.port:
            return None
        from edge_agent.puck import Puck

        return Puck(
            self.cfg.puck.port,
            on_cue=lambda cue_id: self.inbox.put(c.PuckCue(cue_id)),
            on_privacy_toggle=lambda: self.inbox.put(c.PrivacyToggle()),
            on_consent=lambda: self.inbox.put(c.PuckConsent()),
            on_connection=lambda up: log_event("info", "puck_connected" if up else "puck_lost",
                                               {}),
            # a 5 s hold is physical presence: the provisioning service may unlock
            on_presence_hold=self._presence_hold,
        )

    def _make_updater(self) -> Updater:
        u, b = self.cfg.updates, self.cfg.broker
        relay = None
        try:
            from edge_agent.relay_https import RelayHttps

            relay = RelayHttps(u.relay_url_for(b), ca_file=b.ca_file, cert_file=b.cert_file,
                               key_file=b.key_file)
        except (ValueError, OSError) as e:
            log_event("warning", "updates_unavailable", {"error": str(e)})
        return Updater(unit_id=self.cfg.unit_id, version=self.version, state_dir=self.state_dir,
                       installer_state=Path(u.installer_state_dir) / "state.json",
                       public_key_file=u.release_public_key_file, relay=relay,
                       on_phase=lambda phase: self.inbox.put(c.UpdatePhase(phase)),
                       diagnostics=self._diagnostics)

    def _make_renewer(self):
        """The transport certificate's renewal over the relay's unit mTLS listener
        (edge_agent/renew.py); None where the unit has no relay link."""
        b = self.cfg.broker
        updater_relay = self.updater.relay
        if updater_relay is None or not b.cert_file:
            return None
        from edge_agent.relay_https import RelayHttps
        from edge_agent.renew import Renewer

        relay = RelayHttps(self.cfg.updates.relay_url_for(b), ca_file=b.ca_file,
                           cert_file=b.cert_file, key_file=b.key_file)

        def reload_identity() -> None:  # the new certificate, everywhere the unit shows it
            relay.reload_identity()
            updater_relay.reload_identity()
            self.uplink.reload_identity()

        return Renewer(unit_id=self.cfg.unit_id, cert_file=b.cert_file, key_file=b.key_file,
                       ca_file=b.ca_file, relay=relay, state_dir=self.state_dir,
                       link_up=lambda: self.uplink.connected, reload_identity=reload_identity)

    def _diagnostics(self) -> dict:
        """On the updater's thread: a snapshot of what the unit knows about itself (no
        audio, no PHI, no keys: edge_agent.diagnostics decides what goes in)."""
        return diagnostics.collect(
            unit_id=self.cfg.unit_id, version=self.version, status=self._last_status,
            spool=self.spool.stats(), link={"connected": self.uplink.connected,
                                             "inflight": self.uplink.inflight,
                                             "last_error": self.uplink.last_error},
            update=self.updater.status(),
            installer=diagnostics.read_json(Path(self.cfg.updates.installer_state_dir)
                                            / "state.json"),
            selftest=diagnostics.read_json(self.state_dir / "selftest.json"),
            logs=self.log_ring.lines())

    def _presence_hold(self) -> None:
        from edge_agent.provision import record_presence_hold

        record_presence_hold(self.cfg.state_dir)
        log_event("info", "presence_hold", {})

    # ------------------------------------------------------------------ persisted inputs

    def _load_recovery_key(self) -> X25519PublicKey | None:
        path = self.cfg.keys.recovery_public_key_file
        if not path:
            return None
        return env.load_public_key(Path(path).read_text().strip())

    def _load_authority(self) -> Ed25519PublicKey | None:
        path = self.cfg.keys.authority_public_key_file
        if not path:
            log.error("event=no_authority_pinned what=\"the unit will wrap audio to nobody "
                      "until it is provisioned with a clinic authority\"")
            return None
        return trust.load_ed25519(Path(path).read_text().strip())

    def _load_signer(self) -> Signer:
        k = self.cfg.keys
        if not k.signing_key_file:
            raise ConfigError("[keys] signing_key_file is not set: the unit needs its signing "
                              "key (provisioning makes it); without it nothing it says counts")
        from edge_agent import unitkey

        try:  # a key file, or a key in a PKCS#11 token (a TPM, an ATECC608): pkcs11: URI
            key = unitkey.load(k.signing_key_file)
        except unitkey.UnitKeyError as e:
            raise ConfigError(f"[keys] signing_key_file: {e}") from e
        binding = json.loads(Path(k.binding_file).read_text()) if k.binding_file else None
        if binding is not None and (binding.get("body") or {}).get("sign_key") != \
                trust.b64(key.public_raw):
            raise ConfigError(f"{k.binding_file} binds another key than the unit's signing "
                              "key: enrol the unit again (scripts/provision enroll)")
        return Signer(key, binding)

    def _assignment_path(self) -> Path:
        return self.state_dir / "assignment.json"

    def _load_assignment(self) -> msgs.Assignment | None:
        # the last checked assignment is kept so the unit records offline after a restart;
        # it is checked again (the authority's signatures) when it is fed back in
        try:
            return msgs.Assignment.from_dict(json.loads(self._assignment_path().read_text()))
        except (FileNotFoundError, ValueError, msgs.MessageError):
            return None

    def _save_assignment(self, a: msgs.Assignment) -> None:
        self._save_json(self._assignment_path(), a)

    def _config_path(self) -> Path:
        return self.state_dir / "config.json"

    def _load_config(self) -> msgs.Config | None:
        # the relay's last audio settings for this unit, kept like the assignment
        try:
            return msgs.Config.from_dict(json.loads(self._config_path().read_text()))
        except (FileNotFoundError, ValueError, msgs.MessageError):
            return None

    @staticmethod
    def _save_json(path: Path, m: msgs.Message) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(msgs.dumps(m).decode())
        tmp.replace(path)

    # ------------------------------------------------------------------ inputs from threads

    def _on_control(self, ctl) -> None:
        """On the uplink's thread: a parsed control message becomes a core input."""
        if isinstance(ctl, msgs.Assignment):
            self.inbox.put(c.AssignmentReceived(ctl))
        elif isinstance(ctl, msgs.SessionControl):
            self.inbox.put(c.SessionControlReceived(ctl.action))
        elif isinstance(ctl, msgs.CueAck):
            self.inbox.put(c.CueAckReceived(ctl))
        elif isinstance(ctl, msgs.Replay):
            self.inbox.put(c.ReplayRequested(ctl.since_us))
        elif isinstance(ctl, msgs.Config):
            self.inbox.put(c.ConfigReceived(ctl))
        elif isinstance(ctl, fleet.ReleaseOffer) and ctl.unit == self.cfg.unit_id:
            # at once, from this thread: a session end right behind the offer on the
            # control topic must already find the next session held for it
            self.inbox.put(c.UpdatePhase(update_gate.FETCHING))
            self.updater.offer(ctl)
        elif isinstance(ctl, fleet.DiagnosticsRequest):
            self.updater.diagnostics_request(ctl)

    def stop(self) -> None:
        self._stop.set()
        self.inbox.put(None)  # wake the loop

    # ------------------------------------------------------------------ effects

    def _feed(self, event) -> None:
        """Hand one input to the core and apply what it decides, and what that leads to."""
        work = deque([event])
        while work:
            for effect in self.core.handle(work.popleft(), now()):
                work.extend(self._apply(effect))

    def _apply(self, e) -> list:
        """Carry out one effect; returns the inputs it produced (failures, evictions)."""
        if isinstance(e, c.Spool):
            return self._apply_spool(e)
        if isinstance(e, c.ShowLight):
            if self.puck is not None:
                self.puck.show(e.state)
        elif isinstance(e, c.PuckCueSeen):
            if self.puck is not None:
                self.puck.cue_seen(e.cue_id, e.reply)
        elif isinstance(e, c.PuckCueNotSent):
            if self.puck is not None:
                self.puck.cue_not_sent(e.cue_id)
        elif isinstance(e, c.WantConsent):
            if self.puck is not None:
                self.puck.want_consent(e.wanted)
        elif isinstance(e, c.PublishStatus):
            self._last_status = e.status.to_dict()
            self.uplink.set_status(self._last_status)
        elif isinstance(e, c.SaveAssignment):
            self._save_assignment(e.message)
        elif isinstance(e, c.SaveConfig):
            self._save_json(self._config_path(), e.message)
        elif isinstance(e, c.OpenCapture):
            return self._open_capture(e.skip_input_frames)
        elif isinstance(e, c.CloseCapture):
            if self.capture is not None:
                self.capture.close()
                self.capture = None
        elif isinstance(e, c.Replay):
            n = self.uplink.replay_since(e.since_us / 1e6)
            log_event("info", "replay_requested", {"records": n})
        elif isinstance(e, c.Log):
            log_event(e.level, e.event, e.fields)
        elif isinstance(e, c.Done):
            self._done = True
        elif isinstance(e, c.InstallUpdate):
            self.updater.request_install()
        return []

    def _apply_spool(self, e: c.Spool) -> list:
        records = [{"topic": topics.unit_topic(self.cfg.unit_id, r.leaf), "payload": r.payload,
                    "kind": r.kind, "session": r.session, "seq": r.seq, "audio_ms": r.audio_ms,
                    "input_end": r.input_end} for r in e.records]
        try:
            self.spool.put_many(records, e.state)
        except OSError as err:
            log.error("event=spool_write_failed errno=%s records=%d", err.errno, len(records))
            self._spool_failing = True
            if e.send_direct_if_refused:
                # not even a declared gap fits: send it straight from memory when the
                # link allows, so the scribe still learns of the loss
                for r in e.records:
                    self.uplink.send_direct(topics.unit_topic(self.cfg.unit_id, r.leaf), r.payload)
                return []
            return [c.SpoolRefused(e.records, err.strerror or str(err))]
        follow: list = []
        if self._spool_failing:
            self._spool_failing = False
            follow.append(c.SpoolWritten())
        evicted = self.spool.take_evictions()
        if evicted:
            follow.append(c.SpoolEvicted(tuple(evicted)))
        self.uplink.wake()
        return follow

    def _open_capture(self, skip_frames: int) -> list:
        cap = self._make_capture()
        try:
            cap.open(skip_frames)
        except CaptureError as err:
            cap.close()
            return [c.CaptureFailed(str(err))]
        if skip_frames:
            log_event("info", "input_resumed", {"frames": skip_frames})
        self.capture = cap
        self._overruns_seen = 0
        return [c.CaptureOpened()]

    # ------------------------------------------------------------------ the loop

    def _health(self) -> c.Health:
        local = time.localtime()
        return c.Health(
            link_up=self.uplink.connected,
            catching_up=self.uplink.backlog,
            inflight=self.uplink.inflight,
            spool=self.spool.stats(),
            uplink_error=self.uplink.last_error,
            puck_connected=None if self.puck is None else self.puck.connected,
            spool_empty=len(self.spool) == 0,
            minute_of_day=local.tm_hour * 60 + local.tm_min,
            update=self.updater.status(),
            certificate_alarm=None if self.renewer is None else self.renewer.alarm,
        )

    # ------------------------------------------------------------------ on trial

    def _start_selfcheck(self) -> None:
        trial = self._trial or {}
        log_event("info", "selfcheck_start",
                  {"version": self.version, "trial": trial.get("trial_id")})
        self._selfcheck = SelfCheck(
            expected_version=str(trial.get("to")), running_version=self.version,
            deadline_s=self.cfg.updates.health_deadline_s, probe_capture=self._probe_capture,
            puck_connected=lambda: None if self.puck is None else self.puck.connected,
            broker_up=lambda: self.uplink.connected, probe_spool=self._probe_spool,
            puck_firmware_problem=self._puck_firmware_problem)

    def _make_puck_files(self):
        from edge_agent.puckflash import MpremoteFiles

        return MpremoteFiles(self.cfg.puck.port)

    def _update_puck_firmware(self) -> None:
        """On trial: put this release's puck firmware on the puck if it differs from what
        the puck runs (edge_agent.puckflash: verified by read-back, booted, heartbeat; else
        the previous release's firmware goes back). A firmware that does not come up fails
        this release's health check, so the unit goes back to its old release too."""
        import sys

        from edge_agent import puckflash as pf

        release = Path(sys.prefix).resolve().parent  # releases/<version>, pinned at start
        previous = release.parent / str((self._trial or {}).get("from")) / "firmware"
        record = self.state_dir / "puck_firmware.json"
        try:
            new = pf.firmware_files(release / "firmware")
            old = pf.firmware_files(previous)
        except FileNotFoundError as e:
            log_event("warning", "puck_firmware_skipped", {"reason": str(e)})
            return
        running = diagnostics.read_json(record) or pf.digest(old)
        if running == pf.digest(new):
            return
        port = self.cfg.puck.port
        flasher = pf.PuckFlasher(self._make_puck_files(),
                                 enter_maintenance=lambda: pf.request_maintenance(port),
                                 heartbeat=lambda: pf.wait_heartbeat(port))
        result = flasher.update(new, old)
        log_event("info" if result.result == "applied" else "error", "puck_firmware",
                  {"result": result.result, "reason": result.reason})
        if result.running is not None:
            record.write_text(json.dumps(result.running))
        if result.result != "applied":
            self._puck_firmware_problem = f"puck firmware {result.result}: {result.reason}"

    def _probe_capture(self) -> str | None:
        """Open the capture device, read one period, close it (a file-backed input at the
        frame it would resume from, so the probe costs it nothing)."""
        if self.capture is not None:
            return None
        cap = self._make_capture()
        try:
            cap.open(self.core.input_frames if self.cfg.file_input.resume_input else 0)
            if not len(cap.read()):
                return "the capture device delivered no audio"
        except CaptureError as e:
            return str(e)
        finally:
            cap.close()
        return None

    def _probe_spool(self) -> str | None:
        stamp = str(time.time_ns())
        try:
            self.spool.put_many([], {"health_probe": stamp})
        except OSError as e:
            return f"the spool cannot be written: {e}"
        return None if self.spool.get_state("health_probe") == stamp else \
            "the spool did not keep what was written"

    def _selfcheck_step(self) -> None:
        assert self._selfcheck is not None and self._trial is not None
        verdict = self._selfcheck.step()
        if verdict.state == "pending":
            return
        self._selfcheck = None
        self.updater.report_health(self._trial, verdict.to_dict())
        self._feed(c.TrialVerdict(verdict.state, verdict.reason))

    def run(self) -> int:
        stale = self.spool.get_state("open_session") or None
        self._feed(c.Start(
            stale_session=stale,
            stale_last_audio_seq=self.spool.last_seq.get((stale, "audio"), -1) if stale else -1,
            stale_last_event_seq=self.spool.last_seq.get((stale, "event"), -1) if stale else -1,
            trial=self._trial is not None))
        saved = self._load_assignment()
        if saved is not None:
            self._feed(c.AssignmentReceived(saved))
        if self.puck is not None:
            if self._trial is not None:
                self._update_puck_firmware()  # before the link opens: flashing needs the port
            self.puck.start()
        self.uplink.start()
        self.updater.start()
        if self.renewer is not None:
            self.renewer.start()
        if self._trial is not None:
            self._start_selfcheck()
        sd.ready()
        last_tick = last_check = last_alive = 0.0
        try:
            while not self._stop.is_set() and not self._done:
                self._drain_inbox(wait_s=0.0 if self.capture is not None else IDLE_WAIT_S)
                if time.monotonic() - last_tick >= TICK_S:
                    last_tick = time.monotonic()
                    self._feed(c.Tick(self._health()))
                    if last_tick - last_alive >= WATCHDOG_PING_S:  # the loop is turning
                        last_alive = last_tick
                        sd.watchdog()
                if self._selfcheck is not None and time.monotonic() - last_check >= SELFCHECK_S:
                    last_check = time.monotonic()
                    self._selfcheck_step()
                if self.capture is not None:
                    self._capture_step()
        finally:
            if self.renewer is not None:
                self.renewer.stop()
            self.updater.stop()
            sd.stopping()
            self._feed(c.Stop())
            if self.capture is not None:
                self.capture.close()
            self.uplink.stop()
            if self.puck is not None:
                self.puck.show("idle")
                self.puck.stop()
            self.spool.close()
        return 0

    def _drain_inbox(self, wait_s: float) -> None:
        try:
            item = self.inbox.get(timeout=wait_s) if wait_s else self.inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            if item is not None:
                self._feed(item)
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _capture_step(self) -> None:
        assert self.capture is not None
        try:
            block = self.capture.read()
        except CaptureError as err:
            self._feed(c.CaptureFailed(str(err)))
            return
        if self.capture is not None and self.capture.overruns != self._overruns_seen:
            self._overruns_seen = self.capture.overruns
            self._feed(c.CaptureOverruns(self.capture.overruns))
        if len(block):
            self._feed(c.AudioCaptured(block))
