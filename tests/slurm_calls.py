"""Count the Slurm commands a process tree runs, with wrapper scripts put first on PATH.

For the tests and benchmarks, to check load on the controller (calls, not timers).
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

COMMANDS = ("sbatch", "squeue", "sacct", "scontrol", "sinfo", "scancel", "srun")


class SlurmCallCounter:
    def __init__(self, directory: Path) -> None:
        self.bin = directory / "bin"
        self.log = directory / "calls.log"
        self.bin.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        for name in COMMANDS:
            real = shutil.which(name)
            if real is None:
                continue
            wrapper = self.bin / name
            # one line per call; O_APPEND writes of one short line do not interleave
            wrapper.write_text(f'#!/bin/sh\necho "{name}" >> "{self.log}"\nexec "{real}" "$@"\n')
            wrapper.chmod(0o755)

    def environ(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        return env

    def counts(self) -> Counter[str]:
        return Counter(self.log.read_text().split())

    def reset(self) -> None:
        self.log.write_text("")
