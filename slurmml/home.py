"""Where slurmml keeps its own state: $SLURMML_HOME, default ~/.slurmml (user-only permissions)."""

from __future__ import annotations

import os
from pathlib import Path

from slurmml.errors import SlurmmlError


def slurmml_home() -> Path:
    home = Path(os.environ.get("SLURMML_HOME") or Path.home() / ".slurmml").expanduser()
    if home.exists() and not home.is_dir():
        raise SlurmmlError(f"SLURMML_HOME={home} is a file, not a folder")
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as error:  # a parent that is a file, no permission, a read-only filesystem
        raise SlurmmlError(f"cannot create SLURMML_HOME={home}: {error.strerror}") from None
    return home
