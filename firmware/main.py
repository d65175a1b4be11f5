# Puck entry point, run at boot on the RP2040 (and by scripts/puck-sim on the unix port).

import sys

try:
    import puck_config  # optional on-device overrides: CONFIG = {"hold_ms": 1500, ...}

    CONFIG = puck_config.CONFIG
except ImportError:
    CONFIG = {}


def main():
    if sys.platform == "rp2":
        import board
    else:
        import board_sim as board
    b = board.Board()
    if b.maintenance_requested():
        return  # stay at the REPL, watchdog off, for mpremote
    b.start()
    import puckapp

    puckapp.run(b, CONFIG)


main()
