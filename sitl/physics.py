"""Vectorised 6-DOF quadrotor rigid-body physics (NED world, FRD body, quaternions wxyz).

Model, per vehicle: first-order motor speed dynamics with separate up/down time constants
(discretised exactly), rotor thrust k_f·ω² and drag torque k_m·thrust, Gazebo-style rotor drag
(linear in rotor speed and in-plane air velocity) plus quadratic airframe drag, both on the
velocity relative to the air so wind acts through drag, gyroscopic coupling ω × Iω, flat ground
at down = 0 with contact, friction and crash detection, and a battery whose voltage sags with
load and charge and scales the reachable rotor speed.

Integration is semi-implicit (symplectic) Euler at a fixed step: velocities are updated from
the forces first, then positions and the attitude from the *new* velocities. It needs one force
evaluation per step (RK2 needs two, i.e. twice the cost at the same step), it does not pump
energy into the lightly damped rotational modes the way explicit Euler does, and the controller
is a zero-order hold at the same 250 Hz, so a higher-order integrator would not make the closed
loop more accurate. The quaternion is advanced to first order and renormalised every step.

Everything is elementwise over the batch axis (no matmul, no reductions whose order could
depend on the batch size), so a vehicle's trajectory does not depend on what else is in the batch.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from sitl.airframe import G_M_S2, Airframe

F64 = NDArray[np.float64]
BoolArr = NDArray[np.bool_]

AVIONICS_POWER_W = 10.0
"""Electrical load besides the motors (flight controller, companion, radio)."""

# Layout of the packed kinematic state row (Sim exposes views of these columns).
POS, VEL, ACC, QUAT, RATES = slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 13), slice(13, 16)
STATE_WIDTH = 16


class RigidBodies:
    """Kinematic, motor and battery state of n quadrotors and the fixed-step integrator that advances it."""

    def __init__(self, n: int, airframe: Airframe, dt_s: float) -> None:
        self.n = n
        self.airframe = airframe
        self.dt_s = dt_s
        a = airframe
        self.x = np.zeros((n, STATE_WIDTH))
        """Packed [n, 16]: pos_ned_m, vel_ned_m_s, acc_ned_m_s2, q_wxyz, rates_frd_rad_s."""
        self.x[:, 9] = 1.0
        self.ang_acc_frd_rad_s2 = np.zeros((n, 3))
        self.motor_speed_rad_s = np.zeros((n, 4))
        self.battery_frac = np.ones(n)
        self.battery_v = np.full(n, a.battery_full_v)
        self.current_a = np.zeros(n)
        self.on_ground = np.ones(n, dtype=bool)
        self.crashed = np.zeros(n, dtype=bool)
        self.thrust_n = np.zeros((n, 4))
        # Per-vehicle physical parameters (Sim sets them from the disturbance/fault configs).
        self.mass_kg = np.full(n, a.mass_kg)
        self.motor_eff = np.ones((n, 4))
        self.capacity_as = np.full(n, 5000.0 * 3.6)
        self.resistance_ohm = np.full(n, 0.03)
        # Constants.
        xy = np.asarray(a.rotor_pos_frd_m, dtype=np.float64)
        self._c_roll = -xy[:, 1] * 1.0
        self._c_pitch = xy[:, 0] * 1.0
        self._c_yaw = np.asarray(a.rotor_yaw_sign, dtype=np.float64) * a.moment_constant_m
        self._alpha_up = 1.0 - np.exp(-dt_s / a.motor_time_constant_up_s)
        self._alpha_dn = 1.0 - np.exp(-dt_s / a.motor_time_constant_down_s)
        self._inertia = np.asarray(a.inertia_kg_m2, dtype=np.float64)
        ix, iy, iz = a.inertia_kg_m2
        self._gyro = np.array([(iy - iz) / ix, (iz - ix) / iy, (ix - iy) / iz])
        self._inv_inertia = 1.0 / self._inertia
        self._half_rho_cda = 0.5 * a.air_density_kg_m3 * np.asarray(a.drag_area_frd_m2, dtype=np.float64)
        self._crash_cos = float(np.cos(a.crash_tilt_rad))
        self._v_cell_span = a.battery_cell_full_v - a.battery_cell_empty_v

    # Views into the packed state (stable objects: the emulator may hold on to them).
    @property
    def pos_ned_m(self) -> F64:
        """[n, 3] position, down = 0 is the ground."""
        return self.x[:, POS]

    def step(self, thrust_cmd: F64, armed: BoolArr, wind_ned_m_s: F64) -> None:
        """Advance every vehicle by dt_s with motor thrust-fraction commands [n, 4] in [0, 1]."""
        a = self.airframe
        dt = self.dt_s
        x = self.x
        live = ~self.crashed
        run = armed & live

        # Battery: open-circuit voltage from charge, sag from the last step's current.
        v_oc = a.battery_cells * (a.battery_cell_empty_v + self._v_cell_span * self.battery_frac)
        volts = np.maximum(v_oc - self.current_a * self.resistance_ohm, 0.5 * v_oc)
        self.battery_v[:] = volts
        # Thrust-linearised command (ω ∝ √thrust), limited by what the sagging battery can spin.
        w_max = a.max_rot_velocity_rad_s * (volts / a.battery_full_v)
        w_cmd = np.sqrt(np.clip(thrust_cmd, 0.0, 1.0)) * w_max[:, None]
        w_cmd = np.where(run[:, None], np.maximum(w_cmd, a.idle_rot_velocity_rad_s), 0.0)
        w = self.motor_speed_rad_s
        w += np.where(w_cmd > w, self._alpha_up, self._alpha_dn) * (w_cmd - w)
        thrust = (a.motor_constant_n_s2_rad2 * self.motor_eff) * (w * w)
        self.thrust_n[:] = thrust
        t0, t1, t2, t3 = thrust[:, 0], thrust[:, 1], thrust[:, 2], thrust[:, 3]
        cr, cp, cy = self._c_roll, self._c_pitch, self._c_yaw
        tau_x = t0 * cr[0] + t1 * cr[1] + t2 * cr[2] + t3 * cr[3]
        tau_y = t0 * cp[0] + t1 * cp[1] + t2 * cp[2] + t3 * cp[3]
        tau_z = t0 * cy[0] + t1 * cy[1] + t2 * cy[2] + t3 * cy[3]
        t_sum = t0 + t1 + t2 + t3
        w_sum = w[:, 0] + w[:, 1] + w[:, 2] + w[:, 3]

        # Power drawn (shaft power = drag torque · speed) → current, charge.
        shaft_w = a.moment_constant_m * (t0 * w[:, 0] + t1 * w[:, 1] + t2 * w[:, 2] + t3 * w[:, 3])
        self.current_a[:] = (shaft_w / a.propulsion_efficiency + AVIONICS_POWER_W) / volts
        self.battery_frac[:] = np.maximum(
            self.battery_frac - np.where(live, self.current_a, 0.0) * dt / self.capacity_as, 0.0
        )

        # Rotation matrix entries of q (body → world).
        qw, qx, qy, qz = x[:, 9], x[:, 10], x[:, 11], x[:, 12]
        r00 = 1.0 - 2.0 * (qy * qy + qz * qz)
        r01 = 2.0 * (qx * qy - qw * qz)
        r02 = 2.0 * (qx * qz + qw * qy)
        r10 = 2.0 * (qx * qy + qw * qz)
        r11 = 1.0 - 2.0 * (qx * qx + qz * qz)
        r12 = 2.0 * (qy * qz - qw * qx)
        r20 = 2.0 * (qx * qz - qw * qy)
        r21 = 2.0 * (qy * qz + qw * qx)
        r22 = 1.0 - 2.0 * (qx * qx + qy * qy)

        # Air-relative velocity in body axes; rotor drag in the rotor plane, quadratic on all axes.
        an = x[:, 3] - wind_ned_m_s[:, 0]
        ae = x[:, 4] - wind_ned_m_s[:, 1]
        ad = x[:, 5] - wind_ned_m_s[:, 2]
        bx = r00 * an + r10 * ae + r20 * ad
        by = r01 * an + r11 * ae + r21 * ad
        bz = r02 * an + r12 * ae + r22 * ad
        k_rd = a.rotor_drag_coefficient_n_s_m * w_sum
        hq = self._half_rho_cda
        fx = -(k_rd + hq[0] * np.abs(bx)) * bx
        fy = -(k_rd + hq[1] * np.abs(by)) * by
        fz = -hq[2] * np.abs(bz) * bz - t_sum

        inv_m = 1.0 / self.mass_kg
        acc_n = (r00 * fx + r01 * fy + r02 * fz) * inv_m
        acc_e = (r10 * fx + r11 * fy + r12 * fz) * inv_m
        acc_d = (r20 * fx + r21 * fy + r22 * fz) * inv_m + G_M_S2

        # Euler's equations with diagonal inertia.
        p, q, r = x[:, 13], x[:, 14], x[:, 15]
        g = self._gyro
        ii = self._inv_inertia
        dp = tau_x * ii[0] + g[0] * q * r
        dq = tau_y * ii[1] + g[1] * r * p
        dr = tau_z * ii[2] + g[2] * p * q

        # Semi-implicit Euler: velocities first, then positions/attitude with the new velocities.
        vn = x[:, 3] + acc_n * dt
        ve = x[:, 4] + acc_e * dt
        vd = x[:, 5] + acc_d * dt
        pd = x[:, 2] + vd * dt
        p1 = p + dp * dt
        q1 = q + dq * dt
        r1 = r + dr * dt
        h = 0.5 * dt
        nw = qw - h * (qx * p1 + qy * q1 + qz * r1)
        nx = qx + h * (qw * p1 + qy * r1 - qz * q1)
        ny = qy + h * (qw * q1 + qz * p1 - qx * r1)
        nz = qz + h * (qw * r1 + qx * q1 - qy * p1)
        inv_qn = 1.0 / np.sqrt(nw * nw + nx * nx + ny * ny + nz * nz)
        nw = nw * inv_qn
        nx = nx * inv_qn
        ny = ny * inv_qn
        nz = nz * inv_qn

        # Ground contact at down = 0: no sinking; hard or tilted touchdown is a crash; resting
        # (net force into the ground) holds the vehicle level and still by friction.
        contact = pd >= 0.0
        if contact.any() or self.crashed.any():
            tilt_cos = 1.0 - 2.0 * (nx * nx + ny * ny)
            crash = (
                contact
                & live
                & ((vd > a.crash_vertical_speed_m_s) | ((tilt_cos < self._crash_cos) & (vd > 0.0)))
            )
            self.crashed |= crash
            # The thrust's world-down component plus weight: >= 0 means the ground carries the vehicle.
            pressing = (r22 * fz + r20 * fx + r21 * fy) * inv_m + G_M_S2 >= 0.0
            rest = contact & pressing
            frozen = rest | self.crashed
            pd = np.where(contact, 0.0, pd)
            vd = np.where(contact, np.minimum(vd, 0.0), vd)
            vd = np.where(frozen, 0.0, vd)
            vn = np.where(frozen, 0.0, vn)
            ve = np.where(frozen, 0.0, ve)
            # Swing-twist: the heading-only part of q is (w, 0, 0, z) normalised.
            tw = 1.0 / np.sqrt(nw * nw + nz * nz)
            nw = np.where(frozen, nw * tw, nw)
            nz = np.where(frozen, nz * tw, nz)
            nx = np.where(frozen, 0.0, nx)
            ny = np.where(frozen, 0.0, ny)
            p1 = np.where(frozen, 0.0, p1)
            q1 = np.where(frozen, 0.0, q1)
            r1 = np.where(frozen, 0.0, r1)
            self.on_ground[:] = rest & ~self.crashed
            self.motor_speed_rad_s[self.crashed] = 0.0
        else:
            self.on_ground[:] = False
        pn = x[:, 0] + vn * dt
        pe = x[:, 1] + ve * dt
        inv_dt = 1.0 / dt
        self.ang_acc_frd_rad_s2[:, 0] = (p1 - p) * inv_dt
        self.ang_acc_frd_rad_s2[:, 1] = (q1 - q) * inv_dt
        self.ang_acc_frd_rad_s2[:, 2] = (r1 - r) * inv_dt
        # Kinematic acceleration actually realised (zero while resting).
        x[:, 6] = (vn - x[:, 3]) * inv_dt
        x[:, 7] = (ve - x[:, 4]) * inv_dt
        x[:, 8] = (vd - x[:, 5]) * inv_dt
        x[:, 0] = pn
        x[:, 1] = pe
        x[:, 2] = pd
        x[:, 3] = vn
        x[:, 4] = ve
        x[:, 5] = vd
        x[:, 9] = nw
        x[:, 10] = nx
        x[:, 11] = ny
        x[:, 12] = nz
        x[:, 13] = p1
        x[:, 14] = q1
        x[:, 15] = r1
