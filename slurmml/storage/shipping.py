"""Runs shipped through the object store: a local spool pushed as write-once chunks, the run's record
(run.json: where it ran and what code, with a snapshot of that code), and reading both back.

Layout (slurmml.storage): runs/<run id>/run.json and runs/<run id>/spool/<offset, 16 digits>.jsonl.
A chunk is the spool's bytes from its offset up to a newline, so chunks are contiguous and every chunk is whole
lines. Each is written with a conditional put and carries the sha256 and length of its body as metadata: a retried
upload of the same offset finds the object there and checks that it holds the same bytes, and the reader checks
the body itself (some servers accept corrupt bodies). The pusher's progress is a small file next to the spool
(spool.shipped), so a process that dies, or a machine that was offline, ships the rest later from where it was.

run.json is written once, before the first chunk. Its code snapshot is a deterministic tar.gz of the tracked files
of the run's git repository as they were in the working tree (or of the script's folder outside git), stored as a
content-addressed blob, so the same code is stored once however many runs used it; `fetch_code` unpacks it.
"""

from __future__ import annotations

import getpass
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

from slurmml.errors import SlurmmlError
from slurmml.storage.s3 import ObjectInfo, ObjectStore

RUNS = "runs"
META_FILE = "run.json"          # the run's record, in S3 and next to the local spool
CODE_FILE = "code.tar.gz"       # the code snapshot, kept next to the spool until it is uploaded
SHIPPED_FILE = "spool.shipped"  # how far the local spool is shipped
META_FORMAT = 1
CHUNK_BYTES = 8 * 1024 * 1024   # one object per this much spool: a reader holds one chunk in memory at a time
OFFSET_DIGITS = 16
MAX_FILE_BYTES = 10_000_000     # a bigger file is data or a checkpoint, not code: skipped (and named in the note)
MAX_SNAPSHOT_BYTES = 100_000_000
MAX_FOLDER_FILES = 5_000        # outside git the folder is walked: bounded, in case it is a home directory
MAX_DIFF_BYTES = 1_000_000
MAX_NOTED = 50                  # skipped files named in run.json
GIT_TIMEOUT_S = 30
PathLike = Union[str, os.PathLike]


class ShipConflict(SlurmmlError):
    """S3 holds other bytes at a chunk's offset than the local spool: the spool was rewritten after shipping."""


class CorruptChunk(SlurmmlError):
    """A chunk's body does not match the sha256 and length it was written with."""


# ---------------------------------------------------------------- keys (pure)


def run_prefix(run_id: str) -> str:
    return f"{RUNS}/{run_id}/"


def meta_key(run_id: str) -> str:
    return f"{RUNS}/{run_id}/{META_FILE}"


def chunk_key(run_id: str, offset: int) -> str:
    return f"{RUNS}/{run_id}/spool/{offset:0{OFFSET_DIGITS}d}.jsonl"


def chunk_offset(key: str) -> Optional[int]:
    """The byte offset a chunk's key names (None for any other key)."""
    name = key.rpartition("/")[2]
    digits = name[:-len(".jsonl")] if name.endswith(".jsonl") else ""
    return int(digits) if len(digits) == OFFSET_DIGITS and digits.isdigit() else None


def whole_lines(data: bytes) -> int:
    """How many bytes of `data` are whole lines (up to and with its last newline)."""
    return data.rfind(b"\n") + 1


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def valid_run_id(run_id: str) -> bool:
    """A run id that can name a key and a local folder: no separators, nothing hidden."""
    return bool(run_id) and "/" not in run_id and "\\" not in run_id and not run_id.startswith(".") \
        and len(run_id) <= 200 and run_id.isprintable()


# ---------------------------------------------------------------- reading what is in the store


@dataclass(frozen=True)
class ChunkInfo:
    offset: int
    size: int
    key: str

    @property
    def end(self) -> int:
        return self.offset + self.size


def list_run_ids(store: ObjectStore) -> list[str]:
    """The ids of every run shipped to the store (one listing of runs/ by folder, not of every chunk)."""
    return sorted(name for name in store.folders(RUNS, f"list the runs in {store.config.url}") if valid_run_id(name))


def list_chunks(store: ObjectStore, run_id: str, start: int = 0) -> Iterator[ChunkInfo]:
    """The run's chunks that start at `start` or later, in offset order."""
    after = chunk_key(run_id, start - 1) if start > 0 else None
    for info in store.list(f"{run_prefix(run_id)}spool/", start_after=after):
        offset = chunk_offset(info.key)
        if offset is not None and offset >= start:
            yield ChunkInfo(offset, info.size, info.key)


def read_chunk(store: ObjectStore, run_id: str, chunk: ChunkInfo) -> bytes:
    """The chunk's bytes, checked against the sha256 and length it was written with (CorruptChunk if not)."""
    body, metadata = store.get_with_metadata(chunk.key)
    problem = chunk_problem(body, metadata)
    if problem:
        raise CorruptChunk(f"run {run_id}: the chunk at byte {chunk.offset} in {store.config.url} is corrupt "
                           f"({problem})")
    return body


def chunk_problem(body: bytes, metadata: dict[str, str]) -> Optional[str]:
    """What is wrong with a chunk's body, given its metadata (None if nothing)."""
    expected = metadata.get("sha256")
    if not expected:
        return "no sha256 in its metadata"
    if str(len(body)) != metadata.get("length", str(len(body))):
        return f"{len(body)} bytes, written as {metadata.get('length')}"
    if sha256(body) != expected:
        return "its sha256 does not match"
    if not body.endswith(b"\n"):
        return "it does not end with a whole line"
    return None


def read_meta(store: ObjectStore, run_id: str) -> Optional[dict[str, Any]]:
    """The run's run.json (None if it has none yet)."""
    from slurmml.storage.s3 import NotFound

    try:
        data = store.get_bytes(meta_key(run_id))
    except NotFound:
        return None
    try:
        meta = json.loads(data)
    except ValueError:
        raise SlurmmlError(f"run {run_id}: its run.json in {store.config.url} is not JSON") from None
    if not isinstance(meta, dict) or meta.get("run_id") != run_id:
        raise SlurmmlError(f"run {run_id}: its run.json in {store.config.url} names another run")
    return meta


# ---------------------------------------------------------------- the push side


@dataclass
class ShipResult:
    run_id: str
    chunks: int = 0            # chunks written now
    bytes: int = 0             # spool bytes that reached the store now (written, or found there from a retry)
    offset: int = 0            # how far the spool is shipped
    pending: int = 0           # bytes of whole lines still to ship (after a deadline)
    meta: bool = False         # run.json written now
    notes: list[str] = field(default_factory=list)


def read_state(run_dir: Path) -> dict[str, Any]:
    try:
        state = json.loads((run_dir / SHIPPED_FILE).read_text())
    except (OSError, ValueError):
        return {"offset": 0, "meta": False}
    return state if isinstance(state, dict) and isinstance(state.get("offset"), int) else {"offset": 0, "meta": False}


def write_state(run_dir: Path, state: dict[str, Any]) -> None:
    _write_atomic(run_dir / SHIPPED_FILE, json.dumps(state).encode())


def ship_run(store: ObjectStore, run_dir: Path, run_id: Optional[str] = None, *, chunk_bytes: int = CHUNK_BYTES,
             deadline: Optional[float] = None, fallback_meta: Optional[Callable[[], dict[str, Any]]] = None
             ) -> ShipResult:
    """Ship a local run: its run.json (once, with its code snapshot) then its spool's unshipped whole lines.

    The run.json comes from run_dir (written when the run started, `prepare_run`), else from `fallback_meta`;
    without either the run is not shipped. `deadline` (time.monotonic()) stops between chunks. StorageError
    if the store fails, ShipConflict if it holds other bytes than the spool.
    """
    run_id = run_id or run_dir.name
    result = ShipResult(run_id)
    state = read_state(run_dir)
    if not state.get("meta"):
        meta = load_local_meta(run_dir)
        if meta is None and fallback_meta is not None:
            meta = fallback_meta()
            write_local_meta(run_dir, meta)
        if meta is None:
            raise SlurmmlError(f"run {run_id}: no {META_FILE} in {run_dir} (it was not started for shipping)")
        result.meta = ship_meta(store, run_dir, meta)
        state["meta"] = True
        write_state(run_dir, state)
    spool = run_dir / "spool.jsonl"
    result.offset = state["offset"]
    while True:
        data = _read_lines(spool, result.offset, chunk_bytes)
        if not data:
            break
        if deadline is not None and time.monotonic() > deadline:
            result.pending = len(data)
            break
        shipped, written = ship_chunk(store, run_id, result.offset, data)
        result.offset += shipped
        result.bytes += shipped
        result.chunks += written
        state["offset"] = result.offset
        write_state(run_dir, state)
    return result


def ship_chunk(store: ObjectStore, run_id: str, offset: int, data: bytes) -> tuple[int, bool]:
    """Put `data` (whole lines from `offset`) as the chunk at `offset`; (bytes now shipped, written now).

    If the chunk is there already (an upload retried after its state was lost, perhaps with more lines now),
    the stored chunk must be the same bytes as the start of `data`: then those are shipped and the rest goes
    in the next chunk. Anything else is a ShipConflict.
    """
    key = chunk_key(run_id, offset)
    if store.put_bytes(key, data, if_absent=True, metadata={"sha256": sha256(data), "length": str(len(data))}):
        return len(data), True
    info = store.head(key)
    stored = _stored_length(info)
    if info is None or stored is None or stored > len(data) or sha256(data[:stored]) != info.metadata.get("sha256"):
        raise ShipConflict(f"run {run_id}: {store.config.url} holds other bytes at byte {offset} of its spool than "
                           f"the local spool (was it rewritten?); stopped shipping it")
    return stored, False


def _stored_length(info: Optional[ObjectInfo]) -> Optional[int]:
    if info is None or not info.metadata or not info.metadata.get("sha256"):
        return None
    length = str(info.metadata.get("length") or info.size)
    return int(length) if length.isdigit() and int(length) == info.size and info.size > 0 else None


def _read_lines(spool: Path, offset: int, limit: int) -> bytes:
    """The spool's whole lines from `offset`, about `limit` bytes of them (more if one line is longer)."""
    try:
        with open(spool, "rb") as handle:
            handle.seek(offset)
            data = handle.read(limit)
            end = whole_lines(data)
            while not end and len(data) >= limit:  # a line longer than a chunk: read on to its end
                more = handle.read(limit)
                if not more:
                    break
                data += more
                end = whole_lines(data)
    except FileNotFoundError:
        return b""
    return data[:end]


def unshipped_bytes(run_dir: Path) -> int:
    """How many spool bytes the run has that are not shipped yet (a torn last line counts too)."""
    try:
        size = (run_dir / "spool.jsonl").stat().st_size
    except OSError:
        return 0
    return max(0, size - read_state(run_dir)["offset"])


def ship_meta(store: ObjectStore, run_dir: Path, meta: dict[str, Any]) -> bool:
    """Upload the code snapshot (if any) and write run.json once; True if this call wrote it.

    The snapshot's digest goes into the local run.json too, and the local archive is removed once uploaded.
    """
    code = meta.get("code")
    archive = run_dir / CODE_FILE
    if code and not code.get("digest") and archive.is_file():
        from slurmml.storage.blobs import BlobStore

        code["digest"], _ = BlobStore(store).put_bytes(archive.read_bytes())
        write_local_meta(run_dir, meta)
    if code and not code.get("digest"):
        code["note"] = ((code.get("note") or "") + " The snapshot was lost before it was uploaded.").strip()
    written = store.put_bytes(meta_key(meta["run_id"]), json.dumps(meta, indent=1).encode(), if_absent=True)
    if archive.is_file() and code and code.get("digest"):
        archive.unlink()
    return written


def load_local_meta(run_dir: Path) -> Optional[dict[str, Any]]:
    try:
        meta = json.loads((run_dir / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("run_id") else None


def write_local_meta(run_dir: Path, meta: dict[str, Any]) -> None:
    _write_atomic(run_dir / META_FILE, json.dumps(meta, indent=1).encode())


# ---------------------------------------------------------------- run.json and the code snapshot


def prepare_run(run_dir: Path, run_id: str, *, argv: list[str], cwd: str, script: Optional[str], created: float,
                host: str) -> dict[str, Any]:
    """Write the run's run.json and its code snapshot next to its spool, as they are now (the run's start):
    what ships later, even from `slurmml sync --push` after the code has changed."""
    meta = base_meta(run_id, argv=argv, cwd=cwd, created=created, host=host)
    git = git_state(cwd, script)
    meta["git"] = git
    try:
        meta["code"] = snapshot(run_dir / CODE_FILE, git, cwd, script)
    except OSError as error:
        meta["code"] = {"digest": None, "note": f"no code snapshot: {error}"}
    write_local_meta(run_dir, meta)
    return meta


def base_meta(run_id: str, *, argv: list[str], cwd: str, created: Optional[float], host: Optional[str]) -> dict:
    """run.json without git state or code (what `sync --push` records for a run not started for shipping)."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in this environment (a container without a passwd entry)
        user = None
    return {"format": META_FORMAT, "run_id": run_id, "host": host, "user": user, "created": created,
            "argv": list(argv), "cwd": cwd, "python": sys.version.split()[0], "git": None, "code": None}


def git_state(cwd: str, script: Optional[str]) -> Optional[dict[str, Any]]:
    """The cwd's repository: root, commit, dirty, the diff of tracked files, and where the cwd and the script
    are in it; None outside git."""
    from slurmml.slurm.commands import run_command

    top = run_command(["git", "-C", cwd, "rev-parse", "--show-toplevel"], timeout_s=GIT_TIMEOUT_S)
    if not top.ok or not top.stdout.strip():
        return None
    root = top.stdout.strip()
    head = run_command(["git", "-C", root, "rev-parse", "--verify", "-q", "HEAD"], timeout_s=GIT_TIMEOUT_S)
    commit = head.stdout.strip() if head.ok else None
    diff = run_command(["git", "-C", root, "diff", "HEAD"] if commit else ["git", "-C", root, "diff", "--cached"],
                       timeout_s=GIT_TIMEOUT_S).stdout
    truncated = len(diff) > MAX_DIFF_BYTES
    return {"root": root, "commit": commit, "dirty": bool(diff), "diff": diff[:MAX_DIFF_BYTES] if diff else None,
            "diff_truncated": truncated, "cwd": _relative(cwd, root), "script": _relative(script, root)}


def snapshot(archive: Path, git: Optional[dict[str, Any]], cwd: str, script: Optional[str]) -> dict[str, Any]:
    """Write the code snapshot to `archive` and describe it (the digest is filled in when it is uploaded)."""
    if git:
        root = git["root"]
        names, skipped = _tracked_files(root)
        kind, where = "git", "the tracked files of the git repository, as they were in the working tree"
    else:
        root = _folder_to_snapshot(cwd, script)
        names, skipped = _folder_files(root)
        kind, where = "folder", "not in a git repository: the files of the folder (bounded)"
    files, total, more = write_tarball(archive, root, names)
    skipped.extend(more)
    note = where + (f"; {len(skipped)} skipped" if skipped else "")
    return {"digest": None, "kind": kind, "root": root, "cwd": _relative(cwd, root), "files": files, "bytes": total,
            "archive_bytes": archive.stat().st_size, "truncated": any(s[1] == "total" for s in skipped),
            "skipped": [f"{name} ({why})" for name, why in skipped[:MAX_NOTED]], "note": note}


def _tracked_files(root: str) -> tuple[list[str], list[tuple[str, str]]]:
    from slurmml.slurm.commands import run_command

    try:
        listing = run_command(["git", "-C", root, "ls-files", "-z"], timeout_s=GIT_TIMEOUT_S)
    except UnicodeDecodeError:  # a file name that is not text in this locale
        return [], [(".", "file names that are not text")]
    if not listing.ok:
        return [], [(".", f"git ls-files failed: {listing.stderr.strip()[:200]}")]
    return sorted({name for name in listing.stdout.split("\0") if name}), []


_SKIP_FOLDERS = {"__pycache__", "node_modules", "outputs", "multirun", "wandb", "mlruns"}


def _folder_to_snapshot(cwd: str, script: Optional[str]) -> str:
    """The script's folder, unless the "script" is an installed program (a notebook kernel): then the cwd."""
    if script and os.path.isfile(script):
        folder = os.path.dirname(os.path.abspath(script))
        installed = {os.path.abspath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
        if not any(folder == p or folder.startswith(p + os.sep) for p in installed):
            return folder
    return os.path.abspath(cwd)


def _folder_files(root: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The folder's files (relative names), without hidden, cache, output and virtual-environment folders or
    slurmml's own home, at most MAX_FOLDER_FILES."""
    home = os.path.abspath(os.path.expanduser(os.environ.get("SLURMML_HOME") or "~/.slurmml"))
    names: list[str] = []
    skipped: list[tuple[str, str]] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_FOLDERS
                         and not os.path.exists(os.path.join(folder, d, "pyvenv.cfg"))
                         and os.path.abspath(os.path.join(folder, d)) != home)
        for name in sorted(files):
            if name.startswith(".") or name.endswith((".pyc", ".pyo")):
                continue
            if len(names) >= MAX_FOLDER_FILES:
                skipped.append((os.path.relpath(folder, root), f"more than {MAX_FOLDER_FILES} files"))
                return names, skipped
            names.append(os.path.relpath(os.path.join(folder, name), root))
    return names, skipped


def write_tarball(archive: Path, root: str, names: list[str]) -> tuple[int, int, list[tuple[str, str]]]:
    """A deterministic tar.gz of `names` (relative to `root`): sorted, no times, owners or umask in it, so the same
    files give the same bytes (and one blob). Returns (files, bytes of content, skipped (name, why))."""
    skipped: list[tuple[str, str]] = []
    files = total = 0
    temporary = archive.with_name(archive.name + ".tmp")
    archive.parent.mkdir(parents=True, exist_ok=True)
    with open(temporary, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as zipped, \
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(names):
            path = os.path.join(root, name)
            try:
                status = os.lstat(path)
            except OSError:
                continue  # tracked but deleted in the working tree
            info = tarfile.TarInfo(name.replace(os.sep, "/"))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if os.path.islink(path):
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, os.readlink(path), 0o777
                tar.addfile(info)
                files += 1
                continue
            if not os.path.isfile(path):
                skipped.append((name, "not a file (a submodule?)"))
                continue
            if status.st_size > MAX_FILE_BYTES:
                skipped.append((name, f"{status.st_size} bytes, over {MAX_FILE_BYTES}"))
                continue
            if total + status.st_size > MAX_SNAPSHOT_BYTES:
                skipped.append((name, "total"))
                continue
            try:
                with open(path, "rb") as handle:
                    data = handle.read(MAX_FILE_BYTES + 1)
            except OSError as error:
                skipped.append((name, f"unreadable: {error.strerror}"))
                continue
            info.size, info.mode = len(data), 0o755 if status.st_mode & 0o100 else 0o644
            tar.addfile(info, io.BytesIO(data))
            files += 1
            total += len(data)
    os.replace(temporary, archive)
    return files, total, skipped


def fetch_code(store: ObjectStore, meta: dict[str, Any], dest: PathLike) -> Path:
    """Unpack the run's code snapshot (checked against its digest) into `dest` (new, or an empty folder) and
    return the folder in it that stands for the run's original cwd (`dest` itself when the cwd was outside it)."""
    code = meta.get("code") or {}
    run_id = meta.get("run_id", "?")
    digest = str(code.get("digest") or "")
    if not digest:
        raise SlurmmlError(f"run {run_id} has no code snapshot ({code.get('note') or 'none was taken'})")
    destination = Path(dest)
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise SlurmmlError(f"{destination} is not an empty folder: the code of run {run_id} goes into a new one")
    from slurmml.storage.blobs import BlobStore

    data = BlobStore(store).get_bytes(digest)  # checked against the digest
    destination.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            tar.extractall(destination, filter="data")  # no absolute paths, no `..`, no links out of dest
    except (tarfile.TarError, EOFError, OSError) as error:
        raise SlurmmlError(f"cannot unpack the code of run {run_id} into {destination}: {error}") from None
    relative = code.get("cwd")
    folder = destination / relative if relative else destination
    return folder if folder.is_dir() else destination


# ---------------------------------------------------------------- small helpers


def _relative(path: Optional[str], root: str) -> Optional[str]:
    """`path` relative to `root` ('.' for the root itself), or None if it is not inside it."""
    if not path:
        return None
    absolute = os.path.realpath(os.path.abspath(path))
    base = os.path.realpath(root)
    if absolute != base and not absolute.startswith(base.rstrip(os.sep) + os.sep):
        return None
    return os.path.relpath(absolute, base).replace(os.sep, "/")


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)
