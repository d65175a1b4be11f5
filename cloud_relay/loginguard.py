"""How long a sign-in attempt must wait after failed ones: the rule, pure (counters and the
clock come in, a delay goes out); the store keeps the counters (`Store.login_counters`).

Three counters of failed attempts, each with its own allowance before exponential backoff
(1 s, 2 s, 4 s, ... at most 15 min) starts:

- per user *and* address: someone at one address guessing one user's password;
- per address: one address trying many users (password spraying);
- per user: many addresses guessing one user. This one does not apply at an address
  where that user signed in successfully before (`trusted`), so an attacker who makes a
  user's counter climb cannot lock the real user out of their usual place.

An attempt inside a delay is refused without looking at the password (HTTP 429 with
Retry-After): it costs the attacker a request and the relay nothing. Only attempts that
were checked and failed count, so hammering during the delay does not lengthen it.
Counters are forgotten a day after their last failure; a success clears its user and
address counter.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

US = 1_000_000


@dataclass(frozen=True)
class Policy:
    free_per_user_address: int = 5
    free_per_address: int = 20
    free_per_user: int = 20
    first_delay_s: float = 1.0
    max_delay_s: float = 900.0
    forget_after_s: float = 86400.0


@dataclass(frozen=True)
class Counter:
    failures: int
    last_us: int


def keys(user: str, address: str) -> dict[str, str]:
    """The counters an attempt for `user` from `address` touches, by kind. Hashed: the
    user name is whatever the attempt typed."""
    def k(kind: str, *parts: str) -> str:
        return kind + ":" + hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]

    return {"user_address": k("ua", user, address), "address": k("a", address),
            "user": k("u", user)}


def delay_s(failures: int, free: int, policy: Policy) -> float:
    if failures < free:
        return 0.0
    return min(policy.first_delay_s * 2.0 ** (failures - free), policy.max_delay_s)


DEFAULT = Policy()


def wait_s(counters: dict[str, Counter | None], *, trusted: bool, now_us: int,
           policy: Policy = DEFAULT) -> float:
    """Seconds until an attempt may be checked (0: now). `counters` by kind as `keys`
    names them; `trusted`: this user signed in from this address before."""
    free = {"user_address": policy.free_per_user_address,
            "address": policy.free_per_address, "user": policy.free_per_user}
    wait = 0.0
    for kind, c in counters.items():
        if c is None or (kind == "user" and trusted):
            continue
        if now_us - c.last_us > policy.forget_after_s * US:
            continue
        until_us = c.last_us + delay_s(c.failures, free[kind], policy) * US
        wait = max(wait, (until_us - now_us) / US)
    return wait


def after_failure(c: Counter | None, now_us: int, policy: Policy = DEFAULT) -> Counter:
    if c is None or now_us - c.last_us > policy.forget_after_s * US:
        return Counter(1, now_us)
    return Counter(c.failures + 1, now_us)
