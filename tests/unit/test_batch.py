import json
import os
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus

from slurmml.launcher import batch


def test_write_atomic_writes_content_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    batch.write_atomic(target, b"first")
    batch.write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["file.bin"]


def test_finished_indices_without_results_dir_is_empty(tmp_path):
    assert batch.finished_indices(tmp_path) == set()


def test_finished_indices_ignores_temp_and_odd_names(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    for name in ["0.pkl", "7.pkl", "12.pkl", ".3.pkl.abc123", "4.pkl.tmp", "x.pkl", "5.txt", "-1.pkl", "notes"]:
        (results / name).write_bytes(b"")
    assert batch.finished_indices(tmp_path) == {0, 7, 12}


def test_write_result_then_read_result(tmp_path):
    job_return = JobReturn(overrides=["a=1"], status=JobStatus.COMPLETED, _return_value={"loss": 0.5})
    batch.write_result(tmp_path, 3, job_return)
    assert batch.finished_indices(tmp_path) == {3}
    loaded = batch.read_result(tmp_path, 3)
    assert loaded.overrides == ["a=1"]
    assert loaded.return_value == {"loss": 0.5}


def test_write_result_with_unpicklable_return_value_saves_none(tmp_path, capsys):
    class Unpicklable:
        def __init__(self):
            self.callback = lambda: None

        def __reduce__(self):
            raise TypeError("cannot pickle this")

    job_return = JobReturn(overrides=["a=2"], status=JobStatus.COMPLETED, _return_value=Unpicklable())
    batch.write_result(tmp_path, 0, job_return)

    loaded = batch.read_result(tmp_path, 0)
    assert loaded.status == JobStatus.COMPLETED
    assert loaded.overrides == ["a=2"]
    assert loaded.return_value is None
    assert "could not save" in capsys.readouterr().err
    assert os.listdir(tmp_path / "results") == ["0.pkl"]


def test_manifest_is_written_as_json(tmp_path):
    manifest = {"arrays": [{"job_id": "12", "offset": 0, "count": 3}], "log_dir": "/x/%j"}
    batch.write_manifest(tmp_path, manifest)
    assert json.loads((tmp_path / batch.MANIFEST).read_text()) == manifest


def test_payload_is_staged_and_loaded(tmp_path):
    payload = batch.Payload(
        hydra_context=None, task_function=lambda cfg: cfg["x"] * 2, config={"x": 21},
        singleton_state={}, overrides=[["x=21"]], initial_job_idx=0, import_path=[],
    )
    batch_dir = tmp_path / "batch_0"
    batch.stage(batch_dir, payload)
    loaded = batch.load_payload(batch_dir)
    assert loaded.task_function(loaded.config) == 42
    assert loaded.overrides == [["x=21"]]


def test_task_index_from_arguments():
    from slurmml.launcher.task import index_from_arguments

    assert index_from_arguments(["/b", "7"], {}) == (Path("/b"), 7)
    assert index_from_arguments(["/b", "--offset", "100"], {"SLURM_ARRAY_TASK_ID": "5"}) == (Path("/b"), 105)
    assert index_from_arguments(["/b", "--offset", "3"], {}) == (Path("/b"), 3)  # a single job, not an array


def test_new_folders_are_user_only(tmp_path):
    target = tmp_path / "sweep" / ".slurmml" / "id" / "sweep.json"
    batch.write_atomic(target, b"{}")
    for folder in (tmp_path / "sweep", tmp_path / "sweep" / ".slurmml", target.parent):
        assert folder.stat().st_mode & 0o777 == 0o700
    assert target.stat().st_mode & 0o777 == 0o600


def test_unstage_of_a_sweeps_only_batch_removes_the_sweep_and_only_folders_it_created(tmp_path):
    sweep_dir = tmp_path / "sweep"
    (sweep_dir / "mine").mkdir(parents=True)  # the user's, there before
    (sweep_dir / "mine" / "notes.txt").write_text("keep")
    logs = sweep_dir / ".slurmml" / "logs"
    created = batch.missing_folders(logs, sweep_dir / ".slurmml", sweep_dir / "mine")
    assert created == [logs, sweep_dir / ".slurmml"]
    batch_dir = batch.batch_dir_for(sweep_dir, "s1", 0)
    batch.write_atomic(batch.sweep_state_dir(sweep_dir, "s1") / batch.SWEEP_RECORD, b"{}")
    batch.write_atomic(batch_dir / "array_0.sbatch", b"#!/bin/bash")
    logs.mkdir()
    assert batch.unstage(sweep_dir, "s1", batch_dir, created) is True
    assert sorted(p.relative_to(sweep_dir).as_posix() for p in sweep_dir.rglob("*")) == ["mine", "mine/notes.txt"]


def test_unstage_of_a_later_batch_keeps_the_sweep_and_shared_folders(tmp_path):
    sweep_dir = tmp_path / "sweep"
    first, second = batch.batch_dir_for(sweep_dir, "s1", 0), batch.batch_dir_for(sweep_dir, "s1", 4)
    batch.write_atomic(first / "array_0.sbatch", b"#!/bin/bash")
    logs = sweep_dir / ".slurmml" / "logs"
    logs.mkdir()
    (logs / "1_0_0_log.err").write_text("a queued job's log")
    batch.write_atomic(second / "array_0.sbatch", b"#!/bin/bash")
    assert batch.unstage(sweep_dir, "s1", second, [logs]) is False  # logs holds a file: it stays
    assert first.is_dir() and not second.exists() and (logs / "1_0_0_log.err").is_file()


def test_unstage_of_a_batch_this_launch_never_staged_leaves_its_folder(tmp_path):
    """A clone that lost its job number to another clone: that batch folder is the other clone's."""
    sweep_dir = tmp_path / "sweep"
    parent, taken = batch.batch_dir_for(sweep_dir, "s1", 0), batch.batch_dir_for(sweep_dir, "s1", 1)
    batch.write_atomic(parent / batch.PAYLOAD, b"parent")
    batch.write_atomic(taken / batch.PAYLOAD, b"the other clone's")
    assert batch.unstage(sweep_dir, "s1", None, []) is False
    assert (parent / batch.PAYLOAD).is_file() and (taken / batch.PAYLOAD).is_file()
    alone = tmp_path / "alone"  # a sweep's first batch whose recording failed: only its sweep record is there
    batch.write_atomic(batch.sweep_state_dir(alone, "s2") / batch.SWEEP_RECORD, b"{}")
    assert batch.unstage(alone, "s2", None, []) is True and not (alone / ".slurmml" / "s2").exists()


def test_import_path_is_the_scripts_folder_and_the_cwd(tmp_path):
    assert batch.import_path(["src/train.py", "-m"], str(tmp_path)) == [str(tmp_path / "src"), str(tmp_path)]
    assert batch.import_path(["train.py"], str(tmp_path)) == [str(tmp_path)]
    assert batch.import_path(["-c"], str(tmp_path)) == [str(tmp_path)]
    assert batch.import_path(None, None) == []
