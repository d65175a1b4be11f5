"""The clinic admin's authority tool: `python -m scribelink.authority COMMAND ...`.

It holds the clinic authority's key (a passphrase-encrypted file on the admin's machine),
signs what only the clinic may decide, and hands the signed statements to the relay:

    create   --key FILE                        make the authority (asks for a passphrase)
    show     --key FILE                        its fingerprint, to compare on units and consoles
    register --key FILE --relay URL --user ID  tell the relay which authority the clinic has
    pending  --key FILE --relay URL --user ID  scribe devices waiting for an endorsement
    endorse  ... --device ID | --all           endorse a scribe's device (check the label!)
    assign   ... --unit U --scribes a,b [--room R]
    code     ... --unit U --room R --clinic C [--ttl-s N]   grant an enrolment; prints the code
    revoke   ... --unit U | --device ID
    token    ... --request ID                  sign a tech's request to unlock, reset, re-trust

The passphrase comes from $SCRIBELINK_AUTHORITY_PASSPHRASE or is asked for, never echoed.
The relay's sign-in password comes from --password-file or is asked for.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from scribelink import relayurl, trust
from scribelink.authority import ClinicAuthority


def now_us() -> int:
    return time.time_ns() // 1000


class Failed(Exception):
    pass


def passphrase(confirm: bool = False) -> str:
    env = os.environ.get("SCRIBELINK_AUTHORITY_PASSPHRASE")
    if env:
        return env
    p = getpass.getpass("clinic authority passphrase: ")
    if confirm and getpass.getpass("again: ") != p:
        raise Failed("the two passphrases differ")
    return p


def relay_url(url: str) -> str:
    """https://, or plain http:// to this machine only (scribelink.relayurl)."""
    try:
        return relayurl.check(url)
    except relayurl.InsecureRelayUrl as e:
        raise Failed(str(e)) from None


class Relay:
    """The relay's admin API, signed in as a clinic admin."""

    def __init__(self, url: str, user: str, password_file: str | None) -> None:
        import httpx

        self.url = relay_url(url)
        self.http = httpx.Client(timeout=30, verify=relayurl.verify())
        pw = Path(password_file).read_text().strip() if password_file else getpass.getpass(
            f"{user}'s relay password: ")
        r = self.http.post(self.url + "/api/login", json={"user": user, "password": pw})
        if r.status_code != 200:
            raise Failed(f"sign-in to {self.url} as {user} failed: HTTP {r.status_code}")
        self.http.headers["Authorization"] = f"Bearer {r.json()['token']}"

    def call(self, method: str, path: str, body: dict | None = None) -> Any:
        """The endpoint's JSON answer: an object or a list, as that endpoint documents."""
        r = self.http.request(method, self.url + path, json=body)
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail")
            except ValueError:
                detail = r.text[:300]
            raise Failed(f"{method} {path}: HTTP {r.status_code}: {detail}")
        return r.json()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scribelink.authority", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def cmd(name: str, relay: bool = True, **kw) -> argparse.ArgumentParser:
        c = sub.add_parser(name, **kw)
        c.add_argument("--key", required=True, help="the authority key file")
        if relay:
            c.add_argument("--relay", required=True, help="https://relay.clinic.example")
            c.add_argument("--user", required=True, help="a clinic admin's id on the relay")
            c.add_argument("--password-file", help="file holding that admin's password")
        return c

    cmd("create", relay=False, help="make a new clinic authority key file")
    cmd("show", relay=False, help="print the authority's fingerprint")
    cmd("register", help="tell the relay this clinic's authority (its public key only)")
    cmd("pending", help="list scribe devices waiting for an endorsement")
    e = cmd("endorse", help="endorse a scribe device")
    e.add_argument("--device", action="append", default=[])
    e.add_argument("--all", action="store_true", help="every pending device")
    a = cmd("assign", help="assign scribes to a room's unit")
    a.add_argument("--unit", required=True)
    a.add_argument("--scribes", required=True, help="comma-separated scribe ids (may be empty)")
    a.add_argument("--room")
    c = cmd("code", help="grant an enrolment; prints the code for the tech")
    c.add_argument("--unit", required=True)
    c.add_argument("--room", required=True)
    c.add_argument("--clinic", required=True)
    c.add_argument("--ttl-s", type=int, default=3600)
    c.add_argument("--recovery-key-file", help="the clinic's recovery public key (base64 raw "
                   "X25519): the unit pins it, so the clinic can open its own archive")
    r = cmd("revoke", help="revoke a unit's key or a scribe device")
    r.add_argument("--unit", action="append", default=[])
    r.add_argument("--device", action="append", default=[])
    t = cmd("token", help="sign a tech's request (unlock, factory reset, trust change)")
    t.add_argument("--request", required=True)
    t.add_argument("--ttl-s", type=int, default=3600)
    args = p.parse_args(argv)
    try:
        return run(args)
    except (Failed, trust.TrustError, OSError) as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    key_path = Path(args.key)
    if args.cmd == "create":
        if key_path.exists():
            raise Failed(f"{key_path} exists; an authority is made once and kept safe")
        auth = ClinicAuthority.create()
        auth.save(key_path, passphrase(confirm=True))
        print(f"clinic authority created: {key_path}\nfingerprint: {auth.fingerprint}\n"
              "Keep the file and its passphrase safe and backed up (offline): without them "
              "nobody can endorse devices, assign rooms or enrol units.")
        return 0
    if args.cmd == "show":
        doc = json.loads(key_path.read_text())
        pub = trust.ed25519_raw(trust.authority_public(doc))
        print(f"fingerprint: {trust.fingerprint(pub)}\npublic key: {trust.b64(pub)}")
        return 0
    relay_url(args.relay)  # refused before the passphrase is asked for
    auth = ClinicAuthority.load(key_path, passphrase())
    relay = Relay(args.relay, args.user, args.password_file)
    if args.cmd == "register":
        relay.call("PUT", "/api/admin/authority", {"public_key": auth.public_b64()})
        print(f"the relay now serves this authority: {auth.fingerprint}")
    elif args.cmd == "pending":
        for d in relay.call("GET", "/api/admin/devices?pending=true"):
            print(f"{d['device']}  {d['user']:<16} {d['kind']:<7} {d['label']}")
    elif args.cmd == "endorse":
        pending = {d["device"]: d for d in relay.call("GET", "/api/admin/devices?pending=true")}
        wanted = list(pending) if args.all else args.device
        for dev in wanted:
            d = pending.get(dev)
            if d is None:
                raise Failed(f"no pending device {dev}")
            st = auth.endorse_device(scribe=d["user"], enc_key=trust.unb64(d["enc_key"]),
                                     sign_key=trust.unb64(d["sign_key"]), label=d["label"],
                                     kind=d["kind"], now_us=now_us())
            relay.call("POST", "/api/admin/endorsements", {"statement": st.to_dict()})
            print(f"endorsed {dev} ({d['user']}, {d['label']})")
    elif args.cmd == "assign":
        scribes = [s for s in args.scribes.split(",") if s]
        st = auth.assign(unit=args.unit, room=args.room, scribes=scribes, now_us=now_us())
        relay.call("PUT", "/api/admin/assignments", {"statement": st.to_dict()})
        print(f"{args.unit} assigned to {', '.join(scribes) or 'nobody'}")
    elif args.cmd == "code":
        request, secret = grant_request(auth, args.unit, args.room, args.clinic, args.ttl_s)
        got = relay.call("POST", "/api/admin/enrolment-grants", request)
        recovery = None
        if args.recovery_key_file:
            recovery = trust.check_x25519(trust.unb64(
                Path(args.recovery_key_file).read_text().strip(), what="recovery key",
                length=32))
        code = enrolment_code(relay=relay.url, broker=got["broker_url"], unit=args.unit,
                              room=args.room, clinic=args.clinic, secret=secret,
                              authority=auth.public_raw,
                              expires_at=int(time.time()) + args.ttl_s,
                              recovery_public_key=recovery)
        print(f"enrolment code for {args.unit} ({args.room}), valid {args.ttl_s // 60} min:\n"
              f"{code}")
    elif args.cmd == "revoke":
        current = relay.call("GET", "/api/trust").get("revocations")
        body: dict[str, Any] = (current["body"] if current
                                else {"serial": 0, "units": [], "devices": []})
        units = list(body["units"])
        for u in args.unit:
            for b in relay.call("GET", f"/api/admin/units/{u}/bindings"):
                units.append({"unit": u, "sign_key_id": b["key_id"], "after_us": now_us()})
        st = auth.revocations(serial=body["serial"] + 1, units=units,
                              devices=[*body["devices"], *args.device], now_us=now_us())
        relay.call("PUT", "/api/admin/revocations", {"statement": st.to_dict()})
        print(f"revocation list {body['serial'] + 1} published")
    elif args.cmd == "token":
        req = relay.call("GET", f"/api/admin/token-requests/{args.request}")
        st = auth.token(unit=req["unit"], action=req["action"], now_us=now_us(),
                        ttl_s=args.ttl_s, args=req.get("args") or {})
        relay.call("POST", f"/api/admin/token-requests/{args.request}", {"statement":
                                                                        st.to_dict()})
        print(f"token for {req['unit']} ({req['action']}"
              + (f": {json.dumps(req['args'], sort_keys=True)}" if req.get("args") else "")
              + ") signed; the tech's tool picks it up")
    return 0


def grant_request(auth: ClinicAuthority, unit: str, room: str, clinic: str, ttl_s: int
                  ) -> tuple[dict, bytes]:
    """What the relay needs to issue a transport certificate against an enrolment code --
    the grant and a hash of the code's proof -- and the secret, which only the code carries
    (the relay never sees it: it is what signs the unit's binding)."""
    from scribelink import enrolcode

    grant, secret = auth.grant(unit=unit, room=room, clinic=clinic, now_us=now_us(),
                               ttl_s=ttl_s)
    return {"grant": grant.to_dict(),
            "proof_hash": enrolcode.proof_hash(enrolcode.proof_of(secret))}, secret


def enrolment_code(*, relay: str, broker: str, unit: str, room: str, clinic: str,
                   secret: bytes, authority: bytes, expires_at: int,
                   recovery_public_key: bytes | None = None) -> str:
    from scribelink import enrolcode

    return enrolcode.EnrolCode(secret=secret, relay_url=relay, broker_url=broker, clinic=clinic,
                               room=room, unit_id=unit, expires_at=expires_at,
                               authority=authority,
                               recovery_public_key=recovery_public_key).text()
