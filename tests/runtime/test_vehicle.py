"""Which vehicle a calibration is for, and the mismatch the runtime reports."""

from __future__ import annotations

from edge_agent.vehicle import describe, identity, mismatch


def test_a_calibration_from_the_emulator_does_not_cover_real_px4_sih() -> None:
    cal = identity("px4", emulator=True)
    sih = identity("PX4", {"SYS_AUTOSTART": 10040.0, "COM_OF_LOSS_T": 1.0})
    why = mismatch(cal, sih)
    assert why == "calibrated on the PX4 emulator (sitl/), flying real firmware: PX4 (SYS_AUTOSTART 10040)"
    # The emulator itself answers no airframe parameter: the same calibration covers it.
    assert mismatch(cal, identity("PX4", {"COM_OF_LOSS_T": 1.0})) is None


def test_autopilot_family_and_airframe_must_match() -> None:
    px4 = identity("PX4", {"SYS_AUTOSTART": 10040.0})
    assert mismatch(px4, identity("ARDUPILOT", {"FRAME_CLASS": 1.0})) == (
        "calibrated on PX4 (SYS_AUTOSTART 10040), flying ARDUPILOT (FRAME_CLASS 1)"
    )
    assert mismatch(px4, identity("PX4", {"SYS_AUTOSTART": 4001.0})) is not None
    assert mismatch(px4, identity("PX4", {"SYS_AUTOSTART": 10040.0})) is None
    assert mismatch(px4, identity("PX4")) is None  # nothing says otherwise
    assert mismatch(None, px4) is None  # uncalibrated: nothing to compare


def test_describe() -> None:
    assert (
        describe(identity("ardupilot", {"FRAME_CLASS": 1, "FRAME_TYPE": 0}))
        == "ARDUPILOT (FRAME_CLASS 1, FRAME_TYPE 0)"
    )


class _FakeRuntime:
    """Just what Runtime.check_failsafe reads."""

    def __init__(self, autopilot: str, params: dict[str, float]) -> None:
        from firmware_bridge.types import Autopilot, VehicleState

        self.state = VehicleState(autopilot=Autopilot[autopilot], params=params)
        self.log = None
        self.texts: list[str] = []

    def _t(self) -> float:
        return 0.0

    def _gcs_text(self, severity: int, text: str) -> None:
        self.texts.append(text)


def test_px4_offboard_loss_into_a_stick_mode_without_rc_is_warned_about(capsys) -> None:
    from edge_agent.loop import Runtime

    sih = _FakeRuntime("PX4", {"COM_OBL_RC_ACT": 0.0, "COM_RC_IN_MODE": 1.0})  # PX4 SIH's defaults
    warning = Runtime.check_failsafe(sih)  # type: ignore[arg-type]
    assert warning is not None and "set COM_OBL_RC_ACT to 5 (Hold) or 4 (Land)" in warning
    assert "WARNING: PX4 falls to Position mode" in capsys.readouterr().err
    assert sih.texts == ["edge-agent: set COM_OBL_RC_ACT=5 (Hold)"]
    # Hold, or a pilot on the sticks (RC), or ArduPilot: nothing to say.
    assert Runtime.check_failsafe(_FakeRuntime("PX4", {"COM_OBL_RC_ACT": 5.0, "COM_RC_IN_MODE": 1.0})) is None  # type: ignore[arg-type]
    assert Runtime.check_failsafe(_FakeRuntime("PX4", {"COM_OBL_RC_ACT": 0.0, "COM_RC_IN_MODE": 0.0})) is None  # type: ignore[arg-type]
    assert Runtime.check_failsafe(_FakeRuntime("ARDUPILOT", {"GUID_TIMEOUT": 3.0})) is None  # type: ignore[arg-type]
