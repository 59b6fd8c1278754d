"""A real single-node Slurm cluster on this machine, for development and tests.

``devcluster.sh up|down|status`` (shipped next to this file) installs and starts munge,
MariaDB, slurmdbd, slurmctld and slurmd on Debian as root; :func:`run` calls it, then starts or stops the
S3-compatible server of ``s3server.py`` with it.
"""

from __future__ import annotations

import pathlib
import subprocess

SCRIPT = pathlib.Path(__file__).with_name("devcluster.sh")


def run(action: str) -> int:
    """Run ``devcluster.sh ACTION`` (up, down or status) and return its exit code.

    The script's output goes straight to this process's stdout and stderr.
    """
    code = subprocess.call(["bash", str(SCRIPT), action])
    from slurmml.devcluster import s3server

    store = {"up": s3server.up, "down": s3server.down, "status": s3server.status}.get(action)
    if store is None or (action == "up" and code != 0):
        return code
    return max(code, store())
