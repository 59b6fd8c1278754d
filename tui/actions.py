"""The TUI's side effects on runs (cancel, requeue, clone), through slurmml.control.actions.

Called from background workers. scancel and scontrol go through the data source's connection for updates
(RegistrySource.updating), so the views' reads never wait for them.
"""

from __future__ import annotations

import sys
from typing import Optional

from slurmml.control import actions
from slurmml.tui.model import RunRow
from slurmml.tui.source import RegistrySource


class RunActions:
    def __init__(self, source: RegistrySource, python: str = sys.executable) -> None:
        self.source = source
        self.python = python

    def refusal(self, action: str, row: RunRow) -> Optional[str]:
        run = {"id": row.run_id, "state": row.state, "slurm_job_id": row.slurm_job_id or None}
        return actions.refusal(action, run, row.owner or None, self.source.user)

    def cancel(self, run_id: str) -> actions.ActionResult:
        with self.source.updating() as registry:
            return actions.cancel_run(registry, run_id, me=self.source.user)

    def requeue(self, run_id: str) -> actions.ActionResult:
        with self.source.updating() as registry:
            return actions.requeue_run(registry, run_id, me=self.source.user)

    def clone(self, run_id: str, overrides: list[str]) -> actions.ActionResult:
        # a subprocess: the run's pickled task is loaded there, never into this process
        return actions.clone_run(self.source.registry.path, run_id, overrides, python=self.python)

    def overrides(self, run_id: str) -> list[str]:
        with self.source.lock:
            return list(self.source.registry.run(run_id).get("overrides") or [])
