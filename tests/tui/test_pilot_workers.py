"""The TUI's background workers and what it shows from users' data, on the fixed registry (no Slurm needed).

- A worker's result reaches only a screen that is still there: workers are held on a threading.Event in
  the data source while the screen goes away, then released.
- A worker that raises becomes one notification, and the app goes on: one test per kind of worker.
- Text from a user, a config, a log or an exception is shown as it is, never read as markup.
- The Logs tab opens on the stream that has something to show.
- A run opens, and the filter answers, while the poller's squeue hangs.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any, Iterable

import pytest
from textual.widgets import DataTable, Input, Label, Log, Select, Static
from textual.worker import WorkerFailed

from slurmml.poller.loop import Poller
from slurmml.registry.registry import Registry
from slurmml.tracking.writer import SpoolWriter
from tests.tui.conftest import (COMPLETED_RUN, FAILED_RUN, FIXED, RUNNING_RUN, SWEEP_B, USER, HangingSlurm,
                                board, facts_of, go_to, notes, run_async, screen_lines, settle, shown_ids, text_of,
                                type_filter, wait_for)
from slurmml.tui.actions import RunActions
from slurmml.tui.app import SlurmmlApp
from slurmml.tui.dialogs import CloneScreen, ConfirmScreen
from slurmml.tui.runs_screen import RunsScreen
from slurmml.tui.model import first_stream
from slurmml.tui.source import RegistrySource

SIZE = (120, 40)
BOOM = "boom [/x] [bold]"  # markup that would crash (an unmatched closing tag) and vanish (a style tag)


class TroubledSource(RegistrySource):
    """The real data source on a registry, except that the methods named in `hold` wait until released and
    those named in `fail` raise."""

    def __init__(self, path: Path, hold: Iterable[str] = (), fail: Iterable[str] = ()) -> None:
        super().__init__(Registry(path), poller=None, local_runs_dir=None, clock=lambda: FIXED)
        self.user = USER
        self.released = {name: threading.Event() for name in hold}
        self.entered = {name: threading.Event() for name in hold}
        self.fail = set(fail)
        self.calls: list[str] = []

    def _gate(self, name: str) -> None:
        self.calls.append(name)
        if name in self.released:
            self.entered[name].set()
            assert self.released[name].wait(60), f"{name} was never released"
        if name in self.fail:
            raise RuntimeError(f"{name} broke: {BOOM}")

    def refresh(self) -> Any:
        self._gate("refresh")
        return super().refresh()

    def run_detail(self, run_id: str) -> Any:
        self._gate("run_detail")
        return super().run_detail(run_id)

    def configs(self, run_ids: list[str]) -> Any:
        self._gate("configs")
        return super().configs(run_ids)

    def metric_names(self) -> Any:
        self._gate("metric_names")
        return super().metric_names()

    def leaderboard(self, *args: Any, **kwargs: Any) -> Any:
        self._gate("leaderboard")
        return super().leaderboard(*args, **kwargs)


class FailingClone(RunActions):
    def clone(self, run_id: str, overrides: list[str]) -> Any:
        raise RuntimeError(f"clone broke: {BOOM}")


def app_on(source: RegistrySource, actions: Any = "real") -> SlurmmlApp:
    return SlurmmlApp(source, RunActions(source) if actions == "real" else actions, refresh_s=0, clock=lambda: FIXED)


def toasts(app: SlurmmlApp) -> list[str]:
    """The notifications on screen, as drawn."""
    return [toast.render().plain for toast in app.screen.query("Toast")]


def log_text(log: Log) -> str:
    return "\n".join(log.lines).rstrip("\n")


async def entered(pilot: Any, source: TroubledSource, name: str) -> None:
    await wait_for(pilot, source.entered[name].is_set, what=f"the worker to call {name}")


async def mark_two_and_compare(pilot: Any) -> None:
    await go_to(pilot, f"{SWEEP_B}-0")
    await pilot.press("space", "space", "c")


async def open_run(pilot: Any, run_id: str = RUNNING_RUN) -> None:
    await go_to(pilot, run_id)
    await pilot.press("enter")


# -- results reach only a screen that is still there ------------------------------------------------------------
def test_a_refresh_that_ends_while_the_app_closes_is_dropped(fixed_registry: Path) -> None:
    """The refresh worker finishes after the runs view lost its widgets (the app is closing): before, its
    result went to RunTable anyway, NoMatches ended the worker and WorkerFailed ended the app."""
    source = TroubledSource(fixed_registry, hold=["refresh"])

    class ClosingRunsScreen(RunsScreen):
        async def on_unmount(self) -> None:
            # its widgets are gone, the app still runs: the moment to let the refresh finish
            source.released["refresh"].set()
            for worker in [w for w in self.app.workers if w.group == "refresh"]:
                with contextlib.suppress(WorkerFailed):
                    await worker.wait()

    class App(SlurmmlApp):
        def get_default_screen(self) -> RunsScreen:
            return ClosingRunsScreen(self.source, clock=self.clock, initial_filter=self.initial_filter)

    async def scenario() -> None:
        app = App(source, None, refresh_s=0, clock=lambda: FIXED)
        async with app.run_test(size=SIZE) as pilot:
            await entered(pilot, source, "refresh")  # the first refresh, after the first paint
        assert app.return_code in (None, 0)
        assert source.calls.count("refresh") == 1

    run_async(scenario())


@pytest.mark.parametrize("held, go", [("run_detail", open_run), ("configs", mark_two_and_compare),
                                       ("metric_names", lambda pilot: pilot.press("l"))],
                         ids=["detail", "compare", "leaderboard"])
def test_a_result_for_a_screen_the_user_left_is_dropped(fixed_registry: Path, held: str, go: Any) -> None:
    source = TroubledSource(fixed_registry, hold=[held])

    async def scenario() -> None:
        app = app_on(source)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go(pilot)
            await entered(pilot, source, held)
            left = app.screen
            await pilot.press("escape")
            assert app.screen is app.runs_screen and not left.is_attached
            source.released[held].set()
            await settle(pilot)
            assert app.is_running and app.screen is app.runs_screen
            assert [n for n in notes(app) if n[0] == "error"] == []
            await pilot.press("home", "down")  # still answers
            assert app.runs_screen.table.current.run_id == FAILED_RUN

    run_async(scenario())


def test_a_refresh_under_another_screen_still_updates_the_runs_view(fixed_registry: Path) -> None:
    source = TroubledSource(fixed_registry, hold=["refresh"])

    async def scenario() -> None:
        app = app_on(source)
        async with app.run_test(size=SIZE) as pilot:
            await entered(pilot, source, "refresh")
            await open_run(pilot, COMPLETED_RUN)
            with Registry(fixed_registry) as registry, registry.conn:
                registry.conn.execute("UPDATE runs SET state = 'CANCELLED' WHERE id = ?", (RUNNING_RUN,))
            source.released["refresh"].set()
            await settle(pilot)
            assert type(app.screen).__name__ == "RunDetailScreen"
            row = next(r for r in app.runs_screen.table.lines if r.run_id == RUNNING_RUN)
            assert row.state == "CANCELLED"

    run_async(scenario())


# -- a worker that raises is a notification -------------------------------------------------------------------------
async def clone_it(pilot: Any) -> None:
    await go_to(pilot, COMPLETED_RUN)
    await pilot.press("n")
    await settle(pilot)
    assert isinstance(pilot.app.screen, CloneScreen)
    await pilot.press("enter")


@pytest.mark.parametrize("failing, go, note", [
    ("run_detail", open_run, f"loading the run failed: RuntimeError: run_detail broke: {BOOM}"),
    ("configs", mark_two_and_compare, f"comparing runs failed: RuntimeError: configs broke: {BOOM}"),
    ("leaderboard", lambda pilot: pilot.press("l"),
     f"loading the leaderboard failed: RuntimeError: leaderboard broke: {BOOM}"),
    ("clone", clone_it, f"clone failed: RuntimeError: clone broke: {BOOM}"),
    ("refresh", lambda pilot: pilot.press("f5"), f"refresh failed: RuntimeError: refresh broke: {BOOM}"),
], ids=["detail", "compare", "leaderboard", "clone", "refresh"])
def test_a_failing_worker_is_a_notification_and_the_app_goes_on(fixed_registry: Path, failing: str, go: Any,
                                                               note: str) -> None:
    source = TroubledSource(fixed_registry)

    async def scenario() -> None:
        app = app_on(source, FailingClone(source) if failing == "clone" else "real")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await settle(pilot)
            source.fail.add(failing)
            await go(pilot)
            await settle(pilot)
            assert app.is_running
            assert [n for n in notes(app) if n[0] == "error"] == [("error", note)]
            await wait_for(pilot, lambda: toasts(app), what="the notification to show")
            assert toasts(app)[-1] == note
            await pilot.press("escape")  # back on the runs view, which still answers
            await settle(pilot)
            assert app.screen is app.runs_screen
            source.fail.clear()
            await pilot.press("f5")  # a failed refresh does not stop the next one
            await settle(pilot)
            assert source.calls.count("refresh") >= 2
        assert app.return_code in (None, 0)

    run_async(scenario())


# -- user text is plain text ------------------------------------------------------------------------------------------
MARKUP_SWEEP = "20260101-100000-e5f6"
MARKUP_LOGS = "logs[1]"
TRACEBACK = f"Traceback (most recent call last):\nRuntimeError: {BOOM}"
MARKUP_RUNS = {  # job_num: overrides, config, state, error, stdout, stderr
    0: (["tags=[foo]", "note=[b]x[/b]"], {"tags": ["foo"], "note": "[b]x[/b]"}, "FAILED", TRACEBACK,
        "[red]not red[/red]\n", TRACEBACK + "\n"),
    1: (["tags=[bar]", "note=[/x]"], {"tags": ["bar"], "note": "[/x]"}, "COMPLETED", None, "epoch [1/2] done\n", ""),
    2: (["tags=[baz]"], {"tags": ["baz"], "note": ""}, "RUNNING", None, "", "[bold]warming up[/bold]\n"),
}


def markup_run(n: int) -> str:
    return f"{MARKUP_SWEEP}-{n}"


@pytest.fixture
def markup_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, utc: Any) -> Path:
    """One sweep whose name, overrides, config, metric, error and logs are all full of markup."""
    monkeypatch.chdir(tmp_path)
    registry = Registry(tmp_path / "registry.db")
    (tmp_path / MARKUP_LOGS).mkdir()
    registry.add_sweep({"id": MARKUP_SWEEP, "name": "tags-[foo]", "user": USER, "created": FIXED - 3600,
                        "argv": ["train.py", "-m"], "cwd": str(tmp_path), "sweep_dir": str(tmp_path / "sweep"),
                        "backend": "slurm"},
                       [{"id": markup_run(n), "job_num": n, "overrides": run[0],
                         "spool_path": str(tmp_path / f"{markup_run(n)}.jsonl")} for n, run in MARKUP_RUNS.items()])
    registry.mark_queued({markup_run(n): (f"4300_{n}", f"{MARKUP_LOGS}/4300_{n}_0_log.err") for n in MARKUP_RUNS})
    for n, (overrides, config, state, error, stdout, stderr) in MARKUP_RUNS.items():
        start = FIXED - 3000 + 10 * n
        with SpoolWriter(tmp_path / f"{markup_run(n)}.jsonl", handle_sigterm=False) as writer:
            writer.write({"k": "start", "t": start, "run_id": markup_run(n), "host": "node[1]", "pid": 1,
                          "run_dir": "/scratch", "config": config, "overrides": overrides, "environment": {}})
            writer.write({"k": "m", "t": start + 60, "s": 0, "v": {"acc[top1]": 0.5 + n / 10}})
            if state != "RUNNING":
                writer.write({"k": "end", "t": start + 100, "state": state, "exit_code": 0 if error is None else 1,
                              **({"error": error} if error else {})})
        (tmp_path / MARKUP_LOGS / f"4300_{n}_0_log.out").write_text(stdout)
        (tmp_path / MARKUP_LOGS / f"4300_{n}_0_log.err").write_text(stderr)
    assert registry.ingest().problems == []
    registry.close()
    return tmp_path / "registry.db"


def test_user_text_is_shown_as_it_is_in_the_runs_view_and_the_detail(markup_registry: Path) -> None:
    async def scenario() -> None:
        app = app_on(TroubledSource(markup_registry))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            lines = screen_lines(app.runs_screen.table)
            assert "tags=[foo] note=[b]x[/b]" in lines[1] and "tags=[bar] note=[/x]" in lines[2]
            await pilot.press("g")
            await settle(pilot)
            assert screen_lines(app.runs_screen.table)[1].startswith(f"▼ {MARKUP_SWEEP}  tags-[foo]  (3 runs")
            await pilot.press("g")
            await type_filter(pilot, "acc<[/x]")
            assert text_of(app.runs_screen.query_one("#filter-problem", Static)).strip() == \
                "filter 'acc<[/x]' compares with < but '[/x]' is not a number"
            await pilot.press("escape")
            await settle(pilot)
            assert text_of(app.runs_screen.query_one("#status", Static)).startswith("3 runs · 1 running · 1 failed")

            await open_run(pilot, markup_run(0))
            await settle(pilot)
            detail = app.screen
            facts = facts_of(detail.query_one("#facts", Static))
            assert (facts["state"], facts["NodeList"]) == (f"FAILED  (RuntimeError: {BOOM})", "node[1]")
            assert text_of(detail.query_one("#overrides", Static)).strip() == "tags=[foo] note=[b]x[/b]"
            assert text_of(detail.query_one("#config", Static)).splitlines()[:3] == ["tags:", "- foo", "note: '[b]x[/b]'"]
            assert "[/x]" not in text_of(detail.query_one("#history", Static))  # states only, drawn without markup
            await pilot.press("2")  # a failed run with a traceback: stderr first
            await settle(pilot)
            log = detail.query_one("#log", Log)
            await wait_for(pilot, lambda: log_text(log) == TRACEBACK, what="the traceback")
            assert text_of(detail.query_one("#log-path", Static)).strip() == \
                f"stderr: {MARKUP_LOGS}/4300_0_0_log.err  [e: switch]"
            await pilot.press("e")
            await wait_for(pilot, lambda: log_text(log) == "[red]not red[/red]", what="stdout")
            await pilot.press("n")  # the clone editor
            await settle(pilot)
            assert isinstance(app.screen, CloneScreen)
            assert app.screen.query_one("#overrides", Input).value == "'tags=[foo]' 'note=[b]x[/b]'"
            assert text_of(app.screen.query_one(Label)).startswith(f"Clone run {markup_run(0)}: same code")
            await pilot.press("escape")
            await settle(pilot)
            assert app.is_running

    run_async(scenario())


def test_user_text_is_shown_as_it_is_in_compare_leaderboard_and_dialogs(markup_registry: Path) -> None:
    async def scenario() -> None:
        app = app_on(TroubledSource(markup_registry))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, markup_run(0))
            await pilot.press("space", "space", "c")
            await settle(pilot)
            compare = app.screen
            assert text_of(compare.query_one("#legend", Static)).splitlines() == [
                f"1. {markup_run(0)}  tags=[foo] note=[b]x[/b]", f"2. {markup_run(1)}  tags=[bar] note=[/x]"]
            table = compare.query_one("#differences", DataTable)
            assert [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)] == [
                ["note", "[b]x[/b]", "[/x]"], ["tags", '["foo"]', '["bar"]']]
            await pilot.press("escape")
            await go_to(pilot, markup_run(0))
            await pilot.press("space", "space")  # unmarked again
            await settle(pilot)

            await pilot.press("l")
            await settle(pilot)
            screen = app.screen
            assert screen.query_one("#metric", Select).value == "acc[top1]"
            assert [str(c.label) for c in screen.query_one("#board", DataTable).columns.values()][:4] == \
                ["#", "run", "acc[top1]", "step"]
            assert [(row[1], row[-1]) for row in board(screen)] == [(markup_run(2), "tags=[baz]"),
                                                                    (markup_run(1), "tags=[bar] note=[/x]")]
            assert text_of(screen.query_one("#title", Static)).startswith("leaderboard · acc[top1] (highest first")
            shown = [text_of(s).strip() for s in screen.query("#metric Static#label, #scope Static#label")]
            assert shown == ["acc[top1]", f"{MARKUP_SWEEP} tags-[foo]"]
            await pilot.press("escape")
            await settle(pilot)

            await go_to(pilot, markup_run(2))
            await pilot.press("x")
            await settle(pilot)
            assert isinstance(app.screen, ConfirmScreen)
            assert text_of(app.screen.query_one(Static)).splitlines() == [
                "Cancel 1 run?", f"  {markup_run(2)}  job 4300_2  RUNNING"]
            await pilot.press("n")
            await settle(pilot)
            assert app.is_running and app.screen is app.runs_screen

    run_async(scenario())


# -- which log the Logs tab opens on ----------------------------------------------------------------------------------
@pytest.mark.parametrize("state, sizes, stream", [
    ("RUNNING", {"stdout": 10, "stderr": 500}, "stdout"),  # a healthy run: what it prints for its user
    ("COMPLETED", {"stdout": 0, "stderr": 500}, "stderr"),  # only stderr has anything (logging's default)
    ("FAILED", {"stdout": 10, "stderr": 500}, "stderr"),  # the traceback
    ("TIMEOUT", {"stdout": 10, "stderr": 0}, "stdout"),  # failed, but nothing on stderr
    ("QUEUED", {"stdout": 0, "stderr": 0}, "stdout"),  # nothing yet: stdout, followed as it grows
])
def test_the_logs_tab_opens_on_the_stream_with_something_to_show(state: str, sizes: dict[str, int],
                                                                 stream: str) -> None:
    assert first_stream(state, sizes) == stream


def test_a_run_with_only_stderr_opens_on_it_and_one_with_only_stdout_on_that(markup_registry: Path) -> None:
    async def scenario() -> None:
        app = app_on(TroubledSource(markup_registry))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            for n, stream, text in ((2, "stderr", "[bold]warming up[/bold]"), (1, "stdout", "epoch [1/2] done")):
                await open_run(pilot, markup_run(n))
                await pilot.press("2")
                await settle(pilot)
                log = app.screen.query_one("#log", Log)
                await wait_for(pilot, lambda: log_text(log) == text, what=stream)
                assert text_of(app.screen.query_one("#log-path", Static)).startswith(f"{stream}: ")
                await pilot.press("escape")
                await settle(pilot)

    run_async(scenario())


def test_opening_the_leaderboard_ranks_once(fixed_registry: Path) -> None:
    """Setting the scope and the metric it opens on must not rank twice: two rankings in flight raced
    (a failure was reported twice, a snapshot caught the board between two draws)."""
    source = TroubledSource(fixed_registry)

    async def scenario() -> None:
        app = app_on(source, "real")
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("l")
            await settle(pilot)
            assert source.calls.count("leaderboard") == 1

    run_async(scenario())


def test_a_result_that_fails_to_show_is_a_notification_and_the_app_goes_on(fixed_registry: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from slurmml.tui.leaderboard_screen import LeaderboardScreen

    def broken(self: Any, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"drawing broke: {BOOM}")

    monkeypatch.setattr(LeaderboardScreen, "show_board", broken)
    source = TroubledSource(fixed_registry)

    async def scenario() -> None:
        app = app_on(source, "real")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await settle(pilot)
            await pilot.press("l")
            await settle(pilot)
            assert app.is_running
            assert [n for n in notes(app) if n[0] == "error"] == [
                ("error", f"loading the leaderboard failed: RuntimeError: drawing broke: {BOOM}")]

    run_async(scenario())


# -- Slurm taking its time holds up no view ---------------------------------------------------------------------------
def test_a_run_opens_and_the_filter_answers_while_the_pollers_squeue_hangs(fixed_registry: Path) -> None:
    """The first refresh's squeue hangs (it may, up to its 30 s timeout); meanwhile the user opens a run and
    filters by an expression. Both read the registry: with one lock around the whole refresh, both waited."""
    slurm = HangingSlurm()
    poller = Poller(Registry(fixed_registry), run=slurm, clock=lambda: FIXED, warn=lambda message: None)
    source = RegistrySource(Registry(fixed_registry), poller=poller, local_runs_dir=None, clock=lambda: FIXED)
    source.user = USER

    async def scenario() -> None:
        app = app_on(source)
        async with app.run_test(size=SIZE) as pilot:
            try:
                await wait_for(pilot, slurm.asked.is_set, what="the first refresh to call squeue")
                await open_run(pilot, RUNNING_RUN)
                detail = app.screen
                await wait_for(pilot, lambda: detail.run is not None, timeout_s=10, what="the run's detail")
                assert facts_of(detail.query_one("#facts", Static))["JobId"] == "4100_2"
                await pilot.press("escape", "slash")
                app.runs_screen.query_one("#filter", Input).value = "val_acc>0.8"
                table = app.runs_screen.table
                await wait_for(pilot, lambda: shown_ids(table) == [COMPLETED_RUN, RUNNING_RUN, f"{SWEEP_B}-0"],
                               timeout_s=10, what="the filter's answer")
                assert slurm.calls == ["squeue"]  # still waiting for it
            finally:
                slurm.answer.set()
            await settle(pilot)
            assert any(message.startswith("squeue exited 1: squeue: error: slurmctld is busy")
                       for _, message in notes(app))  # the refresh went on once Slurm answered

    run_async(scenario())
