"""``edge-agent sitl``: the built-in simulator as a flight controller on a real link.

    edge-agent sitl --flavor px4 --link pty:// --wind 3,0,0 --gust 0.5 --seed 1

On ``pty://`` it prints the serial device the agent should open, as a flight controller on
``/dev/ttyACM0`` would appear; on ``udpin://`` / ``tcpin://`` the address it listens on.

With ``--firmware px4|ardupilot`` it runs the real autopilot firmware instead, confined to a
private loopback-only network namespace (``sitl/firmware_cli.py``).
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from typing import Any

import numpy as np

from firmware_bridge.errors import LinkError
from firmware_bridge.exitcodes import ExitCode, epilog_table
from firmware_bridge.links import Link, PtyLink, TcpServerLink, UdpLink, open_link
from firmware_bridge.tlog import TlogWriter
from sitl.custom_vehicle import make_custom_vehicle
from sitl.disturbance import Battery, Disturbances, Faults
from sitl.mavlink_telemetry import Home
from sitl.mavlink_vehicle import make_vehicle
from sitl.runner import DEFAULT_STEP_S, LockstepRunner, RealtimeRunner
from sitl.sim import Sim


class SitlOptionError(ValueError):
    """A ``sitl`` option is malformed or out of range; the message names the fix.

    Not an ``edge_agent.errors.ConfigError``: ``sitl`` may import only ``firmware_bridge``
    (DESIGN.md), so :func:`run` reports these itself, in the dispatcher's format and exit code.
    """


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``sitl`` subcommand's options."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = epilog_table(
        (ExitCode.OK, ExitCode.ERROR, ExitCode.USAGE, ExitCode.SIGINT, ExitCode.SIGTERM)
    )
    parser.add_argument(
        "--flavor",
        choices=("px4", "ardupilot", "custom"),
        default="px4",
        help="firmware to emulate (default px4)",
    )
    parser.add_argument(
        "--link",
        default="pty://",
        help="link URL: pty:// (default), udpin://HOST:PORT (listen), tcpin://HOST:PORT, udpout://HOST:PORT "
        "(send to an agent listening there), serial:///dev/DEV:BAUD, tcp://; the table of forms is in docs/bridge.md",
    )
    parser.add_argument("--wind", default="0,0,0", help="steady wind N,E,D in m/s (default 0,0,0)")
    parser.add_argument("--gust", type=float, default=0.0, help="gust intensity (std, m/s; default 0)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: same seed, same flight (default 0)")
    parser.add_argument(
        "--battery-mah",
        type=float,
        default=5000.0,
        help="battery capacity in mAh (default 5000, about 15 min of flight; raise it for long soaks)",
    )
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument(
        "--realtime", dest="lockstep", action="store_false", help="pace by the wall clock (default)"
    )
    pace.add_argument(
        "--lockstep", dest="lockstep", action="store_true", help="run as fast as the CPU allows (no pacing)"
    )
    parser.set_defaults(lockstep=False)
    parser.add_argument(
        "--speed", type=float, default=1.0, help="real-time multiplier with --realtime (default 1)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many simulated seconds (default: run until Ctrl-C)",
    )
    parser.add_argument(
        "--fast-boot",
        action="store_true",
        help="for tests: ready to arm 1 s (PX4) / 2 s (ArduPilot) after start instead of the real "
        "firmware's cold boot (PX4 SIH ~5 s, ArduCopter ~42 s while its EKF converges)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set an autopilot parameter at boot (repeatable), e.g. COM_OBL_RC_ACT=4",
    )
    parser.add_argument("--sysid", type=int, default=1, help="MAVLink system id (default 1)")
    parser.add_argument(
        "--tlog",
        default=None,
        metavar="PATH",
        help="record the MAVLink link, both directions, as a tlog (pymavlink, mavlogdump.py, MAVExplorer)",
    )
    parser.add_argument(
        "--signing-key", default=None, help="MAVLink signing key, 64 hex digits (default: unsigned)"
    )
    real = parser.add_argument_group(
        "real firmware",
        "run the autopilot's own SITL build (../shared/firmware/) instead of the emulator, in a private "
        "network namespace with loopback only; COMMAND (after --) runs inside it, e.g. "
        "edge-agent sitl --firmware px4 --param COM_OBL_RC_ACT=5 -- edge-agent run --bundle B --mission M "
        "--link udpin://127.0.0.1:14540 (SIH has no RC: the agent refuses PX4's default offboard-loss action)",
    )
    real.add_argument(
        "--firmware",
        choices=("px4", "ardupilot"),
        default=None,
        help="real PX4 SITL with SIH, or real ArduCopter SITL",
    )
    real.add_argument(
        "--firmware-dir",
        default=None,
        help="folder with px4/ and ardupilot/ (default: $EDGE_AGENT_FIRMWARE_DIR, then ../shared/firmware)",
    )
    real.add_argument("--vehicles", type=int, default=1, help="vehicles to start (default 1)")
    real.add_argument(
        "--speedup", type=float, default=1.0, help="ArduCopter only: times faster than real time (default 1)"
    )
    real.add_argument(
        "--boot-speedup",
        type=float,
        default=None,
        help="ArduCopter only: boot this many times faster (its EKF's ~40 s in a few), then run at --speedup",
    )
    real.add_argument("--workdir", default=None, help="where the firmware writes (default: a scratch folder)")
    # --home applies to the emulator too (HOME_POSITION, origin, GLOBAL_POSITION_INT, missions)
    parser.add_argument(
        "--home",
        default=None,
        help="LAT,LON,ALT_AMSL_M of home (default: the emulator's CMAC -35.3632621,149.1652374,584.09; "
        "with --firmware, the firmware's)",
    )
    real.add_argument("command", nargs=argparse.REMAINDER, help="with --firmware: a command to run beside it")


def parse_wind(text: str) -> tuple[float, float, float]:
    """``"N,E,D"`` in m/s → a tuple; SitlOptionError names the expected form."""
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise SitlOptionError(f"--wind must be three finite numbers N,E,D in m/s, e.g. 3,0,0; got {text!r}")
    return values  # type: ignore[return-value]


def parse_home(text: str | None) -> Home:
    """``"LAT,LON,ALT"`` (degrees, m AMSL; None: the default) → a Home; SitlOptionError names the form."""
    from sitl.firmware_cli import parse_home as parse_lat_lon_alt  # the one parser for both targets

    try:
        place = parse_lat_lon_alt(text)
        return Home() if place is None else Home(*place)
    except ValueError as exc:
        raise SitlOptionError(str(exc)) from None


def parse_params(items: list[str]) -> dict[str, float]:
    """``["NAME=VALUE", ...]`` → a dict; SitlOptionError names the bad item."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not name or not math.isfinite(number):
            raise SitlOptionError(f"--param must look like NAME=NUMBER, e.g. COM_OF_LOSS_T=1.0; got {item!r}")
        out[name.strip().upper()] = number
    return out


def build_vehicle(args: argparse.Namespace, *, clock: Any = time.time) -> Any:
    """The emulated vehicle the options describe (errors are SitlOptionError)."""
    wind = parse_wind(args.wind)
    if not (math.isfinite(args.gust) and args.gust >= 0):
        raise SitlOptionError(f"--gust must be a finite intensity >= 0 m/s, got {args.gust}")
    params = parse_params(args.param)
    key = None
    if args.signing_key is not None:
        try:
            key = bytes.fromhex(args.signing_key)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise SitlOptionError("--signing-key must be 64 hex digits (a 32-byte key)")
        if args.flavor == "custom":
            raise SitlOptionError("--signing-key applies to MAVLink; the custom flavour has no signing")
    home = parse_home(getattr(args, "home", None))
    rng = np.random.default_rng(args.seed)
    if not args.battery_mah > 0:
        raise SitlOptionError(f"--battery-mah must be > 0, got {args.battery_mah}")
    sim = Sim(
        1,
        rng=rng,
        disturbances=Disturbances(wind_ned_m_s=wind, gust_std_m_s=args.gust),
        faults=Faults(battery=Battery(capacity_mah=args.battery_mah)),
    )
    try:
        if args.flavor == "custom":
            return make_custom_vehicle(sim, params=params, ready_delay_s=None)
        return make_vehicle(
            sim,
            args.flavor,
            params=params,
            fast_boot=args.fast_boot,
            sysid=args.sysid,
            signing_key=key,
            signing_epoch_s=clock(),
            home=home,
        )
    except (KeyError, ValueError) as exc:
        raise SitlOptionError(f"{exc.args[0] if exc.args else exc}") from None


def connect_hint(link: Link) -> str:
    """What the agent should open to reach this link."""
    if isinstance(link, PtyLink):
        return f"connect to serial://{link.device_path}"
    if isinstance(link, TcpServerLink):
        host, port = link.local_address
        return (
            f"listening on {link.url}: connect to tcp://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
        )
    if isinstance(link, UdpLink):
        host, port = link.local_address
        return f"on {link.url}: connect to udpout://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
    return f"on {link.url}"


def run(args: argparse.Namespace) -> int:
    """Run the simulator until the duration ends (0) or Ctrl-C (130) / SIGTERM (143); 1 on a bad option."""
    try:
        return int(_run(args))
    except SitlOptionError as exc:
        print(f"edge-agent sitl: error: {exc}", file=sys.stderr)
        return ExitCode.ERROR


def _run(args: argparse.Namespace) -> int:
    if args.firmware is not None:
        from sitl.firmware_cli import run_firmware

        if args.tlog is not None:
            raise SitlOptionError(
                "--tlog records the built-in emulator's link; with --firmware use edge-agent run --tlog"
            )

        return run_firmware(args, parse_params(args.param))
    if args.command:
        raise SitlOptionError(f"a COMMAND ({' '.join(args.command)!r}) runs only beside --firmware")
    vehicle = build_vehicle(args)
    if args.tlog is not None and args.flavor == "custom":
        raise SitlOptionError("--tlog records MAVLink; the custom flavour has no tlog format")
    if not (math.isfinite(args.speed) and args.speed > 0):
        raise SitlOptionError(f"--speed must be > 0 (1 = real time), got {args.speed}")
    try:
        link = open_link(args.link)
    except LinkError as exc:
        raise SitlOptionError(f"cannot open --link {args.link!r}: {exc}") from None
    code = ExitCode.OK
    hint = connect_hint(link)
    tlog = None
    if args.tlog is not None:
        try:
            tlog = TlogWriter(args.tlog)
        except LinkError as exc:
            link.close()
            raise SitlOptionError(str(exc)) from None
        link = tlog.tap(link)
    with link:
        print(f"SITL ({args.flavor}) ready: {hint}", flush=True)
        if args.lockstep:
            runner_l = LockstepRunner(vehicle, link, step_s=DEFAULT_STEP_S)
            stats = runner_l.run_for(args.duration if args.duration is not None else math.inf)
        else:
            runner = RealtimeRunner(vehicle, link, speed=args.speed)

            def _stop(signum: int, _frame: Any) -> None:
                # Both signals stop the runner at its next step (a KeyboardInterrupt raised wherever
                # the main thread happened to be was, under load, sometimes lost inside the runner).
                nonlocal code
                code = ExitCode.SIGTERM if signum == signal.SIGTERM else ExitCode.SIGINT
                runner.stop()

            previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
            try:
                stats = runner.run(duration_s=args.duration)
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)
        if stats is not None:
            print(
                f"SITL ({args.flavor}) stopped: {stats.sim_time_s:.1f} s simulated in {stats.wall_time_s:.1f} s "
                f"(real-time factor {stats.real_time_factor:.2f}), {stats.bytes_in} B in, {stats.bytes_out} B out",
                file=sys.stderr,
                flush=True,
            )
    if tlog is not None:
        tlog.close()
        print(f"SITL ({args.flavor}) tlog: {tlog.frames_written} frames in {tlog.path}", file=sys.stderr)
    return code
