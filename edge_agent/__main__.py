"""`python -m edge_agent run|process|provision-serve|update ...`: the unit's entry points."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path


def _pin_release(argv: list[str]) -> None:
    """Run from the release `current` points to now, by its real path, so that switching
    the link later (an update, a rollback) never mixes two releases' files in one process:
    a venv started through /opt/scribelink/current keeps that path in sys.path."""
    prefix = Path(sys.prefix)
    if sys.prefix == sys.base_prefix or prefix.resolve() == prefix:
        return
    python = prefix.resolve() / "bin" / "python"
    if python.exists():
        os.execv(python, [str(python), "-m", "edge_agent", *argv])


def _logging(verbose: bool) -> None:
    # one line per event, key=value, no PHI (never audio, keys or patient words)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        stream=sys.stderr,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from edge_agent.agent import Agent
    from edge_agent.config import ConfigError, load

    try:
        cfg = load(*args.config)
    except ConfigError as e:
        print(f"edge_agent: bad config: {e}", file=sys.stderr)
        return 2
    import edge_agent
    from edge_agent.diagnostics import LogRing

    LogRing.install()  # the last log lines, for diagnostics bundles (from the first line on)
    logging.getLogger("edge_agent").info(
        "event=agent_start version=%s package=%s unit=%s", edge_agent.__version__,
        Path(edge_agent.__file__).resolve().parent, cfg.unit_id)
    agent = Agent(cfg)
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    return agent.run()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _pin_release(argv)
    if argv and argv[0] == "update":
        from edge_agent.installer import main as update_main

        return update_main(argv[1:])
    if argv and argv[0] == "process":
        from edge_agent.dsp.cli import main as process_main

        return process_main(argv[1:])
    if argv and argv[0] == "provision-serve":
        from edge_agent.provision import main as provision_main

        return provision_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m edge_agent", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the unit agent")
    run.add_argument("--config", required=True, action="append",
                     help="agent TOML config; repeat to layer (later files win)")
    sub.add_parser("process", help="run the DSP pipeline on a WAV: process IN.wav OUT.wav")
    sub.add_parser("provision-serve", help="serve the provisioning protocol on a serial port")
    sub.add_parser("update", help="install a verified release, A/B with rollback")
    args = p.parse_args(argv)
    _logging(args.verbose)
    if args.cmd == "run":
        return cmd_run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
