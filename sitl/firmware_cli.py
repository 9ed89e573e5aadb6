"""``edge-agent sitl --firmware px4|ardupilot``: the real autopilot firmware, confined to loopback.

    edge-agent sitl --firmware px4 --param COM_OBL_RC_ACT=5 -- edge-agent run --bundle B --mission M --link udpin://127.0.0.1:14540
    edge-agent sitl --firmware ardupilot --speedup 1 --vehicles 2      # then join with nsenter

Starts the firmware in a private network namespace (it binds every interface), waits for each
vehicle's first HEARTBEAT, prints the links and how to join, then either runs COMMAND inside the
namespace and exits with its code, or waits for Ctrl-C / SIGTERM / ``--duration``. Every process
it started and the namespace are gone when it returns.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import subprocess
import sys
import time
from types import FrameType

from firmware_bridge.exitcodes import ExitCode
from sitl.firmware import FirmwareError, FirmwareSitl, FirmwareUnavailable


def parse_home(text: str | None) -> tuple[float, float, float] | None:
    """``"LAT,LON,ALT"`` → a tuple (ValueError names the form)."""
    if text is None:
        return None
    try:
        lat, lon, alt = (float(p) for p in text.split(","))
    except ValueError:
        raise ValueError(
            f"--home must be LAT,LON,ALT_AMSL_M, e.g. 47.397742,8.545594,488; got {text!r}"
        ) from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180 and math.isfinite(alt)):
        raise ValueError(f"--home {text!r} is not a place on Earth (lat -90..90, lon -180..180)")
    return lat, lon, alt


def run_firmware(args: argparse.Namespace, params: dict[str, float]) -> int:
    """Run the real firmware; COMMAND's exit status, else 0 (docs/safety.md's exit-code table: 1 when
    an option is wrong or the firmware cannot run here, 130/143 on a signal)."""
    command = [a for a in (args.command or []) if a != "--"] if args.command else []
    try:
        home = parse_home(args.home)
        if not (isinstance(args.vehicles, int) and args.vehicles >= 1):
            raise ValueError(f"--vehicles must be >= 1, got {args.vehicles}")
        fw = FirmwareSitl(
            args.firmware,
            n=args.vehicles,
            firmware_dir=args.firmware_dir,
            workdir=args.workdir,
            params=params,
            speedup=args.speedup,
            boot_speedup=args.boot_speedup,
            home=home,
        )
    except (ValueError, FirmwareUnavailable) as exc:
        return _refuse(args.firmware, exc)
    stop: dict[str, int | None] = {"signal": None}

    def _stop(signum: int, _frame: FrameType | None) -> None:
        stop["signal"] = signum

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            fw.start()
        except (FirmwareUnavailable, FirmwareError) as exc:
            return _refuse(args.firmware, exc)
        name = "PX4 SITL (SIH)" if args.firmware == "px4" else "ArduCopter SITL"
        for v in fw.vehicles:
            print(
                f"{name} vehicle {v.instance} (sysid {v.sysid}) ready: agent link {v.link_url}, "
                f"second link {v.observer_url}; workdir {v.workdir}",
                flush=True,
            )
        print(
            f"the firmware binds every interface, so it runs in a private network namespace; join it with: "
            f"{fw.join_hint()}",
            flush=True,
        )
        if command:
            proc = fw.popen(command)
            while proc.poll() is None and stop["signal"] is None:
                time.sleep(0.1)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=15)
            return proc.returncode if proc.returncode is not None else ExitCode.SIGINT
        deadline = math.inf if args.duration is None else time.monotonic() + args.duration
        while stop["signal"] is None and time.monotonic() < deadline:
            dead = [v for v in fw.vehicles if v.proc.poll() is not None]
            if dead:
                v = dead[0]
                print(
                    f"edge-agent sitl: {name} vehicle {v.instance} exited with code {v.proc.returncode}:\n"
                    f"{v.log_tail()}",
                    file=sys.stderr,
                )
                return ExitCode.ERROR
            time.sleep(0.2)
        if stop["signal"] is not None:
            return ExitCode.SIGTERM if stop["signal"] == signal.SIGTERM else ExitCode.SIGINT
        return ExitCode.OK
    finally:
        fw.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
        print(f"{args.firmware} firmware stopped; namespace removed", file=sys.stderr, flush=True)


def _refuse(kind: str, exc: Exception) -> int:
    what = "error" if isinstance(exc, ValueError) else f"cannot run the {kind} firmware"
    print(f"edge-agent sitl: {what}: {exc}", file=sys.stderr)
    return ExitCode.ERROR
