"""Datasets on S3: slurmml's dataset versions against DVC and a bare boto3 upload, on one S3 server.

One moto S3 server (auth on) on 127.0.0.1 is started for the run; each side gets its own prefix of one bucket.
The data is written to a temporary folder on local disk: --small-files files of --small-kb KB (random bytes, in
--folders folders) and one file of --big-mb MB.
  (a) small files, v1: DVC `dvc add` + `dvc push` (CLI subprocesses, each timed) against
      slurmml.storage.datasets.add() in this process (scan, sha256, packs, manifest, upload).
  (b) small files, v2: --changed of the files rewritten with new bytes, then the same again. Bytes uploaded
      are counted by listing the new objects on the server; slurmml's must be the changed bytes (plus its
      manifest, counted apart).
  (c) the big file: DVC add + push, slurmml add() of the file, and boto3's TransferManager
      (client.upload_file, 16 MiB parts, 10 threads), which neither hashes nor writes a manifest.
Goals: (a) and (b) >= 3x faster than DVC, (c) within 1.1x of boto3, v2 bytes uploaded / changed bytes ~1.0.

`.venv/bin/python benchmarks/bench_data.py [--big-mb 1024]`; the last line prints the ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "bench"
DVC_PREFIX = "dvc"
SLURMML_PREFIX = "slurmml"
BOTO3_PREFIX = "boto3"
BLOCK = 16 * 2**20  # the big file is written in blocks of this size
MiB = 2**20
PART_SIZE = 16 * MiB  # boto3's TransferConfig: the same part size as slurmml's blobs
BOTO3_THREADS = 10


class BenchError(Exception):
    """A measurement went wrong: reported as one line, exit status 1."""


def note(text: str) -> None:
    print(f"{dt.datetime.now():%H:%M:%S} {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------- the data


def write_small(folder: Path, count: int, size: int, folders: int) -> list[Path]:
    paths = []
    for i in range(count):
        path = folder / f"d{i % folders:03d}" / f"f{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        paths.append(path)
    return paths


def write_big(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        left = size
        while left:
            block = min(BLOCK, left)
            handle.write(os.urandom(block))
            left -= block


def rewrite(paths: list[Path], changed: int, size: int, seed: int = 1) -> int:
    """New random bytes in `changed` of the files, spread over the folders: the bytes that changed."""
    for path in random.Random(seed).sample(paths, changed):
        path.write_bytes(os.urandom(size))
    return changed * size


# ------------------------------------------------------------------------- the server


@dataclass
class Listing:
    objects: dict[str, int] = field(default_factory=dict)  # key -> size

    def new_since(self, before: "Listing") -> dict[str, int]:
        return {key: size for key, size in self.objects.items() if key not in before.objects}


def s3_client(server: Any) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key)


def listing(client: Any, prefix: str) -> Listing:
    found = Listing()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        for item in page.get("Contents") or ():
            found.objects[item["Key"]] = int(item["Size"])
    return found


def delete_big(client: Any, prefix: str, at_least: int) -> None:
    """Free the server's memory (moto keeps objects in RAM) of the big objects under `prefix`."""
    for key, size in listing(client, prefix).objects.items():
        if size >= at_least:
            client.delete_object(Bucket=BUCKET, Key=key)


# ------------------------------------------------------------------------- DVC


@dataclass
class DvcStep:
    add_s: float
    push_s: float
    new_objects: int
    new_bytes: int
    dir_bytes: int  # DVC's own listing of a folder's files (its `.dir` object), part of new_bytes

    @property
    def total_s(self) -> float:
        return self.add_s + self.push_s


class Dvc:
    """The DVC CLI in a git repository of its own, pushing to s3://bench/dvc on the benchmark's server."""

    def __init__(self, repo: Path, server: Any, site_cache: Path) -> None:
        self.repo = repo
        self.env = dict(os.environ, **server.environment(BUCKET), DVC_NO_ANALYTICS="1", GIT_TERMINAL_PROMPT="0")
        self.env.pop("SLURMML_STORAGE", None)
        self.executable = str(Path(sys.executable).with_name("dvc"))
        if not Path(self.executable).exists():
            self.executable = shutil.which("dvc") or "dvc"
        self._run(["git", "init", "-q"])
        self.dvc("init", "-q")
        self.dvc("config", "core.analytics", "false")
        self.dvc("config", "core.site_cache_dir", str(site_cache))  # not /var/tmp/dvc
        self.dvc("remote", "add", "-d", "bench", f"s3://{BUCKET}/{DVC_PREFIX}")
        self.dvc("remote", "modify", "bench", "endpointurl", server.endpoint)

    def _run(self, argv: list[str]) -> float:
        began = time.perf_counter()
        done = subprocess.run(argv, cwd=self.repo, env=self.env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True)
        spent = time.perf_counter() - began
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
            raise BenchError(f"`{' '.join(argv[:3])}` failed with status {done.returncode}: {last}")
        return spent

    def dvc(self, *argv: str) -> float:
        return self._run([self.executable, *argv])

    def add_push(self, target: str, client: Any) -> DvcStep:
        before = listing(client, DVC_PREFIX)
        add_s = self.dvc("add", "-q", target)
        push_s = self.dvc("push", "-q")
        new = listing(client, DVC_PREFIX).new_since(before)
        if not new:
            raise BenchError(f"`dvc push` of {target} put no objects under s3://{BUCKET}/{DVC_PREFIX}/ on the server")
        dir_bytes = sum(size for key, size in new.items() if key.endswith(".dir"))
        return DvcStep(add_s, push_s, len(new), sum(new.values()), dir_bytes)


# ------------------------------------------------------------------------- slurmml and boto3


@dataclass
class SlurmmlStep:
    seconds: float
    new_objects: int
    blob_bytes: int  # bytes of new blobs (file contents)
    meta_bytes: int  # bytes of new manifests and other records
    reported: Any  # what add() returned


def slurmml_add(store: Any, client: Any, name: str, path: Path) -> SlurmmlStep:
    from slurmml.storage import datasets

    before = listing(client, SLURMML_PREFIX)
    began = time.perf_counter()
    reported = datasets.add(store, name, path, progress=False)
    spent = time.perf_counter() - began
    new = listing(client, SLURMML_PREFIX).new_since(before)
    blobs = {key: size for key, size in new.items() if key.startswith(f"{SLURMML_PREFIX}/blobs/")}
    return SlurmmlStep(spent, len(new), sum(blobs.values()), sum(new.values()) - sum(blobs.values()), reported)


def boto3_upload(client: Any, path: Path) -> float:
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE,
                            max_concurrency=BOTO3_THREADS, use_threads=True)
    key = f"{BOTO3_PREFIX}/{path.name}"
    began = time.perf_counter()
    client.upload_file(str(path), BUCKET, key, Config=config)
    spent = time.perf_counter() - began
    size = client.head_object(Bucket=BUCKET, Key=key)["ContentLength"]
    if size != path.stat().st_size:
        raise BenchError(f"boto3 stored {size} bytes of {path.stat().st_size}")
    return spent


# ------------------------------------------------------------------------- the report


def reported_bytes(reported: Any) -> Optional[int]:
    """The bytes add() says it uploaded, if its answer names them."""
    for holder in (reported, getattr(reported, "manifest", None), getattr(reported, "stats", None)):
        if holder is None:
            continue
        stats = holder.get("stats") if isinstance(holder, dict) else getattr(holder, "stats", None)
        for source in (stats, holder):
            for name in ("uploaded_bytes", "bytes_uploaded", "new_bytes"):
                value = source.get(name) if isinstance(source, dict) else getattr(source, name, None)
                if isinstance(value, int):
                    return value
    return None


def rate(size: int, seconds: float) -> str:
    return f"{size / 1e6 / seconds:,.1f} MB/s" if seconds > 0 else "-"


def row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths)))


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [row(rows[0], widths), "  ".join("-" * w for w in widths)]
    return "\n".join(lines + [row(r, widths) for r in rows[1:]])


def ratio(a: Optional[float], b: Optional[float], digits: int = 1) -> str:
    return f"{a / b:.{digits}f}x" if a is not None and b else "n/a"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ------------------------------------------------------------------------- main


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small-files", type=int, default=10_000, help="small files (default 10000)")
    parser.add_argument("--small-kb", type=int, default=4, help="size of each small file in KiB (default 4)")
    parser.add_argument("--folders", type=int, default=100, help="folders the small files are in (default 100)")
    parser.add_argument("--changed", type=float, default=1.0, help="percent of small files changed in v2 (default 1)")
    parser.add_argument("--big-mb", type=int, default=1024, help="size of the big file in MiB (default 1024)")
    parser.add_argument("--parts", default="dvc,slurmml,boto3", help="which sides to run (default all three)")
    parser.add_argument("--tmp", type=Path, default=None, help="where to make the temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (the data too)")
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - {"dvc", "slurmml", "boto3"}:
        parser.error("--parts: a comma-separated choice of dvc, slurmml, boto3")
    if min(args.small_files, args.small_kb, args.folders, args.big_mb) < 1 or not 0 < args.changed <= 100:
        parser.error("sizes and counts must be at least 1, --changed in (0, 100]")
    if "dvc" in parts and not (Path(sys.executable).with_name("dvc").exists() or shutil.which("dvc")):
        print(f"bench_data: DVC is not installed beside {sys.executable}: pip install -e '.[bench]' "
              "(dvc==3.67.1, dvc-s3==3.3.0), or run with --parts slurmml,boto3", file=sys.stderr)
        return 2
    import importlib.util

    if "slurmml" in parts and importlib.util.find_spec("slurmml.storage.datasets") is None:
        print("bench_data: slurmml.storage.datasets is missing from this tree: run with --parts dvc,boto3",
              file=sys.stderr)
        return 2

    small_size = args.small_kb * 1024
    big_size = args.big_mb * MiB
    changed = max(1, round(args.small_files * args.changed / 100))
    tmp_parent = Path(args.tmp or tempfile.gettempdir())
    # the data, DVC's cache copy of it, and the server's log
    need = 2 * (args.small_files * small_size + big_size) + 100 * MiB
    free = shutil.disk_usage(tmp_parent).free
    if free < 1.3 * need:
        print(f"bench_data: {tmp_parent} has {free / 1e9:.1f} GB free; this run needs about {need / 1e9:.1f} GB "
              "(use --tmp, or a smaller --big-mb)", file=sys.stderr)
        return 2

    from slurmml.devcluster import s3server
    from slurmml.errors import SlurmmlError

    tmp = Path(tempfile.mkdtemp(prefix="slurmml-bench-data-", dir=tmp_parent))
    os.environ["SLURMML_HOME"] = str(tmp / "home")  # upload state and caches stay in the temporary folder
    server = None
    results: dict[str, Any] = {}
    load_before = load()
    try:
        server = s3server.start(s3server.free_port(), tmp / "s3.log", buckets=(BUCKET,))
        os.environ.update(server.environment(BUCKET, SLURMML_PREFIX))
        client = s3_client(server)
        repo = tmp / "repo"
        repo.mkdir()
        note(f"writing {args.small_files:,} files of {args.small_kb} KiB and one of {args.big_mb} MiB in {tmp}")
        began = time.perf_counter()
        small = write_small(repo / "small", args.small_files, small_size, args.folders)
        big = repo / "big" / "big.bin"
        write_big(big, big_size)
        note(f"data written in {time.perf_counter() - began:.1f} s; S3 server at {server.endpoint}")

        dvc = store = None
        if "dvc" in parts:
            dvc = Dvc(repo, server, tmp / "dvc-site")
            results["dvc_start_s"] = dvc.dvc("--version")
        if "slurmml" in parts:
            from slurmml.storage.s3 import open_store

            store = open_store()

        if dvc:
            note("(a) DVC: add + push of v1")
            results["dvc_v1"] = dvc.add_push("small", client)
        if store:
            note("(a) slurmml: add() of v1")
            results["sm_v1"] = slurmml_add(store, client, "small", repo / "small")

        changed_bytes = rewrite(small, changed, small_size)
        if dvc:
            note(f"(b) DVC: add + push of v2 ({changed} files changed)")
            results["dvc_v2"] = dvc.add_push("small", client)
        if store:
            note(f"(b) slurmml: add() of v2 ({changed} files changed)")
            results["sm_v2"] = slurmml_add(store, client, "small", repo / "small")

        if dvc:
            note(f"(c) DVC: add + push of the {args.big_mb} MiB file")
            results["dvc_big"] = dvc.add_push("big/big.bin", client)
            delete_big(client, DVC_PREFIX, big_size)
        if store:
            note(f"(c) slurmml: add() of the {args.big_mb} MiB file")
            results["sm_big"] = slurmml_add(store, client, "big", big)
            if results["sm_big"].blob_bytes < big_size:
                raise BenchError(f"slurmml stored {results['sm_big'].blob_bytes} new blob bytes for a file of {big_size}")
            delete_big(client, SLURMML_PREFIX, big_size)
        if "boto3" in parts:
            note(f"(c) boto3: upload_file of the {args.big_mb} MiB file")
            results["boto3_big"] = boto3_upload(client, big)
            delete_big(client, BOTO3_PREFIX, big_size)
    except (BenchError, SlurmmlError) as error:
        print(f"bench_data: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_data: interrupted", file=sys.stderr)
        return 130
    finally:
        if server is not None:
            s3server.stop(server.pid)
        if args.keep:
            note(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return report(args, results, changed, changed_bytes, small_size, big_size, load_before)


def report(args: argparse.Namespace, r: dict[str, Any], changed: int, changed_bytes: int, small_size: int,
           big_size: int, load_before: str) -> int:
    small_bytes = args.small_files * small_size
    dvc_v1, dvc_v2, dvc_big = r.get("dvc_v1"), r.get("dvc_v2"), r.get("dvc_big")
    sm_v1, sm_v2, sm_big = r.get("sm_v1"), r.get("sm_v2"), r.get("sm_big")
    boto3_s = r.get("boto3_big")

    def dvc_cells(step: Optional[DvcStep], size: int) -> list[str]:
        if step is None:
            return ["-"]
        return [f"{step.total_s:.2f} s ({step.add_s:.2f} + {step.push_s:.2f}), {rate(size, step.total_s)}"]

    def sm_cells(step: Optional[SlurmmlStep], size: int) -> list[str]:
        return [f"{step.seconds:.2f} s, {rate(size, step.seconds)}" if step else "-"]

    label_small = f"{args.small_files:,} x {args.small_kb} KiB"
    rows = [["measure", "dvc (add + push)", "slurmml add()", "boto3 upload_file"],
            [f"(a) v1, {label_small} ({small_bytes / 1e6:.1f} MB)", *dvc_cells(dvc_v1, small_bytes),
             *sm_cells(sm_v1, small_bytes), "n/a"],
            [f"(b) v2, {changed} files changed", *dvc_cells(dvc_v2, small_bytes), *sm_cells(sm_v2, small_bytes), "n/a"],
            [f"(c) one file of {args.big_mb} MiB", *dvc_cells(dvc_big, big_size), *sm_cells(sm_big, big_size),
             f"{boto3_s:.2f} s, {rate(big_size, boto3_s)}" if boto3_s else "-"]]
    for label, dstep, sstep in (("v1", dvc_v1, sm_v1), ("v2", dvc_v2, sm_v2), ("big", dvc_big, sm_big)):
        rows.append([f"new objects on the server, {label}", str(dstep.new_objects) if dstep else "-",
                     str(sstep.new_objects) if sstep else "-", "1" if label == "big" and boto3_s else "n/a"])
    rows.append([f"(b) bytes uploaded for v2 (changed: {changed_bytes:,})",
                 f"{dvc_v2.new_bytes - dvc_v2.dir_bytes:,} + {dvc_v2.dir_bytes:,} .dir" if dvc_v2 else "-",
                 f"{sm_v2.blob_bytes:,} + {sm_v2.meta_bytes:,} manifest" if sm_v2 else "-", "n/a"])
    said = reported_bytes(sm_v2.reported) if sm_v2 else None
    if said is not None:
        rows.append(["(b) bytes add() reports it uploaded for v2", "n/a", f"{said:,}", "n/a"])
    if "dvc_start_s" in r:
        rows.append(["start of the dvc CLI (`dvc --version`)", f"{r['dvc_start_s']:.2f} s", "n/a", "n/a"])
    print()
    print(f"load average before: {load_before}, after: {load()}; {os.cpu_count()} cores")
    print(table(rows))
    print()

    v2_ratio = sm_v2.blob_bytes / changed_bytes if sm_v2 else None
    failed = None
    if v2_ratio is not None and not 0.99 <= v2_ratio <= 1.1:
        failed = (f"slurmml uploaded {sm_v2.blob_bytes:,} blob bytes for v2, where {changed_bytes:,} bytes changed "
                  f"({v2_ratio:.2f}x)")
    v1 = ratio(dvc_v1.total_s if dvc_v1 else None, sm_v1.seconds if sm_v1 else None)
    v2 = ratio(dvc_v2.total_s if dvc_v2 else None, sm_v2.seconds if sm_v2 else None)
    big = ratio(sm_big.seconds if sm_big else None, boto3_s, 2)
    big_dvc = ratio(dvc_big.total_s if dvc_big else None, sm_big.seconds if sm_big else None)
    print(f"ratios: small_v1 dvc/slurmml={v1} (goal >= 3x)  small_v2 dvc/slurmml={v2} (goal >= 3x)  "
          f"big slurmml/boto3={big} (goal <= 1.1x)  big dvc/slurmml={big_dvc}  "
          f"v2_bytes uploaded/changed={f'{v2_ratio:.2f}x' if v2_ratio is not None else 'n/a'} (goal ~1.0x)")
    if failed:
        print(f"bench_data: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
