"""Export Stable-Baselines3 PPO, SAC and TD3 models (``.zip``) with optional VecNormalize.

The bundle's graph reproduces ``predict(obs, deterministic=True)`` exactly as SB3 computes it,
plus what SB3 keeps outside the policy: VecNormalize's observation statistics (read from SB3's
own saved file) in front, and the map to the spec's physical bounds behind. SB3's
``BasePolicy.predict`` ends, for a Box action space [low, high], in ``unscale_action`` (low +
(a + 1)/2 · (high − low)) for squashed policies (SAC, TD3, gSDE with squash_output) and in a clip
to [low, high] otherwise (PPO's Gaussian mean); the graph does the same, for any finite Box:

- ``module_output = "normalized"`` (the default): the env's Box is [-1, 1]^A and the spec's
  bounds are the physical range it is unscaled to;
- ``module_output = "physical"``: the env's Box *is* the physical range (asymmetric bounds as SB3
  users often have), and the spec's bounds must equal it.

The parity reference is SB3's own ``predict``, not our re-implementation of it. Before loading,
the ``.zip`` is read as data (never unpickled) to say in words what it holds when ``--algo``
does not match, and a VecNormalize file lying beside it must be passed or waived explicitly:
exporting without the statistics the policy was trained with gives grossly wrong actions.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from edge_agent.errors import ConfigError, ExportError
from export.graph import ActionClip, ActionUnscale, FeedForwardGraph, ObsNormalizer
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


_POLICY_MODULES = {
    "stable_baselines3.sac.policies": "sac",
    "stable_baselines3.td3.policies": "td3",
    "stable_baselines3.dqn.policies": "dqn",
}


def _pickle_strings(blob: bytes, limit: int = 64) -> list[str]:
    """The strings a pickle names (module and class names), read without running it."""
    out: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(blob):
            if isinstance(arg, str) and op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "GLOBAL"):
                out.extend(arg.split(" ") if op.name == "GLOBAL" else [arg])
                if len(out) >= limit:
                    break
    except (ValueError, EOFError, IndexError):  # a cut or foreign stream: what was read so far
        pass
    return out


def identify_sb3(path: Path) -> tuple[str | None, str]:
    """What an SB3 ``.zip`` holds, read as data: (algo key or None, a description in words).

    SB3 saves the policy class pickled inside the JSON ``data`` entry; its module and class names
    are read from the pickle's opcodes, and PPO is told from A2C by PPO's own hyper-parameters.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            data = json.loads(zf.read("data"))
        blob = base64.b64decode(data["policy_class"][":serialized:"])
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, OSError):
        return None, "not a Stable-Baselines3 model file (no readable 'data' entry with a policy class)"
    names = _pickle_strings(blob)
    module = next((n for n in names if "." in n and n.endswith("policies")), "")
    cls = next((n for n in names if n and n[0].isupper()), "?")
    algo = _POLICY_MODULES.get(module)
    if module == "stable_baselines3.common.policies":
        algo = "ppo" if "clip_range" in data and "n_epochs" in data else "a2c"
    elif algo is None and module.startswith("sb3_contrib."):
        algo = module.split(".")[1]
    name = (algo or "unknown").upper()
    return algo, f"a Stable-Baselines3 {name} model (policy {module or '?'}.{cls})"


def _check_algo(path: Path, algo: str) -> None:
    found, what = identify_sb3(path)
    if found is None:
        if what.startswith("not a"):
            raise ConfigError(f"{str(path)!r} is {what}; pass the .zip written by model.save()")
        return  # an unknown policy module: let SB3's own loader judge
    if found == algo.lower():
        return
    if found in SB3_ALGOS:
        fix = f"pass --algo {found}"
    else:
        fix = f"the exporter reads {', '.join(a.upper() for a in SB3_ALGOS)} models only"
    raise ConfigError(f"{str(path)!r} is {what}, not {algo.upper()}: {fix}")


def load_sb3(path: Path | str, algo: str) -> Any:
    """Load an SB3 model from its ``.zip`` on the CPU (``algo`` checked against what the file holds)."""
    cls = _algo_class(algo)
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"SB3 model {str(path)!r} does not exist; pass the .zip written by model.save()")
    _check_algo(path, algo)
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


_MAX_PKL_BYTES = 64 << 20
"""Pickles larger than this beside a model are not VecNormalize files (those are a few kB)."""


def is_vecnormalize_file(path: Path) -> bool:
    """Whether ``path`` is a pickled VecNormalize (by the names in its opcodes; nothing is run)."""
    try:
        if path.stat().st_size > _MAX_PKL_BYTES:
            return False
        names = _pickle_strings(path.read_bytes(), limit=4096)
    except OSError:
        return False
    return "VecNormalize" in names or {"obs_rms", "clip_obs"} <= set(names)


def vecnormalize_beside(model_path: Path) -> list[Path]:
    """VecNormalize files next to an SB3 ``.zip`` (its folder, and the folder named after it as the
    RL Zoo saves them), which an export without ``--vecnormalize`` would silently leave out."""
    folders = [model_path.parent, model_path.parent / model_path.stem]
    return [p for d in folders if d.is_dir() for p in sorted(d.glob("*.pkl")) if is_vecnormalize_file(p)]


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
    """The env's spaces against the spec: sizes, a finite Box, and what ``module_output`` says it means."""
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
    low, high = np.asarray(act_space.low, np.float64), np.asarray(act_space.high, np.float64)
    box = f"Box({low.tolist()}, {high.tolist()})"
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ExportError(
            f"the SB3 model's action space is {box}: SB3's predict neither clips nor rescales an unbounded "
            f"action, so the bundle could not bound it; train with finite action bounds"
        )
    unit = bool(np.all(low == -1.0) and np.all(high == 1.0))
    spec_low = np.asarray(spec.action_low, np.float32).astype(np.float64)
    spec_high = np.asarray(spec.action_high, np.float32).astype(np.float64)
    same = bool(np.array_equal(low, spec_low) and np.array_equal(high, spec_high))
    if spec.module_output == "normalized" and not unit:
        hint = (
            'set module_output = "physical" in the spec (its action bounds already equal the env\'s)'
            if same
            else f'set module_output = "physical" and the spec\'s action low/high to {low.tolist()} / '
            f"{high.tolist()}"
        )
        raise ExportError(
            f"the SB3 model's action space is {box}, so its predict returns actions in those units, not "
            f'in [-1, 1] as module_output = "normalized" says; {hint}'
        )
    if spec.module_output == "physical" and not same:
        raise ExportError(
            f'module_output = "physical" says the SB3 model\'s actions are physical, but its action space '
            f"{box} differs from the spec's bounds {spec_low.tolist()} / {spec_high.tolist()}; set the "
            f"spec's action low/high to the env's Box (or train in Box[-1, 1] with module_output = "
            f'"normalized")'
        )


def _post(policy: Any, spec: ExportSpec) -> nn.Module:
    """SB3's ``predict`` tail, then the map to physical units (see the module docstring)."""
    if spec.module_output == "normalized":
        # Box[-1, 1]: unscale_action is the identity and the clip is ActionUnscale's own clamp.
        return ActionUnscale(spec.action_low, spec.action_high)
    if policy.squash_output:
        # low + (a + 1)/2 · (high − low), a = tanh(·) in [-1, 1], so the clamp changes nothing.
        return ActionUnscale(spec.action_low, spec.action_high)
    return ActionClip(spec.action_low, spec.action_high)


def _sb3_reference(model: Any, spec: ExportSpec, stats: ObsNormStats | None) -> Reference:
    def reference(obs: F32, state: F32 | None) -> tuple[F64, F64 | None]:
        x = obs if stats is None else normalize(obs, stats)
        action, _ = model.predict(x, deterministic=True)
        if spec.module_output == "physical":
            return np.asarray(action, dtype=np.float64), None
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
    no_vecnormalize: bool = False,
    recorded_obs: NDArray[np.floating] | None = None,
    n_random: int = 10_000,
    quantize: bool = False,
    rng: np.random.Generator | None = None,
    overwrite: bool = False,
) -> ExportReport:
    """Export an SB3 PPO/SAC/TD3 ``.zip`` (and optional VecNormalize file) as a verified bundle.

    The bundle's output equals ``low + (predict(obs, deterministic=True) + 1) / 2 · (high − low)``
    (``module_output = "normalized"``, env Box[-1, 1]) or ``predict(obs, deterministic=True)``
    itself (``"physical"``, env Box = the spec's bounds), where ``predict`` includes the
    VecNormalize step; observations are raw (unnormalised). A VecNormalize file beside the model
    must be passed as ``vecnormalize_path`` or waived with ``no_vecnormalize=True``.
    """
    if spec.recurrent_state_size:
        raise ConfigError(
            "SB3 PPO/SAC/TD3 policies are feed-forward; set recurrent_state_size = 0 in the spec"
        )
    model_path = Path(model_path)
    if vecnormalize_path is not None and no_vecnormalize:
        raise ConfigError("--vecnormalize and --no-vecnormalize contradict each other; pass one of them")
    if vecnormalize_path is None and not no_vecnormalize:
        beside = vecnormalize_beside(model_path)
        if beside:
            raise ConfigError(
                f"{str(beside[0])!r} beside {str(model_path)!r} is a VecNormalize file: SB3 keeps the "
                f"observation statistics the policy was trained with outside the model, and a bundle "
                f"exported without them acts on unnormalised observations (grossly wrong actions); pass "
                f"--vecnormalize {beside[0]} (or --no-vecnormalize if this model was trained without it)"
            )
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
    graph = FeedForwardGraph(core, _post(policy, spec), normalizer)
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


__all__ = [
    "SB3_ALGOS",
    "ObsNormStats",
    "export_sb3",
    "identify_sb3",
    "is_vecnormalize_file",
    "load_sb3",
    "load_vecnormalize",
    "normalize",
    "vecnormalize_beside",
]
