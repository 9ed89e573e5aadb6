"""A small coverage-guided mutation fuzzer in pure Python (atheris, when installed, is the stronger one).

Loop: take an input from the corpus, mutate it (bit flips, interesting bytes, insertions,
deletions, duplication, splicing with another input, truncation), run the target under
``sys.settrace`` restricted to our packages, and keep the input if it reached a line transition
(an arc) never reached before. Each run is bounded in time (SIGALRM: a hang is a failure) and,
on replay, in memory (tracemalloc peak). Inputs that crash are written to ``fuzz/crashes/``.
"""

from __future__ import annotations

import hashlib
import signal
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from fuzz.targets import Target

ROOT = Path(__file__).resolve().parent.parent
TRACED = tuple(str(ROOT / p) for p in ("edge_agent", "firmware_bridge"))
CRASHES = Path(__file__).resolve().parent / "crashes"
INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFD, 0xFE, 0xFF, 0x0A, 0x22, 0x5B, 0x3D)
MAX_INPUT_BYTES = 1 << 14


class FuzzFailure(AssertionError):
    """A target crashed, hung or used too much memory on an input (saved under fuzz/crashes/)."""


class _Hang(BaseException):
    """Raised by the alarm inside a run that took too long (BaseException: targets may catch Exception)."""


@dataclass
class Stats:
    """What a fuzzing run did."""

    execs: int = 0
    arcs: int = 0
    corpus: int = 0
    new_inputs: list[bytes] = field(default_factory=list)
    max_peak_bytes: int = 0


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


def _covered(target: Target, data: bytes, seen: set[tuple[str, int, int]]) -> int:
    """Run under tracing; add the arcs reached to ``seen``; return how many were new."""
    before = len(seen)

    def local(frame: FrameType, event: str, _arg: Any) -> Any:
        if event == "line":
            code = frame.f_code
            last = getattr(local, "last", 0)
            seen.add((code.co_filename, last, frame.f_lineno))
            local.last = frame.f_lineno  # type: ignore[attr-defined]
        return local

    def global_(frame: FrameType, event: str, _arg: Any) -> Any:
        if event == "call" and frame.f_code.co_filename.startswith(TRACED):
            local.last = -frame.f_code.co_firstlineno  # type: ignore[attr-defined]
            return local
        return None

    sys.settrace(global_)
    try:
        execute(target, data)
    finally:
        sys.settrace(None)
    return len(seen) - before


def mutate(data: bytes, corpus: list[bytes], rng: np.random.Generator) -> bytes:
    """One to four random edits of ``data``."""
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        op = int(rng.integers(8))
        n = len(buf)
        if op == 0 and n:
            i = int(rng.integers(n))
            buf[i] ^= 1 << int(rng.integers(8))
        elif op == 1 and n:
            buf[int(rng.integers(n))] = INTERESTING[int(rng.integers(len(INTERESTING)))]
        elif op == 2:
            i = int(rng.integers(n + 1))
            buf[i:i] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        elif op == 3 and n > 1:
            i = int(rng.integers(n))
            del buf[i : i + int(rng.integers(1, 17))]
        elif op == 4 and n:
            i = int(rng.integers(n))
            j = min(n, i + int(rng.integers(1, 65)))
            buf[j:j] = buf[i:j]
        elif op == 5 and corpus:
            other = corpus[int(rng.integers(len(corpus)))]
            cut = int(rng.integers(n + 1))
            buf = buf[:cut] + other[int(rng.integers(len(other) + 1)) :]
        elif op == 6 and n:
            del buf[int(rng.integers(n)) :]
        elif op == 7 and n >= 2:
            i = int(rng.integers(n - 1))
            buf[i : i + 2] = int(rng.integers(65536)).to_bytes(2, "little")
    return bytes(buf[:MAX_INPUT_BYTES])


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


def fuzz(
    target: Target,
    corpus: list[bytes],
    *,
    seconds: float,
    rng: np.random.Generator,
    clock: Any = time.monotonic,
) -> Stats:
    """Coverage-guided fuzzing for ``seconds``, starting from ``corpus`` (not modified)."""
    stats = Stats()
    seen: set[tuple[str, int, int]] = set()
    pool = list(corpus) or [b""]
    for data in pool:
        _covered(target, data, seen)
        stats.execs += 1
    end = clock() + seconds
    while clock() < end:
        data = mutate(pool[int(rng.integers(len(pool)))], pool, rng)
        if _covered(target, data, seen):
            pool.append(data)
            stats.new_inputs.append(data)
        stats.execs += 1
    stats.arcs = len(seen)
    stats.corpus = len(pool)
    return stats
