"""Pure parsers for text printed by Slurm commands (unit-tested on recorded output)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from slurmml.core.text import last_line, tool_error_lines
from slurmml.slurm.accounting import JobRecord, expand_array_id, parse_sacct_time

SINFO_PARTITION_FORMAT = "%P|%c|%m|%G|%D|%l|%a"


@dataclass(frozen=True)
class Partition:
    name: str
    default: bool
    cpus_per_node: int
    mem_mb_per_node: int
    gpus_per_node: int
    nodes: int
    max_time_min: Optional[int]  # None: no limit
    up: bool


def parse_scontrol_config(text: str) -> dict[str, str]:
    """`scontrol show config` prints `Key = value` lines; keep the first block's pairs."""
    config: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            config.setdefault(key.strip(), value.strip())
    return config


def parse_slurm_time_min(text: str) -> Optional[int]:
    """Slurm durations to whole minutes, rounded up; None for no limit.

    Without days: M, M:S or H:M:S. With days: D-H, D-H:M or D-H:M:S.
    """
    text = text.strip()
    if text.upper() in {"INFINITE", "UNLIMITED", "NONE", "N/A", ""}:
        return None
    days, hours, minutes, seconds = 0, 0, 0, 0
    if "-" in text:
        day_part, text = text.split("-", 1)
        days = int(day_part)
        hours, minutes, seconds = ([int(p) for p in text.split(":")] + [0, 0])[:3]
    else:
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 3:
            hours, minutes, seconds = parts
        elif len(parts) == 2:
            minutes, seconds = parts
        else:
            minutes = parts[0]
    total_s = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    return -(-total_s // 60)


def gpus_in_gres(gres: str) -> int:
    """Count GPUs in a GRES string such as `gpu:4`, `gpu:a100:2(S:0,2)`, `gpu:4,shard:8` or `(null)`."""
    total = 0
    for item in re.sub(r"\(.*?\)", "", gres).split(","):  # socket lists may hold commas: drop them first
        fields = item.strip().split(":")
        if fields[0] != "gpu" or len(fields) < 2:
            continue
        count = fields[-1]
        total += int(count) if count.isdigit() else 1
    return total


def _leading_int(text: str) -> int:
    match = re.match(r"\d+", text.strip())
    return int(match.group()) if match else 0


def parse_sinfo_partitions(text: str) -> list[Partition]:
    """Rows of `sinfo --noheader --format=SINFO_PARTITION_FORMAT`, merged per partition.

    sinfo prints one row per group of identical nodes, so a partition may appear
    several times: keep the largest node and sum the node counts.
    """
    merged: dict[str, Partition] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 7:
            continue
        raw_name, cpus, mem, gres, nodes, timelimit, avail = fields
        name = raw_name.rstrip("*")
        row = Partition(
            name=name,
            default=raw_name.endswith("*"),
            cpus_per_node=_leading_int(cpus),
            mem_mb_per_node=_leading_int(mem),
            gpus_per_node=gpus_in_gres(gres),
            nodes=_leading_int(nodes),
            max_time_min=parse_slurm_time_min(timelimit),
            up=avail.strip() == "up",
        )
        seen = merged.get(name)
        if seen is not None:
            row = Partition(
                name=name,
                default=seen.default or row.default,
                cpus_per_node=max(seen.cpus_per_node, row.cpus_per_node),
                mem_mb_per_node=max(seen.mem_mb_per_node, row.mem_mb_per_node),
                gpus_per_node=max(seen.gpus_per_node, row.gpus_per_node),
                nodes=seen.nodes + row.nodes,
                max_time_min=seen.max_time_min,
                up=seen.up or row.up,
            )
        merged[name] = row
    return list(merged.values())


def sbatch_error_line(stderr: str) -> str:
    """Why sbatch refused, in one line: its error lines joined (the first often names the culprit)."""
    errors = tool_error_lines(stderr)
    if errors:
        return "; ".join(dict.fromkeys(errors))
    return last_line(stderr) or "sbatch failed without a message"


def parse_job_id(sbatch_stdout: str) -> str:
    """`sbatch --parsable` prints `JOBID` or `JOBID;CLUSTER`; plain sbatch `Submitted batch job JOBID`."""
    match = re.search(r"(?:^|job )(\d+)", sbatch_stdout.strip())
    if not match:
        raise ValueError(f"no job id in sbatch output: {sbatch_stdout.strip()!r}")
    return match.group(1)


# squeue -O: one line per array task, nothing truncated (no field widths), restart count and submit time
SQUEUE_FIELDS = "JobArrayID:|,State:|,Reason:|,RestartCnt:|,SubmitTime:|"
SQUEUE_ARGV = ("squeue", "--noheader", "--array", "--me", f"--Format={SQUEUE_FIELDS}")


def parse_squeue(text: str, updated: Optional[float] = None) -> list[JobRecord]:
    """Rows of `squeue --noheader --array --Format=SQUEUE_FIELDS` (`4697_0|PENDING|BeginTime|1|2026-...|`),
    one JobRecord (source "squeue", seen at `updated`) per job or array task. Rows of the shorter
    `--format=%i|%T|%r` read the same: no restart count (0) and no submit time."""
    records = []
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 2 or not fields[0]:
            continue
        reason = fields[2].strip() if len(fields) > 2 else ""
        try:
            restarts = int(fields[3]) if len(fields) > 3 and fields[3].strip() else 0
        except ValueError:
            restarts = 0
        submit = parse_sacct_time(fields[4]) if len(fields) > 4 else None
        for job_id in expand_array_id(fields[0].strip()):
            records.append(JobRecord(job_id=job_id, state=fields[1].strip(), reason="" if reason == "None" else reason,
                                     restarts=restarts, submit=submit, source="squeue", updated=updated))
    return records


# what slurmstepd writes to the job's stderr when JobAcctGatherParams=OverMemoryKill (or cgroups) kill it
MEMORY_KILL_WORDS = ("exceeded memory limit", "exceeded job memory limit", "oom-kill", "out of memory")


def memory_kill_line(log_tail: str) -> Optional[str]:
    """The line in the end of a job's stderr where Slurm says it killed the job for its memory, if any."""
    for line in log_tail.splitlines():  # the first one names the step and the sizes
        if any(words in line.lower() for words in MEMORY_KILL_WORDS):
            return line.strip()
    return None


SCONTROL_JOB_FIELD = re.compile(r"(?:^|\s)([A-Za-z][\w:/]*)=(\S*)")


def parse_scontrol_job(text: str) -> dict[str, str]:
    """`scontrol show job ID` (`JobId=7 JobName=x ... PreemptTime=None ...`, several lines) as its fields; for an
    array job's several records, the first one. Values with spaces (Command=, WorkDir=) keep their first word."""
    fields: dict[str, str] = {}
    for record in text.strip().split("\n\n")[:1]:
        for match in SCONTROL_JOB_FIELD.finditer(record):
            fields.setdefault(match.group(1), match.group(2))
    return fields
