"""The unit's side of fleet updates: a thread that takes release offers, fetches the
release over the relay's mTLS endpoint (resuming interrupted downloads), verifies it
against the pinned release key, tells the core its phase (update_gate.FETCHING / READY /
NONE) and, when the core decides the moment has come, asks the installer to put it in
(<state>/updates/request.json; scribelink-update.path starts the root installer). It
reports every step to the relay, refusals with their reason, and what the installer did.
It also answers diagnostics requests (edge_agent.diagnostics).

Nothing here runs code from a release: the installer verifies again, as root, from its
own copy, before it unpacks anything.

Concurrency: offers, diagnostics requests and install requests arrive from other threads
through `self._work` (a queue); only the updater thread fetches, verifies, writes files and
talks to the relay. `status()` may be read from any thread (it returns a copy).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from edge_agent import installer as ins
from edge_agent import update_gate
from edge_agent.relay_https import FetchError, RelayHttps
from scribelink import fleet
from scribelink import release as rel
from scribelink.logfmt import q

log = logging.getLogger("edge_agent.updater")

RETRY_S = (2.0, 5.0, 10.0, 30.0, 60.0)
POLL_INSTALLER_S = 1.0
REPORT_RETRY_S = 5.0


def now_us() -> int:
    return time.time_ns() // 1000


class Updater:
    def __init__(self, *, unit_id: str, version: str, state_dir: Path, installer_state: Path,
                 public_key_file: str, relay: RelayHttps | None,
                 on_phase: Callable[[str], None],
                 diagnostics: Callable[[], dict] | None = None,
                 hardware: str | None = None) -> None:
        self.unit_id = unit_id
        self.version = version
        self.dir = state_dir / "updates"
        self.installer_state = installer_state
        self.public_key_file = public_key_file
        self.relay = relay
        self.on_phase = on_phase
        self.diagnostics = diagnostics
        self.hardware = hardware or rel.hardware_kind()
        self._work: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._status: dict = {"phase": update_gate.NONE}
        self._offer: fleet.ReleaseOffer | None = None
        self._ready: tuple[fleet.ReleaseOffer, Path, rel.Manifest] | None = None
        self._outbox: list[dict] = []
        self._next_report_try = 0.0
        self._requested: str | None = None  # request_id handed to the installer
        self.dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ from other threads

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="updater", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._work.put(None)
        if self._thread is not None:
            self._thread.join(5)

    def offer(self, offer: fleet.ReleaseOffer) -> None:
        self._work.put(("offer", offer))

    def diagnostics_request(self, req: fleet.DiagnosticsRequest) -> None:
        self._work.put(("diagnostics", req))

    def request_install(self) -> None:
        self._work.put(("install", None))

    def status(self) -> dict:
        with self._lock:
            return dict(self._status)

    def trial(self) -> dict | None:
        """The installer's state if this release is the one on trial now."""
        st = ins.read_json(self.installer_state)
        if st and st.get("state") == ins.TRIAL and st.get("to") == self.version:
            return st
        return None

    def report_health(self, trial: dict, verdict: dict) -> None:
        """On trial: the health report the installer waits for (written at once, from the
        capture loop: the installer's deadline is running)."""
        doc = {"version": self.version, "trial_id": trial.get("trial_id"), "at_us": now_us(),
               **verdict}
        ins.write_json(self.dir / "health.json", doc, mode=0o644)
        self._set_status(health={k: doc.get(k) for k in ("state", "reason", "at_us",
                                                          "version")})
        self._work.put(("report", fleet.UpdateReport(
            state="trial", offer_id=trial.get("offer_id"), version_from=trial.get("from"),
            version_to=trial.get("to"), reason=verdict.get("reason") or None,
            detail={"health": verdict}, at_us=now_us())))

    # ------------------------------------------------------------------ the thread

    def _set_status(self, **changes) -> None:
        with self._lock:
            self._status.update(changes)

    def _phase(self, phase: str) -> None:
        self._set_status(phase=phase)
        self.on_phase(phase)

    def _report(self, state: str, offer: fleet.ReleaseOffer | None = None, **kw) -> None:
        r = fleet.UpdateReport(state=state, offer_id=offer.offer_id if offer else kw.pop(
            "offer_id", None), version_from=kw.pop("version_from", self.version),
            version_to=kw.pop("version_to", offer.version if offer else None), at_us=now_us(),
            **kw)
        self._set_status(state=state, to=r.version_to, code=r.code, reason=r.reason,
                         offer_id=r.offer_id, at_us=r.at_us)
        log.info("event=update state=%s to=%s code=%s", state, r.version_to, r.code)
        self._outbox.append(r.to_dict())
        self._flush_reports()

    def _flush_reports(self) -> None:
        if self.relay is None or time.monotonic() < self._next_report_try:
            return
        while self._outbox:
            try:
                self.relay.post_json("/unit/v1/update-reports", self._outbox[0])
            except FetchError as e:
                log.warning("event=update_report_failed error=%s", q(e))
                self._next_report_try = time.monotonic() + REPORT_RETRY_S
                return
            self._outbox.pop(0)

    def _run(self) -> None:
        self._report_installer_result()
        while not self._stop.is_set():
            try:
                item = self._work.get(timeout=POLL_INSTALLER_S)
            except queue.Empty:
                item = ("poll", None)
            if item is None:
                break
            kind, arg = item
            try:
                if kind == "offer":
                    self._take_offer(arg)
                elif kind == "install":
                    self._request_install()
                elif kind == "diagnostics":
                    self._answer_diagnostics(arg)
                elif kind == "report":
                    self._outbox.append(arg.to_dict())
                if self._requested is not None:
                    self._watch_installer()
                self._report_installer_result()
                self._flush_reports()
            except Exception:
                log.exception("event=updater_failed work=%s", kind)

    # ------------------------------------------------------------------ offers

    def _failed_versions(self) -> frozenset[str]:
        st = ins.read_json(self.installer_state) or {}
        return frozenset(st.get("failed_versions") or [])

    def _refuse(self, offer: fleet.ReleaseOffer, e: rel.ReleaseError,
                tar: Path | None = None) -> None:
        if tar is not None:
            tar.unlink(missing_ok=True)
        log.warning("event=release_refused version=%s code=%s reason=%s", offer.version,
                    e.code, json.dumps(str(e)))
        self._report("refused", offer, code=e.code, reason=str(e))
        if self._offer is offer:
            self._offer = None
        self._phase(update_gate.NONE)

    def _take_offer(self, offer: fleet.ReleaseOffer) -> None:
        if offer.unit != self.unit_id:
            return
        if self._requested is not None:
            log.info("event=offer_ignored reason=installing version=%s", offer.version)
            self._phase(update_gate.READY)
            return
        self._report("offered", offer)
        permitted = offer.permit is not None
        try:
            key = rel.load_public_key(self.public_key_file)
            if permitted:
                rel.verify_permit(offer.permit, key, version=offer.version,
                                  unit_id=self.unit_id, now_us=now_us())
            # what the offer claims is checked again on the signed manifest; this saves a
            # download that would be refused anyway
            want, have = rel.parse_version(offer.version), _version_tuple(self.version)
            if offer.version in self._failed_versions():
                raise rel.ReleaseError("failed_before", f"release {offer.version} already "
                                       "failed its health check on this unit")
            if want == have:
                raise rel.ReleaseError("same_version", f"this unit already runs {self.version}")
            if want < have and not permitted:
                raise rel.ReleaseError("downgrade", f"release {offer.version} is older than the "
                                       f"{self.version} this unit runs; a downgrade needs a "
                                       "permit signed with the release key")
        except rel.ReleaseError as e:
            self._refuse(offer, e)
            return
        self._offer, self._ready = offer, None
        self._phase(update_gate.FETCHING)
        self._report("downloading", offer)
        tar = self.dir / "incoming" / f"{offer.release_id}.tar"
        tar.parent.mkdir(parents=True, exist_ok=True)
        for old in tar.parent.iterdir():  # one release at a time on the SD card
            if not old.name.startswith(offer.release_id):
                old.unlink(missing_ok=True)
        if self.relay is None:
            self._refuse(offer, rel.ReleaseError("malformed", "updates are not configured on "
                                                 "this unit ([updates] relay_url)"))
            return
        attempt = 0
        while not tar.exists():
            try:
                self.relay.download(offer.path, tar, size=offer.size, sha256=offer.release_id,
                                    stop=self._stop)
            except FetchError as e:
                if self._stop.is_set():
                    return
                delay = RETRY_S[min(attempt, len(RETRY_S) - 1)]
                attempt += 1
                log.warning("event=release_download_failed attempt=%d retry_in_s=%.0f error=%s",
                            attempt, delay, json.dumps(str(e)))
                if attempt > 8:
                    self._report("failed", offer, reason=f"download failed: {e}")
                    self._phase(update_gate.NONE)
                    return
                if self._stop.wait(delay):
                    return
        try:
            manifest = rel.verify_release(tar, key)
            if manifest.version != offer.version:
                raise rel.ReleaseError("tampered", f"offered as {offer.version}, the signed "
                                       f"release is {manifest.version}")
            rel.check_applicable(manifest, running=self.version, hardware=self.hardware,
                                 downgrade_permitted=permitted,
                                 failed_versions=self._failed_versions())
        except rel.ReleaseError as e:
            self._refuse(offer, e, tar)
            return
        self._ready = (offer, tar, manifest)
        self._report("verified", offer)
        self._report("waiting", offer, reason="waits for the end of the session")
        self._phase(update_gate.READY)

    def _request_install(self) -> None:
        if self._ready is None:
            self._phase(update_gate.NONE)
            return
        offer, tar, manifest = self._ready
        request_id = uuid.uuid4().hex[:12]
        ins.write_json(self.dir / "request.json", {
            "request_id": request_id, "version": manifest.version,
            "release": str(tar.relative_to(self.dir)), "sha256": offer.release_id,
            "offer_id": offer.offer_id, "permit": offer.permit, "from": self.version,
            "at_us": now_us()}, mode=0o644)
        self._requested = request_id
        self._report("installing", offer)

    def _watch_installer(self) -> None:
        """The installer refused or failed before switching: this release keeps running."""
        st = ins.read_json(self.installer_state) or {}
        if st.get("request_id") != self._requested or st.get("state") not in (ins.REFUSED,
                                                                                ins.FAILED):
            return
        self._requested, self._ready = None, None
        self._phase(update_gate.NONE)

    def _report_installer_result(self) -> None:
        """Say once what the installer last finished (the new release reports `applied`, the
        old one after a switch back `rolled_back`, either a refusal or failure)."""
        st = ins.read_json(self.installer_state)
        if not st or st.get("state") not in ins.FINISHED or not st.get("request_id"):
            return
        done = self.dir / "reported.json"
        seen = ins.read_json(done) or {}
        if seen.get("request_id") == st["request_id"]:
            return
        state = {ins.APPLIED: "applied", ins.ROLLED_BACK: "rolled_back",
                 ins.REFUSED: "refused", ins.FAILED: "failed"}[st["state"]]
        detail = {"health": st.get("health")} if st.get("health") else {}
        self._report(state, None, offer_id=st.get("offer_id"), version_from=st.get("from"),
                     version_to=st.get("to"), code=st.get("refusal"), reason=st.get("reason"),
                     detail=detail)
        if st.get("health"):
            h = st["health"]
            self._set_status(health={k: h.get(k) for k in ("state", "reason", "at_us",
                                                           "version")})
        self._set_status(result=state, **{"from": st.get("from")})
        ins.write_json(done, {"request_id": st["request_id"]}, mode=0o644)
        (self.dir / "request.json").unlink(missing_ok=True)

    # ------------------------------------------------------------------ diagnostics

    def _answer_diagnostics(self, req: fleet.DiagnosticsRequest) -> None:
        from scribelink import diagnostics as diag

        if req.unit != self.unit_id or self.relay is None or self.diagnostics is None:
            return
        try:
            sealed = diag.seal(self.diagnostics(), recipient_b64=req.recipient,
                               unit_id=self.unit_id, request_id=req.request_id)
            self.relay.post_bytes(req.path, sealed)
        except (FetchError, ValueError, OSError) as e:
            log.warning("event=diagnostics_failed request=%s error=%s", req.request_id,
                        json.dumps(str(e)))
            return
        log.info("event=diagnostics_sent request=%s bytes=%d", req.request_id, len(sealed))


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return rel.parse_version(version)
    except rel.ReleaseError:
        return (0,)
