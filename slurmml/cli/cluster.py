"""`slurmml cluster up|down|status`: the development Slurm on this machine (slurmml.devcluster)."""

from __future__ import annotations

import sys

import click


@click.group()
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
