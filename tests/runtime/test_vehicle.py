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


def test_px4_offboard_loss_into_a_stick_mode_without_rc_is_refused() -> None:
    from edge_agent.preflight import failsafe_refusal

    why = failsafe_refusal("PX4", {"COM_OBL_RC_ACT": 0.0, "COM_RC_IN_MODE": 1.0})  # PX4 SIH's defaults
    assert why is not None and "set COM_OBL_RC_ACT to 5 (Hold) or 4 (Land)" in why
    assert "fall to Position mode" in why
    assert "Altitude" in (failsafe_refusal("PX4", {"COM_OBL_RC_ACT": 1.0, "COM_RC_IN_MODE": 4.0}) or "")
    # Hold or Land, a pilot on the sticks (RC), parameters not reported, or ArduPilot: nothing to refuse.
    assert failsafe_refusal("PX4", {"COM_OBL_RC_ACT": 5.0, "COM_RC_IN_MODE": 1.0}) is None
    assert failsafe_refusal("PX4", {"COM_OBL_RC_ACT": 4.0, "COM_RC_IN_MODE": 1.0}) is None
    assert failsafe_refusal("PX4", {"COM_OBL_RC_ACT": 0.0, "COM_RC_IN_MODE": 0.0}) is None
    assert failsafe_refusal("PX4", {"COM_OBL_RC_ACT": 0.0}) is None
    assert failsafe_refusal("PX4", {}) is None
    assert failsafe_refusal("ARDUPILOT", {"GUID_TIMEOUT": 3.0}) is None
