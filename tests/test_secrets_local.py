"""Secrets given on the command line never reach what slurmml stores or shows (docs/architecture.md,
"Nothing secret is stored"), and a clone still runs with the real values. A real Hydra sweep on the local
backend: no cluster needed."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

from slurmml.control.actions import clone_run
from slurmml.launcher import batch
from slurmml.registry.registry import Registry
from slurmml.core.states import is_final
from tests.conftest import copy_app, run_app, wait_until


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slurmml", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)


def files_holding(folder: Path, secrets: list[str], skip: tuple[str, ...] = ()) -> list[str]:
    """The files under `folder` that contain a secret, read by a child process. Reading a database file here
    would close a descriptor of it, and closing any descriptor of a file drops every POSIX lock this process
    holds on it: the Registry connections open in this process would go on unlocked while other processes
    write (SQLite's "How To Corrupt An SQLite Database File", 2.2)."""
    script = ("import json, pathlib, sys\n"
              "folder, secrets, skip = pathlib.Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])\n"
              "print(json.dumps([f'{p}: {s}' for p in folder.rglob('*') if p.is_file() and p.suffix not in skip\n"
              "                  for data in [p.read_bytes()] for s in secrets if s.encode() in data]))\n")
    child = subprocess.run([sys.executable, "-c", script, str(folder), json.dumps(secrets), json.dumps(list(skip))],
                           capture_output=True, text=True, check=True, timeout=120)
    return json.loads(child.stdout)


def test_secrets_on_the_command_line_are_masked_everywhere_and_a_clone_gets_the_real_ones(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    secrets = [f"sk-{tag}-api", f"aws-{tag}-secret", f"pw-{tag}-db"]
    app = copy_app("tiny", tmp_path / "app")
    launched = run_app(["tiny.py", "-m", "hydra/launcher=slurmml_local", "hydra.sweep.dir=out", "x=1",
                        f"+api_key={secrets[0]}", f"+env.AWS_SECRET_ACCESS_KEY={secrets[1]}",
                        f"+db={{host:h,password:{secrets[2]}}}"], cwd=app)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert [s for s in secrets if s in launched.stderr] == []  # the launch's own messages
    home = Path(os.environ["SLURMML_HOME"])
    sweep = json.loads(next((app / "out" / ".slurmml").glob("*/sweep.json")).read_text())["sweep_id"]
    parent = f"{sweep}-0"

    shown = [cli("show", parent), cli("show", parent, "--json"), cli("runs", "--json"), cli("runs"),
             cli("status", sweep, "--json"), cli("report", "--sweep", sweep, "--json")]
    for out in shown:
        assert out.returncode == 0, out.stderr
        assert [s for s in secrets if s in out.stdout + out.stderr] == [], out.args
    show = json.loads(shown[1].stdout)
    assert show["overrides"] == ["x=1", "+api_key=***", "+env.AWS_SECRET_ACCESS_KEY=***", "+db={host:h,password:***}"]
    assert show["config"]["api_key"] == "***" and show["config"]["db"] == {"host": "h", "password": "***"}
    registry = Registry(home / "registry.db", create=False)
    argv = json.loads(registry.conn.execute("SELECT argv FROM sweeps WHERE id = ?", (sweep,)).fetchone()[0])
    assert "+api_key=***" in argv
    # the registry's files (with its write-ahead log), the sweep records, and every slurmml file of the sweep
    # but the staged payload and the task results: those hold the real values, for the clone, user-only
    assert files_holding(home, secrets) == []
    assert files_holding(app / "out" / ".slurmml", secrets, skip=(".pkl",)) == []
    state_dir = app / "out" / ".slurmml" / sweep
    payload = state_dir / "batch_0" / batch.PAYLOAD
    assert secrets[0].encode() in payload.read_bytes()
    assert secrets[0] in (app / "out" / "multirun.yaml").read_text()  # Hydra's own, as the README says
    assert stat.S_IMODE(payload.stat().st_mode) == 0o600
    assert stat.S_IMODE((app / "out" / ".slurmml").stat().st_mode) == 0o700
    for folder in [state_dir, *(p for p in state_dir.rglob("*") if p.is_dir())]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder

    # the TUI's clone: the registry's (masked) overrides, edited, as the new run's whole list
    edited = [o.replace("x=1", "x=3") for o in registry.run(parent)["overrides"]]
    answer = clone_run(registry.path, parent, edited)
    assert answer.ok, answer.message

    def ended() -> dict | None:
        registry.ingest()
        run = registry.run(answer.new_run_id)
        return run if is_final(run["state"]) else None

    child = wait_until(ended, timeout_s=60, interval_s=0.5, what="the local clone to end")
    assert child["state"] == "COMPLETED" and child["config"]["x"] == 3
    assert child["overrides"] == ["x=3", "+api_key=***", "+env.AWS_SECRET_ACCESS_KEY=***", "+db={host:h,password:***}"]
    composed = (app / "out" / "1" / ".hydra" / "config.yaml").read_text()  # what the clone's task was given
    assert all(secret in composed for secret in secrets), composed
    assert files_holding(home, secrets) == []
    assert files_holding(app / "out" / ".slurmml", secrets, skip=(".pkl",)) == []
