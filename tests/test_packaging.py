"""`pip install .` (not only an editable checkout) must ship the Hydra configs, templates and dev-cluster script."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT

SHIPPED = [
    "hydra_conf/hydra/launcher/slurmml.yaml",
    "hydra_conf/hydra/launcher/slurmml_local.yaml",
    "sbatch_templates/default.sh",
    "sbatch_templates/modules_venv.sh",
    "slurmml/devcluster/devcluster.sh",
    "hydra_plugins/slurmml_launcher/slurmml_launcher.py",
    "slurmml/launcher/task.py",
]


def test_wheel_ships_configs_templates_and_scripts(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    wheel = next(tmp_path.glob("slurmml-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [path for path in SHIPPED if path not in names] == []
    assert not any(name.startswith(("tests/", "examples/", "benchmarks/")) for name in names)
    assert "hydra_plugins/__init__.py" not in names  # a namespace package shared with other plugins
