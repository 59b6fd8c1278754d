"""The one launch pipeline (slurmml.launcher.pipeline) without Slurm: what is recorded, what is kept and
what is taken back when a step fails, on a real registry file; `submit` stands in for sbatch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slurmml.errors import SlurmmlError
from slurmml.launcher import batch
from slurmml.launcher.pipeline import BatchTarget, launch_batch
from slurmml.launcher.recording import JobNumberTaken, record_runs
from slurmml.launcher.slurm_backend import ArraySubmission, SbatchNoAnswer
from slurmml.registry.registry import Registry


def payload(overrides: list[list[str]], initial_job_idx: int) -> batch.Payload:
    return batch.Payload(hydra_context=None, task_function=None, config={}, singleton_state={}, overrides=overrides,
                         initial_job_idx=initial_job_idx, import_path=[])


@pytest.fixture
def sweep(tmp_path: Path) -> tuple[Registry, Path]:
    """A recorded sweep `s1` with one staged batch (job 0), as a launch leaves it."""
    registry = Registry(tmp_path / "registry.db")
    sweep_dir = tmp_path / "sweep"
    first = BatchTarget("s1", sweep_dir, 0, [["x=1"]])
    registry.add_sweep({"id": "s1", "user": "me", "backend": "slurm", "sweep_dir": str(sweep_dir)},
                       first.run_rows("slurm"))
    batch.stage(first.batch_dir, payload(first.overrides, 0))
    return registry, sweep_dir


def submission(job_id: str, count: int = 1) -> ArraySubmission:
    return ArraySubmission(job_id, 0, count, "array_0.sbatch", "/logs")


def test_a_clone_is_recorded_staged_queued_and_described(sweep: tuple[Registry, Path]) -> None:
    registry, sweep_dir = sweep
    target = BatchTarget("s1", sweep_dir, 1, [["x=2"]], parent_id="s1-0")
    _, answer = launch_batch(target, payload(target.overrides, 1), "slurm", lambda rows: record_runs(registry, "s1", rows),
                             lambda staged: [submission("812")])
    run = registry.run("s1-1")
    assert (run["state"], run["slurm_job_id"], run["parent_id"], run["overrides"]) == ("QUEUED", "812", "s1-0", ["x=2"])
    assert run["log_path"] == "/logs/812_0_log.err" and answer == [submission("812")]
    assert batch.load_payload(target.batch_dir).overrides == [["x=2"]]
    manifest = json.loads((target.batch_dir / batch.MANIFEST).read_text())
    assert (manifest["backend"], manifest["num_tasks"], manifest["cloned_from"]) == ("slurm", 1, "s1-0")
    assert [a["job_id"] for a in manifest["arrays"]] == ["812"]


def test_a_local_batch_knows_its_logs_before_it_runs(sweep: tuple[Registry, Path]) -> None:
    registry, sweep_dir = sweep
    target = BatchTarget("s1", sweep_dir, 1, [["x=2"], ["x=3"]])
    launch_batch(target, payload(target.overrides, 1), "local", lambda rows: record_runs(registry, "s1", rows),
                 lambda staged: None)
    assert [registry.run(r)["state"] for r in target.run_ids] == ["SUBMITTING", "SUBMITTING"]
    assert registry.run("s1-2")["log_path"] == str(target.batch_dir / "logs" / "1.err")
    assert "arrays" not in json.loads((target.batch_dir / batch.MANIFEST).read_text())


def test_a_refused_submission_takes_back_the_runs_and_the_batch_but_not_the_sweep(sweep: tuple[Registry, Path]) -> None:
    registry, sweep_dir = sweep
    target = BatchTarget("s1", sweep_dir, 1, [["x=2"]])
    logs = sweep_dir / "logs"
    created = batch.missing_folders(logs)

    def refuse(staged: Path) -> list:
        logs.mkdir()
        raise SlurmmlError("sbatch refused the job: Invalid partition name specified")

    with pytest.raises(SlurmmlError, match="Invalid partition"):
        launch_batch(target, payload(target.overrides, 1), "slurm", lambda rows: record_runs(registry, "s1", rows),
                     refuse, created)
    assert [r["id"] for r in registry.runs(sweep="s1")] == ["s1-0"]
    assert not target.batch_dir.exists() and not logs.exists()
    assert (batch.batch_dir_for(sweep_dir, "s1", 0) / batch.PAYLOAD).is_file()


def test_a_job_number_another_clone_took_leaves_that_clones_batch_alone(sweep: tuple[Registry, Path]) -> None:
    registry, sweep_dir = sweep
    theirs = BatchTarget("s1", sweep_dir, 1, [["x=9"]])
    launch_batch(theirs, payload(theirs.overrides, 1), "local", lambda rows: record_runs(registry, "s1", rows),
                 lambda staged: None)
    mine = BatchTarget("s1", sweep_dir, 1, [["x=2"]])
    with pytest.raises(JobNumberTaken):
        launch_batch(mine, payload(mine.overrides, 1), "local", lambda rows: record_runs(registry, "s1", rows),
                     lambda staged: pytest.fail("nothing is started for a run that was not recorded"))
    assert registry.run("s1-1")["overrides"] == ["x=9"] and (theirs.batch_dir / batch.PAYLOAD).is_file()


def test_sbatch_without_an_answer_keeps_everything_the_job_may_read(sweep: tuple[Registry, Path]) -> None:
    registry, sweep_dir = sweep
    target = BatchTarget("s1", sweep_dir, 1, [["x=2"], ["x=3"]])

    def no_answer(staged: Path) -> list:
        raise SbatchNoAnswer("sbatch did not answer within 120 s (array 2 of 2)", [submission("77")])

    with pytest.raises(SlurmmlError, match="may have been queued all the same; check with `squeue --me` or "
                                           "`slurmml status s1`"):
        launch_batch(target, payload(target.overrides, 1), "slurm", lambda rows: record_runs(registry, "s1", rows),
                     no_answer)
    assert [registry.run(r)["state"] for r in target.run_ids] == ["QUEUED", "SUBMITTING"]
    assert (target.batch_dir / batch.PAYLOAD).is_file()
