"""The TUI's side effects on runs: cancel, requeue and clone through slurmml.control.actions, and the live
controls (set, snapshot, stop) through slurmml.control.live.

Called from background workers (but `refusal`, which reads only the row). scancel, scontrol and the controls'
ingest go through the data source's connection for updates (RegistrySource.updating), so the views' reads
never wait for them.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from slurmml.control import actions, live
from slurmml.core import controls
from slurmml.errors import SlurmmlError
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

    def control_refusal(self, kind: str, run_id: str) -> Optional[str]:
        """Why a live control may not go to this run, or None. Reads the run's registry row (its folder, whether
        it came from another machine), which the runs view's rows do not carry: call it from a worker."""
        try:
            with self.source.lock:
                run = self.source.registry.run_with_sweep(run_id)
        except SlurmmlError as error:
            return str(error)
        return controls.refusal(kind, run, run.get("owner"), self.source.user)

    def control(self, run_id: str, kind: str, args: Optional[dict[str, Any]] = None) -> live.Sent:
        """Send one command; the job's answer comes back through its spool (the run's Controls history)."""
        with self.source.updating() as registry:
            return live.send(registry, run_id, kind, args, source="tui", me=self.source.user)

    def overrides(self, run_id: str) -> list[str]:
        with self.source.lock:
            return list(self.source.registry.run(run_id).get("overrides") or [])
