"""Scenario specification: the declared distribution certification and calibration sample from.

A scenario is a TOML file (format in docs/certification.md) parsed once into frozen dataclasses.
Every random quantity of episode ``i`` is drawn from its own generator seeded with
``SeedSequence(seed, spawn_key=(0, i))``, in a fixed order, so an episode depends on
(scenario seed, i) only: not on batch size, chunking, resumption or where it runs.

The scenario hash is the SHA-256 of the canonical JSON of the parsed spec together with the
mission file's parsed content, so reformatting or comments do not change it and any value does.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.errors import ConfigError, MissionError, ScenarioError
from edge_agent.mission import Mission, load_mission
from edge_agent.tomlcheck import Table, check_sections, read_toml
from sitl.airframe import G_M_S2, X500, Airframe

F64 = NDArray[np.float64]

#: spawn_key streams under the scenario seed: per-episode draws, and the simulator's entropy.
EPISODE_STREAM = 0
SIM_STREAM = 1


@dataclass(frozen=True, slots=True)
class Band:
    """A uniform distribution on [lo, hi] (lo == hi is a fixed value)."""

    lo: float
    hi: float


@dataclass(frozen=True, slots=True)
class WindSpec:
    """Steady wind speed band (horizontal, direction uniform) and gust intensity band."""

    speed_m_s: Band
    gust_std_m_s: Band
    gust_time_constant_s: float


@dataclass(frozen=True, slots=True)
class VehicleSpec:
    """Mass (payload) and motor strength, per episode."""

    mass_scale: Band
    motor_efficiency: Band
    """Each motor's thrust factor, drawn independently (1 = healthy)."""
    motor_fault_probability: float
    """Probability that one motor (chosen uniformly) loses strength mid-flight."""
    motor_fault_efficiency: Band
    motor_fault_onset_s: Band


@dataclass(frozen=True, slots=True)
class SensorSpec:
    """What the estimator reports. One value per scenario: the simulator takes these as scalars."""

    pos_noise_std_m: float
    vel_noise_std_m_s: float
    att_noise_std_rad: float
    rates_noise_std_rad_s: float
    latency_s: float
    dropout_rate_hz: float
    dropout_duration_s: float


@dataclass(frozen=True, slots=True)
class StartSpec:
    """Start states: hovering at a uniform point of the fence clear of every boundary."""

    altitude_m: Band
    """Up-positive above the origin."""
    clearance_m: float
    """Horizontal distance kept from the fence and every keep-out zone."""
    yaw_rad: Band
    speed_m_s: Band
    """Initial horizontal speed, direction uniform."""


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    """A parsed scenario file."""

    name: str
    seed: int
    mission_path: str
    """Absolute path of the mission file (resolved relative to the scenario file)."""
    duration_s: float
    """Time limit of an episode; it also ends at mission completion (as the onboard loop does)."""
    physics_dt_s: float
    wind: WindSpec
    vehicle: VehicleSpec
    sensors: SensorSpec
    start: StartSpec

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain JSON values (the certificate embeds it)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class EpisodeParams:
    """The drawn parameters of a batch of episodes (arrays [B, ...])."""

    episode: NDArray[np.int64]
    """[B] episode indices."""
    wind_ned_m_s: F64
    """[B, 3]"""
    gust_std_m_s: F64
    """[B]"""
    mass_scale: F64
    """[B]"""
    motor_efficiency: F64
    """[B, 4] after the fault (if any)."""
    motor_fault_onset_s: F64
    """[B] 0 when healthy (the efficiencies apply from the start)."""
    start_pos_ned_m: F64
    """[B, 3]"""
    start_vel_ned_m_s: F64
    """[B, 3]"""
    start_yaw_rad: F64
    """[B]"""


# ---------------------------------------------------------------------------------------------
# Parsing


def _T(data: Any, where: str, path: str) -> Table:
    """A scenario table: the shared TOML checker with ScenarioError, the file named in every message."""
    return Table(data, where, error=ScenarioError, prefix=f"{path}: ", docs="docs/certification.md")


_SECTIONS = ("scenario", "wind", "vehicle", "sensors", "start")


def parse_scenario(
    data: Mapping[str, Any], *, path: str = "<scenario>", base_dir: Path | None = None
) -> ScenarioSpec:
    """Build a ScenarioSpec from a parsed TOML document; raises ScenarioError (a ConfigError) naming problem and fix."""
    check_sections(data, _SECTIONS, error=ScenarioError, prefix=f"{path}: ")
    if "scenario" not in data:
        raise ScenarioError(f"{path}: no [scenario] section; add one with name, seed and mission")

    t = _T(data["scenario"], "scenario", path)
    t.used.update(("name", "seed", "mission"))
    name = t.data.get("name", "unnamed")
    if not isinstance(name, str):
        raise t.err(f"name must be a string, got {name!r}")
    seed = t.data.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise t.err(f"seed must be a non-negative integer, got {seed!r}")
    mission = t.data.get("mission")
    if not isinstance(mission, str) or not mission:
        raise t.err('needs mission = "path/to/mission.toml" (relative to the scenario file)')
    mission_path = Path(mission)
    if not mission_path.is_absolute():
        mission_path = (base_dir or Path.cwd()) / mission_path
    duration = t.number("duration_s", 60.0, ge=0.1)
    dt = t.number("physics_dt_s", 0.004, ge=1e-4)
    if dt > 0.02:
        raise t.err(f"physics_dt_s = {dt} must be at most 0.02 s (the simulator's stable limit)")
    t.done()

    def sub(key: str) -> Table:
        return _T(data.get(key, {}), key, path)

    w = sub("wind")
    wind = WindSpec(
        Band(*w.band("speed_m_s", (0.0, 0.0), ge=0.0)),
        Band(*w.band("gust_std_m_s", (0.0, 0.0), ge=0.0)),
        w.number("gust_time_constant_s", 2.0, ge=1e-3),
    )
    w.done()

    v = sub("vehicle")
    vehicle = VehicleSpec(
        Band(*v.band("mass_scale", (1.0, 1.0), ge=0.1)),
        Band(*v.band("motor_efficiency", (1.0, 1.0), ge=0.0)),
        v.number("motor_fault_probability", 0.0, ge=0.0),
        Band(*v.band("motor_fault_efficiency", (1.0, 1.0), ge=0.0)),
        Band(*v.band("motor_fault_onset_s", (0.0, 0.0), ge=0.0)),
    )
    if vehicle.motor_fault_probability > 1.0:
        raise v.err(f"motor_fault_probability = {vehicle.motor_fault_probability} must lie in [0, 1]")
    for key, band in (
        ("motor_efficiency", vehicle.motor_efficiency),
        ("motor_fault_efficiency", vehicle.motor_fault_efficiency),
    ):
        if band.hi > 1.5:
            raise v.err(f"{key} = [{band.lo}, {band.hi}] must not exceed 1.5 (1 = healthy motor)")
    v.done()

    s = sub("sensors")
    sensors = SensorSpec(
        s.number("pos_noise_std_m", 0.0, ge=0.0),
        s.number("vel_noise_std_m_s", 0.0, ge=0.0),
        s.number("att_noise_std_rad", 0.0, ge=0.0),
        s.number("rates_noise_std_rad_s", 0.0, ge=0.0),
        s.number("latency_s", 0.0, ge=0.0),
        s.number("dropout_rate_hz", 0.0, ge=0.0),
        s.number("dropout_duration_s", 0.3, ge=1e-3),
    )
    s.done()

    st = sub("start")
    start = StartSpec(
        Band(*st.band("altitude_m")),
        st.number("clearance_m", 3.0, ge=0.0),
        Band(*st.band("yaw_rad", (-math.pi, math.pi))),
        Band(*st.band("speed_m_s", (0.0, 0.0), ge=0.0)),
    )
    st.done()
    return ScenarioSpec(
        str(name), int(seed), str(mission_path.resolve()), duration, dt, wind, vehicle, sensors, start
    )


def load_scenario(path: str | Path) -> ScenarioSpec:
    """Read and validate a scenario TOML file (its mission path is resolved next to it)."""
    p = Path(path)
    data = read_toml(p, what="scenario file", error=ScenarioError)
    return parse_scenario(data, path=str(p), base_dir=p.resolve().parent)


def scenario_mission(spec: ScenarioSpec) -> Mission:
    """Load the scenario's mission; a missing or invalid mission is named with the scenario."""
    try:
        return load_mission(spec.mission_path)
    except MissionError as exc:
        raise ScenarioError(
            f"scenario {spec.name!r}: its mission {spec.mission_path!r} is unusable: {exc}"
        ) from exc


def scenario_hash(spec: ScenarioSpec) -> str:
    """SHA-256 over the parsed spec and the parsed mission file (formatting-independent)."""
    body = spec.to_dict()
    body.pop("mission_path")  # where the file lives does not matter, what it says does
    try:
        mission_doc = tomllib.loads(Path(spec.mission_path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(
            f"cannot read the scenario's mission {spec.mission_path!r} to hash it: {exc}"
        ) from exc
    body["mission"] = mission_doc
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Sampling


def episode_rng(seed: int, episode: int) -> np.random.Generator:
    """The generator of episode ``episode``'s parameters: a function of (seed, episode) only."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(EPISODE_STREAM, int(episode))))


def sim_rng(seed: int) -> np.random.Generator:
    """The generator the simulator draws its entropy from (same for every chunk of a campaign)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SIM_STREAM,)))


def _u(rng: np.random.Generator, band: Band) -> float:
    # Always draw, even for a fixed value, so the draw order never depends on the spec's values.
    x = float(rng.random())
    return band.lo + x * (band.hi - band.lo)


_START_TRIES = 256


def _start_draws(spec: StartSpec, rng: np.random.Generator, lo: F64, hi: F64) -> F64:
    """One episode's _START_TRIES candidate start points [T, 3] (NED), drawn from its generator."""
    ne = lo + rng.random((_START_TRIES, 2)) * (hi - lo)
    alt = spec.altitude_m.lo + rng.random(_START_TRIES) * (spec.altitude_m.hi - spec.altitude_m.lo)
    return np.column_stack([ne, -alt])


def _clear(mission: Mission, spec: StartSpec, pos: F64) -> NDArray[np.bool_]:
    """Which start points [N, 3] are clear of the fence, the keep-outs and the altitude limits."""
    geo = mission.geometry
    fence, _ = geo.fence_distance(pos)
    ok = fence >= spec.clearance_m
    if geo.n_zones:
        dist, _ = geo.keepout_distance(pos)
        ok &= dist.min(axis=1) >= spec.clearance_m
    floor, ceiling = geo.altitude_distances(pos)
    ok &= (floor > 0.0) & (ceiling > 0.0)
    return ok


def _first_clear(mission: Mission, spec: StartSpec, cands: F64) -> NDArray[np.int64]:
    """Per episode, the index of the first of its candidates [B, T, 3] that is clear, or -1.

    The checks are row-wise, so checking the first few candidates of every episode in one call,
    then the rest only for the episodes still without one, chooses what checking each episode's
    candidates in order would (and most episodes' first candidate is clear)."""
    b, t, _ = cands.shape
    first = np.full(b, -1, dtype=np.int64)
    todo = np.arange(b)
    for lo, hi in ((0, min(8, t)), (min(8, t), t)):
        if todo.size == 0 or lo >= hi:
            break
        ok = _clear(mission, spec, cands[todo, lo:hi].reshape(-1, 3)).reshape(todo.size, hi - lo)
        found = ok.any(axis=1)
        first[todo[found]] = lo + ok[found].argmax(axis=1)
        todo = todo[~found]
    return first


def sample_episodes(
    spec: ScenarioSpec, mission: Mission, episodes: NDArray[np.int64] | list[int]
) -> EpisodeParams:
    """Draw the parameters of the given episodes; each from its own (seed, index) generator."""
    ids = np.asarray(episodes, dtype=np.int64)
    b = ids.shape[0]
    wind = np.zeros((b, 3))
    gust = np.zeros(b)
    mass = np.zeros(b)
    eff = np.ones((b, 4))
    onset = np.zeros(b)
    cands = np.zeros((b, _START_TRIES, 3))
    vel = np.zeros((b, 3))
    yaw = np.zeros(b)
    w, v, st = spec.wind, spec.vehicle, spec.start
    lo, hi = mission.geometry.box_min_ne, mission.geometry.box_max_ne
    for j, i in enumerate(ids):
        rng = episode_rng(spec.seed, int(i))
        speed, heading = _u(rng, w.speed_m_s), float(rng.random()) * 2.0 * math.pi
        wind[j, :2] = speed * math.cos(heading), speed * math.sin(heading)
        gust[j] = _u(rng, w.gust_std_m_s)
        mass[j] = _u(rng, v.mass_scale)
        eff[j] = [_u(rng, v.motor_efficiency) for _ in range(4)]
        faulty = float(rng.random()) < v.motor_fault_probability
        motor = int(rng.integers(0, 4))
        fault_eff = _u(rng, v.motor_fault_efficiency)
        fault_onset = _u(rng, v.motor_fault_onset_s)
        if faulty:
            eff[j, motor] = min(eff[j, motor], fault_eff)
            onset[j] = fault_onset
        cands[j] = _start_draws(st, rng, lo, hi)
        yaw[j] = _u(rng, st.yaw_rad)
        s0, d0 = _u(rng, st.speed_m_s), float(rng.random()) * 2.0 * math.pi
        vel[j, :2] = s0 * math.cos(d0), s0 * math.sin(d0)
    first = _first_clear(mission, st, cands)
    if (first < 0).any():
        raise ConfigError(
            f"scenario {spec.name!r}: no start point clear of the fence and keep-outs by "
            f"clearance_m = {st.clearance_m} m within the altitude band {st.altitude_m.lo}..{st.altitude_m.hi} m "
            f"was found in {_START_TRIES} draws (episode {int(ids[np.argmax(first < 0)])}); "
            f"lower [start] clearance_m or fix the altitude band"
        )
    pos = cands[np.arange(b), first]
    return EpisodeParams(ids, wind, gust, mass, eff, onset, pos, vel, yaw)


def thrust_to_weight_floor(spec: ScenarioSpec, airframe: Airframe = X500) -> dict[str, float]:
    """The smallest thrust-to-weight ratio any episode of the scenario can draw, healthy and after
    its motor fault: the envelope a certificate holds for, stated beside it.

    Healthy: every motor at the low end of ``motor_efficiency``, the mass at the top of
    ``mass_scale``. After a fault one motor delivers at most e_w (``motor_fault_efficiency`` low
    end) and the others e_h. Roll and pitch balance need diagonal partners to make equal thrust,
    and the autopilot's mixer (PX4's, and ``sitl.control``'s) keeps roll and pitch before collective
    and yaw: the weak motor at full, its partner throttled to match, the other pair at the mixer's
    collective. That delivers (e_h + 3·e_w)/4 of the healthy maximum. Below about 1.25 the X500
    flying the demo in wind sinks or tips (docs/certification.md, "Envelope").
    """
    v = spec.vehicle
    nominal = airframe.max_thrust_n / (airframe.mass_kg * G_M_S2) / v.mass_scale.hi
    e_h = v.motor_efficiency.lo
    out = {"healthy": nominal * e_h}
    if v.motor_fault_probability > 0.0:
        e_w = min(v.motor_fault_efficiency.lo, e_h)
        out["after_fault"] = nominal * (e_h + 3.0 * e_w) / 4.0
    return out


__all__ = [
    "Band",
    "EpisodeParams",
    "ScenarioSpec",
    "SensorSpec",
    "StartSpec",
    "VehicleSpec",
    "WindSpec",
    "episode_rng",
    "load_scenario",
    "parse_scenario",
    "sample_episodes",
    "scenario_hash",
    "scenario_mission",
    "sim_rng",
    "thrust_to_weight_floor",
]
