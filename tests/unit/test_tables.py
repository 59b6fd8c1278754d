"""Every CLI table at 80 and 120 columns (slurmml.core.tables), and user text shown as plain text, never markup.

The registry is the TUI tests' fixed one (real ids, filled through spools and ingest), plus a sweep whose
runs carry text that looks like Rich markup or HTML and end in the longest state words.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from slurmml.cli import main
from slurmml.registry import jobs
from slurmml.registry.registry import Registry
from slurmml.report.collect import build_report
from slurmml.report.html import render_html
from slurmml.core.states import ALL_STATES
from slurmml.core.tables import Column, fit
from tests.tui.conftest import FAILED_RUN, FIXED, SWEEP_A, SWEEPS, Run, build_registry, config, write_spool

TRICKY = "20260101-120000-e5f6"
MARKUP_ERROR = "boom [/x] [bold]"
TRICKY_RUNS = {
    0: Run(0, ["tags=[foo]", "model=mlp"], config("mlp", 0.1, "mnist"), FIXED - 600,
           (FIXED - 500, "FAILED", MARKUP_ERROR), (0.3, 0.4)),
    1: Run(1, ["model=cnn", "optimizer.lr=0.3"], config("cnn", 0.3, "mnist"), FIXED - 600, None, (0.2,)),
    2: Run(2, ["note=<b>x</b>", "model=cnn"], config("cnn", 0.1, "mnist"), FIXED - 600,
           (FIXED - 100, "COMPLETED", None), (0.5, 0.93)),
    3: Run(3, ["model=mlp", "optimizer.lr=1.0"], config("mlp", 1.0, "mnist"), FIXED - 600,
           (FIXED - 300, "FAILED", "Traceback (most recent call last):\nValueError: <script>alert(1)</script>")),
}


def _add_tricky_sweep(folder: Path) -> None:
    registry = Registry(folder / "registry.db")
    registry.add_sweep({"id": TRICKY, "name": "<i>tricky</i>", "user": "alice", "created": FIXED - 700,
                        "argv": ["train.py", "-m"], "cwd": str(folder), "sweep_dir": str(folder / "sweeps" / "tricky"),
                        "backend": "slurm"},
                       [{"id": f"{TRICKY}-{n}", "job_num": n, "overrides": run.overrides,
                         "spool_path": str(folder / "spools" / f"{TRICKY}-{n}.jsonl")} for n, run in TRICKY_RUNS.items()])
    registry.mark_queued({f"{TRICKY}-{n}": (f"4300_{n}", f"logs/4300_{n}_0_log.err") for n in TRICKY_RUNS})
    for n, run in TRICKY_RUNS.items():
        write_spool(folder / "spools" / f"{TRICKY}-{n}.jsonl", f"{TRICKY}-{n}", run)
    registry.ingest()
    registry.mark_final({f"{TRICKY}-1": ("OUT_OF_MEMORY", "Slurm: the job ran out of memory")}, source="poller")
    # nothing in these tests asks Slurm: another view polled a moment ago, so the shared schedule waits
    for call in ("squeue", "sacct"):
        assert jobs.claim_call(registry, call, time.time(), 3600)
    registry.close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # log paths are recorded relative to it
    monkeypatch.setenv("SLURMML_HOME", str(tmp_path))
    build_registry(tmp_path)
    _add_tricky_sweep(tmp_path)
    return tmp_path


def cli(args: list[str], width: int) -> str:
    result = CliRunner().invoke(main, args, env={"COLUMNS": str(width)})
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def header_tokens(text: str) -> set[str]:
    """The headers of every table: the line above each rule, split where columns are two spaces apart."""
    lines = text.splitlines()
    return {token for above, line in zip(lines, lines[1:]) if line and set(line.strip()) == {"─"}
            for token in re.split(r"\s{2,}", above.strip())}


def cut_state_words(text: str) -> list[str]:
    """Upper-case words that are the start or the end of a state word but not the whole of one."""
    return [word for word in re.findall(r"[A-Z][A-Z_]{2,}", text) if word not in ALL_STATES
            and any(state.startswith(word) or state.endswith(word) for state in ALL_STATES)]


def registry_states(home: Path, sweep: str | None = None) -> dict[str, str]:
    with Registry(home / "registry.db") as registry:
        return {row["id"]: row["state"] for row in registry.runs(sweep=sweep)}


# what must stay at 80 columns (headers of the tables, or `key:` of key/value blocks)
COMMANDS = {
    "runs": (["runs"], {"id", "state", "overrides"}),
    "runs-sorted": (["runs", "--sort", "-val_acc"], {"id", "state", "overrides", "val_acc"}),
    "sweeps": (["sweeps"], {"id", "runs", "completed", "failed"}),
    "status": (["status", SWEEP_A], {"#", "state", "error"}),
    "status-tricky": (["status", TRICKY], {"#", "state", "error"}),
    "report": (["report", "--metric", "val_acc"], {"sweep", "runs", "done", "failed", "run", "state", "val_acc",
                                                  "overrides", "cause", "example", "differs by"}),
    "report-tricky": (["report", "--sweep", TRICKY], {"run", "state", "overrides", "cause"}),
    "show": (["show", FAILED_RUN], {"metric", "last"}),
    "show-tricky": (["show", f"{TRICKY}-0"], {"metric", "last"}),
    "watch": (["watch", TRICKY], {"run", "state", "overrides"}),
    "info": (["info"], set()),
}


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_table_is_readable_at_this_width(home: Path, name: str, width: int) -> None:
    args, important = COMMANDS[name]
    wide, text = cli(args, 250), cli(args, width)
    too_long = [line for line in text.splitlines() if len(line) > width]
    assert too_long == []
    assert "…" not in text and cut_state_words(text) == []
    headers = header_tokens(text)
    assert headers <= header_tokens(wide)  # every header shown is a whole one
    assert important <= headers


@pytest.mark.parametrize("width", [80, 120])
def test_runs_keep_ids_and_states_whole(home: Path, width: int) -> None:
    text = cli(["runs"], width)
    states = registry_states(home)
    for run_id, state in states.items():
        assert re.search(rf"^{re.escape(run_id)}\s+{state}\s", text, re.MULTILINE), (run_id, state)
    shown = Counter(word for word in re.findall(r"\b[A-Z][A-Z_]+\b", text) if word in ALL_STATES)
    assert shown == Counter(states.values())


def test_report_per_run_keeps_ids_and_states_whole_at_80(home: Path) -> None:
    text = cli(["report", "--sweep", TRICKY], 80)
    for run_id, state in registry_states(home, TRICKY).items():
        assert re.search(rf"^{re.escape(run_id)}\*?\s+{state}\s", text, re.MULTILINE), (run_id, state)
    assert "OUT_OF_MEMORY" in text


def test_watch_summary_wraps_between_counts_not_inside_one(home: Path) -> None:
    text = cli(["watch", TRICKY], 80)
    assert text.startswith(f"sweep {TRICKY}: 4 run(s) ended: COMPLETED 1  FAILED 2\nOUT_OF_MEMORY 1\n")


def test_a_narrow_terminal_says_which_columns_it_hid(home: Path) -> None:
    assert "(hidden at this width: job, " in cli(["report", "--sweep", TRICKY], 80)
    assert "hidden at this width" not in cli(["report", "--sweep", TRICKY], 250)


def test_json_and_csv_keep_every_field_at_80(home: Path) -> None:
    rows = json.loads(cli(["runs", "--json"], 80))
    assert {"id", "state", "slurm_job_id", "overrides", "val_acc", "loss"} <= set(rows[0])
    header = cli(["runs", "--csv"], 80).splitlines()[0].split(",")
    assert header[:4] == ["id", "state", "slurm_job_id", "overrides"] and "val_acc" in header
    assert cli(["sweeps", "--csv"], 80).splitlines()[0].split(",")[-1] == "sweep_dir"


# -- user text is plain text ----------------------------------------------------------------------------------

def test_runs_show_overrides_as_typed(home: Path) -> None:
    line = next(line for line in cli(["runs", "--sweep", TRICKY], 250).splitlines() if line.startswith(f"{TRICKY}-0"))
    assert "tags=[foo] model=mlp" in line


def test_show_prints_markup_like_errors_as_they_are(home: Path) -> None:
    lines = [line.strip() for line in cli(["show", f"{TRICKY}-0"], 80).splitlines()]
    assert f"error: {MARKUP_ERROR}" in lines
    assert "overrides: tags=[foo] model=mlp" in lines


def test_status_report_and_watch_print_markup_like_text_as_it_is(home: Path) -> None:
    status = cli(["status", TRICKY], 250)
    assert MARKUP_ERROR in status and "<i>tricky</i>" not in status  # the sweep's folder, not its name
    report = cli(["report", "--sweep", TRICKY], 250)
    assert "tags=[foo] model=mlp" in report and MARKUP_ERROR in report
    watch = cli(["watch", TRICKY], 250)
    assert "tags=[foo] model=mlp" in watch and "best val_acc 0.93" in watch and "note=<b>x</b>" in watch


def test_html_page_escapes_what_runs_recorded(home: Path) -> None:
    with Registry(home / "registry.db") as registry:
        page = render_html(build_report(registry, sweep=TRICKY, now=FIXED))
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>x</b>" not in page and "note=&lt;b&gt;x&lt;/b&gt;" in page
    assert "tags=[foo]" in page and MARKUP_ERROR in page


# -- fitting, without a terminal ------------------------------------------------------------------------------

def test_fit_keeps_whole_columns_and_hides_the_least_important_first() -> None:
    columns = [Column("id"), Column("state"), Column("job", priority=3), Column("note", priority=1, wrap=True),
               Column("extra", priority=2)]
    rows = [["20260101-110000-a1b2-10", "OUT_OF_MEMORY", "4100_10", "lr=0.1 optimizer.name=adam", "x" * 12]]
    wide = fit(columns, rows, 200)
    assert [c.key for c in wide.columns] == ["id", "state", "job", "note", "extra"] and wide.hidden == []
    assert wide.widths == [23, 13, 7, 26, 12]
    narrow = fit(columns, rows, 60)
    assert [c.key for c in narrow.columns] == ["id", "state", "note"]
    assert [c.key for c in narrow.hidden] == ["job", "extra"]
    assert narrow.widths[:2] == [23, 13]  # never squeezed
    assert sum(narrow.widths) + 2 * (len(narrow.widths) - 1) <= 60
    assert narrow.widths[2] >= len("optimizer.name=adam")  # free text folds between words, not inside one


def test_fit_skips_a_column_that_does_not_fit_but_shows_a_narrower_less_important_one() -> None:
    columns = [Column("id"), Column("path", priority=1), Column("n", priority=2)]
    rows = [["a" * 20, "/" + "p" * 40, "7"]]
    layout = fit(columns, rows, 40)
    assert [c.key for c in layout.columns] == ["id", "n"] and [c.key for c in layout.hidden] == ["path"]


def test_fit_gives_free_text_what_is_left() -> None:
    columns = [Column("id"), Column("error", wrap=True)]
    rows = [["r1", "a very long error message " * 4]]
    assert fit(columns, rows, 50).widths == [2, 46]
    assert fit(columns, rows, 10).widths == [2, 16]  # too narrow for anything: nothing hidden, it folds


def test_watch_progress_bar_shows_its_title_as_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    from slurmml.cli.watch import _Display
    from slurmml.report.progress import Snapshot

    with _Display("sweep [/x] [bold]", stderr_is_terminal=True) as display:
        display.update(Snapshot({"RUNNING": 1}, None, None))
    assert "sweep [/x] [bold]" in capsys.readouterr().err
