"""Pure parsers for text printed by Slurm commands (unit-tested on recorded output)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

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
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [re.sub(r"^sbatch:\s*error:\s*", "", line) for line in lines if "error" in line.lower()]
    if errors:
        return "; ".join(dict.fromkeys(errors))
    return lines[-1] if lines else "sbatch failed without a message"


def parse_job_id(sbatch_stdout: str) -> str:
    """`sbatch --parsable` prints `JOBID` or `JOBID;CLUSTER`; plain sbatch `Submitted batch job JOBID`."""
    match = re.search(r"(?:^|job )(\d+)", sbatch_stdout.strip())
    if not match:
        raise ValueError(f"no job id in sbatch output: {sbatch_stdout.strip()!r}")
    return match.group(1)


@dataclass(frozen=True)
class TaskState:
    job_id: str  # `123_4` for array tasks, `123` otherwise
    state: str  # Slurm's base state, e.g. RUNNING, COMPLETED, CANCELLED
    reason: str = ""


def _expand_array_id(job_id: str) -> list[str]:
    """`123_[0-3,7%2]` (a pending array range) to `123_0 .. 123_3, 123_7`; other ids unchanged."""
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


SQUEUE_FORMAT = "%i|%T|%r"


def parse_squeue(text: str) -> list[TaskState]:
    """Rows of `squeue --noheader --array --format=SQUEUE_FORMAT`."""
    states = []
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 2:
            continue
        for job_id in _expand_array_id(fields[0]):
            states.append(TaskState(job_id, fields[1], fields[2] if len(fields) > 2 else ""))
    return states
