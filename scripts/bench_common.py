"""Shared by the benchmarks: record a section of docs/benchmarks.md between markers, and the
command line of a bench over a split's rooms."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def record_section(name: str, title: str, body: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = f"<!-- bench:{name} -->\n## {title}\n\n{body.strip()}\n<!-- /bench:{name} -->"
    pat = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->", re.S)
    if pat.search(text):
        text = pat.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)
    print(f"recorded in {DOC}")


def split_bench_args(prog: str, doc: str, scenes_help: str, argv: list[str]) -> argparse.Namespace:
    """`--scenes N --split test|tune --jobs N --no-write`, as the DSP benches over a split's
    rooms take them (`doc`'s first line is the description)."""
    ap = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    ap.add_argument("--scenes", type=int, default=96, help=scenes_help)
    ap.add_argument("--split", default="test", choices=("tune", "test"))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-write", action="store_true")
    return ap.parse_args(argv)
