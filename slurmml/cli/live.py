"""`slurmml set / snapshot / stop`: live controls of running jobs (slurmml.control.live); `slurmml controls`: a run's
history of them; `slurmml prune`: an early-stopping rule for a sweep that is already running (slurmml.control.pruning).
docs/control.md has the story."""

from __future__ import annotations

from typing import Any, Optional

import click

from slurmml.core.controls import DEFAULT_TIMEOUT_S
from slurmml.core.tables import Column


def _targets(registry: Any, run_ids: tuple[str, ...], sweep: Optional[str]) -> list[str]:
    """The runs named, or with --sweep every active run of that sweep."""
    from slurmml.errors import SlurmmlError
    from slurmml.launcher.sweep_lookup import one_sweep_id

    ids = list(run_ids)
    if sweep:
        from slurmml.core.states import ACTIVE_STATES

        sweep_id = one_sweep_id(registry, sweep)
        ids += [r["id"] for r in registry.runs(sweep=sweep_id) if r["state"] in ACTIVE_STATES and r["id"] not in ids]
        if not ids:
            raise SlurmmlError(f"sweep {sweep_id} has no active run to control")
    if not ids:
        raise SlurmmlError("name at least one run (or --sweep SWEEP)")
    return ids


def _send_all(kind: str, run_ids: list[str], args: dict[str, Any], wait: bool, timeout: float, registry: Any) -> None:
    from slurmml.control.live import send, wait as wait_for

    sent = [send(registry, run_id, kind, args, timeout_s=timeout) for run_id in run_ids]
    for item in sent:
        if not item.ok:
            click.echo(f"slurmml: {item.message}", err=True)
    if wait and any(item.ok for item in sent):
        click.echo(f"waiting up to {timeout:.0f} s for {sum(item.ok for item in sent)} run(s) to answer ...", err=True)
        done = wait_for(registry, [item for item in sent if item.ok], timeout)
    else:
        done = [item for item in sent if item.ok]
    for item in done:
        if item.ok:
            click.echo(item.message)
        else:
            click.echo(f"slurmml: {item.message}", err=True)
    if not all(item.ok for item in sent) or not all(item.ok for item in done):
        raise SystemExit(1)


def _options(command: Any) -> Any:
    command = click.option("--sweep", help="Every active run of this sweep (as well as RUN_IDs).")(command)
    command = click.option("--timeout", type=float, default=DEFAULT_TIMEOUT_S, show_default=True,
                           help="Seconds to wait for the job's answer.")(command)
    return click.option("--wait/--no-wait", default=True, show_default=True,
                        help="Wait for each job to answer (applied at a step, or refused).")(command)


def _registry() -> Any:
    from slurmml.registry.registry import Registry

    return Registry(create=False)


@click.command("set")
@click.argument("words", nargs=-1, required=True, metavar="RUN_ID... KEY=VALUE...")
@_options
def set_values(words: tuple[str, ...], sweep: Optional[str], timeout: float, wait: bool) -> None:
    """Change values of running jobs: `slurmml set RUN optimizer.lr=0.001`.

    The job applies them at its next control point (slurmml.checkpoint_point, or slurmml.log with a step) through
    the callbacks its code registered with slurmml.on_set; a key with no callback is refused and the job says so.
    """
    from slurmml.core.controls import parse_assignments
    from slurmml.errors import SlurmmlError

    assignments = [word for word in words if "=" in word]
    run_ids = tuple(word for word in words if "=" not in word)
    try:
        values = parse_assignments(assignments)
    except ValueError as error:
        raise SlurmmlError(str(error)) from None
    registry = _registry()
    _send_all("set", _targets(registry, run_ids, sweep), {"values": values}, wait, timeout, registry)


@click.command()
@click.argument("run_ids", nargs=-1, metavar="RUN_ID...")
@_options
def snapshot(run_ids: tuple[str, ...], sweep: Optional[str], timeout: float, wait: bool) -> None:
    """Save a checkpoint of running jobs now, at their next slurmml.checkpoint_point; training goes on."""
    registry = _registry()
    _send_all("snapshot", _targets(registry, run_ids, sweep), {}, wait, timeout, registry)


@click.command()
@click.argument("run_ids", nargs=-1, metavar="RUN_ID...")
@_options
def stop(run_ids: tuple[str, ...], sweep: Optional[str], timeout: float, wait: bool) -> None:
    """Stop running jobs cleanly: each saves a checkpoint at its next checkpoint point and ends STOPPED.

    Not a cancel: the job ends on its own, with exit code 0, and `slurmml requeue` can continue it later from the
    checkpoint. A job that never reaches a control point does not answer: `slurmml cancel` ends it.
    """
    registry = _registry()
    _send_all("stop", _targets(registry, run_ids, sweep), {}, wait, timeout, registry)


CONTROL_COLUMNS = [Column("asked"), Column("what"), Column("shown", "status"), Column("step"),
                   Column("user", priority=2), Column("source", "from", priority=1),
                   Column("message", priority=3, wrap=True)]


@click.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
def controls(run_id: str, as_json: bool, as_csv: bool) -> None:
    """A run's live controls: who asked what and when, and when and at which step the job applied it."""
    import time

    from slurmml.cli.output import emit, open_registry

    registry = open_registry([run_id])
    registry.run_with_sweep(run_id)  # one line if there is no such run
    rows = registry.controls(run_id=run_id)
    for row in rows:
        if not (as_json or as_csv):
            row["asked"] = time.strftime("%m-%d %H:%M:%S", time.localtime(row["asked"])) if row["asked"] else ""
    keys = ["id", "run_id", "kind", "what", "args", "status", "shown", "step", "user", "source", "asked", "answered",
            "deadline", "message", "checkpoint"]
    emit([{key: row.get(key) for key in keys} for row in rows], as_json, as_csv,
         CONTROL_COLUMNS if not as_csv else keys, title=f"controls of run {run_id}")


@click.command()
@click.argument("sweep")
@click.option("--metric", help="The metric the rule compares runs by (as the runs log it).")
@click.option("--mode", type=click.Choice(["min", "max"]), help="Which way is better (default: from the name).")
@click.option("--rule", "rule_name", type=click.Choice(["hyperband", "median", "asha"]),
              help="The rule (default: hyperband).")
@click.option("--min-steps", type=int, help="The first rung: values a run logs before it is judged (default 1).")
@click.option("--eta", type=float, help="Rungs grow by this factor; about 1/eta of the runs pass each (default 3).")
@click.option("--min-runs", type=int, help="How many runs a cut needs (default 1).")
@click.option("--grace", "grace_s", type=float,
              help="Seconds a pruned run has to save and end before it is cancelled (default 60).")
@click.option("--max-steps", type=int, help="The step training ends at, for projections.")
@click.option("--dry-run", is_flag=True, help="Say what the rule would prune now; store and stop nothing.")
@click.option("--off", is_flag=True, help="Stop early-stopping this sweep.")
def prune(sweep: str, metric: Optional[str], mode: Optional[str], rule_name: Optional[str], min_steps: Optional[int],
          eta: Optional[float], min_runs: Optional[int], grace_s: Optional[float], max_steps: Optional[int],
          dry_run: bool, off: bool) -> None:
    """Early-stop a sweep that is already running: from now on, whoever watches (watch, the TUI, a waiting launcher)
    prunes the runs the rule says have lost, and this command runs the first round at once.

    Example: `slurmml prune SWEEP --metric val_loss --rule hyperband --min-steps 2 --eta 3`. Options not given
    keep what the sweep's rule has (the launcher's early_stop, or an earlier prune), else the rule's defaults.
    """
    import time

    from slurmml.cli.output import open_sweep
    from slurmml.control.pruning import judge, prune_round
    from slurmml.core.early_stop import parse_rule, rule_to_dict
    from slurmml.errors import SlurmmlError

    registry, sweep_id = open_sweep(sweep)
    assert sweep_id is not None
    if off:
        stopping = registry.clear_early_stop(sweep_id)
        click.echo(f"sweep {sweep_id}: early stopping off"
                   + (f"; {stopping} pruned run(s) are still stopping" if stopping else ""))
        return
    stored = registry.early_stop_rule(sweep_id)
    given = {"metric": metric, "mode": mode, "rule": rule_name, "min_steps": min_steps, "eta": eta,
             "min_runs": min_runs, "grace_s": grace_s, "max_steps": max_steps}
    spec = {**(stored["rule"] if stored else {}), **{key: value for key, value in given.items() if value is not None}}
    if metric and not mode:  # a new metric's mode comes from its own name, not the old metric's
        spec.pop("mode", None)
    if not spec.get("metric"):
        raise SlurmmlError("--metric is required: the metric the rule compares runs by")
    try:
        rule = parse_rule(spec, registry.sweep_direction(sweep_id))
    except ValueError as error:
        raise SlurmmlError(str(error)) from None
    _, decision = judge(registry, sweep_id, rule_to_dict(rule))
    if decision.problem:
        raise SlurmmlError(decision.problem)
    if dry_run:
        for verdict in decision.prune:
            click.echo(f"would prune run {verdict.run_id}: {verdict.reason(rule)}")
        if not decision.prune:
            click.echo(f"sweep {sweep_id}: the rule would prune nothing now")
        return
    registry.set_early_stop(sweep_id, rule_to_dict(rule), "prune", time.time())
    done = prune_round(registry, warn=lambda line: click.echo(f"slurmml: warning: {line}", err=True))
    click.echo(f"sweep {sweep_id}: {rule.rule} on {rule.metric} ({rule.mode}); pruned {len(done.pruned)} run(s) now")
    for run_id, reason in done.pruned:
        click.echo(f"  {run_id}: {reason}")
