"""Encode/parse throughput of the bridge's MAVLink codec beside pymavlink's, and over a pty link.

Run: .venv/bin/python tests/bridge/bench_bridge.py   (figures go into docs/bridge.md)

The measurement now lives in :mod:`calib.bench.bridge` (``edge-agent bench --sections bridge``
runs the same code); this script keeps the command docs/bridge.md quotes working.
"""

from __future__ import annotations

import numpy as np

from calib.bench.bridge import measure_bridge


def main() -> None:
    n = 20_000
    r = measure_bridge(n, 5, np.random.default_rng(0))
    e, p = r["encode_us_per_msg"], r["parse_us_per_msg"]
    print(f"encode   ours {e['ours']:6.2f} µs/msg   pymavlink MAVLink.send {e['pymavlink_send']:6.2f} µs/msg")
    print(
        f"parse    ours {p['ours']:6.2f} µs/msg   pymavlink parse_buffer  {p['pymavlink_parse_buffer']:6.2f} µs/msg"
    )
    print(f"parse    ours, 4 KiB chunks {p['ours_4k_chunks']:6.2f} µs/msg")
    for label, v in r["pty"].items():
        print(
            f"pty      {label:50s} {v['msg_per_s']:9.0f} msg/s  ({v['us_per_msg']:5.2f} µs/msg, {v['received']} of {n})"
        )


if __name__ == "__main__":
    main()
