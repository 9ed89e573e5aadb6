"""Train the example waypoint policy: Stable-Baselines3 PPO on the built-in SITL, then evaluate it.

Reads top to bottom, CleanRL-style: the ``Args`` dataclass (each field's docstring is its
``--help``), the task it builds, the Lagrangian cost penalty of ``--constrained``, training with
log lines, saving, and a deterministic evaluation. Run::

    .venv/bin/python -m examples.train --help
    .venv/bin/python -m examples.train --total-timesteps 4000000 --seed 1 --out examples/policy

It writes ``OUT/model.zip`` (SB3's own file) and ``OUT/vecnormalize.pkl`` (the observation
statistics, which the exporter folds into the ONNX graph) and prints success rate, mean time to
goal and safety cost over deterministic episodes: on random waypoints and on the demo mission's
route. See docs/training.md for the choices made here and why.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import json
import time
import tomllib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecMonitor, VecNormalize
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from examples.sb3_vecenv import SB3VecEnv
from sitl.envs import Layout, Randomization, WaypointTaskConfig, WaypointVecEnv

DEMO_MISSION = Path(__file__).resolve().parent / "missions" / "demo.toml"


@dataclass(frozen=True, slots=True)
class Args:
    """Command-line arguments of ``python -m examples.train`` (one flag per field)."""

    seed: int = 1
    """seed of the environments, the network initialisation and the evaluation"""
    total_timesteps: int = 4_000_000
    """environment steps (vehicle-steps at 50 Hz) to train for"""
    num_envs: int = 64
    """vehicles simulated side by side in one batched Sim"""
    out: Path = Path("examples/policy")
    """folder for model.zip, vecnormalize.pkl and eval.json"""
    threads: int = 1
    """torch intra-op threads (the simulator is single-threaded numpy; 1 suits a 2-core machine)"""
    algo: str = "ppo"
    """ppo (the committed policy) or sac (measured against it: see docs/training.md)"""
    # --- PPO (SAC uses learning_rate, gamma, the network and the sac_* fields) ---
    learning_rate: float = 3e-4
    """Adam step size at the start, annealed linearly to 0 (steadies the final policy)"""
    n_steps: int = 128
    """steps per vehicle per rollout (rollout = n_steps * num_envs samples)"""
    batch_size: int = 2048
    """minibatch size of each gradient step"""
    n_epochs: int = 5
    """passes over each rollout"""
    gamma: float = 0.99
    """discount per 20 ms control step (a horizon of about 2 s)"""
    gae_lambda: float = 0.95
    """GAE smoothing"""
    ent_coef: float = 0.0
    """entropy bonus"""
    log_std_init: float = -0.5
    """initial log standard deviation of the Gaussian policy"""
    net_width: int = 64
    """units in each hidden layer of the policy and value networks"""
    net_depth: int = 2
    """hidden layers of the policy and value networks"""
    sac_gradient_steps: int = 4
    """SAC: gradient steps per batched env step (one step of all num_envs vehicles)"""
    sac_batch_size: int = 256
    """SAC: minibatch size"""
    # --- task and domain randomisation ---
    half_width_m: float = 30.0
    """the training fence is a square of this half-width (the demo's); goals far apart clip the goal feature"""
    ceiling_alt_m: float = 30.0
    """altitude ceiling (floor 2 m), the demo's"""
    n_waypoints: int = 3
    """random waypoints per episode"""
    max_speed_ne_m_s: float = 5.0
    """action bound on north and east velocity, each (the env's default; a diagonal command reaches 7.1 m/s)"""
    max_speed_d_m_s: float = 2.0
    """action bound on down velocity, both ways (the env's default)"""
    time_limit_s: float = 40.0
    """episode time limit in simulated seconds"""
    wind_max_m_s: float = 4.0
    """steady wind speed drawn uniformly in [0, this], direction uniform"""
    gust_max_m_s: float = 1.0
    """gust standard deviation drawn uniformly in [0, this]"""
    mass_scale_min: float = 0.8
    """lowest mass scale (payload off)"""
    mass_scale_max: float = 1.25
    """highest mass scale (payload on)"""
    motor_strength_min: float = 0.85
    """weakest per-motor efficiency (each motor drawn in [this, 1])"""
    # --- constrained variant ---
    constrained: bool = False
    """PPO-Lagrangian: penalise the reward by λ·cost, with λ raised by dual ascent while episode cost exceeds the budget"""
    cost_budget: float = 0.0
    """allowed mean cost per episode (steps spent outside the fence, altitude band or a keep-out)"""
    lambda_lr: float = 0.05
    """dual-ascent step on λ per rollout, per unit of excess episode cost"""
    keepouts: bool = False
    """keep the env's default keep-out cylinders in the training layout (the policy cannot see them; only --constrained cares)"""
    # --- evaluation ---
    eval_episodes: int = 256
    """deterministic evaluation episodes on random waypoints (and as many on the demo route)"""
    eval_seed: int = 10_000
    """seed of the evaluation episodes (disjoint from training's stream)"""
    demo_mission: Path = DEMO_MISSION
    """mission TOML whose route is also evaluated (waypoints_nea_m)"""


def _field_docs(cls: type) -> dict[str, str]:
    """The docstring under each dataclass field, read from the source (what tyro does in CleanRL)."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
        ):
            docs[node.target.id] = str(nxt.value.value)
    return docs


def parse_args(argv: list[str] | None = None) -> Args:
    """Build ``Args`` from the command line; every field is a ``--kebab-case`` flag."""
    parser = argparse.ArgumentParser(prog="python -m examples.train", description=__doc__.splitlines()[0])
    docs = _field_docs(Args)
    hints = {f.name: f.type for f in dataclasses.fields(Args)}
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        help_text = f"{docs.get(f.name, '')} (default: {default})"
        if hints[f.name] in (bool, "bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            kind = {"int": int, "float": float, "Path": Path}.get(str(hints[f.name]), type(default))
            parser.add_argument(flag, type=kind, default=default, help=help_text)
    ns = parser.parse_args(argv)
    args = Args(**vars(ns))
    if args.total_timesteps < 1 or args.num_envs < 1 or args.eval_episodes < 0:
        parser.error("--total-timesteps and --num-envs must be >= 1 and --eval-episodes >= 0")
    if args.algo not in ("ppo", "sac"):
        parser.error(f"--algo must be ppo or sac, got {args.algo!r}")
    if args.algo == "ppo" and args.batch_size > args.n_steps * args.num_envs:
        parser.error(
            f"--batch-size {args.batch_size} exceeds a rollout of --n-steps × --num-envs = "
            f"{args.n_steps * args.num_envs}; lower it"
        )
    return args


# --- the task --------------------------------------------------------------------------------


def task_config(
    args: Args, waypoints_ned_m: tuple[tuple[float, float, float], ...] | None = None
) -> WaypointTaskConfig:
    """The waypoint task trained on: the demo's fence size, no keep-outs unless asked, randomised physics."""
    h = args.half_width_m
    layout = Layout(north_m=(-h, h), east_m=(-h, h), alt_floor_m=2.0, alt_ceiling_m=args.ceiling_alt_m)
    if not args.keepouts:
        # The shield, not the policy, keeps the vehicle out of keep-outs; the policy cannot see them.
        layout = dataclasses.replace(layout, keepouts=())
    return WaypointTaskConfig(
        layout=layout,
        # The env's default features: the goal (clipped to ±20 m, so far goals saturate) and velocity.
        feature_names=("goal_rel_ned_m", "vel_ned_m_s"),
        action_low=(-args.max_speed_ne_m_s, -args.max_speed_ne_m_s, -args.max_speed_d_m_s, -1.0),
        action_high=(args.max_speed_ne_m_s, args.max_speed_ne_m_s, args.max_speed_d_m_s, 1.0),
        n_waypoints=args.n_waypoints,
        waypoints_ned_m=waypoints_ned_m,
        time_limit_s=args.time_limit_s,
        randomization=Randomization(
            wind_speed_m_s=(0.0, args.wind_max_m_s),
            gust_std_m_s=(0.0, args.gust_max_m_s),
            mass_scale=(args.mass_scale_min, args.mass_scale_max),
            motor_strength=(args.motor_strength_min, 1.0),
        ),
    )


def demo_route_ned_m(path: Path) -> tuple[tuple[float, float, float], ...]:
    """The mission's waypoints as NED (north, east, altitude-up → down)."""
    try:
        route = tomllib.loads(path.read_text())["route"]["waypoints_nea_m"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise SystemExit(
            f"cannot read [route] waypoints_nea_m from {path}: {exc}; pass --demo-mission"
        ) from exc
    return tuple((float(n), float(e), -float(a)) for n, e, a in route)


# --- the constrained variant: a Lagrangian penalty on info["cost"] -----------------------------


class LagrangianPenalty(VecEnvWrapper):
    """Subtract λ·cost from each reward and keep the cost of finished episodes for the dual update.

    With ``--constrained`` the callback raises λ by dual ascent, λ ← max(0, λ + lr·(J_c − budget)),
    where J_c is the mean cost of the episodes finished in the last rollout; without it λ stays 0
    and the wrapper only measures the cost.
    """

    def __init__(self, venv: VecEnv, lam: float = 0.0) -> None:
        super().__init__(venv)
        self.lam = lam
        self._running = np.zeros(self.num_envs)
        self.episode_costs: deque[float] = deque(maxlen=10_000)

    def reset(self) -> NDArray[Any]:
        """Reset and zero the running episode costs."""
        self._running[:] = 0.0
        return self.venv.reset()  # type: ignore[return-value]

    def step_wait(self) -> VecEnvStepReturn:
        """Step, penalise by λ·cost, record finished episodes' costs."""
        obs, reward, dones, infos = self.venv.step_wait()
        cost = np.array([info.get("cost", 0.0) for info in infos])
        self._running += cost
        for i in np.flatnonzero(dones):
            self.episode_costs.append(float(self._running[i]))
            self._running[i] = 0.0
        return obs, reward - np.float32(self.lam) * cost.astype(np.float32), dones, infos


def dual_ascent(lam: float, mean_cost: float, budget: float, lr: float) -> float:
    """One projected dual-ascent step on the Lagrange multiplier: λ ← max(0, λ + lr·(J_c − budget))."""
    return max(0.0, lam + lr * (mean_cost - budget))


class TrainingLog(BaseCallback):
    """Log lines as training goes (SB3's progress bar needs ``rich``, not installed) and dual ascent on λ."""

    def __init__(self, penalty: LagrangianPenalty, args: Args) -> None:
        super().__init__()
        self.penalty = penalty
        self.args = args
        self.t0 = time.monotonic()
        self.next_log = 0
        # One dual step per PPO-rollout's worth of samples, whatever the algorithm's own rhythm.
        self.dual_every = args.n_steps * args.num_envs
        self.next_dual = self.dual_every
        self.last_cost = 0.0

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.num_timesteps >= self.next_dual:
            self.next_dual += self.dual_every
            costs = list(self.penalty.episode_costs)
            self.penalty.episode_costs.clear()
            if costs:
                self.last_cost = float(np.mean(costs))
                if self.args.constrained:
                    self.penalty.lam = dual_ascent(
                        self.penalty.lam, self.last_cost, self.args.cost_budget, self.args.lambda_lr
                    )
        if self.num_timesteps < self.next_log:
            return
        self.next_log = self.num_timesteps + max(self.args.total_timesteps // 40, 1)
        eps = list(self.model.ep_info_buffer or ())
        ret = float(np.mean([e["r"] for e in eps])) if eps else float("nan")
        success = float(np.mean([e["waypoint_index"] >= self.args.n_waypoints for e in eps])) if eps else 0.0
        elapsed = time.monotonic() - self.t0
        n = self.num_timesteps
        print(
            f"steps {n:>9,d} ({100 * n / self.args.total_timesteps:5.1f} %)  {n / elapsed:7,.0f} steps/s  "
            f"return {ret:7.2f}  success {success:5.1%}  episode cost {self.last_cost:6.2f}  "
            f"λ {self.penalty.lam:.3f}  {elapsed:6.0f} s",
            flush=True,
        )


def make_env(config: WaypointTaskConfig, num_envs: int) -> LagrangianPenalty:
    """WaypointVecEnv → SB3 adapter → episode stats → Lagrangian penalty (VecNormalize goes on top)."""
    venv = VecMonitor(SB3VecEnv(WaypointVecEnv(num_envs, config)), info_keywords=("waypoint_index",))
    return LagrangianPenalty(venv)


# --- evaluation ------------------------------------------------------------------------------


def evaluate(
    model: PPO | SAC, vecnorm: VecNormalize, config: WaypointTaskConfig, episodes: int, seed: int
) -> dict[str, float]:
    """Run each of ``episodes`` vehicles through one deterministic episode; aggregate the outcomes."""
    env = WaypointVecEnv(episodes, config)
    obs, _ = env.reset(seed=seed)
    n_wp = env.task.waypoints_ned_m.shape[1]
    done = np.zeros(episodes, dtype=bool)
    steps = np.zeros(episodes)
    cost = np.zeros(episodes)
    success = np.zeros(episodes, dtype=bool)
    crashed = np.zeros(episodes, dtype=bool)
    path_m = np.zeros(episodes)
    speed_sum = np.zeros(episodes)
    while not done.all():
        action, _ = model.predict(vecnorm.normalize_obs(obs), deterministic=True)
        obs, _, terminated, truncated, info = env.step(action)
        live = ~done
        steps[live] += 1
        cost[live] += info["cost"][live]
        speed = np.linalg.norm(env.sim.vel_ned_m_s, axis=1)
        speed_sum[live] += speed[live]
        path_m[live] += speed[live] / config.control_rate_hz
        ended = live & (terminated | truncated)
        success[ended] = info["waypoint_index"][ended] >= n_wp
        crashed[ended] = info["crashed"][ended]
        done |= ended
    t = steps / config.control_rate_hz
    return {
        "episodes": float(episodes),
        "success_rate": float(success.mean()),
        "mean_time_to_goal_s": float(t[success].mean()) if success.any() else float("nan"),
        "max_time_to_goal_s": float(t[success].max()) if success.any() else float("nan"),
        "mean_speed_m_s": float((speed_sum / np.maximum(steps, 1)).mean()),
        "mean_episode_cost": float(cost.mean()),
        "episodes_with_cost": float((cost > 0).mean()),
        "crash_rate": float(crashed.mean()),
    }


def _print_eval(name: str, r: dict[str, float]) -> None:
    print(
        f"eval {name}: {int(r['episodes'])} episodes, success {r['success_rate']:.1%}, "
        f"mean time to goal {r['mean_time_to_goal_s']:.1f} s (max {r['max_time_to_goal_s']:.1f} s), "
        f"mean speed {r['mean_speed_m_s']:.2f} m/s, safety cost {r['mean_episode_cost']:.2f} steps/episode "
        f"({r['episodes_with_cost']:.1%} of episodes), crashes {r['crash_rate']:.1%}",
        flush=True,
    )


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Train, save, evaluate; return 0."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config = task_config(args)
    penalty = make_env(config, args.num_envs)
    vecnorm = VecNormalize(penalty, norm_obs=True, norm_reward=True, clip_obs=10.0, gamma=args.gamma)

    net_arch = [args.net_width] * args.net_depth
    model: PPO | SAC
    if args.algo == "ppo":
        model = PPO(
            "MlpPolicy",
            vecnorm,
            learning_rate=lambda progress_remaining: args.learning_rate * progress_remaining,
            n_steps=args.n_steps,
            batch_size=args.batch_size,
            n_epochs=args.n_epochs,
            gamma=args.gamma,
            gae_lambda=args.gae_lambda,
            ent_coef=args.ent_coef,
            policy_kwargs={"net_arch": net_arch, "log_std_init": args.log_std_init},
            seed=args.seed,
            device="cpu",
            verbose=0,
        )
    else:
        model = SAC(
            "MlpPolicy",
            vecnorm,
            learning_rate=args.learning_rate,
            batch_size=args.sac_batch_size,
            gradient_steps=args.sac_gradient_steps,
            train_freq=1,
            learning_starts=10 * args.num_envs,
            gamma=args.gamma,
            policy_kwargs={"net_arch": net_arch},
            seed=args.seed,
            device="cpu",
            verbose=0,
        )
    print(
        f"training {args.algo.upper()}{'-Lagrangian' if args.constrained else ''} for {args.total_timesteps:,d} steps on "
        f"{args.num_envs} vehicles (seed {args.seed})",
        flush=True,
    )
    t0 = time.monotonic()
    model.learn(total_timesteps=args.total_timesteps, callback=TrainingLog(penalty, args))
    train_s = time.monotonic() - t0
    print(f"trained in {train_s:.0f} s", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    model.save(args.out / "model.zip")
    vecnorm.save(str(args.out / "vecnormalize.pkl"))
    print(f"saved {args.out / 'model.zip'} and {args.out / 'vecnormalize.pkl'}", flush=True)

    results: dict[str, Any] = {"train_wall_s": train_s, "final_lambda": penalty.lam}
    if args.eval_episodes > 0:
        vecnorm.training = False
        results["random_waypoints"] = evaluate(model, vecnorm, config, args.eval_episodes, args.eval_seed)
        _print_eval("random waypoints", results["random_waypoints"])
        demo_config = task_config(args, waypoints_ned_m=demo_route_ned_m(args.demo_mission))
        results["demo_route"] = evaluate(model, vecnorm, demo_config, args.eval_episodes, args.eval_seed + 1)
        _print_eval(f"demo route ({args.demo_mission.name})", results["demo_route"])
    (args.out / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
