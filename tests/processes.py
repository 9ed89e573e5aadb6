"""Child processes the tests start (an emulator, MAVProxy): how they are stopped."""

from __future__ import annotations

import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any], timeout_s: float = 5.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout_s``; its return code. Nothing if it already ended."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)
    return int(proc.returncode)
