"""Helpers for export tests: a tiny Gymnasium env, a spec, small torch policies."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from export.spec import ExportSpec, feature

OBS_FEATURES = ("goal_rel_ned_m", "vel_ned_m_s", "yaw_sin_cos_ned")
D = 8
A = 4


def make_spec(**overrides: Any) -> ExportSpec:
    """The spec the tests export with: 8 observation values, velocity NED + yaw rate."""
    fields: dict[str, Any] = {
        "observation": (
            feature("goal_rel_ned_m", -10.0, 10.0),
            feature("vel_ned_m_s", -4.0, 4.0),
            feature("yaw_sin_cos_ned"),
        ),
        "action_kind": "velocity_ned_yaw_rate",
        "action_low": (-3.0, -2.0, -1.0, -0.5),
        "action_high": (3.0, 2.5, 1.5, 0.5),
        "control_rate_hz": 50.0,
    }
    fields.update(overrides)
    return ExportSpec(**fields)


class TinyEnv(gym.Env[np.ndarray, np.ndarray]):
    """Observation in the spec's clip box, action Box[-1, 1]^4; reward pulls the action to a target."""

    def __init__(self, seed: int = 0) -> None:
        lo = np.array([-10.0] * 3 + [-4.0] * 3 + [-1.0] * 2, dtype=np.float32)
        self.observation_space = gym.spaces.Box(lo, -lo, dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(A,), dtype=np.float32)
        self._rng = np.random.default_rng(seed)
        self._obs = np.zeros(D, dtype=np.float32)
        self._t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._t = 0
        self._obs = self.observation_space.sample().astype(np.float32) * 0.5 + 1.0
        return self._obs.copy(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._t += 1
        reward = -float(np.sum((action - np.tanh(self._obs[:A] / 5.0)) ** 2))
        self._obs = np.clip(self._obs + self._rng.normal(0, 1.0, D).astype(np.float32), -4, 4)
        return self._obs.copy(), reward, False, self._t >= 32, {}


def perturb(module: nn.Module, seed: int, scale: float = 0.3) -> None:
    """Add seeded noise to every parameter, so an untrained network is not near-trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


class Mlp(nn.Module):
    """obs [B, 8] → tanh action [B, 4]: a 2x32 MLP."""

    def __init__(self, seed: int = 0, squash: bool = True) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(D, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, A))
        self.squash = squash

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.net(obs)
        return torch.tanh(out) if self.squash else out
