"""Stable-Baselines3 PPO / SAC / TD3 (± VecNormalize) → bundle → equals SB3's own predict."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from export_fixtures import A, D, TinyEnv, make_spec, perturb
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from edge_agent.bundle import load_bundle
from edge_agent.errors import ExportError
from edge_agent.policy import PolicyRunner
from export.sb3 import export_sb3

ALGOS: dict[str, Any] = {"ppo": PPO, "sac": SAC, "td3": TD3}
NET = {"net_arch": [16, 16]}


def _train(algo: str, tmp_path: Path, vecnorm: bool) -> tuple[Path, Path | None]:
    """A tiny model, made non-trivial by a short learn (PPO) or perturbed weights; saved as SB3 does."""
    venv = DummyVecEnv([TinyEnv])
    env: Any = VecNormalize(venv, norm_obs=True, norm_reward=True, clip_obs=5.0) if vecnorm else venv
    if algo == "ppo":
        model = PPO(
            "MlpPolicy",
            env,
            policy_kwargs=dict(NET),
            n_steps=64,
            batch_size=32,
            n_epochs=1,
            seed=0,
            device="cpu",
        )
        model.learn(64)
    else:
        model = ALGOS[algo](
            "MlpPolicy", env, policy_kwargs=dict(NET), learning_starts=1000, seed=0, device="cpu"
        )
        model.learn(64)  # fills the buffer and, with VecNormalize, the running statistics
    perturb(model.policy, seed=len(algo), scale=0.3)
    model_path = tmp_path / f"{algo}.zip"
    model.save(model_path)
    vn_path = None
    if vecnorm:
        vn_path = tmp_path / "vecnormalize.pkl"
        env.save(vn_path)
    return model_path, vn_path


def _obs(n: int, seed: int, spread: float = 1.0) -> np.ndarray:
    lo = np.array([-10.0] * 3 + [-4.0] * 3 + [-1.0] * 2) * spread
    return np.random.default_rng(seed).uniform(lo, -lo, size=(n, D)).astype(np.float32)


@pytest.mark.parametrize("vecnorm", [False, True], ids=["raw", "vecnormalize"])
@pytest.mark.parametrize("algo", ["ppo", "sac", "td3"])
def test_sb3_round_trip_equals_predict_in_physical_units(tmp_path: Path, algo: str, vecnorm: bool) -> None:
    spec = make_spec()
    model_path, vn_path = _train(algo, tmp_path, vecnorm)
    report = export_sb3(model_path, algo, spec, tmp_path / "bundle", vecnormalize_path=vn_path)
    assert report.parity_max_abs_error <= 1e-5

    # The reference is SB3 itself, loaded fresh from the files, as a user would run it.
    model = ALGOS[algo].load(model_path, device="cpu")
    obs = _obs(400, seed=123, spread=1.3)  # also beyond the clip box: the graph is the same function
    x: Any = obs
    if vn_path is not None:
        vn = VecNormalize.load(str(vn_path), DummyVecEnv([TinyEnv]))
        rms: Any = vn.obs_rms
        assert np.max(np.abs(rms.mean)) > 0.05, "statistics must be non-trivial for the test to mean anything"
        x = vn.normalize_obs(obs)
    predicted, _ = model.predict(x, deterministic=True)
    low, high = np.asarray(spec.action_low), np.asarray(spec.action_high)
    want = low + (predicted.astype(np.float64) + 1.0) / 2.0 * (high - low)

    bundle = load_bundle(tmp_path / "bundle")
    got = PolicyRunner(bundle).act(obs)
    assert np.max(np.abs(got - want)) <= 1e-5
    assert np.std(predicted) > 0.05, "actions must vary with the observation"
    source = bundle.manifest.producer["source"]
    assert source["algo"] == algo.upper() and ("vecnormalize" in source) == vecnorm


def test_sac_graph_keeps_the_tanh_squash(tmp_path: Path) -> None:
    """SB3's ONNX recipe exports the Gaussian mean; the bundle must squash it as predict does."""
    model_path, _ = _train("sac", tmp_path, vecnorm=False)
    sac = SAC.load(model_path, device="cpu")
    perturb(sac.policy.actor, seed=9, scale=0.35)  # large means: unsquashed they would leave [-1, 1]
    sac.save(tmp_path / "big.zip")
    obs = _obs(300, seed=5)
    with torch.no_grad():
        mean = sac.policy.actor.get_action_dist_params(torch.from_numpy(obs))[0].numpy().astype(np.float64)
    assert np.abs(mean).max() > 1.5, np.abs(mean).max()
    spec = make_spec()
    export_sb3(tmp_path / "big.zip", "sac", spec, tmp_path / "b")
    got = PolicyRunner(load_bundle(tmp_path / "b")).act(obs)
    low, high = np.asarray(spec.action_low), np.asarray(spec.action_high)
    squashed = low + (np.tanh(mean) + 1) / 2 * (high - low)
    assert np.max(np.abs(got - squashed)) <= 1e-5


class WideActionEnv(TinyEnv):
    """Action space Box[-2, 2]: physical bounds belong in the spec, not the env."""

    def __init__(self) -> None:
        super().__init__()
        self.action_space = gym.spaces.Box(-2.0, 2.0, shape=(A,), dtype=np.float32)


def test_action_space_other_than_unit_box_is_refused(tmp_path: Path) -> None:
    model = TD3("MlpPolicy", DummyVecEnv([WideActionEnv]), policy_kwargs=dict(NET), device="cpu")
    model.save(tmp_path / "m.zip")
    with pytest.raises(
        ExportError, match=re.escape('not in [-1, 1] as module_output = "normalized" says; set module_output')
    ):
        export_sb3(tmp_path / "m.zip", "td3", make_spec(), tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_observation_size_mismatch_is_refused(tmp_path: Path) -> None:
    model_path, _ = _train("td3", tmp_path, vecnorm=False)
    spec = make_spec(observation=make_spec().observation[:2])
    with pytest.raises(ExportError, match=re.escape("but the spec's features make a vector of 6")):
        export_sb3(model_path, "td3", spec, tmp_path / "b")
