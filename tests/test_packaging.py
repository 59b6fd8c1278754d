"""`pip install .` (not only an editable checkout) must ship the Hydra configs, templates and dev-cluster script,
under slurmml's own names: the wheel's only top-level packages are `slurmml` and `hydra_plugins`."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT

SHIPPED = [
    "slurmml/hydra_conf/hydra/launcher/slurmml.yaml",
    "slurmml/hydra_conf/hydra/launcher/slurmml_local.yaml",
    "slurmml/sbatch_templates/default.sh",
    "slurmml/sbatch_templates/modules_venv.sh",
    "slurmml/tui/app.py",
    "slurmml/devcluster/devcluster.sh",
    "hydra_plugins/slurmml_launcher/slurmml_launcher.py",
    "slurmml/launcher/task.py",
]


def build_wheel(tmp_path: Path) -> Path:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    return next(tmp_path.glob("slurmml-*.whl"))


def test_wheel_ships_configs_templates_and_scripts(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [path for path in SHIPPED if path not in names] == []
    assert not any(name.startswith(("tests/", "examples/", "benchmarks/")) for name in names)
    assert "hydra_plugins/__init__.py" not in names  # a namespace package shared with other plugins
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"slurmml", "hydra_plugins"}


def test_installed_wheel_has_no_top_level_tui_and_finds_its_parts(tmp_path: Path) -> None:
    """Installed (not editable) into a folder of its own, run from a folder without the repository in it."""
    wheel = build_wheel(tmp_path / "wheel")
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(code: str) -> subprocess.CompletedProcess:
        # -S: not the editable checkout's site-packages; the installed folder first, then the deps
        deps = [p for p in sys.path if p.endswith("site-packages")]
        script = f"import sys; sys.path[:0] = {[str(target)] + deps!r}\n{code}"
        return subprocess.run([sys.executable, "-S", "-c", script], cwd=elsewhere, capture_output=True, text=True, timeout=120)

    assert "No module named 'tui'" in run("import tui").stderr
    found = run("import slurmml, slurmml.tui.app, hydra_plugins.slurmml_launcher.slurmml_launcher as plugin\n"
                "from slurmml.launcher.templates import shipped_templates, load_template\n"
                "from importlib import resources\n"
                "print(slurmml.__file__.startswith(sys.path[0]), shipped_templates(), bool(load_template('default')))\n"
                "print(resources.files('slurmml.hydra_conf').joinpath('hydra/launcher/slurmml.yaml').is_file())")
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == ["True", "['default',", "'modules_venv']", "True", "True"], found.stdout
