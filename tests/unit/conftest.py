"""Unit tests never reach the dev cluster: their registries hold made-up job ids, which the real squeue and
sacct could confuse with real jobs. Commands that poll (every command that shows runs) meet a `squeue` and
an `sacct` on PATH that answer as Slurm does for jobs it no longer knows: nothing, exit code 0. Rendering an
sbatch script needs `srun` on PATH (submitit checks for it) but never runs it: a stub that fails is there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _slurm_that_knows_no_jobs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path_factory.getbasetemp() / "slurm_knows_no_jobs"
    if not folder.is_dir():
        folder.mkdir()
        for name, body in (("squeue", "exit 0"), ("sacct", "exit 0"), ("srun", "echo 'srun: no cluster here' >&2; exit 1")):
            script = Path(folder, name)
            script.write_text(f"#!/bin/sh\n{body}\n")
            script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
