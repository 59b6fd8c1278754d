"""One run across its executions: spools of a run that was requeued and resumed, ingested in one pass or in
several, give one run with its executions, and curves with one value per step."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from slurmml.cli import main
from tests.unit.test_registry import make_registry, write


def start(t: float, restart: int | None, host: str = "n1") -> dict:
    slurm = {"SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "0", "SLURM_JOB_ID": "41"}
    if restart is not None:
        slurm["SLURM_RESTART_COUNT"] = str(restart)
    return {"k": "start", "t": t, "host": host, "run_dir": "/out/0", "config": {"lr": 0.1},
            "environment": {"slurm": slurm}}


def points(first: int, last: int, t0: float) -> list[dict]:
    return [{"k": "m", "t": t0 + s, "s": s, "v": {"loss": 10.0 - s}} for s in range(first, last + 1)]


def requeued_twice() -> list[list[dict]]:
    """Three executions: a time limit at step 7 (saved at 5), a preemption at step 9 (saved at 8), then the end.
    The first execution logged 6 and 7 after its save, which the second one trains again."""
    return [
        [start(100.0, None), *points(0, 7, 100.0),
         {"k": "requeue", "t": 109.0, "reason": "TIMEOUT", "step": 5, "checkpoint": "/out/0/checkpoints/step_5.pt"}],
        [start(200.0, 1, host="n2"), {"k": "resume", "t": 201.0, "step": 5, "checkpoint": "step_5.pt"},
         *points(6, 9, 200.0),
         {"k": "requeue", "t": 211.0, "reason": "PREEMPTED", "step": 8, "checkpoint": "step_8.pt"}],
        [start(300.0, 2), {"k": "resume", "t": 301.0, "step": 8, "checkpoint": "step_8.pt"}, *points(9, 12, 300.0),
         {"k": "end", "t": 320.0, "state": "COMPLETED", "exit_code": 0}],
    ]


@pytest.mark.parametrize("passes", ["one pass", "a pass per execution"])
def test_a_requeued_and_resumed_run_keeps_one_value_per_step(tmp_path: Path, passes: str) -> None:
    registry = make_registry(tmp_path, runs=1)
    spool = tmp_path / "0.jsonl"
    for execution in requeued_twice():
        write(spool, *execution)
        if passes != "one pass":
            registry.ingest()
    registry.ingest()
    steps = [tuple(row) for row in registry.conn.execute("SELECT step, time FROM metrics ORDER BY step")]
    assert [s for s, _ in steps] == list(range(13))  # each step once
    assert dict(steps)[6] == 206.0 and dict(steps)[9] == 309.0  # the value of the execution that went on
    superseded = [tuple(row) for row in registry.conn.execute("SELECT step, execution FROM superseded_metrics ORDER BY time")]
    assert superseded == [(6, 1), (7, 1), (9, 2)]
    run = registry.run("s1-0")
    assert run["metrics"]["loss"] == {"last": -2.0, "last_step": 12, "min": -2.0, "max": 10.0, "count": 13}
    assert run["state"] == "COMPLETED" and run["restarts"] == 2
    executions = run["executions"]
    assert [(e["number"], e["state"], e["reason"], e["checkpoint_step"], e["resumed_from"]) for e in executions] == [
        (0, "REQUEUED", "TIMEOUT", 5, None), (1, "REQUEUED", "PREEMPTED", 8, 5), (2, "COMPLETED", None, None, 8)]
    assert [e["host"] for e in executions] == ["n1", "n2", "n1"]
    assert [e["job_id"] for e in executions] == ["40_0"] * 3
    assert [e["elapsed_s"] for e in executions] == [9.0, 11.0, 20.0]
    assert [(e["superseded"], e["repeated_steps"]) for e in executions] == [(0, 0), (2, 2), (1, 1)]
    assert executions[1]["lost_s"] == 1.0  # steps 6 and 7 of the first execution: 106 s to 107 s


def test_the_run_is_queued_between_a_requeue_and_the_next_start(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, runs=1)
    write(tmp_path / "0.jsonl", *requeued_twice()[0])
    registry.ingest()
    run = registry.run("s1-0")
    assert run["state"] == "QUEUED"
    assert run["states"][-1]["source"] == "requeue (TIMEOUT)"


def test_a_refused_requeue_leaves_the_execution_running(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, runs=1)
    write(tmp_path / "0.jsonl", start(100.0, None), *points(0, 3, 100.0),
          {"k": "requeue", "t": 104.0, "reason": "TIMEOUT", "step": 3, "checkpoint": None},
          {"k": "requeue_refused", "t": 104.5, "reason": "TIMEOUT", "problem": "Requested operation is disabled"},
          *points(4, 5, 100.0))
    registry.ingest()
    run = registry.run("s1-0")
    assert run["state"] == "RUNNING"
    assert [(e["state"], e["reason"]) for e in run["executions"]] == [("RUNNING", None)]
    assert run["executions"][0]["ended"] == 105.0  # its latest record


def test_an_execution_killed_before_it_wrote_anything_more_is_requeued_by_the_next_start(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, runs=1)
    write(tmp_path / "0.jsonl", start(100.0, None), *points(0, 2, 100.0), start(200.0, 2))
    registry.ingest()
    executions = registry.run("s1-0")["executions"]
    assert [(e["number"], e["state"]) for e in executions] == [(0, "REQUEUED"), (2, "RUNNING")]


def test_a_resubmission_under_a_new_job_counts_on_from_the_last_execution(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, runs=1)
    resubmitted = start(300.0, None)
    resubmitted["environment"]["slurm"].update(SLURM_ARRAY_JOB_ID="77", SLURM_ARRAY_TASK_ID="3")
    write(tmp_path / "0.jsonl", start(100.0, None), {"k": "end", "t": 110.0, "state": "FAILED", "exit_code": 1},
          resubmitted)
    registry.ingest()
    executions = registry.run("s1-0")["executions"]
    assert [(e["number"], e["job_id"], e["state"]) for e in executions] == [(0, "40_0", "FAILED"), (1, "77_3", "RUNNING")]


def test_show_lists_the_executions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = make_registry(tmp_path, runs=1)
    for execution in requeued_twice():
        write(tmp_path / "0.jsonl", *execution)
    registry.ingest()
    registry.close()
    monkeypatch.setenv("SLURMML_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "80")
    shown = CliRunner().invoke(main, ["show", "s1-0"])
    assert shown.exit_code == 0, shown.output
    section = shown.output[shown.output.index("executions"):]
    assert "PREEMPTED" in section and "TIMEOUT" in section and "COMPLETED" in section
    assert max(len(line) for line in shown.output.splitlines()) <= 80


def test_the_gpu_samples_of_a_jobs_other_nodes_are_ingested_from_their_own_files(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, runs=1)
    node_spool = tmp_path / "0.node-1.jsonl"
    first = start(100.0, None)
    first["node_spools"] = [str(node_spool)]
    gpu = {"k": "gpu", "gpu": 0, "util": 50.0, "mem_used": 1.0, "mem_total": 2.0}
    write(tmp_path / "0.jsonl", first, {**gpu, "t": 101.0, "uuid": "GPU-a"})
    registry.ingest()  # the other node has not sampled yet: no file, no problem
    write(node_spool, {**gpu, "t": 101.5, "uuid": "GPU-b"}, {**gpu, "t": 102.5, "uuid": "GPU-b"})
    registry.ingest()
    write(node_spool, {**gpu, "t": 103.5, "uuid": "GPU-c"})
    registry.ingest()
    registry.ingest()  # nothing twice
    samples = [tuple(r) for r in registry.conn.execute("SELECT uuid, time FROM system_samples ORDER BY time")]
    assert samples == [("GPU-a", 101.0), ("GPU-b", 101.5), ("GPU-b", 102.5), ("GPU-c", 103.5)]


def test_summaries_recomputed_after_a_resume_follow_the_ingests_own_rule(tmp_path: Path) -> None:
    from slurmml.registry.executions import summarize_again

    registry = make_registry(tmp_path, runs=1)
    write(tmp_path / "0.jsonl", start(100.0, None), *points(0, 4, 100.0),
          {"k": "m", "t": 106.0, "s": 2, "v": {"loss": 99.0}},  # a step back: not the last
          {"k": "m", "t": 107.0, "s": None, "v": {"loss": 0.5}})  # no step: the last
    registry.ingest()
    incremental = [tuple(r) for r in registry.conn.execute("SELECT * FROM metric_summary")]
    summarize_again(registry.conn, 1)
    assert [tuple(r) for r in registry.conn.execute("SELECT * FROM metric_summary")] == incremental
    assert incremental[0][2:4] == (0.5, None)
