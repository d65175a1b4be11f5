import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE_DIR = ROOT / "firmware"
for p in (str(FIRMWARE_DIR), str(Path(__file__).parent)):
    if p not in sys.path:
        sys.path.insert(0, p)
