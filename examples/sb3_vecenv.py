"""Stable-Baselines3's ``VecEnv`` API over a Gymnasium ``VectorEnv`` that resets on the same step.

Stable-Baselines3 (2.x) steps its own ``VecEnv`` class, not ``gymnasium.vector.VectorEnv``,
and ships no adapter between the two (``DummyVecEnv``/``SubprocVecEnv`` build one from *single*
environments). ``sitl.envs.WaypointVecEnv`` simulates all its vehicles in one batched ``Sim``, so
splitting it into single environments would throw its speed away; this thin adapter keeps the
batch and only translates the conventions:

- Gymnasium returns ``terminated`` and ``truncated`` arrays and one info dict of arrays (with
  ``final_obs``/``_final_obs`` for episodes that ended and restarted in that call);
- SB3 wants one ``dones`` array and a list of per-environment info dicts, the last observation
  of a finished episode under ``terminal_observation`` and ``TimeLimit.truncated`` set when the
  episode was cut by the time limit rather than ended by the task (so PPO bootstraps it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode
from numpy.typing import NDArray
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn


class SB3VecEnv(VecEnv):
    """A same-step-autoreset ``gymnasium.vector.VectorEnv`` seen through SB3's ``VecEnv`` API.

    Info arrays of shape [num_envs, ...] become per-environment entries; keys starting with
    ``_`` (Gymnasium's masks) and ``final_obs``/``final_info`` are translated, not copied.
    """

    def __init__(self, venv: gymnasium.vector.VectorEnv[Any, Any, Any]) -> None:
        mode = venv.metadata.get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"SB3VecEnv needs a VectorEnv with autoreset_mode SAME_STEP (as SB3 resets), got {mode!r}; "
                "construct the vector env with autoreset_mode=AutoresetMode.SAME_STEP"
            )
        self.venv = venv
        self._actions: NDArray[Any] | None = None
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    def reset(self) -> NDArray[Any]:
        """Reset every environment; a seed set by ``seed()`` is used once (the batch takes one int)."""
        seed = self._seeds[0]
        obs, info = self.venv.reset(seed=seed)
        self.reset_infos = self._split_info(info, np.zeros(self.num_envs, dtype=bool))
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: NDArray[Any]) -> None:
        """Store the actions for ``step_wait`` (the batch steps synchronously)."""
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Step the batch and translate Gymnasium's results into SB3's."""
        if self._actions is None:
            raise RuntimeError("SB3VecEnv.step_wait called before step_async; call step(actions)")
        obs, reward, terminated, truncated, info = self.venv.step(self._actions)
        self._actions = None
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        dones = terminated | truncated
        infos = self._split_info(info, dones)
        if np.any(dones):
            final_obs = info["final_obs"]
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = final_obs[i]
                # SB3 bootstraps the value of a time-limit cut, not of a real ending.
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, np.asarray(reward, dtype=np.float32), dones, infos

    def _split_info(self, info: dict[str, Any], dones: NDArray[np.bool_]) -> list[dict[str, Any]]:
        """One dict per environment from Gymnasium's dict of [num_envs] arrays."""
        out: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for key, value in info.items():
            if key.startswith("_") or key in ("final_obs", "final_info"):
                continue
            arr = np.asarray(value)
            if arr.ndim == 0 or arr.shape[0] != self.num_envs:
                continue  # not per-environment: nothing to split
            items = arr.tolist()
            for i in range(self.num_envs):
                out[i][key] = items[i]
        return out

    def close(self) -> None:
        """Close the wrapped vector env."""
        self.venv.close()

    def _count(self, indices: VecEnvIndices) -> int:
        return len(list(self._get_indices(indices)))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The batch's attribute, once per requested index (all environments share one object)."""
        return [getattr(self.venv, attr_name)] * self._count(indices)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute on the batch; per-index values are impossible, so indices must be all."""
        if self._count(indices) != self.num_envs:
            raise ValueError(
                f"SB3VecEnv cannot set {attr_name!r} on a subset of environments: they share one batch; "
                "pass indices=None"
            )
        setattr(self.venv, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call a method of the batch once and return its result for each requested index."""
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result] * self._count(indices)

    def env_is_wrapped(
        self, wrapper_class: type[gymnasium.Wrapper[Any, Any, Any, Any]], indices: VecEnvIndices = None
    ) -> list[bool]:
        """Always False: the batch is one vector env, not a chain of single-env wrappers."""
        return [False] * self._count(indices)

    def get_images(self) -> Sequence[np.ndarray | None]:
        """No rendering: one None per environment."""
        return [None] * self.num_envs
