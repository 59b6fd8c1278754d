"""Sweep ids: one per Hydra command, shared by that command's later batches."""

from __future__ import annotations

from pathlib import Path

from slurmml.launcher.sweep import sweep_id_for


def test_a_first_batch_starts_a_new_sweep_even_in_the_same_process(tmp_path: Path) -> None:
    first = sweep_id_for(tmp_path, 0)
    assert sweep_id_for(tmp_path, 4) == first  # the same command's next batch
    second = sweep_id_for(tmp_path, 0)  # another command launching into the same folder
    assert second != first
    assert sweep_id_for(tmp_path, 4) == second
    assert (tmp_path / ".slurmml" / first / "sweep.json").is_file() and (tmp_path / ".slurmml" / second / "sweep.json").is_file()
