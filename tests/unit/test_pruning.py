"""The early-stopping round on a real registry: which runs it prunes (as the rule says), that two watchers never
prune a run twice, the graceful stop through the control files, one scancel for the late losers, PRUNED kept
against the TERM's end record, the problem said once, and the shared poller running the round."""

from __future__ import annotations

import getpass
import json
import time
from pathlib import Path

from slurmml.control.pruning import curves_of, prune_round
from slurmml.core.early_stop import decide, parse_rule
from slurmml.poller.loop import Poller
from slurmml.registry.registry import Registry
from slurmml.slurm.commands import CommandResult
from slurmml.tracking.controls import controls_path

RULE = {"metric": "val_loss", "mode": "min", "rule": "hyperband", "min_steps": 2, "eta": 3, "grace_s": 30}
# six runs' val_loss per epoch: a and b learn, c and d are slow, e and f diverge
CURVES = {
    "a": [0.9, 0.5, 0.35, 0.3], "b": [0.95, 0.55, 0.4, 0.33], "c": [1.0, 0.8, 0.7],
    "d": [1.0, 0.85, 0.75], "e": [1.1, 1.2, 1.3], "f": [1.2, 1.4],
}


class Scancel:
    """Stands in for Slurm's scancel (the one Slurm call a round makes): records its argv."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], timeout_s: float = 30.0) -> CommandResult:
        self.calls.append(list(argv))
        return CommandResult(argv, 0, "", "")


def append(path: Path, *records: dict) -> None:
    with open(path, "a") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def sweep(tmp_path: Path, curves: dict = CURVES, metric: str = "val_loss", rule: dict = RULE) -> Registry:
    registry = Registry(tmp_path / "registry.db")
    runs = []
    for number, name in enumerate(curves):
        spool = tmp_path / "sweep" / f"{name}.jsonl"
        spool.parent.mkdir(parents=True, exist_ok=True)
        runs.append({"id": f"s1-{name}", "job_num": number, "overrides": [f"x={name}"], "spool_path": str(spool)})
    registry.add_sweep({"id": "s1", "user": getpass.getuser(), "created": 1.0, "argv": ["train.py"],
                        "backend": "slurm", "sweep_dir": str(tmp_path / "sweep"), "cwd": str(tmp_path),
                        "early_stop": rule}, runs)
    registry.mark_queued({f"s1-{name}": (f"100_{i}", "") for i, name in enumerate(curves)})
    now = time.time()
    for name, values in curves.items():
        append(tmp_path / "sweep" / f"{name}.jsonl", {"k": "start", "t": now, "run_id": f"s1-{name}", "config": {}},
               *({"k": "m", "t": now + step, "s": step, "v": {metric: value}} for step, value in enumerate(values, 1)))
    registry.ingest()
    return registry


def commands(tmp_path: Path, name: str) -> list[dict]:
    path = controls_path(tmp_path / "sweep" / f"{name}.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_round_prunes_what_the_rule_says_and_sends_each_loser_a_graceful_stop(tmp_path: Path) -> None:
    registry = sweep(tmp_path)
    expected = {v.run_id for v in decide(parse_rule(RULE), curves_of(registry.sweep_curves("s1", "val_loss"))).prune}
    scancel = Scancel()
    done = prune_round(registry, run=scancel)
    assert {run_id for run_id, _ in done.pruned} == expected and expected  # e and f at least
    assert {"s1-e", "s1-f"} <= expected and not {"s1-a", "s1-b"} & expected
    for run_id in expected:
        (command,) = commands(tmp_path, run_id.split("-")[1])
        assert command["kind"] == "stop" and command["state"] == "PRUNED"
        assert "is worse than" in command["reason"] and "rung" in command["reason"]
    assert commands(tmp_path, "a") == [] and scancel.calls == []  # nothing cancelled within the grace
    rows = {row["run_id"]: row for row in registry.prunings("s1")}
    assert set(rows) == expected and all(row["cancelled"] is None for row in rows.values())


def test_two_watchers_never_prune_a_run_twice(tmp_path: Path) -> None:
    first = sweep(tmp_path)
    second = Registry(tmp_path / "registry.db")  # another process on the same registry
    done = prune_round(first, run=Scancel())
    again = prune_round(second, run=Scancel())
    assert done.pruned and again.pruned == []
    assert all(len(commands(tmp_path, run_id.split("-")[1])) == 1 for run_id, _ in done.pruned)


def test_late_losers_get_one_scancel_and_stay_pruned_when_their_term_ends_arrive(tmp_path: Path) -> None:
    registry = sweep(tmp_path)
    now = time.time()
    done = prune_round(registry, now=now, run=Scancel())
    pruned = sorted(run_id for run_id, _ in done.pruned)
    scancel = Scancel()
    prune_round(registry, now=now + 10, run=scancel)  # within grace_s (30)
    assert scancel.calls == []
    prune_round(registry, now=now + 31, run=scancel)
    jobs = {registry.run(run_id)["slurm_job_id"] for run_id in pruned}
    assert len(scancel.calls) == 1 and scancel.calls[0][0] == "scancel" and set(scancel.calls[0][1:]) == jobs
    for run_id in pruned:
        run = registry.run(run_id)
        assert run["state"] == "PRUNED" and "is worse than" in run["error"]
    prune_round(registry, now=now + 60, run=scancel)
    assert len(scancel.calls) == 1  # cancelled once
    # the TERM's end record (FAILED, 143) does not replace the pruning or its reason
    name = pruned[0].split("-")[1]
    append(tmp_path / "sweep" / f"{name}.jsonl", {"k": "end", "t": now + 62, "state": "FAILED", "exit_code": 143,
                                                   "error": "Terminated"})
    registry.ingest()
    run = registry.run(pruned[0])
    assert run["state"] == "PRUNED" and "is worse than" in run["error"]


def test_a_run_that_stops_by_itself_is_not_cancelled(tmp_path: Path) -> None:
    registry = sweep(tmp_path)
    now = time.time()
    done = prune_round(registry, now=now, run=Scancel())
    for run_id, _ in done.pruned:
        name = run_id.split("-")[1]
        (command,) = commands(tmp_path, name)
        append(tmp_path / "sweep" / f"{name}.jsonl",
               {"k": "control", "t": now + 3, "id": command["id"], "kind": "stop", "status": "applied", "step": 3},
               {"k": "end", "t": now + 4, "state": "PRUNED", "exit_code": 0, "error": command["reason"]})
    scancel = Scancel()
    prune_round(registry, now=now + 60, run=scancel)
    assert scancel.calls == []
    assert {registry.run(run_id)["state"] for run_id, _ in done.pruned} == {"PRUNED"}


def test_a_metric_nobody_logs_is_said_once_and_prunes_nothing(tmp_path: Path) -> None:
    registry = sweep(tmp_path, rule={**RULE, "metric": "val_los"})
    said: list[str] = []
    first = prune_round(registry, run=Scancel(), warn=said.append)
    second = prune_round(registry, run=Scancel(), warn=said.append)
    assert first.pruned == second.pruned == []
    assert len(said) == 1 and "no run logs 'val_los'" in said[0] and "val_loss" in said[0]
    assert registry.early_stop_rule("s1")["problem"] == said[0]


def test_the_shared_poller_runs_the_round_on_its_schedule(tmp_path: Path) -> None:
    registry = sweep(tmp_path)
    scancel = Scancel()
    clock = [time.time()]
    poller = Poller(registry, run=scancel, clock=lambda: clock[0], squeue_interval_s=10)
    report = poller.poll()
    assert report.pruned and {"s1-e", "s1-f"} <= {run_id for run_id, _ in report.pruned}
    other = Poller(Registry(tmp_path / "registry.db"), run=scancel, clock=lambda: clock[0], squeue_interval_s=10)
    assert other.poll().pruned == []  # the schedule's claim: one round per interval for every watcher
    assert [call for call in scancel.calls if call[0] == "scancel"] == []


def test_runs_that_log_at_different_steps_are_not_compared(tmp_path: Path) -> None:
    registry = sweep(tmp_path, {"a": [0.5, 0.4, 0.3], "b": [], "c": [0.8, 0.7, 0.6]})
    append(tmp_path / "sweep" / "b.jsonl",  # b logs every tenth step: its second value is step 20, not 2
           *({"k": "m", "t": time.time(), "s": step, "v": {"val_loss": 0.9}} for step in (10, 20, 30)))
    registry.ingest()
    said: list[str] = []
    done = prune_round(registry, run=Scancel(), warn=said.append)
    assert done.pruned == [] and len(said) == 1 and "different steps" in said[0], said


def test_a_refused_scancel_is_tried_again_and_records_nothing(tmp_path: Path) -> None:
    registry = sweep(tmp_path)
    now = time.time()
    done = prune_round(registry, now=now, run=Scancel())
    pruned = {run_id for run_id, _ in done.pruned}

    def refuses(argv: list[str], timeout_s: float = 30.0) -> CommandResult:
        return CommandResult(argv, 1, "", "scancel: error: Socket timed out on send/recv operation")

    said: list[str] = []
    prune_round(registry, now=now + 31, run=refuses, warn=said.append)
    assert any("trying again next round" in line and "Socket timed out" in line for line in said)
    assert {registry.run(run_id)["state"] for run_id in pruned} == {"RUNNING"}  # still running: not PRUNED yet
    scancel = Scancel()
    prune_round(registry, now=now + 40, run=scancel)
    assert len(scancel.calls) == 1 and {registry.run(run_id)["state"] for run_id in pruned} == {"PRUNED"}


def test_only_the_watchers_own_sweeps_are_pruned(tmp_path: Path) -> None:
    registry = sweep(tmp_path)
    assert prune_round(registry, run=Scancel(), me="somebody-else").pruned == []
    assert all(commands(tmp_path, name) == [] for name in CURVES)


def test_metrics_logged_without_a_step_count_in_the_order_they_came(tmp_path: Path) -> None:
    registry = sweep(tmp_path, {"a": [], "b": [], "c": []})
    now = time.time()
    for name, values in {"a": [0.9, 0.5, 0.3], "b": [0.9, 0.6, 0.4], "c": [1.0, 1.2, 1.4]}.items():
        append(tmp_path / "sweep" / f"{name}.jsonl",
               *({"k": "m", "t": now + i, "s": None, "v": {"val_loss": v}} for i, v in enumerate(values)))
    registry.ingest()
    done = prune_round(registry, run=Scancel())
    assert [run_id for run_id, _ in done.pruned] == ["s1-c"]
