"""Find an sbatch template by name (shipped in sbatch_templates/) or by path."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Optional

from slurmml.errors import SlurmmlError
from slurmml.launcher.plan import Template, parse_template


def shipped_templates() -> list[str]:
    return sorted(p.name[:-3] for p in resources.files("slurmml.sbatch_templates").iterdir() if p.name.endswith(".sh"))


def load_template(name_or_path: Optional[str]) -> Template:
    if not name_or_path:
        return Template()
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return parse_template(path.read_text(), str(path))
    shipped = resources.files("slurmml.sbatch_templates") / f"{name_or_path}.sh"
    if "/" not in name_or_path and shipped.is_file():
        return parse_template(shipped.read_text(), f"sbatch_templates/{name_or_path}.sh")
    raise SlurmmlError(
        f"template '{name_or_path}' not found: not a file, and not one of the shipped templates "
        f"({', '.join(shipped_templates())})"
    )
