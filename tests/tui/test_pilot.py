"""The TUI driven by keys on the fixed registry (no Slurm needed): what each view shows and what each key does.

Actions that reach Slurm are tested on the dev cluster (test_pilot_cluster.py); here, everything up to that
point: refusals, read-only mode, confirmations, and the views following the registry as it changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.widgets import DataTable, Input, Log, Select, Static

from slurmml.registry.registry import Registry
from slurmml.tracking.spool import encode
from tests.tui.conftest import (COMPLETED_RUN, FAILED_RUN, FIXED, LOG_DIR, RUNNING_RUN, STDERR, STDOUT, SWEEP_A,
                                SWEEP_B, board, facts_of, go_to, notes, run_async, screen_lines, settle, shown_ids,
                                text_of, type_filter, wait_for)
from slurmml.tui.actions import RunActions
from slurmml.tui.dialogs import CloneScreen, ConfirmScreen, HelpScreen
from slurmml.tui.model import GroupLine

SIZE = (120, 40)
QUEUED_RUN = f"{SWEEP_A}-3"
RESTARTED_RUN = f"{SWEEP_B}-1"


class RecordingActions(RunActions):
    """The real actions, with a record of which were called."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple] = []

    def refusal(self, action, row):
        self.calls.append(("refusal", action, row.run_id))
        return super().refusal(action, row)

    def cancel(self, run_id):
        self.calls.append(("cancel", run_id))
        return super().cancel(run_id)

    def requeue(self, run_id):
        self.calls.append(("requeue", run_id))
        return super().requeue(run_id)

    def clone(self, run_id, overrides):
        self.calls.append(("clone", run_id, overrides))
        return super().clone(run_id, overrides)


def recording_app(make_app: Any, **kwargs: Any) -> tuple[Any, RecordingActions]:
    app = make_app(actions=None, **kwargs)
    actions = RecordingActions(app.source)
    app.actions = actions
    return app, actions


# -- the runs view --------------------------------------------------------------------------------------------
def test_runs_view_lists_every_run_with_state_elapsed_gpu_and_metrics(make_app) -> None:
    async def scenario() -> None:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            table = app.runs_screen.table
            assert shown_ids(table) == [f"{SWEEP_A}-{i}" for i in range(4)] + [f"{SWEEP_B}-{i}" for i in range(2)]
            lines = screen_lines(table)
            assert lines[0].split() == ["run", "state", "job", "elapsed", "gpu", "overrides", "val_acc", "loss"]
            by_run = {line.split()[0]: line.split() for line in lines[1:] if line.strip()}
            assert by_run[COMPLETED_RUN] == [COMPLETED_RUN, "COMPLETED", "4100_0", "10:00", "model=mlp",
                                             "optimizer.lr=0.1", "0.912", "0.231"]
            assert by_run[FAILED_RUN] == [FAILED_RUN, "FAILED", "4100_1", "1:40", "model=mlp", "optimizer.lr=0.01",
                                          "0.42"]  # its loss ended in NaN: no last value
            assert by_run[RUNNING_RUN][1:5] == ["RUNNING", "4100_2", "30:00", "84%"]  # elapsed at the app's clock
            assert by_run[QUEUED_RUN][1:3] == ["QUEUED", "4100_3"] and len(by_run[QUEUED_RUN]) == 5
            assert by_run[RESTARTED_RUN][1] == "RUNNING↻1"
            status = text_of(app.runs_screen.query_one("#status", Static))
            assert status.split(" · ")[:4] == ["6 runs", "1 queued", "2 running", "1 failed"]

    run_async(scenario())


def test_filter_by_words_and_by_expressions(make_app) -> None:
    async def scenario() -> None:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            screen, table = app.runs_screen, app.runs_screen.table
            await type_filter(pilot, "resnet")
            assert shown_ids(table) == [f"{SWEEP_B}-0", RESTARTED_RUN]
            await type_filter(pilot, "MLP failed", keys=True)  # every word, any case
            assert shown_ids(table) == [FAILED_RUN]
            await type_filter(pilot, "lr<0.05")  # a config key (optimizer.lr), answered by the registry;
            assert shown_ids(table) == [FAILED_RUN]  # the queued run has no config yet
            await type_filter(pilot, "lr <= 0.05 seed=2", keys=True)  # spaces around the operator; two expressions
            assert shown_ids(table) == [RESTARTED_RUN]
            await type_filter(pilot, "resnet lr <= 0.05")  # a word and an expression
            assert shown_ids(table) == [f"{SWEEP_B}-0", RESTARTED_RUN]
            await type_filter(pilot, "val_acc>=0.8")  # a metric's last value
            assert shown_ids(table) == [COMPLETED_RUN, RUNNING_RUN, f"{SWEEP_B}-0"]
            await type_filter(pilot, "state=RUNNING sweep_id=" + SWEEP_B)
            assert shown_ids(table) == [RESTARTED_RUN]
            assert "6 runs · 1 shown" in text_of(screen.query_one("#status", Static))
            await type_filter(pilot, "nothing-matches-this")
            assert shown_ids(table) == [] and screen_lines(table)[1] == ""
            await pilot.press("escape")  # clears the filter
            await settle(pilot)
            assert len(shown_ids(table)) == 6 and screen.query_one("#filter", Input).value == ""

    run_async(scenario())


def test_a_bad_expression_says_why_and_keeps_the_rows(make_app) -> None:
    async def scenario() -> None:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            screen = app.runs_screen
            await type_filter(pilot, "lr<0.05")
            assert shown_ids(screen.table) == [FAILED_RUN]
            screen.query_one("#filter", Input).value = "lr<abc"  # edited in one go (a paste)
            await settle(pilot)
            assert "is not a number" in screen.filter_problem
            assert "is not a number" in text_of(screen.query_one("#filter-problem", Static))
            assert shown_ids(screen.table) == [FAILED_RUN]  # the last good answer stays
            screen.query_one("#filter", Input).value = "lr<0.5"
            await settle(pilot)
            assert screen.filter_problem == "" and len(shown_ids(screen.table)) == 5  # all but the queued run

    run_async(scenario())


def test_sort_reverse_and_group(make_app) -> None:
    async def scenario() -> None:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            screen, table = app.runs_screen, app.runs_screen.table
            for _ in range(7):  # run, state, job, elapsed, gpu, overrides, val_acc
                await pilot.press("s")
            await settle(pilot)
            assert table.sort_column == "metric:val_acc" and table.sort_descending
            assert "val_acc ▼" in screen_lines(table)[0]
            assert shown_ids(table) == [COMPLETED_RUN, RUNNING_RUN, f"{SWEEP_B}-0", RESTARTED_RUN, FAILED_RUN,
                                        QUEUED_RUN]  # best first, never logged last
            await pilot.press("S")
            await settle(pilot)
            assert shown_ids(table) == [FAILED_RUN, RESTARTED_RUN, f"{SWEEP_B}-0", RUNNING_RUN, COMPLETED_RUN,
                                        QUEUED_RUN]  # missing still last
            await pilot.press("g")
            await settle(pilot)
            headings = [line.text for line in table.lines if isinstance(line, GroupLine)]
            assert headings == [f"▼ {SWEEP_A}  mnist-grid  (4 runs: 1 queued, 1 running, 1 completed, 1 failed)",
                                f"▼ {SWEEP_B}  cifar-seeds  (2 runs: 1 running, 1 completed)"]
            assert shown_ids(table) == [FAILED_RUN, RUNNING_RUN, COMPLETED_RUN, QUEUED_RUN, RESTARTED_RUN,
                                        f"{SWEEP_B}-0"]  # sorted within each sweep
            table.action_jump(0)
            assert table.current is not None  # the cursor never rests on a heading
            await pilot.press("g")
            await settle(pilot)
            assert not any(isinstance(line, GroupLine) for line in table.lines)

    run_async(scenario())


def test_marking_runs(make_app) -> None:
    async def scenario() -> None:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            table = app.runs_screen.table
            await pilot.press("space", "space")
            await settle(pilot)
            assert table.marked == {COMPLETED_RUN, FAILED_RUN} and table.current.run_id == RUNNING_RUN
            assert screen_lines(table)[1].startswith("●") and screen_lines(table)[3].startswith(" ")
            assert "2 marked" in text_of(app.runs_screen.query_one("#status", Static))
            await pilot.press("up", "space")
            assert table.marked == {COMPLETED_RUN}

    run_async(scenario())


def test_the_view_follows_the_registry(make_app, fixed_registry: Path) -> None:
    """New spool lines are ingested on refresh (f5 here; a timer in use) and the rows change."""

    async def scenario() -> None:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            spool = Registry(fixed_registry).run(RUNNING_RUN)["spool_path"]
            with open(spool, "ab") as handle:
                handle.write(encode({"k": "m", "t": FIXED, "s": 5, "v": {"val_acc": 0.9}}) +
                             encode({"k": "end", "t": FIXED, "state": "COMPLETED", "exit_code": 0}))
            await pilot.press("f5")
            await settle(pilot)
            row = next(r for r in app.runs_screen.table.lines if r.run_id == RUNNING_RUN)
            assert row.state == "COMPLETED" and row.metrics["val_acc"] == (0.9, 0.9) and row.gpu_util is None
            assert "1 running" in text_of(app.runs_screen.query_one("#status", Static))

    run_async(scenario())


# -- one run -------------------------------------------------------------------------------------------------
def test_run_detail_shows_config_slurm_facts_and_the_log(make_app) -> None:
    async def scenario() -> None:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, RUNNING_RUN)
            await pilot.press("enter")
            await settle(pilot)
            detail = app.screen
            assert type(detail).__name__ == "RunDetailScreen" and detail.run_id == RUNNING_RUN
            facts = facts_of(detail.query_one("#facts", Static))
            assert {name: facts[name] for name in ("JobId", "NodeList", "AllocGPUs", "Submit", "Start", "End",
                                                   "Elapsed", "Timelimit")} == {
                "JobId": "4100_2", "NodeList": "gpu-node03", "AllocGPUs": "2", "Submit": "2026-01-01 11:00:00",
                "Start": "2026-01-01 11:30:00", "End": "", "Elapsed": "30:00", "Timelimit": "2h00m"}
            assert "lr: 0.1" in text_of(detail.query_one("#config", Static))
            assert text_of(detail.query_one("#overrides", Static)).strip() == "model=cnn optimizer.lr=0.1"
            history = [line.split() for line in text_of(detail.query_one("#history", Static)).splitlines()[1:]]
            assert [row for row in history if row] == [["2026-01-01", "11:00:05", "QUEUED", "launcher"],
                                                       ["2026-01-01", "11:30:00", "RUNNING", "run"]]
            await pilot.press("2")  # a healthy run: stdout first
            await settle(pilot)
            log = detail.query_one("#log", Log)
            await wait_for(pilot, lambda: list(log.lines)[:2] == STDOUT.splitlines(), what="stdout")
            assert f"stdout: {LOG_DIR}/4100_2_0_log.out  [e: switch]" in text_of(detail.query_one("#log-path", Static))
            await pilot.press("e")  # stderr
            await settle(pilot)
            await wait_for(pilot, lambda: log.line_count >= 7, what="the stderr lines")
            assert list(log.lines)[:7] == STDERR.splitlines()
            assert f"stderr: {LOG_DIR}/4100_2_0_log.err" in text_of(detail.query_one("#log-path", Static))
            await pilot.press("3")
            await settle(pilot)
            assert set(detail.plots) == {"val_acc", "loss"} and detail.plotted == {"val_acc": 5, "loss": 5}
            await pilot.press("4")
            await settle(pilot)
            gpu = [text_of(w) for w in detail.query("#gpu-panel Label")]
            assert gpu == ["GPU utilization  (last 84%, mean 66%, 30 samples)\n",
                           "GPU memory used  (last 35%, peak 35%)\n"]
            await pilot.press("escape")
            await settle(pilot)
            assert app.screen is app.runs_screen

    run_async(scenario())


def test_the_log_tab_follows_the_file(make_app, fixed_registry: Path) -> None:
    async def scenario() -> None:
        app = make_app()
        path = fixed_registry.parent / LOG_DIR / "4100_2_0_log.err"
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, RUNNING_RUN)
            await pilot.press("enter", "2", "e")  # stderr, where this run's training log goes
            await settle(pilot)
            log = app.screen.query_one("#log", Log)
            await wait_for(pilot, lambda: log.line_count >= 7, what="the log")
            with open(path, "a") as handle:
                handle.write("[2026-01-01 11:55:05] epoch 6/20: loss 0.3100 val_acc 0.8811\n")
            await wait_for(pilot, lambda: "epoch 6/20" in "\n".join(log.lines), what="the appended line")
            path.write_text("requeued: starting again\n")  # a requeued job writes its log again
            await wait_for(pilot, lambda: list(log.lines)[:1] == ["requeued: starting again"], what="the new log")
            assert "epoch" not in "\n".join(log.lines)

    run_async(scenario())


def test_detail_of_a_queued_and_of_a_failed_run(make_app) -> None:
    async def scenario() -> None:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, QUEUED_RUN)
            await pilot.press("enter")
            await settle(pilot)
            assert "not recorded yet" in text_of(app.screen.query_one("#config", Static))
            assert facts_of(app.screen.query_one("#facts", Static))["Reason"] == "Priority"
            await pilot.press("4")
            await settle(pilot)
            assert "No GPU samples" in text_of(app.screen.query_one("#gpu-panel Static"))
            await pilot.press("escape")
            await go_to(pilot, FAILED_RUN)
            await pilot.press("enter")
            await settle(pilot)
            facts = facts_of(app.screen.query_one("#facts", Static))
            assert facts["state"] == "FAILED  (RuntimeError: loss is nan at step 3)" and facts["ExitCode"] == "1"
            assert (facts["Start"], facts["End"]) == ("2026-01-01 11:03:20", "2026-01-01 11:05:00")
            await pilot.press("2")
            await settle(pilot)
            assert "(no log recorded" not in text_of(app.screen.query_one("#log-path", Static))
            assert app.screen.query_one("#log", Log).line_count == 0  # recorded, but this job wrote none

    run_async(scenario())


# -- compare and leaderboard -------------------------------------------------------------------------------------
def test_compare_needs_two_runs_and_shows_only_what_differs(make_app) -> None:
    async def scenario() -> None:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("c")
            await settle(pilot)
            assert app.screen is app.runs_screen
            assert ("warning", "Mark two or more runs with space, then press c to compare them.") in notes(app)
            await go_to(pilot, f"{SWEEP_B}-0")
            await pilot.press("space", "space", "c")  # the two runs of sweep B: only the seed differs
            await settle(pilot)
            compare = app.screen
            assert type(compare).__name__ == "CompareScreen" and compare.run_ids == [f"{SWEEP_B}-0", RESTARTED_RUN]
            legend = text_of(compare.query_one("#legend", Static))
            assert legend.splitlines() == [f"1. {SWEEP_B}-0  seed=1", f"2. {RESTARTED_RUN}  seed=2"]
            table = compare.query_one("#differences", DataTable)
            rows = [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]
            assert rows == [["seed", "1", "2"]]
            assert [str(c.label) for c in table.columns.values()] == ["key", f"1. {SWEEP_B}-0", f"2. {RESTARTED_RUN}"]
            await pilot.press("escape")
            await settle(pilot)
            assert app.screen is app.runs_screen

    run_async(scenario())


def test_leaderboard_ranks_flips_scopes_and_groups(make_app) -> None:
    async def scenario() -> None:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, f"{SWEEP_B}-0")
            await pilot.press("l")
            await settle(pilot)
            screen = app.screen
            assert screen.query_one("#scope", Select).value == SWEEP_B  # the sweep under the cursor
            assert [row[:3] for row in board(screen)] == [["1", f"{SWEEP_B}-0", "0.801"], ["2", RESTARTED_RUN, "0.77"]]
            screen.query_one("#scope", Select).value = "__all__"
            await settle(pilot)
            # the failed run is never ranked, whatever it logged
            assert [row[1] for row in board(screen)] == [COMPLETED_RUN, RUNNING_RUN, f"{SWEEP_B}-0", RESTARTED_RUN]
            screen.query_one("#metric", Select).value = "loss"  # a loss: lowest first
            await settle(pilot)
            assert [row[1:3] for row in board(screen)][0] == [COMPLETED_RUN, "0.231"]
            assert "lowest first" in text_of(screen.query_one("#title", Static))
            assert FAILED_RUN not in [row[1] for row in board(screen)]
            await pilot.press("m")  # flipped: highest first
            await settle(pilot)
            assert [row[1:3] for row in board(screen)][0] == [RESTARTED_RUN, "0.7"]
            assert "highest first" in text_of(screen.query_one("#title", Static))
            screen.query_one("#metric", Select).value = "val_acc"
            screen.query_one("#group-key", Input).focus()
            await pilot.press(*"dataset", "enter")
            await settle(pilot)
            assert [row[:3] for row in board(screen)] == [
                ["1", "cifar10", f"{SWEEP_B}-0"], ["2", "cifar10", RESTARTED_RUN],
                ["1", "mnist", COMPLETED_RUN], ["2", "mnist", RUNNING_RUN]]
            screen.query_one("#board", DataTable).focus()
            await pilot.press("down", "down", "enter")  # open a ranked run
            await settle(pilot)
            assert type(app.screen).__name__ == "RunDetailScreen" and app.screen.run_id == COMPLETED_RUN

    run_async(scenario())


def test_help_opens_and_closes(make_app) -> None:
    async def scenario() -> None:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            await pilot.press("escape")
            assert app.screen is app.runs_screen

    run_async(scenario())


# -- actions, up to Slurm ------------------------------------------------------------------------------------------
def test_read_only_refuses_every_action_and_calls_nothing(make_app) -> None:
    async def scenario() -> None:
        app, actions = recording_app(make_app, read_only=True)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, RUNNING_RUN)
            for key in ("x", "r", "n"):
                await pilot.press(key)
                await settle(pilot)
                assert app.screen is app.runs_screen
            assert actions.calls == [] and app.action_log == []
            assert [n for n in notes(app) if "read-only" in n[1]] == [
                ("warning", f"{verb}: slurmml tui was started with --read-only") for verb in ("cancel", "requeue", "clone")]
            assert "read-only" in text_of(app.runs_screen.query_one("#status", Static))

    run_async(scenario())


def test_without_actions_nothing_can_be_done(make_app) -> None:
    async def scenario() -> None:
        app = make_app(actions=None)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, RUNNING_RUN)
            await pilot.press("enter")
            await settle(pilot)
            await pilot.press("x")  # from the detail screen too
            await settle(pilot)
            assert type(app.screen).__name__ == "RunDetailScreen" and app.action_log == []
            assert ("warning", "cancel: slurmml tui was started with --read-only") in notes(app)

    run_async(scenario())


def test_someone_elses_run_is_refused_with_the_owners_name(make_app, fixed_registry: Path) -> None:
    async def scenario() -> None:
        app, actions = recording_app(make_app, user="bob")
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, RUNNING_RUN)
            for key in ("x", "r", "n"):
                await pilot.press(key)
                await settle(pilot)
                assert app.screen is app.runs_screen  # no confirmation, no clone editor
            assert [(r.action, r.run_id, r.ok) for r in app.action_log] == [
                ("cancel", RUNNING_RUN, False), ("requeue", RUNNING_RUN, False), ("clone", RUNNING_RUN, False)]
            assert all("belongs to alice" in r.message for r in app.action_log)
            assert [c[0] for c in actions.calls] == ["refusal"] * 3
            assert ("error", app.action_log[0].message) in notes(app)
            assert Registry(fixed_registry).run(RUNNING_RUN)["state"] == "RUNNING"

    run_async(scenario())


def test_refusals_that_depend_on_the_state(make_app) -> None:
    async def scenario() -> None:
        app, actions = recording_app(make_app)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, COMPLETED_RUN)
            await pilot.press("x")
            await go_to(pilot, QUEUED_RUN)
            await pilot.press("r")
            await settle(pilot)
            assert app.screen is app.runs_screen
            assert [(r.action, r.run_id, r.ok) for r in app.action_log] == [("cancel", COMPLETED_RUN, False),
                                                                             ("requeue", QUEUED_RUN, False)]
            assert "already ended (COMPLETED)" in app.action_log[0].message
            assert "still queued" in app.action_log[1].message
            assert [c[0] for c in actions.calls] == ["refusal", "refusal"]

    run_async(scenario())


def test_cancel_asks_first_and_no_does_nothing(make_app) -> None:
    async def scenario() -> None:
        app, actions = recording_app(make_app)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, COMPLETED_RUN)
            await pilot.press("space")  # marked runs are what x acts on: a finished one is refused, the rest asked
            await go_to(pilot, RUNNING_RUN)
            await pilot.press("space")
            await go_to(pilot, RESTARTED_RUN)
            await pilot.press("space", "x")
            await settle(pilot)
            assert isinstance(app.screen, ConfirmScreen)
            assert app.screen.question.splitlines() == [
                "Cancel 2 runs?", f"  {RUNNING_RUN}  job 4100_2  RUNNING", f"  {RESTARTED_RUN}  job 4200_1  RUNNING"]
            assert [(r.action, r.run_id, r.ok) for r in app.action_log] == [("cancel", COMPLETED_RUN, False)]
            await pilot.press("n")
            await settle(pilot)
            assert app.screen is app.runs_screen
            assert [c for c in actions.calls if c[0] != "refusal"] == []
            await pilot.press("x", "escape")
            await settle(pilot)
            assert [c for c in actions.calls if c[0] != "refusal"] == [] and app.screen is app.runs_screen

    run_async(scenario())


def test_requeueing_a_running_run_asks_first(make_app) -> None:
    async def scenario() -> None:
        app, actions = recording_app(make_app)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, RUNNING_RUN)
            await pilot.press("r")
            await settle(pilot)
            assert isinstance(app.screen, ConfirmScreen) and app.screen.question.startswith("Requeue (restart) 1 run?")
            await pilot.press("n")
            await settle(pilot)
            assert [c for c in actions.calls if c[0] != "refusal"] == []

    run_async(scenario())


def test_clone_editor_starts_from_the_runs_overrides_and_escape_submits_nothing(make_app) -> None:
    async def scenario() -> None:
        app, actions = recording_app(make_app)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, FAILED_RUN)
            await pilot.press("n")
            await settle(pilot)
            assert isinstance(app.screen, CloneScreen) and app.screen.run_id == FAILED_RUN
            assert app.screen.query_one("#overrides", Input).value == "model=mlp optimizer.lr=0.01"
            await pilot.press("escape")
            await settle(pilot)
            assert app.screen is app.runs_screen and [c for c in actions.calls if c[0] == "clone"] == []
            await pilot.press("n")
            await settle(pilot)
            app.screen.query_one("#overrides", Input).value = "model='unclosed"
            await pilot.press("enter")
            await settle(pilot)
            assert app.action_log[-1].ok is False and "cannot read the overrides" in app.action_log[-1].message
            assert [c for c in actions.calls if c[0] == "clone"] == []

    run_async(scenario())


def test_a_restarted_run_shows_its_executions_and_a_run_that_ran_once_does_not(make_app) -> None:
    async def scenario() -> None:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, RESTARTED_RUN)
            await pilot.press("enter")
            await settle(pilot)
            detail = app.screen
            rows = [line.split() for line in text_of(detail.query_one("#executions", Static)).splitlines()[1:]]
            # no job ids: the fixed spools record no Slurm variables
            assert [row[:3] for row in rows if row] == [["0", "gpu-node02", "REQUEUED"], ["1", "gpu-node02", "RUNNING"]]
            assert detail.query_one("#executions-label").display
            await pilot.press("escape")
            await settle(pilot)
            await go_to(pilot, RUNNING_RUN)
            await pilot.press("enter")
            await settle(pilot)
            assert not app.screen.query_one("#executions-label").display
            assert not app.screen.query_one("#executions", Static).display

    run_async(scenario())
