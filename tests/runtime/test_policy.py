"""PolicyRunner: equals bare onnxruntime, refuses wrong shapes, carries state, is fast at batch 1."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edge_agent.bundle import Bundle, load_bundle, session_options
from edge_agent.errors import BundleContractError, ConfigError
from edge_agent.policy import PolicyRunner
from export.module import export_module
from export.spec import ExportSpec, feature

D = 12


def _spec(**extra: int | str) -> ExportSpec:
    return ExportSpec(
        observation=(
            feature("goal_rel_ned_m", -5, 5),
            feature("vel_ned_m_s", -3, 3),
            feature("rates_frd_rad_s", -2, 2),
            feature("yaw_sin_cos_ned"),
            feature("battery_frac", 0, 1),
        ),
        action_kind="velocity_ned_yaw_rate",
        action_low=(-2.0, -2.0, -1.0, -1.0),
        action_high=(2.0, 2.0, 1.0, 1.0),
        control_rate_hz=50.0,
        **extra,  # type: ignore[arg-type]
    )


class _Gru(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.cell = nn.GRUCell(D, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, obs: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h2 = self.cell(obs, h)
        return torch.tanh(self.head(h2)), h2


@pytest.fixture(scope="module")
def mlp_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """The 2x64 MLP of the latency target, as a bundle."""
    torch.manual_seed(0)
    mlp = nn.Sequential(
        nn.Linear(D, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 4), nn.Tanh()
    )
    out = tmp_path_factory.mktemp("policy") / "mlp"
    export_module(mlp, _spec(), out)
    return load_bundle(out)


@pytest.fixture(scope="module")
def gru_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A GRU policy with 8 state values."""
    out = tmp_path_factory.mktemp("policy") / "gru"
    export_module(_Gru(), _spec(recurrent_state_size=8, recurrent_cell="gru"), out)
    return load_bundle(out)


def _obs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, size=(n, D)).astype(np.float32)


def test_act_equals_bare_onnxruntime_at_any_batch(mlp_bundle: Bundle) -> None:
    runner = PolicyRunner(mlp_bundle)
    bare = ort.InferenceSession(str(mlp_bundle.model_path), providers=["CPUExecutionProvider"])
    for batch in (1, 1, 5, 1, 64):
        obs = _obs(batch, seed=batch)
        got = runner.act(obs)
        assert got.shape == (batch, 4) and got.dtype == np.float32
        np.testing.assert_array_equal(got, bare.run(None, {"obs": obs})[0])
    # float64 observations are accepted and rounded as onnxruntime would see them.
    obs64 = _obs(1, seed=9).astype(np.float64)
    np.testing.assert_array_equal(runner.act(obs64), bare.run(None, {"obs": obs64.astype(np.float32)})[0])


def test_act_returns_a_new_array_each_call(mlp_bundle: Bundle) -> None:
    runner = PolicyRunner(mlp_bundle)
    first = runner.act(_obs(1, seed=1))
    kept = first.copy()
    runner.act(_obs(1, seed=2))
    np.testing.assert_array_equal(first, kept)


def test_wrong_observation_shape_is_refused(mlp_bundle: Bundle) -> None:
    runner = PolicyRunner(mlp_bundle)
    with pytest.raises(
        BundleContractError,
        match=re.escape("observation has shape [1, 11] but the bundle expects [batch, 12]"),
    ):
        runner.act(np.zeros((1, 11), dtype=np.float32))
    with pytest.raises(
        BundleContractError, match=re.escape("observation has shape [12] but the bundle expects")
    ):
        runner.act(np.zeros(12, dtype=np.float32))
    with pytest.raises(ConfigError, match=re.escape("intra_op_threads must be at least 1, got 0")):
        PolicyRunner(mlp_bundle, intra_op_threads=0)


def test_recurrent_state_is_carried_and_reset(gru_bundle: Bundle) -> None:
    runner = PolicyRunner(gru_bundle)
    assert runner.recurrent and runner.state is not None and not runner.state.any()
    bare = ort.InferenceSession(gru_bundle.model_bytes, providers=["CPUExecutionProvider"])
    obs = _obs(10, seed=3)
    h = np.zeros((1, 8), dtype=np.float32)
    for t in range(10):
        want, h = bare.run(None, {"obs": obs[t : t + 1], "state_in": h})
        np.testing.assert_array_equal(runner.act(obs[t : t + 1]), want)
    state = runner.state
    assert state is not None
    np.testing.assert_array_equal(state, h)
    runner.reset()
    state = runner.state
    assert state is not None and not state.any()


def test_recurrent_batch_change_needs_reset(gru_bundle: Bundle) -> None:
    runner = PolicyRunner(gru_bundle)
    runner.act(_obs(1))
    with pytest.raises(BundleContractError, match=re.escape("call reset(batch_size=3) first")):
        runner.act(_obs(3))
    runner.reset(batch_size=3)
    assert runner.act(_obs(3)).shape == (3, 4)


def test_act_one_equals_act(mlp_bundle: Bundle, gru_bundle: Bundle) -> None:
    """The onboard tick's entry: Python floats in and out, the same numbers and state as act."""
    for bundle in (mlp_bundle, gru_bundle):
        one, batched = PolicyRunner(bundle), PolicyRunner(bundle)
        obs = np.random.default_rng(5).uniform(-3, 3, size=(40, D))  # float64, rounded on the way in
        for t in range(40):
            got = one.act_one(obs[t].tolist())
            want = batched.act(obs[t : t + 1])
            assert isinstance(got, list) and all(isinstance(x, float) for x in got)
            np.testing.assert_array_equal(np.array(got, dtype=np.float32), want[0])
            assert got == want[0].tolist()
            if t == 20:
                one.reset()
                batched.reset()
        if bundle is gru_bundle:
            s1, s2 = one.state, batched.state
            assert s1 is not None and s2 is not None and s1.any()
            np.testing.assert_array_equal(s1, s2)


def test_act_one_refuses_what_act_refuses(mlp_bundle: Bundle, gru_bundle: Bundle) -> None:
    runner = PolicyRunner(mlp_bundle)
    for bad in ([0.0] * 11, [0.0]):  # one value must not broadcast over the row
        with pytest.raises(BundleContractError, match="but the bundle expects"):
            runner.act_one(bad)
    gru = PolicyRunner(gru_bundle)
    gru.reset(batch_size=3)
    with pytest.raises(BundleContractError, match=re.escape("call reset(batch_size=1) first")):
        gru.act_one([0.0] * D)


def _median_us(fn: Callable[[], object], n: int) -> tuple[float, float]:
    times = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn()
        times[i] = time.perf_counter_ns() - t0
    return float(np.median(times)) / 1e3, float(np.percentile(times, 99)) / 1e3


def test_batch1_latency_is_within_2x_of_bare_session_run(
    mlp_bundle: Bundle, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = PolicyRunner(mlp_bundle)
    bare = ort.InferenceSession(
        mlp_bundle.model_bytes, session_options(1), providers=["CPUExecutionProvider"]
    )
    obs = _obs(1, seed=4)
    feeds = {"obs": obs}
    for _ in range(300):  # warm both
        runner.act(obs)
        bare.run(None, feeds)
    # Interleave rounds so load on the shared machine hits both alike.
    runner_med, bare_med, runner_p99, bare_p99 = [], [], [], []
    for _ in range(4):
        m, p = _median_us(lambda: runner.act(obs), 600)
        runner_med.append(m)
        runner_p99.append(p)
        m, p = _median_us(lambda: bare.run(None, feeds), 600)
        bare_med.append(m)
        bare_p99.append(p)
    r, b = float(np.median(runner_med)), float(np.median(bare_med))
    with capsys.disabled():
        print(
            f"\n[2x64 MLP, batch 1, 2400 calls each] PolicyRunner.act median {r:.1f} µs (p99 {np.median(runner_p99):.1f}); "
            f"InferenceSession.run median {b:.1f} µs (p99 {np.median(bare_p99):.1f})"
        )
    assert r <= 2.0 * b
