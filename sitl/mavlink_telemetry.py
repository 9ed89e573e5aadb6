"""What the emulated PX4 / ArduPilot put in their telemetry messages, and where the vehicle is on Earth.

:class:`Home` places the Sim's local NED frame on the globe (the vehicle boots at home, as the
firmware's EKF origin and home coincide after a cold boot on the ground); :class:`TelemetryEncoder`
builds each streamable message from a :class:`~sitl.sim.Measurement` with pymavlink's generated
``ardupilotmega`` dialect. :mod:`sitl.mavlink_vehicle` decides when each message is due.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pymavlink.dialects.v20 import ardupilotmega as mavlink

from firmware_bridge.frames import quat_rotate
from sitl.autopilot import Autopilot, Mode
from sitl.mission import MissionState
from sitl.sim import Measurement

M = mavlink
_EARTH_RADIUS_M = 6378137.0


@dataclass(frozen=True, slots=True)
class Home:
    """The geodetic home position: where the vehicle stood at boot (EKF origin = home).

    The default is ArduPilot SITL's CMAC, as in data/ardupilot/flight.tlog; PX4 SIH boots at
    Zurich by default, but one home for both keeps the tests' geometry the same.
    """

    lat_deg: float = -35.3632621
    lon_deg: float = 149.1652374
    alt_amsl_m: float = 584.09

    def __post_init__(self) -> None:
        if not (-90.0 < self.lat_deg < 90.0 and -180.0 <= self.lon_deg <= 180.0):
            raise ValueError(
                f"home must be a latitude in (-90, 90) and a longitude in [-180, 180] degrees, "
                f"got {self.lat_deg}, {self.lon_deg}"
            )
        if not math.isfinite(self.alt_amsl_m):
            raise ValueError(f"home altitude must be finite (m AMSL), got {self.alt_amsl_m}")

    def geodetic(self, rel_ned_m: np.ndarray) -> tuple[int, int, float]:
        """(lat degE7, lon degE7, altitude m AMSL) of an offset from home; flat Earth, fine within km."""
        lat = self.lat_deg + math.degrees(float(rel_ned_m[0]) / _EARTH_RADIUS_M)
        lon = self.lon_deg + math.degrees(
            float(rel_ned_m[1]) / (_EARTH_RADIUS_M * math.cos(math.radians(self.lat_deg)))
        )
        return round(lat * 1e7), round(lon * 1e7), self.alt_amsl_m - float(rel_ned_m[2])

    def offset(self, lat_deg: float, lon_deg: float) -> tuple[float, float]:
        """(north m, east m) of a point from home: the inverse of :meth:`geodetic`."""
        north = math.radians(lat_deg - self.lat_deg) * _EARTH_RADIUS_M
        east = math.radians(lon_deg - self.lon_deg) * _EARTH_RADIUS_M * math.cos(math.radians(self.lat_deg))
        return north, east


def euler(q: np.ndarray) -> tuple[float, float, float]:
    """ZYX Euler (roll, pitch, yaw) from a wxyz quaternion."""
    w, x, y, z = (float(v) for v in q)
    roll = math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x))))
    yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return roll, pitch, yaw


_PX4_EXTRAS = (
    M.MAVLINK_MSG_ID_ATTITUDE_TARGET,
    M.MAVLINK_MSG_ID_POSITION_TARGET_LOCAL_NED,
    M.MAVLINK_MSG_ID_SERVO_OUTPUT_RAW,
    M.MAVLINK_MSG_ID_DISTANCE_SENSOR,
    M.MAVLINK_MSG_ID_VIBRATION,
    M.MAVLINK_MSG_ID_PING,
    M.MAVLINK_MSG_ID_OPEN_DRONE_ID_LOCATION,
    M.MAVLINK_MSG_ID_OPEN_DRONE_ID_SYSTEM,
)
"""What real PX4 SIH streams on its onboard link besides the vehicle's state (TelemetryEncoder._px4_extra)."""

STREAMABLE = (
    M.MAVLINK_MSG_ID_SYS_STATUS,
    M.MAVLINK_MSG_ID_ATTITUDE,
    M.MAVLINK_MSG_ID_ATTITUDE_QUATERNION,
    M.MAVLINK_MSG_ID_LOCAL_POSITION_NED,
    M.MAVLINK_MSG_ID_GLOBAL_POSITION_INT,
    M.MAVLINK_MSG_ID_HIGHRES_IMU,
    M.MAVLINK_MSG_ID_RAW_IMU,
    M.MAVLINK_MSG_ID_SCALED_PRESSURE,
    M.MAVLINK_MSG_ID_BATTERY_STATUS,
    M.MAVLINK_MSG_ID_HOME_POSITION,
    M.MAVLINK_MSG_ID_EXTENDED_SYS_STATE,
    M.MAVLINK_MSG_ID_ODOMETRY,
    M.MAVLINK_MSG_ID_GPS_RAW_INT,
    M.MAVLINK_MSG_ID_EKF_STATUS_REPORT,
    M.MAVLINK_MSG_ID_ESTIMATOR_STATUS,
    M.MAVLINK_MSG_ID_VFR_HUD,
    M.MAVLINK_MSG_ID_ALTITUDE,
    M.MAVLINK_MSG_ID_MISSION_CURRENT,
    M.MAVLINK_MSG_ID_SYSTEM_TIME,
    M.MAVLINK_MSG_ID_POWER_STATUS,
    M.MAVLINK_MSG_ID_GPS_GLOBAL_ORIGIN,
    *_PX4_EXTRAS,
)
"""Messages the emulator can stream at an interval."""

_TARGET_MASKS = {
    # POSITION_TARGET_LOCAL_NED type_mask: which fields are the target (ignore bits set for the rest)
    "POSITION": 0b0000_1101_1111_1000,
    "VELOCITY": 0b0000_1101_1100_0111,
    "ACCELERATION": 0b0000_1100_0011_1111,
}

_NEEDS_ESTIMATE = frozenset(
    {
        M.MAVLINK_MSG_ID_ATTITUDE,
        M.MAVLINK_MSG_ID_ATTITUDE_QUATERNION,
        M.MAVLINK_MSG_ID_LOCAL_POSITION_NED,
        M.MAVLINK_MSG_ID_GLOBAL_POSITION_INT,
        M.MAVLINK_MSG_ID_ODOMETRY,
        M.MAVLINK_MSG_ID_HIGHRES_IMU,
        M.MAVLINK_MSG_ID_VFR_HUD,
        M.MAVLINK_MSG_ID_ALTITUDE,
    }
)


def statustext_messages(
    mav: mavlink.MAVLink, severity: int, text: str, chunk_id: int
) -> list[mavlink.MAVLink_message]:
    """STATUSTEXT frames for ``text``: one, cut at 50 characters, when ``chunk_id`` is 0; else
    50-character chunks sharing ``chunk_id`` (MAVLink 2, as PX4 sends long texts), the last one
    shorter (a text that fills its last chunk exactly gets an empty one: the NUL that ends it)."""
    raw = text.encode("ascii", errors="replace")
    if chunk_id == 0 or len(raw) <= 50:
        return [mav.statustext_encode(severity, raw[:50])]
    return [
        mav.statustext_encode(severity, raw[k : k + 50], chunk_id, seq)
        for seq, k in enumerate(range(0, len(raw) + 1, 50))
    ]


class TelemetryEncoder:
    """Builds one vehicle's telemetry messages; ``boot_us`` is the firmware's microsecond clock."""

    def __init__(self, mav: mavlink.MAVLink, ap: Autopilot, home: Home, *, epoch_s: float = 0.0) -> None:
        self.mav = mav
        self.ap = ap
        self.home = home
        self.epoch_s = epoch_s
        """Wall-clock (Unix) time at Sim time 0, for SYSTEM_TIME; 0 = unknown (sent as 0)."""
        self._ping_seq = 0

    def boot_us(self) -> int:
        # The Sim's clock is a sum of float steps; rounding to whole microseconds first keeps 10.0 s
        # from reading as 9.999999 s (a microsecond clock, like the firmware's micros64()).
        return max(0, round(self.ap.time_since_boot_s * 1e6))

    def build(self, msgid: int, meas: Measurement) -> mavlink.MAVLink_message | None:
        """The message ``msgid`` now, or None (not available, or the estimator published nothing)."""
        if msgid in _NEEDS_ESTIMATE and not bool(meas.valid[0]):
            return None  # a telemetry dropout: the estimator published nothing this slot
        ap = self.ap
        pos = np.asarray(meas.pos_ned_m)[0] - ap.home_ned_m
        vel = np.asarray(meas.vel_ned_m_s)[0]
        q = np.asarray(meas.q_wxyz)[0]
        rates = np.asarray(meas.rates_frd_rad_s)[0]
        us = self.boot_us()
        ms = us // 1000
        mav = self.mav
        if msgid == M.MAVLINK_MSG_ID_LOCAL_POSITION_NED:
            if ap.rules.family == "ardupilot" and not ap.ready:
                return None  # real ArduCopter: no local position until its EKF has an origin (~40 s)
            return mav.local_position_ned_encode(ms, *pos.tolist(), *vel.tolist())
        if msgid == M.MAVLINK_MSG_ID_ATTITUDE_QUATERNION:
            return mav.attitude_quaternion_encode(ms, *q.tolist(), *rates.tolist())
        if msgid == M.MAVLINK_MSG_ID_ATTITUDE:
            return mav.attitude_encode(ms, *euler(q), *rates.tolist())
        if msgid == M.MAVLINK_MSG_ID_ODOMETRY:
            q_inv = q * np.array([1.0, -1.0, -1.0, -1.0])
            cov = [math.nan] + [0.0] * 20
            return mav.odometry_encode(
                us,
                M.MAV_FRAME_LOCAL_NED,
                M.MAV_FRAME_BODY_FRD,
                *pos.tolist(),
                q.tolist(),
                *quat_rotate(q_inv, vel).tolist(),
                *rates.tolist(),
                cov,
                cov,
                0,
                M.MAV_ESTIMATOR_TYPE_AUTOPILOT,
                100,
            )
        if msgid in (M.MAVLINK_MSG_ID_HIGHRES_IMU, M.MAVLINK_MSG_ID_RAW_IMU):
            acc = np.asarray(meas.acc_ned_m_s2)[0]
            q_inv = q * np.array([1.0, -1.0, -1.0, -1.0])
            # an accelerometer measures specific force: acceleration minus gravity, in the body frame
            f_frd = quat_rotate(q_inv, acc - np.array([0.0, 0.0, 9.80665]))
            if msgid == M.MAVLINK_MSG_ID_RAW_IMU:
                milli_g = [round(v / 9.80665 * 1000) for v in f_frd]
                mrad = [round(v * 1000) for v in rates]
                return mav.raw_imu_encode(us, *milli_g, *mrad, 210, 0, 420, 0, 2500)
            return mav.highres_imu_encode(
                us,
                *f_frd.tolist(),
                *rates.tolist(),
                0.21,
                0.0,
                0.42,
                1013.25,
                0.0,
                -float(pos[2]),
                25.0,
                0x1FFF,
                0,
            )
        if msgid == M.MAVLINK_MSG_ID_SCALED_PRESSURE:
            return mav.scaled_pressure_encode(ms, 1013.25 - 0.12 * float(-pos[2]), 0.0, 2500, 0)
        if msgid == M.MAVLINK_MSG_ID_GLOBAL_POSITION_INT:
            lat, lon, amsl = self.home.geodetic(pos)
            hdg = round(math.degrees(euler(q)[2]) % 360.0 * 100) % 36000
            return mav.global_position_int_encode(
                ms, lat, lon, round(amsl * 1000), round(-pos[2] * 1000), *(round(v * 100) for v in vel), hdg
            )
        if msgid == M.MAVLINK_MSG_ID_VFR_HUD:
            speed = float(math.hypot(vel[0], vel[1]))
            heading = round(math.degrees(euler(q)[2]) % 360.0) % 360
            throttle = 0
            if ap.armed:
                spin = float(np.mean(np.asarray(ap.sim.motor_speed)[0]))
                throttle = round(100 * (spin / ap.sim.airframe.max_rot_velocity_rad_s) ** 2)
            amsl = self.home.alt_amsl_m - float(pos[2])
            return mav.vfr_hud_encode(speed, speed, heading, min(max(throttle, 0), 100), amsl, -float(vel[2]))
        if msgid == M.MAVLINK_MSG_ID_ALTITUDE:
            amsl = self.home.alt_amsl_m - float(pos[2])
            return mav.altitude_encode(us, amsl, amsl, -float(pos[2]), -float(pos[2]), math.nan, math.nan)
        if msgid in (M.MAVLINK_MSG_ID_HOME_POSITION, M.MAVLINK_MSG_ID_GPS_GLOBAL_ORIGIN):
            h = self.home
            lat_e7, lon_e7, alt_mm = (
                round(h.lat_deg * 1e7),
                round(h.lon_deg * 1e7),
                round(h.alt_amsl_m * 1000),
            )
            if msgid == M.MAVLINK_MSG_ID_GPS_GLOBAL_ORIGIN:
                return mav.gps_global_origin_encode(lat_e7, lon_e7, alt_mm, us)
            return mav.home_position_encode(
                lat_e7, lon_e7, alt_mm, 0.0, 0.0, 0.0, [1.0, 0.0, 0.0, 0.0], 0.0, 0.0, 0.0, us
            )
        if msgid == M.MAVLINK_MSG_ID_GPS_RAW_INT:
            lat, lon, amsl = self.home.geodetic(pos)
            speed = round(math.hypot(vel[0], vel[1]) * 100)
            cog = round(math.degrees(math.atan2(vel[1], vel[0])) % 360.0 * 100) % 36000
            alt_mm = round(amsl * 1000)
            return mav.gps_raw_int_encode(
                us, 6, lat, lon, alt_mm, 121, 200, speed, cog, 10, alt_mm, 300, 300, 0, 0, 0
            )
        if msgid == M.MAVLINK_MSG_ID_EKF_STATUS_REPORT:
            # flags as recorded: 167 before the EKF uses GPS, 831 after (data/ardupilot/flight.tlog)
            return mav.ekf_status_report_encode(
                831 if ap.ready else 167, 0.0016, 0.00015, 0.00008, 0.03, 0.0, 0.0
            )
        if msgid == M.MAVLINK_MSG_ID_ESTIMATOR_STATUS:
            # PX4's ESTIMATOR_STATUS flags share their low bits with ArduPilot's EKF flags: the
            # same 167 / 831 (POS_HORIZ_ABS, bit 16, once the position estimate is usable)
            flags = 831 if ap.ready else 167
            return mav.estimator_status_encode(us, flags, 0.02, 0.05, 0.03, 0.1, 0.0, 0.0, 0.4, 0.6)
        if msgid == M.MAVLINK_MSG_ID_SYS_STATUS:
            present, enabled, health = self.sensor_bits()
            volts = float(ap.sim.battery_v[0])
            pct = self.battery_pct()
            return mav.sys_status_encode(
                present, enabled, health, 250, int(volts * 1000) & 0xFFFF, -1, pct, 0, 0, 0, 0, 0, 0
            )
        if msgid == M.MAVLINK_MSG_ID_POWER_STATUS:
            return mav.power_status_encode(5000, 0, 0)
        if msgid == M.MAVLINK_MSG_ID_BATTERY_STATUS:
            mv = min(int(float(ap.sim.battery_v[0]) * 1000), 65534)
            cells = [mv] + [65535] * 9
            return mav.battery_status_encode(
                0,
                M.MAV_BATTERY_FUNCTION_ALL,
                M.MAV_BATTERY_TYPE_LIPO,
                32767,
                cells,
                -1,
                -1,
                -1,
                self.battery_pct(),
            )
        if msgid == M.MAVLINK_MSG_ID_EXTENDED_SYS_STATE:
            vtol = M.MAV_VTOL_STATE_UNDEFINED if ap.rules.family == "px4" else M.MAV_VTOL_STATE_MC
            return mav.extended_sys_state_encode(vtol, int(ap.landed_state))
        if msgid == M.MAVLINK_MSG_ID_MISSION_CURRENT:
            plan = ap.plan
            state = plan.state(ap.mode is Mode.MISSION)
            seq = plan.current if state is not MissionState.NO_MISSION else 0
            if state is MissionState.COMPLETE:
                seq = max(len(plan.items) - 1, 0)
            return mav.mission_current_encode(seq, len(plan.items), int(state), 0)
        if msgid in _PX4_EXTRAS:
            return self._px4_extra(msgid, meas, pos, vel, q, us)
        if msgid == M.MAVLINK_MSG_ID_SYSTEM_TIME:
            unix_us = round((self.epoch_s + ap.sim.time_s) * 1e6) if self.epoch_s > 0 else 0
            return mav.system_time_encode(unix_us, ms)
        return None

    def _px4_extra(
        self, msgid: int, meas: Measurement, pos: np.ndarray, vel: np.ndarray, q: np.ndarray, us: int
    ) -> mavlink.MAVLink_message:
        """The streams real PX4 SIH sends its onboard link besides the state (ATTITUDE_TARGET,
        POSITION_TARGET_LOCAL_NED, SERVO_OUTPUT_RAW, DISTANCE_SENSOR, VIBRATION, PING, Open Drone ID)."""
        ap, mav, ms = self.ap, self.mav, us // 1000
        spin = np.asarray(ap.sim.motor_speed)[0] / ap.sim.airframe.max_rot_velocity_rad_s
        height = max(0.0, -float(pos[2]))
        if msgid == M.MAVLINK_MSG_ID_ATTITUDE_TARGET:
            thrust = float(np.mean(spin**2)) if ap.armed else 0.0
            return mav.attitude_target_encode(ms, 0, q.tolist(), 0.0, 0.0, 0.0, thrust)
        if msgid == M.MAVLINK_MSG_ID_POSITION_TARGET_LOCAL_NED:
            kind, sp = ap.setpoint
            xyz = [math.nan] * 9
            first = {"POSITION": 0, "VELOCITY": 3, "ACCELERATION": 6}.get(kind.name, 0)
            xyz[first : first + 3] = [sp[0], sp[1], sp[2]]
            if kind.name == "POSITION":
                xyz[0:3] = (np.asarray(sp[:3]) - ap.home_ned_m).tolist()
            mask = _TARGET_MASKS.get(kind.name, 0)
            return mav.position_target_local_ned_encode(ms, M.MAV_FRAME_LOCAL_NED, mask, *xyz, sp[3], 0.0)
        if msgid == M.MAVLINK_MSG_ID_SERVO_OUTPUT_RAW:
            pwm = [round(1000 + 1000 * float(s) ** 2) if ap.armed else 900 for s in spin[:4]]
            return mav.servo_output_raw_encode(us & 0xFFFFFFFF, 0, *pwm, *([0] * 12))
        if msgid == M.MAVLINK_MSG_ID_DISTANCE_SENSOR:
            cm = min(round(height * 100) + 10, 4000)  # SIH's downward range finder, ~0.1 m above the skids
            return mav.distance_sensor_encode(ms, 1, 4000, cm, 0, 0, M.MAV_SENSOR_ROTATION_PITCH_270, 0)
        if msgid == M.MAVLINK_MSG_ID_VIBRATION:
            return mav.vibration_encode(us, 0.01, 0.01, 0.02, 0, 0, 0)
        if msgid == M.MAVLINK_MSG_ID_PING:
            self._ping_seq = (self._ping_seq + 1) & 0xFFFFFFFF
            return mav.ping_encode(us, self._ping_seq, 0, 0)
        lat, lon, amsl = self.home.geodetic(pos)
        if msgid == M.MAVLINK_MSG_ID_OPEN_DRONE_ID_LOCATION:
            speed = round(float(math.hypot(vel[0], vel[1])) * 100)
            heading = round(math.degrees(math.atan2(vel[1], vel[0])) % 360.0 * 100) % 36000
            return mav.open_drone_id_location_encode(
                0, 0, bytes(20), 2 if ap.in_air else 1, heading, speed, round(-float(vel[2]) * 100),
                lat, lon, amsl, amsl, 0, height, 10, 4, 3, 2, 0xFFFF, 0
            )  # fmt: skip
        h = self.home
        return mav.open_drone_id_system_encode(
            0, 0, bytes(20), 0, 0, round(h.lat_deg * 1e7), round(h.lon_deg * 1e7), 1, 0, -1000.0, -1000.0,
            0, 0, h.alt_amsl_m, 0
        )  # fmt: skip

    def battery_pct(self) -> int:
        """Remaining battery in percent, 0..100."""
        return int(np.clip(round(float(self.ap.sim.battery_frac[0]) * 100), 0, 100))

    def sensor_bits(self) -> tuple[int, int, int]:
        """SYS_STATUS (present, enabled, health) as ArduCopter reported them; pre-arm follows readiness."""
        # ArduCopter's values from data/ardupilot/flight.tlog (GPS, gyro, accel present and healthy,
        # which is what MAVSDK's health.is_global_position_ok reads)
        present = 0x5371FC2F
        enabled = 0x5361FC2F if self.ap.armed else 0x52619C2F
        health = 0x5771FC2F if self.ap.armed else 0x57719C2F
        if not self.ap.ready:
            health &= ~M.MAV_SYS_STATUS_PREARM_CHECK
        return present, enabled, health
