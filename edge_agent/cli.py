"""``edge-agent``: one command, subcommands owned by the packages that implement them.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their subcommand is chosen, so
``edge-agent run`` on a drone never imports the workstation packages (torch, scipy, ...).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from edge_agent.errors import EdgeAgentError
from firmware_bridge.exitcodes import ExitCode

# name -> (module, one-line help). Order is the order --help lists them.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "export": ("export.cli", "export a PyTorch / Stable-Baselines3 policy to a verified bundle"),
    "inspect": ("edge_agent.inspect_cli", "print a bundle's whole contract after verifying it"),
    "sign": ("edge_agent.sign_cli", "sign a bundle with an ed25519 key (or make a key pair)"),
    "run": ("edge_agent.run_cli", "fly a bundle: the onboard loop against a flight controller or SITL"),
    "sitl": ("sitl.cli", "run the built-in simulator as a flight controller on a real link"),
    "calibrate": ("calib.calibrate_cli", "conformal calibration from SITL scenarios or flight logs"),
    "certify": ("calib.certify_cli", "Monte-Carlo certification: failure bound ε(k, N, β)"),
    "replay": ("calib.replay_cli", "re-fly one certification episode and plot it"),
    "report": ("calib.report_cli", "an HTML report with figures from a flight log"),
    "convert": ("calib.convert_cli", "a flight log as CSV, Parquet or MCAP (PlotJuggler, Foxglove, pandas)"),
    "bench": ("bench.cli", "latency, throughput and memory benchmarks"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="Fly reinforcement-learning policies on drones, safely.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edge-agent`` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        top.parse_args(argv)  # prints help or the error, and exits
        return ExitCode.USAGE
    name, rest = argv[0], argv[1:]
    module_name, help_text = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in (
            "edge_agent",
            "export",
            "calib",
            "sitl",
            "firmware_bridge",
            "bench",
        ):
            raise  # our own module is broken: a bug, not a missing extra
        print(
            f"edge-agent {name}: needs {exc.name!r}, which is not installed. "
            f"Install the workstation extras: pip install 'edge-agent[export,calib]'",
            file=sys.stderr,
        )
        return ExitCode.USAGE
    parser = argparse.ArgumentParser(prog=f"edge-agent {name}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args))
    except EdgeAgentError as exc:
        print(f"edge-agent {name}: error: {exc}", file=sys.stderr)
        return ExitCode.ERROR
    except KeyboardInterrupt:
        return ExitCode.SIGINT
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
