"""Live controls end to end on real files: the job's reader and control points (`slurmml.on_set`,
`checkpoint_point`, `slurmml.log`), its answers in the spool, and the login node's sender, waiter and registry
(a real SQLite file) reading those answers back through the ordinary ingest."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest

import slurmml
from slurmml.control.live import Sent, send, wait
from slurmml.core.controls import command_line
from slurmml.registry.registry import Registry
from slurmml.tracking import client, controls, requeue, spool
from slurmml.tracking.controls import Reader, Stopped, answered_path, controls_path

ME = "alice"
RUN = "s1-0"
CONFIG = {"optimizer": {"lr": 0.01}, "epochs": 10, "amp": True}


@pytest.fixture(autouse=True)
def fresh_job(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("SLURMML_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(controls.INTERVAL_ENV, "0.2")
    for name in (spool.SPOOL_ENV, spool.RUN_ID_ENV, client.RUN_DIR_ENV, "RANK", "SLURM_PROCID", "SLURM_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    warning_handler = signal.getsignal(requeue.WARNING_SIGNAL)  # checkpoint_point takes Slurm's warning signal
    client._reset()
    requeue._reset()
    yield
    client._reset()
    requeue._reset()
    signal.signal(requeue.WARNING_SIGNAL, warning_handler)


# -- helpers -------------------------------------------------------------------------------------------------

def spool_of(tmp_path: Path) -> Path:
    path = tmp_path / "sweep" / "spool" / "0.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def start_job(tmp_path: Path, config: dict = CONFIG) -> Path:
    path = spool_of(tmp_path)
    client.start_run(path, RUN, tmp_path / "run", config)
    return path


def send_line(path: Path, control_id: str, kind: str, args: dict | None = None, raw: bytes | None = None) -> None:
    """What the login node appends to the run's control file."""
    data = raw if raw is not None else command_line(control_id, kind, args or {}, time.time(), ME).encode()
    with open(controls_path(path), "ab") as handle:
        handle.write(data)


def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def queued(count: int = 1) -> None:
    """The reader thread has queued `count` commands."""
    assert until(lambda: len(controls._queue) >= count), f"the job read {len(controls._queue)} of {count} commands"


def records(path: Path, kind: str) -> list[dict]:
    if client._writer is not None:
        client._writer.flush()
    chunk = spool.parse_chunk(path.read_bytes())
    assert chunk.problems == []
    return [record for record in chunk.records if record.get("k") == kind]


def answer_of(path: Path, control_id: str) -> dict:
    (answer,) = [record for record in records(path, "control") if record["id"] == control_id]
    return answer


def append_records(path: Path, *items: dict) -> None:
    with open(path, "a") as handle:
        for item in items:
            handle.write(json.dumps(item) + "\n")


# -- the job side --------------------------------------------------------------------------------------------

def test_a_set_takes_effect_at_the_next_checkpoint_point(tmp_path: Path) -> None:
    path = start_job(tmp_path)
    seen: list[Any] = []
    slurmml.on_set("optimizer.lr", seen.append)
    send_line(path, "c1", "set", {"values": {"optimizer.lr": 0.001}})
    queued()
    assert seen == []  # reading only queues: the training thread applies it
    assert slurmml.checkpoint_point(4) is None
    assert seen == [0.001]
    answer = answer_of(path, "c1")
    assert (answer["status"], answer["step"], answer["kind"], answer["values"]) == ("applied", 4, "set",
                                                                                     {"optimizer.lr": 0.001})
    assert answer["message"] is None
    assert int(answered_path(path).read_text()) == controls_path(path).stat().st_size
    slurmml.checkpoint_point(5)
    assert seen == [0.001] and len(records(path, "control")) == 1  # answered once


def test_a_command_sent_before_the_job_started_takes_effect_at_its_first_point(tmp_path: Path) -> None:
    path = spool_of(tmp_path)
    send_line(path, "c1", "set", {"values": {"epochs": 20}})
    client.start_run(path, RUN, tmp_path / "run", CONFIG)
    seen: list[Any] = []
    slurmml.on_set("epochs", seen.append)
    queued()
    slurmml.checkpoint_point(0)
    assert seen == [20] and answer_of(path, "c1")["step"] == 0


def test_without_checkpoint_points_a_set_takes_effect_at_log_with_a_step(tmp_path: Path) -> None:
    path = start_job(tmp_path)
    seen: list[Any] = []
    slurmml.on_set("optimizer.lr", seen.append)
    send_line(path, "c1", "set", {"values": {"optimizer.lr": 0.5}})
    queued()
    slurmml.log(loss=1.0)  # no step: no control point
    assert seen == []
    slurmml.log(step=3, loss=0.9)
    assert seen == [0.5]
    assert (answer_of(path, "c1")["status"], answer_of(path, "c1")["step"]) == ("applied", 3)


def test_a_task_with_checkpoint_points_takes_commands_only_there(tmp_path: Path) -> None:
    path = start_job(tmp_path)
    seen: list[Any] = []
    slurmml.on_set("optimizer.lr", seen.append)
    slurmml.checkpoint_point(0)
    send_line(path, "c1", "set", {"values": {"optimizer.lr": 0.2}})
    queued()
    slurmml.log(step=1, loss=0.5)
    assert seen == []  # every rank meets at checkpoint points; slurmml.log is rank 0's alone
    slurmml.checkpoint_point(1)
    assert seen == [0.2] and answer_of(path, "c1")["step"] == 1


def test_a_key_without_a_callback_is_refused_and_nothing_of_the_command_applies(tmp_path: Path) -> None:
    path = start_job(tmp_path)
    seen: list[Any] = []
    slurmml.on_set("optimizer.lr", seen.append)
    slurmml.on_set("dropout", seen.append)
    send_line(path, "c1", "set", {"values": {"optimizer.lr": 0.1, "batch_size": 64}})
    queued()
    slurmml.checkpoint_point(2)
    assert seen == []
    answer = answer_of(path, "c1")
    assert (answer["status"], answer["step"]) == ("refused", 2)
    assert "no callback for batch_size" in answer["message"]
    assert "it takes: dropout, optimizer.lr" in answer["message"]


def test_a_callback_that_raises_refuses_with_its_message(tmp_path: Path) -> None:
    path = start_job(tmp_path)
    applied: list[Any] = []

    def set_lr(value: float) -> None:
        if value <= 0:
            raise ValueError("the learning rate must be positive")
        applied.append(value)

    slurmml.on_set("dropout", applied.append)
    slurmml.on_set("optimizer.lr", set_lr)
    send_line(path, "c1", "set", {"values": {"dropout": 0.3, "optimizer.lr": -1}})
    queued()
    slurmml.checkpoint_point(7)  # training goes on
    answer = answer_of(path, "c1")
    assert (answer["status"], answer["step"]) == ("refused", 7)
    assert answer["message"] == "optimizer.lr=-1: ValueError: the learning rate must be positive (dropout applied)"
    assert applied == [0.3]


def test_on_set_refuses_what_cannot_be_called() -> None:
    with pytest.raises(TypeError, match="must be callable"):
        slurmml.on_set("optimizer.lr", 0.1)  # type: ignore[arg-type]


def test_a_snapshot_at_a_checkpoint_point_saves_the_objects_given_there(tmp_path: Path) -> None:
    path = start_job(tmp_path)
    send_line(path, "c1", "snapshot")
    queued()
    assert slurmml.checkpoint_point(6, every=None, weights=[1.0, 2.0], epoch=6) is None  # no scheduled save
    answer = answer_of(path, "c1")
    assert (answer["status"], answer["step"]) == ("applied", 6)
    saved = Path(answer["checkpoint"])
    assert saved == tmp_path / "run" / "checkpoints" / "step_000000006.pt" and saved.is_file()
    assert answer["message"] == f"saved {saved}"
    loaded = slurmml.load_checkpoint(folder=saved.parent)
    assert loaded is not None and loaded.step == 6 and loaded.values == {"weights": [1.0, 2.0], "epoch": 6}


def test_a_snapshot_reuses_the_checkpoint_its_point_saved_anyway(tmp_path: Path) -> None:
    path = start_job(tmp_path)
    send_line(path, "c1", "snapshot")
    queued()
    scheduled = slurmml.checkpoint_point(4, every=2, counter=4)
    assert scheduled is not None and answer_of(path, "c1")["checkpoint"] == str(scheduled)
    assert sorted(p.name for p in scheduled.parent.iterdir()) == ["step_000000004.pt"]


def test_a_snapshot_is_refused_where_nothing_says_what_to_save(tmp_path: Path) -> None:
    path = start_job(tmp_path)
    send_line(path, "c1", "snapshot")
    queued()
    slurmml.log(step=2, loss=1.0)
    answer = answer_of(path, "c1")
    assert (answer["status"], answer["step"]) == ("refused", 2)
    assert "saves no checkpoints" in answer["message"] and "checkpoint" not in answer
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_stop_saves_raises_stopped_and_the_run_ends_stopped(tmp_path: Path) -> None:
    path = start_job(tmp_path)
    send_line(path, "c1", "stop")
    queued()
    with pytest.raises(Stopped) as raised:
        try:
            slurmml.checkpoint_point(3, weights=[3])
        except Exception:  # the training code's own handler must not swallow it
            pytest.fail("Stopped was caught as an Exception")
    assert isinstance(raised.value, SystemExit) and raised.value.code == 0
    assert raised.value.state == "STOPPED" and raised.value.reason == f"stopped by {ME} at step 3"
    answer = answer_of(path, "c1")  # flushed before it raised
    saved = tmp_path / "run" / "checkpoints" / "step_000000003.pt"
    assert (answer["status"], answer["step"], answer["checkpoint"]) == ("applied", 3, str(saved))
    assert answer["message"] == f"stopped by {ME} at step 3; saved {saved}" and saved.is_file()
    client.end_run("FAILED", 1, "Traceback ... Stopped")  # whatever unwound the task
    (end,) = records(path, "end")
    assert (end["state"], end["exit_code"], end["error"]) == ("STOPPED", 0, f"stopped by {ME} at step 3")


def test_a_pruning_stop_at_log_ends_the_run_pruned_with_its_reason(tmp_path: Path) -> None:
    path = start_job(tmp_path)
    reason = "pruned: val_loss 0.9 worse than 0.5 at rung 1"
    send_line(path, "c1", "stop", {"state": "PRUNED", "reason": reason})
    queued()
    with pytest.raises(Stopped):
        slurmml.log(step=5, val_loss=0.9)
    assert answer_of(path, "c1")["message"] == f"{reason}; nothing saved (no checkpoint point)"
    client.end_run()
    (end,) = records(path, "end")
    assert (end["state"], end["exit_code"], end["error"]) == ("PRUNED", 0, reason)


def test_commands_after_a_stop_are_left_unanswered_for_a_later_execution(tmp_path: Path) -> None:
    path = start_job(tmp_path)
    seen: list[Any] = []
    slurmml.on_set("epochs", seen.append)
    send_line(path, "c1", "set", {"values": {"epochs": 11}})
    send_line(path, "c2", "stop")
    stop_end = controls_path(path).stat().st_size
    send_line(path, "c3", "set", {"values": {"epochs": 12}})
    queued(3)
    with pytest.raises(Stopped):
        slurmml.checkpoint_point(1)
    assert seen == [11]
    assert [r["id"] for r in records(path, "control")] == ["c1", "c2"]
    assert int(answered_path(path).read_text()) == stop_end
    client._reset()
    later = Reader(path)  # a requeued execution reads on from the stop
    assert later.read_once() == 1 and controls._queue[0][0]["id"] == "c3"


def test_a_requeued_execution_never_sees_the_commands_already_answered(tmp_path: Path) -> None:
    path = start_job(tmp_path)
    first: list[Any] = []
    slurmml.on_set("optimizer.lr", first.append)
    send_line(path, "c1", "set", {"values": {"optimizer.lr": 0.1}})
    send_line(path, "c2", "snapshot")
    queued(2)
    slurmml.checkpoint_point(1, weights=[1])
    assert Reader(path).offset == controls_path(path).stat().st_size
    client._reset()  # the execution ends in a requeue

    client.start_run(path, RUN, tmp_path / "run", CONFIG)
    second: list[Any] = []
    slurmml.on_set("optimizer.lr", second.append)
    time.sleep(0.6)  # the reader's first read and two more
    assert not controls._queue
    send_line(path, "c3", "set", {"values": {"optimizer.lr": 0.05}})
    queued()
    slurmml.checkpoint_point(2)
    assert (first, second) == ([0.1], [0.05])
    assert [r["id"] for r in records(path, "control")] == ["c1", "c2", "c3"]


def test_a_torn_last_line_waits_for_its_rest(tmp_path: Path) -> None:
    path = start_job(tmp_path)
    seen: list[Any] = []
    slurmml.on_set("optimizer.lr", seen.append)
    line = command_line("c1", "set", {"values": {"optimizer.lr": 0.3}}, time.time(), ME).encode()
    send_line(path, "", "", raw=line[:20])
    time.sleep(0.7)  # several reads saw the partial line
    assert not controls._queue
    slurmml.checkpoint_point(1)
    assert not answered_path(path).exists()  # nothing answered yet
    send_line(path, "", "", raw=line[20:])
    queued()
    slurmml.checkpoint_point(2)
    assert seen == [0.3] and answer_of(path, "c1")["step"] == 2


def test_stray_lines_are_skipped_and_the_commands_after_them_apply_in_order(tmp_path: Path) -> None:
    path = start_job(tmp_path)
    seen: list[Any] = []
    slurmml.on_set("optimizer.lr", seen.append)
    send_line(path, "", "", raw=b"garbage\n")
    send_line(path, "c1", "set", {"values": {"optimizer.lr": 0.1}})
    send_line(path, "", "", raw=b'{"id": "c9", "kind": "pause"}\n')
    send_line(path, "c2", "set", {"values": {"optimizer.lr": 0.2}})
    queued(2)
    slurmml.checkpoint_point(1)
    assert seen == [0.1, 0.2]
    assert [(r["id"], r["status"]) for r in records(path, "control")] == [("c1", "applied"), ("c2", "applied")]
    assert int(answered_path(path).read_text()) == controls_path(path).stat().st_size


def test_the_reading_interval_is_clamped(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, expected in (("0.01", 0.2), ("30", 30.0), ("1e9", 300.0), ("soon", 5.0)):
        monkeypatch.setenv(controls.INTERVAL_ENV, value)
        assert controls.interval_from_environment() == expected


# -- the login side, with a real registry --------------------------------------------------------------------

def make_registry(tmp_path: Path, config: dict = CONFIG, state_records: bool = True) -> tuple[Registry, Path]:
    """A sweep of one run whose spool lies in tmp_path; its start record (with `config`) is in the spool."""
    registry = Registry(tmp_path / "registry.db")
    path = spool_of(tmp_path)
    registry.add_sweep({"id": "s1", "user": ME, "created": 1.0, "argv": ["train.py", "-m"], "backend": "slurm",
                        "sweep_dir": str(tmp_path / "sweep"), "cwd": str(tmp_path)},
                       [{"id": RUN, "job_num": 0, "overrides": [], "spool_path": str(path)}])
    registry.mark_queued({RUN: ("123_0", str(tmp_path / "log.err"))})
    if state_records:
        append_records(path, {"k": "start", "t": time.time(), "run_id": RUN, "host": "n1", "config": config})
    return registry, path


def test_send_records_a_pending_row_and_appends_the_command_line(tmp_path: Path) -> None:
    registry, path = make_registry(tmp_path)
    before = time.time()
    sent = send(registry, RUN, "set", {"values": {"optimizer.lr": 0.001}}, me=ME, timeout_s=30)
    assert (sent.ok, sent.status, sent.message) == (True, "pending", f"sent set to run {RUN}")
    (line,) = controls_path(path).read_bytes().splitlines(keepends=True)
    command = json.loads(line)
    assert (command["id"], command["kind"], command["values"], command["user"]) == (
        sent.control_id, "set", {"optimizer.lr": 0.001}, ME)
    (row,) = registry.controls(run_id=RUN)
    assert (row["id"], row["status"], row["shown"], row["what"], row["user"], row["source"]) == (
        sent.control_id, "pending", "pending", "set optimizer.lr=0.001", ME, "cli")
    assert before <= row["asked"] <= time.time() and row["deadline"] == pytest.approx(row["asked"] + 30)
    assert registry.run(RUN)["state"] == "RUNNING"  # send read the spool first


def test_the_jobs_answer_reaches_the_registry_through_the_ingest_once(tmp_path: Path) -> None:
    registry, path = make_registry(tmp_path)
    sent = send(registry, RUN, "set", {"values": {"epochs": 12}}, me=ME)
    answered = time.time()
    append_records(path, {"k": "control", "t": answered, "id": sent.control_id, "kind": "set", "status": "applied",
                          "step": 9, "message": None, "values": {"epochs": 12}})
    registry.ingest()
    (row,) = registry.controls(run_id=RUN)
    assert (row["status"], row["shown"], row["step"], row["answered"]) == ("applied", "applied", 9, answered)
    # an answer read again (or a stray one) changes nothing: only a pending command takes an answer
    append_records(path, {"k": "control", "t": answered + 1, "id": sent.control_id, "kind": "set",
                          "status": "refused", "step": 10, "message": "late"})
    registry.ingest()
    (row,) = registry.controls(run_id=RUN)
    assert (row["status"], row["step"], row["message"]) == ("applied", 9, None)


def test_send_and_wait_against_a_running_job(tmp_path: Path) -> None:
    registry, path = make_registry(tmp_path, state_records=False)
    client.start_run(path, RUN, tmp_path / "run", CONFIG)
    seen: list[Any] = []
    slurmml.on_set("optimizer.lr", seen.append)
    client._writer.flush()  # the start record, with the config send checks values against
    refused = send(registry, RUN, "set", {"values": {"optimizer.lr": "fast"}}, me=ME)
    assert not refused.ok and "optimizer.lr is a number in the run's config (0.01)" in refused.message
    sent = [send(registry, RUN, "set", {"values": {"optimizer.lr": 0.002}}, me=ME),
            send(registry, RUN, "set", {"values": {"momentum": 0.9}}, me=ME)]
    assert all(s.ok for s in sent)
    queued(2)
    slurmml.checkpoint_point(5)
    client._writer.flush()
    applied, unknown = wait(registry, sent, timeout_s=5)
    assert seen == [0.002]
    assert applied.ok and (applied.status, applied.step) == ("applied", 5)
    assert applied.message.startswith(f"run {RUN}: set optimizer.lr=0.002 applied at step 5 (")
    assert not unknown.ok and unknown.status == "refused"
    assert unknown.message.startswith(f"run {RUN}: set momentum=0.9 refused: this task has no callback for momentum")
    assert [(r["shown"], r["step"]) for r in registry.controls(run_id=RUN)] == [("applied", 5), ("refused", 5)]


def test_a_stop_sent_to_a_running_job_ends_it_stopped_in_the_registry(tmp_path: Path) -> None:
    registry, path = make_registry(tmp_path, state_records=False)
    client.start_run(path, RUN, tmp_path / "run", CONFIG)
    sent = send(registry, RUN, "stop", me=ME)
    queued()
    with pytest.raises(Stopped):
        slurmml.checkpoint_point(8, weights=[8])
    client.end_run()
    (outcome,) = wait(registry, [sent], timeout_s=5)
    assert outcome.ok and outcome.status == "applied" and outcome.step == 8
    assert "stop applied at step 8" in outcome.message and "saved" in outcome.message
    run = registry.run(RUN)
    assert (run["state"], run["exit_code"], run["error"]) == ("STOPPED", 0, f"stopped by {ME} at step 8")
    (row,) = registry.controls(run_id=RUN)
    assert row["checkpoint"] == str(tmp_path / "run" / "checkpoints" / "step_000000008.pt")


def test_a_run_that_has_ended_is_refused_in_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    registry, path = make_registry(tmp_path)
    append_records(path, {"k": "end", "t": time.time(), "state": "COMPLETED", "exit_code": 0, "error": None})
    for kind in ("set", "snapshot", "stop"):
        args = {"values": {"epochs": 3}} if kind == "set" else {}
        sent = send(registry, RUN, kind, args, me=ME)  # send reads the end record first
        assert sent == Sent(RUN, False, f"run {RUN} has already ended (COMPLETED); nothing to {kind}")
    assert registry.controls(run_id=RUN) == [] and not controls_path(path).exists()


def test_values_of_the_wrong_type_and_other_users_runs_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    registry, path = make_registry(tmp_path)
    sent = send(registry, RUN, "set", {"values": {"amp": "yes"}}, me=ME)
    assert sent == Sent(RUN, False, f"run {RUN}: amp is a bool in the run's config (True); 'yes' is not true or false")
    sent = send(registry, RUN, "stop", me="bob")
    assert sent == Sent(RUN, False, f"run {RUN} belongs to {ME}; slurmml controls only your own runs")
    sent = send(registry, "s1-9", "stop", me=ME)
    assert not sent.ok and "no run 's1-9'" in sent.message
    assert registry.controls(run_id=RUN) == [] and not controls_path(path).exists()


def test_a_run_folder_this_machine_cannot_reach_is_refused(tmp_path: Path) -> None:
    registry, path = make_registry(tmp_path)
    registry.conn.execute("UPDATE runs SET spool_path = ? WHERE id = ?", (str(tmp_path / "gone" / "0.jsonl"), RUN))
    sent = send(registry, RUN, "snapshot", me=ME)
    assert not sent.ok and "cannot be reached from this machine" in sent.message
    assert registry.controls(run_id=RUN) == []


def test_a_control_file_that_cannot_be_written_refuses_the_recorded_command(tmp_path: Path) -> None:
    registry, path = make_registry(tmp_path)
    controls_path(path).mkdir()  # in its place: open() fails
    sent = send(registry, RUN, "snapshot", me=ME)
    assert not sent.ok and sent.status == "refused" and "cannot write its control file" in sent.message
    (row,) = registry.controls(run_id=RUN)
    assert (row["id"], row["shown"], row["message"]) == (sent.control_id, "refused", sent.message)


def test_a_job_that_never_answers_times_out(tmp_path: Path) -> None:
    registry, path = make_registry(tmp_path)
    sent = send(registry, RUN, "set", {"values": {"epochs": 4}}, me=ME, timeout_s=60)
    started = time.time()
    (outcome,) = wait(registry, [sent], timeout_s=0.5)
    assert 0.5 <= time.time() - started < 3
    assert not outcome.ok and outcome.status == "timed out"
    assert outcome.message.startswith(f"run {RUN}: no answer to set epochs=4 within ")
    (row,) = registry.controls(run_id=RUN)
    assert row["shown"] == "pending"  # its own deadline has not passed
    (later,) = registry.controls(run_id=RUN, now=row["asked"] + 61)
    assert later["shown"] == "timed out"


def test_a_command_pending_when_the_run_ends_expired(tmp_path: Path) -> None:
    registry, path = make_registry(tmp_path)
    sent = send(registry, RUN, "stop", me=ME)
    append_records(path, {"k": "end", "t": time.time(), "state": "COMPLETED", "exit_code": 0, "error": None})
    started = time.time()
    (outcome,) = wait(registry, [sent], timeout_s=30)
    assert time.time() - started < 5  # the run's end is an answer: no waiting out the timeout
    assert outcome == Sent(RUN, False, f"run {RUN} ended (COMPLETED) before it read stop", sent.control_id, "expired")
    (row,) = registry.controls(run_id=RUN)
    assert (row["status"], row["shown"]) == ("pending", "expired")


def test_wait_passes_refused_sends_through_untouched(tmp_path: Path) -> None:
    registry, path = make_registry(tmp_path)
    refused = Sent(RUN, False, "run s1-0: refused before sending")
    assert wait(registry, [refused], timeout_s=0.1) == [refused]


def test_control_marks_are_the_applied_sets_in_step_order(tmp_path: Path) -> None:
    registry, path = make_registry(tmp_path)
    late = send(registry, RUN, "set", {"values": {"optimizer.lr": 0.001}}, me=ME)
    early = send(registry, RUN, "set", {"values": {"epochs": 20, "amp": False}}, me=ME)
    refused = send(registry, RUN, "set", {"values": {"momentum": 0.9}}, me=ME)
    snapshot = send(registry, RUN, "snapshot", me=ME)
    unanswered = send(registry, RUN, "set", {"values": {"epochs": 30}}, me=ME)
    now = time.time()
    append_records(
        path,
        {"k": "control", "t": now, "id": late.control_id, "kind": "set", "status": "applied", "step": 7},
        {"k": "control", "t": now, "id": early.control_id, "kind": "set", "status": "applied", "step": 3},
        {"k": "control", "t": now, "id": refused.control_id, "kind": "set", "status": "refused", "step": 5,
         "message": "no callback"},
        {"k": "control", "t": now, "id": snapshot.control_id, "kind": "snapshot", "status": "applied", "step": 6,
         "checkpoint": "/x/step_000000006.pt"},
    )
    registry.ingest()
    assert unanswered.ok
    assert registry.control_marks([RUN, "s1-9"]) == {
        RUN: [(3, "set epochs=20 amp=false"), (7, "set optimizer.lr=0.001")]}


def test_a_pruned_run_stays_pruned_whatever_its_end_record_says(tmp_path: Path) -> None:
    registry, path = make_registry(tmp_path)
    registry.ingest()
    verdict = SimpleNamespace(rung=1, step=4, value=0.9, threshold=0.5, compared=6)
    now = time.time()
    assert registry.claim_pruning(RUN, "s1", verdict, "val_loss 0.9 worse than 0.5 at rung 1", now)
    assert not registry.claim_pruning(RUN, "s1", verdict, "again", now)  # decided once
    assert registry.claim_cancels([RUN], now) == [RUN]
    assert registry.claim_cancels([RUN], now) == []  # cancelled once
    registry.mark_pruned([RUN], now)  # once scancel accepted
    assert registry.run(RUN)["state"] == "PRUNED"
    append_records(path, {"k": "end", "t": now + 1, "state": "FAILED", "exit_code": 143, "error": "Terminated"})
    registry.ingest()
    run = registry.run(RUN)
    assert run["state"] == "PRUNED" and run["states"][-1]["state"] == "PRUNED"
    (pruning,) = registry.prunings("s1")
    assert (pruning["rung"], pruning["step"], pruning["cancelled"]) == (1, 4, now)


DDP = """
import os, sys, time
import torch, torch.distributed as dist
import slurmml
from slurmml.core.controls import command_line
from slurmml.tracking import client, controls
rank, folder = int(sys.argv[1]), sys.argv[3]
os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2],
                  GLOO_SOCKET_IFNAME="lo", SLURMML_RUN_ID="ddp-0", SLURMML_RUN_DIR=folder)
dist.init_process_group("gloo")
spool = os.path.join(folder, "spool.jsonl")
if rank == 0:  # only rank 0 writes the spool and reads the control file
    client.start_run(spool, "ddp-0", folder, {})
slurmml.on_set("lr", lambda value: print(f"rank {rank} lr={value} at {step}", flush=True))
try:
    for step in range(8):
        if rank == 0 and step in (2, 4):  # the login node's commands, read before this step's control point
            kind, args = ("set", {"values": {"lr": 0.5}}) if step == 2 else ("stop", {})
            with open(controls.controls_path(spool), "a") as handle:
                handle.write(command_line(f"c{step}", kind, args, time.time(), "alice"))
            controls._reader.read_once()
        slurmml.checkpoint_point(step, state=step)
except slurmml.Stopped as stopped:
    print(f"rank {rank} stopped at {step}", flush=True)
    if rank == 0:
        client.end_run()
dist.destroy_process_group()
"""


def test_every_rank_applies_rank_zeros_commands_at_the_same_step(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    pytest.importorskip("torch")
    script = tmp_path / "ddp.py"
    script.write_text(DDP)
    folder = tmp_path / "run"
    folder.mkdir()
    port = str(30500 + os.getpid() % 1000)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "SLURMML"))}
    environ.update(SLURMML_HOME=str(tmp_path / "home"), SLURMML_CONTROL_INTERVAL_S="300")
    ranks = [subprocess.Popen([sys.executable, str(script), str(rank), port, str(folder)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=environ) for rank in (0, 1)]
    outputs = [p.communicate(timeout=120) for p in ranks]
    assert all(p.returncode == 0 for p in ranks), [o[1][-2000:] for o in outputs]
    for rank, (out, _) in enumerate(outputs):
        assert f"rank {rank} lr=0.5 at 2" in out and f"rank {rank} stopped at 4" in out, out
    answers = [json.loads(line) for line in (folder / "spool.jsonl").read_text().splitlines()]
    assert [(r["id"], r["status"], r["step"]) for r in answers if r["k"] == "control"] == [
        ("c2", "applied", 2), ("c4", "applied", 4)]
    assert answers[-1]["k"] == "end" and answers[-1]["state"] == "STOPPED"
    assert (folder / "checkpoints" / "step_000000004.pt").exists()  # rank 0 saved before every rank stopped
