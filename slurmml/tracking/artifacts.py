"""Artifact uploads from inside a run: `slurmml.log_artifact(path, upload=True)`.

log_artifact writes the `a` record at once with upload "pending" and hands the path to one background thread
(a queue, so a training loop never waits on the network). The thread hashes the artifact (a folder as one
deterministic tar: slurmml.storage.artifact_uploads), puts it in the object store as a blob, and writes an
`upload` record with the digest, the s3:// URI and "uploaded". When no store is configured or the endpoint does
not answer, the record says "pending" again (with the digest), and `slurmml sync` on the login node uploads it
from the run folder later (slurmml.registry.artifacts.upload_pending); any other problem is "failed: <one line>".

At exit the interpreter waits for the uploads still queued, at most EXIT_WAIT_S: what is not done by then stays
pending for the login node. Nothing here imports boto3 until the first upload runs.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Mapping, Optional

from slurmml.tracking.notices import Notices

UPLOAD_ENV = "SLURMML_UPLOAD_ARTIFACTS"
EXIT_WAIT_S = 120.0
PENDING, UPLOADED = "pending", "uploaded"


def upload_by_default(environ: Mapping[str, str] = os.environ) -> bool:
    """SLURMML_UPLOAD_ARTIFACTS=1 makes every log_artifact upload unless it says upload=False."""
    return str(environ.get(UPLOAD_ENV, "")).strip().lower() in ("1", "true", "yes", "on")


class Uploads:
    """One background thread and its queue of (writer, path): each artifact's `upload` record goes to the writer
    of the run that logged it."""

    def __init__(self, exit_wait_s: float = EXIT_WAIT_S) -> None:
        self.exit_wait_s = exit_wait_s
        self._queue: deque = deque()
        self._busy = 0  # queued or running
        self._condition = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._notices = Notices()
        self._pid = os.getpid()

    def submit(self, writer: Any, path: Path, logged: Optional[float] = None) -> None:
        """Upload `path` and write its `upload` record (`logged`: the time of its `a` record) to `writer`."""
        # boto3 imports this module, which registers an exit hook of its own: not possible any more once the
        # interpreter is exiting, which is when a short script's uploads run (a few ms now, from the stdlib)
        importlib.import_module("concurrent.futures.thread")

        with self._condition:
            self._queue.append((writer, path, logged))
            self._busy += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="slurmml-artifacts", daemon=True)
                self._thread.start()
            self._condition.notify_all()

    def wait(self, timeout_s: Optional[float] = None) -> bool:
        """Wait until every submitted upload has its record; False if some are still going after `timeout_s`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._condition:
            while self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._condition.wait(left)
        return True

    def at_exit(self) -> None:
        if os.getpid() != self._pid or not self._busy:
            return
        if not self.wait(self.exit_wait_s):
            self._say("late", f"{self._busy} artifact upload(s) not finished after {self.exit_wait_s:.0f} s; they "
                              f"stay pending and `slurmml sync` uploads them from the run folder")

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue:
                    self._condition.wait()
                writer, path, logged = self._queue.popleft()
            try:
                record = self._upload(path)
            except BaseException as error:  # a bug must not kill the thread nor leave the run's exit waiting
                record = {"k": "upload", "path": str(path), "upload": f"failed: {type(error).__name__}: {error}"}
            record["t"] = time.time()
            if logged is not None:
                record["logged"] = logged
            try:
                writer.write(record)
            finally:
                with self._condition:
                    self._busy -= 1
                    self._condition.notify_all()

    def _upload(self, path: Path) -> dict[str, Any]:
        from slurmml.errors import SlurmmlError
        from slurmml.storage.artifact_uploads import one_line, prepare, upload_artifact
        from slurmml.storage.config import load_storage

        record: dict[str, Any] = {"k": "upload", "path": str(path)}
        try:
            prepared = prepare(path)
        except SlurmmlError as error:
            record["upload"] = f"failed: {one_line(error)}"
            return record
        record["digest"] = prepared.digest
        try:
            config = load_storage(required=False)
        except SlurmmlError as error:
            prepared.cleanup()
            self._say("config", f"artifact uploads wait for the login node: {error}")
            record["upload"] = PENDING
            return record
        if config is None:
            prepared.cleanup()
            self._say("config", "no object store is configured: artifacts stay pending until `slurmml sync` "
                                "uploads them (set one with `slurmml storage set s3://BUCKET/PREFIX`)")
            record["upload"] = PENDING
            return record
        from slurmml.storage.blobs import BlobStore
        from slurmml.storage.s3 import ObjectStore, Unreachable

        try:
            done = upload_artifact(BlobStore(ObjectStore(config)), path, prepared=prepared)
        except Unreachable as error:
            self._say("unreachable", f"{one_line(error)}; artifacts stay pending until `slurmml sync` uploads them")
            record["upload"] = PENDING
            return record
        except SlurmmlError as error:
            record["upload"] = f"failed: {one_line(error)}"
            return record
        record.update(digest=done.digest, uri=done.uri, upload=UPLOADED)
        return record

    def _say(self, kind: str, message: str) -> None:
        """Once per kind of problem: a job logging 100 checkpoints says it once."""
        self._notices.say(kind, message)


_uploads: Optional[Uploads] = None
_lock = threading.Lock()


def uploads() -> Uploads:
    """This process's uploads (made on first use, with its wait registered at exit)."""
    global _uploads
    with _lock:
        if _uploads is None or _uploads._pid != os.getpid():
            import atexit

            _uploads = Uploads()
            # registered after the run's own end handler, so it runs before it (atexit is last in, first out)
            atexit.register(_uploads.at_exit)
        return _uploads


def upload_later(writer: Any, path: Path, logged: Optional[float] = None) -> None:
    uploads().submit(writer, path, logged)


def _forget_in_child() -> None:
    """A forked child owns neither the parent's queue nor its thread."""
    global _uploads, _lock
    _uploads, _lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
