"""Requeue on Slurm's warning signal: the pure rules (why the signal came, whether to requeue), and the in-job
side outside Slurm (the flag, the save at the next checkpoint point, ranks agreeing on the step)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from slurmml.core import requeue as rules
from slurmml.slurm.parse import parse_scontrol_job

DATA = Path(__file__).parent / "data"
NOW = time.mktime(time.strptime("2026-12-02T04:00:00", "%Y-%m-%dT%H:%M:%S"))


def stamp(offset_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(NOW + offset_s))


def test_a_preempted_job_is_told_apart_by_its_preempt_time_not_by_the_clock():
    # a preemption's EndTime is now + GraceTime: as near as a time limit's, so PreemptTime decides
    job = {"JobState": "RUNNING", "PreemptTime": stamp(-1), "EndTime": stamp(30)}
    assert rules.why_warned(job, NOW, signal_delay_s=120) == rules.PREEMPTED


def test_the_time_limit_is_an_end_time_about_the_warning_away():
    job = {"JobState": "RUNNING", "PreemptTime": "None", "EndTime": stamp(118)}
    assert rules.why_warned(job, NOW, signal_delay_s=120) == rules.TIMEOUT
    early = {**job, "EndTime": stamp(120 + rules.TIME_LIMIT_SLACK_S)}  # Slurm's timer ticks early
    assert rules.why_warned(early, NOW, signal_delay_s=120) == rules.TIMEOUT


def test_a_signal_long_before_the_end_and_without_preemption_came_from_a_person():
    job = {"JobState": "RUNNING", "PreemptTime": "None", "EndTime": stamp(3600)}
    assert rules.why_warned(job, NOW, signal_delay_s=120) == rules.SIGNAL


def test_without_slurms_word_the_signal_counts_as_a_time_limit():
    assert rules.why_warned({}, NOW, signal_delay_s=120) == rules.TIMEOUT
    assert rules.why_warned({"EndTime": "Unknown"}, NOW, signal_delay_s=120) == rules.TIMEOUT


def test_only_time_limits_use_up_max_num_timeout():
    assert rules.decide(rules.TIMEOUT, 0, 2, "7_1").requeue
    used_up = rules.decide(rules.TIMEOUT, 2, 2, "7_1")
    assert not used_up.requeue and "no requeue left" in used_up.message and "max_num_timeout=2" in used_up.message
    assert rules.decide(rules.PREEMPTED, 5, 0, "7_1").requeue
    assert rules.decide(rules.SIGNAL, 5, 0, "7_1").requeue
    outside = rules.decide(rules.PREEMPTED, 0, 3, "")
    assert not outside.requeue and "not a Slurm job" in outside.message


def test_a_time_limit_warning_that_came_early_trains_on_until_the_lead_asked_for():
    job = {"PreemptTime": "None", "EndTime": stamp(45)}  # warned 45 s before the end, 15 s asked for
    assert rules.stop_at(rules.TIMEOUT, job, NOW, lead_s=15) == NOW + 30
    assert rules.stop_at(rules.TIMEOUT, {"EndTime": stamp(5)}, NOW, lead_s=15) == NOW  # late: at once
    assert rules.stop_at(rules.PREEMPTED, {"EndTime": stamp(10)}, NOW, lead_s=5) == NOW
    assert rules.stop_at(rules.TIMEOUT, {}, NOW, lead_s=15) == NOW  # no word from Slurm


def test_the_watchdog_waits_only_for_a_task_that_calls_checkpoint_points():
    assert rules.watchdog_delay_s(120, cooperative=False) == 0
    assert rules.watchdog_delay_s(120, cooperative=True) == 90
    assert rules.watchdog_delay_s(4, cooperative=True) == 5


def test_scontrol_show_job_fields_from_a_recorded_answer():
    recorded = DATA / "scontrol_show_job_running.txt"
    fields = parse_scontrol_job(recorded.read_text())
    assert fields["JobState"] == "RUNNING" and fields["JobId"] == "179" and fields["ArrayTaskId"] == "2"
    assert "PreemptTime" not in fields  # a cluster without preemption does not print it
    assert rules.scontrol_time(fields["EndTime"]) - rules.scontrol_time(fields["StartTime"]) == 60
    assert fields["Requeue"] == "1" and fields["Restarts"] == "0"
    assert fields["Command"].endswith("array_0.sbatch")
    assert rules.why_warned(fields, rules.scontrol_time(fields["EndTime"]) - 30, signal_delay_s=30) == rules.TIMEOUT


def test_scontrol_time_reads_slurms_local_time_and_none():
    assert rules.scontrol_time(stamp(0)) == NOW
    assert rules.scontrol_time("None") is None
    assert rules.scontrol_time("garbage") is None


# ---------------------------------------------------------------- the in-job side, outside Slurm

TRAIN = """
import os, signal, sys
import slurmml
from slurmml.tracking import requeue
steps = int(sys.argv[1]); signal_at = int(sys.argv[2])
for step in range(steps):
    if step == signal_at:
        os.kill(os.getpid(), signal.SIGUSR2)
    slurmml.log(step=step, loss=1.0 / (step + 1))
    slurmml.checkpoint_point(step, every=None, counter=step)
print("finished", steps)
"""


def run_script(tmp_path: Path, script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent(script))
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "SLURMML"))}
    environ.update({"SLURMML_HOME": str(tmp_path / "home"), **(env or {})})
    return subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, env=environ,
                          timeout=120, cwd=tmp_path)


def spool_records(tmp_path: Path) -> list[dict]:
    (spool,) = (tmp_path / "home" / "runs").glob("local-*/spool.jsonl")
    return [json.loads(line) for line in spool.read_text().splitlines()]


def test_the_signal_saves_at_the_next_checkpoint_point_and_a_run_outside_slurm_trains_on(tmp_path):
    done = run_script(tmp_path, TRAIN, "6", "2")
    assert done.returncode == 0, done.stderr
    assert "finished 6" in done.stdout
    assert "not a Slurm job: nothing to requeue" in done.stderr
    assert "Traceback" not in done.stderr
    (run_dir,) = (tmp_path / "home" / "runs").glob("local-*")
    saved = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert saved == ["step_000000002.pt"]  # only when stopping: every=None
    records = spool_records(tmp_path)
    assert [r["k"] for r in records if r["k"] not in ("m", "start")] == ["end"]  # nothing requeued
    assert records[-1]["state"] == "COMPLETED"


def test_a_task_without_checkpoint_points_is_not_killed_by_the_signal(tmp_path):
    script = """
    import os, signal, time
    import slurmml
    from slurmml.tracking import requeue
    requeue.install()
    os.kill(os.getpid(), signal.SIGUSR2)
    time.sleep(0.5)  # the watchdog thread asks at once; outside Slurm it only says so
    slurmml.log(step=0, loss=1.0)
    print("alive")
    """
    done = run_script(tmp_path, script)
    assert done.returncode == 0 and "alive" in done.stdout, done.stderr
    assert "not a Slurm job: nothing to requeue" in done.stderr


DDP = """
import os, signal, sys
import torch, torch.distributed as dist
import slurmml
rank = int(sys.argv[1])
os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2],
                  GLOO_SOCKET_IFNAME="lo")
dist.init_process_group("gloo")
for step in range(8):
    if rank == 1 and step == 3:
        os.kill(os.getpid(), signal.SIGUSR2)  # only one rank hears it
    if slurmml.stop_requested():
        print(f"rank {rank} stops at {step}", flush=True)
        break
dist.destroy_process_group()
"""


def test_every_rank_stops_at_the_same_step_when_one_hears_the_signal(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "ddp.py"
    path.write_text(DDP)
    port = str(29500 + os.getpid() % 1000)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "SLURMML"))}
    environ["SLURMML_HOME"] = str(tmp_path / "home")
    ranks = [subprocess.Popen([sys.executable, str(path), str(rank), port], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=environ) for rank in (0, 1)]
    outputs = [p.communicate(timeout=120) for p in ranks]
    assert all(p.returncode == 0 for p in ranks), [o[1][-2000:] for o in outputs]
    assert "rank 0 stops at 3" in outputs[0][0] and "rank 1 stops at 3" in outputs[1][0]


def test_a_recorded_preemption_is_told_from_a_recorded_running_job():
    preempted = parse_scontrol_job((DATA / "scontrol_show_job_preempted.txt").read_text())
    running = parse_scontrol_job((DATA / "scontrol_show_job_preemptible.txt").read_text())
    signalled_at = rules.scontrol_time(preempted["PreemptTime"])
    assert rules.scontrol_time(preempted["EndTime"]) - signalled_at == 10  # GraceTime: as near as a time limit
    assert rules.why_warned(preempted, signalled_at, signal_delay_s=30) == rules.PREEMPTED
    assert running["PreemptTime"] == "None"
    assert rules.why_warned(running, signalled_at, signal_delay_s=30) == rules.SIGNAL  # its EndTime is 5 min away
