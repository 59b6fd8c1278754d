"""A logged artifact as one blob: a file as it is, a folder packed into one deterministic tar.

Used by the job's background uploads (slurmml.tracking.artifacts) and by the login node's catch-up
(slurmml.registry.artifacts.upload_pending), which must come to the same digest for the same content: the tar
lists its entries in sorted order with fixed times, owners and modes (0644, or 0755 for folders and executables),
so packing the same folder twice, anywhere, gives the same bytes. Its first entry is an empty FOLDER_MARKER, so
a packed folder is known from its bytes alone (`slurmml artifacts get` unpacks it; a user's own .tar file stays a
file).
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from slurmml.errors import SlurmmlError
from slurmml.storage.blobs import BlobStore, Progress, sha256_file

FOLDER_MARKER = ".slurmml-folder"


@dataclass
class Prepared:
    """What goes to the store for one artifact: `file` (the artifact itself, or a packed copy of a folder)."""

    path: Path
    file: Path
    digest: str
    size: int
    folder: bool

    def cleanup(self) -> None:
        if self.folder:
            try:
                self.file.unlink()
            except FileNotFoundError:
                pass


@dataclass
class Uploaded:
    path: str
    digest: str
    size: int
    uri: str
    uploaded_now: bool
    folder: bool


def _entries(folder: Path, relative: str = "") -> Iterator[tuple[str, os.DirEntry]]:
    """(path inside the folder, entry) of everything below `folder`, sorted, folders before what they hold."""
    with os.scandir(folder / relative if relative else folder) as scan:
        items = sorted(scan, key=lambda entry: entry.name)
    for entry in items:
        name = f"{relative}/{entry.name}" if relative else entry.name
        yield name, entry
        if entry.is_dir(follow_symlinks=False):
            yield from _entries(folder, name)


def _info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, link
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


def pack_folder(folder: Path, dest: Path) -> None:
    """Write the folder's files, subfolders and symlinks to `dest` as a deterministic tar (see the module's doc).
    Sockets, pipes and devices are left out."""
    with tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(_info(FOLDER_MARKER, tarfile.REGTYPE, 0o644), io.BytesIO(b""))
        for name, entry in _entries(folder):
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISLNK(mode):
                tar.addfile(_info(name, tarfile.SYMTYPE, 0o777, link=os.readlink(entry.path)))
            elif stat.S_ISDIR(mode):
                tar.addfile(_info(name, tarfile.DIRTYPE, 0o755))
            elif stat.S_ISREG(mode):
                with open(entry.path, "rb") as handle:
                    size = os.fstat(handle.fileno()).st_size
                    executable = 0o755 if mode & stat.S_IXUSR else 0o644
                    tar.addfile(_info(name, tarfile.REGTYPE, executable, size), handle)


def is_packed_folder(path: Path) -> bool:
    """Whether the file is a folder packed by pack_folder (its first entry is the marker)."""
    try:
        with tarfile.open(path, "r:") as tar:
            first = tar.next()
            return first is not None and first.name == FOLDER_MARKER
    except (tarfile.TarError, OSError):
        return False


def unpack_folder(packed: Path, dest: Path) -> None:
    """Unpack a packed folder into `dest` (created); only plain files, folders and links inside it come out."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(packed, "r:") as tar:
        members = [member for member in tar.getmembers() if member.name != FOLDER_MARKER]
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, members=members, filter="data")
        else:  # an old Python without extraction filters: refuse what could land outside `dest`
            root = dest.resolve()
            for member in members:
                target = (dest / member.name).resolve()
                if root not in (target, *target.parents) or member.isdev() or (member.issym() and
                                                                                os.path.isabs(member.linkname)):
                    raise SlurmmlError(f"{packed}: entry {member.name!r} would land outside {dest}")
            tar.extractall(dest, members=members)


def prepare(path: Path, temporary_dir: Optional[Path] = None) -> Prepared:
    """Hash the artifact (packing a folder into a temporary tar first). SlurmmlError in one line if it cannot."""
    path = Path(path)
    try:
        if not path.is_dir():
            digest, size = sha256_file(path)
            return Prepared(path, path, digest, size, False)
        fd, name = tempfile.mkstemp(prefix=".slurmml-artifact-", suffix=".tar",
                                    dir=str(temporary_dir) if temporary_dir else None)
        os.close(fd)
        packed = Path(name)
        try:
            pack_folder(path, packed)
            digest, size = sha256_file(packed)
        except BaseException:
            packed.unlink(missing_ok=True)
            raise
        return Prepared(path, packed, digest, size, True)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise SlurmmlError(f"cannot pack {path}: no space left in {temporary_dir or tempfile.gettempdir()} "
                               f"(set TMPDIR to a bigger disk)") from None
        raise SlurmmlError(f"cannot read {error.filename or path}: {error.strerror}") from None


def upload_artifact(blobs: BlobStore, path: Path, expected_digest: Optional[str] = None,
                    progress: Progress = None, prepared: Optional[Prepared] = None) -> Uploaded:
    """Put the artifact at `path` in the store as one blob (nothing is sent if the store has those bytes). With
    `expected_digest`, an artifact whose content is no longer what was logged is refused in one line."""
    item = prepared or prepare(path)
    try:
        if expected_digest and item.digest != expected_digest:
            raise SlurmmlError(f"{path} changed since it was logged (its sha256 was {expected_digest[:12]}, "
                               f"now {item.digest[:12]})")
        try:
            digest, size, now = blobs.put_file(item.file, item.digest, progress)
        except OSError as error:
            raise SlurmmlError(f"cannot read {item.file}: {error.strerror}") from None
    finally:
        item.cleanup()
    return Uploaded(str(path), digest, size, blobs.uri(digest), now, item.folder)


def one_line(error: BaseException) -> str:
    """An error as one line (the first line of its message), for an artifact's `failed: ...` state."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if isinstance(error, SlurmmlError) else f"{type(error).__name__}: {text}"

