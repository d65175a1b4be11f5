"""Run the calling script under the project's virtual environment, whatever Python started
it, so the README's commands work as written from a plain shell after `make setup`.

Every Python script in scripts/ imports this first (its own folder is on `sys.path` when
it runs). Inside any virtual environment it does nothing: the caller chose that one
(the project's own, or an installed unit's).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


def ensure() -> None:
    if sys.prefix != sys.base_prefix:
        return
    script = os.path.abspath(sys.argv[0])
    if not VENV_PYTHON.exists():
        sys.exit(f"{Path(script).name}: the project's environment is missing ({VENV_PYTHON}); "
                 "run `make setup` in the checkout first")
    os.execv(VENV_PYTHON, [str(VENV_PYTHON), script, *sys.argv[1:]])


ensure()
