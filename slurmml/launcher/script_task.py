"""What runs inside the job of a script run: a plain `python SCRIPT OVERRIDES...`, tracked as a slurmml run.

A run that came from another machine (`slurmml sync`) has no staged Hydra payload, only the code that ran and its
command line; its clone runs that command in the code's snapshot (slurmml.launcher.script_runs). This wrapper gives
the script its run's spool before it starts (so `slurmml.log` writes there), runs it as `__main__`, records the
resolved config Hydra wrote, and ends the run with the script's outcome (a script that raises or exits non-zero
is FAILED, and exits non-zero for Slurm too).
"""

from __future__ import annotations

import os
import runpy
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


@dataclass(frozen=True)
class ScriptRun:
    id: str
    overrides: list[str]
    run_dir: str


@dataclass(frozen=True)
class ScriptPayload:
    """A script batch's payload.pkl: where the code is, which script, each run's command-line overrides."""

    cwd: str
    script: str  # relative to cwd
    runs: list[ScriptRun] = field(default_factory=list)
    hydra: bool = True  # a Hydra app: its run folder is set with hydra.run.dir

    @property
    def overrides(self) -> list[list[str]]:
        return [run.overrides for run in self.runs]


def script_argv(payload: ScriptPayload, run: ScriptRun) -> list[str]:
    extra = [f"hydra.run.dir={run.run_dir}"] if payload.hydra else []
    return [str(Path(payload.cwd) / payload.script), *run.overrides, *extra]


def hydra_config(run_dir: Path) -> Optional[dict[str, Any]]:
    """The config Hydra resolved for the run (its .hydra/config.yaml), or None."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)  # type: ignore[return-value]
    except Exception:  # a config the run wrote but this cannot read: the run's outcome matters more
        return None


def exit_status(code: Any) -> int:
    """sys.exit's argument as a process exit status: None 0, an int itself, anything else (a message) 1."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def run(batch_dir: Path, index: int) -> int:
    from slurmml.launcher import batch
    from slurmml.launcher.recording import spool_path
    from slurmml.tracking import client
    from slurmml.tracking.spool import RUN_ID_ENV, SPOOL_ENV

    payload: ScriptPayload = batch.load_payload(batch_dir)  # type: ignore[assignment]
    this = payload.runs[index]
    spool = spool_path(batch_dir, index)
    os.environ.update({SPOOL_ENV: str(spool), RUN_ID_ENV: this.id, client.RUN_DIR_ENV: this.run_dir})
    Path(this.run_dir).mkdir(parents=True, exist_ok=True)
    client.start_run(spool, this.id, this.run_dir, None, this.overrides)
    argv = script_argv(payload, this)
    sys.argv = argv
    sys.path.insert(0, str(Path(argv[0]).parent))
    os.chdir(payload.cwd)
    status, error = 0, None
    try:
        runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exit:
        status = exit_status(exit.code)
    except BaseException:
        error = traceback.format_exc()
        print(error, file=sys.stderr, end="")
        status = 1
    config = hydra_config(Path(this.run_dir))
    if config is not None:
        from slurmml.tracking.secrets import mask_config

        client.current_writer().write({"k": "config", "t": client._time(), "config": mask_config(config)})
    client.end_run("COMPLETED" if status == 0 else "FAILED", status, error)
    return status


def main(argv: list[str]) -> int:
    from slurmml.launcher.task import index_from_arguments

    batch_dir, index = index_from_arguments(argv, os.environ)
    return run(batch_dir, index)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
