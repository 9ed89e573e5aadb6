"""Ray backend: certification chunks as remote tasks (one machine with ``ray.init(num_cpus=2)``, or a cluster).

Each task loads the bundle itself (by path: workers share the file system locally; on a cluster,
put the bundle on shared storage) and flies one chunk. Results come back as plain JSON-ready
columns and are recorded in completion order; the episodes they hold depend on (seed, index)
only, so the counts equal the local backend's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray
from numpy.typing import NDArray

from calib.rollout import ChunkRunner, EpisodeResults
from calib.scenario import ScenarioSpec


def _fly_chunk(
    bundle_dir: str, spec: ScenarioSpec, episodes: list[int], shield_enabled: bool
) -> dict[str, Any]:
    runner = ChunkRunner(bundle_dir, spec, shield_enabled=shield_enabled)
    return runner(np.asarray(episodes, dtype=np.int64)).to_lists()


def run_chunks_ray(
    bundle_dir: str | Path,
    spec: ScenarioSpec,
    chunks: list[NDArray[np.int64]],
    *,
    shield_enabled: bool,
    on_result: Callable[[EpisodeResults], None],
    num_cpus: int = 2,
) -> None:
    """Fly the chunks as Ray tasks; ``on_result`` is called in the driver as each one finishes.

    Starts a local Ray instance with ``num_cpus`` unless one is already initialised (or
    RAY_ADDRESS points at a cluster).
    """
    if not chunks:
        return
    started = False
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        task = ray.remote(num_cpus=1)(_fly_chunk)
        path = str(Path(bundle_dir).resolve())
        pending = [task.remote(path, spec, ids.tolist(), shield_enabled) for ids in chunks]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            on_result(EpisodeResults.from_lists(ray.get(ready[0])))
    finally:
        if started:
            ray.shutdown()


__all__ = ["run_chunks_ray"]
