"""Throughput of ``Sim.step``: vehicle-steps per second at several batch sizes.

Run: ``.venv/bin/python -m bench.physics`` (add ``--batches 1 4096 --seconds 2``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sitl.sim import SetpointKind, Sim


def measure(batch: int, seconds: float, gusts: bool = False) -> tuple[float, float]:
    """(vehicle-steps per second, real-time factor) for hovering vehicles tracking a velocity setpoint."""
    sim = Sim(batch, rng=np.random.default_rng(0))
    sim.reset(on_ground=False, pos_ned_m=(0.0, 0.0, -20.0))
    if gusts:
        sim.set_params(gust_std_m_s=1.0)
    sim.set_setpoint(SetpointKind.VELOCITY, np.array([1.0, 0.5, 0.0, 0.1, 0.0]))
    sim.step(10)  # warm-up
    steps = 0
    start = time.perf_counter()
    chunk = 25
    while time.perf_counter() - start < seconds:
        sim.step(chunk)
        steps += chunk
    elapsed = time.perf_counter() - start
    rate = steps * batch / elapsed
    return rate, steps * sim.dt_s / elapsed


def main(argv: list[str] | None = None) -> int:
    """Print a Markdown table of vehicle-steps/s and real-time factor per batch size."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024, 4096])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--gusts", action="store_true", help="enable Ornstein–Uhlenbeck gusts")
    args = parser.parse_args(argv)
    print("| batch | vehicle-steps/s | steps/s | real-time factor |")
    print("|---:|---:|---:|---:|")
    for b in args.batches:
        rate, rtf = measure(b, args.seconds, args.gusts)
        print(f"| {b} | {rate:,.0f} | {rate / b:,.0f} | {rtf:,.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
