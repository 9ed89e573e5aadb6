"""Section 5 of the benchmark: certification throughput (vehicle-steps/s) by batch size.

Calls ``calib.rollout.run_episodes`` — the vectorised SITL (``sitl.sim.Sim``) driven by the very
``AgentCore`` that flies — with the scenario's distribution but a short episode time limit, and
counts vehicle-steps as control ticks × vehicles simulated (each tick is several physics steps).
Full-length episodes per second are extrapolated from that rate and the scenario's own
``duration_s``. Optional: the same chunks on a local Ray instance (started before the clock runs).
The workstation packages (calib, sitl, ray) are imported here, inside the functions, never by
the onboard runtime.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import skipped
from edge_agent.bundle import load_bundle
from edge_agent.policy import PolicyRunner


def measure_certification(
    bundle: Path, scenario: Path, batches: Sequence[int], episode_s: float, *, ray: bool = False
) -> dict[str, Any]:
    """Vehicle-steps/s and extrapolated full episodes/s per batch size (and on Ray if asked)."""
    try:
        from calib.rollout import run_episodes
        from calib.scenario import load_scenario, scenario_mission
    except ImportError as exc:
        return skipped(f"calib/sitl not importable ({exc})")
    spec = load_scenario(scenario)
    full_s = spec.duration_s
    short = dataclasses.replace(spec, duration_s=episode_s)
    mission = scenario_mission(spec)
    b = load_bundle(bundle)
    rate = b.manifest.control_rate_hz
    ticks = int(np.ceil(episode_s * rate - 1e-9))
    substeps = round(1.0 / (rate * spec.physics_dt_s))
    rows: list[dict[str, Any]] = []
    for n in batches:
        policy = PolicyRunner(b)
        policy.reset(n)
        t0 = time.perf_counter()
        res, _ = run_episodes(policy, b.manifest, mission, short, np.arange(n, dtype=np.int64))
        wall = time.perf_counter() - t0
        steps = n * ticks
        rows.append(
            {
                "batch": n,
                "wall_s": wall,
                "vehicle_steps_per_s": steps / wall,
                "physics_steps_per_s": steps * substeps / wall,
                "full_episodes_per_s": steps / wall / (full_s * rate),
                "failures": int(np.sum(res.failed)),
            }
        )
    out: dict[str, Any] = {
        "scenario": str(scenario),
        "episode_s": episode_s,
        "full_episode_s": full_s,
        "control_rate_hz": rate,
        "physics_substeps": substeps,
        "local": rows,
    }
    if ray:
        try:
            out["ray"] = _measure_ray(bundle, short, max(batches), ticks, full_s * rate)
        except Exception as exc:  # Ray failing to start here must not lose the local figures
            out["ray"] = skipped(f"Ray run failed: {type(exc).__name__}: {exc}")
    else:
        out["ray"] = skipped("not requested (pass --ray; starting Ray costs ~10 s and ~500 MB)")
    return out


def _measure_ray(bundle: Path, spec: Any, n: int, ticks: int, full_ticks: float) -> dict[str, Any]:
    try:
        import ray

        from calib.ray_backend import run_chunks_ray
    except ImportError as exc:
        return skipped(f"ray not installed ({exc.name})")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        chunks = [c for c in np.array_split(np.arange(n, dtype=np.int64), 2) if c.size]
        got: list[int] = []
        t0 = time.perf_counter()
        run_chunks_ray(
            bundle, spec, chunks, shield_enabled=True, on_result=lambda r: got.append(r.n), num_cpus=2
        )
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    steps = sum(got) * ticks
    return {
        "batch": n,
        "chunks": len(chunks),
        "wall_s": wall,
        "vehicle_steps_per_s": steps / wall,
        "full_episodes_per_s": steps / wall / full_ticks,
    }


__all__ = ["measure_certification"]
