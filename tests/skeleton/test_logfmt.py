"""scribelink.logfmt.q: free text in a key=value log line stays one parseable value."""

from __future__ import annotations

import json
import re

import pytest

from scribelink.logfmt import q


def parse(line: str) -> dict[str, str]:
    """A logfmt reader: key=bare or key="quoted, with escapes"; the whole line consumed."""
    pairs = re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?:\s+|$)', line)
    assert " ".join(f"{k}={v}" for k, v in pairs) == line
    return {k: json.loads(v) if v.startswith('"') else v for k, v in pairs}


@pytest.mark.parametrize("plain", ["unit-a", "42", "ECONNREFUSED", "/var/lib/scribelink"])
def test_plain_tokens_go_in_bare(plain):
    assert q(plain) == plain


@pytest.mark.parametrize("text", ["Connection refused", "a=b", 'say "hi"', "back\\slash",
                                  "", "two\nlines", "tab\there", "Not authorized"])
def test_free_text_is_one_quoted_value_that_reads_back(text):
    line = f"event=x error={q(text)} unit=u1"
    assert "\n" not in line
    assert parse(line) == {"event": "x", "error": text, "unit": "u1"}


def test_exceptions_are_logged_by_their_message():
    assert q(OSError(111, "Connection refused")) == '"[Errno 111] Connection refused"'
