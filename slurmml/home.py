"""Where slurmml keeps its own state: $SLURMML_HOME, default ~/.slurmml (user-only permissions)."""

from __future__ import annotations

import os
from pathlib import Path


def slurmml_home() -> Path:
    home = Path(os.environ.get("SLURMML_HOME") or Path.home() / ".slurmml").expanduser()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home
