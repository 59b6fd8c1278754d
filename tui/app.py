"""`slurmml tui`: the app that ties the screens to the data source and to the run actions.

The app is built from injected parts (source, actions, clock) so tests and benchmarks can drive it, and it
hands each screen the parts that screen needs. A screen asks for anything beyond its own view with a
message (tui.messages) that the app handles here: which screen comes next, and whether an action on runs
is allowed, confirmed and done. All registry, file and Slurm work runs in thread workers (tui.workers); the
UI thread only filters and draws.
"""

from __future__ import annotations

import gc
import shlex
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from textual import on
from textual.app import App
from textual.binding import Binding
from textual.worker import Worker, WorkerState

from slurmml.core.controls import KINDS as CONTROL_KINDS
from slurmml.tui.dialogs import CloneScreen, ConfirmScreen, HelpScreen, SetValuesScreen
from slurmml.tui.messages import ActOnRuns, OpenCompare, OpenLeaderboard, OpenRun, RefreshRequested, WorkFailed
from slurmml.tui.model import ACTIVE_STATES, RunRow
from slurmml.tui.runs_screen import RunsScreen
from slurmml.tui.source import RegistrySource, Snapshot
from slurmml.tui.workers import background, deliver, failure_note

REFRESH_S = 2.0  # registry reads; Slurm itself is asked at the shared poller's pace (10 s by default)
SHOW_IN_QUESTION = 8


@dataclass(frozen=True)
class ActionRecord:
    """What an action did, kept for the status of the session (and for tests)."""

    action: str
    run_id: str
    ok: bool
    message: str


class SlurmmlApp(App):
    TITLE = "slurmml"
    BINDINGS = [
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, source: RegistrySource, actions: Any = None, *, read_only: bool = False,
                 refresh_s: float = REFRESH_S, sweep: Optional[str] = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.source = source
        self.actions = actions
        self.read_only = read_only
        self.refresh_s = refresh_s
        self.clock = clock
        self.initial_filter = f"sweep_id={sweep}" if sweep else ""
        self.action_log: list[ActionRecord] = []
        self._refreshing = False

    def get_default_screen(self) -> RunsScreen:
        return RunsScreen(self.source, clock=self.clock, read_only=self.read_only, initial_filter=self.initial_filter)

    @property
    def runs_screen(self) -> RunsScreen:
        return self.screen_stack[0]  # type: ignore[return-value]

    def on_mount(self) -> None:
        self.load_snapshot(self.runs_screen)
        if self.refresh_s > 0:
            self.set_interval(self.refresh_s, self.refresh_now)

    # -- failures: every one ends here (tui.workers), as one notification, and the app goes on -------------
    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self._failed(event.worker.description, event.worker.error)

    @on(WorkFailed)
    def work_failed(self, message: WorkFailed) -> None:
        self._failed(message.what, message.error)

    def _failed(self, what: str, error: BaseException) -> None:
        self.notify(failure_note(what, error), severity="error", timeout=10, markup=False)

    # -- data ------------------------------------------------------------------------------------------
    @background("reading the registry", group="snapshot", exclusive=True)
    def load_snapshot(self, screen: RunsScreen) -> None:
        """The first paint reads the registry as it is; ingest and Slurm come after, in refresh_now."""
        deliver(screen, self._first_snapshot, screen, self.source.snapshot())

    def _first_snapshot(self, screen: RunsScreen, snapshot: Snapshot) -> None:
        screen.show_snapshot(snapshot)
        # Once per process, here: what is alive after the first paint (the imports, the widgets, the first
        # snapshot's tens of thousands of rows) is long-lived, and leaving it out of full collections keeps
        # those short (30 ms otherwise, in the middle of typing). The rows hold no cycles, so reference
        # counting still frees them when a later snapshot replaces them. Not per snapshot: gc.freeze is
        # process-wide, and cyclic garbage pending at a freeze is never collected.
        gc.freeze()
        self.refresh_now()

    @on(RefreshRequested)
    def refresh_now(self) -> None:
        if not self._refreshing:
            self._refreshing = True
            self._refresh(self.runs_screen)

    @background("refresh", group="refresh")
    def _refresh(self, screen: RunsScreen) -> None:
        try:
            outcome = self.source.refresh()
            snapshot = self.source.snapshot() if outcome.changed else None
        finally:
            self._refreshing = False
        deliver(screen, screen.refreshed, outcome, snapshot)

    # -- screens (imported when first opened: the first paint does not wait for plotting) ---------------
    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    @on(OpenRun)
    def open_run(self, message: OpenRun) -> None:
        from slurmml.tui.detail_screen import RunDetailScreen

        self.push_screen(RunDetailScreen(message.run_id, self.source, reload_s=self.refresh_s))

    @on(OpenCompare)
    def open_compare(self, message: OpenCompare) -> None:
        from slurmml.tui.compare_screen import CompareScreen

        self.push_screen(CompareScreen(message.run_ids, self.source))

    @on(OpenLeaderboard)
    def open_leaderboard(self, message: OpenLeaderboard) -> None:
        from slurmml.tui.leaderboard_screen import LeaderboardScreen

        self.push_screen(LeaderboardScreen(self.source, message.sweep))

    # -- actions on runs ---------------------------------------------------------------------------------
    @on(ActOnRuns)
    def act_on_runs(self, message: ActOnRuns) -> None:
        if message.action == "cancel":
            self.cancel_runs(message.rows)
        elif message.action == "requeue":
            self.requeue_runs(message.rows)
        elif message.action in CONTROL_KINDS:
            self.control_runs(message.action, message.rows)
        elif message.rows:
            self.clone_run(message.rows[0])

    def _may_act(self, action: str) -> bool:
        if self.read_only or self.actions is None:
            self.notify(f"{action}: slurmml tui was started with --read-only", severity="warning")
            return False
        return True

    def _allowed(self, action: str, rows: list[RunRow],
                 refusals: Optional[dict[str, Optional[str]]] = None) -> list[RunRow]:
        """The rows this action may touch; a message for each one it may not. refusals: run id -> why not, when
        a worker has asked already (a live control's rule reads the registry); else the actions' rule on the row."""
        if not rows or not self._may_act(action):
            return []
        allowed = []
        for row in rows:
            why = refusals.get(row.run_id) if refusals is not None else self.actions.refusal(action, row)
            if why:
                self._record(action, row.run_id, False, why)
            else:
                allowed.append(row)
        return allowed

    def cancel_runs(self, rows: list[RunRow]) -> None:
        allowed = self._allowed("cancel", rows)
        if allowed:
            self._confirm("Cancel", allowed, lambda: self._act("cancel", [r.run_id for r in allowed]))

    def requeue_runs(self, rows: list[RunRow]) -> None:
        allowed = self._allowed("requeue", rows)
        if not allowed:
            return
        run = lambda: self._act("requeue", [r.run_id for r in allowed])  # noqa: E731
        if any(r.state in ACTIVE_STATES for r in allowed):  # requeueing a running job throws its progress away
            self._confirm("Requeue (restart)", allowed, run)
        else:
            run()

    def _confirm(self, verb: str, rows: list[RunRow], then: Callable[[], None]) -> None:
        listed = "\n".join(f"  {r.run_id}  job {r.slurm_job_id}  {r.state}" for r in rows[:SHOW_IN_QUESTION])
        more = f"\n  … and {len(rows) - SHOW_IN_QUESTION} more" if len(rows) > SHOW_IN_QUESTION else ""
        question = f"{verb} {len(rows)} run{'s' if len(rows) > 1 else ''}?\n{listed}{more}"
        self.push_screen(ConfirmScreen(question), lambda yes: then() if yes else None)

    @background("cancel or requeue", group="actions")
    def _act(self, action: str, run_ids: list[str]) -> None:
        act = self.actions.cancel if action == "cancel" else self.actions.requeue
        for run_id in run_ids:
            result = act(run_id)
            deliver(self, self._record, action, run_id, result.ok, result.message)
        deliver(self, self.refresh_now)

    def clone_run(self, row: RunRow) -> None:
        if self._allowed("clone", [row]):
            self._edit_clone(row.run_id)

    @background("clone", group="actions")
    def _edit_clone(self, run_id: str) -> None:
        deliver(self, self._show_clone_editor, run_id, self.actions.overrides(run_id))

    def _show_clone_editor(self, run_id: str, overrides: list[str]) -> None:
        self.push_screen(CloneScreen(run_id, shlex.join(overrides)), lambda text: self._submit_clone(run_id, text))

    def _submit_clone(self, run_id: str, text: Optional[str]) -> None:
        if text is None:
            return
        try:
            overrides = shlex.split(text)
        except ValueError as error:
            self._record("clone", run_id, False, f"cannot read the overrides: {error}")
            return
        self._clone(run_id, overrides)

    @background("clone", group="actions")
    def _clone(self, run_id: str, overrides: list[str]) -> None:
        deliver(self, self.notify, f"cloning {run_id}…", markup=False)
        result = self.actions.clone(run_id, overrides)
        deliver(self, self._record, "clone", run_id, result.ok, result.message)
        deliver(self, self.refresh_now)

    # -- live controls: set (values from a dialog), snapshot, stop (confirmed) ------------------------------
    def control_runs(self, kind: str, rows: list[RunRow]) -> None:
        if rows and self._may_act(kind):
            self._check_controls(kind, rows)

    @background("checking the runs", group="actions")
    def _check_controls(self, kind: str, rows: list[RunRow]) -> None:
        refusals = {row.run_id: self.actions.control_refusal(kind, row.run_id) for row in rows}
        deliver(self, self._controls_checked, kind, rows, refusals)

    def _controls_checked(self, kind: str, rows: list[RunRow], refusals: dict[str, Optional[str]]) -> None:
        allowed = self._allowed(kind, rows, refusals)
        run_ids = [r.run_id for r in allowed]
        if not allowed:
            return
        if kind == "set":
            self.push_screen(SetValuesScreen(run_ids),
                             lambda values: self._control("set", run_ids, {"values": values}) if values else None)
        elif kind == "stop":  # the job ends: it can be requeued from its checkpoint, but it stops training now
            self._confirm("Stop (save, then end)", allowed, lambda: self._control("stop", run_ids, {}))
        else:
            self._control(kind, run_ids, {})

    @background("sending a live control", group="actions")
    def _control(self, kind: str, run_ids: list[str], args: dict[str, Any]) -> None:
        for run_id in run_ids:
            sent = self.actions.control(run_id, kind, args)
            deliver(self, self._record, kind, run_id, sent.ok, sent.message)
        deliver(self, self.refresh_now)

    def _record(self, action: str, run_id: str, ok: bool, message: str) -> None:
        self.action_log.append(ActionRecord(action, run_id, ok, message))
        self.notify(message, severity="information" if ok else "error", timeout=8, markup=False)
