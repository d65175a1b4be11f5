"""The SQL of people's accounts: users, sign-in tokens, failed sign-in counters, trusted
addresses and invitations (the rules are in cloud_relay/accounts.py and
cloud_relay/loginguard.py). Tokens and invitation codes are stored as SHA-256 only.

Concurrency: every method may be called from any thread (never from the event loop).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cloud_relay.loginguard import Counter

if TYPE_CHECKING:
    from cloud_relay.store.store import Store, User

TRUSTED_FOR_S = 90 * 86400  # an address a user signed in from stays trusted this long


class UserExists(ValueError):
    pass


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> int:
    from cloud_relay.store.store import now_us

    return now_us()


class AccountStore:
    def __init__(self, store: Store) -> None:
        self.store, self.db = store, store.db

    # ------------------------------------------------------------------ users

    def create_user(self, user_id: str, name: str, role: str, pw_hash: str) -> None:
        """A new user; UserExists if the id is taken (ids are never reused silently)."""
        now = _now()
        n = self.db.execute("INSERT INTO users(id,name,role,pw_hash,created_us,"
                            "password_changed_us) VALUES(?,?,?,?,?,?) ON CONFLICT(id) DO NOTHING",
                            (user_id, name, role, pw_hash, now, now))
        if n != 1:
            raise UserExists(user_id)

    def pw_hash(self, user_id: str) -> tuple[str, bool] | None:
        """(password hash, disabled) of a user, or None."""
        r = self.store._one("SELECT pw_hash, disabled_us FROM users WHERE id=?", (user_id,))
        return None if r is None else (r[0], r[1] is not None)

    def set_pw_hash(self, user_id: str, pw_hash: str, *, changed: bool = True) -> bool:
        """Replace the hash (changed=False: the same password, rehashed stronger)."""
        if changed:
            return self.db.execute("UPDATE users SET pw_hash=?, password_changed_us=? "
                                   "WHERE id=?", (pw_hash, _now(), user_id)) == 1
        return self.db.execute("UPDATE users SET pw_hash=? WHERE id=?",
                               (pw_hash, user_id)) == 1

    def set_name(self, user_id: str, name: str) -> bool:
        return self.db.execute("UPDATE users SET name=? WHERE id=?", (name, user_id)) == 1

    def set_role(self, user_id: str, role: str) -> bool:
        return self.db.execute("UPDATE users SET role=? WHERE id=?", (role, user_id)) == 1

    def set_disabled(self, user_id: str, disabled: bool) -> bool:
        return self.db.execute("UPDATE users SET disabled_us=? WHERE id=?",
                               (_now() if disabled else None, user_id)) == 1

    def delete_user(self, user_id: str) -> bool:
        """Remove a user (their tokens, devices, assignments and invitations go with them;
        the audit log keeps their id)."""
        return self.db.execute("DELETE FROM users WHERE id=?", (user_id,)) == 1

    def admins_active(self) -> list[str]:
        return [r[0] for r in self.store._q("SELECT id FROM users WHERE role='admin' AND "
                                            "disabled_us IS NULL ORDER BY id")]

    def people(self) -> list[dict]:
        """Every user with what the admin view shows about their account."""
        rows = self.store._q(
            "SELECT id,name,role,created_us,disabled_us,password_changed_us,last_login_us,"
            "pw_hash FROM users ORDER BY id")
        return [{"id": r[0], "name": r[1], "role": r[2], "created_us": r[3],
                 "disabled": r[4] is not None, "disabled_us": r[4],
                 "password_changed_us": r[5], "last_login_us": r[6],
                 "has_password": r[7] != "!"} for r in rows]

    # ------------------------------------------------------------------ tokens

    def add_token(self, token: str, user_id: str, *, expires_us: int, max_us: int) -> None:
        now = _now()
        with self.db.transaction() as tx:
            tx.execute("INSERT INTO tokens(token_hash,user_id,expires_us,issued_us,max_us) "
                       "VALUES(?,?,?,?,?)", (token_hash(token), user_id, expires_us, now,
                                             max_us))
            tx.execute("UPDATE users SET last_login_us=? WHERE id=?", (now, user_id))
            tx.execute("DELETE FROM tokens WHERE user_id=? AND expires_us<?", (user_id, now))

    def token(self, token: str) -> tuple[User, int, int | None] | None:
        """(user, expires_us, max_us) for a token whose user is enabled, else None.
        Expiry is the caller's to check (it may slide the deadline)."""
        from cloud_relay.store.store import User, _b

        r = self.store._one(
            "SELECT u.id,u.name,u.role,u.public_key,t.expires_us,t.max_us FROM tokens t "
            "JOIN users u ON u.id=t.user_id WHERE t.token_hash=? AND u.disabled_us IS NULL",
            (token_hash(token),))
        if r is None:
            return None
        return User(r[0], r[1], r[2], _b(r[3])), int(r[4]), r[5]

    def extend_token(self, token: str, expires_us: int) -> None:
        self.db.execute("UPDATE tokens SET expires_us=? WHERE token_hash=?",
                        (expires_us, token_hash(token)))

    def revoke_token(self, token: str) -> bool:
        return self.db.execute("DELETE FROM tokens WHERE token_hash=?",
                               (token_hash(token),)) == 1

    def revoke_tokens(self, user_id: str, *, keep: str | None = None) -> int:
        """End every sign-in of the user (but `keep`, the caller's own token)."""
        if keep is None:
            return self.db.execute("DELETE FROM tokens WHERE user_id=?", (user_id,))
        return self.db.execute("DELETE FROM tokens WHERE user_id=? AND token_hash<>?",
                               (user_id, token_hash(keep)))

    def open_tokens(self, user_id: str) -> int:
        return int(self.store._q("SELECT COUNT(*) FROM tokens WHERE user_id=? AND "
                                 "expires_us>=?", (user_id, _now()))[0][0])

    # ------------------------------------------------------------------ failed sign-ins

    def counters(self, keys: Sequence[str]) -> dict[str, Counter]:
        if not keys:
            return {}
        rows = self.store._q(f"SELECT key,failures,last_us FROM login_failures WHERE key IN "
                             f"({','.join('?' * len(keys))})", list(keys))
        return {r[0]: Counter(int(r[1]), int(r[2])) for r in rows}

    def put_counters(self, counters: dict[str, Counter]) -> None:
        with self.db.transaction() as tx:
            for key, c in counters.items():
                tx.execute("INSERT INTO login_failures(key,failures,last_us) VALUES(?,?,?) "
                           "ON CONFLICT(key) DO UPDATE SET failures=excluded.failures, "
                           "last_us=excluded.last_us", (key, c.failures, c.last_us))

    def clear_counter(self, key: str) -> None:
        self.db.execute("DELETE FROM login_failures WHERE key=?", (key,))

    def forget_counters(self, before_us: int) -> int:
        return self.db.execute("DELETE FROM login_failures WHERE last_us<?", (before_us,))

    def trusted(self, user_id: str, address: str) -> bool:
        return self.store._one("SELECT 1 FROM login_trusted WHERE user_id=? AND address=? "
                               "AND last_us>=?", (user_id, address,
                                                  _now() - TRUSTED_FOR_S * 1_000_000)) is not None

    def trust_address(self, user_id: str, address: str) -> None:
        self.db.execute("INSERT INTO login_trusted(user_id,address,last_us) VALUES(?,?,?) "
                        "ON CONFLICT(user_id,address) DO UPDATE SET last_us=excluded.last_us",
                        (user_id, address, _now()))

    # ------------------------------------------------------------------ invitations

    def add_invite(self, code: str, user_id: str, kind: str, by: str, expires_us: int) -> None:
        with self.db.transaction() as tx:
            # one open invitation per user: a new one replaces the last
            tx.execute("DELETE FROM user_invites WHERE user_id=? AND used_us IS NULL",
                       (user_id,))
            tx.execute("INSERT INTO user_invites(code_hash,user_id,kind,created_by,created_us,"
                       "expires_us) VALUES(?,?,?,?,?,?)",
                       (token_hash(code), user_id, kind, by, _now(), expires_us))

    def invite(self, code: str) -> dict | None:
        r = self.store._one("SELECT user_id,kind,expires_us,used_us FROM user_invites WHERE "
                            "code_hash=?", (token_hash(code),))
        return None if r is None else {"user": r[0], "kind": r[1], "expires_us": r[2],
                                       "used_us": r[3]}

    def use_invite(self, code: str, user_id: str, pw_hash: str) -> bool:
        """Spend an invitation and set the password it was for, atomically (once)."""
        now = _now()
        with self.db.transaction() as tx:
            n = tx.execute("UPDATE user_invites SET used_us=? WHERE code_hash=? AND user_id=? "
                           "AND used_us IS NULL AND expires_us>=?",
                           (now, token_hash(code), user_id, now))
            if n != 1:
                return False
            tx.execute("UPDATE users SET pw_hash=?, password_changed_us=? WHERE id=?",
                       (pw_hash, now, user_id))
            tx.execute("DELETE FROM tokens WHERE user_id=?", (user_id,))
        return True

    def open_invites(self) -> dict[str, dict]:
        """user -> their open invitation (kind, expires_us)."""
        rows = self.store._q("SELECT user_id,kind,expires_us FROM user_invites WHERE "
                             "used_us IS NULL AND expires_us>=?", (_now(),))
        return {r[0]: {"kind": r[1], "expires_us": r[2]} for r in rows}
