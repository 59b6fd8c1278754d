"""The telling line of an error (slurmml.core.text), as status, watch and report show it."""

from __future__ import annotations

from slurmml.core.text import error_line, first_line, last_line, tool_error_lines

TRACEBACK = "Traceback (most recent call last):\n  File \"train.py\", line 9, in main\nValueError: lr too large\n\n"


def test_a_traceback_is_told_by_its_last_line_anything_else_by_its_first() -> None:
    assert error_line(TRACEBACK) == "ValueError: lr too large"
    assert error_line("\n  Slurm job 5: TIMEOUT after 76 s\n(the run itself recorded RUNNING)") == \
        "Slurm job 5: TIMEOUT after 76 s"
    assert first_line(TRACEBACK) == "Traceback (most recent call last):"
    assert last_line(TRACEBACK) == "ValueError: lr too large"
    assert error_line(None) == error_line("") == error_line(" \n\t\n") == ""


def test_tool_error_lines_drop_the_tools_prefix_and_keep_only_errors() -> None:
    stderr = ("scancel: Terminating job 5\nscancel: error: Kill job error on job id 5: Job/step already completing\n"
              "sbatch: error: Batch job submission failed: Invalid account\n")
    assert tool_error_lines(stderr) == ["Kill job error on job id 5: Job/step already completing",
                                        "Batch job submission failed: Invalid account"]
    assert tool_error_lines("scancel: Terminating job 5\n") == [] and tool_error_lines("") == []
