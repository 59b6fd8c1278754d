"""Turn what tasks left on disk (or did not) into Hydra JobReturns, in sweep order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

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


def job_returns(
    batch_dir: Path, overrides: Sequence[Sequence[str]], lost: dict[int, str]
) -> list[Any]:
    from hydra.core.utils import JobReturn, JobStatus

    returns = []
    finished = batch.finished_indices(batch_dir)
    for index, task_overrides in enumerate(overrides):
        if index in finished:
            returns.append(batch.read_result(batch_dir, index))
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
