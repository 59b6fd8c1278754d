"""The TUI on a registry filled by real sweeps on the dev cluster, acting on real jobs.

One module-wide pair of sweeps (tests/tui/apps/trainer.py, in a private SLURMML_HOME): a grid of three short
runs (lr=0.1,0.01,0.001, waited for) and one run that sleeps, to cancel. The app reads the registry through
the real shared Poller at its shortest interval (5 s) and refreshes every second, as `slurmml tui` does.
Tests that only look come first; then cancel, requeue and clone, each on a run no other test needs after it.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from textual.widgets import DataTable, Input, Log, Select, Static

from slurmml.poller.loop import Poller
from slurmml.registry.registry import Registry
from slurmml.slurm.commands import run_command
from tests.conftest import run_app
from tests.tui.conftest import (board, facts_of, notes, run_async, screen_lines, settle, shown_ids, text_of, type_filter,
                                wait_for)
from slurmml.tui.actions import RunActions
from slurmml.tui.app import SlurmmlApp
from slurmml.tui.dialogs import CloneScreen, ConfirmScreen
from slurmml.tui.model import RunRow, cell_text
from slurmml.tui.source import RegistrySource

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

SIZE = (120, 40)
APPS = Path(__file__).parent / "apps"
SLURM_WAIT_S = 120  # a deadline for Slurm and the poller, never a measured duration


@dataclass(frozen=True)
class Sweeps:
    registry_path: Path
    grid: str
    by_lr: dict[str, str]  # "0.1" -> run id
    long_run: str
    long_job: str


def sweep_id_of(stderr: str) -> str:
    match = re.search(r"sweep (\d{8}-\d{6}-[0-9a-f]{4})", stderr)
    assert match, stderr[-3000:]
    return match.group(1)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sweeps]:
    folder = tmp_path_factory.mktemp("tui_cluster")
    for name in ("trainer.py", "trainer.yaml"):
        shutil.copy(APPS / name, folder / name)
    home = folder / "home"
    env = {**os.environ, "SLURMML_HOME": str(home)}
    job_name = f"tui{os.getpid()}"
    common = ["trainer.py", "-m", "hydra/launcher=slurmml", f"hydra.launcher.name={job_name}"]
    try:
        long = run_app([*common, "hydra.sweep.dir=long", "lr=0.05", "sleep_s=900"], cwd=folder, env=env)
        assert long.returncode == 0, long.stderr[-3000:]
        grid = run_app([*common, "hydra.sweep.dir=grid", "lr=0.1,0.01,0.001", "hydra.launcher.wait=true",
                        "hydra.launcher.poll_interval_s=5"], cwd=folder, env=env)
        assert grid.returncode == 0, grid.stderr[-3000:]
        registry = Registry(home / "registry.db", create=False)
        grid_id, long_id = sweep_id_of(grid.stderr), sweep_id_of(long.stderr)
        by_lr = {row["overrides"].split("=", 1)[1]: row["id"] for row in registry.runs(sweep=grid_id)}
        assert set(by_lr) == {"0.1", "0.01", "0.001"}
        assert {row["state"] for row in registry.runs(sweep=grid_id)} == {"COMPLETED"}
        (long_run,) = registry.runs(sweep=long_id)
        registry.close()
        yield Sweeps(home / "registry.db", grid_id, by_lr, long_run["id"], long_run["slurm_job_id"])
    finally:
        run_command(["scancel", f"--name={job_name}"])


def make_app(sweeps: Sweeps, *, read_only: bool = False, user: str | None = None) -> SlurmmlApp:
    registry = Registry(sweeps.registry_path, create=False)
    # the poller on its own connection, as RegistrySource.open makes it: the views read on while it asks Slurm
    poller = Poller(Registry(sweeps.registry_path, create=False), squeue_interval_s=5, sacct_interval_s=5,
                    warn=lambda message: None)
    source = RegistrySource(registry, poller=poller, local_runs_dir=None)
    if user is not None:
        source.user = user
    actions = None if read_only else RunActions(source)
    return SlurmmlApp(source, actions, read_only=read_only, refresh_s=1.0)


def row_of(app: SlurmmlApp, run_id: str) -> RunRow | None:
    snapshot = app.runs_screen.snapshot
    return next((row for row in snapshot.rows if row.run_id == run_id), None) if snapshot else None


async def go_to(pilot: Any, run_id: str) -> None:
    table = pilot.app.runs_screen.table
    await wait_for(pilot, lambda: run_id in shown_ids(table), what=f"{run_id} in the table")
    table.cursor = table._index_of(run_id)
    await pilot.pause()
    assert table.current.run_id == run_id


def squeue_state(job_id: str) -> str:
    out = run_command(["squeue", "--noheader", "--array", f"--jobs={job_id}", "--format=%T"])
    return out.stdout.strip() if out.ok and out.stdout.strip() else "GONE"


async def until_running(pilot: Any, run_id: str) -> None:
    await wait_for(pilot, lambda: (row_of(pilot.app, run_id) or RunRow("", "", 0, "")).state == "RUNNING",
                   timeout_s=SLURM_WAIT_S, what=f"{run_id} to run")


# -- looking -----------------------------------------------------------------------------------------------------
def test_runs_view_lists_the_real_runs_with_states_and_metrics(sweeps: Sweeps) -> None:
    async def scenario() -> None:
        app = make_app(sweeps)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await until_running(pilot, sweeps.long_run)
            table = app.runs_screen.table
            assert set(shown_ids(table)) == set(sweeps.by_lr.values()) | {sweeps.long_run}
            assert screen_lines(table)[0].split()[-2:] == ["val_acc", "loss"]
            cells = {line.split()[0]: line.split() for line in screen_lines(table)[1:] if line.strip()}
            assert cells[sweeps.by_lr["0.1"]][1] == "COMPLETED" and cells[sweeps.by_lr["0.1"]][-2:] == ["0.9", "0.04762"]
            assert cells[sweeps.by_lr["0.001"]][-2:] == ["0.504", "0.8333"]
            assert cells[sweeps.long_run][1:3] == ["RUNNING", sweeps.long_job]
            status = text_of(app.runs_screen.query_one("#status", Static))
            assert status.startswith("4 runs · 1 running") and "Slurm checked" in status

    run_async(scenario())


def test_filters_narrow_the_real_runs(sweeps: Sweeps) -> None:
    async def scenario() -> None:
        app = make_app(sweeps)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            table = app.runs_screen.table
            await type_filter(pilot, "lr=0.01", keys=True)  # an expression: the config value, not the text
            assert shown_ids(table) == [sweeps.by_lr["0.01"]]
            await type_filter(pilot, "lr < 0.05")
            assert set(shown_ids(table)) == {sweeps.by_lr["0.01"], sweeps.by_lr["0.001"]}
            await type_filter(pilot, "val_acc>0.6")
            assert set(shown_ids(table)) == {sweeps.by_lr["0.1"], sweeps.long_run}  # the sleeper logged 0.7
            await type_filter(pilot, f"{sweeps.grid} completed 0.00")  # words: sweep id, state, overrides text
            assert shown_ids(table) == [sweeps.by_lr["0.001"]]

    run_async(scenario())


def test_detail_shows_the_config_job_and_real_log(sweeps: Sweeps) -> None:
    run_id = sweeps.by_lr["0.1"]
    registry = Registry(sweeps.registry_path, create=False)
    recorded = registry.run(run_id)
    assert recorded["log_path"] and Path(recorded["log_path"]).is_file()

    async def scenario() -> None:
        app = make_app(sweeps)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, run_id)
            await pilot.press("enter")
            await settle(pilot)
            detail = app.screen
            facts = facts_of(detail.query_one("#facts", Static))
            assert facts["JobId"] == recorded["slurm_job_id"] and facts["state"] == "COMPLETED"
            assert facts["ExitCode"] == "0" and facts["NodeList"]
            config = text_of(detail.query_one("#config", Static))
            assert "lr: 0.1" in config and "steps: 20" in config and "width: 64" in config
            await pilot.press("2")
            log = detail.query_one("#log", Log)
            await wait_for(pilot, lambda: any("trainer: lr=0.1 finished 20 steps" in line for line in log.lines),
                           what="the job's stderr")
            assert Path(recorded["log_path"]).read_text().splitlines() == [line for line in log.lines if line]
            await pilot.press("3")
            await settle(pilot)
            assert detail.plotted == {"val_acc": 20, "loss": 20}

    run_async(scenario())


def test_compare_shows_only_the_differing_keys(sweeps: Sweeps) -> None:
    async def scenario() -> None:
        app = make_app(sweeps)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            for lr in ("0.1", "0.001"):
                await go_to(pilot, sweeps.by_lr[lr])
                await pilot.press("space")
            await pilot.press("c")
            await settle(pilot)
            table = app.screen.query_one("#differences", DataTable)
            rows = [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]
            assert rows == [["lr", "0.1", "0.001"]]
            assert text_of(app.screen.query_one("#legend", Static)).splitlines() == [
                f"1. {sweeps.by_lr['0.1']}  lr=0.1", f"2. {sweeps.by_lr['0.001']}  lr=0.001"]

    run_async(scenario())


def test_leaderboard_ranks_the_sweep_by_a_metric(sweeps: Sweeps) -> None:
    async def scenario() -> None:
        app = make_app(sweeps)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, sweeps.by_lr["0.01"])
            await pilot.press("l")
            await settle(pilot)
            screen = app.screen
            assert screen.query_one("#metric", Select).value == "val_acc"
            assert screen.query_one("#scope", Select).value == sweeps.grid
            assert [row[:3] for row in board(screen)] == [["1", sweeps.by_lr["0.1"], "0.9"],
                                                          ["2", sweeps.by_lr["0.01"], "0.54"],
                                                          ["3", sweeps.by_lr["0.001"], "0.504"]]
            screen.query_one("#metric", Select).value = "loss"
            await settle(pilot)
            assert [row[1] for row in board(screen)] == [sweeps.by_lr[lr] for lr in ("0.1", "0.01", "0.001")]

    run_async(scenario())


# -- refusing ------------------------------------------------------------------------------------------------------
def test_read_only_refuses_and_the_job_keeps_running(sweeps: Sweeps) -> None:
    async def scenario() -> None:
        app = make_app(sweeps, read_only=True)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await until_running(pilot, sweeps.long_run)
            await go_to(pilot, sweeps.long_run)
            for key in ("x", "r", "n"):
                await pilot.press(key)
                await settle(pilot)
                assert app.screen is app.runs_screen
            assert app.action_log == []
            assert sum("started with --read-only" in message for _, message in notes(app)) == 3
        assert squeue_state(sweeps.long_job) == "RUNNING"

    run_async(scenario())


def test_someone_elses_run_is_refused_and_never_scancelled(sweeps: Sweeps) -> None:
    owner = getpass.getuser()

    async def scenario() -> None:
        app = make_app(sweeps, user=f"not-{owner}")  # the app's user is not the sweep's
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await until_running(pilot, sweeps.long_run)
            await go_to(pilot, sweeps.long_run)
            await pilot.press("x")
            await settle(pilot)
            assert app.screen is app.runs_screen  # nothing to confirm
            ((action, run_id, ok, message),) = [(r.action, r.run_id, r.ok, r.message) for r in app.action_log]
            assert (action, run_id, ok) == ("cancel", sweeps.long_run, False)
            assert f"belongs to {owner}" in message
            await pilot.press("enter", "x")  # from the run's detail too
            await settle(pilot)
            assert len(app.action_log) == 2 and not app.action_log[1].ok
        assert squeue_state(sweeps.long_job) == "RUNNING"
        assert Registry(sweeps.registry_path, create=False).run(sweeps.long_run)["state"] == "RUNNING"

    run_async(scenario())


# -- acting --------------------------------------------------------------------------------------------------------
def test_cancel_scancels_and_the_poller_records_cancelled(sweeps: Sweeps) -> None:
    async def scenario() -> None:
        app = make_app(sweeps)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await until_running(pilot, sweeps.long_run)
            await go_to(pilot, sweeps.long_run)
            await pilot.press("x")
            await settle(pilot)
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await wait_for(pilot, lambda: app.action_log, what="the cancel's outcome")
            ((action, run_id, ok, message),) = [(r.action, r.run_id, r.ok, r.message) for r in app.action_log]
            assert (action, run_id, ok) == ("cancel", sweeps.long_run, True), message
            assert sweeps.long_job in message
            await wait_for(pilot, lambda: row_of(app, sweeps.long_run).state == "CANCELLED", timeout_s=SLURM_WAIT_S,
                           what="the poller to record CANCELLED")
            line = next(line for line in screen_lines(app.runs_screen.table) if sweeps.long_run in line)
            assert line.split()[1] == "CANCELLED"
        assert squeue_state(sweeps.long_job) == "GONE"
        run = Registry(sweeps.registry_path, create=False).run(sweeps.long_run)
        assert run["state"] == "CANCELLED" and re.search(r"CANCELLED by \w+", run["error"] or ""), run["error"]

    run_async(scenario())


def test_requeue_of_a_finished_run_queues_it_and_it_runs_again(sweeps: Sweeps) -> None:
    run_id = sweeps.by_lr["0.001"]
    job_id = Registry(sweeps.registry_path, create=False).run(run_id)["slurm_job_id"]

    def restarted() -> bool:  # a requeued job starts once its last credential expired (dev cluster: ~11 s)
        return squeue_state(job_id) != "PENDING"

    async def scenario() -> None:
        app = make_app(sweeps)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, run_id)
            assert row_of(app, run_id).state == "COMPLETED" and row_of(app, run_id).restarts == 0
            await pilot.press("r")  # a finished run: no question asked
            await wait_for(pilot, lambda: app.action_log, what="the requeue's outcome")
            record = app.action_log[0]
            assert (record.action, record.run_id, record.ok) == ("requeue", run_id, True), record.message
            await wait_for(pilot, lambda: row_of(app, run_id).state == "QUEUED", what="the run to be queued again")
            await wait_for(pilot, restarted, timeout_s=60, interval_s=1, what=f"requeued job {job_id} to start")
            await wait_for(pilot, lambda: row_of(app, run_id).state == "COMPLETED" and row_of(app, run_id).restarts == 1,
                           timeout_s=SLURM_WAIT_S, what="the rerun to complete")
            columns = {column.key: column for column in app.runs_screen.table.columns}
            assert cell_text(row_of(app, run_id), columns["state"], 0.0) == "COMPLETED↻1"
            # (drawn as 'COMPLETE…' while the state column is sized without the restart mark: see test_tui_model)
        states = [s["state"] for s in Registry(sweeps.registry_path, create=False).run(run_id)["states"]]
        assert states[-4:-2] == ["COMPLETED", "QUEUED"] and states[-1] == "COMPLETED"

    run_async(scenario())


def test_clone_with_an_edited_override_runs_a_new_child_run(sweeps: Sweeps) -> None:
    parent = sweeps.by_lr["0.01"]

    async def scenario() -> None:
        app = make_app(sweeps)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await go_to(pilot, parent)
            await pilot.press("n")
            await wait_for(pilot, lambda: isinstance(app.screen, CloneScreen), what="the clone editor")
            field = app.screen.query_one("#overrides", Input)
            assert field.value == "lr=0.01"
            field.cursor_position = len(field.value)
            await pilot.press("backspace", "0", "5")  # lr=0.01 -> lr=0.005
            assert field.value == "lr=0.005"
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.action_log, timeout_s=SLURM_WAIT_S, what="the clone's outcome")
            record = app.action_log[0]
            assert (record.action, record.run_id, record.ok) == ("clone", parent, True), record.message
            child = re.match(r"cloned \S+ as (\S+)", record.message).group(1)
            await wait_for(pilot, lambda: (row_of(app, child) or RunRow("", "", 0, "")).state == "COMPLETED",
                           timeout_s=SLURM_WAIT_S, what="the clone to complete")
            row = row_of(app, child)
            assert row.parent_id == parent and row.sweep_id == sweeps.grid and row.overrides == "lr=0.005"
            assert row.metrics["val_acc"][0] == pytest.approx(0.52)
        run = Registry(sweeps.registry_path, create=False).run(child)
        assert run["parent_id"] == parent and run["config"]["lr"] == 0.005

    run_async(scenario())
