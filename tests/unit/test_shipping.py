"""The parts of run shipping that need no object store: chunk keys and checks, cutting a spool into whole-line
chunks, run.json's git state, the deterministic code snapshot, and the sync mirror's crash repair."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from slurmml.registry import synced
from slurmml.storage import shipping


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=a@b", "-c", "user.name=a", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "src" / "pkg").mkdir(parents=True)
    (repo / "src" / "train.py").write_text("print('train')\n")
    (repo / "src" / "pkg" / "model.py").write_text("LAYERS = 2\n")
    (repo / "run.sh").write_text("#!/bin/sh\n")
    (repo / "run.sh").chmod(0o755)
    (repo / "README.md").write_text("readme\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first")
    (repo / "src" / "pkg" / "model.py").write_text("LAYERS = 3\n")  # tracked, changed: in the diff and the snapshot
    (repo / "untracked.txt").write_text("not shipped\n")
    (repo / "README.md").unlink()  # tracked, deleted in the working tree
    return repo


def members(archive: Path) -> dict[str, tuple[int, bytes]]:
    with tarfile.open(archive) as tar:
        return {m.name: (m.mode, tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()}


# ---------------------------------------------------------------- keys and chunks


def test_chunk_keys_sort_by_offset_and_parse_back() -> None:
    keys = [shipping.chunk_key("local-1", offset) for offset in (0, 9, 10, 123_456_789)]
    assert keys == sorted(keys)
    assert keys[1] == "runs/local-1/spool/0000000000000009.jsonl"
    assert [shipping.chunk_offset(k) for k in keys] == [0, 9, 10, 123_456_789]
    assert shipping.chunk_offset("runs/local-1/run.json") is None
    assert shipping.chunk_offset("runs/local-1/spool/12.jsonl") is None
    assert shipping.meta_key("local-1") == "runs/local-1/run.json"


def test_run_ids_that_cannot_name_a_folder_are_refused() -> None:
    assert shipping.valid_run_id("local-20260101-120000-ab12")
    assert not any(shipping.valid_run_id(r) for r in ("", "a/b", "..", ".hidden", "a\\b", "x\n"))


def test_chunk_checks() -> None:
    body = b'{"k":"m"}\n'
    good = {"sha256": shipping.sha256(body), "length": str(len(body))}
    assert shipping.chunk_problem(body, good) is None
    assert "sha256" in shipping.chunk_problem(b'{"k":"x"}\n', good)
    assert "bytes" in shipping.chunk_problem(body + b"\n", good)
    assert "no sha256" in shipping.chunk_problem(body, {})
    torn = b'{"k":"m"}'
    assert "whole line" in shipping.chunk_problem(torn, {"sha256": shipping.sha256(torn), "length": str(len(torn))})


def test_spool_is_read_in_whole_lines(tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"
    spool.write_bytes(b"aaaa\nbbbb\ncc")
    assert shipping._read_lines(spool, 0, 100) == b"aaaa\nbbbb\n"  # the torn last line waits
    assert shipping._read_lines(spool, 0, 7) == b"aaaa\n"
    assert shipping._read_lines(spool, 5, 100) == b"bbbb\n"
    assert shipping._read_lines(spool, 10, 100) == b""
    spool.write_bytes(b"x" * 50 + b"\nyy\n")  # a line longer than a chunk is shipped whole
    assert shipping._read_lines(spool, 0, 8) == b"x" * 50 + b"\nyy\n"
    assert shipping._read_lines(tmp_path / "missing.jsonl", 0, 8) == b""


def test_shipping_state_survives_garbage(tmp_path: Path) -> None:
    assert shipping.read_state(tmp_path) == {"offset": 0, "meta": False}
    (tmp_path / shipping.SHIPPED_FILE).write_text("{not json")
    assert shipping.read_state(tmp_path)["offset"] == 0
    shipping.write_state(tmp_path, {"offset": 12, "meta": True})
    assert shipping.read_state(tmp_path) == {"offset": 12, "meta": True}
    assert (tmp_path / shipping.SHIPPED_FILE).stat().st_mode & 0o777 == 0o600
    (tmp_path / "spool.jsonl").write_bytes(b"x" * 20)
    assert shipping.unshipped_bytes(tmp_path) == 8


# ---------------------------------------------------------------- run.json and the snapshot


def test_git_state_names_commit_dirt_and_where_the_script_is(repo: Path) -> None:
    state = shipping.git_state(str(repo / "src"), str(repo / "src" / "train.py"))
    assert state["commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert state["dirty"] is True and "LAYERS = 3" in state["diff"]
    assert (state["root"], state["cwd"], state["script"]) == (str(repo), "src", "src/train.py")
    assert shipping.git_state(str(repo.parent), None) is None


def test_snapshot_is_the_working_tree_of_tracked_files_and_deterministic(repo: Path, tmp_path: Path) -> None:
    meta = shipping.prepare_run(tmp_path / "run", "local-1", argv=["train.py", "lr=0.1"], cwd=str(repo / "src"),
                                script=str(repo / "src" / "train.py"), created=1.0, host="ws")
    archive = tmp_path / "run" / shipping.CODE_FILE
    found = members(archive)
    assert sorted(found) == ["run.sh", "src/pkg/model.py", "src/train.py"]  # not untracked, not deleted
    assert found["src/pkg/model.py"] == (0o644, b"LAYERS = 3\n")
    assert found["run.sh"][0] == 0o755
    code = meta["code"]
    assert (code["kind"], code["cwd"], code["files"], code["digest"]) == ("git", "src", 3, None)
    assert meta["git"]["script"] == "src/train.py" and meta["argv"] == ["train.py", "lr=0.1"]
    assert json.loads((tmp_path / "run" / shipping.META_FILE).read_text()) == meta

    again = tmp_path / "again.tar.gz"
    shipping.write_tarball(again, str(repo), ["src/train.py", "run.sh", "src/pkg/model.py"])
    os.utime(repo / "run.sh", (1, 1))
    third = tmp_path / "third.tar.gz"
    shipping.write_tarball(third, str(repo), ["run.sh", "src/pkg/model.py", "src/train.py"])
    assert archive.read_bytes() == again.read_bytes() == third.read_bytes()  # order and times do not matter
    with gzip.open(io.BytesIO(archive.read_bytes())) as unzipped:
        unzipped.read()
        assert unzipped.mtime == 0


def test_snapshot_skips_big_files_and_caps_the_total(repo: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(shipping, "MAX_FILE_BYTES", 12)
    monkeypatch.setattr(shipping, "MAX_SNAPSHOT_BYTES", 20)
    (repo / "big.bin").write_bytes(b"0" * 13)
    files, total, skipped = shipping.write_tarball(tmp_path / "a.tar.gz", str(repo),
                                                   ["big.bin", "run.sh", "src/pkg/model.py", "src/train.py"])
    assert (files, total) == (1, 10)  # run.sh; then model.py (11 bytes) would pass the total of 20
    assert skipped == [("big.bin", "13 bytes, over 12"), ("src/pkg/model.py", "total"),
                       ("src/train.py", "15 bytes, over 12")]


def test_outside_git_the_scripts_folder_is_snapshot(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    (folder / "lib").mkdir(parents=True)
    (folder / "train.py").write_text("x = 1\n")
    (folder / "lib" / "util.py").write_text("y = 2\n")
    (folder / ".secret").write_text("hidden\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\0")
    (folder / "venv").mkdir()
    (folder / "venv" / "pyvenv.cfg").write_text("home = /usr\n")
    meta = shipping.prepare_run(tmp_path / "run", "local-2", argv=["train.py"], cwd=str(tmp_path),
                                script=str(folder / "train.py"), created=1.0, host="ws")
    assert meta["git"] is None
    assert meta["code"]["kind"] == "folder" and "not in a git repository" in meta["code"]["note"]
    assert meta["code"]["cwd"] is None  # the cwd is outside the snapshot: a clone starts in its root
    assert sorted(members(tmp_path / "run" / shipping.CODE_FILE)) == ["lib/util.py", "train.py"]


# ---------------------------------------------------------------- the sync mirror


def test_mirror_append_is_committed_and_an_interrupted_one_is_cut_back(tmp_path: Path) -> None:
    mirror = tmp_path / "synced" / "r" / synced.MIRROR_FILE
    assert synced._append(mirror, 0, b"one\n") == 4
    assert synced._append(mirror, 4, b"two\n") == 8
    assert synced._read_committed(mirror) == 8
    with open(mirror, "ab") as handle:  # killed while appending the next chunk: part of it is there
        handle.write(b"thr")
    assert synced._repair(None, "r", mirror) == 8  # the record says where the last whole chunk ends
    assert mirror.read_bytes() == b"one\ntwo\n"
    assert synced._append(mirror, 8, b"three\n") == 14
    assert mirror.read_bytes() == b"one\ntwo\nthree\n"
