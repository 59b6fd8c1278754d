"""Artifacts whose upload is still pending, uploaded from the login node (`slurmml sync` calls upload_pending).

A job's upload stays "pending" when the store was not configured or did not answer (slurmml.tracking.artifacts).
Here each pending artifact whose path exists on this machine is packed and hashed the same way the job would
have (slurmml.storage.artifact_uploads), put in the store as a blob, and marked uploaded; an artifact whose
content is no longer what the job hashed becomes "failed: ... changed since it was logged". Rows change only
from pending, one short transaction each, so a second call (or two at once) uploads and writes nothing twice.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from slurmml.errors import SlurmmlError
from slurmml.registry.store import transaction
from slurmml.storage.artifact_uploads import one_line, upload_artifact
from slurmml.storage.blobs import BlobStore, Progress
from slurmml.storage.s3 import ObjectStore, StorageError

PENDING, UPLOADED = "pending", "uploaded"


@dataclass
class PendingUploads:
    """What upload_pending did: `uploaded` and `failed` as "run/name" (failed with why), `not_here` the pending
    artifacts whose files this machine does not have, `stopped` why it stopped early (the store did not answer or refused)."""

    uploaded: list[str] = field(default_factory=list)
    sent_bytes: int = 0
    failed: list[str] = field(default_factory=list)
    not_here: list[str] = field(default_factory=list)
    stopped: Optional[str] = None

    @property
    def problems(self) -> list[str]:
        return self.failed + ([self.stopped] if self.stopped else [])


def pending(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every artifact whose upload is pending: its row id, run id, name, path and the digest the job found."""
    rows = conn.execute("SELECT a.rowid AS row, r.id AS run_id, a.name, a.path, a.digest, a.size FROM artifacts a "
                        "JOIN runs r USING (run) WHERE a.upload = ? ORDER BY a.time, a.rowid", (PENDING,))
    return [dict(zip(("row", "run_id", "name", "path", "digest", "size"), row)) for row in rows]


def mark(conn: sqlite3.Connection, row: int, upload: str, digest: Optional[str] = None,
         uri: Optional[str] = None) -> bool:
    """Move one artifact on from pending (nothing if it already moved on); True if it did."""
    with transaction(conn):
        changed = conn.execute("UPDATE artifacts SET upload = ?, digest = coalesce(?, digest), uri = coalesce(?, uri) "
                               "WHERE rowid = ? AND upload = ?", (upload, digest, uri, row, PENDING)).rowcount
    return bool(changed)


def upload_pending(registry: Union[sqlite3.Connection, Any], store: ObjectStore, progress: Progress = None,
                   blobs: Optional[BlobStore] = None) -> PendingUploads:
    """Upload every pending artifact whose file or folder is on this machine and mark it uploaded (`registry`: a
    Registry or its connection). Stops at the first error of the store itself (down, refusing the credentials), leaving the rest pending."""
    conn: sqlite3.Connection = registry if isinstance(registry, sqlite3.Connection) else registry.conn
    blobs = blobs or BlobStore(store)
    report = PendingUploads()
    for item in pending(conn):
        label = f"{item['run_id']}/{item['name']}"
        path = Path(item["path"] or "")
        if not item["path"] or not os.path.exists(path):
            report.not_here.append(label)  # a run from another machine: that machine may still upload it
            continue
        try:
            done = upload_artifact(blobs, path, expected_digest=item["digest"], progress=progress)
        except StorageError as error:  # the store's problem (down, refusing): the next artifact would meet it too
            report.stopped = f"{label}: {one_line(error)}"
            break
        except SlurmmlError as error:
            if mark(conn, item["row"], f"failed: {one_line(error)}"):
                report.failed.append(f"{label}: {one_line(error)}")
            continue
        if mark(conn, item["row"], UPLOADED, done.digest, done.uri):
            report.uploaded.append(label)
            report.sent_bytes += done.size if done.uploaded_now else 0
    return report
