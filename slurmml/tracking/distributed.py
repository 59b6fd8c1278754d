"""`slurmml.init_distributed()`: torch.distributed for the tasks of a multi-task Slurm job.

The job wrapper exports the rendezvous variables (slurmml.core.distributed) before the task runs, so a task
may also call `torch.distributed.init_process_group()` itself; this helper exports them again when the
process was started some other way, picks the backend and joins the group. torch is imported only here.
"""

from __future__ import annotations

import os
from typing import MutableMapping, Optional

from slurmml.core.distributed import first_host, step_world_size, torch_environment
from slurmml.errors import SlurmmlError

__all__ = ["init_distributed", "export_torch_environment"]

REQUIRED = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")


def export_torch_environment(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set the torch.distributed variables this task of a multi-task step lacks; return those set."""
    if step_world_size(environ) <= 1:
        return {}
    host = environ.get("MASTER_ADDR")
    if not host:
        nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST", "")
        host = first_host(nodelist) or _scontrol_first_host(nodelist)
    missing = torch_environment(environ, host)
    environ.update(missing)
    return missing


def init_distributed(backend: Optional[str] = None) -> tuple[int, int]:
    """Join this job's process group and return (rank, world_size).

    The backend defaults to NCCL when a GPU is visible, else gloo. A single process (one task, or a plain run)
    gets a group of one, so the same code runs with or without Slurm. CUDA_VISIBLE_DEVICES is left as Slurm set
    it; with NCCL each task takes the visible device LOCAL_RANK modulo their count.
    """
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    export_torch_environment(os.environ)
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() and torch.cuda.device_count() > 0 else "gloo"
    if backend == "nccl" and torch.cuda.device_count() > 0:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    if "WORLD_SIZE" not in os.environ:  # one process: an in-memory store, no port to agree on
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    else:
        absent = [name for name in REQUIRED if not os.environ.get(name)]
        if absent:
            raise SlurmmlError(f"init_distributed: {', '.join(absent)} not set and not derivable from Slurm's "
                               "environment (SLURM_JOB_NODELIST, SLURM_JOB_ID)")
        if backend == "gloo" and "GLOO_SOCKET_IFNAME" not in os.environ and _is_loopback(os.environ["MASTER_ADDR"]):
            os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # all tasks on this machine: gloo's guess of an interface may not reach it
        dist.init_process_group(backend, init_method="env://")
    return dist.get_rank(), dist.get_world_size()


def _is_loopback(host: str) -> bool:
    import ipaddress
    import socket

    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def _scontrol_first_host(nodelist: str) -> Optional[str]:
    """A host list form first_host does not read: ask Slurm to expand it."""
    if not nodelist:
        return None
    from slurmml.slurm.commands import run_command

    result = run_command(["scontrol", "show", "hostnames", nodelist])
    hosts = result.stdout.split() if result.ok else []
    return hosts[0] if hosts else None
