"""The pure rules of live controls: how KEY=VALUE words read, which values a run's config refuses, which runs may
be sent a command, how a command is shown, and the command line written to the job and read back there."""

from __future__ import annotations

import pytest

from slurmml.core.controls import (
    APPLIED, EXPIRED, KINDS, PENDING, REFUSED, TIMED_OUT, command_line, describe, parse_assignments, parse_command,
    parse_value, refusal, shown_status, type_problems,
)

ME = "alice"


# -- values and assignments ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("8", 8),
    ("-3", -3),
    ("0.001", 0.001),
    ("1e-4", 1e-4),
    (" 2.5 ", 2.5),
    ("true", True),
    ("False", False),
    ("null", None),
    ("None", None),
    ("~", None),
    ("'8'", "8"),
    ('"two words"', "two words"),
    ("''", ""),
    ("[1, 2]", [1, 2]),
    ('{"a": 1}', {"a": 1}),
    ("adamw", "adamw"),
    ("data/train.csv", "data/train.csv"),
    ("cosine-warmup", "cosine-warmup"),
])
def test_parse_value_reads_words_as_hydra_reads_an_override(text: str, value) -> None:
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("text, words", [
    ("", "empty"),
    ("   ", "empty"),
    ("'abc", "no closing quote"),
    ('"abc\'', "no closing quote"),
    ("'", "no closing quote"),
    ("[1, 2", "not a list or mapping"),
    ("{a: 1}", "not a list or mapping"),
    ("inf", "not a finite number"),
    ("-inf", "not a finite number"),
    ("nan", "not a finite number"),
    ("two words", "is not a value"),
    ("a(b)", "is not a value"),
])
def test_parse_value_refuses_what_is_no_value(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_value(text)


def test_parse_assignments_reads_dotted_keys_and_keeps_their_order() -> None:
    values = parse_assignments(["optimizer.lr=0.001", "dropout=0.2", "model.head-type=mlp", "tags=[1,2]", "x='a=b'"])
    assert list(values) == ["optimizer.lr", "dropout", "model.head-type", "tags", "x"]
    assert values == {"optimizer.lr": 0.001, "dropout": 0.2, "model.head-type": "mlp", "tags": [1, 2], "x": "a=b"}


@pytest.mark.parametrize("words, message", [
    ([], "give at least one KEY=VALUE"),
    (["lr"], "'lr': expected KEY=VALUE"),
    (["=1"], "'' is not a key"),
    (["1lr=1"], "'1lr' is not a key"),
    (["optimizer..lr=1"], "is not a key"),
    (["lr=0.1", "dropout="], "'dropout=': the value is empty"),
    (["lr='x"], "'x has no closing quote"),
])
def test_parse_assignments_names_the_word_it_refuses(words: list[str], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_assignments(words)
    assert message in str(raised.value) and "\n" not in str(raised.value)


# -- values against the run's config -------------------------------------------------------------------------

CONFIG = {"optimizer.lr": 0.01, "epochs": 10, "amp": True, "name": "base", "warmup": None}


def test_type_problems_accepts_values_that_can_stand_for_the_config_value() -> None:
    fine = {"optimizer.lr": 1, "epochs": 12.5, "amp": False, "name": 3, "warmup": "linear", "absent.key": "x",
            "epochs.null": None}
    assert type_problems(fine, CONFIG) == []
    assert type_problems({"optimizer.lr": None}, CONFIG) == []  # null is left to the job's callback


def test_type_problems_names_each_value_of_the_wrong_kind() -> None:
    problems = type_problems({"optimizer.lr": "fast", "epochs": True, "amp": 1, "name": "other"}, CONFIG)
    assert problems == [
        "optimizer.lr is a number in the run's config (0.01); 'fast' is not a number",
        "epochs is a number in the run's config (10); True is not a number",
        "amp is a bool in the run's config (True); 1 is not true or false",
    ]


# -- which runs may be sent a command ------------------------------------------------------------------------

def run(**fields) -> dict:
    return {"id": "s1-0", "state": "RUNNING", "spool_path": "/x/spool/0.jsonl", "synced": 0, **fields}


@pytest.mark.parametrize("kind", KINDS)
def test_an_active_run_of_ones_own_may_be_sent_every_kind(kind: str) -> None:
    for state in ("SUBMITTING", "QUEUED", "RUNNING"):
        assert refusal(kind, run(state=state), ME, ME) is None
    assert refusal(kind, run(), None, ME) is None  # a plain script's run has no sweep owner


@pytest.mark.parametrize("fields, owner, words", [
    ({}, "bob", "run s1-0 belongs to bob; slurmml controls only your own runs"),
    ({"synced": 1}, ME, "runs on another machine"),
    ({"spool_path": None}, ME, "run s1-0 has no run folder yet; nothing to stop"),
    ({"state": "COMPLETED"}, ME, "run s1-0 has already ended (COMPLETED); nothing to stop"),
    ({"state": "STOPPED"}, ME, "has already ended (STOPPED)"),
    ({"state": "PRUNED"}, ME, "has already ended (PRUNED)"),
])
def test_refusal_says_why_in_one_line(fields: dict, owner: str, words: str) -> None:
    why = refusal("stop", run(**fields), owner, ME)
    assert why is not None and words in why and "\n" not in why


def test_an_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown control 'pause'"):
        refusal("pause", run(), ME, ME)


def test_describe_names_a_command_in_a_few_words() -> None:
    assert describe("set", {"values": {"optimizer.lr": 0.001, "name": "x"}}) == 'set optimizer.lr=0.001 name="x"'
    assert describe("snapshot", {}) == "snapshot"
    assert describe("stop", {}) == "stop"
    assert describe("stop", {"state": "PRUNED", "reason": "pruned: rung 1"}) == "stop (pruned)"


# -- how a command's status is shown -------------------------------------------------------------------------

def test_answered_statuses_are_shown_as_the_job_said_whatever_the_clock_or_the_run() -> None:
    for status in (APPLIED, REFUSED):
        assert shown_status(status, 2.0, True, 100.0) == status
        assert shown_status(status, 2.0, False, 100.0) == status


def test_a_pending_command_expires_with_its_run_or_times_out_past_its_deadline() -> None:
    assert shown_status(PENDING, 10.0, False, 5.0) == PENDING
    assert shown_status(PENDING, 10.0, False, 10.0) == PENDING  # at the deadline, not yet past it
    assert shown_status(PENDING, 10.0, False, 10.5) == TIMED_OUT
    assert shown_status(PENDING, None, False, 1e12) == PENDING  # no deadline: never timed out
    assert shown_status(PENDING, 10.0, True, 5.0) == EXPIRED
    assert shown_status(PENDING, 10.0, True, 50.0) == EXPIRED  # the run's end wins over the clock


# -- the command line ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, args", [
    ("set", {"values": {"optimizer.lr": 0.001, "tags": [1, 2], "name": "x y"}}),
    ("snapshot", {}),
    ("stop", {"state": "PRUNED", "reason": "pruned: val_loss 0.9 > 0.5 at rung 1"}),
])
def test_a_command_line_reads_back_as_the_command(kind: str, args: dict) -> None:
    line = command_line("c0ffee", kind, args, 1700000000.25, ME)
    assert line.endswith("\n") and line.count("\n") == 1
    assert parse_command(line.encode()) == {"id": "c0ffee", "kind": kind, "t": 1700000000.25, "user": ME, **args}


def test_a_value_json_cannot_carry_is_refused_before_it_is_written() -> None:
    with pytest.raises(ValueError):
        command_line("c1", "set", {"values": {"lr": float("nan")}}, 1.0, ME)


@pytest.mark.parametrize("line", [
    b"",
    b"not json\n",
    b'{"id": "c1", "kind": "set", "values": {"lr": 1}',  # torn
    b"[1, 2]\n",
    b'{"id": "c1", "kind": "pause"}\n',
    b'{"id": 7, "kind": "stop"}\n',
    b'{"kind": "stop"}\n',
    b'{"id": "c1", "kind": "set"}\n',
    b'{"id": "c1", "kind": "set", "values": [1]}\n',
    b"\xff\xfe\n",
])
def test_damaged_or_stray_lines_are_no_command(line: bytes) -> None:
    assert parse_command(line) is None



def test_a_sweep_whose_runs_were_stopped_or_pruned_has_ended():
    from slurmml.report.progress import Snapshot

    progress = Snapshot({"COMPLETED": 2, "PRUNED": 3, "STOPPED": 1, "FAILED": 1}, None, None)
    assert progress.all_final and (progress.done, progress.failed, progress.stopped) == (2, 1, 4)
    assert "stopped 4" in progress.line()
    assert not Snapshot({"COMPLETED": 2, "PRUNED": 3, "RUNNING": 1}, None, None).all_final
