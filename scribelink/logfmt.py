"""Log values that keep a `key=value` line parseable (logfmt).

Scribelink logs one line per event, `event=name key=value ...`. Ids, counts and codes go
in bare; free text -- an exception's message, a reason, a path -- may hold spaces, `=` or
quotes, so it goes through `q`, which quotes it (JSON string escaping, which logfmt
parsers read) only when it needs it.
"""

from __future__ import annotations

import json

_NEEDS_QUOTES = frozenset(' ="\\')


def q(value: object) -> str:
    """`value` as one logfmt value: as is when it is a plain token, else double-quoted with
    `"`, `\\` and control characters escaped (so one value never spans lines)."""
    s = str(value)
    if s and s.isprintable() and not _NEEDS_QUOTES.intersection(s):
        return s
    return json.dumps(s, ensure_ascii=False)
