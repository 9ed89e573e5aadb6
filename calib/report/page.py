"""The HTML page: the table's rows, the autoescaped jinja2 template ``calib/templates/report.html.j2``, and :func:`write_report`."""

from __future__ import annotations

import base64
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2

from calib.report.figures import FIGURES, figure_compare_trajectories, flight_title, png_bytes, render_figures
from calib.report.flight import Flight, load_flight
from calib.report.summary import FlightSummary, summarize
from edge_agent.flightlog import FlightLogError


def _fmt_m(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{x:.2f} m"


@dataclass(frozen=True, slots=True)
class Cell:
    """One value of the table of figures: plain text (escaped by the template) and an optional style."""

    text: str
    css: str | None = None
    """'ok' (green) or 'bad' (red), or None."""


def _yes_no(ok: bool, yes: str, no: str) -> Cell:
    return Cell(yes if ok else no, "ok" if ok else "bad")


def table_rows(s: FlightSummary) -> list[tuple[str, Cell]]:
    """(label, value) rows of the table of figures; the values are text, never markup."""
    rows: list[tuple[str, Cell]] = [
        ("shield", _yes_no(s.shield_enabled, "on", "OFF (--no-shield)")),
        ("mission", _yes_no(s.mission_complete, "complete", "not complete")),
        ("flight ended", Cell(s.end_reason)),
        ("duration under policy control", Cell(f"{s.duration_s:.1f} s ({s.ticks} ticks)")),
        ("breaches (entries into a forbidden region)", _yes_no(s.breaches == 0, "0", str(s.breaches))),
    ]
    total = sum(s.interventions_by_layer.values())
    layers = ", ".join(f"{k} {v}" for k, v in s.interventions_by_layer.items())
    rows.append(("shield interventions by layer", Cell(f"{total} of {s.ticks} ticks ({layers})")))
    reasons = ", ".join(f"{k.lower()} {v}" for k, v in s.interventions_by_reason.items()) or "none"
    rows.append(("… by reason", Cell(reasons)))
    # Always present, so the rows of two flights line up in compare mode.
    rows.append(
        (
            "ticks a bypassed shield would have changed",
            Cell(f"{s.would_have_intervened}" if not s.shield_enabled else "— (shield on)"),
        )
    )
    for c in s.constraints:
        value = _fmt_m(c.min_distance_m)
        cell = Cell(value)
        if c.breach_ticks:
            cell = Cell(f"{value} — breached {c.breaches}×, {c.breach_ticks} ticks", "bad")
        rows.append((f"min distance: {c.name}", cell))
    cov = "—" if not math.isfinite(s.coverage) else f"{s.coverage:.3f}"
    rows.append(("coverage of the margin (target 1 − α)", Cell(f"{cov} (target {s.target_coverage:.2f})")))
    rows.append(("largest margin q_t", Cell(_fmt_m(s.max_margin_m))))
    if s.certificate:
        cert = s.certificate
        rows.append(
            (
                "certified failure bound",
                Cell(
                    f"ε = {float(cert['epsilon']):.3g} (k = {cert['k']} failures in N = {cert['n']} episodes, "
                    f"confidence 1 − β, β = {float(cert['beta']):g}; "
                    f"shield {'on' if cert.get('shield_enabled', True) else 'OFF'} in certification)"
                ),
            )
        )
    else:
        rows.append(("certified failure bound", Cell("not certified", "bad")))
    rows.append(
        (
            "tick time p50 / p99 / max",
            Cell(f"{s.tick_us_p50:.0f} / {s.tick_us_p99:.0f} / {s.tick_us_max:.0f} µs"),
        )
    )
    rows.append(("inference p50 / p99", Cell(f"{s.infer_us_p50:.0f} / {s.infer_us_p99:.0f} µs")))
    rows.append(
        (
            "deadline misses / overruns",
            Cell(f"{s.deadline_misses} / {s.overruns} (deadline {s.deadline_us:.0f} µs)"),
        )
    )
    return rows


def _verdict(s: FlightSummary) -> tuple[bool, str]:
    ok = s.mission_complete and s.breaches == 0
    parts = ["mission complete" if s.mission_complete else f"mission not complete ({s.end_reason})"]
    parts.append("no breaches" if s.breaches == 0 else f"{s.breaches} breach{'es' if s.breaches > 1 else ''}")
    parts.append(f"shield {'on' if s.shield_enabled else 'OFF'}")
    return ok, " · ".join(parts)


def _environment() -> jinja2.Environment:
    """The template environment: autoescape on for every template, undefined names are errors."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("calib", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


def render_html(
    flights: Sequence[Flight], summaries: Sequence[FlightSummary], figures: Sequence[Mapping[str, bytes]]
) -> str:
    """The page (``calib/templates/report.html.j2``): verdicts, the table of figures, then the figures.

    Every value reaches the template as text and is escaped there, so a crafted log header
    (a bundle path, a certificate field, an end reason) cannot inject markup into the page.
    """
    n = len(flights)
    names = [flight_title(f) for f in flights]
    h = flights[0].header
    verdicts = []
    for name, s in zip(names, summaries, strict=True):
        ok, text = _verdict(s)
        verdicts.append({"name": name, "ok": ok, "text": text})
    per_flight = [table_rows(s) for s in summaries]
    rows = [(label, [r[i][1] for r in per_flight]) for i, (label, _) in enumerate(per_flight[0])]
    panels = [
        (
            caption,
            [
                {"name": name, "png_b64": base64.b64encode(figs[stem]).decode("ascii")}
                for name, figs in zip(names, figures, strict=True)
            ],
        )
        for stem, caption in FIGURES
    ]
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title="Flight report" if n == 1 else "Flight comparison",
            names=names,
            bundle=str(h.get("bundle", "?")),
            autopilot=str(h.get("autopilot", "?")),
            link=str(h.get("link", "?")),
            rate=f"{flights[0].rate_hz:g}",
            verdicts=verdicts,
            rows=rows,
            figures=panels,
        )
    )


@dataclass(frozen=True, slots=True)
class ReportResult:
    """What :func:`write_report` wrote and found."""

    html_path: Path
    figure_paths: tuple[Path, ...]
    summaries: tuple[FlightSummary, ...]


def write_report(
    log: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    compare: str | os.PathLike[str] | None = None,
) -> ReportResult:
    """Write ``out_dir/report.html`` (self-contained) and its PNG figures beside it.

    With ``compare``, the two flights go side by side (and ``compare_trajectory.png`` shows both maps).
    """
    flights = [load_flight(log)] + ([load_flight(compare)] if compare is not None else [])
    summaries = [summarize(f) for f in flights]
    figures = [render_figures(f, s) for f, s in zip(flights, summaries, strict=True)]
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FlightLogError(
            f"cannot create report folder {out}: {exc.strerror}; choose a writable --out"
        ) from exc
    paths: list[Path] = []
    for i, figs in enumerate(figures):
        suffix = "" if i == 0 else "_compare"
        for stem, png in figs.items():
            p = out / f"{stem}{suffix}.png"
            p.write_bytes(png)
            paths.append(p)
    if len(flights) == 2:
        p = out / "compare_trajectory.png"
        p.write_bytes(png_bytes(figure_compare_trajectories(flights[0], flights[1])))
        paths.append(p)
    html_path = out / "report.html"
    html_path.write_text(render_html(flights, summaries, figures), encoding="utf-8")
    return ReportResult(html_path, tuple(paths), tuple(summaries))
