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
