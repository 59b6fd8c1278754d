"""A Report's runs as flat records, one per run, for CSV (`slurmml report --csv`) and other tables."""

from __future__ import annotations

from typing import Any

from slurmml.core.direction import RESULT
from slurmml.report.model import Report, json_safe

RUN_COLUMNS = ["run_id", "sweep_id", "job_num", "state", "accounting", "slurm_job_id", "elapsed_s", "alloc_cpus",
               "alloc_gpus", "cpu_eff", "mem_eff", "time_eff", "gpu_hours", "gpu_util", "gpu_mem_max_mb", "idle_gpu",
               "max_rss_mb", "req_mem_mb", "total_cpu_s", "timelimit_s", "exit_code", "signal", "cause", "reason",
               "run_state", "slurm_state", "started", "ended", "overrides", "result", "executions", "gpu_hours_requeued",
               "repeated_steps", "projected", "projected_spread", "metric"]


def run_records(report: Report) -> list[dict[str, Any]]:
    """RUN_COLUMNS of each run; the `metric` column is named after the report's metric (none when it ranks by
    the result, which has its own column)."""
    rows = []
    for run in report.runs:
        row = {column: getattr(run, column) for column in RUN_COLUMNS}
        row["overrides"] = " ".join(run.overrides)
        if report.metric and report.metric != RESULT:
            row[report.metric] = row.pop("metric")
        else:
            row.pop("metric")
        rows.append(json_safe(row))
    return rows
