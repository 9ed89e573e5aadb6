"""``edge-agent convert LOG --to csv|parquet|mcap [--out PATH]``: a flight log for PlotJuggler, Foxglove, pandas."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from calib.convert import FORMATS, convert

EPILOG = """examples:
  edge-agent convert flight.eal --to csv        # flight.csv, flight.events.csv, flight.header.json
  edge-agent convert flight.eal --to parquet    # flight.parquet, flight.events.parquet (pandas.read_parquet)
  edge-agent convert flight.eal --to mcap       # flight.mcap: JSON channels Foxglove opens

Parquet needs pyarrow and MCAP needs mcap: pip install 'edge-agent[convert]'. A damaged log is
converted with every undamaged record; what was skipped is printed. The formats: docs/flightlog.md.
The raw MAVLink link is recorded with `edge-agent run --tlog` instead (a tlog MAVExplorer reads)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's arguments."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("log", type=Path, help="flight log written by `edge-agent run --log`")
    parser.add_argument("--to", required=True, choices=FORMATS, help="output format")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output file (default: LOG with the format's suffix, beside it)",
    )


def run(args: argparse.Namespace) -> int:
    """Convert and print what was written."""
    result = convert(args.log, args.to, args.out)
    if result.damage.damaged:
        print(f"edge-agent convert: warning: {args.log}: {result.damage.describe()}", file=sys.stderr)
    print(f"{args.log}: {result.ticks} ticks, {result.events} events → {', '.join(map(str, result.paths))}")
    return 0
