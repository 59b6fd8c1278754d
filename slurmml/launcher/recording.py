"""What a launch records before any job starts (login node): the sweep's id and its records on disk, and
the sweep and its runs (SUBMITTING) in the registry."""

from __future__ import annotations

import getpass
import json
import os
import secrets
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from slurmml.errors import SlurmmlError
from slurmml.home import slurmml_home
from slurmml.launcher import batch
from slurmml.slurm.commands import run_command
from slurmml.tracking.secrets import mask_argv

MAX_DIFF_BYTES = 1_000_000  # a huge uncommitted change is recorded as truncated, not stored whole


def run_id(sweep_id: str, job_num: int) -> str:
    return f"{sweep_id}-{job_num}"


def spool_path(batch_dir: Path, index: int) -> Path:
    return batch_dir / "spool" / f"{index}.jsonl"


def node_spool_path(batch_dir: Path, index: int, node: int) -> Path:
    """Where the job's node `node` (SLURM_NODEID, not 0) writes its GPU samples: a file of its own."""
    return batch_dir / "spool" / f"{index}.node-{node}.jsonl"


# -- the sweep's id and its records on disk -----------------------------------------------------------------

_sweep_ids: dict[Path, str] = {}  # batches launched by one Hydra command share one sweep id


def sweep_id_for(sweep_dir: Path, initial_job_idx: int) -> str:
    """A new id for each command that launches into a directory, recorded there (`.slurmml/<id>/sweep.json`:
    the command and when it ran, for whoever reads the folder; commands find sweeps through the registry).

    A sweeper's first batch starts at job 0: that is a new command even in a process that launched into
    this directory before (Hydra's test suites, a notebook), so it never reuses an older sweep's id.
    """
    if sweep_dir not in _sweep_ids or initial_job_idx == 0:
        slurmml_home()  # a bad SLURMML_HOME stops here, before anything is written
        sweep_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
        record = {"sweep_id": sweep_id, "dir": str(sweep_dir), "created": time.time(), "argv": mask_argv(sys.argv)}
        batch.write_atomic(batch.sweep_state_dir(sweep_dir, sweep_id) / batch.SWEEP_RECORD, json.dumps(record, indent=2).encode())
        _sweep_ids[sweep_dir] = sweep_id
    return _sweep_ids[sweep_dir]


def forget_sweep(sweep_dir: Path, sweep_id: str) -> None:
    """After a sweep's only batch was taken back: this command's id for it."""
    if _sweep_ids.get(sweep_dir) == sweep_id:
        del _sweep_ids[sweep_dir]


# -- the registry -------------------------------------------------------------------------------------------

class JobNumberTaken(SlurmmlError):
    """Another launch into the sweep (two clones at once) recorded a run under this job number first."""


def git_state(cwd: str) -> dict[str, Any]:
    """Commit, dirtiness and the diff of uncommitted changes; empty outside a git checkout."""
    head = run_command(["git", "-C", cwd, "rev-parse", "HEAD"], timeout_s=10)
    if not head.ok:
        return {}
    diff = run_command(["git", "-C", cwd, "diff", "HEAD"], timeout_s=30).stdout
    if len(diff) > MAX_DIFF_BYTES:
        diff = diff[:MAX_DIFF_BYTES] + "\n[slurmml: diff truncated]\n"
    return {"git_commit": head.stdout.strip(), "git_dirty": int(bool(diff)), "git_diff": diff or None}


def record_sweep(sweep_id: str, sweep_dir: Path, backend: str, conf: Mapping[str, Any], runs: list[dict],
                 direction: Optional[str] = None) -> Any:
    """Record a new sweep of this command and its first runs; the Registry they are in. `direction` is
    the one the sweeper declared for its objective (`sweeper_direction`)."""
    from slurmml.launcher.plan import early_stop_rule
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
        "early_stop": early_stop_rule(conf, direction),
        **git_state(os.getcwd()),
    }
    registry.add_sweep(sweep, runs)
    return registry


def record_runs(registry: Any, sweep_id: str, runs: list[dict]) -> Any:
    """Add runs to a sweep recorded before (a clone); JobNumberTaken if another launch took their number."""
    try:
        registry.add_sweep({"id": sweep_id}, runs)  # the sweep's own row is kept as it is
    except sqlite3.IntegrityError:
        raise JobNumberTaken(f"a run of sweep {sweep_id} took job number {runs[0]['job_num']} meanwhile") from None
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
