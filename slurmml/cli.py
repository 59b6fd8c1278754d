"""The `slurmml` command. Imports stay inside commands so `slurmml --help` starts fast."""

from __future__ import annotations

import csv
import json
import sys
from typing import Any, Iterable

import click

from slurmml import __version__
from slurmml.errors import SlurmmlError


class _Group(click.Group):
    """Turn SlurmmlError into one line on stderr and exit code 1, at the boundary."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SlurmmlError as error:
            click.echo(f"slurmml: {error}", err=True)
            ctx.exit(1)


def _emit(rows: list[dict], as_json: bool, as_csv: bool, columns: Iterable[str], title: str = "") -> None:
    columns = list(columns)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title or None)
        for number, column in enumerate(columns):
            table.add_column(column, no_wrap=number == 0)  # ids are for copying: keep them whole
        for row in rows:
            table.add_row(*(_cell(row.get(c)) for c in columns))
        Console().print(table)


def _cell(value: Any) -> str:
    """Table cells: short numbers, blanks for unknown (JSON and CSV keep full values)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="slurmml")
def main() -> None:
    """Launch, track and watch Hydra sweeps on Slurm.

    Launch a sweep with `python train.py -m hydra/launcher=slurmml ...`
    (or `hydra/launcher=slurmml_local` on a machine without Slurm).
    """


def _add_commands() -> None:
    from slurmml.cli_actions import cancel, clone, requeue
    from slurmml.cli_report import report
    from slurmml.cli_tui import tui
    from slurmml.cli_watch import watch

    main.add_command(report)
    main.add_command(tui)
    main.add_command(watch)
    for command in (cancel, requeue, clone):
        main.add_command(command)


@main.group()
def cluster() -> None:
    """A real single-node Slurm on this machine, for development and tests (Debian, root)."""


def _devcluster(action: str) -> None:
    from slurmml.devcluster import run

    sys.exit(run(action))


@cluster.command()
def up() -> None:
    """Install (if needed) and start munge, MariaDB, slurmdbd, slurmctld and slurmd. A no-op when up."""
    _devcluster("up")


@cluster.command()
def down() -> None:
    """Stop exactly what `up` started."""
    _devcluster("down")


@cluster.command(name="status")
def cluster_status() -> None:
    """Say which daemons run and the node's state; exit 0 only when the whole cluster is up."""
    _devcluster("status")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(as_json: bool) -> None:
    """Where slurmml keeps its state, and what it found on this machine."""
    from slurmml.home import slurmml_home
    from slurmml.launcher.templates import shipped_templates
    from slurmml.slurm.commands import available

    from slurmml.registry.store import default_registry_path

    facts = {
        "version": __version__,
        "home": str(slurmml_home()),
        "registry": str(default_registry_path()),
        "sbatch": "found" if available("sbatch") else "not found (use hydra/launcher=slurmml_local)",
        "templates": ", ".join(shipped_templates()),
    }
    if as_json:
        click.echo(json.dumps(facts, indent=2))
    else:
        for key, value in facts.items():
            click.echo(f"{key:>10}: {value}")


@main.command()
@click.argument("sweep")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per task.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
def status(sweep: str, as_json: bool, as_csv: bool) -> None:
    """Where each task of SWEEP (a sweep id or directory) stands, as the shared poller last saw it."""
    from slurmml.poller import Poller
    from slurmml.sweeps import counts, resolve_sweep, sweep_record

    registry = _registry()
    Poller(registry).poll()  # one round, if the shared schedule allows a Slurm call now
    columns = ["sweep_id", "job_num", "slurm_job_id", "state", "error", "log_path"]
    all_rows: list[dict] = []
    for state_dir in resolve_sweep(sweep):
        record = sweep_record(state_dir)
        rows = [{**row, "error": _last_line(row["error"])} for row in registry.runs(sweep=record["sweep_id"])]
        all_rows.extend(rows)
        if not (as_json or as_csv):
            tally = "  ".join(f"{state}={n}" for state, n in counts(rows).items())
            _emit(rows, False, False, columns[1:], f"sweep {record['sweep_id']}  {record['dir']}  {tally}")
    if as_json or as_csv:
        _emit(all_rows, as_json, as_csv, columns)


def _last_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else ""


def _registry() -> Any:
    """The registry, with every run's new spool records ingested first (so every view reads the same state)."""
    from slurmml.home import slurmml_home
    from slurmml.registry.registry import Registry

    registry = Registry(create=False)
    report = registry.refresh(local_runs_dir=slurmml_home() / "runs")
    for problem in report.problems:
        click.echo(f"slurmml: warning: {problem}", err=True)
    return registry


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
def sweeps(as_json: bool, as_csv: bool) -> None:
    """Every sweep in the registry, with its run counts."""
    rows = _registry().sweeps()
    _emit(rows, as_json, as_csv, ["id", "name", "backend", "runs", "completed", "failed", "sweep_dir"])


@main.command()
@click.option("--sweep", help="Only this sweep's runs.")
@click.option("--where", "where", multiple=True, help="Filter, e.g. 'lr<0.01', 'model=mlp', 'val_acc>0.9' (repeatable).")
@click.option("--sort", help="Sort key, '-' for descending: '-val_acc', 'job_num'.")
@click.option("--limit", type=int, help="At most this many runs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
def runs(sweep: str | None, where: tuple[str, ...], sort: str | None, limit: int | None, as_json: bool, as_csv: bool) -> None:
    """Runs with their state and the last value of each logged metric."""
    from slurmml.registry.registry import RUN_FIELDS

    rows = _registry().runs(sweep=sweep, where=where, sort=sort, limit=limit)
    metrics = sorted({k for row in rows for k in row} - set(RUN_FIELDS))
    _emit(rows, as_json, as_csv, [*_RUN_COLUMNS, *metrics])


_RUN_COLUMNS = ["id", "state", "slurm_job_id", "overrides"]



@main.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(run_id: str, as_json: bool) -> None:
    """Everything recorded about one run: config, overrides, Slurm facts, state history, metric summaries."""
    run = _registry().run(run_id)
    if as_json:
        click.echo(json.dumps(run, indent=2, default=str))
        return
    from rich.console import Console
    from rich.pretty import Pretty

    console = Console()
    for key in ("id", "sweep_id", "job_num", "state", "exit_code", "error", "slurm_job_id", "host", "run_dir",
                "log_path", "restarts"):
        console.print(f"[bold]{key:>12}[/]: {run.get(key)}")
    console.print(f"[bold]{'overrides':>12}[/]: {' '.join(run.get('overrides') or [])}")
    console.print(f"[bold]{'states':>12}[/]: " + " -> ".join(s["state"] for s in run["states"]))
    if run["metrics"]:
        _emit([{"metric": name, **summary} for name, summary in run["metrics"].items()], False, False,
              ["metric", "last", "last_step", "min", "max", "count"], "metrics")
    if run.get("config"):
        console.print(Pretty(run["config"]))


_add_commands()
