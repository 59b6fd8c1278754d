"""`slurmml report`: efficiency, GPU-hours, failures and best runs, from the registry's cache (no Slurm calls)."""

from __future__ import annotations

import click


@click.command()
@click.option("--sweep", help="Only this sweep's runs.")
@click.option("--since", help="Runs created at or after this time: 2026-11-01, 2026-11-01T10:30, or 7d / 12h ago.")
@click.option("--until", help="Runs created before this time (same forms as --since).")
@click.option("--user", help="Only runs of sweeps launched by this user.")
@click.option("--metric", help="Rank runs by the last value of this metric (default: the validation metric most "
                               "runs logged).")
@click.option("--mode", type=click.Choice(["max", "min"]), help="Higher or lower is better (default: min for "
                                                                   "loss/error-like names, else max).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print one CSV row per run.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, writable=True),
              help="Write one self-contained HTML page with charts to this file.")
def report(sweep: str | None, since: str | None, until: str | None, user: str | None, metric: str | None,
           mode: str | None, as_json: bool, as_csv: bool, html_path: str | None) -> None:
    """Per run and per sweep: elapsed, CPU/memory/time efficiency, GPU-hours and GPU use, failures by cause,
    and the best runs by a metric.

    Reads the registry only: Slurm's figures are what the poller (`slurmml watch`) last cached.
    """
    import json

    from slurmml.cli import _emit, _registry
    from slurmml.errors import SlurmmlError
    from slurmml.report import build_report, run_records

    if sum([as_json, as_csv, html_path is not None]) > 1:
        raise SlurmmlError("choose one of --json, --csv and --html")
    registry = _registry()
    try:
        result = build_report(registry, sweep=sweep, since=since, until=until, user=user, metric=metric, mode=mode)
    finally:
        registry.close()
    slurm_runs = sum(1 for r in result.runs if r.slurm_job_id)
    if result.unaccounted:
        scope = "these runs have" if len(result.unaccounted) == slurm_runs else \
            f"{len(result.unaccounted)} of {slurm_runs} Slurm runs have"
        click.echo(f"slurmml: warning: {scope} no accounting record yet: their figures come from the runs' own "
                   f"records until `slurmml watch` (the poller) has run", err=True)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    elif as_csv:
        rows = run_records(result)
        columns = list(rows[0]) if rows else list(_run_columns(result))
        _emit(rows, False, True, columns)
    elif html_path:
        from slurmml.report_html import write_html

        write_html(result, html_path)
        click.echo(f"wrote {html_path} ({result.totals.runs} runs, {len(result.sweeps)} sweeps)")
    else:
        _print_tables(result)


def _run_columns(result) -> list[str]:
    from slurmml.report import RUN_COLUMNS

    return [c for c in RUN_COLUMNS if c != "metric"] + ([result.metric] if result.metric else [])


def _pct(value) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _hours(value) -> str:
    return "" if value is None else f"{value:.2f}"


def _elapsed(seconds) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _number(value) -> str:
    return "" if value is None else f"{value:.6g}"


def _table(title: str, columns: list[str], rows: list[list], wrap: tuple[str, ...] = ()) -> None:
    """A compact Rich table: numbers right-aligned, only the `wrap` columns may fold."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False,
                  show_edge=False, title_justify="left", title_style="bold")
    for number, column in enumerate(columns):
        numeric = rows and all(isinstance(row[number], (int, float)) or str(row[number]).rstrip("%").replace(
            ".", "", 1).replace(":", "").isdigit() or row[number] in ("", "-") for row in rows)
        table.add_column(column, justify="right" if numeric else "left", no_wrap=column not in wrap,
                         overflow="fold" if column in wrap else "ellipsis", min_width=12 if column in wrap else None)
    for row in rows:
        table.add_row(*(str(value) for value in row))
    Console().print(table)


def _print_tables(result, emit=None) -> None:
    totals = result.totals
    click.echo(f"{totals.runs} runs: {totals.completed} completed, {totals.failed} failed, {totals.active} active; "
               f"CPU eff {_pct(totals.cpu_eff) or '-'}, mem eff {_pct(totals.mem_eff) or '-'}, "
               f"time eff {_pct(totals.time_eff) or '-'}; {_hours(totals.gpu_hours)} GPU-hours "
               f"({_hours(totals.gpu_hours_failed)} on failed runs, {_hours(totals.gpu_hours_idle)} on idle GPUs)")
    if not result.runs:
        return
    metric = [result.metric] if result.metric else []
    _table("per sweep (GPU-hours in all, on failed runs, on idle GPUs)",
           ["sweep", "runs", "done", "failed", "active", "elapsed", "CPU", "mem", "time", "GPU-h", "failed", "idle",
            *(["best"] if metric else [])],
           [[s.sweep_id, s.runs, s.completed, s.failed, s.active, _elapsed(s.elapsed_s), _pct(s.cpu_eff),
             _pct(s.mem_eff), _pct(s.time_eff), _hours(s.gpu_hours), _hours(s.gpu_hours_failed),
             _hours(s.gpu_hours_idle), *([_number(s.best_value)] if metric else [])] for s in result.sweeps])
    if len(result.runs) <= 100:
        _table("per run (* = no accounting record yet)" if result.unaccounted else "per run",
               ["run", "state", "job", "elapsed", "CPU", "mem", "time", "GPUs", "GPU-h", "util", *metric,
                "overrides"],
               [[r.run_id + ("*" if r.accounting == "registry" else ""), r.state, r.slurm_job_id or "",
                 _elapsed(r.elapsed_s), _pct(r.cpu_eff), _pct(r.mem_eff), _pct(r.time_eff), r.alloc_gpus or "",
                 _hours(r.gpu_hours) if r.alloc_gpus else "", "" if r.gpu_util is None else f"{r.gpu_util:.0f}%",
                 *([_number(r.metric)] if metric else []), " ".join(r.overrides)] for r in result.runs],
               wrap=("overrides",))
    else:
        click.echo(f"({len(result.runs)} runs: per-run figures with --csv or --json)")
    if result.failures:
        _table("failures by cause", ["cause", "runs", "GPU-h", "example", "run ids"],
               [[g.cause, g.count, _hours(g.gpu_hours), g.example,
                 " ".join(g.runs[:5]) + (" ..." if len(g.runs) > 5 else "")] for g in result.failures],
               wrap=("cause", "example", "run ids"))
    if result.gpu_hours_by_state:
        click.echo("GPU-hours by state: " + ", ".join(f"{state} {_hours(h)}"
                                                      for state, h in result.gpu_hours_by_state.items()))
    if result.best:
        picked = " (picked automatically; --metric to choose)" if result.metric_picked else ""
        _table(f"best runs by {result.metric} ({result.mode}){picked}", ["#", "run", result.metric, "state", "differs by"],
               [[i + 1, b.run_id, _number(b.value), b.state, b.label] for i, b in enumerate(result.best)],
               wrap=("differs by",))
