"""Content-addressed blobs in the object store: `blobs/sha256/<2 hex>/<64 hex>`, each the bytes whose sha256 it names.

The same bytes are stored once (a HEAD before any upload). A blob appears under its key only whole: small ones
in one PUT, big ones by completing a multipart upload (S3 shows nothing under the key before that). A multipart
upload is resumable: its upload id and part size are kept in `$SLURMML_HOME/uploads/<digest>.json`, so a retry
after the endpoint went away lists the parts already there and sends only the missing ones.

Nothing here trusts the server: moto and some S3-compatible servers keep corrupt bodies, so whole downloads are
hashed, and a mismatch is fetched once more before it is called corrupt.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, TypeVar, Union

from slurmml.core.tables import size_text
from slurmml.errors import SlurmmlError
from slurmml.storage.s3 import NotFound, ObjectStore, StorageError, describe, error_code

Progress = Optional[Callable[[int], Any]]
T = TypeVar("T")
PathLike = Union[str, os.PathLike]

PART_SIZE = 16 * 2**20
MIN_PART_SIZE = 5 * 2**20  # S3's smallest part (all but the last)
MAX_PARTS = 10_000  # S3's most parts per upload: bigger files get bigger parts
SMALL_READ = 1 * 2**20  # files up to this size are hashed from one read
HASH_BUFFER = 4 * 2**20  # hashlib drops the GIL on big updates: hashing runs beside the uploads
WORKERS = 8
_DIGEST = re.compile(r"[0-9a-f]{64}")


def blob_key(digest: str) -> str:
    """The key (relative to the store's prefix) of the blob whose sha256 is `digest`."""
    if not _DIGEST.fullmatch(digest or ""):
        raise SlurmmlError(f"not a sha256 digest: {digest!r} (expected 64 lowercase hex digits)")
    return f"blobs/sha256/{digest[:2]}/{digest}"


def sha256_file(path: PathLike, progress: Progress = None) -> tuple[str, int]:
    """(hex sha256, size) of the file, read once with a big buffer; `progress(n)` after each n bytes."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        # a small file in one read: allocating the big buffer costs more than hashing a few KB (10,000 files)
        size = os.fstat(handle.fileno()).st_size
        if size <= SMALL_READ:
            data = handle.read()
            if len(data) == size:
                digest.update(data)
                if progress is not None and data:
                    progress(size)
                return digest.hexdigest(), size
            handle.seek(0)  # it changed under us: read it again the long way
        size = 0
        buffer = bytearray(HASH_BUFFER)
        view = memoryview(buffer)
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            digest.update(view[:count])
            size += count
            if progress is not None:
                progress(count)
    return digest.hexdigest(), size


def part_size_for(size: int, wanted: int) -> int:
    """The part size for a file of `size` bytes: `wanted` (at least S3's 5 MiB), larger when 10,000 parts of it
    would not hold the file, in whole MiB."""
    part = max(wanted, MIN_PART_SIZE)
    if -(-size // part) > MAX_PARTS:
        part = -(-size // MAX_PARTS)
        part = -(-part // 2**20) * 2**20
    return part


def _hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    """Blobs of one ObjectStore. Thread-safe: one boto3 client, shared by the part uploads and ranged downloads."""

    def __init__(self, store: ObjectStore, part_size: int = PART_SIZE, workers: int = WORKERS,
                 state_dir: Optional[Path] = None) -> None:
        self.store = store
        self.part_size = part_size
        self.workers = max(1, workers)
        self._state_dir = Path(state_dir) if state_dir is not None else None

    # ------------------------------------------------------------------ names

    def uri(self, digest: str) -> str:
        return f"s3://{self.store.config.bucket}/{self.store.key(blob_key(digest))}"

    def has(self, digest: str) -> bool:
        return self.store.exists(blob_key(digest))

    # ------------------------------------------------------------------ uploads

    def put_bytes(self, data: bytes, digest: Optional[str] = None) -> tuple[str, bool]:
        """Store `data` (checked against `digest` when given): (digest, True if uploaded now, False if it was there)."""
        actual = _hex(data)
        if digest is not None and digest != actual:
            raise SlurmmlError(f"the bytes given for blob {digest[:12]} hash to {actual[:12]}")
        if self.has(actual):
            return actual, False
        return actual, self.store.put_bytes(blob_key(actual), data, if_absent=True)

    def put_file(self, path: PathLike, digest: Optional[str] = None, progress: Progress = None) -> tuple[str, int, bool]:
        """Store the file's bytes: (digest, size, True if uploaded now). Without `digest` the file is hashed first;
        with it the file is hashed while it uploads, and nothing is stored if they differ. A file that changes while
        it uploads is refused in one line."""
        path = Path(path)
        before = _stamp(path)
        size = before[0]
        given = digest is not None
        if digest is None:
            digest, size = sha256_file(path)
        if self.has(digest):
            return digest, size, False
        if size < self.part_size:
            data = path.read_bytes()
            if _hex(data) != digest:
                raise SlurmmlError(f"{path} changed while it was being uploaded")
            if progress is not None:
                progress(len(data))
            return digest, len(data), self.store.put_bytes(blob_key(digest), data, if_absent=True)
        self._multipart(path, digest, size, before, progress, verify=given)
        return digest, size, True

    def _multipart(self, path: Path, digest: str, size: int, before: tuple[int, int], progress: Progress,
                   verify: bool) -> None:
        key = self.store.key(blob_key(digest))
        bucket = self.store.config.bucket
        state_path = self._state_path(digest)
        state = self._load_state(state_path, key, size)
        client = self.store.client
        done: dict[int, dict[str, Any]] = {}
        if state is not None:
            there = self._parts_there(state, key, size)
            if there is None:  # the upload is gone (aborted, expired, another store): start again
                state = None
            else:
                done = there
        if state is None:
            part_size = part_size_for(size, self.part_size)
            checksum = _checksum_algorithm(client)
            extra = {"ChecksumAlgorithm": checksum} if checksum else {}
            with self.store.errors(f"start uploading {path.name} to {self.store.config.url}"):
                upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, **extra)["UploadId"]
            state = {"upload_id": upload_id, "part_size": part_size, "size": size, "key": key, "path": str(path),
                     "store": self.store.config.url, "endpoint": self.store.config.endpoint_url or "",
                     "checksum": checksum, "started": time.time()}
            _write_private(state_path, state)
        upload_id, part_size = state["upload_id"], int(state["part_size"])
        checksum = state.get("checksum") or None
        member = f"Checksum{checksum.upper()}" if checksum else ""
        count = -(-size // part_size)
        if progress is not None and done:
            progress(sum(min(part_size, size - (n - 1) * part_size) for n in done))

        checker: Optional[_HashThread] = _HashThread(path) if verify else None
        etags = dict(done)
        lock = threading.Lock()
        fd = os.open(path, os.O_RDONLY)

        def send(number: int) -> None:
            offset = (number - 1) * part_size
            length = min(part_size, size - offset)
            body = os.pread(fd, length, offset)
            if len(body) != length:
                raise SlurmmlError(f"{path} changed while it was being uploaded (it is shorter now)")
            extra = {"ChecksumAlgorithm": checksum} if checksum else {}
            with self.store.errors(f"upload part {number} of {count} of {path.name} to {self.store.config.url}"):
                answer = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body,
                                            **extra)
            with lock:
                etags[number] = _part(number, answer, member)
            if progress is not None:
                progress(length)

        try:
            in_parallel(send, [n for n in range(1, count + 1) if n not in done], self.workers)
        except StorageError as error:
            if checker is not None:
                checker.stop()
            # the same kind (Unreachable stays Unreachable: callers that can wait fall back on it)
            raise type(error)(f"{error}; run it again to resume ({len(etags)} of {count} parts are stored)") from None
        except BaseException:
            if checker is not None:
                checker.stop()
            raise
        finally:
            os.close(fd)
        changed = _stamp(path) != before
        if checker is not None:
            changed = changed or checker.result() != digest
        if changed:
            self._abort(upload_id, key, state_path)
            raise SlurmmlError(f"{path} changed while it was being uploaded")
        parts = [etags[n] for n in sorted(etags)]
        import botocore.exceptions as bce

        try:
            client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                             MultipartUpload={"Parts": parts})
        except bce.ClientError as error:
            # an earlier try completed it and lost the answer: the blob is there
            if not (error_code(error) == "NoSuchUpload" and self.has(digest)):
                raise describe(error, self.store.config, f"finish uploading {path.name}") from None
        except bce.BotoCoreError as error:
            raise describe(error, self.store.config, f"finish uploading {path.name}") from None
        _remove(state_path)

    def _parts_there(self, state: dict[str, Any], key: str, size: int) -> Optional[dict[int, dict[str, Any]]]:
        """The parts of the upload in `state` already stored whole ({number: what completing names it by}), None
        if the upload is gone."""
        import botocore.exceptions as bce

        parts: dict[int, dict[str, Any]] = {}
        part_size = int(state["part_size"])
        member = f"Checksum{state['checksum'].upper()}" if state.get("checksum") else ""
        count = -(-size // part_size)
        try:
            pages = self.store.client.get_paginator("list_parts").paginate(
                Bucket=self.store.config.bucket, Key=key, UploadId=state["upload_id"])
            for page in pages:
                for part in page.get("Parts") or ():
                    number = int(part["PartNumber"])
                    expected = min(part_size, size - (number - 1) * part_size)
                    if 1 <= number <= count and int(part["Size"]) == expected:
                        parts[number] = _part(number, part, member)
        except bce.ClientError as error:
            if error_code(error) in ("NoSuchUpload", "404", "NoSuchKey"):
                return None
            raise describe(error, self.store.config, "list the parts of an upload") from None
        except bce.BotoCoreError as error:
            raise describe(error, self.store.config, "list the parts of an upload") from None
        return parts

    def _abort(self, upload_id: str, key: str, state_path: Path) -> None:
        _remove(state_path)
        try:
            with self.store.errors("abort an upload"):
                self.store.client.abort_multipart_upload(Bucket=self.store.config.bucket, Key=key, UploadId=upload_id)
        except SlurmmlError:
            pass  # its parts expire with the bucket's lifecycle rule; nothing shows under the blob's key

    # ------------------------------------------------------------------ the resume state

    def state_dir(self) -> Path:
        if self._state_dir is None:
            from slurmml.home import slurmml_home

            self._state_dir = slurmml_home() / "uploads"
        return self._state_dir

    def _state_path(self, digest: str) -> Path:
        return self.state_dir() / f"{digest}.json"

    def _load_state(self, path: Path, key: str, size: int) -> Optional[dict[str, Any]]:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(state, dict) or state.get("key") != key or state.get("store") != self.store.config.url:
            return None
        if state.get("size") != size:
            raise SlurmmlError(f"an unfinished upload of blob {key.rsplit('/', 1)[-1][:12]} was "
                               f"{state.get('size')} bytes, not {size}: the file changed since")
        if not state.get("upload_id") or not isinstance(state.get("part_size"), int):
            return None
        return state

    # ------------------------------------------------------------------ downloads

    def get_bytes(self, digest: str, byte_range: Optional[tuple[int, int]] = None) -> bytes:
        """The blob's bytes (whole: checked against its digest, fetched once more if they differ), or bytes
        [start, end) of it unchecked (the caller checks what it cut out)."""
        key = blob_key(digest)
        if byte_range is not None:
            return self.store.get_bytes(key, byte_range)
        for _ in range(2):
            data = self.store.get_bytes(key)
            actual = _hex(data)
            if actual == digest:
                return data
        raise self._corrupt(digest, actual)

    def _corrupt(self, digest: str, actual: str) -> SlurmmlError:
        return SlurmmlError(f"blob {digest[:12]} in {self.store.config.url} is corrupt: its bytes hash to "
                            f"{actual[:12]} (twice); upload it again or delete {blob_key(digest)}")

    def get_file(self, digest: str, dest: PathLike, size: Optional[int] = None, progress: Progress = None) -> None:
        """Download the blob to `dest`, checked against its digest; big blobs as parallel ranged GETs. `dest` is
        replaced only by a whole, checked file (a temporary file next to it until then)."""
        dest = Path(dest)
        key = blob_key(digest)
        if size is None:
            info = self.store.head(key)
            if info is None:
                raise NotFound(f"cannot read {key}: not found in {self.store.config.where()}")
            size = info.size
        folder = dest.parent
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f".{dest.name}.{os.getpid()}.{threading.get_ident()}.part"
        try:
            for attempt in range(2):
                self._download(key, temporary, size, progress if attempt == 0 else None)
                actual, _ = sha256_file(temporary)
                if actual == digest:
                    os.replace(temporary, dest)
                    return
            raise self._corrupt(digest, actual)
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SlurmmlError(f"no space left on {folder} for {size_text(size)}") from None
            raise
        finally:
            _remove(temporary)

    def _download(self, key: str, temporary: Path, size: int, progress: Progress) -> None:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if size and hasattr(os, "posix_fallocate"):
                try:
                    os.posix_fallocate(fd, 0, size)  # a full disk says so before anything is downloaded
                except OSError as error:
                    if error.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise
            if size < self.part_size:
                data = self.store.get_bytes(key)
                _write_all(fd, data, 0)
                if progress is not None:
                    progress(len(data))
                os.ftruncate(fd, len(data))
                return
            step = self.part_size

            def fetch(offset: int) -> None:
                data = self.store.get_bytes(key, (offset, min(offset + step, size)))
                _write_all(fd, data, offset)
                if progress is not None:
                    progress(len(data))

            in_parallel(fetch, range(0, size, step), self.workers)
        finally:
            os.close(fd)


def in_parallel(work: Callable[[T], Any], items: Iterable[T], workers: int) -> None:
    """work(item) for every item on up to `workers` threads; the first error stops the rest and is raised.
    Plain threads rather than a ThreadPoolExecutor: that refuses new work once the interpreter is exiting, which
    is when a job's last artifact uploads may still be running (tracking/artifacts.py waits for them at exit)."""
    queue = list(items)
    queue.reverse()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def run() -> None:
        while not errors:
            with lock:
                if not queue:
                    return
                item = queue.pop()
            try:
                work(item)
            except BaseException as error:  # handed to the caller's thread below
                errors.append(error)
                return

    threads = [threading.Thread(target=run, name="slurmml-blob", daemon=True)
               for _ in range(min(max(1, workers), len(queue)))]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException as error:  # Ctrl-C: the threads stop after their current request
        errors.append(error)
        raise
    if errors:
        raise errors[0]


class _HashThread:
    """The sha256 of a file, computed in a thread beside the part uploads (which read the same pages)."""

    def __init__(self, path: Path) -> None:
        self._result: Optional[str] = None
        self._error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(path,), name="slurmml-hash", daemon=True)
        self._thread.start()

    def _run(self, path: Path) -> None:
        digest = hashlib.sha256()
        buffer = bytearray(HASH_BUFFER)
        view = memoryview(buffer)
        try:
            with open(path, "rb", buffering=0) as handle:
                while not self._stop.is_set():
                    count = handle.readinto(buffer)
                    if not count:
                        break
                    digest.update(view[:count])
            self._result = digest.hexdigest()
        except OSError as error:
            self._error = error

    def stop(self) -> None:
        self._stop.set()

    def result(self) -> Optional[str]:
        self._thread.join()
        return None if self._error is not None else self._result


def _checksum_algorithm(client: Any) -> Optional[str]:
    """CRC32, as boto3's own transfers ask for, unless the store is set to send checksums only when required
    (some MinIO and Ceph versions reject them). Naming it also spares servers a whole-object checksum."""
    setting = getattr(client.meta.config, "request_checksum_calculation", None)
    return None if setting == "when_required" else "CRC32"


def _part(number: int, answer: dict[str, Any], member: str) -> dict[str, Any]:
    """A part as CompleteMultipartUpload lists it: its number, ETag and (when asked for) its checksum."""
    part = {"PartNumber": number, "ETag": answer["ETag"]}
    if member and answer.get(member):
        part[member] = answer[member]
    return part


def _stamp(path: Path) -> tuple[int, int]:
    """(size, mtime in ns): what changes when a file is written to."""
    try:
        info = path.stat()
    except OSError as error:
        raise SlurmmlError(f"cannot read {path}: {error.strerror}") from None
    return info.st_size, info.st_mtime_ns


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _write_private(path: Path, value: dict[str, Any]) -> None:
    """Write JSON readable by the user only (the upload id lets anyone with the credentials finish the upload)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(value, handle)
    os.replace(temporary, path)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
