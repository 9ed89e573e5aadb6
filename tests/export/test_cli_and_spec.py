"""The TOML spec, `edge-agent export` / `edge-agent inspect`, and the generated docs table."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from export_fixtures import TinyEnv, perturb
from stable_baselines3 import TD3
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from edge_agent.bundle import load_bundle, write_manifest_section
from edge_agent.cli import main
from edge_agent.errors import ConfigError
from export.spec import ExportSpec, feature, load_spec
from export.vocabulary_doc import DOC, splice

SPEC_TOML = """
control_rate_hz = 40
[[observation]]
name = "goal_rel_ned_m"
clip = [-10.0, 10.0]
[[observation]]
name = "vel_ned_m_s"
clip_lo = [-4.0, -4.0, -4.0]
clip_hi = [4.0, 4.0, 4.0]
[[observation]]
name = "yaw_sin_cos_ned"
[action]
kind = "velocity_ned_yaw_rate"
low = [-3.0, -2.0, -1.0, -0.5]
high = [3.0, 2.5, 1.5, 0.5]
"""


def _write(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_spec_loads_from_toml(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, SPEC_TOML))
    assert spec.observation_size == 8 and spec.action_size == 4
    assert spec.observation[2].clip_lo == (-1.0, -1.0)  # the vocabulary's default clip
    assert spec.control_rate_hz == 40.0 and isinstance(spec.control_rate_hz, float)
    assert spec.action_names == ("vel_n_m_s", "vel_e_m_s", "vel_d_m_s", "yaw_rate_rad_s")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ('name = "vel_ned_m_s"', 'name = "velocity"'),
            "observation feature 'velocity' is not in the feature vocabulary",
        ),
        (("low = [-3.0, -2.0, -1.0, -0.5]", "low = [-3.0, -2.0]"), "has 4 elements but the spec gives 2 low"),
        (('kind = "velocity_ned_yaw_rate"', 'kind = "velocity"'), "action kind 'velocity' is not known"),
        (
            ("control_rate_hz = 40", "control_rate = 40"),
            "[spec] has unknown key(s) 'control_rate'; allowed here: action, control_rate_hz, module_output, "
            "observation, recurrent_cell, recurrent_state_size (a typo?)",
        ),
        (("clip = [-10.0, 10.0]", "clip = [10.0, -10.0]"), "needs finite clip bounds with low < high"),
        (("clip_lo = [-4.0, -4.0, -4.0]", "clip_lo = [-4.0, -4.0]"), "has 3 elements but its clip has 2 low"),
    ],
)
def test_bad_specs_are_refused_with_clear_messages(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    assert change[0] in SPEC_TOML
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_spec(_write(tmp_path, SPEC_TOML.replace(*change)))


def test_prev_action_takes_the_action_width() -> None:
    spec = ExportSpec(
        observation=(feature("prev_action", -2, 2),),
        action_kind="attitude_thrust",
        action_low=(-1, -1, -1, -1, 0),
        action_high=(1, 1, 1, 1, 1),
        control_rate_hz=100,
    )
    assert spec.observation_size == 5


def test_export_and_inspect_cli_with_sb3_and_vecnormalize(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = VecNormalize(DummyVecEnv([TinyEnv]))
    model = TD3(
        "MlpPolicy", env, policy_kwargs={"net_arch": [16]}, learning_starts=1000, seed=0, device="cpu"
    )
    model.learn(40)
    perturb(model.policy, seed=3)
    model.save(tmp_path / "td3.zip")
    env.save(str(tmp_path / "vn.pkl"))
    recorded = np.random.default_rng(0).uniform(-1, 1, (20, 8)).astype(np.float32)
    np.save(tmp_path / "rec.npy", recorded)
    spec = _write(tmp_path, SPEC_TOML)
    argv = ["export", "--spec", str(spec), "--sb3", str(tmp_path / "td3.zip"), "--algo", "td3"]
    argv += ["--vecnormalize", str(tmp_path / "vn.pkl"), "--recorded", str(tmp_path / "rec.npy")]
    argv += ["--out", str(tmp_path / "b"), "--quantize"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "bundle written:" in out and "over 10020 observations" in out and "max |int8 − fp32|" in out
    # Exporting again onto the same folder is refused unless --force.
    assert main(argv) == 1
    assert (
        "already exists; choose another output folder or pass overwrite=True (--force)"
        in capsys.readouterr().err
    )
    assert main([*argv, "--force"]) == 0
    capsys.readouterr()

    write_manifest_section(tmp_path / "b", "calibration", {"alpha": 0.1, "n": 500, "quantile_m": 0.37})
    assert main(["inspect", str(tmp_path / "b")]) == 0
    text = capsys.readouterr().out
    m = load_bundle(tmp_path / "b").manifest
    for expected in (
        "control rate: 40 Hz",
        "goal_rel_ned_m          3  m             NED      [-10, -10, -10] .. [10, 10, 10]",
        "yaw_rate_rad_s         [-0.5, 0.5]",
        f"policy.onnx  sha256 {m.files['policy.onnx']}",
        "quantization: onnxruntime.quantize_dynamic",
        "algo: TD3",
        "quantile_m: 0.37",
        "certificate: none",
    ):
        assert expected in text, expected


def test_export_cli_with_module_factory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "my_policies.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            def make():
                return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4), nn.Tanh())
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_policies  # type: ignore[import-not-found]

    module = my_policies.make()
    perturb(module, seed=2)
    torch.save(module.state_dict(), tmp_path / "w.pt")
    spec = _write(tmp_path, SPEC_TOML)
    argv = [
        "export",
        "--spec",
        str(spec),
        "--module",
        "my_policies:make",
        "--weights",
        str(tmp_path / "w.pt"),
    ]
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    obs = np.random.default_rng(1).uniform(-1, 1, (30, 8)).astype(np.float32)
    from edge_agent.policy import PolicyRunner

    with torch.no_grad():
        a = module(torch.from_numpy(obs)).numpy().astype(np.float64)
    low, high = np.array([-3.0, -2.0, -1.0, -0.5]), np.array([3.0, 2.5, 1.5, 0.5])
    got = PolicyRunner(load_bundle(tmp_path / "b")).act(obs)
    assert np.max(np.abs(got - (low + (a + 1) / 2 * (high - low)))) <= 1e-5

    assert main([*argv[:3], "--module", "my_policies", "--out", str(tmp_path / "c")]) == 1
    assert "must look like package.module:factory" in capsys.readouterr().err


def test_docs_vocabulary_table_is_current() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert splice(text) == text, "docs/bundle.md is stale: run python -m export.vocabulary_doc"
