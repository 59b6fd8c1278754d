"""Runs from any machine through a real S3 server (moto, auth on): a plain script on a "workstation" (its own
SLURMML_HOME) ships its run while it runs, and `slurmml sync` on the "login node" (another SLURMML_HOME) brings it
into that registry: exactly its points, once, however often or however interrupted the sync is."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from slurmml.cli import main
from slurmml.registry import synced
from slurmml.registry.registry import Registry
from slurmml.storage import shipping
from slurmml.storage.blobs import BlobStore, blob_key
from tests.conftest import ROOT

TRAIN = """\
import os, sys
import slurmml
from pkg.model import LAYERS
slurmml.log_params(lr=float(sys.argv[1].split("=")[1]), layers=LAYERS)
for step in range(int(os.environ.get("STEPS", "5"))):
    slurmml.log(step=step, loss=1.0 / (step + 1), acc=step / 10)
if os.environ.get("NO_END"):  # the process dies without its end record (its flushed lines stay)
    slurmml.tracking.client.current_writer().flush()
    os._exit(0)
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=a@b", "-c", "user.name=a", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The user's code: a git repository with the script in a subfolder, one tracked file changed since the commit."""
    repo = tmp_path / "checkout"
    (repo / "exp" / "pkg").mkdir(parents=True)
    (repo / "exp" / "train.py").write_text(TRAIN)
    (repo / "exp" / "pkg" / "__init__.py").write_text("")
    (repo / "exp" / "pkg" / "model.py").write_text("LAYERS = 2\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first")
    (repo / "exp" / "pkg" / "model.py").write_text("LAYERS = 3\n")
    return repo


def train(checkout: Path, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`python train.py lr=...` on the machine whose SLURMML_HOME is `home` (the store comes from the environment)."""
    environment = dict(os.environ, SLURMML_HOME=str(home), PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "train.py", *(args or ("lr=0.1",))], cwd=checkout / "exp", env=environment,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def local_run(home: Path) -> Path:
    (folder,) = (home / "runs").iterdir()
    return folder


def cli(home: Path, *args: str, **env: str) -> Any:
    return CliRunner().invoke(main, list(args), env={"SLURMML_HOME": str(home), **env})


def pull(home: Path, store: Any, **options: Any) -> synced.SyncReport:
    ids, _ = synced.remote_runs(store)
    with Registry(home / "registry.db") as registry:
        return synced.pull(registry, store, ids, home, **options)


def points(home: Path, run_id: str) -> list[tuple]:
    with sqlite3.connect(home / "registry.db") as conn:
        return conn.execute("SELECT k.name, m.step, m.value FROM metrics m JOIN metric_keys k USING (key) JOIN runs r "
                            "USING (run) WHERE r.id = ? ORDER BY k.name, m.step", (run_id,)).fetchall()


def dump(home: Path) -> dict[str, list]:
    """Everything the registry holds about runs, to compare two registries or one before and after."""
    with sqlite3.connect(home / "registry.db") as conn:
        return {table: sorted(map(repr, conn.execute(f"SELECT * FROM {table}"))) for table in
                ("runs", "run_states", "metrics", "metric_summary", "params", "executions", "spool_offsets",
                 "ingest_problems")}


def test_a_workstation_run_ships_and_the_login_node_syncs_it_once(tmp_path: Path, checkout: Path, s3_store) -> None:
    workstation, login = tmp_path / "workstation", tmp_path / "login"
    done = train(checkout, workstation)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    run_id = local_run(workstation).name
    assert shipping.list_run_ids(s3_store) == [run_id]
    assert shipping.unshipped_bytes(local_run(workstation)) == 0
    assert not (local_run(workstation) / shipping.CODE_FILE).exists()  # uploaded, then removed

    result = cli(login, "sync")
    assert result.exit_code == 0, result.output
    assert f"{run_id} from {os.uname().nodename}: new, " in result.stdout and "10 point(s), COMPLETED" in result.stdout
    with Registry(login / "registry.db") as registry:
        run = registry.run(run_id)
        meta = json.loads(registry.conn.execute("SELECT meta FROM synced_runs WHERE run_id = ?", (run_id,)).fetchone()[0])
    assert run["state"] == "COMPLETED" and run["sweep_id"] is None
    assert run["spool_path"] == str(login / "synced" / run_id / "spool.jsonl")
    assert {name: m["count"] for name, m in run["metrics"].items()} == {"loss": 5, "acc": 5}
    assert run["metrics"]["loss"]["last"] == pytest.approx(0.2)
    assert run["params"] == {"lr": 0.1, "layers": 3}  # the working tree's code, not the commit's
    assert meta["argv"] == ["train.py", "lr=0.1"] and meta["cwd"] == str(checkout / "exp")
    assert meta["git"]["commit"] == git(checkout, "rev-parse", "HEAD") and meta["git"]["dirty"] is True
    assert (meta["git"]["cwd"], meta["git"]["script"]) == ("exp", "exp/train.py")
    assert meta["code"]["kind"] == "git" and meta["code"]["files"] == 3
    assert s3_store.exists(blob_key(meta["code"]["digest"]))
    assert shipping.load_local_meta(local_run(workstation)) == meta  # the workstation kept the same record

    # the code that ran, on another machine: unpacked, checked, and the folder of the original cwd
    folder = shipping.fetch_code(s3_store, meta, tmp_path / "code")
    assert folder == tmp_path / "code" / "exp"
    assert (folder / "pkg" / "model.py").read_text() == "LAYERS = 3\n"
    assert (folder / "train.py").read_text() == TRAIN
    with pytest.raises(Exception, match="not an empty folder"):
        shipping.fetch_code(s3_store, meta, tmp_path / "code")

    before = dump(login)
    again = cli(login, "sync")
    assert again.exit_code == 0 and "1 up to date" in again.stdout, again.output
    assert dump(login) == before
    with Registry(login / "registry.db") as registry:
        registry.refresh(local_runs_dir=login / "runs")
    assert dump(login) == before


def test_a_sync_interrupted_after_one_chunk_then_rerun_is_one_sync(tmp_path: Path, checkout: Path, s3_store) -> None:
    workstation = tmp_path / "workstation"
    assert train(checkout, workstation, STEPS="40", SLURMML_SHIP_RUNS="0").returncode == 0
    folder = local_run(workstation)
    assert shipping.list_run_ids(s3_store) == []  # not shipped while it ran
    pushed = cli(workstation, "sync", "--push", folder.name)  # a run not started for shipping: named, it ships
    assert pushed.exit_code == 0 and f"{folder.name}: shipped " in pushed.stdout, pushed.output
    assert shipping.load_local_meta(folder)["code"]["digest"] is None  # no snapshot was taken while it ran

    # the same spool in small chunks, as another run id
    other = tmp_path / "small" / "local-small"
    other.mkdir(parents=True)
    (other / "spool.jsonl").write_bytes((folder / "spool.jsonl").read_bytes())
    shipped = shipping.ship_run(s3_store, other, chunk_bytes=900,
                                fallback_meta=lambda: shipping.base_meta(other.name, argv=[], cwd="", created=1.0, host="ws"))
    assert shipped.chunks >= 4 and shipped.offset == (other / "spool.jsonl").stat().st_size

    interrupted, whole = tmp_path / "interrupted", tmp_path / "whole"
    first = pull(interrupted, s3_store, max_chunks=1)
    assert first.stopped == "stopped after 1 chunk(s)"
    assert [(r.run_id, r.chunks) for r in first.runs] == [(folder.name, 1), ("local-small", 0)]
    assert pull(interrupted, s3_store, max_chunks=2).stopped  # one more of local-small's chunks... and a stop
    assert not pull(interrupted, s3_store).failed
    assert not pull(whole, s3_store).failed
    assert len(points(interrupted, "local-small")) == 80
    assert points(interrupted, "local-small") == points(whole, "local-small") == points(whole, folder.name)
    assert dump(interrupted)["metrics"] == dump(whole)["metrics"]

    # a mirror cut short (a disk problem), and one killed mid-append (bytes past its last recorded boundary)
    mirror = interrupted / "synced" / "local-small" / "spool.jsonl"
    whole_mirror = (whole / "synced" / "local-small" / "spool.jsonl").read_bytes()
    before = dump(interrupted)
    with open(mirror, "r+b") as handle:
        handle.truncate(len(whole_mirror) - 7)
    report = pull(interrupted, s3_store)
    assert [r.chunks for r in report.runs if r.run_id == "local-small"] == [1]
    assert mirror.read_bytes() == whole_mirror and dump(interrupted)["metrics"] == before["metrics"]
    last = list(shipping.list_chunks(s3_store, "local-small"))[-1]
    synced._write_committed(mirror, last.offset)  # the append of the last chunk was never recorded
    pull(interrupted, s3_store)
    assert mirror.read_bytes() == whole_mirror and dump(interrupted)["metrics"] == before["metrics"]


def test_a_retried_push_is_harmless_and_a_rewritten_spool_stops_it(tmp_path: Path, s3_store) -> None:
    run_dir = tmp_path / "runs" / "local-retry"
    run_dir.mkdir(parents=True)
    spool = run_dir / "spool.jsonl"
    lines = [json.dumps({"k": "m", "t": 1.0 + i, "s": i, "v": {"x": float(i)}}) + "\n" for i in range(6)]
    spool.write_text(json.dumps({"k": "start", "t": 1.0, "host": "ws", "pid": 1}) + "\n" + "".join(lines[:3]))
    shipping.write_local_meta(run_dir, shipping.base_meta("local-retry", argv=["t.py"], cwd="/", created=1.0, host="ws"))
    first = shipping.ship_run(s3_store, run_dir)
    assert (first.chunks, first.meta) == (1, True)
    keys = [i.key for i in s3_store.list("runs/")]

    shipping.write_state(run_dir, {"offset": 0, "meta": False})  # the state was lost after the uploads
    again = shipping.ship_run(s3_store, run_dir)
    assert (again.chunks, again.bytes, again.meta) == (0, first.bytes, False)
    assert [i.key for i in s3_store.list("runs/")] == keys

    with open(spool, "a") as handle:  # more lines, and the state lost again: the stored chunk is a prefix
        handle.write("".join(lines[3:]))
    shipping.write_state(run_dir, {"offset": 0, "meta": True})
    more = shipping.ship_run(s3_store, run_dir)
    assert more.chunks == 1 and more.offset == spool.stat().st_size
    assert not pull(tmp_path / "login", s3_store).failed
    assert [p[1] for p in points(tmp_path / "login", "local-retry")] == list(range(6))

    spool.write_text(spool.read_text().replace('"x": 0.0', '"x": 9.0'))  # the spool rewritten after shipping
    shipping.write_state(run_dir, {"offset": 0, "meta": True})
    with pytest.raises(shipping.ShipConflict, match="holds other bytes at byte 0"):
        shipping.ship_run(s3_store, run_dir)
    result = cli(tmp_path, "sync", "--push", "local-retry")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "was it rewritten?" in result.stderr


def test_a_corrupt_chunk_is_refused_in_one_line(tmp_path: Path, s3_store) -> None:
    run_dir = tmp_path / "local-bad"
    run_dir.mkdir()
    records = [{"k": "start", "t": 1.0, "host": "ws"}] + [{"k": "m", "t": 2.0, "s": i, "v": {"y": 1.0}} for i in range(9)]
    (run_dir / "spool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    shipping.write_local_meta(run_dir, shipping.base_meta("local-bad", argv=[], cwd="/", created=1.0, host="ws"))
    assert shipping.ship_run(s3_store, run_dir, chunk_bytes=200).chunks >= 3
    second = list(shipping.list_chunks(s3_store, "local-bad"))[1]
    metadata = s3_store.head(second.key).metadata
    body = s3_store.get_bytes(second.key)
    s3_store.client.put_object(Bucket=s3_store.config.bucket, Key=s3_store.key(second.key),
                               Body=body.replace(b"1.0", b"7.0"), Metadata=metadata)  # same length and metadata

    result = cli(tmp_path / "login", "sync")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "the chunk at byte" in result.stderr and "is corrupt" in result.stderr
    got = points(tmp_path / "login", "local-bad")
    assert got and all(value == 1.0 for _, _, value in got)
    assert len(got) < 9  # the first chunk only: nothing after the corrupt one


@pytest.mark.parametrize("broken", ["wrong credentials", "missing bucket", "endpoint down"])
def test_store_problems_are_one_line_and_change_nothing(tmp_path: Path, s3_store, broken: str) -> None:
    run_dir = tmp_path / "runs" / "local-ok"
    run_dir.mkdir(parents=True)
    (run_dir / "spool.jsonl").write_text(json.dumps({"k": "start", "t": 1.0, "host": "ws"}) + "\n")
    shipping.write_local_meta(run_dir, shipping.base_meta("local-ok", argv=[], cwd="/", created=1.0, host="ws"))
    shipping.ship_run(s3_store, run_dir)
    login = tmp_path / "login"
    assert cli(login, "sync").exit_code == 0
    before = dump(login)
    with open(run_dir / "spool.jsonl", "a") as handle:
        handle.write(json.dumps({"k": "m", "t": 2.0, "s": 0, "v": {"z": 1.0}}) + "\n")
    shipping.ship_run(s3_store, run_dir)

    env = {"wrong credentials": {"AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG0", "AWS_SECRET_ACCESS_KEY": "wrong"},
           "missing bucket": {"SLURMML_STORAGE": "s3://no-such-bucket/x"},
           "endpoint down": {"SLURMML_S3_ENDPOINT": "http://127.0.0.1:9"}}[broken]
    for args in (["sync"], ["sync", "--push"]):
        result = cli(login, *args, **env)
        assert result.exit_code == 1, result.output
        assert result.stdout == "" and result.stderr.count("\n") == 1 and result.stderr.startswith("slurmml: cannot ")
    assert dump(login) == before


def test_an_unreachable_store_never_holds_up_the_script_and_push_ships_later(tmp_path: Path, checkout: Path,
                                                                           s3_store) -> None:
    workstation = tmp_path / "workstation"
    started = time.monotonic()
    offline = train(checkout, workstation, SLURMML_S3_ENDPOINT="http://127.0.0.1:9")
    assert offline.returncode == 0 and time.monotonic() - started < 30
    (line,) = offline.stderr.splitlines()  # one line, at exit, that says what to do
    assert "bytes not shipped" in line and "slurmml sync --push" in line
    folder = local_run(workstation)
    assert (folder / shipping.CODE_FILE).is_file()  # the snapshot waits next to the spool

    pushed = cli(workstation, "sync", "--push")  # back online: every run started for shipping and not done
    assert pushed.exit_code == 0 and f"{folder.name}: shipped" in pushed.stdout and "run.json" in pushed.stdout
    assert "up to date" in cli(workstation, "sync", "--push", folder.name).stdout
    assert cli(tmp_path / "login", "sync").exit_code == 0
    with Registry(tmp_path / "login" / "registry.db") as registry:
        assert registry.run(folder.name)["state"] == "COMPLETED"
        meta = json.loads(registry.conn.execute("SELECT meta FROM synced_runs").fetchone()[0])
    assert meta["code"]["digest"] and len(BlobStore(s3_store).get_bytes(meta["code"]["digest"])) > 0


def test_a_run_of_the_login_node_itself_is_not_synced_twice(tmp_path: Path, checkout: Path, s3_store) -> None:
    login = tmp_path / "login"
    assert train(checkout, login).returncode == 0
    run_id = local_run(login).name
    result = cli(login, "sync")
    assert result.exit_code == 0 and "1 ran here" in result.stdout, result.output
    with Registry(login / "registry.db") as registry:
        assert registry.run(run_id)["spool_path"] == str(local_run(login) / "spool.jsonl")
        assert registry.conn.execute("SELECT count(*) FROM synced_runs").fetchone()[0] == 0
        assert registry.conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 1


def test_a_synced_run_that_stops_shipping_is_lost_and_comes_back(tmp_path: Path, checkout: Path, s3_store) -> None:
    workstation, login = tmp_path / "workstation", tmp_path / "login"
    died = train(checkout, workstation, NO_END="1", SLURMML_SHIP_RUNS="0")  # died on this very host: a dead pid
    assert died.returncode == 0
    folder = local_run(workstation)
    assert cli(workstation, "sync", "--push", folder.name).exit_code == 0
    assert not pull(login, s3_store).failed
    with Registry(login / "registry.db") as registry:
        registry.refresh(local_runs_dir=login / "runs")  # the pid is this host's and dead, but another machine's run
        assert registry.run(folder.name)["state"] == "RUNNING"

    pull(login, s3_store, lost_after_s=3600)
    with Registry(login / "registry.db") as registry:
        assert registry.run(folder.name)["state"] == "RUNNING"  # bytes came a moment ago
    pull(login, s3_store, lost_after_s=0)
    with Registry(login / "registry.db") as registry:
        run = registry.run(folder.name)
    assert run["state"] == "LOST" and "through the object store" in run["error"]

    with open(folder / "spool.jsonl", "a") as handle:  # it was only offline: more records, then its end
        handle.write(json.dumps({"k": "m", "t": time.time(), "s": 5, "v": {"loss": 0.1}}) + "\n")
    assert cli(workstation, "sync", "--push", folder.name).exit_code == 0
    pull(login, s3_store, lost_after_s=0)
    with Registry(login / "registry.db") as registry:
        assert registry.run(folder.name)["state"] == "RUNNING"
    with open(folder / "spool.jsonl", "a") as handle:
        handle.write(json.dumps({"k": "end", "t": time.time(), "state": "COMPLETED", "exit_code": 0}) + "\n")
    assert cli(workstation, "sync", "--push", folder.name).exit_code == 0
    pull(login, s3_store, lost_after_s=0)
    with Registry(login / "registry.db") as registry:
        run = registry.run(folder.name)
    assert run["state"] == "COMPLETED" and run["metrics"]["loss"]["count"] == 6
