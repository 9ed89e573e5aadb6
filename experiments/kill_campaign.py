"""Agent-death ("kill") campaign: the companion dies at a random tick; the vehicle must not breach.

The shield certifies every setpoint as safe *even if the agent dies right after sending it*
(docs/shield.md: the distance to stop includes the autopilot's silence behaviour). This campaign
tests that claim in the vectorised SITL: each episode gets a kill tick; from then on the companion
sends nothing, the autopilot keeps the last setpoint for its loss timeout and then runs its own
failsafe, as ``sitl.autopilot.Autopilot`` does for one vehicle:

- PX4 (``PX4_RULES``): the last velocity setpoint flies until ``COM_OF_LOSS_T`` has passed, then
  ``COM_OBL_RC_ACT`` (default Position mode): a POSITION hold at the point where the vehicle is
  when the failsafe fires (``Autopilot._enter`` → ``_hold_here``); the cascade brakes onto it.
- ArduPilot (``ARDUPILOT_RULES``): velocity targets are flown shaped (jerk/acceleration-limited
  ``_Shaper`` tracked with ``GUIDED_KP/KV/KI`` acceleration setpoints) before and after the kill;
  after ``GUID_TIMEOUT`` the target becomes zero (brake) and the tracker holds the point where
  the shaping ends.

Failures are judged exactly as in certification (``calib.rollout``), on the true state, until
``settle_s`` after the kill. Kills land anywhere in ``[kill_min_s, kill_max_s]`` (uniform), which
for the adversary bundle means mostly while it drives at full speed at the fence or a zone.

    python -m experiments.kill_campaign BUNDLE --flavour px4 --kills 1000
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from calib.rollout import EpisodeResults, KillPlan, failure_names, run_episodes
from calib.scenario import ScenarioSpec, load_scenario
from calib.stats import clopper_pearson_upper
from edge_agent.bundle import load_bundle
from edge_agent.errors import ConfigError
from edge_agent.mission import SILENCE_DEFAULTS, Mission, parse_mission, stopping_distance_m
from edge_agent.policy import PolicyRunner
from firmware_bridge.frames import yaw_from_quat
from sitl.autopilot import (
    ARDUPILOT_RULES,
    GUIDED_KI,
    GUIDED_KP,
    GUIDED_KV,
    PX4_RULES,
    Action,
    Rules,
    _Shaper,
)
from sitl.sim import SetpointKind, Sim

F64 = NDArray[np.float64]
B8 = NDArray[np.bool_]

RULES = {"px4": PX4_RULES, "ardupilot": ARDUPILOT_RULES}
#: PX4 loss actions this stand-in flies: all of them hold position in the air.
_HOLDING_ACTIONS = (Action.POSCTL, Action.HOLD, Action.ALTCTL)


def param_default(rules: Rules, name: str) -> float:
    """The firmware's default value of parameter ``name``."""
    for p in rules.params:
        if p.name == name:
            return float(p.default)
    raise ConfigError(f"{rules.name} has no parameter {name!r}")


class BatchAutopilot:
    """The external-setpoint path and setpoint-loss failsafe of ``sitl.autopilot.Autopilot``, for
    B vehicles of one Sim at once (the control tick is the autopilot's logic tick, 50 Hz)."""

    def __init__(self, rules: Rules, n: int, dt_s: float, timeout_s: float | None = None) -> None:
        self.rules = rules
        self.dt_s = dt_s
        self.timeout_s = param_default(rules, rules.loss_timeout_param) if timeout_s is None else timeout_s
        if rules.family == "px4":
            code = int(param_default(rules, rules.loss_action_param)) if rules.loss_action_param else 0
            action = rules.loss_action_codes.get(code, Action.POSCTL)
            if action not in _HOLDING_ACTIONS:
                raise ConfigError(
                    f"the kill campaign flies PX4 loss actions {[a.value for a in _HOLDING_ACTIONS]}, "
                    f"{rules.loss_action_param}={code} is {action.value}; use a holding action"
                )
        self.last_sp5 = np.zeros((n, 5))
        self.last_s = np.zeros(n)
        self.failsafe = np.zeros(n, dtype=bool)
        self.hold_ned_m = np.zeros((n, 3))
        self.hold_yaw_rad = np.zeros(n)
        self._shaper: _Shaper | None = None
        if rules.shape_accel_m_s2 > 0:
            self._shaper = _Shaper(rules.shape_accel_m_s2, rules.shape_jerk_m_s3)
            self._g_pos = np.zeros((n, 3))
            self._g_integ = np.zeros((n, 3))
        self._values = np.zeros((n, 5))
        self._started = False
        self.speed_at_kill_m_s = np.full(n, np.nan)
        """[n] true horizontal speed when the companion fell silent (NaN: never)."""
        self.setpoint_speed_at_kill_m_s = np.full(n, np.nan)
        """[n] horizontal speed of the last setpoint it sent."""

    def _start_tracker(self, sim: Sim) -> None:
        assert self._shaper is not None
        self._shaper.reset(sim.vel_ned_m_s.copy())
        self._shaper.acc_m_s2 = np.zeros_like(self._shaper.vel_m_s)
        self._g_pos = sim.pos_ned_m.copy()
        self._g_integ = np.zeros_like(self._g_pos)

    def send(self, sim: Sim, now_s: float, setpoint5: F64, alive: B8) -> None:
        """Fly one tick (see ``calib.rollout.SilentAutopilot``)."""
        if self._shaper is not None and not self._started:
            self._start_tracker(sim)  # the first guided velocity target starts the tracker
        self._started = True
        self.last_sp5[alive] = setpoint5[alive]
        self.last_s[alive] = now_s
        died = ~alive & np.isnan(self.speed_at_kill_m_s)
        if died.any():
            self.speed_at_kill_m_s[died] = np.hypot(sim.vel_ned_m_s[died, 0], sim.vel_ned_m_s[died, 1])
            self.setpoint_speed_at_kill_m_s[died] = np.hypot(self.last_sp5[died, 0], self.last_sp5[died, 1])
        # Autopilot._check_setpoint_loss: strictly more than the timeout since the last setpoint.
        lost = now_s - self.last_s > self.timeout_s
        if self._shaper is None:
            new = lost & ~self.failsafe
            self.hold_ned_m[new] = sim.pos_ned_m[new]  # _enter → _hold_here
            self.hold_yaw_rad[new] = yaw_from_quat(sim.q_wxyz[new])
            self.failsafe |= new
            vals = self._values
            vals[:] = self.last_sp5
            fs = self.failsafe
            if fs.any():
                vals[fs, :3] = self.hold_ned_m[fs]
                vals[fs, 3] = self.hold_yaw_rad[fs]
                vals[fs, 4] = 0.0
            kinds = np.where(fs, int(SetpointKind.POSITION), int(SetpointKind.VELOCITY))
            sim.set_setpoint(kinds, vals)
            return
        # ArduPilot: shaped tracking of the target; after the timeout the target is zero (brake),
        # and the tracker's own position keeps the point where the shaping ends.
        self.failsafe |= lost
        target = np.where(self.failsafe[:, None], 0.0, self.last_sp5[:, :3])
        yaw_rate = np.where(self.failsafe, 0.0, self.last_sp5[:, 3])
        sh = self._shaper
        v = sh.update(target, self.dt_s)
        self._g_pos = self._g_pos + v * self.dt_s
        err = v + GUIDED_KP * (self._g_pos - sim.pos_ned_m) - sim.vel_ned_m_s
        self._g_integ = self._g_integ + GUIDED_KI * err * self.dt_s
        acc = sh.acc_m_s2 + GUIDED_KV * err + self._g_integ
        vals = self._values
        vals[:, :3] = acc
        vals[:, 3] = yaw_rate
        vals[:, 4] = 0.0
        sim.set_setpoint(SetpointKind.ACCELERATION, vals)


def mission_for_flavour(spec: ScenarioSpec, flavour: str) -> Mission:
    """The scenario's mission flown on ``flavour``'s autopilot with that firmware's default loss
    timeout (the shield is told the same value), its autopilot fence moved out as far as the
    mission's own check asks (the stopping distance at the speed limit)."""
    if flavour not in RULES:
        raise ConfigError(f"--flavour must be one of {sorted(RULES)}, got {flavour!r}")
    rules = RULES[flavour]
    data = copy.deepcopy(tomllib.loads(Path(spec.mission_path).read_text(encoding="utf-8")))
    ap = data.setdefault("autopilot", {})
    ap["flavour"] = flavour
    ap["silence_hold_s"] = param_default(rules, rules.loss_timeout_param)
    ap.pop("brake_decel_m_s2", None)  # the flavour's documented default
    fence = data["geofence"]
    speed = float(data.get("limits", {}).get("horizontal_speed_m_s", 5.0))
    stop = stopping_distance_m(speed, ap["silence_hold_s"], SILENCE_DEFAULTS[flavour][1]) + 1.0
    if "fence" in ap and fence.get("kind", "box") == "box":
        f = ap["fence"]
        f["north_min_m"] = min(f["north_min_m"], fence["north_min_m"] - stop)
        f["north_max_m"] = max(f["north_max_m"], fence["north_max_m"] + stop)
        f["east_min_m"] = min(f["east_min_m"], fence["east_min_m"] - stop)
        f["east_max_m"] = max(f["east_max_m"], fence["east_max_m"] + stop)
    return parse_mission(data)


@dataclass(frozen=True, slots=True)
class KillReport:
    """Outcome of a kill campaign."""

    flavour: str
    episodes: int
    kills: int
    """Episodes whose agent died before the episode ended (the counted trials)."""
    kill_failures: int
    """Killed episodes that failed at or after the kill tick."""
    pre_kill_failures: int
    """Episodes that failed while the agent was still alive (a shielded failure, not a kill's)."""
    epsilon: float
    """One-sided Clopper–Pearson bound on the per-kill failure probability at confidence 1 − β."""
    beta: float
    failure_kinds: dict[str, int]
    min_distance_after_kill_m: float
    """Smallest distance to any constraint over the killed episodes (whole episode)."""
    fast_kills: int
    """Kills while the vehicle flew at >= 60 % of the mission's horizontal speed limit."""
    max_speed_at_kill_m_s: float
    median_speed_at_kill_m_s: float
    wall_s: float


def run_kill_campaign(
    bundle_dir: str | Path,
    spec: ScenarioSpec,
    flavour: str,
    n_kills: int,
    rng: np.random.Generator,
    *,
    beta: float = 1e-3,
    kill_window_s: tuple[float, float] = (0.2, 8.0),
    settle_s: float | None = None,
    batch: int = 1024,
    first_episode: int = 0,
    shield_enabled: bool = True,
) -> tuple[KillReport, EpisodeResults, NDArray[np.int64]]:
    """Fly ``n_kills`` episodes, each with its agent killed at a uniformly drawn tick; count breaches.

    Returns the report, every episode's results and the kill ticks.
    """
    if n_kills < 1:
        raise ConfigError(f"--kills must be at least 1, got {n_kills}")
    lo, hi = kill_window_s
    if not (0.0 <= lo <= hi):
        raise ConfigError(f"kill window must be 0 <= lo <= hi seconds, got {kill_window_s}")
    t0 = time.perf_counter()
    mission = mission_for_flavour(spec, flavour)  # refuses an unknown flavour
    rules = RULES[flavour]
    timeout = param_default(rules, rules.loss_timeout_param)
    if settle_s is None:
        settle_s = timeout + 10.0  # hold, then braking and a steady hold with room to spare
    if hi + settle_s > spec.duration_s:
        raise ConfigError(
            f"kill window end {hi} s + settle {settle_s} s exceeds the scenario's duration_s "
            f"{spec.duration_s} s; shorten the window or lengthen the scenario"
        )
    bundle = load_bundle(bundle_dir)
    policy = PolicyRunner(bundle)
    rate = bundle.manifest.control_rate_hz
    ids = np.arange(first_episode, first_episode + n_kills, dtype=np.int64)
    ticks = np.round(rng.uniform(lo, hi, n_kills) * rate).astype(np.int64)
    parts = []
    speed_at_kill = []
    for s in range(0, n_kills, batch):
        sl = slice(s, min(s + batch, n_kills))
        n = sl.stop - sl.start
        ap = BatchAutopilot(rules, n, 1.0 / rate, timeout)
        res, _ = run_episodes(
            policy,
            bundle.manifest,
            mission,
            spec,
            ids[sl],
            shield_enabled=shield_enabled,
            kill=KillPlan(tick=ticks[sl], settle_s=settle_s, autopilot=ap),
            autopilot_params={rules.loss_timeout_param: timeout},
        )
        parts.append(res)
        speed_at_kill.append(ap.speed_at_kill_m_s)
    res = EpisodeResults.concat(parts)
    killed = res.ticks > ticks  # the kill tick was flown
    # A failure is judged after tick j at time (j + 1)/rate; ticks j >= the kill tick were not commanded.
    judged_after = np.where(res.failed, np.round(res.failure_time_s * rate) - 1, np.inf)
    after = res.failed & (judged_after >= ticks)
    kill_fail = killed & after
    pre = res.failed & ~after
    kinds: dict[str, int] = {}
    for i in np.flatnonzero(kill_fail):
        for name in failure_names(int(res.failure_kind[i])):
            kinds[name] = kinds.get(name, 0) + 1
    k, n_k = int(kill_fail.sum()), int(killed.sum())
    spd = np.concatenate(speed_at_kill)[np.argsort(ids, kind="stable")][killed]
    fast = int((spd >= 0.6 * mission.limits.horizontal_m_s).sum())
    report = KillReport(
        flavour=flavour,
        episodes=n_kills,
        kills=n_k,
        kill_failures=k,
        pre_kill_failures=int(pre.sum()),
        epsilon=clopper_pearson_upper(k, n_k, beta) if n_k else 1.0,
        beta=beta,
        failure_kinds=kinds,
        min_distance_after_kill_m=float(res.min_distance_m[killed].min()) if n_k else math.nan,
        fast_kills=fast,
        max_speed_at_kill_m_s=float(spd.max()) if n_k else math.nan,
        median_speed_at_kill_m_s=float(np.median(spd)) if n_k else math.nan,
        wall_s=time.perf_counter() - t0,
    )
    return report, res, ticks


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run a kill campaign and print the counts and the bound."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bundle", type=Path, help="bundle folder (the adversary is the hard case)")
    parser.add_argument("--scenarios", type=Path, default=Path("examples/scenarios/demo.toml"))
    parser.add_argument("--flavour", choices=sorted(RULES), default="px4")
    parser.add_argument("--kills", type=int, default=1000, help="episodes, one kill each")
    parser.add_argument("--beta", type=float, default=1e-3, help="confidence 1 − β for the bound")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill-tick draws")
    parser.add_argument("--kill-window", type=float, nargs=2, default=(0.2, 8.0), metavar=("LO_S", "HI_S"))
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--no-shield", action="store_true", help="the same kills without the shield")
    args = parser.parse_args(argv)
    try:
        spec = load_scenario(args.scenarios)
        report, res, ticks = run_kill_campaign(
            args.bundle,
            spec,
            args.flavour,
            args.kills,
            np.random.default_rng(args.seed),
            beta=args.beta,
            kill_window_s=tuple(args.kill_window),
            batch=args.batch,
            shield_enabled=not args.no_shield,
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"flavour {report.flavour}: {report.kills} kills in {report.episodes} episodes; "
        f"breaches after the kill k = {report.kill_failures} {report.failure_kinds}; "
        f"failures before the kill {report.pre_kill_failures}; "
        f"epsilon(k, N, beta={report.beta:g}) = {report.epsilon:.3e}; "
        f"min distance over killed episodes {report.min_distance_after_kill_m:.3f} m; "
        f"speed at the kill: median {report.median_speed_at_kill_m_s:.2f} m/s, max "
        f"{report.max_speed_at_kill_m_s:.2f} m/s, {report.fast_kills} kills at >= 60 % of the limit; "
        f"wall {report.wall_s:.0f} s"
    )
    for i in np.flatnonzero(res.failed)[:20]:
        print(
            f"  episode {int(res.episode[i])}: {','.join(failure_names(int(res.failure_kind[i])))} at "
            f"{res.failure_time_s[i]:.2f} s, kill tick {int(ticks[i])}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
