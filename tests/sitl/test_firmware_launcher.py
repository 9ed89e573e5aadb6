"""The real-firmware launcher's refusals, which need no firmware to check."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sitl.firmware import FirmwareSitl, FirmwareUnavailable, firmware_binary

REPO = Path(__file__).resolve().parents[2]


def test_a_missing_firmware_folder_is_refused_with_the_ways_to_name_one(tmp_path: Path) -> None:
    with pytest.raises(FirmwareUnavailable, match=re.escape(f"no firmware folder at {tmp_path / 'nope'}")):
        firmware_binary("px4", tmp_path / "nope")
    (tmp_path / "px4" / "bin").mkdir(parents=True)
    with pytest.raises(FirmwareUnavailable, match=re.escape("px4 SITL binary not found or not executable")):
        FirmwareSitl("px4", firmware_dir=tmp_path)


def test_options_that_cannot_work_are_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape("--speedup applies to ArduCopter only")):
        FirmwareSitl("px4", speedup=5.0, firmware_dir=tmp_path)
    with pytest.raises(ValueError, match=re.escape("need at least one vehicle")):
        FirmwareSitl("ardupilot", n=0, firmware_dir=tmp_path)


def test_the_cli_says_why_and_exits_1_when_the_firmware_is_missing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "sitl",
            "--firmware",
            "ardupilot",
            "--firmware-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr  # a start-up error (docs/safety.md's exit-code table)
    assert (
        "cannot run the ardupilot firmware: ardupilot SITL binary not found or not executable" in proc.stderr
    )
    assert "--firmware-dir DIR or set EDGE_AGENT_FIRMWARE_DIR" in proc.stderr


def test_a_command_without_firmware_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "sitl", "--", "true"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "runs only beside --firmware" in proc.stderr
