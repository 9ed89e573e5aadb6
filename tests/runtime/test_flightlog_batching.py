"""The flight log batches tick records (one write(2) per batch) and loses nothing on the way out."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from edge_agent.flightlog import FlightLog, LogLimits, read_log


def _tick(k: int) -> dict[str, object]:
    return {"k": "tick", "t_s": k * 0.001, "seq": k, "pos_ned_m": [0.1 * k, 0.0, -5.0]}


def _on_disk(path: Path) -> list[dict[str, object]]:
    return list(read_log(path))


def test_ticks_wait_for_their_batch_but_events_sync_and_close_write_at_once(tmp_path: Path) -> None:
    path = tmp_path / "f.eal"
    log = FlightLog(path, {"bundle": "b"}, LogLimits(flush_interval_s=3600.0))
    assert [r["k"] for r in _on_disk(path)] == ["header"]  # the header is written at once
    for k in range(5):
        log.write(_tick(k))
    assert log.buffered == 5 and len(_on_disk(path)) == 1
    log.event(0.005, "hold", reason="STALE")  # an event takes the ticks before it along, in order
    assert log.buffered == 0
    assert [r.get("seq", r["k"]) for r in _on_disk(path)] == ["header", 0, 1, 2, 3, 4, "event"]
    log.write(_tick(5))
    log.sync()
    assert _on_disk(path)[-1]["seq"] == 5
    log.write(_tick(6))
    log.close()
    assert [r.get("seq") for r in _on_disk(path)][-2:] == [5, 6]


def test_a_batch_is_written_when_it_is_old_or_large(tmp_path: Path) -> None:
    path = tmp_path / "f.eal"
    with FlightLog(path, {"bundle": "b"}, LogLimits(flush_interval_s=0.05, flush_bytes=1 << 20)) as log:
        log.write(_tick(0))
        assert log.buffered == 1
        time.sleep(0.06)
        log.write(_tick(1))  # the batch is now older than flush_interval_s
        assert log.buffered == 0 and len(_on_disk(path)) == 3
    path2 = tmp_path / "g.eal"
    with FlightLog(path2, {"bundle": "b"}, LogLimits(flush_interval_s=3600.0, flush_bytes=200)) as log:
        for k in range(20):
            log.write(_tick(k))
            assert log.buffered * 30 < 200 + 60  # never much more than flush_bytes held back
        assert len(_on_disk(path2)) > 10


def test_kill_9_leaves_whole_records_in_order_up_to_the_last_batch(tmp_path: Path) -> None:
    path = tmp_path / "k.eal"
    interval = 0.05
    pid = os.fork()
    if pid == 0:  # the child writes ticks as a 1 kHz loop would, until killed
        try:
            log = FlightLog(path, {"bundle": "b"}, LogLimits(flush_interval_s=interval))
            k = 0
            while True:
                log.write(_tick(k))
                k += 1
                time.sleep(0.001)
        finally:
            os._exit(0)
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    seqs = [r["seq"] for r in _on_disk(path)[1:]]
    assert seqs == list(range(len(seqs))) and len(seqs) > 100  # whole records, none out of order
