"""What the launcher needs to know about the cluster: two cheap Slurm calls, parsed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from slurmml.slurm.commands import CommandResult, run_command
from slurmml.slurm.parse import SINFO_PARTITION_FORMAT, Partition, parse_scontrol_config, parse_sinfo_partitions

SLURM_DEFAULT_MAX_ARRAY_SIZE = 1001


@dataclass(frozen=True)
class ClusterFacts:
    max_array_size: int = SLURM_DEFAULT_MAX_ARRAY_SIZE
    partitions: list[Partition] = field(default_factory=list)


def read_cluster_facts(run: Callable[..., CommandResult] = run_command) -> ClusterFacts:
    """MaxArraySize and the partitions' largest nodes; missing answers fall back to Slurm's defaults."""
    config = run(["scontrol", "show", "config"])
    max_array = SLURM_DEFAULT_MAX_ARRAY_SIZE
    if config.ok:
        value = parse_scontrol_config(config.stdout).get("MaxArraySize", "")
        max_array = int(value) if value.isdigit() else max_array
    sinfo = run(["sinfo", "--noheader", f"--format={SINFO_PARTITION_FORMAT}"])
    partitions = parse_sinfo_partitions(sinfo.stdout) if sinfo.ok else []
    return ClusterFacts(max_array, partitions)
