"""Torch modules that wrap a policy core into the bundle's graph contract.

The bundle graph maps raw observations to physical actions, so everything around the network
that frameworks keep outside it (VecNormalize statistics, SAC's tanh squash, the clip and the
unscale to physical bounds) is folded in here before tracing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn


class ObsNormalizer(nn.Module):
    """VecNormalize's observation transform: clip((obs − mean) / sqrt(var + eps), ±clip_obs)."""

    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(self, mean: NDArray[np.float64], var: NDArray[np.float64], epsilon: float, clip_obs: float):
        super().__init__()
        # Folded in float64 and stored as float32 constants, so the graph does one sub and one mul.
        inv_std = 1.0 / np.sqrt(np.asarray(var, dtype=np.float64) + float(epsilon))
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, dtype=np.float32)))
        self.register_buffer("inv_std", torch.as_tensor(inv_std.astype(np.float32)))
        self.clip_obs = float(clip_obs)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """[B, D] raw observation → [B, D] normalised observation."""
        return torch.clamp((obs - self.mean) * self.inv_std, -self.clip_obs, self.clip_obs)


class ActionUnscale(nn.Module):
    """Clip a normalised action to [-1, 1] and map it affinely onto [low, high] (physical units)."""

    half_range: torch.Tensor
    mid: torch.Tensor

    def __init__(self, low: Sequence[float], high: Sequence[float]):
        super().__init__()
        lo = np.asarray(low, dtype=np.float64)
        hi = np.asarray(high, dtype=np.float64)
        self.register_buffer("half_range", torch.as_tensor(((hi - lo) / 2.0).astype(np.float32)))
        self.register_buffer("mid", torch.as_tensor(((hi + lo) / 2.0).astype(np.float32)))

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        """[B, A] in [-1, 1] (clipped if not) → [B, A] in [low, high]."""
        return torch.clamp(action, -1.0, 1.0) * self.half_range + self.mid


class ActionClip(nn.Module):
    """Clip an action that is already in physical units to [low, high]."""

    low: torch.Tensor
    high: torch.Tensor

    def __init__(self, low: Sequence[float], high: Sequence[float]):
        super().__init__()
        self.register_buffer("low", torch.as_tensor(np.asarray(low, dtype=np.float32)))
        self.register_buffer("high", torch.as_tensor(np.asarray(high, dtype=np.float32)))

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        """[B, A] → [B, A] clipped element-wise."""
        return torch.minimum(torch.maximum(action, self.low), self.high)


class FeedForwardGraph(nn.Module):
    """obs [B, D] → action [B, A]: optional normaliser, the core, then post-processing."""

    def __init__(self, core: nn.Module, post: nn.Module, normalizer: nn.Module | None = None):
        super().__init__()
        self.core = core
        self.post = post
        self.normalizer = normalizer if normalizer is not None else nn.Identity()

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """The bundle's graph function."""
        return self.post(self.core(self.normalizer(obs)))


class RecurrentGraph(nn.Module):
    """(obs [B, D], state_in [B, H]) → (action [B, A], state_out [B, H])."""

    def __init__(self, core: nn.Module, post: nn.Module, normalizer: nn.Module | None = None):
        super().__init__()
        self.core = core
        self.post = post
        self.normalizer = normalizer if normalizer is not None else nn.Identity()

    def forward(self, obs: torch.Tensor, state_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The bundle's graph function with state carried explicitly."""
        action, state_out = self.core(self.normalizer(obs), state_in)
        return self.post(action), state_out


__all__ = ["ActionClip", "ActionUnscale", "FeedForwardGraph", "ObsNormalizer", "RecurrentGraph"]
