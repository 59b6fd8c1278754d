"""Datasets against a real S3 server (moto's, auth on): versions, packs, reuse, aliases, references, verification,
concurrent adds, files changing while added, the job cache (one download for many processes, a full disk, a
version staged for a node that cannot reach S3) and the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from slurmml.core import manifest as m
from slurmml.errors import SlurmmlError
from slurmml.storage import datasets
from slurmml.storage.blobs import blob_key
from slurmml.storage.data_cache import stage

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent


def make_folder(root: Path, small: int = 120) -> Path:
    """Many small files in nested folders, one empty file, one copy of another, and one bigger than the pack limit."""
    for i in range(small):
        path = root / f"part{i % 3}" / f"sub{i % 2}" / f"f{i:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(hashlib.sha256(str(i).encode()).digest() * (40 + i))
    (root / "empty.txt").write_bytes(b"")
    (root / "copy.bin").write_bytes((root / "part0" / "sub0" / "f000.bin").read_bytes())
    (root / "big.bin").write_bytes(os.urandom(m.PACK_LIMIT + 12345))
    return root


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def blob_objects(store) -> dict[str, int]:
    return {info.key: info.size for info in store.list("blobs/")}


def test_a_folder_goes_up_in_packs_and_comes_back_byte_for_byte(s3_store, tmp_path: Path) -> None:
    source = make_folder(tmp_path / "data")
    v1 = datasets.add(s3_store, "imgs", source, message="first", progress=False)
    assert (v1["version"], v1["parent"], v1["kind"], v1["file_count"]) == (1, None, "stored", 123)
    assert v1["digest"] == m.files_digest(v1["files"]) and v1["message"] == "first"
    objects = blob_objects(s3_store)
    # the small files share one pack, the big file is its own blob, and the copy is stored once
    assert len(objects) == 2 and v1["stats"]["uploaded_objects"] == 2
    assert v1["stats"]["uploaded_bytes"] == sum(objects.values()) == v1["bytes"] - (source / "copy.bin").stat().st_size
    assert s3_store.exists(m.version_key("imgs", 1))

    document, got = datasets.get(s3_store, "imgs@v1", tmp_path / "back", progress=False)
    assert got == tmp_path / "back" and tree(got) == tree(source)
    assert not list(tmp_path.glob(".back.partial-*"))


def test_a_new_version_uploads_only_what_changed_and_diff_says_what(s3_store, tmp_path: Path) -> None:
    source = make_folder(tmp_path / "data")
    datasets.add(s3_store, "imgs", source, progress=False)
    before = blob_objects(s3_store)
    (source / "part1" / "sub1" / "f001.bin").write_bytes(b"changed" * 100)
    (source / "part2" / "new.bin").write_bytes(b"added" * 200)
    (source / "part0" / "sub0" / "f000.bin").unlink()
    v2 = datasets.add(s3_store, "imgs", source, progress=False)
    after = blob_objects(s3_store)
    new = {key: size for key, size in after.items() if key not in before}
    assert v2["version"] == 2 and v2["parent"] == 1
    assert len(new) == 1 and list(new.values()) == [700 + 1000]  # one pack: the changed and the added file
    assert v2["stats"] == {"new_files": 2, "new_bytes": 1700, "uploaded_bytes": 1700, "uploaded_objects": 1}

    d = datasets.diff(s3_store, "imgs@1", "@v2")
    assert (d["a"], d["b"]) == ("imgs@v1", "imgs@v2")
    assert [f["path"] for f in d["added"]] == ["part2/new.bin"]
    assert [f["path"] for f in d["removed"]] == ["part0/sub0/f000.bin"]
    assert d["changed"] == [{"path": "part1/sub1/f001.bin", "size_a": 32 * 41, "size_b": 700}]
    assert d["unchanged"] == 121 and d["bytes_added"] == 1000

    _, got = datasets.get(s3_store, "imgs", tmp_path / "v2", progress=False)  # latest; partly from v1's pack
    assert tree(got) == tree(source)
    again = datasets.add(s3_store, "imgs", source, progress=False)
    assert again["unchanged"] and again["version"] == 2 and blob_objects(s3_store) == after


def test_aliases_latest_and_one_line_for_what_does_not_exist(s3_store, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    for text in ("one", "two", "three"):
        (tmp_path / "a" / "x.txt").write_text(text)
        datasets.add(s3_store, "tiny", tmp_path / "a", progress=False)
    assert datasets.resolve(s3_store, "tiny")["version"] == 3
    assert datasets.resolve(s3_store, "tiny@latest")["version"] == 3
    datasets.alias(s3_store, "tiny@2", "best")
    assert datasets.resolve(s3_store, "tiny@best")["version"] == 2
    datasets.alias(s3_store, "tiny@v1", "best")  # moves
    assert datasets.resolve(s3_store, "tiny@best")["version"] == 1
    assert datasets.show(s3_store, "tiny@1")["aliases"] == ["best"]
    assert datasets.show(s3_store, "tiny@3")["aliases"] == ["latest"]
    with pytest.raises(SlurmmlError, match="cannot be set"):
        datasets.alias(s3_store, "tiny@1", "latest")
    with pytest.raises(SlurmmlError) as error:
        datasets.resolve(s3_store, "tiny@v7")
    assert str(error.value).startswith("tiny has no version 7: tiny has v1-v3; aliases: latest -> v3, best -> v1")
    with pytest.raises(SlurmmlError, match="no alias 'prod'"):
        datasets.resolve(s3_store, "tiny@prod")
    with pytest.raises(SlurmmlError, match=r"no dataset 'nope' in s3://tests/.*; datasets: tiny$"):
        datasets.resolve(s3_store, "nope")
    assert [row["name"] for row in datasets.list_datasets(s3_store)] == ["tiny"]
    assert datasets.list_datasets(s3_store)[0]["aliases"] == "best=v1"


def test_a_single_file_dataset_is_used_as_the_file(s3_store, tmp_path: Path, capfd) -> None:
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    document = datasets.add(s3_store, "table", tmp_path / "table.csv", progress="always")
    assert document["single_file"] and [f["path"] for f in document["files"]] == ["table.csv"]
    _, got = datasets.get(s3_store, "table", tmp_path / "out", progress="always")
    assert got == tmp_path / "out" / "table.csv" and got.read_text() == "a,b\n1,2\n"
    assert "hashing table" in capfd.readouterr().err  # the bars, asked for off a terminal


def test_a_reference_dataset_points_at_objects_in_place_and_notices_when_they_change(s3_store, tmp_path: Path) -> None:
    client, bucket = s3_store.client, s3_store.config.bucket
    prefix = f"raw-{uuid.uuid4().hex[:8]}"
    bodies = {"a.txt": b"alpha", "deep/b.bin": os.urandom(3000), "deep/c.txt": b"gamma" * 10}
    for path, body in bodies.items():
        client.put_object(Bucket=bucket, Key=f"{prefix}/{path}", Body=body)
    before = blob_objects(s3_store)
    document = datasets.add(s3_store, "raw", f"s3://{bucket}/{prefix}/", progress=False)
    assert document["kind"] == "reference" and blob_objects(s3_store) == before  # nothing copied
    assert [(f["path"], f["size"], f["key"]) for f in document["files"]] == \
        [(p, len(b), f"{prefix}/{p}") for p, b in sorted(bodies.items())]
    assert all(f["etag"] for f in document["files"])
    _, got = datasets.get(s3_store, "raw", tmp_path / "raw", progress=False)
    assert {p: (got / p).read_bytes() for p in bodies} == bodies
    assert datasets.verify(s3_store, "raw", progress=False)["ok"]

    client.put_object(Bucket=bucket, Key=f"{prefix}/deep/c.txt", Body=b"changed")
    result = datasets.verify(s3_store, "raw@1", progress=False)
    assert not result["ok"] and len(result["problems"]) == 1 and result["problems"][0].startswith("deep/c.txt: ")
    with pytest.raises(SlurmmlError, match="changed since raw@v1 was added"):
        datasets.get(s3_store, "raw", tmp_path / "again", progress=False)
    assert not (tmp_path / "again").exists() and not list(tmp_path.glob(".again.partial-*"))


def test_a_reference_in_a_versioned_bucket_reads_the_version_added(s3_store, tmp_path: Path) -> None:
    client, bucket = s3_store.client, f"versioned-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    client.put_object(Bucket=bucket, Key="labels.csv", Body=b"cat,dog\n")
    document = datasets.add(s3_store, "labels", f"s3://{bucket}/labels.csv", progress=False)
    assert document["single_file"] is False and document["files"][0]["version_id"]
    client.put_object(Bucket=bucket, Key="labels.csv", Body=b"overwritten\n")
    assert datasets.verify(s3_store, "labels", progress=False)["ok"]  # that version is still there
    _, got = datasets.get(s3_store, "labels", tmp_path / "labels", progress=False)
    assert (got / "labels.csv").read_bytes() == b"cat,dog\n"


def test_verify_finds_a_damaged_pack_and_get_refuses_it(s3_store, tmp_path: Path) -> None:
    source = make_folder(tmp_path / "data", small=20)
    document = datasets.add(s3_store, "dmg", source, progress=False)
    assert datasets.verify(s3_store, "dmg", progress=False)["ok"]
    pack = next(e["blob"] for e in document["files"] if e["path"].startswith("part"))
    key = s3_store.key(blob_key(pack))
    body = bytearray(s3_store.client.get_object(Bucket=s3_store.config.bucket, Key=key)["Body"].read())
    body[10] ^= 0xFF  # one flipped byte, in the pack's first file and its copy
    hit = sorted(e["path"] for e in document["files"]
                 if e["blob"] == pack and e["offset"] <= 10 < e["offset"] + e["length"])
    assert hit == ["copy.bin", "part0/sub0/f000.bin"]
    s3_store.client.put_object(Bucket=s3_store.config.bucket, Key=key, Body=bytes(body))
    result = datasets.verify(s3_store, "dmg", progress=False)
    assert not result["ok"]
    assert any(p.startswith(f"blob {pack} is damaged") for p in result["problems"])
    assert any(p.startswith("copy.bin: damaged") for p in result["problems"])
    with pytest.raises(SlurmmlError, match="corrupt") as error:
        datasets.get(s3_store, "dmg", tmp_path / "out", progress=False)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


def test_two_adds_at_once_get_two_numbers(s3_store, tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "x").write_text("base")
    datasets.add(s3_store, "race", tmp_path / "base", progress=False)
    barrier = threading.Barrier(2, timeout=30)
    results: dict[str, dict] = {}

    def at_upload(phase: str, done: int, total: int) -> None:
        if phase == "upload" and done == 0:
            barrier.wait()  # both have read v1 as their parent: both go for v2

    def adder(tag: str) -> None:
        folder = tmp_path / tag
        folder.mkdir()
        (folder / "x").write_text(tag)
        results[tag] = datasets.add(s3_store, "race", folder, progress=at_upload)

    threads = [threading.Thread(target=adder, args=(tag,)) for tag in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(r["version"] for r in results.values()) == [2, 3]
    assert all(r["parent"] == 1 for r in results.values())  # each was made from v1, whatever its number
    assert datasets.list_versions(s3_store, "race") == [1, 2, 3]
    for tag, document in results.items():
        assert datasets.read_version(s3_store, "race", document["version"])["digest"] == document["digest"]


@pytest.mark.parametrize("how", ["rewritten", "same mtime", "big file"])
def test_a_file_that_changes_while_being_added_registers_nothing(s3_store, tmp_path: Path, how: str) -> None:
    source = make_folder(tmp_path / "data", small=10)
    victim = source / ("big.bin" if how == "big file" else "part1/sub1/f001.bin")

    def between_hashing_and_packing(phase: str, done: int, total: int) -> None:
        if phase == "upload" and done == 0:
            stamp = victim.stat()
            data = bytearray(victim.read_bytes())
            data[0] ^= 0xFF
            victim.write_bytes(bytes(data))
            if how == "same mtime":
                os.utime(victim, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))

    with pytest.raises(SlurmmlError) as error:
        datasets.add(s3_store, "moving", source, progress=between_hashing_and_packing)
    relative = victim.relative_to(source).as_posix()
    assert str(error.value).startswith(f"{relative} changed while being added") and "\n" not in str(error.value)
    assert "nothing was registered" in str(error.value)
    assert datasets.list_versions(s3_store, "moving") == []


def test_cli_commands_say_where_and_errors_are_one_line(s3_store, tmp_path: Path) -> None:
    from slurmml.cli import main

    source = make_folder(tmp_path / "data", small=12)
    runner = CliRunner()
    where = s3_store.config.where()

    def run(*args: str, code: int = 0):
        result = runner.invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    out = run("dataset", "add", "cli", str(source), "-m", "from the CLI").output
    assert f"store: {where}" in out and "added cli@v1: 15 files" in out
    (source / "extra.txt").write_text("more")
    assert "added cli@v2" in run("dataset", "add", "cli", str(source)).output
    listing = run("dataset", "ls", "--json")
    rows = json.loads(listing.stdout)
    assert [(r["name"], r["latest"], r["versions"]) for r in rows] == [("cli", "v2", 2)]
    assert f"datasets in: {where}" in listing.stderr
    assert "cli" in run("dataset", "ls").output
    assert "cli,v2,2,16" in run("dataset", "ls", "--csv").stdout
    shown = run("dataset", "show", "cli@1", "--files").output
    assert "from the CLI" in shown and "big.bin" in shown and "digest" in shown
    assert json.loads(run("dataset", "show", "cli", "--json").stdout)["version"] == 2
    assert run("dataset", "show", "cli", "--csv").stdout.splitlines()[0].startswith("path,size,sha256,blob")
    assert "1 added" in run("dataset", "diff", "cli@1", "cli@2").output
    assert "cli@best -> v1" in run("dataset", "alias", "cli@1", "best").output
    assert "intact" in run("dataset", "verify", "cli@best").output
    got = run("dataset", "get", "cli@best", str(tmp_path / "got")).output
    assert "got cli@v1" in got and tree(tmp_path / "got") == {k: v for k, v in tree(source).items() if k != "extra.txt"}
    for args, expected in [(("show", "nope"), "no dataset 'nope'"), (("get", "cli@v9"), "cli has no version 9"),
                           (("verify", "cli@prod"), "no alias 'prod'"), (("add", "cli", str(tmp_path / "none")),
                                                                          "no such file or folder"),
                           (("alias", "cli@1", "v2"), "bad alias")]:
        result = runner.invoke(main, ["dataset", *args])
        assert result.exit_code == 1 and expected in result.stderr, (args, result.output)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


# ---------------------------------------------------------------- the job cache


def job_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    own = ("SLURM_", "SLURMML_DATA", "SLURMML_SPOOL", "SLURMML_RUN")  # what each test sets for its job
    env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


def spool_inputs(paths) -> list[dict]:
    return [r for p in paths if p.exists() for r in map(json.loads, p.read_text().splitlines()) if r["k"] == "input"]


CALL = ("import slurmml, sys; path = slurmml.dataset(sys.argv[1]); print(path); "
        "import slurmml.tracking.client as c; c.current_writer().flush()")


def test_many_processes_on_one_node_download_a_version_once(s3_store, tmp_path: Path) -> None:
    import fcntl
    import time

    source = make_folder(tmp_path / "data", small=30)
    digest = datasets.add(s3_store, "shared", source, progress=False)["digest"]
    cache = tmp_path / "cache"
    lock = cache / "shared" / f"{m.bare(digest)}.lock"
    lock.parent.mkdir(parents=True)
    processes = []
    with open(lock, "a") as held:
        # hold the version's lock until all 16 wait on it, so that they all go for the download at once
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        for i in range(16):
            env = job_env(tmp_path, SLURMML_DATA_CACHE=str(cache), SLURMML_SPOOL=str(tmp_path / f"spool{i}.jsonl"),
                          SLURMML_RUN_ID=f"r{i}", SLURM_JOB_ID=str(100 + i))
            processes.append(subprocess.Popen([sys.executable, "-c", CALL, "shared@1"], env=env,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        inode = f":{lock.stat().st_ino} "
        deadline, waiting = time.monotonic() + 90, []
        while time.monotonic() < deadline and any(p.poll() is None for p in processes):
            waiting = [line for line in Path("/proc/locks").read_text().splitlines() if "->" in line and inode in line]
            if len(waiting) == 16:
                break
            time.sleep(0.1)
        assert len(waiting) == 16, "the processes did not wait on the version's lock"
    outputs = [p.communicate(timeout=120) for p in processes]
    assert all(p.returncode == 0 for p in processes), [err for _, err in outputs]
    paths = {out.strip() for out, _ in outputs}
    assert paths == {str(cache / "shared" / m.bare(digest))}
    assert tree(Path(paths.pop())) == tree(source)
    records = spool_inputs(tmp_path / f"spool{i}.jsonl" for i in range(16))
    assert len(records) == 16
    assert {(r["dataset"], r["version"], r["digest"]) for r in records} == {("shared", 1, digest)}
    assert sum(r["fetched"] for r in records) == 1
    assert sum("downloaded" in err for _, err in outputs) == 1
    assert sorted(p.name for p in (cache / "shared").iterdir()) == sorted(
        [m.bare(digest), f"{m.bare(digest)}.complete", f"{m.bare(digest)}.lock", "manifests"])


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 1 MB tmpfs (mounting needs root)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_in_the_cache_is_one_line_and_leaves_nothing(s3_store, tmp_path: Path, tiny_disk: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from slurmml.storage.data_cache import open_version

    # 200 files of 4.5 KB: 900 KB fit the free space, but each takes two 4 KB pages of the tmpfs
    folder = tmp_path / "pages"
    folder.mkdir()
    for i in range(200):
        (folder / f"{i:03d}").write_bytes(os.urandom(4600))
    datasets.add(s3_store, "pages", folder, progress=False)
    (tmp_path / "huge").mkdir()
    (tmp_path / "huge" / "x").write_bytes(os.urandom(2 * MiB))
    datasets.add(s3_store, "huge", tmp_path / "huge", progress=False)
    monkeypatch.setenv("SLURMML_DATA_CACHE", str(tiny_disk))
    for spec, said in (("pages@1", "no space left in"), ("huge@1", "no space in")):
        with pytest.raises(SlurmmlError) as error:
            open_version(spec)
        assert str(error.value).startswith(said) and "\n" not in str(error.value), str(error.value)
        name = spec.split("@")[0]
        assert [p.name for p in (tiny_disk / name).iterdir() if not p.name.endswith(".lock")] == []
    assert shutil.disk_usage(tiny_disk).used < 200 * 1024


def test_a_staged_version_is_used_by_a_job_that_cannot_reach_s3(s3_store, tmp_path: Path) -> None:
    source = tmp_path / "data"
    source.mkdir()
    (source / "a.txt").write_text("version one")
    datasets.add(s3_store, "offline", source, progress=False)
    home = tmp_path / "home"
    staged = stage(["offline@latest"], s3_store, progress=False, root=home / "data-cache")
    assert [(s.name, s.version) for s in staged] == [("offline", 1)]
    (source / "a.txt").write_text("version two")
    datasets.add(s3_store, "offline", source, progress=False)  # latest moves on after the sweep was staged

    from slurmml.devcluster.s3server import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    script = ("import slurmml, sys\nfor spec in sys.argv[1:]:\n"
              "    print(open(slurmml.dataset(spec) / 'a.txt').read())\n"
              "import slurmml.tracking.client as c; c.current_writer().flush(); print('boto3' in sys.modules)")
    base = dict(SLURMML_HOME=str(home), SLURMML_S3_ENDPOINT=closed, SLURM_JOB_ID="7", SLURMML_RUN_ID="r7")
    for extra in ({}, {"SLURMML_DATA_NODE_LOCAL": "1", "SLURM_TMPDIR": str(tmp_path / "node")}):
        spool = tmp_path / f"spool{len(extra)}.jsonl"
        env = job_env(tmp_path, **base, **extra, SLURMML_SPOOL=str(spool))
        done = subprocess.run([sys.executable, "-c", script, "offline", "offline@latest", "offline@v1"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        # the staged pin, not the newer v2, and no S3 client even made
        assert done.stdout.split("\n")[:4] == ["version one"] * 3 + ["False"]
        records = spool_inputs([spool])
        assert [(r["version"], r["fetched"]) for r in records] == [(1, False)] * 3
    assert (tmp_path / "node" / "slurmml-data" / "offline" / m.bare(staged[0].digest) / "a.txt").is_file()

    env = job_env(tmp_path, **base, SLURMML_SPOOL=str(tmp_path / "spool-x.jsonl"))
    done = subprocess.run([sys.executable, "-c", script, "offline@v2"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 and "does not answer" in done.stderr
    assert "slurmml dataset stage offline@v2" in done.stderr


def test_the_in_job_api_and_the_cli_import_neither_boto3_nor_rich() -> None:
    code = ("import sys, slurmml.tracking.datasets, slurmml.storage.data_cache, slurmml.storage.datasets, "
            "slurmml.cli.datasets; print(sorted({m.split('.')[0] for m in sys.modules} & {'boto3', 'rich'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"
