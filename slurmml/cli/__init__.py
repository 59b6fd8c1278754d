"""The `slurmml` command. Imports stay inside commands so `slurmml --help` starts fast."""

from __future__ import annotations

import csv
import json
import sys
from typing import Any, Iterable

import click

from slurmml import __version__
from slurmml.errors import SlurmmlError
from slurmml.core.tables import Column


class _Group(click.Group):
    """Turn SlurmmlError into one line on stderr and exit code 1, at the boundary."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SlurmmlError as error:
            click.echo(f"slurmml: {error}", err=True)
            ctx.exit(1)


def _emit(rows: list[dict], as_json: bool, as_csv: bool, columns: Iterable[Any], title: str = "") -> None:
    """Rows as JSON, CSV (every column) or a table fitted to the terminal (columns: names or tables.Column)."""
    from slurmml.core.tables import print_table

    columns = list(columns)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif as_csv:
        keys = [c.key if isinstance(c, Column) else c for c in columns]
        writer = csv.DictWriter(sys.stdout, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    else:
        print_table(columns, rows, title)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="slurmml")
def main() -> None:
    """Launch, track and watch Hydra sweeps on Slurm.

    Launch a sweep with `python train.py -m hydra/launcher=slurmml ...`
    (or `hydra/launcher=slurmml_local` on a machine without Slurm).
    """


def _add_commands() -> None:
    from slurmml.cli.actions import cancel, clone, requeue
    from slurmml.cli.report import report
    from slurmml.cli.tui import tui
    from slurmml.cli.watch import watch

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
        from slurmml.core.tables import print_fields

        print_fields(facts.items())


@main.command()
@click.argument("sweep")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per task.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
def status(sweep: str, as_json: bool, as_csv: bool) -> None:
    """Where each task of SWEEP (a sweep id or directory) stands, as the shared poller last saw it."""
    from slurmml.launcher.sweep_lookup import counts, resolve_sweep, sweep_record
    from slurmml.core.tables import print_text

    state_dirs = resolve_sweep(sweep)
    registry = _registry([sweep_record(state_dir)["sweep_id"] for state_dir in state_dirs])
    columns = ["sweep_id", Column("job_num", "#"), Column("slurm_job_id", "job", priority=3), "state",
               Column("error", priority=1, wrap=True), Column("log_path", "log", priority=2, wrap=True)]
    all_rows: list[dict] = []
    for state_dir in state_dirs:
        record = sweep_record(state_dir)
        rows = [{**row, "error": _last_line(row["error"])} for row in registry.runs(sweep=record["sweep_id"])]
        all_rows.extend(rows)
        if not (as_json or as_csv):
            tally = "  ".join(f"{state}={n}" for state, n in counts(rows).items())
            print_text(f"sweep {record['sweep_id']}  {record['dir']}  {tally}")
            _emit(rows, False, False, columns[1:])
    if as_json or as_csv:
        _emit(all_rows, as_json, as_csv, columns)


def _last_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else ""


def _registry(sweep_ids: Iterable[str | None] = (), run_ids: Iterable[str] = ()) -> Any:
    """The registry, with every run's new spool records ingested first (so every view reads the same state),
    then one round of the shared poller (slurmml.poller.loop.catch_up) for the runs the command shows."""
    from slurmml.home import slurmml_home
    from slurmml.poller.loop import catch_up
    from slurmml.registry.registry import Registry

    registry = Registry(create=False)
    report = registry.refresh(local_runs_dir=slurmml_home() / "runs")
    for problem in report.problems:
        click.echo(f"slurmml: warning: {problem}", err=True)
    catch_up(registry, [s for s in sweep_ids if s], run_ids)
    return registry


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
def sweeps(as_json: bool, as_csv: bool) -> None:
    """Every sweep in the registry, with its run counts."""
    rows = _registry().sweeps()
    _emit(rows, as_json, as_csv, ["id", Column("name", priority=1, wrap=True), Column("backend", priority=3), "runs",
                                  "completed", "failed", "active", Column("sweep_dir", priority=2, wrap=True)])


@main.command()
@click.option("--sweep", help="Only this sweep's runs.")
@click.option("--where", "where", multiple=True, help="Filter, e.g. 'lr<0.01', 'model=mlp', 'val_acc>0.9' (repeatable).")
@click.option("--sort", help="Sort key: a metric or 'result' best first, other keys ascending; '-'/'+' for "
                             "descending/ascending: 'val_loss', '-val_acc', 'job_num'.")
@click.option("--limit", type=int, help="At most this many runs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
def runs(sweep: str | None, where: tuple[str, ...], sort: str | None, limit: int | None, as_json: bool, as_csv: bool) -> None:
    """Runs with their state, their result (the task's numeric return value) and the last value of each logged
    metric."""
    from slurmml.registry.registry import RUN_FIELDS
    from slurmml.launcher.sweep_lookup import unknown_sweep

    registry = _registry([sweep])
    if sweep and not registry.has_sweep(sweep):
        raise unknown_sweep(sweep)
    rows = registry.runs(sweep=sweep, where=where, sort=sort, limit=limit)
    metrics = sorted({k for row in rows for k in row} - set(RUN_FIELDS))
    if any(row["result"] is not None for row in rows):
        metrics.insert(0, "result")
    sorted_by = (sort or "").lstrip("+-")  # the metric runs are sorted by stays when others are hidden
    _emit(rows, as_json, as_csv, [*_RUN_COLUMNS, *(Column(m, priority=1 if m == sorted_by else 4) for m in metrics)])


# what narrow terminals hide first: the Slurm job id, then metrics (but the sorted one), then overrides
_RUN_COLUMNS = ["id", "state", Column("slurm_job_id", "job", priority=5), Column("overrides", priority=2, wrap=True)]


@main.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(run_id: str, as_json: bool) -> None:
    """Everything recorded about one run: config, overrides, result, Slurm facts, state history, metric summaries
    (with each metric's best: slurmml.core.direction), logged params."""
    from slurmml.core.direction import metric_mode

    run = _registry(run_ids=[run_id]).run(run_id)
    for name, summary in run["metrics"].items():
        summary["best"] = summary["min"] if metric_mode(name, run["direction"]) == "min" else summary["max"]
    if as_json:
        click.echo(json.dumps(run, indent=2, default=str))
        return
    from rich.pretty import Pretty

    from slurmml.core.states import state_path
    from slurmml.core.tables import console, print_fields

    out = console()
    fields = [(key, run.get(key)) for key in ("id", "sweep_id", "job_num", "state", "exit_code", "result", "error",
                                               "slurm_job_id", "host", "run_dir", "log_path", "restarts")]
    fields += [("overrides", " ".join(run.get("overrides") or [])),
               ("states", state_path(run["states"]))]
    print_fields(fields, out)
    if run["metrics"]:
        _emit([{"metric": name, **summary} for name, summary in run["metrics"].items()], False, False,
              ["metric", "last", Column("best", priority=1), Column("last_step", "step", priority=2),
               Column("min", priority=2), Column("max", priority=2), Column("count", priority=3)], "metrics")
    if run["params"]:
        _emit([{"param": key, "value": value if isinstance(value, str) else json.dumps(value)}
               for key, value in run["params"].items()], False, False, ["param", Column("value", wrap=True)], "params")
    if run.get("config"):
        out.print(Pretty(run["config"]))  # a repr, not markup


_add_commands()
