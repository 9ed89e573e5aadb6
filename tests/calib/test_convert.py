"""`edge-agent convert`: column naming, NaN in JSON, damaged logs, format choice."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import pytest

from calib.convert import convert, flatten
from edge_agent.cli import main
from edge_agent.errors import ConfigError
from edge_agent.flightlog import FRAME_BYTES, FlightLog, FlightLogDamaged


def _log(path: Path, n: int = 50) -> Path:
    with FlightLog(path, {"bundle": "b", "mission": {"fence": [[0, 0], [1, 1]]}}) as log:
        log.event(0.0, "connected", autopilot="PX4")
        for k in range(n):
            log.write(
                {
                    "k": "tick",
                    "t_s": 0.01 * k,
                    "pos_ned_m": [k, 0.0, -5.0],
                    "setpoint": [0.5, 0.0, 0.0, 0.1],
                    "score_m": math.nan if k == 0 else 0.1,
                    "mode": "OFFBOARD",
                }
            )
        log.event(0.5, "finish", reason="mission complete")
    return path


def test_flatten_names_columns_by_frame_and_index() -> None:
    row = flatten({"k": "tick", "t_s": 1.0, "pos_ned_m": [1, 2, 3], "setpoint": [4, 5, 6, 7], "c": {"a": 1}})
    assert row == {
        "t_s": 1.0,
        "pos_ned_m/n": 1,
        "pos_ned_m/e": 2,
        "pos_ned_m/d": 3,
        "setpoint/0": 4,
        "setpoint/1": 5,
        "setpoint/2": 6,
        "setpoint/3": 7,
        "c/a": 1,
    }


def test_nan_becomes_null_in_mcap_and_stays_nan_in_parquet(tmp_path: Path) -> None:
    import pandas as pd
    from mcap.reader import make_reader

    log = _log(tmp_path / "f.eal")
    convert(log, "mcap")
    with open(tmp_path / "f.mcap", "rb") as f:
        ticks = [json.loads(m.data) for _, _, m in make_reader(f).iter_messages(topics=["/edge_agent/tick"])]
    assert ticks[0]["score_m"] is None and ticks[1]["score_m"] == 0.1
    convert(log, "parquet")
    table = pd.read_parquet(tmp_path / "f.parquet")
    assert math.isnan(table["score_m"][0]) and list(table.columns[:4]) == [
        "t_s",
        "pos_ned_m/n",
        "pos_ned_m/e",
        "pos_ned_m/d",
    ]
    events = pd.read_parquet(tmp_path / "f.events.parquet")
    assert list(events["name"]) == ["connected", "finish"]


def test_a_damaged_log_converts_every_undamaged_record_and_says_what_was_lost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pandas as pd

    log = _log(tmp_path / "d.eal")
    data = bytearray(log.read_bytes())
    data[len(data) // 2 + FRAME_BYTES] ^= 0x20
    log.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FlightLogDamaged)
        assert main(["convert", str(log), "--to", "csv"]) == 0
    out = capsys.readouterr()
    assert "edge-agent convert: warning: " in out.err and "1 damaged record(s) skipped" in out.err
    assert "49 ticks, 2 events" in out.out
    assert len(pd.read_csv(tmp_path / "d.csv")) == 49


def test_an_unknown_format_is_refused(tmp_path: Path) -> None:
    log = _log(tmp_path / "f.eal")
    with pytest.raises(ConfigError, match=re.escape("--to 'ulog': choose one of csv, parquet, mcap")):
        convert(log, "ulog")
    with pytest.raises(SystemExit):
        main(["convert", str(log), "--to", "ulog"])
