"""Where the TUI's data comes from: the registry (read, ingested, reconciled by the shared poller) and log files.

Every method here blocks (SQLite, files, Slurm through the poller), so the app calls them only from
background workers. Two registry connections, each with its own lock, keep a view's read from ever waiting
behind Slurm: the views read through one, held only while SQLite answers; ingest, the poller's rounds
(squeue and sacct, up to 30 s each) and the actions on runs (scancel, scontrol) go through the other.
"""

from __future__ import annotations

import getpass
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from slurmml.registry import browse, jobs
from slurmml.registry.registry import Registry
from slurmml.core.direction import RESULT, best_of, metric_mode
from slurmml.tui.model import RunRow


RECENT_S = 600.0  # after this long, an ended run's spool is not looked at again on every refresh


@dataclass
class Snapshot:
    """Everything the runs view needs, read in one go."""

    rows: list[RunRow]
    metrics: list[str]
    sweep_names: dict[str, str]
    read_at: float


@dataclass
class RefreshOutcome:
    changed: bool
    slurm_checked_at: Optional[float] = None  # when squeue last answered for this registry (any process)
    problems: list[str] = field(default_factory=list)


class RegistrySource:
    def __init__(self, registry: Any, poller: Any = None, local_runs_dir: Optional[Path] = None,
                 clock: Callable[[], float] = time.time) -> None:
        """registry: the views' connection. poller: one on its own connection to the same registry, which
        ingest and the actions on runs share (without a poller, a second connection is opened when needed)."""
        if poller is not None and poller.registry is registry:
            raise ValueError("the poller needs its own registry connection, not the views' one: a read would "
                             "wait while it asks Slurm")
        self.registry = registry
        self.poller = poller
        self.local_runs_dir = local_runs_dir
        self.clock = clock
        self.lock = threading.RLock()  # around the views' connection, only while SQLite runs
        self._updates: Optional[Any] = poller.registry if poller is not None else None
        self._updates_lock = threading.Lock()
        self._version: Optional[tuple[int, int]] = None
        self._ingested_all = False
        self.warnings: list[str] = []  # the poller's (accounting off, refused fields), shown once each
        self.user = getpass.getuser()

    @classmethod
    def open(cls, path: Optional[Path] = None, poll_interval_s: float = 10.0, poll: bool = True,
             clock: Callable[[], float] = time.time) -> "RegistrySource":
        from slurmml.home import slurmml_home
        from slurmml.poller.loop import Poller
        from slurmml.registry.registry import Registry

        source = cls(Registry(path, create=False), None, slurmml_home() / "runs", clock)
        try:
            if poll:
                source._updates = Registry(source.registry.path, create=False)
                source.poller = Poller(source._updates, squeue_interval_s=poll_interval_s,
                                       warn=source.warnings.append)
        except BaseException:
            source.close()
            raise
        return source

    def close(self) -> None:
        """Close both registry connections (the poller's too: it uses the updates one). Safe to call twice.
        Takes neither lock: at exit a refresh may still be waiting on Slurm; it then reports the closed
        connection instead of holding the exit up."""
        updates, self._updates = self._updates, None
        for registry in (updates, self.registry):
            if registry is not None:
                registry.close()

    @contextmanager
    def updating(self) -> Iterator[Any]:
        """The connection for work that may wait on Slurm (ingest, the poller, scancel), one thread at a time;
        the views' reads go on meanwhile."""
        with self._updates_lock:
            if self._updates is None:
                self._updates = Registry(self.registry.path, create=False)
            yield self._updates

    # -- the runs view --------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        with self.lock, _read_transaction(self.registry.conn) as conn:  # one consistent view, whoever writes
            self._version = browse.data_version(conn)
            runs = browse.run_list(conn)
            summaries = browse.metric_summaries(conn)
            metrics = browse.metric_names(conn)
            gpu = browse.live_gpu_util(conn)
        modes = {(name, declared): metric_mode(name, declared) for name in metrics for declared in (None, "min", "max")}
        rows, names = [], {}
        for (key, run_id, sweep_id, job_num, state, job_id, host, created, started, ended, restarts, overrides,
             parent, owner, sweep_name, result, declared) in runs:
            values = summaries.get(key, {})
            row_metrics = {name: (last, best_of({"min": low, "max": high}, modes[name, declared]))
                           for name, (last, low, high) in values.items()}
            rows.append(RunRow(run_id, sweep_id or "", job_num, state, job_id or "", host or "", created, started, ended,
                               restarts or 0, overrides, owner or "", parent or "", row_metrics, gpu.get(key), result))
            if sweep_id and sweep_name:
                names[sweep_id] = sweep_name
        return Snapshot(rows, metrics, names, self.clock())

    def refresh(self) -> RefreshOutcome:
        """Ingest new spool lines and let the shared poller ask Slurm if (and only if) its schedule allows."""
        outcome = RefreshOutcome(changed=False)
        with self.updating() as registry:  # not self.lock: the views read on while Slurm answers
            try:
                # the first refresh reads every spool; later ones only those of runs active or ended lately
                report = registry.refresh(self.local_runs_dir, recent_s=RECENT_S if self._ingested_all else None)
                self._ingested_all = True
                outcome.problems.extend(report.problems)
                if self.poller is not None:
                    polled = self.poller.poll()
                    outcome.problems.extend(polled.failed_calls)
                outcome.problems.extend(self.warnings)
                self.warnings.clear()
            except Exception as error:  # a locked or vanished registry: say so, keep showing what we have
                outcome.problems.append(f"refresh failed: {error}")
        with self.lock:
            answered = jobs.mark(self.registry, "squeue.ok")  # the last squeue that succeeded, by any process
            outcome.slurm_checked_at = answered.last if answered else None
            # the other connection's commits count in PRAGMA data_version, as another process's do
            outcome.changed = browse.data_version(self.registry.conn) != self._version
        return outcome

    def matching_ids(self, expressions: tuple[str, ...]) -> set[str]:
        with self.lock:
            return browse.matching_run_ids(self.registry.conn, expressions)

    # -- one run ----------------------------------------------------------------------------------------
    def run_detail(self, run_id: str) -> dict[str, Any]:
        with self.lock:
            run = self.registry.run(run_id)
            job = self.registry.job_records([run["slurm_job_id"]]).get(run["slurm_job_id"]) if run.get("slurm_job_id") else None
            with_sweep = self.registry.run_with_sweep(run_id)
            run["gpu"] = browse.gpu_series(self.registry.conn, run_id)
            # live controls: the history, and the applied ones' steps that the metric plots mark
            run["controls"] = self.registry.controls(run_id=run_id, now=self.clock())
            run["control_marks"] = self.registry.control_marks([run_id]).get(run_id, [])
        run["job"] = job
        run["owner"] = with_sweep["owner"]
        run["backend"] = with_sweep["backend"] or "local"  # a plain-script run has no sweep
        return run

    def curves(self, run_ids: list[str], metrics: list[str], max_points: int = 300) -> dict[str, dict[str, list[tuple]]]:
        """metric -> run id -> downsampled (step, value) points."""
        with self.lock:
            return {name: self.registry.curves(run_ids, name, max_points) for name in metrics}

    def configs(self, run_ids: list[str]) -> list[dict[str, Any]]:
        with self.lock:
            return browse.config_maps(self.registry.conn, run_ids)

    def leaderboard(self, metric: str, mode: Optional[str], sweep: Optional[str], group_key: Optional[str],
                    limit: int = 50) -> tuple[str, list[dict[str, Any]]]:
        """(the mode ranked by: `mode`, or slurmml.core.direction's with the sweep's declared direction, the rows)."""
        with self.lock:
            mode = metric_mode(metric, browse.sweep_direction(self.registry.conn, sweep), mode)
            return mode, browse.leaderboard(self.registry.conn, metric, mode, sweep, group_key, limit)

    def has_config_key(self, key: str) -> bool:
        with self.lock:
            return browse.config_key_exists(self.registry.conn, key)

    def metric_names(self) -> list[str]:
        """Logged metric names, after `result` when any run recorded one."""
        with self.lock:
            return [RESULT] * browse.has_results(self.registry.conn) + browse.metric_names(self.registry.conn)

    def sweeps(self) -> list[dict[str, Any]]:
        with self.lock:
            return self.registry.sweeps()


@contextmanager
def _read_transaction(conn: Any) -> Iterator[Any]:
    """Several SELECTs that see the registry as of one moment (the connection is in autocommit mode)."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


def log_paths(run: dict[str, Any]) -> dict[str, Optional[str]]:
    """stdout and stderr of a run from the path the launcher recorded (Slurm: <job>_0_log.err; local: <i>.err)."""
    err = run.get("log_path")
    if not err:
        return {"stdout": None, "stderr": None}
    out = err[:-4] + ".out" if err.endswith(".err") else None
    return {"stdout": out, "stderr": err}


def log_sizes(paths: dict[str, Optional[str]]) -> dict[str, int]:
    """Bytes in each stream's file (0 when there is none yet)."""
    sizes = {}
    for stream, path in paths.items():
        try:
            sizes[stream] = os.path.getsize(path) if path else 0
        except OSError:
            sizes[stream] = 0
    return sizes


class LogTail:
    """Follows a file as it grows: the last `initial_bytes` first, then whatever was appended since."""

    def __init__(self, path: Optional[str], initial_bytes: int = 64 * 1024) -> None:
        self.path = path
        self.offset: Optional[int] = None
        self.initial_bytes = initial_bytes

    def read_new(self) -> tuple[str, bool]:
        """(new text, whether the file was truncated or replaced and the view should start over)."""
        if not self.path:
            return "", False
        try:
            size = os.path.getsize(self.path)
        except OSError:
            return "", False
        restart = self.offset is not None and size < self.offset  # rewritten (e.g. a requeued job's log)
        if self.offset is None or restart:
            self.offset = max(0, size - self.initial_bytes)
        if size == self.offset:
            return "", restart
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read(size - self.offset)
        self.offset = size
        return data.decode("utf-8", errors="replace"), restart
