"""Gymnasium environments over the simulator: fly through waypoints inside a geofence with keep-out zones.

``WaypointEnv`` is one vehicle; ``WaypointVecEnv`` is n vehicles in one ``Sim`` with same-step
auto-reset. Both share ``WaypointTask`` (the batched task logic), so a shielded rollout in
``calib`` can drive the same layouts and reward/cost through ``env.task``, ``env.sim`` and
``env.layout``.

Observations are built with ``firmware_bridge.features.build_observation`` from the feature
names given at construction, exactly as the onboard runtime builds them. Actions are
Box[-1, 1]^4 unscaled to a velocity NED + yaw-rate setpoint between ``action_low`` and
``action_high``; the policy runs at ``control_rate_hz`` with physics substeps in between.
``info["cost"]`` is 1 for a step that ends inside a keep-out, outside the fence or outside the
altitude band, 0 otherwise (for constrained RL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space
from numpy.typing import NDArray

from firmware_bridge.features import VOCABULARY, FeatureInputs, build_observation, observation_size
from sitl.disturbance import Disturbances, Faults
from sitl.sim import SetpointKind, Sim

F64 = NDArray[np.float64]
BoolArr = NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class KeepOut:
    """A keep-out zone: a vertical cylinder of unlimited height."""

    north_m: float
    east_m: float
    radius_m: float


@dataclass(frozen=True, slots=True)
class Geometry:
    """Distances of each vehicle to the layout's boundaries, [B] or [B, 3]; positive = inside/clear."""

    fence_dist_m: F64
    alt_floor_dist_m: F64
    alt_ceiling_dist_m: F64
    keepout_rel_ned_m: F64
    """From the vehicle to the nearest point on the nearest keep-out's surface (horizontal)."""
    keepout_dist_m: F64
    """Distance to the nearest keep-out surface, negative inside."""

    @property
    def violation_m(self) -> F64:
        """[B] depth of the worst breach (0 when everything is respected)."""
        worst = np.minimum(
            np.minimum(self.fence_dist_m, self.keepout_dist_m),
            np.minimum(self.alt_floor_dist_m, self.alt_ceiling_dist_m),
        )
        return np.maximum(-worst, 0.0)


@dataclass(frozen=True, slots=True)
class Layout:
    """A box geofence (NED, around the origin), an altitude band above the ground and keep-out cylinders."""

    north_m: tuple[float, float] = (-20.0, 20.0)
    east_m: tuple[float, float] = (-20.0, 20.0)
    alt_floor_m: float = 2.0
    alt_ceiling_m: float = 20.0
    keepouts: tuple[KeepOut, ...] = (KeepOut(6.0, 6.0, 3.0), KeepOut(-7.0, -5.0, 2.5))

    def __post_init__(self) -> None:
        if self.north_m[0] >= self.north_m[1] or self.east_m[0] >= self.east_m[1]:
            raise ValueError(
                f"Layout fence must have min < max, got north {self.north_m}, east {self.east_m}"
            )
        if not 0.0 <= self.alt_floor_m < self.alt_ceiling_m:
            raise ValueError(
                f"Layout needs 0 <= alt_floor_m < alt_ceiling_m, got {self.alt_floor_m} and {self.alt_ceiling_m}"
            )

    def geometry(self, pos_ned_m: F64) -> Geometry:
        """Distances from positions [B, 3] to the fence, the altitude band and the nearest keep-out."""
        n, e, alt = pos_ned_m[:, 0], pos_ned_m[:, 1], -pos_ned_m[:, 2]
        fence = np.minimum(
            np.minimum(n - self.north_m[0], self.north_m[1] - n),
            np.minimum(e - self.east_m[0], self.east_m[1] - e),
        )
        b = pos_ned_m.shape[0]
        rel = np.zeros((b, 3))
        dist = np.full(b, np.inf)
        for k in self.keepouts:
            dn, de = n - k.north_m, e - k.east_m
            r = np.sqrt(dn * dn + de * de)
            d = r - k.radius_m
            # Nearest surface point minus the vehicle: (p - c)·(radius/r - 1); at the centre pick north.
            s = np.where(r > 1e-9, k.radius_m / np.maximum(r, 1e-9) - 1.0, 0.0)
            rn = np.where(r > 1e-9, dn * s, k.radius_m)
            closer = d < dist
            dist = np.where(closer, d, dist)
            rel[:, 0] = np.where(closer, rn, rel[:, 0])
            rel[:, 1] = np.where(closer, de * s, rel[:, 1])
        dist = np.where(np.isfinite(dist), dist, 1e3)
        return Geometry(
            fence_dist_m=fence,
            alt_floor_dist_m=alt - self.alt_floor_m,
            alt_ceiling_dist_m=self.alt_ceiling_m - alt,
            keepout_rel_ned_m=rel,
            keepout_dist_m=dist,
        )

    def sample_points(self, rng: np.random.Generator, count: int, margin_m: float) -> F64:
        """[count, 3] random NED points at least margin_m inside every boundary (rejection sampling)."""
        out = np.zeros((count, 3))
        filled = 0
        for _ in range(1000):
            cand = np.column_stack(
                [
                    rng.uniform(self.north_m[0] + margin_m, self.north_m[1] - margin_m, count),
                    rng.uniform(self.east_m[0] + margin_m, self.east_m[1] - margin_m, count),
                    -rng.uniform(self.alt_floor_m + margin_m, self.alt_ceiling_m - margin_m, count),
                ]
            )
            ok = cand[self.geometry(cand).keepout_dist_m >= margin_m]
            take = min(count - filled, ok.shape[0])
            out[filled : filled + take] = ok[:take]
            filled += take
            if filled == count:
                return out
        raise ValueError(
            f"Layout leaves no room for points {margin_m} m clear of every boundary; shrink the margin"
        )


@dataclass(frozen=True, slots=True)
class Randomization:
    """Domain-randomisation ranges (uniform lo..hi), drawn per episode."""

    wind_speed_m_s: tuple[float, float] = (0.0, 0.0)
    """Steady horizontal wind speed; direction uniform."""
    gust_std_m_s: tuple[float, float] = (0.0, 0.0)
    mass_scale: tuple[float, float] = (1.0, 1.0)
    motor_strength: tuple[float, float] = (1.0, 1.0)
    """Per-motor efficiency factor, drawn independently for each motor."""


@dataclass(frozen=True, slots=True)
class WaypointTaskConfig:
    """Everything that defines the waypoint task (layout, observation, action, reward, randomisation)."""

    layout: Layout = field(default_factory=Layout)
    feature_names: tuple[str, ...] = ("goal_rel_ned_m", "vel_ned_m_s")
    clip_lo: tuple[float, ...] | None = None
    """Per-element observation clip; None = the vocabulary's defaults."""
    clip_hi: tuple[float, ...] | None = None
    action_low: tuple[float, float, float, float] = (-5.0, -5.0, -2.0, -1.0)
    """Physical value of action −1: vn, ve, vd (m/s), yaw rate (rad/s)."""
    action_high: tuple[float, float, float, float] = (5.0, 5.0, 2.0, 1.0)
    control_rate_hz: float = 50.0
    n_waypoints: int = 3
    waypoints_ned_m: tuple[tuple[float, float, float], ...] | None = None
    """Fixed waypoints for every episode; None = n_waypoints random ones."""
    goal_radius_m: float = 1.0
    time_limit_s: float = 30.0
    start_margin_m: float = 3.0
    """Random starts and goals keep at least this distance from every boundary."""
    progress_weight: float = 1.0
    goal_bonus: float = 10.0
    action_penalty: float = 0.01
    jerk_penalty: float = 0.01
    crash_penalty: float = 10.0
    breach_terminate_m: float = 2.0
    """End the episode once a breach is deeper than this."""
    randomization: Randomization = field(default_factory=Randomization)
    disturbances: Disturbances = field(default_factory=Disturbances)
    faults: Faults = field(default_factory=Faults)
    dt_s: float = 0.004

    def __post_init__(self) -> None:
        for name in self.feature_names:
            if name not in VOCABULARY:
                raise ValueError(f"unknown feature {name!r}; the vocabulary is: {', '.join(VOCABULARY)}")
        size = observation_size(self.feature_names)
        for name, clip in (("clip_lo", self.clip_lo), ("clip_hi", self.clip_hi)):
            if clip is not None and len(clip) != size:
                raise ValueError(
                    f"{name} has {len(clip)} elements; the features {self.feature_names} make {size}"
                )
        if any(lo >= hi for lo, hi in zip(self.action_low, self.action_high)):
            raise ValueError(
                f"action_low must be < action_high elementwise, got {self.action_low} and {self.action_high}"
            )
        substeps = 1.0 / (self.control_rate_hz * self.dt_s)
        if self.control_rate_hz <= 0.0 or abs(substeps - round(substeps)) > 1e-9 or round(substeps) < 1:
            raise ValueError(
                f"control_rate_hz {self.control_rate_hz} must divide the physics rate {1.0 / self.dt_s:g} Hz "
                "into a whole number of substeps"
            )
        if self.waypoints_ned_m is None and self.n_waypoints < 1:
            raise ValueError(f"n_waypoints must be >= 1, got {self.n_waypoints}")

    @property
    def substeps(self) -> int:
        """Physics steps per policy step."""
        return round(1.0 / (self.control_rate_hz * self.dt_s))

    def clip_arrays(self) -> tuple[F64, F64]:
        """Per-element clip ranges [D] (given, or the vocabulary defaults)."""
        lo_parts, hi_parts = [], []
        for name in self.feature_names:
            spec = VOCABULARY[name]
            size = 4 if name == "prev_action" else spec.size
            lo_parts.append(np.full(size, spec.default_clip[0]))
            hi_parts.append(np.full(size, spec.default_clip[1]))
        lo = np.concatenate(lo_parts) if self.clip_lo is None else np.asarray(self.clip_lo, dtype=np.float64)
        hi = np.concatenate(hi_parts) if self.clip_hi is None else np.asarray(self.clip_hi, dtype=np.float64)
        return lo, hi


@dataclass(frozen=True, slots=True)
class TaskStep:
    """Batched result of one policy step, arrays [n]."""

    obs: NDArray[np.float32]
    reward: F64
    terminated: BoolArr
    truncated: BoolArr
    cost: F64
    crashed: BoolArr
    goal_reached: BoolArr
    """A waypoint was reached on this step."""
    violation_m: F64


class WaypointTask:
    """The batched task over one Sim of n vehicles: resets, observations, reward, cost, termination."""

    def __init__(self, n: int, config: WaypointTaskConfig, rng: np.random.Generator) -> None:
        self.n = n
        self.config = config
        self.layout = config.layout
        self.sim = Sim(n, rng=rng, disturbances=config.disturbances, faults=config.faults, dt_s=config.dt_s)
        self.clip_lo, self.clip_hi = config.clip_arrays()
        self.action_low = np.asarray(config.action_low, dtype=np.float64)
        self.action_high = np.asarray(config.action_high, dtype=np.float64)
        n_wp = len(config.waypoints_ned_m) if config.waypoints_ned_m is not None else config.n_waypoints
        self.waypoints_ned_m = np.zeros((n, n_wp, 3))
        self.wp_index = np.zeros(n, dtype=np.int64)
        self.prev_dist_m = np.zeros(n)
        self.prev_action = np.zeros((n, 4))
        """Previous action in [-1, 1] units (for the jerk penalty)."""
        self.prev_setpoint = np.zeros((n, 4))
        """Previous physical setpoint (for the ``prev_action`` feature)."""
        self.steps = np.zeros(n, dtype=np.int64)
        self.max_steps = round(config.time_limit_s * config.control_rate_hz)

    def goal_ned_m(self) -> F64:
        """[n, 3] current waypoint of each vehicle."""
        idx = np.minimum(self.wp_index, self.waypoints_ned_m.shape[1] - 1)
        return self.waypoints_ned_m[np.arange(self.n), idx]

    def reset(self, mask: BoolArr, rng: np.random.Generator) -> None:
        """Start new episodes for the masked vehicles: layout-valid start and goals, randomised physics."""
        c = self.config
        k = int(mask.sum())
        if k == 0:
            return
        r = c.randomization
        n_wp = self.waypoints_ned_m.shape[1]
        start = c.layout.sample_points(rng, k, c.start_margin_m)
        if c.waypoints_ned_m is None:
            goals = c.layout.sample_points(rng, k * n_wp, c.start_margin_m).reshape(k, n_wp, 3)
        else:
            goals = np.broadcast_to(np.asarray(c.waypoints_ned_m, dtype=np.float64), (k, n_wp, 3))
        yaw = rng.uniform(-np.pi, np.pi, k)
        speed = rng.uniform(*r.wind_speed_m_s, k)
        heading = rng.uniform(0.0, 2.0 * np.pi, k)
        wind = np.column_stack([speed * np.cos(heading), speed * np.sin(heading), np.zeros(k)])
        self.sim.set_params(
            mask,
            wind_ned_m_s=wind,
            gust_std_m_s=rng.uniform(*r.gust_std_m_s, k),
            mass_scale=rng.uniform(*r.mass_scale, k),
            motor_efficiency=rng.uniform(*r.motor_strength, (k, 4)),
        )
        self.sim.reset(mask, pos_ned_m=start, yaw_rad=yaw, on_ground=False)
        # Take velocity commands from the first policy step on; until then hover.
        hold = np.zeros((self.n, 5))
        self.sim.set_setpoint(SetpointKind.VELOCITY, hold, mask)
        self.waypoints_ned_m[mask] = goals
        self.wp_index[mask] = 0
        self.prev_dist_m[mask] = np.linalg.norm(goals[:, 0] - start, axis=1)
        self.prev_action[mask] = 0.0
        self.prev_setpoint[mask] = 0.0
        self.steps[mask] = 0

    def observe(self) -> NDArray[np.float32]:
        """[n, D] observation of every vehicle (float32)."""
        s = self.sim
        pos = s.pos_ned_m
        geo = self.layout.geometry(pos)
        inputs = FeatureInputs(
            pos_ned_m=pos,
            vel_ned_m_s=s.vel_ned_m_s,
            q_wxyz=s.q_wxyz,
            rates_frd_rad_s=s.rates_frd_rad_s,
            goal_ned_m=self.goal_ned_m(),
            fence_dist_m=geo.fence_dist_m,
            alt_floor_dist_m=geo.alt_floor_dist_m,
            alt_ceiling_dist_m=geo.alt_ceiling_dist_m,
            keepout_rel_ned_m=geo.keepout_rel_ned_m,
            keepout_dist_m=geo.keepout_dist_m,
            prev_action=self.prev_setpoint,
            battery_frac=s.battery_frac,
        )
        obs = build_observation(list(self.config.feature_names), self.clip_lo, self.clip_hi, inputs)
        return obs.astype(np.float32)

    def unscale(self, action: F64) -> F64:
        """[n, 4] actions in [-1, 1] (clipped) → physical velocity NED + yaw-rate setpoints."""
        a = np.clip(action, -1.0, 1.0)
        return self.action_low + 0.5 * (a + 1.0) * (self.action_high - self.action_low)

    def step(self, action: F64) -> TaskStep:
        """Apply [n, 4] actions for one control period and score it."""
        c = self.config
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(self.n, 4), -1.0, 1.0)
        setpoint = self.unscale(a)
        values = np.zeros((self.n, 5))
        values[:, :4] = setpoint
        self.sim.set_setpoint(SetpointKind.VELOCITY, values)
        self.sim.step(c.substeps)
        self.steps += 1

        pos = self.sim.pos_ned_m
        dist = np.linalg.norm(self.goal_ned_m() - pos, axis=1)
        reward = c.progress_weight * (self.prev_dist_m - dist)
        reward -= c.action_penalty * np.sum(a * a, axis=1)
        reward -= c.jerk_penalty * np.sum((a - self.prev_action) ** 2, axis=1)
        reached = dist <= c.goal_radius_m
        reward += np.where(reached, c.goal_bonus, 0.0)
        n_wp = self.waypoints_ned_m.shape[1]
        self.wp_index += reached
        finished = self.wp_index >= n_wp
        # Progress toward the next waypoint starts from where we are now.
        self.prev_dist_m = np.linalg.norm(self.goal_ned_m() - pos, axis=1)
        self.prev_action = a
        self.prev_setpoint = setpoint

        geo = self.layout.geometry(pos)
        violation = geo.violation_m
        cost = (violation > 0.0).astype(np.float64)
        crashed = self.sim.crashed.copy()
        reward -= np.where(crashed, c.crash_penalty, 0.0)
        terminated = crashed | (violation > c.breach_terminate_m) | finished
        truncated = (self.steps >= self.max_steps) & ~terminated
        return TaskStep(
            obs=self.observe(),
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            cost=cost,
            crashed=crashed,
            goal_reached=reached,
            violation_m=violation,
        )


def _spaces(task: WaypointTask) -> tuple[spaces.Box, spaces.Box]:
    obs_space = spaces.Box(
        low=task.clip_lo.astype(np.float32), high=task.clip_hi.astype(np.float32), dtype=np.float32
    )
    act_space = spaces.Box(low=-1.0, high=1.0, shape=(4,), dtype=np.float32)
    return obs_space, act_space


class _Exposed:
    """What exporters and certification read from either environment."""

    task: WaypointTask
    config: WaypointTaskConfig

    @property
    def sim(self) -> Sim:
        """The underlying simulator (replaced on reset with a seed)."""
        return self.task.sim

    @property
    def layout(self) -> Layout:
        """Fence, altitude band and keep-outs."""
        return self.config.layout

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Observation features in order (vocabulary names)."""
        return self.config.feature_names

    @property
    def action_low(self) -> F64:
        """Physical value of action −1 (vn, ve, vd m/s, yaw rate rad/s)."""
        return np.asarray(self.config.action_low, dtype=np.float64)

    @property
    def action_high(self) -> F64:
        """Physical value of action +1."""
        return np.asarray(self.config.action_high, dtype=np.float64)

    @property
    def control_rate_hz(self) -> float:
        """Policy rate."""
        return self.config.control_rate_hz


class WaypointEnv(_Exposed, gymnasium.Env[NDArray[np.float32], NDArray[np.float32]]):
    """One quadrotor flying through waypoints in a geofenced area with keep-out zones."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium's convention

    def __init__(self, config: WaypointTaskConfig | None = None) -> None:
        self.config = WaypointTaskConfig() if config is None else config
        self.task = WaypointTask(1, self.config, np.random.default_rng(0))
        obs_space, act_space = _spaces(self.task)
        self.observation_space = obs_space  # type: ignore[assignment]  # gymnasium's Box typing is loose
        self.action_space = act_space  # type: ignore[assignment]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        """Start an episode hovering at a random start (reseeds the simulator when a seed is given)."""
        super().reset(seed=seed)
        if seed is not None:
            self.task = WaypointTask(1, self.config, np.random.default_rng(self.np_random.integers(2**63)))
        self.task.reset(np.ones(1, dtype=bool), self.np_random)
        return self.task.observe()[0], {"cost": 0.0, "waypoint_index": 0}

    def step(
        self, action: NDArray[np.float32]
    ) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        """One control period."""
        r = self.task.step(np.asarray(action, dtype=np.float64)[None, :])
        info = {
            "cost": float(r.cost[0]),
            "crashed": bool(r.crashed[0]),
            "goal_reached": bool(r.goal_reached[0]),
            "violation_m": float(r.violation_m[0]),
            "waypoint_index": int(self.task.wp_index[0]),
        }
        return r.obs[0], float(r.reward[0]), bool(r.terminated[0]), bool(r.truncated[0]), info


class WaypointVecEnv(
    _Exposed, gymnasium.vector.VectorEnv[NDArray[np.float32], NDArray[np.float32], NDArray[Any]]
):
    """n quadrotors in one Sim, auto-reset on the same step (``info["final_obs"]`` holds the last observation)."""

    metadata: dict[str, Any] = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}  # noqa: RUF012

    def __init__(self, num_envs: int, config: WaypointTaskConfig | None = None) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = num_envs
        self.config = WaypointTaskConfig() if config is None else config
        self.task = WaypointTask(num_envs, self.config, np.random.default_rng(0))
        self.single_observation_space, self.single_action_space = _spaces(self.task)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._rng = np.random.default_rng()

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        """Start every episode (reseeds the simulator when a seed is given)."""
        if seed is not None:
            if not isinstance(seed, int):
                raise ValueError("WaypointVecEnv.reset takes one int seed for the whole batch, not a list")
            self._rng = np.random.default_rng(seed)
            self.task = WaypointTask(
                self.num_envs, self.config, np.random.default_rng(self._rng.integers(2**63))
            )
        self.task.reset(np.ones(self.num_envs, dtype=bool), self._rng)
        return self.task.observe(), {"cost": np.zeros(self.num_envs)}

    def step(
        self, actions: NDArray[np.float32]
    ) -> tuple[NDArray[np.float32], F64, BoolArr, BoolArr, dict[str, Any]]:
        """One control period for every vehicle; finished episodes restart in the same call."""
        r = self.task.step(np.asarray(actions, dtype=np.float64))
        done = r.terminated | r.truncated
        info: dict[str, Any] = {
            "cost": r.cost,
            "crashed": r.crashed,
            "goal_reached": r.goal_reached,
            "violation_m": r.violation_m,
            "waypoint_index": self.task.wp_index.copy(),
        }
        obs = r.obs
        if np.any(done):
            info["final_obs"] = obs.copy()
            info["_final_obs"] = done.copy()
            self.task.reset(done, self._rng)
            obs = self.task.observe()
        return obs, r.reward, r.terminated, r.truncated, info
