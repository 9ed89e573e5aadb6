"""``edge-agent run``: fly a bundle against a flight controller (or the built-in SITL)."""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from dataclasses import asdict
from typing import Any

from edge_agent.bundle import load_bundle
from edge_agent.loop import LoopConfig, Runtime
from edge_agent.mission import load_mission
from firmware_bridge.links import open_link

EPILOG = """examples:
  edge-agent run --bundle out/bundle --mission examples/missions/demo.toml --link serial:///dev/ttyACM0?baud=921600
  edge-agent run --bundle out/bundle --mission m.toml --link udpin://0.0.0.0:14540
  edge-agent run --bundle out/bundle --mission m.toml --link serial:///dev/pts/7 --log flight.eal

The vehicle is left landing (or holding, with --end hold) when the mission completes or on
SIGINT/SIGTERM. If the autopilot or the pilot switches mode away from OFFBOARD/GUIDED, the agent
stops commanding and never takes control back."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``edge-agent run``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--bundle", required=True, help="bundle folder written by `edge-agent export`")
    parser.add_argument("--mission", required=True, help="mission TOML (docs/mission.md)")
    parser.add_argument(
        "--link",
        required=True,
        help="flight-controller link: serial:///dev/ttyACM0?baud=921600, udpin://HOST:PORT, udp://, tcp://, tcpin://",
    )
    parser.add_argument("--protocol", choices=("mavlink", "custom"), default="mavlink")
    parser.add_argument("--rate", type=float, default=None, help="control rate, Hz (default: the bundle's)")
    parser.add_argument("--log", default="flight.eal", help="flight log path (default: %(default)s)")
    parser.add_argument(
        "--takeoff-alt", type=float, default=5.0, help="take-off height, m (default: %(default)s)"
    )
    parser.add_argument("--max-duration", type=float, default=math.inf, help="stop after this many seconds")
    parser.add_argument(
        "--end", choices=("land", "hold"), default="land", help="what the vehicle does at the end"
    )
    parser.add_argument(
        "--no-shield",
        action="store_true",
        help="DANGEROUS, simulation only: bypass the barrier and fallback layers to show what the shield prevents",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    """Fly; exit status 0 when the flight ended as planned."""
    bundle = load_bundle(args.bundle)
    mission = load_mission(args.mission)
    config = LoopConfig(
        rate_hz=args.rate,
        takeoff_alt_m=args.takeoff_alt,
        max_duration_s=args.max_duration,
        shield_enabled=not args.no_shield,
        end_action=args.end,
    )
    if args.no_shield:
        print("edge-agent run: WARNING: shield barrier and fallback are OFF (--no-shield)", file=sys.stderr)
    link = open_link(args.link)
    runtime = Runtime(bundle, mission, link, protocol=args.protocol, config=config, log_path=args.log)

    def _stop(signum: int, _frame: Any) -> None:
        runtime.request_stop(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        summary = runtime.run()
    finally:
        link.close()
    if args.json:
        print(json.dumps(asdict(summary), default=str))
    else:
        print(
            f"flight ended: {summary.end_reason}; {summary.ticks} ticks in {summary.duration_s:.1f} s; "
            f"interventions {summary.interventions}; min slack {summary.min_slack_m:.2f} m; "
            f"tick p50/p99 {summary.tick_latency_us_p50:.0f}/{summary.tick_latency_us_p99:.0f} µs; "
            f"log {summary.log_path}"
        )
    return 0 if summary.control_lost is None else 3
