"""Renewing the unit's transport certificate before it expires (docs/trust.md, "Renewal").

The rule (`decide`, pure: times in, a decision out) renews at two thirds of the
certificate's life, spread over a few days so a clinic's units enrolled on one day do not
all renew in one minute; retries with capped, doubling backoff; raises an alarm once the
certificate is within `alarm_before_s` of expiry and not yet renewed; and at expiry stops
(an expired certificate cannot open the mTLS link a renewal needs: the unit must be
enrolled again).

The effects (`Renewer`, one thread the agent runs): a new P-256 key and a CSR with the
unit id, sent over the relay's unit mTLS listener (`POST /unit/v1/certificate/renew`),
which signs it for the unit id of the certificate presenting it; the reply checked (this
unit, this key, the pinned CA, lasting longer); the pair installed so that a crash at any
point leaves a matching key and certificate (`install`, `recover`), the old pair kept;
the MQTT link and the relay client reloaded; once the broker has accepted the new
certificate, the renewal confirmed presenting it (the relay then revokes the old one). If
the broker does not accept it within `accept_within_s`, the old pair goes back.

Concurrency: `Renewer.run` is its own thread; `status` may be read from any thread.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from scribelink.logfmt import q

log = logging.getLogger("edge_agent.renew")

RENEW_PATH = "/unit/v1/certificate/renew"
CONFIRM_PATH = "/unit/v1/certificate/confirm"
STATE_FILE = "renewal.json"  # in the agent's state dir


# ---------------------------------------------------------------------- the rule (pure)


@dataclass(frozen=True)
class Policy:
    renew_at: float = 2 / 3  # of the certificate's life
    spread: float = 0.05  # of its life: where in this window a unit renews (its own jitter)
    retry_min_s: float = 60.0
    retry_max_s: float = 3600.0
    alarm_before_s: float = 14 * 86400.0


@dataclass(frozen=True)
class State:
    """What the renewal remembers across restarts (renewal.json)."""

    failures: int = 0
    last_attempt: float | None = None
    last_error: str | None = None
    # a new certificate is installed and the relay has not heard it is in use yet
    confirm_pending: bool = False
    # the relay refused for good (this certificate is revoked): no more attempts
    refused: str | None = None


@dataclass(frozen=True)
class Decision:
    action: str  # "wait", "renew", "confirm", "stop"
    until: float | None = None  # "wait": look again then
    alarm: str | None = None  # set while the clinic should hear of it


def backoff_s(failures: int, p: Policy) -> float:
    return min(p.retry_max_s, p.retry_min_s * 2 ** max(0, failures - 1))


def decide(now: float, not_before: float, not_after: float, st: State, p: Policy = Policy(),
           jitter: float = 0.0) -> Decision:
    """What to do about the certificate valid [not_before, not_after] (Unix seconds).
    jitter in [0, 1): this unit's place in the renewal window."""
    life = max(1.0, not_after - not_before)
    alarm = None
    if now >= not_after:
        return Decision("stop", alarm="the unit's certificate expired "
                        f"({_iso(not_after)}): it cannot renew over its link; enrol it again "
                        "(scripts/provision)")
    if st.refused:
        return Decision("stop", alarm=f"certificate renewal refused by the relay: "
                        f"{st.refused}; enrol the unit again (scripts/provision)")
    if now >= not_after - p.alarm_before_s:
        alarm = (f"the unit's certificate expires {_iso(not_after)} and is not renewed yet"
                 + (f" (last error: {st.last_error})" if st.last_error else ""))
    retry_at = (st.last_attempt or 0.0) + backoff_s(st.failures, p) if st.failures else 0.0
    if st.confirm_pending:
        return Decision("confirm", alarm=alarm) if now >= retry_at else \
            Decision("wait", retry_at, alarm)
    due = not_before + life * (p.renew_at + p.spread * min(max(jitter, 0.0), 0.999))
    if now < due:
        return Decision("wait", due, alarm)
    if now < retry_at:
        return Decision("wait", retry_at, alarm)
    return Decision("renew", alarm=alarm)


def failed(st: State, now: float, error: str) -> State:
    return replace(st, failures=st.failures + 1, last_attempt=now, last_error=error[:200])


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="minutes")


# ---------------------------------------------------------------------- files


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _matches(key_pem: bytes, cert_pem: bytes) -> bool:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(key_pem, None)
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return False
    return key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore


def install(cert_file: Path, key_file: Path, cert_pem: bytes, key_pem: bytes) -> None:
    """Put a new key and certificate in place, keeping the old pair as *.prev. At every
    instant the files on disk either are a matching pair or `recover` makes them one: the
    new pair is complete on disk (*.new) before the key is replaced, then the certificate."""
    kn, cn = _suffixed(key_file, ".new"), _suffixed(cert_file, ".new")
    _write(kn, key_pem, 0o600)
    _write(cn, cert_pem, 0o644)
    _fsync_dir(key_file.parent)
    for f in (key_file, cert_file):  # the old pair, for a rollback before the confirm
        prev = _suffixed(f, ".prev")
        _write(prev, f.read_bytes(), 0o600 if f == key_file else 0o644)
    os.replace(kn, key_file)
    os.replace(cn, cert_file)
    _fsync_dir(key_file.parent)
    if cert_file.parent != key_file.parent:
        _fsync_dir(cert_file.parent)


def recover(cert_file: Path, key_file: Path) -> str | None:
    """After a crash during `install`: finish it (the key is the new one) or drop the
    unfinished new pair (the key is the old one). Returns what was done, or None."""
    kn, cn = _suffixed(key_file, ".new"), _suffixed(cert_file, ".new")
    if kn.exists():  # the key was not replaced yet: the old pair is whole
        kn.unlink()
        cn.unlink(missing_ok=True)
        return "dropped an unfinished renewal"
    if cn.exists():
        if _matches(key_file.read_bytes(), cn.read_bytes()):
            os.replace(cn, cert_file)
            _fsync_dir(cert_file.parent)
            return "finished an interrupted renewal"
        cn.unlink()
    return None


def roll_back(cert_file: Path, key_file: Path) -> bool:
    """The old pair back (the broker did not accept the new one)."""
    kp, cp = _suffixed(key_file, ".prev"), _suffixed(cert_file, ".prev")
    if not (kp.exists() and cp.exists()):
        return False
    install(cert_file, key_file, cp.read_bytes(), kp.read_bytes())
    return True


def _suffixed(p: Path, suffix: str) -> Path:
    return p.with_name(p.name + suffix)


# ---------------------------------------------------------------------- the effects


class RenewalError(RuntimeError):
    pass


class Renewer:
    def __init__(self, *, unit_id: str, cert_file: str, key_file: str, ca_file: str,
                 relay, state_dir: Path, link_up: Callable[[], bool],
                 reload_identity: Callable[[], None], policy: Policy = Policy(),
                 clock: Callable[[], float] = time.time, accept_within_s: float = 60.0,
                 check_every_s: float = 3600.0) -> None:
        self.unit_id = unit_id
        self.cert_file, self.key_file, self.ca_file = Path(cert_file), Path(key_file), ca_file
        self.relay = relay  # edge_agent.relay_https.RelayHttps
        self.state_path = state_dir / STATE_FILE
        self.link_up = link_up
        self.reload_identity = reload_identity
        self.policy, self.clock = policy, clock
        self.accept_within_s = accept_within_s
        self.check_every_s = check_every_s
        self.jitter = _unit_jitter(unit_id)
        self.alarm: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        done = recover(self.cert_file, self.key_file)
        if done:
            log.warning("event=certificate_recovered what=%s", json.dumps(done))

    # -- state

    def state(self) -> State:
        try:
            return State(**json.loads(self.state_path.read_text()))
        except (OSError, ValueError, TypeError):
            return State()

    def _save(self, st: State) -> None:
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(st)))
        os.replace(tmp, self.state_path)

    def _validity(self) -> tuple[float, float]:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        return cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()

    # -- one step

    def step(self) -> Decision:
        """Decide and act once; returns the decision (its `until` tells when to look again)."""
        st = self.state()
        now = self.clock()
        nb, na = self._validity()
        d = decide(now, nb, na, st, self.policy, self.jitter)
        if d.alarm != self.alarm:
            self.alarm = d.alarm
            if d.alarm:
                log.error("event=certificate_alarm what=%s", json.dumps(d.alarm))
        if d.action == "renew":
            try:
                self._renew()
            except RenewalError as e:
                self._failure(self.state(), now, str(e))
                return d
            self._save(replace(self.state(), failures=0, last_attempt=now, last_error=None))
            d = Decision("confirm")
        if d.action == "confirm":
            try:
                self._confirm()
                self._save(State(last_attempt=now))
                self.alarm = None
                log.info("event=certificate_renewed not_after=%s", _iso(self._validity()[1]))
            except RenewalError as e:
                self._failure(self.state(), now, str(e))
        return d

    def _failure(self, st: State, now: float, error: str) -> None:
        refused = error if error.startswith("refused:") else None
        self._save(replace(failed(st, now, error), refused=refused))
        log.warning("event=certificate_renewal_failed error=%s retry_in_s=%.0f",
                    json.dumps(error[:200]), backoff_s(st.failures + 1, self.policy))

    def _renew(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        from edge_agent.relay_https import FetchError

        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.unit_id)]))
               .sign(key, hashes.SHA256()))
        try:
            got = self.relay.post_json(RENEW_PATH, {
                "csr_pem": csr.public_bytes(serialization.Encoding.PEM).decode()})
        except FetchError as e:
            raise RenewalError(_why(e)) from e
        try:
            cert = x509.load_pem_x509_certificate(str(got.get("cert_pem", "")).encode())
            ca = x509.load_pem_x509_certificate(Path(self.ca_file).read_bytes())
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, OSError) as e:
            raise RenewalError(f"the relay's answer is not a certificate from the pinned CA "
                               f"({type(e).__name__})") from e
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if len(cns) != 1 or cns[0].value != self.unit_id:
            raise RenewalError("the renewed certificate names another unit")
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
            raise RenewalError("the renewed certificate is not for the new key")
        if cert.not_valid_after_utc.timestamp() < self._validity()[1]:
            raise RenewalError("the renewed certificate expires before the current one")
        install(self.cert_file, self.key_file, cert.public_bytes(serialization.Encoding.PEM),
                key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
        # from here a restart must confirm (or the old certificate would stay valid)
        self._save(replace(self.state(), confirm_pending=True))
        log.info("event=certificate_installed serial=%x", cert.serial_number)
        self.reload_identity()
        deadline = time.monotonic() + self.accept_within_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self.link_up():
                return
            self._stop.wait(0.2)
        roll_back(self.cert_file, self.key_file)
        self._save(replace(self.state(), confirm_pending=False))
        self.reload_identity()
        raise RenewalError(f"the broker did not accept the new certificate within "
                           f"{self.accept_within_s:g} s: the old one is back in use")

    def _confirm(self) -> None:
        from edge_agent.relay_https import FetchError

        try:
            self.relay.post_json(CONFIRM_PATH, {})
        except FetchError as e:
            raise RenewalError(_why(e)) from e
        for f in (self.key_file, self.cert_file):
            _suffixed(f, ".prev").unlink(missing_ok=True)

    # -- the thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="cert-renewal", daemon=True)
        self._thread.start()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                d = self.step()
            except (OSError, ValueError) as e:  # the certificate file unreadable: say so
                log.error("event=certificate_unreadable error=%s", q(e))
                d = Decision("wait")
            if d.action == "stop":
                wait = self.check_every_s
            elif d.action == "wait" and d.until is not None:
                wait = min(self.check_every_s, max(1.0, d.until - self.clock()))
            else:
                wait = min(self.check_every_s, self.policy.retry_min_s)
            self._stop.wait(wait)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def _why(e: Exception) -> str:
    status = getattr(e, "status", None)
    if status == 403:
        return f"refused: {e}"
    return str(e)


def _unit_jitter(unit_id: str) -> float:
    import hashlib

    return int.from_bytes(hashlib.sha256(unit_id.encode()).digest()[:4], "big") / 2**32
