"""The Registry: the one connection to the registry file, with the methods of each of its consumers.

Each consumer's SQL lives in its own module, as a small class of methods on `self.conn`:
  launch_writes.LaunchWrites  the launcher and the run actions: sweeps, runs, sbatch's answers, requeues
  ingest.SpoolIngest          spool ingest (the views, the poller, the local launcher)
  local_runs.LocalRuns        plain-script runs: adopting them, ending those whose process died
  jobs.SlurmCache             the poller's cache of Slurm's view of each job
  browse.RunReads             the CLI's reads: runs, one run, sweeps, the leaderboard, curves
  controls.LiveControls       live controls and their answers, early-stopping rules and the runs they pruned
Registry only opens and closes the connection and composes the classes. Mixins rather than one delegating
method per call: the ~30 public methods keep their names and signatures without each being written twice,
and a method's docstring sits next to its SQL. Every write goes through store.transaction.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Optional

from slurmml.registry.browse import RunReads
from slurmml.registry.controls import LiveControls
from slurmml.registry.ingest import IngestReport, SpoolIngest
from slurmml.registry.jobs import SlurmCache
from slurmml.registry.launch_writes import LaunchWrites
from slurmml.registry.local_runs import LocalRuns
from slurmml.registry.store import connect, default_registry_path

__all__ = ["Registry"]


class Registry(LaunchWrites, SpoolIngest, LocalRuns, SlurmCache, RunReads, LiveControls):
    def __init__(self, path: Optional[Path] = None, *, create: bool = True) -> None:
        self.path = Path(path) if path is not None else default_registry_path()
        self.conn: sqlite3.Connection = connect(self.path, create=create)
        self.conn.row_factory = sqlite3.Row

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def refresh(self, local_runs_dir: Optional[Path] = None, recent_s: Optional[float] = None) -> IngestReport:
        """What every view does first: adopt plain-script runs, ingest spools (all, or with `recent_s` only
        those of runs active or ended lately), end local runs whose process died."""
        if local_runs_dir is not None:
            self.adopt_local_runs(local_runs_dir)
        report = self.ingest(recent_s=recent_s)
        self.end_dead_local_runs()
        return report
