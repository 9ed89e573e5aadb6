"""Physical parameters of a multirotor airframe, and the Holybro X500 the simulator flies by default.

The X500 numbers are PX4's own Gazebo SITL model (github.com/PX4/PX4-gazebo-models,
``models/x500_base/model.sdf`` for mass, inertia and rotor positions; ``models/x500/model.sdf``
for the ``MulticopterMotorModel`` plugin: ``motorConstant``, ``momentConstant``,
``timeConstantUp/Down``, ``maxRotVelocity``, ``rotorDragCoefficient``). Gazebo's model has no
airframe (parasitic) drag and no battery; those two items are our own estimates for a 2 kg,
500 mm quad on a 4S 5000 mAh pack and are marked as such below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

G_M_S2 = 9.80665
"""Standard gravity."""


@dataclass(frozen=True, slots=True)
class Airframe:
    """Rigid-body, rotor, drag and battery parameters of a quad-X (body frame FRD, motors in PX4 order)."""

    mass_kg: float
    inertia_kg_m2: tuple[float, float, float]
    """Principal moments of inertia about body x (roll), y (pitch), z (yaw)."""
    rotor_pos_frd_m: tuple[tuple[float, float], ...]
    """(x forward, y right) of each rotor, PX4 quad-X order: front-right, back-left, front-left, back-right."""
    rotor_yaw_sign: tuple[float, ...]
    """+1 for a rotor spinning counter-clockwise seen from above (its drag torque yaws the body right)."""
    motor_constant_n_s2_rad2: float
    """Thrust per rotor = motor_constant · ω² (Gazebo ``motorConstant``)."""
    moment_constant_m: float
    """Rotor drag torque = moment_constant · thrust (Gazebo ``momentConstant``)."""
    motor_time_constant_up_s: float
    motor_time_constant_down_s: float
    max_rot_velocity_rad_s: float
    """Rotor speed at full command with a full battery."""
    idle_rot_velocity_rad_s: float
    """Rotor speed when armed at zero thrust command (PX4 spins the motors at idle when armed)."""
    rotor_drag_coefficient_n_s_m: float
    """Per-rotor in-plane drag = coefficient · ω · (air velocity in the rotor plane) (Gazebo ``rotorDragCoefficient``)."""
    drag_area_frd_m2: tuple[float, float, float]
    """Cd·A of the airframe along body x, y, z for quadratic drag (our estimate; Gazebo has none)."""
    air_density_kg_m3: float
    battery_cells: int
    battery_cell_full_v: float
    battery_cell_empty_v: float
    propulsion_efficiency: float
    """Shaft power / electrical power, to turn rotor power into battery current (our estimate)."""
    crash_vertical_speed_m_s: float
    """Touching the ground faster than this (downwards) breaks the vehicle."""
    crash_tilt_rad: float
    """Touching the ground tilted more than this breaks the vehicle."""

    def __post_init__(self) -> None:
        n = len(self.rotor_pos_frd_m)
        if n != 4 or len(self.rotor_yaw_sign) != 4:
            raise ValueError(
                f"Airframe needs exactly 4 rotors (quad-X) in rotor_pos_frd_m and rotor_yaw_sign, "
                f"got {n} and {len(self.rotor_yaw_sign)}"
            )
        if self.mass_kg <= 0.0 or min(self.inertia_kg_m2) <= 0.0:
            raise ValueError(
                f"Airframe mass_kg and inertia_kg_m2 must be positive, got {self.mass_kg} and {self.inertia_kg_m2}"
            )
        if self.max_thrust_n <= self.mass_kg * G_M_S2:
            raise ValueError(
                f"Airframe cannot lift itself: max thrust {self.max_thrust_n:.2f} N <= weight "
                f"{self.mass_kg * G_M_S2:.2f} N; raise motor_constant_n_s2_rad2 or max_rot_velocity_rad_s"
            )

    @property
    def max_thrust_n(self) -> float:
        """Collective thrust of all rotors at full speed with a full battery."""
        return 4.0 * self.motor_constant_n_s2_rad2 * self.max_rot_velocity_rad_s**2

    @property
    def hover_thrust_frac(self) -> float:
        """Collective thrust fraction (0..1 of max_thrust_n) that balances the nominal weight."""
        return self.mass_kg * G_M_S2 / self.max_thrust_n

    @property
    def hover_rot_velocity_rad_s(self) -> float:
        """Rotor speed that balances the nominal weight."""
        return float(np.sqrt(self.mass_kg * G_M_S2 / (4.0 * self.motor_constant_n_s2_rad2)))

    @property
    def battery_full_v(self) -> float:
        """Open-circuit voltage of a full pack."""
        return self.battery_cells * self.battery_cell_full_v


_ARM_XY_M = 0.174

X500 = Airframe(
    mass_kg=2.0,
    inertia_kg_m2=(0.02166666666666667, 0.02166666666666667, 0.04000000000000001),
    # Gazebo poses are FLU; rotor_0 at (0.174, -0.174) FLU is front-right = (0.174, 0.174) FRD, etc.
    rotor_pos_frd_m=(
        (_ARM_XY_M, _ARM_XY_M),
        (-_ARM_XY_M, -_ARM_XY_M),
        (_ARM_XY_M, -_ARM_XY_M),
        (-_ARM_XY_M, _ARM_XY_M),
    ),
    rotor_yaw_sign=(1.0, 1.0, -1.0, -1.0),  # rotors 0 and 1 are ``ccw`` in the SDF
    motor_constant_n_s2_rad2=8.54858e-06,
    moment_constant_m=0.016,
    motor_time_constant_up_s=0.0125,
    motor_time_constant_down_s=0.025,
    max_rot_velocity_rad_s=1000.0,
    idle_rot_velocity_rad_s=100.0,
    rotor_drag_coefficient_n_s_m=8.06428e-05,
    # Our estimate: ~0.12 m² frontal area (frame, battery, legs) with Cd ≈ 0.5; larger from below.
    drag_area_frd_m2=(0.06, 0.06, 0.15),
    air_density_kg_m3=1.225,
    battery_cells=4,
    battery_cell_full_v=4.2,
    battery_cell_empty_v=3.5,
    propulsion_efficiency=0.7,
    crash_vertical_speed_m_s=3.0,
    crash_tilt_rad=float(np.deg2rad(60.0)),
)
"""Holybro X500 class quad (2.0 kg, 500 mm) with PX4's Gazebo SITL model numbers."""
