"""When each telemetry message of an emulated flight controller is due, and MAVLink FTP's answer.

:class:`StreamSchedule` keeps one interval and one deadline per streamed message on a fixed time
grid (SET_MESSAGE_INTERVAL, ArduPilot's stream groups and SRx_ rates all end up here; the last
request wins per message, as in ArduPilot's deferred-message buckets). :func:`ftp_reply` answers
a MAVLink FTP request for a vehicle without a file system.
"""

from __future__ import annotations

from collections.abc import Mapping

from pymavlink.dialects.v20 import ardupilotmega as mavlink

M = mavlink

#: ArduPilot's stream groups (ArduCopter/GCS_Mavlink.cpp ``STREAM_*_msgs``), by SRx_ suffix:
#: (MAV_DATA_STREAM id, the members the emulator can send).
AP_STREAM_GROUPS: dict[str, tuple[int, tuple[int, ...]]] = {
    "RAW_SENS": (M.MAV_DATA_STREAM_RAW_SENSORS, (M.MAVLINK_MSG_ID_RAW_IMU, M.MAVLINK_MSG_ID_SCALED_PRESSURE)),
    "EXT_STAT": (
        M.MAV_DATA_STREAM_EXTENDED_STATUS,
        (
            M.MAVLINK_MSG_ID_SYS_STATUS,
            M.MAVLINK_MSG_ID_POWER_STATUS,
            M.MAVLINK_MSG_ID_MISSION_CURRENT,
            M.MAVLINK_MSG_ID_GPS_RAW_INT,
        ),
    ),
    "RC_CHAN": (M.MAV_DATA_STREAM_RC_CHANNELS, ()),
    "RAW_CTRL": (M.MAV_DATA_STREAM_RAW_CONTROLLER, ()),
    "POSITION": (
        M.MAV_DATA_STREAM_POSITION,
        (M.MAVLINK_MSG_ID_GLOBAL_POSITION_INT, M.MAVLINK_MSG_ID_LOCAL_POSITION_NED),
    ),
    "EXTRA1": (M.MAV_DATA_STREAM_EXTRA1, (M.MAVLINK_MSG_ID_ATTITUDE,)),
    "EXTRA2": (M.MAV_DATA_STREAM_EXTRA2, (M.MAVLINK_MSG_ID_VFR_HUD,)),
    "EXTRA3": (
        M.MAV_DATA_STREAM_EXTRA3,
        (M.MAVLINK_MSG_ID_SYSTEM_TIME, M.MAVLINK_MSG_ID_BATTERY_STATUS, M.MAVLINK_MSG_ID_EKF_STATUS_REPORT),
    ),
}
AP_STREAM_BY_ID = {stream_id: name for name, (stream_id, _) in AP_STREAM_GROUPS.items()}
"""SRx_ group name by MAV_DATA_STREAM id (REQUEST_DATA_STREAM)."""
AP_MAX_STREAM_HZ = 50.0
"""Highest stream-group rate honoured."""


def next_deadline(due_s: float, interval_s: float, now_s: float) -> float:
    """Next deadline on the fixed grid; if we fell behind by a whole interval, restart from now."""
    nxt = due_s + interval_s
    return nxt if nxt > now_s - 1e-9 else now_s + interval_s


class StreamSchedule:
    """Interval and next deadline of every streamed message (seconds, Sim time)."""

    def __init__(self, defaults_hz: Mapping[int, float], now_s: float) -> None:
        self.defaults_hz = dict(defaults_hz)
        self._interval_s = {m: 1.0 / hz for m, hz in self.defaults_hz.items()}
        self._due_s = dict.fromkeys(self._interval_s, now_s)

    @property
    def intervals_s(self) -> dict[int, float]:
        """Current intervals by message id."""
        return dict(self._interval_s)

    def set(self, msgid: int, interval_s: float, now_s: float) -> None:
        """Stream ``msgid`` every ``interval_s`` from now on (the first one at once)."""
        self._interval_s[msgid] = interval_s
        self._due_s[msgid] = now_s

    def stop(self, msgid: int) -> None:
        """Stop streaming ``msgid``."""
        self._interval_s.pop(msgid, None)
        self._due_s.pop(msgid, None)

    def set_default(self, msgid: int, now_s: float) -> None:
        """The firmware's own rate for ``msgid`` (SET_MESSAGE_INTERVAL 0): its default or off."""
        hz = self.defaults_hz.get(msgid)
        if hz is None:
            self.stop(msgid)
        else:
            self.set(msgid, 1.0 / hz, now_s)

    def set_group(self, group: str, rate_hz: float, now_s: float) -> None:
        """An ArduPilot stream group at ``rate_hz`` (0 stops its members)."""
        for msgid in AP_STREAM_GROUPS[group][1]:
            if rate_hz > 0:
                self.set(msgid, 1.0 / min(float(rate_hz), AP_MAX_STREAM_HZ), now_s)
            else:
                self.stop(msgid)

    def take_due(self, now_s: float) -> list[int]:
        """Messages due at ``now_s``; their deadlines move on by one interval on the grid."""
        due = [m for m, t in self._due_s.items() if now_s >= t - 1e-9]
        for m in due:
            self._due_s[m] = next_deadline(self._due_s[m], self._interval_s[m], now_s)
        return due


# MAVLink FTP (FILE_TRANSFER_PROTOCOL payload, mavlink.io/en/services/ftp.html)
FTP_ACK, FTP_NAK = 128, 129
FTP_ERR_UNKNOWN_COMMAND, FTP_ERR_FILE_NOT_FOUND = 7, 10
_FTP_FILE_OPS = (3, 4, 6, 11, 14, 15)  # ListDirectory, OpenFileRO, CreateFile, OpenFileWO, CRC32, BurstRead
_FTP_SESSION_OPS = (1, 2)  # TerminateSession, ResetSessions


def ftp_reply(payload: bytes) -> bytes | None:
    """The 251-byte answer to an FTP request by a vehicle with no file system (None: not a request).

    Opening, listing or reading anything is NAKed "file not found" and other operations "unknown
    command", at once, so MAVProxy and QGroundControl fetch parameters with PARAM_REQUEST_LIST
    straight away instead of timing out; session resets and terminations are ACKed.
    """
    if len(payload) < 12 or payload[3] >= FTP_ACK:
        return None
    seq = int.from_bytes(payload[0:2], "little")
    session, opcode = payload[2], payload[3]
    if opcode in _FTP_SESSION_OPS:
        reply, data = FTP_ACK, b""
    else:
        err = FTP_ERR_FILE_NOT_FOUND if opcode in _FTP_FILE_OPS else FTP_ERR_UNKNOWN_COMMAND
        reply, data = FTP_NAK, bytes([err])
    header = ((seq + 1) & 0xFFFF).to_bytes(2, "little") + bytes([session, reply, len(data), opcode, 0, 0])
    body = header + payload[8:12] + data
    return body + bytes(251 - len(body))
