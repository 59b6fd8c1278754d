"""One picture per screen, on the fixed registry at a fixed time (tests/tui/conftest.py).

Regenerate with `pytest tests/tui/test_snapshots.py --snapshot-update`, then look at every changed SVG
under __snapshots__/ before committing it: a snapshot is only as right as the person who accepted it.
"""

from __future__ import annotations

from typing import Any, Callable

from textual.widgets import Input

from tests.tui.conftest import COMPLETED_RUN, FAILED_RUN, RUNNING_RUN, go_to, settle

SIZE = (120, 40)


def steps(*actions: Any) -> Callable[[Any], Any]:
    """run_before: each action is keys to press (a string) or ('run', run id) to move to; settle after each."""

    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        for action in actions:
            if isinstance(action, tuple):
                await go_to(pilot, action[1])
            else:
                await pilot.press(*action.split())
            await settle(pilot)
        for field in pilot.app.screen.query(Input):
            field.cursor_blink = False  # a blinking cursor would differ from one picture to the next

    return run_before


def test_runs_view(snap_compare, make_app) -> None:
    """Both sweeps' runs, oldest first, with state, job, elapsed, GPU, overrides and metrics (last, best)."""
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=steps())


def test_runs_grouped_by_sweep(snap_compare, make_app) -> None:
    """g: a heading per sweep with its name and state counts."""
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=steps("g"))


def test_runs_filtered_by_text_and_expression(snap_compare, make_app) -> None:
    """/ then `a1b2 val_acc > 0.5` and enter: a word and an expression, the first sweep's runs above 0.5."""
    keys = "slash " + " ".join(list("a1b2")) + " space " + " ".join(["v", "a", "l", "underscore", "a", "c", "c"]) + \
        " space greater_than_sign space 0 full_stop 5 enter"
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=steps(keys))


def test_run_detail_overview(snap_compare, make_app) -> None:
    """enter on the running run: Slurm's facts, overrides, state history and the resolved config."""
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=steps(("run", RUNNING_RUN), "enter"))


def test_run_detail_logs(snap_compare, make_app) -> None:
    """2: the running run's stdout (a healthy run opens on it) from the log path the launcher recorded."""
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=steps(("run", RUNNING_RUN), "enter", "2"))


def test_run_detail_metrics(snap_compare, make_app) -> None:
    """3: a plot per metric, with its last and best values."""
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=steps(("run", RUNNING_RUN), "enter", "3"))


def test_run_detail_gpu(snap_compare, make_app) -> None:
    """4: GPU utilization and memory sparklines from the run's gpu records."""
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=steps(("run", RUNNING_RUN), "enter", "4"))


def test_compare(snap_compare, make_app) -> None:
    """Three runs marked with space, then c: curves overlaid, legend by differing overrides, differing config keys."""
    assert snap_compare(make_app(), terminal_size=SIZE,
                        run_before=steps(("run", COMPLETED_RUN), "space", ("run", FAILED_RUN), "space",
                                         ("run", RUNNING_RUN), "space", "c"))


def test_leaderboard(snap_compare, make_app) -> None:
    """l: every run that logged val_acc, highest first."""
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=steps("l"))


def test_help(snap_compare, make_app) -> None:
    """?: the keys."""
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=steps("question_mark"))


def test_cancel_confirmation(snap_compare, make_app) -> None:
    """x on the running run asks first, naming the run, its job and its state."""
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=steps(("run", RUNNING_RUN), "x"))


def test_clone_dialog(snap_compare, make_app) -> None:
    """n: the run's overrides, ready to edit."""
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=steps(("run", COMPLETED_RUN), "n"))


def test_set_values_dialog(snap_compare, make_app) -> None:
    """v on the running run: KEY=VALUE words to send it."""
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=steps(("run", RUNNING_RUN), "v"))
