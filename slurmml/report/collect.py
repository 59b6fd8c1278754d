"""`slurmml report`'s edge: what runs cost and how well they used what they asked for, from the registry's cache.

`collect` reads the rows a report needs from a Registry (runs, the poller's slurm_jobs cache, GPU sample
aggregates, metric summaries: slurmml.registry.report_reads) and never calls Slurm. `build_report` picks the
metric where none was named, hands the rows to slurmml.report.aggregate (pure), and adds the metric curves
of the best runs.
"""

from __future__ import annotations

import re
import time
from typing import Any, Optional, Union

from slurmml.core.direction import RESULT
from slurmml.core.states import ACTIVE_STATES
from slurmml.errors import SlurmmlError
from slurmml.report.aggregate import aggregate, pick_metric, result_values
from slurmml.report.model import Inputs, Report, RunRow

When = Union[None, str, float, int]


def parse_when(text: When, now: Optional[float] = None) -> Optional[float]:
    """`2026-11-01`, `2026-11-01T10:30`, `2026-11-01 10:30:00` (local time), `7d`/`12h`/`30m` ago, or Unix seconds."""
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)):
        return float(text)
    now = time.time() if now is None else now
    value = text.strip()
    relative = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", value)
    if relative:
        scale = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[relative.group(2)]
        return now - float(relative.group(1)) * scale
    for pattern in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"):
        try:
            return time.mktime(time.strptime(value, pattern))
        except ValueError:
            continue
    try:
        return float(value)
    except ValueError:
        raise SlurmmlError(f"cannot read time {text!r}: write 2026-11-01, 2026-11-01T10:30, or 7d / 12h ago") from None


def collect(registry: Any, sweep: Optional[str] = None, since: Optional[float] = None, until: Optional[float] = None,
            user: Optional[str] = None, metric: Optional[str] = None) -> Inputs:
    """Read what a report needs from the registry (runs filtered by sweep, creation time and user), and the
    last value of `metric` (or the runs' result) when one is named."""
    from slurmml.registry import report_reads  # here, not above: importing the report loads no sqlite3

    owner = _registry_owner(registry)
    runs = []
    for run in report_reads.report_runs(registry.conn, sweep, since, until):
        if run["sweep_id"] is None:
            run["user"] = run["user"] or owner  # a plain-script run belongs to whoever owns this registry
        if not user or run["user"] == user:
            runs.append(run)
    ids = {run["run"]: run["id"] for run in runs}
    job_ids = {run["slurm_job_id"] for run in runs if run["slurm_job_id"]}
    jobs = registry.job_records(job_ids) if job_ids else {}
    samples = {ids[key]: sample for key, sample in report_reads.gpu_sample_summaries(registry.conn, ids).items()}
    metric_counts = report_reads.metric_run_counts(registry.conn, ids)
    values = _metric_values(registry, runs, metric) if metric else {}
    return Inputs(runs, jobs, samples, values, metric_counts)


def _metric_values(registry: Any, runs: list[dict[str, Any]], metric: str) -> dict[str, float]:
    """run id -> the last value of `metric`, or the run's result (metric `result`)."""
    if metric == RESULT:
        return result_values(runs)
    from slurmml.registry import report_reads

    ids = {run["run"]: run["id"] for run in runs}
    return {ids[key]: value for key, value in report_reads.last_metric_values(registry.conn, ids, metric).items()}


def _registry_owner(registry: Any) -> Optional[str]:
    try:
        import pwd

        return pwd.getpwuid(registry.path.stat().st_uid).pw_name
    except (OSError, KeyError, ImportError, AttributeError):
        return None


def build_report(registry: Any, sweep: Optional[str] = None, since: When = None, until: When = None,
                 user: Optional[str] = None, metric: Optional[str] = None, mode: Optional[str] = None,
                 now: Optional[float] = None, max_points: int = 500) -> Report:
    """A report over a sweep, a time window (runs created in [since, until)), a user, or all runs.

    Without `metric`, slurmml.core.direction.default_metric picks: the runs' result where the sweeps declared which way
    it is better, else the validation metric most runs logged. Without `mode`, slurmml.core.direction decides.
    """
    now = time.time() if now is None else now
    inputs = collect(registry, sweep, parse_when(since, now), parse_when(until, now), user, metric)
    picked = False
    if metric is None:
        metric = pick_metric(inputs)
        if metric is not None:
            inputs.metric_values = _metric_values(registry, inputs.runs, metric)
        picked = metric is not None
    filters = {"sweep": sweep, "since": since, "until": until, "user": user}
    report = aggregate(inputs, metric, mode, {k: v for k, v in filters.items() if v is not None}, now, picked)
    report.early_stop = early_stop_figures(registry, report)
    if metric and metric != RESULT:
        project_active(registry, report.runs, metric)
    if report.best and metric and metric != RESULT:  # a result is one value, not a curve
        curves = registry.curves([b.run_id for b in report.best], metric, max_points)
        for best in report.best:
            best.curve = [tuple(p) for p in curves.get(best.run_id, [])]
    return report


def early_stop_figures(registry: Any, report: Report) -> list[dict[str, Any]]:
    """What each early-stopped sweep in the report saved (slurmml.report.savings)."""
    from slurmml.report.savings import early_stop_summary

    figures = []
    for summary in report.sweeps:
        stored = registry.early_stop_rule(summary.sweep_id)
        if stored is None:
            continue
        rule = stored["rule"]
        rows = [row for row in report.runs if row.sweep_id == summary.sweep_id]
        curves = {row["run_id"]: [value for _, value, _ in row["points"]]
                  for row in registry.sweep_curves(summary.sweep_id, rule["metric"])}
        figures.append({**early_stop_summary(summary.sweep_id, rule, rows, registry.prunings(summary.sweep_id),
                                             curves), "problem": stored["problem"]})
    return figures


def project_active(registry: Any, rows: list[RunRow], metric: str) -> None:
    """Each active run's projected final value of `metric` (slurmml.registry.projections)."""
    found = registry.projections([row.run_id for row in rows if row.state in ACTIVE_STATES], metric)
    for row in rows:
        if row.run_id in found:
            row.projected, row.projected_spread = found[row.run_id].value, found[row.run_id].spread
