"""`slurmml cancel`, `slurmml requeue` and `slurmml clone`: the run actions (slurmml.control.actions), also in the
TUI; and `slurmml resubmit`, a sweep's badly ended runs again (slurmml.launcher.resubmit)."""

from __future__ import annotations

from typing import Any, Callable, Optional

import click


def _registry(path: Optional[str]) -> Any:
    from pathlib import Path

    from slurmml.registry.registry import Registry

    return Registry(Path(path) if path else None, create=False)


def _show(result: Any) -> bool:
    """An ActionResult as one line: on stdout when it succeeded, on stderr when it was refused or failed."""
    if result.ok:
        click.echo(result.message)
    else:
        click.echo(f"slurmml: {result.message}", err=True)
    return bool(result.ok)


def _each(action: Callable[..., Any], run_ids: tuple[str, ...]) -> None:
    """Act on every run, one line each; exit 1 if any was refused or failed."""
    registry = _registry(None)
    failed = [run_id for run_id in run_ids if not _show(action(registry, run_id))]
    if failed:
        raise SystemExit(1)


@click.command()
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN_ID...")
def cancel(run_ids: tuple[str, ...]) -> None:
    """Cancel runs' Slurm jobs (scancel); the shared poller then records them CANCELLED.

    Only your own runs that have not ended. Runs launched on this machine (slurmml_local) have no Slurm job.
    """
    from slurmml.control.actions import cancel_run

    _each(cancel_run, run_ids)


@click.command()
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN_ID...")
def requeue(run_ids: tuple[str, ...]) -> None:
    """Run runs again under the same Slurm job id (scontrol requeue): a running one restarts, an ended one reruns.

    The run is QUEUED again and counts a restart when it starts. Slurm holds a requeued job about 2 minutes
    before it starts, and forgets a job 5 minutes (MinJobAge) after it ended: clone such a run instead.
    """
    from slurmml.control.actions import requeue_run

    _each(requeue_run, run_ids)


@click.command()
@click.argument("run_id")
@click.argument("overrides", nargs=-1)
@click.option("--replace", is_flag=True,
              help="OVERRIDES are the new run's whole override list, not changes to the run's.")
@click.option("--registry", "registry_path", type=click.Path(dir_okay=False),
              help="The registry to use (default: $SLURMML_HOME/registry.db).")
def clone(run_id: str, overrides: tuple[str, ...], replace: bool, registry_path: Optional[str]) -> None:
    """Run RUN_ID again as a new run of its sweep: the same code and config, plus OVERRIDES.

    An override of a key the run already sets replaces it (lr=0.01 replaces lr=0.1, ~lr drops it); other
    overrides are added. The code is the one staged when the sweep was launched. The new config is composed
    first: if it does not compose, nothing is recorded or submitted. The new run records RUN_ID as its parent.
    """
    from slurmml.launcher.clone import clone_action  # this command's own process: the sweep's code may load here

    if not _show(clone_action(_registry(registry_path), run_id, list(overrides), replace=replace)):
        raise SystemExit(1)


@click.command()
@click.argument("sweep")
@click.argument("changes", nargs=-1, metavar="[FIELD=VALUE]...")
@click.option("--state", "states", multiple=True, metavar="STATE",
              help="Resubmit the runs that ended in STATE (repeatable; default: FAILED TIMEOUT OUT_OF_MEMORY "
                   "NODE_FAIL PREEMPTED LOST).")
@click.option("--dry-run", is_flag=True, help="Say what would be resubmitted; submit nothing.")
def resubmit(sweep: str, changes: tuple[str, ...], states: tuple[str, ...], dry_run: bool) -> None:
    """Run a sweep's tasks that ended badly again, as one new job array per batch of the sweep.

    The same code and config (the payload staged at launch), the sweep's launcher settings with CHANGES
    applied (e.g. `mem_gb=16` for runs killed for memory). The runs keep their ids, folders and spools: the
    new start is their next execution, and a task that loads its checkpoints goes on where it was.
    """
    from slurmml.launcher.resubmit import resubmit as resubmit_sweep  # the sweep's code may load here

    registry = _registry(None)
    done = resubmit_sweep(registry, sweep, states, changes, dry_run=dry_run)
    for target in done:
        runs = ", ".join(sorted(target.tasks, key=target.tasks.get))
        if dry_run:
            click.echo(f"would resubmit {len(target.tasks)} run(s) of {target.batch_dir.name} "
                       f"(--array={target.array()}): {runs}")
        else:
            click.echo(f"resubmitted {len(target.tasks)} run(s) of {target.batch_dir.name} as job {target.job_id} "
                       f"(--array={target.array()}): {runs}")
