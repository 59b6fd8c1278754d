"""Runs started outside slurmml (a plain script calling `slurmml.log`): adopting them, and ending those whose
process died without recording its end. What every view does first (Registry.refresh)."""

from __future__ import annotations

import os
import socket
import sqlite3
from pathlib import Path

from slurmml.registry.launch_writes import end_runs
from slurmml.registry.store import transaction


class LocalRuns:
    """Registry methods for the local runs that no launcher recorded."""

    conn: sqlite3.Connection

    def adopt_local_runs(self, runs_dir: Path) -> int:
        """Register runs that `slurmml.log` started outside slurmml ($SLURMML_HOME/runs/<id>/spool.jsonl)."""
        if not runs_dir.is_dir():
            return 0
        known = {row[0] for row in self.conn.execute("SELECT id FROM runs WHERE sweep_id IS NULL")}
        new = [(d.name, str(d / "spool.jsonl"), str(d), d.stat().st_mtime) for d in runs_dir.iterdir()
               if d.name not in known and (d / "spool.jsonl").is_file()]
        with transaction(self.conn) as conn:
            conn.executemany("INSERT OR IGNORE INTO runs(id, overrides, spool_path, run_dir, state, created) "
                             "VALUES (?, '[]', ?, ?, 'RUNNING', ?)", new)
        return len(new)

    def end_dead_local_runs(self) -> None:
        """A local run on this host whose process is gone and that never wrote its end is LOST, not RUNNING."""
        host = socket.gethostname()
        dead = {}
        for run_id, pid in self.conn.execute(
                "SELECT id, pid FROM runs WHERE sweep_id IS NULL AND state = 'RUNNING' AND host = ? AND pid IS NOT NULL "
                "AND id NOT IN (SELECT run_id FROM synced_runs)",  # another machine's pid (registry/synced.py)
                (host,)):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                dead[run_id] = ("LOST", f"process {pid} on {host} ended without recording its end")
            except PermissionError:
                pass  # alive, someone else's
        if dead:
            end_runs(self.conn, dead, source="registry")
