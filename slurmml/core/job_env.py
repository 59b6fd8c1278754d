"""What Slurm tells a job through its environment: its own job id and which execution this is."""

from __future__ import annotations

from typing import Mapping


def job_id_from_environment(environ: Mapping[str, str], default: str) -> str:
    """`ARRAYJOB_TASK` for an array task (what squeue, sacct and scontrol name it), else SLURM_JOB_ID."""
    array_job = environ.get("SLURM_ARRAY_JOB_ID")
    if array_job:
        return f"{array_job}_{environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    return environ.get("SLURM_JOB_ID", default)


def restart_count(environ: Mapping[str, str]) -> int:
    """0 for a job's first execution (Slurm leaves SLURM_RESTART_COUNT unset then), n after n requeues."""
    value = environ.get("SLURM_RESTART_COUNT", "").strip()
    return int(value) if value.isdigit() else 0
