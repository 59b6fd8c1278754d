"""`slurmml watch SWEEP`: follow a sweep in the terminal until every run has ended, then summarize it.

Slurm is asked only through the shared poller (slurmml.poller.loop), whose schedule lives in the registry:
however many watchers and TUIs follow the same registry, squeue runs once per interval in all. The
display itself reads the registry about once a second.
"""

from __future__ import annotations

import click

TICK_S = 1.0
SHOW_UNFINISHED = 20


@click.command()
@click.argument("sweep")
@click.option("--metric", help="Show the best value of this metric, or of `result` (default: the result when runs "
                               "returned one, else the first metric the sweep logged).")
@click.option("--mode", type=click.Choice(["max", "min"]),
              help="Whether the best value is the largest or the smallest (default: the direction the sweep "
                   "declared for its result, else from the metric's name: min for loss/error-like names).")
@click.option("--interval", type=float, default=10.0, show_default=True,
              help="Seconds between squeue calls, shared with every other view of the registry (at least 5).")
def watch(sweep: str, metric: str | None, mode: str | None, interval: float) -> None:
    """Follow SWEEP (a sweep id or directory) until every run has ended, then print a summary.

    A progress bar shows queued, running, done and failed runs and the best metric so far.
    Ctrl-C stops watching; the jobs keep running.
    """
    import sys

    from slurmml.poller.loop import Poller
    from slurmml.registry.registry import Registry

    registry = Registry(create=False)
    ids = sweep_ids(registry, sweep)
    display = _Display(" ".join(ids), stderr_is_terminal=sys.stderr.isatty())
    poller = Poller(registry, squeue_interval_s=interval, warn=display.warn)
    try:
        with display:
            final = follow(registry, ids, poller, metric=metric, mode=mode, on_update=display.update)
    except KeyboardInterrupt:
        click.echo(f"\nslurmml: stopped watching; the jobs keep running (slurmml status {sweep})", err=True)
        sys.exit(130)
    print_summary(registry, ids, final, metric, mode)


def sweep_ids(registry, sweep: str) -> list[str]:
    """A sweep id known to the registry, or every sweep launched into a directory."""
    from pathlib import Path

    from slurmml.errors import SlurmmlError

    if registry.conn.execute("SELECT 1 FROM sweeps WHERE id = ?", (sweep,)).fetchone():
        return [sweep]
    path = Path(sweep).expanduser()
    if path.is_dir():
        names = {str(path.absolute()), str(path.resolve())}
        rows = registry.conn.execute(
            f"SELECT id FROM sweeps WHERE sweep_dir IN ({','.join('?' * len(names))}) ORDER BY created", list(names))
        found = [row[0] for row in rows]
        if found:
            return found
    raise SlurmmlError(f"no sweep '{sweep}' in {registry.path}: give a sweep id (slurmml sweeps) or a sweep directory")


class Snapshot:
    """Where a sweep stands: run counts by state and the best metric value so far."""

    def __init__(self, states: dict[str, int], metric: str | None, best: dict | None) -> None:
        from slurmml.core.states import NOT_STARTED_STATES, SUCCESS_STATE, is_failed

        self.states = states
        self.total = sum(states.values())
        self.queued = sum(states.get(s, 0) for s in NOT_STARTED_STATES)
        self.running = states.get("RUNNING", 0)
        self.done = states.get(SUCCESS_STATE, 0)
        self.failed = sum(n for s, n in states.items() if is_failed(s))
        self.finished = self.done + self.failed
        self.metric, self.best = metric, best

    @property
    def all_final(self) -> bool:
        return self.finished == self.total

    def line(self) -> str:
        text = f"queued {self.queued}  running {self.running}  done {self.done}  failed {self.failed}"
        if self.best is not None:
            text += f"  best {self.metric} {self.best['value']:.6g} (#{self.best['job_num']})"
        return text


def snapshot(registry, ids: list[str], metric: str | None = None, mode: str | None = None) -> Snapshot:
    """Counts by state, and the best run so far (never a failed one) by `metric`, by default the one
    slurmml.core.direction.default_metric picks; best as slurmml.core.direction says."""
    from slurmml.core.direction import default_metric, metric_mode, shared_direction

    marks = ",".join("?" * len(ids))
    states = dict(registry.conn.execute(
        f"SELECT state, count(*) FROM runs WHERE sweep_id IN ({marks}) GROUP BY state", ids).fetchall())
    declared = shared_direction(registry.sweep_direction(sweep) for sweep in ids)
    if metric is None:
        has_result = registry.conn.execute(
            f"SELECT 1 FROM runs WHERE sweep_id IN ({marks}) AND result IS NOT NULL LIMIT 1", ids).fetchone()
        logged = dict(registry.conn.execute(
            f"SELECT k.name, count(*) FROM metric_summary s JOIN metric_keys k USING (key) JOIN runs r USING (run) "
            f"WHERE r.sweep_id IN ({marks}) GROUP BY k.name", ids).fetchall())
        metric = default_metric(logged, bool(has_result), declared)
    best = None
    if metric is not None:
        mode = metric_mode(metric, declared, mode)
        candidates = [row for sweep in ids for row in registry.best(metric, mode, sweep=sweep, limit=1)
                      if row["value"] is not None and row["value"] == row["value"]]  # not NaN
        if candidates:
            best = (max if mode == "max" else min)(candidates, key=lambda row: row["value"])
    return Snapshot(states, metric, best)


def follow(registry, ids: list[str], poller, metric: str | None = None, mode: str | None = None, on_update=None,
           sleep=None, tick_s: float = TICK_S) -> Snapshot:
    """Ingest, poll (only as often as the shared schedule allows) and take a snapshot, until every run is final."""
    import time

    sleep = sleep or time.sleep
    from slurmml.registry.jobs import slurm_run_ids

    shown = slurm_run_ids(registry, ids)  # their sacct records are fetched too, however old
    while True:
        for sweep in ids:
            registry.ingest(sweep)
        report = poller.poll(wanted=shown)
        current = snapshot(registry, ids, metric, mode)
        if on_update is not None:
            on_update(current, report)
        if current.all_final:
            return current
        sleep(tick_s)


class _Display:
    """A Rich progress bar on stderr when it is a terminal; otherwise a line each time the counts change."""

    def __init__(self, title: str, stderr_is_terminal: bool) -> None:
        self.title, self.live = title, stderr_is_terminal
        self._progress = None
        self._task = None
        self._last = ""
        self._trouble = ""  # the last Slurm call that failed, until one answers again

    def __enter__(self) -> "_Display":
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            from rich.table import Column

            # on a narrow terminal the counts are cut short, not the bar
            line = TextColumn("{task.fields[line]}", markup=False,
                              table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis"))
            title = TextColumn("{task.description}", markup=False, style="bold")  # sweep ids: plain text
            self._progress = Progress(title, BarColumn(bar_width=24), MofNCompleteColumn(), TimeElapsedColumn(), line,
                                      console=Console(stderr=True), expand=True)
            self._progress.start()
            self._task = self._progress.add_task(self.title, total=None, line="")
        return self

    def warn(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(f"slurmml: warning: {message}", markup=False, highlight=False)
        else:
            click.echo(f"slurmml: warning: {message}", err=True)

    def update(self, current: Snapshot, report=None) -> None:
        if report is not None and report.failed_calls:
            self._trouble = report.failed_calls[-1]
        elif report is not None and report.answered:
            self._trouble = ""
        line = current.line() + (f"  [{self._trouble}]" if self._trouble else "")
        if self._progress is not None:
            self._progress.update(self._task, total=current.total or None, completed=current.finished, line=line)
        elif line != self._last:
            click.echo(f"sweep {self.title}: {current.finished}/{current.total} ended; {line}", err=True)
        self._last = line

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()


def print_summary(registry, ids: list[str], current: Snapshot, metric: str | None = None,
                  mode: str | None = None) -> None:
    """Per-state counts, the best run, and why each run that did not complete ended."""
    from slurmml.core.tables import GLUE, print_text  # wrapped to the terminal, plain text

    tally = "  ".join(f"{state}{GLUE}{count}" for state, count in sorted(current.states.items()))
    print_text(f"sweep {' '.join(ids)}: {current.total} run(s) ended: {tally}")
    if current.best is not None:
        best = current.best
        overrides = best["overrides"]  # one string, as browse.leaderboard gives it
        print_text(f"  best {current.metric} {best['value']:.6g}: run {best['id']} (#{best['job_num']}"
                   f"{' ' + overrides if overrides else ''})")
    if _print_report(registry, ids, metric, mode):
        return
    unfinished = [run for sweep in ids for run in registry.runs(sweep=sweep) if run["state"] != "COMPLETED"]
    for run in unfinished[:SHOW_UNFINISHED]:
        error = registry.conn.execute("SELECT error FROM runs WHERE id = ?", (run["id"],)).fetchone()[0] or ""
        lines = error.strip().splitlines()
        why = (lines[-1] if lines[0].startswith("Traceback") else lines[0]) if lines else ""
        label = f"#{run['job_num']} {run['overrides']}".rstrip()
        click.echo(f"  {label}: {run['state']}" + (f" ({why})" if why else ""))
    if len(unfinished) > SHOW_UNFINISHED:
        click.echo(f"  ... and {len(unfinished) - SHOW_UNFINISHED} more (slurmml runs --sweep SWEEP)")


def _print_report(registry, ids: list[str], metric: str | None, mode: str | None) -> bool:
    """The tables of `slurmml report` for each sweep (when this installation has slurmml.report.collect)."""
    try:
        from slurmml.cli.report import _print_tables
        from slurmml.report.collect import build_report
    except ImportError:
        return False
    for sweep in ids:
        _print_tables(build_report(registry, sweep=sweep, metric=metric, mode=mode))
    return True
