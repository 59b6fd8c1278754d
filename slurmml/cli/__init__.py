"""The `slurmml` command: the group and its commands, one module per command group.

Commands import what they need inside their bodies, so `slurmml --help` starts fast.
"""

from __future__ import annotations

from typing import Any

import click

from slurmml import __version__
from slurmml.cli import actions, artifacts, cluster, datasets, lineage, live, report, runs, storage, sync, tui, watch
from slurmml.errors import SlurmmlError


class _Group(click.Group):
    """Turn SlurmmlError into one line on stderr and exit code 1, at the boundary."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SlurmmlError as error:
            click.echo(f"slurmml: {error}", err=True)
            ctx.exit(1)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="slurmml")
def main() -> None:
    """Launch, track and watch Hydra sweeps on Slurm.

    Launch a sweep with `python train.py -m hydra/launcher=slurmml ...`
    (or `hydra/launcher=slurmml_local` on a machine without Slurm).
    """


# the modules, not their commands, are named here: `slurmml.cli.watch` stays the module
for _command in (runs.info, runs.status, runs.sweeps, runs.runs, runs.show, report.report, watch.watch, tui.tui,
                 actions.cancel, actions.requeue, actions.clone, actions.resubmit, cluster.cluster,
                 lineage.lineage, lineage.leaderboard, datasets.dataset, artifacts.artifacts, sync.sync,
                 storage.storage, live.set_values, live.snapshot, live.stop, live.controls, live.prune):
    main.add_command(_command)
