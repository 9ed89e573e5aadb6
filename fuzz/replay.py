"""Corpus replay: run saved inputs through a target, bounded in time and memory (no fuzzing here).

The fuzzing itself is atheris / libFuzzer with the targets' imports instrumented
(:mod:`fuzz.run`). This module replays what it found, as CI does on every run: each input is
bounded in time (SIGALRM: a hang is a failure) and in memory (tracemalloc peak). Inputs that
crash are written to ``fuzz/crashes/``.
"""

from __future__ import annotations

import hashlib
import signal
import tracemalloc
from pathlib import Path
from typing import Any

from fuzz.targets import Target

CRASHES = Path(__file__).resolve().parent / "crashes"


class FuzzFailure(AssertionError):
    """A target crashed, hung or used too much memory on an input (saved under fuzz/crashes/)."""


class _Hang(BaseException):
    """Raised by the alarm inside a run that took too long (BaseException: targets may catch Exception)."""


def _save_crash(target: Target, data: bytes) -> Path:
    CRASHES.mkdir(exist_ok=True)
    path = CRASHES / f"{target.name}-{hashlib.sha1(data).hexdigest()[:12]}.bin"
    path.write_bytes(data)
    return path


def execute(target: Target, data: bytes, *, timeout_s: float = 2.0) -> None:
    """Run one input; FuzzFailure (input saved) unless it returns or raises an allowed error."""

    def _alarm(_sig: int, _frame: Any) -> None:
        raise _Hang

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        target.run(data)
    except target.allowed:
        pass
    except _Hang:
        path = _save_crash(target, data)
        raise FuzzFailure(
            f"{target.name}: an input ran longer than {timeout_s} s (saved to {path})"
        ) from None
    except Exception as exc:
        path = _save_crash(target, data)
        raise FuzzFailure(f"{target.name}: {type(exc).__name__}: {exc} (input saved to {path})") from exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def load_corpus(directory: Path) -> list[bytes]:
    """Every file of a corpus folder, sorted by name (deterministic)."""
    if not directory.is_dir():
        return []
    return [p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()]


def replay(target: Target, corpus: list[bytes], *, max_peak_bytes: int = 64 << 20) -> int:
    """Run every corpus input with memory tracing; FuzzFailure if one exceeds the bound. Returns the peak."""
    worst = 0
    for data in corpus:
        tracemalloc.start()
        try:
            execute(target, data)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        worst = max(worst, peak)
        if peak > max_peak_bytes:
            path = _save_crash(target, data)
            raise FuzzFailure(f"{target.name}: {peak} bytes peak > {max_peak_bytes} (input saved to {path})")
    return worst
