"""Record a batch in the registry at submission time, before any job starts (login node)."""

from __future__ import annotations

import getpass
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from slurmml.slurm.commands import run_command

MAX_DIFF_BYTES = 1_000_000  # a huge uncommitted change is recorded as truncated, not stored whole


def run_id(sweep_id: str, job_num: int) -> str:
    return f"{sweep_id}-{job_num}"


def spool_path(batch_dir: Path, index: int) -> Path:
    return batch_dir / "spool" / f"{index}.jsonl"


def git_state(cwd: str) -> dict[str, Any]:
    """Commit, dirtiness and the diff of uncommitted changes; empty outside a git checkout."""
    head = run_command(["git", "-C", cwd, "rev-parse", "HEAD"], timeout_s=10)
    if not head.ok:
        return {}
    diff = run_command(["git", "-C", cwd, "diff", "HEAD"], timeout_s=30).stdout
    if len(diff) > MAX_DIFF_BYTES:
        diff = diff[:MAX_DIFF_BYTES] + "\n[slurmml: diff truncated]\n"
    return {"git_commit": head.stdout.strip(), "git_dirty": int(bool(diff)), "git_diff": diff or None}


def record_batch(
    sweep_id: str,
    sweep_dir: Path,
    backend: str,
    conf: Mapping[str, Any],
    batch_dir: Path,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    log_path: Optional[Callable[[int], str]] = None,
    direction: Optional[str] = None,
) -> Any:
    """Record the sweep and its runs (SUBMITTING). `log_path(index)` gives a task's stderr file when it is
    known before submission (local runs); Slurm runs get theirs from mark_queued once sbatch answers.
    `direction` is the one the sweeper declared for its objective (`sweeper_direction`)."""
    from slurmml.registry.registry import Registry
    from slurmml.tracking.secrets import mask_config

    registry = Registry()
    sweep = {
        "id": sweep_id,
        "name": conf.get("name"),
        "user": getpass.getuser(),
        "created": time.time(),
        "argv": sys.argv,
        "cwd": os.getcwd(),
        "sweep_dir": str(sweep_dir),
        "backend": backend,
        "launcher": mask_config(dict(conf)),
        "direction": direction,
        **git_state(os.getcwd()),
    }
    runs = [
        {"id": run_id(sweep_id, initial_job_idx + index), "job_num": initial_job_idx + index,
         "overrides": list(overrides), "spool_path": str(spool_path(batch_dir, index)),
         "log_path": log_path(index) if log_path else None}
        for index, overrides in enumerate(job_overrides)
    ]
    registry.add_sweep(sweep, runs)
    return registry


def sweeper_direction(config: Any) -> Optional[str]:
    """'min' or 'max' as the sweep's `hydra.sweeper` declares it (Optuna, Ax, Nevergrad); None for other sweepers."""
    from omegaconf import OmegaConf

    from slurmml.core.direction import declared_direction

    sweeper = OmegaConf.select(config, "hydra.sweeper")
    if sweeper is None:
        return None
    try:
        plain = OmegaConf.to_container(sweeper, resolve=True)
    except Exception:  # an interpolation that cannot be resolved here: read the values as written
        plain = OmegaConf.to_container(sweeper, resolve=False)
    return declared_direction(plain) if isinstance(plain, dict) else None
