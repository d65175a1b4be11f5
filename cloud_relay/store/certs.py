"""The transport certificates the relay's CA issued, by serial: whose (the CN, a unit id or
a relay's own short-lived ones), bound to which unit signing key, in use or revoked. The
CRL the broker reads is made from here (cloud_relay/revocation.py)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloud_relay.store.store import Store

ISSUED, ACTIVE, REVOKED = "issued", "active", "revoked"
_COLS = ("serial,cn,fingerprint,sign_key_id,via,state,issued_us,not_after_us,revoked_us,"
         "reason,renews")


def _row(r: Sequence) -> dict:
    return dict(zip(_COLS.split(","), r, strict=True))


class CertStore:
    """Concurrency: any thread but the event loop (as the whole store)."""

    def __init__(self, store: Store) -> None:
        self.store, self.db = store, store.db

    def add(self, serial: str, cn: str, fingerprint: str, *, not_after_us: int, via: str,
            sign_key_id: str | None = None, renews: str | None = None,
            state: str = ISSUED, issued_us: int | None = None) -> bool:
        """Record a certificate (once: False if its serial is known)."""
        from cloud_relay.store.store import now_us

        now = now_us()
        return self.db.execute(
            f"INSERT INTO transport_certs({_COLS}) VALUES(?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(serial) DO NOTHING",
            (serial, cn, fingerprint, sign_key_id, via, state, issued_us or now,
             not_after_us, now if state == REVOKED else None,
             "relay_use" if state == REVOKED else None, renews)) == 1

    def get(self, serial: str) -> dict | None:
        r = self.store._one(f"SELECT {_COLS} FROM transport_certs WHERE serial=?", (serial,))
        return None if r is None else _row(r)

    def by_fingerprint(self, fingerprint: str) -> dict | None:
        r = self.store._one(f"SELECT {_COLS} FROM transport_certs WHERE fingerprint=?",
                            (fingerprint,))
        return None if r is None else _row(r)

    def of(self, cn: str) -> list[dict]:
        return [_row(r) for r in self.store._q(
            f"SELECT {_COLS} FROM transport_certs WHERE cn=? ORDER BY issued_us", (cn,))]

    def activate(self, serial: str) -> bool:
        return self.db.execute("UPDATE transport_certs SET state=? WHERE serial=? AND state=?",
                               (ACTIVE, serial, ISSUED)) == 1

    def revoke(self, serials: Iterable[str], reason: str) -> list[str]:
        """Revoke these serials; returns the ones that were not revoked before."""
        from cloud_relay.store.store import now_us

        now, done = now_us(), []
        with self.db.transaction() as tx:
            for s in serials:
                if tx.execute("UPDATE transport_certs SET state=?, revoked_us=?, reason=? "
                              "WHERE serial=? AND state<>?", (REVOKED, now, reason, s,
                                                               REVOKED)) == 1:
                    done.append(s)
        return done

    def revoked(self, serial: str) -> bool:
        r = self.store._one("SELECT state FROM transport_certs WHERE serial=?", (serial,))
        return r is not None and r[0] == REVOKED

    def crl_entries(self, now_us: int) -> list[tuple[str, int, str]]:
        """(serial, revoked_us, reason) of every revoked certificate not yet expired (an
        expired one is refused for its date; the CRL need not name it)."""
        return [(r[0], int(r[1]), r[2]) for r in self.store._q(
            "SELECT serial,revoked_us,reason FROM transport_certs WHERE state=? AND "
            "not_after_us>? ORDER BY revoked_us", (REVOKED, now_us))]

    def enrolled_pems(self, unit_id: str) -> list[str]:
        """Certificates enrolment codes issued for this unit (some from before this table
        existed), to record them before revoking a unit's certificates."""
        return [r[0] for r in self.store._q(
            "SELECT cert_pem FROM enroll_codes WHERE unit_id=? AND cert_pem IS NOT NULL "
            "AND used_us IS NOT NULL", (unit_id,))]
