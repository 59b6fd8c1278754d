"""What slurmml keeps of Slurm's accounting for each job: the contract between the poller and the reports.

Parsing sacct text into JobRecords and the efficiency formulas live here too (pure functions).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

# sacct --noheader --parsable2 (without --allocations: step lines carry MaxRSS and the real TotalCPU)
SACCT_REPORT_FIELDS = [
    "JobID", "JobIDRaw", "State", "ExitCode", "Elapsed", "ElapsedRaw", "Timelimit", "AllocCPUS", "AllocTRES",
    "TotalCPU", "MaxRSS", "NTasks", "ReqMem", "NodeList", "Start", "End", "Submit", "Reason",
]  # no "Restarts": Slurm 22.05's sacct refuses it (requeues are counted from the runs' own start records)


@dataclass
class JobRecord:
    """One job (or array task), as the last Slurm call saw it. Times are Unix seconds; None = unknown."""

    job_id: str  # `123_4` for array tasks, `123` otherwise
    state: Optional[str]  # base state: PENDING, RUNNING, COMPLETED, ...; None: sacct was asked and knew nothing
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


# -- building the sacct command and parsing its output (pure) -------------------------------------------------

import re  # noqa: E402  (kept with the parsers below)


def expand_array_id(job_id: str) -> list[str]:
    """`123_[0-3,7%2]` (a pending array range, as squeue and sacct print it) to `123_0 .. 123_3, 123_7`;
    other ids unchanged."""
    match = re.fullmatch(r"(\d+)_\[(.+?)(?:%\d+)?\]", job_id)
    if not match:
        return [job_id]
    base, spec = match.groups()
    ids = []
    for part in spec.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            step = 1
            if ":" in hi:
                hi, step_text = hi.split(":")
                step = int(step_text)
            ids.extend(f"{base}_{i}" for i in range(int(lo), int(hi) + 1, step))
        else:
            ids.append(f"{base}_{part}")
    return ids


def sacct_report_command(job_ids: list[str], since: Optional[str] = None,
                         fields: Optional[list[str]] = None) -> list[str]:
    """argv of the sacct call whose output `parse_sacct_report` reads: job lines and their step lines.

    No `--allocations`: the step lines carry MaxRSS and NTasks, and the job line's TotalCPU is then the
    sum over its steps. Without job ids sacct lists the caller's jobs (since `since`, or since midnight).
    """
    argv = ["sacct", "--noheader", "--parsable2", f"--format={','.join(fields or SACCT_REPORT_FIELDS)}"]
    if job_ids:
        argv.append(f"--jobs={','.join(job_ids)}")
    if since:
        argv.append(f"--starttime={since}")
    return argv


def unknown_sacct_field(stderr: str) -> Optional[str]:
    """The field an older sacct refused (`sacct: error: Invalid field requested: "Restarts"`), to retry without it.

    Slurm 22.05's sacct has no `Restarts` field (later releases do); the parser fills what is missing with defaults.
    """
    match = re.search(r'Invalid field requested: "([^"]+)"', stderr)
    return match.group(1) if match else None


_NO_LIMIT = {"", "UNLIMITED", "INFINITE", "PARTITION_LIMIT", "NONE", "N/A"}
_BACKFILL_NO_LIMIT_S = 365 * 86400  # jobs without --time started by the backfill scheduler show 365-00:00:00
_UNITS_MB = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0 ** 2, "P": 1024.0 ** 3}


def parse_duration_s(text: str) -> Optional[float]:
    """Slurm durations in seconds: `[D-]HH:MM:SS`, `MM:SS.mmm` (TotalCPU under an hour), `MM:SS`; None if empty."""
    text = text.strip()
    if text.upper() in _NO_LIMIT or text.upper() == "UNKNOWN":
        return None
    days = 0
    if "-" in text:
        day_text, text = text.split("-", 1)
        days = int(day_text)
    parts = text.split(":")
    if days:  # D-H, D-H:M or D-H:M:S
        parts = (parts + ["0", "0"])[:3]
    elif len(parts) == 1:  # bare minutes, as in --time=5
        parts = [parts[0], "0"]
    seconds = float(parts[-1])
    minutes = int(parts[-2]) if len(parts) >= 2 else 0
    hours = int(parts[-3]) if len(parts) >= 3 else 0
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def parse_timelimit_s(text: str) -> Optional[int]:
    """Timelimit in seconds; None for no limit (`UNLIMITED`, and `365-00:00:00`, the backfill scheduler's way)."""
    seconds = parse_duration_s(text)
    if seconds is None or seconds == _BACKFILL_NO_LIMIT_S:
        return None
    return int(seconds)


def parse_size_mb(text: str, bare_unit: str = "M") -> Optional[float]:
    """`93016K`, `256M`, `1.50G` to MiB (1024-based, as seff prints them); a bare number is in `bare_unit` (B or M)."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMGTP]?)\s*", text)
    if not match:
        return None
    value, unit = float(match.group(1)), match.group(2)
    if unit:
        return value * _UNITS_MB[unit]
    return value / 1024 ** 2 if bare_unit == "B" else value


def parse_req_mem_mb(text: str, cpus: Optional[int], nodes: Optional[int]) -> Optional[float]:
    """ReqMem for the whole job. Slurm 21.08+ prints the job's total (`256M`, `4G`); older releases printed
    per-node (`2000Mn`) or per-CPU (`500Mc`) amounts, multiplied here by the nodes or CPUs allocated."""
    text = text.strip()
    scale = 1
    if text[-1:] in ("n", "c"):
        scale = (nodes or 1) if text[-1] == "n" else (cpus or 1)
        text = text[:-1]
    size = parse_size_mb(text, bare_unit="M")
    return None if size is None else size * scale


def parse_tres(text: str) -> dict[str, str]:
    """`billing=1,cpu=1,gres/gpu=1,mem=256M,node=1` -> {'billing': '1', 'cpu': '1', 'gres/gpu': '1', ...}."""
    pairs = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep:
            pairs[key.strip()] = value.strip()
    return pairs


def gpus_in_tres(tres: dict[str, str]) -> int:
    """GPUs in AllocTRES: `gres/gpu=N`, or the sum of typed entries (`gres/gpu:a100=2`) when only those appear."""
    if "gres/gpu" in tres:
        return int(tres["gres/gpu"])
    return sum(int(v) for k, v in tres.items() if k.startswith("gres/gpu:") and v.isdigit())


def parse_exit_code(text: str) -> tuple[Optional[int], Optional[int]]:
    """`1:0` -> (exit code 1, signal 0)."""
    code, _, signal = text.strip().partition(":")
    try:
        return int(code), int(signal) if signal else None
    except ValueError:
        return None, None


def parse_sacct_time(text: str) -> Optional[float]:
    """`2026-11-23T09:19:48` (the cluster's local time) to Unix seconds; `Unknown`, `None` or empty -> None."""
    text = text.strip()
    if not text or text in ("Unknown", "None"):
        return None
    import time as _time

    try:
        return _time.mktime(_time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def _int(text: str) -> Optional[int]:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def parse_sacct_report(text: str, fields: Optional[list[str]] = None,
                       updated: Optional[float] = None) -> list[JobRecord]:
    """Lines of `sacct_report_command(...)` output to one JobRecord per job or array task.

    Each job line is merged with its step lines (`.batch`, `.extern`, `.0`, ...): state, times, limits,
    ReqMem and TotalCPU come from the job line (without --allocations it is the sum over the steps);
    MaxRSS is the largest step's MaxRSS x that step's NTasks (seff's estimate for multi-task steps).
    Without any step line (--allocations, or a job that has not started a step) CPU time and MaxRSS are
    unknown (None), not zero. `fields` names the columns when they differ from SACCT_REPORT_FIELDS.
    """
    names = list(fields or SACCT_REPORT_FIELDS)
    jobs: dict[str, dict[str, str]] = {}
    steps: dict[str, list[dict[str, str]]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        values = line.split("|")
        if len(values) != len(names):
            continue
        row = dict(zip(names, values))
        job_id, dot, _step = row["JobID"].partition(".")
        if dot:
            steps.setdefault(job_id, []).append(row)
        else:
            jobs[job_id] = row
    records = []
    for job_id, row in jobs.items():
        for task_id in expand_array_id(job_id):
            records.append(_job_record(task_id, row, steps.get(job_id, []), updated))
    return records


def _job_record(job_id: str, row: dict[str, str], steps: list[dict[str, str]], updated: Optional[float]) -> JobRecord:
    word, _, state_rest = row.get("State", "").strip().partition(" ")
    reason = state_rest.strip()
    if not reason and row.get("Reason", "").strip() not in ("", "None"):
        reason = row["Reason"].strip()
    exit_code, signal = parse_exit_code(row.get("ExitCode", ""))
    tres = parse_tres(row.get("AllocTRES", ""))
    alloc_cpus = _int(row.get("AllocCPUS", "")) or _int(tres.get("cpu", ""))
    elapsed = _int(row.get("ElapsedRaw", ""))
    if elapsed is None and row.get("Elapsed"):
        duration = parse_duration_s(row["Elapsed"])
        elapsed = None if duration is None else int(duration)
    total_cpu = None
    if steps:
        total_cpu = parse_duration_s(row.get("TotalCPU", ""))
        if total_cpu is None:
            step_cpu = [parse_duration_s(s.get("TotalCPU", "")) for s in steps]
            total_cpu = sum(c for c in step_cpu if c is not None) if any(c is not None for c in step_cpu) else None
    max_rss = None
    for step in steps:
        rss = parse_size_mb(step.get("MaxRSS", ""), bare_unit="B")
        if rss is None:
            continue
        estimate = rss * (_int(step.get("NTasks", "")) or 1)
        max_rss = estimate if max_rss is None else max(max_rss, estimate)
    req_mem = row.get("ReqMem", "")
    return JobRecord(
        job_id=job_id,
        state=word,
        reason=reason,
        exit_code=exit_code,
        signal=signal,
        elapsed_s=elapsed,
        timelimit_s=parse_timelimit_s(row.get("Timelimit", "")),
        alloc_cpus=alloc_cpus,
        alloc_gpus=gpus_in_tres(tres) if tres else None,
        req_mem_mb=parse_req_mem_mb(req_mem, alloc_cpus, _int(tres.get("node", ""))) if req_mem.strip() else None,
        total_cpu_s=total_cpu,
        max_rss_mb=max_rss,
        node_list=row.get("NodeList", "").strip(),
        submit=parse_sacct_time(row.get("Submit", "")),
        start=parse_sacct_time(row.get("Start", "")),
        end=parse_sacct_time(row.get("End", "")),
        restarts=_int(row.get("Restarts", "")) or 0,
        source="sacct",
        updated=updated,
    )


# -- efficiency figures (seff's and reportseff's formulas); fractions, None when not computable ---------------

def cpu_efficiency(r: JobRecord) -> Optional[float]:
    """TotalCPU / (Elapsed x AllocCPUS). seff prints the same ratio with TotalCPU rounded to whole seconds."""
    if r.total_cpu_s is None or not r.elapsed_s or not r.alloc_cpus:
        return None
    return r.total_cpu_s / (r.elapsed_s * r.alloc_cpus)


def memory_efficiency(r: JobRecord) -> Optional[float]:
    """max over steps of (MaxRSS x NTasks) / the job's requested memory."""
    if r.max_rss_mb is None or not r.req_mem_mb:
        return None
    return r.max_rss_mb / r.req_mem_mb


def time_efficiency(r: JobRecord) -> Optional[float]:
    """Elapsed / Timelimit; None for jobs without a limit."""
    if r.elapsed_s is None or not r.timelimit_s:
        return None
    return r.elapsed_s / r.timelimit_s


def gpu_hours(r: JobRecord) -> Optional[float]:
    """ElapsedRaw x allocated gres/gpu / 3600."""
    if r.elapsed_s is None or r.alloc_gpus is None:
        return None
    return r.elapsed_s * r.alloc_gpus / 3600
