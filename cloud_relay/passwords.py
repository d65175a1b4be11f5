"""Password hashes for the relay's users: Argon2id (RFC 9106's second recommended setting,
argon2-cffi's default: 64 MiB, 3 passes, 4 lanes), with a dummy hash checked for unknown
users so that a wrong user name takes as long as a wrong password (no timing oracle).

Hashes made before this module (scrypt N=2^14, "scrypt$SALT$KEY") still verify and are
replaced by Argon2id at the user's next sign-in. At most `MAX_CONCURRENT` hashes run at
once: each takes 64 MiB, and a burst of sign-ins must not take the relay's memory.

`weak_for_tests=True` (the relay setting `test_only_weak_password_hash`) uses 8 KiB and
one pass: the test suite signs in thousands of times. The relay refuses it anywhere but
on loopback (cloud_relay.config).
"""

from __future__ import annotations

import hashlib
import secrets
import threading

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

MAX_CONCURRENT = 2
MIN_LENGTH = 10
MAX_LENGTH = 1024
NO_PASSWORD = "!"  # an invited user, or one whose password an admin reset: cannot sign in

_slots = threading.BoundedSemaphore(MAX_CONCURRENT)


class PasswordError(ValueError):
    """A password that cannot be set (too short, too long): the message says why."""


def check_new(password: str) -> str:
    if len(password) < MIN_LENGTH:
        raise PasswordError(f"a password needs at least {MIN_LENGTH} characters "
                            "(a few words make a good one)")
    if len(password) > MAX_LENGTH:
        raise PasswordError(f"a password has at most {MAX_LENGTH} characters")
    return password


class Hasher:
    """Concurrency: any thread; at most MAX_CONCURRENT hashes run at once process-wide."""

    def __init__(self, *, weak_for_tests: bool = False) -> None:
        self.weak_for_tests = weak_for_tests
        self._ph = (argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
                    if weak_for_tests else argon2.PasswordHasher())
        self._dummy_hash: str | None = None

    @property
    def _dummy(self) -> str:
        """Checked for users who do not exist, with the same parameters as a real hash."""
        if self._dummy_hash is None:
            self._dummy_hash = self._ph.hash(secrets.token_urlsafe(16))
        return self._dummy_hash

    def hash(self, password: str) -> str:
        with _slots:
            return self._ph.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        """True if `password` matches `stored`. An unknown user (None) or one without a
        password costs the same as a wrong password, and is never accepted."""
        with _slots:
            if stored is not None and stored.startswith("$argon2"):
                try:
                    return self._ph.verify(stored, password)
                except (VerificationError, InvalidHashError):
                    return False
            if stored is not None and stored.startswith("scrypt$"):
                return _verify_legacy(stored, password)
            try:  # the same work as a real check, and never a match
                self._ph.verify(self._dummy, password)
            except (VerificationError, InvalidHashError):
                pass
            return False

    def needs_rehash(self, stored: str) -> bool:
        if not stored.startswith("$argon2"):
            return True
        try:
            return self._ph.check_needs_rehash(stored)
        except InvalidHashError:
            return True


def _verify_legacy(stored: str, password: str) -> bool:
    """The relay's hashes before Argon2id: scrypt N=2^14, r=8, p=1."""
    try:
        _, salt_hex, dk_hex = stored.split("$")
        salt, dk = bytes.fromhex(salt_hex), bytes.fromhex(dk_hex)
    except ValueError:
        return False
    got = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=len(dk))
    return secrets.compare_digest(got, dk)
