"""Artifacts uploaded to a real moto S3 server: from a plain script's background thread, or later from the login
node when the script could not reach the store; listed and fetched with `slurmml artifacts`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from slurmml.cli import main
from slurmml.registry.artifacts import upload_pending
from slurmml.registry.registry import Registry
from slurmml.storage.artifact_uploads import FOLDER_MARKER, pack_folder, prepare
from slurmml.storage.blobs import BlobStore, blob_key, sha256_file
from slurmml.storage.s3 import ObjectStore

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import os, sys
from pathlib import Path
import slurmml

work = Path(sys.argv[1])
(work / "model.pt").write_bytes(b"weights" * 1000)
folder = work / "checkpoint"
(folder / "sub").mkdir(parents=True)
(folder / "a.txt").write_text("a")
(folder / "sub" / "b.bin").write_bytes(os.urandom(3000))
os.symlink("a.txt", folder / "link")
slurmml.log(step=0, loss=1.0)
slurmml.log_artifact(work / "model.pt", upload=True)
slurmml.log_artifact(folder, name="ckpt", upload=True)
slurmml.log_artifact(work / "notes.txt", upload=True)   # no such file: recorded, never raised
slurmml.log_artifact(work / "model.pt", name="local-only")  # not asked to upload
print(slurmml.run.id)
"""


def run_script(tmp_path: Path, home: Path, extra_env: dict[str, str] | None = None) -> tuple[str, Path]:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "SLURMML_HOME": str(home), "PYTHONPATH": str(ROOT), "SLURMML_SHIP_RUNS": "0",
           **(extra_env or {})}
    env.pop("SLURMML_UPLOAD_ARTIFACTS", None)
    result = subprocess.run([sys.executable, str(script), str(work)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1], work


def spool_records(home: Path, run_id: str) -> list[dict[str, Any]]:
    spool = home / "runs" / run_id / "spool.jsonl"
    return [json.loads(line) for line in spool.read_text().splitlines()]


def registry_of(home: Path) -> Registry:
    registry = Registry(home / "registry.db")
    registry.refresh(local_runs_dir=home / "runs")
    return registry


def cli(home: Path, *args: str) -> Any:
    return CliRunner().invoke(main, list(args), env={"SLURMML_HOME": str(home)}, catch_exceptions=False)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    monkeypatch.setenv("SLURMML_HOME", str(folder))
    return folder


def test_a_folder_packs_to_the_same_bytes_whatever_its_times(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    (folder / "z").mkdir(parents=True)
    (folder / "b.txt").write_text("b")
    (folder / "z" / "a.txt").write_text("a")
    first, second = tmp_path / "1.tar", tmp_path / "2.tar"
    pack_folder(folder, first)
    os.utime(folder / "b.txt", (1, 1))
    (folder / "z" / "a.txt").chmod(0o600)  # modes are normalised too: only the executable bit counts
    pack_folder(folder, second)
    assert first.read_bytes() == second.read_bytes()
    import tarfile

    with tarfile.open(first) as tar:
        assert tar.getnames() == [FOLDER_MARKER, "b.txt", "z", "z/a.txt"]
    (folder / "z" / "a.txt").write_text("A")
    assert prepare(folder).digest != sha256_file(first)[0]


def test_a_scripts_artifacts_upload_in_the_background_and_can_be_listed_and_fetched(
        s3_store: ObjectStore, home: Path, tmp_path: Path) -> None:
    run_id, work = run_script(tmp_path, home)
    records = spool_records(home, run_id)
    logged = {r["name"]: r for r in records if r["k"] == "a"}
    assert logged["model.pt"]["upload"] == "pending" and logged["ckpt"]["upload"] == "pending"
    assert logged["notes.txt"]["size"] is None and "upload" not in logged["notes.txt"]
    assert "upload" not in logged["local-only"]
    uploads = {r["path"]: r for r in records if r["k"] == "upload"}
    model = uploads[str(work / "model.pt")]
    digest = hashlib.sha256(b"weights" * 1000).hexdigest()
    assert model["upload"] == "uploaded" and model["digest"] == digest
    assert model["uri"] == f"s3://{s3_store.config.bucket}/{s3_store.config.prefix}/{blob_key(digest)}"
    assert uploads[str(work / "checkpoint")]["upload"] == "uploaded"
    assert set(uploads) == {str(work / "model.pt"), str(work / "checkpoint")}
    spool_text = (home / "runs" / run_id / "spool.jsonl").read_text()
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in spool_text and os.environ["AWS_ACCESS_KEY_ID"] not in spool_text
    assert BlobStore(s3_store).get_bytes(digest) == b"weights" * 1000

    registry_of(home).close()
    listed = cli(home, "artifacts", run_id, "--json")
    assert listed.exit_code == 0, listed.output
    rows = {row["name"]: row for row in json.loads(listed.output)}
    assert rows["model.pt"]["upload"] == "uploaded" and rows["model.pt"]["digest"] == digest
    assert rows["ckpt"]["uri"].startswith("s3://") and rows["local-only"]["upload"] is None
    table = cli(home, "artifacts", run_id)
    assert table.exit_code == 0 and digest[:12] in table.output and "uploaded" in table.output
    assert max(len(line) for line in table.output.splitlines()) <= 80
    csv_out = cli(home, "artifacts", run_id, "--csv")
    assert csv_out.output.splitlines()[0] == "name,size,digest,upload,uri,path,time"

    (work / "model.pt").unlink()  # fetched from the store, not from its old path
    fetched = cli(home, "artifacts", "get", run_id, "model.pt", str(tmp_path / "got.pt"))
    assert fetched.exit_code == 0, fetched.output
    assert (tmp_path / "got.pt").read_bytes() == b"weights" * 1000
    shutil_rmtree(work / "checkpoint")
    folder = cli(home, "artifacts", "get", run_id, "ckpt", str(tmp_path / "ckpt"))
    assert folder.exit_code == 0, folder.output
    got = tmp_path / "ckpt"
    assert (got / "a.txt").read_text() == "a" and (got / "sub" / "b.bin").stat().st_size == 3000
    assert os.readlink(got / "link") == "a.txt" and not (got / FOLDER_MARKER).exists()
    again = cli(home, "artifacts", "get", run_id, "ckpt", str(tmp_path / "ckpt"))
    assert again.exit_code == 0 and (got / "ckpt" / "a.txt").exists()  # into an existing folder, as cp does

    unknown = CliRunner().invoke(main, ["artifacts", "get", run_id, "nope"], env={"SLURMML_HOME": str(home)})
    assert unknown.exit_code == 1
    assert unknown.output.strip().splitlines() == [
        f"slurmml: run {run_id} has no artifact 'nope' (it has: ckpt, local-only, model.pt, notes.txt)"]
    no_run = CliRunner().invoke(main, ["artifacts", "local-nope"], env={"SLURMML_HOME": str(home)})
    assert no_run.exit_code == 1 and len(no_run.output.strip().splitlines()) == 1 and "local-nope" in no_run.output


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)


def test_an_unreachable_store_leaves_uploads_pending_for_the_login_node(
        s3_store: ObjectStore, home: Path, tmp_path: Path) -> None:
    from slurmml.devcluster.s3server import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    run_id, work = run_script(tmp_path, home, {"SLURMML_S3_ENDPOINT": closed})
    records = spool_records(home, run_id)
    uploads = [r for r in records if r["k"] == "upload"]
    assert {r["upload"] for r in uploads} == {"pending"} and len(uploads) == 2
    assert all(len(r["digest"]) == 64 and not r.get("uri") for r in uploads)
    assert list(s3_store.list("")) == []

    registry = registry_of(home)
    report = upload_pending(registry, s3_store)
    assert sorted(report.uploaded) == [f"{run_id}/ckpt", f"{run_id}/model.pt"] and report.problems == []
    rows = {row["name"]: row for row in registry.run(run_id)["artifacts"]}
    assert rows["model.pt"]["upload"] == "uploaded" and rows["model.pt"]["uri"].endswith(rows["model.pt"]["digest"])
    # the login node packed the folder to the digest the job found
    assert rows["ckpt"]["digest"] == next(r["digest"] for r in uploads if r["path"].endswith("checkpoint"))
    assert BlobStore(s3_store).has(rows["ckpt"]["digest"])
    puts = []
    s3_store.client.meta.events.register("before-call.s3.PutObject", lambda **_: puts.append(1))
    second = upload_pending(registry, s3_store)
    assert second.uploaded == [] and puts == []  # idempotent
    registry.close()
    listed = json.loads(cli(home, "artifacts", run_id, "--json").output)
    assert {row["name"]: row["upload"] for row in listed}["ckpt"] == "uploaded"


def test_the_login_node_refuses_an_artifact_that_changed_since_it_was_logged(
        s3_store: ObjectStore, home: Path, tmp_path: Path) -> None:
    run_id, work = run_script(tmp_path, home, {"SLURMML_STORAGE": ""})  # no store configured in the job
    (work / "model.pt").write_bytes(b"overwritten")
    import shutil

    shutil.rmtree(work / "checkpoint")  # gone from this machine: it stays pending
    registry = registry_of(home)
    report = upload_pending(registry, s3_store)
    assert report.uploaded == [] and report.not_here == [f"{run_id}/ckpt"]
    assert len(report.failed) == 1 and "model.pt changed since it was logged" in report.failed[0]
    rows = {row["name"]: row["upload"] for row in registry.run(run_id)["artifacts"]}
    assert rows["model.pt"].startswith("failed: ") and rows["ckpt"] == "pending"
    registry.close()
    copied = cli(home, "artifacts", "get", run_id, "local-only", str(tmp_path / "copy.pt"))
    assert copied.exit_code == 0 and (tmp_path / "copy.pt").read_bytes() == b"overwritten"
    assert "not uploaded" in copied.output
