"""Shared by the stand-ins for root-only commands that tests/deploy/test_deploy_doc.py puts
first on PATH when it runs docs/deploy.md's root blocks. Every call is logged (SHIM_LOG);
paths outside the test's directory (TEST_ROOT) are mapped under FAKE_ROOT, so nothing on
the machine is touched."""

import json
import os
import sys
from pathlib import Path


def log(name: str, argv: list[str]) -> None:
    with open(os.environ["SHIM_LOG"], "a") as f:
        f.write(json.dumps([name, *argv]) + "\n")


def mapped(path: str) -> str:
    """An absolute path outside the test's directory, under the fake root instead."""
    p = Path(path)
    root = Path(os.environ["TEST_ROOT"])
    if p.is_absolute() and not p.resolve().is_relative_to(root):
        out = str(Path(os.environ["FAKE_ROOT"]) / p.relative_to("/"))
        return out + "/" if path.endswith("/") else out
    return path


def fail(msg: str, code: int = 1) -> None:
    print(f"{Path(sys.argv[0]).name} (test stand-in): {msg}", file=sys.stderr)
    sys.exit(code)
