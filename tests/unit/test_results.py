"""Each run's result (its task's numeric return value) and each sweep's declared direction, on real SQLite files:
migration, ingest, filters and sorting, best runs (never a failed one) in the registry, the report, watch and the CLI."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from slurmml.cli import main as cli
from slurmml.report.progress import snapshot
from slurmml.registry.registry import Registry
from slurmml.registry.schema import MIGRATIONS
from slurmml.report.collect import build_report
from slurmml.report.records import run_records
from slurmml.tracking.spool import encode

T = 1_800_000_000.0

# sweep id -> declared direction, {run id: (end state or None while running, result, loss)}
SWEEPS = {
    "opt": ("min", {  # an Optuna `direction: minimize` study
        "opt-0": ("COMPLETED", 0.9, 0.5),
        "opt-1": ("COMPLETED", 0.1, 0.3),
        "opt-2": ("FAILED", None, 0.01),  # the lowest loss, but the run failed
        "opt-3": (None, None, 0.2),  # still running
        "opt-4": ("COMPLETED", 0.5, 0.4),
    }),
    "mx": ("max", {"mx-0": ("COMPLETED", 3.0, 0.7), "mx-1": ("COMPLETED", 5.0, 0.9)}),
    "plain": (None, {"plain-0": ("COMPLETED", None, 0.8), "plain-1": ("CANCELLED", None, 0.1),
                     "plain-2": ("COMPLETED", None, 0.6)}),
}


def write(path: Path, *records: dict) -> None:
    with open(path, "ab") as handle:
        handle.write(b"".join(encode(r) for r in records))


def fill(registry: Registry, folder: Path) -> Registry:
    for sweep, (direction, runs) in SWEEPS.items():
        registry.add_sweep({"id": sweep, "created": T, "argv": ["train.py", "-m"], "sweep_dir": str(folder),
                            "backend": "local", "direction": direction},
                           [{"id": run_id, "job_num": i, "overrides": [f"x={i}"], "spool_path": str(folder / f"{run_id}.jsonl")}
                            for i, run_id in enumerate(runs)])
        for run_id, (state, result, loss) in runs.items():
            records = [{"k": "start", "t": T, "host": "vm", "config": {"x": int(run_id[-1]), "optimizer": {"name": "adam"}}},
                       {"k": "m", "t": T + 1, "s": 0, "v": {"loss": loss}}]
            if state:
                end = {"k": "end", "t": T + 2, "state": state, "exit_code": 0 if state == "COMPLETED" else 1}
                records.append({**end, "result": result} if result is not None else end)
            write(folder / f"{run_id}.jsonl", *records)
    write(folder / "opt-1.jsonl", {"k": "p", "t": T + 3, "v": {"batch": 32, "optimizer": {"name": "sgd"}, "x": 1}})
    assert registry.ingest().problems == []
    return registry


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return fill(Registry(tmp_path / "registry.db"), tmp_path)


def ids(rows: list[dict]) -> list[str]:
    return [row["id"] for row in rows]


def test_a_version_3_registry_gains_the_result_and_direction_columns(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    old = sqlite3.connect(path)
    for migration in MIGRATIONS[:3]:
        old.executescript(migration)
    old.execute("PRAGMA user_version=3")
    old.execute("INSERT INTO sweeps(id, name) VALUES ('s', 'before')")
    old.execute("INSERT INTO runs(id, sweep_id, job_num, state) VALUES ('s-0', 's', 0, 'COMPLETED')")
    old.commit()
    old.close()
    registry = Registry(path)
    assert registry.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert registry.run("s-0")["result"] is None and registry.run("s-0")["state"] == "COMPLETED"
    assert registry.sweeps()[0]["name"] == "before" and registry.sweeps()[0]["direction"] is None


def test_ingest_records_the_result_of_the_end_record(registry: Registry, tmp_path: Path) -> None:
    assert {row["id"]: row["result"] for row in registry.runs(sweep="opt")} == {
        "opt-0": 0.9, "opt-1": 0.1, "opt-2": None, "opt-3": None, "opt-4": 0.5}
    assert registry.ingest().records == 0  # idempotent
    write(tmp_path / "opt-3.jsonl", {"k": "end", "t": T + 9, "state": "COMPLETED", "exit_code": 0, "result": True})
    registry.ingest()
    assert registry.run("opt-3")["state"] == "COMPLETED" and registry.run("opt-3")["result"] is None  # a bool is no result


def test_where_and_sort_by_result(registry: Registry) -> None:
    assert ids(registry.runs(where=["result<0.5"])) == ["opt-1"]
    assert ids(registry.runs(where=["result<=0.5"], sort="-result")) == ["opt-4", "opt-1"]
    assert ids(registry.runs(where=["result>=3"])) == ["mx-0", "mx-1"]
    # no sign: best first, the way the sweep declared; runs without a result last
    assert ids(registry.runs(sweep="opt", sort="result")) == ["opt-1", "opt-4", "opt-0", "opt-2", "opt-3"]
    assert ids(registry.runs(sweep="mx", sort="result")) == ["mx-1", "mx-0"]
    assert ids(registry.runs(sweep="opt", sort="+result"))[:3] == ["opt-1", "opt-4", "opt-0"]
    assert ids(registry.runs(sweep="opt", sort="-result")) == ["opt-0", "opt-4", "opt-1", "opt-2", "opt-3"]
    assert ids(registry.runs(sweep="plain", sort="loss")) == ["plain-1", "plain-2", "plain-0"]  # a loss: lowest first
    assert ids(registry.runs(sweep="plain", sort="job_num")) == ["plain-0", "plain-1", "plain-2"]


def test_best_runs_follow_the_declared_direction_and_never_failed(registry: Registry) -> None:
    assert [(r["id"], r["value"]) for r in registry.best("result", sweep="opt")] == [
        ("opt-1", 0.1), ("opt-4", 0.5), ("opt-0", 0.9)]
    assert ids(registry.best("result", sweep="mx")) == ["mx-1", "mx-0"]
    assert ids(registry.best("result", "max", sweep="opt"))[0] == "opt-0"  # an explicit mode wins
    assert ids(registry.best("loss", sweep="opt"))[:2] == ["opt-3", "opt-1"]  # opt-2 (0.01) failed; opt-3 runs
    assert ids(registry.best("loss", sweep="plain")) == ["plain-2", "plain-0"]  # plain-1 was cancelled


def test_sweep_counts_use_one_vocabulary(registry: Registry) -> None:
    counts = {s["id"]: (s["runs"], s["completed"], s["failed"], s["active"], s["direction"]) for s in registry.sweeps()}
    assert counts == {"opt": (5, 3, 1, 1, "min"), "mx": (2, 2, 0, 0, "max"), "plain": (3, 2, 1, 0, None)}


def test_a_run_shows_what_it_logged_with_log_params(registry: Registry, tmp_path: Path) -> None:
    run = registry.run("opt-1")
    assert run["params"] == {"batch": 32, "optimizer.name": "sgd", "x": 1}  # x=1 as well, though its config says so
    assert (run["result"], run["direction"]) == (0.1, "min")
    assert registry.run("opt-0")["params"] == {}  # its config is no logged param
    assert registry.runs(sweep="opt", where=["optimizer.name=sgd"])[0]["id"] == "opt-1"  # filters see both
    assert registry.sweep_direction("opt") == "min"
    write(tmp_path / "opt-1.jsonl", {"k": "start", "t": T + 4, "host": "vm",  # requeued: it starts again
                                     "config": {"x": 1, "optimizer": {"name": "adam"}, "depth": 2}})
    registry.ingest()
    assert registry.run("opt-1")["params"] == {"batch": 32, "optimizer.name": "sgd", "x": 1}


def test_show_prints_every_logged_param(home: Path) -> None:
    shown = CliRunner().invoke(cli, ["show", "opt-1"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    params = shown.output[shown.output.index("param"):]
    assert [line.split()[:2] for line in params.splitlines()[1:] if line.split()[:1] in (["batch"], ["x"])] == [
        ["batch", "32"], ["x", "1"]]
    shown = CliRunner().invoke(cli, ["show", "opt-1", "--json"])
    assert json.loads(shown.output)["params"] == {"batch": 32, "optimizer.name": "sgd", "x": 1}


def test_report_ranks_a_minimizing_sweep_by_its_result_lowest_first(registry: Registry) -> None:
    report = build_report(registry, sweep="opt", now=T + 100)
    assert (report.metric, report.mode, report.metric_picked) == ("result", "min", True)
    assert [(b.run_id, b.value) for b in report.best] == [("opt-1", 0.1), ("opt-4", 0.5), ("opt-0", 0.9)]
    assert (report.sweeps[0].best_run, report.sweeps[0].best_value) == ("opt-1", 0.1)
    assert run_records(report)[1]["result"] == 0.1 and "metric" not in run_records(report)[1]
    everything = build_report(registry, now=T + 100)  # each sweep ranked its own way
    assert {s.sweep_id: s.best_run for s in everything.sweeps} == {"opt": "opt-1", "mx": "mx-1", "plain": None}
    by_loss = build_report(registry, sweep="opt", metric="loss", now=T + 100)
    assert by_loss.mode == "min" and [b.run_id for b in by_loss.best] == ["opt-3", "opt-1", "opt-4", "opt-0"]
    assert build_report(registry, sweep="plain", now=T + 100).metric == "loss"  # no results: a logged metric


def test_watch_ranks_the_result_and_losses_lowest_first(registry: Registry) -> None:
    optimized = snapshot(registry, ["opt"])
    assert (optimized.metric, optimized.best["id"], optimized.best["value"]) == ("result", "opt-1", 0.1)
    assert optimized.line() == "queued 0  running 1  done 3  failed 1  best result 0.1 (#1)"
    plain = snapshot(registry, ["plain"])  # only a loss logged: the lowest, and not the cancelled run's
    assert (plain.metric, plain.best["id"], plain.failed) == ("loss", "plain-2", 1)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SLURMML_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    fill(Registry(tmp_path / "home" / "registry.db"), tmp_path).close()
    return tmp_path / "home"


def test_cli_runs_show_and_sweeps(home: Path) -> None:
    runner = CliRunner()
    runs = runner.invoke(cli, ["runs", "--sweep", "opt", "--sort", "result", "--json"])
    assert runs.exit_code == 0, runs.output
    assert [(r["id"], r["result"]) for r in json.loads(runs.output)][:3] == [("opt-1", 0.1), ("opt-4", 0.5), ("opt-0", 0.9)]
    table = runner.invoke(cli, ["runs", "--where", "result<0.5"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "result" in table.output and "opt-1" in table.output and "opt-4" not in table.output
    shown = runner.invoke(cli, ["show", "opt-1"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "result" in shown.output and "0.1" in shown.output
    assert "batch" in shown.output and "optimizer.name" in shown.output and "sgd" in shown.output
    metrics = shown.output[shown.output.index("metrics"):]
    assert "best" in metrics
    swept = json.loads(runner.invoke(cli, ["sweeps", "--json"]).output)
    assert {s["id"]: (s["failed"], s["active"]) for s in swept} == {"opt": (1, 1), "mx": (0, 0), "plain": (1, 0)}


def test_the_tui_shows_results_and_ranks_the_way_the_sweep_declared(registry: Registry) -> None:
    from slurmml.tui.model import cell_text, columns_for, sort_rows
    from slurmml.tui.source import RegistrySource

    source = RegistrySource(registry)
    rows = [row for row in source.snapshot().rows if row.sweep_id == "opt"]
    columns = columns_for(rows, ["loss"])
    result = next(c for c in columns if c.key == "result")
    assert [cell_text(row, result, T) for row in sort_rows(rows, "result", False, T)] == ["0.1", "0.5", "0.9", "", ""]
    assert not any(c.key == "result" for c in columns_for([r for r in rows if r.result is None], ["loss"]))
    assert source.metric_names() == ["result", "loss"]
    mode, board = source.leaderboard("result", None, "opt", None)
    assert (mode, [row["id"] for row in board]) == ("min", ["opt-1", "opt-4", "opt-0"])
    mode, board = source.leaderboard("result", None, "mx", None)
    assert (mode, [row["id"] for row in board]) == ("max", ["mx-1", "mx-0"])
    assert source.leaderboard("loss", "max", "opt", None)[0] == "max"  # flipped by the user
