"""What clinic IT should look at now, from each unit's retained status and its transport
certificate: a unit offline, its spool filling (audio waiting because the link is down
or slow), a dead microphone, a certificate about to expire, an alarm the unit raised.
Pure: units and the clock in, alerts out (the admin view and GET /api/admin/alerts)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

US = 1_000_000
DAY_US = 86400 * US

SPOOL_WARN_S = 300.0  # five minutes of audio waiting on the unit
SPOOL_CRITICAL_S = 3600.0
CERT_WARN_DAYS = 30
CERT_CRITICAL_DAYS = 7
# alarms a unit raises that clinic IT must act on (docs/protocol.md, unit status)
ALARMS = {
    "spool_disk_full": ("critical", ("the unit's disk is full: it is dropping the oldest "
                                     "audio it could not send")),
    "capture_fault": ("critical", "the microphone array stopped delivering audio"),
    "capture_overrun": ("warning", "the unit could not keep up with the microphones"),
    "assignment_rejected": ("warning", ("the unit refused its assignment (not signed by "
                                        "the clinic authority it pinned)")),
    "bad_recipient_key": ("warning", "a scribe device key was refused"),
}


@dataclass(frozen=True)
class Alert:
    kind: str  # unit_offline, spool_filling, mic_dead, cert_expiring, unit_alarm
    severity: str  # warning | critical
    unit: str
    room: str | None
    message: str
    since_us: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def unit_alerts(u: dict, now_us: int) -> list[Alert]:
    """`u`: a unit as the admin's fleet view has it (id, room, state, status, status_at_us,
    cert_not_after_us, revoked_us)."""
    if u.get("revoked_us"):
        return []  # revoked: nobody expects it back
    out: list[Alert] = []
    unit, room = u["id"], u.get("room")
    status = u.get("status") or {}
    if u.get("state") == "offline" and (status or u.get("enrolled_us")):
        seen = u.get("status_at_us") if status else None
        out.append(Alert("unit_offline", "critical", unit, room,
                         "offline since the last status" if seen else
                         "enrolled but has never connected", seen))
    spool = status.get("spool") or {}
    waiting = float(spool.get("seconds") or 0.0)
    if waiting >= SPOOL_WARN_S:
        out.append(Alert("spool_filling", "critical" if waiting >= SPOOL_CRITICAL_S
                         else "warning", unit, room,
                         f"{waiting / 60:.0f} min of audio waiting to be sent",
                         u.get("status_at_us")))
    dead = (status.get("mics") or {}).get("dead") or []
    if dead:
        out.append(Alert("mic_dead", "warning", unit, room,
                         f"microphone channel{'s' if len(dead) > 1 else ''} "
                         f"{', '.join(str(c) for c in dead)} dead", u.get("status_at_us")))
    not_after = u.get("cert_not_after_us")
    if not_after:
        days = (not_after - now_us) / DAY_US
        if days < CERT_WARN_DAYS:
            out.append(Alert("cert_expiring", "critical" if days < CERT_CRITICAL_DAYS
                             else "warning", unit, room,
                             "transport certificate expired" if days < 0 else
                             f"transport certificate expires in {max(days, 0):.0f} days",
                             not_after))
    for alarm in status.get("alarms") or []:
        if alarm in ALARMS:
            severity, text = ALARMS[alarm]
            out.append(Alert("unit_alarm", severity, unit, room, text, u.get("status_at_us")))
    return out


def fleet_alerts(units: list[dict], now_us: int) -> list[Alert]:
    order = {"critical": 0, "warning": 1}
    alerts = [a for u in units for a in unit_alerts(u, now_us)]
    return sorted(alerts, key=lambda a: (order[a.severity], a.room or "", a.unit, a.kind))
