"""The TUI's pure rules (tui.model) and its file helpers (tui.source.LogTail, log_paths)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from slurmml.tui.model import (ACTIVE_STATES, Column, FilterQuery, GroupLine, RunRow, apply_filter, cell_text, columns_for,
                       differing_keys, distinguishing_overrides, format_age, format_duration, format_number,
                       group_by_sweep, parse_filter_text, sort_rows, state_counts)
from slurmml.tui.source import LogTail, log_paths

NOW = 1_000_000.0


def row(run_id: str, state: str = "COMPLETED", sweep: str = "s1", job_num: int | None = 0, **fields) -> RunRow:
    return RunRow(run_id, sweep, job_num, state, **fields)


# -- RunRow ----------------------------------------------------------------------------------------------
def test_elapsed_of_running_ended_and_unstarted_runs() -> None:
    assert row("a", "RUNNING", started=NOW - 75).elapsed(NOW) == 75
    assert row("b", "COMPLETED", started=100.0, ended=160.0).elapsed(NOW) == 60
    assert row("c", "FAILED", started=100.0).elapsed(NOW) is None  # final without an end time: unknown
    assert row("d", "QUEUED").elapsed(NOW) is None
    assert row("e", "RUNNING", started=NOW + 10).elapsed(NOW) == 0  # clock skew never gives a negative time


def test_haystack_holds_the_searchable_fields_in_lower_case() -> None:
    r = row("s1-3", "RUNNING", slurm_job_id="77_3", host="Node07", overrides="model=MLP lr=0.1", owner="alice")
    for word in ("s1-3", "running", "77_3", "node07", "model=mlp", "alice"):
        assert word in r.haystack
    assert r.haystack == r.haystack.lower()


# -- columns -----------------------------------------------------------------------------------------------
def test_columns_fit_their_content_within_limits_then_one_per_metric() -> None:
    rows = [row("s1-0", overrides="lr=0.1", slurm_job_id="12345"), row("s1-1", overrides="model=mlp lr=0.01")]
    by_key = {c.key: c for c in columns_for(rows, ["loss", "f1", "a_very_long_metric_name_indeed"])}
    assert list(by_key)[:7] == ["mark", "run_id", "state", "slurm_job_id", "elapsed", "gpu", "overrides"]
    assert by_key["slurm_job_id"].width == 5  # the longest job id
    assert by_key["state"].width == 9  # 'COMPLETED'
    assert by_key["overrides"].width == len("model=mlp lr=0.01")
    assert by_key["run_id"].width == 8  # short ids: the minimum width
    assert by_key["elapsed"].align == by_key["gpu"].align == "right" and by_key["run_id"].align == "left"
    loss, f1, long = (by_key[f"metric:{n}"] for n in ("loss", "f1", "a_very_long_metric_name_indeed"))
    assert loss.metric == "loss" and by_key["run_id"].metric is None
    assert loss.align == "right" and loss.title == "loss"
    assert loss.width == f1.width > len("loss") + 2  # short names share a minimum wide enough for 'last (best)'
    assert long.width == len("a_very_long_metric_name_indeed") + 2


def test_long_content_is_capped() -> None:
    wide = columns_for([row("r" * 60, overrides="x" * 100, slurm_job_id="9" * 30)], [])
    wider = columns_for([row("r" * 200, overrides="x" * 300, slurm_job_id="9" * 90)], [])
    assert wide == wider  # past the cap, content no longer widens a column
    by_key = {c.key: c for c in wide}
    assert by_key["run_id"].width < 60 and by_key["overrides"].width < 100 and by_key["slurm_job_id"].width < 30


def test_state_column_fits_the_restart_mark() -> None:
    rows = [row("a", "COMPLETED", restarts=1), row("b", "RUNNING")]
    (state,) = [c for c in columns_for(rows, []) if c.key == "state"]
    assert state.width >= len(cell_text(rows[0], state, NOW)) == len("COMPLETED↻1")


def test_columns_without_rows_keep_their_minimum_widths() -> None:
    by_key = {c.key: c for c in columns_for([], [])}
    assert (by_key["run_id"].width, by_key["overrides"].width, by_key["slurm_job_id"].width,
            by_key["state"].width) == (8, 9, 3, 5)
    assert not any(c.metric for c in by_key.values())


# -- formatting ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, text", [
    (None, ""), (math.nan, "nan"), (0, "0"), (0.0, "0"), (0.25, "0.25"), (-0.5, "-0.5"), (1 / 3, "0.3333"),
    (0.001, "0.001"), (99999.0, "1e+05"), (1e-4, "1.00e-04"), (123456.0, "1.23e+05"), (-2e-7, "-2.00e-07"), (42, "42"),
])
def test_format_number(value, text: str) -> None:
    assert format_number(value) == text


@pytest.mark.parametrize("seconds, text", [
    (None, ""), (0, "0:00"), (59.9, "0:59"), (65, "1:05"), (3599, "59:59"), (3600, "1h00m"), (3 * 3600 + 125, "3h02m"),
    (86399, "23h59m"), (86400, "1d00h"), (90061, "1d01h"),
])
def test_format_duration(seconds, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds, text", [
    (None, "never"), (0, "0 s ago"), (5.7, "5 s ago"), (89.9, "89 s ago"), (90, "1 min ago"), (600, "10 min ago"),
])
def test_format_age(seconds, text: str) -> None:
    assert format_age(seconds) == text


def test_cell_text_for_every_kind_of_column() -> None:
    columns = {c.key: c for c in columns_for([], ["loss", "acc", "f1"])}
    r = row("s1-2", "RUNNING", slurm_job_id="5_2", started=NOW - 125, restarts=2, gpu_util=56.6, host="n1",
            metrics={"loss": (0.5, 0.25), "acc": (0.75, 0.75), "f1": (None, None)})
    assert cell_text(r, columns["mark"], NOW) == " "
    assert cell_text(r, columns["mark"], NOW, marked=True) == "●"
    assert cell_text(r, columns["run_id"], NOW) == "s1-2"
    assert cell_text(r, columns["slurm_job_id"], NOW) == "5_2"
    assert cell_text(r, columns["state"], NOW) == "RUNNING↻2"
    assert cell_text(r, columns["elapsed"], NOW) == "2:05"
    assert cell_text(r, columns["gpu"], NOW) == "57%"
    assert cell_text(r, columns["metric:loss"], NOW) == "0.5 (0.25)"  # last (best) when they differ
    assert cell_text(r, columns["metric:acc"], NOW) == "0.75"  # the last is the best
    assert cell_text(r, columns["metric:f1"], NOW) == ""  # logged only NaN
    assert cell_text(r, Column("metric:missing", "missing", 17), NOW) == ""  # never logged by this run
    quiet = row("s1-3", "QUEUED")
    assert [cell_text(quiet, columns[k], NOW) for k in ("state", "elapsed", "gpu", "slurm_job_id")] == ["QUEUED", "", "", ""]
    assert cell_text(row("x", metrics={"loss": (0.5, None)}), columns["metric:loss"], NOW) == "0.5"


# -- filtering -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, words, expressions", [
    ("", (), ()),
    ("   ", (), ()),
    ("MLP Failed", ("mlp", "failed"), ()),
    ("mlp failed lr<0.01", ("mlp", "failed"), ("lr<0.01",)),
    ("lr < 0.01", (), ("lr<0.01",)),
    ("  lr <0.01   mlp ", ("mlp",), ("lr<0.01",)),
    ("model = mlp val_acc >= 0.9", (), ("model=mlp", "val_acc>=0.9")),
    ("state=RUNNING", (), ("state=RUNNING",)),  # the value keeps its case: the registry compares it
    ("optimizer.lr!=0.1 seed==3", (), ("optimizer.lr!=0.1", "seed==3")),
    ("<0.01", ("<0.01",), ()),  # no key: plain text
])
def test_parse_filter_text(text: str, words: tuple, expressions: tuple) -> None:
    query = parse_filter_text(text)
    assert (query.words, query.expressions) == (words, expressions)
    assert query.empty == (not words and not expressions)


def test_apply_filter_needs_every_word_and_an_allowed_id() -> None:
    rows = [row("s1-0", "FAILED", overrides="model=mlp lr=0.1"), row("s1-1", "COMPLETED", overrides="model=mlp lr=0.01"),
            row("s2-0", "FAILED", sweep="s2", overrides="model=cnn", host="gpu07")]
    ids = lambda out: [r.run_id for r in out]  # noqa: E731
    assert ids(apply_filter(rows, FilterQuery())) == ["s1-0", "s1-1", "s2-0"]
    assert ids(apply_filter(rows, parse_filter_text("failed"))) == ["s1-0", "s2-0"]
    assert ids(apply_filter(rows, parse_filter_text("FAILED mlp"))) == ["s1-0"]
    assert ids(apply_filter(rows, parse_filter_text("gpu07"))) == ["s2-0"]
    assert ids(apply_filter(rows, parse_filter_text("nowhere"))) == []
    query = parse_filter_text("mlp lr<0.05")
    assert ids(apply_filter(rows, query, allowed_ids={"s1-1", "s2-0"})) == ["s1-1"]
    assert ids(apply_filter(rows, FilterQuery(), allowed_ids=set())) == []


# -- sorting ---------------------------------------------------------------------------------------------------
def _metric_rows() -> list[RunRow]:
    return [row("a", metrics={"loss": (0.3, 0.3)}), row("b"), row("c", metrics={"loss": (0.1, 0.1)}),
            row("d", metrics={"loss": (math.nan, None)}), row("e", metrics={"loss": (0.2, 0.2)})]


@pytest.mark.parametrize("descending, order", [(False, "ceabd"), (True, "aecbd")])
def test_sort_by_metric_puts_missing_and_nan_last_in_both_directions(descending: bool, order: str) -> None:
    out = sort_rows(_metric_rows(), "metric:loss", descending, NOW)
    assert "".join(r.run_id for r in out) == order


@pytest.mark.parametrize("descending, order", [(False, "bac"), (True, "abc")])
def test_sort_by_elapsed_puts_unstarted_runs_last(descending: bool, order: str) -> None:
    rows = [row("a", "RUNNING", started=NOW - 100), row("b", "COMPLETED", started=0.0, ended=10.0), row("c", "QUEUED")]
    assert "".join(r.run_id for r in sort_rows(rows, "elapsed", descending, NOW)) == order


def test_sort_by_gpu_and_numeric_columns_put_missing_last() -> None:
    rows = [row("a", gpu_util=None), row("b", gpu_util=90.0), row("c", gpu_util=10.0)]
    assert [r.run_id for r in sort_rows(rows, "gpu", False, NOW)] == ["c", "b", "a"]
    assert [r.run_id for r in sort_rows(rows, "gpu", True, NOW)] == ["b", "c", "a"]
    rows = [row("a", started=None), row("b", started=5.0), row("c", started=1.0)]
    assert [r.run_id for r in sort_rows(rows, "started", True, NOW)] == ["b", "c", "a"]
    assert [r.run_id for r in sort_rows(rows, "started", False, NOW)] == ["c", "b", "a"]


def test_sort_by_run_id_follows_sweep_then_job_number() -> None:
    rows = [row("s2-0", sweep="s2", job_num=0), row("s1-10", job_num=10), row("s1-2", job_num=2),
            row("local", sweep="", job_num=None)]
    assert [r.run_id for r in sort_rows(rows, "run_id", False, NOW)] == ["local", "s1-2", "s1-10", "s2-0"]
    assert [r.run_id for r in sort_rows(rows, "run_id", True, NOW)] == ["s2-0", "s1-10", "s1-2", "local"]


def test_sort_by_text_column_ignores_case_and_no_column_keeps_the_order() -> None:
    rows = [row("a", "RUNNING", host="Beta"), row("b", "COMPLETED", host="alpha"), row("c", "FAILED", host="")]
    assert [r.run_id for r in sort_rows(rows, "host", False, NOW)] == ["c", "b", "a"]
    assert [r.run_id for r in sort_rows(rows, "state", False, NOW)] == ["b", "c", "a"]
    assert [r.run_id for r in sort_rows(rows, None, True, NOW)] == ["a", "b", "c"]
    assert [r.run_id for r in sort_rows(rows, "mark", True, NOW)] == ["a", "b", "c"]
    assert sort_rows(rows, None, False, NOW) is not rows  # a new list: the caller may change it


# -- grouping and counting -----------------------------------------------------------------------------------------
def test_group_by_sweep_heads_each_sweep_in_order_of_first_appearance() -> None:
    rows = [row("s2-0", "RUNNING", sweep="s2"), row("s1-0", "FAILED"), row("s2-1", "COMPLETED", sweep="s2"),
            row("p1", "RUNNING", sweep="", job_num=None), row("s1-1", "FAILED")]
    lines = group_by_sweep(rows, {"s2": "mnist-grid"})
    shape = [(line.sweep_id, "heading") if isinstance(line, GroupLine) else line.run_id for line in lines]
    assert shape == [("s2", "heading"), "s2-0", "s2-1", ("s1", "heading"), "s1-0", "s1-1", ("", "heading"), "p1"]
    headings = [line.text for line in lines if isinstance(line, GroupLine)]
    assert headings == ["▼ s2  mnist-grid  (2 runs: 1 running, 1 completed)",
                        "▼ s1  (2 runs: 2 failed)",
                        "▼ local runs  (1 runs: 1 running)"]
    assert group_by_sweep([], {}) == []


def test_state_counts_in_lifecycle_order() -> None:
    rows = [row(str(i), state) for i, state in enumerate(
        ["FAILED", "COMPLETED", "WEIRD", "QUEUED", "RUNNING", "FAILED", "SUBMITTING", "CANCELLED"])]
    counts = state_counts(rows)
    assert list(counts.items()) == [("SUBMITTING", 1), ("QUEUED", 1), ("RUNNING", 1), ("COMPLETED", 1), ("FAILED", 2),
                                    ("CANCELLED", 1), ("WEIRD", 1)]
    assert state_counts([]) == {}
    assert ACTIVE_STATES == ("SUBMITTING", "QUEUED", "RUNNING")


# -- comparing ---------------------------------------------------------------------------------------------------
def test_distinguishing_overrides_keep_only_what_differs() -> None:
    labels = distinguishing_overrides([["model=mlp", "lr=0.1", "seed=1"], ["model=mlp", "lr=0.01", "seed=1"],
                                       ["model=mlp", "lr=0.1", "seed=2"]])
    assert labels == ["lr=0.1 seed=1", "lr=0.01 seed=1", "lr=0.1 seed=2"]  # model=mlp is the same in all three
    assert distinguishing_overrides([["model=mlp", "lr=0.1"], ["model=mlp", "lr=0.01"]]) == ["lr=0.1", "lr=0.01"]
    assert distinguishing_overrides([["a=1"], ["a=1"]]) == ["(same overrides)", "(same overrides)"]
    assert distinguishing_overrides([["a=1", "b=2"], []]) == ["a=1 b=2", "(same overrides)"]
    assert distinguishing_overrides([]) == []


def test_differing_keys_lists_changed_and_missing_keys_sorted() -> None:
    configs = [{"lr": 0.1, "model": "mlp", "seed": 1, "layers": [64, 64]},
               {"lr": 0.01, "model": "mlp", "seed": 1, "layers": [64, 64], "dropout": 0.5},
               {"lr": 0.1, "model": "mlp", "seed": 1, "layers": [128]}]
    assert differing_keys(configs) == [("dropout", [None, 0.5, None]), ("layers", [[64, 64], [64, 64], [128]]),
                                       ("lr", [0.1, 0.01, 0.1])]
    assert differing_keys([{"a": 1}, {"a": 1}]) == []
    assert differing_keys([]) == []
    assert differing_keys([{}, {"a": None}]) == [("a", [None, None])]  # present-but-null still differs from missing


# -- log files ---------------------------------------------------------------------------------------------------
def test_log_paths_from_the_recorded_stderr_path() -> None:
    assert log_paths({"log_path": "/s/.slurmml/logs/77_0_log.err"}) == {
        "stdout": "/s/.slurmml/logs/77_0_log.out", "stderr": "/s/.slurmml/logs/77_0_log.err"}
    assert log_paths({"log_path": "/runs/3.log"}) == {"stdout": None, "stderr": "/runs/3.log"}
    assert log_paths({"log_path": None}) == {"stdout": None, "stderr": None}
    assert log_paths({}) == {"stdout": None, "stderr": None}


def test_log_tail_follows_growth(tmp_path: Path) -> None:
    path = tmp_path / "job.err"
    path.write_text("line 1\nline 2\n")
    tail = LogTail(str(path))
    assert tail.read_new() == ("line 1\nline 2\n", False)
    assert tail.read_new() == ("", False)
    with open(path, "a") as handle:
        handle.write("line 3\n")
    assert tail.read_new() == ("line 3\n", False)
    assert tail.read_new() == ("", False)


def test_log_tail_starts_with_the_last_bytes_of_a_big_file(tmp_path: Path) -> None:
    path = tmp_path / "job.err"
    path.write_bytes(b"a" * 1000 + b"TAIL")
    tail = LogTail(str(path), initial_bytes=10)
    assert tail.read_new() == ("a" * 6 + "TAIL", False)


def test_log_tail_starts_over_when_the_file_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "job.err"
    path.write_text("first execution, a long line\n")
    tail = LogTail(str(path))
    tail.read_new()
    path.write_text("rerun\n")  # a requeued job's log is written again from the start
    assert tail.read_new() == ("rerun\n", True)
    with open(path, "a") as handle:
        handle.write("more\n")
    assert tail.read_new() == ("more\n", False)
    path.write_text("")
    assert tail.read_new() == ("", True)


def test_log_tail_of_a_missing_file_waits_for_it(tmp_path: Path) -> None:
    path = tmp_path / "not-yet.err"
    tail = LogTail(str(path))
    assert tail.read_new() == ("", False)
    path.write_bytes("started \xe9\n".encode() + b"\xff\n")  # undecodable bytes never stop the view
    assert tail.read_new() == ("started \xe9\n\ufffd\n", False)
    assert LogTail(None).read_new() == ("", False)
    assert LogTail("").read_new() == ("", False)


@pytest.mark.parametrize("text", ["lr<", "lr<=", "state=", "val_acc!"])
def test_an_unfinished_comparison_filters_nothing_yet(text: str) -> None:
    assert parse_filter_text(text).empty
    assert parse_filter_text(f"mlp {text}") == FilterQuery(words=("mlp",))
