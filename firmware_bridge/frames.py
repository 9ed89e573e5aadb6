"""Frame conventions and conversions, batched over a leading axis.

MAVLink is NED (world) / FRD (body). ROS-style policies use ENU (world) / FLU (body).
The mapping is its own inverse: ENU = (E, N, -D) of NED, FLU = (F, -R, -D) of FRD.
Quaternions are (w, x, y, z). For an attitude q_ned_frd (FRD → NED) the ENU/FLU attitude
is q_enu_flu = q_NED→ENU ⊗ q_ned_frd ⊗ q_FLU→FRD, both constant rotations by π about
fixed axes; this is the conversion MAVROS applies and the one frame bugs come from.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]

# NED <-> ENU permutation with sign; involutive (its own inverse).
_NED_ENU = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
# FRD <-> FLU; involutive.
_FRD_FLU = np.diag([1.0, -1.0, -1.0])

_S = np.sqrt(0.5)
# Rotation taking NED vectors to ENU: π about the axis (1, 1, 0)/√2 → quaternion (0, √½, √½, 0).
_Q_NED_TO_ENU = np.array([0.0, _S, _S, 0.0])
# Rotation taking FLU vectors to FRD: π about x → quaternion (0, 1, 0, 0).
_Q_FLU_TO_FRD = np.array([0.0, 1.0, 0.0, 0.0])


def ned_to_enu(v: F64) -> F64:
    """Vectors [..., 3] NED → ENU (also ENU → NED)."""
    return v @ _NED_ENU.T


enu_to_ned = ned_to_enu


def frd_to_flu(v: F64) -> F64:
    """Body vectors [..., 3] FRD → FLU (also FLU → FRD)."""
    return v @ _FRD_FLU.T


flu_to_frd = frd_to_flu


def quat_mul(a: F64, b: F64) -> F64:
    """Hamilton product of quaternions [..., 4] (w, x, y, z)."""
    aw, ax, ay, az = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
    bw, bx, by, bz = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def quat_ned_frd_to_enu_flu(q: F64) -> F64:
    """Attitude quaternions [..., 4]: FRD→NED into FLU→ENU."""
    return quat_mul(quat_mul(_Q_NED_TO_ENU, q), _Q_FLU_TO_FRD)


def quat_enu_flu_to_ned_frd(q: F64) -> F64:
    """Attitude quaternions [..., 4]: FLU→ENU into FRD→NED (inverse of the above)."""
    # Both constant rotations are by π, so each is its own inverse up to sign.
    return quat_mul(quat_mul(_Q_NED_TO_ENU, q), _Q_FLU_TO_FRD)


def quat_rotate(q: F64, v: F64) -> F64:
    """Rotate vectors v [..., 3] by unit quaternions q [..., 4] (body → world)."""
    w = q[..., :1]
    u = q[..., 1:]
    t = 2.0 * np.cross(u, v)
    return v + w * t + np.cross(u, t)


def yaw_from_quat(q: F64) -> F64:
    """Heading [...] in radians from quaternions [..., 4] (ZYX Euler yaw)."""
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
