"""`slurmml info`, `sweeps`, `runs`, `show`, `status` and `tui` on a real registry, and `slurmml cluster`:
what they print and how they exit.

The registry is filled as jobs fill it (Registry.add_sweep, mark_queued, spools that Registry.ingest reads);
the shared poller's schedule is claimed first, so no command asks Slurm and every state stays as recorded.
`tui` records the app it would start; `cluster` records the script it would run.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from slurmml.cli import main
from slurmml.registry import jobs
from slurmml.registry.registry import Registry

T0 = 1_767_268_800.0
TRACEBACK = "Traceback (most recent call last):\n  File \"train.py\", line 9, in main\nValueError: lr too large"
# sweep -> (folder name, created, {job_num: (overrides, Slurm job id, spool records)})
SWEEPS = {
    "s1": ("grid", T0, {
        0: (["lr=0.1"], "9100_0", [{"k": "start", "t": T0 + 10, "host": "node1", "config": {"lr": 0.1, "model": "mlp"}},
                                   {"k": "m", "t": T0 + 20, "s": 0, "v": {"val_acc": 0.7, "loss": 0.5}},
                                   {"k": "m", "t": T0 + 30, "s": 1, "v": {"val_acc": 0.8, "loss": 0.3}},
                                   {"k": "p", "t": T0 + 30, "v": {"batch_size": 256}},
                                   {"k": "end", "t": T0 + 40, "state": "COMPLETED", "exit_code": 0}]),
        1: (["lr=1.0"], "9100_1", [{"k": "start", "t": T0 + 10, "host": "node2", "config": {"lr": 1.0, "model": "mlp"}},
                                   {"k": "m", "t": T0 + 20, "s": 0, "v": {"val_acc": 0.4, "loss": 0.9}},
                                   {"k": "end", "t": T0 + 25, "state": "FAILED", "exit_code": 1, "error": TRACEBACK}]),
    }),
    "s2": ("seeds", T0 + 100, {
        0: (["seed=1"], "9200_0", None),  # still queued: no spool yet
    }),
}


def write_spool(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("SLURMML_HOME", str(home))
    registry = Registry(home / "registry.db")
    for sweep_id, (folder, created, runs) in SWEEPS.items():
        (tmp_path / folder).mkdir()
        registry.add_sweep({"id": sweep_id, "name": folder, "user": "alice", "created": created, "argv": ["train.py"],
                            "cwd": str(tmp_path), "sweep_dir": str(tmp_path / folder), "backend": "slurm"},
                           [{"id": f"{sweep_id}-{n}", "job_num": n, "overrides": overrides,
                             "spool_path": str(tmp_path / "spools" / f"{sweep_id}-{n}.jsonl")}
                            for n, (overrides, _, _) in runs.items()])
        registry.mark_queued({f"{sweep_id}-{n}": (job, f"{tmp_path}/logs/{job}.err")
                              for n, (_, job, _) in runs.items()})
        for n, (_, _, records) in runs.items():
            if records:
                write_spool(tmp_path / "spools" / f"{sweep_id}-{n}.jsonl", records)
    assert registry.ingest().problems == []
    for call in ("squeue", "sacct"):  # another view polled a moment ago: the shared schedule waits
        assert jobs.claim_call(registry, call, time.time(), 3600)
    registry.close()
    return home


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), env={"COLUMNS": "200"})


def ok(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def refused(*args: str) -> str:
    """A command that fails says so in one line on stderr, prints nothing on stdout and exits 1."""
    result = invoke(*args)
    assert result.exit_code == 1 and result.stdout == "", result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("slurmml: "), result.stderr
    return result.stderr


def table_rows(text: str) -> dict[str, list[str]]:
    """First cell -> the row's cells, for the rows of a table (cells two spaces or more apart)."""
    import re

    return {cells[0]: cells for cells in (re.split(r"\s{2,}", line.strip()) for line in text.splitlines())
            if cells and cells[0]}


# -- info ----------------------------------------------------------------------------------------------------

def test_info_names_the_home_and_registry(home: Path) -> None:
    text = ok("info")
    assert f"home: {home}" in [line.strip() for line in text.splitlines()]
    assert f"registry: {home / 'registry.db'}" in [line.strip() for line in text.splitlines()]
    facts = json.loads(ok("info", "--json"))
    assert set(facts) == {"version", "home", "registry", "sbatch", "templates"}
    assert facts["home"] == str(home) and facts["registry"] == str(home / "registry.db")
    assert facts["sbatch"] in ("found", "not found (use hydra/launcher=slurmml_local)")
    assert facts["templates"]


# -- sweeps --------------------------------------------------------------------------------------------------

def test_sweeps_lists_every_sweep_with_its_counts(home: Path) -> None:
    rows = table_rows(ok("sweeps"))
    assert rows["s1"][:3] == ["s1", "grid", "slurm"] and rows["s1"][3:8] == ["2", "1", "0", "1", "0"]
    assert rows["s2"][3:8] == ["1", "0", "0", "0", "1"]
    listed = json.loads(ok("sweeps", "--json"))
    assert [(s["id"], s["runs"], s["completed"], s["failed"], s["active"]) for s in listed] == [
        ("s1", 2, 1, 1, 0), ("s2", 1, 0, 0, 1)]
    assert listed[0]["sweep_dir"] == str(home.parent / "grid")
    lines = ok("sweeps", "--csv").splitlines()
    assert lines[0] == "id,name,backend,runs,completed,stopped,failed,active,sweep_dir"
    assert lines[1] == f"s1,grid,slurm,2,1,0,1,0,{home.parent / 'grid'}"


def test_without_a_registry_listings_say_so_and_no_sweep_is_found(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURMML_HOME", str(tmp_path / "empty"))
    assert refused("sweeps") == f"slurmml: no registry at {tmp_path / 'empty' / 'registry.db'} (nothing has been " \
                                f"launched with this SLURMML_HOME yet)\n"
    unknown = f"slurmml: no sweep 's1': not a sweep directory, and no sweep with that id in {tmp_path / 'empty'}\n"
    assert refused("status", "s1") == refused("runs", "--sweep", "s1") == refused("watch", "s1") == unknown


# -- runs ----------------------------------------------------------------------------------------------------

def test_runs_shows_each_run_with_its_state_and_last_metrics(home: Path) -> None:
    rows = table_rows(ok("runs"))
    assert rows["s1-0"][:3] == ["s1-0", "COMPLETED", "9100_0"] and "lr=0.1" in rows["s1-0"]
    assert rows["s1-1"][:2] == ["s1-1", "FAILED"] and rows["s2-0"][:2] == ["s2-0", "QUEUED"]
    by_id = {run["id"]: run for run in json.loads(ok("runs", "--json"))}
    assert set(by_id) == {"s1-0", "s1-1", "s2-0"}
    assert by_id["s1-0"]["val_acc"] == 0.8 and by_id["s1-0"]["loss"] == 0.3 and by_id["s1-0"]["overrides"] == "lr=0.1"
    assert by_id["s1-1"]["error"] == TRACEBACK and "val_acc" not in by_id["s2-0"]


def test_runs_filters_sorts_and_limits(home: Path) -> None:
    assert [r["id"] for r in json.loads(ok("runs", "--sweep", "s1", "--json"))] == ["s1-0", "s1-1"]
    assert [r["id"] for r in json.loads(ok("runs", "--where", "lr>0.5", "--json"))] == ["s1-1"]
    assert [r["id"] for r in json.loads(ok("runs", "--sort", "loss", "--json"))][:2] == ["s1-0", "s1-1"]
    assert [r["id"] for r in json.loads(ok("runs", "--sort", "-loss", "--limit", "1", "--json"))] == ["s1-1"]
    table = csv.DictReader(io.StringIO(ok("runs", "--sweep", "s1", "--csv")))
    assert table.fieldnames == ["id", "state", "slurm_job_id", "overrides", "loss", "val_acc"]
    assert [(row["id"], row["state"], row["val_acc"]) for row in table] == [("s1-0", "COMPLETED", "0.8"),
                                                                          ("s1-1", "FAILED", "0.4")]


def test_runs_takes_a_sweep_folder_holding_one_sweep(home: Path) -> None:
    assert [r["id"] for r in json.loads(ok("runs", "--sweep", str(home.parent / "seeds"), "--json"))] == ["s2-0"]


def test_runs_of_an_unknown_sweep_or_key_is_one_line(home: Path) -> None:
    assert refused("runs", "--sweep", "nope") == \
        f"slurmml: no sweep 'nope': not a sweep directory, and no sweep with that id in {home}\n"
    assert "no run in sweep s1 has a config key, metric or column 'nosuch'" in refused(
        "runs", "--sweep", "s1", "--where", "nosuch>1")


# -- show ----------------------------------------------------------------------------------------------------

def test_show_prints_the_runs_fields_metrics_and_params(home: Path) -> None:
    text = ok("show", "s1-0")
    lines = [line.strip() for line in text.splitlines()]
    assert "id: s1-0" in lines and "state: COMPLETED" in lines and "host: node1" in lines
    assert "overrides: lr=0.1" in lines and "slurm_job_id: 9100_0" in lines
    metrics = table_rows(text)
    assert metrics["val_acc"][:3] == ["val_acc", "0.8", "0.8"]  # last, best (max)
    assert metrics["loss"][:3] == ["loss", "0.3", "0.3"]  # best is the min for a loss
    assert metrics["batch_size"] == ["batch_size", "256"]


def test_show_json_holds_everything_recorded(home: Path) -> None:
    run = json.loads(ok("show", "s1-1", "--json"))
    assert run["id"] == "s1-1" and run["state"] == "FAILED" and run["exit_code"] == 1 and run["error"] == TRACEBACK
    assert run["config"] == {"lr": 1.0, "model": "mlp"} and run["overrides"] == ["lr=1.0"]
    assert {("QUEUED", "launcher"), ("RUNNING", "run"), ("FAILED", "run")} <= {(s["state"], s["source"])
                                                                             for s in run["states"]}
    assert run["metrics"]["val_acc"]["best"] == 0.4 and run["metrics"]["loss"]["last"] == 0.9


def test_show_of_an_unknown_run_is_one_line(home: Path) -> None:
    assert refused("show", "nope") == f"slurmml: no run 'nope' in {home / 'registry.db'}\n"


# -- status --------------------------------------------------------------------------------------------------

def test_status_tallies_each_task_and_shows_the_telling_error_line(home: Path) -> None:
    text = ok("status", "s1")
    assert text.splitlines()[0] == f"sweep s1  {home.parent / 'grid'}  COMPLETED=1  FAILED=1"
    rows = table_rows(text)
    assert rows["0"][:3] == ["0", "9100_0", "COMPLETED"]
    assert rows["1"][:4] == ["1", "9100_1", "FAILED", "ValueError: lr too large"]  # a traceback's last line
    tasks = json.loads(ok("status", "s1", "--json"))
    assert [(t["job_num"], t["state"], t["error"]) for t in tasks] == [(0, "COMPLETED", ""),
                                                                      (1, "FAILED", "ValueError: lr too large")]
    assert ok("status", "s1", "--csv").splitlines()[0] == "sweep_id,job_num,slurm_job_id,state,error,log_path"


def test_status_by_folder_and_unknown_sweep(home: Path) -> None:
    text = ok("status", str(home.parent / "seeds"))
    assert text.splitlines()[0] == f"sweep s2  {home.parent / 'seeds'}  QUEUED=1"
    assert refused("status", "nope") == \
        f"slurmml: no sweep 'nope': not a sweep directory, and no sweep with that id in {home}\n"
    assert refused("status", str(home.parent)).startswith(f"slurmml: no sweep '{home.parent}'")  # holds no sweep


def test_a_folder_holding_two_sweeps_shows_both_in_status_and_is_refused_for_one_sweep(home: Path) -> None:
    with Registry(home / "registry.db") as registry:
        registry.add_sweep({"id": "s3", "created": T0 + 200, "argv": [], "sweep_dir": str(home.parent / "grid"),
                            "backend": "slurm"}, [{"id": "s3-0", "job_num": 0}])
    assert {t["sweep_id"] for t in json.loads(ok("status", str(home.parent / "grid"), "--json"))} == {"s1", "s3"}
    assert refused("runs", "--sweep", str(home.parent / "grid")) == \
        f"slurmml: {home.parent / 'grid'} holds 2 sweeps (s1, s3): give one of their ids\n"


# -- tui -----------------------------------------------------------------------------------------------------

@pytest.fixture
def started_apps(monkeypatch: pytest.MonkeyPatch) -> list:
    """Each SlurmmlApp `slurmml tui` starts, recorded instead of taking over the terminal."""
    from slurmml.tui.app import SlurmmlApp

    apps: list = []
    monkeypatch.setattr(SlurmmlApp, "run", lambda app, *args, **kwargs: apps.append(app))
    return apps


def test_tui_starts_the_app_with_its_filter_mode_and_intervals(home: Path, started_apps: list) -> None:
    assert ok("tui") == ""
    app = started_apps.pop()
    assert app.initial_filter == "" and not app.read_only and app.actions is not None
    assert app.refresh_s == 2.0 and app.source.poller.squeue_interval_s == 10.0
    assert ok("tui", "--sweep", "s1", "--read-only", "--interval", "30", "--refresh", "4") == ""
    app = started_apps.pop()
    assert app.initial_filter == "sweep_id=s1" and app.read_only and app.actions is None
    assert app.refresh_s == 4.0 and app.source.poller.squeue_interval_s == 30.0
    ok("tui", "--sweep", str(home.parent / "seeds"))  # a sweep folder names its sweep
    assert started_apps.pop().initial_filter == "sweep_id=s2"


def test_tui_raises_too_short_intervals_to_their_minimum(home: Path, started_apps: list) -> None:
    from slurmml.poller.loop import MIN_SQUEUE_INTERVAL_S

    ok("tui", "--interval", "1", "--refresh", "0.1")
    app = started_apps.pop()
    assert app.source.poller.squeue_interval_s == MIN_SQUEUE_INTERVAL_S and app.refresh_s == 0.5


def test_tui_of_an_unknown_sweep_is_one_line_and_starts_nothing(home: Path, started_apps: list) -> None:
    assert refused("tui", "--sweep", "nope") == \
        f"slurmml: no sweep 'nope': not a sweep directory, and no sweep with that id in {home}\n"
    assert started_apps == []


# -- cluster -------------------------------------------------------------------------------------------------

@pytest.fixture
def script_calls(monkeypatch: pytest.MonkeyPatch) -> list:
    """The command lines slurmml.devcluster would run, each answered with the exit code at the list's end."""
    from slurmml import devcluster

    calls: list = [0]

    def call(argv: list[str]) -> int:
        calls.insert(-1, argv)
        return calls[-1]

    monkeypatch.setattr(devcluster.subprocess, "call", call)
    from slurmml.devcluster import s3server

    for action in ("up", "down", "status"):  # the dev S3 server of this machine is left as it is
        monkeypatch.setattr(s3server, action, lambda action=action: calls.insert(-1, ["s3", action]) or 0)
    return calls


@pytest.mark.parametrize("action", ["up", "down", "status"])
def test_cluster_runs_the_devcluster_script_with_its_action(action: str, script_calls: list) -> None:
    from slurmml import devcluster

    assert devcluster.SCRIPT.is_file()
    assert invoke("cluster", action).exit_code == 0
    assert script_calls[:-1] == [["bash", str(devcluster.SCRIPT), action], ["s3", action]]


def test_cluster_exits_with_the_scripts_exit_code_and_no_traceback(script_calls: list) -> None:
    script_calls[-1] = 3  # e.g. `status` when a daemon is down
    result = invoke("cluster", "status")
    assert result.exit_code == 3 and isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
