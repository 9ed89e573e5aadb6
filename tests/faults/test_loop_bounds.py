"""The loop's per-flight bookkeeping stays O(1) in memory (the soak found it did not); its stream requests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.timing import LatencyHistogram


def test_latency_histogram_percentiles_match_numpy_within_a_bin() -> None:
    rng = np.random.default_rng(3)
    x = rng.lognormal(np.log(3e6), 0.7, 50_000).astype(np.int64)
    h = LatencyHistogram()
    for v in x.tolist():
        h.add(v)
    assert h.count == x.size
    for q in (1, 50, 90, 99, 99.9):
        assert h.percentile_ns(q) == pytest.approx(np.percentile(x, q), rel=0.025)


def test_latency_histogram_memory_does_not_grow_and_edges_are_handled() -> None:
    h = LatencyHistogram()
    size = len(h.counts)
    for v in (-5, 0, 50, 10**12, 4_000_000):
        h.add(v)
    assert len(h.counts) == size  # fixed bins: a 30-minute 250 Hz flight costs the same as 1 tick
    assert h.percentile_ns(0) <= 100.0 and h.percentile_ns(100) >= 1e11
    assert np.isnan(LatencyHistogram().percentile_ns(50))


def test_the_loop_asks_for_its_state_at_its_own_rate(goal_seeker: Path) -> None:
    """`edge-agent run --rate 250` asks the autopilot for positions and attitude at 250 Hz, and
    keeps what else its session config says (signing here)."""
    from edge_agent.bundle import load_bundle
    from edge_agent.loop import Runtime
    from edge_agent.loop_config import LoopConfig
    from edge_agent.mission import load_mission
    from firmware_bridge.mavlink_codec import SigningConfig
    from firmware_bridge.session import SessionConfig

    signing = SigningConfig(b"\x01" * 32)
    runtime = Runtime(
        load_bundle(goal_seeker),
        load_mission(Path(__file__).parent / "faults.toml"),
        _UnusedLink(),
        config=LoopConfig(rate_hz=250.0),
        session_config=SessionConfig(signing=signing),
    )
    assert runtime.session is not None
    rates = dict(runtime.session.config.message_rates_hz)
    assert rates[32] == rates[31] == 250.0 and rates[147] == 1.0
    assert runtime.session.config.signing == signing


class _UnusedLink:
    """A link the constructor must not touch (nothing is sent before connect)."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the link was used before connect: {name}")
