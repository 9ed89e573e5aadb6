"""The agent killed in flight over real PX4 / ArduCopter SITL: does the vehicle stop outside?

    python -m experiments.firmware_kill --firmware px4 --kills 50 --bundles out/bundles --out out/kills_px4.json

The shield certifies a command only if the vehicle stays inside even when the agent dies right
after sending it, assuming the autopilot's documented silence behaviour (PX4: keep the last
setpoint for COM_OF_LOSS_T, then its failsafe brakes; ArduCopter: keep the last velocity for
GUID_TIMEOUT, then brake). ``experiments.kill_campaign`` checks that on our emulator; this checks it on
the firmware itself. One firmware vehicle serves the whole campaign: each trial starts
``edge-agent run`` inside the firmware's namespace (alternately the adversary, which steers at
the keep-outs and the fence at full speed, and the goal seeker), waits until it flies the policy,
SIGKILLs it after a random delay, and measures from the firmware's own telemetry on a second
link what the vehicle did next: closest approach to every constraint, distance travelled, when it
stopped and in which mode. The next trial takes the vehicle over where it is (in the air).

The result: k breaches in N kills, the one-sided Clopper-Pearson bound, and the silence model
against what the firmware did (the hold time it assumed vs the time to the firmware's mode
change or stop; the distance it allowed vs the distance flown).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calib.stats import clopper_pearson_upper
from edge_agent.flightlog import FlightLogError, read_log
from edge_agent.mission import FAILSAFE_DELAY_S, Mission, load_mission
from sitl.firmware import FirmwareSitl
from sitl.firmware_observer import Observer, Track

REPO = Path(__file__).resolve().parents[1]
MISSIONS = {
    "px4": REPO / "examples/missions/demo.toml",
    "ardupilot": REPO / "examples/missions/demo_ardupilot.toml",
}


@dataclass
class Kill:
    """One trial: the state when the agent died, and what the firmware did next."""

    trial: int
    bundle: str
    delay_s: float
    speed_at_kill_m_s: float
    travel_m: float
    """Horizontal distance from the kill to where the vehicle stopped (or the watch ended)."""
    stop_s: float
    """Seconds from the kill until the horizontal speed stayed below 0.3 m/s (NaN: never)."""
    model_travel_m: float
    """What the shield's silence model allows: v·T_hold + v²/(2·a_brake), v the faster of the speed
    at the kill and the last setpoint (the vehicle tracks that one for T_hold)."""
    mode_change_s: float
    """Seconds from the kill to the firmware's first mode change (NaN: none seen)."""
    closest_m: dict[str, float]
    """Closest approach to each constraint from the kill to the end of the watch (negative = breach)."""
    breached: bool
    note: str = ""


def distances(mission: Mission, pos: np.ndarray) -> dict[str, float]:
    """Closest approach to the fence, the ceiling and the keep-outs over ``pos`` [N, 3]."""
    geo = mission.geometry
    if not len(pos):
        return {}
    out = {
        "fence": float(geo.fence_distance(pos)[0].min()),
        "ceiling": float(geo.altitude_distances(pos)[1].min()),
    }
    if geo.n_zones:
        out["keep-out"] = float(geo.keepout_distance(pos)[0].min())
    return out


def _activated(log: Path) -> bool:
    try:
        return any(r.get("k") == "event" and r.get("name") == "activated" for r in read_log(log))
    except (FlightLogError, OSError):
        return False


_STARTS_NE_M = ((-15.0, -15.0), (-15.0, 10.0), (10.0, -15.0), (0.0, -10.0), (-10.0, 0.0), (-20.0, 20.0))
"""Where trials start: clear of the demo's fence bands and zones, so each kill can come at speed (a
vehicle the adversary left in a margin band cannot leave it under the shield: every command there
is uncertifiable while noise says it approaches, so the next agent's fallback would land it)."""


def reposition(observer: Observer, target_ned_m: tuple[float, float, float], timeout_s: float = 30.0) -> bool:
    """Fly the vehicle to ``target_ned_m`` through the autopilot itself (position setpoints on the
    second link, PX4 OFFBOARD / ArduCopter GUIDED) between trials; True when it got there."""
    v = observer.vehicle
    mav = observer.mav
    mode = (1, 6) if v.kind == "px4" else (1, 4)  # PX4 main mode OFFBOARD; ArduCopter GUIDED
    start = time.monotonic()
    near_since: float | None = None
    next_mode = start + 0.5
    while time.monotonic() - start < timeout_s:
        observer.send(
            mav.set_position_target_local_ned_encode(
                0, v.sysid, 1, 1, 3576, *target_ned_m, 0, 0, 0, 0, 0, 0, 0, 0
            )
        )
        if time.monotonic() >= next_mode:
            observer.send(
                mav.command_long_encode(v.sysid, 1, 176, 0, float(mode[0]), float(mode[1]), 0, 0, 0, 0, 0)
            )
            next_mode = time.monotonic() + 1.0
        pos = observer.track.positions(time.time() - 0.3)
        if len(pos) and np.linalg.norm(pos[-1] - np.asarray(target_ned_m)) < 1.5:
            near_since = near_since or time.monotonic()
            if time.monotonic() - near_since > 1.0:
                return True
        else:
            near_since = None
        time.sleep(0.1)
    return False


def _last_setpoint_speed(log: Path) -> float:
    """Horizontal speed of the last setpoint the agent logged (NaN if none)."""
    last = math.nan
    try:
        for r in read_log(log):
            if r.get("k") == "tick":
                sp = r["setpoint"]
                last = math.hypot(sp[0], sp[1])
    except (FlightLogError, OSError, KeyError):
        pass
    return last


def one_kill(
    fw: FirmwareSitl,
    observer: Observer,
    mission: Mission,
    bundle: Path,
    trial: int,
    delay_s: float,
    workdir: Path,
    *,
    hold_s: float,
    brake_m_s2: float,
    watch_s: float,
) -> Kill:
    """Start the agent, let the policy fly ``delay_s``, SIGKILL it, watch ``watch_s``."""
    vehicle = fw.vehicles[0]
    log = workdir / f"kill{trial:03d}.eal"
    with (
        open(workdir / f"kill{trial:03d}.out", "wb") as out,
        open(workdir / f"kill{trial:03d}.err", "wb") as err,
    ):
        proc = fw.popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "--bundle", str(bundle), "--mission",
             str(MISSIONS[vehicle.kind]), "--link", vehicle.link_url, "--log", str(log),
             "--max-duration", str(delay_s + 60)],
            cwd=REPO, stdout=out, stderr=err,
        )  # fmt: skip
    deadline = time.monotonic() + 150.0
    while not _activated(log):
        if proc.poll() is not None or time.monotonic() > deadline:
            fw.ns.stop(proc)  # type: ignore[union-attr]
            said = (workdir / f"kill{trial:03d}.err").read_text(errors="replace")[-500:]
            return Kill(trial, bundle.name, delay_s, math.nan, math.nan, math.nan, math.nan, math.nan, {}, False,
                        note=f"the agent never flew the policy: {said.strip()}")  # fmt: skip
        time.sleep(0.1)
    time.sleep(delay_s)
    if proc.poll() is not None:
        return Kill(trial, bundle.name, delay_s, math.nan, math.nan, math.nan, math.nan, math.nan, {}, False,
                    note=f"the agent ended by itself (exit {proc.returncode}) before the kill")  # fmt: skip
    kill_t = time.time()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    modes_before = [m for m in observer.track.modes if m[0] <= kill_t]
    time.sleep(watch_s)
    track: Track = observer.track
    vel = track.velocities(kill_t - 0.3, kill_t)
    speed0 = float(np.hypot(vel[-1, 0], vel[-1, 1])) if len(vel) else math.nan
    t_all = np.asarray(track.t_s)
    window = (t_all >= kill_t) & (t_all <= kill_t + watch_s)
    t_after = t_all[window]
    pos = np.asarray(track.pos_ned_m[: len(t_all)], dtype=float).reshape(-1, 3)[window]
    v_after = np.asarray(track.vel_ned_m_s[: len(t_all)], dtype=float).reshape(-1, 3)[window]
    speed = np.hypot(v_after[:, 0], v_after[:, 1]) if len(v_after) else np.zeros(0)
    stop_s = math.nan
    for i in range(len(speed)):  # the first moment after which it stays below 0.3 m/s for 1 s
        window = (t_after >= t_after[i]) & (t_after <= t_after[i] + 1.0)
        if t_after[-1] >= t_after[i] + 1.0 and (speed[window] < 0.3).all():
            stop_s = float(t_after[i] - kill_t)
            break
    stop_i = len(pos) - 1 if math.isnan(stop_s) else int(np.searchsorted(t_after, kill_t + stop_s))
    travel = float(np.hypot(*(pos[min(stop_i, len(pos) - 1), :2] - pos[0, :2]))) if len(pos) else math.nan
    mode0 = modes_before[-1][1] if modes_before else None
    changes = [m[0] - kill_t for m in track.modes if m[0] > kill_t and m[1] != mode0]
    close = distances(mission, pos)
    before = distances(mission, track.positions(kill_t - 0.3, kill_t))
    inside_already = [n for n, d in before.items() if d < 0]
    # The silence model: the last setpoint kept for T (the vehicle keeps accelerating toward it:
    # ArduCopter went 3.6 -> 5.0 m/s after a kill), then a brake. Bound it with the faster of the
    # speed and the last command the log kept (a kill -9 loses at most its last 0.1 s).
    u = _last_setpoint_speed(log)
    v = max(speed0, u) if math.isfinite(u) else speed0
    return Kill(
        trial,
        bundle.name,
        delay_s,
        speed0,
        travel,
        stop_s,
        v * hold_s + v**2 / (2 * brake_m_s2),
        float(changes[0]) if changes else math.nan,
        close,
        any(d < 0 for n, d in close.items() if n not in inside_already),
        note=""
        if not inside_already
        else f"already inside {', '.join(inside_already)} at the kill (not counted)",
    )


def campaign(
    kind: str,
    kills: int,
    bundles: Path,
    out: Path,
    seed: int,
    watch_s: float,
    boot_speedup: float | None = None,
    params: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Run ``kills`` trials on one real ``kind`` vehicle; the JSON-able result. ``boot_speedup``:
    ArduCopter boots that much faster, then flies in real time (sitl.firmware.FirmwareSitl);
    ``params`` are set at boot."""
    rng = np.random.default_rng(seed)
    mission = load_mission(MISSIONS[kind])
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir = out.parent / f"{out.stem}_work"
    workdir.mkdir(exist_ok=True)
    results: list[Kill] = []
    with FirmwareSitl(kind, workdir=workdir / "fw", boot_speedup=boot_speedup, params=params) as fw:
        observer = Observer(fw, fw.vehicles[0])
        # What the shield assumes: the last setpoint kept for the timeout plus the failsafe's delay.
        hold_s = mission.autopilot.silence_hold_s + FAILSAFE_DELAY_S[mission.autopilot.flavour]
        for trial in range(kills):
            bundle = bundles / ("adversary" if trial % 2 == 0 else "goal_seeker")
            # The adversary is at full speed toward a zone or the fence in its first seconds (later the
            # shield has it parked at a band); the goal seeker anywhere along its route.
            delay = float(rng.uniform(0.5, 5.0) if trial % 2 == 0 else rng.uniform(1.0, 10.0))
            pos = observer.track.positions(time.time() - 1.0)
            if trial and len(pos) and -pos[-1, 2] > 3.0:  # airborne: start from somewhere clear
                start_ne = _STARTS_NE_M[int(rng.integers(len(_STARTS_NE_M)))]
                reposition(observer, (start_ne[0], start_ne[1], -10.0))
            k = one_kill(fw, observer, mission, bundle, trial, delay, workdir,
                         hold_s=hold_s, brake_m_s2=mission.autopilot.brake_decel_m_s2, watch_s=watch_s)  # fmt: skip
            results.append(k)
            close = ", ".join(f"{n} {d:.2f} m" for n, d in k.closest_m.items())
            print(
                f"[{kind} {trial + 1}/{kills}] {k.bundle} killed after {k.delay_s:.1f} s at {k.speed_at_kill_m_s:.2f} m/s: "
                f"travelled {k.travel_m:.2f} m (model allows {k.model_travel_m:.2f}), stopped after {k.stop_s:.1f} s, "
                f"mode change after {k.mode_change_s:.2f} s; closest {close}"
                + (f" [{k.note}]" if k.note else "")
                + (" BREACH" if k.breached else ""),
                flush=True,
            )
        observer.stop()
    flown = [k for k in results if not k.note]
    n, failures = len(flown), sum(k.breached for k in flown)
    beta = 0.05
    summary = {
        "firmware": kind,
        "params": dict(params or {}),
        "mission": str(MISSIONS[kind]),
        "kills": n,
        "not_counted": len(results) - n,
        "breaches": failures,
        "beta": beta,
        "epsilon": clopper_pearson_upper(failures, n, beta) if n else math.nan,
        "closest_m": {
            c: min(k.closest_m.get(c, math.inf) for k in flown) for c in ("fence", "ceiling", "keep-out")
        }
        if flown
        else {},
        "silence_model": {"hold_s": hold_s, "brake_decel_m_s2": mission.autopilot.brake_decel_m_s2},
        "travel_over_model": [k.travel_m / k.model_travel_m for k in flown if k.model_travel_m > 0.5],
        "mode_change_s": [k.mode_change_s for k in flown],
        "stop_s": [k.stop_s for k in flown],
        "trials": [asdict(k) for k in results],
    }
    out.write_text(json.dumps(summary, indent=1, default=float))
    return summary


def plot(results: list[Path], png: Path) -> None:
    """Measured travel after each kill against what the silence model allows, per firmware, and the
    closest approach after each kill."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.6))
    top = 1.0
    for path, colour in zip(results, ("tab:blue", "tab:orange", "tab:green"), strict=False):
        s = json.loads(path.read_text())
        trials = [t for t in s["trials"] if not t["note"]]
        model = np.array([t["model_travel_m"] for t in trials])
        travel = np.array([t["travel_m"] for t in trials])
        close = np.array(
            [min(t["closest_m"].get("fence", np.inf), t["closest_m"].get("keep-out", np.inf)) for t in trials]
        )
        speed = np.array([t["speed_at_kill_m_s"] for t in trials])
        setting = " ".join(f"{k}={v:g}" for k, v in s.get("params", {}).items())
        label = (
            f"{s['firmware']}{' ' + setting if setting else ''}: {s['breaches']} breaches in {s['kills']} kills, "
            f"ε ≤ {s['epsilon']:.3f} (β {s['beta']})"
        )
        ax.scatter(model, travel, s=14, color=colour, label=label)
        bx.scatter(speed, close, s=14, color=colour, label=f"{s['firmware']} {setting}".strip())
        top = max(top, float(np.nanmax(model)), float(np.nanmax(travel)))
    ax.plot([0, top], [0, top], color="grey", lw=1, ls="--", label="travel = what the model allows")
    ax.set_xlabel("silence model allows (m): v·T_hold + v²/(2·a_brake)")
    ax.set_ylabel("travelled after the kill (m, firmware telemetry)")
    ax.set_title("the agent SIGKILLed in flight: real firmware")
    ax.legend(fontsize=7, loc="upper left")
    bx.axhline(0.0, color="red", lw=1)
    bx.set_xlabel("speed at the kill (m/s)")
    bx.set_ylabel("closest approach after the kill (m; fence or keep-out)")
    bx.set_title("0 = a breach; the margins are 1 m")
    bx.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--firmware", choices=("px4", "ardupilot"))
    p.add_argument(
        "--plot", type=Path, nargs="+", default=None, metavar="JSON", help="draw these results, fly nothing"
    )
    p.add_argument("--png", type=Path, default=Path("docs/figures/firmware_kills.png"), help="with --plot")
    p.add_argument("--kills", type=int, default=50)
    p.add_argument(
        "--bundles",
        type=Path,
        help="folder with adversary/ and goal_seeker/ (examples.scripted_policies)",
    )
    p.add_argument("--out", type=Path, help="JSON result (the flight logs go beside it)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--watch", type=float, default=10.0, help="seconds watched after each kill (default 10)")
    p.add_argument(
        "--boot-speedup", type=float, default=None, help="ArduCopter: boot this much faster, fly at 1x"
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="firmware parameter at boot (repeatable)",
    )
    args = p.parse_args(argv)
    if args.plot:
        plot(args.plot, args.png)
        print(f"figure: {args.png}")
        return 0
    if args.firmware is None or args.bundles is None or args.out is None:
        p.error("--firmware, --bundles and --out are required (or --plot JSON...)")
    if args.kills < 1:
        p.error(f"--kills must be >= 1, got {args.kills}")
    params = {k.strip().upper(): float(v) for k, _, v in (item.partition("=") for item in args.param)}
    s = campaign(
        args.firmware, args.kills, args.bundles, args.out, args.seed, args.watch, args.boot_speedup, params
    )
    ratio = np.asarray(s["travel_over_model"])
    print(
        f"{args.firmware}: {s['breaches']} breaches in {s['kills']} kills ({s['not_counted']} not counted): "
        f"ε ≤ {s['epsilon']:.4f} at β = {s['beta']}; closest {s['closest_m']}; travel / model "
        + (f"max {ratio.max():.2f}, median {np.median(ratio):.2f}" if ratio.size else "n/a")
    )
    return 0 if s["breaches"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
