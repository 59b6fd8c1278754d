"""slurmml resubmit's pure parts: which runs, which array indexes, which launcher changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from slurmml.errors import SlurmmlError
from slurmml.launcher.resubmit import DEFAULT_STATES, array_spec, choose_states, parse_changes, plan, retarget_array

DATA = Path(__file__).resolve().parents[1] / "data"


def test_array_indexes_become_ranges_and_a_throttle_only_when_it_holds_some_back():
    assert array_spec([9, 0, 1, 2, 7, 10]) == "0-2,7,9-10"
    assert array_spec([4]) == "4"
    assert array_spec([1, 3, 5], parallelism=2) == "1,3,5%2"
    assert array_spec([1, 3], parallelism=256) == "1,3"


def test_states_default_to_every_bad_end_and_refuse_live_or_good_ones():
    assert choose_states([]) == DEFAULT_STATES
    assert choose_states(["oom".replace("oom", "out_of_memory"), "FAILED"]) == ("OUT_OF_MEMORY", "FAILED")
    with pytest.raises(SlurmmlError, match="--state COMPLETED: not a state a run can be resubmitted from"):
        choose_states(["COMPLETED"])
    with pytest.raises(SlurmmlError, match="RUNNING"):
        choose_states(["running"])


def test_runs_are_grouped_by_batch_with_their_task_index():
    runs = [{"id": "s-0", "state": "COMPLETED", "spool_path": "/sw/.slurmml/s/batch_0/spool/0.jsonl"},
            {"id": "s-1", "state": "FAILED", "spool_path": "/sw/.slurmml/s/batch_0/spool/1.jsonl"},
            {"id": "s-4", "state": "OUT_OF_MEMORY", "spool_path": "/sw/.slurmml/s/batch_4/spool/0.jsonl"},
            {"id": "s-5", "state": "TIMEOUT", "spool_path": "/sw/.slurmml/s/batch_4/spool/1.jsonl"},
            {"id": "s-6", "state": "FAILED", "spool_path": None}]
    batches = plan(runs, ("FAILED", "OUT_OF_MEMORY"))
    assert [(b.batch_dir.name, b.tasks) for b in batches] == [("batch_0", {"s-1": 1}), ("batch_4", {"s-4": 0})]


def test_launcher_changes_are_read_as_yaml_and_keep_the_code_the_same():
    assert parse_changes(["mem_gb=16", "hydra.launcher.timeout_min=120", "partition=big", "setup=[a, b]"]) == {
        "mem_gb": 16, "timeout_min": 120, "partition": "big", "setup": ["a", "b"]}
    with pytest.raises(SlurmmlError, match="FIELD=VALUE"):
        parse_changes(["mem_gb"])
    with pytest.raises(SlurmmlError, match="python cannot change"):
        parse_changes(["python=other"])


def test_the_rendered_arrays_line_points_at_exactly_the_tasks():
    script = (DATA / "rendered_array.sbatch").read_text()
    assert "#SBATCH --array=" in script
    changed = retarget_array(script, "1,3-4%2")
    assert "#SBATCH --array=1,3-4%2" in changed
    assert changed.count("--array=") == 1 and changed.replace("#SBATCH --array=1,3-4%2", "") == \
        script.replace(next(line for line in script.splitlines() if line.startswith("#SBATCH --array=")), "")
    with pytest.raises(SlurmmlError):
        retarget_array("#!/bin/bash\n", "1")


def test_two_resubmissions_at_once_never_both_take_a_run(tmp_path):
    from tests.unit.test_registry import make_registry

    registry = make_registry(tmp_path, runs=2)
    registry.mark_queued({"s1-0": ("7_0", "log0"), "s1-1": ("7_1", "log1")})
    registry.mark_final({"s1-0": ("FAILED", ""), "s1-1": ("OUT_OF_MEMORY", "")}, "slurm")
    chosen = {"s1-0": "FAILED", "s1-1": "OUT_OF_MEMORY"}
    old = registry.claim_for_resubmission(chosen)
    assert old == {"s1-0": "7_0", "s1-1": "7_1"}
    with pytest.raises(SlurmmlError, match="no longer FAILED"):
        registry.claim_for_resubmission(chosen)  # the second command finds them taken
    registry.release_resubmission(chosen, old)  # its sbatch refused: back to how they ended
    assert [(r["state"], r["slurm_job_id"]) for r in registry.runs(sweep="s1")] == [("FAILED", "7_0"),
                                                                                    ("OUT_OF_MEMORY", "7_1")]
    registry.claim_for_resubmission(chosen)
    registry.mark_resubmitted({"s1-0": ("9_0", "new0"), "s1-1": ("9_1", "new1")})
    assert [(r["state"], r["slurm_job_id"]) for r in registry.runs(sweep="s1")] == [("QUEUED", "9_0"), ("QUEUED", "9_1")]
