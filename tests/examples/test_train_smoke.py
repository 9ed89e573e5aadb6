"""The example training script: the SB3 adapter, the Lagrangian penalty, and a tiny-budget run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from examples.sb3_vecenv import SB3VecEnv
from examples.train import Args, LagrangianPenalty, dual_ascent, parse_args, task_config
from sitl.envs import Layout, WaypointTaskConfig, WaypointVecEnv

ROOT = Path(__file__).resolve().parents[2]


def _short_config(**overrides: object) -> WaypointTaskConfig:
    base: dict[str, object] = {"time_limit_s": 0.2, "randomization": task_config(Args()).randomization}
    base.update(overrides)
    return WaypointTaskConfig(**base)  # type: ignore[arg-type]


def test_adapter_translates_gymnasium_results_into_sb3_conventions() -> None:
    env = SB3VecEnv(WaypointVecEnv(4, _short_config()))  # 10 steps per episode
    env.seed(3)
    obs = np.asarray(env.reset())
    assert obs.shape == (4, 6) and obs.dtype == np.float32
    hover = np.zeros((4, 4), dtype=np.float32)
    for _ in range(9):
        _, reward, dones, infos = env.step(hover)
        assert not dones.any()
        assert reward.shape == (4,) and len(infos) == 4
        assert set(infos[0]) >= {"cost", "crashed", "goal_reached", "violation_m", "waypoint_index"}
    last, reward, dones, infos = env.step(hover)
    assert dones.all()  # the time limit cut every episode on the 10th step ...
    for info in infos:
        assert info["TimeLimit.truncated"] is True  # ... so SB3 must bootstrap them
        assert info["terminal_observation"].shape == (6,)
        # The final observation is the pre-reset one; the returned obs is the new episode's.
    assert not np.allclose(infos[0]["terminal_observation"], np.asarray(last)[0])


def test_adapter_reset_with_a_seed_is_reproducible_and_used_once() -> None:
    env = SB3VecEnv(WaypointVecEnv(3, _short_config()))
    env.seed(7)
    first = env.reset()
    env.seed(7)
    again = env.reset()
    unseeded = env.reset()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, unseeded)


def test_adapter_refuses_a_vector_env_that_resets_on_the_next_step() -> None:
    venv = gymnasium.vector.SyncVectorEnv(
        [lambda: gymnasium.make("Pendulum-v1")], autoreset_mode=AutoresetMode.NEXT_STEP
    )
    with pytest.raises(ValueError, match=re.escape("needs a VectorEnv with autoreset_mode SAME_STEP")):
        SB3VecEnv(venv)


def test_adapter_refuses_to_set_an_attribute_on_part_of_the_batch() -> None:
    env = SB3VecEnv(WaypointVecEnv(2, _short_config()))
    with pytest.raises(ValueError, match=re.escape("cannot set 'x' on a subset of environments")):
        env.set_attr("x", 1, indices=[0])
    assert env.get_attr("num_envs", indices=[1]) == [2]


def test_lagrangian_penalty_subtracts_lambda_times_cost_from_the_reward() -> None:
    # Start close to the altitude floor and descend at full speed: most vehicles breach it.
    config = _short_config(
        layout=Layout(alt_ceiling_m=5.0, keepouts=()), start_margin_m=0.3, time_limit_s=2.0
    )
    plain = SB3VecEnv(WaypointVecEnv(64, config))
    penalised = LagrangianPenalty(SB3VecEnv(WaypointVecEnv(64, config)), lam=2.5)
    for env in (plain, penalised):
        env.seed(11)
        env.reset()
    down = np.tile(np.array([0.0, 0.0, 1.0, 0.0], dtype=np.float32), (64, 1))
    total_cost = 0.0
    for _ in range(60):
        _, r_plain, _, infos = plain.step(down)
        _, r_pen, _, _ = penalised.step(down)
        cost = np.array([i["cost"] for i in infos])
        total_cost += cost.sum()
        np.testing.assert_allclose(r_pen, r_plain - 2.5 * cost, rtol=0, atol=1e-5)
    assert total_cost > 300  # the check above compared real breaches, not only zeros


def test_dual_ascent_raises_lambda_over_budget_and_never_goes_negative() -> None:
    assert dual_ascent(0.5, mean_cost=3.0, budget=1.0, lr=0.1) == pytest.approx(0.7)
    assert dual_ascent(0.5, mean_cost=0.0, budget=1.0, lr=0.1) == pytest.approx(0.4)
    assert dual_ascent(0.05, mean_cost=0.0, budget=1.0, lr=0.1) == 0.0


def test_help_lists_every_field_with_its_docstring(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--total-timesteps" in out and "environment steps (vehicle-steps at 50 Hz) to train for" in out
    assert "--constrained, --no-constrained" in out


def test_bad_budget_is_refused_with_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--batch-size", "4096", "--n-steps", "8", "--num-envs", "4"])
    assert "--batch-size 4096 exceeds a rollout of --n-steps × --num-envs = 32; lower it" in (
        capsys.readouterr().err
    )


def test_script_trains_saves_and_evaluates_with_a_tiny_budget(tmp_path: Path) -> None:
    out = tmp_path / "policy"
    cmd = [
        sys.executable, "-m", "examples.train",
        "--total-timesteps", "1024", "--num-envs", "8", "--n-steps", "64", "--batch-size", "256",
        "--n-epochs", "1", "--time-limit-s", "3", "--eval-episodes", "4", "--constrained",
        "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "training PPO-Lagrangian for 1,024 steps on 8 vehicles (seed 1)" in proc.stdout
    assert re.search(r"eval random waypoints: 4 episodes, success \d+\.\d%", proc.stdout)
    assert re.search(r"eval demo route \(demo\.toml\): 4 episodes", proc.stdout)
    assert (out / "model.zip").is_file() and (out / "vecnormalize.pkl").is_file()
    results = json.loads((out / "eval.json").read_text())
    for part in ("random_waypoints", "demo_route"):
        assert results[part]["episodes"] == 4
        assert 0.0 <= results[part]["success_rate"] <= 1.0
        assert results[part]["mean_episode_cost"] >= 0.0
    assert results["final_lambda"] >= 0.0
