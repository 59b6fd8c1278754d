"""Lazy heavy imports: plugin discovery, the CLI and the pure core stay light (DESIGN rules 5 and 6)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys; print('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


HEAVY = {"submitit", "cloudpickle", "rich", "torch", "textual", "boto3", "pynvml"}


@pytest.mark.parametrize("code", [
    "import hydra_plugins.slurmml_launcher.slurmml_launcher",  # what Hydra imports at plugin discovery
    "from slurmml.cli import main",
    "import slurmml.slurm.parse, slurmml.launcher.plan, slurmml.launcher.waiting",
])
def test_no_heavy_imports(code: str) -> None:
    assert modules_after(code) & HEAVY == set()


def test_cli_and_core_do_not_import_hydra() -> None:
    assert "hydra" not in modules_after("from slurmml.cli import main; import slurmml.slurm.parse, slurmml.launcher.plan")
