"""``edge-agent bench`` (docs/benchmarks.md): the command (``bench.cli``) and its measurements.

Onboard-importable: the modules here import only numpy, onnxruntime, the bridge and the runtime
at module level. Whatever needs torch, Stable-Baselines3, the exporter, the simulator or the
certification code is imported inside the function that measures it, and that measurement is
skipped (with the reason recorded) when the package is not installed. ``bench.physics`` (the
simulator's own throughput, ``python -m bench.physics``) is the exception: it imports ``sitl``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentiles_us(samples_ns: Sequence[int] | np.ndarray) -> dict[str, float]:
    """p50 / p99 / p99.9 / mean (microseconds) and the sample count n of durations in nanoseconds."""
    x = np.asarray(samples_ns, dtype=np.float64) * 1e-3
    if x.size == 0:
        nan = float("nan")
        return {"p50_us": nan, "p99_us": nan, "p99_9_us": nan, "mean_us": nan, "n": 0}
    p50, p99, p999 = np.percentile(x, [50.0, 99.0, 99.9])
    return {
        "p50_us": float(p50),
        "p99_us": float(p99),
        "p99_9_us": float(p999),
        "mean_us": float(x.mean()),
        "n": int(x.size),
    }


def skipped(reason: str) -> dict[str, str]:
    """The record of a measurement that could not run here, and why."""
    return {"skipped": reason}


__all__ = ["percentiles_us", "skipped"]
