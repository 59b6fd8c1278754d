"""What torch.distributed's `env://` rendezvous needs, derived from a Slurm job step's environment.

Each task of an srun step gets RANK (SLURM_PROCID), LOCAL_RANK (SLURM_LOCALID), WORLD_SIZE
(SLURM_STEP_NUM_TASKS), LOCAL_WORLD_SIZE when every node runs as many tasks, MASTER_ADDR (the first host
of the allocation) and MASTER_PORT, the same on every task: derived from the job id, outside Linux's
ephemeral range (32768-60999) so it cannot collide with a port the kernel handed out. The step's task
count is read, not SLURM_NTASKS: the batch script itself is one process even when the job has several tasks.
CUDA_VISIBLE_DEVICES is never part of this: Slurm may have narrowed it per task.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional

TORCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
PORT_BASE, PORT_SPAN = 20000, 10000  # 20000-29999: below the ephemeral range, above the well-known ports

_UNIFORM_TASKS = re.compile(r"(\d+)(\(x\d+\))?")  # SLURM_STEP_TASKS_PER_NODE: "2" or "2(x3)"; "3,2" is not uniform
_HOST = re.compile(r"[A-Za-z0-9_.-]+")
_RANGES = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")  # inside brackets: 01-04,07


def master_port(job_id: int) -> int:
    return PORT_BASE + job_id % PORT_SPAN


def step_world_size(environ: Mapping[str, str]) -> int:
    """How many processes the current srun step runs; 1 outside a step (the batch script, a plain run)."""
    value = environ.get("SLURM_STEP_NUM_TASKS", "").strip()
    return int(value) if value.isdigit() else 1


def first_host(nodelist: str) -> Optional[str]:
    """The first host of a Slurm host list (`vm`, `n[1-2]`, `n1,n3`, `gpu[01-04,07]`, `r[1-2]-n[01-08]`) without
    asking scontrol; None for a form this does not read (the caller asks `scontrol show hostnames`)."""
    head, depth = [], 0
    for char in nodelist.strip():  # the first comma outside brackets ends the first entry
        if char == "," and depth == 0:
            break
        depth += (char == "[") - (char == "]")
        if depth < 0 or depth > 1:
            return None
        head.append(char)
    if depth != 0:
        return None
    host = []
    for literal, bracket in re.findall(r"([^\[\]]*)(\[[^\[\]]*\])?", "".join(head)):
        if not (literal == "" or _HOST.fullmatch(literal)):
            return None
        host.append(literal)
        if bracket:  # Slurm expands brackets in order: the first host takes the start of each first range
            if not _RANGES.fullmatch(bracket[1:-1]):
                return None
            host.append(re.match(r"\d+", bracket[1:-1]).group())
    return "".join(host) or None


def torch_environment(environ: Mapping[str, str], master_host: Optional[str]) -> dict[str, str]:
    """The variables to set for torch.distributed in this task of a multi-task step: none for a single process,
    and none that `environ` already has (torchrun's, or a port the user chose). MASTER_ADDR is left out when
    `master_host` is None, MASTER_PORT when the job id is unknown."""
    world_size = step_world_size(environ)
    if world_size <= 1:
        return {}
    wanted = {"RANK": environ.get("SLURM_PROCID"), "LOCAL_RANK": environ.get("SLURM_LOCALID"),
              "WORLD_SIZE": str(world_size), "MASTER_ADDR": master_host}
    job_id = environ.get("SLURM_JOB_ID", "").strip()
    if job_id.isdigit():
        wanted["MASTER_PORT"] = str(master_port(int(job_id)))
    uniform = _UNIFORM_TASKS.fullmatch(environ.get("SLURM_STEP_TASKS_PER_NODE", "").strip())
    if uniform:
        wanted["LOCAL_WORLD_SIZE"] = uniform.group(1)
    return {name: value for name, value in wanted.items() if value and name not in environ}
