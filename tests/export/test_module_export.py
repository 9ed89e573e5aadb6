"""nn.Module → bundle → onnxruntime: round trips, parity refusal, quantisation, recurrent state."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from export_fixtures import A, D, Mlp, make_spec, perturb
from torch import nn

from edge_agent.bundle import load_bundle
from edge_agent.errors import ConfigError, ExportError
from edge_agent.policy import PolicyRunner
from export.module import export_module
from export.spec import ExportSpec


def _fresh_obs(spec: ExportSpec, n: int, seed: int) -> np.ndarray:
    lo, hi = (np.asarray(b) for b in spec.clip_bounds())
    return np.random.default_rng(seed).uniform(lo, hi, size=(n, spec.observation_size)).astype(np.float32)


def _expected_physical(raw: np.ndarray, spec: ExportSpec) -> np.ndarray:
    low, high = np.asarray(spec.action_low), np.asarray(spec.action_high)
    return low + (np.clip(raw.astype(np.float64), -1, 1) + 1) / 2 * (high - low)


def test_mlp_round_trip_matches_torch_in_physical_units(tmp_path: Path, spec: ExportSpec) -> None:
    module = Mlp(seed=1, squash=False)  # unsquashed: the graph's clip to [-1, 1] is exercised
    perturb(module, seed=1, scale=0.4)
    report = export_module(module, spec, tmp_path / "b")
    assert report.n_parity_samples == 10_000
    assert report.parity_max_abs_error <= 1e-5

    bundle = load_bundle(tmp_path / "b")
    obs = _fresh_obs(spec, 500, seed=7)
    with torch.no_grad():
        raw = module(torch.from_numpy(obs)).numpy()
    assert np.abs(raw).max() > 1.0, "the test needs actions outside [-1, 1] to check the clip"
    want = _expected_physical(raw, spec)
    runner = PolicyRunner(bundle)
    got_batch = runner.act(obs)
    got_one = np.concatenate([runner.act(obs[i : i + 1]) for i in range(50)])
    assert np.max(np.abs(got_batch - want)) <= 1e-5
    assert np.max(np.abs(got_one - want[:50])) <= 1e-5
    assert np.all(got_batch >= np.asarray(spec.action_low, dtype=np.float32))
    assert np.all(got_batch <= np.asarray(spec.action_high, dtype=np.float32))


def test_manifest_records_the_contract(tmp_path: Path, spec: ExportSpec) -> None:
    recorded = _fresh_obs(spec, 37, seed=3)
    export_module(Mlp(seed=2), spec, tmp_path / "b", recorded_obs=recorded)
    m = load_bundle(tmp_path / "b").manifest
    assert m.feature_names == ("goal_rel_ned_m", "vel_ned_m_s", "yaw_sin_cos_ned")
    assert m.observation[0].clip_lo == (-10.0,) * 3 and m.observation[1].unit == "m/s"
    assert m.action.kind == "velocity_ned_yaw_rate" and m.action.size == A
    np.testing.assert_array_equal(m.action.low, np.array([-3, -2, -1, -0.5], dtype=np.float32))
    assert m.control_rate_hz == 50.0 and m.recurrent is None
    assert m.parity.n_samples == 10_037 and m.raw["parity"]["n_recorded"] == 37
    assert m.golden_inputs["obs"].shape == (16, D)
    # Recorded observations lead the golden set: the drone replays real inputs at load.
    np.testing.assert_array_equal(m.golden_inputs["obs"], recorded[:16])
    assert m.producer["torch"] == torch.__version__ and m.producer["source"]["kind"] == "torch.nn.Module"
    assert m.quantization is None and m.calibration is None and m.certificate is None
    assert {p.name for p in (tmp_path / "b").iterdir()} == {"policy.onnx", "manifest.json"}


def test_physical_output_module_is_clipped_to_bounds(tmp_path: Path) -> None:
    spec = make_spec(module_output="physical")

    class Physical(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(D, A)

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return self.lin(obs) * 3.0

    module = Physical()
    export_module(module, spec, tmp_path / "b")
    obs = _fresh_obs(spec, 300, seed=1)
    with torch.no_grad():
        raw = module(torch.from_numpy(obs)).numpy().astype(np.float64)
    want = np.clip(raw, spec.action_low, spec.action_high)
    got = PolicyRunner(load_bundle(tmp_path / "b")).act(obs)
    assert np.max(np.abs(got - want)) <= 1e-5


class BranchyPolicy(nn.Module):
    """Data-dependent Python control flow: tracing bakes in one branch, so the graph is wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(D, A)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if float(obs[0, 0]) > 0.0:
            return torch.tanh(self.lin(obs))
        return -torch.tanh(self.lin(obs))


def test_parity_failure_refuses_and_writes_nothing(tmp_path: Path, spec: ExportSpec) -> None:
    out = tmp_path / "b"
    with pytest.raises(
        ExportError, match=re.escape("parity check failed: onnxruntime differs from the framework")
    ):
        export_module(BranchyPolicy(), spec, out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [], "the temporary folder must be removed too"


def test_action_width_mismatch_is_refused_before_tracing(tmp_path: Path, spec: ExportSpec) -> None:
    wrong = nn.Sequential(nn.Linear(D, A + 1), nn.Tanh())
    with pytest.raises(
        ExportError,
        match=re.escape(
            "the module's forward(obs [2, 8]) returned [(2, 5)], expected [(2, 4)] (action width 4"
        ),
    ):
        export_module(wrong, spec, tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


def test_existing_target_is_refused_unless_overwrite(tmp_path: Path, spec: ExportSpec) -> None:
    export_module(Mlp(seed=1), spec, tmp_path / "b")
    first = json.loads((tmp_path / "b" / "manifest.json").read_text())["manifest_sha256"]
    with pytest.raises(
        ExportError, match=re.escape("already exists; choose another output folder or pass overwrite=True")
    ):
        export_module(Mlp(seed=2), spec, tmp_path / "b")
    export_module(Mlp(seed=2), spec, tmp_path / "b", overwrite=True)
    second = json.loads((tmp_path / "b" / "manifest.json").read_text())["manifest_sha256"]
    assert first != second
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_too_few_parity_samples_and_bad_recorded_obs_are_refused(tmp_path: Path, spec: ExportSpec) -> None:
    with pytest.raises(ConfigError, match=re.escape("n_random must be at least 10000, got 100")):
        export_module(Mlp(), spec, tmp_path / "b", n_random=100)
    with pytest.raises(
        ConfigError, match=re.escape("recorded observations have shape [5, 3], expected [N, 8]")
    ):
        export_module(Mlp(), spec, tmp_path / "b", recorded_obs=np.zeros((5, 3)))


def test_quantised_bundle_loads_and_reports_its_measured_error(tmp_path: Path, spec: ExportSpec) -> None:
    module = Mlp(seed=4)
    recorded = _fresh_obs(spec, 200, seed=11)
    export_module(module, spec, tmp_path / "fp32", recorded_obs=recorded)
    report = export_module(module, spec, tmp_path / "q", recorded_obs=recorded, quantize=True)
    bundle = load_bundle(tmp_path / "q")
    q = bundle.manifest.quantization
    assert q is not None and q == report.quantization
    assert "quantize_dynamic" in q.method
    assert 0.0 < q.mean_abs_error_vs_fp32 <= q.max_abs_error_vs_fp32 < 0.5
    # The stored maximum covers the recorded observations, which were part of the measured set.
    fp32 = PolicyRunner(load_bundle(tmp_path / "fp32")).act(recorded)
    int8 = PolicyRunner(bundle).act(recorded)
    measured = np.abs(fp32.astype(np.float64) - int8)
    assert measured.max() > 0.0
    assert measured.max() <= q.max_abs_error_vs_fp32 + 1e-7
    assert (tmp_path / "q" / "policy.onnx").stat().st_size < (
        tmp_path / "fp32" / "policy.onnx"
    ).stat().st_size


class GruPolicy(nn.Module):
    """forward(obs, h) -> (tanh action, h'): a GRU cell and a linear head."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.cell = nn.GRUCell(D, hidden)
        self.head = nn.Linear(hidden, A)

    def forward(self, obs: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h2 = self.cell(obs, h)
        return torch.tanh(self.head(h2)), h2


class LstmPolicy(nn.Module):
    """forward(obs, [h, c]) -> (action, [h', c']): the LSTM state travels as one concatenated vector."""

    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.hidden = hidden
        self.cell = nn.LSTMCell(D, hidden)
        self.head = nn.Linear(hidden, A)

    def forward(self, obs: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = self.cell(obs, (state[:, : self.hidden], state[:, self.hidden :]))
        return torch.tanh(self.head(h)), torch.cat([h, c], dim=1)


@pytest.mark.parametrize(("policy", "cell", "size"), [(GruPolicy, "gru", 16), (LstmPolicy, "lstm", 16)])
def test_recurrent_round_trip_carries_state(
    tmp_path: Path, policy: type[nn.Module], cell: str, size: int
) -> None:
    spec = make_spec(recurrent_state_size=size, recurrent_cell=cell)
    module = policy()
    export_module(module, spec, tmp_path / "b")
    bundle = load_bundle(tmp_path / "b")
    assert bundle.manifest.recurrent is not None and bundle.manifest.recurrent.state_size == size
    assert [s.name for s in bundle.manifest.inputs] == ["obs", "state_in"]

    obs = _fresh_obs(spec, 20, seed=2)
    runner = PolicyRunner(bundle)
    h = torch.zeros(1, size)
    wants, gots = [], []
    with torch.no_grad():
        for t in range(20):
            a, h = module(torch.from_numpy(obs[t : t + 1]), h)
            wants.append(_expected_physical(a.numpy(), spec))
            gots.append(runner.act(obs[t : t + 1]))
    assert np.max(np.abs(np.concatenate(gots) - np.concatenate(wants))) <= 1e-5
    state = runner.state
    assert state is not None and np.max(np.abs(state - h.numpy())) <= 1e-5
    # State matters: the first observation again, with state carried, gives another action;
    # after reset() it gives the zero-state action exactly.
    carried = runner.act(obs[:1])
    assert np.max(np.abs(carried - gots[0])) > 1e-3
    runner.reset()
    np.testing.assert_array_equal(runner.act(obs[:1]), gots[0])
