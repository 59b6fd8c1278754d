"""Live controls from the TUI, on the fixed registry: `v` set values (a dialog), `p` snapshot, `t` stop (confirmed),
their refusals, and a run's history of them in the detail screen with the plots' marks.

Sending needs no cluster: a command is a line appended to the run's control file next to its spool (here, in the
test's folder) and a pending row in the registry; the job's answer is a spool record (tests/tui/conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Static

from slurmml.core.states import ALL_STATES, STOPPED_STATES
from slurmml.registry.registry import Registry
from slurmml.tracking.controls import controls_path
from slurmml.tui.actions import RunActions
from slurmml.tui.dialogs import ConfirmScreen, SetValuesScreen
from slurmml.tui.model import parse_set_text, plot_marks
from slurmml.tui.run_table import STATE_STYLES
from tests.tui.conftest import (COMPLETED_RUN, CONTROLS, FAILED_RUN, RUNNING_RUN, SWEEP_B, USER, go_to, notes,
                                run_async, settle, text_of)

SIZE = (120, 40)
RESTARTED_RUN = f"{SWEEP_B}-1"


class RecordingActions(RunActions):
    """The real actions, with a record of the live controls' calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple] = []

    def control_refusal(self, kind, run_id):
        self.calls.append(("control_refusal", kind, run_id))
        return super().control_refusal(kind, run_id)

    def control(self, run_id, kind, args=None):
        self.calls.append(("control", kind, run_id, args))
        return super().control(run_id, kind, args)


def recording_app(make_app: Any, **kwargs: Any) -> tuple[Any, RecordingActions]:
    app = make_app(actions=None, **kwargs)
    actions = RecordingActions(app.source)
    app.actions = actions
    return app, actions


def control_lines(registry_path: Path, run_id: str) -> list[dict[str, Any]]:
    """The commands in the run's control file, as the job would read them."""
    path = controls_path(Registry(registry_path).run(run_id)["spool_path"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def sent(actions: RecordingActions) -> list[tuple]:
    return [call for call in actions.calls if call[0] == "control"]


# -- sending ---------------------------------------------------------------------------------------------------
def test_set_sends_the_typed_values_and_a_typo_keeps_the_dialog_open(make_app, fixed_registry: Path) -> None:
    async def scenario() -> None:
        app, actions = recording_app(make_app)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, RUNNING_RUN)
            await pilot.press("v")
            await settle(pilot)
            dialog = app.screen
            assert isinstance(dialog, SetValuesScreen) and dialog.run_ids == [RUNNING_RUN]
            field = dialog.query_one("#values", Input)
            field.value = "optimizer.lr"  # no value
            await pilot.press("enter")
            await settle(pilot)
            assert app.screen is dialog and field.value == "optimizer.lr"  # what was typed is still there
            assert ("error", "set: 'optimizer.lr': expected KEY=VALUE, e.g. optimizer.lr=0.001") in notes(app)
            assert sent(actions) == []
            field.value = "optimizer.lr=0.001 note='two words'"
            await pilot.press("enter")
            await settle(pilot)
            assert app.screen is app.runs_screen
            assert sent(actions) == [("control", "set", RUNNING_RUN,
                                      {"values": {"optimizer.lr": 0.001, "note": "two words"}})]
            assert [(r.action, r.run_id, r.ok, r.message) for r in app.action_log] == [
                ("set", RUNNING_RUN, True, f"sent set to run {RUNNING_RUN}")]
            lines = control_lines(fixed_registry, RUNNING_RUN)
            assert [(line["kind"], line["values"], line["user"]) for line in lines] == [
                ("set", {"optimizer.lr": 0.001, "note": "two words"}, USER)]
            newest = Registry(fixed_registry).controls(run_id=RUNNING_RUN)[-1]
            assert (newest["id"], newest["shown"], newest["source"], newest["what"]) == (
                lines[0]["id"], "pending", "tui", 'set optimizer.lr=0.001 note="two words"')

    run_async(scenario())


def test_a_value_the_runs_config_cannot_hold_is_refused_and_nothing_is_written(make_app,
                                                                              fixed_registry: Path) -> None:
    async def scenario() -> None:
        app, actions = recording_app(make_app)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, RUNNING_RUN)
            await pilot.press("v")
            await settle(pilot)
            app.screen.query_one("#values", Input).value = "optimizer.lr=fast"
            await pilot.press("enter")
            await settle(pilot)
            assert [(r.action, r.ok, r.message) for r in app.action_log] == [
                ("set", False, f"run {RUNNING_RUN}: optimizer.lr is a number in the run's config (0.1); "
                               f"'fast' is not a number")]
            assert ("error", app.action_log[0].message) in notes(app)
            assert control_lines(fixed_registry, RUNNING_RUN) == []
            assert len(Registry(fixed_registry).controls(run_id=RUNNING_RUN)) == len(CONTROLS)

    run_async(scenario())


def test_snapshot_goes_to_the_marked_runs_and_an_ended_one_is_refused(make_app, fixed_registry: Path) -> None:
    async def scenario() -> None:
        app, actions = recording_app(make_app)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            for run_id in (COMPLETED_RUN, RUNNING_RUN, RESTARTED_RUN):
                await go_to(pilot, run_id)
                await pilot.press("space")
            await pilot.press("p")  # no question: a snapshot changes nothing in the training
            await settle(pilot)
            assert app.screen is app.runs_screen
            assert [(r.run_id, r.ok) for r in app.action_log] == [(COMPLETED_RUN, False), (RUNNING_RUN, True),
                                                                  (RESTARTED_RUN, True)]
            assert app.action_log[0].message == f"run {COMPLETED_RUN} has already ended (COMPLETED); nothing to snapshot"
            assert sent(actions) == [("control", "snapshot", RUNNING_RUN, {}), ("control", "snapshot", RESTARTED_RUN, {})]
            for run_id in (RUNNING_RUN, RESTARTED_RUN):
                assert [line["kind"] for line in control_lines(fixed_registry, run_id)] == ["snapshot"]

    run_async(scenario())


def test_controls_of_ended_runs_are_refused_without_a_dialog(make_app, fixed_registry: Path) -> None:
    async def scenario() -> None:
        app, actions = recording_app(make_app)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, FAILED_RUN)
            for key in ("v", "p", "t"):
                await pilot.press(key)
                await settle(pilot)
                assert app.screen is app.runs_screen  # no dialog, no question
            assert [(r.action, r.ok, r.message) for r in app.action_log] == [
                (kind, False, f"run {FAILED_RUN} has already ended (FAILED); nothing to {kind}")
                for kind in ("set", "snapshot", "stop")]
            assert sent(actions) == [] and control_lines(fixed_registry, FAILED_RUN) == []

    run_async(scenario())


def test_stop_asks_first(make_app, fixed_registry: Path) -> None:
    async def scenario() -> None:
        app, actions = recording_app(make_app)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, RUNNING_RUN)
            await pilot.press("t")
            await settle(pilot)
            assert isinstance(app.screen, ConfirmScreen)
            assert app.screen.question.splitlines() == ["Stop (save, then end) 1 run?",
                                                        f"  {RUNNING_RUN}  job 4100_2  RUNNING"]
            await pilot.press("n")
            await settle(pilot)
            assert app.screen is app.runs_screen and sent(actions) == []
            assert control_lines(fixed_registry, RUNNING_RUN) == []
            await pilot.press("t", "y")
            await settle(pilot)
            assert sent(actions) == [("control", "stop", RUNNING_RUN, {})]
            assert [line["kind"] for line in control_lines(fixed_registry, RUNNING_RUN)] == ["stop"]
            assert app.action_log[-1].ok and app.action_log[-1].message == f"sent stop to run {RUNNING_RUN}"

    run_async(scenario())


def test_read_only_refuses_the_controls_and_calls_nothing(make_app, fixed_registry: Path) -> None:
    async def scenario() -> None:
        app, actions = recording_app(make_app, read_only=True)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, RUNNING_RUN)
            for key in ("v", "p", "t"):
                await pilot.press(key)
                await settle(pilot)
                assert app.screen is app.runs_screen
            assert actions.calls == [] and app.action_log == []
            assert [n for n in notes(app) if "read-only" in n[1]] == [
                ("warning", f"{kind}: slurmml tui was started with --read-only") for kind in ("set", "snapshot", "stop")]
            assert control_lines(fixed_registry, RUNNING_RUN) == []

    run_async(scenario())


def test_someone_elses_run_is_refused_with_the_owners_name(make_app, fixed_registry: Path) -> None:
    async def scenario() -> None:
        app, actions = recording_app(make_app, user="bob")
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, RUNNING_RUN)
            for key in ("v", "t"):
                await pilot.press(key)
                await settle(pilot)
                assert app.screen is app.runs_screen
            assert [(r.action, r.message) for r in app.action_log] == [
                (kind, f"run {RUNNING_RUN} belongs to {USER}; slurmml controls only your own runs")
                for kind in ("set", "stop")]
            assert sent(actions) == [] and control_lines(fixed_registry, RUNNING_RUN) == []

    run_async(scenario())


# -- a run's history and the plots' marks --------------------------------------------------------------------------
def test_the_detail_lists_the_runs_controls_and_marks_the_applied_ones(make_app) -> None:
    async def scenario() -> None:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, RUNNING_RUN)
            await pilot.press("enter")
            await settle(pilot)
            detail = app.screen
            assert detail.query_one("#controls-section").display
            rows = [line.strip().split(None, 7) for line in text_of(detail.query_one("#controls", Static)).splitlines()]
            assert rows[0] == ["asked", "what", "status", "step", "user", "from", "message"]
            assert rows[1] == ["2026-01-01", "11:35:00", "set", "optimizer.lr=0.01", "applied", "2", "alice", "cli"]
            assert rows[2][:8] == ["2026-01-01", "11:40:00", "set", "model.width=128", "refused", "3", "alice",
                                   "tui   no callback for model.width (the job registered: optimizer.lr)"]
            assert rows[3] == ["2026-01-01", "11:59:00", "snapshot", "pending", "alice", "cli"]  # no step yet
            await pilot.press("3")
            await settle(pilot)
            assert detail.marks == [(2, "optimizer.lr=0.01")]  # the applied set only
            for plot in detail.plots.values():
                assert "optimizer.lr=0.01" in plot.render().plain
            await pilot.press("escape")
            await go_to(pilot, COMPLETED_RUN)
            await pilot.press("enter")
            await settle(pilot)
            assert not app.screen.query_one("#controls-section").display and app.screen.marks == []

    run_async(scenario())


def test_a_control_sent_from_the_detail_joins_its_history(make_app, fixed_registry: Path) -> None:
    async def scenario() -> None:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, RUNNING_RUN)
            await pilot.press("enter")
            await settle(pilot)
            detail = app.screen
            await pilot.press("v")
            await settle(pilot)
            assert isinstance(app.screen, SetValuesScreen) and app.screen.run_ids == [RUNNING_RUN]
            await pilot.press("escape")  # nothing sent
            await settle(pilot)
            assert app.screen is detail and control_lines(fixed_registry, RUNNING_RUN) == []
            await pilot.press("p")
            await settle(pilot)
            assert [line["kind"] for line in control_lines(fixed_registry, RUNNING_RUN)] == ["snapshot"]
            detail.load()  # what the reload timer of an active run does
            await settle(pilot)
            last = text_of(detail.query_one("#controls", Static)).splitlines()[len(CONTROLS) + 1].split()
            assert last[2:] == ["snapshot", "pending", USER, "tui"]

    run_async(scenario())


# -- the pure parts ------------------------------------------------------------------------------------------------
def test_the_set_dialogs_text_keeps_quoted_values_whole() -> None:
    assert parse_set_text("optimizer.lr=1e-3  name='my run' sizes=[1,2] flag=true") == {
        "optimizer.lr": 0.001, "name": "my run", "sizes": [1, 2], "flag": True}
    with pytest.raises(ValueError, match="give at least one KEY=VALUE"):
        parse_set_text("   ")
    with pytest.raises(ValueError, match="no closing quote"):
        parse_set_text("name='my run")


def test_plot_marks_share_a_step_drop_set_and_stay_short() -> None:
    assert plot_marks([(7, "set dropout=0.2"), (3, "snapshot"), (7, "set optimizer.lr=0.001")], max_chars=31) == [
        (3, "snapshot"), (7, "dropout=0.2, optimizer.lr=0.001")]
    assert plot_marks([(1, "set optimizer.lr=0.001")], max_chars=10) == [(1, "optimizer…")]


def test_every_state_has_a_style_and_a_requested_end_is_not_shown_as_a_failure() -> None:
    assert set(ALL_STATES) <= set(STATE_STYLES)
    for state in STOPPED_STATES:
        assert "red" not in STATE_STYLES[state] and "magenta" not in STATE_STYLES[state]
