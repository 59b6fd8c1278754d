"""`slurmml tui`: the terminal UI on the login node (its code lives in the top-level `tui` package)."""

from __future__ import annotations

import click


@click.command()
@click.option("--sweep", help="Start filtered to this sweep (the filter can be edited with /).")
@click.option("--read-only", is_flag=True, help="Never act on jobs: no cancel, requeue or clone.")
@click.option("--interval", type=float, default=10.0, show_default=True,
              help="Seconds between squeue calls, shared with every other view of the registry (at least 5).")
@click.option("--refresh", type=float, default=2.0, show_default=True,
              help="Seconds between reads of the registry and its spools (no Slurm call).")
def tui(sweep: str | None, read_only: bool, interval: float, refresh: float) -> None:
    """Watch jobs, read logs, compare runs and act on them, in the terminal.

    Press ? inside for the keys. Slurm is asked only through the shared poller.
    """
    from slurmml.launcher.sweep_lookup import one_sweep_id
    from slurmml.tui.actions import RunActions
    from slurmml.tui.app import SlurmmlApp
    from slurmml.tui.source import RegistrySource

    source = RegistrySource.open(poll_interval_s=interval)
    try:
        sweep = one_sweep_id(source.registry, sweep) if sweep else None
        app = SlurmmlApp(source, None if read_only else RunActions(source), read_only=read_only,
                         refresh_s=max(0.5, refresh), sweep=sweep)
        app.run()
    finally:
        source.close()
