"""Lazy heavy imports: plugin discovery, the CLI and the pure core stay light (docs/architecture.md, "Layers")."""

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


def slurmml_modules() -> list[str]:
    import pkgutil

    import slurmml

    # the integrations import their frameworks (optional extras), and their own tests check what they import
    return [m.name for m in pkgutil.walk_packages(slurmml.__path__, "slurmml.")
            if not m.name.endswith("__main__") and not m.name.startswith("slurmml.integrations.")]


def test_no_slurmml_module_imports_the_tui_or_textual() -> None:
    """The core stays usable without the TUI's stack: `slurmml tui` imports it only when it runs."""
    modules = slurmml_modules()
    assert "slurmml.registry.browse" in modules and "slurmml.cli.tui" in modules
    loaded = modules_after("import " + ", ".join(modules))
    assert {m for m in loaded if m.split(".")[0] in ("textual", "textual_plotext") or m.startswith("slurmml.tui")} == set()


def test_tui_is_imported_only_inside_the_tui_command() -> None:
    """No module under slurmml/ names textual at all; `slurmml.tui` is named only inside function bodies."""
    import ast
    from pathlib import Path

    import slurmml

    where_tui: list[str] = []
    for path in sorted(Path(slurmml.__file__).parent.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        inside_functions = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                            for node in ast.walk(fn)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            tops = {name.split(".")[0] for name in names}
            assert not tops & {"textual", "textual_plotext"}, f"{path}:{node.lineno} imports textual"
            if any(name == "slurmml.tui" or name.startswith("slurmml.tui.") for name in names):
                assert id(node) in inside_functions, f"{path}:{node.lineno} imports tui at module level"
                where_tui.append(path.name)
    assert set(where_tui) == {"tui.py"}  # slurmml/cli/tui.py
