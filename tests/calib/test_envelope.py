"""The certificate's stated envelope: the thrust-to-weight floor of a scenario, checked against
the simulated mixer (a vehicle just above the floor holds altitude; just below it sinks)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from calib.scenario import Band, load_scenario, thrust_to_weight_floor
from sitl.airframe import G_M_S2, X500
from sitl.disturbance import Faults
from sitl.sim import SetpointKind, Sim

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _sink_rate(mass_scale: float, weak: float) -> float:
    """Steady sink rate (m/s) of a vehicle told to hold altitude with one motor at ``weak``."""
    sim = Sim(1, rng=np.random.default_rng(0), faults=Faults(motor_efficiency=(weak, 1.0, 1.0, 1.0)))
    sim.set_params(mass_scale=mass_scale)
    sim.reset(on_ground=False, pos_ned_m=(0.0, 0.0, -60.0))
    sim.set_setpoint(SetpointKind.VELOCITY, [0.0, 0.0, 0.0, 0.0, 0.0])
    sim.step(3000)  # 12 s: the integrators find the thrust the weak motor and the payload need
    z = float(sim.pos_ned_m[0, 2])
    sim.step(1000)
    if sim.crashed[0]:  # fell the 60 m
        return float("inf")
    return (float(sim.pos_ned_m[0, 2]) - z) / 4.0


@pytest.mark.parametrize("weak", [0.6, 0.8])
@pytest.mark.parametrize("ratio, holds", [(1.25, True), (1.0, False)])
def test_floor_formula_is_conservative_against_the_mixer(weak: float, ratio: float, holds: bool) -> None:
    """A vehicle at the demo's floor (1.25 by the formula) holds altitude; at 1.0 it cannot."""
    nominal = X500.max_thrust_n / (X500.mass_kg * G_M_S2)
    mass = nominal * (1.0 + 3.0 * weak) / 4.0 / ratio  # the formula's post-fault thrust-to-weight = ratio
    sink = _sink_rate(mass, weak)
    if holds:
        assert abs(sink) < 0.05
    else:
        assert sink > 0.5


def test_demo_scenario_states_its_floor() -> None:
    demo = load_scenario(EXAMPLES / "scenarios" / "demo.toml")
    harsh = load_scenario(EXAMPLES / "scenarios" / "harsh.toml")
    assert thrust_to_weight_floor(demo)["after_fault"] == pytest.approx(1.2507, abs=1e-3)
    assert thrust_to_weight_floor(harsh)["after_fault"] == pytest.approx(1.1939, abs=1e-3)
    no_faults = dataclasses.replace(
        demo, vehicle=dataclasses.replace(demo.vehicle, motor_fault_probability=0.0)
    )
    assert set(thrust_to_weight_floor(no_faults)) == {"healthy"}
    heavier = dataclasses.replace(demo, vehicle=dataclasses.replace(demo.vehicle, mass_scale=Band(1.0, 1.3)))
    assert thrust_to_weight_floor(heavier)["healthy"] < thrust_to_weight_floor(demo)["healthy"]
