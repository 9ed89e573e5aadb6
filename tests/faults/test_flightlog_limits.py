"""A long flight cannot fill the disk; a full disk cannot corrupt the log or stop the agent."""

from __future__ import annotations

import contextlib
import re
import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.flightlog import FlightLog, FlightLogError, LogDamage, LogLimits, read_log, segment_path


def _tick(k: int) -> dict[str, object]:
    return {"k": "tick", "t_s": k * 0.004, "seq": k, "pos_ned_m": [0.1 * k, 0.0, -5.0], "pad": "x" * 40}


def test_rotation_bounds_the_disk_and_the_reader_reads_every_kept_segment(tmp_path: Path) -> None:
    limits = LogLimits(max_bytes=8 << 10, keep_segments=3)
    path = tmp_path / "long.eal"
    n = 20_000  # a flight worth ~80 s at 250 Hz, ~1.6 MB of records, through an 8 KiB budget
    with FlightLog(path, {"bundle": "b"}, limits) as log:
        for k in range(n):
            log.write(_tick(k))
        segments_made = log._segment
    files = sorted(tmp_path.iterdir())
    total = sum(f.stat().st_size for f in files)
    record = len(_tick(n).__repr__())  # generous: msgpack is smaller than repr
    # The first segment (header) plus the newest keep_segments, each at most max_bytes + one record.
    assert len(files) == 1 + limits.keep_segments
    assert total <= (1 + limits.keep_segments) * (limits.max_bytes + record)
    assert segments_made > 100
    assert [f.name for f in files] == sorted(
        ["long.eal"] + [segment_path(path, i).name for i in range(segments_made - 2, segments_made + 1)]
    )

    records = list(read_log(path))
    assert records[0]["k"] == "header"
    seqs = [r["seq"] for r in records[1:]]
    # The header segment's own ticks, then a gap (dropped segments), then the newest, contiguous.
    first_gap = next(i for i in range(1, len(seqs)) if seqs[i] != seqs[i - 1] + 1)
    assert seqs[:first_gap] == list(range(first_gap))
    assert seqs[first_gap:] == list(range(seqs[first_gap], n))


def test_reader_refuses_what_is_not_a_flight_log(tmp_path: Path) -> None:
    p = tmp_path / "x.eal"
    p.write_bytes(b"\x81\x81\xa1a\x01\x02")  # a map keyed by a map: valid msgpack, never ours
    with pytest.raises(FlightLogError, match=re.escape(f"{p} is corrupt (unhashable type: 'dict')")):
        list(read_log(p))
    p.write_bytes(b"")
    with pytest.raises(FlightLogError, match=re.escape(f"{p} is empty: the agent wrote no header")):
        list(read_log(p))
    with pytest.raises(FlightLogError, match=re.escape(f"flight log {tmp_path / 'none.eal'} does not exist")):
        list(read_log(tmp_path / "none.eal"))


@contextlib.contextmanager
def _file_size_limit(limit_bytes: int) -> Iterator[None]:
    """RLIMIT_FSIZE stands in for a full disk: writes past it fail with EFBIG (SIGXFSZ ignored)."""
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_full_disk_drops_records_without_corrupting_the_log(tmp_path: Path) -> None:
    path = tmp_path / "full.eal"
    with _file_size_limit(4000):
        log = FlightLog(path, {"bundle": "b"}, LogLimits(max_bytes=1 << 20))
        for k in range(200):
            log.write(_tick(k))  # never raises: the vehicle must not fall because the disk did
        log.close()
    assert log.dropped > 100
    assert path.stat().st_size <= 4000
    damage = LogDamage()
    records = list(read_log(path, damage))
    assert not damage.damaged and damage.truncated_tail_bytes == 0  # no partial record left anywhere
    seqs = [r["seq"] for r in records if r["k"] == "tick"]
    # Every tick is on disk or counted; once a partial batch is cut off again, a later smaller
    # batch may fit: then log_gap / log_incomplete events say how many went missing.
    assert seqs == sorted(seqs) and len(seqs) == 200 - log.dropped
    assert {r["name"] for r in records if r["k"] == "event"} <= {"log_gap", "log_incomplete"}


def test_a_disk_too_full_for_the_header_refuses_at_start_up(tmp_path: Path) -> None:
    with (
        _file_size_limit(10),
        pytest.raises(
            FlightLogError,
            match=re.escape("the disk is full or failing; free space or choose another --log path"),
        ),
    ):
        FlightLog(tmp_path / "h.eal", {"bundle": "b" * 100})
