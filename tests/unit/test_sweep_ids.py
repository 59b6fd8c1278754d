"""Sweep ids: one per Hydra command, shared by that command's later batches."""

from __future__ import annotations

from pathlib import Path

from slurmml.launcher.recording import sweep_id_for


def test_a_first_batch_starts_a_new_sweep_even_in_the_same_process(tmp_path: Path) -> None:
    first = sweep_id_for(tmp_path, 0)
    assert sweep_id_for(tmp_path, 4) == first  # the same command's next batch
    second = sweep_id_for(tmp_path, 0)  # another command launching into the same folder
    assert second != first
    assert sweep_id_for(tmp_path, 4) == second
    assert (tmp_path / ".slurmml" / first / "sweep.json").is_file() and (tmp_path / ".slurmml" / second / "sweep.json").is_file()


def test_batch_summary_names_the_batch_and_after_the_first_the_sweeps_total() -> None:
    from slurmml.launcher.sweep import batch_summary

    assert batch_summary("s1", 1, 0, 4, 0, (4, 0)) == "sweep s1, batch 1 (#0-#3): 4 completed, 0 failed"
    assert batch_summary("s1", 3, 8, 3, 1, (11, 1)) == (
        "sweep s1, batch 3 (#8-#11): 3 completed, 1 failed; sweep so far: 11 completed, 1 failed")
    assert batch_summary("s1", 2, 4, 1, 0, (5, 0)) == "sweep s1, batch 2 (#4): 1 completed, 0 failed; sweep so far: 5 completed, 0 failed"
