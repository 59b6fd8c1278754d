"""Run a staged batch on this machine, a few tasks at a time, with the same layout as on Slurm."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional

from slurmml.launcher.plan import job_environment
from slurmml.launcher.task import task_arguments


def local_log_paths(batch_dir: Path, index: int) -> tuple[Path, Path]:
    return batch_dir / "logs" / f"{index}.out", batch_dir / "logs" / f"{index}.err"


def _log_files(batch_dir: Path, index: int) -> tuple[Path, Path]:
    out_path, err_path = local_log_paths(batch_dir, index)
    out_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # a task's output may hold what it was given
    return out_path, err_path


def _run_one(batch_dir: Path, index: int, timeout_s: float, env: dict[str, str]) -> Optional[str]:
    """Run one task in its own process; returns why it ended badly without a result, if it did."""
    out_path, err_path = _log_files(batch_dir, index)
    with open(out_path, "ab") as out, open(err_path, "ab") as err:
        try:
            proc = subprocess.run([sys.executable, *task_arguments(batch_dir, index=index)],
                                  stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return f"local task {index} killed after its {timeout_s / 60:g} min time limit; log: {err_path}"
    if proc.returncode != 0:
        return f"local task {index} exited with code {proc.returncode}; log: {err_path}"
    return None


def run_batch_locally(
    batch_dir: Path,
    num_tasks: int,
    parallelism: int,
    timeout_s: float,
    on_done: Callable[[int, Optional[str]], None] = lambda index, problem: None,
) -> dict[int, str]:
    """Runs every task; returns the problems of tasks that failed, by index."""
    env = job_environment(os.environ)
    problems: dict[int, str] = {}

    def work(index: int) -> None:
        problem = _run_one(batch_dir, index, timeout_s, env)
        if problem:
            problems[index] = problem
        on_done(index, problem)

    with ThreadPoolExecutor(max_workers=max(1, parallelism)) as pool:
        list(pool.map(work, range(num_tasks)))
    return problems


def start_detached(batch_dir: Path, index: int, cwd: Path) -> tuple[int, str]:
    """Start one task that outlives this process (a clone); its pid and its stderr file.

    Not through run_command, which waits for the process. No time limit here: the local backend's
    timeout_min is enforced by the launcher that waits for its batch.
    """
    out_path, err_path = _log_files(batch_dir, index)
    with open(out_path, "ab") as out, open(err_path, "ab") as err:
        proc = subprocess.Popen([sys.executable, *task_arguments(batch_dir, index=index)],
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=job_environment(os.environ),
                                cwd=cwd, start_new_session=True)
    return proc.pid, str(err_path)
