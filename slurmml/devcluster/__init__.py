"""A real single-node Slurm cluster on this machine, for development and tests.

``devcluster.sh up|down|status`` (shipped next to this file) installs and starts munge,
MariaDB, slurmdbd, slurmctld and slurmd on Debian as root; :func:`run` calls it.
"""

from __future__ import annotations

import pathlib
import subprocess

SCRIPT = pathlib.Path(__file__).with_name("devcluster.sh")


def run(action: str) -> int:
    """Run ``devcluster.sh ACTION`` (up, down or status) and return its exit code.

    The script's output goes straight to this process's stdout and stderr.
    """
    return subprocess.call(["bash", str(SCRIPT), action])
