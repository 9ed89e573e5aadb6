"""``edge-agent bench --plot``: one figure of a bench run (its JSON document), for docs and reviews.

Four panels, each drawn only from the sections the run has: the tick beside the alternatives
(p50 and p99, with the tick targets), where the tick's time goes (the instrumented stage run),
the loop's deadline misses per rate (with the 0.1 % target), and certification throughput by
batch size counted both ways (with the 200,000/s target). matplotlib's Agg canvas, no display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_COLUMNS = (
    ("tick", "full tick"),
    ("onnxruntime_run", "onnxruntime run"),
    ("torch_eager", "torch eager"),
    ("sb3_predict", "SB3 predict"),
)


def _has(d: Any, key: str) -> bool:
    return isinstance(d, dict) and key in d


def plot(doc: dict[str, Any], path: Path) -> Path:
    """Draw ``doc`` (``edge-agent bench --json``'s object) to ``path`` (PNG); returns the path."""
    fig = Figure(figsize=(13, 8.5), layout="constrained")
    FigureCanvasAgg(fig)
    m = doc.get("machine", {})
    fig.suptitle(
        f"edge-agent bench: {m.get('cpu_model', '?')}, {m.get('cpus', '?')} CPUs, "
        f"load {m.get('load_avg_start', [float('nan')])[0]:.2f}; python {m.get('python', '?')}, "
        f"onnxruntime {m.get('onnxruntime', '?')}"
    )
    ax = fig.subplots(2, 2)
    _tick(ax[0][0], doc.get("tick", {}))
    _stages(ax[0][1], doc.get("tick", {}).get("stages", {}))
    _loop(ax[1][0], doc.get("loop", {}))
    _certify(ax[1][1], doc.get("certify", {}))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _tick(ax: Any, t: dict[str, Any]) -> None:
    ax.set_title("1. tick latency, batch 1 (µs, log scale)")
    cols = [(key, label) for key, label in _COLUMNS if _has(t.get(key), "p50_us")]
    if not cols:
        ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
        return
    x = range(len(cols))
    p50 = [t[k]["p50_us"] for k, _ in cols]
    p99 = [t[k]["p99_us"] for k, _ in cols]
    ax.bar([i - 0.2 for i in x], p50, 0.4, label="p50")
    ax.bar([i + 0.2 for i in x], p99, 0.4, label="p99")
    ax.set_xticks(list(x), [label for _, label in cols])
    ax.set_yscale("log")
    targets = []
    if _has(t.get("sb3_predict"), "p50_us"):
        targets.append((0.3 * t["sb3_predict"]["p50_us"], "tick p50 target: 0.3 × SB3"))
    if _has(t.get("onnxruntime_run"), "p50_us"):
        targets.append((5.0 * t["onnxruntime_run"]["p50_us"], "tick p50 target: 5 × onnxruntime"))
    for (y, label), style in zip(targets, (":", "--"), strict=False):
        ax.axhline(y, color="k", linestyle=style, linewidth=1, label=label)
    ax.axhline(150.0, color="tab:red", linestyle="-.", linewidth=1, label="tick p99 target: 150 µs")
    ax.set_ylim(top=max(p99) * 12)  # room for the legend above the bars
    ax.legend(fontsize=8, ncol=2, loc="upper center")


def _stages(ax: Any, st: dict[str, Any]) -> None:
    ax.set_title("where the tick goes (p50 µs, instrumented run)")
    parts = [(k, v["p50_us"]) for k, v in st.items() if k != "tick" and _has(v, "p50_us")]
    if not parts:
        ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
        return
    left = 0.0
    for name, width in parts:
        ax.barh(0, width, left=left, height=0.5, label=f"{name} {width:.1f}")
        left += width
    ax.set_ylim(-0.5, 1.2)
    ax.set_yticks([])
    ax.set_xlabel(
        f"µs (whole tick p50 {st['tick']['p50_us']:.1f})" if _has(st.get("tick"), "p50_us") else "µs"
    )
    ax.legend(fontsize=8, ncol=4, loc="upper center")


def _loop(ax: Any, loop: dict[str, Any]) -> None:
    ax.set_title("2. the loop against the SITL: deadline misses (%)")
    rows = [(k, v) for k, v in loop.items() if _has(v, "missed_fraction")]
    if not rows:
        ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
        return
    labels = [
        f"{k} Hz"
        + (f"\nFIFO {v['realtime_priority']}" if v.get("realtime_priority") else "")
        + (f"\nspin {v['spin_us']:g} µs" if v.get("spin_us") else "")
        for k, v in rows
    ]
    ax.bar(labels, [100.0 * v["missed_fraction"] for _, v in rows])
    for i, (_, v) in enumerate(rows):
        ax.annotate(
            f"jitter p99 {v['jitter_p99_us']:.0f} µs\ntelem→setpoint p50 {v['telemetry_to_setpoint_p50_us'] / 1e3:.2f} ms",
            (i, 100.0 * v["missed_fraction"]),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.axhline(0.1, color="tab:red", linestyle="-.", linewidth=1, label="1 kHz target: 0.1 %")
    ax.set_ylim(0, max(0.2, max(100.0 * v["missed_fraction"] for _, v in rows) * 1.35))
    ax.legend(fontsize=8, loc="upper left")


def _certify(ax: Any, cert: dict[str, Any]) -> None:
    ax.set_title("5. certification throughput (per second, log-log)")
    local = cert.get("local") if isinstance(cert, dict) else None
    if not local:
        ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
        return
    b = [r["batch"] for r in local]
    ax.plot(
        b, [r["vehicle_steps_per_s"] for r in local], "o-", label="control ticks (onboard tick + physics)"
    )
    ax.plot(b, [r["physics_steps_per_s"] for r in local], "s--", label="physics steps")
    ray = cert.get("ray", {})
    if _has(ray, "vehicle_steps_per_s"):
        sub = cert.get("physics_substeps", 1)
        ax.plot(
            [ray["batch"]], [ray["vehicle_steps_per_s"]], "o", color="tab:green", label="control ticks on Ray"
        )
        ax.plot(
            [ray["batch"]],
            [ray["vehicle_steps_per_s"] * sub],
            "s",
            color="tab:green",
            label="physics steps on Ray",
        )
    ax.axhline(
        200_000.0, color="tab:red", linestyle="-.", linewidth=1, label="target: 200,000 vehicle-steps/s"
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("vehicles per batch")
    ax.legend(fontsize=8)


__all__ = ["plot"]
