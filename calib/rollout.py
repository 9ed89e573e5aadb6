"""Vectorised shielded episodes: the onboard tick (``edge_agent.agent.AgentCore``) over ``sitl.sim.Sim``.

One call flies a chunk of B episodes side by side. Each control tick (the bundle's rate):
``sim.measure()`` → :class:`StateArrays` (signal ages from latency and dropouts) →
``core.step`` (observation → policy → calibrator → shield: the very objects that fly) →
the certified setpoint as a VELOCITY setpoint → ``sim.step(substeps)``. Failures are judged on
the TRUE state after every tick. An episode ends at mission completion (as the onboard loop
does), at its first failure, or at the scenario's time limit; vehicles whose episode ended keep
being simulated with the batch, but nothing more is recorded for them.

Determinism: episode i's parameters come from (seed, i) (``calib.scenario``), the simulator's
random streams from (seed, vehicle id = i), and the score tick is chosen by a counter-based hash
of (seed, i, tick); so a result depends on (seed, i) only, not on the batch it flew in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from calib.scenario import EpisodeParams, ScenarioSpec, sample_episodes, scenario_mission, sim_rng
from edge_agent.agent import PolicyLike, build_agent
from edge_agent.bundle import Manifest, load_bundle
from edge_agent.errors import ConfigError
from edge_agent.fallback import Stage
from edge_agent.mission import Mission
from edge_agent.observation import StateArrays
from edge_agent.policy import PolicyRunner
from sitl.disturbance import Disturbances, Faults, MeasurementNoise
from sitl.sim import SetpointKind, Sim

F64 = NDArray[np.float64]
B8 = NDArray[np.bool_]

# Failure kinds (bit flags: several can happen on the same tick).
FENCE = 1
"""Horizontally outside the mission's geofence."""
ALTITUDE = 2
"""Below the fence floor or above its ceiling."""
KEEPOUT = 4
"""Inside a keep-out zone."""
GROUND = 8
"""Touched the ground or crashed (the simulator's crash flag)."""
LOSS_OF_CONTROL = 16
"""Tilt beyond LOC_TILT_RAD or speed beyond LOC_SPEED_FACTOR × the mission's horizontal limit."""
FAILURE_NAMES = {
    FENCE: "fence",
    ALTITUDE: "altitude",
    KEEPOUT: "keepout",
    GROUND: "ground",
    LOSS_OF_CONTROL: "loss_of_control",
}

_LAND = int(Stage.LAND)
LOC_TILT_RAD = math.radians(60.0)
LOC_SPEED_FACTOR = 2.0
#: Signal age reported for a signal during a telemetry dropout grows from the last valid sample.
_NEVER_S = 1.0e3

FAILURE_DEFINITIONS = {
    "fence": "true horizontal position outside the mission geofence (signed distance < 0)",
    "altitude": (
        "true altitude below the geofence floor (except while the shield's fallback is landing) or above its ceiling"
    ),
    "keepout": "true position inside any keep-out zone (signed 3-D distance < 0)",
    "ground": (
        "a crash flagged by the simulator (touchdown faster than 3 m/s or tilted > 60 deg), or any ground "
        "contact other than the fallback's landing"
    ),
    "loss_of_control": (
        f"tilt > {math.degrees(LOC_TILT_RAD):.0f} deg or speed > {LOC_SPEED_FACTOR:g} x the mission's "
        f"horizontal speed limit"
    ),
    "checked": "on the true (not measured) state, after every control tick",
    "not_failures": "fallback engagements (reported separately), not completing the mission in time",
}


@dataclass(frozen=True, slots=True)
class EpisodeResults:
    """Per-episode outcomes of a batch (arrays [B])."""

    episode: NDArray[np.int64]
    failed: B8
    failure_kind: NDArray[np.int64]
    """Bit flags (FENCE, ALTITUDE, KEEPOUT, GROUND, LOSS_OF_CONTROL) of the first failing tick."""
    failure_time_s: F64
    """NaN when the episode did not fail."""
    completed: B8
    duration_s: F64
    fallback_engaged: B8
    """The Simplex fallback (layer 3) acted at least once."""
    interventions_watchdog: NDArray[np.int64]
    interventions_barrier: NDArray[np.int64]
    interventions_fallback: NDArray[np.int64]
    ticks: NDArray[np.int64]
    min_fence_m: F64
    """Smallest signed horizontal distance to the fence (positive inside)."""
    min_floor_m: F64
    min_ceiling_m: F64
    min_keepout_m: F64
    """Smallest signed distance to any keep-out zone (inf without zones)."""
    score_m: F64
    """The nonconformity score at one uniformly chosen scored tick (NaN if none was scored)."""
    max_margin_m: F64

    @property
    def n(self) -> int:
        """Number of episodes."""
        return int(self.episode.shape[0])

    @property
    def min_distance_m(self) -> F64:
        """Smallest distance to any constraint [B]."""
        return np.minimum.reduce([self.min_fence_m, self.min_floor_m, self.min_ceiling_m, self.min_keepout_m])

    def to_lists(self) -> dict[str, list[Any]]:
        """JSON-ready columns (inf/NaN as None)."""
        out: dict[str, list[Any]] = {}
        for f in fields(self):
            arr = getattr(self, f.name)
            if arr.dtype.kind == "f":
                out[f.name] = [None if not math.isfinite(x) else x for x in arr.tolist()]
            else:
                out[f.name] = arr.tolist()
        return out

    @classmethod
    def from_lists(cls, data: dict[str, list[object]]) -> EpisodeResults:
        """Inverse of :meth:`to_lists` (None → NaN, or inf for min_keepout_m)."""
        kw = {}
        for f in fields(cls):
            col = data[f.name]
            if f.name in ("failed", "completed", "fallback_engaged"):
                kw[f.name] = np.asarray(col, dtype=bool)
            elif f.name in ("episode", "failure_kind", "ticks") or f.name.startswith("interventions"):
                kw[f.name] = np.asarray(col, dtype=np.int64)
            else:
                fill = math.inf if f.name == "min_keepout_m" else math.nan
                kw[f.name] = np.array([fill if x is None else x for x in col], dtype=np.float64)
        return cls(**kw)

    def select(self, mask: B8) -> EpisodeResults:
        """The episodes where ``mask`` is true."""
        return EpisodeResults(**{f.name: getattr(self, f.name)[mask] for f in fields(self)})

    @staticmethod
    def concat(parts: list[EpisodeResults]) -> EpisodeResults:
        """Join batches and sort by episode index."""
        cols = {f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(EpisodeResults)}
        order = np.argsort(cols["episode"], kind="stable")
        return EpisodeResults(**{k: v[order] for k, v in cols.items()})


@dataclass(frozen=True, slots=True)
class Trace:
    """Per-tick history of a (small) batch for plotting: arrays [T, B, ...]."""

    t_s: F64
    pos_ned_m: F64
    """True positions."""
    meas_pos_ned_m: F64
    setpoint: F64
    layer: NDArray[np.int64]
    margin_m: F64


class SilentAutopilot(Protocol):
    """The autopilot side of an agent-death episode (``experiments.kill_campaign`` implements it)."""

    def send(self, sim: Sim, now_s: float, setpoint5: F64, alive: B8) -> None:
        """Fly this tick: ``setpoint5`` [B, 5] are the companion's velocity setpoints, valid only
        where ``alive``; where the companion is dead the autopilot does what its firmware does."""
        ...


@dataclass(frozen=True, slots=True)
class KillPlan:
    """When each episode's agent dies, and what flies afterwards."""

    tick: NDArray[np.int64]
    """[B] control tick from which the companion sends nothing (the setpoint of tick − 1 was its last)."""
    settle_s: float
    """Seconds flown after the kill before the episode ends (hold time, brake and a steady hold)."""
    autopilot: SilentAutopilot


def _mix64(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64's finaliser: a counter-based hash, so a per-(episode, tick) uniform needs no generator."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _tick_uniform(seed: int, episodes: NDArray[np.int64], tick: int) -> F64:
    with np.errstate(over="ignore"):
        key = _mix64(
            np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
            ^ _mix64(episodes.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        )
        h = _mix64(key + np.uint64(tick) * np.uint64(0xD1B54A32D192ED03))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _build_sim(spec: ScenarioSpec, p: EpisodeParams) -> Sim:
    """The simulator for these episodes: per-vehicle parameters, random streams keyed by episode index."""
    s = spec.sensors
    sim = Sim(
        p.episode.shape[0],
        rng=sim_rng(spec.seed),
        disturbances=Disturbances(
            wind_ned_m_s=p.wind_ned_m_s,
            gust_std_m_s=p.gust_std_m_s,
            gust_time_constant_s=spec.wind.gust_time_constant_s,
            mass_scale=p.mass_scale,
            noise=MeasurementNoise(
                s.pos_noise_std_m, s.vel_noise_std_m_s, s.att_noise_std_rad, s.rates_noise_std_rad_s
            ),
            latency_s=s.latency_s,
        ),
        faults=Faults(
            motor_efficiency=p.motor_efficiency,
            motor_fault_onset_s=p.motor_fault_onset_s,
            dropout_rate_hz=s.dropout_rate_hz,
            dropout_duration_s=s.dropout_duration_s,
        ),
        dt_s=spec.physics_dt_s,
        vehicle_ids=p.episode,
    )
    sim.reset(
        pos_ned_m=p.start_pos_ned_m, vel_ned_m_s=p.start_vel_ned_m_s, yaw_rad=p.start_yaw_rad, on_ground=False
    )
    return sim


def run_episodes(
    policy: PolicyLike,
    manifest: Manifest,
    mission: Mission,
    spec: ScenarioSpec,
    episodes: NDArray[np.int64] | list[int],
    *,
    shield_enabled: bool = True,
    trace: bool = False,
    on_tick: Callable[[int], None] | None = None,
    kill: KillPlan | None = None,
    autopilot_params: Mapping[str, float] | None = None,
) -> tuple[EpisodeResults, Trace | None]:
    """Fly the given episodes side by side through the onboard tick; per-episode results (and a trace).

    ``kill``: agent-death episodes. From ``kill.tick`` on the companion is silent and
    ``kill.autopilot`` flies (its last setpoint, then its failsafe); the episode ends
    ``kill.settle_s`` after the kill or at a failure (mission completion no longer ends it), and
    the fallback's landing exemption is the one in force when the agent died.
    ``autopilot_params``: what the autopilot reported (COM_OF_LOSS_T / GUID_TIMEOUT), as onboard.
    """
    ids = np.asarray(episodes, dtype=np.int64)
    n = int(ids.shape[0])
    if n == 0:
        raise ConfigError("run_episodes needs at least one episode index")
    if kill is not None and kill.tick.shape != (n,):
        raise ConfigError(f"KillPlan.tick must have one tick per episode ({n}), got shape {kill.tick.shape}")
    params = sample_episodes(spec, mission, ids)
    sim = _build_sim(spec, params)
    core = build_agent(
        policy=policy,
        manifest=manifest,
        mission=mission,
        n=n,
        shield_enabled=shield_enabled,
        params=autopilot_params,
    )
    rate = manifest.control_rate_hz
    substeps = round(1.0 / (rate * spec.physics_dt_s))
    if substeps < 1 or abs(substeps * spec.physics_dt_s * rate - 1.0) > 1e-6:
        raise ConfigError(
            f"the bundle's control rate {rate} Hz is not a whole number of physics steps of "
            f"{spec.physics_dt_s} s; set [scenario] physics_dt_s to 1/({rate} × k) for an integer k"
        )
    geo = mission.geometry
    vmax_loc = LOC_SPEED_FACTOR * mission.limits.horizontal_m_s
    cos_tilt = math.cos(LOC_TILT_RAD)
    max_ticks = math.ceil(spec.duration_s * rate - 1e-9)
    latency = spec.sensors.latency_s
    end_tick = np.full(n, max_ticks, dtype=np.int64)
    if kill is not None:
        end_tick = np.minimum(end_tick, kill.tick + math.ceil(kill.settle_s * rate - 1e-9))
        max_ticks = int(end_tick.max())
    landing = np.zeros(n, dtype=bool)

    active = np.ones(n, dtype=bool)
    failed = np.zeros(n, dtype=bool)
    kind = np.zeros(n, dtype=np.int64)
    fail_t = np.full(n, np.nan)
    completed = np.zeros(n, dtype=bool)
    duration = np.full(n, max_ticks / rate)
    fallback = np.zeros(n, dtype=bool)
    iv = np.zeros((n, 3), dtype=np.int64)
    ticks = np.zeros(n, dtype=np.int64)
    mins = np.full((n, 4), np.inf)
    score = np.full(n, np.nan)
    n_scored = np.zeros(n, dtype=np.int64)
    max_margin = np.zeros(n)
    last_valid_s = np.zeros(n)
    link_ok = np.ones(n, dtype=bool)
    sp5 = np.zeros((n, 5))
    sim.set_setpoint(SetpointKind.VELOCITY, sp5)
    tr: dict[str, list[F64]] = {k: [] for k in ("t", "pos", "meas", "sp", "layer", "margin")}

    for k in range(max_ticks):
        t = sim.time_s
        m = sim.measure()
        last_valid_s[m.valid] = t
        age = (t - last_valid_s) + latency
        arrays = StateArrays(
            pos_ned_m=m.pos_ned_m,
            vel_ned_m_s=m.vel_ned_m_s,
            q_wxyz=m.q_wxyz,
            rates_frd_rad_s=m.rates_frd_rad_s,
            battery_frac=m.battery_frac,
            signal_age_s=np.repeat(np.minimum(age, _NEVER_S)[:, None], 4, axis=1),
        )
        d = core.step(arrays, t, link_ok)
        sp5[:, :4] = d.setpoint
        alive = np.ones(n, dtype=bool) if kill is None else k < kill.tick
        if kill is None:
            sim.set_setpoint(SetpointKind.VELOCITY, sp5)
        else:
            kill.autopilot.send(sim, t, sp5, alive)
        sim.step(substeps)

        # Book-keeping for the episodes still running (this tick's decision, then its outcome).
        a = active
        ticks[a] += 1
        lay = d.layer
        iv[a & (lay == 1), 0] += 1
        iv[a & (lay == 2) & d.intervened, 1] += 1
        iv[a & (lay == 3), 2] += 1
        fallback |= a & (lay == 3)
        np.maximum(max_margin, np.where(a, d.margin_m, 0.0), out=max_margin)
        s = d.score_m
        scored = a & np.isfinite(s)
        if scored.any():
            # Reservoir sampling of one scored tick per episode, uniform over its scored ticks.
            n_scored[scored] += 1
            u = _tick_uniform(spec.seed, ids, k)
            take = scored & (u * n_scored < 1.0)
            score[take] = s[take]

        # The fallback's landing descends through the floor to the ground on purpose: that is the
        # recovery, not a breach. A hard touchdown still sets the simulator's crash flag.
        landing = np.where(alive, d.fallback_stage == _LAND, landing)
        pos = sim.pos_ned_m
        fence, _ = geo.fence_distance(pos)
        floor, ceiling = geo.altitude_distances(pos)
        keep = geo.keepout_distance(pos)[0].min(axis=1) if geo.n_zones else np.full(n, np.inf)
        dist = np.column_stack([fence, np.where(landing, np.inf, floor), ceiling, keep])
        mins[a] = np.minimum(mins[a], dist[a])
        q = sim.q_wxyz
        cos_t = 1.0 - 2.0 * (q[:, 1] ** 2 + q[:, 2] ** 2)
        speed = np.sqrt((sim.vel_ned_m_s**2).sum(axis=1))
        f = (
            np.where(fence < 0.0, FENCE, 0)
            | np.where(((floor < 0.0) & ~landing) | (ceiling < 0.0), ALTITUDE, 0)
            | np.where(keep < 0.0, KEEPOUT, 0)
            | np.where(sim.crashed | (sim.on_ground & ~landing), GROUND, 0)
            | np.where((cos_t < cos_tilt) | (speed > vmax_loc), LOSS_OF_CONTROL, 0)
        )
        new_fail = a & (f != 0)
        t_end = sim.time_s
        if new_fail.any():
            failed |= new_fail
            kind[new_fail] = f[new_fail]
            fail_t[new_fail] = t_end
        finished = a & alive & d.mission_complete
        if kill is None:
            done = a & (finished | new_fail)
        else:  # after a kill only a failure or the settle time ends it
            done = a & (new_fail | (k + 1 >= end_tick) | (finished & (k + 1 < kill.tick)))
        completed |= finished
        duration[done] = t_end
        active = a & ~done
        if trace:
            tr["t"].append(np.full(n, t))
            tr["pos"].append(pos.copy())
            tr["meas"].append(m.pos_ned_m.copy())
            tr["sp"].append(d.setpoint.copy())
            tr["layer"].append(lay.astype(np.float64))
            tr["margin"].append(d.margin_m.copy())
        if on_tick is not None:
            on_tick(k)
        if not active.any():
            break

    res = EpisodeResults(
        episode=ids,
        failed=failed,
        failure_kind=kind,
        failure_time_s=fail_t,
        completed=completed,
        duration_s=duration,
        fallback_engaged=fallback,
        interventions_watchdog=iv[:, 0],
        interventions_barrier=iv[:, 1],
        interventions_fallback=iv[:, 2],
        ticks=ticks,
        min_fence_m=mins[:, 0],
        min_floor_m=mins[:, 1],
        min_ceiling_m=mins[:, 2],
        min_keepout_m=mins[:, 3],
        score_m=score,
        max_margin_m=max_margin,
    )
    out_trace = None
    if trace:
        out_trace = Trace(
            t_s=np.stack(tr["t"])[:, 0],
            pos_ned_m=np.stack(tr["pos"]),
            meas_pos_ned_m=np.stack(tr["meas"]),
            setpoint=np.stack(tr["sp"]),
            layer=np.stack(tr["layer"]).astype(np.int64),
            margin_m=np.stack(tr["margin"]),
        )
    return res, out_trace


def failure_names(kind: int) -> list[str]:
    """The names of the failure flags set in ``kind``."""
    return [name for bit, name in FAILURE_NAMES.items() if kind & bit]


class ChunkRunner:
    """Loads a bundle and the scenario's mission once, then flies chunks of episodes.

    The one unit of work of a campaign, locally (``calib.certify``) and in a Ray worker
    (``calib.ray_backend``); it lives here so that neither of those imports the other.
    """

    def __init__(self, bundle_dir: str | Path, spec: ScenarioSpec, *, shield_enabled: bool = True) -> None:
        self.bundle = load_bundle(bundle_dir)
        self.policy = PolicyRunner(self.bundle)
        self.mission = scenario_mission(spec)
        self.spec = spec
        self.shield_enabled = shield_enabled

    def __call__(self, episodes: NDArray[np.int64]) -> EpisodeResults:
        """Fly these episodes side by side."""
        res, _ = run_episodes(
            self.policy,
            self.bundle.manifest,
            self.mission,
            self.spec,
            episodes,
            shield_enabled=self.shield_enabled,
        )
        return res


__all__ = [
    "ALTITUDE",
    "FAILURE_DEFINITIONS",
    "FENCE",
    "GROUND",
    "KEEPOUT",
    "LOSS_OF_CONTROL",
    "ChunkRunner",
    "EpisodeResults",
    "KillPlan",
    "SilentAutopilot",
    "Trace",
    "failure_names",
    "run_episodes",
]
