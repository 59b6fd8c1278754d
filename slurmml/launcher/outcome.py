"""Turn what tasks left on disk (or did not) into Hydra JobReturns, in sweep order."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from slurmml.launcher import batch


@dataclass(frozen=True)
class QueuedTask:
    """The return value of a task when the launcher does not wait: where to find it later."""

    sweep_id: str
    job_id: str
    job_num: int
    output_dir: Optional[str] = None


class TaskLost(RuntimeError):
    """The task ended without leaving a result (killed, out of memory, timed out, node failure)."""


def stopped_value(direction: Optional[str]) -> Optional[float]:
    """What a stopped or pruned task returns to the sweeper: the worst value of its declared direction, so an
    optimizing sweeper (Optuna's, which takes every return as a float and has no way to be told "pruned") records
    the trial as lost and steers away from it; None for a sweeper that declared none."""
    return math.inf if direction == "min" else -math.inf if direction == "max" else None


def job_returns(
    batch_dir: Path, overrides: Sequence[Sequence[str]], lost: dict[int, str],
    stopped: Optional[Mapping[int, Any]] = None,
) -> list[Any]:
    """`stopped`: index -> the return value of a task that ended STOPPED or PRUNED (stopped_value)."""
    from hydra.core.utils import JobReturn, JobStatus

    returns = []
    finished = batch.finished_indices(batch_dir)
    stopped = stopped or {}
    for index, task_overrides in enumerate(overrides):
        if index in finished:
            returns.append(batch.read_result(batch_dir, index))
        elif index in stopped:
            returns.append(JobReturn(overrides=list(task_overrides), status=JobStatus.COMPLETED,
                                     _return_value=stopped[index]))
        else:
            reason = lost.get(index, "ended without a result")
            returns.append(
                JobReturn(overrides=list(task_overrides), status=JobStatus.FAILED, _return_value=TaskLost(reason))
            )
    return returns


def queued_returns(overrides: Sequence[Sequence[str]], queued: list[QueuedTask]) -> list[Any]:
    from hydra.core.utils import JobReturn, JobStatus

    return [
        JobReturn(overrides=list(o), status=JobStatus.COMPLETED, _return_value=q) for o, q in zip(overrides, queued)
    ]
