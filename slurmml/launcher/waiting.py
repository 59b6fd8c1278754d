"""Block until every task of a batch has ended, without per-job polling.

Results are files on the shared filesystem, so progress costs directory listings,
not Slurm calls. squeue runs once per poll interval for all arrays together, and
sacct only for tasks that left the queue without a result.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

from slurmml.launcher import batch
from slurmml.launcher.slurm_backend import ArraySubmission
from slurmml.slurm.commands import CommandResult, run_command
from slurmml.slurm.parse import SACCT_STATE_FORMAT, SQUEUE_FORMAT, parse_sacct_states, parse_squeue

RESULT_CHECK_S = 0.5
# A task that Slurm calls COMPLETED, or that sacct does not list yet (slurmdbd lags the
# controller), may still have its result in flight on a network filesystem: give it time.
RESULT_GRACE_S = 60.0
BACKOFF_MAX_S = 300.0


class BatchWaiter:
    def __init__(
        self,
        batch_dir: Path,
        submissions: list[ArraySubmission],
        num_tasks: int,
        poll_interval_s: float,
        run: Callable[..., CommandResult] = run_command,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.batch_dir = batch_dir
        self.submissions = submissions
        self.num_tasks = num_tasks
        self.poll_interval_s = poll_interval_s
        self.run, self.clock, self.sleep = run, clock, sleep
        self.lost: dict[int, str] = {}
        self._left_without_result: dict[int, float] = {}
        self._interval = poll_interval_s
        self._next_squeue = clock() + poll_interval_s

    def _job_id(self, index: int) -> str:
        for sub in self.submissions:
            if sub.offset <= index < sub.offset + sub.count:
                return sub.task_job_id(index)
        raise IndexError(index)

    def pending(self) -> set[int]:
        return set(range(self.num_tasks)) - batch.finished_indices(self.batch_dir) - set(self.lost)

    def wait(self, on_progress: Optional[Callable[[int, int], None]] = None) -> dict[int, str]:
        """Returns the tasks that ended without a result, with the reason."""
        while True:
            pending = self.pending()
            if on_progress:
                on_progress(self.num_tasks - len(pending), len(self.lost))
            if not pending:
                return self.lost
            if self.clock() >= self._next_squeue:
                self._check_queue(pending)
            self.sleep(RESULT_CHECK_S)

    def _check_queue(self, pending: set[int]) -> None:
        array_ids = ",".join(s.job_id for s in self.submissions)
        result = self.run(["squeue", "--noheader", "--array", f"--jobs={array_ids}", f"--format={SQUEUE_FORMAT}"])
        if not result.ok and "Invalid job id" not in result.stderr:
            self._interval = min(self._interval * 2, BACKOFF_MAX_S)  # refused or slow: back off
            self._next_squeue = self.clock() + self._interval
            return
        self._interval = self.poll_interval_s
        self._next_squeue = self.clock() + self._interval
        in_queue = {t.job_id for t in parse_squeue(result.stdout)}
        left = {i for i in pending if self._job_id(i) not in in_queue}
        left -= batch.finished_indices(self.batch_dir)  # finished between our listing and squeue
        if left:
            self._settle(left)

    def _settle(self, left: set[int]) -> None:
        final = {}
        sacct = self.run(
            ["sacct", "--noheader", "--parsable2", "--allocations", f"--format={SACCT_STATE_FORMAT}",
             f"--jobs={','.join(s.job_id for s in self.submissions)}"]
        )
        if sacct.ok:
            final = {t.job_id: t for t in parse_sacct_states(sacct.stdout)}
        now = self.clock()
        for index in left:
            state = final.get(self._job_id(index))
            if state is None or state.state == "COMPLETED":
                first_seen = self._left_without_result.setdefault(index, now)
                if now - first_seen < RESULT_GRACE_S:
                    continue
            if state is None:
                self.lost[index] = f"Slurm job {self._job_id(index)} left the queue without a result, and sacct has no record"
            else:
                self.lost[index] = f"Slurm job {self._job_id(index)} ended {state.state} ({state.reason}) without a result"
