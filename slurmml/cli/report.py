"""`slurmml report`: efficiency, GPU-hours, failures and best runs, from the registry's cache (no Slurm calls)."""

from __future__ import annotations

import click


@click.command()
@click.option("--sweep", help="Only this sweep's runs.")
@click.option("--since", help="Runs created at or after this time: 2026-11-01, 2026-11-01T10:30, or 7d / 12h ago.")
@click.option("--until", help="Runs created before this time (same forms as --since).")
@click.option("--user", help="Only runs of sweeps launched by this user.")
@click.option("--metric", help="Rank runs by the last value of this metric, or by `result` (default: the result "
                               "when runs returned one, else the validation metric most runs logged).")
@click.option("--mode", type=click.Choice(["max", "min"]), help="Higher or lower is better (default: the direction "
                                                                   "the sweep declared for its result, else from the "
                                                                   "metric's name: min for loss/error-like names).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print one CSV row per run.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, writable=True),
              help="Write one self-contained HTML page with charts to this file.")
def report(sweep: str | None, since: str | None, until: str | None, user: str | None, metric: str | None,
           mode: str | None, as_json: bool, as_csv: bool, html_path: str | None) -> None:
    """Per run and per sweep: elapsed, CPU/memory/time efficiency, GPU-hours and GPU use, failures by cause,
    and the best runs by a metric.

    Slurm's figures are sacct's, cached in the registry by the shared poller; runs that lack them are asked
    for first, when the poller's schedule allows a call.
    """
    import json
    from pathlib import Path

    from slurmml.cli.output import emit, open_sweep
    from slurmml.errors import SlurmmlError
    from slurmml.report.collect import build_report
    from slurmml.report.records import run_records

    if sum([as_json, as_csv, html_path is not None]) > 1:
        raise SlurmmlError("choose one of --json, --csv and --html")
    if html_path is not None and not Path(html_path).absolute().parent.is_dir():  # say so before any work
        raise SlurmmlError(f"cannot write the report to {html_path}: folder {Path(html_path).absolute().parent} "
                           f"does not exist")
    registry, sweep = open_sweep(sweep)
    try:
        result = build_report(registry, sweep=sweep, since=since, until=until, user=user, metric=metric, mode=mode)
    finally:
        registry.close()
    slurm_runs = sum(1 for r in result.runs if r.slurm_job_id)
    if result.unaccounted:
        scope = "these runs have" if len(result.unaccounted) == slurm_runs else \
            f"{len(result.unaccounted)} of {slurm_runs} Slurm runs have"
        click.echo(f"slurmml: warning: {scope} no accounting record yet: their figures come from the runs' own "
                   f"records until sacct has answered (at most once a minute, for every slurmml command)", err=True)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    elif as_csv:
        rows = run_records(result)
        columns = list(rows[0]) if rows else list(_run_columns(result))
        emit(rows, False, True, columns)
    elif html_path:
        from slurmml.report.html import write_html

        write_html(result, html_path)
        click.echo(f"wrote {html_path} ({result.totals.runs} runs, {len(result.sweeps)} sweeps)")
    else:
        print_tables(result)


def _run_columns(result) -> list[str]:
    from slurmml.core.direction import RESULT
    from slurmml.report.records import RUN_COLUMNS

    return [c for c in RUN_COLUMNS if c != "metric"] + ([result.metric] if result.metric not in (None, RESULT) else [])


def _pct(value) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _hours(value) -> str:
    return "" if value is None else f"{value:.2f}"


def _elapsed(seconds) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def early_stop_line(figure: dict) -> str:
    """One sweep's early stopping in a sentence (slurmml.report.savings)."""
    rule = figure["rule"]
    survived = {True: "yes", False: "NO (a pruned run was ahead of it when pruned)", None: "-"}[figure["best_survived"]]
    line = (f"early stopping, sweep {figure['sweep_id']}: {rule.get('rule')} on {rule.get('metric')} "
            f"({rule.get('mode')}): pruned {figure['pruned']} of {figure['runs']} runs; saved "
            f"{_hours(figure['gpu_hours_saved'])} GPU-h, {_hours(figure['cpu_hours_saved'])} CPU-h "
            f"({figure['saved_basis']}); best run {figure['best_run'] or '-'} survived: {survived}")
    return line + (f"; rule not applied: {figure['problem']}" if figure.get("problem") else "")


def _projected(row) -> str:
    if row.projected is None:
        return ""
    return f"{row.projected:.4g} ±{row.projected_spread:.2g}" if row.projected_spread is not None else f"{row.projected:.4g}"


def _number(value) -> str:
    return "" if value is None else f"{value:.6g}"


def _table(title: str, spec: list, items: list, out) -> None:
    """spec: (tables.Column, the cell of one item) pairs; a narrow terminal hides the higher priorities first."""
    from slurmml.cli.terminal import print_table

    print_table([column for column, _ in spec], [{column.key: get(item) for column, get in spec} for item in items],
                title, out)


def print_tables(result) -> None:
    """The report as tables fitted to the terminal (also the end of `slurmml watch`)."""
    from slurmml.core.direction import RESULT
    from slurmml.cli.terminal import console, print_text
    from slurmml.core.tables import GLUE, Column

    out = console()
    totals = result.totals
    print_text(f"{totals.runs} runs: {totals.completed} completed, {totals.failed} failed, {totals.active} active; "
               f"CPU eff {_pct(totals.cpu_eff) or '-'}, mem eff {_pct(totals.mem_eff) or '-'}, "
               f"time eff {_pct(totals.time_eff) or '-'}; {_hours(totals.gpu_hours)} GPU-hours "
               f"({_hours(totals.gpu_hours_failed)} on failed runs, {_hours(totals.gpu_hours_idle)} on idle GPUs"
               + (f", {_hours(totals.gpu_hours_requeued)} on executions a requeue ended, {totals.repeated_steps} "
                  f"steps trained twice" if totals.gpu_hours_requeued or totals.repeated_steps else "") + ")", out)
    if not result.runs:
        return
    ranked = bool(result.metric)
    _table("per sweep", [
        (Column("sweep"), lambda s: s.sweep_id),
        (Column("runs"), lambda s: s.runs),
        (Column("done"), lambda s: s.completed),
        (Column("failed"), lambda s: s.failed),
        (Column("active", priority=1), lambda s: s.active),
        (Column("elapsed", priority=3), lambda s: _elapsed(s.elapsed_s)),
        (Column("CPU", priority=4), lambda s: _pct(s.cpu_eff)),
        (Column("mem", priority=4), lambda s: _pct(s.mem_eff)),
        (Column("time", priority=5), lambda s: _pct(s.time_eff)),
        (Column("GPU-h", priority=4), lambda s: _hours(s.gpu_hours)),
        (Column("gpu_failed", "failed GPU-h", priority=6), lambda s: _hours(s.gpu_hours_failed)),
        (Column("gpu_idle", "idle GPU-h", priority=6), lambda s: _hours(s.gpu_hours_idle)),
        *([(Column("best", priority=2), lambda s: _number(s.best_value))] if ranked else []),
    ], result.sweeps, out)
    for figure in result.early_stop:
        print_text(early_stop_line(figure), out)
    projected = any(r.projected is not None for r in result.runs)
    unaccounted = set(result.unaccounted)
    if len(result.runs) <= 100:
        _table("per run (* = no accounting record yet)" if result.unaccounted else "per run", [
            (Column("run"), lambda r: r.run_id + ("*" if r.run_id in unaccounted else "")),
            (Column("state"), lambda r: r.state),
            (Column("job", priority=6), lambda r: r.slurm_job_id),
            (Column("elapsed", priority=3), lambda r: _elapsed(r.elapsed_s)),
            (Column("CPU", priority=4), lambda r: _pct(r.cpu_eff)),
            (Column("mem", priority=4), lambda r: _pct(r.mem_eff)),
            (Column("time", priority=5), lambda r: _pct(r.time_eff)),
            (Column("GPUs", priority=7), lambda r: r.alloc_gpus or ""),
            (Column("GPU-h", priority=5), lambda r: _hours(r.gpu_hours) if r.alloc_gpus else ""),
            (Column("util", priority=6), lambda r: "" if r.gpu_util is None else f"{r.gpu_util:.0f}%"),
            *([(Column("metric", result.metric, priority=1), lambda r: _number(r.metric))] if ranked else []),
            *([(Column("projected", priority=3), lambda r: _projected(r))] if projected else []),
            *([(Column("result", priority=1), lambda r: _number(r.result))]
              if result.metric != RESULT and any(r.result is not None for r in result.runs) else []),
            (Column("overrides", priority=2, wrap=True), lambda r: " ".join(r.overrides)),
        ], result.runs, out)
    else:
        print_text(f"({len(result.runs)} runs: per-run figures with --csv or --json)", out)
    if result.failures:
        _table("failures by cause", [
            (Column("cause", wrap=True), lambda g: g.cause),
            (Column("runs"), lambda g: g.count),
            (Column("GPU-h", priority=3), lambda g: _hours(g.gpu_hours)),
            (Column("example", priority=1, wrap=True), lambda g: g.example),
            (Column("run ids", priority=2, wrap=True),
             lambda g: " ".join(g.runs[:5]) + (" ..." if len(g.runs) > 5 else "")),
        ], result.failures, out)
    if result.gpu_hours_by_state:
        print_text("GPU-hours by state: " + ", ".join(f"{state}{GLUE}{_hours(h)}"
                                                      for state, h in result.gpu_hours_by_state.items()), out)
    if result.best:
        picked = " (picked automatically; --metric to choose)" if result.metric_picked else ""
        _table(f"best runs by {result.metric} ({result.mode}){picked}", [
            (Column("#"), lambda ib: ib[0] + 1),
            (Column("run"), lambda ib: ib[1].run_id),
            (Column("value", result.metric), lambda ib: _number(ib[1].value)),
            (Column("state"), lambda ib: ib[1].state),
            (Column("differs by", priority=1, wrap=True), lambda ib: ib[1].label),
        ], list(enumerate(result.best)), out)
