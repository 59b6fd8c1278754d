"""`slurmml lineage` and `slurmml leaderboard`: which data and which runs made which results."""

from __future__ import annotations

import json
from typing import Optional

import click

from slurmml.cli.output import emit, open_registry, open_sweep
from slurmml.core.tables import Column
from slurmml.errors import SlurmmlError

_USER_COLUMNS = [Column("dataset", priority=1), "id", "state", Column("sweep_id", "sweep", priority=3),
                 Column("host", priority=4), Column("artifacts", priority=2, wrap=True)]


def _dataset_and_version(spec: str) -> tuple[str, Optional[int]]:
    """'digits' -> ('digits', None); 'digits@v2' or 'digits@2' -> ('digits', 2). Aliases name versions in the
    store, not in the registry: they are resolved there (slurmml.storage.datasets)."""
    from slurmml.core.manifest import parse_spec

    parsed = parse_spec(spec)
    if parsed.alias is not None and parsed.alias != "latest":
        from slurmml.storage.datasets import resolve
        from slurmml.storage.s3 import open_store

        return parsed.name, resolve(open_store(), spec).version
    return parsed.name, parsed.version


@click.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (the runs that used a dataset, or a run's inputs "
                                                     "and outputs one per line).")
def lineage(target: str, as_json: bool, as_csv: bool) -> None:
    """What a run used and produced, or which runs used a dataset.

    TARGET is a run id, or a dataset NAME[@VERSION]: a run shows the dataset versions it read (and their manifest
    digests), the artifacts it produced, the run it was cloned from and its clones; a dataset shows every run that
    read it (each version, or the one named) and what those runs produced.
    """
    from slurmml.registry import lineage as reads

    registry = open_registry()
    if reads.is_run(registry.conn, target):
        _show_run(reads.run_lineage(registry.conn, target), as_json, as_csv)
        return
    name, version = _dataset_and_version(target)
    users = reads.dataset_users(registry.conn, name, version)
    if not users and not reads.used_versions(registry.conn, name):
        raise SlurmmlError(f"{target!r} is neither a run in the registry nor a dataset any run used")
    rows = [{**user, "dataset": f"{name}@v{user['version']}", "artifacts": ", ".join(user["artifacts"])}
            for user in users]
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    emit(rows, False, as_csv, _USER_COLUMNS, "" if as_csv else f"runs that used {target}")


def _show_run(run: dict, as_json: bool, as_csv: bool) -> None:
    if as_json:
        click.echo(json.dumps(run, indent=2, default=str))
        return
    edges = [{"relation": "used", "what": f"{i['dataset']}@v{i['version']}", "detail": i["digest"]}
             for i in run["inputs"]]
    edges += [{"relation": "produced", "what": a["name"], "detail": a["uri"] or a["path"]} for a in run["artifacts"]]
    if run["parent"]:
        parent = run["parent"]
        edges.append({"relation": "cloned from", "what": parent["id"], "detail": _inputs_text(parent.get("inputs"))})
    edges += [{"relation": "cloned as", "what": child["id"], "detail": _inputs_text(child["inputs"])}
              for child in run["children"]]
    columns = ["relation", Column("what", wrap=True), Column("detail", priority=1, wrap=True)]
    if as_csv:
        emit(edges, False, True, columns)
        return
    from slurmml.cli.terminal import print_text

    print_text(f"run {run['id']}  {run['state']}  {run['host'] or ''}".rstrip())
    if edges:
        emit(edges, False, False, columns)
    else:
        print_text("no recorded inputs, artifacts, parent or clones")


def _inputs_text(inputs: Optional[list[dict]]) -> str:
    return ", ".join(f"{i['dataset']}@v{i['version']}" for i in inputs or []) or "-"


@click.command()
@click.argument("metric")
@click.option("--sweep", help="Only this sweep's runs.")
@click.option("--by-dataset", is_flag=True, help="Rank within each dataset version the runs read.")
@click.option("--dataset", "dataset_spec", metavar="NAME[@V]", help="Only runs that read this dataset (version).")
@click.option("--group", "group_key", metavar="KEY", help="Rank within each value of this config key.")
@click.option("--mode", type=click.Choice(["min", "max"]), help="Lowest or highest first (default: the metric's "
                                                                "direction).")
@click.option("--limit", type=int, default=20, show_default=True, help="Runs per group.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
def leaderboard(metric: str, sweep: Optional[str], by_dataset: bool, dataset_spec: Optional[str],
                group_key: Optional[str], mode: Optional[str], limit: int, as_json: bool, as_csv: bool) -> None:
    """Runs ranked by METRIC (or `result`), best first; failed runs never rank.

    With --by-dataset, one ranking per dataset version (a leaderboard for each dataset); with --dataset, only the
    runs that read that dataset or version.
    """
    from slurmml.registry.browse import BY_DATASET, leaderboard as rank

    if by_dataset and group_key:
        raise click.UsageError("give --by-dataset or --group, not both")
    registry, sweep_id = open_sweep(sweep)
    dataset = _dataset_and_version(dataset_spec) if dataset_spec else None
    group = BY_DATASET if by_dataset else group_key
    rows = rank(registry.conn, metric, mode, sweep_id, group, limit, dataset)
    if not rows and metric not in registry.metric_names() and metric != "result":
        raise SlurmmlError(f"no run logged {metric!r} ({', '.join(sorted(registry.metric_names())) or 'none'})")
    label = "dataset" if by_dataset else group_key
    from slurmml.cli.output import add_projections

    projected = add_projections(registry, rows, metric) if metric != "result" else False
    columns = [Column("rank", "#"), *([Column("group", label)] if group else []), "id", Column("value", metric),
               *([Column("projected_text", "projected", priority=2)] if projected else []),
               Column("step", priority=2), Column("state", priority=3), Column("overrides", priority=1, wrap=True)]
    emit(rows, as_json, as_csv, columns)

