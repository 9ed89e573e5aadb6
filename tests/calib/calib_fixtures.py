"""Test bundles and scenarios for the calib tests: a P-controller policy and an adversarial one."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from export.module import export_module
from export.spec import ExportSpec, feature

MISSION_TOML = """
[geofence]
kind = "box"
north_min_m = -15.0
north_max_m = 15.0
east_min_m = -15.0
east_max_m = 15.0
floor_alt_m = 2.0
ceiling_alt_m = 25.0

[[keepout]]
kind = "cylinder"
center_ne_m = [0.0, 0.0]
radius_m = 2.5

[route]
waypoints_nea_m = [[8.0, 8.0, 8.0]]
acceptance_radius_m = 1.0

[limits]
horizontal_speed_m_s = 3.0
up_speed_m_s = 1.5
down_speed_m_s = 1.0

[autopilot]
flavour = "px4"
"""

SCENARIO_TOML = """
[scenario]
name = "test"
seed = 7
mission = "mission.toml"
duration_s = {duration}

[wind]
speed_m_s = [0.0, 3.0]
gust_std_m_s = [0.0, 0.5]

[vehicle]
mass_scale = [0.85, 1.15]
motor_efficiency = [0.9, 1.0]

[sensors]
pos_noise_std_m = 0.02
vel_noise_std_m_s = 0.02
latency_s = 0.02

[start]
altitude_m = [6.0, 10.0]
clearance_m = 3.0
"""


def write_scenario(folder: Path, duration_s: float = 4.0) -> Path:
    """A test mission and scenario in ``folder``; returns the scenario path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mission.toml").write_text(MISSION_TOML)
    path = folder / "scenario.toml"
    path.write_text(SCENARIO_TOML.format(duration=duration_s))
    return path


class Linear(nn.Module):
    """action = W · [goal_rel_ned_m, vel_ned_m_s] + b, physical units."""

    def __init__(self, weight: list[list[float]], bias: list[float]) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 4)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor(weight))
            self.lin.bias.copy_(torch.tensor(bias))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.lin(obs)


def _spec() -> ExportSpec:
    return ExportSpec(
        observation=(feature("goal_rel_ned_m", -20.0, 20.0), feature("vel_ned_m_s", -10.0, 10.0)),
        action_kind="velocity_ned_yaw_rate",
        action_low=(-3.0, -3.0, -1.5, -1.0),
        action_high=(3.0, 3.0, 1.0, 1.0),
        control_rate_hz=50.0,
        module_output="physical",
    )


def p_controller() -> Linear:
    """Velocity toward the goal: v = 0.8·goal_rel (a P-controller on position)."""
    w = [[0.8, 0, 0, 0, 0, 0], [0, 0.8, 0, 0, 0, 0], [0, 0, 0.8, 0, 0, 0], [0.0] * 6]
    return Linear(w, [0.0, 0.0, 0.0, 0.0])


def adversary() -> Linear:
    """Flies north-east at full speed whatever it sees: straight at the fence."""
    return Linear([[0.0] * 6 for _ in range(4)], [2.5, 1.5, 0.0, 0.0])


def export(module: nn.Module, out: Path) -> Path:
    """Export ``module`` as a bundle at ``out`` (the exporter checks parity on 10,000 samples)."""
    export_module(module, _spec(), out)
    return out
