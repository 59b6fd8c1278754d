"""The layers of docs/architecture.md, checked on the source: an import goes to its own layer or a lower one,
no two modules import each other (directly or round a loop, imports inside functions included), the pure
modules do no I/O, and every package folder is one the wheel installs."""

from __future__ import annotations

import ast
import functools
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# lowest first; a module belongs to the layer of its longest matching prefix
LAYERS = {
    "base": ("slurmml.errors", "slurmml.home", "slurmml.core"),
    "adapters": ("slurmml.slurm", "slurmml.registry", "slurmml.tracking", "slurmml.devcluster", "slurmml.integrations",
                 "slurmml.storage", "slurmml"),  # the package root is the in-job API: `import slurmml; slurmml.log(...)`
    "services": ("slurmml.launcher", "slurmml.poller", "slurmml.report", "slurmml.control"),
    "front ends": ("slurmml.cli", "slurmml.tui", "slurmml.__main__", "hydra_plugins"),
}
# decisions, parsing, rendering and view models: what they need comes in as data
PURE = ("slurmml.core", "slurmml.slurm.parse", "slurmml.slurm.accounting", "slurmml.tui.model")
IO = {"sqlite3", "subprocess", "socket", "shutil", "textual", "rich.console", "pynvml", "boto3", "slurmml.slurm.commands",
      "slurmml.registry", "slurmml.tracking"}
# folders installed under another name (pyproject.toml [tool.setuptools.package-dir])
SOURCE_FOLDERS = {"slurmml": "slurmml", "tui": "slurmml.tui", "hydra_plugins": "hydra_plugins"}


def module_files(root: Path = ROOT) -> dict[str, Path]:
    modules = {}
    for folder, name in SOURCE_FOLDERS.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([name, *parts])] = path
    return modules


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every slurmml module `name` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known and "." in target:
                target = target.rpartition(".")[0]  # `import slurmml.core.states` names slurmml.core.states
            if target in known or target.split(".")[0] not in ("slurmml", "hydra_plugins"):
                found.add(target)
    return found


def layer_of(module: str) -> int:
    best, layer = -1, -1
    for number, prefixes in enumerate(LAYERS.values()):
        for prefix in prefixes:
            matches = module == prefix or (module.startswith(prefix + ".") and prefix != "slurmml")
            if matches and len(prefix) > best:
                best, layer = len(prefix), number
    return layer


@functools.lru_cache(maxsize=None)
def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = module_files(root)
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    names = list(LAYERS)
    return [f"{module} ({names[layer_of(module)]}) imports {target} ({names[layer_of(target)]})"
            for module, targets in sorted(graph.items()) for target in sorted(targets)
            if target in graph and layer_of(target) > layer_of(module)]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph or target == node:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_every_module_has_a_layer() -> None:
    assert [m for m in import_graph() if layer_of(m) < 0] == []


def test_no_import_goes_up_a_layer() -> None:
    assert upward_imports(import_graph()) == []


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_pure_modules_do_no_io() -> None:
    graph = import_graph()
    pure = [m for m in graph if any(m == p or m.startswith(p + ".") for p in PURE)]
    assert "slurmml.core.states" in pure
    found = [f"{m} imports {t}" for m in pure for t in sorted(graph[m])
             if any(t == io or t.startswith(io + ".") for io in IO)]
    assert found == []


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """A back-arrow and a two-module cycle in a throwaway tree are both reported."""
    (tmp_path / "slurmml" / "core").mkdir(parents=True)
    (tmp_path / "slurmml" / "cli").mkdir()
    (tmp_path / "tui").mkdir()
    (tmp_path / "hydra_plugins").mkdir()
    (tmp_path / "slurmml" / "__init__.py").write_text("")
    (tmp_path / "slurmml" / "core" / "__init__.py").write_text("")
    (tmp_path / "slurmml" / "core" / "states.py").write_text("def f():\n    from slurmml.cli import main\n")
    (tmp_path / "slurmml" / "cli" / "__init__.py").write_text("from slurmml.cli.report import x\nmain = 1\n")
    (tmp_path / "slurmml" / "cli" / "report.py").write_text("from slurmml.cli import main\nx = 1\n")
    graph = import_graph(tmp_path)
    assert upward_imports(graph) == ["slurmml.core.states (base) imports slurmml.cli (front ends)"]
    assert cycles(graph) == [["slurmml.cli", "slurmml.cli.report"]]


def test_every_package_folder_is_installed() -> None:
    """pyproject.toml lists the packages (the folders tui/, hydra_conf/, sbatch_templates/ install under
    slurmml's name): a new folder that is not listed would work in the checkout and be missing from the wheel."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    renamed = {folder: name for name, folder in config["package-dir"].items()}
    on_disk = set()
    inits = [init for top in ("slurmml", "tui", "hydra_conf", "sbatch_templates", "hydra_plugins")
             for init in (ROOT / top).glob("**/__init__.py")]
    for init in inits:
        relative = init.parent.relative_to(ROOT)
        top = relative.parts[0]
        name = ".".join(relative.parts)
        if top in renamed:
            name = ".".join([renamed[top], *relative.parts[1:]])
        on_disk.add(name)
    assert on_disk - listed == set()


@pytest.mark.parametrize("module", ["slurmml.core.states", "slurmml.cli", "slurmml.tui.app"])
def test_layers_know_the_main_modules(module: str) -> None:
    assert module in import_graph()
