"""``edge-agent report LOG [--compare LOG2] [--out DIR]``: an HTML page with figures from a flight log."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from calib.report import FlightSummary, write_report
from edge_agent.errors import ConfigError

EPILOG = """examples:
  edge-agent report flight.eal                          # writes flight-report/report.html
  edge-agent report shielded.eal --compare unshielded.eal --out out/compare

The page is self-contained (figures embedded); the PNG figures are also written beside it."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's arguments."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("log", type=Path, help="flight log written by `edge-agent run --log`")
    parser.add_argument(
        "--compare", type=Path, default=None, help="a second flight log shown side by side (e.g. --no-shield)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="report folder (default: LOG's name + '-report', beside it)"
    )


def default_out_dir(log: Path) -> Path:
    """Where the report goes when --out is not given: ``flight.eal`` → ``flight-report/``."""
    return log.with_name(f"{log.stem}-report")


def summary_line(s: FlightSummary) -> str:
    """One line a terminal user reads: outcome, breaches, interventions, closest approach."""
    closest = min(s.constraints, key=lambda c: c.min_distance_m)
    cov = "n/a" if not math.isfinite(s.coverage) else f"{s.coverage:.3f}"
    return (
        f"{Path(s.log).name}: shield {'on' if s.shield_enabled else 'OFF'}; "
        f"{'mission complete' if s.mission_complete else 'mission NOT complete: ' + s.end_reason}; "
        f"breaches {s.breaches}; interventions {sum(s.interventions_by_layer.values())}/{s.ticks} ticks; "
        f"closest {closest.min_distance_m:.2f} m ({closest.name}); coverage {cov}"
    )


def run(args: argparse.Namespace) -> int:
    """Write the report and print where it is."""
    if args.compare is not None and args.compare.resolve() == args.log.resolve():
        raise ConfigError(f"--compare {args.compare} is the same log as LOG; pass a different flight's log")
    out = args.out if args.out is not None else default_out_dir(args.log)
    result = write_report(args.log, out, compare=args.compare)
    for s in result.summaries:
        print(summary_line(s))
    print(f"report: {result.html_path}")
    return 0
