"""Misuse of ``edge-agent export --sb3`` (issue 18, case 3): asymmetric Box action spaces as SB3
users have them, a VecNormalize file left out, ``--algo`` naming the wrong algorithm."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from export_fixtures import D, TinyEnv, make_spec, perturb
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from edge_agent.bundle import load_bundle
from edge_agent.cli import main
from edge_agent.errors import ConfigError, ExportError
from edge_agent.policy import PolicyRunner
from export.sb3 import export_sb3, identify_sb3

ALGOS: dict[str, Any] = {"ppo": PPO, "sac": SAC, "td3": TD3}
SPEC = make_spec(module_output="physical")  # bounds (-3, -2, -1, -0.5) .. (3, 2.5, 1.5, 0.5): asymmetric
LOW = np.asarray(SPEC.action_low, dtype=np.float32)
HIGH = np.asarray(SPEC.action_high, dtype=np.float32)


class AsymmetricEnv(TinyEnv):
    """The tiny env with its action space in physical units: Box(LOW, HIGH), not Box[-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.action_space = gym.spaces.Box(LOW, HIGH, dtype=np.float32)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        return super().step((2.0 * (action - LOW) / (HIGH - LOW) - 1.0).astype(np.float32))


def _train(algo: str, folder: Path, *, vecnorm: bool = True, steps: int = 256) -> tuple[Path, Path | None]:
    """A few hundred steps of real learning, then weights perturbed so actions reach the bounds."""
    folder.mkdir(parents=True, exist_ok=True)
    venv = DummyVecEnv([AsymmetricEnv])
    env: Any = VecNormalize(venv, norm_obs=True, norm_reward=False, clip_obs=5.0) if vecnorm else venv
    kwargs: dict[str, Any] = {"policy_kwargs": {"net_arch": [16, 16]}, "seed": 0, "device": "cpu"}
    if algo == "ppo":
        model = PPO("MlpPolicy", env, n_steps=128, batch_size=64, n_epochs=2, **kwargs)
    else:
        model = ALGOS[algo]("MlpPolicy", env, learning_starts=64, train_freq=16, gradient_steps=4, **kwargs)
    model.learn(steps)
    perturb(model.policy, seed=len(algo), scale=0.4)
    path = folder / f"{algo}.zip"
    model.save(path)
    vn_path = None
    if vecnorm:
        vn_path = folder / "vecnormalize.pkl"
        env.save(vn_path)
    return path, vn_path


def _obs(n: int, seed: int) -> np.ndarray:
    lo = np.array([-10.0] * 3 + [-4.0] * 3 + [-1.0] * 2)
    return np.random.default_rng(seed).uniform(lo, -lo, size=(n, D)).astype(np.float32)


@pytest.mark.parametrize("algo", ["ppo", "sac", "td3"])
def test_case3_asymmetric_box_and_vecnormalize_equal_sb3_predict(tmp_path: Path, algo: str) -> None:
    model_path, vn_path = _train(algo, tmp_path / "m")
    export_sb3(model_path, algo, SPEC, tmp_path / "bundle", vecnormalize_path=vn_path)

    # The reference is SB3 itself, loaded fresh from the files, as a user runs it.
    model = ALGOS[algo].load(model_path, device="cpu")
    vn = VecNormalize.load(str(vn_path), DummyVecEnv([AsymmetricEnv]))
    rms: Any = vn.obs_rms
    assert np.max(np.abs(rms.mean)) > 0.05, "statistics must be non-trivial for the test to mean anything"
    obs = _obs(500, seed=7)
    want, _ = model.predict(vn.normalize_obs(obs), deterministic=True)
    got = PolicyRunner(load_bundle(tmp_path / "bundle")).act(obs)
    assert np.max(np.abs(got - want.astype(np.float64))) <= 1e-5
    assert np.all(got >= LOW - 1e-6) and np.all(got <= HIGH + 1e-6)
    # Non-trivial: actions spread over the asymmetric range, and PPO's mean is really clipped.
    assert np.std(want, axis=0).min() > 0.05
    if algo == "ppo":
        assert np.mean(np.isclose(want, LOW) | np.isclose(want, HIGH)) > 0.05


def test_case3_an_asymmetric_box_declared_normalized_is_refused_with_the_fix(tmp_path: Path) -> None:
    model_path, vn_path = _train("td3", tmp_path / "m", steps=100)
    message = (
        'so its predict returns actions in those units, not in [-1, 1] as module_output = "normalized" '
        'says; set module_output = "physical" in the spec (its action bounds already equal the env\'s)'
    )
    with pytest.raises(ExportError, match=re.escape(message)):
        export_sb3(model_path, "td3", make_spec(), tmp_path / "b", vecnormalize_path=vn_path)
    wrong = make_spec(module_output="physical", action_high=(3.0, 2.0, 1.5, 0.5))
    with pytest.raises(ExportError, match=re.escape("differs from the spec's bounds")):
        export_sb3(model_path, "td3", wrong, tmp_path / "b", vecnormalize_path=vn_path)
    assert not (tmp_path / "b").exists()


def test_case3_vecnormalize_beside_the_model_must_be_given_or_waived(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_path, vn_path = _train("sac", tmp_path / "m", steps=100)
    assert vn_path is not None
    message = (
        f"{str(vn_path)!r} beside {str(model_path)!r} is a VecNormalize file: SB3 keeps the observation "
        f"statistics the policy was trained with outside the model"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        export_sb3(model_path, "sac", SPEC, tmp_path / "b")
    assert not (tmp_path / "b").exists()

    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(
        'control_rate_hz = 50.0\nmodule_output = "physical"\n'
        '[[observation]]\nname = "goal_rel_ned_m"\nclip = [-10.0, 10.0]\n'
        '[[observation]]\nname = "vel_ned_m_s"\nclip = [-4.0, 4.0]\n'
        '[[observation]]\nname = "yaw_sin_cos_ned"\n'
        '[action]\nkind = "velocity_ned_yaw_rate"\nlow = [-3.0, -2.0, -1.0, -0.5]\nhigh = [3.0, 2.5, 1.5, 0.5]\n',
        encoding="utf-8",
    )
    base = ["export", "--spec", str(spec_path), "--sb3", str(model_path), "--algo", "sac"]
    assert main([*base, "--out", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert f"pass --vecnormalize {vn_path} (or --no-vecnormalize if this model" in err, err
    # Waived explicitly: exported without the statistics, as asked.
    assert main([*base, "--out", str(tmp_path / "d"), "--no-vecnormalize"]) == 0
    assert "vecnormalize" not in load_bundle(tmp_path / "d").manifest.producer["source"]
    assert main([*base, "--out", str(tmp_path / "e"), "--vecnormalize", str(vn_path)]) == 0
    capsys.readouterr()


def test_case3_algo_mismatch_names_what_the_file_is(tmp_path: Path) -> None:
    model_path, _ = _train("ppo", tmp_path / "m", vecnorm=False, steps=128)
    assert identify_sb3(model_path)[0] == "ppo"
    message = (
        f"{str(model_path)!r} is a Stable-Baselines3 PPO model (policy "
        f"stable_baselines3.common.policies.ActorCriticPolicy), not SAC: pass --algo ppo"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        export_sb3(model_path, "sac", SPEC, tmp_path / "b")
    sac_path, _ = _train("sac", tmp_path / "s", vecnorm=False, steps=80)
    with pytest.raises(
        ConfigError,
        match=re.escape("is a Stable-Baselines3 SAC model (policy stable_baselines3.sac.policies."),
    ):
        export_sb3(sac_path, "td3", SPEC, tmp_path / "b")
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match=re.escape("is not a Stable-Baselines3 model file")):
        export_sb3(junk, "ppo", SPEC, tmp_path / "b")
