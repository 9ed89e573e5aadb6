"""Schema-2 flight logs survive damage: one flipped byte loses only the record it hit, the reader
says what it skipped, old schema-1 logs still read, and a full disk is announced and recorded."""

from __future__ import annotations

import contextlib
import re
import resource
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.flightlog import (
    FRAME_BYTES,
    MAGIC,
    SCHEMA_VERSION,
    FlightLog,
    FlightLogDamaged,
    FlightLogError,
    LogDamage,
    LogLimits,
    read_log,
)

REPO = Path(__file__).resolve().parents[2]
SCHEMA1_LOGS = sorted(Path("/work/shared/data/px4-sih-breach").glob("*.eal"))
N_TICKS = 300


def _tick(k: int) -> dict[str, object]:
    return {"k": "tick", "t_s": k * 0.004, "seq": k, "pos_ned_m": [0.1 * k, 0.0, -5.0], "mode": "OFFBOARD"}


def _write_log(path: Path, n: int = N_TICKS) -> list[tuple[int, int]]:
    """Write a header and ``n`` ticks; return each tick's (start, end) byte range in the file."""
    with FlightLog(path, {"bundle": "b"}, LogLimits(max_bytes=1 << 30)) as log:
        for k in range(n):
            log.write(_tick(k))
    data = path.read_bytes()
    spans, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos + 2 : pos + 6], "little")
        spans.append((pos, pos + FRAME_BYTES + length))
        pos += FRAME_BYTES + length
    assert len(spans) == 1 + n
    return spans[1:]


def _read(path: Path) -> tuple[list[dict], LogDamage]:
    damage = LogDamage()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FlightLogDamaged)
        records = list(read_log(path, damage))
    return records, damage


def test_records_are_framed_and_the_header_says_schema_2(tmp_path: Path) -> None:
    path = tmp_path / "f.eal"
    _write_log(path, 3)
    data = path.read_bytes()
    assert data[:2] == MAGIC
    records, damage = _read(path)
    assert records[0]["schema"] == SCHEMA_VERSION == 2
    assert [r["seq"] for r in records[1:]] == [0, 1, 2]
    assert not damage.damaged and damage.truncated_tail_bytes == 0


def test_a_flipped_byte_mid_log_loses_exactly_that_record_and_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "flipped.eal"
    spans = _write_log(path)
    start, end = spans[N_TICKS // 2]
    data = bytearray(path.read_bytes())
    data[start + FRAME_BYTES + 5] ^= 0x10  # inside the payload of tick 150
    path.write_bytes(data)
    damage = LogDamage()
    with pytest.warns(
        FlightLogDamaged,
        match=re.escape(
            f"{path}: 1 damaged record(s) skipped ({end - start} bytes in 1 stretch(es) of flipped.eal); "
            "every other record was read"
        ),
    ):
        records = list(read_log(path, damage))
    seqs = [r["seq"] for r in records[1:]]
    assert seqs == [k for k in range(N_TICKS) if k != N_TICKS // 2]
    assert (damage.records_lost, damage.damaged_spans, damage.skipped_bytes) == (1, 1, end - start)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, N_TICKS - 1), offset=st.integers(0, 10_000), mask=st.integers(1, 255))
def test_any_single_flipped_byte_loses_at_most_the_record_it_hit(
    tmp_path_factory: pytest.TempPathFactory, which: int, offset: int, mask: int
) -> None:
    path = tmp_path_factory.mktemp("flip") / "f.eal"
    spans = _write_log(path)
    start, end = spans[which]
    data = bytearray(path.read_bytes())
    data[start + offset % (end - start)] ^= mask  # magic, length, CRC or payload
    path.write_bytes(data)
    records, damage = _read(path)
    seqs = [r["seq"] for r in records[1:]]
    assert seqs == [k for k in range(N_TICKS) if k != which]
    assert damage.damaged_spans == 1 and damage.records_lost >= 1


def test_a_burst_of_garbage_and_a_cut_short_tail(tmp_path: Path) -> None:
    path = tmp_path / "burst.eal"
    spans = _write_log(path)
    data = bytearray(path.read_bytes())
    a, _ = spans[100]
    _, b = spans[109]
    data[a:b] = bytes(range(256)) * ((b - a) // 256) + b"\x00" * ((b - a) % 256)  # ten records wiped
    data = data[: spans[-1][0] + 7]  # the last record cut short, as a kill -9 mid-write leaves it
    path.write_bytes(data)
    records, damage = _read(path)
    seqs = [r["seq"] for r in records[1:]]
    assert seqs == [k for k in range(N_TICKS - 1) if not 100 <= k <= 109]
    assert damage.damaged_spans == 1 and damage.skipped_bytes == b - a
    assert damage.truncated_tail_bytes == 7


def test_only_a_cut_short_tail_is_no_damage(tmp_path: Path) -> None:
    path = tmp_path / "cut.eal"
    spans = _write_log(path, 10)
    path.write_bytes(path.read_bytes()[: spans[-1][1] - 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlightLogDamaged)  # no warning may be raised
        damage = LogDamage()
        assert [r["seq"] for r in list(read_log(path, damage))[1:]] == list(range(9))
    assert not damage.damaged and damage.truncated_tail_bytes > 0


def test_a_damaged_header_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "head.eal"
    _write_log(path, 5)
    data = bytearray(path.read_bytes())
    data[FRAME_BYTES + 3] ^= 0xFF
    path.write_bytes(data)
    with pytest.raises(
        FlightLogError,
        match=re.escape(
            f"{path} does not start with a flight-log header (its first bytes are damaged: 1 damaged"
        ),
    ):
        _read(path)


@pytest.mark.skipif(not SCHEMA1_LOGS, reason="the recorded PX4 SIH logs are not on this machine")
@pytest.mark.parametrize("log", SCHEMA1_LOGS, ids=lambda p: p.name)
def test_schema_1_logs_still_read(log: Path) -> None:
    records, damage = _read(log)
    assert records[0]["k"] == "header" and records[0]["schema"] == 1
    assert sum(1 for r in records if r["k"] == "tick") > 100
    assert not damage.damaged


def _report_cli(log: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "report", str(log), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )


@pytest.mark.skipif(not SCHEMA1_LOGS, reason="the recorded PX4 SIH logs are not on this machine")
def test_report_on_a_log_with_a_flipped_byte_keeps_every_undamaged_record(tmp_path: Path) -> None:
    from calib.report import load_flight

    # A real flight's records, rewritten in schema 2, then one byte flipped in its middle.
    source = SCHEMA1_LOGS[0]
    original, _ = _read(source)
    path = tmp_path / "flight.eal"
    header = {k: v for k, v in original[0].items() if k not in ("k", "schema")}
    with FlightLog(path, header) as log:
        for rec in original[1:]:
            log.write(rec)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0x01
    path.write_bytes(data)

    with pytest.warns(FlightLogDamaged, match=re.escape("1 damaged record(s) skipped")):
        flight = load_flight(path)
    # Every record but the header and the one the flip hit (a tick or an event) is in the report.
    assert len(flight.t_s) + len(flight.events) == len(original) - 2
    assert len(flight.t_s) >= sum(1 for r in original if r["k"] == "tick") - 1

    done = _report_cli(path, tmp_path / "report")
    assert done.returncode == 0, done.stderr
    assert "FlightLogDamaged" in done.stderr and "1 damaged record(s) skipped" in done.stderr
    assert (tmp_path / "report" / "report.html").is_file()


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


def test_a_full_disk_warns_once_on_stderr_and_the_log_says_where_records_are_missing(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "full.eal"
    log = FlightLog(path, {"bundle": "b"}, LogLimits(max_bytes=1 << 20, flush_bytes=1))
    assert not log.incomplete
    size = path.stat().st_size
    with _file_size_limit(size + 2000):
        for k in range(100):
            log.write(_tick(k))  # the disk fills after a few dozen
    assert log.incomplete and log.dropped > 50
    err = capfd.readouterr().err
    assert err.count("edge-agent: WARNING: cannot write the flight log") == 1
    assert re.search(
        rf"flight log {re.escape(str(path))} \((File too large|the disk took only part of a write)\): "
        r"the disk is full or failing; records are dropped and the log will be incomplete",
        err,
    ), err
    lost = log.dropped
    for k in range(100, 110):  # space again: the gap is written into the log, then ticks go on
        log.write(_tick(k))
    log.close()
    records, damage = _read(path)
    assert not damage.damaged
    events = [r for r in records if r["k"] == "event"]
    assert [e["name"] for e in events] == ["log_gap", "log_incomplete"]
    assert events[0]["records_dropped"] == events[1]["records_dropped"] == lost
    seqs = [r["seq"] for r in records if r["k"] == "tick"]
    assert len(seqs) == 110 - lost and seqs[-10:] == list(range(100, 110))
