"""``edge-agent run``: fly a bundle against a flight controller (or the built-in SITL)."""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from dataclasses import asdict
from typing import Any

from edge_agent.bundle import load_bundle, read_key_file
from edge_agent.errors import ConfigError
from edge_agent.guarantees import guarantees
from edge_agent.loop import Runtime
from edge_agent.loop_config import END_ACTIONS, LoopConfig, StopRequested
from edge_agent.mission import load_mission
from edge_agent.preflight import check_flight_settings
from firmware_bridge.errors import BridgeError
from firmware_bridge.exitcodes import ExitCode, epilog_table
from firmware_bridge.links import ReconnectingLink, open_link
from firmware_bridge.mavlink_codec import SigningConfig
from firmware_bridge.session import SessionConfig
from firmware_bridge.tlog import TlogWriter

EPILOG = """examples:
  edge-agent run --bundle out/bundle --mission examples/missions/demo.toml --link serial:///dev/ttyACM0?baud=921600
  edge-agent run --bundle out/bundle --mission m.toml --link udpin://0.0.0.0:14540
  edge-agent run --bundle out/bundle --mission m.toml --link serial:///dev/pts/7 --log flight.eal

The vehicle is left landing (or holding, with --end hold) when the mission completes or on
SIGINT/SIGTERM. The end action's path is checked against the mission first (land: straight down;
rtl: the climb to the return altitude, the line home, the descent there; only a return straight
home, so PX4 RTL_TYPE 0, ArduCopter RTL_ALT_TYPE 0 and no rally point): one not clear becomes
hold, said on the console; one never clear from the final waypoint is refused at start-up. The
take-off climb holds its column, pauses when blown off it, and is aborted (exit 7) near the fence
or a keep-out, or when it stays off. If the autopilot or the pilot switches mode away from
OFFBOARD/GUIDED, the agent stops commanding and never takes control back.

A lost link (cable out, TCP reset) is reopened with backoff while the agent holds; the flight
goes on only if the vehicle is still in OFFBOARD/GUIDED when the link is back (docs/safety.md).
Each fallback stage and its reason (e.g. "fallback BRAKE (NOT_RECOVERABLE)"), a lost link or
HEARTBEAT and a loss of control are printed on stderr as they happen, besides the flight log and
the ground station's STATUSTEXT.
With --public-key the agent refuses bundles not signed by that key (`edge-agent sign`); with
--signing-key every MAVLink frame is signed and unsigned or wrongly signed frames are dropped.

Every setting is checked against the mission before the link opens: --takeoff-alt must lie in
the mission's altitude band less its altitude margin, --rate above 2 Hz, --max-duration > 0.

"""
EPILOG += epilog_table(
    (
        ExitCode.OK,
        ExitCode.ERROR,
        ExitCode.USAGE,
        ExitCode.CONTROL_LOST,
        ExitCode.TIME_LIMIT,
        ExitCode.FALLBACK_LANDED,
        ExitCode.LOG_INCOMPLETE,
        ExitCode.CLIMB_ABORTED,
        ExitCode.SIGINT,
        ExitCode.SIGTERM,
    )
)
UNSIGNED_WARNING = (
    "edge-agent run: WARNING: the MAVLink link is unsigned: any program that can write to it can "
    "pose as the autopilot (one forged HEARTBEAT ends the flight) or command the vehicle; turn "
    "signing on (PX4: MAV_SIGN_CFG=1 and its key; ArduPilot: SETUP_SIGNING, e.g. MAVProxy `signing "
    "setup`) and pass the same key as --signing-key HEX"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``edge-agent run``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--bundle", required=True, help="bundle folder written by `edge-agent export`")
    parser.add_argument("--mission", required=True, help="mission TOML (docs/mission.md)")
    parser.add_argument(
        "--link",
        required=True,
        help="flight-controller link: serial:///dev/ttyACM0?baud=921600, /dev/ttyUSB0,57600, udpin://HOST:PORT, "
        "udp://:14540 (listen), udpout://HOST:PORT, tcp://HOST:PORT, tcpin://, and the pymavlink forms "
        "(udpin:/udp:/udpout:/tcp:HOST:PORT); the table of forms is in docs/bridge.md",
    )
    parser.add_argument(
        "--target-system",
        type=int,
        default=None,
        metavar="N",
        help="fly the vehicle whose autopilot has MAVLink sysid N (several on one link); default: the first heard",
    )
    parser.add_argument("--protocol", choices=("mavlink", "custom"), default="mavlink")
    parser.add_argument("--rate", type=float, default=None, help="control rate, Hz (default: the bundle's)")
    parser.add_argument("--log", default="flight.eal", help="flight log path (default: %(default)s)")
    parser.add_argument(
        "--tlog",
        default=None,
        metavar="PATH",
        help="also record the raw MAVLink link, both directions, as a tlog (pymavlink, mavlogdump.py, MAVExplorer)",
    )
    parser.add_argument(
        "--takeoff-alt",
        type=float,
        default=5.0,
        help="take-off height, m above the origin, inside the mission's altitude band (default: %(default)s)",
    )
    parser.add_argument("--max-duration", type=float, default=math.inf, help="stop after this many seconds")
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=120.0,
        help="seconds to wait after the first HEARTBEAT until the autopilot can fly: position estimate "
        "flowing, its pre-arm checks passing (default %(default)s; a cold ArduCopter needs ~42 s)",
    )
    parser.add_argument(
        "--end",
        choices=END_ACTIONS,
        default="land",
        help="what the vehicle does at the end, done by the autopilot itself: land there; hold position "
        "(PX4 Hold, ArduCopter BRAKE); rtl = return to launch (default %(default)s)",
    )
    parser.add_argument(
        "--no-shield",
        action="store_true",
        help="DANGEROUS, simulation only: bypass the barrier and fallback layers to show what the shield prevents",
    )
    parser.add_argument(
        "--realtime-priority",
        type=int,
        default=None,
        metavar="N",
        help="run the loop at SCHED_FIFO priority N (1-99) so no ordinary process preempts a tick; "
        "needs CAP_SYS_NICE (default: the normal scheduler)",
    )
    parser.add_argument(
        "--spin-us",
        type=float,
        default=0.0,
        metavar="US",
        help="sleep until US µs before each tick, then busy-wait on the clock: less wake-up jitter at "
        "high rates for that much CPU per tick (default 0: sleep only)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--public-key",
        default=None,
        metavar="FILE",
        help="fly only bundles signed by this ed25519 key (the .pub file from `edge-agent sign --generate-key`)",
    )
    parser.add_argument(
        "--signing-key",
        default=None,
        metavar="HEX",
        help="MAVLink 2 signing key, 64 hex digits (the autopilot's); unsigned frames are then dropped",
    )


def parse_signing_key(text: str | None, protocol: str) -> SigningConfig | None:
    """``--signing-key`` → a SigningConfig; ConfigError names the expected form."""
    if text is None:
        return None
    if protocol != "mavlink":
        raise ConfigError("--signing-key applies to MAVLink; the custom protocol has no signing")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError("--signing-key must be 64 hex digits (a 32-byte key), as given to the autopilot")
    return SigningConfig(key)


def open_flight_link(url: str, tlog: TlogWriter | None = None) -> ReconnectingLink:
    """The flight-controller link, reopened with backoff when the cable comes out (a bad URL fails now);
    every opening recorded into ``tlog`` if given."""
    try:
        if tlog is None:
            link = ReconnectingLink(url)
        else:
            link = ReconnectingLink(url, opener=lambda u: tlog.tap(open_link(u)))
    except BridgeError as exc:
        raise ConfigError(f"cannot use --link {url!r}: {exc}") from None
    if not link.connected:
        reason = next((e.reason for e in link.events()), "unknown")
        link.close()
        raise ConfigError(
            f"cannot open --link {url!r}: {reason}; check the device path or address and that the "
            f"flight controller (or `edge-agent sitl`) is running"
        )
    return link


def run(args: argparse.Namespace) -> int:
    """Fly; the exit status says how the flight ended (the table in the epilog, docs/safety.md)."""
    public_key = None if args.public_key is None else read_key_file(args.public_key, what="public key")
    signing = parse_signing_key(args.signing_key, args.protocol)
    bundle = load_bundle(args.bundle, public_key=public_key)
    mission = load_mission(args.mission)
    check_flight_settings(
        mission,
        takeoff_alt_m=args.takeoff_alt,
        rate_hz=args.rate if args.rate is not None else bundle.manifest.control_rate_hz,
        max_duration_s=args.max_duration,
    )
    config = LoopConfig(
        rate_hz=args.rate,
        takeoff_alt_m=args.takeoff_alt,
        max_duration_s=args.max_duration,
        ready_timeout_s=args.ready_timeout,
        shield_enabled=not args.no_shield,
        end_action=args.end,
        realtime_priority=args.realtime_priority,
        spin_us=args.spin_us,
    )
    if args.no_shield:
        print("edge-agent run: WARNING: shield barrier and fallback are OFF (--no-shield)", file=sys.stderr)
    try:
        session_config = SessionConfig(signing=signing, target_sysid=args.target_system)
    except BridgeError as exc:
        raise ConfigError(f"--target-system: {exc}") from None
    tlog = None
    if args.tlog is not None:
        if args.protocol != "mavlink":
            raise ConfigError("--tlog records MAVLink; the custom protocol has no tlog format")
        try:
            tlog = TlogWriter(args.tlog)
        except BridgeError as exc:
            raise ConfigError(str(exc)) from None
    link = open_flight_link(args.link, tlog)
    runtime = Runtime(
        bundle,
        mission,
        link,
        protocol=args.protocol,
        config=config,
        log_path=args.log,
        session_config=session_config,
    )

    def _stop(signum: int, _frame: Any) -> None:
        runtime.request_stop(f"signal {signal.Signals(signum).name}", ExitCode.for_signal(signum))

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    # Last before connecting (so a Ctrl-C from here on is the loop's): what the flight lacks.
    if args.protocol == "mavlink" and signing is None:
        print(UNSIGNED_WARNING, file=sys.stderr, flush=True)
    for problem in guarantees(bundle.manifest).problems:
        print(f"edge-agent run: WARNING: {problem}", file=sys.stderr, flush=True)
    try:
        summary = runtime.run()
    except StopRequested as exc:
        print(f"edge-agent run: {exc}", file=sys.stderr)
        return int(exc.code)
    finally:
        link.close()
        if tlog is not None:
            tlog.close()
            if tlog.error is not None:
                print(
                    f"edge-agent run: WARNING: the tlog {tlog.path} is incomplete: {tlog.error}",
                    file=sys.stderr,
                )
    if args.json:
        print(json.dumps(asdict(summary), default=str))
    else:
        print(
            f"flight ended: {summary.end_reason}; {summary.ticks} ticks in {summary.duration_s:.1f} s; "
            f"interventions {summary.interventions}; min slack {summary.min_slack_m:.2f} m; "
            f"tick p50/p99 {summary.tick_latency_us_p50:.0f}/{summary.tick_latency_us_p99:.0f} µs; "
            f"log {summary.log_path}"
            + (
                f" (INCOMPLETE: {summary.log_records_dropped} records lost to a full or failing disk)"
                if summary.log_records_dropped
                else ""
            )
        )
    return int(summary.exit_code)
