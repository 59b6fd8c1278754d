"""`slurmml info`, `status`, `sweeps`, `runs` and `show`: what the registry holds, as tables, JSON or CSV."""

from __future__ import annotations

import json

import click

from slurmml.cli.output import emit, open_registry, open_sweep, open_sweeps
from slurmml.core.tables import Column

# what narrow terminals hide first: the Slurm job id, then metrics (but the sorted one), then overrides
_RUN_COLUMNS = ["id", "state", Column("slurm_job_id", "job", priority=5), Column("overrides", priority=2, wrap=True)]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(as_json: bool) -> None:
    """Where slurmml keeps its state, and what it found on this machine."""
    from slurmml import __version__
    from slurmml.home import slurmml_home
    from slurmml.launcher.templates import shipped_templates
    from slurmml.registry.store import default_registry_path
    from slurmml.slurm.commands import available

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
        from slurmml.cli.terminal import print_fields

        print_fields(facts.items())


@click.command()
@click.argument("sweep")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per task.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
def status(sweep: str, as_json: bool, as_csv: bool) -> None:
    """Where each task of SWEEP (a sweep id or directory) stands, as the shared poller last saw it."""
    from slurmml.cli.terminal import print_text
    from slurmml.core.text import error_line
    from slurmml.launcher.sweep_lookup import counts

    registry, ids = open_sweeps(sweep)
    folders = {row["id"]: row["sweep_dir"] for row in registry.sweeps()}
    columns = ["sweep_id", Column("job_num", "#"), Column("slurm_job_id", "job", priority=3), "state",
               Column("error", priority=1, wrap=True), Column("log_path", "log", priority=2, wrap=True)]
    all_rows: list[dict] = []
    for sweep_id in ids:
        rows = [{**row, "error": error_line(row["error"])} for row in registry.runs(sweep=sweep_id)]
        all_rows.extend(rows)
        if not (as_json or as_csv):
            tally = "  ".join(f"{state}={n}" for state, n in counts(rows).items())
            print_text(f"sweep {sweep_id}  {folders.get(sweep_id) or ''}  {tally}")
            emit(rows, False, False, columns[1:])
    if as_json or as_csv:
        emit(all_rows, as_json, as_csv, columns)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
def sweeps(as_json: bool, as_csv: bool) -> None:
    """Every sweep in the registry, with its run counts."""
    rows = open_registry().sweeps()
    emit(rows, as_json, as_csv, ["id", Column("name", priority=1, wrap=True), Column("backend", priority=3), "runs",
                                 "completed", Column("stopped", priority=4), "failed", "active",
                                 Column("sweep_dir", priority=2, wrap=True)])


@click.command()
@click.option("--sweep", help="Only this sweep's runs.")
@click.option("--where", "where", multiple=True, help="Filter, e.g. 'lr<0.01', 'model=mlp', 'val_acc>0.9' (repeatable).")
@click.option("--sort", help="Sort key: a metric or 'result' best first, other keys ascending; '-'/'+' for "
                             "descending/ascending: 'val_loss', '-val_acc', 'job_num'.")
@click.option("--limit", type=int, help="At most this many runs.")
@click.option("--project", metavar="METRIC", help="Project each active run's final METRIC from its curve (default: "
                                                  "the sweep's early-stopping metric, else the --sort metric).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
def runs(sweep: str | None, where: tuple[str, ...], sort: str | None, limit: int | None, project: str | None,
         as_json: bool, as_csv: bool) -> None:
    """Runs with their state, their result (the task's numeric return value) and the last value of each logged
    metric."""
    from slurmml.cli.output import add_projections
    from slurmml.registry.browse import RUN_FIELDS

    registry, sweep = open_sweep(sweep)
    rows = registry.runs(sweep=sweep, where=where, sort=sort, limit=limit)
    metrics = sorted({k for row in rows for k in row} - set(RUN_FIELDS))
    if any(row["result"] is not None for row in rows):
        metrics.insert(0, "result")
    sorted_by = (sort or "").lstrip("+-")  # the metric runs are sorted by stays when others are hidden
    projected = project or _rule_metric(registry, sweep) or (sorted_by if sorted_by in metrics else None)
    shown = projected not in (None, "result") and add_projections(registry, rows, projected)
    emit(rows, as_json, as_csv, [*_RUN_COLUMNS, *(Column(m, priority=1 if m == sorted_by else 4) for m in metrics),
                                 *([Column("projected_text", f"{projected} projected", priority=2)] if shown else [])])


def _rule_metric(registry, sweep: str | None) -> str | None:
    """The metric of the sweep's early-stopping rule: what its runs are projected by when nothing else is named."""
    stored = registry.early_stop_rule(sweep) if sweep else None
    return stored["rule"]["metric"] if stored else None


EXECUTION_COLUMNS = [Column("number", "#"), Column("job_id", "job", priority=2), Column("host", priority=3),
                     "state", Column("reason", "why", priority=1), Column("checkpoint_step", "saved", priority=2),
                     Column("resumed_from", "from", priority=2), Column("elapsed", priority=1),
                     Column("repeated_steps", "redone", priority=3), Column("gpu_hours", "GPU-h", priority=3)]


def execution_row(execution: dict) -> dict:
    """One execution as `show` prints it: its span as a duration."""
    from slurmml.core.tables import compact_duration

    return {**execution, "elapsed": compact_duration(execution.get("elapsed_s"))}


@click.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(run_id: str, as_json: bool) -> None:
    """Everything recorded about one run: config, overrides, result, Slurm facts, state history, metric summaries
    (with each metric's best: slurmml.core.direction), logged params."""
    from slurmml.core.direction import best_of, metric_mode

    run = open_registry(run_ids=[run_id]).run(run_id)
    for name, summary in run["metrics"].items():
        summary["best"] = best_of(summary, metric_mode(name, run["direction"]))
    if as_json:
        click.echo(json.dumps(run, indent=2, default=str))
        return
    from rich.pretty import Pretty

    from slurmml.core.states import state_path
    from slurmml.cli.terminal import console, print_fields

    out = console()
    fields = [(key, run.get(key)) for key in ("id", "sweep_id", "job_num", "state", "exit_code", "result", "error",
                                               "slurm_job_id", "host", "run_dir", "log_path", "restarts")]
    fields += [("overrides", " ".join(run.get("overrides") or [])),
               ("states", state_path(run["states"]))]
    print_fields(fields, out)
    if run["metrics"]:
        emit([{"metric": name, **summary} for name, summary in run["metrics"].items()], False, False,
             ["metric", "last", Column("best", priority=1), Column("last_step", "step", priority=2),
              Column("min", priority=2), Column("max", priority=2), Column("count", priority=3)], "metrics")
    if len(run["executions"]) > 1 or any(e["superseded"] for e in run["executions"]):
        emit([execution_row(e) for e in run["executions"]], False, False, EXECUTION_COLUMNS, "executions")
    if run["params"]:
        emit([{"param": key, "value": value if isinstance(value, str) else json.dumps(value)}
              for key, value in run["params"].items()], False, False, ["param", Column("value", wrap=True)], "params")
    if run.get("config"):
        out.print(Pretty(run["config"]))  # a repr, not markup
