"""Export Stable-Baselines3 PPO, SAC and TD3 models (``.zip``) with optional VecNormalize.

The bundle's graph reproduces ``predict(obs, deterministic=True)`` exactly as SB3 computes it,
plus what SB3 keeps outside the policy: VecNormalize's observation statistics (read from SB3's
own saved file) in front, and the unscale from the env's Box[-1, 1]^A to the spec's physical
bounds behind. SAC's tanh squash (and gSDE's, where used) stays in the graph; PPO's Gaussian mean
is clipped as ``predict`` clips it. The parity reference is SB3's own ``predict``, not our
re-implementation of it.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from edge_agent.errors import ConfigError, ExportError
from export.graph import ActionUnscale, FeedForwardGraph, ObsNormalizer
from export.module import physical_from_normalized
from export.pipeline import F32, F64, ExportReport, Reference, build_bundle
from export.spec import ExportSpec

SB3_ALGOS = ("ppo", "sac", "td3")
"""Stable-Baselines3 algorithms the exporter reads."""


@dataclass(frozen=True, slots=True, eq=False)
class ObsNormStats:
    """VecNormalize's observation statistics: mean and var [D], epsilon, clip_obs."""

    mean: NDArray[np.float64]
    var: NDArray[np.float64]
    epsilon: float
    clip_obs: float


def _algo_class(algo: str) -> Any:
    import stable_baselines3 as sb3

    name = algo.lower()
    if name not in SB3_ALGOS:
        raise ConfigError(f"algorithm {algo!r} is not supported; use one of: {', '.join(SB3_ALGOS)}")
    return {"ppo": sb3.PPO, "sac": sb3.SAC, "td3": sb3.TD3}[name]


def load_sb3(path: Path | str, algo: str) -> Any:
    """Load an SB3 model from its ``.zip`` on the CPU."""
    cls = _algo_class(algo)
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"SB3 model {str(path)!r} does not exist; pass the .zip written by model.save()")
    try:
        return cls.load(str(path), device="cpu")
    except Exception as exc:  # SB3 raises many types for a wrong or corrupt zip
        raise ExportError(f"cannot load {str(path)!r} as an SB3 {algo.upper()} model: {exc}") from exc


def load_vecnormalize(path: Path | str) -> ObsNormStats | None:
    """Observation statistics from SB3's saved VecNormalize file; None if it has ``norm_obs=False``.

    Unpickling runs code from the file: load only files you produced. The statistics are folded
    into the ONNX graph as constants, so nothing pickled reaches the bundle.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"VecNormalize file {str(path)!r} does not exist; pass the file written by VecNormalize.save()"
        )
    from stable_baselines3.common.running_mean_std import RunningMeanStd
    from stable_baselines3.common.vec_env import VecNormalize

    with path.open("rb") as fh:
        vec = pickle.load(fh)
    if not isinstance(vec, VecNormalize):
        raise ConfigError(
            f"{str(path)!r} holds a {type(vec).__name__}, not a VecNormalize; pass VecNormalize.save()'s file"
        )
    rms = vec.obs_rms
    if not isinstance(rms, RunningMeanStd):
        raise ExportError("VecNormalize with dict observations is not supported; use a flat Box observation")
    mean = np.asarray(rms.mean, dtype=np.float64)
    var = np.asarray(rms.var, dtype=np.float64)
    if not vec.norm_obs:
        return None  # SB3 passes observations through untouched: nothing to fold in
    return ObsNormStats(mean, var, float(vec.epsilon), float(vec.clip_obs))


def normalize(obs: NDArray[np.floating], stats: ObsNormStats) -> F32:
    """SB3's ``VecNormalize.normalize_obs`` on [N, D] (float64 arithmetic, float32 result)."""
    x = (np.asarray(obs, dtype=np.float64) - stats.mean) / np.sqrt(stats.var + stats.epsilon)
    return np.clip(x, -stats.clip_obs, stats.clip_obs).astype(np.float32)


class _PpoActor(nn.Module):
    """PPO's deterministic action: the distribution's mode before ``predict``'s clip."""

    def __init__(self, policy: Any):
        super().__init__()
        from stable_baselines3.common.distributions import (
            DiagGaussianDistribution,
            StateDependentNoiseDistribution,
        )

        dist = policy.action_dist
        if not isinstance(dist, DiagGaussianDistribution | StateDependentNoiseDistribution):
            raise ExportError(
                f"PPO action distribution {type(dist).__name__} is not supported; the bundle needs a "
                f"continuous Box action space (Gaussian or gSDE)"
            )
        self.policy = policy
        # gSDE with squash_output has a tanh bijector; its mode is tanh(mean).
        self.squash = isinstance(dist, StateDependentNoiseDistribution) and dist.bijector is not None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Normalised obs [B, D] → action [B, A] in the env's scale."""
        p = self.policy
        features = p.extract_features(obs, p.pi_features_extractor)
        mean = p.action_net(p.mlp_extractor.forward_actor(features))
        return torch.tanh(mean) if self.squash else mean


class _SacActor(nn.Module):
    """SAC's deterministic action: tanh of the Gaussian mean (the squash SB3's ONNX recipe drops)."""

    def __init__(self, policy: Any):
        super().__init__()
        self.actor = policy.actor

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Normalised obs [B, D] → action [B, A] in [-1, 1]."""
        mean, _, _ = self.actor.get_action_dist_params(obs)
        return torch.tanh(mean)


class _Td3Actor(nn.Module):
    """TD3's actor (its network already ends in tanh)."""

    def __init__(self, policy: Any):
        super().__init__()
        self.actor = policy.actor

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Normalised obs [B, D] → action [B, A] in [-1, 1]."""
        return self.actor(obs)


def _check_spaces(model: Any, spec: ExportSpec) -> None:
    from gymnasium import spaces

    obs_space, act_space = model.observation_space, model.action_space
    if not isinstance(obs_space, spaces.Box) or obs_space.shape != (spec.observation_size,):
        raise ExportError(
            f"the SB3 model's observation space is {obs_space} but the spec's features make a vector of "
            f"{spec.observation_size}; list the features the policy was trained on, in order"
        )
    if not isinstance(act_space, spaces.Box) or act_space.shape != (spec.action_size,):
        raise ExportError(
            f"the SB3 model's action space is {act_space} but the spec's action kind "
            f"{spec.action_kind!r} has {spec.action_size} elements"
        )
    if not (np.all(act_space.low == -1.0) and np.all(act_space.high == 1.0)):
        raise ExportError(
            f"the SB3 model's action space is Box({act_space.low.tolist()}, {act_space.high.tolist()}) but "
            f"the exporter expects Box[-1, 1]^{spec.action_size} with physical bounds in the spec; train "
            f"with a normalised action space (the usual SB3 advice) or rescale in a wrapper"
        )


def _sb3_reference(model: Any, spec: ExportSpec, stats: ObsNormStats | None) -> Reference:
    def reference(obs: F32, state: F32 | None) -> tuple[F64, F64 | None]:
        x = obs if stats is None else normalize(obs, stats)
        action, _ = model.predict(x, deterministic=True)
        return physical_from_normalized(action, spec), None

    return reference


def _file_source(path: Path) -> dict[str, str]:
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def export_sb3(
    model_path: Path | str,
    algo: str,
    spec: ExportSpec,
    out_dir: Path | str,
    *,
    vecnormalize_path: Path | str | None = None,
    recorded_obs: NDArray[np.floating] | None = None,
    n_random: int = 10_000,
    quantize: bool = False,
    rng: np.random.Generator | None = None,
    overwrite: bool = False,
) -> ExportReport:
    """Export an SB3 PPO/SAC/TD3 ``.zip`` (and optional VecNormalize file) as a verified bundle.

    The bundle's output equals ``low + (predict(obs, deterministic=True) + 1) / 2 · (high − low)``
    where ``predict`` includes the VecNormalize step; observations are raw (unnormalised).
    """
    if spec.recurrent_state_size:
        raise ConfigError(
            "SB3 PPO/SAC/TD3 policies are feed-forward; set recurrent_state_size = 0 in the spec"
        )
    if spec.module_output != "normalized":
        raise ConfigError('SB3 policies act in Box[-1, 1]; set module_output = "normalized" in the spec')
    model_path = Path(model_path)
    model = load_sb3(model_path, algo)
    _check_spaces(model, spec)
    policy = model.policy
    policy.set_training_mode(False)
    core = {"ppo": _PpoActor, "sac": _SacActor, "td3": _Td3Actor}[algo.lower()](policy)
    stats = None if vecnormalize_path is None else load_vecnormalize(vecnormalize_path)
    normalizer = None
    source: dict[str, Any] = {"kind": "stable-baselines3", "algo": algo.upper(), **_file_source(model_path)}
    if vecnormalize_path is not None:
        source["vecnormalize"] = {**_file_source(Path(vecnormalize_path)), "norm_obs": stats is not None}
    if stats is not None:
        if stats.mean.shape != (spec.observation_size,):
            raise ExportError(
                f"VecNormalize statistics have shape {list(stats.mean.shape)} but the observation has "
                f"{spec.observation_size} elements; pass the VecNormalize file saved with this model"
            )
        normalizer = ObsNormalizer(stats.mean, stats.var, stats.epsilon, stats.clip_obs)
        source["vecnormalize"].update(epsilon=stats.epsilon, clip_obs=stats.clip_obs)
    graph = FeedForwardGraph(core, ActionUnscale(spec.action_low, spec.action_high), normalizer)
    return build_bundle(
        graph,
        _sb3_reference(model, spec, stats),
        spec,
        out_dir,
        source=source,
        recorded_obs=recorded_obs,
        n_random=n_random,
        quantize=quantize,
        rng=rng,
        overwrite=overwrite,
    )


__all__ = ["SB3_ALGOS", "ObsNormStats", "export_sb3", "load_sb3", "load_vecnormalize", "normalize"]
