"""The one adapter every command with a captured answer goes through (Slurm's, git, a clone's python):
argv in, stdout/stderr/exit code out. Processes whose output streams elsewhere (local tasks, devcluster.sh)
are started by their owners."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False  # no answer within the timeout: the command may still have done its work

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def available(program: str) -> bool:
    return shutil.which(program) is not None


def run_command(
    argv: Sequence[str],
    *,
    timeout_s: float = 30.0,
    env: Optional[Mapping[str, str]] = None,
) -> CommandResult:
    """Run argv, always capturing stderr. A missing program or a hang is a failed result, not an exception."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout_s,
            env=None if env is None else dict(env), stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        return CommandResult(tuple(argv), 127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return CommandResult(tuple(argv), 124, "", f"{argv[0]}: no answer within {timeout_s:g} s", timed_out=True)
    return CommandResult(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
