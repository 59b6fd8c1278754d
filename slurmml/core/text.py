"""Picking the telling lines out of free text that runs and Slurm tools leave (errors, tracebacks, stderr)."""

from __future__ import annotations

import re
from typing import Optional


def first_line(text: Optional[str]) -> str:
    """The first line that is not blank, stripped."""
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")


def last_line(text: Optional[str]) -> str:
    """The last line that is not blank, stripped."""
    return next((line.strip() for line in reversed((text or "").splitlines()) if line.strip()), "")


def error_line(text: Optional[str]) -> str:
    """The line of an error that says what went wrong: a traceback's last line (the exception), else the first."""
    first = first_line(text)
    return last_line(text) if first.startswith("Traceback") else first


def tool_error_lines(stderr: str) -> list[str]:
    """What a Slurm tool's stderr says went wrong: its lines that say error, without the tool's prefix
    (`scancel: error: Kill job error on job id 5: X` -> `Kill job error on job id 5: X`); [] when none does."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return [re.sub(r"^\w+:\s*error:\s*", "", line) for line in lines if "error" in line.lower()]
