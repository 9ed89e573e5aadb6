"""A flight log (``.eal``) as files other tools open: CSV, Parquet, MCAP.

- **CSV** (standard library only): ``NAME.csv`` holds one row per tick, ``NAME.events.csv`` one
  row per event, ``NAME.header.json`` the header. Lists are spread over columns named
  ``field/0, field/1, ...`` (3-vectors in NED as ``field/n, field/e, field/d``), nested maps as
  ``field/key``: PlotJuggler shows ``/`` as a tree, pandas reads it with ``read_csv``.
- **Parquet** (``pyarrow``): the same tables as ``NAME.parquet`` and ``NAME.events.parquet``; the
  header as JSON in the schema metadata (key ``edge_agent.header``).
- **MCAP** (``mcap``): one file with JSON channels ``/edge_agent/header``, ``/edge_agent/tick``,
  ``/edge_agent/event`` (each with a JSON schema), log times = the log's start time + ``t_s``;
  Foxglove opens it. Records keep their nesting (``pos_ned_m`` is an array).

ULog is not offered: no maintained Python writer exists (pyulog only reads). The writers'
packages are imported only when their format is asked for, and live here in ``calib`` (the
workstation side), never on the drone.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.errors import ConfigError
from edge_agent.flightlog import LogDamage, read_log

FORMATS = ("csv", "parquet", "mcap")
"""What ``edge-agent convert --to`` writes."""

_NED = ("n", "e", "d")


@dataclass(frozen=True, slots=True)
class ConvertResult:
    """What a conversion wrote."""

    paths: tuple[Path, ...]
    ticks: int
    events: int
    damage: LogDamage = field(default_factory=LogDamage)
    """What the reader skipped in a damaged log (nothing for a sound one)."""


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """One record as flat columns: lists spread as ``name/i`` (NED 3-vectors ``name/n|e|d``), maps as ``name/key``."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "k":
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}/"))
        elif isinstance(value, list | tuple):
            labels = _NED if len(value) == 3 and "_ned" in key else range(len(value))
            for label, item in zip(labels, value):
                if isinstance(item, dict | list | tuple):
                    out[f"{name}/{label}"] = json.dumps(_json_safe(item))
                else:
                    out[f"{name}/{label}"] = item
        else:
            out[name] = value
    return out


def _json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def _columns(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The union of the rows' columns, in order of first appearance, ``t_s`` first."""
    seen: dict[str, None] = {"t_s": None}
    for row in rows:
        for k in row:
            seen.setdefault(k, None)
    return list(seen)


def _scalar_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose every cell is a number, a string, a bool or None (events may hold nested data)."""
    return [
        {k: json.dumps(_json_safe(v)) if isinstance(v, dict | list | tuple) else v for k, v in row.items()}
        for row in rows
    ]


def _load(log: Path, damage: LogDamage) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    header: dict[str, Any] = {}
    ticks: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for rec in read_log(log, damage):
        kind = rec["k"]
        if kind == "header":
            header = {k: v for k, v in rec.items() if k != "k"}
        elif kind == "tick":
            ticks.append(rec)
        elif kind == "event":
            events.append(rec)
    return header, ticks, events


def convert(log: str | os.PathLike[str], to: str, out: str | os.PathLike[str] | None = None) -> ConvertResult:
    """Write the flight log ``log`` as ``to`` (csv, parquet, mcap) at ``out`` (default: beside it)."""
    if to not in FORMATS:
        raise ConfigError(f"--to {to!r}: choose one of {', '.join(FORMATS)}")
    src = Path(log)
    dest = Path(out) if out is not None else src.with_suffix(f".{to}")
    damage = LogDamage()
    header, ticks, events = _load(src, damage)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if to == "csv":
        paths = _write_csv(dest, header, ticks, events)
    elif to == "parquet":
        paths = _write_parquet(dest, header, ticks, events)
    else:
        paths = _write_mcap(dest, header, ticks, events)
    return ConvertResult(paths, len(ticks), len(events), damage)


def _sidecar(dest: Path, what: str) -> Path:
    return dest.with_name(f"{dest.stem}.{what}{dest.suffix}")


def _write_csv(
    dest: Path, header: dict[str, Any], ticks: list[dict[str, Any]], events: list[dict[str, Any]]
) -> tuple[Path, ...]:
    tick_rows = [flatten(r) for r in ticks]
    event_rows = _scalar_rows([{k: v for k, v in r.items() if k != "k"} for r in events])
    written = []
    for path, rows in ((dest, tick_rows), (_sidecar(dest, "events"), event_rows)):
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=_columns(rows), restval="")
            w.writeheader()
            w.writerows(rows)
        written.append(path)
    head = dest.with_name(f"{dest.stem}.header.json")
    head.write_text(json.dumps(_json_safe(header), indent=1))
    return (*written, head)


def _arrow_table(rows: list[dict[str, Any]], metadata: dict[bytes, bytes] | None = None) -> Any:
    import pyarrow as pa

    columns = _columns(rows)
    table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows]) if rows else pa.table({})
    return table.replace_schema_metadata(metadata) if metadata else table


def _write_parquet(
    dest: Path, header: dict[str, Any], ticks: list[dict[str, Any]], events: list[dict[str, Any]]
) -> tuple[Path, ...]:
    try:
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        raise ConfigError(
            "--to parquet needs pyarrow: pip install 'edge-agent[convert]' (or pip install pyarrow)"
        ) from None
    meta = {b"edge_agent.header": json.dumps(_json_safe(header)).encode()}
    pq.write_table(_arrow_table([flatten(r) for r in ticks], meta), dest)
    events_path = _sidecar(dest, "events")
    pq.write_table(
        _arrow_table(_scalar_rows([{k: v for k, v in r.items() if k != "k"} for r in events]), meta),
        events_path,
    )
    return (dest, events_path)


def _json_schema(title: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """A JSON schema naming the records' fields with their JSON types (Foxglove lists the fields from it)."""
    props: dict[str, Any] = {}
    for rec in records[:1000]:
        for k, v in rec.items():
            if k == "k" or k in props:
                continue
            if isinstance(v, bool):
                props[k] = {"type": "boolean"}
            elif isinstance(v, int | float):
                props[k] = {"type": "number"}
            elif isinstance(v, str):
                props[k] = {"type": "string"}
            elif isinstance(v, list | tuple):
                props[k] = {"type": "array"}
            elif isinstance(v, dict):
                props[k] = {"type": "object"}
    return {"title": title, "type": "object", "properties": props}


def _write_mcap(
    dest: Path, header: dict[str, Any], ticks: list[dict[str, Any]], events: list[dict[str, Any]]
) -> tuple[Path, ...]:
    try:
        from mcap.writer import Writer
    except ModuleNotFoundError:
        raise ConfigError(
            "--to mcap needs mcap: pip install 'edge-agent[convert]' (or pip install mcap)"
        ) from None
    start_ns = int(float(header.get("start_unix_s", 0.0)) * 1e9)
    with open(dest, "wb") as f:
        writer = Writer(f)
        writer.start(profile="", library="edge-agent convert")
        channels = {}
        for kind, records in (("header", [header]), ("tick", ticks), ("event", events)):
            schema = writer.register_schema(
                name=f"edge_agent.{kind}",
                encoding="jsonschema",
                data=json.dumps(_json_schema(f"edge_agent.{kind}", records)).encode(),
            )
            channels[kind] = writer.register_channel(
                topic=f"/edge_agent/{kind}", message_encoding="json", schema_id=schema
            )
        writer.add_message(channels["header"], log_time=start_ns, publish_time=start_ns, data=_encode(header))
        for kind, records in (("tick", ticks), ("event", events)):
            for seq, rec in enumerate(_sorted_by_time(records)):
                t = start_ns + int(float(rec.get("t_s") or 0.0) * 1e9)
                body = {k: v for k, v in rec.items() if k != "k"}
                writer.add_message(
                    channels[kind], log_time=t, publish_time=t, data=_encode(body), sequence=seq
                )
        writer.finish()
    return (dest,)


def _sorted_by_time(records: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    # MCAP readers want log times in order per channel; events are logged in order already.
    return iter(sorted(records, key=lambda r: float(r.get("t_s") or 0.0)))


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(_json_safe(record), separators=(",", ":")).encode()
