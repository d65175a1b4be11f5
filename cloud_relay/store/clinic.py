"""The SQL behind the clinic admin's view (cloud_relay/api/admin.py): rooms, the relay's
settings an admin may change, what the admin sees of each unit's enrolment and
revocation, the audit log's filters, and declining a tech's request.

Concurrency: every method may be called from any thread (never from the event loop).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloud_relay.store.store import Store


def _now() -> int:
    from cloud_relay.store.store import now_us

    return now_us()


class RoomExists(ValueError):
    pass


class ClinicStore:
    def __init__(self, store: Store) -> None:
        self.store, self.db = store, store.db

    # ------------------------------------------------------------------ rooms

    def rooms(self) -> list[dict]:
        """Every room (made by an admin, or named on a unit) with its units."""
        rows = self.store._q("SELECT name, created_us FROM rooms UNION SELECT room, "
                             "MIN(created_us) FROM units WHERE room IS NOT NULL AND room<>'' "
                             "AND room NOT IN (SELECT name FROM rooms) GROUP BY room")
        units: dict[str, list[str]] = {}
        for unit_id, room in self.store._q("SELECT id, room FROM units WHERE room IS NOT NULL "
                                           "ORDER BY id"):
            units.setdefault(room, []).append(unit_id)
        return sorted(({"name": r[0], "created_us": r[1], "units": units.get(r[0], [])}
                       for r in rows), key=lambda r: r["name"].casefold())

    def add_room(self, name: str) -> None:
        n = self.db.execute("INSERT INTO rooms(name,created_us) VALUES(?,?) ON CONFLICT(name) "
                            "DO NOTHING", (name, _now()))
        if n != 1:
            raise RoomExists(name)

    def rename_room(self, old: str, new: str) -> bool:
        with self.db.transaction() as tx:
            if tx.query("SELECT 1 FROM rooms WHERE name=?", (new,)):
                raise RoomExists(new)
            found = tx.execute("UPDATE rooms SET name=? WHERE name=?", (new, old))
            moved = tx.execute("UPDATE units SET room=? WHERE room=?", (new, old))
            if not found and moved:  # a room only named on units: it gets a row now
                tx.execute("INSERT INTO rooms(name,created_us) VALUES(?,?)", (new, _now()))
        return bool(found or moved)

    def delete_room(self, name: str) -> list[str]:
        """Remove an empty room; returns the units still in it (then nothing changes)."""
        with self.db.transaction() as tx:
            units = [r[0] for r in tx.query("SELECT id FROM units WHERE room=?", (name,))]
            if not units:
                tx.execute("DELETE FROM rooms WHERE name=?", (name,))
        return units

    def set_unit_room(self, unit_id: str, room: str | None) -> bool:
        return self.db.execute("UPDATE units SET room=? WHERE id=?", (room, unit_id)) == 1

    def room_exists(self, name: str) -> bool:
        return bool(self.store._q("SELECT 1 FROM rooms WHERE name=? UNION SELECT 1 FROM units "
                                  "WHERE room=?", (name, name)))

    # ------------------------------------------------------------------ units

    def enrolments(self) -> dict[str, dict]:
        """unit -> its latest enrolment: when, by whom, and the certificate it got."""
        rows = self.store._q(
            "SELECT unit_id, used_us, used_by, cert_pem, cert_fingerprint FROM enroll_codes "
            "WHERE used_us IS NOT NULL ORDER BY used_us")
        return {r[0]: {"enrolled_us": r[1], "enrolled_by": r[2], "cert_pem": r[3],
                       "cert_fingerprint": r[4]} for r in rows}

    def open_codes(self) -> dict[str, list[dict]]:
        """unit -> its unspent, unexpired enrolment codes (what a tech may still use)."""
        rows = self.store._q(
            "SELECT id, unit_id, room, created_by, created_us, expires_us, reserved_serial "
            "FROM enroll_codes WHERE used_us IS NULL AND expires_us>=? ORDER BY id", (_now(),))
        out: dict[str, list[dict]] = {}
        for r in rows:
            out.setdefault(r[1], []).append({"code_id": r[0], "room": r[2], "created_by": r[3],
                                             "created_us": r[4], "expires_us": r[5],
                                             "reserved_serial": r[6]})
        return out

    def revocations(self) -> dict[str, dict]:
        rows = self.store._q("SELECT id, revoked_us, revoked_by FROM units WHERE revoked_us "
                             "IS NOT NULL")
        return {r[0]: {"revoked_us": r[1], "revoked_by": r[2]} for r in rows}

    def set_revoked(self, unit_id: str, by: str) -> bool:
        return self.db.execute("UPDATE units SET revoked_us=?, revoked_by=? WHERE id=?",
                               (_now(), by, unit_id)) == 1

    def unit_cert_pems(self, unit_id: str) -> list[str]:
        """Every transport certificate the relay issued to this unit (to revoke them)."""
        return [r[0] for r in self.store._q("SELECT cert_pem FROM enroll_codes WHERE "
                                            "unit_id=? AND cert_pem IS NOT NULL", (unit_id,))]

    def revoked_cert_pems(self) -> list[str]:
        """Certificates of revoked units issued before their revocation (the CRL)."""
        return [r[0] for r in self.store._q(
            "SELECT c.cert_pem FROM enroll_codes c JOIN units u ON u.id=c.unit_id WHERE "
            "u.revoked_us IS NOT NULL AND c.cert_pem IS NOT NULL AND c.created_us<=u.revoked_us")]

    # ------------------------------------------------------------------ settings

    def setting(self, name: str) -> str | None:
        r = self.store._one("SELECT value FROM settings WHERE name=?", (name,))
        return None if r is None else r[0]

    def put_setting(self, name: str, value: str) -> None:
        self.db.execute("INSERT INTO settings(name,value,updated_us) VALUES(?,?,?) ON "
                        "CONFLICT(name) DO UPDATE SET value=excluded.value, "
                        "updated_us=excluded.updated_us", (name, value, _now()))

    # ------------------------------------------------------------------ audit

    def audit(self, *, actor: str | None = None, action: str | None = None,
              target: str | None = None, since_us: int | None = None,
              until_us: int | None = None, before_id: int | None = None,
              limit: int = 200) -> list[dict]:
        """The audit log, newest first, filtered. `action` ending in "*" is a prefix."""
        where: list[str] = []
        args: list[str | int] = []
        if actor:
            where.append("actor=?")
            args.append(actor)
        if action:
            if action.endswith("*"):
                where.append("action LIKE ?")
                args.append(action[:-1].replace("_", "\\_").replace("%", "\\%") + "%")
                where[-1] += " ESCAPE '\\'"
            else:
                where.append("action=?")
                args.append(action)
        if target:
            where.append("target=?")
            args.append(target)
        if since_us is not None:
            where.append("at_us>=?")
            args.append(since_us)
        if until_us is not None:
            where.append("at_us<?")
            args.append(until_us)
        if before_id is not None:
            where.append("id<?")
            args.append(before_id)
        sql = ("SELECT id,at_us,actor,action,target,detail FROM audit" +
               (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?")
        rows = self.store._q(sql, [*args, limit])
        return [{"id": r[0], "at_us": r[1], "actor": r[2], "action": r[3], "target": r[4],
                 "detail": json.loads(r[5] or "{}")} for r in rows]

    def audit_actions(self) -> list[str]:
        return [r[0] for r in self.store._q("SELECT DISTINCT action FROM audit ORDER BY action")]

    # ------------------------------------------------------------------ techs' requests

    def decline_token_request(self, request_id: str) -> bool:
        return self.db.execute("DELETE FROM token_requests WHERE id=? AND statement IS NULL",
                               (request_id,)) == 1
