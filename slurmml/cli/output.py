"""What every command shares: printing rows (table, JSON or CSV), and opening the registry the way every view does."""

from __future__ import annotations

import csv
import json
import sys
from typing import Any, Iterable, Optional

import click

from slurmml.core.tables import Column


def emit(rows: list[dict], as_json: bool, as_csv: bool, columns: Iterable[Any], title: str = "") -> None:
    """Rows as JSON, CSV (every column) or a table fitted to the terminal (columns: names or tables.Column)."""
    from slurmml.cli.terminal import print_table

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


def _refreshed(sweep: Optional[str] = None) -> Any:
    """The registry, with every run's new spool records ingested first, so every view reads the same state.

    Without a registry nothing was launched yet: a command naming a sweep says there is no such sweep.
    """
    from slurmml.home import slurmml_home
    from slurmml.launcher.sweep_lookup import unknown_sweep
    from slurmml.registry.registry import Registry
    from slurmml.registry.store import default_registry_path

    if sweep is not None and not default_registry_path().exists():
        raise unknown_sweep(sweep)
    registry = Registry(create=False)
    report = registry.refresh(local_runs_dir=slurmml_home() / "runs")
    for problem in report.problems:
        click.echo(f"slurmml: warning: {problem}", err=True)
    return registry


def open_registry(run_ids: Iterable[str] = ()) -> Any:
    """The refreshed registry, after one round of the shared poller (slurmml.poller.loop.catch_up) for these runs."""
    from slurmml.poller.loop import catch_up

    registry = _refreshed()
    catch_up(registry, [], run_ids)
    return registry


def refreshed_sweeps(sweep: str) -> tuple[Any, list[str]]:
    """The refreshed registry and the sweeps SWEEP names (slurmml.launcher.sweep_lookup.sweep_ids), for a view
    that then polls on its own schedule (`slurmml watch`)."""
    from slurmml.launcher.sweep_lookup import sweep_ids

    registry = _refreshed(sweep)
    return registry, sweep_ids(registry, sweep)


def open_sweeps(sweep: str) -> tuple[Any, list[str]]:
    """refreshed_sweeps, after one round of the shared poller for their runs."""
    from slurmml.poller.loop import catch_up

    registry, ids = refreshed_sweeps(sweep)
    catch_up(registry, ids)
    return registry, ids


def open_sweep(sweep: Optional[str]) -> tuple[Any, Optional[str]]:
    """For a `--sweep` option: the refreshed registry and the one sweep id it names (None without one), after
    one round of the shared poller for its runs."""
    from slurmml.launcher.sweep_lookup import one_sweep_id
    from slurmml.poller.loop import catch_up

    registry = _refreshed(sweep)
    sweep_id = one_sweep_id(registry, sweep) if sweep else None
    catch_up(registry, [sweep_id] if sweep_id else [])
    return registry, sweep_id


def add_projections(registry: Any, rows: list[dict], metric: str) -> bool:
    """Give each active run its projected final value of `metric` (slurmml.registry.projections), in place:
    `projected`, `projected_spread` and `projected_text`. True when any run got one."""
    found = registry.projections([row["id"] for row in rows], metric)
    for row in rows:
        projection = found.get(row["id"])
        row["projected"] = projection.value if projection else None
        row["projected_spread"] = projection.spread if projection else None
        row["projected_text"] = projection.text() if projection else ""
    return bool(found)
