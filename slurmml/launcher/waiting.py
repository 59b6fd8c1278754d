"""Block until every task of a batch has ended, through the shared poller (no Slurm calls of its own).

Results are files on the shared filesystem, so progress costs directory listings. Whether a
task without a result has ended, and how, is the poller's word in the registry: it makes the
one squeue per interval and the bounded sacct calls for every watcher of this registry.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional

from slurmml.core.reconcile import RESULT_GRACE_S
from slurmml.core.states import FINAL_STATES
from slurmml.core.text import last_line
from slurmml.launcher import batch
from slurmml.registry import jobs

RESULT_CHECK_S = 0.5
# A task that ended COMPLETED or FAILED (it raised) wrote its result just before exiting (it may show up
# late: RESULT_GRACE_S); other ends write none.
ENDS_WITH_A_RESULT = ("COMPLETED", "FAILED")


class BatchWaiter:
    def __init__(
        self,
        batch_dir: Path,
        registry: Any,
        run_ids: list[str],
        poller: Any,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.batch_dir, self.registry, self.run_ids, self.poller = batch_dir, registry, run_ids, poller
        self.clock, self.sleep = clock, sleep
        self.lost: dict[int, str] = {}
        self._ended_without_result: dict[int, float] = {}

    def pending(self) -> list[int]:
        finished = batch.finished_indices(self.batch_dir)
        return [i for i in range(len(self.run_ids)) if i not in finished and i not in self.lost]

    def wait(self, on_progress: Optional[Callable[[int, int], None]] = None) -> dict[int, str]:
        """Returns the tasks that ended without a result, with the reason."""
        while True:
            pending = self.pending()
            if on_progress:
                on_progress(len(self.run_ids) - len(pending), len(self.lost))
            if not pending:
                return self.lost
            self.poller.poll()  # a no-op until the shared schedule allows the next call
            self._settle(pending)
            self.sleep(RESULT_CHECK_S)

    def _settle(self, pending: list[int]) -> None:
        runs = jobs.runs_by_id(self.registry, [self.run_ids[i] for i in pending])
        finished = batch.finished_indices(self.batch_dir)  # a result may have landed meanwhile
        now = self.clock()
        for index in pending:
            run = runs.get(self.run_ids[index])
            if run is None or run.state not in FINAL_STATES or index in finished:
                continue
            if run.state in ENDS_WITH_A_RESULT:
                first_seen = self._ended_without_result.setdefault(index, now)
                if now - first_seen < RESULT_GRACE_S:
                    continue
            reason = last_line(run.error)
            self.lost[index] = (f"Slurm job {run.job_id} ended {run.state} without a result"
                                + (f": {reason}" if reason else ""))
