"""The registry on real SQLite files: migrations, ingest (incremental, idempotent, tolerant), queries."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from slurmml.cli import main
from slurmml.errors import SlurmmlError
from slurmml.registry.registry import Registry
from slurmml.registry.schema import MIGRATIONS
from slurmml.tracking.spool import encode


def make_registry(tmp_path: Path, runs: int = 3) -> Registry:
    registry = Registry(tmp_path / "registry.db")
    registry.add_sweep(
        {"id": "s1", "created": 1.0, "argv": ["train.py", "-m"], "sweep_dir": str(tmp_path), "backend": "slurm"},
        [{"id": f"s1-{i}", "job_num": i, "overrides": [f"lr={10.0 ** -(i + 1)}"],
          "spool_path": str(tmp_path / f"{i}.jsonl")} for i in range(runs)],
    )
    return registry


def write(path: Path, *records: dict, raw: bytes = b"") -> None:
    with open(path, "ab") as handle:
        handle.write(b"".join(encode(r) for r in records) + raw)


def start(run: int, lr: float) -> dict:
    return {"k": "start", "t": 10.0, "host": "node1", "run_dir": f"/out/{run}",
            "config": {"optimizer": {"lr": lr, "name": "adam"}, "model": "mlp" if run else "linear", "seed": run}}


def test_new_registry_is_migrated_and_user_only(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.db")
    assert registry.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert (tmp_path / "registry.db").stat().st_mode & 0o777 == 0o600


def _open(path: str) -> int:
    return Registry(Path(path)).conn.execute("PRAGMA user_version").fetchone()[0]


def test_two_processes_creating_the_registry_at_once(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        versions = pool.map(_open, [str(tmp_path / "registry.db")] * 8)
    assert versions == [len(MIGRATIONS)] * 8


def test_ingest_records_everything_once(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    spool = tmp_path / "0.jsonl"
    write(spool, start(0, 0.1), *({"k": "m", "t": 11.0 + s, "s": s, "v": {"loss": 1.0 / (s + 1), "acc": s / 10}}
                                  for s in range(10)),
          {"k": "p", "t": 12.0, "v": {"batch": 32}}, {"k": "end", "t": 30.0, "state": "COMPLETED", "exit_code": 0})
    first = registry.ingest()
    assert (first.points, first.problems) == (20, [])
    assert registry.ingest().points == 0  # idempotent
    run = registry.run("s1-0")
    assert run["state"] == "COMPLETED" and run["host"] == "node1" and run["run_dir"] == "/out/0"
    assert [s["state"] for s in run["states"]] == ["RUNNING", "COMPLETED"]
    assert run["metrics"]["loss"] == {"last": 0.1, "last_step": 9, "min": 0.1, "max": 1.0, "count": 10}
    assert registry.conn.execute("SELECT count(*) FROM metrics").fetchone()[0] == 20


def test_summary_stays_right_across_increments(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    spool = tmp_path / "0.jsonl"
    write(spool, {"k": "m", "t": 1, "s": 0, "v": {"loss": 5.0}}, {"k": "m", "t": 2, "s": 1, "v": {"loss": 0.5}})
    registry.ingest()
    write(spool, {"k": "m", "t": 3, "s": 2, "v": {"loss": 2.0}})
    registry.ingest()
    assert registry.run("s1-0")["metrics"]["loss"] == {"last": 2.0, "last_step": 2, "min": 0.5, "max": 5.0, "count": 3}


def test_torn_last_line_waits_for_its_rest(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    spool = tmp_path / "0.jsonl"
    line = encode({"k": "m", "t": 1, "s": 1, "v": {"loss": 0.25}})
    write(spool, {"k": "m", "t": 0, "s": 0, "v": {"loss": 1.0}}, raw=line[:9])
    assert registry.ingest().points == 1
    write(spool, raw=line[9:])
    assert registry.ingest().points == 1
    assert registry.run("s1-0")["metrics"]["loss"]["count"] == 2


def test_corrupt_record_is_reported_and_skipped(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    spool = tmp_path / "0.jsonl"
    write(spool, {"k": "m", "t": 0, "s": 0, "v": {"loss": 1.0}}, raw=b'{"k": "m", "v": {"loss": \n[1, 2]\n')
    write(spool, {"k": "m", "t": 2, "s": 2, "v": {"loss": 0.5}})
    report = registry.ingest()
    assert report.points == 2
    assert len(report.problems) == 2 and "not JSON" in report.problems[0] and "skipped" in report.problems[0]
    assert registry.ingest().problems == []  # reported once


def test_missing_spool_is_not_an_error(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    report = registry.ingest()
    assert (report.points, report.problems) == (0, [])
    assert registry.run("s1-1")["state"] == "SUBMITTING"


def _ingest_loop(path: str, rounds: int) -> int:
    registry = Registry(Path(path))
    return sum(registry.ingest().points for _ in range(rounds))


def test_two_ingesting_processes_add_nothing_twice(tmp_path: Path) -> None:
    make_registry(tmp_path).close()
    for i in range(3):
        write(tmp_path / f"{i}.jsonl", *({"k": "m", "t": s, "s": s, "v": {"a": s, "b": -s}} for s in range(2000)))
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        added = pool.starmap(_ingest_loop, [(str(tmp_path / "registry.db"), 5)] * 2)
    assert sum(added) == 3 * 2000 * 2
    conn = sqlite3.connect(tmp_path / "registry.db")
    assert conn.execute("SELECT count(*) FROM metrics").fetchone()[0] == 12000
    assert conn.execute("SELECT sum(count) FROM metric_summary").fetchone()[0] == 12000


def test_a_failed_write_leaves_nothing_and_the_next_write_goes_through(tmp_path: Path) -> None:
    """store.transaction, which every registry write uses: all or nothing, and never left open."""
    from slurmml.registry.store import transaction

    registry = make_registry(tmp_path)
    with pytest.raises(KeyError):
        registry.add_sweep({"id": "s2", "argv": []}, [{"id": "s2-0", "job_num": 0}, {"id": "s2-1"}])  # no job_num
    assert not registry.has_sweep("s2") and not registry.conn.in_transaction
    with pytest.raises(sqlite3.IntegrityError):  # a second run with the same id: the first goes too
        registry.add_sweep({"id": "s3"}, [{"id": "s3-0", "job_num": 0}, {"id": "s3-0", "job_num": 1}])
    assert not registry.has_sweep("s3")
    with pytest.raises(RuntimeError), transaction(registry.conn) as conn:
        conn.execute("DELETE FROM runs")
        raise RuntimeError
    assert len(registry.runs()) == 3
    registry.discard_runs("s1", ["s1-2"])
    assert [r["id"] for r in registry.runs()] == ["s1-0", "s1-1"] and not registry.conn.in_transaction


def test_job_records_reads_the_cached_jobs_asked_for_or_all(tmp_path: Path) -> None:
    from slurmml.slurm.accounting import JobRecord

    registry = make_registry(tmp_path)
    records = [JobRecord(job_id=f"7_{i}", state="RUNNING", source="squeue", updated=1.0) for i in range(3)]
    registry.store_job_records(records)
    registry.store_job_records([JobRecord(job_id="7_1", state="COMPLETED", exit_code=0, source="sacct", updated=2.0)])
    assert registry.job_records(["7_1", "7_9"])["7_1"].state == "COMPLETED"
    assert set(registry.job_records(["7_1", "7_9"])) == {"7_1"}
    assert set(registry.job_records()) == {"7_0", "7_1", "7_2"}
    assert registry.job_records([]) == {}


def test_filters_sort_and_leaderboard(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    for i, lr in enumerate([0.1, 0.01, 0.001]):
        write(tmp_path / f"{i}.jsonl", start(i, lr), {"k": "m", "t": 1, "s": 5, "v": {"val_acc": 0.5 + i / 10}})
    registry.ingest()
    ids = lambda rows: [r["id"] for r in rows]  # noqa: E731
    assert ids(registry.runs(where=["lr<0.05"])) == ["s1-1", "s1-2"]  # dotted suffix: optimizer.lr
    assert ids(registry.runs(where=["model=mlp", "seed>=2"])) == ["s1-2"]
    assert ids(registry.runs(where=["val_acc>0.55"], sort="-val_acc")) == ["s1-2", "s1-1"]
    assert ids(registry.runs(where=["state=RUNNING"], sort="job_num")) == ["s1-0", "s1-1", "s1-2"]
    assert registry.runs(sort="-val_acc")[0]["val_acc"] == pytest.approx(0.7)
    assert [r["id"] for r in registry.best("val_acc", "min", limit=2)] == ["s1-0", "s1-1"]
    with pytest.raises(SlurmmlError, match="cannot read filter"):
        registry.runs(where=["lr 0.01"])
    assert registry.runs(where=["model=x' OR '1'='1"]) == []  # bound as a value, never pasted into SQL
    with pytest.raises(SlurmmlError, match="cannot sort by 'nosuch'"):
        registry.runs(sort="nosuch")


def test_curves_are_downsampled_keeping_the_ends(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    write(tmp_path / "0.jsonl", *({"k": "m", "t": s, "s": s, "v": {"loss": float(s)}} for s in range(2000)))
    registry.ingest()
    curve = registry.curves(["s1-0"], "loss", max_points=500)["s1-0"]
    assert len(curve) == 500 and curve[0] == (0, 0.0) and curve[-1] == (1999, 1999.0)


def test_missing_or_broken_registry_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SlurmmlError, match="no registry at"):
        Registry(tmp_path / "nothing.db", create=False)
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(SlurmmlError, match="not a usable registry"):
        Registry(tmp_path / "junk.db")
    (tmp_path / "a_file").write_text("")  # unwritable even for root: its parent is not a folder
    with pytest.raises(SlurmmlError, match="cannot create the registry"):
        Registry(tmp_path / "a_file" / "registry.db")


def test_plain_script_runs_are_adopted_and_end(tmp_path: Path) -> None:
    import subprocess
    import sys

    home = tmp_path / "home"
    script = "import slurmml\nfor s in range(3):\n    slurmml.log(step=s, loss=1.0 / (s + 1))\n"
    env = {**os.environ, "SLURMML_HOME": str(home)}
    env.pop("SLURMML_SPOOL", None)
    subprocess.run([sys.executable, "-c", script], env=env, check=True)
    failing = subprocess.run([sys.executable, "-c", script + "raise SystemError('boom')\n"], env=env, capture_output=True)
    assert failing.returncode != 0
    registry = Registry(home / "registry.db")
    report = registry.refresh(home / "runs")
    assert report.points == 6 and report.problems == []
    runs = registry.runs(sort="started")
    assert [r["state"] for r in runs] == ["COMPLETED", "FAILED"] and runs[0]["loss"] == pytest.approx(1 / 3)
    assert "SystemError: boom" in registry.run(runs[1]["id"])["error"]
    assert registry.refresh(home / "runs").points == 0


def test_local_run_whose_process_died_is_lost_not_running(tmp_path: Path) -> None:
    import subprocess
    import sys

    home = tmp_path / "home"
    script = "import os, slurmml\nslurmml.log(step=0, loss=1.0)\nslurmml.tracking.client.current_writer().flush()\nos._exit(0)\n"
    env = {**os.environ, "SLURMML_HOME": str(home)}
    env.pop("SLURMML_SPOOL", None)
    subprocess.run([sys.executable, "-c", script], env=env, check=True)
    registry = Registry(home / "registry.db")
    registry.refresh(home / "runs")
    (run,) = registry.runs()
    assert run["state"] == "LOST" and "ended without recording its end" in registry.run(run["id"])["error"]


def test_vanished_run_folder_is_reported(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    registry.conn.execute("UPDATE runs SET spool_path = ? WHERE id = 's1-0'", (str(tmp_path / "gone" / "spool" / "0.jsonl"),))
    problems = registry.ingest().problems
    assert problems == [f"run s1-0: its folder {tmp_path / 'gone'} no longer exists; nothing more to ingest"]


def test_final_state_is_set_once_and_never_over_the_runs_own(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    write(tmp_path / "0.jsonl", start(0, 0.1), {"k": "end", "t": 20.0, "state": "COMPLETED", "exit_code": 0})
    registry.ingest()
    for _ in range(2):
        registry.mark_final({"s1-0": ("CANCELLED", "x"), "s1-1": ("TIMEOUT", "Slurm: TIMEOUT")}, source="sacct")
    assert registry.run("s1-0")["state"] == "COMPLETED"
    assert [s["state"] for s in registry.run("s1-1")["states"]] == ["TIMEOUT"]


def test_a_diverged_run_never_tops_a_min_leaderboard(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    for i, loss in enumerate([0.5, float("nan"), 0.2]):
        write(tmp_path / f"{i}.jsonl", {"k": "m", "t": 1, "s": 1, "v": {"loss": loss}})
    registry.ingest()
    assert [r["id"] for r in registry.best("loss", "min")] == ["s1-2", "s1-0"]


def test_a_filter_on_a_key_no_run_has_is_an_error_not_an_empty_answer(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    registry = make_registry(tmp_path)
    registry.add_sweep({"id": "s2", "created": 2.0, "sweep_dir": str(tmp_path), "backend": "slurm"},
                       [{"id": "s2-0", "job_num": 0, "overrides": [], "spool_path": str(tmp_path / "s2.jsonl")}])
    for i, lr in enumerate([0.1, 0.01, 0.001]):
        write(tmp_path / f"{i}.jsonl", start(i, lr), {"k": "m", "t": 1, "s": 5, "v": {"val_acc": 0.5 + i / 10}})
    write(tmp_path / "s2.jsonl", {"k": "start", "t": 10.0, "config": {"depth": 3}})
    registry.ingest()
    # keys some runs have, though none match: an empty answer
    for where in ("lr>1", "optimizer.lr>1", "val_acc>2", "model=cnn", "job_num>9", "depth>5"):
        assert registry.runs(where=[where]) == [], where
    with pytest.raises(SlurmmlError, match=r"^filter 'nosuchkey>1': no run has a config key, metric or column "
                                           r"'nosuchkey'$"):
        registry.runs(where=["lr<1", "nosuchkey>1"])
    with pytest.raises(SlurmmlError, match=r"^filter 'depth>1': no run in sweep s1 has a config key, metric"):
        registry.runs(sweep="s1", where=["depth>1"])  # only s2's run has it
    assert [r["id"] for r in registry.runs(sweep="s2", where=["depth>1"])] == ["s2-0"]
    registry.close()

    monkeypatch.setenv("SLURMML_HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["runs", "--where", "nosuchkey>1"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == "slurmml: filter 'nosuchkey>1': no run has a config key, metric or column 'nosuchkey'\n"


def test_an_underscore_or_percent_in_a_key_is_a_letter_not_a_wildcard(tmp_path: Path) -> None:
    from slurmml.registry import browse

    registry = make_registry(tmp_path, runs=2)
    write(tmp_path / "0.jsonl", {"k": "start", "t": 10.0, "config": {"model": {"valXloss": 1, "lr": 0.1, "a%b": 2}}})
    write(tmp_path / "1.jsonl", {"k": "start", "t": 10.0, "config": {"model": {"val_loss": 1, "lr": 0.2}}},
          {"k": "m", "t": 11.0, "s": 0, "v": {"acc": 0.5}})
    write(tmp_path / "0.jsonl", {"k": "m", "t": 11.0, "s": 0, "v": {"acc": 0.7}})
    registry.ingest()
    assert [r["id"] for r in registry.runs(where=["val_loss=1"])] == ["s1-1"]  # `_` does not match the `X`
    assert [r["id"] for r in registry.runs(where=["lr>0"])] == ["s1-0", "s1-1"]  # a dotted suffix still matches
    with pytest.raises(SlurmmlError, match=r"^filter 'a_b=2': no run has a config key, metric or column 'a_b'$"):
        registry.runs(where=["a_b=2"])  # `model.a%b` is no `a_b`
    assert browse.config_key_exists(registry.conn, "val_loss") and not browse.config_key_exists(registry.conn, "a_b")
    assert not browse.config_key_exists(registry.conn, "l%s")
    grouped = browse.leaderboard(registry.conn, "acc", "max", group_key="val_loss")
    assert [(row["id"], row["group"]) for row in grouped] == [("s1-1", 1)]  # s1-0 has no `val_loss`
