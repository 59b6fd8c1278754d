"""What slurmml keeps of Slurm's accounting for each job: the contract between the poller and the reports.

Parsing sacct text into JobRecords and the efficiency formulas live here too (pure functions).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

# sacct --noheader --parsable2 (without --allocations: step lines carry MaxRSS and the real TotalCPU)
SACCT_REPORT_FIELDS = [
    "JobID", "JobIDRaw", "State", "ExitCode", "Elapsed", "ElapsedRaw", "Timelimit", "AllocCPUS", "AllocTRES",
    "TotalCPU", "MaxRSS", "NTasks", "ReqMem", "NodeList", "Start", "End", "Submit", "Restarts", "Reason",
]


@dataclass
class JobRecord:
    """One job (or array task), as the last Slurm call saw it. Times are Unix seconds; None = unknown."""

    job_id: str  # `123_4` for array tasks, `123` otherwise
    state: str  # base state: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, ...
    reason: str = ""  # why pending, or who cancelled ("by 1000")
    exit_code: Optional[int] = None
    signal: Optional[int] = None
    elapsed_s: Optional[int] = None
    timelimit_s: Optional[int] = None
    alloc_cpus: Optional[int] = None
    alloc_gpus: Optional[int] = None
    req_mem_mb: Optional[float] = None  # for the whole job (ReqMem per node x nodes, or per CPU x CPUs)
    total_cpu_s: Optional[float] = None
    max_rss_mb: Optional[float] = None  # largest step's MaxRSS x its NTasks (seff's formula)
    node_list: str = ""
    submit: Optional[float] = None
    start: Optional[float] = None
    end: Optional[float] = None
    restarts: int = 0
    source: str = ""  # "squeue" or "sacct"
    updated: Optional[float] = None


JOB_RECORD_COLUMNS = [f.name for f in fields(JobRecord)]
