"""Dataset versions in the object store: add a folder, a file or an s3:// prefix as a new version; list, show,
diff, get (materialize into a folder), verify; aliases. What a manifest holds is slurmml.core.manifest's.

Adding a version: scan and hash the files, upload only the bytes the parent version does not hold (small files in
packs, big files as multipart blobs), then write the manifest with a conditional put. The manifest is the commit
point: until it is written nothing refers to the uploaded blobs, so a failure (or a file that changed while being
added) leaves no version behind, only content-addressed blobs a later add reuses.

Version numbers: the manifest goes to the next free number with If-None-Match; when another add took that number
first (412) it goes to the number after the highest then listed. Its `parent` stays the version it was diffed
against: the files list is complete in itself (every entry names its blob), so the manifest is right whatever
else was committed meanwhile, and re-basing onto the other add's version would claim a lineage that is not true.
`latest` is the highest number, as everywhere else.

Progress (`progress=`): True shows Rich bars on stderr when it is a terminal, "always" shows them anyway, False
shows nothing, and a callable gets (phase, done_bytes, total_bytes) calls instead, possibly from worker threads.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import hashlib
import json
import os
import shutil
import socket
import stat
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from pathlib import Path, PurePath
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from slurmml.core import manifest as m
from slurmml.core.tables import size_text
from slurmml.errors import SlurmmlError
from slurmml.storage.config import parse_url
from slurmml.storage.s3 import NotFound, ObjectStore, StorageError, describe, error_code

ProgressArg = Union[bool, str, Callable[[str, int, int], None], None]
HASH_WORKERS = 4
PACK_WORKERS = 4  # packs are built in memory: at most this many (about PACK_TARGET each) at once
FETCH_WORKERS = 6
CHUNK = 8 * 1024 * 1024
COMMIT_ATTEMPTS = 50


class ChangedWhileAdding(SlurmmlError):
    """A file's size, mtime or bytes differ from when it was hashed: the version would not be what was read."""


class DamagedData(StorageError):
    """Bytes read back from the store do not have the sha256 the manifest says."""


# ---------------------------------------------------------------- progress


class _Counter:
    """One bar (or the callback's phase): call it with a number of bytes done since the last call."""

    def __init__(self, owner: "Progress", phase: str, total: int, task: Any) -> None:
        self.owner, self.phase, self.total, self.task, self.done = owner, phase, total, task, 0
        self._lock = threading.Lock()

    def __call__(self, advanced: int) -> None:
        with self._lock:
            self.done += int(advanced)
            done = self.done
        if self.task is not None:
            self.owner.bars.update(self.task, completed=done)
        if self.owner.callback is not None:
            self.owner.callback(self.phase, done, self.total)


class Progress:
    def __init__(self, setting: ProgressArg) -> None:
        self.callback = setting if callable(setting) else None
        show = setting == "always" or (setting is True and sys.stderr.isatty())
        self.bars: Any = None
        if show:
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress as Bars, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            self.bars = Bars(TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(),
                             TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                             transient=False)

    def __enter__(self) -> "Progress":
        if self.bars is not None:
            self.bars.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bars is not None:
            self.bars.stop()

    def counter(self, phase: str, description: str, total: int) -> _Counter:
        task = self.bars.add_task(description, total=total) if self.bars is not None else None
        counter = _Counter(self, phase, total, task)
        if self.callback is not None:
            self.callback(phase, 0, total)
        return counter


# ---------------------------------------------------------------- small helpers


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers)
        return os.environ.get("USER") or str(os.getuid())


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _blobs(store: ObjectStore) -> Any:
    from slurmml.storage.blobs import BlobStore

    return BlobStore(store)


def _encode(document: Mapping[str, Any]) -> bytes:
    return (json.dumps(document, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def disk_error(error: OSError, folder: Path, doing: str) -> SlurmmlError:
    """The one line for a local filesystem problem while `doing` something in `folder`."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return SlurmmlError(f"no space left in {folder} while {doing}: nothing was kept (free space there, or set "
                            f"SLURMML_DATA_CACHE to a bigger disk)")
    return SlurmmlError(f"cannot write {error.filename or folder} while {doing}: {error.strerror or error}")


def _run_all(workers: int, jobs: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run `jobs` on a pool; the first failure cancels what has not started and is raised."""
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs)))) as pool:
        futures: list[Future] = [pool.submit(job) for job in jobs]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            if future.done() and future.exception() is not None:
                for other in futures:
                    other.cancel()
                raise future.exception()  # type: ignore[misc]
        return [future.result() for future in futures]


# ---------------------------------------------------------------- reading what the store holds


def dataset_keys(store: ObjectStore, name: Optional[str] = None) -> dict[str, dict[str, list[str]]]:
    """name -> {"versions": [...], "aliases": [...]} from one listing (of one dataset, or of all)."""
    found: dict[str, dict[str, list[str]]] = {}
    for info in store.list(f"datasets/{name}/" if name else "datasets/"):
        parsed = m.parse_dataset_key(info.key)
        if parsed:
            found.setdefault(parsed[0], {"versions": [], "aliases": []})[parsed[1]].append(parsed[2])
    return found


def list_versions(store: ObjectStore, name: str) -> list[int]:
    return sorted(int(v) for v in dataset_keys(store, name).get(name, {}).get("versions", []))


def read_alias(store: ObjectStore, name: str, alias: str) -> Optional[dict[str, Any]]:
    try:
        record = json.loads(store.get_bytes(m.alias_key(name, alias)))
    except NotFound:
        return None
    except ValueError:
        raise StorageError(f"alias {name}@{alias} in {store.config.where()} is not JSON") from None
    return record if isinstance(record, dict) and isinstance(record.get("version"), int) else None


def aliases(store: ObjectStore, name: str, names: Optional[Sequence[str]] = None) -> dict[str, int]:
    """alias -> version for one dataset (`latest` not included: it is computed)."""
    listed = dataset_keys(store, name).get(name, {}).get("aliases", []) if names is None else names
    found = {}
    for alias in listed:
        record = read_alias(store, name, alias)
        if record:
            found[alias] = record["version"]
    return found


def read_version(store: ObjectStore, name: str, version: int) -> dict[str, Any]:
    key = m.version_key(name, version)
    data = store.get_bytes(key)
    try:
        document = json.loads(data)
    except ValueError:
        raise StorageError(f"{name}@v{version} in {store.config.where()} is not JSON ({key})") from None
    return m.check_manifest(document, f"{name}@v{version} in {store.config.where()}")


def _explain_missing(store: ObjectStore, spec: m.Spec) -> SlurmmlError:
    keys = dataset_keys(store)
    if spec.name not in keys or not keys[spec.name]["versions"]:
        return m.unknown_dataset(spec.name, [n for n, k in keys.items() if k["versions"]], store.config.where())
    versions = sorted(int(v) for v in keys[spec.name]["versions"])
    try:
        m.choose_version(spec, versions, aliases(store, spec.name, keys[spec.name]["aliases"]))
    except SlurmmlError as error:
        return SlurmmlError(f"{error} (in {store.config.where()})")
    return SlurmmlError(f"{spec} vanished from {store.config.where()} while being read")


def resolve(store: ObjectStore, spec: Union[str, m.Spec]) -> dict[str, Any]:
    """The manifest `spec` names (NAME, NAME@v3, NAME@latest, NAME@ALIAS); one line listing what exists if none."""
    spec = m.parse_spec(spec) if isinstance(spec, str) else spec
    version = spec.version
    if version is None and spec.alias == m.LATEST:
        versions = list_versions(store, spec.name)
        version = max(versions) if versions else None
    elif version is None:
        record = read_alias(store, spec.name, spec.alias or "")
        version = record["version"] if record else None
    if version is None:
        raise _explain_missing(store, spec)
    try:
        return read_version(store, spec.name, version)
    except NotFound:
        raise _explain_missing(store, spec) from None


# ---------------------------------------------------------------- adding a version


def _scan(root: Path) -> list[tuple[str, Path, os.stat_result]]:
    """Every regular file under `root` (symlinks to files followed, to folders not), in path order."""
    if root.is_file():
        return [(root.name, root, root.stat())]
    found = []
    for folder, subfolders, names in os.walk(root, followlinks=False):
        subfolders.sort()
        for name in sorted(names):
            path = Path(folder) / name
            try:
                info = path.stat()
            except OSError:  # a dangling symlink: nothing to add
                continue
            if stat.S_ISREG(info.st_mode):
                relative = PurePath(os.path.relpath(path, root)).as_posix()
                found.append((m.check_path(relative), path, info))
    return sorted(found, key=lambda item: item[0])


def _hash(relative: str, path: Path, info: os.stat_result, counter: _Counter) -> str:
    from slurmml.storage.blobs import sha256_file

    digest, size = sha256_file(path, counter)
    if size != info.st_size:
        raise _changed(relative, f"it was {info.st_size} bytes when listed, {size} when hashed")
    return digest


def _changed(relative: str, how: str) -> ChangedWhileAdding:
    return ChangedWhileAdding(f"{relative} changed while being added ({how}): nothing was registered; add again "
                              f"once the files stop changing")


def _same_file(relative: str, scanned: m.ScannedFile, info: os.stat_result) -> None:
    if info.st_size != scanned.size:
        raise _changed(relative, f"its size went from {scanned.size} to {info.st_size} bytes")
    if info.st_mtime_ns != scanned.mtime_ns:
        raise _changed(relative, "its modification time changed")


def _pack_bytes(pack: Sequence[m.ScannedFile], paths: Mapping[str, Path], counter: _Counter) -> bytes:
    """A pack's bytes, each file re-read and checked against what was hashed."""
    data = bytearray()
    for scanned in pack:
        with open(paths[scanned.path], "rb") as handle:
            _same_file(scanned.path, scanned, os.fstat(handle.fileno()))
            content = handle.read(scanned.size + 1)
        if len(content) != scanned.size or hashlib.sha256(content).hexdigest() != scanned.sha256:
            raise _changed(scanned.path, "its bytes differ from the ones hashed")
        data += content
        counter(len(content))
    return bytes(data)


def add(store: ObjectStore, name: str, source: Union[str, os.PathLike], message: Optional[str] = None,
        progress: ProgressArg = True, *, pack_limit: int = m.PACK_LIMIT,
        pack_target: int = m.PACK_TARGET) -> dict[str, Any]:
    """Register the folder, file or s3:// prefix `source` as the next version of dataset `name`; the manifest as
    written. When the files are exactly the latest version's, nothing is written: that manifest comes back with
    "unchanged": True. `stats` in the manifest says how many bytes were new and how many were really uploaded."""
    m.check_name(name)
    text = os.fspath(source)
    if text.startswith("s3://"):
        return _commit(store, name, _reference_files(store, text), text, message, False,
                       {"new_files": 0, "new_bytes": 0, "uploaded_bytes": 0, "uploaded_objects": 0})
    root = Path(text).expanduser().absolute()
    if not root.exists():
        raise SlurmmlError(f"cannot add {root}: no such file or folder")
    try:
        found = _scan(root)
    except OSError as error:
        raise SlurmmlError(f"cannot read {error.filename or root}: {error.strerror or error}") from None
    if not found:
        raise SlurmmlError(f"cannot add {root}: it holds no files")
    single = root.is_file()
    paths = {relative: path for relative, path, _ in found}
    versions = list_versions(store, name)
    parent_doc = read_version(store, name, max(versions)) if versions else None
    parent_files = parent_doc["files"] if parent_doc and parent_doc.get("kind") == "stored" else []
    with Progress(progress) as bars:
        total = sum(info.st_size for _, _, info in found)
        hashing = bars.counter("hash", f"hashing {name}", total)
        try:
            digests = _run_all(HASH_WORKERS, [lambda item=item: _hash(*item, hashing) for item in found])
        except OSError as error:
            raise SlurmmlError(f"cannot read {error.filename}: {error.strerror or error}") from None
        scanned = [m.ScannedFile(relative, info.st_size, digest, info.st_mtime_ns)
                   for (relative, _, info), digest in zip(found, digests)]
        if parent_doc and {(f.path, f.size, f.sha256) for f in scanned} == \
                {(e["path"], e["size"], e.get("sha256")) for e in parent_doc["files"]}:
            return dict(parent_doc, unchanged=True)
        plan = m.plan_upload(scanned, parent_files, pack_limit, pack_target)
        placements = dict(plan.reused)
        uploading = bars.counter("upload", f"uploading {name}", plan.new_bytes)
        stats = {"new_files": plan.new_files, "new_bytes": plan.new_bytes, "uploaded_bytes": 0,
                 "uploaded_objects": 0}
        lock = threading.Lock()
        blobs = _blobs(store)

        def upload_pack(pack: Sequence[m.ScannedFile]) -> None:
            data = _pack_bytes(pack, paths, uploading)
            digest, uploaded = blobs.put_bytes(data)
            with lock:
                for scanned_file, offset in zip(pack, m.pack_offsets(pack)):
                    placements[scanned_file.sha256] = m.Placement(digest, offset, scanned_file.size)
                if uploaded:
                    stats["uploaded_bytes"] += len(data)
                    stats["uploaded_objects"] += 1

        def upload_single(scanned_file: m.ScannedFile) -> None:
            path = paths[scanned_file.path]
            _same_file(scanned_file.path, scanned_file, path.stat())
            try:  # with the digest given, the blob store hashes while it uploads and stores nothing on a mismatch
                digest, size, uploaded = blobs.put_file(path, digest=scanned_file.sha256, progress=uploading)
            except ChangedWhileAdding:
                raise
            except SlurmmlError:
                _same_file(scanned_file.path, scanned_file, path.stat())
                raise
            _same_file(scanned_file.path, scanned_file, path.stat())
            if digest != scanned_file.sha256 or size != scanned_file.size:
                raise _changed(scanned_file.path, "its bytes differ from the ones hashed")
            with lock:
                placements[scanned_file.sha256] = m.Placement(digest, 0, size)
                if uploaded:
                    stats["uploaded_bytes"] += size
                    stats["uploaded_objects"] += 1

        try:
            _run_all(PACK_WORKERS, [lambda p=pack: upload_pack(p) for pack in plan.packs])
            for scanned_file in plan.singles:  # one at a time: each is already uploaded in parallel parts
                upload_single(scanned_file)
        except FileNotFoundError as error:
            raise _changed(PurePath(os.path.relpath(error.filename or "?", root)).as_posix() if not single else
                           root.name, "it was deleted") from None
        except OSError as error:
            raise SlurmmlError(f"cannot read {error.filename}: {error.strerror or error}") from None
        files = m.stored_files(scanned, placements)
        return _commit(store, name, files, str(root), message, single, stats, parent=parent_doc)


def _commit(store: ObjectStore, name: str, files: list[dict[str, Any]], source: str, message: Optional[str],
            single: bool, stats: dict[str, int], parent: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Write the manifest at the next free version number (If-None-Match, so two adds never share one)."""
    if parent is None:
        versions = list_versions(store, name)
        parent = read_version(store, name, max(versions)) if versions else None
    digest = m.files_digest(files)
    if parent is not None and parent["digest"] == digest:
        return dict(parent, unchanged=True)
    parent_number = parent["version"] if parent else None
    number = (parent_number or 0) + 1
    user, host = _user(), socket.gethostname()
    for _ in range(COMMIT_ATTEMPTS):
        document = m.build_manifest(name, number, files, parent=parent_number, created=_now(), user=user, host=host,
                                    source=source, message=message, single_file=single, stats=stats)
        if store.put_bytes(m.version_key(name, number), _encode(document), if_absent=True):
            return document
        taken = list_versions(store, name)
        newest = max(taken + [number])
        winner = read_version(store, name, newest) if newest in taken else None
        if winner is not None and winner["digest"] == digest:
            return dict(winner, unchanged=True)  # an add of the same files won the race
        number = newest + 1
    raise StorageError(f"cannot add a version of {name} to {store.config.where()}: {COMMIT_ATTEMPTS} other adds "
                       f"took the next number first")


def _source_store(store: ObjectStore, bucket: str) -> ObjectStore:
    """The bucket of an s3:// source, reached with the store's endpoint, credentials and client."""
    return ObjectStore(replace(store.config, bucket=bucket, prefix=""), client=store.client)


def _reference_files(store: ObjectStore, url: str) -> list[dict[str, Any]]:
    """The objects under an s3:// prefix (or the one object it names), with their ETags and version ids."""
    bucket, prefix = parse_url(url)
    source = _source_store(store, bucket)
    client = source.client
    objects: list[dict[str, Any]] = []
    single = source.head(prefix) if prefix and not url.endswith("/") else None
    if single is not None:
        return m.reference_files([{"path": PurePath(prefix).name, "size": single.size, "etag": single.etag,
                                   "version_id": single.version_id, "key": prefix, "bucket": bucket}])
    base = f"{prefix}/" if prefix else ""
    versioned = False
    with contextlib.suppress(StorageError), source.errors(f"read the versioning of s3://{bucket}"):
        versioned = client.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"
    with source.errors(f"list {url}"):
        if versioned:
            pages = client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=base)
            items = [item for page in pages for item in page.get("Versions") or () if item.get("IsLatest")]
        else:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base)
            items = [item for page in pages for item in page.get("Contents") or ()]
    for item in items:
        key = item["Key"]
        if key.endswith("/"):  # a console's "folder" marker
            continue
        objects.append({"path": m.check_path(key[len(base):]), "size": int(item["Size"]),
                        "etag": str(item.get("ETag") or "").strip('"'),
                        "version_id": item.get("VersionId") if versioned else None, "key": key, "bucket": bucket})
    if not objects:
        raise SlurmmlError(f"cannot add {url}: no objects there")
    return m.reference_files(objects)


# ---------------------------------------------------------------- aliases, listings, diffs


def alias(store: ObjectStore, spec: str, alias_name: str) -> dict[str, Any]:
    """Point `alias_name` at the version `spec` names (overwriting where it pointed); the alias record."""
    m.check_alias(alias_name)
    document = resolve(store, spec)
    record = {"alias": alias_name, "version": document["version"], "digest": document["digest"], "set": _now(),
              "user": _user()}
    store.put_bytes(m.alias_key(document["name"], alias_name), _encode(record))
    return {"name": document["name"], **record}


def list_datasets(store: ObjectStore) -> list[dict[str, Any]]:
    """One row per dataset: its latest version, how many, its files and bytes, when it was made, its aliases."""
    rows = []
    for name, keys in sorted(dataset_keys(store).items()):
        versions = sorted(int(v) for v in keys["versions"])
        if not versions:
            continue
        latest = read_version(store, name, max(versions))
        pointing = aliases(store, name, keys["aliases"])
        rows.append({"name": name, "latest": f"v{latest['version']}", "versions": len(versions),
                     "files": latest["file_count"], "bytes": latest["bytes"], "size": size_text(latest["bytes"]),
                     "kind": latest["kind"], "created": latest["created"], "user": latest["user"],
                     "aliases": " ".join(f"{a}=v{v}" for a, v in sorted(pointing.items())),
                     "digest": latest["digest"]})
    return rows


def show(store: ObjectStore, spec: str) -> dict[str, Any]:
    """The manifest `spec` names, with the aliases that point at it (`latest` included when it is the highest)."""
    document = resolve(store, spec)
    keys = dataset_keys(store, document["name"]).get(document["name"], {"versions": [], "aliases": []})
    pointing = sorted(a for a, v in aliases(store, document["name"], keys["aliases"]).items()
                      if v == document["version"])
    if document["version"] == max(int(v) for v in keys["versions"]):
        pointing.insert(0, m.LATEST)
    return dict(document, aliases=pointing, store=store.config.url)


def diff(store: ObjectStore, a: str, b: str) -> dict[str, Any]:
    """What changed from version A to version B (B may be `@v2`: the same dataset as A)."""
    first = resolve(store, a)
    second = resolve(store, f"{first['name']}{b}" if b.startswith("@") else b)
    return {"a": f"{first['name']}@v{first['version']}", "b": f"{second['name']}@v{second['version']}",
            **m.diff(first["files"], second["files"])}


# ---------------------------------------------------------------- downloading


def entry_path(document: Mapping[str, Any], folder: Path) -> Path:
    """What a materialized version is used as: its folder, or its one file for a dataset added from a file."""
    if document.get("single_file") and len(document["files"]) == 1:
        return folder / document["files"][0]["path"]
    return folder


def _write(folder: Path, relative: str, data: Union[bytes, memoryview]) -> None:
    path = folder / m.check_path(relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def _cut(fetch: m.Fetch, data: bytes, where: str) -> list[tuple[str, memoryview]]:
    """The files of a fetch, cut out of its bytes and each checked against its sha256."""
    view = memoryview(data)
    pieces = []
    for entry in fetch.files:
        start = int(entry["offset"]) - fetch.start
        piece = view[start:start + int(entry["length"])]
        if len(piece) != int(entry["length"]) or hashlib.sha256(piece).hexdigest() != entry["sha256"]:
            raise DamagedData(f"{entry['path']} of {where} is damaged in the store: its bytes in blob "
                              f"{entry['blob']} do not have its sha256")
        pieces.append((entry["path"], piece))
    return pieces


def download(store: ObjectStore, document: Mapping[str, Any], folder: Path, progress: ProgressArg = False) -> int:
    """Write every file of a version into `folder` (which exists), each checked; the bytes fetched."""
    where = f"{document['name']}@v{document['version']} in {store.config.where()}"
    folder.mkdir(parents=True, exist_ok=True)
    files = document["files"]
    with Progress(progress) as bars:
        if document.get("kind") == "reference":
            counter = bars.counter("download", f"{document['name']}@v{document['version']}", document["bytes"])
            label = f"{document['name']}@v{document['version']}"
            _run_all(FETCH_WORKERS, [lambda e=entry: _fetch_object(store, e, folder, counter, label)
                                     for entry in files])
            return document["bytes"]
        plan = m.plan_download(files, document.get("blobs") or {})
        counter = bars.counter("download", f"{document['name']}@v{document['version']}", sum(f.size for f in plan))
        blobs = _blobs(store)

        def fetch(item: m.Fetch) -> None:
            if item.stream:
                entry = item.files[0]
                path = folder / m.check_path(entry["path"])
                path.parent.mkdir(parents=True, exist_ok=True)
                blobs.get_file(item.blob, path, size=item.size, progress=counter)
                return
            if item.whole:
                data = blobs.get_bytes(item.blob)
            else:
                data = blobs.get_bytes(item.blob, byte_range=(item.start, item.end))
            try:
                pieces = _cut(item, data, where)
            except DamagedData:  # a range is not checked as a whole: read it once more before giving up
                data = blobs.get_bytes(item.blob, byte_range=(item.start, item.end))
                pieces = _cut(item, data, where)
            for relative, piece in pieces:
                _write(folder, relative, piece)
            counter(item.size)

        _run_all(FETCH_WORKERS, [lambda f=item: fetch(f) for item in plan])
        for entry in files:
            if not int(entry["length"]):
                _write(folder, entry["path"], b"")
        for first, others in m.copies(files).items():
            for other in others:
                (folder / m.check_path(other)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / first, folder / other)
        return sum(item.size for item in plan)


def _fetch_object(store: ObjectStore, entry: Mapping[str, Any], folder: Path, counter: _Counter, label: str) -> None:
    """One referenced object into its file, refused if it is no longer the object that was added."""
    source = _source_store(store, entry["bucket"])
    arguments = {"Bucket": entry["bucket"], "Key": entry["key"]}
    if entry.get("version_id"):
        arguments["VersionId"] = entry["version_id"]
    path = folder / m.check_path(entry["path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with source.errors(f"read s3://{entry['bucket']}/{entry['key']} for {label}"):
        response = source.client.get_object(**arguments)
        etag = str(response.get("ETag") or "").strip('"')
        if etag != entry["etag"] or int(response.get("ContentLength") or 0) != int(entry["size"]):
            response["Body"].close()
            raise DamagedData(f"s3://{entry['bucket']}/{entry['key']} changed since {label} was added (ETag {etag}, "
                              f"was {entry['etag']}): add a new version of the dataset")
        with open(path, "wb") as handle:
            for block in response["Body"].iter_chunks(1024 * 1024):
                handle.write(block)
                counter(len(block))


def _check_destination(dest: Path) -> None:
    if dest.is_file():
        raise SlurmmlError(f"{dest} is a file: name a folder to get the dataset into")
    if dest.is_dir() and any(dest.iterdir()):
        raise SlurmmlError(f"{dest} is not empty: name a new or empty folder")


def check_space(folder: Path, needed: int, doing: str) -> None:
    """One line before a download that cannot fit (the download itself still handles a disk that fills up)."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise SlurmmlError(f"no space in {folder} for {doing}: it needs {size_text(needed)}, "
                           f"{size_text(free)} are free")


def get(store: ObjectStore, spec: str, dest: Optional[Union[str, os.PathLike]] = None,
        progress: ProgressArg = True) -> tuple[dict[str, Any], Path]:
    """Materialize the version `spec` names into `dest` (a new or empty folder; default ./NAME): its manifest and
    the path to use (the folder, or the file of a single-file dataset). Built beside `dest` and renamed into
    place, so `dest` never holds half a version."""
    document = resolve(store, spec)
    folder = Path(dest if dest is not None else document["name"]).expanduser().absolute()
    _check_destination(folder)
    label = f"{document['name']}@v{document['version']}"
    check_space(folder.parent, document["bytes"], f"{label} ({size_text(document['bytes'])})")
    partial = folder.parent / f".{folder.name}.partial-{os.getpid()}"
    try:
        partial.mkdir(parents=True)
        download(store, document, partial, progress)
        if folder.is_dir():
            folder.rmdir()  # empty, checked above
        os.rename(partial, folder)
    except OSError as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise disk_error(error, folder, f"getting {label}") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return document, entry_path(document, folder)


# ---------------------------------------------------------------- verifying


def verify(store: ObjectStore, spec: str, progress: ProgressArg = True) -> dict[str, Any]:
    """Read back every file of a version and check it: the sha256 of each stored file (and the digest of each blob
    read whole), or the size and ETag of each referenced object. {"ok", "problems": [one line each], ...}."""
    from slurmml.storage.blobs import blob_key

    document = resolve(store, spec)
    label = f"{document['name']}@v{document['version']}"
    problems: list[str] = []
    lock = threading.Lock()

    def problem(text: str) -> None:
        with lock:
            problems.append(text)

    with Progress(progress) as bars:
        if document["kind"] == "reference":
            counter = bars.counter("verify", f"checking {label}", len(document["files"]))
            _run_all(FETCH_WORKERS, [lambda e=entry: _verify_object(store, e, problem, counter)
                                     for entry in document["files"]])
        else:
            plan = m.plan_download(document["files"], document.get("blobs") or {})
            counter = bars.counter("verify", f"verifying {label}", sum(f.size for f in plan))

            def check(item: m.Fetch) -> None:
                key = blob_key(item.blob)
                names = ", ".join(e["path"] for e in item.files[:5]) + (" ..." if len(item.files) > 5 else "")
                try:
                    if item.stream:
                        digest = hashlib.sha256()
                        for start in range(0, item.size, CHUNK):
                            block = store.get_bytes(key, byte_range=(start, min(item.size, start + CHUNK)))
                            digest.update(block)
                            counter(len(block))
                        if digest.hexdigest() != item.files[0]["sha256"]:
                            problem(f"{item.files[0]['path']}: damaged (blob {item.blob} does not have its sha256)")
                        return
                    data = store.get_bytes(key, None if item.whole else (item.start, item.end))
                except NotFound:
                    problem(f"blob {item.blob} is missing from the store (files: {names})")
                    return
                counter(item.size)
                if item.whole and hashlib.sha256(data).hexdigest() != m.bare(item.blob):
                    problem(f"blob {item.blob} is damaged: its bytes do not have its digest")
                for entry in item.files:
                    start = int(entry["offset"]) - item.start
                    piece = memoryview(data)[start:start + int(entry["length"])]
                    if len(piece) != int(entry["length"]) or hashlib.sha256(piece).hexdigest() != entry["sha256"]:
                        problem(f"{entry['path']}: damaged (in blob {item.blob} at {entry['offset']})")

            _run_all(FETCH_WORKERS, [lambda f=item: check(f) for item in plan])
    return {"name": document["name"], "version": document["version"], "digest": document["digest"],
            "files": document["file_count"], "bytes": document["bytes"], "ok": not problems,
            "problems": sorted(problems), "store": store.config.url}


def _verify_object(store: ObjectStore, entry: Mapping[str, Any], problem: Callable[[str], None],
                   counter: _Counter) -> None:
    source = _source_store(store, entry["bucket"])
    url = f"s3://{entry['bucket']}/{entry['key']}"
    arguments = {"Bucket": entry["bucket"], "Key": entry["key"]}
    if entry.get("version_id"):
        arguments["VersionId"] = entry["version_id"]
    import botocore.exceptions as bce

    try:
        answer = source.client.head_object(**arguments)
    except bce.ClientError as error:
        if error_code(error) in ("404", "NoSuchKey", "NotFound", "NoSuchVersion"):
            problem(f"{entry['path']}: {url} is gone")
            return
        raise describe(error, source.config, f"look up {url}") from None
    except bce.BotoCoreError as error:
        raise describe(error, source.config, f"look up {url}") from None
    finally:
        counter(1)
    etag = str(answer.get("ETag") or "").strip('"')
    size = int(answer.get("ContentLength") or 0)
    if size != int(entry["size"]) or etag != entry["etag"]:
        problem(f"{entry['path']}: {url} changed (size {size}, ETag {etag}; was {entry['size']}, {entry['etag']})")

