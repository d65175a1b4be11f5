"""People's accounts on the relay: signing in (with the back-off of cloud_relay.loginguard
and a constant-cost check for unknown users), bearer tokens that end when unused or at
the end of a shift, signing out, password changes that end every other sign-in, and
invitations (a one-time link an admin hands to a new user, or after resetting a password:
the admin never learns anyone's password).

Concurrency: any thread but the event loop (each call does blocking database work).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from cloud_relay import loginguard
from cloud_relay.passwords import NO_PASSWORD, Hasher, check_new
from cloud_relay.store import Store, User, now_us

log = logging.getLogger("cloud_relay.accounts")

ROLES = ("scribe", "tech", "admin")
US = 1_000_000
TOKEN_SLIDE_EVERY_S = 60  # a used token's deadline moves at most this often (one write)


@dataclass(frozen=True)
class SignIn:
    """What a sign-in attempt came to: a token, or a refusal (`wait_s` > 0: throttled)."""

    token: str | None = None
    user: User | None = None
    wait_s: float = 0.0
    disabled: bool = False
    expires_us: int = 0


class Accounts:
    def __init__(self, store: Store, *, hasher: Hasher, token_idle_s: float,
                 token_max_s: float, invite_ttl_s: float = 72 * 3600,
                 policy: loginguard.Policy | None = None) -> None:
        self.store = store
        self.db = store.accounts
        self.hasher = hasher
        self.token_idle_s = token_idle_s
        self.token_max_s = token_max_s
        self.invite_ttl_s = invite_ttl_s
        self.policy = policy or loginguard.Policy()

    # ------------------------------------------------------------------ signing in

    def sign_in(self, user_id: str, password: str, address: str) -> SignIn:
        now = now_us()
        keys = loginguard.keys(user_id, address)
        got = self.db.counters(list(keys.values()))
        counters = {kind: got.get(key) for kind, key in keys.items()}
        trusted = self.db.trusted(user_id, address)
        wait = loginguard.wait_s(counters, trusted=trusted, now_us=now, policy=self.policy)
        if wait > 0:
            return SignIn(wait_s=wait)
        row = self.db.pw_hash(user_id)
        ok = self.hasher.verify(row[0] if row else None, password)
        if not ok:
            self.db.put_counters({keys[k]: loginguard.after_failure(c, now, self.policy)
                                  for k, c in counters.items()})
            return SignIn()
        assert row is not None
        if row[1]:
            return SignIn(disabled=True)
        self.db.clear_counter(keys["user_address"])
        self.db.trust_address(user_id, address)
        if self.hasher.needs_rehash(row[0]):
            self.db.set_pw_hash(user_id, self.hasher.hash(password), changed=False)
        token, expires = self.issue(user_id)
        return SignIn(token=token, user=self.store.user(user_id), expires_us=expires)

    def issue(self, user_id: str) -> tuple[str, int]:
        now = now_us()
        token = secrets.token_urlsafe(32)
        max_us = now + int(self.token_max_s * US)
        expires = min(now + int(self.token_idle_s * US), max_us)
        self.db.add_token(token, user_id, expires_us=expires, max_us=max_us)
        return token, expires

    def authenticate(self, token: str) -> User | None:
        """The user a bearer token signs in, sliding its deadline (used tokens live on,
        up to the sign-in's hard end; unused ones end after token_idle_s)."""
        got = self.db.token(token)
        if got is None:
            return None
        user, expires, max_us = got
        now = now_us()
        if expires < now:
            return None
        if max_us is not None:
            want = min(now + int(self.token_idle_s * US), max_us)
            if want - expires > TOKEN_SLIDE_EVERY_S * US:
                self.db.extend_token(token, want)
        return user

    def renew(self, token: str) -> tuple[str, int] | None:
        """A fresh token for the same sign-in's user, the old one ended. None: invalid."""
        user = self.authenticate(token)
        if user is None:
            return None
        got = self.db.token(token)
        if got is None:
            return None
        _u, _e, max_us = got
        new = secrets.token_urlsafe(32)
        now = now_us()
        max_us = max_us if max_us is not None else now + int(self.token_max_s * US)
        expires = min(now + int(self.token_idle_s * US), max_us)
        if expires <= now:
            return None
        self.db.add_token(new, user.id, expires_us=expires, max_us=max_us)
        self.db.revoke_token(token)
        return new, expires

    def sign_out(self, token: str) -> bool:
        return self.db.revoke_token(token)

    # ------------------------------------------------------------------ passwords

    def change_password(self, user_id: str, old: str, new: str, *, keep_token: str) -> bool:
        """The user's own change: needs the old password; ends their other sign-ins."""
        row = self.db.pw_hash(user_id)
        if row is None or not self.hasher.verify(row[0], old):
            return False
        self.db.set_pw_hash(user_id, self.hasher.hash(check_new(new)))
        self.db.revoke_tokens(user_id, keep=keep_token)
        return True

    def set_password(self, user_id: str, new: str) -> bool:
        """An operator's change (the command line): ends every sign-in of the user."""
        if not self.db.set_pw_hash(user_id, self.hasher.hash(check_new(new))):
            return False
        self.db.revoke_tokens(user_id)
        return True

    def reset(self, user_id: str, by: str) -> str:
        """An admin's reset: the password stops working, every sign-in ends, and a one-time
        code (for the invitation link) lets the user choose a new one."""
        self.db.set_pw_hash(user_id, NO_PASSWORD)
        self.db.revoke_tokens(user_id)
        return self._invite(user_id, "reset", by)

    # ------------------------------------------------------------------ people

    def create(self, user_id: str, name: str, role: str, *, by: str,
               password: str | None = None) -> str | None:
        """A new user: with a password (then None), or invited (returns the invitation
        code). UserExists if the id is taken."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        pw_hash = self.hasher.hash(check_new(password)) if password is not None else NO_PASSWORD
        self.db.create_user(user_id, name, role, pw_hash)
        return None if password is not None else self._invite(user_id, "invite", by)

    def _invite(self, user_id: str, kind: str, by: str) -> str:
        code = secrets.token_urlsafe(24)
        self.db.add_invite(code, user_id, kind, by, now_us() + int(self.invite_ttl_s * US))
        return code

    def invitation(self, code: str) -> dict | None:
        """An invitation still open: {user, kind, expires_us, name}."""
        inv = self.db.invite(code)
        if inv is None or inv["used_us"] is not None or inv["expires_us"] < now_us():
            return None
        user = self.store.user(inv["user"])
        return None if user is None else {**inv, "name": user.name, "role": user.role}

    def accept(self, code: str, password: str) -> str | None:
        """Set the password an invitation is for; returns the user id, or None."""
        inv = self.invitation(code)
        if inv is None:
            return None
        if not self.db.use_invite(code, inv["user"], self.hasher.hash(check_new(password))):
            return None
        return inv["user"]

    def set_disabled(self, user_id: str, disabled: bool) -> bool:
        if not self.db.set_disabled(user_id, disabled):
            return False
        if disabled:
            self.db.revoke_tokens(user_id)
        return True
