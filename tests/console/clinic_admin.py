"""The clinic's admin at a test relay: the clinic authority (tests/trustkit.py's Clinic)
registered with the relay, assignments it signs, and scribe devices it endorses as they
register (as scripts/demo does; a clinic's admin does this with the authority tool after
checking each device's label). The key stays here, never with the relay."""

from __future__ import annotations

import threading
import time

import httpx
from trustkit import Clinic

from scribelink import trust


def now_us() -> int:
    return time.time_ns() // 1000


class RelayClinic:
    """`auto_endorse`: endorse every waiting device of these scribes (None: of everyone;
    an empty set: nobody) from a background thread, a few times a second."""

    def __init__(self, relay, *, clinic: Clinic | None = None,
                 auto_endorse: set[str] | None = None) -> None:
        self.relay = relay
        self.clinic = clinic or Clinic()
        self.auto_endorse = auto_endorse
        self.endorsed: list[dict] = []  # what this admin endorsed, as the relay listed it
        self._token: str | None = None
        self.call("PUT", "/api/admin/authority",
                  json={"public_key": self.clinic.authority.public_b64()}).raise_for_status()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._endorse_loop, daemon=True,
                                        name="clinic-admin")
        self._thread.start()

    @property
    def public_b64(self) -> str:
        return self.clinic.authority.public_b64()

    def call(self, method: str, path: str, **kw) -> httpx.Response:
        """As the relay's admin (one sign-in, kept: each sign-in costs a password hash)."""
        for _ in range(2):
            if self._token is None:
                self._token = self.relay.token("admin")
            # (trust_env off, as support.Relay's helpers: this runs in the endorsing thread)
            r = httpx.request(method, self.relay.url + path, timeout=10, trust_env=False,
                              headers={"Authorization": f"Bearer {self._token}"}, **kw)
            if r.status_code != 401:
                return r
            self._token = None
        return r

    def assign(self, unit: str, scribes: list[str], room: str | None = None) -> dict:
        st = self.clinic.authority.assign(unit=unit, room=room, scribes=scribes, now_us=now_us())
        r = self.call("PUT", "/api/admin/assignments", json={"statement": st.to_dict()})
        r.raise_for_status()
        return r.json()

    def endorse(self, d: dict) -> None:
        st = self.clinic.authority.endorse_device(
            scribe=d["user"], enc_key=trust.unb64(d["enc_key"]),
            sign_key=trust.unb64(d["sign_key"]), label=d["label"], kind=d["kind"],
            now_us=now_us())
        self.call("POST", "/api/admin/endorsements",
                  json={"statement": st.to_dict()}).raise_for_status()
        self.endorsed.append(d)

    def devices(self, pending: bool | None = None) -> list[dict]:
        params = {} if pending is None else {"pending": str(pending).lower()}
        r = self.call("GET", "/api/admin/devices", params=params)
        r.raise_for_status()
        return r.json()

    def endorsed_devices_of(self, user: str) -> list[dict]:
        return [d for d in self.devices(pending=False) if d["user"] == user]

    def _endorse_loop(self) -> None:
        while not self._stop.wait(0.15):
            wanted = self.auto_endorse
            if wanted is not None and not wanted:
                continue
            try:
                for d in self.devices(pending=True):
                    if wanted is None or d["user"] in wanted:
                        self.endorse(d)
            except (httpx.HTTPError, OSError):
                continue  # the relay restarts in some tests: try again

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
