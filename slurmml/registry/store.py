"""Open the registry: create it with user-only permissions, migrate it, pick a journal mode the filesystem
supports; the one write transaction every registry write goes through; and the bound-parameter lists
(`placeholders`, `chunks`) that reads and writes build their `IN (...)` clauses from."""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Optional, TypeVar

from slurmml.errors import SlurmmlError
from slurmml.home import slurmml_home
from slurmml.registry.schema import MIGRATIONS

REGISTRY_FILE = "registry.db"
# Values bound per statement: SQLite refuses a statement with more bound parameters than its limit (999 on
# builds before 3.32, 32766 after), so long `IN (...)` lists are sent in chunks of this size.
CHUNK = 500
# SQLite's WAL needs shared memory that network filesystems do not provide.
NETWORK_FILESYSTEMS = {"nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "fuse.sshfs", "ceph", "panfs", "wekafs"}
T = TypeVar("T")


def default_registry_path() -> Path:
    return slurmml_home() / REGISTRY_FILE


def filesystem_type(path: Path, mounts_text: Optional[str] = None) -> str:
    """The type of the filesystem holding `path`, from /proc/mounts (longest matching mount point)."""
    if mounts_text is None:
        try:
            mounts_text = Path("/proc/mounts").read_text()
        except OSError:
            return "unknown"
    target = str(path.resolve())
    best, best_type = "", "unknown"
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, best_type = mount, fields[2]
    return best_type


def journal_mode_for(fs_type: str) -> str:
    return "delete" if fs_type in NETWORK_FILESYSTEMS else "wal"


def connect(path: Optional[Path] = None, *, create: bool = True) -> sqlite3.Connection:
    """An autocommit connection (we open transactions ourselves), migrated to the current schema."""
    path = Path(path) if path is not None else default_registry_path()
    if not path.exists():
        if not create:
            raise SlurmmlError(f"no registry at {path} (nothing has been launched with this SLURMML_HOME yet)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        except OSError as error:
            raise SlurmmlError(f"cannot create the registry at {path}: {error.strerror}") from None
    try:
        conn = sqlite3.connect(path, timeout=60.0, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA journal_mode={journal_mode_for(filesystem_type(path.parent))}")
        conn.execute("PRAGMA synchronous=NORMAL")
        migrate(conn)
    except sqlite3.OperationalError as error:
        raise SlurmmlError(f"cannot open the registry at {path}: {error}") from None
    except sqlite3.DatabaseError as error:
        raise SlurmmlError(f"{path} is not a usable registry: {error}") from None
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    """Apply missing migrations in one write transaction: two processes starting at once take turns."""
    if conn.execute("PRAGMA user_version").fetchone()[0] >= len(MIGRATIONS):
        return
    with transaction(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number in range(version, len(MIGRATIONS)):
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version={len(MIGRATIONS)}")


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error (also KeyboardInterrupt): the write lock is taken before
    anything is read, so two login-node processes writing one registry take turns instead of failing midway."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def placeholders(count: int) -> str:
    """`?,?,?` for `count` bound values: the inside of an SQL `IN (...)` list."""
    return ",".join("?" * count)


def chunks(items: Iterable[T], size: int = CHUNK) -> Iterator[list[T]]:
    """`items` in lists of at most `size`, so that no statement binds more values than SQLite allows."""
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start:start + size]
