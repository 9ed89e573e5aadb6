"""Scripted policies, exported as ordinary bundles: a goal-seeking P-controller and an adversary.

They are torch modules like any trained policy and go through the same exporter, parity check
and loader, so tests and campaigns exercise the real path. The adversary is what a badly trained
or malicious policy would do: at full speed into the nearest keep-out zone when one is near,
otherwise straight out through the geofence, always diving toward the altitude floor.

    python -m examples.scripted_policies --out out/bundles
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from export.module import export_module
from export.pipeline import ExportReport
from export.spec import ExportSpec, feature

RATE_HZ = 50.0
#: Physical action bounds shared by the scripted bundles (vn, ve, vd m/s; yaw rate rad/s).
ACTION_LOW = (-5.0, -5.0, -1.5, -1.0)
ACTION_HIGH = (5.0, 5.0, 1.5, 1.0)


class GoalSeeker(nn.Module):
    """v = clip(k · (goal − position)) in physical units: the classic waypoint P-controller."""

    def __init__(self, gain_1_s: float = 0.8) -> None:
        super().__init__()
        self.gain = gain_1_s
        self.register_buffer("low", torch.tensor(ACTION_LOW))
        self.register_buffer("high", torch.tensor(ACTION_HIGH))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        goal_rel = obs[:, 0:3]
        vel = torch.clamp(self.gain * goal_rel, self.low[:3], self.high[:3])
        return torch.cat([vel, torch.zeros_like(vel[:, :1])], dim=1)


GOAL_SEEKER_SPEC = ExportSpec(
    observation=(feature("goal_rel_ned_m"), feature("vel_ned_m_s")),
    action_kind="velocity_ned_yaw_rate",
    action_low=ACTION_LOW,
    action_high=ACTION_HIGH,
    control_rate_hz=RATE_HZ,
    module_output="physical",
)


class Adversary(nn.Module):
    """Full speed at the nearest keep-out zone within ``reach_m``, else out through the fence; diving."""

    def __init__(self, reach_m: float = 15.0) -> None:
        super().__init__()
        self.reach = reach_m
        self.register_buffer("high", torch.tensor(ACTION_HIGH))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        pos_ne = obs[:, 0:2]
        keepout_ne = obs[:, 3:5]
        keepout_dist = obs[:, 6:7]
        outward = pos_ne / (torch.linalg.vector_norm(pos_ne, dim=1, keepdim=True) + 1e-3)
        inward = keepout_ne / (torch.linalg.vector_norm(keepout_ne, dim=1, keepdim=True) + 1e-3)
        direction = torch.where(keepout_dist < self.reach, inward, outward)
        vel_ne = direction * self.high[0]
        dive = torch.full_like(vel_ne[:, :1], float(self.high[2]))
        return torch.cat([vel_ne, dive, torch.zeros_like(dive)], dim=1)


ADVERSARY_SPEC = ExportSpec(
    observation=(
        feature("pos_ned_m", -100.0, 100.0),
        feature("keepout_rel_ned_m"),
        feature("keepout_dist_m"),
    ),
    action_kind="velocity_ned_yaw_rate",
    action_low=ACTION_LOW,
    action_high=ACTION_HIGH,
    control_rate_hz=RATE_HZ,
    module_output="physical",
)


def export_goal_seeker(out_dir: str | Path, *, overwrite: bool = False) -> ExportReport:
    """Export the P-controller to a verified bundle."""
    return export_module(GoalSeeker(), GOAL_SEEKER_SPEC, Path(out_dir), overwrite=overwrite)


def export_adversary(out_dir: str | Path, *, overwrite: bool = False) -> ExportReport:
    """Export the adversary to a verified bundle."""
    return export_module(Adversary(), ADVERSARY_SPEC, Path(out_dir), overwrite=overwrite)


def main() -> None:
    """Write both bundles under --out."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="out/bundles", help="folder for goal_seeker/ and adversary/")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for name, fn in (("goal_seeker", export_goal_seeker), ("adversary", export_adversary)):
        report = fn(Path(args.out) / name, overwrite=True)
        print(
            f"{name}: {report.path} (parity max |Δ| {report.parity_max_abs_error:.1e} on {report.n_parity_samples})"
        )


if __name__ == "__main__":
    main()
