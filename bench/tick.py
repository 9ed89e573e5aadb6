"""Section 1 and 6 of the benchmark: the onboard tick beside what users would otherwise run.

The tick is timed as the loop runs it, from the bridge's ``VehicleState`` snapshot to the encoded
SET_POSITION_TARGET_LOCAL_NED bytes: ``state_arrays`` → ``AgentCore.step`` (observation →
onnxruntime → shield → nominal model → calibrator) → ``encode_setpoint`` (the adapters' send path).
The vehicle is a closed loop through the shield's nominal model flying the mission's route, so
the shield sees ordinary flight with its occasional interventions, not one frozen state.

Beside it, interleaved call by call so that machine load hits every column alike: a bare
``InferenceSession.run`` on the same model bytes, the torch module's eager forward and, for the
2×64 MLP, a Stable-Baselines3 PPO ``predict`` of the same shape.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from bench import percentiles_us, skipped
from edge_agent.agent import AgentCore, Decision, build_agent
from edge_agent.bundle import Bundle, load_bundle, session_options
from edge_agent.mission import Mission
from edge_agent.nominal import NominalModel
from edge_agent.observation import state_arrays
from edge_agent.policy import PolicyRunner
from edge_agent.shield import Reason
from firmware_bridge.adapters import encode_setpoint
from firmware_bridge.mavlink_codec import MavlinkEncoder
from firmware_bridge.types import Autopilot, Signal, VehicleState, VelocityNedYawRate

#: The benchmark policy's observation: the example policy's (goal, velocity) plus attitude, rates
#: and the previous action. No geometry features: MissionGeometry.features is batched numpy with
#: no batch-1 path yet and costs more than the rest of the tick (docs/benchmarks.md).
FEATURES = ("goal_rel_ned_m", "vel_ned_m_s", "q_wxyz_ned_frd", "rates_frd_rad_s", "prev_action")
ACTION_LOW = (-5.0, -5.0, -1.5, -1.0)
ACTION_HIGH = (5.0, 5.0, 1.5, 1.0)
#: Calls of each kind per block (see measure_tick).
BLOCK = 50
_SPEED = int(Reason.SPEED_LIMIT)
_BARRIER = (int(Reason.FENCE), int(Reason.ALTITUDE), int(Reason.KEEPOUT))
#: Policy variants of section 6: (name, kind, hidden width).
VARIANTS = (("mlp_2x64", "mlp", 64), ("mlp_2x256", "mlp", 256), ("gru_64", "gru", 64))


def make_torch_policy(kind: str, hidden: int, obs_size: int) -> Any:
    """A torch module of the benchmark's shapes (random weights, fixed seed): MLP or GRU cell.

    Untrained weights fly anywhere, which would time the shield's rare intervention path on most
    ticks. So the action is a waypoint P-controller plus 0.01 × the network's output: the graph
    still computes the whole network (same cost), and the vehicle flies the route as a trained
    policy would, interventions included where the route passes the keep-out zones.
    """
    import torch
    from torch import nn

    torch.manual_seed(0)
    gain = torch.tensor([0.8 / ACTION_HIGH[0], 0.8 / ACTION_HIGH[1], 0.8 / ACTION_HIGH[2]])

    def steer(obs: torch.Tensor, net_out: torch.Tensor) -> torch.Tensor:
        p = torch.cat([obs[:, 0:3] * gain, torch.zeros_like(obs[:, :1])], dim=1)
        return torch.clamp(p + 0.01 * net_out, -1.0, 1.0)

    class Mlp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(
                nn.Linear(obs_size, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                nn.Linear(hidden, 4), nn.Tanh(),
            )  # fmt: skip

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return steer(obs, self.net(obs))

    class Gru(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = nn.GRUCell(obs_size, hidden)
            self.head = nn.Linear(hidden, 4)

        def forward(self, obs: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.cell(obs, state)
            return steer(obs, torch.tanh(self.head(h))), h

    return (Mlp() if kind == "mlp" else Gru()).eval()


def export_variant(kind: str, hidden: int, out_dir: Path, quantize: bool) -> tuple[Path, Any]:
    """Export one variant as a verified bundle; returns (bundle path, the torch module)."""
    from export.module import export_module
    from export.spec import ExportSpec, feature

    spec = ExportSpec(
        observation=tuple(feature(n) for n in FEATURES),
        action_kind="velocity_ned_yaw_rate",
        action_low=ACTION_LOW,
        action_high=ACTION_HIGH,
        control_rate_hz=50.0,
        module_output="normalized",
        recurrent_state_size=hidden if kind == "gru" else 0,
        recurrent_cell="gru" if kind == "gru" else "custom",
    )
    module = make_torch_policy(kind, hidden, spec.observation_size)
    report = export_module(module, spec, out_dir, n_random=10_000, quantize=quantize, overwrite=True)
    return Path(report.path), module


class _Recording:
    """The runner, remembering the observation it was given (so the alternatives get the same).

    The onboard tick hands a batch of one to ``act_one`` as Python floats; only a reference is
    kept inside the timed tick, and :meth:`last_obs` makes the array afterwards.
    """

    def __init__(self, runner: PolicyRunner) -> None:
        self.runner = runner
        self.obs: Any = np.zeros((1, runner.observation_size), dtype=np.float32)

    def act(self, obs: np.ndarray) -> np.ndarray:
        self.obs = obs
        return self.runner.act(obs)

    def act_one(self, obs: Sequence[float]) -> list[float]:
        self.obs = obs
        return self.runner.act_one(obs)

    def last_obs(self) -> np.ndarray:
        """The last observation as a [1, D] float32 array of its own."""
        return np.array(self.obs, dtype=np.float32).reshape(1, -1)


class _Vehicle:
    """A closed loop through the nominal model: the states a flight along the route produces."""

    def __init__(self, mission: Mission, rate_hz: float, rng: np.random.Generator) -> None:
        self.model = NominalModel()
        self.dt = 1.0 / rate_hz
        self.rng = rng
        self.start = np.array([mission.waypoints_ned_m[0]], dtype=np.float64)
        self.pos = self.start.copy()
        self.vel = np.zeros((1, 3))
        self.now_ns = 1_000_000_000

    def state(self) -> VehicleState:
        """The bridge's snapshot now: telemetry 2–4 ms old, as over a 250 Hz link."""
        now = self.now_ns
        age = int(self.rng.integers(2_000_000, 4_000_000))
        p = tuple(self.pos[0].tolist())
        v = tuple(self.vel[0].tolist())
        return VehicleState(
            pos_ned_m=Signal(p, now - age),
            vel_ned_m_s=Signal(v, now - age),
            q_wxyz=Signal((1.0, 0.0, 0.0, 0.0), now - age),
            rates_frd_rad_s=Signal((0.0, 0.0, 0.0), now - age),
            battery=Signal((0.8,), now - age),
            armed=True,
            mode="OFFBOARD",
            heartbeat_stamp_ns=now - 100_000_000,
            link_up=True,
        )

    def advance(self, setpoint: np.ndarray) -> None:
        gust = self.rng.normal(0.0, 0.2, (1, 3))
        self.pos, self.vel = self.model.step(self.pos, self.vel, setpoint[None, :3] + gust, self.dt)
        self.now_ns += round(self.dt * 1e9)

    def follow(self, d: Decision, core: AgentCore, runner: PolicyRunner) -> None:
        """Fly the tick's setpoint; back to the start of the route (agent and policy reset) once
        the mission is complete or the fallback has landed."""
        self.advance(d.setpoint[0])
        if d.mission_complete[0] or d.fallback_stage[0] >= 3:
            core.reset()
            runner.reset()
            self.pos, self.vel = self.start.copy(), np.zeros((1, 3))


def _encode(encoder: MavlinkEncoder, sp: np.ndarray, now_ns: int) -> bytes:
    """The setpoint's MAVLink frame, made as the adapters make it in flight."""
    setpoint = VelocityNedYawRate((float(sp[0]), float(sp[1]), float(sp[2])), float(sp[3]))
    return encode_setpoint(encoder, setpoint, Autopilot.PX4, now_ns // 1_000_000, 1, 1)


def measure_tick(
    bundle: Bundle,
    mission: Mission,
    ticks: int,
    rng: np.random.Generator,
    *,
    torch_module: Any = None,
    sb3: bool = False,
) -> dict[str, Any]:
    """Tick latency with the alternatives interleaved; percentiles in µs and the target ratios."""
    runner = PolicyRunner(bundle)
    recording = _Recording(runner)
    core = build_agent(policy=recording, manifest=bundle.manifest, mission=mission, timer=time.perf_counter)
    encoder = MavlinkEncoder(1, 191)
    session = ort.InferenceSession(bundle.model_bytes, session_options(1), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    state_size = 0 if bundle.manifest.recurrent is None else bundle.manifest.recurrent.state_size
    link_ok = np.ones(1, dtype=bool)
    vehicle = _Vehicle(mission, bundle.manifest.control_rate_hz, rng)

    alternatives: dict[str, Callable[[np.ndarray], Any]] = {}
    feed_state = np.zeros((1, state_size), dtype=np.float32)
    if state_size:
        names = (inputs[0].name, inputs[1].name)
        alternatives["onnxruntime_run"] = lambda o: session.run(None, {names[0]: o, names[1]: feed_state})
    else:
        name = inputs[0].name
        alternatives["onnxruntime_run"] = lambda o: session.run(None, {name: o})
    notes: dict[str, Any] = {}
    if torch_module is not None:
        import torch

        torch.set_num_threads(1)  # one thread like the runtime's session: the fair comparison
        t_state = torch.zeros(1, state_size)

        def torch_forward(o: np.ndarray) -> Any:
            with torch.inference_mode():
                x = torch.from_numpy(o)
                return torch_module(x, t_state) if state_size else torch_module(x)

        alternatives["torch_eager"] = torch_forward
    else:
        notes["torch_eager"] = skipped("no torch module for this bundle (or torch not installed)")
    if sb3:
        predict = make_sb3_predict(bundle.manifest.observation_size)
        if isinstance(predict, dict):
            notes["sb3_predict"] = predict
        else:
            alternatives["sb3_predict"] = predict
    else:
        notes["sb3_predict"] = skipped("not requested (--no-sb3)")

    samples: dict[str, list[int]] = {"tick": [], **{k: [] for k in alternatives}}
    full_path = speed_clip = projected = 0
    clock = time.perf_counter_ns
    warmup = min(200, ticks // 5)
    # Blocks of BLOCK calls of each, alternating: every column sees the same load over the run,
    # while the tick runs back to back as it does on the drone (interleaving single calls with
    # torch would evict the tick's code and data from the caches on every call).
    k = 0
    # As the flight loop does before its first tick (edge_agent.loop): what start-up built lives for
    # the whole run, so it is collected once and frozen out of the collector's sight; a full
    # collection during the run then walks only what the ticks allocate, not torch and SB3 too.
    gc.collect()
    gc.freeze()
    try:
        while k < ticks + warmup:
            block_obs: list[np.ndarray] = []
            for _ in range(min(BLOCK, ticks + warmup - k)):
                st = vehicle.state()
                now = vehicle.now_ns
                batched_before = core.shield.batched_calls
                t0 = clock()
                arrays = state_arrays(st, now)
                d = core.step(arrays, now * 1e-9, link_ok)
                sp = d.setpoint[0]
                _encode(encoder, sp, now)
                t1 = clock()
                block_obs.append(recording.last_obs())
                if k >= warmup:
                    samples["tick"].append(t1 - t0)
                    reason = int(d.reason[0])
                    speed_clip += reason == _SPEED
                    projected += reason in _BARRIER and d.layer[0] == 2
                    full_path += core.shield.batched_calls > batched_before
                k += 1
                vehicle.follow(d, core, runner)
            for key, fn in alternatives.items():
                for obs in block_obs:
                    a0 = clock()
                    fn(obs)
                    a1 = clock()
                    samples[key].append(a1 - a0)
    finally:
        gc.unfreeze()
    out: dict[str, Any] = {k: percentiles_us(v[warmup:] if k != "tick" else v) for k, v in samples.items()}
    out.update(notes)
    out["speed_clip_fraction"] = speed_clip / max(ticks, 1)
    out["barrier_projection_fraction"] = projected / max(ticks, 1)
    out["shield_full_path_fraction"] = full_path / max(ticks, 1)
    tick50 = out["tick"]["p50_us"]
    ratios: dict[str, float] = {}
    for key in alternatives:
        ratios[f"tick_over_{key}_p50"] = tick50 / out[key]["p50_us"]
    out["ratios"] = ratios
    return out


#: Stages of the tick timed by :func:`measure_stages`, in the order the tick runs them.
STAGES = ("state_arrays", "observation", "policy", "shield", "shadows", "calibrator", "encode")


def measure_stages(bundle: Bundle, mission: Mission, ticks: int, rng: np.random.Generator) -> dict[str, Any]:
    """Where the tick's time goes: the same closed loop as :func:`measure_tick`, back to back, with
    a clock read around each stage. The clocks are wrappers put on a fresh agent's stage objects
    (the observation builder's ``build_one``, the policy's ``act_one``, ``Shield.certify``, the
    shadow ring's ``tick_one``, ``Calibrator.update``), so the agent's own code is what runs; each
    wrapper adds ~0.2 µs to its stage. ``other`` is, per tick, the whole tick less its stages: the
    tick's own code between them (``AgentCore._step_one``, the records it returns).
    """
    runner = PolicyRunner(bundle)
    clock = time.perf_counter_ns
    spent = dict.fromkeys(STAGES, 0)

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += clock() - t0

        return wrapper

    class TimedPolicy:
        act = staticmethod(runner.act)
        act_one = staticmethod(timed("policy", runner.act_one))

    core = build_agent(
        policy=TimedPolicy(), manifest=bundle.manifest, mission=mission, timer=time.perf_counter
    )
    encoder = MavlinkEncoder(1, 191)
    vehicle = _Vehicle(mission, bundle.manifest.control_rate_hz, rng)
    link_ok = np.ones(1, dtype=bool)
    # Instance attributes shadow the methods for this agent only (private names: a rename
    # fails here, in the bench's smoke test, not silently).
    core.builder.build_one = timed("observation", core.builder.build_one)  # type: ignore[method-assign]
    core.shield.certify = timed("shield", core.shield.certify)  # type: ignore[method-assign]
    core._shadows.tick_one = timed("shadows", core._shadows.tick_one)  # type: ignore[method-assign]
    core.calibrator.update = timed("calibrator", core.calibrator.update)  # type: ignore[method-assign]
    samples: dict[str, list[int]] = {k: [] for k in (*STAGES, "other", "tick")}
    warmup = min(200, ticks // 5)
    gc.collect()
    gc.freeze()
    try:
        for k in range(ticks + warmup):
            st = vehicle.state()
            now = vehicle.now_ns
            for name in STAGES:
                spent[name] = 0
            t0 = clock()
            arrays = state_arrays(st, now)
            t1 = clock()
            d = core.step(arrays, now * 1e-9, link_ok)
            t2 = clock()
            sp = d.setpoint[0]
            _encode(encoder, sp, now)
            t3 = clock()
            spent["state_arrays"] = t1 - t0
            spent["encode"] = t3 - t2
            if k >= warmup:
                for name in STAGES:
                    samples[name].append(spent[name])
                samples["tick"].append(t3 - t0)
                samples["other"].append(t3 - t0 - sum(spent.values()))
            vehicle.follow(d, core, runner)
    finally:
        gc.unfreeze()
    return {k: percentiles_us(v) for k, v in samples.items()}


def make_sb3_predict(obs_size: int) -> Callable[[np.ndarray], Any] | dict[str, str]:
    """``PPO.predict`` of a 2×64 MLP PPO built in-process, or the reason it cannot run here."""
    try:
        import gymnasium as gym
        from stable_baselines3 import PPO
    except ImportError as exc:
        return skipped(f"stable-baselines3 not installed ({exc.name})")

    class _Env(gym.Env):  # type: ignore[misc]
        observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_size,), np.float32)
        action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)

        def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
            return np.zeros(obs_size, np.float32), {}

        def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
            return np.zeros(obs_size, np.float32), 0.0, False, False, {}

    model = PPO("MlpPolicy", _Env(), policy_kwargs={"net_arch": [64, 64]}, device="cpu", seed=0)
    return lambda o: model.predict(o[0], deterministic=True)


def measure_variants(mission: Mission, out_dir: Path, ticks: int, rng: np.random.Generator) -> dict[str, Any]:
    """Section 6: the tick and bare onnxruntime for every policy variant in fp32 and int8."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return skipped("torch not installed: the variants are exported from torch modules")
    results: dict[str, Any] = {}
    for name, kind, hidden in VARIANTS:
        for quant in (False, True):
            key = f"{name}_{'int8' if quant else 'fp32'}"
            path, _ = export_variant(kind, hidden, out_dir / key, quant)
            bundle = load_bundle(path)
            r = measure_tick(bundle, mission, ticks, rng)
            results[key] = {
                "tick": r["tick"],
                "onnxruntime_run": r["onnxruntime_run"],
                "model_bytes": len(bundle.model_bytes),
            }
    return {"variants": results}


def measure_bundle(
    bundle_path: Path, mission: Mission, ticks: int, rng: np.random.Generator
) -> dict[str, Any]:
    """Section 1 for a bundle given on the command line (no torch needed)."""
    return measure_tick(load_bundle(bundle_path), mission, ticks, rng)


__all__ = [
    "FEATURES",
    "VARIANTS",
    "export_variant",
    "make_sb3_predict",
    "make_torch_policy",
    "measure_bundle",
    "measure_tick",
    "measure_variants",
]
