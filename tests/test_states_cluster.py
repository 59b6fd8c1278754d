"""Every way a job ends on the real dev cluster, reconciled by the real Poller (real clock, short intervals).

One sweep holds the cases that share a 1-minute time limit (completed, raising, time limit, scancel,
scontrol requeue); over-memory runs in a second sweep with its own memory request, submitted before
anything is waited for, so the cases run at the same time (about 70 s in all). Over-memory needs
JobAcctGatherParams=OverMemoryKill on the dev cluster (no cgroups there): without it that case is skipped.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from slurmml.poller.loop import Poller, poll_until_final
from slurmml.registry.registry import Registry
from tests.slurm_calls import SlurmCallCounter
from slurmml.slurm.commands import run_command
from slurmml.slurm.parse import SQUEUE_FIELDS, parse_scontrol_config, parse_squeue
from tests.conftest import copy_app, run_app, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

OVER_MEMORY_LINE = "JobAcctGatherParams=OverMemoryKill"


def over_memory_kill() -> bool:
    """Without cgroups, Slurm kills a job over its memory only with JobAcctGatherParams=OverMemoryKill."""
    config = run_command(["scontrol", "show", "config"])
    return config.ok and "OverMemoryKill" in parse_scontrol_config(config.stdout).get("JobAcctGatherParams", "")


def queue(app: Path, name: str, sweep_dir: str, *overrides: str) -> str:
    result = run_app(["ends.py", "-m", "hydra/launcher=slurmml", f"hydra.launcher.name={name}",
                      f"hydra.sweep.dir={sweep_dir}", *overrides], cwd=app)
    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(r"queued sweep (\S+):", result.stderr)
    assert match, result.stderr
    return match.group(1)


def squeue_state(job_id: str) -> tuple[str, int]:
    out = run_command(["squeue", "--noheader", "--array", f"--jobs={job_id}",
                       f"--Format={SQUEUE_FIELDS}"])
    records = [r for r in parse_squeue(out.stdout) if r.job_id == job_id] if out.ok else []
    return (records[0].state, records[0].restarts) if records else ("GONE", 0)


def requeue_and_restart(job_id: str) -> None:
    """`scontrol requeue`, then wait for the next execution to start: the dev cluster's short cred_expire lets it
    start about 11 s later. Forcing `StartTime=now` instead loses a race: slurmd refuses a start in the same
    second as the requeue ("Job credential revoked") and the job really ends FAILED."""
    assert run_command(["scontrol", "requeue", job_id]).ok

    def pending_again() -> bool:  # COMPLETING (with RestartCnt 1 already) while the first execution is killed
        state, restarts = squeue_state(job_id)
        return restarts >= 1 and state == "PENDING"

    wait_until(pending_again, timeout_s=60, interval_s=0.5, what=f"requeued job {job_id} to be pending")

    def started_again() -> bool:
        return squeue_state(job_id)[0] != "PENDING"

    wait_until(started_again, timeout_s=60, interval_s=1, what=f"requeued job {job_id} to run again")


@pytest.fixture
def job_name(unique_name: str):
    """The sweeps' job name; whatever is left of them is cancelled when the test ends, passed or not."""
    yield unique_name
    run_command(["scancel", f"--name={unique_name}"])


def test_each_way_a_job_ends_gets_its_state(tmp_path: Path, job_name: str, slurm_calls: SlurmCallCounter) -> None:
    started = time.monotonic()
    app = copy_app("ends", tmp_path / "ends")
    sweeps = [queue(app, job_name, "sweep", "case=ok,fail,timeout,cancel,requeue",
                    "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=5")]
    memory = over_memory_kill()
    if memory:
        sweeps.append(queue(app, job_name, "sweep_memory", "case=memory", "sleep_s=40",
                            "hydra.launcher.mem_per_cpu=200M"))

    path = Path(os.environ["SLURMML_HOME"]) / "registry.db"
    registry = Registry(path, create=False)
    runs = {row["overrides"].split()[0].split("=", 1)[1]: row for sweep in sweeps for row in registry.runs(sweep=sweep)}
    assert set(runs) == {"ok", "fail", "timeout", "cancel", "requeue"} | ({"memory"} if memory else set())
    job = {case: row["slurm_job_id"] for case, row in runs.items()}

    # two pollers on the registry (two watchers), their squeue and sacct counted by wrappers on PATH
    def counted(argv):
        return run_command(argv, env=slurm_calls.environ())

    polling_since = time.monotonic()
    pollers = [Poller(r, run=counted, squeue_interval_s=5, sacct_interval_s=5) for r in (registry, Registry(path))]

    def poll_both() -> None:
        for poller in pollers:
            poller.poll()

    def running(*cases: str):
        poll_both()
        states = {case: registry.run(row["id"])["state"] for case, row in runs.items()}
        return all(states[case] == "RUNNING" for case in cases)

    wait_until(lambda: running("cancel", "requeue"), timeout_s=90, interval_s=1, what="the jobs to start")
    assert run_command(["scancel", job["cancel"]]).ok
    requeue_and_restart(job["requeue"])

    ids = [row["id"] for row in runs.values()]
    states = poll_until_final(pollers[1], ids, timeout_s=180, sleep=lambda s: (time.sleep(s), pollers[0].poll()))
    polled_s = time.monotonic() - polling_since
    calls = slurm_calls.counts()
    print(f"two pollers, {polled_s:.0f} s: squeue {calls['squeue']}, sacct {calls['sacct']}")
    assert 0 < calls["squeue"] <= polled_s / 5 + 1, (calls, polled_s)
    assert 0 < calls["sacct"] <= polled_s / 5 + 1, (calls, polled_s)
    by_case = {case: registry.run(row["id"]) for case, row in runs.items()}
    assert {case: run["state"] for case, run in by_case.items()} == {
        "ok": "COMPLETED", "fail": "FAILED", "timeout": "TIMEOUT", "cancel": "CANCELLED", "requeue": "COMPLETED",
        **({"memory": "OUT_OF_MEMORY"} if memory else {}),
    }, {case: (run["error"], run["restarts"], [(s["state"], s["source"]) for s in run["states"]])
         for case, run in by_case.items()}
    assert by_case["fail"]["exit_code"] == 1 and "ends app failing on purpose" in by_case["fail"]["error"]
    assert "TIMEOUT" in by_case["timeout"]["error"]
    assert re.search(r"CANCELLED by \w+ \(uid \d+\)", by_case["cancel"]["error"]), by_case["cancel"]["error"]
    assert by_case["requeue"]["restarts"] >= 1
    if memory:
        assert "exceeded memory limit" in by_case["memory"]["error"].lower()
    assert {s["state"] for s in by_case["ok"]["states"]} >= {"QUEUED", "RUNNING", "COMPLETED"}

    # the watcher sees a finished sweep: its summary at once, no waiting
    from slurmml.cli.watch import watch

    result = CliRunner().invoke(watch, [sweeps[0]], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "COMPLETED 2" in result.output and "TIMEOUT 1" in result.output and "CANCELLED 1" in result.output
    assert "best score 0.9" in result.output
    assert time.monotonic() - started < 240


def test_over_memory_needs_overmemorykill() -> None:
    if not over_memory_kill():
        pytest.skip(f"the dev cluster does not kill jobs over their memory: add {OVER_MEMORY_LINE} to "
                    "slurmml/devcluster/devcluster.sh (OUT_OF_MEMORY is then checked by the test above)")
