"""The `slurmml` command. Imports stay inside commands so `slurmml --help` starts fast."""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict
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
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(str(row.get(c, "")) for c in columns))
        Console().print(table)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="slurmml")
def main() -> None:
    """Launch, track and watch Hydra sweeps on Slurm.

    Launch a sweep with `python train.py -m hydra/launcher=slurmml ...`
    (or `hydra/launcher=slurmml_local` on a machine without Slurm).
    """


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

    facts = {
        "version": __version__,
        "home": str(slurmml_home()),
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
    """Where each task of SWEEP (a sweep id or directory) stands, from one Slurm call."""
    from slurmml.sweeps import counts, resolve_sweep, sweep_record, task_rows

    columns = ["sweep_id", "job_num", "job_id", "state", "detail", "log"]
    all_rows: list[dict] = []
    for state_dir in resolve_sweep(sweep):
        record = sweep_record(state_dir)
        rows, warning = task_rows(state_dir)
        if warning:
            click.echo(f"slurmml: warning: {warning}", err=True)
        dicts = [{"sweep_id": record["sweep_id"], **asdict(r)} for r in rows]
        all_rows.extend(dicts)
        if not (as_json or as_csv):
            tally = "  ".join(f"{state}={n}" for state, n in counts(rows).items())
            _emit(dicts, False, False, columns[1:], f"sweep {record['sweep_id']}  {record['dir']}  {tally}")
    if as_json or as_csv:
        _emit(all_rows, as_json, as_csv, columns)
