"""A Report as one self-contained HTML page: inline CSS and SVG (slurmml.report.html_charts), no scripts,
nothing fetched.

Charts: metric curves of the best runs, histograms of CPU, memory and time efficiency, GPU-hours by state.
"""

from __future__ import annotations

import time
from html import escape
from pathlib import Path
from typing import Any, Optional

from slurmml.errors import SlurmmlError
from slurmml.report.aggregate import IDLE_UTIL, idle_gpu_hours
from slurmml.report.html_charts import bar_chart, finite, histogram, hours, line_chart, number
from slurmml.report.model import Report

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac"]
STATE_COLORS = {
    "COMPLETED": "#3b9c5a", "FAILED": "#d64545", "TIMEOUT": "#e8883a", "CANCELLED": "#8a8f98",
    "OUT_OF_MEMORY": "#9a5bbf", "NODE_FAIL": "#b5523b", "PREEMPTED": "#c9a227", "LOST": "#6b4f3a",
    "RUNNING": "#3a7bd5", "PENDING": "#9db4d6", "QUEUED": "#9db4d6", "SUBMITTING": "#c5cfdc",
}
MAX_RUN_ROWS = 300

CSS = """
:root { --ink:#1d2330; --muted:#667085; --line:#e4e7ec; --bg:#f4f6f9; --card:#fff; --accent:#3a7bd5;
        --good:#2f8f4e; --warn:#c77c12; --bad:#c93c3c; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width:1240px; margin:0 auto; padding:28px 28px 48px; }
header h1 { margin:0; font-size:26px; letter-spacing:-0.01em; }
header .meta { color:var(--muted); margin-top:4px; }
.banner { margin:18px 0 0; padding:10px 14px; border-radius:8px; background:#fff7e6; border:1px solid #f5d28a;
          color:#7a4b00; }
.cards { display:grid; grid-template-columns:repeat(auto-fit, minmax(150px, 1fr)); gap:14px; margin:22px 0 8px; }
.card { background:var(--card); border-radius:12px; padding:14px 16px 13px; border:1px solid var(--line);
        box-shadow:0 1px 2px rgba(16,24,40,.04); border-top:4px solid var(--accent); }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.06em; }
.card .value { font-size:28px; font-weight:650; margin-top:2px; font-variant-numeric:tabular-nums; }
.card .sub { color:var(--muted); font-size:12.5px; margin-top:2px; }
.card.good { border-top-color:var(--good); } .card.warn { border-top-color:var(--warn); }
.card.bad { border-top-color:var(--bad); }
.meter { height:6px; border-radius:3px; background:#edf0f4; margin-top:8px; overflow:hidden; }
.meter span { display:block; height:100%; border-radius:3px; }
section { background:var(--card); border:1px solid var(--line); border-radius:12px; padding:18px 20px 16px;
          margin-top:18px; box-shadow:0 1px 2px rgba(16,24,40,.04); }
section h2 { margin:0 0 2px; font-size:17px; }
section .note { color:var(--muted); font-size:12.5px; margin:0 0 12px; }
.grid3 { display:grid; grid-template-columns:repeat(3, minmax(0, 1fr)); gap:18px; }
.grid2 { display:grid; grid-template-columns:minmax(0, 3fr) minmax(0, 2fr); gap:22px; align-items:start; }
.chart h3 { margin:0 0 4px; font-size:13.5px; font-weight:600; }
.chart .stat { color:var(--muted); font-size:12px; margin-bottom:4px; }
svg { display:block; max-width:100%; height:auto; }
svg text { font-family:inherit; fill:#475467; font-size:11px; }
.legend { display:flex; flex-direction:column; gap:6px; margin-top:4px; }
.legend div { display:flex; align-items:center; gap:8px; font-size:12.5px; }
.legend i { width:14px; height:4px; border-radius:2px; flex:none; }
.legend b { font-variant-numeric:tabular-nums; margin-left:auto; padding-left:10px; }
table { width:100%; border-collapse:collapse; font-size:12.5px; }
th { text-align:left; color:var(--muted); font-weight:600; border-bottom:1px solid var(--line); padding:6px 8px;
     white-space:nowrap; background:#fafbfc; position:sticky; top:0; }
td { border-bottom:1px solid #f0f2f5; padding:5px 8px; vertical-align:top; font-variant-numeric:tabular-nums; }
td.num, th.num { text-align:right; white-space:nowrap; }
td.mono { font-family:ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size:12px; }
td.id { white-space:nowrap; }
tr:hover td { background:#f8fafc; }
.badge { display:inline-block; padding:1px 7px; border-radius:10px; font-size:11px; font-weight:600; color:#fff;
         white-space:nowrap; }
.eff { position:relative; min-width:62px; }
.eff span { position:absolute; left:0; top:3px; bottom:3px; border-radius:3px; opacity:.22; }
.eff em { position:relative; font-style:normal; }
.scroll { max-height:560px; overflow:auto; border:1px solid var(--line); border-radius:8px; }
.muted { color:var(--muted); }
.empty { color:var(--muted); padding:24px 0; text-align:center; }
footer { color:var(--muted); font-size:12px; margin-top:22px; line-height:1.6; }
code { font-family:ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size:12px;
       background:#f1f3f6; padding:1px 4px; border-radius:4px; }
"""


# -- formatting -------------------------------------------------------------------------------------------------

def pct(value: Optional[float], digits: int = 0) -> str:
    return f"{100 * value:.{digits}f}%" if finite(value) else "–"


def duration(seconds: Optional[float]) -> str:
    if not finite(seconds):
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hrs, minutes = divmod(minutes, 60)
    if hrs < 48:
        return f"{hrs} h {minutes:02d} min"
    return f"{hrs // 24} d {hrs % 24} h"


def _level(value: Optional[float]) -> str:
    if not finite(value):
        return ""
    return "bad" if value < 0.25 else "warn" if value < 0.5 else "good"


_LEVEL_COLORS = {"good": "#2f8f4e", "warn": "#c77c12", "bad": "#c93c3c", "": "#98a2b3"}


def _badge(state: str) -> str:
    color = STATE_COLORS.get(state, "#667085")
    return f'<span class="badge" style="background:{color}">{escape(state)}</span>'


def _eff_cell(value: Optional[float]) -> str:
    if not finite(value):
        return '<td class="num muted">–</td>'
    width = max(0.0, min(1.0, value)) * 100
    color = _LEVEL_COLORS[_level(value)]
    return (f'<td class="num eff"><span style="width:{width:.0f}%;background:{color}"></span>'
            f'<em>{pct(value)}</em></td>')


# -- the page -------------------------------------------------------------------------------------------------

def _card(label: str, value: str, sub: str = "", level: str = "", meter: Optional[float] = None) -> str:
    bar = ""
    if finite(meter):
        bar = (f'<div class="meter"><span style="width:{max(0, min(1, meter)) * 100:.0f}%;'
               f'background:{_LEVEL_COLORS[level]}"></span></div>')
    return (f'<div class="card {level}"><div class="label">{escape(label)}</div><div class="value">{value}</div>'
            f'<div class="sub">{sub}</div>{bar}</div>')


def _describe_filters(report: Report) -> str:
    f = report.filters
    parts = []
    if f.get("sweep"):
        parts.append(f"sweep {escape(str(f['sweep']))}")
    if f.get("user"):
        parts.append(f"user {escape(str(f['user']))}")
    if f.get("since") and f.get("until"):
        parts.append(f"runs created from {escape(str(f['since']))} to {escape(str(f['until']))}")
    elif f.get("since"):
        parts.append(f"runs created since {escape(str(f['since']))}")
    elif f.get("until"):
        parts.append(f"runs created before {escape(str(f['until']))}")
    return " · ".join(parts) or "all runs in the registry"


def _summary_cards(report: Report) -> str:
    t = report.totals
    cards = [
        _card("Runs", f"{t.runs:,}", f"{t.completed} completed · {t.failed} failed"
              + (f" · {t.active} active" if t.active else "") + f"<br>{duration(t.elapsed_s)} of wall time",
              "bad" if t.failed else "good"),
        _card("GPU-hours", hours(t.gpu_hours),
              f"{hours(t.gpu_hours_failed)} on failed runs · {hours(t.gpu_hours_idle)} on idle GPUs"
              + (f" · {hours(t.gpu_hours_requeued)} on requeued executions · {t.repeated_steps} steps trained twice"
                 if t.gpu_hours_requeued or t.repeated_steps else ""),
              "bad" if t.gpu_hours and (t.gpu_hours_failed + t.gpu_hours_idle) / t.gpu_hours > 0.25 else ""),
        _card("CPU efficiency", pct(t.cpu_eff), "CPU time used / core-time allocated", _level(t.cpu_eff), t.cpu_eff),
        _card("Memory efficiency", pct(t.mem_eff), "peak memory / requested (mean)", _level(t.mem_eff), t.mem_eff),
        _card("Time efficiency", pct(t.time_eff), "elapsed / time limit (mean)", _level(t.time_eff), t.time_eff),
    ]
    if report.metric and t.best_value is not None:
        best = next((b for b in report.best if b.run_id == t.best_run), None)
        cards.append(_card(f"Best {report.metric}", number(t.best_value),
                           escape(best.label if best else t.best_run or ""), "good"))
    return '<div class="cards">' + "".join(cards) + "</div>"


def _best_section(report: Report) -> str:
    if not report.metric:
        return ('<section><h2>Best runs</h2><p class="note">No run has logged a metric yet '
                '(<code>slurmml.log(...)</code> in the task).</p></section>')
    picked = " (picked automatically; choose with <code>--metric</code>)" if report.metric_picked else ""
    title = f"Best runs by {escape(report.metric)} ({'highest' if report.mode == 'max' else 'lowest'} last value)"
    if not report.best:
        return f'<section><h2>{title}</h2><p class="note">No selected run logged {escape(report.metric)}.</p></section>'
    series = [(b.label, PALETTE[i % len(PALETTE)], b.curve) for i, b in enumerate(report.best)]
    legend = "".join(f'<div><i style="background:{color}"></i><span>{escape(label)}</span>'
                     f'<b>{number(b.value)}</b></div>' for (label, color, _), b in zip(series, report.best))
    rows = "".join(
        f'<tr><td class="num">{i + 1}</td><td class="mono id">{escape(b.run_id)}</td><td>{_badge(b.state)}</td>'
        f'<td class="num">{number(b.value)}</td><td class="mono">{escape(" ".join(b.overrides))}</td></tr>'
        for i, b in enumerate(report.best))
    return (f'<section><h2>{title}</h2><p class="note">Metric curves of the {len(report.best)} best runs{picked}; '
            f'the legend shows the overrides that tell them apart.</p>'
            f'<div class="grid2"><div class="chart">{line_chart(series, y_label=report.metric)}</div>'
            f'<div><div class="legend">{legend}</div></div></div>'
            f'<table style="margin-top:14px"><tr><th class="num">#</th><th>run</th><th>state</th>'
            f'<th class="num">{escape(report.metric)}</th><th>overrides</th></tr>{rows}</table></section>')


def _median(values: list[float]) -> Optional[float]:
    values = sorted(v for v in values if finite(v))
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def _efficiency_section(report: Report) -> str:
    charts = []
    for title, attr, color, hint in (
            ("CPU efficiency", "cpu_eff", "#4e79a7", "TotalCPU / (Elapsed × AllocCPUS)"),
            ("Memory efficiency", "mem_eff", "#59a14f", "max(MaxRSS × NTasks) / requested memory"),
            ("Time efficiency", "time_eff", "#f28e2b", "Elapsed / Timelimit")):
        values = [getattr(r, attr) for r in report.runs if finite(getattr(r, attr))]
        stat = f"median {pct(_median(values))} · {len(values)} run{'s' * (len(values) != 1)}" if values else "no figures"
        charts.append(f'<div class="chart"><h3>{title}</h3><div class="stat">{stat} · <span title="{hint}">'
                      f'{escape(hint)}</span></div>{histogram(values, color)}</div>')
    return ('<section><h2>Efficiency</h2><p class="note">How much of what the jobs asked for they used '
            '(seff\'s formulas). Low memory or time efficiency means requests can shrink; bars past 100% are runs '
            'that used more than they asked for (or ran into their time limit).</p>'
            f'<div class="grid3">{"".join(charts)}</div></section>')


def _gpu_section(report: Report) -> str:
    t = report.totals
    items = [(state, value, STATE_COLORS.get(state, "#667085")) for state, value in report.gpu_hours_by_state.items()]
    failed, idle = t.gpu_hours_failed, idle_gpu_hours(report.runs, failed_too=False)  # each hour counted once
    waste = [("failed runs", failed, "#d64545"), ("idle GPUs", idle, "#e8883a"),
             ("the rest", max(0.0, t.gpu_hours - failed - idle), "#3b9c5a")]
    util = f" Mean sampled GPU utilization {t.gpu_util:.0f}%." if finite(t.gpu_util) else ""
    return ('<section><h2>GPU-hours</h2>'
            f'<p class="note">ElapsedRaw × allocated GPUs / 3600, {hours(t.gpu_hours)} GPU-hours in all.{util}</p>'
            f'<div class="grid2"><div class="chart"><h3>By final state</h3>{bar_chart(items)}</div>'
            f'<div class="chart"><h3>Spent on</h3>{bar_chart(waste, width=440)}<div class="stat">Idle: the run\'s GPUs '
            f'averaged under {IDLE_UTIL:.0f}% utilization in its samples (runs that also failed count as failed here).'
            f'</div></div>'
            f'</div></section>')


def _table(headers: list[tuple[str, bool]], rows: list[str]) -> str:
    head = "".join(f'<th class="num">{escape(h)}</th>' if numeric else f"<th>{escape(h)}</th>" for h, numeric in headers)
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _sweeps_section(report: Report) -> str:
    rows = []
    for s in report.sweeps:
        states = " ".join(f'{_badge(state)}<span class="muted"> {count}</span>' for state, count in s.states.items())
        rows.append(
            f'<tr><td class="mono id">{escape(s.sweep_id)}</td><td>{escape(s.name or "")}</td><td class="num">{s.runs}</td>'
            f'<td>{states}</td><td class="num">{duration(s.elapsed_s)}</td>{_eff_cell(s.cpu_eff)}{_eff_cell(s.mem_eff)}'
            f'{_eff_cell(s.time_eff)}<td class="num">{hours(s.gpu_hours)}</td><td class="num">{hours(s.gpu_hours_failed)}'
            f'</td><td class="num">{hours(s.gpu_hours_idle)}</td><td class="num">{number(s.best_value)}</td></tr>')
    headers = [("sweep", False), ("name", False), ("runs", True), ("states", False), ("wall time", True),
               ("CPU eff", True), ("mem eff", True), ("time eff", True), ("GPU-h", True), ("failed GPU-h", True),
               ("idle GPU-h", True), (f"best {report.metric}" if report.metric else "best", True)]
    return ('<section><h2>Sweeps</h2><p class="note">CPU efficiency weighted by core-time; memory and time '
            'efficiency are means over the runs that have them.</p>' + _table(headers, rows) + "</section>")


def _failures_section(report: Report) -> str:
    if not report.failures:
        return '<section><h2>Failures</h2><p class="note">No failed, cancelled, timed-out or lost runs.</p></section>'
    rows = []
    for group in report.failures:
        shown = ", ".join(group.runs[:6]) + (f" and {len(group.runs) - 6} more" if len(group.runs) > 6 else "")
        detail = group.cause[len(group.state):].lstrip(": ") if group.cause.startswith(group.state) else group.cause
        rows.append(f'<tr><td>{_badge(group.state)} {escape(detail)}</td><td class="num">{group.count}</td>'
                    f'<td class="num">{hours(group.gpu_hours)}</td><td>{escape(group.example)}</td>'
                    f'<td class="mono">{escape(shown)}</td></tr>')
    headers = [("cause", False), ("runs", True), ("GPU-h", True), ("example", False), ("runs", False)]
    return ('<section><h2>Failures by cause</h2><p class="note">State, exit code or signal, and the exception the '
            'run recorded; lost runs by the reason they were declared lost.</p>' + _table(headers, rows) + "</section>")


def _runs_section(report: Report) -> str:
    shown = report.runs[:MAX_RUN_ROWS]
    rows = []
    for r in shown:
        source = "" if r.accounting != "registry" else ' <span class="muted" title="no accounting record yet">*</span>'
        gpu = f"{r.alloc_gpus}" if r.alloc_gpus else "–"
        util = f"{r.gpu_util:.0f}%" if finite(r.gpu_util) else "–"
        if r.idle_gpu:
            util = f'<span style="color:#c93c3c;font-weight:600">{util}</span>'
        rows.append(
            f'<tr><td class="mono id">{escape(r.run_id)}{source}</td><td>{_badge(r.state)}</td>'
            f'<td class="mono">{escape(r.slurm_job_id or "")}</td><td class="num">{duration(r.elapsed_s)}</td>'
            f'{_eff_cell(r.cpu_eff)}{_eff_cell(r.mem_eff)}{_eff_cell(r.time_eff)}<td class="num">{gpu}</td>'
            f'<td class="num">{hours(r.gpu_hours)}</td><td class="num">{util}</td>'
            + (f'<td class="num">{number(r.metric)}</td>' if report.metric else "")
            + f'<td class="mono">{escape(" ".join(r.overrides))}</td></tr>')
    headers = [("run", False), ("state", False), ("job", False), ("elapsed", True), ("CPU eff", True),
               ("mem eff", True), ("time eff", True), ("GPUs", True), ("GPU-h", True), ("GPU util", True)]
    if report.metric:
        headers.append((report.metric, True))
    headers.append(("overrides", False))
    more = (f" Showing the first {MAX_RUN_ROWS} of {len(report.runs)}; <code>--csv</code> has them all."
            if len(report.runs) > MAX_RUN_ROWS else "")
    star = " * marks runs without an accounting record yet (figures from the run's own record)." \
        if any(r.accounting == "registry" for r in shown) else ""
    return (f'<section><h2>Runs</h2><p class="note">{len(report.runs)} runs.{star}{more}</p>'
            f'<div class="scroll">{_table(headers, rows)}</div></section>')


def render_html(report: Report) -> str:
    generated = time.strftime("%Y-%m-%d %H:%M", time.localtime(report.generated))
    banner = ""
    if report.unaccounted:
        banner = (f'<div class="banner">{len(report.unaccounted)} of {report.totals.runs} runs have no accounting '
                  'record yet: their figures come from the runs\' own records until <code>slurmml watch</code> '
                  '(the poller) has run.</div>')
    body = [
        f'<header><h1>slurmml report</h1><div class="meta">{_describe_filters(report)} · generated {generated}</div>'
        f"</header>",
        banner,
        _summary_cards(report),
        _best_section(report),
        _efficiency_section(report),
        _gpu_section(report),
        _sweeps_section(report),
        _failures_section(report),
        _runs_section(report),
        '<footer>Formulas as in seff and reportseff: CPU efficiency = TotalCPU / (Elapsed × AllocCPUS); memory '
        'efficiency = max over steps of (MaxRSS × NTasks) / requested memory; time efficiency = Elapsed / Timelimit; '
        'GPU-hours = ElapsedRaw × allocated gres/gpu / 3600. GPU utilization comes from the samples each run '
        f'recorded; a run is idle when its GPUs averaged under {IDLE_UTIL:.0f}%. Figures from Slurm are as the poller '
        'last saw them.'
        '</footer>',
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>slurmml report · {_describe_filters(report)}</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(body)}</main></body></html>\n")


def write_html(report: Report, path: Any) -> None:
    try:
        Path(path).write_text(render_html(report), encoding="utf-8")
    except OSError as error:
        raise SlurmmlError(f"cannot write the report to {path}: {error.strerror or error}") from None

