"""`slurmml watch SWEEP`: follow a sweep in the terminal until every run has ended, then summarize it.

What it follows (slurmml.report.progress) reads the registry about once a second and asks Slurm only through
the shared poller; this module shows it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import click

if TYPE_CHECKING:
    from slurmml.report.progress import Snapshot


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

    from slurmml.cli.output import refreshed_sweeps
    from slurmml.poller.loop import Poller
    from slurmml.report.progress import follow

    registry, ids = refreshed_sweeps(sweep)  # polled below, on this command's --interval
    display = _Display(" ".join(ids), stderr_is_terminal=sys.stderr.isatty())
    poller = Poller(registry, squeue_interval_s=interval, warn=display.warn)
    try:
        with display:
            final = follow(registry, ids, poller, metric=metric, mode=mode, on_update=display.update)
    except KeyboardInterrupt:
        click.echo(f"\nslurmml: stopped watching; the jobs keep running (slurmml status {sweep})", err=True)
        sys.exit(130)
    print_summary(registry, ids, final, metric, mode)


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


def print_summary(registry: Any, ids: list[str], current: Snapshot, metric: Optional[str] = None,
                  mode: Optional[str] = None) -> None:
    """Per-state counts and the best run, then the tables of `slurmml report` for each
    sweep, whose failures by cause say why each run that did not complete ended."""
    from slurmml.cli.report import print_tables
    from slurmml.cli.terminal import print_text  # wrapped to the terminal, plain text
    from slurmml.core.tables import GLUE
    from slurmml.report.collect import build_report

    tally = "  ".join(f"{state}{GLUE}{count}" for state, count in sorted(current.states.items()))
    print_text(f"sweep {' '.join(ids)}: {current.total} run(s) ended: {tally}")
    if current.best is not None:
        best = current.best
        overrides = best["overrides"]  # one string, as browse.leaderboard gives it
        print_text(f"  best {current.metric} {best['value']:.6g}: run {best['id']} (#{best['job_num']}"
                   f"{' ' + overrides if overrides else ''})")
    for sweep in ids:
        print_tables(build_report(registry, sweep=sweep, metric=metric, mode=mode))
